//! End-to-end: ECN across the tunnel (RFC 6040 normal mode), both wires,
//! over an IPv4 underlay (sent from a dual-stack socket to a v4-mapped
//! address: the `IP_TOS` cmsg) and an IPv6 one (`IPV6_TCLASS`).
//!
//! The CE marker on the underlay is nftables (`ip ecn set ce` on A's
//! underlay veth, postrouting): this kernel has none of the qdiscs that
//! mark (netem, red, choke, fq_codel, pie: "qdisc kind is unknown"), and no
//! tc classifier for a pedit action.

mod common;
use common::*;
use std::process::Stdio;
use std::time::Duration;

const TOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/ecn_tos.py");
/// Datagrams per crossing.
const N: usize = 10;
const ECT0: u8 = 0x02;
const ECT1: u8 = 0x01;
const NOT_ECT: u8 = 0x00;
const CE: u8 = 0x03;

/// Panics naming what is missing: the tests need nftables (the CE
/// marker), tcpdump (the outer header) and python3 (the TOS of the inner).
fn tools() {
    for tool in ["nft", "tcpdump", "python3"] {
        assert!(installed(tool), "{tool} is needed");
    }
}

/// The two peers, B given A's IPv4 or (`v6`) IPv6 underlay address, with
/// `--cipher aes-256-gcm` when `cipher`; returns once A reaches B's TAP.
fn tunnel(p: &Pair, cipher: bool, v6: bool) -> (Peer, Peer) {
    let k = p.key("k.b64", KEY);
    let extra: &[&str] = if cipher {
        &["--cipher", "aes-256-gcm"]
    } else {
        &[]
    };
    let a = Peer::start(&p.a, &p.dir, &k, &strs(&a_args(extra)));
    let peer = match v6 {
        true => format!("[{UNDERLAY6_A}]:{PORT}"),
        false => format!("{UNDERLAY_A}:{PORT}"),
    };
    let b = Peer::start(&p.b, &p.dir, &k, &strs(&b_args_to(&peer, extra)));
    assert!(
        p.a.ping_until(TAP_B, Duration::from_secs(10)),
        "no tunnel:\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    (a, b)
}

/// Sends [`N`] UDP datagrams of TOS `tos` from A's side of the tunnel to
/// B's TAP address, port `port`; returns the TOS byte of each that B's
/// receiver got.
fn cross(p: &Pair, tos: u8, port: u16) -> Vec<u8> {
    let out = p.dir.join(format!("recv-{port}.txt"));
    let mut rx = Background::spawn(
        p.b.command("sh")
            .arg("-c")
            .arg(format!(
                "exec timeout 20 python3 {TOOL} recv {TAP_B} {port} {N} >{}",
                out.display()
            ))
            .stdin(Stdio::null()),
    );
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        until(Duration::from_secs(5), POLL, || read()
            .contains("listening")),
        "the receiver did not start"
    );
    p.a.exec(&format!(
        "timeout 20 python3 {TOOL} send {TAP_B} {port} {tos:#04x} {N}"
    ));
    rx.wait_exit(Duration::from_secs(10));
    read()
        .lines()
        .filter_map(|l| l.strip_prefix("tos 0x"))
        .map(|h| u8::from_str_radix(h.trim(), 16).expect("tos"))
        .collect()
}

/// The outer ECN field of each tunnel datagram (UDP port [`PORT`]) A sent
/// on its underlay while `f` ran, from a capture.
fn outer_ecn(p: &Pair, v6: bool, f: impl FnOnce()) -> Vec<u8> {
    outer(p, v6, f).into_iter().map(|(e, _)| e).collect()
}

/// [`outer_ecn`], each with the packet's IP length (a GSO message shows
/// as one packet of the whole message on the sender's veth).
fn outer(p: &Pair, v6: bool, f: impl FnOnce()) -> Vec<(u8, usize)> {
    let file = p.dir.join(format!("outer-{}.pcap", unique("c")));
    let filter = format!(
        "src host {} and udp port {PORT}",
        match v6 {
            true => UNDERLAY6_A,
            false => UNDERLAY_A,
        }
    );
    let cap = Capture::start(&p.a, "u0", &file, &filter, 60, None);
    f();
    let file = cap.stop();
    let text = sh(&format!("tcpdump -r {} -nv 2>/dev/null", file.display()));
    // IPv4: "(tos 0x2,ECT(0), ttl ..."; IPv6: "(class 0x02, flowlabel ...",
    // or no class at all when it is 0.
    text.lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| {
            let key = if v6 { "class 0x" } else { "tos 0x" };
            let ecn = l.split_once(key).map_or(0, |(_, rest)| {
                let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
                u8::from_str_radix(&hex, 16).expect("hex")
            }) & 0b11;
            let key = if v6 { "payload length: " } else { ", length " };
            let len = l.split_once(key).map_or(0, |(_, rest)| {
                let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                n.parse().unwrap_or(0)
            });
            (ecn, len)
        })
        .collect()
}

