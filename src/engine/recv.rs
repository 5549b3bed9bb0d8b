//! The UDP→TAP thread: receives datagrams (GRO runs when the kernel
//! coalesces), has the pure [`Inbound`] check each one, writes the frames
//! to the TAP (coalesced runs as super-frames), then sends what the kernel
//! queued on the TAP in answer.

use super::send::{self, Sender};
use super::watch::RecvWatch;
use super::{Facts, Keying, Shared, unix_nanos};
use crate::addr;
use crate::offload::Coalescer;
use crate::peer::PeerUpdate;
use crate::published::Cached;
use crate::rx::Inbound;
use crate::stats::{DropReason, Throttle};
use crate::sys;
use log::{debug, info, warn};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tun_rs::SyncDevice;

/// Receive buffer: larger than any UDP payload, so nothing is ever truncated.
pub(super) const RECV_BUF: usize = 65536;
/// Most frames the UDP→TAP thread reads from the TAP after its writes,
/// before it goes back to its socket.
const REPLY_FRAMES: usize = 64;
/// After a look for replies found none, the UDP→TAP thread does not look
/// again for this long (ns).
const REPLY_LOOK_PAUSE_NS: u64 = 1_000_000;

/// The receiving thread's state; everything lives as long as the thread.
pub(super) struct Receiver {
    pub tap: Arc<SyncDevice>,
    pub socket: Arc<UdpSocket>,
    pub shared: Arc<Shared>,
    pub key: Cached<Keying>,
    pub inbound: Inbound,
    /// With offloads: runs of TCP segments (and UDP datagrams) that arrive
    /// together go to the TAP as one super-frame.
    pub coalescer: Option<Coalescer>,
    /// The sender: for the replies the kernel queues after our TAP writes
    /// (`replies`: only when the TAP reads do not block), and to announce
    /// the TAP to a peer just learned.
    pub sender: Arc<Mutex<Sender>>,
    pub replies: bool,
    pub facts: Arc<Facts>,
    pub buf: Vec<u8>,
    /// One warn line a minute each: receive errors, TAP write errors.
    pub errlog: Throttle,
    pub taplog: Throttle,
    /// The debug line about single drops (the warn lines are `watch`'s).
    pub droplog: Throttle,
    pub watch: RecvWatch,
}

impl Receiver {
    /// Runs until the process exits.
    pub(super) fn run(mut self) {
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut look_after = 0u64;
        loop {
            let r = match sys::recv_gro(&self.socket, &mut self.buf) {
                Ok(r) => r,
                Err(e) => {
                    if e.kind() != io::ErrorKind::Interrupted {
                        if let Some(n) = self.errlog.note(1, Instant::now()) {
                            warn!("UDP receive: {e} ({n} errors)");
                        }
                        thread::sleep(Duration::from_millis(1));
                    }
                    continue;
                }
            };
            if r.truncated {
                self.shared.counters.drop(DropReason::Truncated);
                continue;
            }
            let now = unix_nanos();
            if let Some(k) = self.key.changed(&self.shared.key) {
                self.inbound.rotate(k.keys(), now);
            }
            let src = r.from.unwrap_or(unknown);
            let wrote = self.handle(r.len, r.segment, src, now);
            // What the kernel queued on the TAP in answer to these frames
            // goes out now, unless the TAP→UDP thread is already at it. A
            // look that finds nothing costs a system call, so after one
            // there is no other for a millisecond: a one-way stream pays one
            // per millisecond, not one per datagram, while TCP (ACKs) and
            // anything slower than 1 kHz (a ping) keep the fast path.
            if wrote
                && self.replies
                && now >= look_after
                && let Ok(mut s) = self.sender.try_lock()
                && s.drain(&self.tap, REPLY_FRAMES).1 == 0
            {
                look_after = now + REPLY_LOOK_PAUSE_NS;
            }
        }
    }

    /// Checks the datagrams in `buf[..len]`, writes their frames to the
    /// TAP and counts everything. Returns whether any frame was written.
    fn handle(&mut self, len: usize, segment: Option<usize>, src: SocketAddr, now: u64) -> bool {
        let (tap, shared, taplog) = (&*self.tap, &*self.shared, &mut self.taplog);
        let mut emit = |b: &[u8]| {
            if let Err(e) = tap.send(b) {
                shared.counters.tap_errors.fetch_add(1, Relaxed);
                if let Some(n) = taplog.note(1, Instant::now()) {
                    warn!("TAP write of {} bytes: {e} ({n} failed writes)", b.len());
                }
            }
        };
        let co = &mut self.coalescer;
        let t =
            self.inbound.receive_run(
                &mut self.buf[..len],
                segment,
                src,
                now,
                &mut |frame| match co.as_mut() {
                    Some(co) => co.push(frame, &mut emit),
                    None => emit(frame),
                },
            );
        if let Some(co) = co.as_mut() {
            co.flush(&mut emit);
        }
        let c = &shared.counters;
        c.rx_frames.fetch_add(t.frames, Relaxed);
        c.rx_bytes.fetch_add(t.bytes, Relaxed);
        c.keepalives_rx.fetch_add(t.keepalives, Relaxed);
        for r in DropReason::ALL {
            c.drop_n(r, t.drops[r as usize]);
        }
        if t.valid() {
            shared.last_valid_ns.store(now, Relaxed);
        }
        match t.peer {
            PeerUpdate::Unchanged => {}
            PeerUpdate::Learned(p) => {
                info!("peer learned: {p}");
                shared.peer_learned.store(true, Relaxed);
                shared.peer.set(Some(p));
                send::lock(&self.sender).announce(self.facts.mac, &self.facts.name);
            }
            PeerUpdate::Moved { from, to } => {
                info!("peer moved from {from} to {to}");
                shared.peer_learned.store(true, Relaxed);
                shared.peer.set(Some(to));
            }
        }
        self.watch.saw(&t, src, self.inbound.peer(), shared);
        let dropped: u64 = t.drops.iter().sum();
        if let Some((reason, n)) = t.last_drop
            && let Some(all) = self.droplog.note(dropped, Instant::now())
        {
            debug!(
                "dropped {n}-byte datagram from {}: {reason} ({all} dropped since the last such line)",
                addr::canonical(src)
            );
        }
        t.frames > 0
    }
}
