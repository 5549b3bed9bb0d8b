import hashlib, hmac, json, os, random, socket, struct, sys, time

import taptun_wire
from taptun_wire import end, listen, talk

# The HMAC wire: HMAC (32) || timestamp (8, BE ns) || frame.
TS_AT = 32


def replay(args):
    taptun_wire.replay(args, TS_AT)

def seal(key, ts, frame):
    body = struct.pack("!Q", ts) + frame
    return hmac.new(key, body, hashlib.sha256).digest() + body

def flood(args):
    # flood DST PORT KEY_B64 OTHER_KEY_B64 SECONDS PPS OUT
    # Junk by category; counts what was really sent. PPS 0 = as fast as possible.
    import base64
    dst, port, key, other, seconds, pps, out = args
    key, other = base64.b64decode(key), base64.b64decode(other)
    port, seconds, pps = int(port), float(seconds), int(pps)
    rnd = random.Random(7)
    pool = []
    for i in range(512):
        kind = i % 4
        if kind == 0:    # random bytes, at least a header long
            pool.append(("bad_mac", rnd.randbytes(rnd.randint(40, 1400))))
        elif kind == 1:  # shorter than the header (including empty)
            pool.append(("short", rnd.randbytes(rnd.randint(0, 39))))
        elif kind == 2:  # a genuine datagram, truncated
            g = seal(key, time.time_ns(), rnd.randbytes(rnd.randint(60, 1400)))
            cut = g[:rnd.randint(0, len(g) - 1)]
            pool.append(("short" if len(cut) < 40 else "bad_mac", cut))
        else:            # well-formed, fresh, under the wrong key
            pool.append(("bad_mac", seal(other, time.time_ns(), rnd.randbytes(rnd.randint(0, 1400)))))
    if pps:
        # The paced run also carries a few of the largest UDP datagrams:
        # longer than any peer sends, dropped unhashed as oversize.
        for _ in range(4):
            pool.append(("oversize", rnd.randbytes(65507)))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = {"short": 0, "bad_mac": 0, "oversize": 0}
    start = time.time()
    end_at, i = start + seconds, 0
    while time.time() < end_at:
        kind, dg = pool[i % len(pool)]
        i += 1
        try:
            s.sendto(dg, (dst, port))
            sent[kind] += 1
        except OSError:
            pass
        if pps:
            delay = start + i / pps - time.time()
            if delay > 0:
                time.sleep(delay)
    sent["seconds"] = time.time() - start
    json.dump(sent, open(out, "w"))

def trickle(args):
    # trickle DST PORT BYTES CHUNK INTERVAL SHA_OUT: a slow TCP transfer.
    dst, port, total, chunk, interval, out = args
    total, chunk, interval = int(total), int(chunk), float(interval)
    s = None
    for _ in range(100):
        try:
            s = socket.create_connection((dst, int(port)), timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    s.settimeout(60)
    h, sent, rnd = hashlib.sha256(), 0, random.Random(3)
    while sent < total:
        data = rnd.randbytes(min(chunk, total - sent))
        s.sendall(data)
        h.update(data)
        sent += len(data)
        time.sleep(interval)
    s.close()
    open(out, "w").write(h.hexdigest() + "  -\n")

{"replay": replay, "listen": listen, "talk": talk, "end": end,
 "flood": flood, "trickle": trickle}[sys.argv[1]](sys.argv[2:])
