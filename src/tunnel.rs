//! The I/O: the TAP device, the UDP socket, and the two forwarding threads.

use crate::addr::{self, Cidr, Local};
use crate::peer::{PeerCache, PeerUpdate, SharedPeer};
use crate::rx::{Inbound, Verdict};
use crate::stats::{Counters, DropReason, RateLimit};
use crate::sys;
use crate::wire::{Codec, HEADER_LEN};
use log::{debug, info, warn};
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

/// Largest Ethernet frame a TAP read can return.
pub const MAX_FRAME: usize = 65535;
/// Receive buffer: larger than any UDP payload, so nothing is ever truncated.
const RECV_BUF: usize = 65536;

/// Everything the tunnel needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The shared secret, already loaded.
    pub key: Vec<u8>,
    /// Where to bind the UDP socket.
    pub local: Local,
    /// The peer, when configured.
    pub peer: Option<SocketAddr>,
    /// TAP name; the kernel picks `tapN` when absent.
    pub dev: Option<String>,
    /// TAP MTU.
    pub mtu: u16,
    /// Addresses to put on the TAP.
    pub addresses: Vec<Cidr>,
    /// Maximum timestamp age, either way.
    pub max_age: Duration,
    /// Send a keepalive after this much silence (zero: never).
    pub keepalive: Duration,
    /// Requested socket buffer size, each way.
    pub sockbuf: usize,
}

