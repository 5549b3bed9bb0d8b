//! End-to-end: what an operator meets in the field. A skewed clock, a
//! wrong key, junk from a stranger, a restarted peer: each must be said
//! once in the log (one warn line per cause per minute) and shown by
//! `taptun status`; and the TAP keeps its MAC across restarts (or the peer
//! is told of a new one at once).

mod common;
use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The address on B's underlay that plays a stranger sending junk.
const STRANGER: &str = "192.0.2.66";

/// Arguments `:PORT [peer] -i tap0 -a tap_ip/24 --status-socket sock` + extra.
fn args(peer: Option<&str>, tap_ip: &str, sock: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![format!(":{PORT}")];
    v.extend(peer.map(str::to_string));
    v.extend(
        [
            "-i",
            "tap0",
            "-a",
            &format!("{tap_ip}/24"),
            "--status-socket",
            sock.to_str().unwrap(),
        ]
        .map(str::to_string),
    );
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn peer_a() -> String {
    format!("{UNDERLAY_A}:{PORT}")
}

fn peer_b() -> String {
    format!("{UNDERLAY_B}:{PORT}")
}

/// `taptun status SOCKET [form]`: exit code, stdout, stderr.
fn status(sock: &Path, form: Option<&str>) -> (i32, String, String) {
    let out = Command::new(TAPTUN)
        .arg("status")
        .arg(sock)
        .args(form)
        .output()
        .expect("run taptun status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `jq -r FILTER` on `json` (which jq must parse); its output, trimmed.
fn jq(json: &str, filter: &str) -> String {
    let mut child = Command::new("jq")
        .args(["-r", filter])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run jq");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "jq {filter:?} failed ({}) on: {json}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn jq_num(json: &str, filter: &str) -> f64 {
    let v = jq(json, filter);
    v.parse()
        .unwrap_or_else(|_| panic!("{filter} is {v:?}, not a number, in {json}"))
}

/// How many lines of `log` contain `needle`.
fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// The TAP's MAC in namespace `ns`, as `ip link` shows it.
fn link_mac(ns: &Netns, dev: &str) -> String {
    let out = ns.exec(&format!("ip -o link show dev {dev}"));
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("no link/ether in {out}"))
        .to_string()
}

/// The seconds in a clock line: "... authentic but 10.0 s ahead of ...".
fn skew_seconds(line: &str) -> f64 {
    let at = line.find("authentic but ").expect("clock line") + "authentic but ".len();
    line[at..]
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in {line}"))
}

#[test]
fn e2e_skewed_clock_is_named_once_per_side() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let (sa, sb) = (p.dir.join("a.sock"), p.dir.join("b.sock"));
    let lib = libfaketime();
    // Each side names the other; B's clock runs 10 s ahead (the monotonic
    // clock, for timers, stays true).
    let a = Peer::start(
        &p.a,
        &p.dir,
        &k,
        &strs(&args(Some(&peer_b()), TAP_A, &sa, &[])),
    );
    let mut b = Peer::spawn_with(
        &p.b,
        &p.dir,
        &[],
        &k,
        &strs(&args(Some(&peer_a()), TAP_B, &sb, &[])),
        &[
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME", "+10s"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    b.wait_up(&p.b);
    // B's start-up keepalive reaches A; A's frames (the pings' ARP) reach B.
    // Nothing crosses either way.
    assert!(!p.a.ping(TAP_B, 2), "a ping crossed despite a 10 s skew");
    assert!(!p.b.ping(TAP_A, 2), "a ping crossed despite a 10 s skew");
    let (ahead, behind) = ("s ahead of this host's clock", "s behind this host's clock");
    // Each side logs the line as the datagrams arrive, and they have: a
    // fixed 5 s from here, not what the pings left of a budget (which a
    // slow start could bring to nothing).
    let both = until(Duration::from_secs(5), POLL, || {
        a.log_text().contains(ahead) && b.log_text().contains(behind)
    });
    assert!(
        both,
        "no clock line on both sides within 5 s of the pings:\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );
    // More of the same for a while: still one line each.
    assert!(!p.a.ping(TAP_B, 5));
    let (la, lb) = (a.log_text(), b.log_text());
    let clock = "are authentic but";
    assert_eq!(lines_with(&la, clock), 1, "A:\n{la}");
    assert_eq!(lines_with(&lb, clock), 1, "B:\n{lb}");
    let line_a = la.lines().find(|l| l.contains(clock)).unwrap();
    let line_b = lb.lines().find(|l| l.contains(clock)).unwrap();
    assert!(
        line_a.contains(ahead) && line_a.contains(&format!("from {}", peer_b())),
        "{line_a}"
    );
    assert!(
        line_b.contains(behind) && line_b.contains(&format!("from {}", peer_a())),
        "{line_b}"
    );
    for line in [line_a, line_b] {
        let s = skew_seconds(line);
        assert!((8.5..=11.5).contains(&s), "{s} s in {line}");
        assert!(
            line.contains("WARN") && line.contains("--max-age 3.0 s") && line.contains("dropped)"),
            "{line}"
        );
    }
    let ja = status_json(&sa);
    let jb = status_json(&sb);
    let (oa, ob) = (
        jq_num(&ja, ".peer_clock_offset"),
        jq_num(&jb, ".peer_clock_offset"),
    );
    assert!((oa - 10.0).abs() <= 1.5, "A's peer_clock_offset {oa}: {ja}");
    assert!((ob + 10.0).abs() <= 1.5, "B's peer_clock_offset {ob}: {jb}");
    for j in [&ja, &jb] {
        assert_eq!(jq_num(j, ".rx_frames"), 0.0, "{j}");
        assert_eq!(jq_num(j, ".keepalives_rx"), 0.0, "{j}");
        assert!(jq_num(j, ".drops.stale + .drops.future") >= 1.0, "{j}");
    }
    assert!(jq_num(&ja, ".drops.future") >= 1.0, "{ja}");
    assert!(jq_num(&jb, ".drops.stale") >= 1.0, "{jb}");
}

/// The JSON members `taptun status --json` promises (docs/operating.md).
const JSON_FIELDS: [&str; 29] = [
    "dev",
    "cipher",
    "time",
    "last_valid",
    "last_valid_age",
    "key_rotations",
    "key_age",
    "local",
    "mac",
    "mtu",
    "clamp_mss",
    "offload",
    "udp_gso",
    "udp_coalesce",
    "uptime",
    "peer_clock_offset",
    "peer",
    "peer_source",
    "tx_frames",
    "tx_bytes",
    "rx_frames",
    "rx_bytes",
    "keepalives_tx",
    "keepalives_rx",
    "send_errors",
    "tap_errors",
    "aqm_marks",
    "queue",
    "drops",
];
const DROP_REASONS: [&str; 14] = [
    "short",
    "truncated",
    "bad_mac",
    "stale",
    "future",
    "replay",
    "no_peer",
    "oversize",
    "unknown_session",
    "wrong_mode",
    "handshake",
    "no_session",
    "ce_not_ect",
    "aqm",
];

/// Pieces of the key that must appear in no output: its base64, the hex
/// of its bytes (both cases), and every 8-byte stretch of that hex.
fn key_pieces(base64: &str) -> Vec<String> {
    let hex = sh(&format!(
        "printf %s '{base64}' | base64 -d | od -An -v -tx1"
    ))
    .split_whitespace()
    .collect::<String>();
    assert_eq!(hex.len(), 64, "{hex}");
    let mut v = vec![
        base64.to_string(),
        base64.trim_end_matches('=').to_string(),
        hex.to_uppercase(),
    ];
    v.extend(
        (0..=hex.len() - 16)
            .step_by(2)
            .map(|i| hex[i..i + 16].to_string()),
    );
    v
}

#[test]
fn e2e_status_text_json_prometheus() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let (sa, sb) = (p.dir.join("a.sock"), p.dir.join("b.sock"));
    // A learns its peer; B is given A.
    let _a = Peer::start(&p.a, &p.dir, &k, &strs(&args(None, TAP_A, &sa, &[])));
    let _b = Peer::start(
        &p.b,
        &p.dir,
        &k,
        &strs(&args(Some(&peer_a()), TAP_B, &sb, &[])),
    );
    assert!(
        p.b.ping_until(TAP_A, Duration::from_secs(5)),
        "tunnel not up"
    );
    let mut outputs = Vec::new();
    for (sock, peer, source, mac_ns) in [
        (&sa, peer_b(), "learned", &p.a),
        (&sb, peer_a(), "configured", &p.b),
    ] {
        let mac = link_mac(mac_ns, "tap0");
        let (code, text, err) = status(sock, None);
        assert_eq!(code, 0, "{err}");
        for want in [
            "interface: tap0".to_string(),
            format!("peer: {peer} ({source})"),
            format!("mac: {mac}"),
            // Idle by the time of the question, or the ping's second.
            "receive queue: ".to_string(),
            "AQM CoDel (target 0.5 ms, interval 5 ms)".to_string(),
        ] {
            assert!(text.contains(&want), "no {want:?} in:\n{text}");
        }
        let json = status_json(sock);
        assert_eq!(json.trim().lines().count(), 1, "one line: {json}");
        let keys = jq(&json, "keys_unsorted | join(\" \")");
        for f in JSON_FIELDS {
            assert!(keys.split(' ').any(|k| k == f), "no {f} in {json}");
        }
        assert_eq!(
            jq(
                &json,
                "[.queue.aqm.target_ms, .queue.aqm.interval_ms] | map(tostring) | join(\" \")"
            ),
            "0.5 5",
            "{json}"
        );
        let drops = jq(&json, ".drops | keys_unsorted | join(\" \")");
        assert_eq!(drops, DROP_REASONS.join(" "), "{json}");
        assert_eq!(
            jq(
                &json,
                "[.dev,.peer,.peer_source,.mac,.local,(.mtu|tostring)] | join(\" \")"
            ),
            // LOCAL ":PORT" binds every address, IPv4 and IPv6.
            format!("tap0 {peer} {source} {mac} [::]:{PORT} 1418"),
            "{json}"
        );
        // Counters and times are numbers; drops too.
        assert_eq!(
            jq(
                &json,
                "[.time,.last_valid,.last_valid_age,.key_age,.uptime,.peer_clock_offset,.key_rotations,.tx_frames,.tx_bytes,.rx_frames,.rx_bytes,.keepalives_tx,.keepalives_rx,.send_errors,.tap_errors,(.drops[])] | all(type == \"number\")"
            ),
            "true",
            "{json}"
        );
        assert_eq!(
            jq(
                &json,
                "[.offload,.udp_gso,.udp_coalesce] | all(type == \"boolean\")"
            ),
            "true",
            "{json}"
        );
        assert!(jq_num(&json, ".last_valid_age") < 5.0, "{json}");
        assert!(jq_num(&json, ".peer_clock_offset").abs() < 1.0, "{json}");
        // Pings add frames received, on both sides.
        let rx0 = jq_num(&json, ".rx_frames");
        let from = if peer == peer_b() { &p.a } else { &p.b };
        let to = if peer == peer_b() { TAP_B } else { TAP_A };
        assert!(from.ping(to, 3), "ping to {to}");
        let json2 = status_json(sock);
        let rx1 = jq_num(&json2, ".rx_frames");
        assert!(rx1 >= rx0 + 3.0, "rx_frames {rx0} -> {rx1}: {json2}");
        assert!(jq_num(&json2, ".rx_bytes") > jq_num(&json, ".rx_bytes"));
        let (code, prom, err) = status(sock, Some("--prometheus"));
        assert_eq!(code, 0, "{err}");
        for want in [
            "taptun_rx_bytes_total{dev=\"tap0\"} ",
            "taptun_drops_total{dev=\"tap0\",reason=\"bad_mac\"} 0",
            "# TYPE taptun_rx_bytes_total counter",
        ] {
            assert!(prom.contains(want), "no {want:?} in:\n{prom}");
        }
        let rx_bytes = prom
            .lines()
            .find_map(|l| l.strip_prefix("taptun_rx_bytes_total{dev=\"tap0\"} "))
            .unwrap();
        assert!(
            rx_bytes.parse::<u64>().unwrap() >= jq_num(&json2, ".rx_bytes") as u64,
            "{prom}"
        );
        outputs.extend([text, json, json2, prom]);
    }
    // No key material in any form.
    let pieces = key_pieces(KEY);
    for out in &outputs {
        for piece in &pieces {
            assert!(
                !out.to_lowercase().contains(&piece.to_lowercase()),
                "key material {piece} in:\n{out}"
            );
        }
    }
    // Nothing answers: exit 1, one line on stderr, nothing on stdout.
    for target in [
        "/nonexistent.sock",
        p.dir.join("none.sock").to_str().unwrap(),
    ] {
        let (code, out, err) = status(Path::new(target), Some("--json"));
        assert_eq!(code, 1, "{target}: {out}{err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(target), "{err}");
    }
}

/// `taptun status ARGS...`: exit code, stdout, stderr.
fn status_of(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(TAPTUN)
        .arg("status")
        .args(args)
        .output()
        .expect("run taptun status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn e2e_status_lists_every_tunnel() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    // Names of their own: both sockets land in /run/taptun (DEV.sock),
    // where other tunnels of the host may be too (or stale sockets).
    let (da, db) = (unique("tla"), unique("tlb"));
    let tap = |ip: &str| format!("{ip}/24");
    let (ta, tb) = (tap(TAP_A), tap(TAP_B));
    let port = format!(":{PORT}");
    let _a = Peer::start(&p.a, &p.dir, &k, &[&port, "-i", &da, "-a", &ta]);
    let _b = Peer::start(&p.b, &p.dir, &k, &[&port, &peer_a(), "-i", &db, "-a", &tb]);
    assert!(
        p.b.ping_until(TAP_A, Duration::from_secs(5)),
        "tunnel not up"
    );
    // No name: every tunnel, each report headed by its interface line,
    // a blank line between reports.
    let (code, text, err) = status_of(&[]);
    assert_eq!(code, 0, "{err}");
    for d in [&da, &db] {
        let head = format!("interface: {d}\n");
        assert_eq!(text.matches(&head).count(), 1, "{head:?} once in:\n{text}");
    }
    assert!(
        text.contains("\n\ninterface: "),
        "no blank line between reports:\n{text}"
    );
    // JSON: one object, {"tunnels":[...]}, each tunnel's object in it.
    let (code, json, err) = status_of(&["--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json.trim().lines().count(), 1, "one line: {json}");
    let devs = jq(&json, "[.tunnels[].dev] | join(\" \")");
    for d in [&da, &db] {
        assert!(devs.split(' ').any(|x| x == d.as_str()), "no {d} in {json}");
        let peer = jq(
            &json,
            &format!(".tunnels[] | select(.dev == \"{d}\") | .peer"),
        );
        let want = if *d == da { peer_b() } else { peer_a() };
        assert_eq!(peer, want, "{json}");
    }
    // Prometheus: every series of both, each HELP and TYPE line once.
    let (code, prom, err) = status_of(&["--prometheus"]);
    assert_eq!(code, 0, "{err}");
    for d in [&da, &db] {
        let series = format!("taptun_rx_bytes_total{{dev=\"{d}\"}} ");
        assert!(prom.contains(&series), "no {series:?} in:\n{prom}");
    }
    let meta: Vec<&str> = prom.lines().filter(|l| l.starts_with("# ")).collect();
    for m in &meta {
        assert_eq!(
            prom.lines().filter(|l| l == m).count(),
            1,
            "{m:?} twice:\n{prom}"
        );
    }
    // A folder: every socket in it. A stale socket (its tunnel crashed)
    // is skipped with a note on stderr; only when none answers, exit 1.
    let run = p.dir.join("run");
    std::fs::create_dir(&run).unwrap();
    sh(&format!(
        "python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"{}\")'",
        run.join("gone.sock").display()
    ));
    std::fs::write(run.join("notes.txt"), "not a socket").unwrap();
    let dc = unique("tlc");
    let c_sock = run.join("c.sock");
    let mut c = Peer::start(
        &p.a,
        &p.dir,
        &k,
        &[
            &format!(":{}", PORT + 1),
            "-i",
            &dc,
            "--status-socket",
            c_sock.to_str().unwrap(),
        ],
    );
    let folder = run.to_str().unwrap();
    let (code, text, err) = status_of(&[folder]);
    assert_eq!(code, 0, "{err}");
    assert!(text.starts_with(&format!("interface: {dc}\n")), "{text}");
    assert_eq!(text.matches("interface: ").count(), 1, "{text}");
    assert_eq!(err.lines().count(), 1, "one note: {err}");
    assert!(
        err.contains("gone.sock") && err.contains("skipped"),
        "{err}"
    );
    let (code, json, err) = status_of(&[folder, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(jq(&json, ".tunnels | map(.dev) | join(\" \")"), dc);
    c.stop(Duration::from_secs(5));
    let (code, out, err) = status_of(&[folder]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 2, "the note and the verdict: {err}");
    assert!(err.contains("none of the 1 status sockets"), "{err}");
}

/// Sends random 200-byte datagrams from `src` to `dst:port` for `secs`
/// seconds at about `pps` a second; prints how many.
const JUNK: &str = "
import os, socket, sys, time
src, dst, port, secs, pps = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
start, n = time.time(), 0
while time.time() < start + secs:
    s.sendto(os.urandom(200), (dst, port))
    n += 1
    delay = start + n / pps - time.time()
    if delay > 0:
        time.sleep(delay)
print(n)
";

#[test]
fn e2e_junk_and_a_wrong_key_each_said_once() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let other = p.key("other.b64", OTHER_KEY);
    let (sa, sb) = (p.dir.join("a.sock"), p.dir.join("b.sock"));
    let a = Peer::start(&p.a, &p.dir, &k, &strs(&args(None, TAP_A, &sa, &[])));
    let b_args = args(Some(&peer_a()), TAP_B, &sb, &[]);
    let mut b = Peer::start(&p.b, &p.dir, &k, &strs(&b_args));
    assert!(
        p.b.ping_until(TAP_A, Duration::from_secs(5)),
        "tunnel not up"
    );
    // A stranger on B's link floods A's port with junk for 3 s.
    p.b.exec(&format!("ip addr add {STRANGER}/24 dev u0"));
    let junk = p.dir.join("junk.py");
    std::fs::write(&junk, JUNK).unwrap();
    let sent: u64 =
        p.b.exec(&format!(
            "timeout 20 python3 {} {STRANGER} {UNDERLAY_A} {PORT} 3 2000",
            junk.display()
        ))
        .trim()
        .parse()
        .unwrap();
    p.b.exec(&format!("ip addr del {STRANGER}/24 dev u0"));
    let stranger = "not the peer, fail authentication";
    let same_key = "fail authentication: do both hosts use the same key file?";
    assert!(
        until(
            Duration::from_secs(2),
            POLL,
            || jq_num(&status_json(&sa), ".drops.bad_mac") as u64 >= sent / 2
        ),
        "A counted few of the {sent} junk datagrams: {}",
        status_json(&sa)
    );
    let log = a.log_text();
    assert_eq!(
        lines_with(&log, stranger),
        1,
        "{sent} junk datagrams:\n{log}"
    );
    let line = log.lines().find(|l| l.contains(stranger)).unwrap();
    assert!(
        line.contains(&format!("datagrams from {STRANGER}:")) && line.contains("WARN"),
        "{line}"
    );
    assert_eq!(lines_with(&log, same_key), 0, "{log}");
    assert!(p.b.ping(TAP_A, 2), "the junk broke the tunnel");

    // The peer restarts with another key file, from the same address:
    // its keepalives and frames now fail A's check, for ~3 s.
    b.stop(Duration::from_secs(5));
    let bad0 = jq_num(&status_json(&sa), ".drops.bad_mac");
    let _b = Peer::start(&p.b, &p.dir, &other, &strs(&b_args));
    assert!(!p.b.ping(TAP_A, 12), "a peer with another key got through");
    let json = status_json(&sa);
    let bad = jq_num(&json, ".drops.bad_mac") - bad0;
    assert!(bad >= 5.0, "only {bad} bad_mac from the peer: {json}");
    let log = a.log_text();
    assert_eq!(lines_with(&log, same_key), 1, "{bad} bad_mac:\n{log}");
    let line = log.lines().find(|l| l.contains(same_key)).unwrap();
    assert!(
        line.contains(&format!("datagrams from {}", peer_b())) && line.contains("WARN"),
        "{line}"
    );
    assert_eq!(lines_with(&log, stranger), 1, "{log}");
    // The peer's address stays what it was: a bad datagram moves nothing.
    assert_eq!(jq(&json, ".peer"), peer_b(), "{json}");
}

/// Restarts A (configured with B as its peer; B learns) `n` times, with
/// the `--mac` that `mac(i)` gives each time (None: the derived one).
/// After each start (A's "up" line), B must ping A's TAP within 1 s.
/// Returns the MAC of A's TAP after each start and how long each took.
fn restarts(n: usize, mac: impl Fn(usize) -> Option<String>) -> Vec<(String, Duration)> {
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let (sa, sb) = (p.dir.join("a.sock"), p.dir.join("b.sock"));
    let _b = Peer::start(&p.b, &p.dir, &k, &strs(&args(None, TAP_B, &sb, &[])));
    let a_args = |i: usize| {
        let m = mac(i);
        let extra: Vec<&str> = m.iter().flat_map(|m| ["--mac", m.as_str()]).collect();
        args(Some(&peer_b()), TAP_A, &sa, &extra)
    };
    let mut a = Peer::start(&p.a, &p.dir, &k, &strs(&a_args(0)));
    assert!(
        p.b.ping_until(TAP_A, Duration::from_secs(5)),
        "tunnel not up"
    );
    // B's cache now holds A's MAC, as any host's would after traffic.
    assert!(p.b.ping(TAP_A, 3));
    let mut seen = vec![(link_mac(&p.a, "tap0"), Duration::ZERO)];
    for i in 1..=n {
        let (ok, took) = restart_a(&p, &mut a, &k, &strs(&a_args(i)), i);
        assert!(
            ok && took <= Duration::from_secs(1),
            "restart {i}: B got no answer from A's TAP within 1 s of A's up line (ok {ok}, {took:?}); B's neighbour entry: {}\nA:\n{}",
            p.b.exec(&format!("ip neigh show {TAP_A}")),
            a.log_text()
        );
        let mac = link_mac(&p.a, "tap0");
        assert!(
            a.log_text().contains(&format!("tap0 up, mac {mac}, ")),
            "{}",
            a.log_text()
        );
        seen.push((mac, took));
    }
    seen
}

#[test]
fn e2e_restarted_peer_answers_within_a_second_same_mac() {
    require_e2e!();
    let seen = restarts(5, |_| None);
    eprintln!("restarts, same MAC: {seen:?}");
    let first = &seen[0].0;
    for (i, (mac, _)) in seen.iter().enumerate() {
        assert_eq!(mac, first, "restart {i} changed A's MAC: {seen:?}");
    }
}

#[test]
fn e2e_restarted_peer_with_new_mac_announced_at_once() {
    require_e2e!();
    // A new --mac on every start: only the announcement (gratuitous ARP)
    // can correct B's neighbour cache within the second.
    let base = std::process::id() & 0xffff;
    let mac = |i: usize| {
        Some(format!(
            "02:5a:{:02x}:{:02x}:00:{:02x}",
            base >> 8,
            base & 0xff,
            i
        ))
    };
    let seen = restarts(5, mac);
    eprintln!("restarts, new MAC each time: {seen:?}");
    for (i, (got, _)) in seen.iter().enumerate() {
        assert_eq!(Some(got.clone()), mac(i), "restart {i}: {seen:?}");
    }
}

#[test]
fn e2e_mac_distinct_per_namespace_and_set_by_flag() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let (sa, sb) = (p.dir.join("a.sock"), p.dir.join("b.sock"));
    let mut a = Peer::start(&p.a, &p.dir, &k, &strs(&args(None, TAP_A, &sa, &[])));
    let _b = Peer::start(
        &p.b,
        &p.dir,
        &k,
        &strs(&args(Some(&peer_a()), TAP_B, &sb, &[])),
    );
    // One machine id, one TAP name, two namespaces: two MACs.
    let (ma, mb) = (link_mac(&p.a, "tap0"), link_mac(&p.b, "tap0"));
    assert_ne!(ma, mb, "both ends of the tunnel have one MAC");
    for m in [&ma, &mb] {
        let first = u8::from_str_radix(&m[..2], 16).unwrap();
        assert_eq!(first & 3, 2, "{m}: not unicast and locally administered");
    }
    assert_eq!(jq(&status_json(&sa), ".mac"), ma);
    assert!(p.b.ping_until(TAP_A, Duration::from_secs(5)));

    // --mac is honoured, and B learns it.
    a.stop(Duration::from_secs(5));
    let want = "02:11:22:33:44:55";
    let _a = Peer::start(
        &p.a,
        &p.dir,
        &k,
        &strs(&args(None, TAP_A, &sa, &["--mac", want])),
    );
    assert_eq!(link_mac(&p.a, "tap0"), want);
    assert_eq!(jq(&status_json(&sa), ".mac"), want);
    assert!(p.b.ping_until(TAP_A, Duration::from_secs(5)));
    let neigh = p.b.exec(&format!("ip neigh show {TAP_A} dev tap0"));
    assert!(neigh.contains(want), "B's neighbour entry: {neigh}");

    // Refused before anything is created: exit 2, one line naming --mac.
    let never = p.dir.join("never.b64");
    for bad in ["01:00:5e:00:00:01", "zz", "00:00:00:00:00:00"] {
        let out = Command::new(TAPTUN)
            .arg(&never)
            .args([":1", "--mac", bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--mac {bad}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("taptun:")).collect();
        assert_eq!(errors.len(), 1, "--mac {bad}: {err}");
        assert!(
            errors[0].contains("--mac") && errors[0].contains(bad),
            "--mac {bad}: {err}"
        );
        // Besides the error, at most the pointer to --help.
        assert!(
            err.lines()
                .all(|l| l.starts_with("taptun:") || l.contains("--help")),
            "{err}"
        );
        assert!(!never.exists(), "--mac {bad}: the key file was created");
    }
}
