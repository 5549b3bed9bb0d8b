//! When the receiving thread spins on its socket instead of sleeping
//! (`--busy-poll`).
//!
//! A quiet round trip through a tunnel pays a thread wake-up at each hop,
//! and each wake-up of an idle CPU (a VM's halted vCPU, which the host must
//! schedule again; a bare-metal core in a deep C-state) costs tens to
//! hundreds of µs. Spinning keeps the CPU awake and the receiving thread
//! running, so the next datagram is taken at once: the lowest latency, at
//! the price of a CPU kept busy while traffic flows. So it is opt-in, and
//! it stops: the thread spins only while something happened within the
//! last `linger` (a datagram received, or the sending thread sent after it
//! had slept: an answer is due), then sleeps as before.
//!
//! (Spinning only for the answer to each request, with a window learnt
//! from the answers' delays, was measured first: the answers were caught,
//! the round trip was not shorter; what pays is a CPU that stays awake.)
//!
//! Pure: the times are passed in; the engine's receiving thread owns it.

/// The receiving thread's spinning: how long after the last activity.
#[derive(Debug, Clone)]
pub struct BusyPoll {
    linger_ns: u64,
    /// The last activity (UNIX ns; 0: none yet).
    last_ns: u64,
}

impl BusyPoll {
    /// Spins until `linger_ns` after the last activity (0: never spins).
    pub fn new(linger_ns: u64) -> BusyPoll {
        BusyPoll {
            linger_ns,
            last_ns: 0,
        }
    }

    /// How long it spins after the last activity (0: off).
    pub fn linger_ns(&self) -> u64 {
        self.linger_ns
    }

    /// Something happened at `at`: a datagram was received, or the sending
    /// thread sent after it had slept. (An earlier time changes nothing.)
    pub fn activity(&mut self, at: u64) {
        self.last_ns = self.last_ns.max(at);
    }

    /// Until when the receiving thread is to spin on an empty socket at
    /// `now`; `None`: sleep.
    pub fn spin_until(&self, now: u64) -> Option<u64> {
        if self.linger_ns == 0 || self.last_ns == 0 {
            return None;
        }
        let until = self.last_ns.saturating_add(self.linger_ns);
        (now < until).then_some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn spins_for_the_linger_after_the_last_activity_then_sleeps() {
        let mut p = BusyPoll::new(50 * MS);
        let t = 1_000 * MS;
        assert_eq!(p.spin_until(t), None, "nothing happened yet");
        p.activity(t);
        assert_eq!(p.spin_until(t + MS), Some(t + 50 * MS));
        p.activity(t + 20 * MS);
        assert_eq!(p.spin_until(t + 60 * MS), Some(t + 70 * MS));
        assert_eq!(p.spin_until(t + 70 * MS), None);
        // A late report of an earlier activity moves nothing back.
        p.activity(t + 5 * MS);
        assert_eq!(p.spin_until(t + 69 * MS), Some(t + 70 * MS));
    }

    #[test]
    fn off_never_spins() {
        let mut p = BusyPoll::new(0);
        p.activity(1_000 * MS);
        assert_eq!(p.spin_until(1_000 * MS), None);
    }

    /// Property, over random activities and looks (times that go back
    /// too, as two threads' reports may): a spin ends at exactly `linger`
    /// after the latest activity, and it spins whenever that is less than
    /// `linger` ago.
    #[test]
    fn spins_exactly_within_the_linger() {
        let mut rng = crate::offload::testutil::XorShift(0x2545_f491_4f6c_dd1d);
        for _ in 0..500 {
            let linger = rng.next() % (200 * MS);
            let mut p = BusyPoll::new(linger);
            let mut last = 0u64;
            for _ in 0..100 {
                let at = 1 + rng.next() % (10_000 * MS);
                p.activity(at);
                last = last.max(at);
                let now = at + rng.next() % (400 * MS);
                let spin = p.spin_until(now);
                assert_eq!(spin.is_some(), linger > 0 && now < last + linger);
                if let Some(until) = spin {
                    assert_eq!(until, last + linger);
                }
            }
        }
    }
}
