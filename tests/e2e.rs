//! End-to-end: two real taptun processes in their own namespaces.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

#[test]
fn e2e_ping_both_ways_and_learns_peer() {
    require_e2e!();
    let p = Pair::new();
    let (a, _b) = p.peers(&[], &[]);
    // B's start-up keepalive teaches A the peer before any traffic.
    assert!(
        until(Duration::from_secs(5), POLL, || a
            .log_text()
            .contains("peer learned")),
        "A never learned its peer:\n{}",
        a.log_text()
    );
    assert!(
        a.log_text()
            .contains(&format!("peer learned: {UNDERLAY_B}:{PORT}")),
        "{}",
        a.log_text()
    );
    assert!(
        p.a.ping_until(TAP_B, Duration::from_secs(5)),
        "A cannot reach B through the tunnel"
    );
    assert!(p.a.ping(TAP_B, 3));
    assert!(p.b.ping(TAP_A, 3));
    // The TAP carries Ethernet: B's MAC is learned by ARP across the tunnel.
    let neigh = p.a.exec(&format!("ip neigh show {TAP_B} dev tap0"));
    assert!(neigh.contains("lladdr"), "no ARP entry: {neigh}");
    let mtu = p.a.exec("cat /sys/class/net/tap0/mtu");
    assert_eq!(mtu.trim(), "1418");
}

#[test]
fn e2e_tcp_20mb_integrity() {
    require_e2e!();
    let p = Pair::new();
    let (_a, _b) = p.peers(&[], &[]);
    assert!(p.b.ping_until(TAP_A, Duration::from_secs(5)));
    // Sender in B, receiver in A.
    tcp_transfer(&p, &p.b, &p.a, TAP_A, 5001, 20);
}

#[test]
fn e2e_wrong_key_gets_nothing_through() {
    require_e2e!();
    let p = Pair::new();
    let good = p.key("good.b64", KEY);
    let bad = p.key("bad.b64", OTHER_KEY);
    let mut a = Peer::start(&p.a, &p.dir, &good, &strs(&a_args(&[])));
    let _b = Peer::start(&p.b, &p.dir, &bad, &strs(&b_args(&[])));
    assert!(!p.b.ping(TAP_A, 3), "a peer with the wrong key got through");
    let (code, _) = a.stop(Duration::from_secs(3));
    assert_eq!(code, Some(0));
    let log = a.log_text();
    assert!(!log.contains("peer learned"), "{log}");
    let bad_mac = a.counter("bad_mac").unwrap_or(0);
    assert!(bad_mac >= 3, "bad_mac {bad_mac}:\n{log}");
    assert!(log.contains("rx 0 frames"), "{log}");
}

#[test]
fn e2e_ipv6_underlay() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let _a = Peer::start(&p.a, &p.dir, &k, &strs(&a_args(&[])));
    let _b = Peer::start(
        &p.b,
        &p.dir,
        &k,
        &strs(&b_args_to(&format!("[{UNDERLAY6_A}]:{PORT}"), &[])),
    );
    assert!(p.b.ping_until(TAP_A, Duration::from_secs(5)));
    assert!(p.a.ping(TAP_B, 2));
    // B's default MTU follows its IPv6 underlay.
    assert_eq!(p.b.exec("cat /sys/class/net/tap0/mtu").trim(), "1398");
    // A big ping fills the IPv4 MTU and still crosses.
    assert!(
        p.b.exec_out(&format!("ping -c 2 -W 2 -s 1300 {TAP_A}"))
            .status
            .success()
    );
}

#[test]
fn e2e_sigterm_removes_tap_within_a_second() {
    require_e2e!();
    let p = Pair::new();
    let (mut a, _b) = p.peers(&[], &[]);
    assert!(p.b.ping_until(TAP_A, Duration::from_secs(5)));
    // Idle tunnel: nothing flows while it is asked to stop.
    std::thread::sleep(Duration::from_millis(300));
    let (code, took) = a.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", a.log_text());
    // Measured from the kill(2) call, not from spawning a `kill`.
    eprintln!("exit {took:?} after kill(2)");
    assert!(
        took < Duration::from_secs(1),
        "exit took {took:?} after kill(2)"
    );
    assert!(!p.a.has_link("tap0"), "TAP still there");
    let log = a.log_text();
    assert!(
        log.contains("stopping tap0: tx ") && log.contains("drops: short 0"),
        "{log}"
    );
}

