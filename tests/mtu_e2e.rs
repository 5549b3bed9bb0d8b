//! End-to-end: full-size Ethernet frames cross the tunnel. Two labs, each a
//! host with MTU 1500 on a LAN that `scripts/l2_bridge_up.sh` bridges to
//! taptun's TAP, the gateways joined by a 1500-byte underlay, taptun with
//! default flags:
//!
//! ```text
//!  hostA eth0 ── lan0 [br0 tap0] gwA u0 ══ u0 gwB [tap0 br0] lan0 ── eth0 hostB
//!  10.55.0.1/24          192.0.2.1 (UDP 9123) 192.0.2.2            10.55.0.2/24
//! ```
//!
//! Full-size pings (`-M do -s 1472`) and 1472-byte UDP datagrams arrive
//! (their sealed datagrams are fragmented by the underlay), while TCP's MSS
//! is clamped so that its segments never need fragmenting. Plus: a 9000-byte
//! TAP MTU over the 1500-byte underlay, and a default-MTU tunnel whose
//! datagrams still fit a 1500-byte path unfragmented (what a tinytaptunnel
//! peer expects).

mod common;
use common::*;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");
const UDP_SEQ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/udp_seq.py");
const HOST_A: &str = "10.55.0.1";
const HOST_B: &str = "10.55.0.2";
/// Largest MSS for TCP/IPv4 inside, over a 1500-byte IPv4 underlay:
/// 1500 − 20 IP − 8 UDP − 40 taptun − 14 Ethernet − 20 IP − 20 TCP.
const MSS_MAX: u32 = 1378;
/// The largest UDP payload of one unfragmented datagram on a 1500-byte IPv4 path.
const UDP_MAX: usize = 1500 - 20 - 8;
/// tcpdump filter: IPv4 fragments (more-fragments flag or a fragment offset).
const FRAGMENTS: &str = "ip[6:2] & 0x3fff != 0";

/// Turns off the veth's segmentation offloads (and GRO), so that a capture
/// on it sees the datagrams as a NIC without offloads would put them on
/// the wire.
fn wire_like(ns: &Netns, dev: &str) {
    ns.exec(&format!(
        "ethtool -K {dev} tso off gso off gro off tx-udp-segmentation off"
    ));
}

/// The two labs. Fields drop in order: the taptun processes stop before
/// their namespaces go.
struct Labs {
    gw_a_taptun: Peer,
    gw_b_taptun: Peer,
    host_a: Netns,
    gw_a: Netns,
    _gw_b: Netns,
    host_b: Netns,
    dir: TempDir,
}

impl Labs {
    /// Builds the topology, starts taptun on both gateways (gwA learns its
    /// peer, gwB is given gwA's address; each with its extra flags), runs
    /// the documented bridge recipe on both, and waits until hostA pings
    /// hostB.
    fn new(a_extra: &[&str], b_extra: &[&str]) -> Labs {
        let host_a = Netns::new("ha");
        let gw_a = Netns::new("ga");
        let gw_b = Netns::new("gb");
        let host_b = Netns::new("hb");
        let dir = TempDir::new("taptun-mtu-");
        veth(&host_a, "eth0", &gw_a, "lan0");
        veth(&gw_a, "u0", &gw_b, "u0");
        veth(&gw_b, "lan0", &host_b, "eth0");
        gw_a.exec(&format!("ip addr add {UNDERLAY_A}/24 dev u0"));
        gw_b.exec(&format!("ip addr add {UNDERLAY_B}/24 dev u0"));
        wire_like(&gw_a, "u0");
        wire_like(&gw_b, "u0");
        host_a.exec(&format!("ip addr add {HOST_A}/24 dev eth0"));
        host_b.exec(&format!("ip addr add {HOST_B}/24 dev eth0"));

        let (gw_a_taptun, gw_b_taptun) = start_bare_peers(&gw_a, &gw_b, &dir, a_extra, b_extra);
        for gw in [&gw_a, &gw_b] {
            gw.exec(&format!(
                "TAPTUN_STATE_DIR={}/state sh {SCRIPTS}/l2_bridge_up.sh tap0 lan0",
                dir.display()
            ));
            let mtus = gw
                .exec("cat /sys/class/net/lan0/mtu /sys/class/net/tap0/mtu /sys/class/net/br0/mtu");
            assert_eq!(
                mtus.split_whitespace().collect::<Vec<_>>(),
                ["1500", "1500", "1500"],
                "lan0, tap0 and br0 MTUs after l2_bridge_up.sh"
            );
        }
        let labs = Labs {
            gw_a_taptun,
            gw_b_taptun,
            host_a,
            gw_a,
            _gw_b: gw_b,
            host_b,
            dir,
        };
        assert!(
            labs.host_a.ping_until(HOST_B, Duration::from_secs(15)),
            "hostA never reached hostB through the bridged tunnel:\n{}\n{}",
            labs.gw_a_taptun.log_text(),
            labs.gw_b_taptun.log_text()
        );
        // taptun re-reads its TAP's MTU about once a second: give both a
        // few seconds to follow the script's change (a full-size ping
        // crosses each way). Not a check: each test's own says what fails.
        let full = |from: &Netns, to: &str| {
            from.exec_out(&format!("ping -M do -s 1472 -c 1 -W 1 {to}"))
                .status
                .success()
        };
        until(Duration::from_secs(5), Duration::ZERO, || {
            full(&labs.host_a, HOST_B) && full(&labs.host_b, HOST_A)
        });
        labs
    }

