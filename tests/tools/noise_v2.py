"""taptun confidential mode v2 (Noise NNpsk0 + counter transport) written
with the vendored noiseprotocol (tests/tools/vendor/noise, PyPI 0.3.1), not
with taptun's code: the shared pieces of noise_vectors.py, noise_decrypt.py,
noise_selftest.py and noise_peer.py (imported from the tools' directory).

Wire (all integers big-endian, reserved bytes zero and ignored):
    initiation 56: 01 000000 | msg1 = e.pub(32) ENC(initiator index u32)(4+16)
    response   60: 02 000000 | receiver index u32 | msg2 = e.pub(32) ENC(responder index)(4+16)
    transport 32+n: 04 000000 | receiver index u32 | counter u64 | ENC(frame) | tag
        AAD = the 16 header bytes, nonce = Noise's n = counter
Split() -> (k1, k2): the initiator sends with k1, the responder with k2.
"""

import hashlib
import hmac
import os
import struct
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor"))

from noise.backends.default import noise_backend  # noqa: E402
from noise.connection import Keypair, NoiseConnection  # noqa: E402
from noise.noise_protocol import NoiseProtocol  # noqa: E402
from noise.state import CipherState  # noqa: E402

PROTOCOLS = {
    "aes-256-gcm": b"Noise_NNpsk0_25519_AESGCM_SHA256",
    "chacha20-poly1305": b"Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s",
}
PROLOGUE = b"taptun v2"

TYPE_INITIATION = 1
TYPE_RESPONSE = 2
TYPE_TRANSPORT = 4
INITIATION_LEN = 56
RESPONSE_LEN = 60
HEADER_LEN = 16
TAG_LEN = 16
TRANSPORT_MIN = HEADER_LEN + TAG_LEN


def handshake(cipher, psk, initiator, ephemeral_private=None):
    """A NoiseConnection ready for message 1 (initiator) or to read it."""
    conn = NoiseConnection.from_name(PROTOCOLS[cipher])
    conn.set_psks(psk=bytes(psk))
    conn.set_prologue(PROLOGUE)
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    if ephemeral_private is not None:
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, bytes(ephemeral_private))
    with warnings.catch_warnings():
        # "ephemeral keypair already set: OK for testing" -- it is a test
        warnings.simplefilter("ignore")
        conn.start_handshake()
    conn.taptun_initiator = initiator  # NoiseProtocol forgets its role after Split()
    return conn


def write_initiation(conn, index):
    return bytes([TYPE_INITIATION, 0, 0, 0]) + bytes(conn.write_message(struct.pack(">I", index)))


def read_initiation(conn, dg):
    """The initiator's index; raises if the datagram is not an initiation
    made under this connection's psk."""
    if len(dg) != INITIATION_LEN or dg[0] != TYPE_INITIATION:
        raise ValueError("not an initiation")
    payload = bytes(conn.read_message(bytes(dg[4:])))
    return struct.unpack(">I", payload)[0]


def write_response(conn, receiver_index, index):
    return (bytes([TYPE_RESPONSE, 0, 0, 0]) + struct.pack(">I", receiver_index)
            + bytes(conn.write_message(struct.pack(">I", index))))


def read_response(conn, dg):
    """(receiver index from the header, responder index from the payload)."""
    if len(dg) != RESPONSE_LEN or dg[0] != TYPE_RESPONSE:
        raise ValueError("not a response")
    payload = bytes(conn.read_message(bytes(dg[8:])))
    return struct.unpack(">I", dg[4:8])[0], struct.unpack(">I", payload)[0]


def split_keys(conn):
    """(k1, k2) of Split(): k1 = initiator->responder, k2 = responder->initiator.
    noiseprotocol gives the initiator cipher_state_encrypt = c1 and the
    responder cipher_state_encrypt = c2."""
    p = conn.noise_protocol
    enc, dec = bytes(p.cipher_state_encrypt.k), bytes(p.cipher_state_decrypt.k)
    return (enc, dec) if conn.taptun_initiator else (dec, enc)


