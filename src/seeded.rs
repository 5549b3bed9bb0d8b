//! A seeded pseudo-random walk for the property tests: the same sequence
//! on every run and machine, without a crate for it.

/// Marsaglia's xorshift64 from `seed` (not 0): each call gives the next
/// value.
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
