//! The keepalive deadlines of the hub's spokes, for the TAP→UDP thread:
//! which spokes are due at `now`, and when the next one is, without a
//! look at every spoke on each wake-up (pure).
//!
//! A binary heap of `(deadline, slot, generation)`, with lazy deletion:
//! re-arming or disarming a slot bumps its generation, and entries of an
//! older generation are dropped when they reach the top. Why lazy: a
//! spoke's deadline moves on every datagram sent to it, and a heap cannot
//! find an entry to move it; a stale entry costs one pop later.
//!
//! A deadline may be early (the thread asks the spoke's sending half,
//! which says "not yet, at T" and the slot is armed again at T); it must
//! never be late. Sending only moves a keepalive later, so the thread
//! re-arms only when a deadline may come earlier (a peer learned) and
//! after each due one.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The deadlines of slots `0..n` (UNIX ns), each armed or not.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(u64, usize, u64)>>,
    /// Each slot's generation: the one entry that counts carries it.
    generation: Vec<u64>,
    /// Each slot's deadline, if armed (what the live entry says).
    armed: Vec<Option<u64>>,
    /// How many slots are armed (to know when stale entries dominate).
    live: usize,
}

impl Timers {
    /// No slot armed.
    pub fn new() -> Timers {
        Timers::default()
    }

    fn grow(&mut self, slot: usize) {
        if slot >= self.armed.len() {
            self.armed.resize(slot + 1, None);
            self.generation.resize(slot + 1, 0);
        }
    }

    /// Slot `slot` is due at `at` (replacing its deadline, earlier or later).
    pub fn arm(&mut self, slot: usize, at: u64) {
        self.grow(slot);
        if self.armed[slot] == Some(at) {
            return;
        }
        if self.armed[slot].is_none() {
            self.live += 1;
        }
        self.generation[slot] += 1;
        self.armed[slot] = Some(at);
        self.heap.push(Reverse((at, slot, self.generation[slot])));
        self.compact();
    }

    /// Slot `slot` is not due at all (removed, or nothing to send).
    pub fn disarm(&mut self, slot: usize) {
        if let Some(a) = self.armed.get_mut(slot)
            && a.take().is_some()
        {
            self.live -= 1;
            self.generation[slot] += 1;
        }
    }

    /// Slot `slot`'s deadline, if armed (the tests' view).
    #[cfg(test)]
    pub fn deadline(&self, slot: usize) -> Option<u64> {
        self.armed.get(slot).copied().flatten()
    }

    /// Drops stale entries from the top.
    fn prune(&mut self) {
        while let Some(&Reverse((_, slot, g))) = self.heap.peek() {
            if self.generation[slot] == g {
                return;
            }
            self.heap.pop();
        }
    }

    /// Keeps the heap within twice the armed slots (plus some), so that
    /// slots re-armed later and later do not grow it without bound; the
    /// rebuild is O(heap), at most once per as many arms: amortised O(1).
    fn compact(&mut self) {
        if self.heap.len() <= 2 * self.live + 64 {
            return;
        }
        let generation = &self.generation;
        self.heap
            .retain(|&Reverse((_, slot, g))| generation[slot] == g);
    }

    /// The earliest deadline, if any slot is armed.
    pub fn next(&mut self) -> Option<u64> {
        self.prune();
        self.heap.peek().map(|&Reverse((at, _, _))| at)
    }

    /// A slot due at `now` (its deadline at or before it), disarmed; the
    /// earliest first. Call it until `None`; re-arming a slot for a time
    /// after `now` meanwhile is fine.
    pub fn pop_due(&mut self, now: u64) -> Option<usize> {
        self.prune();
        let &Reverse((at, slot, _)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.disarm(slot);
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_in_order_rearm_and_disarm() {
        let mut t = Timers::new();
        assert_eq!(t.next(), None);
        t.arm(2, 30);
        t.arm(0, 10);
        t.arm(1, 20);
        t.arm(0, 25); // later: its entry at 10 is stale
        t.disarm(1);
        assert_eq!(t.next(), Some(25));
        assert_eq!(t.pop_due(24), None);
        assert_eq!(t.pop_due(100), Some(0));
        assert_eq!(t.pop_due(100), Some(2));
        assert_eq!(t.pop_due(100), None);
        assert_eq!(t.deadline(0), None);
        t.arm(5, 7);
        assert_eq!(t.deadline(5), Some(7));
        assert_eq!(t.pop_due(7), Some(5));
    }

    /// Against a naive model (each slot's deadline in a vector, due ones
    /// found by a scan): random arm, re-arm, disarm and advance sequences
    /// give the same due slots, in deadline order, and the same next
    /// deadline; the heap stays bounded.
    #[test]
    fn same_due_slots_as_a_naive_model() {
        let mut next = crate::seeded::xorshift(0x9e37_79b9_7f4a_7c15u64);
        for round in 0..200 {
            let slots = 1 + (next() % 40) as usize;
            let mut t = Timers::new();
            let mut model: Vec<Option<u64>> = vec![None; slots];
            let mut now = 1_000u64;
            for _ in 0..2_000 {
                let slot = (next() % slots as u64) as usize;
                match next() % 8 {
                    0..=3 => {
                        // Around now, sometimes in the past; repeats too.
                        let at = now + (next() % 200) - 50;
                        t.arm(slot, at);
                        model[slot] = Some(at);
                    }
                    4 => {
                        t.disarm(slot);
                        model[slot] = None;
                    }
                    5 | 6 => {
                        now += next() % 60;
                        let mut want: Vec<(u64, usize)> = model
                            .iter()
                            .enumerate()
                            .filter_map(|(i, d)| d.filter(|&d| d <= now).map(|d| (d, i)))
                            .collect();
                        want.sort_unstable();
                        let mut got = Vec::new();
                        while let Some(i) = t.pop_due(now) {
                            got.push((model[i].unwrap_or(u64::MAX), i));
                            model[i] = None;
                        }
                        // Equal deadlines may come in either order.
                        let mut sorted = got.clone();
                        sorted.sort_unstable();
                        assert_eq!(sorted, want, "round {round}");
                        let times: Vec<u64> = got.iter().map(|g| g.0).collect();
                        assert!(times.is_sorted(), "round {round}: {got:?}");
                    }
                    _ => {}
                }
                assert_eq!(t.next(), model.iter().flatten().min().copied());
                for (i, d) in model.iter().enumerate() {
                    assert_eq!(t.deadline(i), *d);
                }
                assert!(t.heap.len() <= 2 * slots + 65);
            }
        }
    }
}
