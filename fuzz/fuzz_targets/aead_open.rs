//! Fuzz target for the confidential mode's receiver (`taptun::aead::OpenKeys`).
//!
//! The input is a script: each operation sends `open` either raw bytes or
//! a genuine datagram of one of four sessions (sealed with the real key, so
//! valid tags are reachable), optionally with bits flipped, truncated or
//! extended; or moves the clock (the derivation budget). Each verdict is
//! checked against an independent opening of the same bytes with
//! RustCrypto's HKDF, AES-GCM and ChaCha20-Poly1305 (not the aws-lc-rs code
//! under test): no panic; `Ok` only with a valid tag, and then the right
//! session, timestamp and frame; `BadTag` never for a valid one;
//! `RateLimited` only for a session not cached; `Reflected` only for our
//! own session.
#![no_main]

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use libfuzzer_sys::fuzz_target;
use taptun::aead::{AeadError, Cipher, Limits, OVERHEAD, OpenKeys, SealKey, SessionId};

const KEY: &[u8] = b"fuzzing key file bytes, 32 long!";
const NOW: u64 = 1_763_900_000_000_000_000;
const OWN: SessionId = SessionId([0xee; 16]);

/// The reference: (session, ts, plaintext) if `dg` is authentic.
fn reference(cipher: Cipher, dg: &[u8]) -> Option<(SessionId, u64, Vec<u8>)> {
    if dg.len() < OVERHEAD {
        return None;
    }
    let mut session = SessionId::default();
    session.0.copy_from_slice(&dg[..16]);
    let ts = u64::from_be_bytes(dg[16..24].try_into().ok()?);
    let mut info = cipher.label().to_vec();
    info.extend_from_slice(&session.0);
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, KEY)
        .expand(&info, &mut key)
        .ok()?;
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&dg[16..24]);
    let (aad, rest) = dg.split_at(24);
    let (ct, tag) = rest.split_at(rest.len() - 16);
    let tag: [u8; 16] = tag.try_into().ok()?;
    let mut pt = ct.to_vec();
    let ok = match cipher {
        Cipher::Aes256Gcm => Aes256Gcm::new(&key.into())
            .decrypt_inout_detached(&nonce.into(), aad, pt.as_mut_slice().into(), &tag.into())
            .is_ok(),
        Cipher::ChaCha20Poly1305 => ChaCha20Poly1305::new(&key.into())
            .decrypt_inout_detached(&nonce.into(), aad, pt.as_mut_slice().into(), &tag.into())
            .is_ok(),
    };
    ok.then_some((session, ts, pt))
}

struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn u16(&mut self) -> usize {
        usize::from(self.byte().unwrap_or(0)) << 8 | usize::from(self.byte().unwrap_or(0))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut s = Script(data);
    let cipher = match s.byte() {
        Some(b) if b & 1 == 1 => Cipher::ChaCha20Poly1305,
        Some(_) => Cipher::Aes256Gcm,
        None => return,
    };
    let limits = Limits {
        sessions: 3,
        derivations_per_sec: 4,
        burst: 2,
    };
    let mut keys = OpenKeys::with_limits(cipher, KEY, Some(OWN), limits);
    // Four genuine senders; the fourth is our own session (a reflection).
    let mut senders: Vec<SealKey> = [[1u8; 16], [2; 16], [3; 16], OWN.0]
        .into_iter()
        .map(|id| SealKey::with_session(cipher, KEY, SessionId(id)))
        .collect();
    let mut now = NOW;
    let mut ops = 0;
    while let Some(op) = s.byte() {
        ops += 1;
        if ops > 256 {
            break;
        }
        let mut dg = match op % 4 {
            // Raw bytes.
            0 => {
                let n = s.u16() % 2048;
                s.bytes(n).to_vec()
            }
            // A genuine datagram, perhaps mutated.
            1 | 2 => {
                let who = usize::from(s.byte().unwrap_or(0) % 4);
                let len = s.u16() % 1600;
                let ts_step = u64::from(s.byte().unwrap_or(1));
                let k = &mut senders[who];
                let ts = k.last_timestamp().map_or(now, |t| t + 1 + ts_step);
                let frame = s.bytes(len).to_vec();
                let mut dg = vec![0u8; OVERHEAD + frame.len()];
                k.encode(ts, &frame, &mut dg).expect("room, increasing");
                if op % 4 == 2 {
                    for _ in 0..s.byte().unwrap_or(0) % 4 {
                        let at = s.u16();
                        match s.byte().unwrap_or(0) % 3 {
                            0 if !dg.is_empty() => {
                                let i = at % dg.len();
                                dg[i] ^= 1 << (at % 8);
                            }
                            1 => dg.truncate(at % (dg.len() + 1)),
                            _ => dg.push(at as u8),
                        }
                    }
                }
                dg
            }
            // The clock moves (backwards too).
            _ => {
                let step = s.u16() as u64 * 10_000_000;
                now = if op & 0x80 != 0 {
                    now.saturating_sub(step)
                } else {
                    now + step
                };
                continue;
            }
        };
        let expected = reference(cipher, &dg);
        let cached = keys.cached_sessions();
        let original = dg.clone();
        match keys.open(&mut dg, now) {
            Ok(o) => {
                let (session, ts, frame) = expected.expect("opened without a valid tag");
                assert_eq!((o.session, o.timestamp), (session, ts));
                assert_eq!(&o.frame[..], &frame[..]);
                assert_ne!(o.session, OWN);
            }
            Err(AeadError::TooShort(n)) => assert!(n < OVERHEAD && n == original.len()),
            Err(AeadError::BadTag) => assert!(expected.is_none(), "a valid datagram refused"),
            Err(AeadError::RateLimited) => {
                assert!(original.len() >= OVERHEAD);
                assert!(!cached.iter().any(|c| c.0[..] == original[..16]));
            }
            Err(AeadError::Reflected) => assert_eq!(&original[..16], &OWN.0[..]),
            Err(e) => panic!("unexpected error from open: {e}"),
        }
        assert!(keys.cached_sessions().len() <= 3);
    }
});
