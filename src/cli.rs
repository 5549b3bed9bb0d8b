//! Command-line arguments, and their translation into a tunnel [`Config`];
//! the names of the config file (`--config`, parsed in `conffile`) and
//! how the command line and the file are merged.

use crate::addr::{self, AddrError, Cidr, Local};
use crate::config::{ClampMss, Config};
use crate::key::{self, KeyError};
use crate::tx::MAX_MTU;
use argh::{ArgsInfo, FromArgs};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// taptun: a Layer-2 tunnel over UDP, authenticated with HMAC-SHA256,
/// wire-compatible with tinytaptunnel v1.4.
///
/// Create a key once and copy it to both hosts:  taptun genkey key.b64;
/// the arguments may also come from a file, one `name = value` a line:
/// taptun --config /etc/taptun/home.conf (see taptun.conf(5)).
#[derive(FromArgs, ArgsInfo, Debug, Clone, PartialEq)]
#[argh(
    help_triggers("-h", "--help"),
    example = "taptun genkey /etc/taptun/home.key\ntaptun /etc/taptun/home.key :9123 203.0.113.15:9123 -i tap-home -a 10.1.2.1/24\ntaptun key.b64 :9123 --user nobody --up '/usr/share/taptun/l2_bridge_up.sh \"$TAPTUN_DEV\" eth0 br0' --stats 300 --stats-json",
    note = "Also: taptun genkey FILE writes a new key (32 random bytes, base64, mode\n0600). taptun status [DEV] [--json|--prometheus] asks a running tunnel how\nit is; without DEV, every tunnel of the host. taptun hub DIR LOCAL serves\na spoke per DIR/NAME.key on one port (taptun hub --help). taptun\n--version (-V) prints the version.\n\nStart-up: bind the socket, create the TAP (up, MTU, addresses), run --up,\ndrop to --user, start forwarding, then tell systemd READY=1 when\n$NOTIFY_SOCKET is set (path or @abstract). Hooks run with sh -c and get\nTAPTUN_DEV, TAPTUN_MTU, TAPTUN_PEER (IP:PORT or empty), TAPTUN_LOCAL and\nTAPTUN_EVENT (up/down) in their environment.\n\nSignals: SIGINT/SIGTERM: STOPPING=1, log the counters, run --down, remove\nthe TAP, exit 0 (within a second when there is no --down). SIGHUP: re-read\nthe key file; the new key is used for sending at once and the old one still\naccepted for --max-age (with --cipher: new handshakes use it, old sessions\nend within 120 s); a bad file is logged and the old key kept. SIGUSR1:\nlog the counters (and a JSON line with --stats-json).\n\nRun as root or with CAP_NET_ADMIN only (e.g. systemd\nAmbientCapabilities=CAP_NET_ADMIN). The key file must then be readable by\nthat user. See taptun(1), the unit taptun@.service (systemctl cat\ntaptun@.service) and /usr/share/doc/taptun/.",
    error_code(0, "clean stop (SIGINT/SIGTERM), --help, --version"),
    error_code(
        1,
        "the environment must change: no /dev/net/tun or CAP_NET_ADMIN, port in use, local address does not resolve, --up hook failed, --user switch failed; systemd restarts the unit"
    ),
    error_code(
        2,
        "the configuration must change: arguments, --config file, key file (content, permissions, cannot be created), unknown --user; systemd does not restart the unit"
    )
)]
pub struct Cli {
    /// key file: base64 of at least 16 secret bytes; created (mode 0600) with 32 random bytes if missing (here or key = in the --config file)
    #[argh(positional)]
    pub key_file: PathBuf,

    /// local UDP address: :PORT (every address), IP:PORT, [IPv6]:PORT or HOST:PORT (here or local = in the --config file)
    #[argh(positional, from_str_fn(local_syntax))]
    pub local: String,

    /// peer UDP address (IP:PORT, [IPv6]:PORT or HOST:PORT; a HOST is resolved at start and again once the peer is silent, see --resolve-every, while the address the peer talks from wins as long as it talks; one that does not resolve yet is retried); without it the peer is learned from the first valid datagram
    #[argh(positional, from_str_fn(peer_syntax))]
    pub peer: Option<String>,

    /// read the arguments from FILE, one `name = value` a line (see taptun.conf(5)); the command line's options and arguments win over the file's
    #[argh(option, arg_name = "FILE")]
    pub config: Option<PathBuf>,

    /// TAP interface name (default: the kernel picks tapN)
    #[argh(option, short = 'i', from_str_fn(interface_name))]
    pub dev: Option<String>,

    /// TAP MTU, 576 to 9000 (default: underlay MTU - IP - 8 UDP - 40 taptun - 14 Ethernet = 1418 on IPv4, 1398 on IPv6; larger ones are fragmented on the underlay)
    #[argh(option, from_str_fn(tap_mtu))]
    pub mtu: Option<u16>,

    /// MTU of the path between the hosts, used for the default TAP MTU and --clamp-mss auto (default 1500)
    #[argh(option, default = "1500", from_str_fn(underlay_mtu))]
    pub underlay_mtu: u16,

    /// address with prefix to put on the TAP, e.g. 10.1.2.3/24 or fd00::1/64 (repeatable; one IPv4 at most)
    #[argh(option, short = 'a', from_str_fn(cidr))]
    pub address: Vec<Cidr>,

    /// accept timestamps at most this many seconds old or in the future (default 3; clocks must agree this well)
    #[argh(option, default = "3.0", from_str_fn(max_age))]
    pub max_age: f64,

    /// send an empty authenticated datagram after this many seconds without sending (default 25, 0 = off)
    #[argh(option, default = "25", from_str_fn(keepalive))]
    pub keepalive: u64,

    /// UDP socket buffer size in bytes, each way (default 4194304)
    #[argh(option, default = "4 << 20", from_str_fn(sockbuf))]
    pub sockbuf: usize,

    /// lower the MSS option of TCP SYN and SYN-ACK segments crossing the tunnel: auto (default: so that full segments fit one unfragmented datagram on the --underlay-mtu path), off, or a number
    #[argh(option, default = "ClampMss::Auto", from_str_fn(clamp_mss))]
    pub clamp_mss: ClampMss,

