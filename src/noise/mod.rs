//! The confidential mode (`--cipher`), as pure code: a Noise handshake with
//! the key file as the pre-shared key and fresh X25519 ephemerals on both
//! sides (forward secrecy), then datagrams sealed under the keys it split,
//! each naming the receiver's session index and a counter that is the
//! nonce. No wall-clock value is part of it: timers run on the `now` the
//! caller passes, and only differences of it matter.
//!
//! - `wire`: the three datagrams (initiation, response, transport).
//! - `handshake`: the two handshake messages, run by `snow`.
//! - `transport`: the data path's keys (aws-lc-rs), nonces from counters.
//! - `window`: the replay window over counters (RFC 6479).
//! - `keyring`: one peer's sessions and the timers that renew them.
//!
//! The layout and the reasoning are in `docs/protocol.md` (Confidential mode).

mod budget;
pub mod handshake;
mod keyring;
pub mod transport;
pub mod window;
pub mod wire;

pub use budget::Budget;
pub use keyring::{
    INDICES, Keyring, Outbox, REJECT_AFTER_NS, REKEY_AFTER_NS, REKEY_TIMEOUT_NS, Received, Refusal,
    SessionStatus,
};
pub use transport::{RecvKey, SendKey};

use std::fmt;

/// Why a datagram of the confidential mode was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseError {
    /// Not a datagram of this mode, or cut short.
    Malformed,
    /// Names a session index this side does not have.
    UnknownIndex,
    /// Authentication failed: another key file or cipher, or altered.
    BadTag,
    /// A counter accepted before, or further back than the window.
    Replay,
    /// The session's counters are spent.
    Expired,
    /// snow refused something it should not (a bug, not an input).
    Internal,
}

impl fmt::Display for NoiseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoiseError::Malformed => "not a datagram of the confidential mode",
            NoiseError::UnknownIndex => "names no session of this side",
            NoiseError::BadTag => "authentication failed",
            NoiseError::Replay => "replayed or too old a counter",
            NoiseError::Expired => "session counters spent",
            NoiseError::Internal => "handshake library error",
        })
    }
}

impl std::error::Error for NoiseError {}

/// The handshake's pre-shared key from the key file's bytes: a key of 32
/// bytes (what `taptun genkey` writes) as it is; any other length (16 bytes
/// or more: the key files tinytaptunnel's wire accepts) hashed to 32 with
/// SHA-256, since Noise takes exactly 32.
pub fn psk_from(key: &[u8]) -> [u8; 32] {
    match <[u8; 32]>::try_from(key) {
        Ok(k) => k,
        Err(_) => {
            use sha2::Digest;
            sha2::Sha256::digest(key).into()
        }
    }
}

/// A fresh seed for [`Draw`] from the OS.
pub fn seed() -> Result<[u8; 32], String> {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).map_err(|e| format!("the OS random source: {e}"))?;
    Ok(s)
}

/// Session indices and timer jitter, drawn from a seed the caller gives
/// (the engine: `getrandom`; tests: a constant, so runs repeat). Not the
/// ephemeral keys, which `snow` draws from the OS.
#[derive(Clone)]
pub struct Draw {
    seed: [u8; 32],
    n: u64,
}

impl fmt::Debug for Draw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draw")
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl Draw {
    /// A generator from `seed`.
    pub fn new(seed: [u8; 32]) -> Draw {
        Draw { seed, n: 0 }
    }

    /// The next 64 pseudo-random bits: SHA-256 of the seed and a counter.
    pub fn next_u64(&mut self) -> u64 {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.seed);
        h.update(self.n.to_be_bytes());
        self.n += 1;
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_be_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_of_any_key_length() {
        assert_eq!(psk_from(&[7; 32]), [7; 32]);
        let long = psk_from(&[7; 34]);
        let short = psk_from(&[7; 16]);
        assert_ne!(long, short);
        assert_ne!(long, [7; 32]);
        assert_eq!(long, psk_from(&[7; 34]));
    }
}
