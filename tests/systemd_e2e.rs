//! End-to-end under a live systemd: the .deb that `cargo deb` builds is
//! installed in a Debian 12 container that boots systemd as its PID 1
//! (systemd-nspawn), and taptun@.service is driven with systemctl there:
//! READY via Type=notify, the user and capabilities it runs with, reload
//! (SIGHUP) rotating the key, stop running the --down hook while the TAP
//! still exists (KillMode=mixed), 20 clean start/stop cycles, two instances
//! side by side, `systemd-analyze security` exposure at most 2.0, and a
//! configuration error (config file, missing key in read-only /etc) that
//! stops the unit in "failed", not restarted, with one line in the journal.
//!
//! The container's root is debootstrapped once per machine into
//! /var/cache/taptun-e2e/ (keyed by a hash of suite, mirror and package
//! list; a cold build takes about a minute or two) and each run mounts an
//! overlay on it, so runs never see each other's changes. The container has
//! its own network namespace (--private-network): no traffic leaves it.
//! Teardown (also when the test fails): halt the container (SIGRTMIN+3 to
//! its PID 1, SIGKILL after 20 s), unmount the overlay, delete the run's
//! directory and cgroups.
//!
//! TAPTUN_SYSTEMD_E2E_KILLMODE=control-group overrides the unit's KillMode
//! with a drop-in, to show that the stop cycles then fail.

mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SUITE: &str = "bookworm";
/// What the container needs beyond debootstrap's minbase.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "libcap2-bin",
    "procps",
];
/// Bump to rebuild every cached root (e.g. after changing `build_root`).
const RECIPE: &str = "1";
const CACHE: &str = "/var/cache/taptun-e2e";
const CYCLES: usize = 20;
/// CAP_NET_ADMIN (12) alone, as /proc/PID/status shows capability sets.
const NET_ADMIN_ONLY: &str = "0000000000001000";

