//! The TAP→UDP thread: reads frames from the TAP, hands them to the pure
//! [`Outbound`] to cut and seal, and sends each batch with one `sendmmsg`.

use super::{Keying, Shared, TAP_BUF, unix_nanos};
use crate::addr;
use crate::announce;
use crate::mac::MacAddr;
use crate::offload::{VNET_HDR_LEN, VnetHdr};
use crate::published::Cached;
use crate::stats::{DropReason, Throttle};
use crate::sys;
use crate::tx::{self, BATCH_DATAGRAMS, Keepalive, Outbound, Push};
use crate::wire::HEADER_LEN;
use log::{debug, info, warn};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};
use tun_rs::SyncDevice;

/// What [`Sender::drain`] stopped at.
pub(super) enum Drained {
    /// The TAP has nothing more to read.
    Empty,
    /// The frame limit was reached (or the TAP reads block: one at a time).
    Limit,
    /// A read failed (already logged).
    Failed,
}

/// Reads frames from the TAP, has them cut and sealed into batches and
/// sends each batch with one `sendmmsg`. Both threads use it, behind one
/// mutex, so frames leave in the order the TAP gave them: the TAP→UDP
/// thread when the TAP wakes it, and the UDP→TAP thread right after its
/// own TAP writes, which is when the kernel queues the replies (ACKs, echo
/// replies) to what it was just given; those then leave without waking
/// another thread.
pub(super) struct Sender {
    outbound: Outbound,
    link: Link,
    /// One TAP read, with its virtio_net_hdr when offloads are on.
    buf: Vec<u8>,
    offload: bool,
    /// Whether the TAP is read non-blocking (else one frame per call).
    nonblocking: bool,
}

/// Where sealed batches go: the socket, the peer and the key as the
/// threads publish them, and what the kernel was found to accept.
struct Link {
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    /// The socket is IPv6 (peers are given in its family).
    v6: bool,
    peer: Cached<Option<SocketAddr>>,
    key: Cached<Keying>,
    /// Whether the socket is still believed to take GSO messages.
    gso: bool,
    /// One warn line a minute each: TAP read errors, send errors, sizes
    /// the kernel refuses, frames longer than the MTU.
    errlog: Throttle,
    /// One line a minute each: send errors, sizes the kernel refuses,
    /// frames longer than the MTU.
    send_errors: Throttle,
    too_long: Throttle,
    oversize: Throttle,
}