    /// Both taptun logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "gwA:\n{}\ngwB:\n{}",
            self.gw_a_taptun.log_text(),
            self.gw_b_taptun.log_text()
        )
    }
}

/// A tcpdump running in a namespace, writing what it sees to a file.
struct Capture {
    process: Background,
    out: PathBuf,
    err: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i dev -n -l <flags> <filter>` in `ns` and waits (at
    /// most 10 s) until it listens.
    fn start(ns: &Netns, dir: &std::path::Path, dev: &str, flags: &str, filter: &str) -> Capture {
        let name = unique("cap");
        let out = dir.join(format!("{name}.txt"));
        let err = dir.join(format!("{name}.err"));
        let process = Background::spawn(
            ns.command("sh")
                .arg("-c")
                .arg(format!(
                    "exec timeout 120 tcpdump -i {dev} -n -l -B 16384 {flags} '{filter}' > {} 2> {}",
                    out.display(),
                    err.display()
                ))
                .stdin(Stdio::null()),
        );
        let mut cap = Capture { process, out, err };
        let listening = until(Duration::from_secs(10), POLL, || {
            std::fs::read_to_string(&cap.err)
                .unwrap_or_default()
                .contains("listening on")
        });
        if !listening {
            let err = std::fs::read_to_string(&cap.err).unwrap_or_default();
            cap.process.stop(Duration::from_secs(1));
            panic!("tcpdump on {dev} never listened: {err}");
        }
        cap
    }

    /// Stops tcpdump (SIGTERM: it writes out what it has) and returns its output.
    /// It first lets tcpdump write out what the kernel has queued for it:
    /// the output stops growing for 300 ms (at most 3 s).
    fn finish(mut self) -> String {
        let size = || std::fs::metadata(&self.out).map(|m| m.len()).unwrap_or(0);
        let mut last = size();
        until(Duration::from_secs(3), Duration::from_millis(300), || {
            let now = size();
            std::mem::replace(&mut last, now) == now
        });
        self.process.stop(Duration::from_secs(5));
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        assert!(
            err.lines()
                .any(|l| l.trim() == "0 packets dropped by kernel"),
            "tcpdump lost packets: {err}"
        );
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

/// Pings `to` from `from` `count` times with `size` bytes of payload and
/// the don't-fragment bit; panics unless every one is answered.
fn ping_df(from: &Netns, to: &str, size: u32, count: u32, logs: &dyn Fn() -> String) {
    let out = from.exec_out(&format!("ping -M do -s {size} -c {count} -i 0.2 -W 2 {to}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{count} packets transmitted, {count} received")),
        "ping -M do -s {size} {to}: not every ping answered:\n{text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
}

/// Sends `count` numbered, checksummed UDP datagrams of `size` bytes from
/// `from` to `to_ip`:`port` in `to`, 2 ms apart; returns (distinct intact
/// datagrams received, corrupt, duplicated).
fn udp_seq(
    from: &Netns,
    to: &Netns,
    to_ip: &str,
    port: u16,
    count: usize,
    size: usize,
) -> (usize, usize, usize) {
    udp_count(
        UDP_SEQ,
        30,
        from,
        &format!("{to_ip} {port} {count} {size} 2"),
        to,
        &format!("{to_ip} {port} {count} {size}"),
    )
}

/// Sends `mb` megabytes of random data over TCP from `from` to
/// `to_ip`:`port` in `to` and compares SHA-256 at both ends. Bounded: 20 s
/// per side (8 MB take well under a second when nothing stalls).
fn tcp_transfer_ns(
    dir: &std::path::Path,
    from: &Netns,
    to: &Netns,
    to_ip: &str,
    port: u16,
    mb: usize,
    logs: &dyn Fn() -> String,
) {
    let data = dir.join(format!("data{port}"));
    sh(&format!(
        "head -c {mb}000000 /dev/urandom > {}",
        data.display()
    ));
    let want = sh(&format!("sha256sum < {}", data.display()));
    let got = dir.join(format!("got{port}"));
    let mut server = Background::spawn(to.command("sh").arg("-c").arg(format!(
        "timeout 20 socat -u TCP-LISTEN:{port},reuseaddr - | sha256sum > {}",
        got.display()
    )));
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let sent = from.exec_out(&format!(
        "timeout 20 socat -u FILE:{} TCP:{to_ip}:{port},retry=20,interval=0.2",
        data.display()
    ));
    assert!(
        sent.status.success(),
        "TCP {mb} MB to {to_ip}:{port} failed or took over 20 s ({}): {}\n{}",
        sent.status,
        String::from_utf8_lossy(&sent.stderr),
        logs()
    );
    server.finish(Duration::from_secs(25), "receiver");
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        want,
        "data corrupted in the tunnel"
    );
    eprintln!("TCP {mb} MB to {to_ip}: {:?}", start.elapsed());
}

/// The number of packets in a `tcpdump -q` capture: its non-empty lines
/// (tcpdump ends its output with an empty line).
fn packets(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

/// The MSS options in a `tcpdump -v` capture of SYNs.
fn mss_values(text: &str) -> Vec<u32> {
    text.split("mss ")
        .skip(1)
        .filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

/// The UDP payload lengths in a `tcpdump -q` capture:
/// "IP 192.0.2.2.9123 > 192.0.2.1.9123: UDP, length 1458".
fn udp_lengths(text: &str) -> Vec<usize> {
    text.lines()
        .filter_map(|l| l.rsplit("length ").next()?.trim().parse().ok())
        .collect()
}

// ---- full-size frames between the bridged labs ----

fn bridged_ping(b_extra: &[&str]) {
    let labs = Labs::new(&[], b_extra);
    let logs = || labs.logs();
    let frags = Capture::start(&labs.gw_a, &labs.dir, "u0", "-q", FRAGMENTS);
    ping_df(&labs.host_a, HOST_B, 1472, 5, &logs);
    ping_df(&labs.host_b, HOST_A, 1472, 5, &logs);
    // A 1514-byte frame sealed is a 1554-byte datagram: the underlay
    // carries it in fragments, both ways (the capture sees both).
    let seen = frags.finish();
    assert!(
        packets(&seen) >= 20,
        "full-size pings crossed, but not as fragmented datagrams?\n{seen}"
    );
}

fn bridged_udp(b_extra: &[&str]) {
    let labs = Labs::new(&[], b_extra);
    for (from, to, to_ip, port) in [
        (&labs.host_a, &labs.host_b, HOST_B, 7101),
        (&labs.host_b, &labs.host_a, HOST_A, 7102),
    ] {
        let got = udp_seq(from, to, to_ip, port, 200, 1472);
        assert_eq!(
            got,
            (200, 0, 0),
            "1472-byte UDP to {to_ip}: (received, corrupt, duplicated) of 200\n{}",
            labs.logs()
        );
    }
}

fn bridged_tcp(b_extra: &[&str]) {
    let labs = Labs::new(&[], b_extra);
    let logs = || labs.logs();
    let frags = Capture::start(&labs.gw_a, &labs.dir, "u0", "-q", FRAGMENTS);
    // The SYN and SYN-ACK each host receives from the other, as it sees them.
    let syn = "tcp[tcpflags] & tcp-syn != 0 and src host";
    let syn_at_b = Capture::start(
        &labs.host_b,
        &labs.dir,
        "eth0",
        "-v",
        &format!("{syn} {HOST_A}"),
    );
    let syn_at_a = Capture::start(
        &labs.host_a,
        &labs.dir,
        "eth0",
        "-v",
        &format!("{syn} {HOST_B}"),
    );
    tcp_transfer_ns(
        &labs.dir,
        &labs.host_a,
        &labs.host_b,
        HOST_B,
        5101,
        8,
        &logs,
    );
    tcp_transfer_ns(
        &labs.dir,
        &labs.host_b,
        &labs.host_a,
        HOST_A,
        5102,
        8,
        &logs,
    );
    let (frags, at_b, at_a) = (frags.finish(), syn_at_b.finish(), syn_at_a.finish());
    assert_eq!(
        packets(&frags),
        0,
        "IP fragments on the underlay during TCP: segments not clamped to one datagram\n{frags}"
    );
    for (host, text) in [("hostB", &at_b), ("hostA", &at_a)] {
        let mss = mss_values(text);
        // Each host receives one SYN (its server side) and one SYN-ACK
        // (its client side), and more only if a SYN was retransmitted.
        assert!(
            mss.len() >= 2,
            "{host} saw no SYN/SYN-ACK with MSS:\n{text}"
        );
        assert!(
            mss.iter().all(|&m| m <= MSS_MAX),
            "{host} received MSS {mss:?}, not clamped to {MSS_MAX}:\n{text}"
        );
    }
}

#[test]
fn e2e_bridged_labs_ping_1472_df_both_ways() {
    require_e2e!();
    bridged_ping(&[]);
}

#[test]
fn e2e_bridged_labs_ping_1472_df_both_ways_no_offload() {
    require_e2e!();
    bridged_ping(&["--no-offload"]);
}

#[test]
fn e2e_bridged_labs_udp_1472_all_intact_once() {
    require_e2e!();
    bridged_udp(&[]);
}

#[test]
fn e2e_bridged_labs_udp_1472_all_intact_once_no_offload() {
    require_e2e!();
    bridged_udp(&["--no-offload"]);
}

#[test]
fn e2e_bridged_labs_tcp_mss_clamped_no_fragments() {
    require_e2e!();
    bridged_tcp(&[]);
}

#[test]
fn e2e_bridged_labs_tcp_mss_clamped_no_fragments_no_offload() {
    require_e2e!();
    bridged_tcp(&["--no-offload"]);
}

// ---- no bridge: the TAPs addressed, as Pair does ----

#[test]
fn e2e_jumbo_tap_mtu_9000_over_1500_underlay() {
    require_e2e!();
    let p = Pair::new();
    let (a, b) = p.peers(&["--mtu", "9000"], &["--mtu", "9000"]);
    for ns in [&p.a, &p.b] {
        assert_eq!(ns.exec("cat /sys/class/net/tap0/mtu").trim(), "9000");
    }
    assert!(p.b.ping_until(TAP_A, Duration::from_secs(10)), "no ping");
    let logs = || format!("A:\n{}\nB:\n{}", a.log_text(), b.log_text());
    ping_df(&p.a, TAP_B, 8000, 3, &logs);
    ping_df(&p.b, TAP_A, 8000, 3, &logs);
}

#[test]
fn e2e_default_mtu_datagrams_fit_1500_underlay() {
    require_e2e!();
    // What a tinytaptunnel peer sees at the default MTU: nothing changes,
    // every datagram fits one 1500-byte IPv4 packet.
    let p = Pair::new();
    wire_like(&p.a, "u0");
    wire_like(&p.b, "u0");
    let (a, b) = p.peers(&[], &[]);
    assert!(p.b.ping_until(TAP_A, Duration::from_secs(10)), "no ping");
    let logs = || format!("A:\n{}\nB:\n{}", a.log_text(), b.log_text());
    let dgrams = Capture::start(&p.a, &p.dir, "u0", "-q", &format!("udp port {PORT}"));
    let frags = Capture::start(&p.a, &p.dir, "u0", "-q", FRAGMENTS);
    let syns = Capture::start(&p.a, &p.dir, "tap0", "-v", "tcp[tcpflags] & tcp-syn != 0");
    ping_df(&p.a, TAP_B, 1372, 3, &logs);
    ping_df(&p.b, TAP_A, 1372, 3, &logs);
    tcp_transfer_ns(&p.dir, &p.b, &p.a, TAP_A, 5201, 8, &logs);
    tcp_transfer_ns(&p.dir, &p.a, &p.b, TAP_B, 5202, 8, &logs);
    let (dgrams, frags, syns) = (dgrams.finish(), frags.finish(), syns.finish());
    // At a 1418-byte TAP MTU the hosts' own MSS (1418 - 40) already fits.
    let mss = mss_values(&syns);
    assert!(mss.len() >= 4, "not every SYN/SYN-ACK seen:\n{syns}");
    assert!(mss.iter().all(|&m| m == MSS_MAX), "MSS {mss:?}:\n{syns}");
    assert_eq!(packets(&frags), 0, "IP fragments on the underlay:\n{frags}");
    let lens = udp_lengths(&dgrams);
    assert!(
        lens.len() > 5000,
        "capture too small: {} datagrams",
        lens.len()
    );
    let max = *lens.iter().max().unwrap();
    assert!(
        max <= UDP_MAX,
        "datagram of {max} bytes exceeds the 1500-byte underlay"
    );
    // Full-size frames were sent (1372-byte pings: 1454-byte datagrams).
    assert!(max >= 1454, "largest datagram only {max} bytes");
}
