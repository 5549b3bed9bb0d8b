#!/usr/bin/env python3
"""Simulated taptun spokes for the hub's scale benchmark (dev/hubbench.sh).

One process plays N spokes over the real wire (tinytaptunnel v1.4, HMAC
mode: HMAC-SHA256(key, ts || frame) || ts (8 B, BE UNIX ns) || frame; the
confidential mode needs an AEAD that the standard library lacks, so it is
not offered). Each spoke has its own key file, its own UDP socket (its own
source port), its own MAC and IPv4 address, and behaves as a tiny Ethernet
host behind its tunnel: it answers ARP requests for its address and ICMP
echo requests to it, resolves the target's MAC with ARP, sends one echo
request a second to the target (a LAN host behind the hub's bridge) and a
keepalive every --keepalive seconds.

    spokes.py genkeys DIR N               N key files DIR/sNNN.key (0600)
    spokes.py run DIR HUB:PORT [options]  the spokes, for --seconds
    spokes.py sweep FIRST N [options]     ping N addresses from FIRST on
                                          until each answered (the LAN side)

`run` prints one line a second (spokes with an echo reply in the last
--window seconds, pings and replies of that second, RTT p50/p99, echo
requests answered for the LAN side) and a summary; --json FILE writes the
summary as JSON. SIGUSR1 pauses the spokes' own sending (pings, keepalives,
ARP requests; answers still go), SIGUSR2 resumes it: so a hub's restart can
be measured with silent spokes, reachable only through the addresses the
hub kept.

`sweep` (root: a raw ICMP socket) pings every address not yet answered,
round-robin, until all answered or --timeout; it prints the time each
answered and the time until all did, and exits 1 if some never did.

Python 3 standard library only. Bounded in time; closes its sockets.
"""

import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

HMAC_LEN = 32
TS_LEN = 8
OVERHEAD = HMAC_LEN + TS_LEN
BROADCAST = b"\xff" * 6
ETH_ARP = 0x0806
ETH_IP = 0x0800


# --- keys ---------------------------------------------------------------------

def key_names(n):
    width = max(3, len(str(n - 1)))
    return ["s%0*d" % (width, i) for i in range(n)]


def genkeys(args):
    os.makedirs(args.dir, exist_ok=True)
    for name in key_names(args.n):
        path = os.path.join(args.dir, name + ".key")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        os.chmod(path, 0o600)
    print("wrote %d keys in %s" % (args.n, args.dir))


def read_key(path):
    return base64.b64decode(open(path).read().strip(), validate=True)


# --- frames -------------------------------------------------------------------

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pad(frame):
    # Ethernet's minimum frame size (without FCS).
    return frame + b"\0" * (60 - len(frame)) if len(frame) < 60 else frame


def arp(op, smac, sip, tmac, tip):
    dst = BROADCAST if op == 1 else tmac
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_IP, 6, 4, op, smac, sip, tmac, tip)
    return pad(dst + smac + struct.pack("!H", ETH_ARP) + body)


def ipv4(src, dst, proto, payload, ident):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF,
                      0x4000, 64, proto, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + payload


def icmp_echo(typ, ident, seq, data):
    msg = struct.pack("!BBHHH", typ, 0, 0, ident, seq) + data
    return msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]


def fmt_ms(x):
    return "-" if x is None else "%.2f ms" % (x * 1e3)


# --- one spoke ----------------------------------------------------------------

