//! The TAP→UDP thread: reads frames from the TAP, hands them to its
//! [`SendHalf`] to cut and seal, and sends each batch with one `sendmmsg`;
//! also the keepalives and the announcement of the TAP to a peer. It owns
//! its sending half; it takes the peer, the key and the MTU from what the
//! other threads publish, each time it wakes.

use super::io::{Fd, Socket, Tap};
use super::out::Out;
use super::role::{Role, Taken};
use super::{Facts, Keying, Shared, TAP_BUF, unix_nanos};
use crate::offload::{VNET_HDR_LEN, VnetHdr};
use crate::published::Cached;
use crate::session::{Flushed, KeepaliveDue, Pushed, SendHalf, Transmit};
use crate::stats::{Counters, DropReason, Throttle};
use crate::sys;
use crate::tx::BATCH_DATAGRAMS;
use crate::wire::HEADER_LEN;
use log::{debug, warn};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::thread;
use std::time::{Duration, Instant};

/// What [`Reader::drain`] stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// The TAP has nothing more to read (or its reads block: one at a
    /// time, after a wait).
    Empty,
    /// The frame limit was reached.
    Limit,
    /// A read failed (already logged).
    Failed,
}

/// Most TAP reads the TAP→UDP thread makes before it looks at the clock
/// and what the other threads published: one batch. A read is up to a
/// 64 KiB super-frame, some 25 µs of HMAC: a burst of the thread is seen
/// within about 1.6 ms, so that the bound (`bound.rs`, 10 ms) cuts it near
/// its limit, and the peer, key and MTU published are taken as often.
const DRAIN_FRAMES: usize = crate::tx::BATCH_DATAGRAMS;

/// Reads the TAP into a sending half: one per thread that reads the TAP,
/// with the buffer of one read.
pub(crate) struct Reader {
    /// One TAP read, with its virtio_net_hdr when offloads are on.
    buf: Vec<u8>,
    offload: bool,
    /// Whether the TAP is read non-blocking (else one frame per call).
    nonblocking: bool,
    /// One warn line a minute each: TAP read errors, frames over the MTU.
    errlog: Throttle,
    oversize: Throttle,
}

impl Reader {
    /// A reader of a TAP with (`offload`) or without a virtio_net_hdr.
    pub(crate) fn new(offload: bool, nonblocking: bool) -> Reader {
        Reader {
            buf: vec![0u8; TAP_BUF],
            offload,
            nonblocking,
            errlog: Throttle::per_minute(),
            oversize: Throttle::per_minute(),
        }
    }

    /// Reads at most `limit` frames, stopping early when the TAP is empty,
    /// and sends them all before returning; also says how many it read.
    pub(crate) fn drain<T: Tap, S: Socket>(
        &mut self,
        tap: &T,
        tx: &mut SendHalf,
        out: &mut Out<S>,
        counters: &Counters,
        limit: usize,
    ) -> (Drained, usize) {
        let mut now = unix_nanos();
        let mut done = Flushed::default();
        let mut send = |t: Transmit<'_>| out.send(t);
        // Confidential mode: what was read before the session came first.
        tx.send_staged(now, &mut send, &mut done);
        let mut frames = 0;
        let why = loop {
            if frames >= limit {
                break Drained::Limit;
            }
            let n = match tap.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Drained::Empty,
                Err(e) => {
                    if e.kind() != io::ErrorKind::Interrupted
                        && let Some(n) = self.errlog.note(1, Instant::now())
                    {
                        warn!("TAP read: {e} ({n} errors)");
                    }
                    break Drained::Failed;
                }
            };
            frames += 1;
            // A long drain seals at a clock read at most a batch ago.
            if frames % BATCH_DATAGRAMS == 0 {
                now = unix_nanos();
            }
            // A read too short for its virtio_net_hdr carries nothing to send.
            let (hdr, frame) = if !self.offload {
                (VnetHdr::default(), &self.buf[..n])
            } else if let Ok(h) = VnetHdr::parse(&self.buf[..n]) {
                (h, &self.buf[VNET_HDR_LEN..n])
            } else {
                (VnetHdr::default(), &self.buf[..0])
            };
            if !frame.is_empty() {
                match tx.push(&hdr, frame, now, &mut send, &mut done) {
                    Pushed::Queued(_) | Pushed::Staged => {}
                    Pushed::NoPeer => counters.drop(DropReason::NoPeer),
                    Pushed::NoSession => counters.drop(DropReason::NoSession),
                    Pushed::Dropped(e) => {
                        counters.drop(DropReason::Oversize);
                        if let Some(n) = self.oversize.note(1, Instant::now()) {
                            warn!(
                                "TAP frame not sent: {e}; something on this host sends frames larger than the TAP's MTU ({n} dropped)"
                            );
                        }
                    }
                }
            }
            if !self.nonblocking {
                // Another read could block: back to the wait, which says
                // when the TAP is readable (and keeps keepalives on time).
                break Drained::Empty;
            }
        };
        done.add(tx.flush(now, &mut send));
        count(counters, done);
        (why, frames)
    }
}

/// Counts what flushes dropped (what they sent, `Out` counts as it goes);
/// nothing, not even an atomic add, when they dropped nothing.
pub(super) fn count(counters: &Counters, f: Flushed) {
    counters.drop_n(DropReason::NoPeer, f.no_peer as u64);
    counters.drop_n(DropReason::NoSession, f.stale as u64);
    if f.refused > 0 {
        counters.seal_errors.fetch_add(f.refused as u64, Relaxed);
    }
}

