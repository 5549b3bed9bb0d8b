#!/usr/bin/env python3
"""The forward-secrecy check of taptun's confidential mode v2: what can one
who captured the traffic AND later stole the key file read?

    noise_decrypt.py CAPTURE.pcap KEYFILE.b64 [--keylog FILE]
                     [--cipher aes-256-gcm|chacha20-poly1305] [--find HEXBYTES] [--port N]
                     [--exhaustive]

CAPTURE is a classic pcap (tcpdump -w; not pcapng) of link type Ethernet (1),
Linux cooked SLL (113) or SLL2 (276) (also raw IP and BSD loopback), IPv4 or
IPv6, UDP; IP fragments are reassembled. Every UDP payload shaped like a
taptun v2 datagram (noise-spec.md: type 1/56 bytes, 2/60 bytes, 4/>=32 bytes)
is looked at.

With the key file alone it does everything such an attacker can:
  * decrypts the initiation payloads (message 1 is under the psk only, so
    the initiator's index is not secret from the key file's holder);
  * rebuilds each handshake's chaining key from the psk and the two public
    ephemerals and, in place of the ee DH it cannot compute, tries guesses
    (no DH, zeros, the psk, either public key, the XOR of both, X25519 with
    the psk as a private key), checks message 2 against each, and tries the
    Split() keys of every guess plus HKDF/hash derivations of the psk on every
    transport datagram (all of them on the first 8 datagrams to each
    receiver index -- a session's datagrams share one key -- and a guess
    that worked on all the rest; --exhaustive: every guess on every
    datagram). Expected: "transport decrypted: 0 of N".
With --keylog FILE (TAPTUN_KEYLOG lines `<cipher> <local index hex8>
<remote index hex8> <send key hex64> <recv key hex64>`, one per session and
side), it decrypts each transport datagram by the key of its receiver index:
"transport decrypted: K of N". --find HEXBYTES counts the decrypted frames
that contain those bytes (and, separately, raw payloads that do).

Last line, machine-readable:
    initiations=I responses=R transport=N decrypted=K found=F
Exit 0, or 2 when the capture, key file or key log cannot be read.
"""

import argparse
import base64
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import noise_v2 as nv  # noqa: E402


SAMPLE = 8  # key-file guesses are tried on this many datagrams per receiver index


class Unreadable(Exception):
    pass


# ---- pcap -------------------------------------------------------------------

