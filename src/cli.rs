//! Command-line arguments, and their translation into a tunnel [`Config`].

use crate::addr::{self, AddrError, Cidr, Local};
use crate::config::{ClampMss, Config};
use crate::key::{self, KeyError};
use crate::tx::MAX_MTU;
use argh::FromArgs;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// taptun: a Layer-2 tunnel over UDP, authenticated with HMAC-SHA256,
/// wire-compatible with tinytaptunnel v1.4.
///
/// Create a key once and copy it to both hosts:  taptun genkey key.b64
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(
    help_triggers("-h", "--help"),
    example = "taptun genkey /etc/taptun/home.key\ntaptun /etc/taptun/home.key :9123 203.0.113.15:9123 -i tap-home -a 10.1.2.1/24\ntaptun key.b64 :9123 --user nobody --up 'ip link set \"$TAPTUN_DEV\" master br0' --stats 300 --stats-json",
    note = "Also: taptun genkey FILE writes a new key (32 random bytes, base64, mode\n0600). taptun status [DEV] [--json|--prometheus] asks a running tunnel how\nit is; without DEV, every tunnel of the host. taptun --version (-V) prints\nthe version.\n\nStart-up: bind the socket, create the TAP (up, MTU, addresses), run --up,\ndrop to --user, start forwarding, then tell systemd READY=1 when\n$NOTIFY_SOCKET is set (path or @abstract). Hooks run with sh -c and get\nTAPTUN_DEV, TAPTUN_MTU, TAPTUN_PEER (IP:PORT or empty), TAPTUN_LOCAL and\nTAPTUN_EVENT (up/down) in their environment.\n\nSignals: SIGINT/SIGTERM: STOPPING=1, log the counters, run --down, remove\nthe TAP, exit 0 (within a second when there is no --down). SIGHUP: re-read\nthe key file; the new key is used for sending at once and the old one still\naccepted for --max-age; a bad file is logged and the old key kept. SIGUSR1:\nlog the counters (and a JSON line with --stats-json).\n\nRun as root or with CAP_NET_ADMIN only (e.g. systemd\nAmbientCapabilities=CAP_NET_ADMIN). The key file must then be readable by\nthat user. See taptun(1), the unit taptun@.service (systemctl cat\ntaptun@.service) and /usr/share/doc/taptun/.",
    error_code(0, "clean stop (SIGINT/SIGTERM), --help, --version"),
    error_code(
        1,
        "the environment must change: no /dev/net/tun or CAP_NET_ADMIN, port in use, peer does not resolve, key file unreadable, --up hook failed, --user drop failed"
    ),
    error_code(
        2,
        "bad arguments or a bad key file (content, permissions), unknown --user"
    )
)]
pub struct Cli {
    /// key file: base64 of at least 16 secret bytes; created (mode 0600) with 32 random bytes if missing
    #[argh(positional)]
    pub key_file: PathBuf,

    /// local UDP address: :PORT (every address), IP:PORT, [IPv6]:PORT or HOST:PORT
    #[argh(positional)]
    pub local: String,

    /// peer UDP address (IP:PORT, [IPv6]:PORT or HOST:PORT, resolved once); without it the peer is learned from the first valid datagram
    #[argh(positional)]
    pub peer: Option<String>,

    /// TAP interface name (default: the kernel picks tapN)
    #[argh(option, short = 'i')]
    pub dev: Option<String>,

    /// TAP MTU, 576 to 9000 (default: underlay MTU - IP - 8 UDP - 40 taptun - 14 Ethernet = 1418 on IPv4, 1398 on IPv6; larger ones are fragmented on the underlay)
    #[argh(option)]
    pub mtu: Option<u16>,

    /// MTU of the path between the hosts, used for the default TAP MTU and --clamp-mss auto (default 1500)
    #[argh(option, default = "1500")]
    pub underlay_mtu: u16,

    /// address with prefix to put on the TAP, e.g. 10.1.2.3/24 or fd00::1/64 (repeatable; one IPv4 at most)
    #[argh(option, short = 'a')]
    pub address: Vec<Cidr>,

    /// accept timestamps at most this many seconds old or in the future (default 3; clocks must agree this well)
    #[argh(option, default = "3.0")]
    pub max_age: f64,

    /// send an empty authenticated datagram after this many seconds without sending (default 25, 0 = off)
    #[argh(option, default = "25")]
    pub keepalive: u64,

    /// UDP socket buffer size in bytes, each way (default 4194304)
    #[argh(option, default = "4 << 20")]
    pub sockbuf: usize,

    /// lower the MSS option of TCP SYN and SYN-ACK segments crossing the tunnel: auto (default: so that full segments fit one unfragmented datagram on the --underlay-mtu path), off, or a number
    #[argh(option, default = "ClampMss::Auto")]
    pub clamp_mss: ClampMss,

    /// encrypt: aes-256-gcm or chacha20-poly1305, the same on both sides (default: none, tinytaptunnel's authenticated but readable wire); the key file stays the same
    #[argh(option)]
    pub cipher: Option<crate::aead::Cipher>,

