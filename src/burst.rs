//! Bounds a packet thread's real-time bursts, as the kernel bounds its own
//! packet work: a softirq that has run for 2 ms hands the rest to
//! `ksoftirqd`, a normal thread, so that a flood cannot starve the host.
//! Under SCHED_FIFO a packet thread preempts every normal thread the
//! moment a packet is there (the short waits beside a bulk transfer), but
//! one that never finds its input empty (a flood, forged or not) would
//! keep its CPU. So a thread that has worked [`LIMIT_NS`] without finding
//! its input empty goes on at the normal policy, and takes its real-time
//! priority back the next time it finds its input empty. Pure: the engine
//! passes the clock in and applies the [`Turn`].

/// How long a packet thread may work under SCHED_FIFO without once finding
/// its input empty (ns). Not the kernel's 2 ms (`MAX_SOFTIRQ_TIME`): the
/// receiving thread of a transfer that fills the tunnel (AES-GCM at
/// 9 Gbit/s on 2 vCPUs) works 2 to 10 ms between empty looks, and a thread
/// cut there waits behind the transfer's own processes until its queue
/// empties, the ping beside it too (p99 1.9 and 3.6 ms in runs with 25 and
/// 40 cuts at 2 ms; 0.24–0.40 ms at 10 ms, where no burst was cut:
/// `docs/performance.md`). A flood still gets 10 ms at a time.
pub const LIMIT_NS: u64 = 10_000_000;

/// [`LIMIT_NS`] in milliseconds, for what the status and the logs say.
pub const LIMIT_MS: u64 = LIMIT_NS / 1_000_000;

/// What the thread is to do with its scheduling now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Nothing changes.
    Stay,
    /// Go on under the normal policy: the burst ran past the limit.
    Demote,
    /// Take the real-time priority back: the input was found empty.
    Restore,
}

/// One packet thread's burst: since when it has worked without finding
/// its input empty, and whether it was demoted for it.
#[derive(Debug, Clone)]
pub struct Burst {
    /// `None`: the thread does not run under SCHED_FIFO; nothing to bound.
    limit_ns: Option<u64>,
    since_ns: u64,
    demoted: bool,
}

impl Burst {
    /// A thread that runs under SCHED_FIFO (`fifo`) with bursts bounded
    /// to `limit_ns`, or one that does not (every turn is `Stay`).
    pub fn new(fifo: bool, limit_ns: u64, now_ns: u64) -> Burst {
        Burst {
            limit_ns: fifo.then_some(limit_ns),
            since_ns: now_ns,
            demoted: false,
        }
    }

    /// After each look at the thread's input: `empty` when it found none
    /// (it waited for it, or a look found nothing).
    pub fn at(&mut self, now_ns: u64, empty: bool) -> Turn {
        let Some(limit) = self.limit_ns else {
            return Turn::Stay;
        };
        if empty {
            self.since_ns = now_ns;
            if self.demoted {
                self.demoted = false;
                return Turn::Restore;
            }
            return Turn::Stay;
        }
        if !self.demoted && now_ns.saturating_sub(self.since_ns) > limit {
            self.demoted = true;
            return Turn::Demote;
        }
        Turn::Stay
    }

    /// Whether the thread runs demoted now.
    pub fn demoted(&self) -> bool {
        self.demoted
    }

    /// The thread could not take its priority back (the kernel refused):
    /// it stays as it is, and nothing more is bounded.
    pub fn give_up(&mut self) {
        self.limit_ns = None;
        self.demoted = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_past_the_limit_is_demoted_once_and_restored_when_the_input_empties() {
        let mut b = Burst::new(true, 2 * MS, 0);
        assert_eq!(b.at(MS, false), Turn::Stay);
        assert_eq!(b.at(2 * MS, false), Turn::Stay, "at the limit, not past");
        assert_eq!(b.at(2 * MS + 1, false), Turn::Demote);
        assert!(b.demoted());
        assert_eq!(b.at(50 * MS, false), Turn::Stay, "once");
        assert_eq!(b.at(51 * MS, true), Turn::Restore);
        assert!(!b.demoted());
        assert_eq!(b.at(52 * MS, true), Turn::Stay);
        // A new burst counts from the last empty look.
        assert_eq!(b.at(54 * MS, false), Turn::Stay);
        assert_eq!(b.at(54 * MS + 1, false), Turn::Demote);
    }

    #[test]
    fn a_thread_not_under_fifo_is_never_turned() {
        let mut b = Burst::new(false, 2 * MS, 0);
        assert_eq!(b.at(100 * MS, false), Turn::Stay);
        assert_eq!(b.at(200 * MS, true), Turn::Stay);
    }

    #[test]
    fn after_giving_up_nothing_is_bounded() {
        let mut b = Burst::new(true, 2 * MS, 0);
        assert_eq!(b.at(3 * MS, false), Turn::Demote);
        b.give_up();
        assert_eq!(b.at(4 * MS, true), Turn::Stay);
        assert_eq!(b.at(10 * MS, false), Turn::Stay);
    }

    /// Whatever the looks (a seeded walk, no extra crate): turns alternate
    /// Demote, Restore, ...; a Demote comes only after more than the limit
    /// without an empty look, a Restore only on an empty look, and a
    /// thread never runs demoted across an empty look.
    #[test]
    fn property_turns_alternate_and_follow_the_rule() {
        let mut next = crate::seeded::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let (mut demotes, mut restores) = (0, 0);
        for _ in 0..200 {
            let mut b = Burst::new(true, 2 * MS, 0);
            let (mut now, mut last_empty, mut demoted) = (0u64, 0u64, false);
            for _ in 0..200 {
                now += next() % (3 * MS);
                let empty = next().is_multiple_of(3);
                match b.at(now, empty) {
                    Turn::Demote => {
                        assert!(!demoted && !empty && now - last_empty > 2 * MS);
                        demoted = true;
                        demotes += 1;
                    }
                    Turn::Restore => {
                        assert!(demoted && empty);
                        demoted = false;
                        restores += 1;
                    }
                    Turn::Stay => assert!(
                        (empty && !demoted) || (!empty && (demoted || now - last_empty <= 2 * MS))
                    ),
                }
                if empty {
                    last_empty = now;
                }
                assert_eq!(b.demoted(), demoted);
            }
        }
        // The walk reached both turns often (else it proved little).
        assert!(demotes > 1000 && restores > 1000, "{demotes} {restores}");
    }
}