    /// AQM on the receive queue: CoDel on how long datagrams wait in the UDP socket, marking an ECN-capable frame CE (else dropping it) while the wait stands above the target, so that a bulk transfer does not delay every other flow: on (default: target 0.5 ms, interval 5 ms), off, or TARGET_MS/INTERVAL_MS, e.g. 1/10
    #[argh(
        option,
        default = "Some(crate::codel::Params::DEFAULT)",
        from_str_fn(aqm)
    )]
    pub aqm: Option<crate::codel::Params>,

    /// flow queueing at the receiver: read a few runs of datagrams ahead, and take a datagram of a flow that has no other among them (a ping, DNS, a keystroke) before a bulk transfer's queue: on (default) or off; the HMAC wire only (sealed frames cannot be told apart before they are opened)
    #[argh(option, default = "true", from_str_fn(on_off))]
    pub fq: bool,

    /// spin on the UDP socket instead of sleeping for up to this many milliseconds after the last datagram received or sent after a quiet spell, so that the next is taken without a thread wake-up (lower round trips, one CPU kept busy while traffic flows): 0 to 1000 (default 0: off)
    #[argh(option, default = "0", from_str_fn(busy_poll))]
    pub busy_poll: u32,

    /// the nice value of the two threads that move the packets, -20 (most CPU when it is contended) to 19: a value below 0 shortens the queues on a busy host (needs root or CAP_SYS_NICE); default: as started
    #[argh(option, from_str_fn(nice))]
    pub nice: Option<i32>,

    /// run the two threads that move the packets under SCHED_FIFO at this real-time priority, 1 to 99, so that they preempt every normal thread at once (the shortest waits beside a bulk transfer); a thread that works 10 ms without finding its queue empty (a flood) goes on at the normal policy until it does, as the kernel bounds its own packet work; or off; needs root, CAP_SYS_NICE or LimitRTPRIO=N; not with --busy-poll or --nice, whose use leaves the default off; default: 1 where allowed, else as started (said once)
    #[argh(option, from_str_fn(rt_priority))]
    pub rt_priority: Option<i32>,

    /// encrypt: aes-256-gcm or chacha20-poly1305, the same on both sides (default: none, tinytaptunnel's authenticated but readable wire); a Noise handshake under the same key file gives forward secrecy, and no clock is checked
    #[argh(option, from_str_fn(cipher))]
    pub cipher: Option<crate::aead::Cipher>,

    /// the TAP's MAC address, e.g. 02:00:00:00:00:01 (default: derived from /etc/machine-id, the TAP name and the network namespace, the same on every start)
    #[argh(option, from_str_fn(mac))]
    pub mac: Option<crate::mac::MacAddr>,

    /// where `taptun status` reaches this tunnel: a Unix socket, mode 0600 (default /run/taptun/DEV.sock)
    #[argh(option)]
    pub status_socket: Option<PathBuf>,

    /// without PEER: a file that keeps the learned peer's last address, read at start (sending to it at once) and written when it changes (default $STATE_DIRECTORY/peer.state when systemd sets STATE_DIRECTORY, else none); ignored with PEER
    #[argh(option)]
    pub state: Option<PathBuf>,

    /// do not use TAP checksum/segmentation offloads (default: use them when the kernel allows; the wire format is the same either way)
    #[argh(switch)]
    pub no_offload: bool,

    /// log level: error, warn, info, debug or trace (default: $RUST_LOG, else info); logs go to stderr
    #[argh(option, from_str_fn(log_level))]
    pub log_level: Option<log::LevelFilter>,

    /// when started as root: switch to this user (and its groups) once the TAP and socket exist and --up has run; the TAP can then not be reconfigured, --down runs unprivileged, and the key file must be readable by the user for SIGHUP
    #[argh(option, from_str_fn(user_name))]
    pub user: Option<String>,

    /// shell command (sh -c) run once the TAP is up, before forwarding starts; if it fails, taptun stops with exit code 1. Environment: TAPTUN_DEV, TAPTUN_MTU, TAPTUN_PEER, TAPTUN_LOCAL, TAPTUN_EVENT=up
    #[argh(option)]
    pub up: Option<String>,

    /// shell command (sh -c) run at shutdown before the TAP is removed (killed after 10 s); same environment with TAPTUN_EVENT=down and the current peer
    #[argh(option)]
    pub down: Option<String>,

    /// with a peer given by name: once the peer has sent nothing valid for 2 keepalive intervals (SECS when keepalives are off), resolve the name again, at most every SECS seconds (default 30); a new address replaces the one in use
    #[argh(
        option,
        default = "crate::resolve::DEFAULT_EVERY.as_secs()",
        from_str_fn(resolve_every)
    )]
    pub resolve_every: u64,

    /// mark the UDP socket's datagrams with MARK (SO_MARK, needs CAP_NET_ADMIN) so that policy routing keeps them out of the tunnel, e.g. with a default route through the TAP (see /usr/share/doc/taptun/docs/networking.md)
    #[argh(option, from_str_fn(fwmark))]
    pub fwmark: Option<u32>,

    /// log the counters every SECS seconds as well as on SIGUSR1 and at exit (default 0 = off)
    #[argh(option, default = "0", from_str_fn(stats_interval))]
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
    /// A number out of range, a missing argument, values that clash.
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
    /// The process exit code: 1 for what the environment must fix (DNS,
    /// the OS random source), 2 for what the configuration must fix:
    /// values, and the key file, also one that cannot be read or created
    /// (a restart would meet the same file).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Addr(AddrError::Resolve { .. }) => 1,
            CliError::Key(KeyError::Random(_)) => 1,
            _ => 2,
        }
    }
}

impl Cli {
    /// Checks what single values cannot (presence, combinations) and
    /// builds the tunnel configuration. Loads or creates the key, last:
    /// nothing is created for a configuration that is refused anyway. The
    /// flag says whether the key was created. `state_directory` is
    /// systemd's `$STATE_DIRECTORY` (the default state file's folder).
    pub fn to_config(&self, state_directory: Option<&str>) -> Result<(Config, bool), CliError> {
        if let Some(second) = self.address.iter().filter(|c| c.ip.is_ipv4()).nth(1) {
            return Err(CliError::Value(format!("--address {second}: {TWO_IPV4}")));
        }
        let local = addr::parse_local(&self.local)?;
        let arg = self.peer.as_deref().map(addr::parse_peer_arg).transpose()?;
        let (peer, peer_name) = match arg {
            None => (None, None),
            Some(addr::PeerArg::Addr(a)) => (Some(a), None),
            // A name that does not resolve yet (DNS not up at boot) does
            // not stop the tunnel: the engine keeps resolving it.
            Some(addr::PeerArg::Name(n)) => match n.resolve() {
                Ok(a) => (Some(a), Some(n)),
                Err(e) => {
                    log::warn!(
                        "{e}; starting without the peer's address, resolving again every {} s",
                        self.resolve_every
                    );
                    (None, Some(n))
                }
            },
        };
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
        let path_payload = usize::from(self.underlay_mtu).saturating_sub(ip_udp);
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(CliError::Value(format!(
                "TAP MTU {mtu}: expected {MIN_MTU} to {MAX_MTU} (check --mtu and --underlay-mtu)"
            )));
        }
        // The state file only stands in for a peer that is learned: a
        // configured one (or a name resolved again) always rules.
        let state = match (&self.peer, &self.state) {
            (None, Some(p)) => Some(p.clone()),
            (None, None) => state_directory
                .filter(|d| !d.is_empty())
                .map(|d| PathBuf::from(d).join("peer.state")),
            (Some(_), Some(p)) => {
                log::info!(
                    "state file {} not used: the peer is configured, not learned",
                    p.display()
                );
                None
            }
            (Some(_), None) => None,
        };
        let priority = priority(
            self.nice,
            self.rt_priority,
            self.busy_poll,
            DEFAULT_PRIORITY,
        )
        .map_err(CliError::Value)?;
        let (key, created) = key::load_or_create(&self.key_file)?;
        let cfg = Config {
            key,
            local,
            peer,
            peer_name,
            resolve_every: Duration::from_secs(self.resolve_every),
            fwmark: self.fwmark,
            dev: self.dev.clone(),
            mtu,
            addresses: self.address.clone(),
            max_age: Duration::from_secs_f64(self.max_age),
            keepalive: Duration::from_secs(self.keepalive),
            sockbuf: self.sockbuf,
            offload: !self.no_offload,
            path_payload,
            clamp_mss: self.clamp_mss,
            aqm: self.aqm,
            busy_poll_ns: u64::from(self.busy_poll) * 1_000_000,
            priority,
            fq: self.fq,
            status_socket: self.status_socket.clone(),
            state,
            mac: self.mac,
            cipher: self.cipher,
        };
        Ok((cfg, created))
    }
}

