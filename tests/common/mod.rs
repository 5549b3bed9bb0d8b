//! The end-to-end rig: network namespaces joined by a veth pair, real
//! `taptun` processes, and teardown on drop (even when a test fails).
//!
//! Every namespace and interface name carries the pid and a counter, so
//! tests may run in parallel. Traffic goes only to addresses inside the
//! namespaces a test creates.
#![allow(dead_code)]

use std::fs;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const TAPTUN: &str = env!("CARGO_BIN_EXE_taptun");
pub const UNDERLAY_A: &str = "192.0.2.1";
pub const UNDERLAY_B: &str = "192.0.2.2";
pub const UNDERLAY6_A: &str = "fd00:2::1";
pub const UNDERLAY6_B: &str = "fd00:2::2";
pub const TAP_A: &str = "10.99.0.1";
pub const TAP_B: &str = "10.99.0.2";
pub const PORT: u16 = 9123;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call, short enough for an interface.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

fn missing_prerequisite() -> Option<String> {
    // SAFETY-free check of the effective uid through /proc.
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("1");
    if euid != "0" {
        return Some("not root (network namespaces and TAP need it)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    for tool in ["ip", "ping", "socat", "sha256sum", "timeout"] {
        if !installed(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// True when `tool` is a command found on PATH.
pub fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Returns true when the e2e test `test` may run. Without prerequisites it
/// says why and returns false, unless `TAPTUN_E2E=require`, where it panics.
/// A test that runs leaves a marker named `test` in `$TAPTUN_E2E_RAN`, so
/// that dev/test.sh can compare what ran with the `e2e_*` tests it lists.
/// Tests call it through [`require_e2e!`].
pub fn e2e(test: &str) -> bool {
    if let Some(why) = missing_prerequisite() {
        if std::env::var("TAPTUN_E2E").as_deref() == Ok("require") {
            panic!("{test}: e2e prerequisite missing with TAPTUN_E2E=require: {why}");
        }
        eprintln!("SKIPPED {test}: {why} (set TAPTUN_E2E=require to make this a failure)");
        return false;
    }
    if let Ok(dir) = std::env::var("TAPTUN_E2E_RAN") {
        let _ = fs::create_dir_all(&dir);
        let _ = fs::write(Path::new(&dir).join(test), "ran\n");
    }
    true
}

/// The first line of every end-to-end test: `require_e2e!();` returns
/// from the test when it must be skipped (see [`e2e`]), and otherwise
/// leaves the marker, named after the enclosing function.
macro_rules! require_e2e {
    () => {
        // The type name of a function item declared here is
        // "crate::module::the_test::here"; the marker is "the_test".
        fn here() {}
        let path = ::std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").unwrap_or(path);
        let test = path.rsplit("::").next().unwrap_or(path);
        if !$crate::common::e2e(test) {
            return;
        }
    };
}
pub(crate) use require_e2e;

/// The usual polling step of [`until`].
pub const POLL: Duration = Duration::from_millis(20);

/// Checks `cond` every `step` until it holds (true) or `limit` has passed
/// (false). It is checked at least once, and once more after the limit.
pub fn until(limit: Duration, step: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// A helper process (socat, dnsmasq, tcpdump, a python tool, taptun
/// itself) that must not outlive the test: on drop it is stopped by PID
/// (SIGTERM, SIGKILL a second later if need be) and reaped. It is only
/// ever signalled while not yet reaped, so the PID is still its own.
pub struct Background(Child);

impl Background {
    pub fn spawn(cmd: &mut Command) -> Background {
        Background(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The process, e.g. to take its piped stdout.
    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }

    /// Its exit status once it has exited (and is reaped), else None.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().expect("try_wait")
    }

    /// Waits for it to exit by itself, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        until(limit, POLL, || {
            status = self.exited();
            status.is_some()
        });
        status
    }

    /// Waits at most `limit` for it to exit by itself, successfully;
    /// panics naming it as `what` otherwise (drop then stops it).
    pub fn finish(&mut self, limit: Duration, what: &str) {
        match self.wait_exit(limit) {
            Some(st) => assert!(st.success(), "{what} failed: {st}"),
            None => panic!("{what} did not finish within {limit:?}"),
        }
    }

    /// SIGTERM by PID, then waits at most `limit`; past it, SIGKILL and
    /// None. Returns at once if it had already exited.
    pub fn stop(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.stop_timed(limit).0
    }

    /// [`Background::stop`], and how long the process took to exit: from
    /// the kill(2) call itself (no process spawned to send the signal) to
    /// its exit, seen by polling every 2 ms. Zero if it had already exited.
    pub fn stop_timed(&mut self, limit: Duration) -> (Option<ExitStatus>, Duration) {
        if let Some(st) = self.exited() {
            return (Some(st), Duration::ZERO);
        }
        let signalled = Instant::now();
        // SAFETY: kill(2) has no memory effects; the PID is our child's,
        // not yet reaped, so it cannot name another process.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let mut status = None;
        until(limit, Duration::from_millis(2), || {
            status = self.exited();
            status.is_some()
        });
        let took = signalled.elapsed();
        if status.is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        (status, took)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(1));
    }
}

/// A directory under the system's temporary directory, named uniquely
/// after `prefix`, removed with its contents on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(prefix));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes a key file (base64, mode 0600) called `name` in `dir`.
pub fn write_key(dir: &Path, name: &str, base64: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    fs::write(&p, format!("{base64}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its output, whatever the status.
pub fn sh_out(cmd: &str) -> Output {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("spawn sh")
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique(&format!("tt{tag}"));
        sh(&format!("ip netns add {name}"));
        let ns = Netns { name };
        ns.exec("ip link set lo up");
        ns
    }

    /// Runs a shell command inside the namespace; panics on failure.
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', "'\\''")
        ))
    }

    /// Runs a shell command inside the namespace; returns its output.
    pub fn exec_out(&self, cmd: &str) -> Output {
        sh_out(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', "'\\''")
        ))
    }

    /// A command builder that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// True when `ping` from here reaches `addr`.
    pub fn ping(&self, addr: &str, count: u32) -> bool {
        self.exec_out(&format!("ping -c {count} -i 0.2 -W 1 {addr}"))
            .status
            .success()
    }

    /// Pings until one answer comes back, for at most `limit`.
    pub fn ping_until(&self, addr: &str, limit: Duration) -> bool {
        // No pause between tries: an unanswered ping waits a second itself.
        until(limit, Duration::ZERO, || {
            self.exec_out(&format!("ping -c 1 -W 1 {addr}"))
                .status
                .success()
        })
    }

    /// True when an interface of that name exists here.
    pub fn has_link(&self, dev: &str) -> bool {
        self.exec_out(&format!("ip link show dev {dev}"))
            .status
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes its veth end and TAPs.
        let _ = sh_out(&format!("ip netns del {}", self.name));
    }
}

