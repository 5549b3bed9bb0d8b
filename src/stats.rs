//! Counters shared by the threads, and a limiter for log lines.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Why a datagram or frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Datagram shorter than the header.
    Short,
    /// Datagram larger than the receive buffer.
    Truncated,
    /// Authentication failed (wrong key, forged or altered).
    BadMac,
    /// Timestamp older than the maximum age.
    Stale,
    /// Timestamp too far in the future.
    Future,
    /// Already accepted, or older than the replay window.
    Replay,
    /// A TAP frame read while no peer is known.
    NoPeer,
    /// A TAP frame longer than the MTU allows, or a datagram longer than
    /// any peer sends.
    Oversize,
    /// Confidential mode: a transport datagram naming no session of this
    /// side (one that ended, or a made-up index).
    UnknownSession,
    /// The peer speaks the other mode (HMAC wire against `--cipher`, or
    /// the reverse).
    WrongMode,
    /// Confidential mode: a handshake message refused (another key file,
    /// a replay, an answer to nothing, or beyond the handshake budget).
    Handshake,
    /// Confidential mode: a TAP frame read while no session is up.
    NoSession,
    /// The underlay marked the datagram CE (congestion experienced), but
    /// its frame is not ECN-capable: dropped, as RFC 6040 says, the one
    /// way left to tell its sender of the congestion.
    CeNotEct,
    /// The receiver's queue stood above its target (CoDel, `codel.rs`)
    /// and the frame chosen to signal it is not ECN-capable: dropped, as
    /// an AQM drops (an ECN-capable one is marked CE instead).
    Aqm,
}

impl DropReason {
    /// Every reason, in report order.
    pub const ALL: [DropReason; 14] = [
        DropReason::Short,
        DropReason::Truncated,
        DropReason::BadMac,
        DropReason::Stale,
        DropReason::Future,
        DropReason::Replay,
        DropReason::NoPeer,
        DropReason::Oversize,
        DropReason::UnknownSession,
        DropReason::WrongMode,
        DropReason::Handshake,
        DropReason::NoSession,
        DropReason::CeNotEct,
        DropReason::Aqm,
    ];

    /// Short name used in logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Short => "short",
            DropReason::Truncated => "truncated",
            DropReason::BadMac => "bad_mac",
            DropReason::Stale => "stale",
            DropReason::Future => "future",
            DropReason::Replay => "replay",
            DropReason::NoPeer => "no_peer",
            DropReason::Oversize => "oversize",
            DropReason::UnknownSession => "unknown_session",
            DropReason::WrongMode => "wrong_mode",
            DropReason::Handshake => "handshake",
            DropReason::NoSession => "no_session",
            DropReason::CeNotEct => "ce_not_ect",
            DropReason::Aqm => "aqm",
        }
    }
}

