//! End-to-end: the confidential mode (`--cipher`, a Noise NNpsk0 handshake
//! and counter-nonce transport datagrams). Data crosses intact in both
//! ciphers, with and without offloads; a capture of the underlay holds none
//! of a known plaintext (and does hold it without `--cipher`, so the check
//! can fail); captured datagrams (the handshake's and transport ones)
//! replayed, from the attacker's address and the peer's, deliver nothing
//! twice, are refused by the session's counter window or as handshake
//! messages, and get no second response; a restarted peer makes a new
//! handshake (new receiver indices on the wire) and answers within a
//! second; and a peer in the other mode is named once on each side, with
//! nothing delivered.

mod common;
use common::*;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const AES: &str = "aes-256-gcm";
const CHACHA: &str = "chacha20-poly1305";

/// The python3 helpers of these tests (plaintext pattern, pcap scan, replay).
const TOOLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/cipher_tools.py");

/// `--cipher C` when `cipher` names one; nothing for the HMAC wire.
fn cipher_args(cipher: Option<&str>) -> Vec<&str> {
    cipher.map_or(vec![], |c| vec!["--cipher", c])
}

/// `extra` followed by `--status-socket SOCK`.
fn with_sock<'a>(extra: &[&'a str], sock: &'a Path) -> Vec<&'a str> {
    let mut v = extra.to_vec();
    v.extend(["--status-socket", sock.to_str().unwrap()]);
    v
}

