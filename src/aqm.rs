//! The receiver's view of its UDP socket's queue: how long each receive's
//! head waited there behind others (the kernel's arrival stamp against
//! the clock at the read), summed up per second for the status views, and
//! CoDel (`codel.rs`) deciding when to signal congestion. Pure: the caller
//! passes the times.
//!
//! A receive that had to wait for its datagram (the call took longer
//! than [`BLOCKED_NS`]) found the queue empty: what that datagram waited
//! is the thread's wake-up, not a queue, and no signal to a sender can
//! shorten it (a lone ping on a busy host would be dropped for it). Such a
//! receive counts no wait: CoDel's "less than a packet queued" rule (RFC
//! 8289 §5.4), found without a system call.
//!
//! The stamps are the kernel's wall clock, the reads this process's: the
//! same clock, unless something fakes the process's (libfaketime, which
//! the tests use to skew a host). So the least `now - arrived` of the
//! receives that waited, over the last 10 to 20 s, is taken as the two
//! clocks' offset (plus the least wake-up, µs) and taken off each wait.

use crate::codel::{Codel, Params};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One second's sojourn times, as the status views show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Second {
    /// The UNIX second these figures are of (0: none yet).
    pub second: u64,
    /// Receives in it.
    pub receives: u64,
    /// Their mean sojourn (ns).
    pub mean_ns: u64,
    /// The longest (ns).
    pub max_ns: u64,
}

/// The last full second of a receive queue's sojourn times, shared with
/// the status views (written once a second by the receiving thread).
#[derive(Debug, Default)]
pub struct QueueStats {
    second: [AtomicU64; 4],
}

impl QueueStats {
    /// Publishes a second.
    pub fn set(&self, s: Second) {
        for (a, v) in self
            .second
            .iter()
            .zip([s.second, s.receives, s.mean_ns, s.max_ns])
        {
            a.store(v, Relaxed);
        }
    }

    /// The last second published.
    pub fn get(&self) -> Second {
        let [second, receives, mean_ns, max_ns] =
            std::array::from_fn(|i| self.second[i].load(Relaxed));
        Second {
            second,
            receives,
            mean_ns,
            max_ns,
        }
    }

    /// The last second published, if it is recent at `now` (UNIX ns): the
    /// second before `now`'s, or the one before that. Older figures say
    /// nothing of now (the queue was idle since).
    pub fn recent(&self, now: u64) -> Option<Second> {
        let s = self.get();
        (s.receives > 0 && s.second + 2 >= now / 1_000_000_000).then_some(s)
    }
}

/// A receiving socket's queue watch and AQM.
#[derive(Debug, Clone)]
pub struct Aqm {
    codel: Option<Codel>,
    /// The second being summed: its start (UNIX s), receives, total and
    /// longest sojourn.
    current: Second,
    total_ns: u64,
    /// The least `now - arrived` (ns) of the receives that waited, in the
    /// current 10 s window and in the one before it (see the module
    /// documentation).
    floor: [Option<u64>; 2],
    /// The current floor window's start (UNIX s, a multiple of 10).
    floor_since: u64,
}

/// How long each of the floor's two windows lasts (s).
const FLOOR_WINDOW_S: u64 = 10;

/// A receive call that took longer than this (ns) waited for its datagram:
/// the queue was empty when it was asked. (Taking a queued 64 KiB GRO run
/// is a copy of a few µs.)
pub const BLOCKED_NS: u64 = 50_000;

/// Whether a receive asked at `asked` (UNIX ns), which took `took` ns,
/// found its datagram already queued rather than waiting for it: the
/// call was quick, or the kernel's arrival stamp is from before the ask.
/// The stamp settles what the call's length cannot: a thread preempted
/// (or emulated, under qemu) during a receive of a queued datagram takes
/// long and still found a queue.
///
/// For the look ahead only, not for [`Aqm::on_receive`]'s own judgement:
/// the stamp is compared with this process's clock as it is, and under a
/// clock faked ahead of the kernel's (libfaketime, see the module
/// documentation) every stamp is from before every ask. Here that costs
/// one look (a system call) after a receive that waited; in the AQM
/// every receive would look queued, the clocks' offset would never be
/// learnt, and it would count as sojourn.
pub fn found_queued(asked: u64, took: u64, arrived: Option<u64>) -> bool {
    took <= BLOCKED_NS || arrived.is_some_and(|at| at < asked)
}

