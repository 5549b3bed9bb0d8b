//! The hub's TAP→UDP thread: waits on every spoke's TAP at once (one
//! epoll instance, with the eventfd that says the spoke set, a key, an
//! address or an MTU changed), drains each readable TAP into that
//! spoke's sending half (at most [`ROUND_FRAMES`] frames a turn, so that
//! one busy spoke cannot starve the others) and sends each batch to the
//! spoke's address; also each spoke's keepalives.
//!
//! A wake-up costs what is ready, not one look per spoke: the epoll
//! instance reports the readable TAPs by slot, and the keepalive
//! deadlines sit in a heap ([`Timers`]). Only a change (the eventfd) makes
//! the thread look at every slot, to take what was published.

use super::timers::Timers;
use super::{HubError, HubShared, Spoke};
use crate::engine::{
    Bound, Drained, Out, Reader, Socket, Tap, TunnelError, send_keepalive, unix_nanos,
};
use crate::noise::SendKey;
use crate::published::Cached;
use crate::session::{Keying, SendHalf, Setup};
use crate::stats::Throttle;
use crate::sys;
use log::warn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::{Duration, Instant};

/// Most frames read from one spoke's TAP before the next spoke's turn.
const ROUND_FRAMES: usize = 256;

/// One spoke as this thread runs it.
struct Slot<T, S> {
    spoke: Arc<Spoke<T>>,
    tx: SendHalf,
    key: Cached<Keying>,
    peer: Cached<Option<SocketAddr>>,
    /// Confidential mode: the session to seal under, as the UDP→TAP
    /// thread publishes it.
    send_key: Cached<Option<Arc<SendKey>>>,
    reader: Reader,
    out: Out<S>,
    mtu: u16,
}

impl<T: Tap, S: Socket> Slot<T, S> {
    fn new(spoke: Arc<Spoke<T>>, socket: &Arc<S>, v6: bool) -> Self {
        // The caches first, the values from them: a key, address or
        // session published while the slot is made (the receiving thread
        // may learn the spoke's address meanwhile) is still seen as a
        // change by the next `follow`. Read the other way round, the value
        // could be older than the version the cache records, and the
        // change lost for good (a new spoke without its address).
        let mut key = Cached::new(&spoke.key);
        let mut peer = Cached::new(&spoke.peer);
        let mut send_key = Cached::new(&spoke.send_key);
        let setup = Setup {
            keying: key.get(&spoke.key).clone(),
            peer: *peer.get(&spoke.peer),
            ..spoke.setup.clone()
        };
        let mut tx = setup.send_half();
        tx.set_send_key(send_key.get(&spoke.send_key).clone());
        Slot {
            tx,
            key,
            peer,
            send_key,
            reader: Reader::new(spoke.offload, true),
            out: Out::bare(socket.clone(), spoke.counters.clone(), v6),
            mtu: setup.mtu,
            spoke,
        }
    }

    /// Takes what the other threads published: key, session, address,
    /// MTU. Says whether the address or the session changed (the
    /// keepalive may be due earlier: the first one to a peer just
    /// learned, or under a session just made).
    fn follow(&mut self) -> bool {
        let s = &*self.spoke;
        if let Some(k) = self.key.changed(&s.key) {
            self.tx.set_keying(k);
        }
        let session = match self.send_key.changed(&s.send_key) {
            Some(k) => {
                self.tx.set_send_key(k.clone());
                true
            }
            None => false,
        };
        let moved = match self.peer.changed(&s.peer) {
            Some(p) => {
                self.tx.set_peer(*p);
                true
            }
            None => false,
        } || session;
        let mtu = s.mtu.load(Relaxed) as u16;
        if mtu != self.mtu {
            self.mtu = mtu;
            self.tx.set_mtu(mtu);
        }
        moved
    }

    /// Sends a keepalive if one is due at `now`; says when the next one is
    /// (confidential mode: none without a session; `follow` re-arms the
    /// timer when one is published).
    fn keepalive(&mut self, now: u64) -> Option<u64> {
        send_keepalive(&mut self.tx, &mut self.out, &self.spoke.counters, now)
    }
}

/// The epoll data of the eventfd (slots are `0..`).
const WAKE: u64 = u64::MAX;

/// Most readiness reports one wait takes; more are reported by the next.
const EVENTS: usize = 256;

/// The thread's state.
pub(super) struct Sender<T, S> {
    socket: Arc<S>,
    shared: Arc<HubShared<T>>,
    list: Cached<Arc<Vec<Arc<Spoke<T>>>>>,
    /// The spokes by slot: a slot's index is its TAP's epoll data and its
    /// keepalive timer, stable while the spoke stays (a removed spoke's
    /// slot is reused by a later one).
    slots: Vec<Option<Slot<T, S>>>,
    /// Free slots.
    free: Vec<usize>,
    epoll: sys::Epoll,
    events: sys::EpollEvents,
    /// Each slot's next keepalive (early is fine, late never: see
    /// [`Timers`]).
    timers: Timers,
    /// The slots the last wait found readable (reused: no allocation per
    /// wake-up).
    ready: Vec<usize>,
    errlog: Throttle,
}

