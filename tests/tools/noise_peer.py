#!/usr/bin/env python3
"""A minimal taptun v2 peer (noise-spec.md) on a UDP socket, made with the
vendored noiseprotocol rather than taptun's code: the other end of an
interop test with a real taptun process.

    noise_peer.py --key FILE --cipher aes-256-gcm|chacha20-poly1305
                  --local IP:PORT --peer IP:PORT (--initiate | --respond)
                  [--send-hex FRAMEHEX]... [--expect N] [--expect-prefix HEX]
                  [--timeout S] [--index HEX8]

--initiate: sends an initiation (again every --retry seconds, each time with a
new ephemeral and a new index, as REKEY_TIMEOUT asks), completes the
handshake on the matching response, then sends each --send-hex frame as one
transport datagram (counters 0, 1, ...).
--respond: answers every valid initiation; as the spec asks of a responder,
it sends its frames only after the first valid transport datagram under the
new session (a keepalive will do).
Every non-empty frame received is printed as hex, one per line, on stdout;
the peer exits 0 once N (--expect) were received (those starting with
--expect-prefix, when given) and its own frames sent,
1 at --timeout. Logs go to stderr. With TAPTUN_KEYLOG set it appends its
session's key-log line as taptun does (for noise_decrypt.py).
"""

import argparse
import base64
import os
import secrets
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import noise_v2 as nv  # noqa: E402


def addr(text):
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    info = socket.getaddrinfo(host, int(port), 0, socket.SOCK_DGRAM)[0]
    return info[0], info[4]


def log(msg):
    print("noise_peer: " + msg, file=sys.stderr, flush=True)


class Session:
    def __init__(self, cipher, local, remote, send_key, recv_key):
        self.local, self.remote = local, remote
        self.send = nv.cipher_state(cipher, send_key)
        self.recv = nv.cipher_state(cipher, recv_key)
        self.counter = 0
        self.confirmed = False
        path = os.environ.get("TAPTUN_KEYLOG")
        if path:
            with open(path, "a") as f:
                f.write("%s %08x %08x %s %s\n" % (cipher, local, remote, send_key.hex(), recv_key.hex()))

    def seal(self, frame):
        dg = nv.seal(self.send, self.remote, self.counter, frame)
        self.counter += 1
        return dg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--key", required=True)
    ap.add_argument("--cipher", required=True, choices=sorted(nv.PROTOCOLS))
    ap.add_argument("--local", required=True)
    ap.add_argument("--peer", required=True)
    role = ap.add_mutually_exclusive_group(required=True)
    role.add_argument("--initiate", action="store_true")
    role.add_argument("--respond", action="store_true")
    ap.add_argument("--send-hex", action="append", default=[])
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--expect-prefix", default="", help="hex: count only frames that start with it")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--retry", type=float, default=5.0, help="seconds before a new initiation")
    ap.add_argument("--index", help="hex8: this side's index (first handshake); random if not given")
    args = ap.parse_args()

    with open(args.key, "rb") as f:
        psk = base64.b64decode(f.read().strip())
    if len(psk) != 32:
        log("%s: %d bytes, v2 needs 32" % (args.key, len(psk)))
        return 2
    frames = [bytes.fromhex(h) for h in args.send_hex]
    fam, local = addr(args.local)
    _, peer = addr(args.peer)
    sock = socket.socket(fam, socket.SOCK_DGRAM)
    sock.bind(local)
    deadline = time.monotonic() + args.timeout
    next_index = [int(args.index, 16)] if args.index else []

    def new_index():
        return next_index.pop() if next_index else secrets.randbits(32)

    sessions = {}  # local index -> Session
    pending = None  # initiator: (conn, index, sent at)
    current = None  # the session we send under
    sent = received = 0

    def initiate():
        conn = nv.handshake(args.cipher, psk, True)
        index = new_index()
        sock.sendto(nv.write_initiation(conn, index), peer)
        log("initiation sent, index %08x" % index)
        return conn, index, time.monotonic()

    def send_frames(s):
        nonlocal sent
        for f in frames[sent:]:
            sock.sendto(s.seal(f), peer)
            sent += 1
            log("sent frame of %d bytes, counter %d" % (len(f), s.counter - 1))

    if args.initiate:
        pending = initiate()
    while True:
        if sent == len(frames) and received >= args.expect and current is not None:
            return 0
        now = time.monotonic()
        if now >= deadline:
            log("timeout: %d of %d frames received, %d of %d sent" % (received, args.expect, sent, len(frames)))
            return 1
        if pending is not None and now - pending[2] >= args.retry:
            pending = initiate()
        sock.settimeout(max(0.01, min(deadline - now, 0.2)))
        try:
            dg, src = sock.recvfrom(65535)
        except socket.timeout:
            continue
        kind = nv.classify(dg)
        if kind == "initiation" and args.respond:
            conn = nv.handshake(args.cipher, psk, False)
            try:
                their = nv.read_initiation(conn, dg)
            except Exception:
                log("initiation refused")
                continue
            mine = new_index()
            sock.sendto(nv.write_response(conn, their, mine), src)
            k1, k2 = nv.split_keys(conn)
            sessions[mine] = Session(args.cipher, mine, their, k2, k1)
            log("initiation from index %08x answered, index %08x" % (their, mine))
        elif kind == "response" and pending is not None:
            conn, index, _ = pending
            if struct.unpack(">I", dg[4:8])[0] != index:
                continue
            try:
                _, theirs = nv.read_response(conn, dg)
            except Exception:
                log("response refused")
                continue
            k1, k2 = nv.split_keys(conn)
            current = sessions[index] = Session(args.cipher, index, theirs, k1, k2)
            pending = None
            log("handshake done, index %08x, peer index %08x" % (index, theirs))
            send_frames(current)
        elif kind == "transport":
            index = struct.unpack(">I", dg[4:8])[0]
            s = sessions.get(index)
            if s is None:
                continue
            frame = nv.open_(s.recv, dg)
            if frame is None:
                log("transport datagram to %08x refused" % index)
                continue
            if not s.confirmed:
                s.confirmed = True
                if args.respond:
                    current = s  # first valid transport under it: send with it now
                    send_frames(current)
            if frame:
                if frame.hex().startswith(args.expect_prefix.lower()):
                    received += 1
                print(frame.hex(), flush=True)
            else:
                log("keepalive")


if __name__ == "__main__":
    sys.exit(main())
