//! The hub's UDP→TAP thread: receives datagrams (GRO runs), finds the
//! spoke by the source address (its own table, [`Demux`]), has that
//! spoke's receiving half check them and writes the frames to that
//! spoke's TAP. A datagram from an address no spoke has (or that the
//! spoke at it cannot open) is tried against the other spokes' keys,
//! within the trial [`Budget`]: so a spoke that roams or whose NAT
//! rebinds is found, and a spoke's key never opens another's traffic
//! (each spoke's own replay window and freshness check decide).

use super::{Budget, Demux, HubShared, Spoke, TRIALS_PER_SECOND};
use crate::addr;
use crate::engine::{Socket, Tap, recv_failed, unix_nanos};
use crate::peer::PeerUpdate;
use crate::published::Cached;
use crate::rx::Tally;
use crate::session::{Keying, RecvHalf, Setup};
use crate::stats::{DropReason, Throttle};
use log::{info, warn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// Receive buffer: larger than any UDP payload.
const RECV_BUF: usize = 65536;

/// One spoke as this thread runs it.
struct Slot<T> {
    spoke: Arc<Spoke<T>>,
    rx: RecvHalf,
    key: Cached<Keying>,
}

impl<T: Tap> Slot<T> {
    fn new(spoke: Arc<Spoke<T>>) -> Slot<T> {
        // The key in use now (a rotation may have come before this thread
        // saw the spoke); the address is learned, never fixed: the state
        // file's is only where the sending half starts.
        let setup = Setup {
            keying: spoke.key.get(),
            peer: None,
            ..spoke.setup.clone()
        };
        Slot {
            rx: setup.recv_half(),
            key: Cached::new(&spoke.key),
            spoke,
        }
    }
}

/// The thread's state; everything lives as long as the thread.
pub(super) struct Receiver<T, S> {
    socket: Arc<S>,
    shared: Arc<HubShared<T>>,
    list: Cached<Arc<Vec<Arc<Spoke<T>>>>>,
    slots: Vec<Slot<T>>,
    demux: Demux,
    budget: Budget,
    buf: Vec<u8>,
    /// A copy of the datagram for each trial: a failed AEAD open may have
    /// overwritten the bytes after the header.
    scratch: Vec<u8>,
    /// In the confidential mode, addresses where a run failed its spoke's
    /// key: runs from there are saved before the spoke's half opens them,
    /// so that they can still be tried elsewhere (at most one per spoke).
    suspects: std::collections::HashSet<SocketAddr>,
    saved: Vec<u8>,
    errlog: Throttle,
    taplog: Throttle,
    budgetlog: Throttle,
    unknownlog: Throttle,
    /// The outer ECN field of the receive being handled (RFC 6040).
    ecn: crate::ecn::Ecn,
}

/// What trying a run against the spokes' keys found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trial {
    /// A spoke's key opened it (its half delivered or refused it).
    Owned,
    /// No key opened it.
    NoKey,
    /// The budget was spent before every key was tried.
    Untried,
}

/// Whether a run failed only for want of a key that opens it.
fn unopened(t: &Tally) -> bool {
    !t.valid()
        && (t.drops[DropReason::BadMac as usize] > 0
            || t.drops[DropReason::UnknownSession as usize] > 0
            || t.drops[DropReason::WrongMode as usize] > 0)
}

impl<T: Tap, S: Socket> Receiver<T, S> {
    pub(super) fn new(socket: Arc<S>, shared: Arc<HubShared<T>>) -> Self {
        let mut r = Receiver {
            list: Cached::new(&shared.spokes),
            socket,
            slots: Vec::new(),
            demux: Demux::default(),
            budget: Budget::new(TRIALS_PER_SECOND),
            buf: vec![0u8; RECV_BUF],
            scratch: vec![0u8; RECV_BUF],
            suspects: std::collections::HashSet::new(),
            saved: vec![0u8; RECV_BUF],
            errlog: Throttle::per_minute(),
            taplog: Throttle::per_minute(),
            budgetlog: Throttle::per_minute(),
            unknownlog: Throttle::per_minute(),
            ecn: crate::ecn::Ecn::NotEct,
            shared,
        };
        // The set published before the thread starts (the cache holds it
        // already, so `follow` would not see it as a change).
        let list = r.shared.spokes.get();
        r.rebuild(&list);
        r
    }

