//! The replay window over a session's 64-bit counters: RFC 6479's bitmap
//! ring, as WireGuard keeps it. Counters are consecutive per sender, so a
//! bitmap of the last [`WINDOW`] counters remembers each exactly, in 4 KiB
//! per session (the HMAC wire's timestamps are not consecutive and need
//! `crate::replay`'s ring instead).

/// Bits per block of the ring.
const BLOCK_BITS: u64 = 64;
/// Blocks in the ring: one more than the window spans, so that the block
/// being filled never holds bits of the oldest one still in the window.
const BLOCKS: usize = 512;
/// How far behind the highest counter accepted a counter may be and still
/// be accepted once (32 704 datagrams: ~40 ms of reordering at 10 Gbit/s
/// of full-size frames).
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Accepted before.
    Duplicate,
    /// Further behind the highest than the window reaches.
    TooOld,
}

/// Which counters of one session were accepted.
#[derive(Clone)]
pub struct CounterWindow {
    ring: Box<[u64; BLOCKS]>,
    /// The highest counter accepted (meaningful once `any`).
    last: u64,
    any: bool,
}

impl std::fmt::Debug for CounterWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterWindow")
            .field("last", &self.last)
            .field("any", &self.any)
            .finish_non_exhaustive()
    }
}

impl Default for CounterWindow {
    fn default() -> Self {
        CounterWindow {
            ring: Box::new([0; BLOCKS]),
            last: 0,
            any: false,
        }
    }
}

impl CounterWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `counter` once: `Ok(true)` when it is the highest so far
    /// (the datagram that may move the peer), `Ok(false)` when it is an
    /// earlier one arriving late. Call it only for authentic datagrams,
    /// so that forged counters cannot move the window.
    pub fn accept(&mut self, counter: u64) -> Result<bool, Refused> {
        let block = counter / BLOCK_BITS;
        let newest = !self.any || counter > self.last;
        if newest {
            if self.any {
                // Clear the blocks the window moves over (all of them
                // after a jump of a whole ring or more).
                let current = self.last / BLOCK_BITS;
                let gap = (block - current).min(BLOCKS as u64);
                for i in 1..=gap {
                    self.ring[((current + i) % BLOCKS as u64) as usize] = 0;
                }
            } else {
                self.ring.fill(0);
            }
            self.last = counter;
            self.any = true;
        } else if self.last - counter > WINDOW {
            return Err(Refused::TooOld);
        }
        let slot = &mut self.ring[(block % BLOCKS as u64) as usize];
        let bit = 1u64 << (counter % BLOCK_BITS);
        if *slot & bit != 0 {
            return Err(Refused::Duplicate);
        }
        *slot |= bit;
        Ok(newest)
    }

    /// The highest counter accepted, if any.
    pub fn highest(&self) -> Option<u64> {
        self.any.then_some(self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_late_duplicate_and_too_old() {
        let mut w = CounterWindow::new();
        assert_eq!(w.accept(0), Ok(true));
        assert_eq!(w.accept(0), Err(Refused::Duplicate));
        assert_eq!(w.accept(2), Ok(true));
        assert_eq!(w.accept(1), Ok(false));
        assert_eq!(w.accept(1), Err(Refused::Duplicate));
        assert_eq!(w.accept(5 + WINDOW), Ok(true));
        assert_eq!(w.accept(5), Ok(false), "exactly WINDOW behind: still in");
        assert_eq!(w.accept(4), Err(Refused::TooOld));
        assert_eq!(w.accept(2), Err(Refused::TooOld));
        assert_eq!(w.accept(6), Ok(false));
        assert_eq!(w.highest(), Some(5 + WINDOW));
    }

    #[test]
    fn a_jump_forgets_what_it_leaves_behind_but_not_what_it_keeps() {
        let mut w = CounterWindow::new();
        for c in 0..1000 {
            assert_eq!(w.accept(c), Ok(true));
        }
        // A jump of less than a window: the old ones within it stay known.
        assert_eq!(w.accept(20_000), Ok(true));
        assert_eq!(w.accept(999), Err(Refused::Duplicate));
        assert_eq!(w.accept(1000), Ok(false));
        // A jump of many rings: nothing old is accepted.
        assert_eq!(w.accept(u64::MAX - 5), Ok(true));
        assert_eq!(w.accept(u64::MAX - 6), Ok(false));
        assert_eq!(w.accept(20_000), Err(Refused::TooOld));
        assert_eq!(w.accept(u64::MAX - 6), Err(Refused::Duplicate));
    }

    /// Against a model (a set of everything accepted, and the highest):
    /// any order of counters near each other gives the same verdicts.
    #[test]
    fn matches_a_model_on_shuffled_runs() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20 {
            let mut w = CounterWindow::new();
            let mut seen = std::collections::HashSet::new();
            let mut high: Option<u64> = None;
            let mut base = 0u64;
            for _ in 0..20_000 {
                let r = next();
                if r % 97 == 0 {
                    base += WINDOW / 2 + r % 3000;
                }
                let c = base + next() % (WINDOW + 2000);
                let expect = match high {
                    Some(h) if c <= h && h - c > WINDOW => Err(Refused::TooOld),
                    _ if seen.contains(&c) => Err(Refused::Duplicate),
                    h => Ok(h.is_none_or(|h| c > h)),
                };
                assert_eq!(w.accept(c), expect, "counter {c}, highest {high:?}");
                if expect.is_ok() {
                    seen.insert(c);
                    high = Some(high.map_or(c, |h| h.max(c)));
                }
            }
        }
    }
}
