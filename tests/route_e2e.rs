//! End-to-end: the way to the peer. A peer given by name that moves to a
//! new address (re-resolution while it is silent), and a route that would
//! send taptun's own datagrams into its TAP (named in one warn line; kept
//! out of the tunnel with --fwmark and policy routing).

mod common;
use common::*;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// The peer's name in the private hosts file.
const NAME: &str = "peerb.test";
/// B's underlay address after the move, and A's on the same new network.
const MOVED_B: &str = "198.51.100.2";
const MOVED_A: &str = "198.51.100.1";

/// Runs taptun with `hosts` bind-mounted over /etc/hosts in a mount
/// namespace of its own (`unshare -m`, private propagation: nothing else
/// sees it). The file is rewritten in place, so the mount follows.
fn with_hosts(hosts: &Path) -> String {
    format!(
        "mount --bind {} /etc/hosts && exec \"$0\" \"$@\"",
        hosts.display()
    )
}

/// Replies of a background `ping` so far, from its output file.
fn replies(out: &Path) -> usize {
    fs::read_to_string(out)
        .unwrap_or_default()
        .matches("bytes from")
        .count()
}

/// A is given B by name, which does not resolve at start (DNS not up
/// yet): A starts anyway and says so, then finds B once the name
/// resolves. While a ping runs, B moves to a new address from which it
/// cannot reach A by itself; the hosts file follows: A, hearing nothing
/// for 2 keepalives (2 s), resolves the name again (every 1 s at most),
/// sends to the new address, and the ping resumes within the documented
/// bound (silence + --resolve-every + 2 s = 5 s; 8 s allowed for the
/// ping's own interval and a loaded machine). The log says so.
#[test]
fn e2e_peer_name_follows_a_move() {
    require_e2e!();
    if !installed("unshare") || !installed("mount") {
        panic!("unshare and mount (util-linux) are needed");
    }
    let p = Pair::new();
    let key = p.key("k.b64", KEY);
    let hosts = p.dir.join("hosts");
    fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let (sock_a, sock_b) = (p.dir.join("a.sock"), p.dir.join("b.sock"));
    let peer = format!("{NAME}:{PORT}");
    let script = with_hosts(&hosts);
    let wrapper = ["unshare", "-m", "sh", "-c", script.as_str()];
    let tap_a = format!("{TAP_A}/24");
    let a_args = [
        format!(":{PORT}").as_str(),
        &peer,
        "-i",
        "tap0",
        "-a",
        &tap_a,
        "--keepalive",
        "1",
        "--resolve-every",
        "1",
        "--status-socket",
        sock_a.to_str().unwrap(),
    ]
    .map(str::to_string);
    let mut a = Peer::spawn_with(&p.a, &p.dir, &wrapper, &key, &strs(&a_args), &[]);
    a.wait_up(&p.a);
    let log = a.log_text();
    assert!(
        log.contains(&format!("peer address \"{peer}\": cannot resolve"))
            && log.contains("starting without the peer's address"),
        "no warning that the name does not resolve yet:\n{log}"
    );
    let tap_b = format!("{TAP_B}/24");
    let _b = Peer::start(
        &p.b,
        &p.dir,
        &key,
        &[
            &format!(":{PORT}"),
            "-i",
            "tap0",
            "-a",
            &tap_b,
            "--status-socket",
            sock_b.to_str().unwrap(),
        ],
    );
    // DNS comes up.
    fs::write(&hosts, format!("{UNDERLAY_B} {NAME}\n")).unwrap();
    assert!(
        p.a.ping_until(TAP_B, Duration::from_secs(10)),
        "the name resolved, but no ping crossed:\n{}",
        a.log_text()
    );
    assert!(
        a.log_text()
            .contains(&format!("peer {peer} resolves to {UNDERLAY_B}:{PORT}")),
        "{}",
        a.log_text()
    );
    let status = p.a.exec(&format!(
        "{TAPTUN} status {} --json",
        sock_a.to_str().unwrap()
    ));
    assert!(
        status.contains(&format!("\"peer_name\":\"{peer}\""))
            && status.contains(&format!("\"peer\":\"{UNDERLAY_B}:{PORT}\"")),
        "{status}"
    );

    // A ping runs throughout (bounded: 400 × 0.1 s).
    let out = p.dir.join("ping.out");
    let _ping = Background::spawn(p.a.command("sh").arg("-c").arg(format!(
        "exec ping -n -i 0.1 -c 400 -W 1 {TAP_B} > {}",
        out.display()
    )));
    assert!(
        until(Duration::from_secs(5), POLL, || replies(&out) >= 5),
        "the ping does not cross before the move"
    );
    // B moves: a new address on a network A also has; the old one goes,
    // and with it B's only route to A.
    p.a.exec(&format!("ip addr add {MOVED_A}/24 dev u0"));
    p.b.exec(&format!(
        "ip addr add {MOVED_B}/24 dev u0 && ip addr del {UNDERLAY_B}/24 dev u0"
    ));
    let moved = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let before = replies(&out);
    fs::write(&hosts, format!("{MOVED_B} {NAME}\n")).unwrap();
    let resumed = until(Duration::from_secs(8), POLL, || replies(&out) > before);
    let took = moved.elapsed();
    let log = a.log_text();
    assert!(
        resumed,
        "the ping did not resume within 8 s of the move:\n{log}"
    );
    eprintln!("ping resumed {:.1} s after the move", took.as_secs_f64());
    let line = format!("peer {peer} now resolves to {MOVED_B}:{PORT} (was {UNDERLAY_B}:{PORT})");
    assert!(log.contains(&line), "no line {line:?}:\n{log}");
    let status =
        p.a.exec(&format!("{TAPTUN} status {}", sock_a.to_str().unwrap()));
    assert!(
        status.contains(&format!("peer: {MOVED_B}:{PORT}"))
            && status.contains(&format!("name: {peer}, resolved to {MOVED_B}:{PORT}")),
        "{status}"
    );
}