/// Marks CE on every datagram leaving A's underlay veth whose ECN field
/// matches `which` (an nftables ECN match: `ect0`, `ect1`, or `!= ce`
/// for all of them, Not-ECT too: a network that breaks RFC 3168).
fn mark_ce(p: &Pair, which: &str) {
    p.a.exec("nft add table inet ttecn && nft add chain inet ttecn post '{ type filter hook postrouting priority 0; }'");
    for fam in ["ip", "ip6"] {
        p.a.exec(&format!(
            "nft add rule inet ttecn post oifname u0 meta l4proto udp {fam} ecn {which} {fam} ecn set ce"
        ));
    }
}

/// The whole RFC 6040 round on one underlay and wire: the outer header
/// carries the inner ECN (ECT(0) and Not-ECT), the inner arrives as sent;
/// then with the underlay marking ECT datagrams CE, the inner ECT(0) and
/// ECT(1) arrive CE, and Not-ECT (never marked) arrives as sent.
fn ce_reaches_the_inner_packet(cipher: bool, v6: bool) {
    let p = Pair::new();
    let (_a, b) = tunnel(&p, cipher, v6);
    let mut got = Vec::new();
    let outer = outer_ecn(&p, v6, || got = cross(&p, ECT0, 7001));
    assert_eq!(got, [ECT0; N], "ECT(0) crossing an unmarked underlay");
    let ect0 = outer.iter().filter(|&&e| e == ECT0).count();
    assert!(ect0 >= N, "outer ECN of the ECT(0) datagrams: {outer:?}");
    let outer = outer_ecn(&p, v6, || got = cross(&p, NOT_ECT, 7002));
    assert_eq!(got, [NOT_ECT; N]);
    assert!(
        outer.len() >= N && outer.iter().all(|&e| e == NOT_ECT),
        "outer ECN of the Not-ECT datagrams: {outer:?}"
    );

    mark_ce(&p, "{ ect0, ect1 }");
    assert_eq!(cross(&p, ECT0, 7003), [CE; N], "ECT(0) under CE");
    assert_eq!(cross(&p, ECT1, 7004), [CE; N], "ECT(1) under CE");
    assert_eq!(cross(&p, NOT_ECT, 7005), [NOT_ECT; N], "Not-ECT");
    b.stats();
    assert_eq!(b.counter("ce_not_ect"), Some(0), "{}", b.log_text());
}

#[test]
fn e2e_ecn_ce_on_the_underlay_reaches_the_inner_packet() {
    require_e2e!();
    tools();
    ce_reaches_the_inner_packet(false, false);
}

#[test]
fn e2e_ecn_ce_on_the_underlay_reaches_the_inner_packet_with_cipher() {
    require_e2e!();
    tools();
    ce_reaches_the_inner_packet(true, false);
}

#[test]
fn e2e_ecn_ce_on_an_ipv6_underlay_reaches_the_inner_packet() {
    require_e2e!();
    tools();
    ce_reaches_the_inner_packet(false, true);
}

/// A network that marks CE on Not-ECT datagrams: the Not-ECT inner packet
/// is dropped (RFC 6040) and counted as `ce_not_ect`; ECT ones still
/// cross, marked CE.
#[test]
fn e2e_ecn_ce_over_a_not_ect_packet_is_dropped_and_counted() {
    require_e2e!();
    tools();
    for cipher in [false, true] {
        let p = Pair::new();
        let (_a, b) = tunnel(&p, cipher, false);
        mark_ce(&p, "!= ce");
        assert_eq!(cross(&p, NOT_ECT, 7011), [], "cipher {cipher}");
        assert_eq!(cross(&p, ECT0, 7012), [CE; N], "cipher {cipher}");
        b.stats();
        let dropped = b.counter("ce_not_ect").unwrap_or(0);
        assert!(
            dropped >= N as u64,
            "ce_not_ect {dropped}:\n{}",
            b.log_text()
        );
    }
}

