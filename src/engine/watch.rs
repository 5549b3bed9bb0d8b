//! The operator's view: when traffic cannot cross for a reason taptun can
//! see, one warn line per cause per minute, with how many datagrams or
//! frames it stands for and the fix; and a line when traffic recovers. The
//! counters keep every event; these lines only explain them.

use super::Shared;
use crate::addr;
use crate::aead::Mode;
use crate::peer::PeerUpdate;
use crate::rx::Tally;
use crate::stats::{DropReason, Throttle};
use log::warn;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Peer moves within this window that make a flapping peer.
const FLAP_WINDOW: Duration = Duration::from_secs(10);
const FLAP_MOVES: u32 = 3;

/// What the receiving thread watches.
pub(super) struct RecvWatch {
    max_age_ns: u64,
    clock: Throttle,
    wrong_key: Throttle,
    junk: Throttle,
    oversize: Throttle,
    flap: Throttle,
    mode: Throttle,
    /// The mode this side speaks, for the mismatch line.
    ours: Mode,
    /// When the peer was last seen speaking the other mode: its other
    /// datagrams then fail authentication too, for the same reason.
    mismatch_seen: Option<Instant>,
    /// Moves of the peer in the current window: when it started, how many.
    moves: Option<(Instant, u32)>,
}

impl RecvWatch {
    pub(super) fn new(max_age: Duration, ours: Mode) -> Self {
        RecvWatch {
            mode: Throttle::per_minute(),
            ours,
            mismatch_seen: None,
            max_age_ns: max_age.as_nanos() as u64,
            clock: Throttle::per_minute(),
            wrong_key: Throttle::per_minute(),
            junk: Throttle::per_minute(),
            oversize: Throttle::per_minute(),
            flap: Throttle::per_minute(),
            moves: None,
        }
    }

    /// Looks at one receive's tally from `src`; `peer`: the peer as the
    /// receiving half knows it.
    pub(super) fn saw(&mut self, t: &Tally, src: SocketAddr, peer: Option<SocketAddr>) {
        if t.drops.iter().all(|&n| n == 0) && t.peer == PeerUpdate::Unchanged && !t.bad_handshake {
            return;
        }
        let drops = |r: DropReason| t.drops[r as usize];
        let now = Instant::now();
        let src = addr::canonical(src);
        let timed_out = drops(DropReason::Future) + drops(DropReason::Stale);
        if timed_out > 0
            && let Some(off) = t.offset_ns
            && off.unsigned_abs() > self.max_age_ns
            && let Some(n) = self.clock.note(timed_out, now)
        {
            let way = if off > 0 { "ahead of" } else { "behind" };
            warn!(
                "datagrams from {src} are authentic but {:.1} s {way} this host's clock; the hosts' clocks differ by more than --max-age {:.1} s: synchronise them (chrony, systemd-timesyncd) or raise --max-age ({n} dropped)",
                off.unsigned_abs() as f64 / 1e9,
                self.max_age_ns as f64 / 1e9,
            );
        }
        let bad = drops(DropReason::BadMac);
        let explained = self
            .mismatch_seen
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60));
        if bad > 0 && !explained {
            let from_peer = peer.is_none_or(|p| p.ip() == src.ip());
            if from_peer {
                if let Some(n) = self.wrong_key.note(bad, now) {
                    warn!(
                        "datagrams from {src} fail authentication: do both hosts use the same key file? ({n} dropped)"
                    );
                }
            } else if let Some(n) = self.junk.note(bad, now) {
                warn!(
                    "datagrams from {src}, not the peer, fail authentication: forged or misdirected traffic, dropped ({n} dropped)"
                );
            }
        }
        if t.bad_handshake
            && let Some(n) = self.wrong_key.note(drops(DropReason::Handshake), now)
        {
            warn!(
                "handshakes from {src} fail: it uses another key file (or is not taptun); do both hosts use the same key file? ({n} refused)"
            );
        }
        if t.mismatch.is_some() {
            self.mismatch_seen = Some(now);
        }
        if let Some(theirs) = t.mismatch
            && let Some(n) = self.mode.note(drops(DropReason::WrongMode), now)
        {
            warn!(
                "{} ({n} dropped)",
                crate::aead::mismatch_message(src, self.ours, theirs)
            );
        }
        let big = drops(DropReason::Oversize);
        if big > 0
            && let Some(n) = self.oversize.note(big, now)
        {
            warn!(
                "datagrams from {src} larger than any frame a TAP of MTU {} can take: dropped unread ({n} dropped)",
                crate::tx::MAX_MTU
            );
        }
        if let PeerUpdate::Moved { from, to } = t.peer {
            let (start, count) = match self.moves {
                Some((s, c)) if now.duration_since(s) < FLAP_WINDOW => (s, c + 1),
                _ => (now, 1),
            };
            self.moves = Some((start, count));
            if count >= FLAP_MOVES
                && let Some(n) = self.flap.note(u64::from(count), now)
            {
                warn!(
                    "the peer keeps moving between {from} and {to} ({n} moves): two tunnels sharing one key file? give each tunnel its own key"
                );
            }
        }
    }
}

