//! End-to-end: a hostile underlay. An attacker namespace sits on the same
//! link as the two peers (a Linux bridge in hub mode, so it sees every
//! tunnel datagram), captures real datagrams with a packet socket and
//! re-sends them, floods junk, while the genuine peer also roams.

mod common;
use common::*;
use std::fs;
use std::time::{Duration, Instant};

/// The attacker's and the test's traffic tools, in one python3 script.
const TOOLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/attack_tools.py");

/// Starts `python3 tests/tools/attack_tools.py ARGS` in `ns`, in the background.
fn spawn(ns: &Netns, args: &str) -> Background {
    Background::spawn(&mut python_tool(ns, TOOLS, 90, args))
}

/// Datagrams a peer has sent (frames and keepalives), from its last stats line.
fn datagrams_sent(log: &str) -> u64 {
    let line = log.lines().rev().find(|l| l.contains("drops:")).unwrap();
    // "... tx N frames ..., keepalives tx K rx ...": each "tx" precedes a count.
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "tx")
        .map(|w| w[1].trim_end_matches(',').parse::<u64>().unwrap())
        .sum()
}

/// Socket-level drops (receive buffer full) of the UDP socket on PORT in `ns`.
fn kernel_drops(ns: &Netns) -> u64 {
    let port = format!(":{PORT:04X}");
    let text = ns.exec("cat /proc/net/udp /proc/net/udp6");
    text.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&port))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn e2e_captured_datagrams_replayed_deliver_nothing_twice() {
    require_e2e!();
    let lan = HubLan::new("taptun-attack-");
    let max_age = 3.0;
    let (mut a, _b) = lan.peers(&["--max-age", "3"], &[]);
    assert!(
        lan.b.ping_until(TAP_A, Duration::from_secs(10)),
        "tunnel not up"
    );
    let counts = lan.path("counts.json");
    let listener = spawn(&lan.a, &format!("listen {TAP_A} 7000 {counts}"));
    let n = 200;
    let (report, captured) = replay_attack(&lan, spawn, listener, &counts, max_age, n, "");
    let (sent, young, old) = replay_ages(&report, captured, max_age);
    let (code, _) = a.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    let log = a.log_text();
    let replay = a.counter("replay").unwrap();
    let stale = a.counter("stale").unwrap();
    assert_eq!(
        replay + stale,
        sent,
        "every re-sent datagram dropped:\n{log}"
    );
    assert!(
        replay >= young && stale >= old,
        "replay {replay} stale {stale}: young {young} old {old}"
    );
    assert_peer_stayed_b(&log);
    assert_eq!(a.counter("bad_mac"), Some(0), "{log}");
}

