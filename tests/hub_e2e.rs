//! End-to-end tests of `taptun hub` (issue #20) in network namespaces, with
//! the kernel's bridge as the switch: a hub site with a LAN host on bridge
//! `br0`, three spokes (spoke `a` behind a NAT namespace), a spoke with a
//! wrong key, and an attacker replaying one spoke's datagrams from
//! another's address; SIGHUP adding and removing spokes under a running
//! ping, and rotating one spoke's key under a ping; a restarted hub
//! reaching its spokes at once through its state file; the warn lines
//! that say why nothing crosses (a spoke's wrong key, an unknown address's,
//! a spoke's clock 10 s off under libfaketime).
//!
//! Layout (addresses):
//!
//! ```text
//!  lan (10.50.0.100) ─ br0 ─ tt-a, tt-b, tt-c   [hub ns, underlay 192.0.2.1 on bridge ul]
//!                                  │ ul: 192.0.2.11 b, 192.0.2.12 c, 192.0.2.13 w (wrong key),
//!                                  │     192.0.2.20 nat ── 10.9.0.2 a (MASQUERADE)
//!  spokes' TAPs: a 10.50.0.11, b 10.50.0.12, c 10.50.0.13, w 10.50.0.14
//! ```

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HUB_IP: &str = "192.0.2.1";
const LAN_IP: &str = "10.50.0.100";
const NAT_OUT: &str = "192.0.2.20";

/// Keys of the three spokes, and one no spoke file holds.
const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
const KEY_C: &str = "Q0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0M=";
const KEY_WRONG: &str = "V1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1c=";

/// A spoke of the lab: its namespace, TAP address, underlay address.
struct SpokeNs {
    name: &'static str,
    ns: Netns,
    tap_ip: &'static str,
}

/// The lab: namespaces, bridge, NAT; no taptun yet. Field order is drop
/// order: the processes (held by the tests) go first, then these.
struct Lab {
    hub: Netns,
    lan: Netns,
    _nat: Netns,
    spokes: Vec<SpokeNs>,
    /// The spoke with the wrong key.
    w: Netns,
    dir: TempDir,
    /// The hub's key folder.
    keys: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let hub = Netns::new("H");
        let lan = Netns::new("L");
        let nat = Netns::new("N");
        hub.exec(
            "ip link add br0 type bridge stp_state 0 && ip link set br0 up \
             && ip link add ul type bridge stp_state 0 && ip link set ul up \
             && ip addr add 192.0.2.1/24 dev ul",
        );
        veth(&hub, "lan0", &lan, "e0");
        hub.exec("ip link set lan0 master br0");
        lan.exec(&format!("ip addr add {LAN_IP}/24 dev e0"));
        // The NAT box: outside on the hub's underlay, inside a /24 of its own.
        veth(&hub, "unat", &nat, "out0");
        hub.exec("ip link set unat master ul");
        nat.exec(&format!(
            "ip addr add {NAT_OUT}/24 dev out0 && sysctl -qw net.ipv4.ip_forward=1 \
             && iptables -t nat -A POSTROUTING -o out0 -j MASQUERADE"
        ));
        let mut spokes = Vec::new();
        let a = Netns::new("a");
        veth(&nat, "in0", &a, "u0");
        nat.exec("ip addr add 10.9.0.1/24 dev in0");
        a.exec("ip addr add 10.9.0.2/24 dev u0 && ip route add default via 10.9.0.1");
        spokes.push(SpokeNs {
            name: "a",
            ns: a,
            tap_ip: "10.50.0.11",
        });
        for (i, (name, tap_ip)) in [("b", "10.50.0.12"), ("c", "10.50.0.13")]
            .into_iter()
            .enumerate()
        {
            let ns = Netns::new(name);
            veth(&hub, &format!("u{name}"), &ns, "u0");
            hub.exec(&format!("ip link set u{name} master ul"));
            ns.exec(&format!("ip addr add 192.0.2.{}/24 dev u0", 11 + i));
            spokes.push(SpokeNs { name, ns, tap_ip });
        }
        let w = Netns::new("w");
        veth(&hub, "uw", &w, "u0");
        hub.exec("ip link set uw master ul");
        w.exec("ip addr add 192.0.2.13/24 dev u0");
        for ns in spokes.iter().map(|s| &s.ns).chain([&w, &lan]) {
            // A broadcast ping is answered (the default ignores it).
            ns.exec("sysctl -qw net.ipv4.icmp_echo_ignore_broadcasts=0");
        }
        let dir = TempDir::new("taptun-hub-e2e-");
        let keys = dir.join("hub.d");
        fs::create_dir_all(&keys).unwrap();
        Lab {
            hub,
            lan,
            _nat: nat,
            spokes,
            w,
            dir,
            keys,
        }
    }

    fn spoke(&self, name: &str) -> &SpokeNs {
        self.spokes.iter().find(|s| s.name == name).unwrap()
    }

    /// Writes spoke `name`'s key in the hub's folder and the spoke's own copy.
    fn key(&self, name: &str, b64: &str) -> PathBuf {
        write_key(&self.keys, &format!("{name}.key"), b64);
        write_key(&self.dir, &format!("spoke-{name}.key"), b64)
    }

    /// Starts the hub with `extra` options; waits for its spokes' TAPs.
    fn start_hub(&self, extra: &[&str], expect: &[&str]) -> Hub {
        let socket = self.dir.join(format!("{}.sock", unique("hub")));
        let mut args: Vec<String> = vec![
            self.keys.display().to_string(),
            format!(":{PORT}"),
            "--bridge".into(),
            "br0".into(),
            "--log-level".into(),
            "debug".into(),
            "--status-socket".into(),
            socket.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn_hub(&strs(&args), socket, expect)
    }

    /// Starts `taptun hub ARGS` whose status socket is `socket`; waits for
    /// its spokes' TAPs.
    fn spawn_hub(&self, args: &[&str], socket: PathBuf, expect: &[&str]) -> Hub {
        let log = self.dir.join(unique("hublog"));
        let logf = fs::File::create(&log).unwrap();
        let process = Background::spawn(
            self.hub
                .command(TAPTUN)
                .arg("hub")
                .args(args)
                .stdin(Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf),
        );
        let mut hub = Hub {
            process,
            log,
            socket,
        };
        let up = until(Duration::from_secs(15), POLL, || {
            if let Some(st) = hub.process.exited() {
                panic!("hub exited with {st}:\n{}", hub.log_text());
            }
            hub.log_text().contains("hub on UDP")
                && expect.iter().all(|n| self.hub.has_link(&format!("tt-{n}")))
        });
        assert!(up, "hub never came up:\n{}", hub.log_text());
        hub
    }

    /// Starts spoke `name` (today's point-to-point taptun) towards the hub.
    fn start_spoke(&self, ns: &Netns, key: &Path, tap_ip: &str, extra: &[&str]) -> Peer {
        Peer::start(ns, &self.dir, key, &strs(&spoke_args(tap_ip, extra)))
    }
}