/// What the main thread watches, once a tick.
pub(super) struct TickWatch {
    started: Instant,
    no_peer: Throttle,
    silent: Throttle,
    /// When the peer went silent, and the frames counted then.
    silence: Option<(u64, u64)>,
    last_no_peer: u64,
    /// The peer was given by name: without an address, the name did not
    /// resolve, and `name.rs` says so.
    named: bool,
}

/// How long without a peer before saying so.
const NO_PEER_GRACE: Duration = Duration::from_secs(10);

impl TickWatch {
    pub(super) fn new(named: bool) -> Self {
        TickWatch {
            named,
            started: Instant::now(),
            no_peer: Throttle::per_minute(),
            silent: Throttle::per_minute(),
            silence: None,
            last_no_peer: 0,
        }
    }

    /// `now` in UNIX ns; `keepalive` the interval (zero: off); `port` the
    /// local UDP port, for the hint.
    pub(super) fn tick(&mut self, shared: &Shared, now: u64, keepalive: Duration, port: u16) {
        let c = &shared.counters;
        let Some(peer) = shared.peer.get() else {
            if self.named {
                return;
            }
            let held = c.drops(DropReason::NoPeer);
            if self.started.elapsed() >= NO_PEER_GRACE
                && let Some(_) = self.no_peer.note(1, Instant::now())
            {
                warn!(
                    "no peer after {:.0} s: nothing valid has arrived on UDP port {port}; start the other side with this host's address as its peer, or open UDP port {port} in the firewall ({} frames from the TAP dropped meanwhile)",
                    self.started.elapsed().as_secs_f64(),
                    held - self.last_no_peer
                );
                self.last_no_peer = held;
            }
            return;
        };
        if keepalive.is_zero() {
            return;
        }
        let last = shared.last_valid_ns.load(Relaxed);
        let since = if last == 0 {
            // Never heard from: count from the start.
            self.started.elapsed().as_nanos() as u64
        } else {
            now.saturating_sub(last)
        };
        let limit = 3 * keepalive.as_nanos() as u64;
        let tx = c.tx_frames.load(Relaxed);
        if since > limit {
            if self.silence.is_none() {
                self.silence = Some((now.saturating_sub(since), tx));
            }
            if self.silent.note(1, Instant::now()).is_some() {
                warn!(
                    "no valid datagram from the peer {peer} for {:.0} s (3 keepalives): is taptun running there, and UDP open between the hosts? ({} frames sent meanwhile)",
                    since as f64 / 1e9,
                    tx - self.silence.map_or(tx, |s| s.1)
                );
            }
        } else if let Some((from, tx0)) = self.silence.take() {
            if self.silent.fired() {
                warn!(
                    "peer {peer} answering again after {:.0} s ({} frames sent meanwhile)",
                    now.saturating_sub(from) as f64 / 1e9,
                    tx - tx0
                );
            }
            self.silent.reset();
        }
    }
}