/// Polls `cond` every 100 ms for at most `limit`.
fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Why this test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    for tool in ["debootstrap", "systemd-nspawn", "nsenter", "dpkg-deb"] {
        if !sh_out(&format!("command -v {tool}")).status.success() {
            return Some(format!(
                "{tool} is not installed (scripts/deps.sh installs it)"
            ));
        }
    }
    if !cargo()
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("cargo-deb is not installed (scripts/deps.sh installs it)".into());
    }
    if cgroup_roots().is_empty() {
        return Some("no cgroup v2 hierarchy under /sys/fs/cgroup".into());
    }
    None
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The Debian mirror this machine's apt uses (deb822 or one-line sources).
fn mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(t) = fs::read_to_string(&f) else {
            continue;
        };
        // deb822: stanzas separated by blank lines.
        for stanza in t.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
                && suites.split_whitespace().any(|s| s == SUITE)
                && let Some(uri) = uris.split_whitespace().next()
            {
                return uri.trim_end_matches('/').to_string();
            }
        }
        for line in t.lines() {
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            if words.len() >= 3 && words[0] == "deb" && words[2] == SUITE {
                return words[1].trim_end_matches('/').to_string();
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// The cached root tree for this suite, mirror and package list; built with
/// debootstrap when missing (into a temporary directory, then renamed).
fn cached_root() -> PathBuf {
    let mirror = mirror();
    let recipe = format!("{RECIPE} {SUITE} {mirror} minbase {}", PACKAGES.join(","));
    let hash: String = Sha256::digest(recipe.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = Path::new(CACHE).join(format!("{SUITE}-{hash}"));
    if root.join("usr/lib/systemd/systemd").exists() {
        eprintln!("container root: cached {}", root.display());
        return root;
    }
    fs::create_dir_all(CACHE).unwrap();
    let tmp = Path::new(CACHE).join(format!("{SUITE}-{hash}.tmp{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let log = Path::new(CACHE).join(format!("{SUITE}-{hash}.log"));
    eprintln!(
        "container root: debootstrap {SUITE} from {mirror} into {} (once per machine; log {})",
        root.display(),
        log.display()
    );
    let start = Instant::now();
    let out = sh_out(&format!(
        "timeout 1200 debootstrap --variant=minbase --include={} {SUITE} {} {mirror} > {} 2>&1",
        PACKAGES.join(","),
        tmp.display(),
        log.display()
    ));
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        let tail = sh_out(&format!("tail -20 {}", log.display()));
        panic!("debootstrap failed ({}):\n{}", out.status, text(&tail));
    }
    // Nothing in the image needs the package lists or the downloaded .debs.
    let _ = sh_out(&format!(
        "rm -rf {0}/var/cache/apt/archives/*.deb {0}/var/lib/apt/lists/*",
        tmp.display()
    ));
    if fs::rename(&tmp, &root).is_err() {
        // Another run built it at the same time: use theirs.
        let _ = fs::remove_dir_all(&tmp);
    }
    eprintln!(
        "container root: built in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    root
}

/// The cgroup v2 hierarchy (/sys/fs/cgroup or, on a hybrid host,
/// /sys/fs/cgroup/unified) and the name=systemd v1 one if there is one:
/// systemd-nspawn --keep-unit puts the container below the cgroup of its
/// caller in them.
fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    let mut roots = Vec::new();
    if base.join("unified/cgroup.procs").exists() {
        roots.push(base.join("unified"));
        if base.join("systemd/cgroup.procs").exists() {
            roots.push(base.join("systemd"));
        }
    }
    roots
}

/// Removes a cgroup directory and everything below it, deepest first.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The parent pid and command name of a process, from /proc/PID/stat.
fn ppid_comm(pid: i32) -> Option<(i32, String)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let ppid = stat[close + 2..].split_whitespace().nth(1)?.parse().ok()?;
    Some((ppid, comm))
}

/// A booted container; halted and removed on drop.
struct Container {
    name: String,
    dir: PathBuf,
    merged: PathBuf,
    cgroups: Vec<PathBuf>,
    nspawn: Option<Child>,
    /// The container's PID 1 (systemd), as this host sees it.
    leader: i32,
}

impl Container {
    fn boot(lower: &Path) -> Container {
        let name = unique("ttsd");
        let dir = std::env::temp_dir().join(&name);
        let merged = dir.join("merged");
        for d in ["upper", "work", "merged"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        let mut c = Container {
            name: name.clone(),
            dir: dir.clone(),
            merged: merged.clone(),
            cgroups: Vec::new(),
            nspawn: None,
            leader: 0,
        };
        sh(&format!(
            "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {}",
            lower.display(),
            dir.join("upper").display(),
            dir.join("work").display(),
            merged.display()
        ));
        // Its own cgroup, so that systemd-nspawn --keep-unit (no host
        // systemd to ask for a scope) puts the container below it.
        let mut join = String::new();
        for root in cgroup_roots() {
            let cg = root.join(&name);
            fs::create_dir_all(&cg).unwrap();
            join.push_str(&format!("echo $$ > {}/cgroup.procs && ", cg.display()));
            c.cgroups.push(cg);
        }
        let console = fs::File::create(dir.join("console.log")).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{join}exec systemd-nspawn --quiet --boot --directory={} --machine={name} \
                 --register=no --keep-unit --private-network",
                merged.display()
            ))
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("spawn systemd-nspawn");
        let nspawn_pid = child.id() as i32;
        c.nspawn = Some(child);
        let found = until(Duration::from_secs(30), || {
            let Ok(procs) = fs::read_dir("/proc") else {
                return false;
            };
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                if let Some((ppid, comm)) = ppid_comm(pid)
                    && ppid == nspawn_pid
                    && comm == "systemd"
                {
                    c.leader = pid;
                    return true;
                }
            }
            false
        });
        assert!(found, "no systemd in the container:\n{}", c.console());
        // Booted: running, or degraded (some unit that a container lacks).
        let booted = until(Duration::from_secs(90), || {
            let o = c.run_out("systemctl is-system-running");
            let s = String::from_utf8_lossy(&o.stdout);
            s.starts_with("running") || s.starts_with("degraded")
        });
        assert!(booted, "the container did not boot:\n{}", c.console());
        c
    }

    fn console(&self) -> String {
        fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// Runs `cmd` with sh inside the container (all of PID 1's namespaces,
    /// a clean environment), for at most 60 s.
    fn run_out(&self, cmd: &str) -> Output {
        Command::new("timeout")
            .args(["60", "nsenter", "-t", &self.leader.to_string(), "-a"])
            .args([
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "SYSTEMD_PAGER=",
            ])
            .args(["sh", "-c", cmd])
            .stdin(Stdio::null())
            .output()
            .expect("spawn nsenter")
    }

    /// As `run_out`, but panics when `cmd` fails; its stdout.
    fn run(&self, cmd: &str) -> String {
        let o = self.run_out(cmd);
        assert!(o.status.success(), "in the container: {cmd}\n{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn has_link(&self, dev: &str) -> bool {
        self.run_out(&format!("ip link show dev {dev}"))
            .status
            .success()
    }

    /// The journal lines of one run (invocation) of a unit.
    fn journal(&self, invocation: &str) -> String {
        self.run(&format!(
            "journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={invocation}"
        ))
    }

    fn halt(&mut self) {
        let Some(mut child) = self.nspawn.take() else {
            return;
        };
        if self.leader > 0 {
            // SIGRTMIN+3: systemd halts the container cleanly.
            let _ = sh_out(&format!("kill -s RTMIN+3 {}", self.leader));
        }
        let exited = until(Duration::from_secs(20), || {
            child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            // Killing PID 1 kills every process of its pid namespace.
            if self.leader > 0 {
                let _ = sh_out(&format!("kill -KILL {}", self.leader));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.halt();
        let mounted = || {
            fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .contains(&format!(" {} ", self.merged.display()))
        };
        until(Duration::from_secs(10), || {
            !mounted()
                || sh_out(&format!("umount {}", self.merged.display()))
                    .status
                    .success()
        });
        if mounted() {
            // Never delete through a live overlay: that would reach the cache.
            let _ = sh_out(&format!("umount -l {}", self.merged.display()));
        }
        if !mounted() {
            let _ = fs::remove_dir_all(&self.dir);
        }
        for cg in &self.cgroups {
            until(Duration::from_secs(5), || {
                remove_cgroup(cg);
                !cg.exists()
            });
        }
        let _ = fs::remove_dir_all(format!("/run/systemd/nspawn/propagate/{}", self.name));
    }
}

/// Builds the .deb (release, own target directory: the running `cargo test`
/// may hold the lock of the usual one); its path.
fn build_deb() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target"))
        .join("systemd-e2e");
    let out_dir = target.join("debian");
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir).unwrap();
    let start = Instant::now();
    let out = cargo()
        .args(["deb", "--locked", "--quiet", "--fast", "--output"])
        .arg(&out_dir)
        .arg("--manifest-path")
        .arg(manifest.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo deb");
    assert!(out.status.success(), "cargo deb failed:\n{}", text(&out));
    let deb = fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb wrote no .deb");
    eprintln!(
        "built {} in {:.0} s",
        deb.display(),
        start.elapsed().as_secs_f64()
    );
    deb
}

/// The .deb holds what the brief says, where it says.
fn check_deb_contents(deb: &Path) {
    let list = sh(&format!("dpkg-deb -c {}", deb.display()));
    for path in [
        "./usr/bin/taptun",
        "./lib/systemd/system/taptun@.service",
        "./usr/lib/sysusers.d/taptun.conf",
        "./usr/share/man/man1/taptun.1.gz",
        "./usr/share/man/man5/taptun.conf.5.gz",
        "./usr/share/bash-completion/completions/taptun",
        "./usr/share/doc/taptun/examples/taptun.conf.example",
        "./usr/share/doc/taptun/examples/taptun.up.example",
        "./usr/share/taptun/l2_bridge_up.sh",
        "./usr/share/taptun/l2_bridge_down.sh",
        "./usr/share/taptun/l3_nat_up.sh",
        "./usr/share/taptun/l3_proxy_arp_down.sh",
        "./usr/share/taptun/taptun-args.sh",
        "./usr/share/taptun/taptun-rules.sh",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} is not in the .deb:\n{list}"
        );
    }
    let depends = sh(&format!("dpkg-deb -f {} Depends", deb.display()));
    assert!(depends.contains("iproute2"), "Depends: {depends}");
}

/// The --down hook: says when it starts, takes a moment, then says whether
/// the TAP still exists (it must: taptun removes it only after the hook).
const DOWN_HOOK: &str = r#"#!/bin/sh
echo "TT-DOWN-START $TAPTUN_DEV"
sleep 0.2
if ip link show dev "$TAPTUN_DEV" >/dev/null 2>&1; then
    echo "TT-DOWN-DONE $TAPTUN_DEV present"
else
    echo "TT-DOWN-DONE $TAPTUN_DEV absent"
fi
"#;

/// Writes /etc/taptun/NAME.conf (and a new key) for taptun@NAME.
fn configure(c: &Container, name: &str, port: u16) {
    let etc = c.merged.join("etc/taptun");
    fs::write(
        etc.join(format!("{name}.conf")),
        format!(
            "# taptun@{name}\nkey = /etc/taptun/{name}.key\nlocal = :{port}  # every address\n\
             dev = tap{name}\ndown = /etc/taptun/test.down\n"
        ),
    )
    .unwrap();
    c.run(&format!(
        "taptun genkey /etc/taptun/{name}.key >/dev/null && chown taptun:taptun /etc/taptun/{name}.key"
    ));
}

/// Starts taptun@NAME; its invocation id.
fn start(c: &Container, name: &str) -> String {
    c.run(&format!("systemctl start taptun@{name}"));
    c.run(&format!("systemctl show -P InvocationID taptun@{name}"))
        .trim()
        .to_string()
}

/// Stops taptun@NAME (one run, `invocation`); why it was not clean, if not.
fn stop_problem(c: &Container, name: &str, invocation: &str) -> Option<String> {
    let o = c.run_out(&format!("systemctl stop taptun@{name}"));
    if !o.status.success() {
        return Some(format!("systemctl stop failed: {}", text(&o)));
    }
    let dev = format!("tap{name}");
    let want = [
        format!("TT-DOWN-START {dev}"),
        format!("TT-DOWN-DONE {dev} present"),
        "--down hook done".to_string(),
    ];
    let mut log = String::new();
    // journald takes the lines from the stream a little later.
    let complete = until(Duration::from_secs(5), || {
        log = c.journal(invocation);
        want.iter().all(|w| log.contains(w.as_str())) || log.contains("--down hook `")
    });
    let state = c
        .run_out(&format!("systemctl is-active taptun@{name}"))
        .stdout;
    let state = String::from_utf8_lossy(&state).trim().to_string();
    if !complete || !want.iter().all(|w| log.contains(w.as_str())) {
        return Some(format!("the --down hook did not complete:\n{log}"));
    }
    if c.has_link(&dev) {
        return Some(format!("{dev} still exists after the stop"));
    }
    if state != "inactive" {
        return Some(format!("state after stop: {state}"));
    }
    None
}

/// A field of /proc/PID/status inside the container.
fn proc_status(c: &Container, pid: &str, field: &str) -> String {
    let status = c.run(&format!("cat /proc/{pid}/status"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn e2e_systemd_unit_in_container() {
    require_e2e!();
    if let Some(why) = missing_tools() {
        if std::env::var("TAPTUN_E2E").as_deref() == Ok("require") {
            panic!(
                "e2e_systemd_unit_in_container: prerequisite missing with TAPTUN_E2E=require: {why}"
            );
        }
        eprintln!("SKIPPED e2e_systemd_unit_in_container: {why}");
        return;
    }
    let t0 = Instant::now();
    let deb = build_deb();
    check_deb_contents(&deb);
    let lower = cached_root();
    let t_boot = Instant::now();
    let c = Container::boot(&lower);
    eprintln!(
        "container {} booted in {:.1} s",
        c.name,
        t_boot.elapsed().as_secs_f64()
    );

    // Install the package as an admin would; udev would make the TUN
    // device usable by the service user, but a container has no udev.
    fs::copy(&deb, c.merged.join("root/taptun.deb")).unwrap();
    c.run("dpkg -i /root/taptun.deb");
    c.run("chmod 0666 /dev/net/tun");
    let uid = c.run("id -u taptun").trim().to_string();
    assert_eq!(
        c.run("stat -c %U:%G:%a /etc/taptun").trim(),
        "root:taptun:750"
    );
    // Installed, but nothing enabled or started.
    let enabled = c.run_out("systemctl is-enabled taptun@a.service");
    assert_eq!(
        String::from_utf8_lossy(&enabled.stdout).trim(),
        "disabled",
        "{}",
        text(&enabled)
    );
    assert_eq!(
        c.run("systemctl list-units --all --no-legend 'taptun@*'")
            .trim(),
        "",
        "the package started something"
    );
    if let Ok(mode) = std::env::var("TAPTUN_SYSTEMD_E2E_KILLMODE") {
        eprintln!("overriding KillMode={mode} (expect unclean stops)");
        fs::create_dir_all(c.merged.join("etc/systemd/system/taptun@.service.d")).unwrap();
        fs::write(
            c.merged
                .join("etc/systemd/system/taptun@.service.d/killmode.conf"),
            format!("[Service]\nKillMode={mode}\n"),
        )
        .unwrap();
        c.run("systemctl daemon-reload");
    }
    let hook = c.merged.join("etc/taptun/test.down");
    fs::write(&hook, DOWN_HOOK).unwrap();
    c.run("chmod 0755 /etc/taptun/test.down");
    configure(&c, "a", 9201);
    configure(&c, "b", 9202);

    // Start: `systemctl start` of a Type=notify unit returns after READY=1,
    // which taptun sends once the TAP is up.
    let inv = start(&c, "a");
    assert_eq!(c.run("systemctl is-active taptun@a").trim(), "active");
    assert!(c.has_link("tapa"), "READY before the TAP existed");
    let status = c.run("systemctl show -P StatusText taptun@a");
    assert!(status.contains("tapa up"), "status text: {status}");

    // Who it runs as: the taptun user, CAP_NET_ADMIN and nothing else.
    let pid = c
        .run("systemctl show -P MainPID taptun@a")
        .trim()
        .to_string();
    let uids = proc_status(&c, &pid, "Uid");
    assert!(
        uids.split_whitespace().all(|u| u == uid),
        "Uid: {uids} (taptun is {uid})"
    );
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(proc_status(&c, &pid, set), NET_ADMIN_ONLY, "{set}");
    }
    eprintln!(
        "getpcaps: {}",
        c.run(&format!("getpcaps {pid} 2>&1")).trim()
    );

    // Reload = SIGHUP: taptun re-reads the key file, now a new key.
    c.run(
        "taptun genkey /etc/taptun/a.key.new >/dev/null && chown taptun:taptun /etc/taptun/a.key.new \
         && mv /etc/taptun/a.key.new /etc/taptun/a.key",
    );
    c.run("systemctl reload taptun@a");
    let rotated = until(Duration::from_secs(10), || {
        c.journal(&inv)
            .contains("SIGHUP: new key from /etc/taptun/a.key in use")
    });
    assert!(rotated, "no key rotation logged:\n{}", c.journal(&inv));
    assert_eq!(c.run("systemctl is-active taptun@a").trim(), "active");

    // Stop: the --down hook runs to its end while the TAP still exists.
    if let Some(why) = stop_problem(&c, "a", &inv) {
        panic!("first stop not clean: {why}");
    }

    // Again and again: every stop clean.
    let t_cycles = Instant::now();
    let mut unclean = Vec::new();
    for i in 0..CYCLES {
        let inv = start(&c, "a");
        if let Some(why) = stop_problem(&c, "a", &inv) {
            unclean.push(format!("cycle {i}: {why}"));
        }
    }
    eprintln!(
        "{CYCLES} start/stop cycles in {:.1} s, {} unclean",
        t_cycles.elapsed().as_secs_f64(),
        unclean.len()
    );
    assert!(
        unclean.is_empty(),
        "{} of {CYCLES} stop cycles unclean:\n{}",
        unclean.len(),
        unclean.join("\n")
    );

    // Two instances side by side, each with its port and TAP.
    let inv_a = start(&c, "a");
    let inv_b = start(&c, "b");
    for n in ["a", "b"] {
        assert_eq!(
            c.run(&format!("systemctl is-active taptun@{n}")).trim(),
            "active"
        );
        assert!(c.has_link(&format!("tap{n}")));
    }
    let udp = c.run("ss -Hlun");
    for port in [9201, 9202] {
        assert!(
            udp.contains(&format!(":{port} ")),
            "port {port} not bound:\n{udp}"
        );
    }
    // Their status sockets share the unit's RuntimeDirectory, /run/taptun
    // (/run itself is read-only under ProtectSystem=strict).
    for n in ["a", "b"] {
        let s = c.run(&format!("taptun status tap{n}"));
        assert!(s.contains(&format!("interface: tap{n}")), "{s}");
    }
    // Stopping one leaves the other's socket (RuntimeDirectoryPreserve=yes).
    for (n, inv) in [("b", &inv_b), ("a", &inv_a)] {
        if let Some(why) = stop_problem(&c, n, inv) {
            panic!("taptun@{n}: stop not clean: {why}");
        }
        if n == "b" {
            let s = c.run("taptun status tapa");
            assert!(s.contains("interface: tapa"), "after b stopped: {s}");
        }
    }

    // Configuration errors stop the unit: exit status 2, which
    // RestartPreventExitStatus=2 keeps from restarting (RestartSec=5), and
    // the line that says what to change in the journal.
    let etc = c.merged.join("etc/taptun");
    let bad = [
        (
            "badconf",
            "key = /etc/taptun/a.key\nlocal = :9203\n\nmtu = abc\n",
            "/etc/taptun/badconf.conf:4: mtu = \"abc\": expected a number",
        ),
        (
            "nokey",
            "key = /etc/taptun/nokey.key\nlocal = :9204\n",
            "key file /etc/taptun/nokey.key: cannot create it",
        ),
    ];
    for (name, conf, _) in bad {
        fs::write(etc.join(format!("{name}.conf")), conf).unwrap();
        let o = c.run_out(&format!("systemctl start taptun@{name}"));
        assert!(!o.status.success(), "taptun@{name} started");
    }
    // Past RestartSec: a restart would have happened by now.
    std::thread::sleep(Duration::from_secs(7));
    for (name, _, line) in bad {
        let unit = format!("taptun@{name}");
        let show = c.run(&format!(
            "systemctl show --property=ActiveState,NRestarts,ExecMainStatus {unit}"
        ));
        let mut props: Vec<&str> = show.split_whitespace().collect();
        props.sort();
        assert_eq!(
            props,
            ["ActiveState=failed", "ExecMainStatus=2", "NRestarts=0"],
            "{unit}"
        );
        let mut log = String::new();
        let logged = until(Duration::from_secs(5), || {
            log = c.run(&format!("journalctl --no-pager -o cat -u {unit}"));
            log.contains(line)
        });
        assert!(logged, "{unit}: no {line:?} in the journal:\n{log}");
        eprintln!("{unit}: {}", log.trim().replace('\n', " | "));
        c.run(&format!("systemctl reset-failed {unit}"));
    }

    // Hardening, as systemd rates it.
    let report = c.run("systemd-analyze security --no-pager taptun@a.service 2>&1");
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for taptun@a.service:")
                .nth(1)
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{report}");

    drop(c);
    eprintln!("total {:.1} s", t0.elapsed().as_secs_f64());
}
