#!/usr/bin/env python3
"""Writes tests/vectors/noise-v2.json: test vectors of taptun's confidential
mode v2 (Noise NNpsk0 handshake + counter-nonce transport, noise-spec.md),
made by an implementation independent of taptun's Rust code: the vendored
noiseprotocol 0.3.1 (tests/tools/vendor/noise, PyPI, on `cryptography`).
A Rust test reads the file and must reproduce every datagram byte for byte
(and refuse every negative case); a bug shared by both sides would need the
same misreading of the Noise spec in two unrelated code bases.

Run by hand when the wire contract changes (no network, no pip needed):

    python3 tests/tools/noise_vectors.py > tests/vectors/noise-v2.json

Deterministic: psks, ephemeral private keys, indices and frames are fixed or
come from sha256 of fixed seeds, so a rerun gives an identical file.

Per cipher two handshakes, each with: the initiation (56 bytes) and response
(60 bytes) datagrams, Split()'s k1 (initiator -> responder) and k2
(responder -> initiator), the handshake hash, and transport datagrams in both
directions for counters 0, 1, 2, 255, 2**32+5 x frames of 0, 1, 60, 1514
bytes. Then negative cases (each must be refused) and initiations/responses
with non-zero reserved bytes (each must be accepted: receivers ignore them).
"""

import base64
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import noise_v2 as nv  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KEY_FILE = os.path.join(HERE, "..", "vectors", "key-32.b64")

COUNTERS = [0, 1, 2, 255, 2**32 + 5]
FRAME_LENGTHS = [0, 1, 60, 1514]
# (initiator index, responder index) per handshake: a plain pair, then the extremes
INDICES = [(0x1A2B3C4D, 0x5E6F7081), (0x00000000, 0xFFFFFFFF)]


def seeded(label, n):
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"taptun v2 vectors %s %d" % (label.encode(), i)).digest()
        i += 1
    return out[:n]


def frame(n):
    return seeded("frame %d" % n, n)


def flip(dg, offset, bit=0):
    b = bytearray(dg)
    b[offset] ^= 1 << bit
    return bytes(b)


def make_handshake(cipher, psk, n):
    ie = seeded("%s %d initiator ephemeral" % (cipher, n), 32)
    re = seeded("%s %d responder ephemeral" % (cipher, n), 32)
    ii, ri = INDICES[n]
    ini = nv.handshake(cipher, psk, True, ie)
    res = nv.handshake(cipher, psk, False, re)
    init_dg = nv.write_initiation(ini, ii)
    assert nv.read_initiation(res, init_dg) == ii
    resp_dg = nv.write_response(res, ii, ri)
    assert nv.read_response(ini, resp_dg) == (ii, ri)
    assert len(init_dg) == 56 and len(resp_dg) == 60
    k1, k2 = nv.split_keys(ini)
    assert (k1, k2) == nv.split_keys(res) and k1 != k2
    # k1 is what the initiator encrypts with, k2 what the responder encrypts with
    assert bytes(ini.noise_protocol.cipher_state_encrypt.k) == k1
    assert bytes(res.noise_protocol.cipher_state_encrypt.k) == k2
    hh = bytes(ini.get_handshake_hash())
    assert hh == bytes(res.get_handshake_hash())

    transport = []
    for sender, key, receiver_index in (("initiator", k1, ri), ("responder", k2, ii)):
        cs = nv.cipher_state(cipher, key)
        check = nv.cipher_state(cipher, key)
        for counter in COUNTERS:
            for length in FRAME_LENGTHS:
                f = frame(length)
                dg = nv.seal(cs, receiver_index, counter, f)
                assert len(dg) == 32 + length and nv.open_(check, dg) == f
                transport.append({
                    "sender": sender,
                    "receiver_index": receiver_index,
                    "counter": counter,
                    "frame_hex": f.hex(),
                    "datagram_hex": dg.hex(),
                })
    # the transport datagrams as the connection objects themselves make them
    # (n = 0 for the first EncryptWithAd), to tie seal() to noiseprotocol's own path
    h0 = nv.header(ri, 0)
    assert h0 + bytes(ini.noise_protocol.cipher_state_encrypt.encrypt_with_ad(h0, frame(60))) \
        == bytes.fromhex(next(t["datagram_hex"] for t in transport
                              if t["sender"] == "initiator" and t["counter"] == 0
                              and len(t["frame_hex"]) == 120))

    return {
        "name": "%s-%d" % (cipher, n),
        "cipher": cipher,
        "protocol": nv.PROTOCOLS[cipher].decode(),
        "prologue_hex": nv.PROLOGUE.hex(),
        "psk_hex": psk.hex(),
        "psk_base64": base64.b64encode(psk).decode(),
        "initiator_ephemeral_private_hex": ie.hex(),
        "initiator_ephemeral_public_hex": init_dg[4:36].hex(),
        "responder_ephemeral_private_hex": re.hex(),
        "responder_ephemeral_public_hex": resp_dg[8:40].hex(),
        "initiator_index": ii,
        "responder_index": ri,
        "initiation_hex": init_dg.hex(),
        "response_hex": resp_dg.hex(),
        "k1_hex": k1.hex(),
        "k2_hex": k2.hex(),
        "handshake_hash_hex": hh.hex(),
        "transport": transport,
    }