/// The TAP→UDP thread's state; everything lives as long as the thread.
pub(super) struct Sender<T, S> {
    pub tap: Arc<T>,
    pub tx: SendHalf,
    pub out: Out<S>,
    pub reader: Reader,
    pub shared: Arc<Shared>,
    pub facts: Arc<Facts>,
    pub role: Arc<Role>,
    pub peer: Cached<Option<SocketAddr>>,
    pub key: Cached<Keying>,
    /// Confidential mode: the session to seal under.
    pub send_key: Cached<Option<Arc<crate::noise::SendKey>>>,
    pub mtu: u16,
}

impl<T: Tap, S: Socket> Sender<T, S> {
    /// Runs until the tunnel stops.
    pub(super) fn run(mut self) {
        let mut errlog = Throttle::per_minute();
        let tap_fd = Fd(self.tap.fd());
        // Its real-time bursts' bound (`bound.rs`), made on this thread.
        let mut bound = super::bound::Bound::here(unix_nanos());
        while !self.shared.stop.load(Relaxed) {
            if let Taken::Yes(h) = self.role.take_sender() {
                self.tx.take_over(h);
            } else {
                // The UDP→TAP thread is reading replies: it hands the role
                // back with a wake-up (the timeout only bounds a lost one).
                let _ = sys::wait_either(
                    &self.role.wake,
                    None::<&Fd>,
                    Some(Duration::from_millis(10)),
                );
                self.role.wake.clear();
                continue;
            }
            self.follow();
            let (why, _) = self.reader.drain(
                &*self.tap,
                &mut self.tx,
                &mut self.out,
                &self.shared.counters,
                DRAIN_FRAMES,
            );
            let now = unix_nanos();
            bound.at(now, why != Drained::Limit, &self.shared.counters.rt_cut);
            let due = self.keepalive(now);
            if why == Drained::Limit {
                continue;
            }
            self.role.release_sender(self.tx.handoff());
            if why == Drained::Failed {
                thread::sleep(Duration::from_millis(1));
                continue;
            }
            // Until the TAP is readable, the next keepalive is due, or the
            // wake-up says the peer, key or MTU changed (or: stop).
            let timeout = due.map(|at| Duration::from_nanos(at.saturating_sub(now)));
            match sys::wait_either(&tap_fd, Some(&self.role.wake), timeout) {
                Ok(r) => {
                    // The TAP has something to send after a sleep: with
                    // --busy-poll, the receiving thread is to spin for the
                    // answer (`poll.rs`); asked before the send, so that its
                    // wake-up overlaps the sending.
                    if r.first && self.facts.busy_poll_ns > 0 {
                        self.shared.asks.ask(unix_nanos());
                    }
                    if r.second {
                        self.role.wake.clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(n) = errlog.note(1, Instant::now()) {
                        warn!("TAP wait: {e} ({n} errors)");
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Takes what the other threads published: the peer (announcing the
    /// TAP when one was just learned), the key, the TAP's MTU.
    fn follow(&mut self) {
        let sh = &*self.shared;
        // The ask to announce before the peer: the receiving thread
        // publishes the peer first, so an ask seen means its peer is seen
        // below. (A load first: the swap, a locked instruction, only when
        // set.)
        let announce = sh.announce.load(Relaxed) && sh.announce.swap(false, Acquire);
        if let Some(k) = self.key.changed(&sh.key) {
            self.tx.set_keying(k);
        }
        if let Some(k) = self.send_key.changed(&sh.send_key) {
            self.tx.set_send_key(k.clone());
        }
        let mtu = sh.mtu.load(Relaxed) as u16;
        if mtu != self.mtu {
            self.mtu = mtu;
            self.tx.set_mtu(mtu);
        }
        if let Some(p) = self.peer.changed(&sh.peer) {
            self.tx.set_peer(*p);
        }
        if announce {
            let addrs = match self.tap.addresses(&self.facts.name) {
                Ok(a) => a,
                Err(e) => {
                    debug!(
                        "cannot list {}'s addresses to announce them: {e}",
                        self.facts.name
                    );
                    return;
                }
            };
            let out = &mut self.out;
            let done = self
                .tx
                .announce(self.facts.mac, &addrs, unix_nanos(), &mut |t| out.send(t));
            count(&sh.counters, done);
        }
    }

    /// Sends a keepalive if one is due at `now`; says when the next one is.
    fn keepalive(&mut self, now: u64) -> Option<u64> {
        send_keepalive(&mut self.tx, &mut self.out, &self.shared.counters, now)
    }
}

/// Sends `tx`'s keepalive through `out` if one is due at `now` (a refused
/// seal counted in `counters`); says when the next one is due. The
/// tunnel's sending thread and the hub's (per spoke) share it.
pub(crate) fn send_keepalive<S: Socket>(
    tx: &mut SendHalf,
    out: &mut Out<S>,
    counters: &crate::stats::Counters,
    now: u64,
) -> Option<u64> {
    let mut buf = [0u8; HEADER_LEN];
    match tx.keepalive(now, &mut buf) {
        KeepaliveDue::Send(dg, to) => {
            out.send_one_of(dg, to, true);
            tx.poll_timeout()
        }
        KeepaliveDue::Refused => {
            counters.seal_errors.fetch_add(1, Relaxed);
            tx.poll_timeout()
        }
        KeepaliveDue::At(t) => Some(t),
        KeepaliveDue::Idle => None,
    }
}
