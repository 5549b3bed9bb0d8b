//! The I/O: the TAP device, the UDP socket, and the two forwarding threads.

use crate::addr::{self, Cidr, Local};
use crate::batch::{self, Message};
use crate::offload::{self, Coalescer, VNET_HDR_LEN, VnetHdr};
use crate::peer::PeerUpdate;
use crate::published::{Cached, Published};
use crate::rx::{Inbound, Verdict};
use crate::stats::{Counters, DropReason, RateLimit};
use crate::sys;
use crate::wire::{Codec, HEADER_LEN};
use log::{debug, info, warn};
use std::fmt;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// Use TAP checksum/segmentation offloads when the kernel allows them.
    pub offload: bool,
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
                    Some(libc::EPERM) => {
                        "; run as root or grant CAP_NET_ADMIN (systemd AmbientCapabilities=CAP_NET_ADMIN, or setcap cap_net_admin+ep taptun)"
                    }
                    Some(libc::EACCES) => {
                        "; this user may not open /dev/net/tun (udev normally makes it mode 0666), or lacks CAP_NET_ADMIN: run as root or grant it (systemd AmbientCapabilities=CAP_NET_ADMIN)"
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
    pub peer: Published<Option<SocketAddr>>,
    /// The current key.
    pub key: Published<Codec>,
    /// When the last datagram that passed every check arrived (UNIX ns, 0: never).
    pub last_valid_ns: AtomicU64,
    /// How many times the key was replaced (SIGHUP).
    pub key_rotations: AtomicU64,
    /// The last timestamp sent: datagrams leave with strictly increasing
    /// timestamps, so that the peer's replay window never sees a tie.
    last_ts: AtomicU64,
}

impl Shared {
    /// A timestamp greater than every one sent before, from the wall clock.
    #[inline]
    fn next_ts(&self) -> u64 {
        self.next_ts_at(unix_nanos())
    }

