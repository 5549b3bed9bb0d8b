#!/usr/bin/env python3
"""Self-test of the Python side of taptun's confidential mode v2, no taptun
needed:

    python3 tests/tools/noise_selftest.py     # prints what it checked, exit 0 = all good

1. NNpsk0 written out from the Noise spec (noise_v2.Raw: hashlib, hmac,
   cryptography's AEADs) reproduces every handshake and transport datagram
   of tests/vectors/noise-v2.json, which the vendored noiseprotocol made: two
   unrelated implementations of the same contract agree.
2. noise_decrypt.py on synthetic captures (Ethernet/IPv4, Linux SLL/IPv6,
   SLL2/IPv4, with IP fragments) of handshakes and transport made with
   noiseprotocol: the key file alone decrypts the initiations but no
   transport datagram (decrypted=0, found=0); with the sessions' key log it
   decrypts all of them (decrypted=N, found>0), from either side's log alone
   too; a key log of other sessions decrypts nothing; an unreadable capture
   exits 2.
3. Two noise_peer.py complete a handshake over loopback and exchange frames.
"""

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import noise_v2 as nv  # noqa: E402

VECTORS = os.path.join(HERE, "..", "vectors", "noise-v2.json")
MARKER = b"taptun v2 selftest known plaintext"
FAILS = []


def check(cond, what):
    print("%s: %s" % ("ok" if cond else "FAIL", what))
    if not cond:
        FAILS.append(what)


# ---- 1. the vectors against a from-scratch NNpsk0 ------------------------------

def raw_handshake(raw, psk, ie, re, ii, ri):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    def pub(p):
        return p.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    iep, rep = X25519PrivateKey.from_private_bytes(ie), X25519PrivateKey.from_private_bytes(re)
    e1 = pub(iep)
    ck, h, k = raw.after_e1(psk, e1)  # psk, e
    c1 = raw.seal(k, 0, h, struct.pack(">I", ii))
    h = raw.hash(h + c1)
    e2 = pub(rep)  # e
    h = raw.hash(h + e2)
    ck, k = raw.hkdf(ck, e2, 2)
    ck, k = raw.hkdf(ck, rep.exchange(iep.public_key()), 2)  # ee
    c2 = raw.seal(k, 0, h, struct.pack(">I", ri))
    h = raw.hash(h + c2)
    k1, k2 = raw.hkdf(ck, b"", 2)  # Split()
    return (b"\1\0\0\0" + e1 + c1, b"\2\0\0\0" + struct.pack(">I", ii) + e2 + c2, k1, k2, h)


def check_vectors():
    with open(VECTORS) as f:
        doc = json.load(f)
    b = bytes.fromhex
    same = total = 0
    for hs in doc["handshakes"]:
        raw = nv.Raw(hs["cipher"])
        m1, m2, k1, k2, h = raw_handshake(raw, b(hs["psk_hex"]), b(hs["initiator_ephemeral_private_hex"]),
                                          b(hs["responder_ephemeral_private_hex"]),
                                          hs["initiator_index"], hs["responder_index"])
        check((m1.hex(), m2.hex(), k1.hex(), k2.hex(), h.hex())
              == (hs["initiation_hex"], hs["response_hex"], hs["k1_hex"], hs["k2_hex"],
                  hs["handshake_hash_hex"]),
              "%s: raw NNpsk0 gives the same initiation, response, k1, k2, hash" % hs["name"])
        for t in hs["transport"]:
            k = k1 if t["sender"] == "initiator" else k2
            hdr = nv.header(t["receiver_index"], t["counter"])
            total += 1
            same += (hdr + raw.seal(k, t["counter"], hdr, b(t["frame_hex"]))).hex() == t["datagram_hex"]
    check(same == total, "raw transport seal reproduces %d of %d vector datagrams" % (same, total))
    refused = 0
    for neg in doc["negative"]:
        if neg["kind"] != "transport":
            refused += 1  # checked by noise_vectors.py at generation
            continue
        hs = next(h for h in doc["handshakes"] if h["name"] == neg["handshake"])
        key = b(hs["k1_hex"] if neg["receiver"] == "responder" else hs["k2_hex"])
        dg = b(neg["datagram_hex"])
        raw = nv.Raw(hs["cipher"])
        ok = len(dg) >= 32 and raw.open(key, struct.unpack(">Q", dg[8:16])[0], dg[:16], dg[16:]) is None
        refused += ok
    check(refused == len(doc["negative"]), "raw open refuses the %d negative transport cases"
          % sum(1 for n in doc["negative"] if n["kind"] == "transport"))