/// Locks the sender; a panic elsewhere while it was held leaves nothing
/// half-done that matters (the batch is sent or dropped whole).
pub(super) fn lock(sender: &Mutex<Sender>) -> MutexGuard<'_, Sender> {
    sender.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sender {
    pub(super) fn new(
        outbound: Outbound,
        socket: Arc<UdpSocket>,
        shared: Arc<Shared>,
        v6: bool,
        offload: bool,
    ) -> Self {
        Sender {
            outbound,
            link: Link {
                peer: Cached::new(&shared.peer),
                key: Cached::new(&shared.key),
                socket,
                shared,
                v6,
                gso: true,
                errlog: Throttle::per_minute(),
                send_errors: Throttle::per_minute(),
                too_long: Throttle::per_minute(),
                oversize: Throttle::per_minute(),
            },
            buf: vec![0u8; TAP_BUF],
            offload,
            nonblocking: false,
        }
    }

    /// Follows a change of the TAP's MTU.
    pub(super) fn set_mtu(&mut self, mtu: u16) {
        self.outbound.set_mtu(mtu);
    }

    pub(super) fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    /// Reads at most `limit` frames, stopping early when the TAP is empty,
    /// and sends them all before returning. Also says how many it read.
    pub(super) fn drain(&mut self, tap: &SyncDevice, limit: usize) -> (Drained, usize) {
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
                        && let Some(n) = self.link.errlog.note(1, Instant::now())
                    {
                        warn!("TAP read: {e} ({n} errors)");
                    }
                    break Drained::Failed;
                }
            };
            frames += 1;
            self.push(n);
            if !self.nonblocking {
                break Drained::Limit;
            }
        };
        self.link.flush(&mut self.outbound);
        (why, frames)
    }

    /// Queues the frame in `buf[..n]`, sending the batch when it is full.
    fn push(&mut self, n: usize) {
        let (hdr, frame) = if self.offload {
            match VnetHdr::parse(&self.buf[..n]) {
                Ok(h) => (h, &self.buf[VNET_HDR_LEN..n]),
                Err(_) => return,
            }
        } else {
            (VnetHdr::default(), &self.buf[..n])
        };
        if frame.is_empty() {
            return;
        }
        let link = &mut self.link;
        if link.peer.get(&link.shared.peer).is_none() {
            link.shared.counters.drop(DropReason::NoPeer);
            return;
        }
        let mut r = self.outbound.push(&hdr, frame);
        if r == Push::Full {
            link.flush(&mut self.outbound);
            r = self.outbound.push(&hdr, frame);
        }
        match r {
            Push::Queued(_) if self.outbound.len() >= BATCH_DATAGRAMS => {
                link.flush(&mut self.outbound)
            }
            Push::Queued(_) | Push::Full => {}
            Push::Dropped(e) => {
                link.shared.counters.drop(DropReason::Oversize);
                if let Some(n) = link.oversize.note(1, Instant::now()) {
                    warn!(
                        "TAP frame not sent: {e}; something on this host sends frames larger than the TAP's MTU ({n} dropped)"
                    );
                }
            }
        }
    }

    /// Announces the TAP `name` (`mac`) to the peer: a gratuitous ARP for
    /// each IPv4 address, an unsolicited neighbour advertisement for each
    /// IPv6 one, so that neighbour caches naming an old MAC are corrected
    /// at once. Rare (start, a peer learned): allocation is fine here.
    pub(super) fn announce(&mut self, mac: MacAddr, name: &str) {
        let addrs = match sys::addresses(name) {
            Ok(a) => a,
            Err(e) => {
                debug!("cannot list {name}'s addresses to announce them: {e}");
                return;
            }
        };
        for ip in addrs {
            let frame: Vec<u8> = match ip {
                IpAddr::V4(v4) => announce::garp(mac, v4).to_vec(),
                IpAddr::V6(v6) => announce::unsolicited_na(mac, v6).to_vec(),
            };
            if self.outbound.push(&VnetHdr::default(), &frame) == Push::Full {
                self.link.flush(&mut self.outbound);
                let _ = self.outbound.push(&VnetHdr::default(), &frame);
            }
        }
        self.link.flush(&mut self.outbound);
    }

    /// Sends a keepalive if a peer is known and nothing was sent for
    /// `every` ns (always, with `every` 0); else says how long until one
    /// is due.
    pub(super) fn keepalive(&mut self, now: u64, every: u64) -> Duration {
        let link = &mut self.link;
        let Some(peer) = *link.peer.get(&link.shared.peer) else {
            return Duration::from_nanos(every);
        };
        if let Some(k) = link.key.changed(&link.shared.key) {
            self.outbound.set_sealer(k.sealer());
        }
        let mut buf = [0u8; HEADER_LEN];
        let dg = match self.outbound.keepalive(now, every, &mut buf) {
            Keepalive::Wait(ns) => return Duration::from_nanos(ns),
            Keepalive::Send(dg) => dg,
        };
        let c = &link.shared.counters;
        match link.socket.send_to(dg, addr::for_socket(peer, link.v6)) {
            Ok(_) => {
                c.keepalives_tx.fetch_add(1, Relaxed);
            }
            Err(e) => {
                c.send_errors.fetch_add(1, Relaxed);
                debug!("keepalive to {peer}: {e}");
            }
        }
        Duration::from_nanos(every)
    }
}

