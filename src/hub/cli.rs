//! `taptun hub`'s command line: its own argh struct (its own `--help`),
//! with the point-to-point tunnel's value parsers, so that each option
//! means and checks what it means there.

use super::HubConfig;
use crate::addr;
use crate::cli::{self as p2p, ConfigArgs, MIN_MTU};
use crate::config::ClampMss;
use crate::tx::MAX_MTU;
use argh::{ArgsInfo, FromArgs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// taptun hub: one UDP port, many spokes, each with its own key and TAP;
/// the kernel's bridge switches between them.
///
/// Each file DIR/NAME.key (NAME: 1 to 12 letters, digits, '-' or '_') is a
/// spoke: a host running `taptun NAME.key :PORT HUB:PORT` (or tinytaptunnel
/// v1.4) with the same key. Its TAP is tt-NAME; its address is learned from
/// its first valid datagram. Other files in DIR are ignored.
#[derive(FromArgs, ArgsInfo, Debug, Clone, PartialEq)]
#[argh(
    help_triggers("-h", "--help"),
    example = "taptun hub /etc/taptun/hub.d :9123 --bridge br0\ntaptun hub /etc/taptun/hub.d :9123 --bridge br0 --cipher aes-256-gcm --state /var/lib/taptun/hub.state",
    note = "Spokes live in their own trust domains: each has its own replay window,\nfreshness check, address and counters; a datagram from an address no spoke\nhas is tried against the spokes' keys (at most 4096 verifications a\nsecond), so roaming and NAT rebinding work per spoke.\n\nSignals: SIGHUP re-reads DIR: a new file adds a spoke (TAP, bridge port,\n--up), a removed one removes it (--down first), a changed one rotates that\nspoke's key (the old one accepted for --max-age). SIGINT/SIGTERM: --down\nfor each spoke, then exit. SIGUSR1: log the counters.\n\nHooks run once per spoke with TAPTUN_DEV=tt-NAME, TAPTUN_SPOKE=NAME,\nTAPTUN_PEER, TAPTUN_MTU, TAPTUN_LOCAL and TAPTUN_EVENT (up/down).\n\nThe state file keeps each spoke's last address, so that a restarted hub\nsends to every spoke at once. taptun status (default socket\n/run/taptun/hub-PORT.sock) lists every spoke. See taptun(1), section HUB.",
    error_code(0, "clean stop (SIGINT/SIGTERM), --help"),
    error_code(
        1,
        "the environment must change: no CAP_NET_ADMIN, port in use, no such bridge, --up hook failed"
    ),
    error_code(
        2,
        "the configuration must change: arguments, --config file, a key file, a key file's name"
    )
)]
pub struct HubCli {
    /// folder of the spokes' key files, one NAME.key per spoke (here or dir = in the --config file)
    #[argh(positional)]
    pub dir: PathBuf,

    /// local UDP address: :PORT (every address), IP:PORT, [IPv6]:PORT or HOST:PORT (here or local = in the --config file)
    #[argh(positional, from_str_fn(p2p_local))]
    pub local: String,

    /// read the arguments from FILE, one `name = value` a line: dir, local and the options below without their dashes (see taptun.conf(5)); the command line's options and arguments win over the file's
    #[argh(option, arg_name = "FILE")]
    pub config: Option<PathBuf>,

    /// the bridge every spoke's TAP joins (it must exist); each TAP's MTU is raised to the bridge's first, so that the bridge keeps its MTU
    #[argh(option, from_str_fn(bridge_name))]
    pub bridge: Option<String>,

    /// the TAPs' MTU, 576 to 9000 (default: underlay MTU - IP - 8 UDP - 40 taptun - 14 Ethernet = 1418 on IPv4)
    #[argh(option, from_str_fn(p2p_tap_mtu))]
    pub mtu: Option<u16>,

    /// MTU of the paths to the spokes, for the default TAP MTU and --clamp-mss auto (default 1500)
    #[argh(option, default = "1500", from_str_fn(p2p_underlay_mtu))]
    pub underlay_mtu: u16,

    /// accept timestamps at most this many seconds old or in the future (default 3)
    #[argh(option, default = "3.0", from_str_fn(p2p_max_age))]
    pub max_age: f64,

    /// send a keepalive to each spoke after this many seconds without sending to it (default 25, 0 = off)
    #[argh(option, default = "25", from_str_fn(p2p_keepalive))]
    pub keepalive: u64,