    /// Like [`Shared::next_ts`] with the clock already read, so the segments
    /// of one super-frame share one clock reading and still get distinct,
    /// increasing timestamps.
    #[inline]
    fn next_ts_at(&self, now: u64) -> u64 {
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
    offload: bool,
    /// Whether UDP runs may be written to the TAP as USO super-frames.
    udp_coalesce: bool,
    /// Whether the socket may send UDP GSO messages.
    udp_gso: bool,
    socket: Arc<UdpSocket>,
    socket_v6: bool,
    local: SocketAddr,
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

        let mut ipv4 = None;
        let mut ipv6 = Vec::new();
        for c in &cfg.addresses {
            match c.ip {
                std::net::IpAddr::V4(ip) if ipv4.is_none() => ipv4 = Some((ip, c.prefix)),
                std::net::IpAddr::V4(_) => return Err(TunnelError::TwoIpv4(*c)),
                std::net::IpAddr::V6(ip) => ipv6.push((ip, c.prefix)),
            }
        }
        let build = |offload: bool| {
            let mut b = DeviceBuilder::new()
                .layer(Layer::L2)
                .mtu(cfg.mtu)
                .offload(offload)
                .enable(true);
            if let Some(name) = &cfg.dev {
                b = b.name(name.clone());
            }
            if let Some((ip, prefix)) = ipv4 {
                b = b.ipv4(ip, prefix, None);
            }
            for &(ip, prefix) in &ipv6 {
                b = b.ipv6(ip, prefix);
            }
            b.build_sync()
        };
        if cfg.offload
            && let Err(e) = sys::enable_udp_gro(&socket)
        {
            info!("UDP GRO unavailable ({e}); receiving datagrams one by one");
        }
        let udp_gso = cfg.offload
            && match sys::udp_gso_available(&socket) {
                Ok(()) => true,
                Err(e) => {
                    info!("UDP GSO unavailable ({e}); sending datagrams one per message");
                    false
                }
            };
        let (tap, offload) = if cfg.offload {
            // TCP offloads only: UDP super-frames (USO) would be segmented
            // by code that the kernel never exercises here.
            match build(true)
                .and_then(|t| sys::tun_set_offload(&t, sys::TUN_TCP_OFFLOADS).map(|_| t))
            {
                Ok(t) => (t, true),
                Err(e) => {
                    info!("TAP offloads unavailable ({e}); using one frame per read");
                    (build(false).map_err(TunnelError::Tap)?, false)
                }
            }
        } else {
            (build(false).map_err(TunnelError::Tap)?, false)
        };
        // UDP super-frames may be written to the TAP only if the kernel
        // knows USO (6.2+); older ones refuse the write. Asking for USO is
        // the kernel's own way to test for it; then it is switched off
        // again, since taptun does not read UDP super-frames.
        let udp_coalesce =
            offload && sys::tun_set_offload(&tap, sys::TUN_TCP_OFFLOADS | sys::TUN_USO).is_ok();
        if udp_coalesce && let Err(e) = sys::tun_set_offload(&tap, sys::TUN_TCP_OFFLOADS) {
            // Harmless: UDP super-frames from the kernel are cut like TCP ones.
            debug!("cannot switch TAP USO off again: {e}");
        }
        if offload && !udp_coalesce {
            info!("kernel without TAP USO (before 6.2): UDP datagrams go to the TAP one by one");
        }
        let name = tap.name().map_err(TunnelError::Tap)?;
        info!(
            "{name} up, mtu {}, UDP {}, offloads {}, {}",
            cfg.mtu,
            addr::canonical(local),
            if offload { "on" } else { "off" },
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
            peer: Published::new(cfg.peer.map(addr::canonical)),
            key: Published::new(Codec::new(&cfg.key)),
            last_valid_ns: AtomicU64::new(0),
            key_rotations: AtomicU64::new(0),
            last_ts: AtomicU64::new(0),
        });
        Ok(Tunnel {
            tap: Arc::new(tap),
            offload,
            udp_coalesce,
            udp_gso,
            socket: Arc::new(socket),
            socket_v6,
            local,
            cfg,
            name,
            shared,
        })
    }

    /// The TAP interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TAP MTU.
    pub fn mtu(&self) -> u16 {
        self.cfg.mtu
    }

    /// The address the UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        addr::canonical(self.local)
    }

    /// The current peer, configured or learned.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.shared.peer.get()
    }

    /// Replaces the key (SIGHUP): sending uses the new key at once; the
    /// receiver accepts the old one for `--max-age` more. Returns false,
    /// changing nothing, when the key is the one in use.
    pub fn rotate_key(&mut self, key: Vec<u8>) -> bool {
        if key == self.cfg.key {
            return false;
        }
        self.shared.key.set(Codec::new(&key));
        self.cfg.key = key;
        self.shared.key_rotations.fetch_add(1, Relaxed);
        true
    }

    /// The counters, the peer and the last valid datagram, as one line for the log.
    pub fn status(&self) -> String {
        let mut s = self.shared.counters.summary();
        match self.peer() {
            Some(p) => {
                let _ = write!(s, ", peer {p}");
            }
            None => s.push_str(", peer none"),
        }
        match self.last_valid_age() {
            Some(age) => {
                let _ = write!(s, ", last valid datagram {age:.1} s ago");
            }
            None => s.push_str(", last valid datagram never"),
        }
        let _ = write!(
            s,
            ", key rotations {}",
            self.shared.key_rotations.load(Relaxed)
        );
        s
    }

    /// The same as [`Tunnel::status`], as one JSON object on one line.
    pub fn status_json(&self) -> String {
        let now = unix_nanos();
        let last = self.shared.last_valid_ns.load(Relaxed);
        let counters = self.shared.counters.json(self.peer());
        let mut s = String::from("{\"dev\":");
        json_string(&mut s, &self.name);
        let _ = write!(s, ",\"time\":{:.3},\"last_valid\":", now as f64 / 1e9);
        if last == 0 {
            s.push_str("null,\"last_valid_age\":null");
        } else {
            let _ = write!(
                s,
                "{:.3},\"last_valid_age\":{:.3}",
                last as f64 / 1e9,
                now.saturating_sub(last) as f64 / 1e9
            );
        }
        let _ = write!(
            s,
            ",\"key_rotations\":{},",
            self.shared.key_rotations.load(Relaxed)
        );
        // Counters::json is one object: splice its members into this one.
        s.push_str(counters.strip_prefix('{').unwrap_or(&counters));
        s
    }

    /// Seconds since the last datagram that passed every check, if any.
    fn last_valid_age(&self) -> Option<f64> {
        match self.shared.last_valid_ns.load(Relaxed) {
            0 => None,
            t => Some(unix_nanos().saturating_sub(t) as f64 / 1e9),
        }
    }

    /// Starts the two forwarding threads. They run until the process exits.
    pub fn start(&self) -> Result<(), TunnelError> {
        let (tap, socket, shared, v6) = (
            self.tap.clone(),
            self.socket.clone(),
            self.shared.clone(),
            self.socket_v6,
        );
        // Without non-blocking reads the TAP cannot be drained: one frame
        // per call, and only the TAP→UDP thread reads. The fd is shared with
        // the writing thread, where O_NONBLOCK changes nothing: a TAP write
        // does not wait for anything (tun's send buffer is unlimited unless
        // TUNSETSNDBUF says otherwise).
        let nonblocking = match tap.set_nonblocking(true) {
            Ok(()) => true,
            Err(e) => {
                info!("TAP cannot be read non-blocking ({e}); sending frames one by one");
                false
            }
        };
        let sender = Arc::new(Mutex::new(Sender {
            outbox: Outbox::new(socket, shared, v6, self.udp_gso),
            buf: vec![0u8; MAX_FRAME + VNET_HDR_LEN],
            offload: self.offload,
            max_frame: usize::from(self.cfg.mtu) + 14 + 4,
            nonblocking,
            errlog: RateLimit::new(5, Duration::from_secs(1)),
        }));
        let offload = self.offload;
        let (t, snd) = (tap.clone(), sender.clone());
        thread::Builder::new()
            .name("tap-to-udp".into())
            .spawn(move || tap_to_udp(&t, &snd))
            .map_err(TunnelError::Thread)?;
        let drainer = nonblocking.then_some(sender);
        let (socket, shared) = (self.socket.clone(), self.shared.clone());
        let inbound = Inbound::new(
            self.shared.key.get(),
            self.cfg.max_age.as_nanos() as u64,
            self.cfg.peer,
        );
        let coalescer = offload.then(|| Coalescer::new().with_udp(self.udp_coalesce));
        thread::Builder::new()
            .name("udp-to-tap".into())
            .spawn(move || udp_to_tap(&tap, &socket, &shared, inbound, coalescer, drainer))
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
        if self
            .shared
            .key
            .get()
            .seal(self.shared.next_ts(), &mut buf)
            .is_err()
        {
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

    /// Called by the main thread between signals: sends a keepalive when
    /// nothing was sent for the keepalive interval, and says how long until
    /// the next one could be due, so the main thread can wake just then.
    pub fn tick(&self) -> Duration {
        let ka = self.cfg.keepalive.as_nanos() as u64;
        if ka == 0 {
            return Duration::from_secs(1);
        }
        let idle = unix_nanos().saturating_sub(self.shared.last_ts.load(Relaxed));
        if idle >= ka {
            self.send_keepalive();
            return Duration::from_nanos(ka);
        }
        Duration::from_nanos(ka - idle)
    }
}

/// Appends `text` as a JSON string.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Room for the datagrams of one batch: a super-frame's payload plus, per
/// segment, the taptun header and the copied Ethernet/IP/TCP headers.
const SEG_BUF: usize = MAX_FRAME + 512 * (HEADER_LEN + 128);
/// A batch is sent once it holds this many datagrams, even if the TAP has
/// more queued: one full GSO message of small frames.
const BATCH_DATAGRAMS: usize = batch::MAX_SEGMENTS;
/// Most frames the UDP→TAP thread reads from the TAP after its writes,
/// before it goes back to its socket.
const REPLY_FRAMES: usize = 64;
/// After a look for replies found none, the UDP→TAP thread does not look
/// again for this long (ns).
const REPLY_LOOK_PAUSE_NS: u64 = 1_000_000;

/// The sending thread's state: datagrams read from the TAP and cut, not
/// yet sealed and sent, and the buffers that live as long as the thread.
struct Outbox {
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    v6: bool,
    /// Sealed datagrams, back to back from offset 0.
    out: Vec<u8>,
    /// Where each datagram of the batch is in `out`, in send order.
    spans: Vec<Range<usize>>,
    /// Scratch: the datagrams of the frame being cut.
    cut: Vec<Range<usize>>,
    msgs: Vec<Message>,
    peer: Cached<Option<SocketAddr>>,
    key: Cached<Codec>,
    /// Whether UDP GSO is still believed to work.
    gso: bool,
    errlog: RateLimit,
}

impl Outbox {
    fn new(socket: Arc<UdpSocket>, shared: Arc<Shared>, v6: bool, gso: bool) -> Self {
        Outbox {
            peer: Cached::new(&shared.peer),
            key: Cached::new(&shared.key),
            socket,
            shared,
            v6,
            out: vec![0u8; SEG_BUF],
            spans: Vec::with_capacity(1024),
            cut: Vec::with_capacity(512),
            msgs: Vec::with_capacity(1024),
            gso,
            errlog: RateLimit::new(5, Duration::from_secs(1)),
        }
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    /// Cuts one TAP frame into datagrams (with room for the taptun header)
    /// at the end of the batch, sending the batch first if it is full.
    fn push(&mut self, hdr: &VnetHdr, frame: &[u8], max_frame: usize) {
        let mut at = self.spans.last().map_or(0, |s| s.end);
        let mut r = offload::segment(
            hdr,
            frame,
            max_frame,
            HEADER_LEN,
            &mut self.out[at..],
            &mut self.cut,
        );
        if r == Err(offload::OffloadError::NoRoom) && at > 0 {
            self.flush();
            at = 0;
            r = offload::segment(
                hdr,
                frame,
                max_frame,
                HEADER_LEN,
                &mut self.out,
                &mut self.cut,
            );
        }
        if let Err(e) = r {
            self.shared.counters.drop(DropReason::Oversize);
            if let Some(held) = self.errlog.allow(Instant::now()) {
                warn!(
                    "TAP frame of {} bytes not sent: {e} ({held} more not shown)",
                    frame.len()
                );
            }
            return;
        }
        self.spans
            .extend(self.cut.iter().map(|s| s.start + at..s.end + at));
    }

    /// Seals every datagram of the batch (one clock reading, distinct
    /// increasing timestamps) and sends them with as few calls as the
    /// kernel allows.
    fn flush(&mut self) {
        if self.spans.is_empty() {
            return;
        }
        let c = &self.shared.counters;
        let Some(to) = *self.peer.get(&self.shared.peer) else {
            for _ in 0..self.spans.len() {
                c.drop(DropReason::NoPeer);
            }
            self.spans.clear();
            return;
        };
        let to = addr::for_socket(to, self.v6);
        let codec = self.key.get(&self.shared.key);
        let now = unix_nanos();
        for span in &self.spans {
            // Sealing cannot fail: every span has room for the header.
            let _ = codec.seal(self.shared.next_ts_at(now), &mut self.out[span.clone()]);
        }
        self.msgs.clear();
        let max_segs = if self.gso { batch::MAX_SEGMENTS } else { 1 };
        batch::plan(&self.spans, max_segs, batch::MAX_GSO_BYTES, &mut self.msgs);
        let mut i = 0;
        while i < self.msgs.len() {
            match sys::send_messages(&*self.socket, &self.out, &self.msgs[i..], to) {
                Ok(k) => {
                    let k = k.max(1).min(self.msgs.len() - i);
                    for m in &self.msgs[i..i + k] {
                        c.tx_frames.fetch_add(m.count as u64, Relaxed);
                        c.tx_bytes
                            .fetch_add((m.range.len() - m.count * HEADER_LEN) as u64, Relaxed);
                    }
                    i += k;
                }
                Err(e) if self.msgs[i].is_gso() && gso_refused(&e) => {
                    if self.gso
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EIO) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
                        )
                    {
                        self.gso = false;
                        info!("UDP GSO refused ({e}); sending datagrams one per message");
                    }
                    // EINVAL alone can be this route's MTU (datagrams that
                    // need fragmenting): send this message's datagrams alone.
                    for one in self.msgs[i].split() {
                        send(&self.socket, &self.out[one.range], to, c, &mut self.errlog);
                    }
                    i += 1;
                }
                Err(e) => {
                    c.send_errors.fetch_add(self.msgs[i].count as u64, Relaxed);
                    if let Some(held) = self.errlog.allow(Instant::now()) {
                        warn!(
                            "UDP send to {}: {e} ({held} more not shown)",
                            addr::canonical(to)
                        );
                    }
                    i += 1;
                }
            }
        }
        self.spans.clear();
    }
}