/// A running hub; stopped (by PID) on drop.
struct Hub {
    process: Background,
    log: PathBuf,
    socket: PathBuf,
}

impl Hub {
    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status(&self, form: &str) -> String {
        self.status_of(self.socket.to_str().unwrap(), form)
    }

    /// `taptun status TARGET [form]`.
    fn status_of(&self, target: &str, form: &str) -> String {
        let out = Command::new(TAPTUN)
            .arg("status")
            .arg(target)
            .args((!form.is_empty()).then_some(form))
            .output()
            .unwrap();
        assert!(out.status.success(), "taptun status: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn signal(&self, sig: &str) {
        sh(&format!("kill -{sig} {}", self.process.pid()));
    }

    /// Spoke `name`'s object in the JSON status.
    fn spoke_json(&self, name: &str) -> String {
        let json = self.status("--json");
        let at = json
            .find(&format!("{{\"name\":\"{name}\""))
            .unwrap_or_else(|| panic!("no spoke {name} in {json}"));
        let end = at + json[at..].find("}}").unwrap() + 2;
        json[at..end].to_string()
    }

    fn spoke_addr(&self, name: &str) -> String {
        let j = self.spoke_json(name);
        let at = j.find("\"peer\":").unwrap() + 7;
        j[at..]
            .split(',')
            .next()
            .unwrap()
            .trim_matches('"')
            .to_string()
    }
}

/// 8 MB over TCP from `from` to `to_ip` in `to`, sha256-compared.
fn tcp_8mb(dir: &Path, from: &Netns, to: &Netns, to_ip: &str, port: u16) {
    common::tcp_transfer_in(dir, from, to, to_ip, port, 8);
}

/// The whole three-site scenario, in `cipher` (None: the HMAC wire).
fn three_sites(cipher: Option<&str>) {
    let lab = Lab::new();
    let mode: Vec<&str> = match cipher {
        Some(c) => vec!["--cipher", c],
        None => vec![],
    };
    let keys = [("a", KEY_A), ("b", KEY_B), ("c", KEY_C)];
    let spoke_keys: Vec<PathBuf> = keys.iter().map(|(n, k)| lab.key(n, k)).collect();
    fs::write(lab.keys.join("README"), "not a key\n").unwrap();
    let hub = lab.start_hub(&mode, &["a", "b", "c"]);
    assert!(
        hub.log_text().contains("ignoring README"),
        "{}",
        hub.log_text()
    );
    let mut peers = Vec::new();
    for (s, key) in lab.spokes.iter().zip(&spoke_keys) {
        peers.push(lab.start_spoke(&s.ns, key, s.tap_ip, &mode));
    }
    // The wrong key: a spoke the hub has no file for.
    let wrong = write_key(&lab.dir, "wrong.key", KEY_WRONG);
    let _w = lab.start_spoke(&lab.w, &wrong, "10.50.0.14", &mode);

    // Each spoke reaches the LAN host and the other spokes (ARP resolves
    // through the bridge's flooding first: every ping starts with one).
    for s in &lab.spokes {
        assert!(
            s.ns.ping_until(LAN_IP, Duration::from_secs(10)),
            "spoke {} cannot reach the LAN host:\n{}",
            s.name,
            hub.log_text()
        );
        for o in &lab.spokes {
            if o.name != s.name {
                assert!(
                    s.ns.ping_until(o.tap_ip, Duration::from_secs(5)),
                    "spoke {} cannot reach spoke {}:\n{}",
                    s.name,
                    o.name,
                    hub.log_text()
                );
            }
        }
    }
    // The NAT spoke is known by the NAT's outside address.
    assert!(
        hub.spoke_addr("a").starts_with(NAT_OUT),
        "{}",
        hub.status("")
    );
    // ARP: with its neighbour table flushed, the LAN host's ARP requests
    // (broadcasts) reach each spoke, which answers with its TAP's MAC.
    lab.lan.exec("ip neigh flush dev e0");
    for s in &lab.spokes {
        assert!(
            lab.lan.ping(s.tap_ip, 1),
            "LAN host cannot reach spoke {}",
            s.name
        );
        let mac = s.ns.exec("cat /sys/class/net/tap0/address");
        let neigh = lab.lan.exec(&format!("ip neigh show {}", s.tap_ip));
        assert!(
            neigh.contains(mac.trim()),
            "spoke {}: {neigh} (want {mac})",
            s.name
        );
    }
    // A broadcast from the LAN reaches every spoke: each answers it.
    let out = lab.lan.exec_out("ping -b -c 3 -i 0.3 -W 2 10.50.0.255");
    let text = String::from_utf8_lossy(&out.stdout);
    for s in &lab.spokes {
        assert!(
            text.contains(&format!("from {}", s.tap_ip)),
            "spoke {} did not answer the broadcast: {text}",
            s.name
        );
    }
    // The wrong key gets nothing through, and no TAP.
    assert!(!lab.w.ping("10.50.0.100", 2), "the wrong key got through");
    let links = lab.hub.exec("ip -o link show");
    assert_eq!(
        links.matches(": tt-").count(),
        3,
        "a TAP for the wrong key? {links}"
    );
    let json = hub.status("--json");
    assert!(json_num(&json, "unmatched") > 0.0, "{json}");
    // Never taken for a spoke; named once, as an address no key opens.
    let log = hub.log_text();
    assert!(!log.contains("learned 192.0.2.13"), "{log}");
    assert!(
        lines_with(&log, &["192.0.2.13", "no spoke's key"]).len() <= 1,
        "{log}"
    );

    // 8 MB spoke→LAN (through the NAT) and spoke→spoke, each checked.
    tcp_8mb(&lab.dir, &lab.spoke("a").ns, &lab.lan, LAN_IP, 5001);
    tcp_8mb(
        &lab.dir,
        &lab.spoke("b").ns,
        &lab.spoke("c").ns,
        lab.spoke("c").tap_ip,
        5002,
    );

    // Spoke b's datagrams replayed from spoke c's address move nothing.
    let (b_addr, c_addr) = (hub.spoke_addr("b"), hub.spoke_addr("c"));
    // Refused by b's own checks: its replay window, or its freshness check
    // when a slow machine replays them more than --max-age later.
    let refused_by_b = || {
        let j = hub.spoke_json("b");
        json_num(&j, "replay") + json_num(&j, "stale")
    };
    let before = refused_by_b();
    let ready = lab.dir.join("ready");
    let dgs = lab.dir.join("captured");
    let tools = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools");
    // Captured as they leave b (ETH_P_ALL: a packet socket sees outgoing
    // frames only so), data frames only (longer than a keepalive; with a
    // cipher, transport datagrams only: not a renewal's initiation). A GSO
    // batch of b's is split into its datagrams (`udp_datagrams`): taken
    // whole, the batch was one blob no key opens, and the count came up
    // one replay short.
    let capture_py = format!(
        r#"
import socket, sys, time
sys.path.insert(0, "{tools}")
import taptun_wire as w
s = w.packet_socket("u0", 3); s.settimeout(0.1)
open("{ready}", "w").write("ready")
got, end = [], time.time() + 10
while time.time() < end and len(got) < 5:
    try:
        pkt, addr = s.recvfrom(70000)
    except socket.timeout:
        continue
    u = w.udp_datagrams(pkt)
    if addr[2] != socket.PACKET_OUTGOING or not u:
        continue
    if socket.inet_ntoa(u[0][16:20]) != "{HUB_IP}" or u[2] != {PORT}:
        continue
    for dg in u[3]:
        if len(dg) > w.KEEPALIVE and (not {transport_only} or dg[0] == 4):
            got.append(dg)
open("{out}", "w").write("".join(x.hex() + chr(10) for x in got[:5]))
"#,
        ready = ready.display(),
        out = dgs.display(),
        transport_only = if cipher.is_some() { "True" } else { "False" },
    );
    let script = lab.dir.join("capture.py");
    fs::write(&script, capture_py).unwrap();
    let mut capture = Background::spawn(lab.spoke("b").ns.command("python3").arg(&script));
    assert!(until(Duration::from_secs(10), POLL, || ready.exists()));
    // Traffic for the capture: b pings the LAN host.
    assert!(lab.spoke("b").ns.ping(LAN_IP, 8));
    capture.finish(Duration::from_secs(20), "capture");
    let captured = fs::read_to_string(&dgs).unwrap().lines().count();
    // Sent again from c's namespace, from c's address and port.
    let replay_py = format!(
        "import sys; sys.path.insert(0, '{tools}'); import taptun_wire as w; \
         d = [bytes.fromhex(l) for l in open('{}').read().split()]; \
         w.send_spoofed(d, '192.0.2.12', {PORT}, '{HUB_IP}', {PORT}, 0)",
        dgs.display()
    );
    lab.spoke("c")
        .ns
        .exec(&format!("python3 -c \"{replay_py}\""));
    assert!(captured >= 5, "captured {captured}");
    // b's own replay window refused every copy (with a cipher: the session
    // index each names finds b at once, and b's counter window refuses it).
    let refused = captured;
    // (Counted as `before` was: a stale drop of b's before the replay
    // must not make the count come up short.)
    assert!(
        until(Duration::from_secs(2), POLL, || refused_by_b()
            >= before + refused as f64),
        "replays not refused by b's window: {}",
        hub.status("")
    );
    assert_eq!(hub.spoke_addr("b"), b_addr);
    assert_eq!(hub.spoke_addr("c"), c_addr);
    assert!(!hub.log_text().contains("moved"), "{}", hub.log_text());
    // And everyone still gets through.
    for s in &lab.spokes {
        assert!(
            s.ns.ping(LAN_IP, 1),
            "spoke {} lost after the replay",
            s.name
        );
    }
    // status: the header line, one block per spoke; Prometheus per spoke.
    let text = hub.status("");
    assert!(text.starts_with("hub: "), "{text}");
    assert!(text.contains(", 3 spokes"), "{text}");
    for n in ["a", "b", "c"] {
        assert!(
            text.contains(&format!("spoke: {n}\n  tap: tt-{n}")),
            "{text}"
        );
    }
    // Listed among a folder's tunnels (`taptun status FOLDER`, as without
    // a name for /run/taptun): its report, and its object in "tunnels".
    let folder = hub.socket.parent().unwrap().to_str().unwrap().to_string();
    let all = hub.status_of(&folder, "");
    assert!(all.contains("hub: ") && all.contains("spoke: c"), "{all}");
    let all = hub.status_of(&folder, "--json");
    assert!(all.starts_with("{\"tunnels\":[{\"hub\":"), "{all}");
    let prom = hub.status("--prometheus");
    assert!(prom.contains("spoke=\"a\""), "{prom}");
    assert!(prom.contains("taptun_hub_spoke_rx_frames_total{"), "{prom}");
    // With a cipher: each spoke's session (the spokes initiated: they
    // know the hub's address), not a clock offset.
    if cipher.is_some() {
        assert_eq!(
            text.matches("  session: responder, age ").count(),
            3,
            "{text}"
        );
        assert!(!text.contains("clock offset"), "{text}");
        assert!(
            prom.contains("taptun_hub_spoke_latest_handshake_seconds{"),
            "{prom}"
        );
    }
    drop(peers);
}

#[test]
fn e2e_hub_three_sites_hmac() {
    require_e2e!();
    three_sites(None);
}

#[test]
fn e2e_hub_three_sites_aes_256_gcm() {
    require_e2e!();
    three_sites(Some("aes-256-gcm"));
}

#[test]
fn e2e_hub_three_sites_chacha20_poly1305() {
    require_e2e!();
    three_sites(Some("chacha20-poly1305"));
}

/// Runs `ping` for `secs` seconds (`count` pings) in `ns` towards `ip`;
/// the process and its output file.
fn ping_bg(lab: &Lab, ns: &Netns, ip: &str, count: u32) -> (Background, PathBuf) {
    let out = lab.dir.join(unique("ping"));
    let p = Background::spawn(
        ns.command("ping")
            .args(["-i", "0.05", "-W", "1", "-c", &count.to_string(), ip])
            .stdout(fs::File::create(&out).unwrap())
            .stderr(Stdio::null()),
    );
    (p, out)
}

#[test]
fn e2e_hub_sighup_adds_and_removes_spokes() {
    require_e2e!();
    let lab = Lab::new();
    let ka = lab.key("a", KEY_A);
    let kb = lab.key("b", KEY_B);
    let hub = lab.start_hub(&[], &["a", "b"]);
    let (a, b, c) = (lab.spoke("a"), lab.spoke("b"), lab.spoke("c"));
    let _pa = lab.start_spoke(&a.ns, &ka, a.tap_ip, &[]);
    let _pb = lab.start_spoke(&b.ns, &kb, b.tap_ip, &[]);
    assert!(a.ns.ping_until(LAN_IP, Duration::from_secs(10)));
    assert!(b.ns.ping_until(LAN_IP, Duration::from_secs(10)));
    // 160 pings, 50 ms apart: 8 s on the untouched spoke a.
    let (mut ping, out) = ping_bg(&lab, &a.ns, LAN_IP, 160);
    std::thread::sleep(Duration::from_millis(500));
    // Add c.
    let kc = lab.key("c", KEY_C);
    hub.signal("HUP");
    assert!(
        until(Duration::from_secs(5), POLL, || lab.hub.has_link("tt-c")),
        "{}",
        hub.log_text()
    );
    let _pc = lab.start_spoke(&c.ns, &kc, c.tap_ip, &[]);
    assert!(
        c.ns.ping_until(LAN_IP, Duration::from_secs(5)),
        "{}",
        hub.log_text()
    );
    // Remove b.
    fs::remove_file(lab.keys.join("b.key")).unwrap();
    hub.signal("HUP");
    assert!(
        until(Duration::from_secs(5), POLL, || !lab.hub.has_link("tt-b")),
        "{}",
        hub.log_text()
    );
    assert!(!b.ns.ping(LAN_IP, 2), "removed spoke b still gets through");
    ping.finish(Duration::from_secs(20), "ping");
    let text = fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("160 packets transmitted, 160 received"),
        "pings lost on the untouched spoke: {text}"
    );
    let status = hub.status("");
    assert!(status.contains(", 2 spokes"), "{status}");
    assert!(hub.log_text().contains("SIGHUP: spoke c added"));
    assert!(hub.log_text().contains("SIGHUP: spoke b removed"));
}