/// TCP with ECN (`tcp_ecn=1`) through the tunnel with its offloads: the
/// TSO super-frames' segments all go out ECT(0), in UDP GSO messages that
/// carry the TOS cmsg beside the segment size; with the underlay marking
/// them CE, the transfer still completes intact and nothing is dropped as
/// `ce_not_ect`.
#[test]
fn e2e_ecn_tcp_segments_go_ect0_in_gso_messages() {
    require_e2e!();
    tools();
    let p = Pair::new();
    let (_a, b) = tunnel(&p, false, false);
    for ns in [&p.a, &p.b] {
        ns.exec("sysctl -qw net.ipv4.tcp_ecn=1");
    }
    let outer = outer(&p, false, || tcp_transfer(&p, &p.a, &p.b, TAP_B, 5101, 5));
    let ect0: Vec<usize> = outer
        .iter()
        .filter(|&&(e, _)| e == ECT0)
        .map(|&(_, l)| l)
        .collect();
    // 5 MB in datagrams of at most 1472 bytes is over 3 500 of them.
    let bytes: usize = ect0.iter().sum();
    assert!(bytes >= 5_000_000, "ECT(0) bytes on the underlay: {bytes}");
    assert!(
        ect0.iter().any(|&l| l > 3000),
        "no ECT(0) GSO message: {:?}",
        &ect0[..ect0.len().min(20)]
    );
    mark_ce(&p, "{ ect0, ect1 }");
    tcp_transfer(&p, &p.a, &p.b, TAP_B, 5102, 5);
    b.stats();
    assert_eq!(b.counter("ce_not_ect"), Some(0), "{}", b.log_text());
}

/// IP packets with CE that reached B's stack (`IpExt InCEPkts` of B's
/// namespace: the kernel's count, not taptun's).
fn in_ce_packets(ns: &Netns) -> u64 {
    let text = ns.exec("cat /proc/net/netstat");
    let mut rows = text.lines().filter(|l| l.starts_with("IpExt:"));
    let (names, values) = (rows.next().expect("IpExt"), rows.next().expect("IpExt"));
    let at = names
        .split_whitespace()
        .position(|n| n == "InCEPkts")
        .expect("InCEPkts");
    values
        .split_whitespace()
        .nth(at)
        .expect("value")
        .parse()
        .expect("number")
}

/// The receive queue's AQM on the real kernel: a TCP transfer with ECN
/// (tcp_ecn=1 on both hosts) fills B's UDP socket queue; with a CoDel
/// target B's queue stands above (0.05 ms over 0.5 ms), B's status shows
/// the sojourn times the kernel's arrival stamps give, and marks CE on
/// frames, which B's own stack counts as CE packets received. With `--aqm
/// off`, the same transfer gets no mark (nothing else on the path marks).
#[test]
fn e2e_aqm_marks_a_standing_receive_queue() {
    require_e2e!();
    tools();
    for (aqm, marked) in [("0.05/0.5", true), ("off", false)] {
        let p = Pair::new();
        let (_a, b, sock) = start_with_b_status(&p, &[], &["--aqm", aqm]);
        for ns in [&p.a, &p.b] {
            ns.exec("sysctl -qw net.ipv4.tcp_ecn=1");
        }
        let status = || status_json(&sock);
        let ce_before = in_ce_packets(&p.b);
        // The status as the transfer runs: the largest sojourn seen.
        let done = std::sync::atomic::AtomicBool::new(false);
        // (None: the status never had figures of a second with receives.)
        let mut max_sojourn = None;
        std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut most: Option<f64> = None;
                for _ in 0..600 {
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let j = status();
                    if j.contains("\"sojourn_max_ms\":") && !j.contains("\"sojourn_max_ms\":null") {
                        let v = json_num(&j, "sojourn_max_ms");
                        most = Some(most.map_or(v, |m| m.max(v)));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                most
            });
            tcp_transfer(&p, &p.a, &p.b, TAP_B, 5201, 30);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            max_sojourn = watcher.join().expect("watcher");
        });
        let json = status();
        let marks = json_num(&json, "aqm_marks") as u64;
        let ce = in_ce_packets(&p.b) - ce_before;
        b.stats();
        let drops = b.counter("aqm").unwrap_or(0);
        let what = format!(
            "--aqm {aqm}: {marks} marked, {drops} dropped, B's stack saw {ce} CE packets, largest sojourn {max_sojourn:?} ms"
        );
        eprintln!("{what}");
        assert!(max_sojourn.is_some(), "{what}: no sojourn figures");
        if marked {
            assert!(marks > 0, "{what}\n{}", b.log_text());
            // Each mark is one segment's frame (never coalesced with an
            // unmarked one), and nothing else on the path marks.
            assert_eq!(ce, marks, "{what}");
            // The data segments are ECT: marked, not dropped; a signal
            // that fell on a Not-ECT one (a SYN, FIN or bare ACK) drops it.
            assert!(drops < marks, "{what}: TCP with ECN is marked");
        } else {
            assert_eq!((marks, drops, ce), (0, 0, 0), "{what}");
        }
    }
}