    /// lower the MSS of TCP SYN and SYN-ACK segments: auto (default), off, or a number
    #[argh(option, default = "ClampMss::Auto", from_str_fn(p2p_clamp_mss))]
    pub clamp_mss: ClampMss,

    /// AQM on the receive queue, one for every spoke: CoDel on how long datagrams wait in the UDP socket, marking an ECN-capable frame CE (else dropping it) while the wait stands above the target: off (the default: one queue for all spokes, so a signal falls on whichever spoke's datagram comes next, not on the one that fills it), on (target 0.5 ms, interval 5 ms), or TARGET_MS/INTERVAL_MS
    #[argh(option, default = "None", from_str_fn(p2p_aqm))]
    pub aqm: Option<crate::codel::Params>,

    /// the nice value of the two threads that move the packets, -20 to 19 (below 0 needs root or CAP_SYS_NICE); default: as started
    #[argh(option, from_str_fn(p2p_nice))]
    pub nice: Option<i32>,

    /// run the two threads that move the packets under SCHED_FIFO at this real-time priority, 1 to 99 (needs root or CAP_SYS_NICE; as a tunnel's, a thread that works 10 ms without finding its queue empty goes on at the normal policy until it does), or off; not with --nice, default: as started
    #[argh(option, from_str_fn(p2p_rt_priority))]
    pub rt_priority: Option<i32>,

    /// encrypt: aes-256-gcm or chacha20-poly1305, one mode for every spoke (default: the HMAC wire)
    #[argh(option, from_str_fn(p2p_cipher))]
    pub cipher: Option<crate::aead::Cipher>,

    /// where `taptun status` reaches the hub (default /run/taptun/hub-PORT.sock)
    #[argh(option)]
    pub status_socket: Option<PathBuf>,

    /// the state file: each spoke's last address, read at start and written when one changes (default $STATE_DIRECTORY/hub.state when systemd sets STATE_DIRECTORY, else none)
    #[argh(option)]
    pub state: Option<PathBuf>,

    /// do not use TAP checksum/segmentation offloads
    #[argh(switch)]
    pub no_offload: bool,

    /// log level: error, warn, info, debug or trace (default: $RUST_LOG, else info)
    #[argh(option, from_str_fn(p2p_log_level))]
    pub log_level: Option<log::LevelFilter>,

    /// when started as root: switch to this user once the spokes' TAPs exist and --up ran (spokes added by SIGHUP then cannot get a TAP)
    #[argh(option, from_str_fn(p2p_user_name))]
    pub user: Option<String>,

    /// shell command (sh -c) run for each spoke once its TAP is up; environment: TAPTUN_DEV, TAPTUN_SPOKE, TAPTUN_PEER, TAPTUN_MTU, TAPTUN_LOCAL, TAPTUN_EVENT=up
    #[argh(option)]
    pub up: Option<String>,

    /// shell command (sh -c) run for each spoke before its TAP is removed (at exit, or when its key file goes); TAPTUN_EVENT=down
    #[argh(option)]
    pub down: Option<String>,

    /// log the counters every SECS seconds as well as on SIGUSR1 and at exit (default 0 = off)
    #[argh(option, default = "0", from_str_fn(p2p_stats))]
    pub stats: u64,
}

fn p2p_local(v: &str) -> Result<String, String> {
    p2p::local_syntax(v)
}
fn p2p_tap_mtu(v: &str) -> Result<u16, String> {
    p2p::tap_mtu(v)
}
fn p2p_underlay_mtu(v: &str) -> Result<u16, String> {
    p2p::underlay_mtu(v)
}
fn p2p_max_age(v: &str) -> Result<f64, String> {
    p2p::max_age(v)
}
fn p2p_keepalive(v: &str) -> Result<u64, String> {
    p2p::keepalive(v)
}
fn p2p_clamp_mss(v: &str) -> Result<ClampMss, String> {
    p2p::clamp_mss(v)
}
fn p2p_aqm(v: &str) -> Result<Option<crate::codel::Params>, String> {
    p2p::aqm(v)
}
fn p2p_nice(v: &str) -> Result<i32, String> {
    p2p::nice(v)
}
fn p2p_rt_priority(v: &str) -> Result<i32, String> {
    p2p::rt_priority(v)
}
fn p2p_cipher(v: &str) -> Result<crate::aead::Cipher, String> {
    p2p::cipher(v)
}
fn p2p_log_level(v: &str) -> Result<log::LevelFilter, String> {
    p2p::log_level(v)
}
fn p2p_user_name(v: &str) -> Result<String, String> {
    p2p::user_name(v)
}
fn p2p_stats(v: &str) -> Result<u64, String> {
    p2p::stats_interval(v)
}