/// `--fwmark`: a mark in decimal or 0x hex, not 0 (0 is "no mark").
fn fwmark(v: &str) -> Result<u32, String> {
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => v.parse(),
    };
    match n {
        Ok(m) if m != 0 => Ok(m),
        _ => Err(
            "expected a mark from 1 to 4294967295, decimal or 0x hex (as ip rule's fwmark)".into(),
        ),
    }
}

fn resolve_every(v: &str) -> Result<u64, String> {
    number(v, 1, 86400).map_err(|_| "expected seconds from 1 to 86400".into())
}

/// Why a second IPv4 `--address` is refused.
const TWO_IPV4: &str =
    "only one IPv4 address can be set; add more with `ip addr add` (IPv6 may repeat)";

/// Checks what the config file's settings (name, value pairs, each valid
/// alone) cannot be together; on error, the index of the setting at fault
/// and why. The same rules as [`Cli::to_config`], so that a file's mistake
/// is reported with its line.
pub fn check_together(settings: &[(&str, &str)]) -> Result<(), (usize, String)> {
    let ipv4 = settings.iter().enumerate().filter(|(_, (name, value))| {
        *name == "address" && value.parse::<Cidr>().is_ok_and(|c| c.ip.is_ipv4())
    });
    if let Some((i, _)) = ipv4.clone().nth(1) {
        return Err((i, TWO_IPV4.to_string()));
    }
    // The later of two settings that do not go together is at fault.
    let at = |name: &str| settings.iter().rposition(|(n, _)| *n == name);
    let spins = settings
        .iter()
        .any(|(n, v)| *n == "busy-poll" && v.parse::<u32>().is_ok_and(|ms| ms > 0));
    if let Some(rt) = at("rt-priority").filter(|&i| settings[i].1 != "off") {
        if let Some(n) = at("nice") {
            return Err((rt.max(n), RT_AND_NICE.to_string()));
        }
        if spins && let Some(b) = at("busy-poll") {
            return Err((rt.max(b), RT_AND_SPIN.to_string()));
        }
    }
    Ok(())
}

/// Smallest TAP MTU: IPv4's minimum datagram size.
pub const MIN_MTU: u16 = 576;

// The values' parsers (argh's from_str_fn). Each says what it expected,
// without the value: `one_line` and the config file put the flag or name
// and the value in front.

/// A whole number from `min` to `max`.
fn number<T>(v: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display,
{
    match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("expected a number from {min} to {max}")),
    }
}

pub(crate) fn tap_mtu(v: &str) -> Result<u16, String> {
    number(v, MIN_MTU, MAX_MTU)
}

pub(crate) fn underlay_mtu(v: &str) -> Result<u16, String> {
    number(v, 576, u16::MAX).map_err(|e| format!("{e} (576: IPv4's minimum)"))
}

pub(crate) fn max_age(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86400.0 => Ok(s),
        _ => Err("expected seconds, more than 0 and at most 86400".into()),
    }
}

pub(crate) fn keepalive(v: &str) -> Result<u64, String> {
    number(v, 0, 86400).map_err(|_| "expected seconds from 0 (off) to 86400".into())
}

pub(crate) fn stats_interval(v: &str) -> Result<u64, String> {
    number(v, 0, 86400 * 366).map_err(|_| "expected seconds from 0 (off) to 31622400".into())
}

pub(crate) fn sockbuf(v: &str) -> Result<usize, String> {
    // setsockopt takes an int.
    number(v, 0, i32::MAX as usize)
        .map_err(|_| "expected a size in bytes, at most 2147483647".into())
}

fn cidr(v: &str) -> Result<Cidr, String> {
    v.parse()
        .map_err(|_| "expected IP/PREFIX, e.g. 10.1.2.3/24 or fd00::1/64".into())
}

pub(crate) fn clamp_mss(v: &str) -> Result<ClampMss, String> {
    v.parse().map_err(|_| {
        format!(
            "expected off, auto or an MSS from {} to 65535",
            crate::config::MIN_CLAMP_MSS
        )
    })
}

pub(crate) fn aqm(v: &str) -> Result<Option<crate::codel::Params>, String> {
    v.parse::<crate::codel::Setting>().map(|s| s.0)
}

/// `--fq`: on or off.
fn on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

/// `--busy-poll`: milliseconds, 0 to 1000.
fn busy_poll(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n <= 1_000 => Ok(n),
        _ => Err("expected milliseconds from 0 to 1000".into()),
    }
}

/// `--nice`: the kernel's range, -20 to 19.
pub(crate) fn nice(v: &str) -> Result<i32, String> {
    match v.parse::<i32>() {
        Ok(n) if crate::priority::NICE.contains(&n) => Ok(n),
        _ => Err("expected a nice value from -20 to 19".into()),
    }
}

/// The tunnel's packet threads without `--nice`, `--rt-priority` or
/// `--busy-poll`: SCHED_FIFO 1 where the kernel allows it, each burst
/// bounded (`burst.rs`). The lowest real-time priority: above every
/// normal thread, below every other real-time one.
pub const DEFAULT_PRIORITY: crate::priority::Priority =
    crate::priority::Priority::FifoWhereAllowed(1);

/// `--rt-priority off`, as the parser gives it (no SCHED_FIFO priority is 0).
pub const RT_OFF: i32 = 0;