/// `taptun hub --config FILE` (as taptun-hub@.service runs it): the
/// folder, port, bridge and options come from the file, and an option on
/// the command line wins over the file's.
#[test]
fn e2e_hub_config_file_sets_the_hub_and_command_line_wins() {
    require_e2e!();
    let lab = Lab::new();
    let kb = lab.key("b", KEY_B);
    let from_file = lab.dir.join(format!("{}.sock", unique("file")));
    let from_cli = lab.dir.join(format!("{}.sock", unique("cli")));
    let conf = lab.dir.join(format!("{}.conf", unique("hub")));
    fs::write(
        &conf,
        format!(
            "# the hub of this test\n\
             dir = {}\n\
             local = :{PORT}   # every address\n\
             bridge = br0\n\
             no-offload = yes\n\
             status-socket = {}\n",
            lab.keys.display(),
            from_file.display()
        ),
    )
    .unwrap();
    let hub = lab.spawn_hub(
        &[
            "--config",
            conf.to_str().unwrap(),
            "--status-socket",
            from_cli.to_str().unwrap(),
        ],
        from_cli.clone(),
        &["b"],
    );
    // The file's folder, bridge and port: spoke b's TAP is a port of br0,
    // and spoke b reaches the LAN through the file's port.
    let link = lab.hub.exec("ip -o link show tt-b");
    assert!(link.contains("master br0"), "{link}");
    let b = lab.spoke("b");
    let _pb = lab.start_spoke(&b.ns, &kb, b.tap_ip, &[]);
    assert!(
        b.ns.ping_until(LAN_IP, Duration::from_secs(10)),
        "{}",
        hub.log_text()
    );
    // The command line's --status-socket, not the file's.
    let status = hub.status("");
    assert!(status.contains("spoke: b"), "{status}");
    assert!(!from_file.exists(), "the file's status socket was used");
    // A switch of the file: no-offload = yes.
    let log = hub.log_text();
    assert!(log.contains("tt-b up, mtu 1500, offloads off"), "{log}");
}

