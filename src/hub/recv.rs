//! The hub's UDP→TAP thread: receives datagrams (GRO runs), finds the
//! spoke by the source address (its own table, [`Demux`]), has that
//! spoke's receiving half check them and writes the frames to that
//! spoke's TAP. A datagram from an address no spoke has (or that the
//! spoke at it cannot open) is tried against the other spokes' keys,
//! within the trial [`Budget`]: so a spoke that roams or whose NAT
//! rebinds is found, and a spoke's key never opens another's traffic
//! (each spoke's own replay window and freshness check decide). The
//! socket's queue, shared by every spoke, has one AQM (`aqm.rs`); its
//! signal goes to the spoke whose datagram is opened next.
//!
//! In the confidential mode a transport datagram names the session index
//! its receiver chose, and a handshake response the index of the
//! initiation it answers: the thread keeps an index → spoke table (each
//! spoke's indices, refreshed after each of its handshake events) and
//! finds the spoke of such a datagram in O(1), wherever it comes from (a
//! spoke that moved is followed at its first datagram from the new
//! address, no trial; an index two spokes drew, rare, is tried under
//! both). Only initiations, which name no index in the
//! clear, are tried against the spokes' keys. The thread also runs each
//! spoke's handshake timers (a heap of deadlines; the socket's 1 s
//! receive timeout bounds their lateness), sends the handshake messages
//! each spoke's half leaves in its outbox, and publishes a spoke's new
//! session for the TAP→UDP thread.

use super::demux::{Holders, Indices};
use super::timers::Timers;
use super::{Budget, Demux, HubShared, Spoke, TRIALS_PER_SECOND};
use crate::addr;
use crate::engine::{Bound, Socket, Tap, recv_failed, unix_nanos};
use crate::noise::SessionStatus;
use crate::noise::wire::{self, Kind};
use crate::peer::PeerUpdate;
use crate::published::Cached;
use crate::rx::Tally;
use crate::session::{Keying, RecvHalf, Setup};
use crate::stats::{DropReason, Throttle};
use log::{debug, info, warn};
use std::net::SocketAddr;
use std::ops::Range;
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
    /// Confidential mode: this spoke's indices as the index table has them.
    indices: [Option<u32>; crate::noise::INDICES],
    /// Confidential mode: the session facts last stored for the status views.
    status: Option<SessionStatus>,
}

impl<T: Tap> Slot<T> {
    fn new(spoke: Arc<Spoke<T>>, keylog: bool) -> Slot<T> {
        // The key in use now (a rotation may have come before this thread
        // saw the spoke); the address is learned, never fixed: the state
        // file's is only where the sending half starts.
        // The cache first, the key from it: a rotation meanwhile is still
        // seen as one (see the sending thread's `Slot::new`).
        let mut key = Cached::new(&spoke.key);
        let setup = Setup {
            keying: key.get(&spoke.key).clone(),
            peer: None,
            ..spoke.setup.clone()
        };
        let mut rx = setup.recv_half();
        if setup.keying.cipher().is_some() {
            // Confidential mode: the state file's address is where the
            // hub initiates a session at once (a restarted hub need not
            // wait for the spoke's renewal); still learned from there on.
            if let Some(p) = spoke.peer.get() {
                rx.set_peer(p);
            }
            if keylog {
                rx = rx.with_keylog();
            }
        }
        Slot {
            rx,
            key,
            indices: [None; crate::noise::INDICES],
            status: None,
            spoke,
        }
    }
}