fn bridge_name(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 15 || v.contains(['/', ' ', ':']) || v == "." || v == ".." {
        return Err(
            "expected an interface name of 1 to 15 characters without '/', ':' or spaces".into(),
        );
    }
    Ok(v.to_string())
}

/// Parses `taptun hub`'s arguments (after `hub`).
pub fn parse(args: &[&str]) -> Result<HubCli, argh::EarlyExit> {
    HubCli::from_args(&[HubCli::COMMAND], args)
}

/// `taptun hub --config FILE` reads the point-to-point tunnel's file
/// syntax with the hub's names: `dir`, `local` and its long options.
impl ConfigArgs for HubCli {
    const COMMAND: &'static str = "taptun hub";
    const POSITIONALS: &'static [&'static str] = &["dir", "local"];
    const POSITIONAL_WHAT: &'static [&'static str] =
        &["the folder of the spokes' keys", "the local address"];
    const REQUIRED: usize = 2;
    const PLACEHOLDERS: &'static [&'static str] = &["DIR", ":1"];
    const USAGE: &'static str = "taptun hub DIR LOCAL [OPTIONS], or taptun hub --config FILE";

    fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }
    fn positionals_given(&self) -> usize {
        2
    }
    fn set_positional(&mut self, i: usize, value: Option<&str>) -> Result<(), String> {
        match (i, value) {
            (0, Some(v)) => self.dir = PathBuf::from(v),
            (1, Some(v)) => self.local = v.to_string(),
            _ => return Err(p2p::missing_positional::<HubCli>(i)),
        }
        Ok(())
    }
    fn check_positional(name: &str, value: &str) -> Result<(), String> {
        match name {
            "local" => p2p::local_syntax(value).map(drop),
            _ if value.is_empty() => Err("expected a folder name".into()),
            _ => Ok(()),
        }
    }
    fn check_together(settings: &[(&str, &str)]) -> Result<(), (usize, String)> {
        // The hub's options are the tunnel's: the same rules (it has no
        // --address or --busy-poll to break them).
        p2p::check_together(settings)
    }
}