/// Whether the LAN host reaches every spoke within `limit`, all at once.
fn lan_reaches_all(lab: &Lab, limit: Duration) -> bool {
    let start = Instant::now();
    lab.spokes.iter().all(|s| {
        let left = limit.saturating_sub(start.elapsed());
        lab.lan.ping_until(s.tap_ip, left)
    })
}

#[test]
fn e2e_hub_restart_reaches_spokes_at_once_through_the_state_file() {
    require_e2e!();
    let lab = Lab::new();
    let keys: Vec<PathBuf> = [("a", KEY_A), ("b", KEY_B), ("c", KEY_C)]
        .iter()
        .map(|(n, k)| lab.key(n, k))
        .collect();
    let state = lab.dir.join("hub.state");
    let state_arg = state.display().to_string();
    let mut hub = lab.start_hub(&["--state", &state_arg], &["a", "b", "c"]);
    // Spokes that stay silent for an hour: only the hub's knowledge helps.
    // No IPv6 on them: its start-up chatter (DAD, router and multicast
    // listener messages) would tell any hub where they are.
    for s in &lab.spokes {
        s.ns.exec(
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
        );
    }
    let mut peers = Vec::new();
    for (s, k) in lab.spokes.iter().zip(&keys) {
        peers.push(lab.start_spoke(&s.ns, k, s.tap_ip, &["--keepalive", "3600"]));
    }
    // Nor ARP: a spoke that answered the LAN host checks its neighbour
    // entry 5 s later with a unicast probe through the tunnel, which would
    // tell any hub where it is. The LAN host's MAC is fixed on each spoke.
    let lan_mac = lab.lan.exec("cat /sys/class/net/e0/address");
    for s in &lab.spokes {
        s.ns.exec(&format!(
            "ip neigh replace {LAN_IP} lladdr {} dev tap0 nud permanent",
            lan_mac.trim()
        ));
    }
    assert!(
        lan_reaches_all(&lab, Duration::from_secs(15)),
        "{}",
        hub.log_text()
    );
    assert!(
        until(Duration::from_secs(3), POLL, || fs::read_to_string(&state)
            .is_ok_and(|t| t
                .lines()
                .filter(|l| !l.starts_with('#'))
                .count()
                == 3)),
        "state file: {:?}",
        fs::read_to_string(&state)
    );
    // Without the state file: a new hub does not reach the silent spokes.
    hub.process.stop(Duration::from_secs(5));
    let hub2 = lab.start_hub(&[], &["a", "b", "c"]);
    assert!(
        !lan_reaches_all(&lab, Duration::from_secs(5)),
        "reached without the state file: the test shows nothing:\n{}\nspoke a:\n{}",
        hub2.log_text(),
        peers[0].log_text()
    );
    drop(hub2);
    // With it: every spoke at once.
    let hub3 = lab.start_hub(&["--state", &state_arg], &["a", "b", "c"]);
    let t = Instant::now();
    assert!(
        lan_reaches_all(&lab, Duration::from_secs(5)),
        "not every spoke reachable within 5 s of the restart:\n{}",
        hub3.log_text()
    );
    eprintln!("all spokes reached {:?} after the restart", t.elapsed());
    assert!(
        hub3.log_text()
            .contains("(state file): sending to it at once")
    );
}