def pcap_packets(path):
    """(link type, packet bytes) of a classic pcap."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise Unreadable("%s: %s" % (path, e.strerror))
    if len(data) < 24:
        raise Unreadable("%s: too short for a pcap file" % path)
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    elif magic == b"\x0a\x0d\x0d\x0a":
        raise Unreadable("%s: pcapng is not read; capture with tcpdump -w or convert "
                         "with editcap -F pcap" % path)
    else:
        raise Unreadable("%s: not a pcap file (magic %s)" % (path, magic.hex()))
    linktype = struct.unpack(e + "I", data[20:24])[0] & 0x0FFFFFFF
    out = []
    at = 24
    while at + 16 <= len(data):
        incl = struct.unpack(e + "I", data[at + 8:at + 12])[0]
        out.append(data[at + 16:at + 16 + incl])
        at += 16 + incl
    return linktype, out


def network_layer(linktype, pkt):
    """(ethertype, bytes from the IP header) or None."""
    if linktype == 1:  # Ethernet, with any 802.1Q / 802.1ad tags
        at, et = 12, None
        while at + 2 <= len(pkt):
            et = struct.unpack(">H", pkt[at:at + 2])[0]
            if et in (0x8100, 0x88A8, 0x9100):
                at += 4
                continue
            return et, pkt[at + 2:]
        return None
    if linktype == 113:  # Linux cooked v1: 16 bytes, protocol last
        return (struct.unpack(">H", pkt[14:16])[0], pkt[16:]) if len(pkt) >= 16 else None
    if linktype == 276:  # Linux cooked v2: 20 bytes, protocol first
        return (struct.unpack(">H", pkt[0:2])[0], pkt[20:]) if len(pkt) >= 20 else None
    if linktype in (12, 14, 101, 228, 229):  # raw IP
        if not pkt:
            return None
        return (0x0800 if pkt[0] >> 4 == 4 else 0x86DD), pkt
    if linktype == 0:  # BSD loopback: 4-byte address family in host order
        if len(pkt) < 5:
            return None
        return (0x0800 if pkt[4] >> 4 == 4 else 0x86DD), pkt[4:]
    return None


class Reassembly:
    """IP fragments by (family, src, dst, id): the whole datagram once its
    last fragment arrived and no hole is left."""

    def __init__(self):
        self.parts = {}

    def add(self, key, offset, more, payload, first_header=None):
        frags = self.parts.setdefault(key, {"pieces": {}, "total": None})
        frags["pieces"][offset] = payload
        if not more:
            frags["total"] = offset + len(payload)
        if frags["total"] is None:
            return None
        buf, at = b"", 0
        for off in sorted(frags["pieces"]):
            if off > at:
                return None
            buf = buf[:off] + frags["pieces"][off]
            at = len(buf)
        if at < frags["total"]:
            return None
        del self.parts[key]
        return buf[:frags["total"]]


def udp_of_ip(et, ip, reasm):
    """(src, sport, dst, dport, payload) or None."""
    if et == 0x0800:
        if len(ip) < 20 or ip[0] >> 4 != 4:
            return None
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        body = ip[ihl:total] if total >= ihl else ip[ihl:]
        proto = ip[9]
        src, dst = ip[12:16], ip[16:20]
        flags_off = struct.unpack(">H", ip[6:8])[0]
        more, off = bool(flags_off & 0x2000), (flags_off & 0x1FFF) * 8
        if more or off:
            body = reasm.add((4, src, dst, ip[4:6], proto), off, more, body)
            if body is None:
                return None
        if proto != 17:
            return None
        return udp(src, dst, body)
    if et == 0x86DD:
        if len(ip) < 40 or ip[0] >> 4 != 6:
            return None
        plen = struct.unpack(">H", ip[4:6])[0]
        nxt, body = ip[6], ip[40:40 + plen]
        src, dst = ip[8:24], ip[24:40]
        while nxt in (0, 43, 60, 44):
            if len(body) < 8:
                return None
            if nxt == 44:
                off_m = struct.unpack(">H", body[2:4])[0]
                off, more = off_m & 0xFFF8, bool(off_m & 1)
                ident, nxt = body[4:8], body[0]
                body = reasm.add((6, src, dst, ident, nxt), off, more, body[8:])
                if body is None:
                    return None
                continue
            nxt, body = body[0], body[(body[1] + 1) * 8:]
        if nxt != 17:
            return None
        return udp(src, dst, body)
    return None


def udp(src, dst, seg):
    if len(seg) < 8:
        return None
    sport, dport, length = struct.unpack(">HHH", seg[:6])
    payload = seg[8:length] if length >= 8 else seg[8:]
    return src, sport, dst, dport, payload


def udp_payloads(path, port=None):
    linktype, packets = pcap_packets(path)
    reasm = Reassembly()
    out = []
    for pkt in packets:
        nl = network_layer(linktype, pkt)
        if nl is None:
            continue
        u = udp_of_ip(nl[0], nl[1], reasm)
        if u is None:
            continue
        if port is not None and port not in (u[1], u[3]):
            continue
        out.append(u[4])
    return out


# ---- key file, key log --------------------------------------------------------

def read_key_file(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
        key = base64.b64decode(raw.strip(), validate=True)
    except (OSError, ValueError) as e:
        raise Unreadable("%s: not a base64 key file (%s)" % (path, e))
    if len(key) != 32:
        raise Unreadable("%s: %d bytes, the v2 psk is 32" % (path, len(key)))
    return key


def read_keylog(path, ciphers):
    """receiver index -> [(cipher, key)]: a line's recv key opens what arrives
    at its local index, its send key what it sends to the remote index."""
    by_index = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise Unreadable("%s: %s" % (path, e.strerror))
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        try:
            cipher, local, remote, send, recv = parts
            local, remote = int(local, 16), int(remote, 16)
            send, recv = bytes.fromhex(send), bytes.fromhex(recv)
            if cipher not in nv.PROTOCOLS or len(send) != 32 or len(recv) != 32:
                raise ValueError
        except ValueError:
            raise Unreadable("%s:%d: not `<cipher> <local hex8> <remote hex8> <send hex64> "
                             "<recv hex64>`: %r" % (path, n, line))
        if cipher not in ciphers:
            continue
        for index, key in ((local, recv), (remote, send)):
            keys = by_index.setdefault(index, [])
            if (cipher, key) not in keys:
                keys.append((cipher, key))
    return by_index


# ---- the attacker with the key file -----------------------------------------------

def x25519(private, public):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public))
    except Exception:
        return None


def key_file_attack(psk, ciphers, initiations, responses):
    """What the key file gives: how many initiations it opens, {initiator index: (cipher, e1, ck, h)} of the
    initiations it decrypts, the responses whose payload it decrypts, and
    candidate transport keys: {receiver index: [(cipher, key)]} tied to a
    handshake, and [(cipher, key)] tried on every datagram."""
    opened, inits_opened = {}, 0
    for dg in initiations:
        e1, c1 = dg[4:36], dg[36:]
        for cipher in ciphers:
            raw = nv.Raw(cipher)
            ck, h, k = raw.after_e1(psk, e1)
            payload = raw.open(k, 0, h, c1)
            if payload is not None:
                opened[struct.unpack(">I", payload)[0]] = (cipher, e1, ck, raw.hash(h + c1))
                inits_opened += 1
                break

    tied, responses_opened = {}, 0
    for dg in responses:
        ii = struct.unpack(">I", dg[4:8])[0]
        if ii not in opened:
            continue
        cipher, e1, ck1, h1 = opened[ii]
        raw = nv.Raw(cipher)
        e2, c2 = dg[8:40], dg[40:]
        h = raw.hash(h1 + e2)
        ck, k = raw.hkdf(ck1, e2, 2)
        guesses = [None, bytes(32), psk, e1, e2, bytes(a ^ b for a, b in zip(e1, e2)),
                   x25519(psk, e1), x25519(psk, e2)]
        opened_here = False
        for g in guesses:
            if g is None:
                gck, gk = ck, k  # as if there were no ee token
            else:
                gck, gk = raw.hkdf(ck, g, 2)
            payload = raw.open(gk, 0, h, c2)
            if payload is not None and not opened_here:
                opened_here = True
                responses_opened += 1
            k1, k2 = raw.hkdf(gck, b"", 2)
            # k1 would open what the responder receives: find its index in the
            # payload when it opened, else any index (the key is tried anyway)
            ri = struct.unpack(">I", payload)[0] if payload is not None else None
            tied.setdefault(ri, []).extend([(cipher, k1), (cipher, k2)])
            tied.setdefault(ii, []).extend([(cipher, k2), (cipher, k1)])
    # keys guessed from the psk alone, tried on every transport datagram
    anywhere = []
    for cipher in ciphers:
        raw = nv.Raw(cipher)
        ck0, _ = raw.start()
        anywhere.append((cipher, psk))
        anywhere.append((cipher, raw.hash(psk)))
        anywhere.extend((cipher, k) for k in raw.hkdf(ck0, psk, 3))
        anywhere.extend((cipher, k) for k in raw.hkdf(psk, b"", 2))
        anywhere.extend((cipher, k) for k in raw.hkdf(bytes(32), psk, 2))
        for info in (b"taptun %s v2" % cipher.encode(), b"taptun %s v1" % cipher.encode()):
            anywhere.append((cipher, hkdf_sha256(psk, info)))
    # the Split() guesses of handshakes whose responder index is unknown
    anywhere.extend(tied.pop(None, []))
    return inits_opened, opened, responses_opened, tied, anywhere


def hkdf_sha256(ikm, info):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)


def try_keys(dg, keys, raws):
    hdr, body = dg[:16], dg[16:]
    counter = struct.unpack(">Q", dg[8:16])[0]
    if counter >= 2**64 - 1:
        return None, None
    for cipher, key in keys:
        frame = raws[cipher].open(key, counter, hdr, body)
        if frame is not None:
            return frame, (cipher, key)
    return None, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture")
    ap.add_argument("keyfile")
    ap.add_argument("--keylog")
    ap.add_argument("--cipher", choices=sorted(nv.PROTOCOLS))
    ap.add_argument("--find", help="hex bytes to look for in the decrypted frames")
    ap.add_argument("--port", type=int, help="only UDP to or from this port")
    ap.add_argument("--exhaustive", action="store_true",
                    help="try every key-file guess on every transport datagram (slow)")
    args = ap.parse_args(argv)
    ciphers = [args.cipher] if args.cipher else sorted(nv.PROTOCOLS)
    try:
        needle = bytes.fromhex(args.find) if args.find else None
    except ValueError:
        ap.error("--find: not hex: %r" % args.find)
    try:
        payloads = udp_payloads(args.capture, args.port)
        psk = read_key_file(args.keyfile)
        keylog = read_keylog(args.keylog, ciphers) if args.keylog else None
    except Unreadable as e:
        print("noise_decrypt: %s" % e, file=sys.stderr)
        return 2

    kinds = {"initiation": [], "response": [], "transport": []}
    for p in payloads:
        k = nv.classify(p)
        if k:
            kinds[k].append(p)
    inits, resps, trans = kinds["initiation"], kinds["response"], kinds["transport"]
    print("capture: %d UDP payloads, %d initiations, %d responses, %d transport"
          % (len(payloads), len(inits), len(resps), len(trans)))

    raws = {c: nv.Raw(c) for c in nv.PROTOCOLS}
    inits_opened, opened, resp_opened, tied, anywhere = key_file_attack(psk, ciphers, inits, resps)
    print("key file: initiation payloads decrypted: %d of %d (initiator indices: %s)"
          % (inits_opened, len(inits), " ".join("%08x" % i for i in sorted(opened)) or "-"))
    print("key file: response payloads decrypted: %d of %d" % (resp_opened, len(resps)))
    frames = {}
    by_key_file = 0
    # A session's datagrams share one key: a guess that opens none of the
    # first SAMPLE datagrams to an index opens none of the later ones, so
    # (unless --exhaustive) only a guess that worked is tried on the rest.
    found_key, tried = {}, {}
    for n, dg in enumerate(trans):
        ri = struct.unpack(">I", dg[4:8])[0]
        if ri in found_key:
            keys = found_key[ri] + tied.get(ri, []) + anywhere if args.exhaustive else found_key[ri]
        elif args.exhaustive or tried.get(ri, 0) < SAMPLE:
            keys = tied.get(ri, []) + anywhere
            tried[ri] = tried.get(ri, 0) + 1
        else:
            continue
        frame, key = try_keys(dg, keys, raws)
        if frame is not None:
            by_key_file += 1
            frames[n] = frame
            found_key[ri] = [key]
    guesses = len(anywhere) + max((len(v) for v in tied.values()), default=0)
    print("key file: transport decrypted: %d of %d (up to %d key guesses per datagram, %s)"
          % (by_key_file, len(trans), guesses,
             "on every datagram" if args.exhaustive else
             "on the first %d datagrams to each receiver index" % SAMPLE))

    if keylog is not None:
        by_log = 0
        for n, dg in enumerate(trans):
            ri = struct.unpack(">I", dg[4:8])[0]
            frame, _ = try_keys(dg, keylog.get(ri, []), raws)
            if frame is not None:
                by_log += 1
                frames.setdefault(n, frame)
        print("keylog: transport decrypted: %d of %d (%d receiver indices in the log)"
              % (by_log, len(trans), len(keylog)))

    found = 0
    if needle is not None:
        found = sum(1 for f in frames.values() if needle in f)
        raw_found = sum(1 for p in payloads if needle in p)
        print("find %s: in %d decrypted frames, in %d raw UDP payloads"
              % (needle.hex(), found, raw_found))
    print("transport decrypted: %d of %d" % (len(frames), len(trans)))
    print("initiations=%d responses=%d transport=%d decrypted=%d found=%d"
          % (len(inits), len(resps), len(trans), len(frames), found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
