"""Tools for tests/cipher_e2e.rs: a known plaintext sent through the
tunnel and looked for in an underlay capture, and the capture and replay of
confidential-mode datagrams by an attacker on the underlay."""

import hashlib, json, socket, struct, sys, time

# The known plaintext: 64 bytes that occur nowhere by chance.
PATTERN = hashlib.sha256(b"taptun cipher e2e 1").digest() + \
    hashlib.sha256(b"taptun cipher e2e 2").digest()
assert len(PATTERN) == 64
# Any 16-byte stretch of it counts as a leak, not only the whole.
PIECES = [PATTERN[i:i + 16] for i in range(0, 64 - 16 + 1)]

# Confidential mode: session id (16) || timestamp (8, BE ns) || ct || tag.
TS_AT = 16
# A keepalive (empty frame) is 40 bytes in either mode.
KEEPALIVE = 40


def sink(args):
    # sink ADDR PORT OUT: counts datagrams equal to PATTERN until END (or 60 s).
    addr, port, out = args
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    s.settimeout(0.5)
    got, other, end = 0, 0, time.time() + 60
    print("ready", flush=True)
    while time.time() < end:
        try:
            data = s.recv(65535)
        except socket.timeout:
            continue
        if data == b"END":
            break
        if data == PATTERN:
            got += 1
        else:
            other += 1
    json.dump({"pattern": got, "other": other}, open(out, "w"))


def send(args):
    # send DST PORT N: N datagrams carrying PATTERN, 1 ms apart, then END.
    dst, port, n = args
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(int(n)):
        s.sendto(PATTERN, (dst, int(port)))
        time.sleep(0.001)
    for _ in range(5):
        time.sleep(0.1)
        s.sendto(b"END", (dst, int(port)))


def pcap_records(path):
    data = open(path, "rb").read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise SystemExit("%s: not a pcap file (magic %s)" % (path, magic.hex()))
    at = 24
    while at + 16 <= len(data):
        incl = struct.unpack(e + "I", data[at + 8:at + 12])[0]
        yield data[at + 16:at + 16 + incl]
        at += 16 + incl


def scan(args):
    # scan PCAP PORT: how many UDP packets to or from PORT the capture holds,
    # their payload bytes, and how many of them contain a piece of PATTERN.
    path, port = args[0], int(args[1])
    packets, payload, leaks, hits = 0, 0, 0, 0
    for rec in pcap_records(path):
        # Ethernet (the underlay is a veth), IPv4 only.
        if len(rec) < 14 + 28 or rec[12:14] != b"\x08\x00":
            continue
        ip = rec[14:]
        if ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
        if port not in (sport, dport):
            continue
        packets += 1
        body = ip[ihl + 8:]
        payload += len(body)
        if any(p in body for p in PIECES):
            leaks += 1
        hits += body.count(PATTERN)
    json.dump({"packets": packets, "payload": payload, "leaks": leaks,
               "hits": hits}, sys.stdout)
    print()


def sessions(args):
    # sessions PCAP SRC PORT: the session ids, in order of first appearance,
    # of the confidential-mode datagrams SRC:PORT sent, one a line.
    path, src, port = args[0], args[1], int(args[2])
    seen = []
    for rec in pcap_records(path):
        if len(rec) < 14 + 28 or rec[12:14] != b"\x08\x00":
            continue
        ip = rec[14:]
        if ip[9] != 17 or socket.inet_ntoa(ip[12:16]) != src:
            continue
        ihl = (ip[0] & 15) * 4
        if struct.unpack("!H", ip[ihl:ihl + 2])[0] != port:
            continue
        sid = ip[ihl + 8:ihl + 8 + 16].hex()
        if len(sid) == 32 and sid not in seen:
            seen.append(sid)
    print("\n".join(seen))


def capture(iface, dst, dport, ready, limit, least):
    # A packet socket sees every frame the hub floods to the attacker.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind((iface, 0))
    s.settimeout(0.1)
    open(ready, "w").write("ready\n")
    got, end, last = [], time.time() + limit, None
    while time.time() < end:
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
        if dp == dport and len(payload) > KEEPALIVE:
            got.append(payload)
            last = time.time()
    return got


def age(dg):
    return (time.time_ns() - struct.unpack("!Q", dg[TS_AT:TS_AT + 8])[0]) / 1e9


def send_own(dgs, dst, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ages = []
    for dg in dgs:
        ages.append(age(dg))
        s.sendto(dg, (dst, port))
    return ages


def send_spoofed(dgs, src, sport, dst, dport):
    # UDP checksum 0 (none); the kernel fills in the IP header's id,
    # checksum and length (raw(7)).
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    ages = []
    for dg in dgs:
        ages.append(age(dg))
        udp = struct.pack("!HHHH", sport, dport, 8 + len(dg), 0) + dg
        iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, 17, 0,
                          socket.inet_aton(src), socket.inet_aton(dst))
        s.sendto(iph + udp, (dst, 0))
    return ages


def replay(args):
    # replay IFACE VICTIM PORT GENUINE_SRC READY OUT MAX_AGE LEAST
    iface, victim, port, genuine, ready, out, max_age, least = args
    port, max_age, least = int(port), float(max_age), int(least)
    dgs = capture(iface, victim, port, ready, 20, least)
    report = {"captured": len(dgs), "phases": {}}
    if dgs:
        # At once, from the attacker's address and spoofing the peer's;
        # again 1.2 s later (inside --max-age); again 1 s past --max-age.
        ph = report["phases"]
        ph["own"] = send_own(dgs, victim, port)
        ph["spoofed"] = send_spoofed(dgs, genuine, port, victim, port)
        wait = 1.2 - age(dgs[-1])
        if wait > 0:
            time.sleep(wait)
        ph["own_delayed_inside"] = send_own(dgs, victim, port)
        ph["spoofed_delayed_inside"] = send_spoofed(dgs, genuine, port, victim, port)
        wait = max_age + 1.0 - age(dgs[-1])
        if wait > 0:
            time.sleep(wait)
        ph["own_delayed_outside"] = send_own(dgs, victim, port)
        ph["spoofed_delayed_outside"] = send_spoofed(dgs, genuine, port, victim, port)
        # The captured datagrams are really confidential-mode ones of one
        # session (the peer's), carrying no plaintext.
        report["sessions"] = len({dg[:16] for dg in dgs})
        report["leaks"] = sum(1 for dg in dgs if any(p in dg for p in PIECES))
    json.dump(report, open(out, "w"))


def listen(args):
    # listen ADDR PORT OUT: counts every payload until END (or 60 s).
    addr, port, out = args
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    s.settimeout(0.5)
    counts, end = {}, time.time() + 60
    print("ready", flush=True)
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
    # talk DST PORT N: N unique payloads, each PATTERN-free.
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


{"sink": sink, "send": send, "scan": scan, "sessions": sessions, "replay": replay,
 "listen": listen, "talk": talk, "end": end}[sys.argv[1]](sys.argv[2:])
