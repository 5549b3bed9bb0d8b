//! One peer's sessions and the rules that make, confirm, renew and end
//! them: the confidential mode's state machine, pure (the caller passes
//! `now` and sends what lands in the [`Outbox`]).
//!
//! - Up to three sessions: `current` (sends, receives), `previous` (still
//!   receives what was sealed before the switch) and `next` (a responder's
//!   new session, receiving only until the first datagram under it
//!   confirms that the initiator has it; then it becomes `current`).
//! - The initiator of the current session renews it after
//!   [`REKEY_AFTER_NS`]; the responder after 10 s more if the initiator has
//!   not (its timer may be stopped by a full queue, or its clock slow). An
//!   initiation not answered is sent again (a new ephemeral, a new index)
//!   after 1 s, 2 s, 4 s, then every [`REKEY_TIMEOUT_NS`]. No session
//!   outlives [`REJECT_AFTER_NS`].
//! - Two initiations that cross: the one whose ephemeral key is smaller
//!   wins on both sides, so one session results. The winner sends its own
//!   once more to the loser, which may have refused the first copy (it
//!   did not have this key file yet); a loser that answered it takes the
//!   copy as expected, not as a replay.
//! - An initiation costs its reader one key derivation and one AEAD open
//!   before anything else (NNpsk0's first message is keyed by the key
//!   file): made-up ones cost little and are refused. A genuine one is
//!   answered once (its ephemeral is remembered); answering costs a
//!   Diffie-Hellman, so answers have a budget, as have reads (the current
//!   peer's address its own, so a flood from elsewhere cannot starve it).

use super::budget::Budget;
use super::handshake::{self, Established, Pending};
use super::transport::{Opened, RecvKey, SendKey};
use super::wire::{self, INITIATION_LEN, Kind, OVERHEAD, RESPONSE_LEN, Transport};
use super::{Draw, NoiseError};
use crate::aead::Cipher;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

const SEC: u64 = 1_000_000_000;
/// The initiator of a session renews it once it is this old.
pub const REKEY_AFTER_NS: u64 = 120 * SEC;
/// The responder renews it this much later, if the initiator did not.
const RESPONDER_LAG_NS: u64 = 10 * SEC;
/// No session is used once it is this old.
pub const REJECT_AFTER_NS: u64 = 180 * SEC;
/// An initiation without an answer for this long is sent again; the
/// first retries come sooner (1 s, 2 s, 4 s), so that one lost at start
/// (the peer's socket not bound yet, a lost datagram) costs a second, not five.
pub const REKEY_TIMEOUT_NS: u64 = 5 * SEC;
/// Up to this much is added to each wait before an initiation, at random,
/// so that two sides with the same timers rarely initiate together.
const JITTER_NS: u64 = SEC / 3;
/// How many answered initiations are remembered (their ephemerals, 32 KiB):
/// a genuine one replayed while remembered gets no second answer. At one
/// handshake in two minutes, 1024 cover a day and a half.
const ANSWERED: usize = 1024;
/// Answered sessions kept unconfirmed at once.
const NEXT: usize = 4;
/// How many indices name one keyring at most ([`Keyring::indices`]).
pub const INDICES: usize = 3 + NEXT;
/// Initiations read per second from addresses other than the peer's
/// (each: a key derivation and an AEAD open, a few µs).
const READS_PER_SEC: u32 = 20_000;
/// Initiations read per second from the peer's address.
const PEER_READS_PER_SEC: u32 = 50;
/// Answers per second (each: an X25519 key and a Diffie-Hellman).
const ANSWERS_PER_SEC: u32 = 20;

/// The longest datagram an [`Outbox`] holds.
const MESSAGE_MAX: usize = if RESPONSE_LEN > INITIATION_LEN {
    RESPONSE_LEN
} else {
    INITIATION_LEN
};

/// Datagrams the caller is to send: handshake messages and the keepalive
/// that confirms a new session. Rare, small; the vector keeps its capacity.
#[derive(Debug, Default)]
pub struct Outbox {
    items: Vec<(SocketAddr, [u8; MESSAGE_MAX], usize)>,
}