def refused_by_responder(cipher, psk, dg):
    try:
        nv.read_initiation(nv.handshake(cipher, psk, False), dg)
    except Exception:
        return True
    return False


def refused_by_initiator(cipher, psk, ie, ii, dg):
    ini = nv.handshake(cipher, psk, True, ie)
    nv.write_initiation(ini, ii)
    try:
        nv.read_response(ini, dg)
    except Exception:
        return True
    return False


def negatives(hs, other_psk):
    out = []
    cipher = hs["cipher"]
    psk = bytes.fromhex(hs["psk_hex"])
    ie = bytes.fromhex(hs["initiator_ephemeral_private_hex"])
    ii = hs["initiator_index"]

    # an initiation made under another psk (same ephemeral, same index)
    other = nv.handshake(cipher, other_psk, True, ie)
    dg = nv.write_initiation(other, ii)
    assert refused_by_responder(cipher, psk, dg)
    out.append({"name": hs["name"] + " initiation under another psk", "handshake": hs["name"],
                "kind": "initiation", "receiver": "responder",
                "other_psk_hex": other_psk.hex(), "datagram_hex": dg.hex()})

    # the initiation with one bit flipped in e.pub, in the encrypted index, in the tag
    init = bytes.fromhex(hs["initiation_hex"])
    for where, off in (("ephemeral", 4), ("payload", 36), ("tag", 55)):
        dg = flip(init, off)
        assert refused_by_responder(cipher, psk, dg)
        out.append({"name": "%s initiation bit flipped in %s" % (hs["name"], where),
                    "handshake": hs["name"], "kind": "initiation", "receiver": "responder",
                    "flipped_byte": off, "flipped_bit": 0, "datagram_hex": dg.hex()})

    # the response with one bit flipped: to the initiator that sent hs's initiation
    resp = bytes.fromhex(hs["response_hex"])
    for where, off in (("ephemeral", 8), ("payload", 40), ("tag", 59)):
        dg = flip(resp, off)
        assert refused_by_initiator(cipher, psk, ie, ii, dg)
        out.append({"name": "%s response bit flipped in %s" % (hs["name"], where),
                    "handshake": hs["name"], "kind": "response", "receiver": "initiator",
                    "flipped_byte": off, "flipped_bit": 0, "datagram_hex": dg.hex()})

    # transport datagrams (60-byte frame, counter 1, each direction) with one bit
    # flipped: in the header (reserved, index, counter: all of it is AAD), the
    # ciphertext, the tag
    for t in hs["transport"]:
        if t["counter"] != 1 or len(t["frame_hex"]) != 120:
            continue
        dg = bytes.fromhex(t["datagram_hex"])
        key = bytes.fromhex(hs["k1_hex"] if t["sender"] == "initiator" else hs["k2_hex"])
        receiver = "responder" if t["sender"] == "initiator" else "initiator"
        for where, off, bit in (("header reserved", 2, 0), ("header receiver index", 7, 0),
                                ("header counter", 15, 0), ("header counter high", 8, 7),
                                ("ciphertext", 16, 0), ("ciphertext last", 75, 7),
                                ("tag", 76, 0), ("tag last", 91, 7)):
            bad = flip(dg, off, bit)
            assert nv.open_(nv.cipher_state(cipher, key), bad) is None
            out.append({"name": "%s transport from %s bit flipped in %s" % (hs["name"], t["sender"], where),
                        "handshake": hs["name"], "kind": "transport", "receiver": receiver,
                        "flipped_byte": off, "flipped_bit": bit, "datagram_hex": bad.hex()})
        # the same datagram cut by one byte, and the tag alone
        for where, bad in (("cut by one byte", dg[:-1]), ("header and tag only", dg[:16] + dg[-16:])):
            assert nv.open_(nv.cipher_state(cipher, key), bad) is None
            out.append({"name": "%s transport from %s %s" % (hs["name"], t["sender"], where),
                        "handshake": hs["name"], "kind": "transport", "receiver": receiver,
                        "datagram_hex": bad.hex()})
    return out


