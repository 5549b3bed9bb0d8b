//! The engine: the TAP, the UDP socket and the threads that move bytes
//! between them and a pure [`Session`], which holds every rule.
//!
//! - `setup`: opening the TAP and the socket, probing offloads.
//! - `io`: what the engine needs of a TAP and a socket (traits; the real
//!   ones here, in-memory ones in `mem.rs` for the engine's tests).
//! - `send`: the TAP→UDP thread; `recv`: the UDP→TAP thread; `out`:
//!   sending a sealed batch (the GSO fallback); `role`: the TAP read role
//!   the two threads hand each other for the replies.
//! - `watch`: the warn lines; `status`, `control`: `taptun status`.
//! - `name`: the peer's name, resolved again while the peer is silent;
//!   `routing`: whether the route to the peer leads into the TAP;
//!   `remember`: the state file that keeps a learned peer across restarts.
//!
//! This file is the tunnel's lifetime: open, start, key rotation, the MTU.
//!
//! Who owns what: the session is split at start; the TAP→UDP thread owns
//! its sending half, the UDP→TAP thread the receiving half and the
//! replies' sending half. The key in use is the [`Tunnel`]'s ([`Key`]),
//! published to both threads as a [`Keying`] in `Shared::key`; the peer
//! address is decided by the receiving half and published in
//! `Shared::peer`. Each thread reads both through a [`Cached`] copy: one
//! atomic load per batch, a lock (never held across a system call) only
//! after a change. No thread holds a lock across a system call.

mod ahead;
mod bound;
pub mod control;
mod io;
#[cfg(test)]
pub(crate) mod mem;
mod name;
mod out;
mod poll;
mod recv;
mod remember;
mod role;
mod routing;
mod send;
mod setup;
pub mod status;
#[cfg(test)]
mod tests;
mod watch;

pub use io::{Socket, Tap};
pub use setup::TunnelError;
// Shared with the hub (`crate::hub`), which runs many sessions on the same parts.
pub(crate) use bound::Bound;
pub(crate) use io::recv_failed;
pub(crate) use out::Out;
pub(crate) use send::{Drained, Reader, send_keepalive};
pub(crate) use setup::{bind_udp, machine_mac};

use crate::addr;
use crate::aead::Cipher;
use crate::config::Config;
use crate::key::Key;
use crate::offload::VNET_HDR_LEN;
use crate::published::{Cached, Published};
use crate::session::{Keying, Session, Setup};
use crate::stats::{Counters, Throttle};
use crate::tx::MAX_FRAME;
use crate::wire::HEADER_LEN;
use log::{info, warn};

use role::Role;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tun_rs::SyncDevice;

/// State the threads share: counters and facts for the status views, and
/// the few values one thread decides and another follows.
#[derive(Debug)]
struct Shared {
    /// Traffic and drop counters.
    counters: Arc<Counters>,
    /// The current peer, as the receiving thread last decided it.
    peer: Published<Option<SocketAddr>>,
    /// The sending and receiving key (written only by [`Tunnel::rotate_key`]).
    key: Published<Keying>,
    /// When the last datagram that passed every check arrived (UNIX ns, 0: never).
    last_valid_ns: AtomicU64,
    /// How many times the key was replaced (SIGHUP).
    key_rotations: AtomicU64,
    /// The last authentic datagram's timestamp less this host's clock
    /// (ns): the peer's clock offset less the one-way transit time.
    peer_offset_ns: AtomicI64,
    /// The TAP's MTU as last read: followed at run time (the bridge
    /// script raises it to the LAN's).
    mtu: AtomicU32,
    /// When the key in use was loaded (UNIX ns).
    key_since_ns: AtomicU64,
    /// Whether the peer was learned from a datagram (not configured).
    peer_learned: AtomicBool,
    /// The peer is the state file's address, not heard from yet (cleared
    /// by the receiving thread at the first valid datagram from the peer).
    peer_from_state: AtomicBool,
    /// The TAP→UDP thread is to announce the TAP to the peer (set at start
    /// with a configured peer, and when one is learned).
    announce: AtomicBool,
    /// The threads are to end (the engine's tests; the program exits instead).
    stop: AtomicBool,
    /// The peer's name, when it was given as `HOST:PORT`.
    peer_name: Option<String>,
    /// How the packet threads are scheduled (set once they start).
    priority: std::sync::OnceLock<crate::priority::Outcome>,
    /// What resolving the name last gave, for the status views (written by
    /// the main thread).
    name: Mutex<name::NameStatus>,
    /// Datagrams the kernel refused as too long since the main thread
    /// last looked, and the size of the last one (`routing.rs` says why).
    refused: AtomicU64,
    refused_len: std::sync::atomic::AtomicUsize,
    /// An address the name now resolves to, for the receiving thread to
    /// take as the peer (written by the main thread; see `name.rs`).
    redirect: Published<Option<name::Redirect>>,
    /// Confidential mode: the session the sending halves seal under
    /// (decided by the receiving thread, which runs the handshakes).
    send_key: Published<Option<Arc<crate::noise::SendKey>>>,
    /// Confidential mode: the sessions' facts, for the status views
    /// (written by the receiving thread).
    session: Mutex<Option<crate::noise::SessionStatus>>,
    /// The sending thread's asks for the receiving thread to spin
    /// (`poll.rs`).
    asks: poll::Asks,
}

