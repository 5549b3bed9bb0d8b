//! A session's transport keys, as the data path uses them: the AEAD of
//! aws-lc-rs (the fastest we measured, `docs/performance.md`) under the
//! keys the handshake split, the counter as the nonce the way Noise forms
//! it, the 16-byte header as associated data.

use super::NoiseError;
use super::window::{CounterWindow, Refused};
use super::wire::{self, HEADER_LEN, OVERHEAD, TAG_LEN, Transport};
use crate::aead::Cipher;
use aws_lc_rs::aead::{self as lc, Aad, LessSafeKey, Nonce, UnboundKey};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// After this many datagrams a session is renewed (WireGuard's bound:
/// far beyond what 120 s carry, but a counter must never wrap).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// No datagram is sealed or opened with a counter at or above this.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

fn algorithm(c: Cipher) -> &'static lc::Algorithm {
    match c {
        Cipher::Aes256Gcm => &lc::AES_256_GCM,
        Cipher::ChaCha20Poly1305 => &lc::CHACHA20_POLY1305,
    }
}

/// Noise's nonce for `counter`: four zero bytes, then the counter,
/// big-endian for AES-GCM and little-endian for ChaCha20-Poly1305.
pub fn nonce(c: Cipher, counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    match c {
        Cipher::Aes256Gcm => n[4..].copy_from_slice(&counter.to_be_bytes()),
        Cipher::ChaCha20Poly1305 => n[4..].copy_from_slice(&counter.to_le_bytes()),
    }
    n
}

fn aead_key(c: Cipher, key: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is what both algorithms take: this cannot fail.
    LessSafeKey::new(UnboundKey::new(algorithm(c), key).expect("32-byte AEAD key"))
}

/// One direction's sealing key. Shared (`Arc`) by the sending halves of
/// one peer: the counter is atomic, so no two datagrams get one nonce,
/// whichever thread seals them.
pub struct SendKey {
    cipher: Cipher,
    key: LessSafeKey,
    /// The peer's index for this session (each datagram names it).
    remote: u32,
    /// This side's index for the session (for status and the key log).
    local: u32,
    next: AtomicU64,
    /// When the session was made (ns, the caller's clock).
    created_ns: u64,
}

impl fmt::Debug for SendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendKey")
            .field("cipher", &self.cipher)
            .field("local", &format_args!("{:08x}", self.local))
            .field("remote", &format_args!("{:08x}", self.remote))
            .field("next", &self.next.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl SendKey {
    /// A sealing key for `remote`'s index, made at `created_ns`.
    pub fn new(cipher: Cipher, key: &[u8; 32], local: u32, remote: u32, created_ns: u64) -> Self {
        SendKey {
            cipher,
            key: aead_key(cipher, key),
            remote,
            local,
            next: AtomicU64::new(0),
            created_ns,
        }
    }

    /// Seals `buf` in place: a transport datagram whose frame is
    /// `buf[HEADER_LEN..len - TAG_LEN]`; the header and tag are written.
    /// Refuses a buffer without that room, and a session whose counters
    /// are spent.
    pub fn seal(&self, buf: &mut [u8]) -> Result<(), NoiseError> {
        if buf.len() < OVERHEAD {
            return Err(NoiseError::Malformed);
        }
        let counter = self.next.fetch_add(1, Relaxed);
        if counter >= REJECT_AFTER_MESSAGES {
            self.next.store(REJECT_AFTER_MESSAGES, Relaxed);
            return Err(NoiseError::Expired);
        }
        self.seal_at(counter, buf)
    }

    /// Makes the next datagram's counter `counter` (tests of spent sessions).
    #[doc(hidden)]
    pub fn skip_to(&self, counter: u64) {
        self.next.store(counter, Relaxed);
    }

    /// [`SendKey::seal`] with the counter given (the test vectors).
    pub fn seal_at(&self, counter: u64, buf: &mut [u8]) -> Result<(), NoiseError> {
        if buf.len() < OVERHEAD {
            return Err(NoiseError::Malformed);
        }
        wire::transport_header(buf, self.remote, counter);
        let len = buf.len();
        let (head, rest) = buf.split_at_mut(HEADER_LEN);
        let (frame, tag_out) = rest.split_at_mut(len - OVERHEAD);
        let nonce = Nonce::assume_unique_for_key(nonce(self.cipher, counter));
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&*head), frame)
            .map_err(|_| NoiseError::Malformed)?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// The counter the next datagram gets (how many were sealed).
    pub fn sealed(&self) -> u64 {
        self.next.load(Relaxed)
    }

    /// Whether the session has carried so many datagrams that it is due
    /// for renewal.
    pub fn worn(&self) -> bool {
        self.sealed() >= REKEY_AFTER_MESSAGES
    }

    /// When the session was made (ns).
    pub fn created_ns(&self) -> u64 {
        self.created_ns
    }

    /// The peer's index.
    pub fn remote(&self) -> u32 {
        self.remote
    }

    /// This side's index.
    pub fn local(&self) -> u32 {
        self.local
    }
}