    /// the TAP's MAC address, e.g. 02:00:00:00:00:01 (default: derived from /etc/machine-id, the TAP name and the network namespace, the same on every start)
    #[argh(option)]
    pub mac: Option<crate::mac::MacAddr>,

    /// where `taptun status` reaches this tunnel: a Unix socket, mode 0600 (default /run/taptun/DEV.sock)
    #[argh(option)]
    pub status_socket: Option<PathBuf>,

    /// do not use TAP checksum/segmentation offloads (default: use them when the kernel allows; the wire format is the same either way)
    #[argh(switch)]
    pub no_offload: bool,

    /// log level: error, warn, info, debug or trace (default: $RUST_LOG, else info)
    #[argh(option)]
    pub log_level: Option<log::LevelFilter>,

    /// when started as root: switch to this user (and its groups) once the TAP and socket exist and --up has run; the TAP can then not be reconfigured, --down runs unprivileged, and the key file must be readable by the user for SIGHUP
    #[argh(option)]
    pub user: Option<String>,

    /// shell command (sh -c) run once the TAP is up, before forwarding starts; if it fails, taptun stops with exit code 1. Environment: TAPTUN_DEV, TAPTUN_MTU, TAPTUN_PEER, TAPTUN_LOCAL, TAPTUN_EVENT=up
    #[argh(option)]
    pub up: Option<String>,

    /// shell command (sh -c) run at shutdown before the TAP is removed (killed after 10 s); same environment with TAPTUN_EVENT=down and the current peer
    #[argh(option)]
    pub down: Option<String>,

    /// log the counters every SECS seconds as well as on SIGUSR1 and at exit (default 0 = off)
    #[argh(option, default = "0")]
    pub stats: u64,

    /// with each counters report, also print one JSON object on one line to stdout (for monitoring scripts)
    #[argh(switch)]
    pub stats_json: bool,
}

/// A command-line value that does not make sense; exit code 2.
#[derive(Debug)]
pub enum CliError {
    /// A bad local or peer address (syntax or resolution).
    Addr(AddrError),
    /// A bad key file.
    Key(KeyError),
    /// A number out of range.
    Value(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Addr(e) => e.fmt(f),
            CliError::Key(e) => e.fmt(f),
            CliError::Value(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for CliError {}

impl From<AddrError> for CliError {
    fn from(e: AddrError) -> Self {
        CliError::Addr(e)
    }
}

impl From<KeyError> for CliError {
    fn from(e: KeyError) -> Self {
        CliError::Key(e)
    }
}

impl CliError {
    /// The process exit code: 1 for what the environment must fix (DNS), 2 for bad input.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Addr(AddrError::Resolve { .. }) => 1,
            CliError::Key(KeyError::Io(..)) | CliError::Key(KeyError::Random(_)) => 1,
            _ => 2,
        }
    }
}

impl Cli {
    /// Checks the values and builds the tunnel configuration. Loads or
    /// creates the key; the flag says whether it was created.
    pub fn to_config(&self) -> Result<(Config, bool), CliError> {
        if !(self.max_age.is_finite() && self.max_age > 0.0 && self.max_age <= 86400.0) {
            return Err(CliError::Value(format!(
                "--max-age {}: expected seconds, more than 0 and at most 86400",
                self.max_age
            )));
        }
        if self.keepalive > 86400 {
            return Err(CliError::Value(format!(
                "--keepalive {}: expected seconds from 0 (off) to 86400",
                self.keepalive
            )));
        }
        if self.stats > 86400 * 366 {
            return Err(CliError::Value(format!(
                "--stats {}: expected seconds from 0 (off) to 31622400",
                self.stats
            )));
        }
        if let Some(user) = &self.user
            && (user.is_empty() || user.contains(['\0', '/', ':']))
        {
            return Err(CliError::Value(format!(
                "--user {user:?}: expected a user name"
            )));
        }
        if let Some(dev) = &self.dev
            && (dev.is_empty() || dev.len() > 15 || dev.contains(['/', ' ', ':']))
        {
            return Err(CliError::Value(format!(
                "--dev {dev:?}: expected an interface name of 1 to 15 characters without '/', ':' or spaces"
            )));
        }
        let local = addr::parse_local(&self.local)?;
        let peer = self.peer.as_deref().map(addr::parse_peer).transpose()?;
        let ipv6 = match (peer, local) {
            (Some(p), _) => p.is_ipv6(),
            (None, Local::Addr(a)) => a.is_ipv6(),
            (None, Local::Any(_)) => false,
        };
        let mtu = match self.mtu {
            Some(m) => m,
            None => addr::default_tap_mtu(self.underlay_mtu, ipv6),
        };
        let ip_udp = if ipv6 { 48 } else { 28 };
        if self.underlay_mtu < 576 {
            return Err(CliError::Value(format!(
                "--underlay-mtu {}: expected 576 or more (IPv4's minimum)",
                self.underlay_mtu
            )));
        }
        let path_payload = usize::from(self.underlay_mtu) - ip_udp;
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(CliError::Value(format!(
                "TAP MTU {mtu}: expected {MIN_MTU} to {MAX_MTU} (check --mtu and --underlay-mtu)"
            )));
        }
        let (key, created) = key::load_or_create(&self.key_file)?;
        let cfg = Config {
            key,
            local,
            peer,
            dev: self.dev.clone(),
            mtu,
            addresses: self.address.clone(),
            max_age: Duration::from_secs_f64(self.max_age),
            keepalive: Duration::from_secs(self.keepalive),
            sockbuf: self.sockbuf,
            offload: !self.no_offload,
            path_payload,
            clamp_mss: self.clamp_mss,
            status_socket: self.status_socket.clone(),
            mac: self.mac,
            cipher: self.cipher,
        };
        Ok((cfg, created))
    }
}

