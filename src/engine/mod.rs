//! The engine: the TAP, the UDP socket and the two forwarding threads
//! around the pure halves ([`crate::tx::Outbound`], [`crate::rx::Inbound`]).
//!
//! - `setup`: opening the TAP and the socket, probing offloads.
//! - `send`: the TAP→UDP thread (and the reply path the other thread borrows).
//! - `recv`: the UDP→TAP thread.
//! - `status`: the status line and JSON.
//!
//! This file is the tunnel's lifetime: open, start, key rotation, keepalives.
//!
//! Who owns what: the key in use is the [`Tunnel`]'s ([`Key`]), published
//! to both threads as a [`Codec`] in `Shared::key`; the peer address is
//! decided by the receiving thread's `Inbound` and published in
//! `Shared::peer`. Each thread reads both through a [`Cached`] copy: one
//! atomic load per batch, the lock only after a change.

pub mod control;
mod recv;
mod send;
mod setup;
pub mod status;
mod watch;

pub use setup::TunnelError;

use crate::addr;
use crate::aead::{Cipher, OpenKeys, SealKey, SessionId};
use crate::config::Config;
use crate::key::Key;
use crate::offload::{Coalescer, VNET_HDR_LEN};
use crate::published::{Cached, Published};
use crate::rx::Inbound;
use crate::rx::Keys;
use crate::stats::{Counters, Throttle};
use crate::tx::Sealer;
use crate::tx::{MAX_FRAME, Outbound};
use crate::wire::{Codec, HEADER_LEN};
use log::{info, warn};
use send::Sender;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tun_rs::SyncDevice;

/// State the threads share.
#[derive(Debug)]
struct Shared {
    /// Traffic and drop counters.
    counters: Counters,
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
}

/// The key in use, as both threads need it: the HMAC codec and, in the
/// confidential mode, the cipher, the key file's bytes and this process's
/// sending session under them (drawn here, at start and at each rotation,
/// so that the receiving half knows which session is its own).
#[derive(Debug, Clone)]
pub(crate) struct Keying {
    codec: Codec,
    aead: Option<(Cipher, Key, SessionId)>,
}

impl Keying {
    fn new(key: &Key, cipher: Option<Cipher>) -> Result<Keying, TunnelError> {
        let aead = match cipher {
            None => None,
            Some(c) => Some((
                c,
                key.clone(),
                SessionId::random().map_err(TunnelError::Random)?,
            )),
        };
        Ok(Keying {
            codec: Codec::new(key.as_bytes()),
            aead,
        })
    }

    /// What the sending half seals with.
    fn sealer(&self) -> Sealer {
        match &self.aead {
            None => Sealer::Hmac(self.codec.clone()),
            Some((c, k, s)) => Sealer::Aead(SealKey::with_session(*c, k.as_bytes(), *s)),
        }
    }