class Spoke:
    """One simulated site: a key, a socket, and an Ethernet host behind it."""

    def __init__(self, index, name, key, sock, hub, mac, ip, target, max_age):
        self.index, self.name, self.key, self.sock, self.hub = index, name, key, sock, hub
        self.mac, self.ip, self.target, self.max_age = mac, ip, target, max_age
        self.target_mac = None
        self.last_ts = 0
        self.seq = 0
        self.ident = (0x7700 + index) & 0xFFFF
        self.outstanding = {}  # seq -> send time (monotonic)
        self.last_reply = None  # monotonic time of the last echo reply
        self.sent = self.replies = self.late = 0
        self.keepalives = self.answered_echo = self.answered_arp = 0
        self.rx = self.bad = self.ipid = 0

    def seal(self, frame):
        ts = max(time.time_ns(), self.last_ts + 1)
        self.last_ts = ts
        tsb = struct.pack("!Q", ts)
        return hmac.new(self.key, tsb + frame, hashlib.sha256).digest() + tsb + frame

    def send(self, frame):
        try:
            self.sock.sendto(self.seal(frame), self.hub)
        except OSError:
            pass  # e.g. ECONNREFUSED of an earlier datagram while the hub restarts

    def keepalive(self):
        self.keepalives += 1
        self.send(b"")

    def ping(self, now):
        if self.target_mac is None:
            self.send(arp(1, self.mac, self.ip, b"\0" * 6, self.target))
            return
        self.seq = (self.seq + 1) & 0xFFFF
        self.outstanding[self.seq] = now
        self.sent += 1
        self.ipid += 1
        data = struct.pack("!d", now) + bytes(48)
        pkt = ipv4(self.ip, self.target, 1, icmp_echo(8, self.ident, self.seq, data), self.ipid)
        self.send(self.target_mac + self.mac + struct.pack("!H", ETH_IP) + pkt)

    def expire(self, now, after=5.0):
        # An echo request unanswered for `after` seconds is lost.
        for seq in [s for s, t in self.outstanding.items() if now - t > after]:
            del self.outstanding[seq]

    def receive(self, dg, now, rtts):
        if len(dg) < OVERHEAD:
            self.bad += 1
            return
        tsb, frame = dg[HMAC_LEN:OVERHEAD], dg[OVERHEAD:]
        mac = hmac.new(self.key, tsb + frame, hashlib.sha256).digest()
        ts = struct.unpack("!Q", tsb)[0]
        if not hmac.compare_digest(mac, dg[:HMAC_LEN]) or \
                abs(time.time_ns() - ts) > self.max_age * 1e9:
            self.bad += 1
            return
        self.rx += 1
        if len(frame) < 14:
            return  # a keepalive
        dst, src, typ = frame[:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
        if dst != self.mac and dst != BROADCAST:
            return
        if typ == ETH_ARP and len(frame) >= 42:
            op, sha, spa, tpa = struct.unpack("!6xH6s4s6x4s", frame[14:42])
            if spa == self.target:
                self.target_mac = sha
            if op == 1 and tpa == self.ip:
                self.answered_arp += 1
                self.send(arp(2, self.mac, self.ip, sha, spa))
        elif typ == ETH_IP and len(frame) >= 34 and frame[14] >> 4 == 4 and frame[23] == 1:
            ihl = (frame[14] & 15) * 4
            ip_src, ip_dst = frame[26:30], frame[30:34]
            icmp = frame[14 + ihl:]
            if ip_dst != self.ip or len(icmp) < 8:
                return
            typ_icmp, _, _, ident, seq = struct.unpack("!BBHHH", icmp[:8])
            if typ_icmp == 8:
                self.answered_echo += 1
                self.ipid += 1
                pkt = ipv4(self.ip, ip_src, 1, icmp_echo(0, ident, seq, icmp[8:]), self.ipid)
                self.send(src + self.mac + struct.pack("!H", ETH_IP) + pkt)
            elif typ_icmp == 0 and ident == self.ident:
                t = self.outstanding.pop(seq, None)
                if t is None:
                    self.late += 1
                    return
                self.replies += 1
                self.last_reply = now
                rtts.append(now - t)


# --- run ----------------------------------------------------------------------

def parse_hostport(text):
    host, _, port = text.rpartition(":")
    return (host or "127.0.0.1", int(port))


def run(args):
    names = key_names(args.count)
    hub = parse_hostport(args.hub)
    first = ipaddress.IPv4Address(args.first)
    target = ipaddress.IPv4Address(args.target).packed
    spokes = []
    sel = selectors.DefaultSelector()
    paused = [False]
    stop = [False]
    signal.signal(signal.SIGUSR1, lambda *_: paused.__setitem__(0, True))
    signal.signal(signal.SIGUSR2, lambda *_: paused.__setitem__(0, False))
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    try:
        for i, name in enumerate(names):
            key = read_key(os.path.join(args.dir, name + ".key"))
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind((args.bind, args.base_port + i if args.base_port else 0))
            mac = b"\x02\x77" + struct.pack("!I", i)
            ip = (first + i).packed
            sp = Spoke(i, name, key, s, hub, mac, ip, target, args.max_age)
            spokes.append(sp)
            sel.register(s, selectors.EVENT_READ, sp)
        return run_loop(args, spokes, sel, paused, stop)
    finally:
        sel.close()
        for sp in spokes:
            sp.sock.close()


def run_loop(args, spokes, sel, paused, stop):
    n = len(spokes)
    start = time.monotonic()
    end = start + args.seconds
    # Spread each spoke's ping and keepalive over the period, so that N
    # spokes do not send in one burst.
    next_ping = [start + i / n for i in range(n)]
    next_ka = [start + args.keepalive * i / n for i in range(n)] if args.keepalive else None
    next_report = start + 1
    sec_rtts, all_rtts = [], []
    sec_sent = sec_replies = 0
    prev = (0, 0, 0)
    rows = []
    while not stop[0]:
        now = time.monotonic()
        if now >= end:
            break
        # The next timer due (a linear scan: N is hundreds, once per wake-up
        # at most a few hundred times a second).
        due = min(min(next_ping), next_report, end)
        if next_ka:
            due = min(due, min(next_ka))
        for key, _ in sel.select(max(0.0, due - now)):
            sp = key.data
            for _ in range(64):
                try:
                    dg = sp.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break  # ICMP port unreachable reported on the socket
                sp.receive(dg, time.monotonic(), sec_rtts)
        now = time.monotonic()
        for i, sp in enumerate(spokes):
            if now >= next_ping[i]:
                next_ping[i] += 1.0
                if next_ping[i] < now:
                    next_ping[i] = now + 1.0
                if not paused[0]:
                    sp.ping(now)
            if next_ka and now >= next_ka[i]:
                next_ka[i] += args.keepalive
                if next_ka[i] < now:
                    next_ka[i] = now + args.keepalive
                if not paused[0]:
                    sp.keepalive()
        if now >= next_report:
            next_report += 1.0
            for sp in spokes:
                sp.expire(now)
            sent = sum(sp.sent for sp in spokes)
            replies = sum(sp.replies for sp in spokes)
            echo = sum(sp.answered_echo for sp in spokes)
            ok = sum(1 for sp in spokes if sp.last_reply is not None and now - sp.last_reply <= args.window)
            ds, dr, de = sent - prev[0], replies - prev[1], echo - prev[2]
            prev = (sent, replies, echo)
            row = {"t": round(now - start, 1), "reachable": ok, "sent": ds, "replies": dr,
                   "rtt_p50_ms": None, "rtt_p99_ms": None, "lan_echo_answered": de,
                   "paused": paused[0]}
            if sec_rtts:
                row["rtt_p50_ms"] = round(percentile(sec_rtts, 50) * 1e3, 3)
                row["rtt_p99_ms"] = round(percentile(sec_rtts, 99) * 1e3, 3)
            rows.append(row)
            all_rtts.extend(sec_rtts)
            if not args.quiet:
                print("t=%5.1fs reachable %d/%d (reply in the last %g s)  pings %d replies %d  "
                      "rtt p50 %s p99 %s  LAN echo answered %d%s" % (
                          now - start, ok, n, args.window, ds, dr,
                          fmt_ms(percentile(sec_rtts, 50)), fmt_ms(percentile(sec_rtts, 99)), de,
                          "  (paused)" if paused[0] else ""), flush=True)
            sec_rtts = []
    now = time.monotonic()
    all_rtts.extend(sec_rtts)
    # Requests still within their 5 s are neither lost nor answered.
    for sp in spokes:
        sp.expire(now)
    sent = sum(sp.sent for sp in spokes)
    pending = sum(len(sp.outstanding) for sp in spokes)
    replies = sum(sp.replies for sp in spokes)
    lost = sent - pending - replies
    summary = {
        "spokes": n,
        "seconds": round(now - start, 1),
        "reachable_last_window": sum(1 for sp in spokes if sp.last_reply is not None
                                     and now - sp.last_reply <= args.window),
        "ever_replied": sum(1 for sp in spokes if sp.replies),
        "never_replied": [sp.name for sp in spokes if not sp.replies],
        "pings_sent": sent,
        "replies": replies,
        "late_replies": sum(sp.late for sp in spokes),
        "loss_pct": round(100.0 * lost / (sent - pending), 2) if sent - pending else None,
        "rtt_p50_ms": round(percentile(all_rtts, 50) * 1e3, 3) if all_rtts else None,
        "rtt_p99_ms": round(percentile(all_rtts, 99) * 1e3, 3) if all_rtts else None,
        "keepalives_sent": sum(sp.keepalives for sp in spokes),
        "datagrams_received": sum(sp.rx for sp in spokes),
        "datagrams_refused": sum(sp.bad for sp in spokes),
        "lan_echo_answered": sum(sp.answered_echo for sp in spokes),
        "lan_arp_answered": sum(sp.answered_arp for sp in spokes),
        "per_second": rows,
    }
    print("spokes: %d, %.0f s: reachable (reply in the last %g s) %d, ever answered %d; "
          "pings %d, replies %d, loss %s %%, rtt p50 %s p99 %s; keepalives %d; "
          "datagrams received %d, refused %d; LAN echo requests answered %d, ARP %d" % (
              n, now - start, args.window, summary["reachable_last_window"], summary["ever_replied"],
              sent, replies, summary["loss_pct"], fmt_ms(percentile(all_rtts, 50)),
              fmt_ms(percentile(all_rtts, 99)), summary["keepalives_sent"],
              summary["datagrams_received"], summary["datagrams_refused"],
              summary["lan_echo_answered"], summary["lan_arp_answered"]), flush=True)
    if summary["never_replied"]:
        print("never answered: " + " ".join(summary["never_replied"][:20]) +
              (" ..." if len(summary["never_replied"]) > 20 else ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f)
    return 0


# --- sweep --------------------------------------------------------------------

def sweep(args):
    first = ipaddress.IPv4Address(args.first)
    addrs = [str(first + i) for i in range(args.n)]
    wanted = set(addrs)
    ident = os.getpid() & 0xFFFF
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    answered = {}
    start = time.monotonic()
    start_wall = time.time()
    seq = 0
    try:
        s.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_READ)
        end = start + args.timeout
        nxt = start
        idx = 0
        while len(answered) < len(addrs) and time.monotonic() < end:
            now = time.monotonic()
            # Each address not yet answered gets one request every --interval
            # seconds, spread over the interval.
            if now >= nxt:
                todo = [a for a in addrs if a not in answered]
                a = todo[idx % len(todo)]
                idx += 1
                seq = (seq + 1) & 0xFFFF
                try:
                    s.sendto(icmp_echo(8, ident, seq, struct.pack("!d", now) + bytes(8)), (a, 0))
                except OSError:
                    pass  # no neighbour yet (EHOSTUNREACH): tried again
                nxt = now + args.interval / max(1, len(todo))
            for _ in sel.select(max(0.0, min(nxt, end) - time.monotonic())):
                while True:
                    try:
                        pkt, (src, _) = s.recvfrom(2048)
                    except (BlockingIOError, InterruptedError):
                        break
                    ihl = (pkt[0] & 15) * 4
                    if len(pkt) < ihl + 8:
                        continue
                    typ, _, _, rid, _ = struct.unpack("!BBHHH", pkt[ihl:ihl + 8])
                    if typ == 0 and rid == ident and src not in answered and src in wanted:
                        answered[src] = time.monotonic() - start
        sel.close()
    finally:
        s.close()
    took = max(answered.values()) if len(answered) == len(addrs) else None
    result = {"addresses": len(addrs), "answered": len(answered), "all_after_s": took,
              "start_epoch": start_wall,
              "missing": [a for a in addrs if a not in answered]}
    if took is not None:
        print("sweep: all %d answered after %.2f s" % (len(addrs), took), flush=True)
    else:
        print("sweep: %d/%d answered within %g s; missing: %s" % (
            len(answered), len(addrs), args.timeout, " ".join(result["missing"][:20])), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    return 0 if took is not None else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("genkeys", help="write N key files DIR/sNNN.key")
    g.add_argument("dir")
    g.add_argument("n", type=int)
    r = sub.add_parser("run", help="run the spokes")
    r.add_argument("dir", help="the key files (genkeys)")
    r.add_argument("hub", help="the hub's UDP address, IP:PORT")
    r.add_argument("--count", type=int, default=200, help="spokes (default 200)")
    r.add_argument("--seconds", type=float, default=30, help="run time (default 30)")
    r.add_argument("--keepalive", type=float, default=10,
                   help="seconds between keepalives (default 10; 0 = none)")
    r.add_argument("--target", default="10.77.0.1", help="the LAN host pinged (default 10.77.0.1)")
    r.add_argument("--first", default="10.77.1.1",
                   help="spoke 0's IPv4 address, the others follow (default 10.77.1.1)")
    r.add_argument("--bind", default="0.0.0.0", help="local address of the spokes' sockets")
    r.add_argument("--base-port", type=int, default=0,
                   help="spoke i binds BASE+i (default: ports the kernel picks)")
    r.add_argument("--window", type=float, default=3, help="reachable = a reply in this many seconds (default 3)")
    r.add_argument("--max-age", type=float, default=3, help="freshness, seconds (default 3)")
    r.add_argument("--json", help="write the summary as JSON to this file")
    r.add_argument("--quiet", action="store_true", help="no per-second lines")
    w = sub.add_parser("sweep", help="ping N addresses until each answered (root)")
    w.add_argument("first", help="first address, e.g. 10.77.1.1")
    w.add_argument("n", type=int)
    w.add_argument("--timeout", type=float, default=10, help="give up after (default 10 s)")
    w.add_argument("--interval", type=float, default=0.2,
                   help="seconds between requests to one address (default 0.2)")
    w.add_argument("--json", help="write the result as JSON to this file")
    args = p.parse_args()
    if args.cmd in ("genkeys",) and not 1 <= args.n <= 5000:
        p.error("N must be 1..5000")
    if args.cmd == "run" and not (1 <= args.count <= 5000 and 0 < args.seconds <= 3600):
        p.error("--count must be 1..5000 and --seconds 0..3600")
    if args.cmd == "sweep" and not (1 <= args.n <= 5000 and 0 < args.timeout <= 600):
        p.error("N must be 1..5000 and --timeout 0..600")
    return {"genkeys": genkeys, "run": run, "sweep": sweep}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