impl Outbox {
    fn push(&mut self, to: SocketAddr, dg: &[u8]) {
        let mut b = [0u8; MESSAGE_MAX];
        b[..dg.len()].copy_from_slice(dg);
        self.items.push((to, b, dg.len()));
    }

    /// Hands each datagram to `send`, oldest first, and empties the box.
    pub fn drain(&mut self, mut send: impl FnMut(&[u8], SocketAddr)) {
        for (to, b, n) in self.items.drain(..) {
            send(&b[..n], to);
        }
    }

    /// Whether anything waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What [`Keyring::receive`] made of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// An authentic transport datagram: its frame (decrypted in place;
    /// empty for a keepalive), and whether its counter was the newest of
    /// its session (the peer may move to its source).
    Data {
        /// The frame's bytes in the datagram.
        frame: Range<usize>,
        /// The highest counter of its session so far.
        newest: bool,
    },
    /// A handshake message, taken (an answer may be in the outbox).
    Handshake,
    /// Refused.
    Refused(Refusal),
}

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not of this mode at all (maybe the HMAC wire's).
    Malformed,
    /// A transport datagram of a session this side does not have (ended,
    /// or made up).
    UnknownSession,
    /// A transport datagram that failed authentication.
    BadTag,
    /// A transport counter seen before or too old.
    Replay,
    /// An initiation that does not open under this key file and cipher.
    BadInitiation,
    /// A response that does not open, or answers no initiation of ours.
    BadResponse,
    /// A genuine initiation answered before (a replay).
    Answered,
    /// Our own initiation crossed it and wins.
    Crossed,
    /// The newest initiation answered, once more from the peer: its
    /// initiator's resend after it won a crossing (not a replay).
    Repeated,
    /// Beyond the budget of handshake work.
    RateLimited,
}

/// A session's facts, for the status views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStatus {
    /// When the current session was made (caller's ns), if there is one.
    pub since_ns: Option<u64>,
    /// When a handshake last completed.
    pub last_handshake_ns: Option<u64>,
    /// Whether this side initiated the current session.
    pub initiator: bool,
    /// The indices of the current session (local, remote).
    pub indices: Option<(u32, u32)>,
    /// Handshakes completed, as initiator and responder.
    pub handshakes: u64,
    /// Initiations sent.
    pub initiations: u64,
    /// Handshake messages refused (all reasons but a crossing).
    pub refused: u64,
    /// Of those: answered initiations replayed.
    pub replayed: u64,
    /// Of those: beyond the budget.
    pub rate_limited: u64,
}

#[derive(Debug)]
struct Slot {
    local: u32,
    recv: RecvKey,
    send: Arc<SendKey>,
    initiator: bool,
    created_ns: u64,
    /// No datagram is sealed or opened under it from then on.
    expires_ns: u64,
}

impl Slot {
    fn new(cipher: Cipher, e: &Established, now: u64) -> Slot {
        Slot {
            local: e.local,
            recv: RecvKey::new(cipher, &e.recv),
            send: Arc::new(SendKey::new(cipher, &e.send, e.local, e.remote, now)),
            initiator: e.initiator,
            created_ns: now,
            expires_ns: now.saturating_add(REJECT_AFTER_NS),
        }
    }
}

/// Our initiation in flight: what reading its answer needs, and its bytes
/// (sent once more to a peer whose initiation it wins over).
#[derive(Debug)]
struct Flight {
    hs: Pending,
    /// Waited for until then (the caller's ns).
    until: u64,
    msg: [u8; INITIATION_LEN],
    resent: bool,
}

