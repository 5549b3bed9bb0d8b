//! The confidential mode's names: [`Cipher`] (the `--cipher` values) and
//! the two modes ([`Mode`]) with the probes and the log line for a peer
//! that speaks the other one. The mode itself (the Noise handshake and
//! the transport) is `crate::noise`.
//!
//! Until #21 this module held the first confidential wire (HKDF session
//! keys, timestamps as nonces); it was never released and is gone: see
//! `docs/protocol.md` (Confidential mode).

use std::fmt;

mod mode;

pub use mode::{Mode, UnknownCipher, looks_like_hmac, mismatch_message};

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
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