    /// What the receiving half opens with.
    fn keys(&self) -> Keys {
        Keys {
            codec: self.codec.clone(),
            aead: self
                .aead
                .as_ref()
                .map(|(c, k, s)| OpenKeys::new(*c, k.as_bytes(), Some(*s))),
        }
    }
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

/// A tunnel: TAP, socket and, once started, the two threads.
pub struct Tunnel {
    tap: Arc<SyncDevice>,
    socket: Arc<std::net::UdpSocket>,
    facts: Arc<Facts>,
    cfg: Config,
    shared: Arc<Shared>,
    /// The sending half, shared with the receiving thread's reply path.
    sender: Arc<Mutex<Sender>>,
    watch: watch::TickWatch,
    /// The status socket, until `start` hands it to its thread; its path
    /// is removed when the tunnel is dropped.
    control: Option<std::os::unix::net::UnixListener>,
    control_path: Option<std::path::PathBuf>,
}

impl Drop for Tunnel {
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
        let keying = Keying::new(&cfg.key, cfg.cipher)?;
        let sealer = keying.sealer();
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            peer: Published::new(cfg.peer.map(addr::canonical)),
            key: Published::new(keying),
            last_valid_ns: AtomicU64::new(0),
            key_rotations: AtomicU64::new(0),
            peer_offset_ns: AtomicI64::new(0),
            mtu: AtomicU32::new(u32::from(cfg.mtu)),
            key_since_ns: AtomicU64::new(unix_nanos()),
            peer_learned: AtomicBool::new(false),
        });
        let facts = Arc::new(Facts {
            mac: dev.mac,
            name: dev.name,
            local: addr::canonical(dev.local),
            offload: dev.offload,
            udp_gso: dev.udp_gso,
            udp_coalesce: dev.udp_coalesce,
            clamp_mss: cfg.clamp_mss,
            cipher: cfg.cipher,
            keepalive: cfg.keepalive,
            max_age: cfg.max_age,
            started_ns: unix_nanos(),
        });
        let socket = Arc::new(dev.socket);
        let sender = Sender::new(
            Outbound::new(sealer, cfg.mtu, cfg.path_payload, dev.udp_gso)
                .clamp_mss(cfg.mss_limit()),
            socket.clone(),
            shared.clone(),
            dev.local.is_ipv6(),
            dev.offload,
        );
        // After the TAP, whose name it carries.
        let path = cfg
            .status_socket
            .clone()
            .unwrap_or_else(|| control::socket_path(&facts.name));
        let control = match control::bind(&path) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(
                    "status socket {}: {e}; `taptun status` will not reach this tunnel (--status-socket names another path)",
                    path.display()
                );
                None
            }
        };
        Ok(Tunnel {
            control_path: control.as_ref().map(|_| path),
            control,
            tap: Arc::new(dev.tap),
            socket,
            facts,
            cfg,
            shared,
            sender: Arc::new(Mutex::new(sender)),
            watch: watch::TickWatch::new(),
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
        self.shared.key.set(Keying::new(&key, self.cfg.cipher)?);
        self.cfg.key = key;
        self.shared.key_rotations.fetch_add(1, Relaxed);
        self.shared.key_since_ns.store(unix_nanos(), Relaxed);
        Ok(true)
    }

    /// Starts the two forwarding threads. They run until the process exits.
    pub fn start(&mut self) -> Result<(), TunnelError> {
        // Without non-blocking reads the TAP cannot be drained: one frame
        // per call, and only the TAP→UDP thread reads. The fd is shared with
        // the writing thread, where O_NONBLOCK changes nothing: a TAP write
        // does not wait for anything (tun's send buffer is unlimited unless
        // TUNSETSNDBUF says otherwise).
        let nonblocking = match self.tap.set_nonblocking(true) {
            Ok(()) => true,
            Err(e) => {
                info!("TAP cannot be read non-blocking ({e}); sending frames one by one");
                false
            }
        };
        send::lock(&self.sender).set_nonblocking(nonblocking);
        let (tap, sender) = (self.tap.clone(), self.sender.clone());
        thread::Builder::new()
            .name("tap-to-udp".into())
            .spawn(move || send::tap_to_udp(&tap, &sender))
            .map_err(TunnelError::Thread)?;
        let receiver = recv::Receiver {
            tap: self.tap.clone(),
            socket: self.socket.clone(),
            shared: self.shared.clone(),
            key: Cached::new(&self.shared.key),
            inbound: {
                let inbound = Inbound::new(
                    self.shared.key.get().keys(),
                    self.cfg.max_age.as_nanos() as u64,
                    self.cfg.peer,
                )
                .clamp_mss(self.cfg.mss_limit());
                match self.cfg.cipher {
                    // Name a peer started with --cipher.
                    None => inbound.detect_confidential(self.cfg.key.as_bytes()),
                    Some(_) => inbound,
                }
            },
            coalescer: self
                .facts
                .offload
                .then(|| Coalescer::new().with_udp(self.facts.udp_coalesce)),
            sender: self.sender.clone(),
            replies: nonblocking,
            facts: self.facts.clone(),
            buf: vec![0u8; recv::RECV_BUF],
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
        thread::Builder::new()
            .name("udp-to-tap".into())
            .spawn(move || receiver.run())
            .map_err(TunnelError::Thread)?;
        if let Some(l) = self.control.take() {
            let (facts, shared) = (self.facts.clone(), self.shared.clone());
            thread::Builder::new()
                .name("status".into())
                .spawn(move || control::serve(l, facts, shared))
                .map_err(TunnelError::Thread)?;
        }
        if self.cfg.peer.is_some() {
            // Let a peer without our address learn it now, not on first traffic.
            let mut s = send::lock(&self.sender);
            s.keepalive(unix_nanos(), 0);
            s.announce(self.facts.mac, &self.facts.name);
        }
        Ok(())
    }

    /// Called by the main thread between signals: sends a keepalive when
    /// nothing was sent for the keepalive interval, and says how long until
    /// the next one could be due, so the main thread can wake just then.
    pub fn tick(&mut self) -> Duration {
        self.follow_mtu();
        let port = self.facts.local.port();
        self.watch
            .tick(&self.shared, unix_nanos(), self.cfg.keepalive, port);
        let every = self.cfg.keepalive.as_nanos() as u64;
        if every == 0 {
            return Duration::from_secs(1);
        }
        send::lock(&self.sender).keepalive(unix_nanos(), every)
    }
}

impl Tunnel {
    /// Reads the TAP's MTU and, when someone changed it (`ip link set
    /// tap0 mtu 1500`, the bridge script), sends frames up to the new size.
    fn follow_mtu(&self) {
        let Ok(now) = self.tap.mtu() else { return };
        let was = self.shared.mtu.swap(u32::from(now), Relaxed) as u16;
        if now == was {
            return;
        }
        send::lock(&self.sender).set_mtu(now);
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

/// Size of one TAP read: the largest frame and its virtio_net_hdr.
const TAP_BUF: usize = MAX_FRAME + VNET_HDR_LEN;