/// Where the confidential mode sends a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The spoke whose session (or initiation) has the index it names.
    Spoke(usize),
    /// It names an index no spoke has.
    NoIndex,
    /// It names an index several spokes drew (rare): tried under each.
    Shared(u32),
    /// It names none (an initiation, or another mode's datagram): the
    /// spoke at its address, then the others' keys.
    Trial,
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
    /// A copy of the datagram for each trial, so that no spoke's failed
    /// check can touch what the next one sees (neither the HMAC check nor
    /// a handshake read writes into what it refuses today; transport
    /// datagrams, which an AEAD open may overwrite, are never tried).
    scratch: Vec<u8>,
    errlog: Throttle,
    taplog: Throttle,
    budgetlog: Throttle,
    unknownlog: Throttle,
    /// Confidential mode: the debug line about indices no spoke has.
    indexlog: Throttle,
    /// Confidential mode: session index → slot (see the module
    /// documentation); each slot's entries are its `indices`.
    by_index: Indices,
    /// Confidential mode: each slot's next handshake timer.
    timers: Timers,
    /// Confidential mode: `TAPTUN_KEYLOG`'s file, if set.
    keylog: Option<std::fs::File>,
    /// The key rotations seen (`HubShared::key_epoch`).
    key_epoch: u64,
    /// The socket is IPv6 (addresses to send to are mapped).
    v6: bool,
    /// The outer ECN field of the receive being handled (RFC 6040).
    ecn: crate::ecn::Ecn,
    /// The socket queue's sojourn times and AQM (one queue for all spokes).
    aqm: crate::aqm::Aqm,
    /// The AQM asked for a signal on this receive, not yet handed to a
    /// spoke (the spoke its datagrams are opened for takes it).
    congested: bool,
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

/// Confidential mode: whether a datagram that names no index (an
/// initiation) failed only for want of a key that opens it.
fn unopened_noise(t: &Tally) -> bool {
    !t.valid()
        && t.handshakes == 0
        && (t.bad_handshake
            || t.drops[DropReason::BadMac as usize] > 0
            || t.drops[DropReason::WrongMode as usize] > 0)
}

