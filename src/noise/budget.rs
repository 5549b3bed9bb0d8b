//! A token bucket in the caller's time: how much handshake work the
//! receiver may do per second.

/// `rate` events per second on average, `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// ns of credit one event costs.
    cost_ns: u64,
    /// Most credit held (ns).
    max_ns: u64,
    /// The time credit was counted from: credit = now − `from`, capped.
    from: u64,
}

impl Budget {
    /// `rate` (> 0) events a second, up to `burst` (> 0) at once; starts full.
    pub fn new(rate: u32, burst: u32) -> Budget {
        let cost_ns = 1_000_000_000 / u64::from(rate.max(1));
        Budget {
            cost_ns,
            max_ns: cost_ns * u64::from(burst.max(1)),
            from: 0,
        }
    }

    /// Takes one event's credit at `now`, if there is enough.
    pub fn take(&mut self, now: u64) -> bool {
        // Credit never exceeds the burst; a clock that went back gives none.
        let floor = now.saturating_sub(self.max_ns);
        if self.from < floor {
            self.from = floor;
        }
        if now.saturating_sub(self.from) >= self.cost_ns {
            self.from += self.cost_ns;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = Budget::new(10, 3);
        let t = 5_000_000_000;
        assert_eq!((0..5).filter(|_| b.take(t)).count(), 3);
        assert!(!b.take(t + 50_000_000));
        assert!(b.take(t + 100_000_000));
        assert!(!b.take(t + 100_000_000));
        // Over ten seconds: ten a second, plus the burst.
        let mut b = Budget::new(10, 3);
        let n = (0..10_000u64).filter(|i| b.take(t + i * 1_000_000)).count();
        assert_eq!(n, 3 + 99);
        // A clock at zero (1970) still starts with credit once a burst passed.
        let mut b = Budget::new(10, 1);
        assert!(!b.take(0));
        assert!(b.take(100_000_000));
    }
}