impl HubCli {
    /// The hub's configuration; `state_directory` is systemd's
    /// `$STATE_DIRECTORY` (the default state file's folder).
    pub fn to_config(&self, state_directory: Option<&str>) -> Result<HubConfig, String> {
        let local = addr::parse_local(&self.local).map_err(|e| e.to_string())?;
        let ipv6 = matches!(local, addr::Local::Addr(a) if a.is_ipv6());
        let mtu = self
            .mtu
            .unwrap_or_else(|| addr::default_tap_mtu(self.underlay_mtu, ipv6));
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(format!(
                "TAP MTU {mtu}: expected {MIN_MTU} to {MAX_MTU} (check --mtu and --underlay-mtu)"
            ));
        }
        let ip_udp = if ipv6 { 48 } else { 28 };
        // systemd may list several folders (StateDirectory=a b): the first.
        let state = self.state.clone().or_else(|| {
            state_directory
                .and_then(|d| d.split(':').next())
                .filter(|d| !d.is_empty())
                .map(|d| PathBuf::from(d).join("hub.state"))
        });
        Ok(HubConfig {
            dir: self.dir.clone(),
            local,
            bridge: self.bridge.clone(),
            mtu,
            path_payload: usize::from(self.underlay_mtu).saturating_sub(ip_udp),
            cipher: self.cipher,
            clamp_mss: self.clamp_mss,
            aqm: self.aqm,
            priority: p2p::priority(
                self.nice,
                self.rt_priority,
                0,
                crate::priority::Priority::AsStarted,
            )?,
            keepalive: Duration::from_secs(self.keepalive),
            max_age: Duration::from_secs_f64(self.max_age),
            sockbuf: 4 << 20,
            offload: !self.no_offload,
            status_socket: self.status_socket.clone(),
            state,
            up: self.up.clone().filter(|c| !c.trim().is_empty()),
            down: self.down.clone().filter(|c| !c.trim().is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_state_directory() {
        let c = parse(&["/d", ":9123"]).unwrap();
        let cfg = c.to_config(None).unwrap();
        assert_eq!(cfg.mtu, 1418);
        assert_eq!(cfg.state, None);
        let cfg = c.to_config(Some("/var/lib/taptun")).unwrap();
        assert_eq!(cfg.state, Some(PathBuf::from("/var/lib/taptun/hub.state")));
        let c = parse(&["/d", ":9123", "--state", "/x"]).unwrap();
        assert_eq!(
            c.to_config(Some("/var/lib/taptun")).unwrap().state,
            Some(PathBuf::from("/x"))
        );
    }

    #[test]
    fn values_checked_as_the_tunnel_checks_them() {
        assert!(parse(&["/d", ":9123", "--cipher", "rot13"]).is_err());
        assert!(parse(&["/d", "nonsense"]).is_err());
        assert!(parse(&["/d", ":9123", "--mtu", "100"]).is_err());
        assert!(parse(&["/d", ":9123", "--bridge", "a/b"]).is_err());
        let c = parse(&["/d", ":9123", "--cipher", "aes-256-gcm", "--bridge", "br0"]).unwrap();
        assert_eq!(c.bridge.as_deref(), Some("br0"));
    }

    use crate::cli::{Kind, config_names_of, parse_command_line_of};
    use crate::conffile::{self, quote};

    fn hub_file(text: &str) -> Result<Vec<(String, String)>, conffile::ConfError> {
        conffile::parse_for::<HubCli>(text.as_bytes())
            .map(|s| s.into_iter().map(|s| (s.name, s.value)).collect())
    }

    /// A valid value for each of the hub's options (the test of all names
    /// fails when a new option has none here).
    fn sample(name: &str) -> &'static str {
        match name {
            "bridge" => "br0",
            "mtu" => "1400",
            "underlay-mtu" => "1500",
            "max-age" => "3.5",
            "keepalive" => "10",
            "clamp-mss" => "off",
            "aqm" => "1/10",
            "nice" => "-5",
            "rt-priority" => "1",
            "cipher" => "chacha20-poly1305",
            "status-socket" => "/run/taptun/hub.sock",
            "state" => "/var/lib/taptun/hub.state",
            "log-level" => "debug",
            "user" => "taptun",
            "up" => "logger up",
            "down" => "logger down",
            "stats" => "60",
            other => panic!("no sample value for the hub's option {other}: add one"),
        }
    }

    #[test]
    fn every_long_option_of_hub_help_is_a_config_name() {
        // `taptun hub --help` as argh prints it: the names cannot drift.
        let help = parse(&["--help"]).unwrap_err().output;
        let options = help.split("\nOptions:\n").nth(1).unwrap();
        let options = options.split("\n\n").next().unwrap();
        let mut from_help: Vec<&str> = options
            .split_whitespace()
            .filter_map(|w| w.trim_end_matches(',').strip_prefix("--"))
            .filter(|w| !w.is_empty() && !["help", "config"].contains(w))
            .collect();
        from_help.sort();
        from_help.dedup();
        let names = config_names_of::<HubCli>();
        let mut options: Vec<&str> = names
            .iter()
            .filter(|(_, k)| !matches!(k, Kind::Positional(_)))
            .map(|(n, _)| *n)
            .collect();
        options.sort();
        assert_eq!(options, from_help);
        let positionals: Vec<(&str, Kind)> = names
            .iter()
            .copied()
            .filter(|(_, k)| matches!(k, Kind::Positional(_)))
            .collect();
        assert_eq!(
            positionals,
            [("dir", Kind::Positional(0)), ("local", Kind::Positional(1))]
        );
        let kind = |n: &str| names.iter().find(|(m, _)| *m == n).map(|(_, k)| *k);
        assert_eq!(kind("no-offload"), Some(Kind::Switch));
        assert_eq!(kind("bridge"), Some(Kind::Value));
        // The point-to-point tunnel's own names are not the hub's.
        assert_eq!((kind("key"), kind("peer"), kind("dev")), (None, None, None));
        // Every option can be set: a valid value for each is accepted.
        // (rt-priority does not go with nice: alone in another file.)
        let mut file = String::new();
        for (name, kind) in &names {
            let value = match (*name, kind) {
                ("rt-priority", _) => continue,
                (_, Kind::Switch) => "true",
                ("dir", _) => "/etc/taptun/hub-main.d",
                ("local", _) => "192.0.2.1:9123",
                _ => sample(name),
            };
            file.push_str(&format!("{name} = {}\n", quote(value)));
        }
        assert_eq!(hub_file(&file).unwrap().len(), names.len() - 1, "{file}");
        let rt = format!(
            "dir = /d\nlocal = :9\nrt-priority = {}\n",
            sample("rt-priority")
        );
        assert_eq!(hub_file(&rt).unwrap().len(), 3, "{rt}");
        let both = "dir = /d\nlocal = :9\nnice = -5\nrt-priority = 1\n";
        assert!(
            hub_file(both)
                .unwrap_err()
                .to_string()
                .contains("--rt-priority with --nice")
        );
    }

    #[test]
    fn hub_file_errors_name_the_line_and_the_hubs_names() {
        let cases: [(&str, usize, &str); 7] = [
            (
                "dir = /d\nbriddge = br0\n",
                2,
                "unknown name \"briddge\"; did you mean bridge?",
            ),
            ("peer = 192.0.2.1:9\n", 1, "unknown name \"peer\""),
            (
                "mtu = abc\n",
                1,
                "mtu = \"abc\": expected a number from 576 to 9000",
            ),
            ("local = 9123\n", 1, "local = \"9123\": expected :PORT"),
            ("dir =\n", 1, "dir = \"\": expected a folder name"),
            (
                "bridge = a\nbridge = b\n",
                2,
                "bridge is already set on line 1",
            ),
            ("config = /x\n", 1, "config cannot be set in a config file"),
        ];
        for (text, line, want) in cases {
            let e = hub_file(text).unwrap_err();
            assert!(
                e.line == line && e.message.contains(want) && !e.message.contains('\n'),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn hub_config_file_fills_what_the_command_line_leaves() {
        let file = [
            ("dir", "/etc/taptun/hub-main.d"),
            ("local", ":9123"),
            ("bridge", "br0"),
            ("mtu", "1400"),
            ("no-offload", "yes"),
            ("status-socket", "/run/taptun/a.sock"),
        ];
        let merged = |args: &[&str]| parse_command_line_of::<HubCli>(args).unwrap().merge(&file);
        let c = merged(&["--config", "f"]).unwrap();
        assert_eq!(
            (c.dir.to_str(), c.local.as_str(), c.bridge.as_deref()),
            (Some("/etc/taptun/hub-main.d"), ":9123", Some("br0"))
        );
        assert_eq!((c.mtu, c.no_offload), (Some(1400), true));
        assert_eq!(c.config, Some(PathBuf::from("f")));
        // The command line wins: options, and positionals in order.
        let c = merged(&["/other.d", "--config", "f", "--mtu", "9000"]).unwrap();
        assert_eq!(
            (c.dir.to_str(), c.local.as_str()),
            (Some("/other.d"), ":9123")
        );
        assert_eq!((c.mtu, c.bridge.as_deref()), (Some(9000), Some("br0")));
        let c = merged(&["--config", "f", "--", "/d2", "[::1]:7"]).unwrap();
        assert_eq!((c.dir.to_str(), c.local.as_str()), (Some("/d2"), "[::1]:7"));
        // What neither gives is missing, in the hub's words.
        let e = parse_command_line_of::<HubCli>(&["--config", "f"])
            .unwrap()
            .merge(&[("local", ":1")])
            .unwrap_err();
        assert!(
            e.contains("missing the folder of the spokes' keys") && e.contains("dir ="),
            "{e}"
        );
        // Without --config, missing positionals stay an error.
        assert!(parse_command_line_of::<HubCli>(&["--bridge", "br0"]).is_err());
    }

    #[test]
    fn the_shipped_hub_example_parses() {
        let example = include_bytes!("../../dist/taptun-hub.conf.example");
        let s = conffile::parse_for::<HubCli>(example)
            .unwrap_or_else(|e| panic!("taptun-hub.conf.example:{e}"));
        let s: Vec<(&str, &str)> = s
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_str()))
            .collect();
        for want in [
            ("dir", "/etc/taptun/hub-NAME.d"),
            ("local", ":9123"),
            ("bridge", "br0"),
        ] {
            assert!(s.contains(&want), "{s:?}");
        }
        // Its commented-out lines are settings too, once uncommented.
        let text = String::from_utf8_lossy(example);
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(" = ") && !l.starts_with(' '))
            .map(|l| format!("{l}\n"))
            .collect();
        let extra = hub_file(&uncommented).unwrap_or_else(|e| panic!("{uncommented}: {e}"));
        assert!(extra.len() >= 3, "{extra:?}");
        // And merged, they make a hub configuration.
        let c = parse_command_line_of::<HubCli>(&["--config", "x"])
            .unwrap()
            .merge(&s)
            .unwrap();
        assert!(c.to_config(None).is_ok());
    }
}