/// Smallest TAP MTU: IPv4's minimum datagram size.
pub const MIN_MTU: u16 = 576;

/// Parses argv (without the program name) with argh's messages.
pub fn parse(args: &[&str]) -> Result<Cli, argh::EarlyExit> {
    Cli::from_args(&["taptun"], args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_and_options() {
        let c = parse(&[
            "k.b64",
            ":9123",
            "1.2.3.4:9123",
            "-i",
            "tap7",
            "--address",
            "10.0.0.1/24",
            "-a",
            "fd00::1/64",
            "--mtu",
            "1400",
        ])
        .unwrap();
        assert_eq!(c.key_file, PathBuf::from("k.b64"));
        assert_eq!(c.peer.as_deref(), Some("1.2.3.4:9123"));
        assert_eq!(c.dev.as_deref(), Some("tap7"));
        assert_eq!(c.address.len(), 2);
        assert_eq!(c.mtu, Some(1400));
        let c = parse(&["k.b64", ":9123"]).unwrap();
        assert_eq!(
            (c.peer, c.max_age, c.keepalive, c.underlay_mtu),
            (None, 3.0, 25, 1500)
        );
        assert!(parse(&["k.b64"]).is_err());
        assert!(parse(&["k", ":1", "p:1", "extra"]).is_err());
        let e = parse(&["k", ":1", "--address", "10.0.0.1"]).unwrap_err();
        assert!(e.output.contains("10.0.0.1"), "{}", e.output);
        assert!(parse(&["--help"]).unwrap_err().status.is_ok());
        let c = parse(&[
            "k",
            ":1",
            "--user",
            "nobody",
            "--up",
            "echo up",
            "--down",
            "",
            "--stats",
            "60",
            "--stats-json",
        ])
        .unwrap();
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert_eq!(c.up.as_deref(), Some("echo up"));
        assert_eq!(c.down.as_deref(), Some(""));
        assert_eq!((c.stats, c.stats_json), (60, true));
    }

    #[test]
    fn values_checked_before_key_file_is_touched() {
        let dir = std::env::temp_dir().join(format!("taptun-cli-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let key = dir.join("never.b64");
        let k = key.to_str().unwrap();
        for args in [
            vec![k, ":1", "--max-age", "0"],
            vec![k, ":1", "--dev", "a/b"],
            vec![k, ":1", "--mtu", "10"],
            vec![k, ":1", "--mtu", "575"],
            vec![k, ":1", "--mtu", "9001"],
            vec![k, ":1", "--underlay-mtu", "600"],
            vec![k, ":1", "--user", ""],
            vec![k, ":1", "--stats", "99999999999"],
            vec![k, "1.2.3.4"],
            vec![k, ":1", "1.2.3.4:0"],
        ] {
            let e = parse(&args).unwrap().to_config().unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
        assert!(!key.exists());
    }

    #[test]
    fn clamp_mss_flag() {
        assert_eq!(parse(&["k", ":1"]).unwrap().clamp_mss, ClampMss::Auto);
        let c = parse(&["k", ":1", "--clamp-mss", "1300"]).unwrap();
        assert_eq!(c.clamp_mss, ClampMss::Fixed(1300));
        let e = parse(&["k", ":1", "--clamp-mss", "100"]).unwrap_err();
        assert!(
            e.status.is_err() && e.output.contains("--clamp-mss"),
            "{}",
            e.output
        );
    }

    #[test]
    fn default_mtu_follows_underlay() {
        let dir = std::env::temp_dir().join(format!("taptun-cli-mtu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k.b64");
        let k = key.to_str().unwrap();
        let mtu = |args: &[&str]| parse(args).unwrap().to_config().unwrap().0.mtu;
        assert_eq!(mtu(&[k, ":1"]), 1418);
        assert_eq!(mtu(&[k, ":1", "[fd00::2]:1"]), 1398);
        assert_eq!(mtu(&[k, "[::1]:1"]), 1398);
        assert_eq!(mtu(&[k, ":1", "--underlay-mtu", "1492"]), 1410);
        assert_eq!(mtu(&[k, ":1", "--mtu", "9000"]), 9000);
    }
}