/// Why the tunnel could not start; each says what to do.
#[derive(Debug)]
pub enum TunnelError {
    /// Opening or configuring the TAP failed.
    Tap(io::Error),
    /// Binding the UDP socket failed.
    Bind(SocketAddr, io::Error),
    /// More than one IPv4 `--address`.
    TwoIpv4(Cidr),
    /// Spawning a thread failed.
    Thread(io::Error),
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::Tap(e) => {
                let hint = match e.raw_os_error() {
                    Some(libc::ENOENT) | Some(libc::ENODEV) => {
                        "; /dev/net/tun is missing: load the tun module (modprobe tun)"
                    }
                    Some(libc::EPERM) | Some(libc::EACCES) => {
                        "; run as root or grant CAP_NET_ADMIN (setcap cap_net_admin+ep taptun)"
                    }
                    Some(libc::EBUSY) | Some(libc::EINVAL) => {
                        "; is the --dev name taken by another kind of interface?"
                    }
                    _ => "",
                };
                write!(f, "cannot create the TAP interface: {e}{hint}")
            }
            TunnelError::Bind(a, e) => {
                let hint = match e.kind() {
                    io::ErrorKind::AddrInUse => {
                        "; another process uses this port: pick another, or stop it"
                    }
                    io::ErrorKind::AddrNotAvailable => "; this host has no such address",
                    io::ErrorKind::PermissionDenied => {
                        "; ports below 1024 need root or CAP_NET_BIND_SERVICE"
                    }
                    _ => "",
                };
                write!(f, "cannot bind UDP {a}: {e}{hint}")
            }
            TunnelError::TwoIpv4(c) => write!(
                f,
                "--address {c}: only one IPv4 address can be set; add more with `ip addr add` (IPv6 may repeat)"
            ),
            TunnelError::Thread(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for TunnelError {}

/// State the threads share.
#[derive(Debug)]
pub struct Shared {
    /// Traffic and drop counters.
    pub counters: Counters,
    /// The current peer.
    pub peer: SharedPeer,
    /// The last timestamp sent: datagrams leave with strictly increasing
    /// timestamps, so that the peer's replay window never sees a tie.
    last_ts: AtomicU64,
}

impl Shared {
    /// A timestamp greater than every one sent before, from the wall clock.
    #[inline]
    fn next_ts(&self) -> u64 {
        let now = unix_nanos();
        let prev = self
            .last_ts
            .fetch_update(Relaxed, Relaxed, |last| Some(now.max(last + 1)))
            .unwrap_or(now);
        now.max(prev + 1)
    }
}

/// The wall clock in UNIX nanoseconds (0 before 1970).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A running tunnel: TAP, socket and threads.
pub struct Tunnel {
    tap: Arc<SyncDevice>,
    socket: Arc<UdpSocket>,
    socket_v6: bool,
    codec: Codec,
    cfg: Config,
    name: String,
    /// Shared counters and peer.
    pub shared: Arc<Shared>,
}

fn bind(local: Local) -> Result<UdpSocket, TunnelError> {
    let mut last = None;
    for a in local.candidates() {
        match UdpSocket::bind(a) {
            Ok(s) => return Ok(s),
            // IPv6 disabled on this host: fall back to the IPv4 wildcard.
            Err(e)
                if e.raw_os_error() == Some(libc::EAFNOSUPPORT)
                    || e.kind() == io::ErrorKind::AddrNotAvailable =>
            {
                last = Some(TunnelError::Bind(a, e))
            }
            Err(e) => return Err(TunnelError::Bind(a, e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        TunnelError::Bind(local.candidates()[0], io::ErrorKind::InvalidInput.into())
    }))
}

impl Tunnel {
    /// Binds the socket, creates the TAP and brings it up. Nothing runs yet.
    pub fn open(cfg: Config) -> Result<Tunnel, TunnelError> {
        let socket = bind(cfg.local)?;
        let local = socket
            .local_addr()
            .map_err(|e| TunnelError::Bind(cfg.local.candidates()[0], e))?;
        let socket_v6 = local.is_ipv6();
        for (which, name) in [(sys::Buf::Recv, "receive"), (sys::Buf::Send, "send")] {
            match sys::set_socket_buffer(&socket, which, cfg.sockbuf) {
                Ok(got) if got < cfg.sockbuf => warn!(
                    "UDP {name} buffer is {got} bytes, less than the {} asked for; raise net.core.{}mem_max",
                    cfg.sockbuf,
                    if matches!(which, sys::Buf::Recv) {
                        "r"
                    } else {
                        "w"
                    }
                ),
                Ok(_) => {}
                Err(e) => warn!("cannot set the UDP {name} buffer: {e}"),
            }
        }

        let mut builder = DeviceBuilder::new()
            .layer(Layer::L2)
            .mtu(cfg.mtu)
            .enable(true);
        if let Some(name) = &cfg.dev {
            builder = builder.name(name.clone());
        }
        let mut have_v4 = false;
        for c in &cfg.addresses {
            match c.ip {
                std::net::IpAddr::V4(ip) if !have_v4 => {
                    builder = builder.ipv4(ip, c.prefix, None);
                    have_v4 = true;
                }
                std::net::IpAddr::V4(_) => return Err(TunnelError::TwoIpv4(*c)),
                std::net::IpAddr::V6(ip) => builder = builder.ipv6(ip, c.prefix),
            }
        }
        let tap = builder.build_sync().map_err(TunnelError::Tap)?;
        let name = tap.name().map_err(TunnelError::Tap)?;
        info!(
            "{name} up, mtu {}, UDP {}, {}",
            cfg.mtu,
            addr::canonical(local),
            match cfg.peer {
                Some(p) => format!("peer {}", addr::canonical(p)),
                None => "waiting for peer".to_string(),
            }
        );
        for c in &cfg.addresses {
            info!("{name} address {c}");
        }
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            peer: SharedPeer::new(cfg.peer),
            last_ts: AtomicU64::new(0),
        });
        Ok(Tunnel {
            tap: Arc::new(tap),
            socket: Arc::new(socket),
            socket_v6,
            codec: Codec::new(&cfg.key),
            cfg,
            name,
            shared,
        })
    }

    /// The TAP interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the two forwarding threads. They run until the process exits.
    pub fn start(&self) -> Result<(), TunnelError> {
        let (tap, socket, shared, codec, v6) = (
            self.tap.clone(),
            self.socket.clone(),
            self.shared.clone(),
            self.codec.clone(),
            self.socket_v6,
        );
        let mtu = self.cfg.mtu;
        thread::Builder::new()
            .name("tap-to-udp".into())
            .spawn(move || tap_to_udp(&tap, &socket, &shared, &codec, v6, mtu))
            .map_err(TunnelError::Thread)?;
        let (tap, socket, shared) = (self.tap.clone(), self.socket.clone(), self.shared.clone());
        let inbound = Inbound::new(
            self.codec.clone(),
            self.cfg.max_age.as_nanos() as u64,
            self.cfg.peer,
        );
        thread::Builder::new()
            .name("udp-to-tap".into())
            .spawn(move || udp_to_tap(&tap, &socket, &shared, inbound))
            .map_err(TunnelError::Thread)?;
        if self.cfg.peer.is_some() {
            // Let a peer without our address learn it now, not on first traffic.
            self.send_keepalive();
        }
        Ok(())
    }

    /// Sends a keepalive if a peer is known.
    pub fn send_keepalive(&self) {
        let Some(peer) = self.shared.peer.get() else {
            return;
        };
        let mut buf = [0u8; HEADER_LEN];
        if self.codec.seal(self.shared.next_ts(), &mut buf).is_err() {
            return;
        }
        match self
            .socket
            .send_to(&buf, addr::for_socket(peer, self.socket_v6))
        {
            Ok(_) => {
                self.shared.counters.keepalives_tx.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.shared.counters.send_errors.fetch_add(1, Relaxed);
                debug!("keepalive to {peer}: {e}");
            }
        }
    }

    /// Called about once a second by the main thread: sends a keepalive
    /// when nothing was sent for the keepalive interval.
    pub fn tick(&self) {
        let ka = self.cfg.keepalive.as_nanos() as u64;
        if ka == 0 {
            return;
        }
        let last = self.shared.last_ts.load(Relaxed);
        if unix_nanos().saturating_sub(last) >= ka {
            self.send_keepalive();
        }
    }
}

fn tap_to_udp(
    tap: &SyncDevice,
    socket: &UdpSocket,
    shared: &Shared,
    codec: &Codec,
    v6: bool,
    mtu: u16,
) {
    let mut buf = vec![0u8; HEADER_LEN + MAX_FRAME];
    let mut peer = PeerCache::default();
    let mut errlog = RateLimit::new(5, Duration::from_secs(1));
    let c = &shared.counters;
    // A frame larger than MTU + Ethernet + VLAN header cannot be what the kernel meant to send.
    let max_frame = mtu as usize + 14 + 4;
    loop {
        let n = match tap.recv(&mut buf[HEADER_LEN..]) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    if let Some(held) = errlog.allow(Instant::now()) {
                        warn!("TAP read: {e} ({held} more not shown)");
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                continue;
            }
        };
        if n == 0 {
            continue;
        }
        if n > max_frame {
            c.drop(DropReason::Oversize);
            continue;
        }
        let Some(to) = peer.get(&shared.peer) else {
            c.drop(DropReason::NoPeer);
            continue;
        };
        let dg = &mut buf[..HEADER_LEN + n];
        if codec.seal(shared.next_ts(), dg).is_err() {
            continue;
        }
        match socket.send_to(dg, addr::for_socket(to, v6)) {
            Ok(_) => {
                c.tx_frames.fetch_add(1, Relaxed);
                c.tx_bytes.fetch_add(n as u64, Relaxed);
            }
            Err(e) => {
                c.send_errors.fetch_add(1, Relaxed);
                if let Some(held) = errlog.allow(Instant::now()) {
                    warn!("UDP send to {to}: {e} ({held} more not shown)");
                }
            }
        }
    }
}