    /// Follows the published spoke set: keeps the halves of the spokes
    /// that stay, makes new ones for new spokes, drops the removed ones.
    fn follow(&mut self) {
        if let Some(list) = self.list.changed(&self.shared.spokes) {
            let list = list.clone();
            self.rebuild(&list);
        }
    }

    fn rebuild(&mut self, list: &[Arc<Spoke<T>>]) {
        let mut old: Vec<Option<Slot<T>>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(Some)
            .collect();
        let mut addrs = Vec::new();
        for s in list {
            let kept = old
                .iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| o.spoke.id == s.id))
                .and_then(Option::take);
            let slot = kept.unwrap_or_else(|| Slot::new(s.clone()));
            // Where the spoke is: as its half learned it, else the state
            // file's address (tried first, still checked under its key).
            addrs.push(slot.rx.peer().or(s.peer.get()));
            self.slots.push(slot);
        }
        self.demux = Demux::new(addrs);
        self.suspects.clear();
    }

    /// Runs until the hub stops.
    pub(super) fn run(mut self) {
        while !self.shared.stop.load(Relaxed) {
            let r = Socket::recv(&*self.socket, &mut self.buf);
            self.follow();
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    recv_failed(&e, &mut self.errlog);
                    continue;
                }
            };
            let Some(from) = r.from else { continue };
            if r.truncated {
                self.shared.unmatched.fetch_add(1, Relaxed);
                continue;
            }
            let src = addr::canonical(from);
            self.ecn = r.ecn;
            self.handle(r.len, r.segment, src, unix_nanos());
        }
    }

    /// Gives one receive to the spoke at `src`, else to the spoke whose
    /// key opens it (within the budget).
    fn handle(&mut self, len: usize, segment: Option<usize>, src: SocketAddr, now: u64) {
        let known = self.demux.get(&src);
        if let Some(i) = known {
            // The HMAC wire leaves a datagram it cannot open untouched; a
            // failed AEAD open may not (see `scratch`): there, only runs
            // from an address already seen failing are saved first (a
            // copy per run on the fast path otherwise).
            let aead = self.shared.cipher.is_some();
            let saved = aead && self.suspects.contains(&src);
            if saved {
                self.saved[..len].copy_from_slice(&self.buf[..len]);
            }
            let t = self.receive(i, false, len, segment, src, now);
            if !unopened(&t) {
                if saved {
                    self.suspects.remove(&src);
                }
                self.account(i, &t, src, now);
                return;
            }
            if aead && !saved {
                if self.suspects.len() < self.slots.len() {
                    self.suspects.insert(src);
                }
                self.mismatch(i, &t);
                return;
            }
            if saved {
                self.buf[..len].copy_from_slice(&self.saved[..len]);
            }
            if self.trial(Some(i), len, segment, src, now) != Trial::Owned {
                self.mismatch(i, &t);
            }
            return;
        }
        match self.trial(None, len, segment, src, now) {
            Trial::Owned => {}
            Trial::Untried => {
                self.shared.unmatched.fetch_add(1, Relaxed);
            }
            Trial::NoKey => {
                self.shared.unmatched.fetch_add(1, Relaxed);
                // Said here, where the address is known: no spoke has it,
                // so no spoke can be named.
                if let Some(n) = self.unknownlog.note(1, Instant::now()) {
                    warn!(
                        "datagrams from {src}, an address no spoke has, open under no spoke's key ({n} dropped): a spoke whose key file differs from its NAME.key in {}, one with no key file there, one running another --cipher, or junk; compare that spoke's key file with its NAME.key there",
                        self.shared.dir.display()
                    );
                }
            }
        }
    }

    /// Counts a run from spoke `i`'s address that its key did not open
    /// (nor any other's): said by the main thread, naming the spoke.
    fn mismatch(&mut self, i: usize, t: &Tally) {
        let s = &self.slots[i].spoke;
        for r in DropReason::ALL {
            s.counters.drop_n(r, t.drops[r as usize]);
        }
        s.auth_failed.fetch_add(1, Relaxed);
    }

    /// Tries the run against each spoke but `skip` (already tried), within
    /// the budget; the first whose key opens it owns it: its half delivers
    /// it, or refuses it (a replay, a stale timestamp), counted as that
    /// spoke's drop, with no address moved.
    fn trial(
        &mut self,
        skip: Option<usize>,
        len: usize,
        segment: Option<usize>,
        src: SocketAddr,
        now: u64,
    ) -> Trial {
        for i in 0..self.slots.len() {
            if Some(i) == skip {
                continue;
            }
            if !self.budget.take(now) {
                self.shared.trials_refused.fetch_add(1, Relaxed);
                if let Some(n) = self.budgetlog.note(1, Instant::now()) {
                    warn!(
                        "trial budget spent ({TRIALS_PER_SECOND} verifications a second): datagrams from unknown addresses dropped untried ({n} since the last such line); many spokes roaming at once, or junk flooding the port"
                    );
                }
                return Trial::Untried;
            }
            self.shared.trials.fetch_add(1, Relaxed);
            self.scratch[..len].copy_from_slice(&self.buf[..len]);
            let t = self.receive(i, true, len, segment, src, now);
            if !unopened(&t) {
                // Valid, or authentic under this spoke's key but refused
                // by its own checks (its replay window, its freshness).
                self.account(i, &t, src, now);
                return Trial::Owned;
            }
        }
        Trial::NoKey
    }

    /// Spoke `i`'s receiving half checks the run (from `scratch` when
    /// `trial`), writing what it delivers to the spoke's TAP.
    fn receive(
        &mut self,
        i: usize,
        trial: bool,
        len: usize,
        segment: Option<usize>,
        src: SocketAddr,
        now: u64,
    ) -> Tally {
        let slot = &mut self.slots[i];
        if let Some(k) = slot.key.changed(&slot.spoke.key) {
            // The old key's grace runs from the rotation (SIGHUP).
            slot.rx
                .rotate(k, slot.spoke.key_since_ns.load(Relaxed).min(now));
        }
        let (spoke, taplog) = (&*slot.spoke, &mut self.taplog);
        let mut write = |b: &[u8]| {
            if let Err(e) = spoke.tap.write(b) {
                spoke.counters.tap_errors.fetch_add(1, Relaxed);
                if let Some(n) = taplog.note(1, Instant::now()) {
                    warn!(
                        "spoke {}: TAP write of {} bytes: {e} ({n} failed writes)",
                        spoke.name,
                        b.len()
                    );
                }
            }
        };
        let buf = if trial {
            &mut self.scratch[..len]
        } else {
            &mut self.buf[..len]
        };
        slot.rx
            .receive(buf, segment, self.ecn, src, now, &mut write)
    }

    /// Counts what spoke `i`'s half did with a run from `src`, and follows
    /// its address.
    fn account(&mut self, i: usize, t: &Tally, src: SocketAddr, now: u64) {
        let s = &self.slots[i].spoke;
        t.add_to(&s.counters);
        if t.valid() {
            s.last_valid_ns.store(now, Relaxed);
        }
        if let Some(off) = t.offset_ns {
            s.offset_ns.store(off, Relaxed);
            s.has_offset.store(true, Relaxed);
        }
        let to = match t.peer {
            PeerUpdate::Unchanged => {
                // Valid from an address the table did not give it (the
                // state file's, or taken by another): it is here.
                if t.valid() && self.demux.addr_of(i) != Some(src) && s.peer.get() == Some(src) {
                    self.demux.assign(i, src);
                }
                return;
            }
            PeerUpdate::Learned(p) => {
                info!("spoke {}: learned {p}", s.name);
                p
            }
            PeerUpdate::Moved { from, to } => {
                info!("spoke {}: moved from {from} to {to}", s.name);
                to
            }
        };
        self.demux.assign(i, to);
        self.suspects.remove(&to);
        s.peer.set(Some(to));
        self.shared.wake.signal();
    }
}