/// `systemd-analyze verify` of the hub's unit (as `systemd_unit_verifies`
/// in service_e2e.rs does for taptun@.service), pointed at the binary
/// under test and a folder of its own.
#[test]
fn hub_unit_verifies() {
    if !common::systemd_analyze_or_skip("hub_unit_verifies") {
        return;
    }
    let dir = TempDir::new("taptun-hub-unit-");
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = fs::read_to_string(format!("{root}/dist/systemd/taptun-hub@.service")).unwrap();
    let exec = "ExecStart=taptun hub --config /etc/taptun/hub-%i.conf\n";
    assert!(unit.contains(exec), "{unit}");
    assert!(unit.contains("ConditionPathExists=/etc/taptun/hub-%i.conf\n"));
    assert!(!unit.contains("EnvironmentFile"), "{unit}");
    assert!(unit.contains("StateDirectory=taptun/hub-%i\n"));
    assert!(unit.contains("Type=notify") && unit.contains("AmbientCapabilities=CAP_NET_ADMIN"));
    let unit = unit
        .replace("ExecStart=taptun ", &format!("ExecStart={TAPTUN} "))
        .replace("/etc/taptun/", &format!("{}/", dir.display()));
    fs::write(dir.join("taptun-hub@main.service"), unit).unwrap();
    fs::create_dir_all(dir.join("hub-main.d")).unwrap();
    fs::write(
        dir.join("hub-main.conf"),
        format!("dir = {}/hub-main.d\nlocal = :9123\n", dir.display()),
    )
    .unwrap();
    common::assert_unit_verifies(&dir, &dir.join("taptun-hub@main.service"));
}

