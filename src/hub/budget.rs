//! The trial budget: how many verifications per second a hub spends on
//! datagrams from addresses no spoke has (each tried against the spokes'
//! keys until one opens it). Bounded, so that junk from everywhere costs
//! at most this much work; counted, so that a spent budget is said.

/// One second, in ns.
const SECOND_NS: u64 = 1_000_000_000;

/// Trials per second, refilled each second. Pure: `now` is passed in.
#[derive(Debug, Clone)]
pub struct Budget {
    per_second: u64,
    left: u64,
    window_start_ns: u64,
    /// Trials made.
    pub tried: u64,
    /// Trials refused because the budget was spent.
    pub refused: u64,
}

impl Budget {
    /// A budget of `per_second` trials each second.
    pub fn new(per_second: u64) -> Budget {
        Budget {
            per_second,
            left: per_second,
            window_start_ns: 0,
            tried: 0,
            refused: 0,
        }
    }

    /// Takes one trial at `now` (UNIX ns); false when this second's are spent.
    pub fn take(&mut self, now: u64) -> bool {
        if now.saturating_sub(self.window_start_ns) >= SECOND_NS || now < self.window_start_ns {
            self.window_start_ns = now;
            self.left = self.per_second;
        }
        if self.left == 0 {
            self.refused += 1;
            return false;
        }
        self.left -= 1;
        self.tried += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_second_and_refilled() {
        let mut b = Budget::new(3);
        let t0 = 5 * SECOND_NS;
        assert!((0..3).all(|i| b.take(t0 + i)));
        assert!(!b.take(t0 + 10));
        assert!(!b.take(t0 + SECOND_NS - 1));
        assert_eq!((b.tried, b.refused), (3, 2));
        assert!(b.take(t0 + SECOND_NS));
        assert_eq!(b.tried, 4);
    }

    #[test]
    fn a_clock_stepping_back_refills_instead_of_starving() {
        let mut b = Budget::new(1);
        assert!(b.take(10 * SECOND_NS));
        assert!(!b.take(10 * SECOND_NS));
        assert!(b.take(SECOND_NS));
    }

    #[test]
    fn over_many_seconds_never_more_than_the_budget() {
        let mut b = Budget::new(100);
        let mut per_sec = std::collections::HashMap::new();
        for i in 0..100_000u64 {
            let now = i * 37_000; // ~27 000 attempts a second
            if b.take(now) {
                *per_sec.entry(now / SECOND_NS).or_insert(0u64) += 1;
            }
        }
        // Windows start at the first trial after a second, so any wall
        // second overlaps at most two windows.
        assert!(per_sec.values().all(|&n| n <= 200), "{per_sec:?}");
        assert!(b.tried >= 100 * 3);
    }
}
