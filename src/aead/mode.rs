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
/// ([`looks_like_hmac`], [`OpenKeys::probe`](super::OpenKeys::probe)) has
/// shown what it sends.
pub fn mismatch_message(src: SocketAddr, ours: Mode, theirs: Mode) -> String {
    format!(
        "peer at {src} sends {theirs}, but this side expects {ours}; start both sides with the same --cipher"
    )
}

/// Whether `datagram` is an authentic HMAC-mode datagram under `codec`:
/// an AEAD-mode receiver calls it (rate-limited: it costs one HMAC) on an
/// intact datagram, before [`OpenKeys::open`](super::OpenKeys::open), which
/// may overwrite a datagram it refuses. A `true` means the peer runs
/// without `--cipher`.
pub fn looks_like_hmac(datagram: &[u8], codec: &Codec) -> bool {
    codec.open(datagram).is_ok()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{AeadError, OpenKeys, SealKey};
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
    fn mismatch_probes() {
        let codec = Codec::new(KEY);
        let mut hmac_dg = vec![0u8; 40 + 60];
        codec.encode(NOW, &frame(60), &mut hmac_dg).unwrap();
        let c = Cipher::Aes256Gcm;
        let aead_dg = sealed(&mut SealKey::with_session(c, KEY, sid(1)), NOW, &frame(60));
        assert!(looks_like_hmac(&hmac_dg, &codec));
        assert!(!looks_like_hmac(&aead_dg, &codec));
        let mut keys = OpenKeys::new(c, KEY, None);
        assert!(keys.probe(&aead_dg, NOW));
        assert!(!keys.probe(&hmac_dg, NOW));
        // The probe leaves its input as it was.
        let copy = aead_dg.clone();
        assert!(keys.probe(&aead_dg, NOW));
        assert_eq!(aead_dg, copy);
        assert!(!OpenKeys::new(Cipher::ChaCha20Poly1305, KEY, None).probe(&aead_dg, NOW));
        // An AEAD receiver meets HMAC datagrams: each reads as a made-up
        // session; once the budget is spent they are refused untouched, so
        // the receiver can still tell what they are.
        let mut rx = OpenKeys::new(c, KEY, None);
        let mut refused = 0;
        for i in 0..100u64 {
            let mut dg = vec![0u8; 40 + 60];
            codec.encode(NOW + i, &frame(60), &mut dg).unwrap();
            let before = dg.clone();
            match rx.open(&mut dg, NOW) {
                Err(AeadError::RateLimited) => {
                    assert_eq!(dg, before);
                    assert!(looks_like_hmac(&dg, &codec));
                    refused += 1;
                }
                other => assert_eq!(other, Err(AeadError::BadTag)),
            }
        }
        assert_eq!((refused, rx.unknown_sessions()), (84, 84));
        let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let m = mismatch_message(src, Mode::Aead(c), Mode::Hmac);
        assert!(m.contains("192.0.2.1:4000"), "{m}");
        assert!(m.contains("tinytaptunnel HMAC"), "{m}");
        assert!(m.contains("same --cipher"), "{m}");
    }
}
