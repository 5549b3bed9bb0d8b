//! The UDP→TAP thread: receives datagrams (GRO runs when the kernel
//! coalesces) into its window (`ahead.rs`: with `--fq` a few runs ahead,
//! a sparse flow's datagram first; waiting as `poll.rs` says), has its
//! [`RecvHalf`] check each one, writes the frames to
//! the TAP (coalesced runs as super-frames), then, holding the TAP read
//! role if it is free (`role.rs`), sends what the kernel queued on the TAP
//! in answer with its own sending half. It runs the AQM on its socket's
//! queue (`aqm.rs`: the kernel's arrival stamps, CoDel), whose signals its
//! receiving half puts on the next frame. It decides the peer: a peer
//! learned or moved is published for the TAP→UDP thread, which is woken.

use super::io::{Socket, Tap, recv_failed};
use super::name::Redirect;
use super::out::Out;
use super::role::Role;
use super::send::Reader;
use super::watch::RecvWatch;
use super::{Keying, Shared, unix_nanos};
use crate::addr;
use crate::ecn::Ecn;
use crate::peer::PeerUpdate;
use crate::published::Cached;
use crate::session::{RecvHalf, SendHalf};
use crate::stats::{DropReason, Throttle};
use log::{debug, info, warn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::time::Instant;

/// Receive buffer: larger than any UDP payload, so nothing is ever truncated.
pub(super) const RECV_BUF: usize = 65536;
/// Most frames the UDP→TAP thread reads from the TAP after its writes,
/// before it goes back to its socket.
pub(super) const REPLY_FRAMES: usize = 64;
/// After a look for replies found none, the UDP→TAP thread does not look
/// again for this long (ns).
const REPLY_LOOK_PAUSE_NS: u64 = 1_000_000;

/// The receiving thread's state; everything lives as long as the thread.
pub(super) struct Receiver<T, S> {
    pub tap: Arc<T>,
    pub socket: Arc<S>,
    pub shared: Arc<Shared>,
    pub key: Cached<Keying>,
    /// The key as the replies' sending half last took it: looked at just
    /// before each drain, so that a frame read after a rotation is sealed
    /// with the new key even when no datagram came in between.
    pub reply_key: Cached<Keying>,
    pub rx: RecvHalf,
    /// The replies' sending half, and how it reads the TAP and sends;
    /// `None` when the TAP's reads block (no replies sent from here).
    pub replies: Option<(SendHalf, Reader, Out<S>)>,
    pub role: Arc<Role>,
    /// Runs received and not yet handled (`ahead.rs`).
    pub ahead: super::ahead::Ahead,
    /// With flow queueing (`--fq`, the HMAC wire), where a datagram's
    /// frame starts: read before the checks (sealed frames cannot be).
    pub fq_offset: Option<usize>,
    /// One warn line a minute each: receive errors, TAP write errors.
    pub errlog: Throttle,
    pub taplog: Throttle,
    /// The debug line about single drops (the warn lines are `watch`'s).
    pub droplog: Throttle,
    pub watch: RecvWatch,
    /// A new address from the peer's name (see `name.rs`).
    pub redirect: Cached<Option<Redirect>>,
    /// The peer is the state file's address and was not heard yet (a copy
    /// of `Shared::peer_from_state`, which this thread alone clears).
    pub from_state: bool,
    /// Confidential mode: `TAPTUN_KEYLOG`'s file, if set.
    pub keylog: Option<std::fs::File>,
    /// The socket is IPv6 (addresses to send to are mapped).
    pub v6: bool,
    /// The confidential mode (its timers run on `CLOCK_BOOTTIME`).
    pub confidential: bool,
    /// The sessions' facts as last published for the status views.
    pub status_shown: crate::noise::SessionStatus,
    /// The last receive took or refused a handshake message (the status
    /// views' counters changed).
    pub handshake_seen: bool,
    /// The socket queue's sojourn times and AQM.
    pub aqm: crate::aqm::Aqm,
    /// How it waits for datagrams (`poll.rs`: spinning after an ask).
    pub poller: super::poll::Poller,
}

impl<T: Tap, S: Socket> Receiver<T, S> {
    /// Runs until the tunnel stops.
    pub(super) fn run(mut self) {
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut look_after = 0u64;
        // Its real-time bursts' bound (`bound.rs`), made on this thread.
        let mut bound = super::bound::Bound::here(unix_nanos());
        while !self.shared.stop.load(Relaxed) {
            self.follow_name();
            self.handshake(unix_nanos());
            // Whether the socket is likely to hold more: not right after a
            // receive that had to wait for its datagram (then the queue was
            // empty a moment ago, and a look would cost a system call for
            // nothing).
            let mut look_ahead = true;
            // Whether a look at the socket found it empty (a wait, or a
            // look ahead that found nothing): the end of a burst.
            let mut found_empty = false;
            if self.ahead.is_empty() {
                let asked = unix_nanos();
                let (socket, asks) = (&*self.socket, &self.shared.asks);
                let Some(buf) = self.ahead.free() else {
                    continue;
                };
                match self.poller.next(socket, asks, buf, &self.shared.counters) {
                    Ok(r) => {
                        let took = unix_nanos().saturating_sub(asked);
                        look_ahead = crate::aqm::found_queued(asked, took, r.arrived_ns);
                        found_empty = !look_ahead;
                        self.got(&r, took);
                    }
                    Err(e) => {
                        recv_failed(&e, &mut self.errlog);
                        continue;
                    }
                }
            }
            // What else the socket holds, up to the window's size (none
            // without flow queueing: its window is one run).
            while look_ahead && let Some(buf) = self.ahead.free() {
                match self.socket.try_recv(buf) {
                    Ok(r) => self.got(&r, 0),
                    Err(e) => {
                        if e.kind() != std::io::ErrorKind::WouldBlock {
                            recv_failed(&e, &mut self.errlog);
                        }
                        found_empty = true;
                        break;
                    }
                }
            }
            let Some(unit) = self.ahead.next(self.fq_offset) else {
                continue;
            };
            let now = unix_nanos();
            bound.at(now, found_empty, &self.shared.counters.rt_cut);
            if let Some(k) = self.key.changed(&self.shared.key) {
                // The old key's grace runs from the rotation (SIGHUP), not
                // from this first datagram after it. (Confidential mode:
                // the sessions' own clock, from now.)
                let at = match self.confidential {
                    true => crate::sys::boottime_ns(),
                    false => self.shared.key_since_ns.load(Relaxed).min(now),
                };
                self.rx.rotate(k, at);
            }
            // The AQM sees each unit as a dequeue: how long its receive
            // waited (a wait is no queue), and how long it was queued.
            let asked = now.saturating_sub(unit.took_ns);
            let (signal, second) = self.aqm.on_receive(asked, now, unit.arrived_ns);
            if signal {
                self.rx.signal_congestion();
            }
            if let Some(s) = second {
                self.shared.counters.queue.set(s);
            }
            if unit.ahead {
                self.shared.counters.fq_ahead.fetch_add(1, Relaxed);
            }
            let src = unit.from.unwrap_or(unknown);
            let mut buf = self.ahead.take_buf(&unit);
            let wrote = self.handle(
                &mut buf[unit.range.clone()],
                unit.segment,
                unit.ecn,
                src,
                now,
            );
            self.ahead.done(&unit, buf);
            self.handshake(now);
            // What the kernel queued on the TAP in answer to these frames
            // goes out now, unless the TAP→UDP thread is already at it. A
            // look that finds nothing costs a system call, so after one
            // there is no other for a millisecond: a one-way stream pays one
            // per millisecond, not one per datagram, while TCP (ACKs) and
            // anything slower than 1 kHz (a ping) keep the fast path.
            if wrote && now >= look_after && self.reply() == Some(0) {
                look_after = now + REPLY_LOOK_PAUSE_NS;
            }
        }
    }

    /// Takes the address the peer's name now resolves to, unless a valid
    /// datagram came since the peer was judged silent: the address the
    /// peer talks from wins. (With a name, the socket's receive times out
    /// every second, so this runs while the peer is silent.)
    fn follow_name(&mut self) {
        let Some(Some(r)) = self.redirect.changed(&self.shared.redirect) else {
            return;
        };
        let r = r.clone();
        // The main thread may hand the same answer again before this one
        // was taken.
        if self.rx.peer() == Some(r.to) {
            return;
        }
        let name = self.shared.peer_name.as_deref().unwrap_or("");
        if self.shared.last_valid_ns.load(Relaxed) != r.heard {
            debug!(
                "peer {name} resolves to {}, but the peer spoke meanwhile: its address stays",
                r.to
            );
            return;
        }
        match self.rx.peer() {
            Some(was) => info!("peer {name} now resolves to {} (was {was})", r.to),
            None => info!("peer {name} resolves to {}", r.to),
        }
        self.rx.set_peer(r.to);
        self.shared.peer_learned.store(false, Relaxed);
        // A new host, maybe: announce the TAP to it, as to a learned peer.
        self.publish(r.to, true);
    }

    /// The receiving half's clock at wall-clock `now`: the wall clock on
    /// the HMAC wire (its timestamps are wall-clock times); in the
    /// confidential mode `CLOCK_BOOTTIME`, which no one sets.
    fn proto_now(&self, now: u64) -> u64 {
        match self.confidential {
            true => crate::sys::boottime_ns(),
            false => now,
        }
    }

    /// Confidential mode: runs the handshake timers, sends the handshake
    /// messages waiting, and hands a new session to the sending halves.
    fn handshake(&mut self, now: u64) {
        if !self.confidential {
            return;
        }
        let proto = self.proto_now(now);
        // The common case, after a run of transport datagrams: no timer
        // due, nothing to send, no new session; a few comparisons.
        let due = self.rx.poll_timeout().is_some_and(|t| t <= proto);
        let touched = std::mem::take(&mut self.handshake_seen);
        if !due && !touched && !self.rx.handshake_news() {
            return;
        }
        let before = self.rx.session_status().unwrap_or_default();
        self.rx.poll(proto);
        let (socket, counters) = (&*self.socket, &self.shared.counters);
        let v6 = self.v6;
        self.rx.outbox().drain(|dg, to| {
            if let Err(e) = socket.send_to(dg, addr::for_socket(to, v6)) {
                counters.send_errors.fetch_add(1, Relaxed);
                debug!("handshake message to {to}: {e}");
            }
        });
        if let Some(k) = self.rx.take_send_key() {
            match &k {
                Some(k) => debug!(
                    "handshake: sending under session {:08x} (peer's index {:08x})",
                    k.local(),
                    k.remote()
                ),
                None => debug!("handshake: no session to send under"),
            }
            if let Some((tx, ..)) = self.replies.as_mut() {
                tx.set_send_key(k.clone());
            }
            self.shared.send_key.set(k);
            self.role.wake.signal();
        }
        let after = self.rx.session_status().unwrap_or_default();
        if after.initiations > before.initiations {
            debug!("handshake: initiation sent to {:?}", self.rx.peer());
        }
        if after != self.status_shown
            && let Ok(mut s) = self.shared.session.lock()
        {
            self.status_shown = after;
            // To the wall clock, for the status views.
            let mut st = after;
            let wall = |t: u64| now.saturating_sub(proto.saturating_sub(t));
            st.since_ns = st.since_ns.map(wall);
            st.last_handshake_ns = st.last_handshake_ns.map(wall);
            *s = Some(st);
        }
        let lines = self.rx.take_keylog();
        if let Some(f) = self.keylog.as_mut() {
            use std::io::Write;
            for l in lines {
                let _ = writeln!(f, "{l}");
            }
        }
    }

    /// Publishes `p` as the peer for the sending halves, asks the TAP→UDP
    /// thread to announce the TAP to it if `announce`, and wakes that
    /// thread. The peer first: a thread that saw the ask before the new
    /// peer would announce to the old one.
    fn publish(&mut self, p: SocketAddr, announce: bool) {
        self.shared.peer.set(Some(p));
        if let Some((tx, ..)) = self.replies.as_mut() {
            tx.set_peer(Some(p));
        }
        if announce {
            self.shared.announce.store(true, Release);
        }
        self.role.wake.signal();
    }

    /// Sends the replies the TAP holds, if the TAP read role is free; says
    /// how many frames it read (`None`: it did not look).
    fn reply(&mut self) -> Option<usize> {
        let (tx, reader, out) = self.replies.as_mut()?;
        let h = self.role.try_take_replier()?;
        tx.take_over(h);
        if let Some(k) = self.reply_key.changed(&self.shared.key) {
            tx.set_keying(k);
        }
        let mtu = self.shared.mtu.load(Relaxed) as u16;
        tx.set_mtu(mtu);
        let (_, n) = reader.drain(&*self.tap, tx, out, &self.shared.counters, REPLY_FRAMES);
        self.role.release_replier(tx.handoff());
        Some(n)
    }

    /// A run received: into the window, unless truncated (counted).
    fn got(&mut self, r: &crate::sys::Received, took_ns: u64) {
        match r.truncated {
            true => self.shared.counters.drop_n(DropReason::Truncated, 1),
            false => self.ahead.push(r, took_ns),
        }
    }

    /// Checks the datagrams in `buf`, writes their frames to the TAP and
    /// counts everything. Returns whether any frame was written.
    fn handle(
        &mut self,
        buf: &mut [u8],
        segment: Option<usize>,
        outer: Ecn,
        src: SocketAddr,
        now: u64,
    ) -> bool {
        let (tap, shared, taplog) = (&*self.tap, &*self.shared, &mut self.taplog);
        let mut write = |b: &[u8]| {
            if let Err(e) = tap.write(b) {
                shared.counters.tap_errors.fetch_add(1, Relaxed);
                if let Some(n) = taplog.note(1, Instant::now()) {
                    warn!("TAP write of {} bytes: {e} ({n} failed writes)", b.len());
                }
            }
        };
        let proto = match self.confidential {
            true => crate::sys::boottime_ns(),
            false => now,
        };
        let t = self.rx.receive(buf, segment, outer, src, proto, &mut write);
        t.add_to(&shared.counters);
        self.handshake_seen |= t.handshakes > 0 || t.drops[DropReason::Handshake as usize] > 0;
        if t.valid() {
            shared.last_valid_ns.store(now, Relaxed);
        }
        if let Some(off) = t.offset_ns {
            shared.peer_offset_ns.store(off, Relaxed);
        }
        // A learned peer (the state file's, too, was never heard) gets the
        // TAP announced by the TAP→UDP thread; a moved one knows it.
        let learned = match t.peer {
            PeerUpdate::Unchanged => None,
            PeerUpdate::Learned(p) => {
                info!("peer learned: {p}");
                Some((p, true))
            }
            PeerUpdate::Moved { from, to } if self.from_state => {
                info!("peer learned: {to} (the state file said {from})");
                Some((to, true))
            }
            PeerUpdate::Moved { from, to } => {
                info!("peer moved from {from} to {to}");
                Some((to, false))
            }
        };
        // The first valid datagram from the peer ends the state file's
        // rule: the peer is learned from then on, as without one.
        if self.from_state && t.valid() && self.rx.peer() == Some(addr::canonical(src)) {
            self.from_state = false;
            shared.peer_from_state.store(false, Relaxed);
            shared.peer_learned.store(true, Relaxed);
            if learned.is_none() {
                info!(
                    "peer heard at {} (the state file's address)",
                    addr::canonical(src)
                );
            }
        }
        if let Some((p, announce)) = learned {
            shared.peer_learned.store(true, Relaxed);
            self.publish(p, announce);
        }
        self.watch.saw(&t, src, self.rx.peer());
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
