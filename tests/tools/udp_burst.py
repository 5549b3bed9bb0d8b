#!/usr/bin/env python3
"""UDP bursts for the e2e tests: each burst is one UDP GSO send of 64
datagrams, so that 64 frames reach the TAP at once.

  udp_burst.py send ADDR PORT BURSTS SIZE PAUSE_MS
  udp_burst.py recv ADDR PORT EXPECTED SIZE  -> "received R corrupt C dup D"

Datagram i carries i (4 bytes, big-endian) and then a pattern derived from
i, so the receiver can tell a corrupted or duplicated datagram. Bounded:
the receiver reads until EXPECTED datagrams or 3 s without one, then on
until 0.5 s pass without one (at most 3 s), so that late duplicates count.
"""
import socket
import struct
import time

from taptun_wire import count_received, family, udp_tool

UDP_SEGMENT = 103
PER_BURST = 64


def payload(i, size):
    head = struct.pack("!I", i)
    return head + bytes((i * 7 + j) & 0xFF for j in range(size - len(head)))


def send(addr, port, bursts, size, pause_ms):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    # Connected: Linux numbers the IPv4 IDs of a connected socket consecutively.
    s.connect((addr, port))
    s.setsockopt(socket.SOL_UDP, UDP_SEGMENT, size)
    n = 0
    for _ in range(bursts):
        s.send(b"".join(payload(n + k, size) for k in range(PER_BURST)))
        n += PER_BURST
        time.sleep(pause_ms / 1000)
    print(f"sent {n}")


def recv(addr, port, expected, size):
    def intact(d):
        return d == payload(struct.unpack("!I", d[:4])[0], size)

    _, seen, corrupt, dup = count_received(addr, port, expected, size, 16 << 20, intact)
    print(f"received {len(seen)} corrupt {corrupt} dup {dup}")


if __name__ == "__main__":
    udp_tool(send, recv)