/// Joins namespaces `a` and `b` by a veth pair whose ends are called
/// `a_dev` and `b_dev` there, both up. The pair is created under unique
/// names, so parallel tests never collide, then renamed inside each
/// namespace; deleting either namespace deletes it.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    let (x, y) = (unique("vx"), unique("vy"));
    sh(&format!(
        "ip link add {x} netns {} type veth peer name {y} netns {}",
        a.name, b.name
    ));
    a.exec(&format!(
        "ip link set {x} name {a_dev} && ip link set {a_dev} up"
    ));
    b.exec(&format!(
        "ip link set {y} name {b_dev} && ip link set {b_dev} up"
    ));
}

/// Two namespaces joined by a veth pair: A has 192.0.2.1 and fd00:2::1, B the .2 / ::2.
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
    pub dir: TempDir,
}

impl Pair {
    pub fn new() -> Pair {
        let a = Netns::new("a");
        let b = Netns::new("b");
        veth(&a, "u0", &b, "u0");
        a.exec(&format!(
            "ip addr add {UNDERLAY_A}/24 dev u0 && ip addr add {UNDERLAY6_A}/64 dev u0 nodad"
        ));
        b.exec(&format!(
            "ip addr add {UNDERLAY_B}/24 dev u0 && ip addr add {UNDERLAY6_B}/64 dev u0 nodad"
        ));
        Pair {
            a,
            b,
            dir: TempDir::new("taptun-e2e-"),
        }
    }

    /// Writes a key file (mode 0600) in the test's directory.
    pub fn key(&self, name: &str, base64: &str) -> PathBuf {
        write_key(&self.dir, name, base64)
    }

    /// The usual two peers: see [`start_peers`].
    pub fn peers(&self, a_extra: &[&str], b_extra: &[&str]) -> (Peer, Peer) {
        start_peers(&self.a, &self.b, &self.dir, a_extra, b_extra)
    }
}