impl Aqm {
    /// A watch; with `params`, CoDel signals congestion too.
    pub fn new(params: Option<Params>) -> Self {
        Aqm {
            codel: params.map(Codel::new),
            current: Second::default(),
            total_ns: 0,
            floor: [None, None],
            floor_since: 0,
        }
    }

    /// The offset of the kernel's stamps from this process's clock, as the
    /// least `now - arrived` of the receives that waited in the last 10 to
    /// 20 s (`sample`: this receive's, if it waited); 0 before the first.
    fn floor(&mut self, now: u64, sample: Option<u64>) -> u64 {
        let window = now / 1_000_000_000 / FLOOR_WINDOW_S * FLOOR_WINDOW_S;
        if window != self.floor_since {
            // The window before is kept only if it is the one just ended.
            let kept = (window == self.floor_since + FLOOR_WINDOW_S).then_some(self.floor[1]);
            self.floor = [kept.flatten(), None];
            self.floor_since = window;
        }
        if let Some(raw) = sample {
            self.floor[1] = Some(self.floor[1].map_or(raw, |f| f.min(raw)));
        }
        match self.floor {
            [Some(a), Some(b)] => a.min(b),
            [a, b] => a.or(b).unwrap_or(0),
        }
    }

    /// CoDel's parameters, if it runs.
    pub fn params(&self) -> Option<Params> {
        self.codel.as_ref().map(Codel::params)
    }