/// What [`RecvKey::open`] found in an authentic datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Where the decrypted frame lies in the datagram (empty: keepalive).
    pub frame: Range<usize>,
    /// Its counter was the highest so far: the datagram may move the peer.
    pub newest: bool,
}

/// One direction's opening key, with the session's replay window.
pub struct RecvKey {
    cipher: Cipher,
    key: LessSafeKey,
    window: CounterWindow,
    /// Datagrams accepted.
    opened: u64,
}

impl fmt::Debug for RecvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvKey")
            .field("cipher", &self.cipher)
            .field("opened", &self.opened)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl RecvKey {
    /// An opening key.
    pub fn new(cipher: Cipher, key: &[u8; 32]) -> Self {
        RecvKey {
            cipher,
            key: aead_key(cipher, key),
            window: CounterWindow::new(),
            opened: 0,
        }
    }

    /// Opens a transport datagram in place (the caller found this key by
    /// its receiver index): the tag first, then the replay window, so
    /// forged counters never move it. A refused datagram may be left
    /// partly decrypted.
    pub fn open(&mut self, dg: &mut [u8]) -> Result<Opened, NoiseError> {
        let t = Transport::new_checked(&*dg)?;
        let counter = t.counter();
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(NoiseError::Expired);
        }
        let range = t.frame_range();
        let len = dg.len();
        let (head, rest) = dg.split_at_mut(HEADER_LEN);
        let nonce = Nonce::assume_unique_for_key(nonce(self.cipher, counter));
        self.key
            .open_in_place(nonce, Aad::from(&*head), &mut rest[..len - HEADER_LEN])
            .map_err(|_| NoiseError::BadTag)?;
        let newest = self.window.accept(counter).map_err(|e| match e {
            Refused::Duplicate | Refused::TooOld => NoiseError::Replay,
        })?;
        self.opened += 1;
        debug_assert_eq!(range.end + TAG_LEN, len);
        Ok(Opened {
            frame: range,
            newest,
        })
    }

    /// Datagrams accepted under this key.
    pub fn opened(&self) -> u64 {
        self.opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(frame: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; OVERHEAD + frame.len()];
        b[HEADER_LEN..HEADER_LEN + frame.len()].copy_from_slice(frame);
        b
    }

    #[test]
    fn round_trip_replay_and_tampering_both_ciphers() {
        for c in Cipher::ALL {
            let k = [9u8; 32];
            let tx = SendKey::new(c, &k, 1, 0x0a0b_0c0d, 0);
            let mut rx = RecvKey::new(c, &k);
            let mut d0 = datagram(b"hello");
            tx.seal(&mut d0).unwrap();
            assert_eq!(&d0[..8], &[4, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d]);
            let mut d1 = datagram(b"");
            tx.seal(&mut d1).unwrap();
            assert_eq!(tx.sealed(), 2);
            // Late first: both delivered, the later one is the newest.
            let mut copy1 = d1.clone();
            assert_eq!(
                rx.open(&mut d1).unwrap(),
                Opened {
                    frame: 16..16,
                    newest: true
                }
            );
            let mut copy0 = d0.clone();
            let o = rx.open(&mut d0).unwrap();
            assert_eq!((&d0[o.frame], o.newest), (&b"hello"[..], false));
            assert_eq!(rx.open(&mut copy1), Err(NoiseError::Replay));
            // Any one bit flipped anywhere: refused, and the window unmoved.
            let mut fresh = datagram(b"bits");
            tx.seal(&mut fresh).unwrap();
            for i in 0..fresh.len() * 8 {
                let mut f = fresh.clone();
                f[i / 8] ^= 1 << (i % 8);
                assert!(rx.open(&mut f).is_err(), "bit {i}");
            }
            assert!(rx.open(&mut fresh).unwrap().newest);
            copy0[HEADER_LEN] ^= 1;
            assert_eq!(rx.open(&mut copy0), Err(NoiseError::BadTag));
            assert_eq!(rx.opened(), 3);
        }
    }

    #[test]
    fn spent_counters_are_refused() {
        let c = Cipher::Aes256Gcm;
        let tx = SendKey::new(c, &[1; 32], 1, 2, 0);
        tx.next.store(REJECT_AFTER_MESSAGES - 1, Relaxed);
        let mut d = datagram(b"x");
        assert!(tx.seal(&mut d).is_ok());
        assert_eq!(tx.seal(&mut datagram(b"x")), Err(NoiseError::Expired));
        assert_eq!(tx.seal(&mut datagram(b"x")), Err(NoiseError::Expired));
        let mut rx = RecvKey::new(c, &[1; 32]);
        assert!(rx.open(&mut d).is_ok());
        let mut late = datagram(b"x");
        tx.seal_at(REJECT_AFTER_MESSAGES, &mut late).unwrap();
        assert_eq!(rx.open(&mut late), Err(NoiseError::Expired));
        assert_eq!(
            tx.seal(&mut [0u8; OVERHEAD - 1]),
            Err(NoiseError::Malformed)
        );
    }
}
