#!/usr/bin/env python3
"""UDP datagrams with a chosen ECN field, and a receiver that reports the
ECN field each one arrived with, for the ECN e2e tests.

  ecn_tos.py send ADDR PORT TOS COUNT   -> sends COUNT datagrams, 20 ms apart
  ecn_tos.py recv ADDR PORT COUNT       -> one line per datagram: "tos 0xNN"

TOS is the whole TOS byte (0x02: ECT(0), 0x01: ECT(1), 0x00: Not-ECT). The
receiver asks for IP_RECVTOS and stops after COUNT datagrams or 3 s
without one (the caller bounds it with timeout(1) too).
"""
import socket
import sys
import time

IP_RECVTOS = 13
IP_TOS = 1


def send(addr, port, tos, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, IP_TOS, tos)
    for i in range(count):
        s.sendto(b"ecn %d" % i, (addr, port))
        time.sleep(0.02)


def recv(addr, port, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
    s.bind((addr, port))
    s.settimeout(3)
    print("listening", flush=True)
    for _ in range(count):
        try:
            _, anc, _, _ = s.recvmsg(2048, 64)
        except socket.timeout:
            break
        tos = [d[0] for (lvl, typ, d) in anc if lvl == socket.IPPROTO_IP and typ == IP_TOS]
        print("tos 0x%02x" % (tos[0] if tos else 0xff), flush=True)


def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "send":
        send(addr, port, int(sys.argv[4], 0), int(sys.argv[5]))
    else:
        recv(addr, port, int(sys.argv[4]))


if __name__ == "__main__":
    main()