def reserved_ignored(hs):
    """Initiation and response with their reserved bytes set: the spec says
    receivers ignore them (they are not authenticated in messages 1 and 2)."""
    cipher = hs["cipher"]
    psk = bytes.fromhex(hs["psk_hex"])
    init = bytearray.fromhex(hs["initiation_hex"])
    init[1:4] = b"\xff\xff\xff"
    assert nv.read_initiation(nv.handshake(cipher, psk, False), bytes(init)) == hs["initiator_index"]
    resp = bytearray.fromhex(hs["response_hex"])
    resp[1:4] = b"\xff\xff\xff"
    ini = nv.handshake(cipher, psk, True, bytes.fromhex(hs["initiator_ephemeral_private_hex"]))
    nv.write_initiation(ini, hs["initiator_index"])
    assert nv.read_response(ini, bytes(resp)) == (hs["initiator_index"], hs["responder_index"])
    return [
        {"name": hs["name"] + " initiation with reserved bytes ff", "handshake": hs["name"],
         "kind": "initiation", "receiver": "responder", "datagram_hex": bytes(init).hex()},
        {"name": hs["name"] + " response with reserved bytes ff", "handshake": hs["name"],
         "kind": "response", "receiver": "initiator", "datagram_hex": bytes(resp).hex()},
    ]


def main():
    with open(KEY_FILE) as f:
        psk = base64.b64decode(f.read())
    assert len(psk) == 32
    other_psk = seeded("other psk", 32)
    handshakes = [make_handshake(c, psk, n) for c in nv.PROTOCOLS for n in range(2)]
    neg, ok = [], []
    for hs in handshakes:
        if hs["name"].endswith("-0"):
            neg += negatives(hs, other_psk)
            ok += reserved_ignored(hs)
    doc = {
        "about": "taptun confidential mode v2 vectors (Noise NNpsk0, noise-spec.md), made by "
                 "tests/tools/noise_vectors.py with noiseprotocol 0.3.1, not by taptun",
        "conventions": {
            "initiation": "01 000000 | e.pub(32) | AEAD(initiator index u32 BE)(4+16): 56 bytes",
            "response": "02 000000 | receiver index u32 BE | e.pub(32) | AEAD(responder index u32 BE)(4+16): 60 bytes",
            "transport": "04 000000 | receiver index u32 BE | counter u64 BE | AEAD(frame) | tag(16); "
                         "AAD = the 16 header bytes; nonce = Noise n = counter (AESGCM: 00000000 || n BE64, "
                         "ChaChaPoly: 00000000 || n LE64)",
            "k1": "Split() first key: the initiator sends with it, the responder receives",
            "k2": "Split() second key: the responder sends with it, the initiator receives",
            "sender": "who made a transport datagram: initiator (key k1, receiver index = responder index) "
                      "or responder (key k2, receiver index = initiator index)",
            "negative": "each must be refused by `receiver` in the state of `handshake` (the responder "
                        "with that psk; the initiator after sending that handshake's initiation; the "
                        "session after that handshake)",
            "reserved_ignored": "each must be accepted like the original (reserved bytes are ignored)",
        },
        "handshakes": handshakes,
        "negative": neg,
        "reserved_ignored": ok,
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