/// A fresh keying under `key`: in the confidential mode, a new random
/// sending session (at start and at each rotation).
fn keying(key: &Key, cipher: Option<Cipher>) -> Result<Keying, TunnelError> {
    let aead = match cipher {
        None => None,
        Some(c) => Some((c, crate::noise::seed().map_err(TunnelError::Random)?)),
    };
    Ok(Keying::new(key, aead))
}

/// What does not change while the tunnel runs, for the status views.
#[derive(Debug)]
struct Facts {
    name: String,
    mac: crate::mac::MacAddr,
    local: SocketAddr,
    /// TAP offloads on (virtio_net_hdr on every TAP read and write).
    offload: bool,
    udp_gso: bool,
    /// Whether UDP runs may be written to the TAP as USO super-frames.
    udp_coalesce: bool,
    clamp_mss: crate::config::ClampMss,
    cipher: Option<Cipher>,
    /// CoDel on the receive queue (`--aqm`).
    aqm: Option<crate::codel::Params>,
    /// `--busy-poll`'s linger (ns; 0: off).
    busy_poll_ns: u64,
    /// Flow queueing at the receiver is on (`--fq`, and the HMAC wire).
    fq: bool,
    keepalive: Duration,
    max_age: Duration,
    started_ns: u64,
}

/// The wall clock in UNIX nanoseconds (0 before 1970).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A tunnel: TAP, socket and, once started, the two threads. The real
/// ones by default; the engine's tests run it on in-memory ones.
pub struct Tunnel<T: Tap = SyncDevice, S: Socket = UdpSocket> {
    tap: Arc<T>,
    socket: Arc<S>,
    facts: Arc<Facts>,
    cfg: Config,
    shared: Arc<Shared>,
    /// The session, until `start` splits it between the two threads.
    session: Option<Session>,
    /// How the session was made: the replies' sending half is made alike.
    setup: Setup,
    role: Arc<Role>,
    watch: watch::TickWatch,
    /// The peer's name, resolved again while the peer is silent.
    name: Option<name::NameWatch>,
    /// Whether the route to the peer leads into the TAP.
    routing: routing::RouteWatch,
    /// The state file, when the peer is learned and one is given.
    state: Option<remember::StateWatch>,
    /// The status socket, until `start` hands it to its thread; its path
    /// is removed when the tunnel is dropped.
    control: Option<std::os::unix::net::UnixListener>,
    control_path: Option<std::path::PathBuf>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl<T: Tap, S: Socket> Drop for Tunnel<T, S> {
    fn drop(&mut self) {
        if let Some(p) = &self.control_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Tunnel {
    /// Binds the socket, creates the TAP and brings it up. Nothing runs yet.
    pub fn open(cfg: Config) -> Result<Tunnel, TunnelError> {
        let dev = setup::open(&cfg)?;
        let facts = Facts {
            mac: dev.mac,
            name: dev.name,
            local: addr::canonical(dev.local),
            offload: dev.offload,
            udp_gso: dev.udp_gso,
            udp_coalesce: dev.udp_coalesce,
            clamp_mss: cfg.clamp_mss,
            cipher: cfg.cipher,
            aqm: cfg.aqm,
            busy_poll_ns: cfg.busy_poll_ns,
            fq: cfg.fq && cfg.cipher.is_none(),
            keepalive: cfg.keepalive,
            max_age: cfg.max_age,
            started_ns: unix_nanos(),
        };
        let mut tun = Tunnel::with_io(dev.tap, dev.socket, facts, cfg)?;
        // After the TAP, whose name it carries.
        let path = tun
            .cfg
            .status_socket
            .clone()
            .unwrap_or_else(|| control::socket_path(&tun.facts.name));
        match control::bind(&path) {
            Ok(l) => {
                tun.control = Some(l);
                tun.control_path = Some(path);
            }
            Err(e) => warn!(
                "status socket {}: {e}; `taptun status` will not reach this tunnel (--status-socket names another path)",
                path.display()
            ),
        }
        Ok(tun)
    }
}

impl<T: Tap, S: Socket> Tunnel<T, S> {
    /// A tunnel on a TAP and socket already open (`facts` says what they
    /// are). Nothing runs yet.
    fn with_io(tap: T, socket: S, facts: Facts, cfg: Config) -> Result<Self, TunnelError> {
        let keying = keying(&cfg.key, cfg.cipher)?;
        // A peer to learn starts from the state file's address, if any: a
        // restarted tunnel sends to it at once instead of waiting for the
        // peer's next keepalive. (`cli` gives a state file only without a
        // configured peer; a name that does not resolve yet is one.)
        let state = cfg
            .state
            .clone()
            .filter(|_| cfg.peer.is_none() && cfg.peer_name.is_none())
            .map(remember::StateWatch::open);
        let remembered = state.as_ref().and_then(|s| s.written());
        let setup = Setup {
            keying: keying.clone(),
            mtu: cfg.mtu,
            path: cfg.path_payload,
            gso: facts.udp_gso,
            coalesce: facts.offload.then_some(facts.udp_coalesce),
            clamp: cfg.mss_limit(),
            max_age_ns: cfg.max_age.as_nanos() as u64,
            keepalive_ns: cfg.keepalive.as_nanos() as u64,
            peer: cfg.peer.or(remembered).map(addr::canonical),
        };
        let shared = Arc::new(Shared {
            counters: Arc::new(Counters::default()),
            peer: Published::new(setup.peer),
            key: Published::new(keying),
            last_valid_ns: AtomicU64::new(0),
            key_rotations: AtomicU64::new(0),
            peer_offset_ns: AtomicI64::new(0),
            mtu: AtomicU32::new(u32::from(cfg.mtu)),
            key_since_ns: AtomicU64::new(unix_nanos()),
            peer_learned: AtomicBool::new(false),
            peer_from_state: AtomicBool::new(remembered.is_some()),
            announce: AtomicBool::new(setup.peer.is_some()),
            stop: AtomicBool::new(false),
            peer_name: cfg.peer_name.as_ref().map(|n| n.to_string()),
            priority: std::sync::OnceLock::new(),
            name: Mutex::new(name::NameStatus {
                answer: cfg
                    .peer_name
                    .as_ref()
                    .and(setup.peer)
                    .map(|a| (a, unix_nanos())),
                error: None,
            }),
            redirect: Published::new(None),
            send_key: Published::new(None),
            session: Mutex::new(None),
            refused: AtomicU64::new(0),
            refused_len: std::sync::atomic::AtomicUsize::new(0),
            asks: poll::Asks::new(crate::sys::Wake::new().map_err(TunnelError::Thread)?),
        });
        let routing = routing::RouteWatch::new(&facts.name, cfg.fwmark);
        let name = cfg.peer_name.clone().map(|n| {
            name::NameWatch::new(n, cfg.resolve_every, cfg.keepalive, setup.peer.is_some())
        });
        Ok(Tunnel {
            tap: Arc::new(tap),
            socket: Arc::new(socket),
            facts: Arc::new(facts),
            session: Some(Session::new(&setup)),
            setup,
            cfg,
            shared,
            role: Arc::new(Role::new(
                crate::sys::Wake::new().map_err(TunnelError::Thread)?,
            )),
            watch: watch::TickWatch::new(name.is_some()),
            name,
            routing,
            state,
            control: None,
            control_path: None,
            threads: Vec::new(),
        })
    }

    /// The TAP interface name.
    pub fn name(&self) -> &str {
        &self.facts.name
    }

    /// The TAP MTU.
    pub fn mtu(&self) -> u16 {
        self.shared.mtu.load(Relaxed) as u16
    }

    /// The address the UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.facts.local
    }

    /// The status socket's path, if it could be created.
    pub fn status_socket(&self) -> Option<&std::path::Path> {
        self.control_path.as_deref()
    }

    /// Whether the confidential mode (`--cipher`) is on.
    pub fn confidential(&self) -> bool {
        self.cfg.cipher.is_some()
    }

    /// The current peer, configured or learned.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.shared.peer.get()
    }

    /// Replaces the key (SIGHUP): sending uses the new key at once; the
    /// receiver accepts the old one for `--max-age` more. Returns false,
    /// changing nothing, when the key is the one in use.
    pub fn rotate_key(&mut self, key: Key) -> Result<bool, TunnelError> {
        if key == self.cfg.key {
            return Ok(false);
        }
        let k = keying(&key, self.cfg.cipher)?;
        // Before the key: the receiving thread reads it with the key (the
        // Published's lock orders them) and keeps the old key for
        // --max-age from this instant, not from its next datagram.
        self.shared.key_since_ns.store(unix_nanos(), Relaxed);
        self.shared.key.set(k);
        self.cfg.key = key;
        self.shared.key_rotations.fetch_add(1, Relaxed);
        // The TAP→UDP thread seals with it from its next wake-up on.
        self.role.wake.signal();
        Ok(true)
    }

    /// Starts the two forwarding threads (and the status socket's). They
    /// run until the process exits (or, in the engine's tests, the tunnel
    /// is dropped).
    pub fn start(&mut self) -> Result<(), TunnelError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // Without non-blocking reads the TAP cannot be drained: one frame
        // per wake-up, and only the TAP→UDP thread reads. The fd is shared
        // with the writing thread, where O_NONBLOCK changes nothing: a TAP
        // write does not wait for anything (tun's send buffer is unlimited
        // unless TUNSETSNDBUF says otherwise).
        let nonblocking = match self.tap.set_nonblocking(true) {
            Ok(()) => true,
            Err(e) => {
                info!("TAP cannot be read non-blocking ({e}); sending frames one by one");
                false
            }
        };
        // Says at once whether the route to the peer leads into the TAP
        // (and remembers the way out if it does not).
        self.routing.tick(&self.shared);
        let (tx, rx) = session.split();
        // TAPTUN_KEYLOG: the sessions' keys, for reading a capture (tests).
        let keylog = self
            .cfg
            .cipher
            .and_then(|_| std::env::var_os("TAPTUN_KEYLOG"))
            .and_then(|p| {
                match std::fs::OpenOptions::new().create(true).append(true).open(&p) {
                    Ok(f) => {
                        warn!(
                            "TAPTUN_KEYLOG: writing every session's keys to {}; whoever reads it reads the traffic",
                            std::path::Path::new(&p).display()
                        );
                        Some(f)
                    }
                    Err(e) => {
                        warn!("TAPTUN_KEYLOG {}: {e}", std::path::Path::new(&p).display());
                        None
                    }
                }
            });
        let v6 = self.facts.local.is_ipv6();
        let out = || Out::new(self.socket.clone(), self.shared.clone(), v6);
        let sender = send::Sender {
            tap: self.tap.clone(),
            tx,
            out: out(),
            reader: Reader::new(self.facts.offload, nonblocking),
            shared: self.shared.clone(),
            facts: self.facts.clone(),
            role: self.role.clone(),
            peer: Cached::new(&self.shared.peer),
            key: Cached::new(&self.shared.key),
            send_key: Cached::new(&self.shared.send_key),
            mtu: self.cfg.mtu,
        };
        let receiver = recv::Receiver {
            tap: self.tap.clone(),
            socket: self.socket.clone(),
            shared: self.shared.clone(),
            key: Cached::new(&self.shared.key),
            reply_key: Cached::new(&self.shared.key),
            rx: match keylog {
                Some(_) => rx.with_keylog(),
                None => rx,
            },
            keylog,
            v6,
            confidential: self.cfg.cipher.is_some(),
            status_shown: Default::default(),
            handshake_seen: false,
            aqm: crate::aqm::Aqm::new(self.cfg.aqm),
            poller: poll::Poller::new(self.cfg.busy_poll_ns),
            replies: nonblocking.then(|| {
                let tx = self.setup.send_half();
                (tx, Reader::new(self.facts.offload, true), out())
            }),
            role: self.role.clone(),
            ahead: ahead::Ahead::new(
                match self.facts.fq {
                    true => ahead::MAX_RUNS,
                    false => 1,
                },
                recv::RECV_BUF,
            ),
            fq_offset: self.facts.fq.then_some(crate::wire::HEADER_LEN),
            redirect: Cached::new(&self.shared.redirect),
            from_state: self.shared.peer_from_state.load(Relaxed),
            errlog: Throttle::per_minute(),
            taplog: Throttle::per_minute(),
            droplog: Throttle::new(Duration::from_secs(1)),
            watch: watch::RecvWatch::new(
                self.cfg.max_age,
                self.cfg
                    .cipher
                    .map_or(crate::aead::Mode::Hmac, crate::aead::Mode::Aead),
            ),
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(TunnelError::Thread)
        };
        let threads = &mut self.threads;
        let (spawned, got) =
            crate::priority::spawn_at(self.cfg.priority, "the packet threads", || {
                threads.push(spawn("tap-to-udp", Box::new(move || sender.run()))?);
                threads.push(spawn("udp-to-tap", Box::new(move || receiver.run()))?);
                Ok::<(), TunnelError>(())
            });
        spawned?;
        let _ = self.shared.priority.set(got);
        if let Some(l) = self.control.take() {
            let (facts, shared) = (self.facts.clone(), self.shared.clone());
            spawn("status", Box::new(move || control::serve(l, facts, shared)))?;
        }
        Ok(())
    }

