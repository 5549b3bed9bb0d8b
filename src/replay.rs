//! Anti-replay window over the senders' nanosecond timestamps.
//!
//! The idea of RFC 6479 / WireGuard's counter window, adapted to timestamps
//! that are not consecutive: instead of a bitmap over counters, the window
//! remembers the last [`CAPACITY`] accepted timestamps exactly, in a ring in
//! arrival order, and a `floor` below which everything is refused. When the
//! ring is full the oldest entry is evicted and the floor rises to it, so
//! every timestamp that was ever accepted is either still remembered or at
//! most the floor: a duplicate is never accepted, in constant memory.
//!
//! A frame reordered by fewer than [`CAPACITY`] accepted frames is still
//! delivered (32768 frames: 200 ms of reordering up to ~163 000 frames/s,
//! about 1.8 Gbit/s of 1400-byte frames; at higher rates the window still
//! spans 32768 frames, i.e. 100 ms at 3.6 Gbit/s). The size trades reorder
//! depth against memory: 784 KiB per receiver, fixed, keeps a whole taptun
//! process under 4 MB resident.
//! Only freshness (max age) bounds it in time.
//!
//! # Layout
//!
//! Nearly every datagram arrives in order: a sender's timestamps strictly
//! increase (a batch gets t, t+1, t+2, ... from one clock reading), so the
//! usual timestamp is above every one accepted before it, the *newest*.
//! It cannot be a duplicate, and the ring alone remembers it: the newest
//! ones rise along the ring, so finding one again is a search, not a hash
//! lookup. For that search `peaks` holds, per block of 32 ring entries,
//! the highest timestamp accepted up to the block's end; peaks rise from
//! block to block, and the first block whose peak reaches `ts` is the one
//! that holds `ts` if it came as a newest one: scanning that block
//! answers. Only the *late* ones (accepted below the highest) also go into
//! an open-addressing hash set (linear probing, a multiplicative hash whose
//! odd multiplier is drawn at random per window, load at most 1/2 as at
//! most [`CAPACITY`] are remembered). On eviction the floor
//! tells them apart: a late entry came after a higher one, which leaves
//! first and raises the floor past it, while a newest one is above every
//! entry evicted before it.
//!
//! So an in-order datagram costs a floor check and two writes, all in
//! cache lines used one after the other, instead of two or three random
//! lines of a 512 KiB table when every entry went into the hash set: ~4 ns
//! instead of 30-50 ns, and the gap widens once HMAC and packet buffers
//! have evicted the table. A late one costs the hash set as before plus
//! the search, which gallops from the block where the last one ended
//! (late datagrams come together): ~5-10 ns more, O(log n) however an
//! attacker orders the datagrams. Putting 8 consecutive timestamps in one
//! cache line of the hash set instead (every entry still in it) was
//! slower: runs form long probe clusters (12 probes per insert and 16 per
//! deletion on average, hundreds at worst).

use std::fmt;

/// How many accepted timestamps the window remembers exactly.
pub const CAPACITY: usize = 1 << 15;
const TABLE_BITS: u32 = 16;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
const EMPTY: u64 = 0;
/// Ring entries per peak: 4 cache lines to scan.
const BLOCK_BITS: u32 = 5;
const BLOCK: usize = 1 << BLOCK_BITS;
/// The window spans at most `CAPACITY / BLOCK + 1` blocks: with twice as
/// many peaks, those of the blocks in the window never share a slot.
const PEAKS: usize = 2 * CAPACITY / BLOCK;
const _: () = assert!(CAPACITY.is_multiple_of(BLOCK) && TABLE_SIZE >= 2 * CAPACITY);

/// Why the window refused a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// This timestamp was accepted before.
    Duplicate,
    /// Older than everything the window still remembers.
    TooOld,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Duplicate => f.write_str("replayed datagram (timestamp already accepted)"),
            ReplayError::TooOld => f.write_str("datagram older than the replay window"),
        }
    }
}

impl std::error::Error for ReplayError {}