#[test]
fn e2e_junk_flood_during_tcp_transfer() {
    require_e2e!();
    let lan = HubLan::new("taptun-attack-");
    let (mut a, b) = lan.peers(&[], &[]);
    assert!(
        lan.b.ping_until(TAP_A, Duration::from_secs(10)),
        "tunnel not up"
    );
    // The window whose drop lines are counted at the end starts here.
    let window = Instant::now();
    let before = a.stats();
    let (short0, bad0, big0) = (
        a.counter("short").unwrap(),
        a.counter("bad_mac").unwrap(),
        a.counter("oversize").unwrap(),
    );
    let drops0 = kernel_drops(&lan.a);

    // Paced: few enough that the receive buffer never overflows, so taptun's
    // counters must equal what was sent, exactly.
    let paced = lan.path("paced.json");
    let mut f = spawn(
        &lan.x,
        &format!("flood {UNDERLAY_A} {PORT} {KEY} {OTHER_KEY} 1 1000 {paced}"),
    );
    f.finish(Duration::from_secs(30), "paced flood");
    let paced = fs::read_to_string(&paced).unwrap();
    let (ps, pb, po) = (
        json_num(&paced, "short") as u64,
        json_num(&paced, "bad_mac") as u64,
        json_num(&paced, "oversize") as u64,
    );
    assert!(po > 0, "the paced flood sent no oversize datagram: {paced}");
    let counted = until(Duration::from_secs(10), Duration::from_millis(100), || {
        a.stats();
        let (s, b, o) = (
            a.counter("short").unwrap() - short0,
            a.counter("bad_mac").unwrap() - bad0,
            a.counter("oversize").unwrap() - big0,
        );
        assert!(
            s <= ps && b <= pb && o <= po,
            "paced junk: sent short {ps} bad_mac {pb} oversize {po}, counted more: short {s} bad_mac {b} oversize {o}"
        );
        (s, b, o) == (ps, pb, po)
    });
    assert!(
        counted,
        "paced junk: sent short {ps} bad_mac {pb} oversize {po}, counted short {} bad_mac {} oversize {}, kernel drops {}",
        a.counter("short").unwrap() - short0,
        a.counter("bad_mac").unwrap() - bad0,
        a.counter("oversize").unwrap() - big0,
        kernel_drops(&lan.a) - drops0
    );

    // Full speed, while a checksummed TCP transfer runs B -> A.
    let data = lan.dir.join("data");
    sh(&format!(
        "head -c 4000000 /dev/urandom > {}",
        data.display()
    ));
    let want = sh(&format!("sha256sum < {}", data.display()));
    let got = lan.dir.join("got.sha");
    let mut server = Background::spawn(lan.a.command("sh").arg("-c").arg(format!(
        "timeout 80 socat -u TCP-LISTEN:5001,reuseaddr - | sha256sum > {}",
        got.display()
    )));
    let b_sent1 = datagrams_sent(&b.stats());
    let (s1, b1, d1) = (
        a.counter("short").unwrap(),
        a.counter("bad_mac").unwrap(),
        kernel_drops(&lan.a),
    );
    let full = lan.path("full.json");
    let mut f = spawn(
        &lan.x,
        &format!("flood {UNDERLAY_A} {PORT} {KEY} {OTHER_KEY} 3 0 {full}"),
    );
    let mut client = Background::spawn(lan.b.command("sh").arg("-c").arg(format!(
        "timeout 80 socat -u FILE:{} TCP:{TAP_A}:5001,retry=50,interval=0.2",
        data.display()
    )));
    f.finish(Duration::from_secs(30), "flood");
    // A stalled transfer is a tunnel bug: say what both ends counted.
    if let Err(why) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.finish(Duration::from_secs(85), "TCP sender")
    })) {
        let last = |p: &Peer| {
            let log = p.stats();
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        panic!(
            "{:?}\nA:\n{}\nB:\n{}\nkernel drops at A: {}",
            why.downcast_ref::<String>(),
            last(&a),
            last(&b),
            kernel_drops(&lan.a)
        );
    }
    server.finish(Duration::from_secs(10), "TCP receiver");
    assert_eq!(
        fs::read_to_string(&got).unwrap(),
        want,
        "transfer corrupted"
    );
    assert!(a.running() && lan.a.has_link("tap0"), "taptun died");
    let full = fs::read_to_string(&full).unwrap();
    let (fs_, fb) = (
        json_num(&full, "short") as u64,
        json_num(&full, "bad_mac") as u64,
    );
    // The receive thread may still be working through its buffer: ask
    // again (SIGUSR1) until every junk datagram is accounted for, for at
    // most 10 s, rather than a fixed pause that a slow machine outlasts.
    let mut log = String::new();
    let (mut cs, mut cb, mut kd) = (0, 0, 0);
    until(Duration::from_secs(10), Duration::from_millis(100), || {
        log = a.stats();
        cs = a.counter("short").unwrap() - s1;
        cb = a.counter("bad_mac").unwrap() - b1;
        kd = kernel_drops(&lan.a) - d1;
        cs + cb + kd >= fs_ + fb
    });
    let window = window.elapsed();
    let genuine = datagrams_sent(&b.stats()) - b_sent1;
    eprintln!(
        "flood: sent short {fs_} bad_mac {fb} in {:.1} s; taptun counted short {cs} bad_mac {cb}; kernel receive-buffer drops {kd}; B sent {genuine} genuine datagrams meanwhile",
        json_num(&full, "seconds")
    );
    // Each junk datagram is counted by taptun by its reason, unless the
    // kernel dropped it first (full receive buffer) and counted that.
    assert!(cs <= fs_ && cb <= fb, "counted more than sent");
    assert!(cs + cb + kd >= fs_ + fb, "junk unaccounted for");
    // The kernel's drops also include genuine datagrams from B, at most as
    // many as B sent meanwhile.
    assert!(
        cs + cb + kd <= fs_ + fb + genuine,
        "more drops than datagrams: genuine {genuine}"
    );
    if kd == 0 {
        assert_eq!((cs, cb), (fs_, fb));
    }
    assert!(fs_ + fb > 1000, "the flood hardly sent anything: {full}");
    // Still alive and forwarding.
    assert!(lan.b.ping(TAP_A, 2), "tunnel broken after the flood");
    // Rate-limited drop logging, what the throttles promise: the debug
    // line for a dropped datagram at most once a second (one receive
    // thread), each warn line at most once a minute for its cause.
    let new = log.get(before.len()..).unwrap_or(&log);
    let (per_second, per_minute): (Vec<&str>, Vec<&str>) = new
        .lines()
        .filter(|l| l.contains("dropped"))
        .partition(|l| l.contains("-byte datagram from "));
    let secs = window.as_secs();
    eprintln!(
        "drop log lines in {window:?}: {} per-datagram (one a second at most), {} warn (one a minute per cause)",
        per_second.len(),
        per_minute.len()
    );
    assert!(
        !per_second.is_empty(),
        "the flood was never logged: the bound below would hold on nothing"
    );
    assert!(
        per_second.len() as u64 <= secs + 1,
        "{} drop lines in {window:?}, throttled to one a second:\n{}",
        per_second.len(),
        per_second.join("\n")
    );
    // The same cause: the same line but for its numbers.
    let cause = |l: &str| -> String {
        let msg = l.split_once("] ").map_or(l, |(_, m)| m);
        msg.chars().filter(|c| !c.is_ascii_digit()).collect()
    };
    for l in &per_minute {
        let n = per_minute.iter().filter(|m| cause(m) == cause(l)).count() as u64;
        assert!(
            n <= secs / 60 + 1,
            "{n} lines in {window:?}, throttled to one a minute:\n{}",
            per_minute.join("\n")
        );
    }
    assert!(!log.contains("peer moved"), "{log}");
}

