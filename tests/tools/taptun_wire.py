"""Pieces shared by the python3 tools of the e2e tests, imported from the
tools' own directory (python3 puts a script's directory on sys.path): an
attacker's capture and replay of tunnel datagrams on a hub, the listen /
talk / end trio of the replay tests, and the counting UDP receiver of
udp_seq.py and udp_burst.py."""

import json, socket, struct, sys, time

# A keepalive (empty frame) is 40 bytes in either mode.
KEEPALIVE = 40


# packet(7): a virtio_net_hdr before each frame, which says whether the
# frame is a GSO batch and of what segment size.
SOL_PACKET, PACKET_VNET_HDR, VNET_HDR_LEN = 263, 15, 10


def packet_socket(iface, proto):
    # A packet socket on IFACE that reads each frame with its
    # virtio_net_hdr (see udp_datagrams).
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    s.bind((iface, 0))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    return s


def udp_datagrams(pkt):
    # The IPv4 header and the UDP datagrams of a frame PKT as a
    # packet_socket reads it: (ip, sport, dport, [payload, ...]), or None.
    # A UDP GSO batch (taptun sends them) passes a packet socket as one
    # frame whose UDP length is the whole batch's: it is split here at its
    # segment size, one payload per datagram, as the peer receives them.
    gso_type, gso_size = pkt[1], struct.unpack("<H", pkt[4:6])[0]
    ip = pkt[VNET_HDR_LEN + 14:]
    if len(ip) < 28 or ip[9] != 17:
        return None
    ihl = (ip[0] & 15) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    sport, dport, ulen = struct.unpack("!HHH", ip[ihl:ihl + 6])
    if gso_type and gso_size:
        body = ip[ihl + 8:total]
        payloads = [body[i:i + gso_size] for i in range(0, len(body), gso_size)]
    else:
        payloads = [ip[ihl + 8:ihl + ulen]]
    return ip, sport, dport, payloads


def capture(iface, dst, dport, ready, limit, least):
    # A packet socket sees every frame the hub floods to the attacker.
    s = packet_socket(iface, 0x0800)
    s.settimeout(0.1)
    open(ready, "w").write("ready\n")
    got, end, last = [], time.time() + limit, None
    while time.time() < end:
        # Done once the expected stream has passed (stray datagrams, e.g.
        # IPv6 neighbour discovery on the TAPs, may come before it).
        if len(got) >= least and time.time() - last > 0.3:
            break
        try:
            pkt = s.recv(70000)
        except socket.timeout:
            continue
        u = udp_datagrams(pkt)
        if not u or socket.inet_ntoa(u[0][16:20]) != dst or u[2] != dport:
            continue
        # Data frames only, not keepalives.
        for payload in u[3]:
            if len(payload) > KEEPALIVE:
                got.append(payload)
                last = time.time()
    return got


def age(dg, ts_at):
    # Seconds since the timestamp (8 bytes, BE ns) at offset ts_at.
    return (time.time_ns() - struct.unpack("!Q", dg[ts_at:ts_at + 8])[0]) / 1e9


def send_own(dgs, dst, port, ts_at):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ages = []
    for dg in dgs:
        ages.append(age(dg, ts_at))
        s.sendto(dg, (dst, port))
    return ages


def send_spoofed(dgs, src, sport, dst, dport, ts_at):
    # UDP checksum 0 (none); the kernel fills in the IP header's id,
    # checksum and length (raw(7)).
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    ages = []
    for dg in dgs:
        ages.append(age(dg, ts_at))
        udp = struct.pack("!HHHH", sport, dport, 8 + len(dg), 0) + dg
        iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, 17, 0,
                          socket.inet_aton(src), socket.inet_aton(dst))
        s.sendto(iph + udp, (dst, 0))
    return ages