/// Errors with which the kernel says it cannot send this message with GSO.
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
    )
}

/// What [`Sender::drain`] stopped at.
enum Drained {
    /// The TAP has nothing more to read.
    Empty,
    /// The frame limit was reached (or the TAP reads block: one at a time).
    Limit,
    /// A read failed (already logged).
    Failed,
}

/// Reads frames from the TAP, cuts and seals them into batches and sends
/// each batch with one `sendmmsg`. Both threads use it, behind one mutex,
/// so frames leave in the order the TAP gave them: the TAP→UDP thread when
/// the TAP wakes it, and the UDP→TAP thread right after its own TAP writes,
/// which is when the kernel queues the replies (ACKs, echo replies) to what
/// it was just given; those then leave without waking another thread.
struct Sender {
    outbox: Outbox,
    /// One TAP read, with its virtio_net_hdr when offloads are on.
    buf: Vec<u8>,
    offload: bool,
    /// A frame larger than MTU + Ethernet + VLAN header cannot be what the
    /// kernel meant to send.
    max_frame: usize,
    /// Whether the TAP is read non-blocking (else one frame per call).
    nonblocking: bool,
    errlog: RateLimit,
}

impl Sender {
    /// Reads at most `limit` frames, stopping early when the TAP is empty,
    /// and sends them all before returning. Also says how many it read.
    fn drain(&mut self, tap: &SyncDevice, limit: usize) -> (Drained, usize) {
        let mut frames = 0;
        let why = loop {
            if frames >= limit {
                break Drained::Limit;
            }
            let n = match tap.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Drained::Empty,
                Err(e) => {
                    if e.kind() != io::ErrorKind::Interrupted
                        && let Some(held) = self.errlog.allow(Instant::now())
                    {
                        warn!("TAP read: {e} ({held} more not shown)");
                    }
                    break Drained::Failed;
                }
            };
            frames += 1;
            let (hdr, frame) = if self.offload {
                match VnetHdr::parse(&self.buf[..n]) {
                    Ok(h) => (h, &self.buf[VNET_HDR_LEN..n]),
                    Err(_) => continue,
                }
            } else {
                (VnetHdr::default(), &self.buf[..n])
            };
            let ob = &mut self.outbox;
            if ob.peer.get(&ob.shared.peer).is_none() {
                ob.shared.counters.drop(DropReason::NoPeer);
            } else if hdr.gso_type == offload::GSO_NONE && frame.len() > self.max_frame {
                ob.shared.counters.drop(DropReason::Oversize);
            } else if !frame.is_empty() {
                ob.push(&hdr, frame, self.max_frame);
                if ob.len() >= BATCH_DATAGRAMS {
                    ob.flush();
                }
            }
            if !self.nonblocking {
                break Drained::Limit;
            }
        };
        self.outbox.flush();
        (why, frames)
    }
}