# ---- 2. noise_decrypt.py on synthetic captures ---------------------------------------

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_packets(src, dst, sport, dport, payload, ident):
    seg = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    out, step = [], 1480
    for off in range(0, len(seg), step):
        chunk = seg[off:off + step]
        more = off + step < len(seg)
        hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(chunk), ident,
                          (0x2000 if more else 0) | (off // 8), 64, 17, 0, src, dst)
        hdr = hdr[:10] + struct.pack(">H", checksum(hdr)) + hdr[12:]
        out.append((0x0800, hdr + chunk))
    return out


def ipv6_packets(src, dst, sport, dport, payload, ident):
    seg = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    if len(seg) <= 1232:
        return [(0x86DD, struct.pack(">IHBB16s16s", 6 << 28, len(seg), 17, 64, src, dst) + seg)]
    out, step = [], 1232
    for off in range(0, len(seg), step):
        chunk = seg[off:off + step]
        more = off + step < len(seg)
        frag = struct.pack(">BBHI", 17, 0, off | (1 if more else 0), ident)
        out.append((0x86DD, struct.pack(">IHBB16s16s", 6 << 28, 8 + len(chunk), 44, 64, src, dst)
                    + frag + chunk))
    return out


def link(linktype, et, ip):
    if linktype == 1:
        return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + struct.pack(">H", et) + ip
    if linktype == 113:
        return struct.pack(">HHH8sH", 0, 1, 6, b"\x02\0\0\0\0\x01\0\0", et) + ip
    if linktype == 276:
        return struct.pack(">HHIHBB8s", et, 0, 2, 1, 0, 6, b"\x02\0\0\0\0\x01\0\0") + ip
    raise ValueError(linktype)


def write_pcap(path, linktype, packets):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
        for n, pkt in enumerate(packets):
            f.write(struct.pack("<IIII", 1765000000 + n // 1000, n % 1000, len(pkt), len(pkt)))
            f.write(pkt)


def frames_for(tag, count):
    """count frames of 0..1514 bytes, every third one holding MARKER."""
    out = []
    for i in range(count):
        n = [0, 1, 60, 200, 1514][i % 5]
        body = hashlib.sha256(b"%s %d" % (tag.encode(), i)).digest() * 48
        f = body[:n]
        if i % 3 == 1 and n >= len(MARKER) + 14:
            f = f[:14] + MARKER + f[14 + len(MARKER):]
        out.append(f)
    return out


def session(cipher, psk, a_index, b_index, a_initiates, count, tag):
    """Datagrams (from_a, payload) of one session between peers a and b,
    and the two key-log lines (a's, b's)."""
    first = nv.handshake(cipher, psk, True)
    second = nv.handshake(cipher, psk, False)
    i_index, r_index = (a_index, b_index) if a_initiates else (b_index, a_index)
    init = nv.write_initiation(first, i_index)
    assert nv.read_initiation(second, init) == i_index
    resp = nv.write_response(second, i_index, r_index)
    assert nv.read_response(first, resp) == (i_index, r_index)
    k1, k2 = nv.split_keys(first)
    dgs = [(a_initiates, init), (not a_initiates, resp)]
    ics, rcs = nv.cipher_state(cipher, k1), nv.cipher_state(cipher, k2)
    for i, f in enumerate(frames_for(tag, count)):
        dgs.append((a_initiates, nv.seal(ics, r_index, i, f)))
        dgs.append((not a_initiates, nv.seal(rcs, i_index, i, frames_for(tag + " back", count)[i])))
    i_line = "%s %08x %08x %s %s" % (cipher, i_index, r_index, k1.hex(), k2.hex())
    r_line = "%s %08x %08x %s %s" % (cipher, r_index, i_index, k2.hex(), k1.hex())
    a_line, b_line = (i_line, r_line) if a_initiates else (r_line, i_line)
    return dgs, a_line, b_line


def run(*args):
    p = subprocess.run([sys.executable, os.path.join(HERE, "noise_decrypt.py")] + list(args),
                       capture_output=True, text=True)
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    fields = dict(kv.split("=") for kv in last.split()) if last.startswith("initiations=") else {}
    return p.returncode, {k: int(v) for k, v in fields.items()}, p.stdout + p.stderr


def check_decrypt(tmp):
    psk = hashlib.sha256(b"selftest psk").digest()
    keyfile = os.path.join(tmp, "key.b64")
    with open(keyfile, "w") as f:
        f.write(base64.b64encode(psk).decode() + "\n")
    sessions = [("aes-256-gcm", 0x11111111, 0x22222222, True, 12, "aes a->b"),
                ("aes-256-gcm", 0x33333333, 0x44444444, False, 7, "aes rekey b->a"),
                ("chacha20-poly1305", 0x55555555, 0x00000000, True, 10, "chacha a->b")]
    dgs, a_log, b_log = [], [], []
    for s in sessions:
        d, la, lb = session(s[0], psk, *s[1:])
        dgs += d
        a_log.append(la)
        b_log.append(lb)
    n_transport = sum(1 for _, d in dgs if d[0] == 4)
    logs = {}
    for name, lines in (("both", a_log + b_log), ("a", a_log), ("b", b_log)):
        logs[name] = os.path.join(tmp, "keylog-" + name)
        with open(logs[name], "w") as f:
            f.write("\n".join(lines) + "\n")
    # a key log of other sessions with the same indices: must open nothing
    wrong = os.path.join(tmp, "keylog-wrong")
    with open(wrong, "w") as f:
        for line in a_log:
            c, li, ri, s, r = line.split()
            f.write("%s %s %s %s %s\n" % (c, li, ri, hashlib.sha256(bytes.fromhex(s)).hexdigest(),
                                          hashlib.sha256(bytes.fromhex(r)).hexdigest()))

    a4, b4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    a6, b6 = bytes.fromhex("fd00" + "00" * 13 + "01"), bytes.fromhex("fd00" + "00" * 13 + "02")
    # some noise: a DNS-looking and a v1-looking UDP payload, neither is v2
    extra = [(True, b"\x12\x34\x01\x00" + bytes(20)), (False, bytes(range(40)))]
    for linktype, family in ((1, 4), (113, 6), (276, 4)):
        pkts = []
        for n, (from_a, d) in enumerate(extra + dgs):
            if family == 4:
                src, dst = (a4, b4) if from_a else (b4, a4)
                ips = ipv4_packets(src, dst, 51820 if from_a else 51821, 51821 if from_a else 51820, d, n)
            else:
                src, dst = (a6, b6) if from_a else (b6, a6)
                ips = ipv6_packets(src, dst, 51820 if from_a else 51821, 51821 if from_a else 51820, d, n)
            pkts += [link(linktype, et, ip) for et, ip in ips]
        cap = os.path.join(tmp, "cap-%d.pcap" % linktype)
        write_pcap(cap, linktype, pkts)
        what = "link type %d IPv%d (%d packets)" % (linktype, family, len(pkts))

        rc, f, out = run(cap, keyfile, "--find", MARKER.hex())
        check(rc == 0 and f.get("initiations") == 3 and f.get("responses") == 3
              and f.get("transport") == n_transport and f.get("decrypted") == 0 and f.get("found") == 0
              and "initiation payloads decrypted: 3 of 3" in out
              and "response payloads decrypted: 0 of 3" in out
              and "transport decrypted: 0 of %d" % n_transport in out,
              "%s, key file alone: initiations 3 of 3 opened, transport decrypted=0 of %d, found=0  [%s]"
              % (what, n_transport, out.strip().splitlines()[-1] if out.strip() else rc))
        for name in ("both", "a", "b"):
            rc, f, out = run(cap, keyfile, "--keylog", logs[name], "--find", MARKER.hex())
            check(rc == 0 and f.get("decrypted") == n_transport and f.get("found", 0) > 0,
                  "%s, key log of %s: decrypted=%d of %d, found=%s"
                  % (what, name, f.get("decrypted", -1), n_transport, f.get("found")))
        rc, f, out = run(cap, keyfile, "--keylog", wrong)
        check(rc == 0 and f.get("decrypted") == 0, "%s, wrong key log: decrypted=%s"
              % (what, f.get("decrypted")))
        rc, f, out = run(cap, keyfile, "--keylog", logs["both"], "--cipher", "chacha20-poly1305")
        check(rc == 0 and f.get("decrypted") == 20 and f.get("initiations") == 3,
              "%s, --cipher chacha20-poly1305: decrypted=%s (its 20 datagrams)" % (what, f.get("decrypted")))

    # the attack has teeth: transport keyed without the ee DH (Split() of the
    # chain after message 2's e) or with the psk itself is decrypted from the
    # key file alone
    raw = nv.Raw("aes-256-gcm")
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    e1 = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    e2 = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ck, h, k = raw.after_e1(psk, e1)
    c1 = raw.seal(k, 0, h, struct.pack(">I", 0xABCDEF01))
    h = raw.hash(raw.hash(h + c1) + e2)
    ck, k = raw.hkdf(ck, e2, 2)
    c2 = raw.seal(k, 0, h, struct.pack(">I", 0x10FEDCBA))
    k1, k2 = raw.hkdf(ck, b"", 2)
    broken = [b"\1\0\0\0" + e1 + c1, b"\2\0\0\0" + struct.pack(">I", 0xABCDEF01) + e2 + c2]
    for i, f in enumerate(frames_for("broken", 12)):
        broken.append(nv.seal(nv.cipher_state("aes-256-gcm", k1), 0x10FEDCBA, i, f))
        broken.append(nv.seal(nv.cipher_state("aes-256-gcm", psk), 0x77777777, i, f))
    pkts = []
    for n, d in enumerate(broken):
        pkts += [link(1, et, ip) for et, ip in ipv4_packets(a4, b4, 1, 2, d, n)]
    cap = os.path.join(tmp, "broken.pcap")
    write_pcap(cap, 1, pkts)
    rc, f, out = run(cap, keyfile, "--find", MARKER.hex())
    check(rc == 0 and f.get("decrypted") == 24 and f.get("found", 0) > 0
          and "response payloads decrypted: 1 of 1" in out,
          "a capture of a broken v2 (no ee DH; psk as transport key), key file alone: "
          "decrypted=%s of 24, found=%s" % (f.get("decrypted"), f.get("found")))

    junk = os.path.join(tmp, "junk.pcap")
    with open(junk, "wb") as f:
        f.write(b"\x0a\x0d\x0d\x0a" + bytes(60))
    rc, _, out = run(junk, keyfile)
    check(rc == 2, "pcapng / unreadable capture: exit %d" % rc)
    rc, _, out = run(os.path.join(tmp, "missing.pcap"), keyfile)
    check(rc == 2, "missing capture: exit %d" % rc)
    rc, _, out = run(os.path.join(tmp, "cap-1.pcap"), os.path.join(tmp, "keylog-a"))
    check(rc == 2, "key file that is not base64 of 32 bytes: exit %d" % rc)


def free_port():
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_peer(tmp):
    """Two noise_peer.py talk over loopback, each way an initiator."""
    key = os.path.join(tmp, "peer-key.b64")
    with open(key, "w") as f:
        f.write(base64.b64encode(hashlib.sha256(b"selftest peer psk").digest()).decode())
    peer = os.path.join(HERE, "noise_peer.py")
    for cipher in sorted(nv.PROTOCOLS):
        pr, pi = free_port(), free_port()
        common = [sys.executable, peer, "--key", key, "--cipher", cipher, "--timeout", "10", "--retry", "0.5"]
        resp = subprocess.Popen(common + ["--local", "127.0.0.1:%d" % pr, "--peer", "127.0.0.1:%d" % pi,
                                          "--respond", "--send-hex", "beef", "--expect", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        init = subprocess.run(common + ["--local", "127.0.0.1:%d" % pi, "--peer", "127.0.0.1:%d" % pr,
                                        "--initiate", "--send-hex", "", "--send-hex", "01" * 1514,
                                        "--send-hex", "02", "--expect", "1"],
                              capture_output=True, text=True)
        rout, rerr = resp.communicate(timeout=15)
        check(init.returncode == 0 and resp.returncode == 0 and init.stdout.split() == ["beef"]
              and rout.split() == ["01" * 1514, "02"],
              "noise_peer.py %s: handshake over loopback, keepalive + 2 frames one way, 1 back" % cipher)


def main():
    check_vectors()
    with tempfile.TemporaryDirectory(prefix="noise-selftest-") as tmp:
        check_decrypt(tmp)
        check_peer(tmp)
    print("%d check(s) failed" % len(FAILS) if FAILS else "all checks passed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