def replay(args, ts_at, describe=None):
    # replay IFACE VICTIM PORT GENUINE_SRC READY OUT MAX_AGE LEAST
    # ts_at: where the wire's timestamp is; describe(dgs): more report
    # entries about what was captured (when anything was).
    iface, victim, port, genuine, ready, out, max_age, least = args
    port, max_age, least = int(port), float(max_age), int(least)
    dgs = capture(iface, victim, port, ready, 20, least)
    report = {"captured": len(dgs), "phases": {}}
    if dgs:
        # (a) from the attacker's own address, (b) spoofing the genuine peer,
        # both at once; (c) again once the newest is 1.2 s old (inside the
        # freshness window), then once it is 1 s past the window.
        ph = report["phases"]
        ph["own"] = send_own(dgs, victim, port, ts_at)
        ph["spoofed"] = send_spoofed(dgs, genuine, port, victim, port, ts_at)
        wait = 1.2 - age(dgs[-1], ts_at)
        if wait > 0:
            time.sleep(wait)
        ph["own_delayed_inside"] = send_own(dgs, victim, port, ts_at)
        ph["spoofed_delayed_inside"] = send_spoofed(dgs, genuine, port, victim, port, ts_at)
        wait = max_age + 1.0 - age(dgs[-1], ts_at)
        if wait > 0:
            time.sleep(wait)
        ph["own_delayed_outside"] = send_own(dgs, victim, port, ts_at)
        ph["spoofed_delayed_outside"] = send_spoofed(dgs, genuine, port, victim, port, ts_at)
        if describe:
            report.update(describe(dgs))
    json.dump(report, open(out, "w"))


def listen(args, announce=False):
    # listen ADDR PORT OUT: counts every payload until END (or 60 s); with
    # announce, says "ready" once bound.
    addr, port, out = args
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    s.settimeout(0.5)
    counts, end = {}, time.time() + 60
    if announce:
        print("ready", flush=True)
    while time.time() < end:
        try:
            data = s.recv(65535).decode(errors="replace")
        except socket.timeout:
            continue
        if data == "END":
            break
        counts[data] = counts.get(data, 0) + 1
    json.dump(counts, open(out, "w"))


def talk(args):
    # talk DST PORT N: N unique payloads ("msg-I"), 1 ms apart.
    dst, port, n = args
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(int(n)):
        s.sendto(b"msg-%d" % i, (dst, int(port)))
        time.sleep(0.001)


def end(args):
    # end DST PORT: END a few times, which stops listen.
    dst, port = args
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(5):
        s.sendto(b"END", (dst, int(port)))
        time.sleep(0.1)


SO_RCVBUFFORCE = 33


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def count_received(addr, port, expected, size, rcvbuf, intact):
    # Binds ADDR:PORT (receive buffer rcvbuf), says "ready", and counts
    # datagrams until EXPECTED distinct intact ones or 3 s without one.
    # Then it keeps reading until 0.5 s pass without a datagram (at most
    # 3 s more), so that a duplicate or a corrupt datagram arriving after
    # the last expected one is counted too: stopping at the count would
    # never see it. A datagram is intact when it is SIZE bytes and
    # intact(d); its number is its first 4 bytes (big-endian). Returns the
    # socket, the numbers seen, corrupt and duplicate counts.
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    s.bind((addr, port))
    print("ready", flush=True)
    seen = set()
    corrupt = dup = 0

    def read_until_quiet(quiet, stop):
        nonlocal corrupt, dup
        s.settimeout(quiet)
        deadline = time.monotonic() + stop if stop else None
        while deadline is None or time.monotonic() < deadline:
            if deadline is None and len(seen) >= expected:
                return
            try:
                d = s.recv(65536)
            except socket.timeout:
                return
            if len(d) != size or not intact(d):
                corrupt += 1
                continue
            (i,) = struct.unpack("!I", d[:4])
            if i in seen:
                dup += 1
            else:
                seen.add(i)

    read_until_quiet(3, None)
    read_until_quiet(0.5, 3)
    return s, seen, corrupt, dup


def udp_tool(send, recv):
    # The command line of udp_seq.py and udp_burst.py:
    #   send ADDR PORT N SIZE PAUSE_MS | recv ADDR PORT EXPECTED SIZE
    role, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if role == "send":
        send(addr, port, int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
    else:
        recv(addr, port, int(sys.argv[4]), int(sys.argv[5]))
