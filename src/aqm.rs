//! The receiver's view of its UDP socket's queue: how long each receive's
//! head waited there behind others (the kernel's arrival stamp against
//! the clock at the read), summed up per second for the status views, and
//! CoDel (`codel.rs`) deciding when to signal congestion. Pure: the caller
//! passes the times.
//!
//! A datagram that arrived while the thread already waited in `recv` found
//! the queue empty: what it waited is the thread's wake-up, not a queue,
//! and no signal to a sender can shorten it (a lone ping on a busy host
//! would be dropped for it). So the wait counted is from the arrival only
//! for a datagram that was queued before the thread asked for it, and
//! zero otherwise: CoDel's "less than a packet queued" rule (RFC 8289
//! §5.4), found without a system call.

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
}

impl Aqm {
    /// A watch; with `params`, CoDel signals congestion too.
    pub fn new(params: Option<Params>) -> Self {
        Aqm {
            codel: params.map(Codel::new),
            current: Second::default(),
            total_ns: 0,
        }
    }

    /// CoDel's parameters, if it runs.
    pub fn params(&self) -> Option<Params> {
        self.codel.as_ref().map(Codel::params)
    }

    /// A receive that returned at `now` (UNIX ns), asked for at `asked`,
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
        // Arrived to an empty queue (the thread was waiting): no queue.
        // (A clock stepped back between the stamp and the read: no wait.)
        let sojourn = match arrived < asked {
            true => now.saturating_sub(arrived),
            false => 0,
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
    /// the same wait behind others (arrived before the thread asked) is.
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
                    true => arrived + 1,
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

    #[test]
    fn codel_signals_only_when_asked_to_run() {
        let t0 = 1_700_000_000 * S;
        for (params, want) in [(None, 0), (Some(Params::DEFAULT), 1)] {
            let mut a = Aqm::new(params);
            let mut signals = 0;
            // 2 ms of standing queue for 20 ms, a receive every 10 µs.
            for i in 0..2_000 {
                let now = t0 + i * 10_000;
                signals += u64::from(a.on_receive(now - MS, now, Some(now - 2 * MS)).0);
            }
            assert_eq!(signals.min(1), want, "{params:?}");
            assert_eq!(a.params(), params);
        }
    }
}
