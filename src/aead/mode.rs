//! Naming the two modes: the `--cipher` values, and telling a peer that
//! speaks the other mode (the probes and the log line that says so).

use super::Cipher;
use crate::wire::Codec;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// A `--cipher` value that names no cipher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCipher(pub String);

impl fmt::Display for UnknownCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown cipher {:?}; expected {} or {}",
            self.0,
            Cipher::Aes256Gcm,
            Cipher::ChaCha20Poly1305
        )
    }
}

impl std::error::Error for UnknownCipher {}

impl FromStr for Cipher {
    type Err = UnknownCipher;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cipher::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCipher(s.to_string()))
    }
}

/// Which wire a datagram is in: the default HMAC one or a confidential one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// tinytaptunnel v1.4's HMAC-SHA256 wire (no `--cipher`).
    Hmac,
    /// Confidential mode with this cipher.
    Aead(Cipher),
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Hmac => f.write_str("tinytaptunnel HMAC datagrams (no --cipher)"),
            Mode::Aead(c) => write!(f, "confidential datagrams (--cipher {c})"),
        }
    }
}

/// The log line for a peer that speaks another mode than ours, once a probe
/// ([`looks_like_hmac`], or an initiation read under the other cipher) has
/// shown what it sends.
pub fn mismatch_message(src: SocketAddr, ours: Mode, theirs: Mode) -> String {
    format!(
        "peer at {src} sends {theirs}, but this side expects {ours}; start both sides with the same --cipher"
    )
}

/// Whether `datagram` is an authentic HMAC-mode datagram under `codec`:
/// a confidential-mode receiver calls it (rate-limited: it costs one
/// HMAC) on an intact datagram, before opening, which may overwrite a
/// datagram it refuses. A `true` means the peer runs without `--cipher`.
pub fn looks_like_hmac(datagram: &[u8], codec: &Codec) -> bool {
    codec.open(datagram).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names_round_trip() {
        for c in Cipher::ALL {
            assert_eq!(c.to_string().parse::<Cipher>(), Ok(c));
        }
        assert_eq!("AES-256-GCM".parse(), Ok(Cipher::Aes256Gcm));
        let e = "aes-128-gcm".parse::<Cipher>().unwrap_err();
        assert!(e.to_string().contains("aes-256-gcm or chacha20-poly1305"));
    }

    #[test]
    fn mismatch_message_names_the_fix() {
        let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let m = mismatch_message(src, Mode::Aead(Cipher::Aes256Gcm), Mode::Hmac);
        assert!(m.contains("192.0.2.1:4000"), "{m}");
        assert!(m.contains("tinytaptunnel HMAC"), "{m}");
        assert!(m.contains("same --cipher"), "{m}");
        let codec = Codec::new(&[3; 32]);
        let mut dg = vec![0u8; 40 + 60];
        codec.encode(1, &[5; 60], &mut dg).unwrap();
        assert!(looks_like_hmac(&dg, &codec));
        dg[50] ^= 1;
        assert!(!looks_like_hmac(&dg, &codec));
    }
}