/// `taptun --config FILE`: the TAP's name, addresses and hook come from
/// the file, an option on the command line (`--mtu`) wins over the file's,
/// and the tunnel carries traffic.
#[test]
fn e2e_config_file_sets_the_tunnel_and_command_line_wins() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let dev = unique("tcf");
    let conf = p.dir.join("a.conf");
    std::fs::write(
        &conf,
        format!(
            "# tunnel A\nkey = {}\nlocal = :{PORT}   # every address\ndev = {dev}\n\
             mtu = 1400\naddress = {TAP_A}/24\naddress = fd00:99::1/64\n\
             up = \"echo \\\"TT-UP $TAPTUN_DEV # $TAPTUN_MTU\\\"\"\n",
            k.display()
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    // Peer::spawn_with puts its `key` first: here that is --config FILE.
    let mut a = Peer::spawn_with(
        &p.a,
        &p.dir,
        &[],
        std::path::Path::new("--config"),
        &[conf, "--mtu", "1300"],
        &[],
    );
    a.dev = dev.clone();
    a.wait_up(&p.a);
    let _b = Peer::start(&p.b, &p.dir, &k, &strs(&b_args(&[])));
    assert_eq!(
        p.a.exec(&format!("cat /sys/class/net/{dev}/mtu")).trim(),
        "1300",
        "--mtu on the command line did not win"
    );
    let addrs = p.a.exec(&format!("ip -o addr show dev {dev}"));
    assert!(
        addrs.contains(&format!("{TAP_A}/24")) && addrs.contains("fd00:99::1/64"),
        "{addrs}"
    );
    assert!(
        until(Duration::from_secs(5), POLL, || a
            .log_text()
            .contains(&format!("TT-UP {dev} # 1300"))),
        "the file's up hook did not run as written:\n{}",
        a.log_text()
    );
    assert!(
        p.b.ping_until(TAP_A, Duration::from_secs(5)),
        "{}",
        a.log_text()
    );
    let (code, _) = a.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", a.log_text());
}

/// A learns B (B names A) and keeps B's address in its state file. B then
/// stays silent (`--keepalive 3600`): a restarted A without the file does
/// not reach B, while one with it does within 2 s of its TAP being up.
/// (Fails without the state file's use: the restarted A knows no peer and
/// drops every frame until B speaks, an hour later.)
#[test]
fn e2e_restart_reaches_the_learned_peer_at_once_through_the_state_file() {
    require_e2e!();
    let p = Pair::new();
    // No IPv6 on the TAPs: its start-up chatter (DAD, router and multicast
    // listener messages) from B would tell any A where B is.
    for ns in [&p.a, &p.b] {
        ns.exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    }
    let state = p.dir.join("a.state");
    let state_arg = state.display().to_string();
    let (a, _b) = p.peers(&["--state", &state_arg], &["--keepalive", "3600"]);
    let a_key = p.dir.join("k.b64");
    let written = format!("peer {UNDERLAY_B}:{PORT}");
    assert!(
        until(Duration::from_secs(5), POLL, || std::fs::read_to_string(
            &state
        )
        .is_ok_and(|t| t.lines().any(|l| l == written))),
        "state file: {:?}\n{}",
        std::fs::read_to_string(&state),
        a.log_text()
    );
    assert!(p.a.ping_until(TAP_B, Duration::from_secs(5)));
    // Nor ARP: B would check its neighbour entry for A a few seconds
    // after the ping with a unicast probe through the tunnel, which tells
    // any A where B is. A's MAC is the same after a restart (machine-id,
    // TAP name, namespace), so B keeps it for good.
    let a_mac = p.a.exec("cat /sys/class/net/tap0/address");
    p.b.exec(&format!(
        "ip neigh replace {TAP_A} lladdr {} dev tap0 nud permanent",
        a_mac.trim()
    ));
    let restart = |mut a: Peer, extra: &[&str]| {
        a.stop(Duration::from_secs(5));
        Peer::start(&p.a, &p.dir, &a_key, &strs(&a_args(extra)))
    };
    // Without the state file: B is out of reach.
    let a2 = restart(a, &[]);
    assert!(
        !p.a.ping_until(TAP_B, Duration::from_secs(4)),
        "reached without the state file: the test shows nothing:\n{}",
        a2.log_text()
    );
    assert!(!a2.log_text().contains("peer learned"), "{}", a2.log_text());
    // With it: at once.
    let a3 = restart(a2, &["--state", &state_arg]);
    let t = std::time::Instant::now();
    assert!(
        p.a.ping_until(TAP_B, Duration::from_secs(2)),
        "B not reached within 2 s of the restart:\n{}",
        a3.log_text()
    );
    eprintln!("B reached {:?} after the restart", t.elapsed());
    assert!(
        a3.log_text()
            .contains(&format!("the peer was last at {UNDERLAY_B}:{PORT}")),
        "{}",
        a3.log_text()
    );
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // After the command's ")": state is field 3; utime, stime are 14, 15.
    let rest = &stat[stat.rfind(')').expect("stat's comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// `--busy-poll`: while pings flow (one every 20 ms, within the 100 ms
/// linger) A's receiving thread spins, and the replies are taken by its
/// spins; once they stop, it sleeps again (its CPU time stops growing).
/// B, without the flag, never spins.
#[test]
fn e2e_busy_poll_spins_while_traffic_flows_then_sleeps() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let (sa, sb) = (p.dir.join("a.sock"), p.dir.join("b.sock"));
    let (sa_s, sb_s) = (sa.display().to_string(), sb.display().to_string());
    let a = Peer::start(
        &p.a,
        &p.dir,
        &k,
        &strs(&a_args(&["--busy-poll", "100", "--status-socket", &sa_s])),
    );
    let _b = Peer::start(
        &p.b,
        &p.dir,
        &k,
        &strs(&b_args(&["--status-socket", &sb_s])),
    );
    assert!(
        p.a.ping_until(TAP_B, Duration::from_secs(10)),
        "no tunnel:\n{}",
        a.log_text()
    );
    let before = json_num(&status_json(&sa), "caught");
    let out = p.a.exec_out(&format!("ping -n -c 40 -i 0.02 -W 1 {TAP_B}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (ja, jb) = (status_json(&sa), status_json(&sb));
    let caught = json_num(&ja, "caught") - before;
    eprintln!("A: {ja}\nB: {jb}");
    // Every reply but the first few (after `before` was read, the first
    // ping's comes to a thread that slept through the status query's
    // pause) is taken by a spin.
    assert!(
        caught >= 30.0,
        "{caught} of 40 replies caught by a spin: {ja}"
    );
    assert_eq!(json_num(&ja, "linger_ms"), 100.0, "{ja}");
    assert_eq!(
        json_num(&jb, "spins"),
        0.0,
        "B spins without the flag: {jb}"
    );
    // Past the linger, A's threads sleep: two seconds cost little CPU. Not
    // nothing: what the kernel itself sends out of the TAP (IPv6 router
    // solicitations, 4 s apart) is traffic too, and starts a linger of
    // spinning (a CI run measured 0.21 s in one second); a thread that
    // never stopped spinning would use most of the two seconds.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = cpu_seconds(a.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_seconds(a.pid()) - t0;
    assert!(spent < 0.5, "A used {spent} s of CPU in two idle seconds");
}

/// `--nice -7`: A's two packet threads run at nice -7, its other threads
/// (the main one, which runs the hooks; the status socket's) as started;
/// B, without the flag, at the nice value it was started with, its packet
/// threads under SCHED_FIFO 1 (the default, as root); the tunnel carries
/// traffic.
#[test]
fn e2e_nice_sets_the_packet_threads_only() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let sa = p.dir.join("a.sock").display().to_string();
    let a = Peer::start(
        &p.a,
        &p.dir,
        &k,
        &strs(&a_args(&["--nice", "-7", "--status-socket", &sa])),
    );
    let b = Peer::start(&p.b, &p.dir, &k, &strs(&b_args(&[])));
    assert!(
        p.a.ping_until(TAP_B, Duration::from_secs(10)),
        "no tunnel:\n{}",
        a.log_text()
    );
    let ours = thread_sched(std::process::id() as i32)[0].1;
    let (na, nb) = (thread_sched(a.pid()), thread_sched(b.pid()));
    for (name, n, fifo) in &na {
        let want = match name.as_str() {
            "tap-to-udp" | "udp-to-tap" => -7,
            _ => ours,
        };
        assert_eq!((*n, *fifo), (want, None), "A's thread {name}: {na:?}");
    }
    for t in ["tap-to-udp", "udp-to-tap", "status"] {
        assert!(
            na.iter().any(|(n, ..)| n == t),
            "A has no thread {t}: {na:?}"
        );
    }
    for (name, n, fifo) in &nb {
        let want = match name.as_str() {
            "tap-to-udp" | "udp-to-tap" => Some(1),
            _ => None,
        };
        assert_eq!((*n, *fifo), (ours, want), "B's thread {name}: {nb:?}");
    }
    assert!(
        a.log_text().contains("the packet threads at nice -7"),
        "{}",
        a.log_text()
    );
}

/// Starts A with `a_extra` and B with `b_extra` but without CAP_SYS_NICE
/// (setpriv: the kernel then refuses B a real-time priority or a lower
/// nice value), and waits until a ping crosses.
fn start_b_without_nice(p: &Pair, k: &Path, a_extra: &[&str], b_extra: &[&str]) -> (Peer, Peer) {
    let a = Peer::start(&p.a, &p.dir, k, &strs(&a_args(a_extra)));
    let no_nice = [
        "setpriv",
        "--bounding-set=-sys_nice",
        "--inh-caps=-sys_nice",
    ];
    let mut b = Peer::spawn_with(&p.b, &p.dir, &no_nice, k, &strs(&b_args(b_extra)), &[]);
    b.wait_up(&p.b);
    assert!(
        p.a.ping_until(TAP_B, Duration::from_secs(10)),
        "no tunnel:\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    (a, b)
}

/// `--rt-priority 3`: A's two packet threads run under SCHED_FIFO at 3,
/// its other threads as started; B, started without CAP_SYS_NICE
/// (setpriv), says once why not and what to do, and runs as started;
/// traffic crosses.
#[test]
fn e2e_rt_priority_where_allowed_and_said_where_not() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let (a, b) = start_b_without_nice(&p, &k, &["--rt-priority", "3"], &["--rt-priority", "3"]);
    let (na, nb) = (thread_sched(a.pid()), thread_sched(b.pid()));
    for (name, _, fifo) in &na {
        let want = match name.as_str() {
            "tap-to-udp" | "udp-to-tap" => Some(3),
            _ => None,
        };
        assert_eq!(*fifo, want, "A's thread {name}: {na:?}");
    }
    assert!(nb.iter().all(|(.., fifo)| fifo.is_none()), "B: {nb:?}");
    let log = b.log_text();
    assert!(
        log.contains("--rt-priority 3: the kernel refused")
            && log.contains("LimitRTPRIO=3 and no RestrictRealtime=yes"),
        "{log}"
    );
    assert_eq!(log.matches("the kernel refused").count(), 1, "{log}");
}

/// The default where the kernel refuses SCHED_FIFO (B, started without
/// CAP_SYS_NICE): one info line that says why and how to allow it or not
/// to ask, no warning, the threads as started, traffic crosses; with
/// `--rt-priority off` (A, as root) the threads run as started, silently.
#[test]
fn e2e_default_real_time_refused_is_said_once_at_info() {
    require_e2e!();
    let p = Pair::new();
    let k = p.key("k.b64", KEY);
    let (a, b) = start_b_without_nice(&p, &k, &["--rt-priority", "off"], &[]);
    let (na, nb) = (thread_sched(a.pid()), thread_sched(b.pid()));
    assert!(na.iter().all(|(.., fifo)| fifo.is_none()), "A: {na:?}");
    assert!(nb.iter().all(|(.., fifo)| fifo.is_none()), "B: {nb:?}");
    let log = b.log_text();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not under SCHED_FIFO"))
        .collect();
    assert_eq!(said.len(), 1, "{log}");
    assert!(
        said[0].contains("INFO")
            && said[0].contains("LimitRTPRIO=1 and no RestrictRealtime=yes")
            && said[0].contains("--rt-priority off not to ask"),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("SCHED_FIFO")),
        "{log}"
    );
    assert!(!a.log_text().contains("SCHED_FIFO"), "{}", a.log_text());
}

/// `--fq`: while a TCP transfer fills B's socket, B takes pings' datagrams
/// ahead of the transfer's (counted), and the transfer's bytes arrive
/// intact (no flow is reordered into corruption: sha256 compared); with
/// `--fq off`, none is taken ahead.
#[test]
fn e2e_fq_takes_pings_ahead_of_a_transfer() {
    require_e2e!();
    for (fq, port) in [("on", 5211u16), ("off", 5212)] {
        let p = Pair::new();
        let (_a, _b, sock) = start_with_b_status(&p, &[], &["--fq", fq]);
        let mut ping = Background::spawn(
            p.a.command("ping")
                .args(["-n", "-q", "-i", "0.02", "-W", "1", TAP_B])
                .stdout(std::process::Stdio::null()),
        );
        tcp_transfer(&p, &p.a, &p.b, TAP_B, port, 60);
        ping.stop(Duration::from_secs(5));
        let json = status_json(&sock);
        let ahead = json_num(&json, "ahead");
        eprintln!("--fq {fq}: {ahead} taken ahead");
        match fq {
            "on" => assert!(ahead > 0.0, "no ping taken ahead: {json}"),
            _ => assert_eq!(ahead, 0.0, "{json}"),
        }
    }
}
