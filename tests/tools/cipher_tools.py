"""Tools for tests/cipher_e2e.rs: a known plaintext sent through the
tunnel and looked for in an underlay capture, and the capture and replay of
confidential-mode datagrams by an attacker on the underlay."""

import hashlib, json, socket, struct, sys, time

import taptun_wire
from taptun_wire import end, talk

# The known plaintext: 64 bytes that occur nowhere by chance.
PATTERN = hashlib.sha256(b"taptun cipher e2e 1").digest() + \
    hashlib.sha256(b"taptun cipher e2e 2").digest()
assert len(PATTERN) == 64
# Any 16-byte stretch of it counts as a leak, not only the whole.
PIECES = [PATTERN[i:i + 16] for i in range(0, 64 - 16 + 1)]

# Confidential mode (Noise): the first byte is the type (the three after it
# are zero); a response and a transport datagram name the receiver's index
# (u32 BE) next; a transport datagram then carries its counter (u64 BE).
INITIATION, RESPONSE, TRANSPORT = 1, 2, 4
TYPES = {INITIATION: 56, RESPONSE: 60}
TRANSPORT_MIN = 32  # header 16 + tag 16: a keepalive

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


def kind(dg):
    # The type of a well-formed confidential-mode datagram, or None.
    if len(dg) < 4 or dg[1:4] != b"\0\0\0":
        return None
    t = dg[0]
    if t in TYPES and len(dg) == TYPES[t]:
        return t
    if t == TRANSPORT and len(dg) >= TRANSPORT_MIN:
        return t
    return None


def udp_of(rec):
    # (src, sport, dst, dport, payload) of an Ethernet + IPv4 + UDP frame.
    if len(rec) < 14 + 28 or rec[12:14] != b"\x08\x00":
        return None
    ip = rec[14:]
    if ip[9] != 17:
        return None
    ihl = (ip[0] & 15) * 4
    sport, dport, ulen = struct.unpack("!HHH", ip[ihl:ihl + 6])
    return (socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]),
            dport, ip[ihl + 8:ihl + ulen])


def indices(args):
    # indices PCAP PORT: the receiver indices of the transport datagrams
    # between two ends on PORT, per direction, in order of first
    # appearance: "SRC DST INDEX" (index in hex), one a line.
    path, port = args[0], int(args[1])
    seen = []
    for rec in pcap_records(path):
        u = udp_of(rec)
        if not u or u[1] != port or u[3] != port or kind(u[4]) != TRANSPORT:
            continue
        line = "%s %s %s" % (u[0], u[2], u[4][4:8].hex())
        if line not in seen:
            seen.append(line)
    print("\n".join(seen))


def sniffer(iface):
    # A packet socket sees every frame the hub floods to the attacker, and
    # the attacker's own.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind((iface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.settimeout(0.1)
    return s


def replay(args):
    # replay IFACE VICTIM PORT GENUINE READY OUT LEAST: an attacker on the
    # hub. Captures every datagram GENUINE:PORT sends to VICTIM:PORT from
    # before the two peers start (so the handshake too) until LEAST came
    # and 0.3 s passed without one (at most 30 s); then sends each again,
    # as it is: (a) from the attacker's own address, (b) spoofing GENUINE,
    # at once, then both again 1.2 s later. All along, and for 1 s after,
    # it counts the responses (type 2) VICTIM sends, to anyone. Writes a
    # JSON report to OUT.
    iface, victim, port, genuine, ready, out, least = args
    port, least = int(port), int(least)
    s = sniffer(iface)
    responses = []

    def look(pkt):
        u = udp_of(pkt)
        if not u or u[1] != port or u[3] != port:
            return None
        if u[0] == victim and kind(u[4]) == RESPONSE:
            responses.append("%s %s" % (u[2], u[4][4:8].hex()))
        if u[0] == genuine and u[2] == victim:
            return u[4]
        return None

    def drain(secs):
        end = time.time() + secs
        while time.time() < end:
            try:
                look(s.recv(70000))
            except socket.timeout:
                pass

    open(ready, "w").write("ready\n")
    dgs, end, last = [], time.time() + 30, None
    while time.time() < end:
        if len(dgs) >= least and time.time() - last > 0.3:
            break
        try:
            pkt = s.recv(70000)
        except socket.timeout:
            continue
        dg = look(pkt)
        if dg is not None:
            dgs.append(dg)
            last = time.time()
    kinds = [kind(dg) for dg in dgs]
    report = {
        "captured": len(dgs),
        "initiations": kinds.count(INITIATION),
        "transport": kinds.count(TRANSPORT),
        "other": sum(1 for k in kinds if k not in (INITIATION, TRANSPORT)),
        # Receiver indices of the captured transport datagrams: sessions.
        "sessions": len({dg[4:8] for dg, k in zip(dgs, kinds) if k == TRANSPORT}),
        "leaks": sum(1 for dg in dgs if any(p in dg for p in PIECES)),
        "phases": {},
    }
    own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # UDP checksum 0 (none); the kernel fills in the IP header's id,
    # checksum and length (raw(7)).
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send_own():
        for dg in dgs:
            own.sendto(dg, (victim, port))
        return len(dgs)

    def send_spoofed():
        for dg in dgs:
            udp = struct.pack("!HHHH", port, port, 8 + len(dg), 0) + dg
            iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, 17, 0,
                              socket.inet_aton(genuine), socket.inet_aton(victim))
            raw.sendto(iph + udp, (victim, 0))
        return len(dgs)

    if dgs:
        ph = report["phases"]
        ph["own"] = send_own()
        ph["spoofed"] = send_spoofed()
        drain(1.2)
        ph["own_delayed"] = send_own()
        ph["spoofed_delayed"] = send_spoofed()
    drain(1.0)
    report["responses"] = responses
    json.dump(report, open(out, "w"))

def listen(args):
    taptun_wire.listen(args, announce=True)


{"sink": sink, "send": send, "scan": scan, "indices": indices, "replay": replay,
 "listen": listen, "talk": talk, "end": end}[sys.argv[1]](sys.argv[2:])