def cipher_state(cipher, key):
    """A Noise CipherState holding key, as after Split()."""
    proto = NoiseProtocol(protocol_name=PROTOCOLS[cipher], backend=noise_backend)
    cs = CipherState(proto)
    cs.initialize_key(bytes(key))
    return cs


def header(receiver_index, counter):
    return bytes([TYPE_TRANSPORT, 0, 0, 0]) + struct.pack(">IQ", receiver_index, counter)


def seal(cs, receiver_index, counter, frame):
    """Transport datagram: EncryptWithAd(ad = header, frame) with n = counter."""
    h = header(receiver_index, counter)
    cs.n = counter
    return h + bytes(cs.encrypt_with_ad(h, bytes(frame)))


def parse_transport(dg):
    """(receiver index, counter) or None when dg cannot be a transport datagram."""
    if len(dg) < TRANSPORT_MIN or dg[0] != TYPE_TRANSPORT:
        return None
    return struct.unpack(">IQ", dg[4:16])


def open_(cs, dg):
    """The frame, or None when authentication fails."""
    parsed = parse_transport(dg)
    if parsed is None:
        return None
    cs.n = parsed[1]
    try:
        return bytes(cs.decrypt_with_ad(bytes(dg[:HEADER_LEN]), bytes(dg[HEADER_LEN:])))
    except Exception:
        return None


def classify(dg):
    """'initiation', 'response', 'transport' or None by type byte and length."""
    if len(dg) == INITIATION_LEN and dg[0] == TYPE_INITIATION:
        return "initiation"
    if len(dg) == RESPONSE_LEN and dg[0] == TYPE_RESPONSE:
        return "response"
    if len(dg) >= TRANSPORT_MIN and dg[0] == TYPE_TRANSPORT:
        return "transport"
    return None


class Raw:
    """NNpsk0 written out from the Noise spec (rev 34, sections 4-5, 9) with
    hashlib/hmac and cryptography's AEADs, sharing no code with noiseprotocol:
    the cross-check of the vendored library in noise_selftest.py, and the
    attacker's handshake reconstruction in noise_decrypt.py."""

    def __init__(self, cipher):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
        self.cipher = cipher
        self.name = PROTOCOLS[cipher]
        if cipher == "aes-256-gcm":
            self.hf, self.aead, self.order = hashlib.sha256, AESGCM, "big"
        else:
            self.hf, self.aead, self.order = hashlib.blake2s, ChaCha20Poly1305, "little"
        self._aeads = {}

    def hash(self, data):
        return self.hf(data).digest()

    def hkdf(self, ck, ikm, n):
        temp = hmac.new(ck, ikm, self.hf).digest()
        out, prev = [], b""
        for i in range(1, n + 1):
            prev = hmac.new(temp, prev + bytes([i]), self.hf).digest()
            out.append(prev)
        return out

    def nonce(self, n):
        return b"\0\0\0\0" + n.to_bytes(8, self.order)

    def _a(self, k):
        a = self._aeads.get(k)
        if a is None:
            a = self._aeads[k] = self.aead(k)
        return a

    def seal(self, k, n, ad, plaintext):
        return self._a(k).encrypt(self.nonce(n), plaintext, ad)

    def open(self, k, n, ad, ciphertext):
        try:
            return self._a(k).decrypt(self.nonce(n), ciphertext, ad)
        except Exception:
            return None

    def start(self):
        """(ck, h) after InitializeSymmetric(name) and MixHash(prologue)."""
        h = self.name.ljust(32, b"\0") if len(self.name) <= 32 else self.hash(self.name)
        return h, self.hash(h + PROLOGUE)

    def after_e1(self, psk, e1):
        """(ck, h, k) of message 1 after its tokens "psk, e": what encrypts the
        initiator's index, known to anyone holding the psk."""
        ck, h = self.start()
        ck, th, k = self.hkdf(ck, psk, 3)
        h = self.hash(h + th)
        h = self.hash(h + e1)
        ck, k = self.hkdf(ck, e1, 2)
        return ck, h, k
