//! The hub: one UDP socket, one spoke per key file `DIR/NAME.key`, each
//! spoke its own TAP (`tt-NAME`) and its own [`Session`] (replay window,
//! freshness, learned address, counters, keepalive timer); the kernel's
//! bridge switches between the TAPs. `taptun hub --help` says how to run
//! it, `docs/operating.md` how it behaves.
//!
//! - `spokes`: which spokes the folder names (pure); `crate::state`: the
//!   state file (pure, shared with the point-to-point tunnel); `budget`: the trial budget (pure); `demux`: address →
//!   spoke (pure).
//! - `tap`: a spoke's TAP and its bridge port.
//! - `recv`: the UDP→TAP thread; `send`: the TAP→UDP thread; `timers`:
//!   its keepalive deadlines (pure).
//! - `status`: `taptun status` of a hub; `cli`: `taptun hub`'s arguments.
//!
//! This file is the hub's lifetime: open, start, SIGHUP (spokes added,
//! removed, keys rotated), the state file, hooks.
//!
//! Who owns what: the main thread owns the spoke set (the [`Hub`]) and
//! publishes it as a list the threads follow (`HubShared::spokes`); each
//! thread builds its own per-spoke halves from it. Each spoke's key is the
//! main thread's, published per spoke; each spoke's address is decided by
//! the UDP→TAP thread (its receiving half) and published per spoke for
//! the TAP→UDP thread and the state file. The address → spoke table is
//! the UDP→TAP thread's alone.
//!
//! [`Session`]: crate::session::Session

mod budget;
pub mod cli;
mod demux;
mod recv;
mod send;
pub mod spokes;
mod status;
mod tap;
#[cfg(test)]
mod tests;
mod timers;

pub use budget::Budget;
pub use demux::Demux;

use crate::addr::{self, Local};
use crate::aead::Cipher;
use crate::config::ClampMss;
use crate::engine::{self, Socket, Tap, TunnelError};
use crate::hook::{HookEnd, run_hook_env};
use crate::key::{self, Key, KeyError};
use crate::published::Published;
use crate::session::{Keying, Setup};
use crate::state;
use crate::stats::Counters;
use crate::sys;
use log::{debug, error, info, warn};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};
use tun_rs::SyncDevice;

/// Trial verifications per second for datagrams from unknown addresses.
pub const TRIALS_PER_SECOND: u64 = 4096;

/// What the hub needs to start (from `taptun hub`'s arguments).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The folder of key files.
    pub dir: PathBuf,
    /// The local UDP address.
    pub local: Local,
    /// The bridge every spoke's TAP joins.
    pub bridge: Option<String>,
    /// The TAPs' MTU.
    pub mtu: u16,
    /// Largest UDP payload that crosses the underlay unfragmented.
    pub path_payload: usize,
    /// The confidential mode, one for all spokes.
    pub cipher: Option<Cipher>,
    /// TCP MSS clamping.
    pub clamp_mss: ClampMss,
    /// CoDel on the socket's receive queue (`--aqm`); none: off.
    pub aqm: Option<crate::codel::Params>,
    /// The forwarding threads' scheduling (`--nice`, `--rt-priority`).
    pub priority: crate::priority::Priority,
    /// Keepalive interval (zero: off).
    pub keepalive: Duration,
    /// Freshness.
    pub max_age: Duration,
    /// UDP socket buffers.
    pub sockbuf: usize,
    /// Use TAP and UDP offloads when the kernel allows.
    pub offload: bool,
    /// The status socket.
    pub status_socket: Option<PathBuf>,
    /// The state file.
    pub state: Option<PathBuf>,
    /// `--up`, `--down`: run per spoke.
    pub up: Option<String>,
    /// See `up`.
    pub down: Option<String>,
}

impl HubConfig {
    /// The MSS limit, as the point-to-point tunnel computes it.
    fn mss_limit(&self) -> Option<crate::clamp::Limit> {
        use crate::clamp::Limit;
        match self.clamp_mss {
            ClampMss::Off => None,
            ClampMss::Auto => Some(Limit::Frame(self.path_payload - crate::wire::HEADER_LEN)),
            ClampMss::Fixed(n) => Some(Limit::Mss(n)),
        }
    }
}