/// `taptun status SOCK --json`, which must answer.
pub fn status_json(sock: &Path) -> String {
    let out = Command::new(TAPTUN)
        .arg("status")
        .arg(sock)
        .arg("--json")
        .output()
        .expect("run taptun status");
    assert!(
        out.status.success(),
        "taptun status --json {}: {}",
        sock.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A with its usual arguments and `a_extra`, B with `b_extra` and a status
/// socket (returned), both under [`KEY`]; returns once a ping from A
/// crosses.
pub fn start_with_b_status(p: &Pair, a_extra: &[&str], b_extra: &[&str]) -> (Peer, Peer, PathBuf) {
    let k = p.key("k.b64", KEY);
    let sock = p.dir.join("b.sock");
    let sock_s = sock.display().to_string();
    let a = Peer::start(&p.a, &p.dir, &k, &strs(&a_args(a_extra)));
    let mut b_all = b_extra.to_vec();
    b_all.extend(["--status-socket", &sock_s]);
    let b = Peer::start(&p.b, &p.dir, &k, &strs(&b_args(&b_all)));
    assert!(
        p.a.ping_until(TAP_B, Duration::from_secs(10)),
        "no tunnel:\n{}",
        b.log_text()
    );
    (a, b, sock)
}

/// A key for tests (the wire vectors' 32-byte key).
pub const KEY: &str = "VkZylFBLiEGy9hPfHHcJligUEZkjp47OoT9MyHt79iM=";
/// Another key.
pub const OTHER_KEY: &str = "Pg1u8vWNsxsk6hwawh1scAx4PnvtzOe81PamXn89ZMs=";

/// Part of the info line taptun logs once its TAP is up
/// ("tap0 up, mac 02:..., mtu 1418, UDP ...").
pub const UP_LINE: &str = " up, mac ";

/// A running taptun process in a namespace; stopped on drop.
pub struct Peer {
    pub process: Background,
    pub log: PathBuf,
    pub dev: String,
    pub ns: String,
}

impl Peer {
    /// Starts `taptun key :PORT [peer] -i tap0 <extra>` in `ns` and waits
    /// until its TAP is up. `args` follows the key file.
    pub fn start(ns: &Netns, dir: &Path, key: &Path, args: &[&str]) -> Peer {
        let mut p = Peer::spawn_with(ns, dir, &[], key, args, &[]);
        p.wait_up(ns);
        p
    }

    /// Starts taptun in `ns` behind an optional `wrapper` command (e.g.
    /// setpriv) with extra environment; does not wait for anything.
    pub fn spawn_with(
        ns: &Netns,
        dir: &Path,
        wrapper: &[&str],
        key: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Peer {
        let log = dir.join(unique("log"));
        let logf = fs::File::create(&log).unwrap();
        let process = Background::spawn(
            Command::new("ip")
                .args(["netns", "exec", &ns.name])
                .args(wrapper)
                .arg(TAPTUN)
                .arg(key)
                .args(args)
                .args(["--log-level", "debug"])
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf),
        );
        let dev = args
            .windows(2)
            .find(|w| w[0] == "-i" || w[0] == "--dev")
            .map(|w| w[1].to_string())
            .unwrap_or_else(|| "tap0".into());
        Peer {
            process,
            log,
            dev,
            ns: ns.name.clone(),
        }
    }

    /// Waits until the TAP is up (log line and link), at most 10 s.
    pub fn wait_up(&mut self, ns: &Netns) {
        let up = until(Duration::from_secs(10), POLL, || {
            if self.log_text().contains(UP_LINE) && ns.has_link(&self.dev) {
                return true;
            }
            if let Some(st) = self.process.exited() {
                panic!(
                    "taptun exited with {st} before its TAP was up:\n{}",
                    self.log_text()
                );
            }
            false
        });
        assert!(up, "TAP never came up:\n{}", self.log_text());
    }

    pub fn pid(&self) -> i32 {
        self.process.pid() as i32
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        self.process.exited().is_none()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by PID.
    pub fn signal(&self, sig: &str) {
        sh(&format!("kill -{sig} {}", self.pid()));
    }

    /// SIGTERM, then waits up to `limit` (SIGKILL past it); returns the
    /// exit code (None when killed) and how long it took to exit, measured
    /// from the kill(2) call (see [`Background::stop_timed`]).
    pub fn stop(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let (status, took) = self.process.stop_timed(limit);
        (status.and_then(|st| st.code()), took)
    }

    /// Waits for the process to exit by itself, at most `limit`; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        self.process.wait_exit(limit)?.code()
    }

    /// SIGUSR1, then waits (at most 5 s) until the new stats line is in
    /// the log; returns the log.
    pub fn stats(&self) -> String {
        let lines = |log: &str| log.matches("drops:").count();
        let before = lines(&self.log_text());
        self.signal("USR1");
        let mut log = String::new();
        let logged = until(Duration::from_secs(5), POLL, || {
            log = self.log_text();
            lines(&log) > before
        });
        assert!(logged, "no stats line after SIGUSR1:\n{log}");
        log
    }

    /// Reads a drop counter from the last stats line (SIGUSR1 or exit).
    pub fn counter(&self, name: &str) -> Option<u64> {
        let text = self.log_text();
        let line = text.lines().rev().find(|l| l.contains("drops:"))?;
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == name {
                return words.next()?.trim_end_matches(',').parse().ok();
            }
        }
        None
    }
}

/// Starts the usual two peers, sharing [`KEY`] (written to `k.b64` in
/// `dir`): A in namespace `a` learns its peer ([`a_args`]), B in `b` is
/// given A's IPv4 underlay address ([`b_args`]); each with its extra
/// arguments. Returns once both TAPs are up.
pub fn start_peers(
    a: &Netns,
    b: &Netns,
    dir: &Path,
    a_extra: &[&str],
    b_extra: &[&str],
) -> (Peer, Peer) {
    let (tap_a, tap_b) = (format!("{TAP_A}/24"), format!("{TAP_B}/24"));
    let a_all = [&["-a", tap_a.as_str()], a_extra].concat();
    let b_all = [&["-a", tap_b.as_str()], b_extra].concat();
    start_bare_peers(a, b, dir, &a_all, &b_all)
}

/// A's usual arguments (learns its peer): `:PORT -i tap0 -a 10.99.0.1/24` + extra.
pub fn a_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        format!(":{PORT}"),
        "-i".into(),
        "tap0".into(),
        "-a".into(),
        format!("{TAP_A}/24"),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// B's usual arguments, with A's IPv4 underlay address as the peer.
pub fn b_args(extra: &[&str]) -> Vec<String> {
    b_args_to(&format!("{UNDERLAY_A}:{PORT}"), extra)
}

/// B's usual arguments with the given peer.
pub fn b_args_to(peer: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        format!(":{PORT}"),
        peer.to_string(),
        "-i".into(),
        "tap0".into(),
        "-a".into(),
        format!("{TAP_B}/24"),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Borrows a list of owned arguments.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Sends `mb` megabytes of random data over TCP from namespace `from` to
/// `to_ip:port` in `to` (through whatever tunnel joins them) and compares
/// SHA-256 at both ends. Bounded: 60 s per side.
pub fn tcp_transfer(p: &Pair, from: &Netns, to: &Netns, to_ip: &str, port: u16, mb: usize) {
    tcp_transfer_in(&p.dir, from, to, to_ip, port, mb);
}

/// `mb` MB of random bytes over TCP (socat) from `from` to `to_ip`:`port`
/// in `to`, their sha256 compared; the files live in `dir`.
pub fn tcp_transfer_in(dir: &Path, from: &Netns, to: &Netns, to_ip: &str, port: u16, mb: usize) {
    let data = dir.join(format!("data{port}"));
    sh(&format!(
        "head -c {mb}000000 /dev/urandom > {}",
        data.display()
    ));
    let want = sh(&format!("sha256sum < {}", data.display()));
    let out = dir.join(format!("got{port}"));
    let mut server = Background::spawn(to.command("sh").arg("-c").arg(format!(
        "timeout 60 socat -u TCP-LISTEN:{port},reuseaddr - | sha256sum > {}",
        out.display()
    )));
    std::thread::sleep(Duration::from_millis(300));
    from.exec(&format!(
        "timeout 60 socat -u FILE:{} TCP:{to_ip}:{port},retry=20,interval=0.2",
        data.display()
    ));
    server.finish(Duration::from_secs(65), "receiver");
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        want,
        "data corrupted in the tunnel ({to_ip}:{port})"
    );
}

/// The number after `"key":` in a flat JSON object (no JSON crate needed);
/// panics when there is none.
pub fn json_num(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    let value = json[at..].split([',', '}']).next().unwrap().trim();
    value
        .parse()
        .unwrap_or_else(|_| panic!("{key} is {value:?}, not a number, in {json}"))
}

/// The attacker's underlay address on a [`HubLan`].
pub const ATTACKER: &str = "192.0.2.66";

/// A hub (a bridge that forgets MAC addresses, so it floods every frame)
/// joining A (192.0.2.1), B (192.0.2.2) and an attacker X (192.0.2.66), each
/// on its `u0`.
pub struct HubLan {
    // Field order is drop order: the hub's namespace goes last.
    pub a: Netns,
    pub b: Netns,
    pub x: Netns,
    /// Held for its lifetime: dropping it deletes the bridge.
    _hub: Netns,
    pub dir: TempDir,
}

impl HubLan {
    /// The hub, with the test's directory made with `dir_prefix`.
    pub fn new(dir_prefix: &str) -> HubLan {
        let hub = Netns::new("h");
        let (a, b, x) = (Netns::new("a"), Netns::new("b"), Netns::new("x"));
        hub.exec("ip link add br0 type bridge ageing_time 0 stp_state 0 && ip link set br0 up");
        for (i, (ns, ip)) in [(&a, UNDERLAY_A), (&b, UNDERLAY_B), (&x, ATTACKER)]
            .into_iter()
            .enumerate()
        {
            veth(&hub, &format!("h{i}"), ns, "u0");
            hub.exec(&format!("ip link set h{i} master br0"));
            ns.exec(&format!("ip addr add {ip}/24 dev u0"));
            // A batch sent with UDP GSO would cross the bridge as one
            // super-packet; cut it before it leaves, as a NIC on a real wire
            // does, so the attacker captures the datagrams one by one.
            ns.exec("ethtool -K u0 tx-udp-segmentation off");
        }
        HubLan {
            a,
            b,
            x,
            _hub: hub,
            dir: TempDir::new(dir_prefix),
        }
    }

    /// A file in the test's directory, as a string for a command line.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The usual two peers on the hub: see [`start_peers`].
    pub fn peers(&self, a_extra: &[&str], b_extra: &[&str]) -> (Peer, Peer) {
        start_peers(&self.a, &self.b, &self.dir, a_extra, b_extra)
    }
}

/// The list of numbers after `"key": [` in a flat JSON object.
pub fn json_list(json: &str, key: &str) -> Vec<f64> {
    let pat = format!("\"{key}\": [");
    let at = json.find(&pat).unwrap_or_else(|| panic!("{key} in {json}")) + pat.len();
    let end = at + json[at..].find(']').unwrap();
    json[at..end]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

/// The replay attack on `lan`, once A's `listener` (the test tool's
/// `listen` on A's TAP, port 7000, writing `counts`) is up: the attacker X
/// runs the tool's `replay` against A with B's address to spoof and
/// `max_age`, B `talk`s `n` messages to A, A must still reach B, B sends
/// `end`. Asserts that the attacker captured at least half and that every
/// message arrived exactly once. `tool` starts the test's tool script in a
/// namespace; `what` begins each message. Returns the attacker's report and
/// how many datagrams it captured.
pub fn replay_attack(
    lan: &HubLan,
    tool: impl Fn(&Netns, &str) -> Background,
    mut listener: Background,
    counts: &str,
    max_age: f64,
    n: usize,
    what: &str,
) -> (String, usize) {
    let (ready, report) = (lan.path("ready"), lan.path("report.json"));
    let mut attacker = tool(
        &lan.x,
        &format!("replay u0 {UNDERLAY_A} {PORT} {UNDERLAY_B} {ready} {report} {max_age} {n}"),
    );
    assert!(
        until(Duration::from_secs(10), POLL, || Path::new(&ready).exists()),
        "{ready} never appeared"
    );
    let mut talker = tool(&lan.b, &format!("talk {TAP_A} 7000 {n}"));
    talker.finish(Duration::from_secs(30), "talker");
    attacker.finish(Duration::from_secs(60), "attacker");
    // The genuine peer still gets traffic from A through the tunnel.
    assert!(lan.a.ping(TAP_B, 2), "{what}A no longer reaches B");
    let mut ender = tool(&lan.b, &format!("end {TAP_A} 7000"));
    ender.finish(Duration::from_secs(10), "end");
    listener.finish(Duration::from_secs(10), "listener");

    let counts = fs::read_to_string(counts).unwrap();
    let report = fs::read_to_string(&report).unwrap();
    let captured = json_num(&report, "captured") as usize;
    assert!(
        captured >= n / 2,
        "{what}attacker captured only {captured}: {report}"
    );
    // Every original delivered, none twice.
    for i in 0..n {
        // A lost one is missing: json_num then panics.
        let c = json_num(&counts, &format!("msg-{i}"));
        assert_eq!(c, 1.0, "{what}msg-{i} delivered {c} times");
    }
    (report, captured)
}

/// Asserts that A's `log` (on a [`HubLan`]) learned B as its peer, and that
/// the peer never moved, to the attacker or anywhere else.
pub fn assert_peer_stayed_b(log: &str) {
    assert!(
        log.contains(&format!("peer learned: {UNDERLAY_B}:{PORT}")),
        "{log}"
    );
    assert!(!log.contains("peer moved"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("peer") && l.contains(ATTACKER)),
        "{log}"
    );
}

/// The six phases of a replay report (the attacker's `replay` tool): how
/// many copies it sent, how many were clearly young (more than 0.3 s inside
/// `max_age`) and clearly old (more than 0.3 s past it). Asserts that each
/// phase re-sent all `captured` datagrams, that the delayed-inside phases
/// really were delayed yet inside the window, and that exactly the two
/// delayed-outside phases were old and at least the two immediate ones young.
pub fn replay_ages(report: &str, captured: usize, max_age: f64) -> (u64, u64, u64) {
    let (mut sent, mut young, mut old) = (0, 0, 0);
    for phase in [
        "own",
        "spoofed",
        "own_delayed_inside",
        "spoofed_delayed_inside",
        "own_delayed_outside",
        "spoofed_delayed_outside",
    ] {
        let ages = json_list(report, phase);
        assert_eq!(ages.len(), captured, "{phase}");
        sent += ages.len() as u64;
        // Clear of the boundary by 0.3 s either way: the reason is certain.
        young += ages.iter().filter(|&&x| x < max_age - 0.3).count() as u64;
        old += ages.iter().filter(|&&x| x > max_age + 0.3).count() as u64;
        if phase.ends_with("inside") {
            // Really delayed, yet inside the window: only the replay window stops these.
            assert!(
                ages.iter().all(|&x| x > 1.0 && x < max_age),
                "{phase}: {ages:?}"
            );
        }
    }
    // The tool waits until the delayed-outside phases are a second past
    // the window; the immediate phases are well inside it.
    let cap = captured as u64;
    assert!(old == 2 * cap && young >= 2 * cap, "ages: {report}");
    (sent, young, old)
}

/// `timeout SECS python3 SCRIPT ARGS` in `ns` (stdin closed), for
/// [`Background::spawn`].
pub fn python_tool(ns: &Netns, script: &str, secs: u32, args: &str) -> Command {
    let mut cmd = ns.command("sh");
    cmd.arg("-c")
        .arg(format!("exec timeout {secs} python3 {script} {args}"))
        .stdin(Stdio::null());
    cmd
}

/// Restart `i` of peer A in `p`: stops `a` (which must exit 0), starts it
/// again in `p.a` with `key` and `args` and waits for its up line; then B
/// pings A's TAP until one answer, probing every 50 ms (ping's own
/// deadline: 5 s). Returns whether B got an answer, and how long after A's
/// up line was seen.
///
/// B's ping is spawned (`ip netns exec`, a shell) before A restarts and
/// held on a read: on A's up line the shell only execs ping, so the time
/// returned is ping's, not the spawn of a process in a namespace.
pub fn restart_a(p: &Pair, a: &mut Peer, key: &Path, args: &[&str], i: usize) -> (bool, Duration) {
    use std::io::Write;
    let mut ping = Background::spawn(
        p.b.command("sh")
            .arg("-c")
            .arg(format!("read go && exec ping -c 1 -i 0.05 -w 5 {TAP_A}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let (code, _) = a.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", a.log_text());
    *a = Peer::spawn_with(&p.a, &p.dir, &[], key, args, &[]);
    assert!(
        until(Duration::from_secs(10), Duration::from_millis(5), || a
            .log_text()
            .contains(UP_LINE)),
        "restart {i}: A never came up:\n{}",
        a.log_text()
    );
    let up = Instant::now();
    let mut go = ping.child().stdin.take().expect("ping's stdin");
    go.write_all(b"go\n").expect("start ping");
    drop(go);
    let mut status = None;
    until(Duration::from_secs(6), Duration::from_millis(2), || {
        status = ping.exited();
        status.is_some()
    });
    (status.is_some_and(|st| st.success()), up.elapsed())
}

/// Starts two peers sharing [`KEY`] (written to `k.b64` in `dir`), both on
/// `tap0` with no addresses unless in their extras: A in `a` learns its
/// peer, B in `b` is given A's IPv4 underlay address. [`start_peers`] is
/// this with the TAPs' usual addresses.
pub fn start_bare_peers(
    a: &Netns,
    b: &Netns,
    dir: &Path,
    a_extra: &[&str],
    b_extra: &[&str],
) -> (Peer, Peer) {
    let key = write_key(dir, "k.b64", KEY);
    let port = format!(":{PORT}");
    let peer = format!("{UNDERLAY_A}:{PORT}");
    let mut a_args = vec![port.as_str(), "-i", "tap0"];
    a_args.extend_from_slice(a_extra);
    let mut b_args = vec![port.as_str(), peer.as_str(), "-i", "tap0"];
    b_args.extend_from_slice(b_extra);
    let pa = Peer::start(a, dir, &key, &a_args);
    let pb = Peer::start(b, dir, &key, &b_args);
    (pa, pb)
}

/// A counting UDP check with one of the tests/tools scripts (udp_seq.py,
/// udp_burst.py): starts `python3 SCRIPT recv RECV_ARGS` in `to`, waits for
/// its "ready", runs `python3 SCRIPT send SEND_ARGS` in `from`, each bounded
/// by `secs`, and returns the receiver's "received R corrupt C dup D" as
/// (R, C, D).
pub fn udp_count(
    script: &str,
    secs: u32,
    from: &Netns,
    send_args: &str,
    to: &Netns,
    recv_args: &str,
) -> (usize, usize, usize) {
    use std::io::{BufRead, BufReader};
    let mut rx = Background::spawn(
        to.command("timeout")
            .args([&secs.to_string(), "python3", script, "recv"])
            .args(recv_args.split_whitespace())
            .stdout(Stdio::piped()),
    );
    let mut out = BufReader::new(rx.child().stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "receiver did not start");
    from.exec(&format!("timeout {secs} python3 {script} send {send_args}"));
    line.clear();
    out.read_line(&mut line).unwrap();
    let _ = rx.wait_exit(Duration::from_secs(10));
    // "received R corrupt C dup D"
    let n: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(n.len(), 3, "receiver said {line:?}");
    (n[0], n[1], n[2])
}

/// Whether `systemd-analyze` is here; without it a test that needs it is
/// skipped (said on stderr), unless TAPTUN_E2E=require makes that a failure.
pub fn systemd_analyze_or_skip(test: &str) -> bool {
    if installed("systemd-analyze") {
        return true;
    }
    assert_ne!(
        std::env::var("TAPTUN_E2E").as_deref(),
        Ok("require"),
        "systemd-analyze is missing (package systemd)"
    );
    eprintln!("SKIPPED {test}: systemd-analyze is not installed");
    false
}

/// `systemd-analyze verify` of `unit` (run in `dir`) passes without a word.
pub fn assert_unit_verifies(dir: &Path, unit: &Path) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .current_dir(dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

/// The path of libfaketime, from its Debian package (dev/deps.sh installs
/// it); panics saying so when it is missing.
pub fn libfaketime() -> String {
    let out = sh_out("dpkg -L libfaketime 2>/dev/null | grep '/libfaketime\\.so\\.1$'");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty() && Path::new(&path).exists(),
        "libfaketime is not installed (sh dev/deps.sh installs faketime and libfaketime)"
    );
    path
}

/// The environment that runs a process under libfaketime at `faketime`
/// (e.g. "+1d", "@1970-01-01 00:00:00"): only the wall clock is faked, the
/// monotonic clock (timers) stays true.
pub fn faketime_env<'a>(lib: &'a str, faketime: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("LD_PRELOAD", lib),
        ("FAKETIME", faketime),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]
}

/// A tcpdump capture to a pcap file (whole packets, written as they come),
/// on interface `dev` of a namespace, with a filter; stopped by PID on drop.
pub struct Capture {
    tcpdump: Background,
    pub file: PathBuf,
    errors: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i DEV ... -w FILE FILTER` in `ns` (at most `secs`
    /// seconds; `count`: exit after that many packets) and returns once it
    /// says it is listening (at most 10 s).
    pub fn start(
        ns: &Netns,
        dev: &str,
        file: &Path,
        filter: &str,
        secs: u32,
        count: Option<u32>,
    ) -> Capture {
        let errors = file.with_extension("tcpdump.txt");
        let count = count.map_or(String::new(), |c| format!("-c {c} "));
        let mut tcpdump = Background::spawn(
            ns.command("sh")
                .arg("-c")
                .arg(format!(
                    "exec timeout {secs} tcpdump -i {dev} -n --immediate-mode -U -s 0 -B 16384 {count}-w {} '{filter}' 2>{}",
                    file.display(),
                    errors.display()
                ))
                .stdin(Stdio::null()),
        );
        let listening = until(Duration::from_secs(10), POLL, || {
            fs::read_to_string(&errors).is_ok_and(|t| t.contains("listening on"))
                || tcpdump.exited().is_some()
        });
        let said = fs::read_to_string(&errors).unwrap_or_default();
        assert!(
            listening && said.contains("listening on"),
            "tcpdump -i {dev} '{filter}' did not start: {said}"
        );
        Capture {
            tcpdump,
            file: file.to_path_buf(),
            errors,
        }
    }

    /// Waits at most `limit` for tcpdump to exit by itself (its `count`
    /// reached); true if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        self.tcpdump.wait_exit(limit).is_some()
    }

    /// Stops the capture once its file has stopped growing (for 500 ms; at
    /// most 5 s), so that nothing still on its way is lost; returns the
    /// file's path.
    pub fn stop(mut self) -> PathBuf {
        let size = || fs::metadata(&self.file).map_or(0, |m| m.len());
        let mut last = (size(), Instant::now());
        until(Duration::from_secs(5), POLL, || {
            let now = size();
            if now != last.0 {
                last = (now, Instant::now());
            }
            last.1.elapsed() >= Duration::from_millis(500)
        });
        // SIGTERM: tcpdump writes out what it holds.
        self.tcpdump.stop(Duration::from_secs(5));
        let _ = fs::remove_file(&self.errors);
        self.file.clone()
    }
}

/// One IPv4/UDP packet of a capture.
#[derive(Debug, Clone)]
pub struct UdpPacket {
    pub src: std::net::Ipv4Addr,
    pub sport: u16,
    pub dst: std::net::Ipv4Addr,
    pub dport: u16,
    pub payload: Vec<u8>,
}

/// The IPv4/UDP packets of a pcap file written by tcpdump on an Ethernet
/// (veth) interface, in order; anything else in it is skipped.
pub fn pcap_udp(file: &Path) -> Vec<UdpPacket> {
    let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(data.len() >= 24, "{}: no pcap header", file.display());
    let le = match data[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("{}: not a pcap file", file.display()),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = data[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl = u32_at(at + 8) as usize;
        let rec = &data[at + 16..(at + 16 + incl).min(data.len())];
        at += 16 + incl;
        // Ethernet, IPv4, UDP.
        if rec.len() < 14 + 28 || rec[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &rec[14..];
        let ihl = usize::from(ip[0] & 15) * 4;
        if ip[0] >> 4 != 4 || ip[9] != 17 || ip.len() < ihl + 8 {
            continue;
        }
        let ulen = usize::from(be16(ip, ihl + 4));
        let end = (ihl + ulen).min(ip.len());
        out.push(UdpPacket {
            src: std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst: std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            sport: be16(ip, ihl),
            dport: be16(ip, ihl + 2),
            payload: ip[ihl + 8..end.max(ihl + 8)].to_vec(),
        });
    }
    out
}

/// Builds the .deb into `out_dir` with `cargo deb --no-build` from the
/// binary this `cargo test` built, the one every end-to-end test runs
/// (`CARGO_BIN_EXE_taptun`: target/debug/taptun, or target/release/taptun
/// under `cargo test --release`); returns its path. The package's files,
/// unit, maintainer scripts and fields are what `cargo deb` makes of the
/// manifest for a release; only the binary is the test build. A release
/// build of every crate in a target folder of its own (the running
/// `cargo test` holds the usual one's lock) took about 80 s of each CI
/// run; `--no-build` takes no lock. cargo-deb 3.8.0 (pinned by
/// dev/deps.sh) warns that it does not support the dev profile.
pub fn build_deb(out_dir: &Path) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // target/<profile's folder>/taptun: the folder names the profile
    // ("debug" is the dev profile's).
    let bin = Path::new(env!("CARGO_BIN_EXE_taptun"));
    let (Some(profile_dir), Some(target)) = (bin.parent(), bin.parent().and_then(Path::parent))
    else {
        panic!("{}: not in a target folder", bin.display());
    };
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("{}: no profile folder", bin.display()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args([
            "deb",
            "--no-build",
            "--profile",
            profile,
            "--quiet",
            "--fast",
        ])
        .arg("--output")
        .arg(out_dir)
        .arg("--manifest-path")
        .arg(manifest.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("run cargo deb");
    assert!(
        out.status.success(),
        "cargo deb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read_dir(out_dir)
        .expect("cargo deb's output folder")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb wrote no .deb")
}

/// Each thread of `pid`: its name, nice value, and SCHED_FIFO priority if
/// it runs under that policy (`/proc/PID/task/*/stat`).
pub fn thread_sched(pid: i32) -> Vec<(String, i32, Option<i32>)> {
    let mut v = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let Ok(stat) = std::fs::read_to_string(t.expect("task").path().join("stat")) else {
            continue; // a thread that ended meanwhile
        };
        let name = &stat[stat.find('(').expect("comm") + 1..stat.rfind(')').expect("comm")];
        // After the command's ")": state is field 3, nice 19, the
        // real-time priority 40, the policy 41 (SCHED_FIFO: 1).
        let f: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
            .split_whitespace()
            .collect();
        let fifo = (f[38] == "1").then(|| f[37].parse().expect("rt_priority"));
        v.push((name.to_string(), f[16].parse().expect("nice"), fifo));
    }
    v.sort();
    v
}

/// The soft RLIMIT_RTPRIO of `pid` (`/proc/PID/limits`): the highest
/// SCHED_FIFO priority its threads may take without CAP_SYS_NICE.
pub fn rtprio_limit(pid: i32) -> u32 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max realtime priority"))
        .expect("Max realtime priority");
    line.split_whitespace()
        .nth(3)
        .expect("soft limit")
        .parse()
        .expect("a number")
}