/// `--rt-priority`: a SCHED_FIFO priority, 1 to 99, or `off` ([`RT_OFF`]).
pub(crate) fn rt_priority(v: &str) -> Result<i32, String> {
    match v.parse::<i32>() {
        _ if v == "off" => Ok(RT_OFF),
        Ok(n) if crate::priority::RT.contains(&n) => Ok(n),
        _ => Err("expected a real-time priority from 1 to 99, or off".into()),
    }
}

/// Why `--rt-priority` goes with neither `--busy-poll` nor `--nice`.
const RT_AND_SPIN: &str = "--rt-priority with --busy-poll: a thread that spins at a real-time priority keeps every normal thread off its CPU while it spins; choose one";
const RT_AND_NICE: &str =
    "--rt-priority with --nice: a real-time thread has no nice value to use; choose one";

/// The packet threads' scheduling from `--nice`, `--rt-priority` (its
/// `off` is [`RT_OFF`]) and `--busy-poll` (ms), `default` when none is
/// given, or why they do not go together.
pub fn priority(
    nice: Option<i32>,
    rt: Option<i32>,
    busy_poll: u32,
    default: crate::priority::Priority,
) -> Result<crate::priority::Priority, String> {
    use crate::priority::Priority;
    match (nice, rt) {
        (Some(n), Some(RT_OFF)) => Ok(Priority::Nice(n)),
        (Some(_), Some(_)) => Err(RT_AND_NICE.into()),
        (None, Some(RT_OFF)) => Ok(Priority::AsStarted),
        (None, Some(_)) if busy_poll > 0 => Err(RT_AND_SPIN.into()),
        (None, Some(p)) => Ok(Priority::Fifo(p)),
        (Some(n), None) => Ok(Priority::Nice(n)),
        // Spinning at a real-time priority would starve the CPU's normal
        // threads while it spins: --busy-poll alone leaves the default.
        (None, None) if busy_poll > 0 => Ok(Priority::AsStarted),
        (None, None) => Ok(default),
    }
}

pub(crate) fn cipher(v: &str) -> Result<crate::aead::Cipher, String> {
    v.parse().map_err(|_| {
        let names: Vec<String> = crate::aead::Cipher::ALL
            .iter()
            .map(|c| c.to_string())
            .collect();
        format!("expected {}", names.join(" or "))
    })
}

fn mac(v: &str) -> Result<crate::mac::MacAddr, String> {
    // Its messages start with the value, which `one_line` puts in front.
    v.parse::<crate::mac::MacAddr>().map_err(|e| {
        e.strip_prefix(&format!("{v:?}: "))
            .map(str::to_string)
            .unwrap_or(e)
    })
}

pub(crate) fn log_level(v: &str) -> Result<log::LevelFilter, String> {
    v.parse()
        .map_err(|_| "expected error, warn, info, debug, trace or off".into())
}

pub(crate) fn user_name(v: &str) -> Result<String, String> {
    if v.is_empty() || v.contains(['\0', '/', ':']) {
        return Err("expected a user name".into());
    }
    Ok(v.to_string())
}

fn interface_name(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 15 || v.contains(['/', ' ', ':']) || v == "." || v == ".." {
        return Err(
            "expected an interface name of 1 to 15 characters without '/', ':' or spaces".into(),
        );
    }
    Ok(v.to_string())
}

/// What an address of this syntax error should have looked like.
fn addr_expected(e: AddrError) -> String {
    match e {
        AddrError::Port { .. } => "expected a port number from 1 to 65535".into(),
        AddrError::Syntax { what: "peer", .. } => {
            "expected IP:PORT, [IPv6]:PORT or HOST:PORT".into()
        }
        _ => "expected :PORT, IP:PORT, [IPv6]:PORT or HOST:PORT".into(),
    }
}

pub(crate) fn local_syntax(v: &str) -> Result<String, String> {
    addr::check_local(v).map_err(addr_expected)?;
    Ok(v.to_string())
}

fn peer_syntax(v: &str) -> Result<String, String> {
    addr::check_peer(v).map_err(addr_expected)?;
    Ok(v.to_string())
}

/// Parses argv (without the program name) with argh's messages;
/// [`one_line`] makes an error one line.
pub fn parse(args: &[&str]) -> Result<Cli, argh::EarlyExit> {
    Cli::from_args(&["taptun"], args)
}

/// How the config file sets one of the command line's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The positional argument at this index (key, local, peer).
    Positional(usize),
    /// A switch: `true`/`yes` gives it, `false`/`no` leaves it out.
    Switch,
    /// An option with a value, at most once.
    Value,
    /// An option with a value that may be repeated (`address`).
    Repeated,
}

/// A command line that a config file (taptun.conf(5)) can complete:
/// `taptun`'s [`Cli`] and `taptun hub`'s `HubCli`. The config file's
/// machinery (its names, the check of a value, the merge with the command
/// line, the one-line errors) is written once over this trait, from
/// argh's description of the struct, so that a new option of either
/// command is a config name of that command's file too.
pub trait ConfigArgs: FromArgs + ArgsInfo + Sized {
    /// The command's name as argh shows it in messages (`taptun`, `taptun hub`).
    const COMMAND: &'static str;
    /// The config file's names of the positionals, in order (argh's
    /// names but where a shorter one reads better: `key` for `key_file`).
    const POSITIONALS: &'static [&'static str];
    /// What each positional is, for messages (`the key file`, ...).
    const POSITIONAL_WHAT: &'static [&'static str];
    /// How many positionals are required (the first ones).
    const REQUIRED: usize;
    /// Valid values for the required positionals, put in their places
    /// when a command line with `--config` leaves them to the file, so
    /// that argh parses the rest; [`CommandLine::merge`] replaces them.
    const PLACEHOLDERS: &'static [&'static str];
    /// The usage line in the message for missing positionals.
    const USAGE: &'static str;
    /// The variables of an old EnvironmentFile that the file must not
    /// hold (they get a message that says how to write them now).
    const OLD_NAMES: &'static [&'static str] = &[];

    /// The `--config` FILE given, if any.
    fn config_file(&self) -> Option<&std::path::Path>;
    /// How many positionals the command line gave.
    fn positionals_given(&self) -> usize;
    /// Sets positional `i` from the file (None: the file has none, or an
    /// empty one); an error when a required one is then missing.
    fn set_positional(&mut self, i: usize, value: Option<&str>) -> Result<(), String>;
    /// Checks the value of positional `name` as argh would.
    fn check_positional(name: &str, value: &str) -> Result<(), String>;
    /// Checks what several settings only together can break: the index
    /// of the setting to blame and why.
    fn check_together(_settings: &[(&str, &str)]) -> Result<(), (usize, String)> {
        Ok(())
    }
}

