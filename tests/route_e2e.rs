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

/// A's address for the tunnel, on its loopback: B reaches it only through
/// its default route (via A's underlay address), as a host reaches a peer
/// on the Internet.
const PUB_A: &str = "198.18.0.1";
/// An address on A's side that only the tunnel reaches (B's underlay
/// datagrams to it are dropped at A).
const FAR: &str = "203.0.113.77";

/// A (bound to PUB_A, learning its peer) and B (peer PUB_A, default
/// route via A's underlay address), each with its status socket; B gets
/// `b_extra`. Returns once a ping crosses.
fn routed_pair(p: &Pair, b_extra: &[&str]) -> (Peer, Peer) {
    p.a.exec(&format!(
        "ip addr add {PUB_A}/32 dev lo && ip addr add {FAR}/32 dev lo && iptables -I INPUT -i u0 -d {FAR} -j DROP"
    ));
    p.b.exec(&format!("ip route add default via {UNDERLAY_A} dev u0"));
    let key = p.key("k.b64", KEY);
    let (sock_a, sock_b) = (p.dir.join("a.sock"), p.dir.join("b.sock"));
    let (tap_a, tap_b) = (format!("{TAP_A}/24"), format!("{TAP_B}/24"));
    let a = Peer::start(
        &p.a,
        &p.dir,
        &key,
        &[
            &format!("{PUB_A}:{PORT}"),
            "-i",
            "tap0",
            "-a",
            &tap_a,
            "--status-socket",
            sock_a.to_str().unwrap(),
        ],
    );
    let (local, peer) = (format!(":{PORT}"), format!("{PUB_A}:{PORT}"));
    let b_args = [
        &[
            local.as_str(),
            &peer,
            "-i",
            "tap0",
            "-a",
            &tap_b,
            "--status-socket",
            sock_b.to_str().unwrap(),
        ],
        b_extra,
    ]
    .concat();
    let b = Peer::start(&p.b, &p.dir, &key, &b_args);
    assert!(
        p.b.ping_until(TAP_A, Duration::from_secs(10)),
        "no ping across the tunnel:\n{}",
        b.log_text()
    );
    (a, b)
}

fn warn_lines(log: &str, what: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" WARN ") && l.contains(what))
        .map(str::to_string)
        .collect()
}

/// The fix a warn `line` gives is the host route to A's public address via
/// A's underlay address on `dev`; run as given on B, it brings the tunnel
/// back.
fn run_the_fix(p: &Pair, b: &Peer, line: &str, dev: &str, log: &str) {
    let fix = line
        .split("fix: ")
        .nth(1)
        .and_then(|f| f.split(" (").next())
        .unwrap_or_else(|| panic!("no fix in {line}"));
    assert_eq!(
        fix,
        format!("ip route add {PUB_A}/32 via {UNDERLAY_A} dev {dev}"),
        "{log}"
    );
    p.b.exec(fix);
    assert!(
        p.b.ping_until(TAP_A, Duration::from_secs(5)),
        "the fix given did not bring the tunnel back:\n{}",
        b.log_text()
    );
}

/// B's default route is replaced by one through its TAP (as `dhclient
/// tap0` or `ip route add default via 10.99.0.1` do): within 2 s one warn
/// line names the route and gives the fix, no wrong MTU advice follows a
/// large ping, and the fix it gives, run as given, brings the tunnel back.
#[test]
fn e2e_route_into_tap_is_named_with_its_fix() {
    require_e2e!();
    let p = Pair::new();
    let (_a, b) = routed_pair(&p, &[]);
    p.b.exec(&format!("ip route replace default via {TAP_A} dev tap0"));
    let changed = Instant::now();
    let what = format!(
        "the route to the peer {PUB_A} (via {TAP_A} dev tap0) leads into this tunnel's own TAP"
    );
    let named = until(Duration::from_secs(2), POLL, || {
        !warn_lines(&b.log_text(), &what).is_empty()
    });
    assert!(named, "no warn line within 2 s:\n{}", b.log_text());
    eprintln!(
        "named {:.2} s after the change",
        changed.elapsed().as_secs_f64()
    );
    // Frames now loop; a large one is refused as too long somewhere.
    let _ =
        p.b.exec_out(&format!("ping -c 2 -i 0.2 -W 1 -s 1300 {TAP_A}"));
    std::thread::sleep(Duration::from_millis(2500));
    let log = b.log_text();
    let lines = warn_lines(&log, "the route to the peer");
    assert_eq!(lines.len(), 1, "not exactly one line:\n{log}");
    assert!(
        !log.contains("lower the TAP MTU"),
        "MTU advice for a routing loop:\n{log}"
    );
    run_the_fix(&p, &b, &lines[0], "u0", &log);
    let back = format!("the route to the peer {PUB_A} no longer leads into tap0");
    assert!(
        until(Duration::from_secs(2), POLL, || b
            .log_text()
            .contains(&back)),
        "{}",
        b.log_text()
    );
}

