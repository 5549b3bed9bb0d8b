//! Confidential mode (`--cipher`): the pure AEAD datagram codec, with no I/O.
//!
//! ```text
//! datagram = session id (16) ‖ ts (8, big-endian UNIX ns) ‖ ciphertext ‖ tag (16)
//! AAD      = session id ‖ ts
//! nonce    = 0x00000000 ‖ ts                                   (96 bits)
//! key      = HKDF-SHA256(ikm = key file bytes, salt = none,
//!                        info = "taptun <cipher> v1" ‖ session id)  (32 bytes)
//! ```
//!
//! 40 bytes of overhead, as in the HMAC mode ([`crate::wire`]), so the
//! default MTU stays 1418. Each sending key ([`SealKey`]) draws a random
//! 128-bit session id, so its key is its own; it refuses a timestamp that
//! is not greater than the last one it sealed, so a nonce is never used
//! twice under one key. The receiver ([`OpenKeys`]) derives a session's key
//! when it first sees the session id, keeps a few in a bounded LRU cache,
//! and rate-limits derivations, so made-up session ids cost it almost
//! nothing. Freshness, the replay window and peer learning stay in
//! [`crate::rx`]: they run on the timestamp [`OpenKeys::open`] authenticated.
//! See `docs/protocol.md` (Confidential mode) for the nonce argument.
//!
//! One job per file: this one holds the construction itself (lengths,
//! layout, [`Cipher`], [`SessionId`], [`AeadError`], nonce and key
//! derivation); `seal.rs` the sender ([`SealKey`]), `open.rs` the receiver
//! ([`OpenKeys`], its session cache and derivation budget), `mode.rs` the
//! naming of modes (`--cipher` values, the probes and the log line for a
//! peer in the other mode). Everything is used as `crate::aead::…`.

use aws_lc_rs::aead::{self as lc, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use std::fmt;
use std::ops::Range;

mod mode;
mod open;
mod seal;

// The randomized harness against RustCrypto's AEADs: compiled for tests
// and under `cargo fuzz` (which sets `--cfg fuzzing`), never into the
// shipped binary.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod harness;
#[cfg(test)]
mod testutil;

pub use mode::{Mode, UnknownCipher, looks_like_hmac, mismatch_message};
pub use open::{Limits, OpenKeys, Opened};
pub use seal::SealKey;

/// Length of the session id at the start of a datagram.
pub const SESSION_LEN: usize = 16;
/// Length of the big-endian nanosecond timestamp after the session id.
pub const TS_LEN: usize = 8;
/// Length of the authentication tag at the end of a datagram.
pub const TAG_LEN: usize = 16;
/// Bytes in front of the frame: session id and timestamp (also the AAD).
/// A sender cuts frames at this offset from the start of each datagram.
pub const HEADROOM: usize = SESSION_LEN + TS_LEN;
/// Bytes after the frame: the tag. A sender leaves this much room after
/// each frame, which the HMAC mode does not need.
pub const TAILROOM: usize = TAG_LEN;
/// Bytes a datagram adds to its frame: the same 40 as the HMAC mode.
pub const OVERHEAD: usize = HEADROOM + TAILROOM;

const _: () = assert!(OVERHEAD == crate::wire::HEADER_LEN);

/// Where the header fields lie in a datagram (the AAD is both).
mod field {
    use super::*;
    pub const SESSION: Range<usize> = 0..SESSION_LEN;
    pub const TS: Range<usize> = SESSION_LEN..HEADROOM;
}

/// The AEAD of confidential mode, as `--cipher` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-256-GCM: fastest where the CPU has AES and carry-less multiply
    /// instructions (every x86-64 of the last decade, ARMv8 with crypto).
    Aes256Gcm,
    /// ChaCha20-Poly1305: constant-time in software, for CPUs without AES
    /// instructions.
    ChaCha20Poly1305,
}

impl Cipher {
    /// Every cipher, in the order the help text lists them.
    pub const ALL: [Cipher; 2] = [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305];