/// Why the hub could not start or change.
#[derive(Debug)]
pub enum HubError {
    /// The folder (or a file's name in it).
    Spokes(spokes::SpokesError),
    /// A spoke's key file.
    Key(KeyError),
    /// A spoke's TAP or bridge port.
    Tap(tap::TapError),
    /// The socket, a thread, the random source.
    Tunnel(TunnelError),
    /// The `--up` hook failed for a spoke.
    Hook(String, String),
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::Spokes(e) => e.fmt(f),
            HubError::Key(e) => e.fmt(f),
            HubError::Tap(e) => e.fmt(f),
            HubError::Tunnel(e) => e.fmt(f),
            HubError::Hook(spoke, e) => write!(f, "spoke {spoke}: --up hook {e}"),
        }
    }
}

impl std::error::Error for HubError {}

impl HubError {
    /// The exit code: 2 for what the configuration must fix (a file's
    /// name, a key file), 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            // The folder is configuration (as the key file is): restarting
            // cannot make a wrong path right.
            HubError::Spokes(_) => 2,
            HubError::Key(KeyError::Random(_)) => 1,
            HubError::Key(_) => 2,
            _ => 1,
        }
    }
}

/// One spoke as the threads and the status views share it. Its halves
/// are the threads' own; this holds what they publish and count.
pub(crate) struct Spoke<T = SyncDevice> {
    /// Unique for the hub's lifetime: a spoke removed and added again is
    /// another spoke (fresh halves).
    id: u64,
    name: String,
    dev: String,
    tap: T,
    offload: bool,
    /// How its halves are made (the key: `key` is the current one).
    setup: Setup,
    counters: Arc<Counters>,
    /// The key in use (written by the main thread on SIGHUP).
    key: Published<Keying>,
    key_since_ns: AtomicU64,
    key_rotations: AtomicU64,
    /// Its address, as the UDP→TAP thread last decided (or the state file).
    peer: Published<Option<SocketAddr>>,
    last_valid_ns: AtomicU64,
    /// The last authentic datagram's clock offset (ns), if any yet.
    offset_ns: AtomicI64,
    has_offset: AtomicBool,
    /// The TAP's MTU as last read.
    mtu: AtomicU32,
    /// Datagrams from its address that its key did not open (and no other
    /// spoke's): a key mismatch, said by the main thread.
    auth_failed: AtomicU64,
    /// Confidential mode: the session its sending half seals under, as
    /// its receiving half (the UDP→TAP thread) last made it.
    send_key: Published<Option<Arc<crate::noise::SendKey>>>,
    /// Confidential mode: its sessions' facts, for the status views
    /// (written by the UDP→TAP thread when they change).
    session: std::sync::Mutex<Option<crate::noise::SessionStatus>>,
}

/// What the hub's threads share.
pub(crate) struct HubShared<T = SyncDevice> {
    /// The spokes, as the main thread last published them.
    spokes: Published<Arc<Vec<Arc<Spoke<T>>>>>,
    /// Wakes the TAP→UDP thread (spokes, keys, addresses, MTUs changed).
    wake: sys::Wake,
    /// Trials made, trials refused (budget spent), datagrams no spoke's
    /// key opened: counted by the UDP→TAP thread.
    trials: AtomicU64,
    trials_refused: AtomicU64,
    unmatched: AtomicU64,
    /// The key folder, named in the warn lines of the UDP→TAP thread.
    dir: PathBuf,
    local: SocketAddr,
    cipher: Option<Cipher>,
    started_ns: u64,
    stop: AtomicBool,
    /// Bumped by each key rotation (after the spoke's key is published):
    /// the UDP→TAP thread then looks for the rotated keys at once, so
    /// that a confidential spoke's handshake under its new key starts
    /// without waiting for its next datagram.
    key_epoch: AtomicU64,
    /// CoDel on the socket's receive queue, if on.
    aqm: Option<crate::codel::Params>,
    /// The socket's receive queue: its last second of sojourn times.
    queue: crate::aqm::QueueStats,
    /// How the forwarding threads are scheduled (set once they start).
    priority: std::sync::OnceLock<crate::priority::Outcome>,
    /// Real-time bursts of the forwarding threads cut at the limit
    /// (`burst.rs`): they went on at the normal policy until their input
    /// emptied.
    rt_cut: AtomicU64,
}

