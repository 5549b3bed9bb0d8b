//! Keys, clock and frames shared by the unit tests of the `aead` modules.

use super::{OVERHEAD, SESSION_LEN, SealKey, SessionId};

pub const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
pub const NOW: u64 = 1_763_900_000_000_000_000;
pub const SIZES: [usize; 5] = [0, 1, 64, 1432, 9000];

pub fn sid(b: u8) -> SessionId {
    SessionId([b; SESSION_LEN])
}

pub fn frame(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

pub fn sealed(k: &mut SealKey, ts: u64, f: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; OVERHEAD + f.len()];
    let n = k.encode(ts, f, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}