    /// The name `--cipher` takes and `Display` prints.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// The HKDF info prefix naming mode and version; the session id follows
    /// it. No two constructions share a label, so none shares a key.
    pub fn label(self) -> &'static [u8] {
        match self {
            Cipher::Aes256Gcm => b"taptun aes-256-gcm v1",
            Cipher::ChaCha20Poly1305 => b"taptun chacha20-poly1305 v1",
        }
    }

    fn algorithm(self) -> &'static lc::Algorithm {
        match self {
            Cipher::Aes256Gcm => &lc::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &lc::CHACHA20_POLY1305,
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A sender's 128-bit session id, drawn at random for each [`SealKey`].
/// It is public (it travels in clear); what it selects is secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SessionId(pub [u8; SESSION_LEN]);

impl SessionId {
    /// A fresh id from the OS random source.
    pub fn random() -> Result<SessionId, AeadError> {
        let mut id = [0u8; SESSION_LEN];
        getrandom::fill(&mut id).map_err(|e| AeadError::Random(e.to_string()))?;
        Ok(SessionId(id))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// Why a datagram could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AeadError {
    /// Fewer than [`OVERHEAD`] bytes.
    TooShort(usize),
    /// The tag does not authenticate the datagram under the session's key
    /// (wrong key file, other cipher, altered datagram, made-up session).
    BadTag,
    /// An unknown session id, and the derivation budget is spent: dropped
    /// unopened (counted in [`OpenKeys::unknown_sessions`]).
    RateLimited,
    /// Our own session id: one of our datagrams sent back to us.
    Reflected,
    /// The buffer cannot hold header, frame and tag.
    BufferTooSmall,
    /// Sealing at `ts` would reuse a nonce: the key sealed `last` already.
    NonceReuse {
        /// The timestamp asked for.
        ts: u64,
        /// The last timestamp sealed under this key.
        last: u64,
    },
    /// The OS random source failed (drawing a session id).
    Random(String),
}

impl fmt::Display for AeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AeadError::TooShort(n) => write!(
                f,
                "datagram of {n} bytes is shorter than the {OVERHEAD} bytes of session id, timestamp and tag"
            ),
            AeadError::BadTag => {
                f.write_str("tag does not match (wrong key, other cipher or altered datagram)")
            }
            AeadError::RateLimited => {
                f.write_str("unknown session id and too many new sessions: dropped unopened")
            }
            AeadError::Reflected => f.write_str("our own session id: a reflected datagram"),
            AeadError::BufferTooSmall => {
                f.write_str("buffer too small for session id, timestamp, frame and tag")
            }
            AeadError::NonceReuse { ts, last } => write!(
                f,
                "refusing to seal at timestamp {ts}: not after {last}, the last one sealed (nonce reuse)"
            ),
            AeadError::Random(e) => write!(f, "cannot read the OS random source: {e}"),
        }
    }
}

impl std::error::Error for AeadError {}

/// The 96-bit nonce of a timestamp: four zero bytes, then `ts` big-endian.
fn nonce(ts: u64) -> Nonce {
    let mut n = [0u8; lc::NONCE_LEN];
    n[4..].copy_from_slice(&ts.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// HKDF-Extract of the key file bytes (salt none), done once per key file.
fn extract(key: &[u8]) -> hkdf::Prk {
    hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(key)
}

/// HKDF-Expand to the key of one (cipher, session).
fn derive(prk: &hkdf::Prk, cipher: Cipher, session: &SessionId) -> LessSafeKey {
    let info = [cipher.label(), &session.0[..]];
    // Expand fails only for outputs over 255 hash lengths; 32 bytes cannot.
    let okm = prk
        .expand(&info, cipher.algorithm())
        .expect("a 32-byte HKDF output");
    LessSafeKey::new(UnboundKey::from(okm))
}

/// The session id of a datagram, read without any check (`None` if it
/// is too short to hold one): for routing a datagram to the right
/// [`OpenKeys`] before opening it (see [`OpenKeys::is_cached`]).
pub fn session_of(datagram: &[u8]) -> Option<SessionId> {
    let mut id = SessionId::default();
    id.0.copy_from_slice(datagram.get(field::SESSION)?);
    Some(id)
}

/// Where the frame of an opened (or to be sealed) datagram of `len` bytes
/// lies: between [`HEADROOM`] and [`TAILROOM`]; `None` if it is too short.
pub fn frame_range(len: usize) -> Option<Range<usize>> {
    (len >= OVERHEAD).then(|| HEADROOM..len - TAILROOM)
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    /// HKDF-SHA256 by hand (RFC 5869, salt none, one block), to know the
    /// derived key bytes that must not show.
    fn derived_key(c: Cipher, s: SessionId) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut ext = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&[0u8; 32]).unwrap();
        ext.update(KEY);
        let prk = ext.finalize().into_bytes();
        let mut exp = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&prk).unwrap();
        exp.update(c.label());
        exp.update(&s.0);
        exp.update(&[1]);
        exp.finalize().into_bytes().into()
    }

    #[test]
    fn keys_never_in_debug_output() {
        let c = Cipher::Aes256Gcm;
        let mut tx = SealKey::with_session(c, KEY, sid(1));
        let mut rx = OpenKeys::new(c, KEY, Some(sid(7)));
        let mut dg = sealed(&mut tx, NOW, b"x");
        rx.open(&mut dg, NOW).unwrap();
        let dk = derived_key(c, sid(1));
        // The derivation above is the real one: it decrypts the datagram.
        let check = lc::LessSafeKey::new(UnboundKey::new(c.algorithm(), &dk).unwrap());
        let mut again = sealed(&mut tx, NOW + 1, b"x");
        let tag = again.split_off(again.len() - 16);
        let (aad, body) = again.split_at_mut(24);
        check
            .open_in_place_separate_tag(nonce(NOW + 1), lc::Aad::from(&*aad), &tag, body)
            .unwrap();
        for text in [
            format!("{tx:?}"),
            format!("{rx:?}"),
            format!("{tx:#?}"),
            format!("{rx:#?}"),
        ] {
            assert!(text.contains("<hidden>"), "{text}");
            for secret in [KEY, &dk[..]] {
                let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
                assert!(!text.contains(&hex), "{text}");
                assert!(!text.contains(&format!("{secret:?}")), "{text}");
                assert!(
                    !text.contains(&format!("{:?}", &secret[..4])[1..8]),
                    "{text}"
                );
            }
            assert!(!text.contains("0123456789abcdef"), "{text}");
        }
    }
}