impl ConfigArgs for Cli {
    const COMMAND: &'static str = "taptun";
    const POSITIONALS: &'static [&'static str] = &["key", "local", "peer"];
    const POSITIONAL_WHAT: &'static [&'static str] =
        &["the key file", "the local address", "the peer address"];
    const REQUIRED: usize = 2;
    const PLACEHOLDERS: &'static [&'static str] = &["KEY_FILE", ":1"];
    const USAGE: &'static str = "taptun KEY_FILE LOCAL [PEER] [OPTIONS], or taptun --config FILE";
    const OLD_NAMES: &'static [&'static str] = &["KEY", "LOCAL", "PEER", "ARGS", "UP", "DOWN"];

    fn config_file(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
    fn positionals_given(&self) -> usize {
        2 + usize::from(self.peer.is_some())
    }
    fn set_positional(&mut self, i: usize, value: Option<&str>) -> Result<(), String> {
        match (i, value) {
            (0, Some(v)) => self.key_file = PathBuf::from(v),
            (1, Some(v)) => self.local = v.to_string(),
            (2, v) => self.peer = v.map(str::to_string),
            _ => return Err(missing_positional::<Cli>(i)),
        }
        Ok(())
    }
    fn check_positional(name: &str, value: &str) -> Result<(), String> {
        match name {
            "local" => local_syntax(value).map(drop),
            "peer" if value.is_empty() => Ok(()),
            "peer" => peer_syntax(value).map(drop),
            _ if value.is_empty() => Err("expected a file name".into()),
            _ => Ok(()),
        }
    }
    fn check_together(settings: &[(&str, &str)]) -> Result<(), (usize, String)> {
        check_together(settings)
    }
}

/// The message for required positional `i` that neither the command
/// line nor the config file gives.
pub fn missing_positional<A: ConfigArgs>(i: usize) -> String {
    let what = A::POSITIONAL_WHAT.get(i).copied().unwrap_or("an argument");
    let name = A::POSITIONALS.get(i).copied().unwrap_or("?");
    format!("missing {what}: give it on the command line or as {name} = in the config file")
}

/// The names a config file accepts, with their kinds: the positionals
/// (`key`, `local`, `peer`) and every long option of [`Cli`] without its
/// dashes, but `help` and `config`.
pub fn config_names() -> Vec<(&'static str, Kind)> {
    config_names_of::<Cli>()
}

/// The names the config file of command `A` accepts, with their kinds:
/// [`ConfigArgs::POSITIONALS`] and every long option of `A` without its
/// dashes, but `help` and `config`. Read from argh's description of `A`,
/// so that a new option is a config name too.
pub fn config_names_of<A: ConfigArgs>() -> Vec<(&'static str, Kind)> {
    let info = A::get_args_info();
    let mut names: Vec<(&'static str, Kind)> = info
        .positionals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = A::POSITIONALS.get(i).copied().unwrap_or(p.name);
            (name, Kind::Positional(i))
        })
        .collect();
    for f in info.flags {
        let Some(name) = f.long.strip_prefix("--") else {
            continue;
        };
        if name == "help" || name == "config" {
            continue;
        }
        let kind = match (&f.kind, &f.optionality) {
            (argh::FlagInfoKind::Switch, _) => Kind::Switch,
            (_, argh::Optionality::Repeating) => Kind::Repeated,
            _ => Kind::Value,
        };
        names.push((name, kind));
    }
    names
}

/// Checks the value of the config file's setting `name`, of kind `kind`,
/// as the command line would take it (argh parses `--name value` with
/// placeholders for the positionals);
/// on error, what was expected.
pub fn check_setting(name: &str, kind: Kind, value: &str) -> Result<(), String> {
    check_setting_of::<Cli>(name, kind, value)
}

/// [`check_setting`] for the config file of command `A`.
pub fn check_setting_of<A: ConfigArgs>(name: &str, kind: Kind, value: &str) -> Result<(), String> {
    match kind {
        Kind::Switch => switch_value(value).map(drop),
        Kind::Positional(_) => A::check_positional(name, value),
        Kind::Value | Kind::Repeated => {
            let flag = format!("--{name}");
            let mut args = vec![flag.as_str(), value];
            args.extend_from_slice(A::PLACEHOLDERS);
            match A::from_args(&[A::COMMAND], &args) {
                Ok(_) => Ok(()),
                Err(e) => Err(value_message(&flag, value, &e.output)
                    .unwrap_or_else(|| e.output.trim().replace('\n', "; "))),
            }
        }
    }
}

/// A switch's value in the config file: true/yes or false/no.
pub fn switch_value(value: &str) -> Result<bool, String> {
    match value {
        "true" | "yes" => Ok(true),
        "false" | "no" => Ok(false),
        _ => Err("expected true, false, yes or no".into()),
    }
}

/// The message argh gave for `flag value`, without its frame.
fn value_message(flag: &str, value: &str, output: &str) -> Option<String> {
    let msg = output
        .strip_prefix(&format!(
            "Error parsing option '{flag}' with value '{value}': "
        ))?
        .trim_end();
    Some(msg.to_string())
}

/// The long name, without dashes, of a flag as typed (`-i`, `--dev`).
pub fn long_name(flag: &str) -> Option<&'static str> {
    long_name_of::<Cli>(flag)
}

/// [`long_name`] among the flags of command `A`.
pub fn long_name_of<A: ConfigArgs>(flag: &str) -> Option<&'static str> {
    A::get_args_info()
        .flags
        .iter()
        .find(|f| f.long == flag || f.short.is_some_and(|c| flag == format!("-{c}")))
        .and_then(|f| f.long.strip_prefix("--"))
}

/// The long options given in `args` (a command line argh accepts), by
/// long name without dashes, as argh itself parsed them.
fn options_given<A: ConfigArgs>(args: &[&str]) -> Result<Vec<&'static str>, argh::EarlyExit> {
    Ok(A::redact_arg_values(&[A::COMMAND], args)?
        .iter()
        .filter_map(|w| long_name_of::<A>(w))
        .collect())
}

/// A command line argh accepted, perhaps with placeholders for the
/// positionals it lacks when it names a config file.
#[derive(Debug)]
pub struct CommandLine<'a, A = Cli> {
    /// The arguments, with the placeholders at the end.
    words: Vec<&'a str>,
    /// How many positionals the command line itself gave.
    given: usize,
    /// What argh made of `words`.
    pub cli: A,
}

/// Parses argv (without the program name). A command line with
/// `--config` may leave the key file and the local address to the file.
pub fn parse_command_line<'a>(args: &[&'a str]) -> Result<CommandLine<'a>, argh::EarlyExit> {
    parse_command_line_of::<Cli>(args)
}

