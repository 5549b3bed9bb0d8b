//! End-to-end: TAP offloads (TSO reads, UDP GSO/GRO, coalesced TAP writes)
//! keep data intact, interoperate with a peer without offloads, and never
//! put a datagram larger than the MTU on the wire.

mod common;
use common::*;
use std::process::Stdio;
use std::time::Duration;

const MB: usize = 40;

/// The usual two peers, once B reaches A through the tunnel.
fn start_pair(p: &Pair, a_extra: &[&str], b_extra: &[&str]) -> (Peer, Peer) {
    let (a, b) = p.peers(a_extra, b_extra);
    assert!(
        p.b.ping_until(TAP_A, Duration::from_secs(5)),
        "no ping:\n{}",
        a.log_text()
    );
    (a, b)
}

/// Stops the peers and checks that each exited 0 having dropped nothing as
/// bad, stale, future or replayed, and failed no TAP write.
fn stop_clean(peers: &mut [&mut Peer]) {
    for peer in peers.iter_mut() {
        let (code, _) = peer.stop(Duration::from_secs(3));
        assert_eq!(code, Some(0));
        let log = peer.log_text();
        assert!(log.contains("bad_mac 0 stale 0 future 0 replay 0"), "{log}");
        assert!(log.contains("tap errors 0"), "{log}");
    }
}

/// Starts tcpdump on A's underlay, writing one line per UDP datagram with its length.
fn capture(p: &Pair) -> (Background, std::path::PathBuf) {
    let f = p.dir.join("cap.txt");
    let tcpdump = Background::spawn(
        p.a.command("sh")
            .arg("-c")
            .arg(format!(
                "exec timeout 60 tcpdump -i u0 -n -l -q -B 16384 udp port {PORT} > {} 2>/dev/null",
                f.display()
            ))
            .stdin(Stdio::null()),
    );
    // Wait until tcpdump listens: a ping through the tunnel shows up in the capture.
    assert!(
        until(Duration::from_secs(10), Duration::ZERO, || {
            let seen = !std::fs::read_to_string(&f).unwrap_or_default().is_empty();
            if !seen {
                let _ = p.b.exec_out(&format!("ping -c 1 -W 1 {TAP_A}"));
            }
            seen
        }),
        "tcpdump never saw a datagram"
    );
    (tcpdump, f)
}

#[test]
fn e2e_offload_integrity_both_ways_and_no_datagram_over_mtu() {
    require_e2e!();
    let p = Pair::new();
    // Without UDP segmentation offload on the veth, a GSO send is cut into
    // its datagrams before the capture point, as a NIC without USO would:
    // the capture then shows what would really be on the wire.
    for ns in [&p.a, &p.b] {
        ns.exec("ethtool -K u0 tx-udp-segmentation off");
    }
    let (mut a, mut b) = start_pair(&p, &[], &[]);
    assert!(a.log_text().contains("offloads on"), "{}", a.log_text());
    let (mut cap, capfile) = capture(&p);
    tcp_transfer(&p, &p.b, &p.a, TAP_A, 5001, MB);
    tcp_transfer(&p, &p.a, &p.b, TAP_B, 5002, MB);
    // SIGTERM: tcpdump writes out what it has before it exits.
    cap.stop(Duration::from_secs(5));
    // "IP 192.0.2.2.9123 > 192.0.2.1.9123: UDP, length 1458"
    let text = std::fs::read_to_string(&capfile).unwrap();
    let lens: Vec<usize> = text
        .lines()
        .filter_map(|l| l.rsplit("length ").next()?.trim().parse().ok())
        .collect();
    assert!(
        lens.len() > 20_000,
        "capture too small: {} datagrams",
        lens.len()
    );
    let max = *lens.iter().max().unwrap();
    // UDP payload limit for a 1500-byte IPv4 path: 1500 - 20 - 8.
    assert!(
        max <= 1472,
        "datagram of {max} bytes exceeds the underlay MTU"
    );
    // Full-size segments really were produced (TSO in use, not only small frames).
    assert!(max >= 1400, "largest datagram only {max} bytes");
    stop_clean(&mut [&mut a, &mut b]);
}

#[test]
fn e2e_offload_interoperates_with_no_offload_peer() {
    require_e2e!();
    let p = Pair::new();
    let (a, b) = start_pair(&p, &[], &["--no-offload"]);
    assert!(a.log_text().contains("offloads on"), "{}", a.log_text());
    assert!(b.log_text().contains("offloads off"), "{}", b.log_text());
    tcp_transfer(&p, &p.b, &p.a, TAP_A, 5003, MB);
    tcp_transfer(&p, &p.a, &p.b, TAP_B, 5004, MB);
    assert!(p.a.ping(TAP_B, 2));
}

/// A counter of an interface in a namespace, from sysfs.
fn link_stat(ns: &Netns, dev: &str, stat: &str) -> u64 {
    ns.exec(&format!("cat /sys/class/net/{dev}/statistics/{stat}"))
        .trim()
        .parse()
        .unwrap()
}

/// Sends `bursts` UDP GSO bursts of 64 datagrams from A to `dst` in B and
/// returns (datagrams received intact, corrupt, duplicated).
fn udp_bursts(p: &Pair, dst: &str, port: u16, bursts: usize, size: usize) -> (usize, usize, usize) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/udp_burst.py");
    let expected = bursts * 64;
    udp_count(
        script,
        60,
        &p.a,
        &format!("{dst} {port} {bursts} {size} 5"),
        &p.b,
        &format!("{dst} {port} {expected} {size}"),
    )
}

#[test]
fn e2e_udp_bursts_batched_and_coalesced_intact() {
    require_e2e!();
    let p = Pair::new();
    let (mut a, mut b) = start_pair(&p, &[], &[]);
    p.a.exec("ip addr add fd99::1/64 dev tap0 nodad");
    p.b.exec("ip addr add fd99::2/64 dev tap0 nodad");
    assert!(p.a.ping_until("fd99::2", Duration::from_secs(5)));
    for (dst, port, size) in [(TAP_B, 7001, 100), ("fd99::2", 7002, 333)] {
        let bursts = 150;
        let sent = bursts * 64;
        let (wire0, tap0) = (
            link_stat(&p.a, "u0", "tx_packets"),
            link_stat(&p.b, "tap0", "rx_packets"),
        );
        let (got, corrupt, dup) = udp_bursts(&p, dst, port, bursts, size);
        let wire = link_stat(&p.a, "u0", "tx_packets") - wire0;
        let writes = link_stat(&p.b, "tap0", "rx_packets") - tap0;
        eprintln!(
            "{dst}: {got}/{sent} received, {corrupt} corrupt, {dup} dup; {wire} underlay sends, {writes} TAP writes"
        );
        // The receiver reads on for a quiet 0.5 s after the last expected
        // datagram: a late duplicate or extra shows here.
        assert_eq!((corrupt, dup), (0, 0), "{dst}");
        assert!(got <= sent, "{dst}: {got} distinct datagrams, {sent} sent");
        // Only scheduling stalls longer than the TAP queue (1000 frames,
        // 75 ms at this pace) could lose any.
        assert!(got * 100 >= sent * 95, "{dst}: only {got} of {sent}");
        // Batched: far fewer GSO sends on the underlay than datagrams, and
        // far fewer TAP writes than datagrams delivered (coalesced).
        assert!(
            wire as usize * 4 <= got,
            "{dst}: {wire} underlay packets for {got} datagrams"
        );
        assert!(
            writes as usize * 4 <= got,
            "{dst}: {writes} TAP writes for {got} datagrams"
        );
    }
    stop_clean(&mut [&mut a, &mut b]);
}