/// Moves B's underlay address from `from` to `to`, then waits at most
/// `limit` for A to say that its peer moved; returns how long A took.
fn move_b(lan: &HubLan, a: &Peer, b: &Peer, from: &str, to: &str, limit: Duration) -> Duration {
    lan.b.exec(&format!(
        "ip addr del {from}/24 dev u0 && ip addr add {to}/24 dev u0"
    ));
    let moved = Instant::now();
    let line = format!("peer moved from {from}:{PORT} to {to}:{PORT}");
    assert!(
        until(limit, POLL, || a.log_text().contains(&line)),
        "A did not follow B from {from} to {to} within {limit:?}:\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    moved.elapsed()
}

#[test]
fn e2e_peer_roams_mid_transfer() {
    require_e2e!();
    let lan = HubLan::new("taptun-attack-");
    let (a, b) = lan.peers(&["--keepalive", "2"], &["--keepalive", "2"]);
    // The keepalive interval, and a margin.
    let follow = Duration::from_secs(2 + 3);
    assert!(
        lan.a.ping_until(TAP_B, Duration::from_secs(10)),
        "tunnel not up"
    );
    // A slow transfer A -> B (about 6 s), so B only answers with ACKs: once
    // B's address changes, only B's next datagram (a keepalive at the
    // latest) can tell A where B went.
    let got = lan.dir.join("got.sha");
    let want = lan.path("want.sha");
    let mut server = Background::spawn(lan.b.command("sh").arg("-c").arg(format!(
        "timeout 80 socat -u TCP-LISTEN:5002,reuseaddr - | sha256sum > {}",
        got.display()
    )));
    let mut client = spawn(
        &lan.a,
        &format!("trickle {TAP_B} 5002 1200000 20000 0.1 {want}"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let new_b = "192.0.2.3";
    let took = move_b(&lan, &a, &b, UNDERLAY_B, new_b, follow);
    eprintln!("A followed B's new address after {took:?}");
    client.finish(Duration::from_secs(80), "TCP sender");
    server.finish(Duration::from_secs(10), "TCP receiver");
    assert_eq!(
        fs::read_to_string(&got).unwrap(),
        fs::read_to_string(&want).unwrap(),
        "transfer corrupted"
    );
    assert!(lan.a.ping(TAP_B, 2), "no traffic after roaming");

    // Again on an idle tunnel: now only B's keepalive can tell A.
    std::thread::sleep(Duration::from_millis(500));
    let took = move_b(&lan, &a, &b, new_b, "192.0.2.4", follow);
    eprintln!("idle: A followed B's new address after {took:?}");
    assert!(lan.a.ping(TAP_B, 2), "no traffic after the idle roam");
}