/// `TAPTUN_KEYLOG`'s file, opened to append, in the confidential mode.
fn open_keylog(confidential: bool) -> Option<std::fs::File> {
    let p = std::env::var_os("TAPTUN_KEYLOG").filter(|_| confidential)?;
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
    {
        Ok(f) => {
            warn!(
                "TAPTUN_KEYLOG: writing every spoke session's keys to {}; whoever reads it reads the traffic",
                std::path::Path::new(&p).display()
            );
            Some(f)
        }
        Err(e) => {
            warn!("TAPTUN_KEYLOG {}: {e}", std::path::Path::new(&p).display());
            None
        }
    }
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
            errlog: Throttle::per_minute(),
            taplog: Throttle::per_minute(),
            budgetlog: Throttle::per_minute(),
            unknownlog: Throttle::per_minute(),
            indexlog: Throttle::per_minute(),
            by_index: Indices::default(),
            timers: Timers::new(),
            keylog: open_keylog(shared.cipher.is_some()),
            key_epoch: shared.key_epoch.load(Relaxed),
            v6: shared.local.is_ipv6(),
            ecn: crate::ecn::Ecn::NotEct,
            aqm: crate::aqm::Aqm::new(shared.aqm),
            congested: false,
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
        // A rotated key (SIGHUP): taken at once, so that a confidential
        // spoke's handshake under it starts now.
        let epoch = self.shared.key_epoch.load(Relaxed);
        if epoch != self.key_epoch {
            self.key_epoch = epoch;
            let now = match self.shared.cipher {
                Some(_) => crate::sys::boottime_ns(),
                None => unix_nanos(),
            };
            for i in 0..self.slots.len() {
                if self.rotate(i, now) && self.shared.cipher.is_some() {
                    self.service(i, now);
                }
            }
        }
    }

    /// Takes spoke `i`'s key if it was rotated; says whether it was.
    fn rotate(&mut self, i: usize, now: u64) -> bool {
        let slot = &mut self.slots[i];
        let Some(k) = slot.key.changed(&slot.spoke.key) else {
            return false;
        };
        // The old key's grace runs from the rotation (SIGHUP); the
        // confidential mode's clock is not the wall clock.
        let at = match self.shared.cipher {
            Some(_) => now,
            None => slot.spoke.key_since_ns.load(Relaxed).min(now),
        };
        slot.rx.rotate(k, at);
        true
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
            let keylog = self.keylog.is_some();
            let slot = kept.unwrap_or_else(|| Slot::new(s.clone(), keylog));
            // Where the spoke is: as its half learned it, else the state
            // file's address (tried first, still checked under its key).
            addrs.push(slot.rx.peer().or(s.peer.get()));
            self.slots.push(slot);
        }
        self.demux = Demux::new(addrs);
        // The slots moved: the index table and the timers follow; every
        // spoke's timers run at once (a new one may initiate).
        self.by_index.clear();
        self.timers = Timers::new();
        if self.shared.cipher.is_some() {
            for (i, slot) in self.slots.iter().enumerate() {
                self.by_index.update(i, &[], &slot.indices);
                self.timers.arm(i, 0);
            }
        }
    }

    /// Confidential mode: runs the handshake timers due at `now`.
    fn timers(&mut self, now: u64) {
        while let Some(i) = self.timers.pop_due(now) {
            if i < self.slots.len() {
                self.service(i, now);
            }
        }
    }

    /// Confidential mode: spoke `i`'s handshake after a receive or when
    /// its timer is due: its timers run, the messages it has to send go,
    /// a new session is published for the TAP→UDP thread, the status
    /// views and the index table follow, and its timer is re-armed.
    fn service(&mut self, i: usize, now: u64) {
        let slot = &mut self.slots[i];
        let spoke = &*slot.spoke;
        slot.rx.poll(now);
        let (socket, v6) = (&*self.socket, self.v6);
        slot.rx.outbox().drain(|dg, to| {
            if let Err(e) = socket.send_to(dg, addr::for_socket(to, v6)) {
                spoke.counters.send_errors.fetch_add(1, Relaxed);
                debug!("spoke {}: handshake message to {to}: {e}", spoke.name);
            }
        });
        if let Some(k) = slot.rx.take_send_key() {
            spoke.send_key.set(k);
            self.shared.wake.signal();
        }
        let st = slot.rx.session_status();
        if st != slot.status {
            slot.status = st;
            // To the wall clock, for the status views (`now` is
            // CLOCK_BOOTTIME here).
            let wall_now = unix_nanos();
            let wall = |t: u64| wall_now.saturating_sub(now.saturating_sub(t));
            let st = st.map(|mut st| {
                st.since_ns = st.since_ns.map(wall);
                st.last_handshake_ns = st.last_handshake_ns.map(wall);
                st
            });
            if let Ok(mut s) = spoke.session.lock() {
                *s = st;
            }
        }
        let lines = slot.rx.take_keylog();
        if let Some(f) = self.keylog.as_mut() {
            use std::io::Write;
            for l in lines {
                let _ = writeln!(f, "{l}");
            }
        }
        let now_indices = slot.rx.session_indices();
        if now_indices != slot.indices {
            self.by_index.update(i, &slot.indices, &now_indices);
            slot.indices = now_indices;
        }
        match slot.rx.poll_timeout() {
            // Never at or before `now` again within this pass.
            Some(at) => self.timers.arm(i, at.max(now + 1)),
            None => self.timers.disarm(i),
        }
    }

    /// Runs until the hub stops.
    pub(super) fn run(mut self) {
        // Its real-time bursts' bound (`--rt-priority`), made on this thread.
        let mut bound = Bound::here(unix_nanos());
        while !self.shared.stop.load(Relaxed) {
            let asked = unix_nanos();
            let r = Socket::recv(&*self.socket, &mut self.buf);
            // One reading of the wall clock: the bound's, the AQM's and
            // the HMAC wire's.
            let now = unix_nanos();
            // A receive that waited found the socket empty (the call's
            // length alone: the arrival stamp is not comparable under a
            // faked clock, and one look per receive is all there is here).
            let waited = now.saturating_sub(asked) > crate::aqm::BLOCKED_NS;
            bound.at(now, r.is_err() || waited, &self.shared.rt_cut);
            self.follow();
            if self.shared.cipher.is_some() {
                self.timers(crate::sys::boottime_ns());
            }
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
            let (signal, second) = self.aqm.on_receive(asked, now, r.arrived_ns);
            // For this receive's datagrams only (see `open`).
            self.congested = signal;
            if let Some(s) = second {
                self.shared.queue.set(s);
            }
            if self.shared.cipher.is_some() {
                // The confidential mode's clock: CLOCK_BOOTTIME, which no
                // one sets (see engine/recv.rs).
                self.handle_noise(0..r.len, r.segment, src, crate::sys::boottime_ns());
            } else {
                self.handle(r.len, r.segment, src, now);
            }
        }
    }

    /// Confidential mode: where the datagram in `buf[r]` goes (see
    /// [`Route`]).
    fn route(&self, r: Range<usize>) -> Route {
        let dg = &self.buf[r];
        let index = match wire::kind(dg) {
            Kind::Transport => wire::transport_receiver(dg),
            Kind::Response => wire::Response::new_checked(dg).ok().map(|r| r.receiver()),
            Kind::Initiation | Kind::Other => None,
        };
        match index.map(|x| (x, self.by_index.get(x))) {
            None => Route::Trial,
            Some((_, Holders::None)) => Route::NoIndex,
            Some((_, Holders::One(i))) => Route::Spoke(i),
            Some((x, Holders::Many(_))) => Route::Shared(x),
        }
    }

    /// Confidential mode: gives one receive (`buf[range]`) to the spoke
    /// its datagrams' index names, or, when they name none, to the spoke
    /// at `src`, else to the spoke whose key opens it (within the budget).
    /// A GRO run whose datagrams do not all go the same way is taken
    /// datagram by datagram.
    fn handle_noise(
        &mut self,
        range: Range<usize>,
        segment: Option<usize>,
        src: SocketAddr,
        now: u64,
    ) {
        let seg = segment.unwrap_or(range.len()).max(1);
        let at = |o: usize| o..(o + seg).min(range.end);
        let route = self.route(at(range.start));
        if range.len() > seg
            && range
                .clone()
                .step_by(seg)
                .skip(1)
                .any(|o| self.route(at(o)) != route)
        {
            for o in range.clone().step_by(seg) {
                let r = at(o);
                let route = self.route(r.clone());
                self.noise_one(route, r, None, src, now);
            }
            return;
        }
        self.noise_one(route, range, segment, src, now);
    }

    /// Confidential mode: one receive whose datagrams all go `route`.
    fn noise_one(
        &mut self,
        route: Route,
        range: Range<usize>,
        segment: Option<usize>,
        src: SocketAddr,
        now: u64,
    ) {
        let known = self.demux.get(&src);
        match (route, known) {
            (Route::Spoke(i), _) => {
                let t = self.receive(i, false, range, segment, src, now);
                self.account(i, &t, src, now);
            }
            (Route::NoIndex, Some(i)) => {
                // The spoke at the address refuses it: a session it no
                // longer has (unknown_session), or the other mode's
                // datagram (wrong_mode: a misconfigured spoke).
                let t = self.receive(i, false, range, segment, src, now);
                if t.drops[DropReason::WrongMode as usize] > 0 {
                    self.mismatch(i, &t);
                } else {
                    self.account(i, &t, src, now);
                }
            }
            (Route::Shared(x), _) => self.shared_index(x, range, segment, src, now),
            (Route::NoIndex, None) => {
                self.shared.unmatched.fetch_add(1, Relaxed);
                if let Some(n) = self.indexlog.note(1, Instant::now()) {
                    debug!(
                        "datagrams from {src}, an address no spoke has, name a session index no spoke has ({n} dropped)"
                    );
                }
            }
            (Route::Trial, Some(i)) => {
                // A handshake initiation does not change in a failed
                // read: no copy is needed before trying the others.
                let t = self.receive(i, false, range.clone(), segment, src, now);
                if !unopened_noise(&t) {
                    self.account(i, &t, src, now);
                    return;
                }
                if self.trial(Some(i), range, segment, src, now) != Trial::Owned {
                    self.mismatch(i, &t);
                }
            }
            (Route::Trial, None) => self.unknown(range, segment, src, now),
        }
    }

    /// Confidential mode: a receive naming index `x`, which several
    /// spokes hold: each tries a copy (a failed AEAD open may overwrite
    /// it) until one's session opens it; if none does, the first one's
    /// refusal is counted.
    fn shared_index(
        &mut self,
        x: u32,
        range: Range<usize>,
        segment: Option<usize>,
        src: SocketAddr,
        now: u64,
    ) {
        let Holders::Many(holders) = self.by_index.get(x) else {
            return;
        };
        let mut first = None;
        for i in holders {
            self.scratch[..range.len()].copy_from_slice(&self.buf[range.clone()]);
            let t = self.receive(i, true, range.clone(), segment, src, now);
            if t.valid() || t.drops[DropReason::BadMac as usize] == 0 {
                self.account(i, &t, src, now);
                return;
            }
            first.get_or_insert((i, t));
        }
        if let Some((i, t)) = first {
            self.account(i, &t, src, now);
        }
    }

    /// HMAC wire: gives one receive to the spoke at `src`, else to the
    /// spoke whose key opens it (within the budget). The HMAC check leaves
    /// a datagram it cannot open untouched: the others try the same bytes.
    fn handle(&mut self, len: usize, segment: Option<usize>, src: SocketAddr, now: u64) {
        let known = self.demux.get(&src);
        if let Some(i) = known {
            let t = self.receive(i, false, 0..len, segment, src, now);
            if !unopened(&t) {
                self.account(i, &t, src, now);
                return;
            }
            if self.trial(Some(i), 0..len, segment, src, now) != Trial::Owned {
                self.mismatch(i, &t);
            }
            return;
        }
        self.unknown(0..len, segment, src, now);
    }

    /// A receive from an address no spoke has: the spoke whose key opens
    /// it owns it (within the budget).
    fn unknown(&mut self, range: Range<usize>, segment: Option<usize>, src: SocketAddr, now: u64) {
        match self.trial(None, range, segment, src, now) {
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
        range: Range<usize>,
        segment: Option<usize>,
        src: SocketAddr,
        now: u64,
    ) -> Trial {
        let noise = self.shared.cipher.is_some();
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
            self.scratch[..range.len()].copy_from_slice(&self.buf[range.clone()]);
            let t = self.receive(i, true, range.clone(), segment, src, now);
            if !(if noise {
                unopened_noise(&t)
            } else {
                unopened(&t)
            }) {
                // Valid, or authentic under this spoke's key but refused
                // by its own checks (its replay window, its freshness).
                self.account(i, &t, src, now);
                return Trial::Owned;
            }
        }
        Trial::NoKey
    }

    /// Spoke `i`'s receiving half checks the run `buf[range]` (copied to
    /// the start of `scratch` when `trial`), writing what it delivers to
    /// the spoke's TAP; in the confidential mode, then runs its handshake
    /// ([`Receiver::service`]).
    fn receive(
        &mut self,
        i: usize,
        trial: bool,
        range: Range<usize>,
        segment: Option<usize>,
        src: SocketAddr,
        now: u64,
    ) -> Tally {
        self.rotate(i, now);
        let t = self.open(i, trial, range, segment, src, now);
        if self.shared.cipher.is_some() {
            self.service(i, now);
        }
        t
    }

    /// See [`Receiver::receive`]: the check and the writes alone.
    fn open(
        &mut self,
        i: usize,
        trial: bool,
        range: Range<usize>,
        segment: Option<usize>,
        src: SocketAddr,
        now: u64,
    ) -> Tally {
        let slot = &mut self.slots[i];
        // The signal is for this receive only (it lapses in the spoke's
        // half if no frame takes it).
        if !trial && std::mem::take(&mut self.congested) {
            slot.rx.signal_congestion();
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
            &mut self.scratch[..range.len()]
        } else {
            &mut self.buf[range]
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
            // `now` is CLOCK_BOOTTIME in the confidential mode.
            let wall = match self.shared.cipher {
                Some(_) => unix_nanos(),
                None => now,
            };
            s.last_valid_ns.store(wall, Relaxed);
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
        s.peer.set(Some(to));
        self.shared.wake.signal();
    }
}