fn udp_to_tap(tap: &SyncDevice, socket: &UdpSocket, shared: &Shared, mut inbound: Inbound) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut droplog = RateLimit::new(5, Duration::from_secs(1));
    let mut errlog = RateLimit::new(5, Duration::from_secs(1));
    let c = &shared.counters;
    loop {
        let (n, src) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    if let Some(held) = errlog.allow(Instant::now()) {
                        warn!("UDP receive: {e} ({held} more not shown)");
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                continue;
            }
        };
        let (verdict, update) = inbound.receive(&buf[..n], src, unix_nanos());
        match update {
            PeerUpdate::Unchanged => {}
            PeerUpdate::Learned(p) => {
                info!("peer learned: {p}");
                shared.peer.set(p);
            }
            PeerUpdate::Moved { from, to } => {
                info!("peer moved from {from} to {to}");
                shared.peer.set(to);
            }
        }
        match verdict {
            Verdict::Frame(frame) => match tap.send(frame) {
                Ok(_) => {
                    c.rx_frames.fetch_add(1, Relaxed);
                    c.rx_bytes.fetch_add(frame.len() as u64, Relaxed);
                }
                Err(e) => {
                    c.tap_errors.fetch_add(1, Relaxed);
                    if let Some(held) = errlog.allow(Instant::now()) {
                        warn!(
                            "TAP write of {} bytes: {e} ({held} more not shown)",
                            frame.len()
                        );
                    }
                }
            },
            Verdict::Keepalive => {
                c.keepalives_rx.fetch_add(1, Relaxed);
            }
            Verdict::Drop(reason) => {
                c.drop(reason);
                if let Some(held) = droplog.allow(Instant::now()) {
                    debug!(
                        "dropped {n}-byte datagram from {}: {reason} ({held} more not shown)",
                        addr::canonical(src)
                    );
                }
            }
        }
    }
}