/// One peer's sessions; see the module documentation.
#[derive(Debug)]
pub struct Keyring {
    cipher: Cipher,
    psk: [u8; 32],
    draw: Draw,
    /// Our initiation in flight.
    pending: Option<Flight>,
    /// Initiations sent since the last session was made (the backoff).
    attempts: u32,
    /// No initiation leaves before then.
    next_initiation_ns: u64,
    current: Option<Slot>,
    previous: Option<Slot>,
    /// Answered, not confirmed yet, newest last (several: a replayed
    /// initiation, answered as it must be, cannot push out the one its
    /// initiator is about to confirm).
    next: VecDeque<Slot>,
    /// Ephemerals of the initiations answered, newest last.
    answered: VecDeque<[u8; 32]>,
    /// The newest answered initiation came again from the peer once (the
    /// initiator's resend after a crossing it won): a further copy is a replay.
    repeat_seen: bool,
    reads: Budget,
    peer_reads: Budget,
    answers: Budget,
    /// The sending key changed (new session, or none) since the caller last took it.
    send_changed: bool,
    /// A new key file: a session under it is due at once (until one is made).
    renew: bool,
    /// Key-log lines (`TAPTUN_KEYLOG`) not taken yet, when on.
    keylog: Option<Vec<String>>,
    status: SessionStatus,
    /// Fixed ephemerals for the next initiation or answer (tests).
    #[cfg(test)]
    fixed: Option<[u8; 32]>,
}

impl Keyring {
    /// A keyring for `cipher` under the key file's bytes `psk`; `seed`
    /// draws the session indices and jitter.
    pub fn new(cipher: Cipher, psk: &[u8; 32], seed: [u8; 32]) -> Keyring {
        Keyring {
            cipher,
            psk: *psk,
            draw: Draw::new(seed),
            pending: None,
            attempts: 0,
            next_initiation_ns: 0,
            current: None,
            previous: None,
            next: VecDeque::with_capacity(NEXT),
            answered: VecDeque::with_capacity(ANSWERED),
            repeat_seen: false,
            reads: Budget::new(READS_PER_SEC, READS_PER_SEC / 10),
            peer_reads: Budget::new(PEER_READS_PER_SEC, 10),
            answers: Budget::new(ANSWERS_PER_SEC, 10),
            send_changed: false,
            renew: false,
            keylog: None,
            status: SessionStatus::default(),
            #[cfg(test)]
            fixed: None,
        }
    }