/// The per-receiver replay window.
pub struct ReplayWindow {
    highest: u64,
    floor: u64,
    /// Accepted timestamps in arrival order: the `n`-th one accepted (from
    /// 0) at `n % CAPACITY`, the last `min(count, CAPACITY)` remembered.
    ring: Box<[u64]>,
    /// How many were accepted in all: the number of the next one.
    count: u64,
    /// The highest timestamp accepted up to the last entry of each block
    /// (entries `b * BLOCK ..`), block `b` at `b % PEAKS`.
    peaks: Box<[u64]>,
    /// The block where the last search ended.
    finger: u64,
    /// The late timestamps in the window, open addressing.
    late: Box<[u64]>,
    /// The hash's multiplier (odd; random unless the system has no randomness).
    mult: u64,
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("highest", &self.highest)
            .field("floor", &self.floor)
            .field("len", &self.len())
            .finish()
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// Fibonacci hashing's multiplier, used when the system has no randomness.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// A multiplicative hash's odd multiplier, random per window: an on-path
/// attacker chooses which genuine timestamps arrive late, and with a
/// multiplier it knows it could pick ones that share a region of the table
/// and make every lookup walk a long probe chain.
fn random_multiplier() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_ne_bytes(b) | 1,
        Err(_) => FIBONACCI,
    }
}

impl ReplayWindow {
    /// An empty window. Timestamp 0 is never accepted.
    pub fn new() -> Self {
        ReplayWindow {
            highest: 0,
            floor: 0,
            ring: vec![0; CAPACITY].into_boxed_slice(),
            count: 0,
            peaks: vec![0; PEAKS].into_boxed_slice(),
            finger: 0,
            late: vec![EMPTY; TABLE_SIZE].into_boxed_slice(),
            mult: random_multiplier(),
        }
    }

    /// The home slot of `ts` in the set of late timestamps: a
    /// multiplicative hash spreads consecutive timestamps over the table.
    #[inline]
    fn slot(&self, ts: u64) -> usize {
        (ts.wrapping_mul(self.mult) >> (64 - TABLE_BITS)) as usize
    }

    /// The highest timestamp accepted so far (0 before the first).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// How many timestamps the window remembers.
    fn len(&self) -> usize {
        self.count.min(CAPACITY as u64) as usize
    }

    /// Accepts `ts` once: `Ok(true)` when it is the newest ever seen,
    /// `Ok(false)` when it is an older one not seen before.
    pub fn accept(&mut self, ts: u64) -> Result<bool, ReplayError> {
        // Where the next entry goes: when full, the oldest, which is about
        // to be forgotten and becomes the floor.
        let next = self.count as usize & (CAPACITY - 1);
        let full = self.len() == CAPACITY;
        let floor = if full {
            self.floor.max(self.ring[next])
        } else {
            self.floor
        };
        if ts <= floor {
            return Err(ReplayError::TooOld);
        }
        // Above everything accepted: not a duplicate, no search.
        let newest = ts > self.highest;
        if !newest {
            if self.ring_contains(ts) {
                return Err(ReplayError::Duplicate);
            }
            // Inserted before the eviction below, which may move entries
            // but keeps the set valid.
            let vacant = self.late_vacant(ts).ok_or(ReplayError::Duplicate)?;
            self.late[vacant] = ts;
        } else {
            self.highest = ts;
        }
        if full {
            let oldest = self.ring[next];
            // Late ones are at most the floor, newest ones above it.
            if oldest <= self.floor {
                self.late_remove(oldest);
            }
            self.floor = floor;
        }
        self.ring[next] = ts;
        self.peaks[(self.count >> BLOCK_BITS) as usize & (PEAKS - 1)] = self.highest;
        self.count += 1;
        Ok(newest)
    }

    /// Whether `ts`, at most the highest, is in the ring: certainly if it
    /// was accepted as the newest (late ones only if they share its block).
    fn ring_contains(&mut self, ts: u64) -> bool {
        let first = self.count - self.len() as u64;
        let block =
            self.first_peak_reaching(ts, first >> BLOCK_BITS, (self.count - 1) >> BLOCK_BITS);
        self.finger = block;
        // The block's entries still in the window; no block wraps around the ring.
        let start = (block << BLOCK_BITS).max(first);
        let end = ((block + 1) << BLOCK_BITS).min(self.count);
        let at = start as usize & (CAPACITY - 1);
        let entries = &self.ring[at..at + (end - start) as usize];
        // No early exit: the compiler compares several at once.
        entries.iter().fold(false, |found, &t| found | (t == ts))
    }