/// [`parse_command_line`] for command `A` (argv after its name): with
/// `--config`, the required positionals may be left to the file.
pub fn parse_command_line_of<'a, A: ConfigArgs>(
    args: &[&'a str],
) -> Result<CommandLine<'a, A>, argh::EarlyExit> {
    match A::from_args(&[A::COMMAND], args) {
        Ok(cli) => Ok(CommandLine {
            words: args.to_vec(),
            given: cli.positionals_given(),
            cli,
        }),
        Err(e)
            if e.output
                .starts_with("Required positional arguments not provided:") =>
        {
            // Every option parsed (argh checks what is missing last), so
            // words that do not start with '-' appended at the end are
            // taken as the missing positionals, also after a `--`.
            let missing = e.output.lines().skip(1).count().min(A::REQUIRED);
            let given = A::REQUIRED - missing;
            let mut words = args.to_vec();
            words.extend_from_slice(A::PLACEHOLDERS.get(given..).unwrap_or_default());
            match A::from_args(&[A::COMMAND], &words) {
                Ok(cli) if cli.config_file().is_some() => Ok(CommandLine { words, given, cli }),
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

impl<A: ConfigArgs> CommandLine<'_, A> {
    /// The command line completed with the config file's `settings`
    /// (name, value pairs that [`crate::conffile::parse`] accepted): an
    /// option given on the command line replaces the file's (for
    /// `address`, the whole list), and so does a positional argument, each
    /// in its place (the first one the file's `key`, ...). An error is one
    /// line.
    pub fn merge(self, settings: &[(&str, &str)]) -> Result<A, String> {
        let names = config_names_of::<A>();
        let on_cli = options_given::<A>(&self.words)
            .map_err(|e| one_line_of::<A>(&self.words, &e.output))?;
        let mut words: Vec<String> = Vec::new();
        let mut positionals: Vec<Option<&str>> = vec![None; A::POSITIONALS.len()];
        for &(name, value) in settings {
            let Some(&(_, kind)) = names.iter().find(|(n, _)| *n == name) else {
                return Err(format!("unknown setting {name:?}"));
            };
            if on_cli.contains(&name) {
                continue;
            }
            match kind {
                Kind::Positional(i) => {
                    if let Some(p) = positionals.get_mut(i) {
                        *p = Some(value).filter(|v| !v.is_empty());
                    }
                }
                Kind::Switch => {
                    if switch_value(value)? {
                        words.push(format!("--{name}"));
                    }
                }
                Kind::Value | Kind::Repeated => {
                    words.push(format!("--{name}"));
                    words.push(value.to_string());
                }
            }
        }
        let mut all: Vec<&str> = words.iter().map(String::as_str).collect();
        all.extend_from_slice(&self.words);
        let mut cli =
            A::from_args(&[A::COMMAND], &all).map_err(|e| one_line_of::<A>(&all, &e.output))?;
        for (i, value) in positionals.into_iter().enumerate().skip(self.given) {
            cli.set_positional(i, value)?;
        }
        Ok(cli)
    }
}

/// argh's message for a command line it refused, as one line that names
/// the flag or argument and the value, and says what was expected.
pub fn one_line(args: &[&str], output: &str) -> String {
    one_line_of::<Cli>(args, output)
}

/// [`one_line`] for command `A`: its options, positionals and usage.
pub fn one_line_of<A: ConfigArgs>(args: &[&str], output: &str) -> String {
    let output = output.trim_end();
    let info = A::get_args_info();
    if let Some(rest) = output.strip_prefix("Error parsing option '") {
        for w in args.windows(2) {
            if let Some(msg) = value_message(w[0], w[1], output) {
                return if msg == "duplicate values provided" {
                    let repeated: Vec<String> = info
                        .flags
                        .iter()
                        .filter(|f| matches!(f.optionality, argh::Optionality::Repeating))
                        .map(|f| match f.short {
                            Some(c) => format!("-{c}/{}", f.long),
                            None => f.long.to_string(),
                        })
                        .collect();
                    match repeated.as_slice() {
                        [] => format!("{} given twice; give it once", w[0]),
                        r => format!("{} given twice; only {} may repeat", w[0], r.join(", ")),
                    }
                } else {
                    format!("{} {:?}: {msg}", w[0], w[1])
                };
            }
        }
        return rest.replace('\n', "; ");
    }
    if let Some(rest) = output.strip_prefix("Error parsing positional argument '")
        && let Some((name, rest)) = rest.split_once("' with value '")
    {
        for v in args {
            if let Some(msg) = rest.strip_prefix(&format!("{v}': ")) {
                let i = info.positionals.iter().position(|p| p.name == name);
                let what = i
                    .and_then(|i| A::POSITIONAL_WHAT.get(i))
                    .map_or(name, |w| w.trim_start_matches("the "));
                return format!("{what} {v:?}: {msg}");
            }
        }
    }
    if let Some(arg) = output.strip_prefix("Unrecognized argument: ") {
        if arg.starts_with('-') {
            let known: Vec<String> = info.flags.iter().map(|f| f.long.to_string()).collect();
            let close = crate::conffile::close_names(arg, known.iter().map(String::as_str));
            return match close.as_slice() {
                [] => format!("unknown option {arg}"),
                c => format!("unknown option {arg} (did you mean {}?)", c.join(" or ")),
            };
        }
        let usage: Vec<String> = info
            .positionals
            .iter()
            .map(|p| {
                let n = p.name.to_uppercase();
                match p.optionality {
                    argh::Optionality::Optional => format!("[{n}]"),
                    _ => n,
                }
            })
            .collect();
        return format!(
            "unexpected argument {arg:?}: {} takes {} and options",
            A::COMMAND,
            usage.join(" ")
        );
    }
    if output.starts_with("Required positional arguments not provided:") {
        let missing: Vec<&str> = (0..A::REQUIRED)
            .filter(|&i| {
                info.positionals
                    .get(i)
                    .is_some_and(|p| output.lines().skip(1).any(|l| l.trim() == p.name))
            })
            .filter_map(|i| A::POSITIONAL_WHAT.get(i).copied())
            .collect();
        let what = match missing.as_slice() {
            [] => "arguments".to_string(),
            m => m.join(" and "),
        };
        return format!("missing {what}: {}", A::USAGE);
    }
    if let Some(rest) = output.strip_prefix("No value provided for option '") {
        let flag = rest.trim_end_matches("'.");
        return format!("{flag} needs a value");
    }
    output.lines().map(str::trim).collect::<Vec<_>>().join("; ")
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
            vec![k, ":1", "--resolve-every", "0"],
            vec![k, ":1", "--fwmark", "0"],
            vec![
                k,
                ":1",
                "-a",
                "10.0.0.1/24",
                "-a",
                "fd00::1/64",
                "-a",
                "10.0.0.2/24",
            ],
        ] {
            // Refused by argh with a message, or by to_config with code 2.
            match parse(&args) {
                Err(e) => {
                    assert!(e.status.is_err(), "{args:?}");
                    let line = one_line(&args, &e.output);
                    assert!(line.contains("expected") && !line.contains('\n'), "{line}");
                }
                Ok(c) => {
                    let e = c.to_config(None).unwrap_err();
                    assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
                }
            }
        }
        assert!(!key.exists());
    }

    #[test]
    fn command_line_errors_are_one_line() {
        let cases: [(&[&str], &str); 9] = [
            (
                &["k", ":1", "--mtu", "abc"],
                "--mtu \"abc\": expected a number from 576 to 9000",
            ),
            (&["k", ":1", "--bogus"], "unknown option --bogus"),
            (
                &["k", ":1", "--mtuu", "1"],
                "unknown option --mtuu (did you mean --mtu?)",
            ),
            (&[], "missing the key file and the local address"),
            (&["k"], "missing the local address"),
            (
                &["k", ":1", "--log-level", "loud"],
                "expected error, warn, info, debug, trace or off",
            ),
            (&["k", ":1", "--mtu"], "--mtu needs a value"),
            (&["k", ":1", "p:1", "x"], "unexpected argument \"x\""),
            (&["k", "9123"], "local address \"9123\": expected :PORT"),
        ];
        for (args, want) in cases {
            let e = parse_command_line(args).unwrap_err();
            let line = one_line(args, &e.output);
            assert!(
                line.contains(want) && !line.contains('\n'),
                "{args:?}: {line}"
            );
        }
    }

    #[test]
    fn config_file_fills_what_the_command_line_leaves() {
        let file = [
            ("key", "/etc/taptun/home.key"),
            ("local", ":9123"),
            ("peer", "192.0.2.1:9123"),
            ("dev", "tap-home"),
            ("mtu", "1400"),
            ("address", "10.0.0.1/24"),
            ("address", "fd00::1/64"),
            ("no-offload", "true"),
            ("stats-json", "no"),
        ];
        let merged = |args: &[&str]| parse_command_line(args).unwrap().merge(&file).unwrap();
        let c = merged(&["--config", "f"]);
        assert_eq!(c.key_file, PathBuf::from("/etc/taptun/home.key"));
        assert_eq!(
            (c.local.as_str(), c.peer.as_deref()),
            (":9123", Some("192.0.2.1:9123"))
        );
        assert_eq!((c.dev.as_deref(), c.mtu), (Some("tap-home"), Some(1400)));
        assert_eq!(c.address.len(), 2);
        assert!(c.no_offload && !c.stats_json);
        // The command line wins: options (a list as a whole), positionals in order.
        let c = merged(&[
            "other.key",
            "--config",
            "f",
            "-i",
            "tap9",
            "-a",
            "10.9.9.9/8",
        ]);
        assert_eq!(c.key_file, PathBuf::from("other.key"));
        assert_eq!(
            (c.local.as_str(), c.dev.as_deref()),
            (":9123", Some("tap9"))
        );
        assert_eq!(c.address, ["10.9.9.9/8".parse().unwrap()]);
        assert_eq!(c.mtu, Some(1400));
        let c = merged(&["--config", "f", "--", "k2", ":7", "198.51.100.1:7"]);
        assert_eq!(
            (c.local.as_str(), c.peer.as_deref()),
            (":7", Some("198.51.100.1:7"))
        );
        // What neither gives is missing.
        let e = parse_command_line(&["--config", "f"])
            .unwrap()
            .merge(&[])
            .unwrap_err();
        assert!(e.contains("missing the key file"), "{e}");
        // Without --config, missing positionals stay an error.
        assert!(parse_command_line(&["-i", "tap0"]).is_err());
    }

    #[test]
    fn aqm_flag() {
        let p = crate::codel::Params::DEFAULT;
        assert_eq!(parse(&["k", ":1"]).unwrap().aqm, Some(p));
        assert_eq!(parse(&["k", ":1", "--aqm", "off"]).unwrap().aqm, None);
        let c = parse(&["k", ":1", "--aqm", "1/20"]).unwrap();
        assert_eq!(
            c.aqm.map(|p| (p.target_ns, p.interval_ns)),
            Some((1_000_000, 20_000_000))
        );
        let e = parse(&["k", ":1", "--aqm", "3/1"]).unwrap_err();
        // One line naming the flag and the value once, and what is expected.
        assert_eq!(e.output.matches("3/1").count(), 1, "{}", e.output);
        assert!(
            e.output.contains("--aqm") && e.output.contains("TARGET_MS/INTERVAL_MS"),
            "{}",
            e.output
        );
    }

    #[test]
    fn fq_flag() {
        assert!(parse(&["k", ":1"]).unwrap().fq, "on by default");
        assert!(!parse(&["k", ":1", "--fq", "off"]).unwrap().fq);
        let e = parse(&["k", ":1", "--fq", "yes"]).unwrap_err();
        assert!(
            e.output.contains("--fq") && e.output.contains("expected on or off"),
            "{}",
            e.output
        );
    }

    #[test]
    fn busy_poll_flag() {
        assert_eq!(parse(&["k", ":1"]).unwrap().busy_poll, 0, "off by default");
        let c = parse(&["k", ":1", "--busy-poll", "50"]).unwrap();
        assert_eq!(c.busy_poll, 50);
        for bad in ["1001", "-1", "0.5", "x"] {
            let e = parse(&["k", ":1", "--busy-poll", bad]).unwrap_err();
            assert!(
                e.output.contains("--busy-poll")
                    && e.output.contains("milliseconds from 0 to 1000"),
                "{bad}: {}",
                e.output
            );
        }
    }

    #[test]
    fn nice_flag() {
        assert_eq!(
            parse(&["k", ":1"]).unwrap().nice,
            None,
            "as started by default"
        );
        let c = parse(&["k", ":1", "--nice", "-10"]).unwrap();
        assert_eq!(c.nice, Some(-10));
        assert_eq!(parse(&["k", ":1", "--nice", "19"]).unwrap().nice, Some(19));
        for bad in ["-21", "20", "x", "-1.5"] {
            let e = parse(&["k", ":1", "--nice", bad]).unwrap_err();
            assert!(
                e.output.contains("--nice") && e.output.contains("from -20 to 19"),
                "{bad}: {}",
                e.output
            );
        }
    }

    #[test]
    fn rt_priority_flag() {
        use crate::priority::Priority;
        let prio = |c: &Cli| priority(c.nice, c.rt_priority, c.busy_poll, DEFAULT_PRIORITY);
        let c = parse(&["k", ":1"]).unwrap();
        assert_eq!(c.rt_priority, None);
        assert_eq!(
            prio(&c),
            Ok(Priority::FifoWhereAllowed(1)),
            "SCHED_FIFO 1 where allowed by default"
        );
        let c = parse(&["k", ":1", "--rt-priority", "1"]).unwrap();
        assert_eq!(prio(&c), Ok(Priority::Fifo(1)));
        let c = parse(&["k", ":1", "--rt-priority", "off"]).unwrap();
        assert_eq!(prio(&c), Ok(Priority::AsStarted));
        let c = parse(&["k", ":1", "--nice", "-3"]).unwrap();
        assert_eq!(prio(&c), Ok(Priority::Nice(-3)));
        let c = parse(&["k", ":1", "--nice", "-3", "--rt-priority", "off"]).unwrap();
        assert_eq!(prio(&c), Ok(Priority::Nice(-3)));
        // Spinning leaves the default: a spin at a real-time priority
        // would starve its CPU's normal threads.
        let c = parse(&["k", ":1", "--busy-poll", "50"]).unwrap();
        assert_eq!(prio(&c), Ok(Priority::AsStarted));
        let c = parse(&["k", ":1", "--busy-poll", "50", "--rt-priority", "off"]).unwrap();
        assert_eq!(prio(&c), Ok(Priority::AsStarted));
        // The hub's default stays as started.
        let c = parse(&["k", ":1"]).unwrap();
        assert_eq!(
            priority(c.nice, c.rt_priority, c.busy_poll, Priority::AsStarted),
            Ok(Priority::AsStarted)
        );
        for bad in ["0", "100", "x", "-1", "on"] {
            let e = parse(&["k", ":1", "--rt-priority", bad]).unwrap_err();
            assert!(
                e.output.contains("--rt-priority") && e.output.contains("from 1 to 99, or off"),
                "{bad}: {}",
                e.output
            );
        }
        // Neither with --nice nor with spinning (--busy-poll 0 is off: fine).
        for (args, why) in [
            (&["--nice", "-5"][..], "--nice"),
            (&["--busy-poll", "50"][..], "--busy-poll"),
        ] {
            let mut v = vec!["k", ":1", "--rt-priority", "5"];
            v.extend_from_slice(args);
            let c = parse(&v).unwrap();
            let e = prio(&c).unwrap_err();
            assert!(e.contains("--rt-priority with") && e.contains(why), "{e}");
        }
        let c = parse(&["k", ":1", "--rt-priority", "5", "--busy-poll", "0"]).unwrap();
        assert_eq!(prio(&c), Ok(Priority::Fifo(5)));
        // The config file: the later setting is at fault.
        let s = [
            ("rt-priority", "5"),
            ("address", "10.0.0.1/24"),
            ("nice", "-1"),
        ];
        assert!(matches!(check_together(&s), Err((2, e)) if e.contains("--nice")));
        let s = [("busy-poll", "20"), ("rt-priority", "5")];
        assert!(matches!(check_together(&s), Err((1, e)) if e.contains("--busy-poll")));
        let s = [("busy-poll", "20"), ("rt-priority", "off"), ("nice", "-1")];
        assert_eq!(check_together(&s), Ok(()), "off goes with either");
        assert!(check_together(&[("busy-poll", "0"), ("rt-priority", "5")]).is_ok());
        assert!(check_together(&[("busy-poll", "10"), ("nice", "-5")]).is_ok());
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
    fn fwmark_values() {
        let mark = |v: &str| parse(&["k", ":1", "--fwmark", v]).map(|c| c.fwmark);
        assert_eq!(mark("51820").ok(), Some(Some(51820)));
        assert_eq!(mark("0xca6c").ok(), Some(Some(0xca6c)));
        for bad in ["0", "-1", "x", "0x", "4294967296"] {
            assert!(mark(bad).is_err(), "{bad}");
        }
        assert_eq!(parse(&["k", ":1"]).unwrap().fwmark, None);
    }

    /// A peer name that does not resolve (DNS not up yet) is kept, and the
    /// tunnel starts without its address.
    #[test]
    fn unresolved_peer_name_kept() {
        let dir = std::env::temp_dir().join(format!("taptun-cli-name-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k.b64");
        let k = key.to_str().unwrap();
        let (cfg, _) = parse(&[k, ":1", "no-such-host.invalid:9", "--resolve-every", "5"])
            .unwrap()
            .to_config(None)
            .unwrap();
        assert_eq!(cfg.peer, None);
        assert_eq!(
            cfg.peer_name.map(|n| n.to_string()).as_deref(),
            Some("no-such-host.invalid:9")
        );
        assert_eq!(cfg.resolve_every, Duration::from_secs(5));
        let (cfg, _) = parse(&[k, ":1", "10.0.0.2:9"])
            .unwrap()
            .to_config(None)
            .unwrap();
        assert_eq!(
            (cfg.peer_name, cfg.resolve_every),
            (None, Duration::from_secs(30))
        );
    }

    /// The state file: only for a peer that is learned; systemd's
    /// `$STATE_DIRECTORY` gives the default, `--state` wins over it.
    #[test]
    fn state_file_only_without_a_peer() {
        let dir = std::env::temp_dir().join(format!("taptun-cli-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k.b64");
        let k = key.to_str().unwrap();
        let state =
            |args: &[&str], sd: Option<&str>| parse(args).unwrap().to_config(sd).unwrap().0.state;
        let sd = Some("/var/lib/taptun/home");
        assert_eq!(state(&[k, ":1"], None), None);
        assert_eq!(
            state(&[k, ":1"], sd),
            Some(PathBuf::from("/var/lib/taptun/home/peer.state"))
        );
        assert_eq!(
            state(&[k, ":1", "--state", "/x"], sd),
            Some(PathBuf::from("/x"))
        );
        assert_eq!(state(&[k, ":1", "10.0.0.2:9"], sd), None);
        assert_eq!(state(&[k, ":1", "10.0.0.2:9", "--state", "/x"], sd), None);
        assert_eq!(state(&[k, ":1", "no-such-host.invalid:9"], sd), None);
    }

    #[test]
    fn default_mtu_follows_underlay() {
        let dir = std::env::temp_dir().join(format!("taptun-cli-mtu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k.b64");
        let k = key.to_str().unwrap();
        let mtu = |args: &[&str]| parse(args).unwrap().to_config(None).unwrap().0.mtu;
        assert_eq!(mtu(&[k, ":1"]), 1418);
        assert_eq!(mtu(&[k, ":1", "[fd00::2]:1"]), 1398);
        assert_eq!(mtu(&[k, "[::1]:1"]), 1398);
        assert_eq!(mtu(&[k, ":1", "--underlay-mtu", "1492"]), 1410);
        assert_eq!(mtu(&[k, ":1", "--mtu", "9000"]), 9000);
    }
}