/// Locks the sender; a panic elsewhere while it was held leaves nothing
/// half-done that matters (the batch is sent or dropped whole).
fn lock(sender: &Mutex<Sender>) -> MutexGuard<'_, Sender> {
    sender.lock().unwrap_or_else(|e| e.into_inner())
}

/// The TAP→UDP thread: drains the TAP whenever it is readable. A busy TAP
/// costs one system call per frame read and one per batch sent, an idle
/// one costs nothing (the thread blocks in `poll`).
fn tap_to_udp(tap: &SyncDevice, sender: &Mutex<Sender>) {
    let mut errlog = RateLimit::new(5, Duration::from_secs(1));
    loop {
        let (why, _) = lock(sender).drain(tap, usize::MAX);
        match why {
            Drained::Limit => {}
            Drained::Failed => thread::sleep(Duration::from_millis(1)),
            Drained::Empty => {
                if let Err(e) = sys::wait_readable(tap)
                    && e.kind() != io::ErrorKind::Interrupted
                {
                    if let Some(held) = errlog.allow(Instant::now()) {
                        warn!("TAP wait: {e} ({held} more not shown)");
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}

/// Sends one sealed datagram and counts it.
#[inline]
fn send(socket: &UdpSocket, dg: &[u8], to: SocketAddr, c: &Counters, errlog: &mut RateLimit) {
    match socket.send_to(dg, to) {
        Ok(_) => {
            c.tx_frames.fetch_add(1, Relaxed);
            c.tx_bytes
                .fetch_add((dg.len() - HEADER_LEN) as u64, Relaxed);
        }
        Err(e) => {
            c.send_errors.fetch_add(1, Relaxed);
            if let Some(held) = errlog.allow(Instant::now()) {
                warn!(
                    "UDP send to {}: {e} ({held} more not shown)",
                    addr::canonical(to)
                );
            }
        }
    }
}

/// The UDP→TAP thread: receives (GRO runs when the kernel coalesces),
/// checks each datagram alone, writes the frames to the TAP (coalesced
/// runs as super-frames), then sends what the kernel queued on the TAP in
/// answer, through `sender`, if the TAP→UDP thread is not already at it.
fn udp_to_tap(
    tap: &SyncDevice,
    socket: &UdpSocket,
    shared: &Shared,
    mut inbound: Inbound,
    mut coalescer: Option<Coalescer>,
    sender: Option<Arc<Mutex<Sender>>>,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut droplog = RateLimit::new(5, Duration::from_secs(1));
    let mut errlog = RateLimit::new(5, Duration::from_secs(1));
    let mut taplog = RateLimit::new(5, Duration::from_secs(1));
    let c = &shared.counters;
    let mut key_version = shared.key.version();
    // With offloads, runs of TCP segments (and UDP datagrams) that arrive
    // together are written to the TAP as one super-frame; everything else
    // goes one by one.
    let mut emit = |b: &[u8]| {
        if let Err(e) = tap.send(b) {
            c.tap_errors.fetch_add(1, Relaxed);
            if let Some(held) = taplog.allow(Instant::now()) {
                warn!(
                    "TAP write of {} bytes: {e} ({held} more not shown)",
                    b.len()
                );
            }
        }
    };
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut look_after = 0u64;
    loop {
        let r = match sys::recv_gro(socket, &mut buf) {
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
        if r.truncated {
            c.drop(DropReason::Truncated);
            continue;
        }
        let src = r.from.unwrap_or(unknown);
        let now = unix_nanos();
        // One relaxed load per receive; the lock only after a SIGHUP.
        let v = shared.key.version();
        if v != key_version {
            key_version = v;
            inbound.rotate(shared.key.get(), now);
        }
        // A GRO run holds datagrams of `segment` bytes (the last may be
        // shorter); each is checked on its own.
        let seg = r.segment.unwrap_or(r.len).max(1);
        let mut start = 0;
        let mut wrote = false;
        while start < r.len || (r.len == 0 && start == 0) {
            let end = (start + seg).min(r.len);
            let dg = &buf[start..end];
            start = end.max(start + 1);
            let n = dg.len();
            let (verdict, update) = inbound.receive(dg, src, now);
            if !matches!(verdict, Verdict::Drop(_)) {
                shared.last_valid_ns.store(now, Relaxed);
            }
            match update {
                PeerUpdate::Unchanged => {}
                PeerUpdate::Learned(p) => {
                    info!("peer learned: {p}");
                    shared.peer.set(Some(p));
                }
                PeerUpdate::Moved { from, to } => {
                    info!("peer moved from {from} to {to}");
                    shared.peer.set(Some(to));
                }
            }
            match verdict {
                Verdict::Frame(frame) => {
                    wrote = true;
                    c.rx_frames.fetch_add(1, Relaxed);
                    c.rx_bytes.fetch_add(frame.len() as u64, Relaxed);
                    match coalescer.as_mut() {
                        Some(co) => co.push(frame, &mut emit),
                        None => emit(frame),
                    }
                }
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
        if let Some(co) = coalescer.as_mut() {
            co.flush(&mut emit);
        }
        // What the kernel queued on the TAP in answer to these frames goes
        // out now, unless the TAP→UDP thread is already at it. A look that
        // finds nothing costs a system call, so after one there is no other
        // for a millisecond: a one-way stream pays one per millisecond, not
        // one per datagram, while TCP (ACKs) and anything slower than 1 kHz
        // (a ping) keep the fast path.
        if wrote
            && now >= look_after
            && let Some(s) = &sender
            && let Ok(mut s) = s.try_lock()
            && s.drain(tap, REPLY_FRAMES).1 == 0
        {
            look_after = now + REPLY_LOOK_PAUSE_NS;
        }
    }
}