/// A `.key` file whose name is no spoke name: one line naming the file,
/// exit code 2, before anything is created (no root needed).
#[test]
fn hub_bad_key_file_name_is_one_line_naming_it() {
    let dir = TempDir::new("taptun-hub-names-");
    write_key(&dir, "ok.key", KEY_A);
    write_key(&dir, "much-too-long-name.key", KEY_B);
    fs::write(dir.join("notes.txt"), "ignored\n").unwrap();
    let out = Command::new(TAPTUN)
        .args(["hub", dir.to_str().unwrap(), ":0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("much-too-long-name.key"), "{err}");
    // A bad key in a good name: the same.
    fs::remove_file(dir.join("much-too-long-name.key")).unwrap();
    fs::write(dir.join("bad.key"), "not base64!\n").unwrap();
    let out = Command::new(TAPTUN)
        .args(["hub", dir.to_str().unwrap(), ":0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.key"), "{err}");
}

/// Lines of `log` containing every one of `needles`.
fn lines_with<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

/// The number after `word` in `line`: "... fail authentication ... (7 dropped)".
fn number_before(line: &str, word: &str) -> u64 {
    let at = line
        .find(word)
        .unwrap_or_else(|| panic!("no {word:?} in {line}"));
    line[..at]
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number before {word:?} in {line}"))
}

/// The arguments of a spoke towards the hub (`Lab::start_spoke`'s).
fn spoke_args(tap_ip: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        ":9123".to_string(),
        format!("{HUB_IP}:{PORT}"),
        "-i".into(),
        "tap0".into(),
        "-a".into(),
        format!("{tap_ip}/24"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A spoke that was heard with the right key, then restarted with a key
/// file that differs from the hub's `b.key`: the hub says so in one warn
/// line naming the spoke, its address, how many datagrams and which file
/// to compare, however long it goes on; nothing crosses; the spoke's own
/// line (the point-to-point one) says it too. A spoke from an address the
/// hub never heard (w, its key in no file) gets its own line.
#[test]
fn e2e_hub_key_mismatch_is_named_once_per_spoke() {
    require_e2e!();
    let lab = Lab::new();
    let kb = lab.key("b", KEY_B);
    let kc = lab.key("c", KEY_C);
    let hub = lab.start_hub(&[], &["b", "c"]);
    let (b, c) = (lab.spoke("b"), lab.spoke("c"));
    let mut pb = lab.start_spoke(&b.ns, &kb, b.tap_ip, &[]);
    let _pc = lab.start_spoke(&c.ns, &kc, c.tap_ip, &[]);
    assert!(b.ns.ping_until(LAN_IP, Duration::from_secs(10)));
    assert!(c.ns.ping_until(LAN_IP, Duration::from_secs(10)));
    let b_addr = hub.spoke_addr("b");
    assert_eq!(b_addr, "192.0.2.11:9123");
    // b again, from the same address, with another key.
    pb.stop(Duration::from_secs(5));
    let wrong = write_key(&lab.dir, "b-wrong.key", KEY_WRONG);
    let pb2 = lab.start_spoke(&b.ns, &wrong, b.tap_ip, &[]);
    // 3 s of traffic both ways: b pings the LAN host, the LAN host pings b
    // (its ARP requests reach b through the hub, under the hub's b.key).
    let (mut to_lan, to_lan_out) = ping_bg(&lab, &b.ns, LAN_IP, 60);
    let (mut from_lan, from_lan_out) = ping_bg(&lab, &lab.lan, b.tap_ip, 60);
    assert!(
        to_lan.wait_exit(Duration::from_secs(15)).is_some(),
        "ping hung"
    );
    assert!(
        from_lan.wait_exit(Duration::from_secs(15)).is_some(),
        "ping hung"
    );
    for out in [&to_lan_out, &from_lan_out] {
        let text = fs::read_to_string(out).unwrap();
        assert!(
            text.contains(" 0 received"),
            "crossed with a wrong key: {text}"
        );
    }
    // c is untouched.
    assert!(c.ns.ping(LAN_IP, 2), "{}", hub.log_text());
    let log = hub.log_text();
    let lines = lines_with(&log, &["spoke b:", "fail authentication"]);
    assert_eq!(lines.len(), 1, "want one line:\n{log}");
    let line = lines[0];
    eprintln!("hub: {line}");
    let key_file = lab.keys.join("b.key");
    assert!(
        line.contains("WARN")
            && line.contains(&b_addr)
            && line.contains(&key_file.display().to_string()),
        "{line}"
    );
    assert!(number_before(line, "datagrams") >= 1, "{line}");
    assert_eq!(
        lines_with(&log, &["spoke c:", "fail authentication"]).len(),
        0
    );
    // The spoke says it too: the hub's datagrams fail its key.
    let spoke_log = pb2.log_text();
    let theirs = lines_with(
        &spoke_log,
        &[
            &format!("datagrams from {HUB_IP}:{PORT} fail authentication"),
            "same key file",
        ],
    );
    assert_eq!(theirs.len(), 1, "spoke b:\n{spoke_log}");
    eprintln!("spoke b: {}", theirs[0]);
    assert!(number_before(theirs[0], "dropped") >= 1, "{}", theirs[0]);

    // An address the hub never heard, with a key no file holds.
    let kw = write_key(&lab.dir, "w.key", KEY_WRONG);
    let _pw = lab.start_spoke(&lab.w, &kw, "10.50.0.14", &[]);
    let (mut ping_w, _) = ping_bg(&lab, &lab.w, LAN_IP, 60);
    assert!(
        ping_w.wait_exit(Duration::from_secs(15)).is_some(),
        "ping hung"
    );
    let log = hub.log_text();
    let lines = lines_with(&log, &["192.0.2.13:9123", "no spoke's key"]);
    assert_eq!(lines.len(), 1, "want one line for w:\n{log}");
    let line = lines[0];
    eprintln!("hub: {line}");
    assert!(
        line.contains("WARN") && line.contains(&lab.keys.display().to_string()),
        "{line}"
    );
    assert!(number_before(line, "dropped") >= 1, "{line}");
    assert!(!log.contains("learned 192.0.2.13"), "{log}");
    let json = hub.status("--json");
    assert!(json_num(&json, "unmatched") > 0.0, "{json}");
}

/// A spoke whose clock runs 10 s ahead (libfaketime): the hub names it,
/// the offset and the fix in one warn line; the other spokes go on.
#[test]
fn e2e_hub_skewed_spoke_clock_is_named() {
    require_e2e!();
    let lab = Lab::new();
    let kb = lab.key("b", KEY_B);
    let kc = lab.key("c", KEY_C);
    let hub = lab.start_hub(&[], &["b", "c"]);
    let (b, c) = (lab.spoke("b"), lab.spoke("c"));
    let _pb = lab.start_spoke(&b.ns, &kb, b.tap_ip, &[]);
    let out = sh_out("dpkg -L libfaketime 2>/dev/null | grep '/libfaketime\\.so\\.1$'");
    let lib = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !lib.is_empty() && Path::new(&lib).exists(),
        "libfaketime is not installed (sh dev/deps.sh installs faketime and libfaketime)"
    );
    let args = spoke_args(c.tap_ip, &[]);
    let mut pc = Peer::spawn_with(
        &c.ns,
        &lab.dir,
        &[],
        &kc,
        &strs(&args),
        &[
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME", "+10s"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    pc.wait_up(&c.ns);
    assert!(b.ns.ping_until(LAN_IP, Duration::from_secs(10)));
    // 3 s of c's pings (nothing crosses) while b's go on.
    let (mut pc_ping, pc_out) = ping_bg(&lab, &c.ns, LAN_IP, 60);
    let (mut pb_ping, pb_out) = ping_bg(&lab, &b.ns, LAN_IP, 60);
    assert!(
        pc_ping.wait_exit(Duration::from_secs(15)).is_some(),
        "ping hung"
    );
    pb_ping.finish(Duration::from_secs(15), "ping");
    let text = fs::read_to_string(&pc_out).unwrap();
    assert!(
        text.contains(" 0 received"),
        "crossed with a 10 s skew: {text}"
    );
    let text = fs::read_to_string(&pb_out).unwrap();
    assert!(
        text.contains("60 packets transmitted, 60 received"),
        "spoke b lost pings: {text}"
    );
    let log = hub.log_text();
    let lines = lines_with(&log, &["spoke c:", "clock"]);
    assert_eq!(lines.len(), 1, "want one clock line:\n{log}");
    let line = lines[0];
    eprintln!("hub: {line}");
    assert!(
        line.contains("WARN")
            && line.contains("(ahead)")
            && line.contains("NTP")
            && line.contains("--max-age"),
        "{line}"
    );
    let at = line.find("clock is ").expect("offset") + "clock is ".len();
    let off: f64 = line[at..]
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {line}"));
    assert!((8.5..=11.5).contains(&off), "{off} s in {line}");
    assert!(number_before(line, "datagrams") >= 1, "{line}");
    assert!(lines_with(&log, &["spoke b:", "clock"]).is_empty(), "{log}");
    let j = hub.spoke_json("c");
    assert!((json_num(&j, "peer_offset_s") - 10.0).abs() <= 1.5, "{j}");
}

/// SIGHUP rotates spoke b's key while b and c ping the LAN host: the hub
/// first (its new b.key), then spoke b. As with point-to-point rotation,
/// each side sends under the new key at once and accepts the old one for
/// --max-age; what is lost is what the hub sent to b in the instant
/// between the two signals (under a key b did not have yet): at most one
/// ping. c loses nothing; the hub names b at info level.
#[test]
fn e2e_hub_sighup_rotates_one_spokes_key_under_ping() {
    require_e2e!();
    const KEY_B2: &str = "YmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmI=";
    let lab = Lab::new();
    let kb = lab.key("b", KEY_B);
    let kc = lab.key("c", KEY_C);
    let age = ["--max-age", "2"];
    let hub = lab.start_hub(&age, &["b", "c"]);
    let (b, c) = (lab.spoke("b"), lab.spoke("c"));
    let pb = lab.start_spoke(&b.ns, &kb, b.tap_ip, &age);
    let _pc = lab.start_spoke(&c.ns, &kc, c.tap_ip, &age);
    assert!(b.ns.ping_until(LAN_IP, Duration::from_secs(10)));
    assert!(c.ns.ping_until(LAN_IP, Duration::from_secs(10)));
    // 100 pings each, 50 ms apart: 5 s.
    let (mut ping_b, out_b) = ping_bg(&lab, &b.ns, LAN_IP, 100);
    let (mut ping_c, out_c) = ping_bg(&lab, &c.ns, LAN_IP, 100);
    std::thread::sleep(Duration::from_millis(1500));
    write_key(&lab.keys, "b.key", KEY_B2);
    hub.signal("HUP");
    write_key(&lab.dir, "spoke-b.key", KEY_B2);
    pb.signal("HUP");
    ping_b.finish(Duration::from_secs(20), "ping");
    ping_c.finish(Duration::from_secs(20), "ping");
    let received = |out: &Path| -> (u32, String) {
        let text = fs::read_to_string(out).unwrap();
        let n = text
            .split(", ")
            .find_map(|part| part.strip_suffix(" received"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no ping summary: {text}"));
        (n, text)
    };
    let (rb, text_b) = received(&out_b);
    let (rc, text_c) = received(&out_c);
    eprintln!(
        "rotation under ping: b lost {} of 100, c lost {}",
        100 - rb,
        100 - rc
    );
    assert_eq!(rc, 100, "c lost pings:\n{text_c}");
    assert!(
        rb + 1 >= 100,
        "b lost {} of 100:\n{text_b}\nhub:\n{}\nspoke b:\n{}",
        100 - rb,
        hub.log_text(),
        pb.log_text()
    );
    let log = hub.log_text();
    let lines = lines_with(&log, &["INFO", "SIGHUP: spoke b: new key in use"]);
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines_with(&log, &["SIGHUP: spoke c"]).is_empty(), "{log}");
    assert!(
        pb.log_text().contains("SIGHUP: new key"),
        "{}",
        pb.log_text()
    );
    // Both sides really use the new key: past the max age, when neither
    // accepts the old one any more, b still gets through.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(b.ns.ping(LAN_IP, 2), "{}", hub.log_text());
    let j = hub.spoke_json("b");
    assert_eq!(json_num(&j, "key_rotations"), 1.0, "{j}");
    assert_eq!(json_num(&hub.spoke_json("c"), "key_rotations"), 0.0);
    assert!(!log.contains("fail authentication"), "{log}");
}

/// The `tt-*` links of the hub's namespace.
fn tt_links(lab: &Lab) -> Vec<String> {
    lab.hub
        .exec("ip -o link show")
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .filter(|n| n.starts_with("tt-"))
        .collect()
}

/// The interface group of link `dev` in the hub's namespace.
fn group_of(lab: &Lab, dev: &str) -> String {
    let d = lab.hub.exec(&format!("ip -d -o link show dev {dev}"));
    let at = d.find(" group ").expect("no group") + 7;
    d[at..].split_whitespace().next().unwrap().to_string()
}

/// Stopping the hub removes its TAPs in one request (their interface
/// group), after the `--down` hooks ran with each TAP still there, and
/// nothing else: a link of the default group (a bridge: this kernel has no dummy) and one of another
/// group survive. Then a foreign link put in the hub's group: the hub
/// deletes nothing at once (it would go too), says so, and its TAPs still
/// go as their fds close.
#[test]
fn e2e_hub_stop_removes_its_taps_at_once_and_nothing_else() {
    require_e2e!();
    let lab = Lab::new();
    for (n, k) in [("a", KEY_A), ("b", KEY_B), ("c", KEY_C)] {
        lab.key(n, k);
    }
    lab.hub.exec(
        "ip link add keep0 type bridge && ip link add keep1 type bridge \
         && ip link set dev keep1 group 7",
    );
    let marks = lab.dir.join("down");
    fs::create_dir_all(&marks).unwrap();
    // The hook records whether its TAP was still there.
    let down = format!(
        "ip link show dev $TAPTUN_DEV >/dev/null && touch {}/$TAPTUN_SPOKE",
        marks.display()
    );
    let mut hub = lab.start_hub(&["--down", &down], &["a", "b", "c"]);
    let group = group_of(&lab, "tt-a");
    assert_ne!(group, "default", "the TAPs are in no group of their own");
    assert_eq!(group_of(&lab, "tt-b"), group);
    assert_eq!(group_of(&lab, "keep0"), "default");
    let st = hub.process.stop(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
    let log = hub.log_text();
    assert!(log.contains("3 TAPs removed at once"), "{log}");
    assert_eq!(tt_links(&lab), Vec::<String>::new(), "{log}");
    for n in ["a", "b", "c"] {
        assert!(
            marks.join(n).exists(),
            "spoke {n}'s --down hook did not see its TAP:\n{log}"
        );
    }
    assert!(lab.hub.has_link("keep0") && lab.hub.has_link("keep1"));
    assert_eq!(group_of(&lab, "keep1"), "7");

    // A link this hub did not create in its group: no delete at once.
    let hub2 = lab.start_hub(&[], &["a", "b", "c"]);
    let group = group_of(&lab, "tt-a");
    lab.hub.exec(&format!(
        "ip link add intruder0 type bridge && ip link set dev intruder0 group {group}"
    ));
    let mut hub2 = hub2;
    let st = hub2.process.stop(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
    let log = hub2.log_text();
    assert!(!log.contains("removed at once"), "{log}");
    assert!(
        log.contains("cannot remove the TAPs at once") && log.contains("is no TAP of this hub"),
        "{log}"
    );
    assert!(lab.hub.has_link("intruder0"), "{log}");
    assert!(
        until(Duration::from_secs(5), POLL, || tt_links(&lab).is_empty()),
        "TAPs left: {:?}",
        tt_links(&lab)
    );
}