/// With --fwmark and the policy routing of docs/networking.md (as
/// wg-quick does), B's default route goes through the tunnel and the
/// tunnel keeps working: a ping to A's TAP, and one to an address only
/// the far side of the tunnel reaches. No line about the route.
#[test]
fn e2e_fwmark_keeps_the_tunnel_out_of_itself() {
    require_e2e!();
    let p = Pair::new();
    let (_a, b) = routed_pair(&p, &["--fwmark", "51820"]);
    assert!(
        !p.b.exec_out(&format!("ping -c 1 -W 1 {FAR}"))
            .status
            .success(),
        "{FAR} is reachable without the tunnel"
    );
    // The recipe of docs/networking.md ("A default route through the tunnel").
    p.b.exec(&format!(
        "ip rule add not fwmark 51820 table 51820 && ip route add default via {TAP_A} dev tap0 table 51820 && ip rule add table main suppress_prefixlength 0"
    ));
    assert!(
        p.b.ping_until(FAR, Duration::from_secs(5)),
        "no ping through the default route in the tunnel:\n{}",
        b.log_text()
    );
    assert!(p.b.ping(TAP_A, 5), "{}", b.log_text());
    std::thread::sleep(Duration::from_millis(1500));
    let log = b.log_text();
    assert!(
        warn_lines(&log, "the route to the peer").is_empty(),
        "{log}"
    );
}

/// B's TAP is a port of a bridge that also holds its underlay (as
/// `l2_bridge_up.sh` does on the bridging host): the route to the peer
/// leaves by the bridge, towards a gateway on the underlay's port, and
/// taptun says nothing. Then the default route goes via A's TAP address
/// on that bridge: its next hop sits behind the TAP's port, and one warn
/// line names the bridge within 2 s; the fix it gives brings the tunnel
/// back.
#[test]
fn e2e_route_into_a_bridge_holding_the_tap() {
    require_e2e!();
    let p = Pair::new();
    // A answers ARP only on the interface that holds the address: B's
    // bridge floods A's TAP network onto the underlay too.
    p.a.exec(&format!(
        "ip addr add {PUB_A}/32 dev lo && echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore"
    ));
    p.b.exec(&format!(
        "ip link add br0 type bridge && ip link set br0 up && ip addr del {UNDERLAY_B}/24 dev u0 && ip link set u0 master br0 && ip addr add {UNDERLAY_B}/24 dev br0 && ip route add default via {UNDERLAY_A} dev br0"
    ));
    let key = p.key("k.b64", KEY);
    let (sock_a, sock_b) = (p.dir.join("a.sock"), p.dir.join("b.sock"));
    let tap_a = format!("{TAP_A}/24");
    let _a = Peer::start(
        &p.a,
        &p.dir,
        &key,
        &[
            &format!("{PUB_A}:{PORT}"),
            "-i",
            "tap0",
            "-a",
            &tap_a,
            "--status-socket",
            sock_a.to_str().unwrap(),
        ],
    );
    let b = Peer::start(
        &p.b,
        &p.dir,
        &key,
        &[
            &format!(":{PORT}"),
            &format!("{PUB_A}:{PORT}"),
            "-i",
            "tap0",
            "--status-socket",
            sock_b.to_str().unwrap(),
        ],
    );
    p.b.exec(&format!(
        "ip link set tap0 master br0 && ip addr add {TAP_B}/24 dev br0"
    ));
    assert!(
        p.b.ping_until(TAP_A, Duration::from_secs(10)),
        "no ping across the bridged tunnel:\n{}",
        b.log_text()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        warn_lines(&b.log_text(), "the route to the peer").is_empty(),
        "a route by the bridge's underlay port taken for one into the TAP:\n{}",
        b.log_text()
    );
    p.b.exec(&format!("ip route replace default via {TAP_A} dev br0"));
    let what = format!(
        "the route to the peer {PUB_A} (via {TAP_A} dev br0) leads into a bridge holding tap0"
    );
    let named = until(Duration::from_secs(2), POLL, || {
        !warn_lines(&b.log_text(), &what).is_empty()
    });
    let log = b.log_text();
    assert!(named, "no warn line within 2 s:\n{log}");
    let lines = warn_lines(&log, "the route to the peer");
    assert_eq!(lines.len(), 1, "{log}");
    run_the_fix(&p, &b, &lines[0], "br0", &log);
}