    /// Keeps one key-log line per new session for [`Keyring::take_keylog`]
    /// (`TAPTUN_KEYLOG`: what a capture needs to be read, for tests).
    pub fn with_keylog(mut self) -> Keyring {
        self.keylog = Some(Vec::new());
        self
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// A new key file (SIGHUP): handshakes from now on use it; sessions
    /// made under the old one end within [`REKEY_AFTER_NS`], and a
    /// handshake under the new one starts at once.
    pub fn set_psk(&mut self, psk: &[u8; 32], now: u64) {
        if &self.psk == psk {
            return;
        }
        self.psk = *psk;
        self.pending = None;
        self.next.clear();
        let cutoff = now.saturating_add(REKEY_AFTER_NS);
        for s in [&mut self.current, &mut self.previous]
            .into_iter()
            .flatten()
        {
            s.expires_ns = s.expires_ns.min(cutoff);
        }
        self.next_initiation_ns = now;
        self.renew = true;
    }

    /// The sealing key, when it changed since the last call: `Some(None)`
    /// when there is none any more.
    pub fn take_send_key(&mut self) -> Option<Option<Arc<SendKey>>> {
        if !std::mem::take(&mut self.send_changed) {
            return None;
        }
        Some(self.current.as_ref().map(|s| s.send.clone()))
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .chain(self.next.iter())
    }

    /// Whether a session of ours has index `local`.
    pub fn has_session(&self, local: u32) -> bool {
        self.slots().any(|s| s.local == local)
    }

    /// The indices a datagram may name to reach this keyring: those of
    /// its sessions (current, previous, next) and of its initiation in
    /// flight (which a response names). A hub keeps a table of them to
    /// find the peer of a datagram without trying every key.
    /// In order: current, previous, the initiation in flight, then the
    /// answered sessions waiting for confirmation.
    pub fn indices(&self) -> [Option<u32>; INDICES] {
        let local = |s: &Option<Slot>| s.as_ref().map(|s| s.local);
        let mut v = [None; INDICES];
        v[0] = local(&self.current);
        v[1] = local(&self.previous);
        v[2] = self.pending.as_ref().map(|f| f.hs.index);
        for (slot, s) in v[3..].iter_mut().zip(&self.next) {
            *slot = Some(s.local);
        }
        v
    }

    /// Whether the sealing key changed since [`Keyring::take_send_key`]
    /// was last called.
    pub fn send_changed(&self) -> bool {
        self.send_changed
    }

    /// The sealing key now, if any.
    pub fn send_key(&self) -> Option<Arc<SendKey>> {
        self.current.as_ref().map(|s| s.send.clone())
    }

    /// Key-log lines written since the last call.
    pub fn take_keylog(&mut self) -> Vec<String> {
        self.keylog.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The status views' facts.
    pub fn status(&self) -> SessionStatus {
        let mut s = self.status;
        s.since_ns = self.current.as_ref().map(|c| c.created_ns);
        s.initiator = self.current.as_ref().is_some_and(|c| c.initiator);
        s.indices = self.current.as_ref().map(|c| (c.local, c.send.remote()));
        s
    }

    /// A fresh index, none of our sessions' or our pending initiation's.
    fn index(&mut self) -> u32 {
        loop {
            let i = self.draw.next_u64() as u32;
            let taken = self.slots().any(|s| s.local == i)
                || self.pending.as_ref().is_some_and(|f| f.hs.index == i);
            if !taken {
                return i;
            }
        }
    }

    fn jitter(&mut self) -> u64 {
        self.draw.next_u64() % JITTER_NS
    }

    fn established(&mut self, e: &Established, now: u64) -> Slot {
        self.renew = false;
        self.attempts = 0;
        self.status.handshakes += 1;
        self.status.last_handshake_ns = Some(now);
        if let Some(log) = self.keylog.as_mut() {
            let hex = |k: &[u8; 32]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
            log.push(format!(
                "{} {:08x} {:08x} {} {}",
                self.cipher,
                e.local,
                e.remote,
                hex(&e.send),
                hex(&e.recv)
            ));
        }
        Slot::new(self.cipher, e, now)
    }

    fn refuse(&mut self, r: Refusal) -> Received {
        if !matches!(r, Refusal::Crossed | Refusal::Repeated) {
            self.status.refused += 1;
        }
        match r {
            Refusal::Answered => self.status.replayed += 1,
            Refusal::RateLimited => self.status.rate_limited += 1,
            _ => {}
        }
        Received::Refused(r)
    }

    /// Takes one datagram from `src` at `now`: a transport datagram is
    /// opened in place; a handshake message is answered into `out`.
    /// `peer`: the current peer (its initiations have their own budget).
    pub fn receive(
        &mut self,
        dg: &mut [u8],
        src: SocketAddr,
        peer: Option<SocketAddr>,
        now: u64,
        out: &mut Outbox,
    ) -> Received {
        match wire::kind(dg) {
            Kind::Transport => self.open(dg, now),
            Kind::Initiation => self.on_initiation(dg, src, peer, now, out),
            Kind::Response => self.on_response(dg, src, now, out),
            Kind::Other => Received::Refused(Refusal::Malformed),
        }
    }

    fn open(&mut self, dg: &mut [u8], now: u64) -> Received {
        let Ok(t) = Transport::new_checked(&*dg) else {
            return Received::Refused(Refusal::Malformed);
        };
        let idx = t.receiver();
        let live = |s: &Slot| s.local == idx && now < s.expires_ns;
        // Only the current session's newest datagram may move the peer: a
        // late one of the previous session may be the newest of its own
        // window (its last datagrams lost and replayed), yet older than
        // everything the current one carried.
        let found = if self.current.as_ref().is_some_and(live) {
            self.current.as_mut().map(|s| (s, true))
        } else if self.previous.as_ref().is_some_and(live) {
            self.previous.as_mut().map(|s| (s, false))
        } else {
            None
        };
        let opened = match found {
            Some((s, may_move)) => s.recv.open(dg).map(|o| Opened {
                newest: o.newest && may_move,
                ..o
            }),
            None => {
                let Some(k) = self.next.iter().position(live) else {
                    return Received::Refused(Refusal::UnknownSession);
                };
                let r = self.next[k].recv.open(dg);
                if r.is_ok() {
                    // The initiator has the session: it is ours to send
                    // with now; the other answers are stale.
                    let s = self.next.remove(k);
                    self.next.clear();
                    self.previous = self.current.take();
                    self.current = s;
                    self.send_changed = true;
                }
                r
            }
        };
        let opened = match opened {
            Ok(o) => o,
            Err(NoiseError::Replay) => return Received::Refused(Refusal::Replay),
            Err(_) => return Received::Refused(Refusal::BadTag),
        };
        let Opened { frame, newest } = opened;
        Received::Data { frame, newest }
    }

    fn on_initiation(
        &mut self,
        dg: &[u8],
        src: SocketAddr,
        peer: Option<SocketAddr>,
        now: u64,
        out: &mut Outbox,
    ) -> Received {
        let budget = if Some(src) == peer {
            &mut self.peer_reads
        } else {
            &mut self.reads
        };
        if !budget.take(now) {
            return self.refuse(Refusal::RateLimited);
        }
        #[cfg(test)]
        let fixed = self.fixed;
        #[cfg(not(test))]
        let fixed: Option<[u8; 32]> = None;
        let read = match handshake::read_initiation(self.cipher, &self.psk, fixed.as_ref(), dg) {
            Ok(r) => r,
            Err(_) => return self.refuse(Refusal::BadInitiation),
        };
        if self.answered.contains(&read.ephemeral) {
            if self.answered.back() == Some(&read.ephemeral)
                && Some(src) == peer
                && !std::mem::replace(&mut self.repeat_seen, true)
            {
                // Its initiator won a crossing with it and sent it again
                // (below): expected once, not a replay.
                return self.refuse(Refusal::Repeated);
            }
            return self.refuse(Refusal::Answered);
        }
        if let Some(f) = &mut self.pending
            && now < f.until
            && f.hs.ephemeral < read.ephemeral
        {
            // Ours crossed theirs and wins: the peer answers ours. Once,
            // it gets ours again: the first copy may have reached it
            // before it had this key file (a rotation on both sides: it
            // refused ours, then sent its own), and it would wait for an
            // answer to its own while we wait for one to ours, until a
            // retry's new ephemerals break the tie, one time in two.
            if !f.resent {
                f.resent = true;
                out.push(src, &f.msg);
            }
            return self.refuse(Refusal::Crossed);
        }
        if !self.answers.take(now) {
            return self.refuse(Refusal::RateLimited);
        }
        if self.answered.len() == ANSWERED {
            self.answered.pop_front();
        }
        self.answered.push_back(read.ephemeral);
        self.repeat_seen = false;
        let index = self.index();
        let mut resp = [0u8; RESPONSE_LEN];
        let Ok(e) = handshake::respond(read, index, &mut resp) else {
            return self.refuse(Refusal::BadInitiation);
        };
        // Theirs wins over ours, if we had one in flight.
        self.pending = None;
        let slot = self.established(&e, now);
        if self.next.len() == NEXT {
            self.next.pop_front();
        }
        self.next.push_back(slot);
        out.push(src, &resp);
        Received::Handshake
    }

    fn on_response(&mut self, dg: &[u8], src: SocketAddr, now: u64, out: &mut Outbox) -> Received {
        let Ok(r) = wire::Response::new_checked(dg) else {
            return Received::Refused(Refusal::Malformed);
        };
        if self
            .pending
            .as_ref()
            .is_none_or(|f| f.hs.index != r.receiver())
        {
            return self.refuse(Refusal::BadResponse);
        }
        let Some(Flight { hs: p, .. }) = self.pending.take() else {
            return self.refuse(Refusal::BadResponse);
        };
        let e = match handshake::finish(p, dg) {
            Ok(e) => e,
            Err(_) => return self.refuse(Refusal::BadResponse),
        };
        let slot = self.established(&e, now);
        // A keepalive under the new session confirms it to the responder
        // at once, whether or not frames are waiting.
        let mut ka = [0u8; OVERHEAD];
        if slot.send.seal(&mut ka).is_ok() {
            out.push(src, &ka);
        }
        self.previous = self.current.take();
        self.current = Some(slot);
        self.next.clear();
        self.send_changed = true;
        Received::Handshake
    }

    /// The timers at `now`: ends sessions past their time, and, with a
    /// `peer` to send to, puts an initiation in `out` when a session is
    /// missing or due for renewal and none is in flight.
    pub fn poll(&mut self, peer: Option<SocketAddr>, now: u64, out: &mut Outbox) {
        if self.previous.as_ref().is_some_and(|s| now >= s.expires_ns) {
            self.previous = None;
        }
        // An answer not confirmed within the retry time never will be:
        // its initiator has given up on it.
        self.next.retain(|s| {
            now < s.expires_ns && now.saturating_sub(s.created_ns) < 2 * REKEY_TIMEOUT_NS
        });
        if self.current.as_ref().is_some_and(|s| now >= s.expires_ns) {
            self.current = None;
            self.send_changed = true;
        }
        if self.pending.as_ref().is_some_and(|f| now >= f.until) {
            self.pending = None;
        }
        let Some(to) = peer else { return };
        if self.pending.is_some() || now < self.next_initiation_ns || !self.due(now) {
            return;
        }
        let index = self.index();
        let mut msg = [0u8; INITIATION_LEN];
        #[cfg(test)]
        let fixed = self.fixed;
        #[cfg(not(test))]
        let fixed: Option<[u8; 32]> = None;
        let Ok(p) = handshake::initiate(self.cipher, &self.psk, index, fixed.as_ref(), &mut msg)
        else {
            return;
        };
        let wait = (SEC << self.attempts.min(3)).min(REKEY_TIMEOUT_NS) + self.jitter();
        self.attempts += 1;
        self.pending = Some(Flight {
            hs: p,
            until: now + wait,
            msg,
            resent: false,
        });
        self.status.initiations += 1;
        self.next_initiation_ns = now + wait;
        out.push(to, &msg);
    }

    /// Whether a session is missing or due for renewal at `now`.
    fn due(&self, now: u64) -> bool {
        self.renew || self.due_at().is_some_and(|t| now >= t)
    }

    /// When a session is due: the current one's renewal, or at once
    /// without one.
    fn due_at(&self) -> Option<u64> {
        match &self.current {
            // Answered, not confirmed: the initiator's to finish, unless
            // it has gone quiet.
            None => Some(
                self.next
                    .back()
                    .map_or(0, |n| n.created_ns.saturating_add(REKEY_TIMEOUT_NS)),
            ),
            Some(c) if c.send.worn() => Some(0),
            Some(c) => {
                let after = if c.initiator {
                    REKEY_AFTER_NS
                } else {
                    REKEY_AFTER_NS + RESPONDER_LAG_NS
                };
                Some(c.created_ns.saturating_add(after))
            }
        }
    }

    /// When [`Keyring::poll`] next has something to do (the caller's ns).
    pub fn poll_timeout(&self, peer: Option<SocketAddr>) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut at = |v: u64| t = Some(t.map_or(v, |t| t.min(v)));
        for s in [&self.current, &self.previous].into_iter().flatten() {
            at(s.expires_ns);
        }
        for s in &self.next {
            at(s.created_ns.saturating_add(2 * REKEY_TIMEOUT_NS));
        }
        if let Some(f) = &self.pending {
            at(f.until);
        } else if peer.is_some() {
            let due = if self.renew { Some(0) } else { self.due_at() };
            if let Some(d) = due {
                at(d.max(self.next_initiation_ns));
            }
        }
        t
    }
}

#[cfg(test)]
mod tests;
