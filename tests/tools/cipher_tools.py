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

# Confidential mode: session id (16) || timestamp (8, BE ns) || ct || tag.
TS_AT = 16


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


def replay(args):
    # The captured datagrams are really confidential-mode ones of one
    # session (the peer's), carrying no plaintext.
    taptun_wire.replay(args, TS_AT, lambda dgs: {
        "sessions": len({dg[:16] for dg in dgs}),
        "leaks": sum(1 for dg in dgs if any(p in dg for p in PIECES)),
    })


def listen(args):
    taptun_wire.listen(args, announce=True)


{"sink": sink, "send": send, "scan": scan, "sessions": sessions, "replay": replay,
 "listen": listen, "talk": talk, "end": end}[sys.argv[1]](sys.argv[2:])