impl<T: Tap, S: Socket> Sender<T, S> {
    pub(super) fn new(socket: Arc<S>, shared: Arc<HubShared<T>>) -> Result<Self, HubError> {
        let err = |e| HubError::Tunnel(TunnelError::Thread(e));
        let epoll = sys::Epoll::new().map_err(err)?;
        epoll.add(shared.wake.as_raw_fd(), WAKE).map_err(err)?;
        let mut s = Sender {
            list: Cached::new(&shared.spokes),
            socket,
            slots: Vec::new(),
            free: Vec::new(),
            epoll,
            events: sys::EpollEvents::with_capacity(EVENTS),
            timers: Timers::new(),
            ready: Vec::with_capacity(EVENTS),
            errlog: Throttle::per_minute(),
            shared,
        };
        // The set published before the thread starts (the cache holds it
        // already, so the loop would not see it as a change).
        let list = s.shared.spokes.get();
        s.rebuild(&list);
        Ok(s)
    }

    /// Follows the published spoke set: the slots of staying spokes are
    /// kept (halves, epoll registration, timer), removed spokes' TAPs leave
    /// the epoll set, new spokes take a free slot. Only on a change
    /// (SIGHUP): it may allocate.
    fn rebuild(&mut self, list: &[Arc<Spoke<T>>]) {
        let v6 = self.shared.local.is_ipv6();
        let ids: std::collections::HashSet<u64> = list.iter().map(|s| s.id).collect();
        let mut have = std::collections::HashSet::new();
        for i in 0..self.slots.len() {
            let Some(slot) = &self.slots[i] else { continue };
            if ids.contains(&slot.spoke.id) {
                have.insert(slot.spoke.id);
                continue;
            }
            // While its fd is open (this slot holds the TAP): an fd the
            // epoll set still had would be reported under a reused slot.
            if let Err(e) = self.epoll.remove(slot.spoke.tap.fd()) {
                warn!(
                    "spoke {}: cannot stop waiting on its TAP: {e}",
                    slot.spoke.name
                );
            }
            self.slots[i] = None;
            self.timers.disarm(i);
            self.free.push(i);
        }
        for s in list.iter().filter(|s| !have.contains(&s.id)) {
            let i = self.free.pop().unwrap_or_else(|| {
                self.slots.push(None);
                self.slots.len() - 1
            });
            if let Err(e) = self.epoll.add(s.tap.fd(), i as u64) {
                // Not fatal for the others; this spoke's frames wait.
                warn!(
                    "spoke {}: cannot wait on its TAP: {e}; its frames are not sent",
                    s.name
                );
            }
            let slot = Slot::new(s.clone(), &self.socket, v6);
            if let Some(at) = slot.tx.poll_timeout() {
                self.timers.arm(i, at);
            }
            self.slots[i] = Some(slot);
        }
    }

    /// Takes what was published: the spoke set, then every slot's key,
    /// address and MTU (a look at each slot: only after the eventfd).
    fn changed(&mut self) {
        self.shared.wake.clear();
        if let Some(list) = self.list.changed(&self.shared.spokes) {
            let list = list.clone();
            self.rebuild(&list);
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(slot) = slot
                && slot.follow()
            {
                match slot.tx.poll_timeout() {
                    Some(at) => self.timers.arm(i, at),
                    None => self.timers.disarm(i),
                }
            }
        }
    }

    /// Sends the keepalives due at `now`; re-arms each slot due (its half
    /// says when next, or that nothing was due: data went meanwhile).
    fn keepalives(&mut self, now: u64) {
        while let Some(i) = self.timers.pop_due(now) {
            let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if let Some(at) = slot.keepalive(now) {
                // Never at or before `now` again within this pass.
                self.timers.arm(i, at.max(now + 1));
            }
        }
    }

    /// Runs until the hub stops.
    pub(super) fn run(mut self) {
        // Its real-time bursts' bound (`--rt-priority`), made on this thread.
        let mut bound = Bound::here(unix_nanos());
        while !self.shared.stop.load(Relaxed) {
            let now = unix_nanos();
            self.keepalives(now);
            let timeout = self
                .timers
                .next()
                .map(|at| Duration::from_nanos(at.saturating_sub(now)));
            match self.epoll.wait(&mut self.events, timeout) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if let Some(n) = self.errlog.note(1, Instant::now()) {
                        warn!("TAP wait: {e} ({n} errors)");
                    }
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
            self.ready.clear();
            let mut woken = false;
            for data in self.events.ready() {
                if data == WAKE {
                    woken = true;
                } else {
                    self.ready.push(data as usize);
                }
            }
            if woken {
                // First: a slot reported ready may be one removed now
                // (skipped below) or reused by a new spoke (whose TAP is
                // only read once more: it is non-blocking).
                self.changed();
            }
            // Whether a TAP had more than a turn's frames: the thread's
            // input was not found empty.
            let mut more = false;
            for &i in &self.ready {
                let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
                    continue;
                };
                let s = &*slot.spoke;
                // What is left after a turn is reported again by the next
                // wait (level-triggered), after the other spokes' turns.
                let (why, _) = slot.reader.drain(
                    &s.tap,
                    &mut slot.tx,
                    &mut slot.out,
                    &s.counters,
                    ROUND_FRAMES,
                );
                more |= why == Drained::Limit;
            }
            bound.at(unix_nanos(), !more, &self.shared.rt_cut);
        }
    }
}