    fn peak(&self, block: u64) -> u64 {
        self.peaks[block as usize & (PEAKS - 1)]
    }

    /// The first block in `lo..=hi` whose peak is at least `ts`, knowing
    /// the peak of `hi` is. Peaks rise from block to block: gallop from
    /// the finger, then bisect, O(log distance).
    fn first_peak_reaching(&self, ts: u64, mut lo: u64, mut hi: u64) -> u64 {
        let from = self.finger.clamp(lo, hi);
        let mut step = 1;
        if self.peak(from) >= ts {
            hi = from;
            while hi > lo {
                let b = hi.saturating_sub(step).max(lo);
                if self.peak(b) < ts {
                    lo = b + 1;
                    break;
                }
                hi = b;
                step *= 2;
            }
        } else {
            lo = from + 1;
            while lo < hi {
                let b = (lo + step - 1).min(hi);
                if self.peak(b) >= ts {
                    hi = b;
                    break;
                }
                lo = b + 1;
                step *= 2;
            }
        }
        // The answer is in lo..=hi.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.peak(mid) < ts {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Where `ts` goes in the late set, or `None` if it is there.
    fn late_vacant(&self, ts: u64) -> Option<usize> {
        let mut i = self.slot(ts);
        loop {
            match self.late[i] {
                EMPTY => return Some(i),
                t if t == ts => return None,
                _ => i = (i + 1) & (TABLE_SIZE - 1),
            }
        }
    }

    fn late_remove(&mut self, ts: u64) {
        let mask = TABLE_SIZE - 1;
        let mut i = self.slot(ts);
        while self.late[i] != ts {
            debug_assert_ne!(self.late[i], EMPTY, "late entry {ts} in the set");
            if self.late[i] == EMPTY {
                return;
            }
            i = (i + 1) & mask;
        }
        // Backward-shift deletion keeps linear probing correct without tombstones.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while self.late[j] != EMPTY {
            let home = self.slot(self.late[j]);
            let dist_j = j.wrapping_sub(home) & mask;
            let dist_hole = j.wrapping_sub(hole) & mask;
            if dist_j >= dist_hole {
                self.late[hole] = self.late[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.late[hole] = EMPTY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Late timestamps chosen so that Fibonacci hashing puts them all in
    /// 64 neighbouring slots, as an attacker who knew the multiplier would
    /// choose them: with the window's random multiplier they spread out,
    /// and no lookup walks far.
    #[test]
    fn chosen_late_timestamps_do_not_cluster() {
        let fib = |ts: u64| (ts.wrapping_mul(FIBONACCI) >> (64 - TABLE_BITS)) as usize;
        let base = 1_763_900_000_000_000_000u64;
        let chosen: Vec<u64> = (base..).filter(|&t| fib(t) < 64).take(4000).collect();
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(chosen[chosen.len() - 1] + 1), Ok(true));
        for &t in &chosen {
            assert_eq!(w.accept(t), Ok(false));
        }
        // The longest probe from any home slot to its entry.
        let longest = chosen
            .iter()
            .map(|&t| {
                let home = w.slot(t);
                let at = (0..TABLE_SIZE)
                    .map(|k| (home + k) & (TABLE_SIZE - 1))
                    .find(|&i| w.late[i] == t)
                    .expect("accepted late timestamps are in the set");
                at.wrapping_sub(home) & (TABLE_SIZE - 1)
            })
            .max()
            .unwrap_or(0);
        assert!(longest < 64, "a probe walks {longest} slots");
    }

    /// A small deterministic PRNG so property tests need no extra crate.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn basic() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(0), Err(ReplayError::TooOld));
        assert_eq!(w.accept(10), Ok(true));
        assert_eq!(w.accept(10), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(5), Ok(false));
        assert_eq!(w.accept(5), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(11), Ok(true));
        assert_eq!(w.highest(), 11);
    }

    #[test]
    fn eviction_raises_floor() {
        let mut w = ReplayWindow::new();
        for ts in 1..=CAPACITY as u64 {
            assert_eq!(w.accept(ts * 1000), Ok(true));
        }
        // Full: the oldest (1000) is the floor-to-be; anything at or below it is refused.
        assert_eq!(w.accept(1000), Err(ReplayError::TooOld));
        assert_eq!(w.accept(999), Err(ReplayError::TooOld));
        // Something between remembered entries is still accepted once.
        assert_eq!(w.accept(1500), Ok(false));
        assert_eq!(w.accept(1500), Err(ReplayError::TooOld));
        for ts in 2..=CAPACITY as u64 {
            assert!(w.accept(ts * 1000).is_err(), "{ts}");
        }
    }

    /// Random reorderings and duplications of a stream: every original is
    /// delivered exactly once as long as it is displaced by less than the
    /// capacity, and no duplicate is ever delivered.
    #[test]
    fn property_reorder_and_duplicate() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for round in 0..6 {
            // More than the capacity, so that eviction and the floor are exercised.
            let n = 3 * CAPACITY;
            let base = 1_763_900_000_000_000_000u64;
            // Strictly increasing timestamps with random gaps (ns clocks jump).
            let mut ts = Vec::with_capacity(n);
            let mut t = base;
            for _ in 0..n {
                t += 1 + rng.below(5000) as u64;
                ts.push(t);
            }
            // Local reordering: swap elements at most `d` apart.
            let d = if round % 2 == 0 { 1000 } else { 50 };
            let mut order: Vec<u64> = ts.clone();
            for i in 0..n {
                let j = (i + rng.below(d)).min(n - 1);
                order.swap(i, j);
            }
            // Duplicates injected anywhere later in the stream.
            let mut stream = Vec::with_capacity(n * 2);
            for (i, &x) in order.iter().enumerate() {
                stream.push(x);
                if rng.below(3) == 0 {
                    let back = order[i.saturating_sub(rng.below(3 * CAPACITY))];
                    stream.push(back);
                }
            }
            let mut w = ReplayWindow::new();
            let mut delivered = std::collections::HashSet::new();
            for &x in &stream {
                if w.accept(x).is_ok() {
                    assert!(delivered.insert(x), "round {round}: {x} delivered twice");
                }
            }
            assert_eq!(delivered.len(), n, "round {round}: originals lost");
        }
    }

    /// Adversarial: arbitrary values, including huge jumps, never deliver twice.
    #[test]
    fn property_no_duplicate_on_random_input() {
        let mut rng = XorShift(42);
        let mut w = ReplayWindow::new();
        let mut seen = std::collections::HashSet::new();
        let mut recent: Vec<u64> = Vec::new();
        for _ in 0..200_000 {
            let x = match rng.below(4) {
                0 => rng.next(),
                1 if !recent.is_empty() => recent[rng.below(recent.len())],
                _ => 1 + rng.below(100_000) as u64,
            };
            if w.accept(x).is_ok() {
                assert!(seen.insert(x), "{x} delivered twice");
                recent.push(x);
            }
        }
    }

    /// Differential: the window against a plain model (a queue in arrival
    /// order and a `HashSet`), verdict for verdict, over a stream long
    /// enough to evict many times, with duplicates, late and huge values.
    /// Catches a hash-table slip (lost or phantom entries after deletions).
    #[test]
    fn matches_reference_model() {
        use std::collections::{HashSet, VecDeque};
        let mut rng = XorShift(0xfeed_beef);
        let mut w = ReplayWindow::new();
        let (mut queue, mut set) = (VecDeque::new(), HashSet::new());
        let (mut floor, mut highest) = (0u64, 0u64);
        let mut t = 1_000_000u64;
        for i in 0..(4 * CAPACITY) {
            t += 1 + rng.below(5000) as u64;
            let x = match rng.below(10) {
                0 | 4 | 5 if !queue.is_empty() => queue[rng.below(queue.len())],
                1 => t.saturating_sub(rng.below(2 * CAPACITY * 2500) as u64),
                2 => floor.saturating_sub(rng.below(3) as u64) + rng.below(3) as u64,
                3 => rng.next() >> rng.below(64),
                _ => t,
            };
            let want = if x <= floor || (queue.len() == CAPACITY && x <= floor.max(queue[0])) {
                Err(ReplayError::TooOld)
            } else if set.contains(&x) {
                Err(ReplayError::Duplicate)
            } else {
                if queue.len() == CAPACITY {
                    let old = queue.pop_front().expect("full");
                    set.remove(&old);
                    floor = floor.max(old);
                }
                queue.push_back(x);
                set.insert(x);
                let newest = x > highest;
                highest = highest.max(x);
                Ok(newest)
            };
            assert_eq!(w.accept(x), want, "step {i}: {x}");
        }
    }

    /// The reference model of `matches_reference_model`, for other streams.
    #[derive(Default)]
    struct Model {
        queue: std::collections::VecDeque<u64>,
        set: std::collections::HashSet<u64>,
        floor: u64,
        highest: u64,
    }

    impl Model {
        fn accept(&mut self, x: u64) -> Result<bool, ReplayError> {
            let full = self.queue.len() == CAPACITY;
            if x <= self.floor || (full && x <= self.floor.max(self.queue[0])) {
                return Err(ReplayError::TooOld);
            }
            if self.set.contains(&x) {
                return Err(ReplayError::Duplicate);
            }
            if full {
                let old = self.queue.pop_front().expect("full");
                self.set.remove(&old);
                self.floor = self.floor.max(old);
            }
            self.queue.push_back(x);
            self.set.insert(x);
            let newest = x > self.highest;
            self.highest = self.highest.max(x);
            Ok(newest)
        }
    }

    /// What taptun senders send: runs of 1 to 64 consecutive timestamps
    /// (one batch, one clock reading), runs 20-60 µs apart or right after
    /// one another (a clock that did not move), `n` in all.
    fn batched_stream(rng: &mut XorShift, n: usize) -> Vec<u64> {
        let mut t = 1_763_900_000_000_000_000u64;
        let mut sent = Vec::with_capacity(n + 64);
        while sent.len() < n {
            t += match rng.below(4) {
                0 => 1 + rng.below(3) as u64,
                _ => 20_000 + rng.below(40_000) as u64,
            };
            for _ in 0..1 + rng.below(64) {
                sent.push(t);
                t += 1;
            }
        }
        sent
    }

    /// Differential, on the shape the receiver sees most: batched runs of
    /// consecutive timestamps, delivered mostly in order, with frames held
    /// back (some beyond the window), frames and whole runs ahead of their
    /// turn, runs reversed, and replays near and far, over many evictions.
    /// Verdict for verdict against the model.
    #[test]
    fn matches_reference_model_on_runs() {
        for seed in [1u64, 0x5eed, 0xdead_beef_cafe] {
            let mut rng = XorShift(seed);
            let sent = batched_stream(&mut rng, 5 * CAPACITY);
            let mut stream = Vec::with_capacity(2 * sent.len());
            // (deliver after the original at this index, timestamp)
            let mut held: Vec<(usize, u64)> = Vec::new();
            let mut i = 0;
            while i < sent.len() {
                match rng.below(1000) {
                    // held back: a little, or longer than the window spans
                    0..=19 => held.push((i + 1 + rng.below(300), sent[i])),
                    20..=24 => held.push((i + CAPACITY - 100 + rng.below(200), sent[i])),
                    // ahead of its turn (it comes again in its place)
                    25 => stream.push(sent[(i + 1 + rng.below(1000)).min(sent.len() - 1)]),
                    // a run of up to 64 reversed
                    26..=30 => {
                        let end = (i + 1 + rng.below(64)).min(sent.len());
                        stream.extend(sent[i..end].iter().rev());
                        i = end;
                        continue;
                    }
                    // replays: recent ones, a run, anything
                    31..=60 => stream.push(sent[i.saturating_sub(rng.below(100))]),
                    61..=65 => {
                        let from = i.saturating_sub(rng.below(3 * CAPACITY));
                        stream.extend(&sent[from..(from + rng.below(64)).min(i)]);
                    }
                    _ => {}
                }
                stream.push(sent[i]);
                held.retain(|&(at, ts)| {
                    if at <= i {
                        stream.push(ts);
                    }
                    at > i
                });
                i += 1;
            }
            stream.extend(held.iter().map(|&(_, ts)| ts));
            let mut w = ReplayWindow::new();
            let mut model = Model::default();
            let (mut late, mut refused) = (0, 0);
            for (step, &x) in stream.iter().enumerate() {
                let want = model.accept(x);
                late += usize::from(want == Ok(false));
                refused += usize::from(want.is_err());
                assert_eq!(w.accept(x), want, "seed {seed} step {step}: {x}");
            }
            // The stream does what it says.
            assert!(
                late > stream.len() / 100 && refused > stream.len() / 100,
                "{late} {refused}"
            );
        }
    }

    /// Timing: the median of `REPS` passes (the implementations taking
    /// turns), each over the stream after a window's worth of warm-up, in
    /// ns per frame. `cold`: before each 44 frames, 384 KiB of other
    /// memory is written, as the HMAC and packet buffers would, and only
    /// the window's calls are timed.
    fn time_accept(stream: &[u64], cold: bool, scratch: &mut [u8]) -> f64 {
        let mut w = ReplayWindow::new();
        // A multiple of 44, so that the cold passes touch memory between runs.
        let warm = (2 * CAPACITY).next_multiple_of(44);
        for &x in &stream[..warm] {
            w.accept(x).expect("the streams are accepted whole");
        }
        let rest = &stream[warm..];
        let mut ok = 0usize;
        let mut ns = 0u128;
        if cold {
            for run in rest.chunks(44) {
                for b in scratch.iter_mut().step_by(64) {
                    *b = b.wrapping_add(1);
                }
                std::hint::black_box(&mut *scratch);
                let start = std::time::Instant::now();
                for &x in run {
                    ok += usize::from(std::hint::black_box(w.accept(x)).is_ok());
                }
                ns += start.elapsed().as_nanos();
            }
        } else {
            let start = std::time::Instant::now();
            for &x in rest {
                ok += usize::from(std::hint::black_box(w.accept(x)).is_ok());
            }
            ns = start.elapsed().as_nanos();
        }
        assert_eq!(ok, rest.len());
        ns as f64 / rest.len() as f64
    }

    /// The cost per frame, window full, for streams shaped like the real
    /// ones. A measurement, not a check; run it optimized:
    /// `cargo test --release --lib replay::tests::cost_per_frame -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run with --release"]
    fn cost_per_frame() {
        const REPS: usize = 7;
        let n = 1_000_000;
        let mut rng = XorShift(7);
        // tinytaptunnel: one clock reading per datagram, 1-10 µs apart.
        let mut t = 1_763_900_000_000_000_000u64;
        let in_order: Vec<u64> = (0..n)
            .map(|_| {
                t += 1000 + rng.below(9000) as u64;
                t
            })
            .collect();
        // Every 64th swapped with one up to 512 later: nearly every frame
        // arrives below one that came early (late).
        let mut swapped = in_order.clone();
        for i in (0..n).step_by(64) {
            swapped.swap(i, (i + rng.below(512)).min(n - 1));
        }
        // taptun: runs of 44 consecutive timestamps (a GSO batch of
        // full-sized frames), 20-60 µs apart.
        let mut batched = Vec::with_capacity(n);
        while batched.len() < n {
            t += 20_000 + rng.below(40_000) as u64;
            batched.extend(t..t + 44);
        }
        // Every 64th held back by up to 512 frames: a few late ones.
        let mut delayed = batched.clone();
        for i in (0..n).step_by(64) {
            let j = (i + rng.below(512)).min(n - 1);
            delayed[i..=j].rotate_left(1);
        }
        // The worst an on-path attacker can make of them: every block of
        // 1024 delivered newest first, so all but one per block are late.
        let mut descending = batched.clone();
        for block in descending.chunks_mut(1024) {
            block.reverse();
        }
        let shapes: [(&str, &[u64], bool); 7] = [
            ("in order", &in_order, false),
            ("batched", &batched, false),
            ("swapped", &swapped, false),
            ("delayed", &delayed, false),
            ("descending", &descending, false),
            ("in order, cold", &in_order, true),
            ("batched, cold", &batched, true),
        ];
        let mut scratch = vec![0u8; 384 << 10];
        for (name, stream, cold) in shapes {
            let mut samples: Vec<f64> = (0..REPS)
                .map(|_| time_accept(stream, cold, &mut scratch))
                .collect();
            samples.sort_by(f64::total_cmp);
            eprintln!(
                "replay window, {name}: {:.1} ns/frame (median of {REPS}, {:.1}-{:.1})",
                samples[REPS / 2],
                samples[0],
                samples[REPS - 1]
            );
        }
    }
}