impl Link {
    /// Seals the batch (one clock reading, distinct increasing timestamps)
    /// and sends it with as few calls as the kernel allows.
    fn flush(&mut self, ob: &mut Outbound) {
        if ob.is_empty() {
            return;
        }
        let Some(to) = *self.peer.get(&self.shared.peer) else {
            self.shared
                .counters
                .drop_n(DropReason::NoPeer, ob.discard() as u64);
            return;
        };
        let to = addr::for_socket(to, self.v6);
        if let Some(k) = self.key.changed(&self.shared.key) {
            ob.set_sealer(k.sealer());
        }
        let batch = ob.seal(unix_nanos());
        let msgs = batch.messages;
        let mut refused = false;
        let mut too_large = None;
        let mut i = 0;
        while i < msgs.len() {
            match sys::send_messages(&*self.socket, batch.bytes, &msgs[i..], to) {
                Ok(k) => {
                    let k = k.max(1).min(msgs.len() - i);
                    for m in &msgs[i..i + k] {
                        self.shared
                            .counters
                            .tx_frames
                            .fetch_add(m.count as u64, Relaxed);
                        self.shared
                            .counters
                            .tx_bytes
                            .fetch_add(tx::frame_bytes(m) as u64, Relaxed);
                    }
                    i += k;
                }
                Err(e) if msgs[i].is_gso() && gso_refused(&e) => {
                    if self.gso
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EIO) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
                        )
                    {
                        self.gso = false;
                        refused = true;
                        info!("UDP GSO refused ({e}); sending datagrams one per message");
                    }
                    // EINVAL alone is this route's MTU: GSO does not
                    // fragment. These datagrams go alone from now on,
                    // fragmented by the kernel.
                    if e.raw_os_error() == Some(libc::EINVAL) {
                        too_large = Some(msgs[i].seg);
                    }
                    for one in msgs[i].split() {
                        self.send_one(&batch.bytes[one.range], to);
                    }
                    i += 1;
                }
                Err(e) => {
                    self.shared
                        .counters
                        .send_errors
                        .fetch_add(msgs[i].count as u64, Relaxed);
                    self.send_failed(&e, msgs[i].seg, to);
                    i += 1;
                }
            }
        }
        if refused {
            ob.disable_gso();
        }
        if let Some(seg) = too_large {
            ob.gso_refused_at(seg);
            info!(
                "UDP GSO refused for {seg}-byte datagrams (larger than the route to {} allows unfragmented): sending them one per message, fragmented by the kernel",
                addr::canonical(to)
            );
        }
    }

    /// Sends one sealed datagram and counts it.
    fn send_one(&mut self, dg: &[u8], to: SocketAddr) {
        let c = &self.shared.counters;
        match self.socket.send_to(dg, to) {
            Ok(_) => {
                c.tx_frames.fetch_add(1, Relaxed);
                c.tx_bytes
                    .fetch_add((dg.len() - HEADER_LEN) as u64, Relaxed);
            }
            Err(e) => {
                c.send_errors.fetch_add(1, Relaxed);
                self.send_failed(&e, dg.len(), to);
            }
        }
    }

    fn send_failed(&mut self, e: &io::Error, len: usize, to: SocketAddr) {
        if e.raw_os_error() == Some(libc::EMSGSIZE) {
            if let Some(n) = self.too_long.note(1, Instant::now()) {
                warn!(
                    "UDP send to {}: the kernel refuses {len}-byte datagrams ({e}; {n} refused): lower the TAP MTU (--mtu) below {}, or allow fragments on this route; smaller frames still cross",
                    addr::canonical(to),
                    len.saturating_sub(HEADER_LEN + 14),
                );
            }
            return;
        }
        if let Some(n) = self.send_errors.note(1, Instant::now()) {
            warn!(
                "UDP send to {}: {e} ({n} send errors): check the route to the peer",
                addr::canonical(to)
            );
        }
    }
}

/// Errors with which the kernel says it cannot send this message with GSO.
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
    )
}

/// The TAP→UDP thread: drains the TAP whenever it is readable. A busy TAP
/// costs one system call per frame read and one per batch sent, an idle
/// one costs nothing (the thread blocks in `poll`).
pub(super) fn tap_to_udp(tap: &SyncDevice, sender: &Mutex<Sender>) {
    let mut errlog = Throttle::per_minute();
    loop {
        let (why, _) = lock(sender).drain(tap, usize::MAX);
        match why {
            Drained::Limit => {}
            Drained::Failed => thread::sleep(Duration::from_millis(1)),
            Drained::Empty => {
                if let Err(e) = sys::wait_readable(tap)
                    && e.kind() != io::ErrorKind::Interrupted
                {
                    if let Some(n) = errlog.note(1, Instant::now()) {
                        warn!("TAP wait: {e} ({n} errors)");
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}