/// A fresh keying under `key` (a new random sending session in the
/// confidential mode).
fn keying(key: &Key, cipher: Option<Cipher>) -> Result<Keying, HubError> {
    let aead = match cipher {
        None => None,
        Some(c) => Some((
            c,
            crate::noise::seed().map_err(|e| HubError::Tunnel(TunnelError::Random(e)))?,
        )),
    };
    Ok(Keying::new(key, aead))
}

/// The running hub: the socket, the spokes, the threads. Owned by the
/// main thread.
pub struct Hub<T: Tap = SyncDevice, S: Socket = UdpSocket> {
    cfg: HubConfig,
    socket: Arc<S>,
    gso: bool,
    shared: Arc<HubShared<T>>,
    /// The spokes by name, with the key each uses.
    spokes: BTreeMap<String, (Arc<Spoke<T>>, Key)>,
    next_id: u64,
    /// The addresses the state file holds now.
    written: state::Table,
    control: Option<std::os::unix::net::UnixListener>,
    control_path: Option<PathBuf>,
    threads: Vec<thread::JoinHandle<()>>,
    /// The TAPs' interface group, removed at once at exit; `None` when
    /// unavailable (each TAP then goes as its fd closes, one by one).
    group: Option<tap::Group>,
}

impl<T: Tap, S: Socket> Drop for Hub<T, S> {
    fn drop(&mut self) {
        if let Some(p) = &self.control_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Checks the folder before anything is created: every `.key` file's name
/// and contents (a configuration error, exit code 2, names its file).
pub fn check_dir(dir: &Path) -> Result<usize, HubError> {
    let (list, _) = spokes::scan(dir).map_err(HubError::Spokes)?;
    for (_, path) in &list {
        key::load(path).map_err(HubError::Key)?;
    }
    Ok(list.len())
}

/// The default status socket of a hub on `local`.
pub fn default_status_socket(local: SocketAddr) -> PathBuf {
    Path::new(engine::control::RUN_DIR).join(format!("hub-{}.sock", local.port()))
}

impl Hub {
    /// Binds the socket and reads the folder; no spoke exists yet
    /// ([`Hub::add_all`] creates them, running `--up`).
    pub fn open(cfg: HubConfig) -> Result<Hub, HubError> {
        if let Some(br) = &cfg.bridge {
            tap::check_bridge(br).map_err(HubError::Tap)?;
        }
        let socket = engine::bind_udp(cfg.local).map_err(HubError::Tunnel)?;
        let local = addr::canonical(
            socket
                .local_addr()
                .map_err(|e| HubError::Tunnel(TunnelError::Bind(cfg.local.candidates()[0], e)))?,
        );
        for which in [sys::Buf::Recv, sys::Buf::Send] {
            if let Err(e) = sys::set_socket_buffer(&socket, which, cfg.sockbuf) {
                warn!("cannot set the UDP socket buffer: {e}");
            }
        }
        // The receiving thread follows the spoke list at least once a
        // second, also while nothing arrives (a removed spoke's TAP goes).
        if let Err(e) = socket.set_read_timeout(Some(Duration::from_secs(1))) {
            warn!(
                "cannot set a receive timeout on the UDP socket ({e}): a removed spoke's TAP goes only when a datagram arrives"
            );
        }
        if cfg.offload
            && let Err(e) = sys::enable_udp_gro(&socket)
        {
            info!("UDP GRO unavailable ({e}); receiving datagrams one by one");
        }
        let gso = cfg.offload
            && match sys::udp_gso_available(&socket) {
                Ok(()) => true,
                Err(e) => {
                    info!("UDP GSO unavailable ({e}); sending datagrams one per message");
                    false
                }
            };
        let path = cfg
            .status_socket
            .clone()
            .unwrap_or_else(|| default_status_socket(local));
        let (control, control_path) = match engine::control::bind(&path) {
            Ok(l) => (Some(l), Some(path)),
            Err(e) => {
                warn!(
                    "status socket {}: {e}; `taptun status` will not reach this hub (--status-socket names another path)",
                    path.display()
                );
                (None, None)
            }
        };
        let mut hub = Hub::with_io(cfg, socket, local, gso)?;
        hub.control = control;
        hub.control_path = control_path;
        hub.group = match tap::Group::choose() {
            Ok(g) => {
                debug!("the TAPs go in interface group {:#x}", g.number());
                Some(g)
            }
            Err(e) => {
                warn!(
                    "no interface group for the TAPs ({e}); at exit they go one by one (~20 ms each)"
                );
                None
            }
        };
        Ok(hub)
    }
}

impl<T: Tap, S: Socket> Hub<T, S> {
    /// A hub on a socket already bound to `local` (`gso`: whether it takes
    /// UDP GSO messages), with no spoke yet; reads the state file.
    fn with_io(cfg: HubConfig, socket: S, local: SocketAddr, gso: bool) -> Result<Self, HubError> {
        let written = match &cfg.state {
            Some(p) => load_state(p),
            None => state::Table::new(),
        };
        Ok(Hub {
            shared: Arc::new(HubShared {
                spokes: Published::new(Arc::new(Vec::new())),
                wake: sys::Wake::new().map_err(|e| HubError::Tunnel(TunnelError::Thread(e)))?,
                trials: AtomicU64::new(0),
                trials_refused: AtomicU64::new(0),
                unmatched: AtomicU64::new(0),
                dir: cfg.dir.clone(),
                local,
                cipher: cfg.cipher,
                started_ns: engine::unix_nanos(),
                stop: AtomicBool::new(false),
                key_epoch: AtomicU64::new(0),
                aqm: cfg.aqm,
                queue: Default::default(),
                priority: std::sync::OnceLock::new(),
                rt_cut: AtomicU64::new(0),
            }),
            cfg,
            socket: Arc::new(socket),
            gso,
            spokes: BTreeMap::new(),
            next_id: 0,
            written,
            control: None,
            control_path: None,
            threads: Vec::new(),
            group: None,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// The status socket's path, if it could be created.
    pub fn status_socket(&self) -> Option<&Path> {
        self.control_path.as_deref()
    }

    /// How many spokes there are.
    pub fn len(&self) -> usize {
        self.spokes.len()
    }

    /// Whether there is no spoke.
    pub fn is_empty(&self) -> bool {
        self.spokes.is_empty()
    }
}

impl Hub {
    /// Creates every spoke the folder names (at start): any failure stops.
    pub fn add_all(&mut self) -> Result<(), HubError> {
        let (list, other) = spokes::scan(&self.cfg.dir).map_err(HubError::Spokes)?;
        if !other.is_empty() {
            info!(
                "{}: ignoring {} (not NAME.key)",
                self.cfg.dir.display(),
                other.join(", ")
            );
        }
        if list.is_empty() {
            warn!(
                "{}: no NAME.key file: no spoke yet (add one, then SIGHUP)",
                self.cfg.dir.display()
            );
        }
        // Every key first: a bad one stops the hub before any TAP exists.
        let mut keys = Vec::new();
        for (name, path) in list {
            keys.push((name, key::load(&path).map_err(HubError::Key)?));
        }
        for (name, k) in keys {
            self.add(&name, k)?;
        }
        self.publish();
        Ok(())
    }

    /// Creates spoke `name` with `key`: its TAP, bridge port, `--up` hook.
    fn add(&mut self, name: &str, key: Key) -> Result<(), HubError> {
        let dev = spokes::dev_name(name);
        let opened = tap::open(&dev, self.cfg.mtu, self.cfg.offload).map_err(HubError::Tap)?;
        if let Some(br) = &self.cfg.bridge {
            tap::join_bridge(&dev, br).map_err(HubError::Tap)?;
        }
        if let Some(g) = &mut self.group
            && let Err(e) = g.join(&dev)
        {
            warn!(
                "{dev}: cannot put it in interface group {:#x} ({e}); at exit the TAPs go one by one (~20 ms each)",
                g.number()
            );
            self.group = None;
        }
        self.insert(name, key, opened)
    }

    /// SIGHUP: reads the folder again. A new file adds a spoke, a removed
    /// one removes it (`--down` first), a changed one rotates its key (the
    /// old one accepted for `--max-age`). Errors are logged; what they
    /// concern is left as it was.
    pub fn reload(&mut self) {
        let (list, _) = match spokes::scan(&self.cfg.dir) {
            Ok(l) => l,
            Err(e) => {
                error!("SIGHUP: {e}; the spokes stay as they are");
                return;
            }
        };
        let names: BTreeMap<String, PathBuf> = list.into_iter().collect();
        let gone: Vec<String> = self
            .spokes
            .keys()
            .filter(|n| !names.contains_key(*n))
            .cloned()
            .collect();
        let mut changed = false;
        for name in gone {
            if let Some((spoke, _)) = self.spokes.get(&name) {
                self.down(spoke);
            }
            self.spokes.remove(&name);
            changed = true;
            info!("SIGHUP: spoke {name} removed");
        }
        for (name, path) in &names {
            let k = match key::load(path) {
                Ok(k) => k,
                Err(e) => {
                    error!("SIGHUP: spoke {name}: {e}; left as it was");
                    continue;
                }
            };
            match self.spokes.get(name) {
                Some((_, key)) if *key != k => match self.rekey(name, k) {
                    Ok(()) => info!(
                        "SIGHUP: spoke {name}: new key in use; the old one is still accepted for {:.1} s",
                        self.cfg.max_age.as_secs_f64()
                    ),
                    Err(e) => error!("SIGHUP: spoke {name}: {e}; keeping its key"),
                },
                Some(_) => {}
                None => match self.add(name, k) {
                    Ok(()) => {
                        changed = true;
                        info!("SIGHUP: spoke {name} added");
                    }
                    Err(e) => error!("SIGHUP: spoke {name} not added: {e}"),
                },
            }
        }
        if changed {
            self.publish();
        }
    }
}

impl<T: Tap, S: Socket> Hub<T, S> {
    /// Adds spoke `name` with `key` on its opened TAP: its session's
    /// setup, the state file's address, the `--up` hook.
    fn insert(&mut self, name: &str, key: Key, opened: tap::Opened<T>) -> Result<(), HubError> {
        let dev = spokes::dev_name(name);
        let mtu = opened.tap.mtu().unwrap_or(self.cfg.mtu);
        if let Err(e) = opened.tap.set_nonblocking(true) {
            // Both threads need it: the sender drains each TAP in turn.
            return Err(HubError::Tap(tap::TapError::Create(dev, e)));
        }
        let keying = keying(&key, self.cfg.cipher)?;
        let peer = self.written.get(name).copied();
        let setup = Setup {
            keying: keying.clone(),
            mtu,
            path: self.cfg.path_payload,
            gso: self.gso,
            coalesce: opened.offload.then_some(opened.udp_coalesce),
            clamp: self.cfg.mss_limit(),
            max_age_ns: self.cfg.max_age.as_nanos() as u64,
            keepalive_ns: self.cfg.keepalive.as_nanos() as u64,
            peer,
        };
        let spoke = Arc::new(Spoke {
            id: self.next_id,
            name: name.to_string(),
            dev: dev.clone(),
            tap: opened.tap,
            offload: opened.offload,
            setup,
            counters: Arc::new(Counters::default()),
            key: Published::new(keying),
            key_since_ns: AtomicU64::new(engine::unix_nanos()),
            key_rotations: AtomicU64::new(0),
            peer: Published::new(peer),
            last_valid_ns: AtomicU64::new(0),
            offset_ns: AtomicI64::new(0),
            has_offset: AtomicBool::new(false),
            mtu: AtomicU32::new(u32::from(mtu)),
            auth_failed: AtomicU64::new(0),
            send_key: Published::new(None),
            session: std::sync::Mutex::new(None),
        });
        self.next_id += 1;
        info!(
            "spoke {name}: {dev} up, mtu {mtu}, offloads {}{}{}",
            if spoke.offload { "on" } else { "off" },
            self.cfg
                .bridge
                .as_ref()
                .map(|b| format!(", port of {b}"))
                .unwrap_or_default(),
            match peer {
                Some(p) => format!(", last at {p} (state file): sending to it at once"),
                None => ", address learned from its first valid datagram".into(),
            }
        );
        if let Some(cmd) = self.cfg.up.clone() {
            match self.hook(&spoke, "up", &cmd, None) {
                Ok(HookEnd::Exited(st)) if st.success() => debug!("spoke {name}: --up hook done"),
                Ok(HookEnd::Exited(st)) => {
                    return Err(HubError::Hook(
                        name.into(),
                        format!("`{cmd}` failed ({st})"),
                    ));
                }
                Ok(HookEnd::Interrupted(sig)) => {
                    return Err(HubError::Hook(
                        name.into(),
                        format!("interrupted by signal {sig}"),
                    ));
                }
                Ok(HookEnd::TimedOut) => {
                    return Err(HubError::Hook(name.into(), format!("`{cmd}` ran too long")));
                }
                Err(e) => {
                    return Err(HubError::Hook(
                        name.into(),
                        format!("cannot run /bin/sh: {e}"),
                    ));
                }
            }
        }
        self.spokes.insert(name.to_string(), (spoke, key));
        Ok(())
    }

    /// Rotates spoke `name`'s key to `k`: its sending half seals with it
    /// at once, its receiving half accepts the old one for `--max-age`
    /// more (counted from now); the other spokes are not touched.
    fn rekey(&mut self, name: &str, k: Key) -> Result<(), HubError> {
        let ky = keying(&k, self.cfg.cipher)?;
        if let Some((spoke, key)) = self.spokes.get_mut(name) {
            // Before the key: the receiving thread reads it with the key
            // (the Published's lock orders them).
            spoke.key_since_ns.store(engine::unix_nanos(), Relaxed);
            spoke.key.set(ky);
            spoke.key_rotations.fetch_add(1, Relaxed);
            *key = k;
            self.shared.key_epoch.fetch_add(1, Relaxed);
            self.shared.wake.signal();
        }
        Ok(())
    }

    /// Runs `cmd` for `spoke` with its environment.
    fn hook(
        &self,
        spoke: &Spoke<T>,
        event: &str,
        cmd: &str,
        limit: Option<Duration>,
    ) -> std::io::Result<HookEnd> {
        let env = [
            ("TAPTUN_EVENT", event.to_string()),
            ("TAPTUN_DEV", spoke.dev.clone()),
            ("TAPTUN_SPOKE", spoke.name.clone()),
            ("TAPTUN_MTU", spoke.mtu.load(Relaxed).to_string()),
            (
                "TAPTUN_PEER",
                spoke.peer.get().map(|p| p.to_string()).unwrap_or_default(),
            ),
            ("TAPTUN_LOCAL", self.shared.local.to_string()),
        ];
        run_hook_env(cmd, &env, limit)
    }

    /// Runs `--down` for `spoke` (its TAP still there).
    fn down(&self, spoke: &Spoke<T>) {
        let Some(cmd) = self.cfg.down.as_deref() else {
            return;
        };
        let limit = Some(crate::hook::DOWN_HOOK_LIMIT);
        match self.hook(spoke, "down", cmd, limit) {
            Ok(HookEnd::Exited(st)) if st.success() => {
                debug!("spoke {}: --down hook done", spoke.name)
            }
            Ok(HookEnd::Exited(st)) => {
                warn!("spoke {}: --down hook `{cmd}` failed ({st})", spoke.name)
            }
            Ok(HookEnd::Interrupted(sig)) => {
                warn!("spoke {}: --down hook killed by signal {sig}", spoke.name)
            }
            Ok(HookEnd::TimedOut) => warn!(
                "spoke {}: --down hook killed after {} s",
                spoke.name,
                crate::hook::DOWN_HOOK_LIMIT.as_secs()
            ),
            Err(e) => warn!(
                "spoke {}: --down hook `{cmd}`: cannot run /bin/sh: {e}",
                spoke.name
            ),
        }
    }

    /// Publishes the spoke set for the threads.
    fn publish(&self) {
        let list: Vec<Arc<Spoke<T>>> = self.spokes.values().map(|(s, _)| s.clone()).collect();
        self.shared.spokes.set(Arc::new(list));
        self.shared.wake.signal();
    }

    /// Starts the two forwarding threads and the status socket's.
    pub fn start(&mut self) -> Result<(), HubError> {
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| HubError::Tunnel(TunnelError::Thread(e)))
        };
        let receiver = recv::Receiver::new(self.socket.clone(), self.shared.clone());
        let sender = send::Sender::new(self.socket.clone(), self.shared.clone())?;
        let threads = &mut self.threads;
        let (spawned, got) =
            crate::priority::spawn_at(self.cfg.priority, "the hub's forwarding threads", || {
                threads.push(spawn("hub-udp-to-tap", Box::new(move || receiver.run()))?);
                threads.push(spawn("hub-tap-to-udp", Box::new(move || sender.run()))?);
                Ok::<(), HubError>(())
            });
        spawned?;
        let _ = self.shared.priority.set(got);
        if let Some(l) = self.control.take() {
            let shared = self.shared.clone();
            spawn("status", Box::new(move || status::serve(l, shared)))?;
        }
        Ok(())
    }

    /// Called by the main thread about once a second: follows the TAPs'
    /// MTUs, writes the state file when an address changed, and says what
    /// is wrong (a spoke whose key does not match).
    pub fn tick(&mut self, watch: &mut status::Watch) {
        let mut table = state::Table::new();
        let mut wake = false;
        for (name, (s, _)) in &self.spokes {
            if let Ok(m) = s.tap.mtu()
                && s.mtu.swap(u32::from(m), Relaxed) != u32::from(m)
            {
                info!("spoke {name}: {} MTU now {m}", s.dev);
                wake = true;
            }
            if let Some(p) = s.peer.get() {
                table.insert(name.clone(), p);
            }
        }
        if wake {
            self.shared.wake.signal();
        }
        if let Some(path) = &self.cfg.state
            && table != self.written
        {
            match state::write(path, STATE_HEADER, &table) {
                Ok(()) => {
                    debug!("state file {} written", path.display());
                    self.written = table;
                }
                Err(e) => {
                    if watch.state_error() {
                        warn!(
                            "state file {}: cannot write it: {e}; a restarted hub waits for each spoke's next datagram (check the folder: systemd StateDirectory=)",
                            path.display()
                        );
                    }
                }
            }
        }
        let list: Vec<&Arc<Spoke<T>>> = self.spokes.values().map(|(s, _)| s).collect();
        watch.tick(&list, self.cfg.max_age, &self.cfg.dir);
    }

    /// One line per spoke with its counters, for SIGUSR1, `--stats` and exit.
    pub fn report(&self) -> String {
        status::render(&self.shared, status::Form::Text)
    }

    /// Stops the threads and waits for them (the hub's tests; the program
    /// exits instead).
    #[cfg(test)]
    fn stop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        self.shared.wake.signal();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Runs `--down` for every spoke (at exit), then removes their TAPs
    /// at once (their group): closing them one by one costs ~20 ms each.
    pub fn shutdown(&mut self) {
        for (s, _) in self.spokes.values() {
            self.down(s);
        }
        let Some(mut g) = self.group.take() else {
            return;
        };
        // The TAP→UDP thread stops waiting on TAPs about to go.
        self.shared.stop.store(true, Relaxed);
        self.shared.wake.signal();
        let ours: Vec<u32> = self
            .spokes
            .keys()
            .filter_map(|n| sys::ifindex(&spokes::dev_name(n)).ok())
            .collect();
        let t0 = Instant::now();
        match g.remove_all(&ours) {
            Ok(()) => info!("{} TAPs removed at once in {:?}", ours.len(), t0.elapsed()),
            Err(e) => warn!(
                "cannot remove the TAPs at once (interface group {:#x}: {e}); they go one by one as they close (~20 ms each)",
                g.number()
            ),
        }
    }
}

/// The state file's first line.
const STATE_HEADER: &str = "taptun hub: each spoke's last valid address (written by taptun)";

/// The state file at start: a missing one is an empty table, a bad one
/// is said and ignored (the hub then learns every address again).
fn load_state(path: &Path) -> state::Table {
    match std::fs::read(path) {
        Ok(b) => match state::parse(&b) {
            Ok(t) => {
                info!("state file {}: {} spoke addresses", path.display(), t.len());
                t
            }
            Err(e) => {
                warn!(
                    "state file {}: {e}; ignoring it (the hub learns each spoke's address from its next datagram)",
                    path.display()
                );
                state::Table::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            info!("state file {}: none yet", path.display());
            state::Table::new()
        }
        Err(e) => {
            warn!(
                "state file {}: cannot read it: {e}; ignoring it",
                path.display()
            );
            state::Table::new()
        }
    }
}

pub use status::Watch;
