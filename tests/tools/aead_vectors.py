#!/usr/bin/env python3
"""Writes tests/vectors/aead-v1.txt: confidential-mode test vectors made by an
implementation independent of taptun's (PyPI's `cryptography`, i.e. OpenSSL).

Run by hand when the construction changes (the Rust test only reads the file):

    pip install cryptography
    python3 tests/tools/aead_vectors.py > tests/vectors/aead-v1.txt

Deterministic: keys, session ids and frames come from fixed seeds, so a
rerun gives the same file.

The construction (docs/protocol.md, Confidential mode):
    key      = HKDF-SHA256(ikm = key file bytes, salt = none,
                           info = "taptun <cipher> v1" || session id), 32 bytes
    nonce    = 4 zero bytes || ts (8 bytes, big-endian)
    aad      = session id || ts
    datagram = session id (16) || ts (8) || ciphertext || tag (16)
"""

import base64
import hashlib
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CIPHERS = {
    "aes-256-gcm": AESGCM,
    "chacha20-poly1305": ChaCha20Poly1305,
}


def label(cipher):
    return ("taptun %s v1" % cipher).encode()


def derive(key, cipher, session):
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=label(cipher) + session
    ).derive(key)


def seal(key, cipher, session, ts, frame):
    k = derive(key, cipher, session)
    head = session + ts.to_bytes(8, "big")
    nonce = bytes(4) + ts.to_bytes(8, "big")
    # cryptography returns ciphertext || tag.
    return head + CIPHERS[cipher](k).encrypt(nonce, frame, head)


def stream(seed, n):
    """n deterministic pseudo-random bytes (SHA-256 in counter mode)."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"%s/%d" % (seed.encode(), i)).digest()
        i += 1
    return out[:n]


def main():
    # The 32-byte key of tests/vectors/key-32.b64 (shared with wire-v1.txt),
    # a 16-byte key (the shortest taptun accepts) and a 100-byte one.
    key32 = base64.b64decode("VkZylFBLiEGy9hPfHHcJligUEZkjp47OoT9MyHt79iM=")
    key16 = stream("key16", 16)
    key100 = stream("key100", 100)
    cases = [
        # name suffix, key, session seed, ts, frame length
        ("keepalive", key32, "s1", 1763900000123456789, 0),
        ("one_byte", key32, "s1", 1763900000123456790, 1),
        ("min_frame", key32, "s1", 1763900000123456791, 64),
        ("medium", key32, "s2", 1763900000123456792, 512),
        ("full_frame", key32, "s2", 1763900000123456793, 1432),
        ("jumbo", key32, "s3", 1763900000123456794, 9000),
        ("ts_one", key32, "s3", 1, 60),
        ("ts_max", key32, "s3", 2**64 - 1, 60),
        ("key16", key16, "s4", 1763900000123456795, 100),
        ("key100", key100, "s4", 1763900000123456796, 100),
        ("zero_session", key32, None, 1763900000123456797, 60),
    ]
    w = sys.stdout.write
    w("# taptun confidential-mode (--cipher) test vectors, v1\n")
    w("# made by tests/tools/aead_vectors.py with PyPI's `cryptography` (OpenSSL), not by taptun\n")
    w("# key      = HKDF-SHA256(ikm = key file bytes, salt = none, info = \"taptun <cipher> v1\" || session id), 32 bytes\n")
    w("# nonce    = 00000000 || ts_be64; aad = session id || ts_be64\n")
    w("# datagram = session id (16) || ts_be64 || ciphertext || tag (16)\n")
    w("# columns (space separated): name cipher key_base64 session_hex ts_ns frame_hex datagram_hex\n")
    w("# frame_hex is '-' for an empty frame (a keepalive). Every vector is valid; a test\n")
    w("# derives the invalid ones by changing one bit anywhere (each must be refused).\n")
    for cipher in CIPHERS:
        for name, key, sseed, ts, flen in cases:
            session = bytes(16) if sseed is None else stream(sseed, 16)
            frame = stream("frame/%s/%d" % (name, flen), flen)
            dg = seal(key, cipher, session, ts, frame)
            assert len(dg) == 40 + flen
            w(
                "%s_%s %s %s %s %d %s %s\n"
                % (
                    cipher.split("-")[0],
                    name,
                    cipher,
                    base64.b64encode(key).decode(),
                    session.hex(),
                    ts,
                    frame.hex() or "-",
                    dg.hex(),
                )
            )


if __name__ == "__main__":
    main()
