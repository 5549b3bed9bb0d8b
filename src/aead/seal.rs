//! The sender: [`SealKey`], one session's key, sealing datagrams in place.

use super::{AeadError, Cipher, HEADROOM, OVERHEAD, SessionId, TAILROOM};
use super::{derive, extract, field, nonce};
use aws_lc_rs::aead::{Aad, LessSafeKey};
use std::fmt;

/// One session's sending key: seals datagrams in place.
///
/// Layout of the buffer given to [`SealKey::seal`]: [`HEADROOM`] (24)
/// bytes that it fills with session id and timestamp, the frame, then
/// [`TAILROOM`] (16) bytes that it fills with the tag. So a sender that
/// cuts frames at a fixed headroom (`tx::Outbound`, today at
/// `wire::HEADER_LEN`) cuts them at [`HEADROOM`] and leaves [`TAILROOM`]
/// free after each.
pub struct SealKey {
    cipher: Cipher,
    session: SessionId,
    key: LessSafeKey,
    /// The last timestamp sealed; each seal needs a greater one.
    last: Option<u64>,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealKey")
            .field("cipher", &self.cipher)
            .field("session", &self.session)
            .field("last", &self.last)
            .field("key", &"<hidden>")
            .finish()
    }
}

impl SealKey {
    /// A sending key for a new session (a random session id) under the key
    /// file bytes `key`. Make one per process start and per key rotation.
    pub fn new(cipher: Cipher, key: &[u8]) -> Result<SealKey, AeadError> {
        Ok(SealKey::with_session(cipher, key, SessionId::random()?))
    }

    /// A sending key for a given session id: for test vectors. A session id
    /// must never be used twice with one key file (the nonces would
    /// repeat): outside tests, use [`SealKey::new`].
    pub fn with_session(cipher: Cipher, key: &[u8], session: SessionId) -> SealKey {
        SealKey {
            cipher,
            session,
            key: derive(&extract(key), cipher, &session),
            last: None,
        }
    }

    /// The session id every datagram of this key carries.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The last timestamp sealed, if any.
    pub fn last_timestamp(&self) -> Option<u64> {
        self.last
    }

    /// Seals in place at `ts`, which must be greater than every timestamp
    /// sealed before under this key: `buf` is [`HEADROOM`] bytes (filled
    /// here with session id and `ts`), the frame (encrypted in place), and
    /// [`TAILROOM`] bytes (filled here with the tag).
    pub fn seal(&mut self, ts: u64, buf: &mut [u8]) -> Result<(), AeadError> {
        let len = buf.len();
        if len < OVERHEAD {
            return Err(AeadError::BufferTooSmall);
        }
        if let Some(last) = self.last
            && ts <= last
        {
            return Err(AeadError::NonceReuse { ts, last });
        }
        buf[field::SESSION].copy_from_slice(&self.session.0);
        buf[field::TS].copy_from_slice(&ts.to_be_bytes());
        let (aad, rest) = buf.split_at_mut(HEADROOM);
        let (body, tag_out) = rest.split_at_mut(len - OVERHEAD);
        // Fails only for inputs over the AEAD's limits (GiB), far beyond a
        // datagram.
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(ts), Aad::from(&*aad), body)
            .map_err(|_| AeadError::BufferTooSmall)?;
        tag_out.copy_from_slice(tag.as_ref());
        self.last = Some(ts);
        Ok(())
    }

    /// Encodes `frame` at `ts` into `out`, returning the datagram length.
    pub fn encode(&mut self, ts: u64, frame: &[u8], out: &mut [u8]) -> Result<usize, AeadError> {
        let len = OVERHEAD + frame.len();
        let dst = out.get_mut(..len).ok_or(AeadError::BufferTooSmall)?;
        dst[HEADROOM..len - TAILROOM].copy_from_slice(frame);
        self.seal(ts, dst)?;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{OpenKeys, frame_range};
    use super::*;

    #[test]
    fn round_trip_every_size_both_ciphers() {
        for c in Cipher::ALL {
            let mut tx = SealKey::with_session(c, KEY, sid(1));
            let mut rx = OpenKeys::new(c, KEY, Some(sid(2)));
            for (i, len) in SIZES.into_iter().enumerate() {
                let ts = NOW + i as u64;
                let f = frame(len);
                let mut dg = sealed(&mut tx, ts, &f);
                assert_eq!(dg.len(), len + 40);
                assert_eq!(&dg[..16], &[1u8; 16]);
                assert_eq!(&dg[16..24], &ts.to_be_bytes());
                if len >= 16 {
                    assert_ne!(&dg[24..24 + 16], &f[..16], "{c}: encrypted");
                }
                let o = rx.open(&mut dg, NOW).unwrap();
                assert_eq!((o.session, o.timestamp), (sid(1), ts));
                assert_eq!(&o.frame[..], &f[..], "{c} {len}");
                assert_eq!(frame_range(len + 40), Some(24..24 + len));
            }
            assert_eq!(rx.derivations(), 1, "one session, derived once");
        }
    }

    #[test]
    fn sessions_give_different_ciphertexts() {
        for c in Cipher::ALL {
            let f = frame(100);
            let a = sealed(&mut SealKey::with_session(c, KEY, sid(1)), NOW, &f);
            let b = sealed(&mut SealKey::with_session(c, KEY, sid(2)), NOW, &f);
            assert_ne!(a[24..], b[24..], "{c}");
            // And so do the two ciphers for one session.
            let c2 = Cipher::ALL.into_iter().find(|&x| x != c).unwrap();
            let d = sealed(&mut SealKey::with_session(c2, KEY, sid(1)), NOW, &f);
            assert_ne!(a[24..], d[24..]);
            // Random sessions differ.
            let r1 = SealKey::new(c, KEY).unwrap().session();
            let r2 = SealKey::new(c, KEY).unwrap().session();
            assert_ne!(r1, r2);
        }
    }

    #[test]
    fn seal_refuses_nonce_reuse_and_small_buffers() {
        let mut tx = SealKey::with_session(Cipher::Aes256Gcm, KEY, sid(1));
        let mut buf = [0u8; 64];
        tx.seal(NOW, &mut buf).unwrap();
        assert_eq!(
            tx.seal(NOW, &mut buf),
            Err(AeadError::NonceReuse { ts: NOW, last: NOW })
        );
        assert_eq!(
            tx.seal(NOW - 1, &mut buf),
            Err(AeadError::NonceReuse {
                ts: NOW - 1,
                last: NOW
            })
        );
        assert_eq!(tx.last_timestamp(), Some(NOW));
        tx.seal(NOW + 1, &mut buf).unwrap();
        assert_eq!(
            tx.seal(NOW + 2, &mut [0u8; 39]),
            Err(AeadError::BufferTooSmall)
        );
        assert_eq!(
            tx.encode(NOW + 2, &[0u8; 30], &mut [0u8; 69]),
            Err(AeadError::BufferTooSmall)
        );
        // A keepalive: no frame at all.
        let mut ka = [0u8; OVERHEAD];
        tx.seal(NOW + 3, &mut ka).unwrap();
        let mut rx = OpenKeys::new(Cipher::Aes256Gcm, KEY, None);
        assert_eq!(rx.open(&mut ka, NOW).unwrap().frame.len(), 0);
    }
}
