#!/usr/bin/env python3
"""Numbered, checksummed UDP datagrams for the e2e tests, one send() each,
never fragmented by the sender (IP_PMTUDISC_DO): a datagram that does not
fit the sender's route fails at once instead of being cut up.

  udp_seq.py send ADDR PORT COUNT SIZE PAUSE_MS
  udp_seq.py recv ADDR PORT EXPECTED SIZE  -> "received R corrupt C dup D"

Datagram i (SIZE bytes of UDP payload) is i (4 bytes, big-endian), the
SHA-256 of the rest (32 bytes), then random bytes. The receiver counts the
distinct intact ones, the corrupt ones (wrong length or checksum) and the
duplicates. Bounded: it reads until EXPECTED datagrams or 3 s without one,
then on until 0.5 s pass without one (at most 3 s), to see late extras.
"""
import hashlib
import os
import socket
import struct
import time

from taptun_wire import count_received, family, udp_tool

IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_DO = 2
HEAD = 4 + 32


def send(addr, port, count, size, pause_ms):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    if family(addr) == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
    else:
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    s.connect((addr, port))
    for i in range(count):
        body = os.urandom(size - HEAD)
        s.send(struct.pack("!I", i) + hashlib.sha256(body).digest() + body)
        time.sleep(pause_ms / 1000)
    print(f"sent {count}")


def recv(addr, port, expected, size):
    def intact(d):
        return hashlib.sha256(d[HEAD:]).digest() == d[4:HEAD]

    # Duplicates that come after the last new datagram count too (see
    # count_received).
    _, seen, corrupt, dup = count_received(addr, port, expected, size, 8 << 20, intact)
    print(f"received {len(seen)} corrupt {corrupt} dup {dup}", flush=True)


if __name__ == "__main__":
    udp_tool(send, recv)