/// `:PORT [PEER] -i tap0 -a TAP_IP/24` + extra.
fn args(tap_ip: &str, peer: Option<&str>, extra: &[&str]) -> Vec<String> {
    let mut v = vec![format!(":{PORT}")];
    v.extend(peer.map(str::to_string));
    v.extend([
        "-i".into(),
        "tap0".into(),
        "-a".into(),
        format!("{tap_ip}/24"),
    ]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The string after `"key":` in a flat JSON object.
fn json_str(json: &str, key: &str) -> String {
    let pat = format!("\"{key}\":\"");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no string {key} in {json}"))
        + pat.len();
    json[at..].split('"').next().unwrap().to_string()
}

/// How many lines of `log` contain `needle`.
fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Frames received, from the peer's last stats line ("rx N frames").
fn rx_frames(peer: &Peer) -> u64 {
    let log = peer.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("drops:"))
        .expect("a stats line");
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(3)
        .find(|w| w[0] == "rx" && w[2] == "frames")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or_else(|| panic!("no rx frames in {line}"))
}

/// Stops a peer, which must exit 0 having refused nothing a healthy
/// tunnel never refuses.
fn stop_clean(peer: &mut Peer) {
    let (code, _) = peer.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", peer.log_text());
    let log = peer.log_text();
    // Either wire's refusals (stale and future are the HMAC wire's; a
    // refused handshake message, the Noise wire's).
    for zero in [
        "bad_mac",
        "stale",
        "future",
        "replay",
        "unknown_session",
        "wrong_mode",
        "handshake",
    ] {
        assert_eq!(peer.counter(zero), Some(0), "{zero}:\n{log}");
    }
    assert!(log.contains("tap errors 0"), "no tap errors 0 in:\n{log}");
}

/// Starts `python3 cipher_tools.py ARGS` in `ns`, in the background; with
/// `ready`, waits for its first line to be "ready".
fn tool(ns: &Netns, args: &str, ready: bool) -> Background {
    let mut b = Background::spawn(python_tool(ns, TOOLS, 90, args).stdout(if ready {
        Stdio::piped()
    } else {
        Stdio::inherit()
    }));
    if ready {
        let mut line = String::new();
        BufReader::new(b.child().stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "{args}: did not start");
    }
    b
}

/// tcpdump on `ns`'s underlay (u0), whole datagrams of the tunnel's port to
/// a pcap file, packet-buffered; returns once a ping from `pinger` to
/// `target` through the tunnel shows in the file.
fn pcap(ns: &Netns, file: &Path, pinger: &Netns, target: &str) -> Background {
    let tcpdump = Background::spawn(
        ns.command("sh")
            .arg("-c")
            .arg(format!(
                "exec timeout 90 tcpdump -i u0 -n --immediate-mode -U -s 0 -B 16384 -w {} udp port {PORT} 2>/dev/null",
                file.display()
            ))
            .stdin(Stdio::null()),
    );
    // A pcap file is a 24-byte header, then the records.
    let size = || fs::metadata(file).map_or(0, |m| m.len());
    assert!(
        until(Duration::from_secs(10), Duration::ZERO, || {
            let seen = size() > 24;
            if !seen {
                let _ = pinger.exec_out(&format!("ping -c 1 -W 1 {target}"));
            }
            seen
        }),
        "tcpdump never saw a datagram"
    );
    tcpdump
}

/// Stops a capture started by [`pcap`] once its file has stopped growing
/// (for 500 ms; at most 5 s), so that nothing still on its way is lost.
fn pcap_stop(mut tcpdump: Background, file: &Path) {
    let size = || fs::metadata(file).map_or(0, |m| m.len());
    let mut last = (size(), Instant::now());
    until(Duration::from_secs(5), POLL, || {
        let now = size();
        if now != last.0 {
            last = (now, Instant::now());
        }
        last.1.elapsed() >= Duration::from_millis(500)
    });
    // SIGTERM: tcpdump writes out what it holds.
    tcpdump.stop(Duration::from_secs(5));
}

/// Ping, then 20 MB each way with SHA-256 compared; both sides of the
/// given cipher, then again with B restarted with `--no-offload`.
fn transfers(cipher: &str, ports: [u16; 4]) {
    let p = Pair::new();
    let (sa, sb) = (p.dir.join("a.sock"), p.dir.join("b.sock"));
    let c = cipher_args(Some(cipher));
    let (mut a, mut b) = p.peers(&with_sock(&c, &sa), &with_sock(&c, &sb));
    for (i, no_offload) in [false, true].into_iter().enumerate() {
        let started = Instant::now();
        assert!(
            p.b.ping_until(TAP_A, Duration::from_secs(5)),
            "{cipher}: no ping:\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
        assert!(p.a.ping(TAP_B, 2), "{cipher}: A cannot ping B");
        for (sock, offload) in [(&sa, true), (&sb, !no_offload)] {
            let j = status_json(sock);
            assert_eq!(json_str(&j, "cipher"), cipher, "{j}");
            assert!(j.contains(&format!("\"offload\":{offload}")), "{j}");
        }
        tcp_transfer(&p, &p.b, &p.a, TAP_A, ports[2 * i], 20);
        tcp_transfer(&p, &p.a, &p.b, TAP_B, ports[2 * i + 1], 20);
        let j = status_json(&sa);
        assert!(json_num(&j, "rx_frames") > 10_000.0, "{j}");
        eprintln!(
            "{cipher}, B offloads {}: ping + 2 x 20 MB in {:.1?}",
            if no_offload { "off" } else { "on" },
            started.elapsed()
        );
        stop_clean(&mut b);
        if !no_offload {
            // Again, B without offloads (A keeps them): same wire.
            let mut extra = with_sock(&c, &sb);
            extra.push("--no-offload");
            let k = p.dir.join("k.b64");
            b = Peer::start(&p.b, &p.dir, &k, &strs(&b_args(&extra)));
            assert!(b.log_text().contains("offloads off"), "{}", b.log_text());
        }
    }
    stop_clean(&mut a);
}

#[test]
fn e2e_cipher_aes_ping_and_20mb_both_ways_with_and_without_offload() {
    require_e2e!();
    transfers(AES, [5101, 5102, 5103, 5104]);
}

#[test]
fn e2e_cipher_chacha_ping_and_20mb_both_ways_with_and_without_offload() {
    require_e2e!();
    transfers(CHACHA, [5201, 5202, 5203, 5204]);
}

/// Sends the known 64-byte pattern `n` times each way between the TAP
/// addresses while tcpdump captures A's underlay; returns the scan of the
/// capture ({"packets", "payload", "leaks", "hits"}) and how many patterns
/// each side received.
fn pattern_through(cipher: Option<&str>, n: usize) -> (String, usize, usize) {
    let p = Pair::new();
    // Datagrams on the wire one by one, not as GSO super-packets.
    for ns in [&p.a, &p.b] {
        ns.exec("ethtool -K u0 tx-udp-segmentation off");
    }
    let c = cipher_args(cipher);
    let (mut a, mut b) = p.peers(&c, &c);
    assert!(
        p.b.ping_until(TAP_A, Duration::from_secs(5)),
        "{cipher:?}: tunnel not up"
    );
    assert!(p.a.ping(TAP_B, 1));
    let file = p.dir.join("cap.pcap");
    let cap = pcap(&p.a, &file, &p.b, TAP_A);
    let mut got = Vec::new();
    for (from, to, to_ip, port) in [(&p.b, &p.a, TAP_A, 7101), (&p.a, &p.b, TAP_B, 7102)] {
        let out = p.dir.join(format!("sink{port}.json"));
        let mut sink = tool(to, &format!("sink {to_ip} {port} {}", out.display()), true);
        from.exec(&format!(
            "timeout 30 python3 {TOOLS} send {to_ip} {port} {n}"
        ));
        sink.finish(Duration::from_secs(10), "sink");
        let counts = fs::read_to_string(&out).unwrap();
        got.push(json_num(&counts, "pattern") as usize);
    }
    pcap_stop(cap, &file);
    let scan = sh(&format!("python3 {TOOLS} scan {} {PORT}", file.display()));
    stop_clean(&mut a);
    stop_clean(&mut b);
    (scan, got[0], got[1])
}

#[test]
fn e2e_cipher_capture_holds_no_plaintext_and_does_without_cipher() {
    require_e2e!();
    let n = 200;
    for cipher in [Some(AES), Some(CHACHA), None] {
        let (scan, to_a, to_b) = pattern_through(cipher, n);
        eprintln!("{cipher:?}: {scan} (A got {to_a}, B got {to_b} of {n})");
        // The pattern really crossed the tunnel, both ways...
        assert!(
            to_a * 10 >= n * 9 && to_b * 10 >= n * 9,
            "{cipher:?}: only {to_a} and {to_b} of {n} patterns arrived"
        );
        let (packets, payload, leaks, hits) = (
            json_num(&scan, "packets") as usize,
            json_num(&scan, "payload") as usize,
            json_num(&scan, "leaks") as usize,
            json_num(&scan, "hits") as usize,
        );
        // ... and the capture holds its datagrams.
        assert!(
            packets >= to_a + to_b && payload >= (to_a + to_b) * 64,
            "{cipher:?}: capture too small: {scan}"
        );
        match cipher {
            // Not one 16-byte stretch of the plaintext on the wire.
            Some(c) => assert_eq!((leaks, hits), (0, 0), "{c}: plaintext on the wire: {scan}"),
            // The HMAC wire is readable: the same check sees every copy.
            None => assert!(
                hits >= to_a + to_b && leaks >= to_a + to_b,
                "HMAC mode: the scan missed the plaintext: {scan}"
            ),
        }
    }
}

/// The attacker X on the hub captures every datagram B sends A in
/// `cipher` mode, from before the peers start (B's initiation, then its
/// transport datagrams: keepalives and `n` messages), and sends each again
/// as it is: from its own address and with B's spoofed, at once and 1.2 s
/// later. Nothing is delivered twice: every message arrives once, A's
/// rx_frames grows by the messages alone, every replayed transport copy
/// is refused by the session's counter window (`replay`) and every
/// replayed initiation as `handshake`; A answers each of B's initiations
/// once and no replayed one (its responses, type 2, counted on the wire by
/// X); A's peer never moves.
fn replayed(cipher: &str) {
    let lan = HubLan::new("taptun-cipher-");
    let c = cipher_args(Some(cipher));
    let n = 200;
    let (ready, report) = (lan.path("ready"), lan.path("report.json"));
    let mut attacker = tool(
        &lan.x,
        &format!("replay u0 {UNDERLAY_A} {PORT} {UNDERLAY_B} {ready} {report} {n}"),
        false,
    );
    assert!(
        until(Duration::from_secs(10), POLL, || Path::new(&ready).exists()),
        "{ready} never appeared"
    );
    let (mut a, mut b) = lan.peers(&c, &c);
    assert!(
        lan.b.ping_until(TAP_A, Duration::from_secs(10)),
        "{cipher}: tunnel not up"
    );
    let counts = lan.path("counts.json");
    let mut listener = tool(&lan.a, &format!("listen {TAP_A} 7000 {counts}"), true);
    a.stats();
    let rx0 = rx_frames(&a);
    tool(&lan.b, &format!("talk {TAP_A} 7000 {n}"), false)
        .finish(Duration::from_secs(30), "talker");
    attacker.finish(Duration::from_secs(60), "attacker");
    // The genuine peer still gets traffic from A through the tunnel.
    assert!(lan.a.ping(TAP_B, 2), "{cipher}: A no longer reaches B");
    tool(&lan.b, &format!("end {TAP_A} 7000"), false).finish(Duration::from_secs(10), "end");
    listener.finish(Duration::from_secs(10), "listener");
    let counts = fs::read_to_string(&counts).unwrap();
    let report = fs::read_to_string(&report).unwrap();
    // Every message delivered, none twice (a lost one is missing:
    // json_num then panics).
    for i in 0..n {
        let got = json_num(&counts, &format!("msg-{i}"));
        assert_eq!(got, 1.0, "{cipher}: msg-{i} delivered {got} times");
    }
    // What was captured: B's initiation(s) and the transport datagrams of
    // one session, all opaque.
    let num = |k: &str| json_num(&report, k) as u64;
    let (captured, inits, transport) = (num("captured"), num("initiations"), num("transport"));
    assert!(transport >= n as u64 && inits >= 1, "{cipher}: {report}");
    assert_eq!(captured, inits + transport, "{cipher}: {report}");
    assert_eq!(num("sessions"), 1, "{report}");
    assert_eq!(num("leaks"), 0, "{report}");
    let mut sent = 0;
    for phase in ["own", "spoofed", "own_delayed", "spoofed_delayed"] {
        assert_eq!(num(phase), captured, "{phase}: {report}");
        sent += captured;
    }
    // A's responses on the wire: one per genuine initiation, none to a
    // replayed one (from either address).
    let responses = json_strings(&report, "responses");
    assert_eq!(
        responses.len() as u64,
        inits,
        "{cipher}: A answered {} times for {inits} initiations of B's: {report}",
        responses.len()
    );
    assert!(
        responses
            .iter()
            .all(|r| r.starts_with(&format!("{UNDERLAY_B} "))),
        "{cipher}: {report}"
    );
    let (code, _) = a.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    let log = a.log_text();
    // Delivered: the n messages, the END datagrams, two ping replies and
    // a little ARP/IPv6 chatter; not the 4 x `captured` copies.
    let delivered = rx_frames(&a) - rx0;
    assert!(
        delivered >= n as u64 && delivered <= n as u64 + 30,
        "{cipher}: rx_frames grew by {delivered} for {n} messages and {sent} replayed copies:\n{log}"
    );
    let (replay, handshake) = (
        a.counter("replay").unwrap(),
        a.counter("handshake").unwrap(),
    );
    eprintln!(
        "{cipher}: captured {captured} ({inits} initiation(s), {transport} transport), replayed {sent}: replay {replay} handshake {handshake}, A's responses {}, rx_frames +{delivered}",
        responses.len()
    );
    // No session ended during the test: each copy has the reason of its kind.
    assert_eq!(replay, 4 * transport, "replayed transport copies:\n{log}");
    assert_eq!(handshake, 4 * inits, "replayed initiations:\n{log}");
    for zero in ["bad_mac", "unknown_session", "wrong_mode", "no_session"] {
        assert_eq!(a.counter(zero), Some(0), "{zero}:\n{log}");
    }
    assert_peer_stayed_b(&log);
    stop_clean(&mut b);
}

/// The strings of the list after `"key": [` in a JSON object (without
/// quotes or escapes in them).
fn json_strings(json: &str, key: &str) -> Vec<String> {
    let pat = format!("\"{key}\": [");
    let at = json.find(&pat).unwrap_or_else(|| panic!("{key} in {json}")) + pat.len();
    let end = at + json[at..].find(']').unwrap();
    json[at..end]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn e2e_cipher_aes_replayed_datagrams_deliver_nothing_twice() {
    require_e2e!();
    replayed(AES);
}

#[test]
fn e2e_cipher_chacha_replayed_datagrams_deliver_nothing_twice() {
    require_e2e!();
    replayed(CHACHA);
}

#[test]
fn e2e_cipher_restarted_peer_new_session_answers_within_a_second() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let c = cipher_args(Some(CHACHA));
    // B learns its peer; A is configured with B and restarts.
    let b = Peer::start(&p.b, &p.dir, &k, &strs(&args(TAP_B, None, &c)));
    let a_all = args(TAP_A, Some(&format!("{UNDERLAY_B}:{PORT}")), &c);
    let mut a = Peer::start(&p.a, &p.dir, &k, &strs(&a_all));
    // B's underlay capture, to tell the sessions apart by their indices.
    let file = p.dir.join("b.pcap");
    let cap = pcap(&p.b, &file, &p.b, TAP_A);
    assert!(
        p.b.ping_until(TAP_A, Duration::from_secs(5)),
        "tunnel not up"
    );
    assert!(p.b.ping(TAP_A, 2));
    let mut took_all = Vec::new();
    for i in 1..=3 {
        let (ok, took) = restart_a(&p, &mut a, &k, &strs(&a_all), i);
        assert!(
            ok && took <= Duration::from_secs(1),
            "restart {i}: B got no answer from A's TAP within 1 s of A's up line (ok {ok}, {took:?})\nA:\n{}\nB:\n{}",
            a.log_text(),
            b.log_text()
        );
        took_all.push(took);
    }
    eprintln!("chacha20-poly1305 restarts, B's first answer after A's up line: {took_all:?}");
    pcap_stop(cap, &file);
    let indices = sh(&format!(
        "python3 {TOOLS} indices {} {PORT}",
        file.display()
    ));
    // One session per start of A, each a new handshake: 4 receiver
    // indices each way, none seen before (B's stale datagrams to a
    // restarted A carry an index already listed).
    for (from, to) in [(UNDERLAY_A, UNDERLAY_B), (UNDERLAY_B, UNDERLAY_A)] {
        let way = format!("{from} {to} ");
        let n = indices.lines().filter(|l| l.starts_with(&way)).count();
        assert_eq!(
            n, 4,
            "receiver indices {from} -> {to} on the wire:\n{indices}"
        );
    }
    b.stats();
    for zero in [
        "bad_mac",
        "wrong_mode",
        "unknown_session",
        "handshake",
        "replay",
    ] {
        assert_eq!(b.counter(zero), Some(0), "{zero}:\n{}", b.log_text());
    }
}

#[test]
fn e2e_cipher_mismatched_modes_named_once_each_nothing_delivered() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let (sa, sb) = (p.dir.join("a.sock"), p.dir.join("b.sock"));
    // Each side is given the other, so each sends (keepalive at start,
    // then the pings' ARP) and each sees the other's mode.
    let a_all = args(
        TAP_A,
        Some(&format!("{UNDERLAY_B}:{PORT}")),
        &with_sock(&["--cipher", AES], &sa),
    );
    let a = Peer::start(&p.a, &p.dir, &k, &strs(&a_all));
    let b_all = args(
        TAP_B,
        Some(&format!("{UNDERLAY_A}:{PORT}")),
        &with_sock(&[], &sb),
    );
    let b = Peer::start(&p.b, &p.dir, &k, &strs(&b_all));
    let started = Instant::now();
    let a_line = format!(
        "peer at {UNDERLAY_B}:{PORT} sends tinytaptunnel HMAC datagrams (no --cipher), but this side expects confidential datagrams (--cipher {AES}); start both sides with the same --cipher ("
    );
    let b_line = format!(
        "peer at {UNDERLAY_A}:{PORT} sends confidential datagrams (--cipher {AES}), but this side expects tinytaptunnel HMAC datagrams (no --cipher); start both sides with the same --cipher ("
    );
    assert!(!p.b.ping(TAP_A, 3), "a ping crossed between modes");
    assert!(!p.a.ping(TAP_B, 3), "a ping crossed between modes");
    // Each side logs the line as the datagrams arrive, and they have: a
    // fixed 5 s from here, not what the pings left of a budget (which a
    // slow start could bring to nothing).
    let both = until(Duration::from_secs(5), POLL, || {
        a.log_text().contains(&a_line) && b.log_text().contains(&b_line)
    });
    assert!(
        both,
        "no mismatch line on both sides within 5 s of the pings:\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );
    let named = started.elapsed();
    // More of the same for a while: still one line each.
    assert!(!p.b.ping(TAP_A, 5));
    assert!(!p.a.ping(TAP_B, 5));
    let (la, lb) = (a.log_text(), b.log_text());
    assert_eq!(
        lines_with(&la, "start both sides with the same --cipher"),
        1,
        "A:\n{la}"
    );
    assert_eq!(
        lines_with(&lb, "start both sides with the same --cipher"),
        1,
        "B:\n{lb}"
    );
    for (log, line) in [(&la, &a_line), (&lb, &b_line)] {
        let l = log.lines().find(|l| l.contains(line.as_str())).unwrap();
        assert!(l.contains("WARN") && l.ends_with(" dropped)"), "{l}");
        // Not mistaken for a wrong key or junk.
        assert_eq!(lines_with(log, "fail authentication"), 0, "{log}");
    }
    let (ja, jb) = (status_json(&sa), status_json(&sb));
    for (j, mode) in [(&ja, AES), (&jb, "none")] {
        assert_eq!(json_str(j, "cipher"), mode, "{j}");
        assert!(json_num(j, "wrong_mode") >= 1.0, "{j}");
        assert_eq!(json_num(j, "rx_frames"), 0.0, "{j}");
        assert_eq!(json_num(j, "keepalives_rx"), 0.0, "{j}");
        assert!(j.contains("\"peer_clock_offset\":null"), "{j}");
    }
    eprintln!("mismatch named on both sides after {named:?}\nA: {ja}\nB: {jb}");
}