    /// Called by the main thread between signals, about once a second
    /// ([`TICK`]): follows the TAP's MTU, resolves the peer's name again
    /// when due, checks the route to the peer, writes the state file when
    /// the learned peer changed, and says why nothing crosses when nothing
    /// does. (Keepalives are the sending thread's
    /// own timer.)
    pub fn tick(&mut self) {
        self.follow_mtu();
        if let Some(n) = self.name.as_mut() {
            n.tick(&self.shared, unix_nanos());
        }
        self.routing.tick(&self.shared);
        if let Some(s) = self.state.as_mut() {
            s.tick(&self.shared);
        }
        let port = self.facts.local.port();
        self.watch
            .tick(&self.shared, unix_nanos(), self.cfg.keepalive, port);
    }

    /// Stops the threads and waits for them (the engine's tests; the
    /// program exits instead). The receiving thread ends at its next
    /// receive, which a real socket may not have soon.
    #[cfg(test)]
    fn stop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        self.role.wake.signal();
        self.shared.asks.wake.signal();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl<T: Tap, S: Socket> Tunnel<T, S> {
    /// Reads the TAP's MTU and, when someone changed it (`ip link set
    /// tap0 mtu 1500`, the bridge script), sends frames up to the new size.
    fn follow_mtu(&self) {
        let Ok(now) = self.tap.mtu() else { return };
        let was = self.shared.mtu.swap(u32::from(now), Relaxed) as u16;
        if now == was {
            return;
        }
        // The sending threads follow at their next wake-up.
        self.role.wake.signal();
        let fits = self.cfg.path_payload - HEADER_LEN - 14;
        if usize::from(now) > fits {
            info!(
                "{} MTU changed from {was} to {now}: frames up to {} bytes are carried; datagrams larger than the underlay's {} bytes are fragmented (TCP MSS clamping: {})",
                self.facts.name,
                usize::from(now) + 14,
                self.cfg.path_payload,
                self.cfg.clamp_mss
            );
        } else {
            info!("{} MTU changed from {was} to {now}", self.facts.name);
        }
    }
}

/// How often the main thread calls [`Tunnel::tick`].
pub const TICK: Duration = Duration::from_secs(1);

/// Size of one TAP read: the largest frame and its virtio_net_hdr.
pub(crate) const TAP_BUF: usize = MAX_FRAME + VNET_HDR_LEN;
