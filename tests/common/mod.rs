//! The end-to-end rig: network namespaces joined by a veth pair, real
//! `taptun` processes, and teardown on drop (even when a test fails).
//!
//! Every namespace and interface name carries the pid and a counter, so
//! tests may run in parallel. Traffic goes only to addresses inside the
//! namespaces a test creates.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const TAPTUN: &str = env!("CARGO_BIN_EXE_taptun");
/// The wire test vectors' 32-byte key.
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
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
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
        let start = Instant::now();
        while start.elapsed() < limit {
            if self
                .exec_out(&format!("ping -c 1 -W 1 {addr}"))
                .status
                .success()
            {
                return true;
            }
        }
        false
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
    pub dir: PathBuf,
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
        let dir = std::env::temp_dir().join(unique("taptun-e2e-"));
        fs::create_dir_all(&dir).unwrap();
        Pair { a, b, dir }
    }

    /// Writes a key file (mode 0600) in the test's directory.
    pub fn key(&self, name: &str, base64: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.join(name);
        fs::write(&p, format!("{base64}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A key for tests (the wire vectors' 32-byte key).
pub const KEY: &str = "VkZylFBLiEGy9hPfHHcJligUEZkjp47OoT9MyHt79iM=";
/// Another key.
pub const OTHER_KEY: &str = "Pg1u8vWNsxsk6hwawh1scAx4PnvtzOe81PamXn89ZMs=";

/// A running taptun process in a namespace; killed on drop.
pub struct Peer {
    pub child: Option<Child>,
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
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(wrapper)
            .arg(TAPTUN)
            .arg(key)
            .args(args)
            .args(["--log-level", "debug"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start taptun");
        let dev = args
            .windows(2)
            .find(|w| w[0] == "-i" || w[0] == "--dev")
            .map(|w| w[1].to_string())
            .unwrap_or_else(|| "tap0".into());
        Peer {
            child: Some(child),
            log,
            dev,
            ns: ns.name.clone(),
        }
    }

    /// Waits until the TAP is up (log line and link), at most 10 s.
    pub fn wait_up(&mut self, ns: &Netns) {
        let start = Instant::now();
        loop {
            if self.log_text().contains(" up, mtu ") && ns.has_link(&self.dev) {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "taptun exited with {st} before its TAP was up:\n{}",
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "TAP never came up:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by PID.
    pub fn signal(&self, sig: &str) {
        sh(&format!("kill -{sig} {}", self.pid()));
    }

    /// SIGTERM, then waits up to `limit`; returns the exit code and how long it took.
    pub fn stop(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        self.signal("TERM");
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return (st.code(), start.elapsed());
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return (None, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
    let data = p.dir.join(format!("data{port}"));
    sh(&format!(
        "head -c {mb}000000 /dev/urandom > {}",
        data.display()
    ));
    let want = sh(&format!("sha256sum < {}", data.display()));
    let out = p.dir.join(format!("got{port}"));
    let mut server = to
        .command("sh")
        .arg("-c")
        .arg(format!(
            "timeout 60 socat -u TCP-LISTEN:{port},reuseaddr - | sha256sum > {}",
            out.display()
        ))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    from.exec(&format!(
        "timeout 60 socat -u FILE:{} TCP:{to_ip}:{port},retry=20,interval=0.2",
        data.display()
    ));
    assert!(server.wait().unwrap().success(), "receiver failed");
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        want,
        "data corrupted in the tunnel"
    );
}