    /// A receive that returned at `now` (UNIX ns), called at `asked`,
    /// whose head arrived at `arrived` (the kernel's stamp; `None` without
    /// one): whether to signal congestion on its next frame, and the
    /// second just completed, if this receive began a new one (for the
    /// status views).
    pub fn on_receive(
        &mut self,
        asked: u64,
        now: u64,
        arrived: Option<u64>,
    ) -> (bool, Option<Second>) {
        let Some(arrived) = arrived else {
            return (false, None);
        };
        let raw = now.saturating_sub(arrived);
        // The call waited: the queue was empty (see the module documentation).
        let waited = now.saturating_sub(asked) > BLOCKED_NS;
        let offset = self.floor(now, waited.then_some(raw));
        let sojourn = match waited {
            true => 0,
            false => raw.saturating_sub(offset),
        };
        let second = now / 1_000_000_000;
        // (u64 sums: 584 years of sojourn before they saturate.)
        let mut done = None;
        if second != self.current.second {
            if self.current.receives > 0 {
                let mut s = self.current;
                s.mean_ns = self.total_ns / s.receives;
                done = Some(s);
            }
            self.current = Second {
                second,
                ..Second::default()
            };
            self.total_ns = 0;
        }
        self.current.receives += 1;
        self.total_ns = self.total_ns.saturating_add(sojourn);
        self.current.max_ns = self.current.max_ns.max(sojourn);
        let signal = match self.codel.as_mut() {
            Some(c) => c.dequeue(now, sojourn),
            None => false,
        };
        (signal, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    #[test]
    fn a_stamp_before_the_ask_means_queued_however_long_the_call() {
        let asked = 100 * S;
        // Quick: queued, with or without a stamp.
        assert!(found_queued(asked, BLOCKED_NS, None));
        assert!(found_queued(asked, 1_000, Some(asked + 500)));
        // Slow: waited, unless the datagram was there before the ask.
        assert!(!found_queued(asked, BLOCKED_NS + 1, None));
        assert!(!found_queued(asked, 3 * MS, Some(asked + MS)));
        assert!(!found_queued(asked, 3 * MS, Some(asked)));
        assert!(found_queued(asked, 3 * MS, Some(asked - 1)));
    }

    #[test]
    fn seconds_are_summed_and_handed_over_when_the_next_begins() {
        let mut a = Aqm::new(None);
        let t0 = 1_700_000_000 * S;
        assert_eq!(a.on_receive(t0, t0 + 1, Some(t0 + 1 - MS)), (false, None));
        assert_eq!(
            a.on_receive(t0, t0 + 2, Some(t0 + 2 - 3 * MS)),
            (false, None)
        );
        // No stamp: not counted.
        assert_eq!(a.on_receive(t0, t0 + 3, None), (false, None));
        let (_, done) = a.on_receive(t0 + S, t0 + S + 5, Some(t0 + S + 5));
        assert_eq!(
            done,
            Some(Second {
                second: 1_700_000_000,
                receives: 2,
                mean_ns: 2 * MS,
                max_ns: 3 * MS
            })
        );
        // A stamp after the read (clock stepped back): no wait.
        let (_, done) = a.on_receive(t0 + 3 * S, t0 + 3 * S, Some(t0 + 4 * S));
        assert_eq!(done.map(|d| (d.receives, d.max_ns)), Some((1, 0)));
    }

    /// A datagram that arrived while the thread waited in `recv` found no
    /// queue, however late the thread woke: a lone ping every 100 ms with
    /// 3 ms of wake-up each time is never signalled, and waited nothing;
    /// the same wait behind others (the call returned at once: the
    /// datagram was there) is.
    #[test]
    fn a_late_wake_up_is_not_a_queue() {
        let t0 = 1_700_000_000 * S;
        for (queued, want) in [(false, 0), (true, 1)] {
            let mut a = Aqm::new(Some(Params::DEFAULT));
            let mut signals = 0;
            let mut worst = 0;
            for i in 0..100 {
                let arrived = t0 + i * 100 * MS;
                let asked = match queued {
                    true => arrived + 3 * MS - 5_000,
                    false => arrived - 1,
                };
                let (s, done) = a.on_receive(asked, arrived + 3 * MS, Some(arrived));
                signals += u64::from(s);
                worst = worst.max(done.map_or(0, |d| d.max_ns));
            }
            assert_eq!(signals.min(1), want, "queued {queued}");
            assert_eq!(worst, want * 3 * MS, "queued {queued}");
        }
    }

    /// The stamps 1 day behind the process's clock (libfaketime +1d), or
    /// 0.5 s, or not at all: lone datagrams every 100 ms, each waited for
    /// (read 40 µs after it came), count no queue and teach the offset; a
    /// standing queue after them (2 ms, each datagram there when asked for)
    /// is seen as 2 ms at most, not a day, and signalled.
    #[test]
    fn a_process_clock_ahead_of_the_stamps_is_learnt() {
        let t0 = 1_700_000_000 * S;
        for offset in [86_400 * S, S / 2, 0] {
            // Lone datagrams first (the floor: 40 µs of wake-up).
            let mut a = Aqm::new(Some(Params::DEFAULT));
            let mut signals = 0;
            let mut worst = 0;
            for i in 0..300 {
                let read = t0 + i * 100 * MS;
                let arrived = read - 40_000 - offset;
                let (s, done) = a.on_receive(read - 60_000, read, Some(arrived));
                signals += u64::from(s);
                worst = worst.max(done.map_or(0, |d| d.max_ns));
            }
            assert_eq!((signals, worst), (0, 0), "offset {offset}");
            // Then a standing 2 ms queue for 50 ms.
            let mut signals = 0;
            for i in 0..5_000 {
                let read = t0 + 30 * S + i * 10_000;
                let arrived = read - 2 * MS - offset;
                let (s, done) = a.on_receive(read - 5_000, read, Some(arrived));
                signals += u64::from(s);
                if let Some(d) = done {
                    assert!(d.max_ns <= 2 * MS, "offset {offset}: {d:?}");
                }
            }
            assert!(signals > 0, "offset {offset}");
        }
    }

    #[test]
    fn codel_signals_only_when_asked_to_run() {
        let t0 = 1_700_000_000 * S;
        for (params, want) in [(None, 0), (Some(Params::DEFAULT), 1)] {
            let mut a = Aqm::new(params);
            let mut signals = 0;
            // 2 ms of standing queue for 20 ms, a receive every 10 µs.
            for i in 0..2_000 {
                let now = t0 + i * 10_000;
                signals += u64::from(a.on_receive(now - 5_000, now, Some(now - 2 * MS)).0);
            }
            assert_eq!(signals.min(1), want, "{params:?}");
            assert_eq!(a.params(), params);
        }
    }
}