/// Traffic counters, updated with relaxed atomics from the two threads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames read from the TAP and sent.
    pub tx_frames: AtomicU64,
    /// Frame bytes read from the TAP and sent.
    pub tx_bytes: AtomicU64,
    /// Frames received and written to the TAP.
    pub rx_frames: AtomicU64,
    /// Frame bytes received and written to the TAP.
    pub rx_bytes: AtomicU64,
    /// Keepalives sent.
    pub keepalives_tx: AtomicU64,
    /// Keepalives received.
    pub keepalives_rx: AtomicU64,
    /// UDP send errors.
    pub send_errors: AtomicU64,
    /// TAP write errors.
    pub tap_errors: AtomicU64,
    /// Frames (and keepalives) the sealer refused: dropped, never sent.
    pub seal_errors: AtomicU64,
    /// Frames the receiver's AQM marked CE (its drops are `aqm`).
    pub aqm_marks: AtomicU64,
    /// The receive queue's last full second of sojourn times (the
    /// tunnel's; a hub keeps one for its socket instead).
    pub queue: crate::aqm::QueueStats,
    /// Spins on the socket (`--busy-poll`), and those that ended with a
    /// datagram (the rest ran out their linger and slept).
    pub busy_spins: AtomicU64,
    pub busy_caught: AtomicU64,
    /// Datagrams of sparse flows taken ahead of the runs before them (`--fq`).
    pub fq_ahead: AtomicU64,
    /// Real-time bursts of the packet threads cut at the limit (`burst.rs`):
    /// the thread went on at the normal policy until its input emptied.
    pub rt_cut: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl Counters {
    /// Counts one drop.
    #[inline]
    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Relaxed);
    }

    /// Drops counted for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }

    /// One human-readable line.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "tx {} frames {} bytes, rx {} frames {} bytes, keepalives tx {} rx {}, send errors {}, tap errors {}, seal errors {}, drops:",
            self.tx_frames.load(Relaxed),
            self.tx_bytes.load(Relaxed),
            self.rx_frames.load(Relaxed),
            self.rx_bytes.load(Relaxed),
            self.keepalives_tx.load(Relaxed),
            self.keepalives_rx.load(Relaxed),
            self.send_errors.load(Relaxed),
            self.tap_errors.load(Relaxed),
            self.seal_errors.load(Relaxed),
        );
        for r in DropReason::ALL {
            let _ = write!(s, " {} {}", r.name(), self.drops(r));
        }
        s
    }

    /// Counts `n` drops for one reason.
    #[inline]
    pub fn drop_n(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.drops[reason as usize].fetch_add(n, Relaxed);
        }
    }

    /// Writes the counters as members of a JSON object (no braces), for
    /// the one place that assembles the status object (`engine::status`).
    pub fn write_json_members(&self, s: &mut String) {
        let _ = write!(
            s,
            "\"tx_frames\":{},\"tx_bytes\":{},\"rx_frames\":{},\"rx_bytes\":{},\"keepalives_tx\":{},\"keepalives_rx\":{},\"send_errors\":{},\"tap_errors\":{},\"seal_errors\":{},\"aqm_marks\":{},\"drops\":{{",
            self.tx_frames.load(Relaxed),
            self.tx_bytes.load(Relaxed),
            self.rx_frames.load(Relaxed),
            self.rx_bytes.load(Relaxed),
            self.keepalives_tx.load(Relaxed),
            self.keepalives_rx.load(Relaxed),
            self.send_errors.load(Relaxed),
            self.tap_errors.load(Relaxed),
            self.seal_errors.load(Relaxed),
            self.aqm_marks.load(Relaxed),
        );
        for (i, r) in DropReason::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}\"{}\":{}", r.name(), self.drops(*r));
        }
        s.push('}');
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One log line per cause per period, standing for every event since
/// the last one: a flood or a long outage writes one line a minute, and
/// each line says how many events it covers.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    last: Option<Instant>,
    count: u64,
}

impl Throttle {
    /// At most one line per `period`.
    pub fn new(period: Duration) -> Self {
        Throttle {
            period,
            last: None,
            count: 0,
        }
    }

    /// At most one line a minute.
    pub fn per_minute() -> Self {
        Self::new(Duration::from_secs(60))
    }

    /// Counts `n` events at `now`; when a line is due, returns how many
    /// events it stands for (these and all held back since the last line).
    pub fn note(&mut self, n: u64, now: Instant) -> Option<u64> {
        self.count += n;
        match self.last {
            Some(t) if now.duration_since(t) < self.period => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.count))
            }
        }
    }

    /// Whether a line was ever written (and so a recovery is worth a line).
    pub fn fired(&self) -> bool {
        self.last.is_some()
    }

    /// Forgets the past: the next event is reported at once.
    pub fn reset(&mut self) {
        *self = Self::new(self.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_one_line_a_minute_counting_what_it_held() {
        let mut t = Throttle::per_minute();
        let t0 = Instant::now();
        assert_eq!(t.note(3, t0), Some(3));
        let mut lines = 0;
        for s in 1..3600u64 {
            if t.note(5, t0 + Duration::from_secs(s)).is_some() {
                lines += 1;
            }
        }
        // An hour of events: one line a minute, not 18 000.
        assert_eq!(lines, 59);
        assert_eq!(t.note(1, t0 + Duration::from_secs(3660)), Some(5 * 59 + 1));
        assert!(t.fired());
        t.reset();
        assert!(!t.fired());
    }

    #[test]
    fn counters_report() {
        let c = Counters::default();
        c.drop(DropReason::BadMac);
        c.drop(DropReason::BadMac);
        c.tx_frames.fetch_add(3, Relaxed);
        assert!(c.summary().contains("bad_mac 2"));
        assert!(c.summary().contains("tx 3 frames"));
        c.drop_n(DropReason::Stale, 4);
        c.drop_n(DropReason::Stale, 0);
        let mut j = String::new();
        c.write_json_members(&mut j);
        assert!(j.starts_with("\"tx_frames\":3,"), "{j}");
        assert!(
            j.contains("\"bad_mac\":2")
                && j.ends_with("\"no_session\":0,\"ce_not_ect\":0,\"aqm\":0}"),
            "{j}"
        );
        assert!(j.contains("\"stale\":4"), "{j}");
    }
}
