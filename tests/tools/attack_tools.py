import hashlib, hmac, json, os, random, socket, struct, sys, time

def capture(iface, dst, dport, ready, limit, least):
    # A packet socket sees every frame the hub floods to the attacker.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind((iface, 0))
    s.settimeout(0.1)
    open(ready, "w").write("ready\n")
    got, end, last = [], time.time() + limit, None
    while time.time() < end:
        # Done once the expected stream has passed (stray datagrams, e.g.
        # IPv6 neighbour discovery on the TAPs, may come before it).
        if len(got) >= least and time.time() - last > 0.3:
            break
        try:
            pkt = s.recv(70000)
        except socket.timeout:
            continue
        ip = pkt[14:]
        if len(ip) < 28 or ip[9] != 17 or socket.inet_ntoa(ip[16:20]) != dst:
            continue
        ihl = (ip[0] & 15) * 4
        sport, dp, ulen = struct.unpack("!HHH", ip[ihl:ihl + 6])
        payload = ip[ihl + 8:ihl + ulen]
        # Data frames only: keepalives are 40 bytes.
        if dp == dport and len(payload) > 40:
            got.append(payload)
            last = time.time()
    return got

def age(dg):
    return (time.time_ns() - struct.unpack("!Q", dg[32:40])[0]) / 1e9

def send_own(dgs, dst, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ages = []
    for dg in dgs:
        ages.append(age(dg))
        s.sendto(dg, (dst, port))
    return ages

def udp_checksum_free_packet(src, sport, dst, dport, payload):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    # Kernel fills in the IP checksum, id and total length (raw(7)).
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return iph + udp

def send_spoofed(dgs, src, sport, dst, dport):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    ages = []
    for dg in dgs:
        ages.append(age(dg))
        s.sendto(udp_checksum_free_packet(src, sport, dst, dport, dg), (dst, 0))
    return ages

def replay(args):
    # replay IFACE VICTIM PORT GENUINE_SRC READY OUT MAX_AGE LEAST
    iface, victim, port, genuine, ready, out, max_age, least = args
    port, max_age, least = int(port), float(max_age), int(least)
    dgs = capture(iface, victim, port, ready, 20, least)
    report = {"captured": len(dgs), "phases": {}}
    if dgs:
        # (a) from the attacker's own address, (b) spoofing the genuine peer,
        # both at once; (c) again once the newest is 1.2 s old (inside the
        # freshness window), then once it is 1 s past the window.
        report["phases"]["own"] = send_own(dgs, victim, port)
        report["phases"]["spoofed"] = send_spoofed(dgs, genuine, port, victim, port)
        wait = 1.2 - age(dgs[-1])
        if wait > 0:
            time.sleep(wait)
        report["phases"]["own_delayed_inside"] = send_own(dgs, victim, port)
        report["phases"]["spoofed_delayed_inside"] = send_spoofed(dgs, genuine, port, victim, port)
        wait = max_age + 1.0 - age(dgs[-1])
        if wait > 0:
            time.sleep(wait)
        report["phases"]["own_delayed_outside"] = send_own(dgs, victim, port)
        report["phases"]["spoofed_delayed_outside"] = send_spoofed(dgs, genuine, port, victim, port)
    json.dump(report, open(out, "w"))

def listen(args):
    # listen ADDR PORT OUT: counts every payload until END (or 60 s).
    addr, port, out = args
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    s.settimeout(0.5)
    counts, end = {}, time.time() + 60
    while time.time() < end:
        try:
            data = s.recv(65535).decode(errors="replace")
        except socket.timeout:
            continue
        if data == "END":
            break
        counts[data] = counts.get(data, 0) + 1
    json.dump(counts, open(out, "w"))

def talk(args):
    # talk DST PORT N: N unique payloads, then END a few times.
    dst, port, n = args
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(int(n)):
        s.sendto(b"msg-%d" % i, (dst, int(port)))
        time.sleep(0.001)

def end(args):
    dst, port = args
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(5):
        s.sendto(b"END", (dst, int(port)))
        time.sleep(0.1)

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
