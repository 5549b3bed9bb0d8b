#!/usr/bin/env python3
"""A flood of handshake initiations from many spoofed IPv4 source addresses,
for tests/noise_e2e.rs. Raw socket with IP_HDRINCL: each datagram is an IPv4
header (source from NET, e.g. 198.18.4.0/22) + UDP header + payload.

  flood.py random DST PORT NET SOURCES PPS SECONDS
      payload: 0x01 00 00 00 then 52 random bytes (a 56-byte "initiation"
      that cannot pass the handshake: random e.pub, random ciphertext)
  flood.py replay PCAP DST PORT NET SOURCES PPS SECONDS
      payload: the UDP payload of the first IPv4/UDP packet in PCAP (a
      captured genuine initiation), the same bytes every time

SOURCES distinct addresses from NET (the first SOURCES after the network
address), each with a source port of its own, used in turn; PPS datagrams a
second, paced in steps of 1 ms, for SECONDS (bounded: it stops at SECONDS
whatever happened). The kernel fills in the IP checksum; the UDP checksum
is 0 (none, allowed in IPv4). Prints one line:
  sent N failed F seconds S sources K pps P
"""
import ipaddress
import os
import socket
import struct
import sys
import time

INITIATION = 56


def first_udp_payload(path):
    data = open(path, "rb").read()
    if len(data) < 24:
        raise SystemExit("%s: no pcap header" % path)
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise SystemExit("%s: not a pcap file (magic %s)" % (path, magic.hex()))
    linktype = struct.unpack(e + "I", data[20:24])[0]
    at = 24
    while at + 16 <= len(data):
        incl = struct.unpack(e + "I", data[at + 8:at + 12])[0]
        rec = data[at + 16:at + 16 + incl]
        at += 16 + incl
        # Ethernet (1) or Linux cooked (113, tcpdump -i any).
        ip = rec[14:] if linktype == 1 else rec[16:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        ulen = struct.unpack("!H", ip[ihl + 4:ihl + 6])[0]
        return ip[ihl + 8:ihl + ulen]
    raise SystemExit("%s: no IPv4/UDP packet" % path)


def main(argv):
    mode = argv[0]
    if mode == "random" and len(argv) == 7:
        fixed = None
        dst, port, net, sources, pps, seconds = argv[1:]
    elif mode == "replay" and len(argv) == 8:
        fixed = first_udp_payload(argv[1])
        dst, port, net, sources, pps, seconds = argv[2:]
    else:
        raise SystemExit(__doc__)
    port, sources, pps, seconds = int(port), int(sources), int(pps), float(seconds)
    net = ipaddress.ip_network(net)
    hosts = list(net.hosts())
    if sources > len(hosts):
        raise SystemExit("%s holds fewer than %d addresses" % (net, sources))
    length = INITIATION if fixed is None else len(fixed)
    dst_b = socket.inet_aton(dst)
    heads = []
    for i, src in enumerate(hosts[:sources]):
        # IPv4: DF, TTL 64, UDP; id 0 and checksum 0: the kernel fills them in.
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + length, 0, 0x4000, 64, 17, 0,
                         src.packed, dst_b)
        udp = struct.pack("!HHHH", 20000 + i, port, 8 + length, 0)
        heads.append(ip + udp)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sent, failed, n = 0, 0, 0
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * pps)
        while n < due:
            payload = fixed if fixed is not None else b"\x01\x00\x00\x00" + os.urandom(52)
            try:
                s.sendto(heads[n % sources] + payload, (dst, 0))
                sent += 1
            except OSError:
                failed += 1
            n += 1
        time.sleep(0.001)
    took = time.monotonic() - start
    print("sent %d failed %d seconds %.2f sources %d pps %.0f"
          % (sent, failed, took, sources, sent / took), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
