//! The receiver: [`OpenKeys`] opens datagrams of any session under one key
//! file, with a bounded cache of session keys and a rate limit ([`Limits`])
//! on deriving keys for session ids it has not seen.

use super::{AeadError, Cipher, HEADROOM, OVERHEAD, SessionId, TS_LEN};
use super::{derive, extract, field, nonce};
use aws_lc_rs::aead::{Aad, LessSafeKey};
use aws_lc_rs::hkdf;
use std::fmt;

/// An authentic datagram, decrypted in place.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The sender's session.
    pub session: SessionId,
    /// The sender's timestamp (UNIX ns), authenticated: feed it to the
    /// freshness check and the replay window.
    pub timestamp: u64,
    /// The Ethernet frame, plaintext (empty for a keepalive); it lies at
    /// [`frame_range`](super::frame_range) of the datagram.
    pub frame: &'a mut [u8],
}

/// How much an [`OpenKeys`] may cache and derive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Session keys kept (least recently used evicted first).
    pub sessions: usize,
    /// New session keys derived per second at most, on average.
    pub derivations_per_sec: u32,
    /// New session keys that may be derived at once after a quiet spell.
    pub burst: u32,
}

impl Default for Limits {
    /// 8 sessions; 16 derivations per second, 16 at once: a peer's restart
    /// or key rotation needs one, and each costs ~1–2 µs, so the bound
    /// is on an attacker's made-up session ids, not on genuine peers.
    fn default() -> Self {
        Limits {
            sessions: 8,
            derivations_per_sec: 16,
            burst: 16,
        }
    }
}

/// A session key in the receiver's cache.
struct Slot {
    session: SessionId,
    key: LessSafeKey,
    /// When it was last used, in opens (for LRU eviction).
    used: u64,
}

/// The receiving side: opens datagrams of any session under one key file.
///
/// A session's key is derived (HKDF) the first time its id is seen and
/// kept in a bounded LRU cache ([`Limits::sessions`]) once a datagram of
/// it proved authentic; a datagram whose tag fails never enters the
/// cache, so made-up session ids cannot evict real ones. Derivations for
/// ids not in the cache are rate-limited by a token bucket in the caller's
/// virtual time (`now_ns`); beyond it a datagram is dropped after a
/// length check and a cache lookup ([`AeadError::RateLimited`]).
pub struct OpenKeys {
    cipher: Cipher,
    prk: hkdf::Prk,
    limits: Limits,
    /// Our own sending session, refused as a reflection.
    own: Option<SessionId>,
    slots: Vec<Slot>,
    /// Opens so far: the LRU clock.
    clock: u64,
    /// Derivation credit, in ns of refill time (one derivation costs
    /// `1e9 / derivations_per_sec`).
    credit_ns: u64,
    /// When the credit was last topped up.
    refilled_ns: u64,
    unknown_sessions: u64,
    derivations: u64,
    /// For [`OpenKeys::probe`], which must not alter its input.
    scratch: Vec<u8>,
}

impl fmt::Debug for OpenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sessions: Vec<SessionId> = self.slots.iter().map(|s| s.session).collect();
        f.debug_struct("OpenKeys")
            .field("cipher", &self.cipher)
            .field("limits", &self.limits)
            .field("own", &self.own)
            .field("sessions", &sessions)
            .field("unknown_sessions", &self.unknown_sessions)
            .field("derivations", &self.derivations)
            .field("key", &"<hidden>")
            .finish()
    }
}

impl OpenKeys {
    /// A receiver for the key file bytes `key` with the default [`Limits`];
    /// `own` is our sending session (see [`OpenKeys::set_own_session`]).
    pub fn new(cipher: Cipher, key: &[u8], own: Option<SessionId>) -> OpenKeys {
        OpenKeys::with_limits(cipher, key, own, Limits::default())
    }

    /// A receiver with explicit limits (at least one session is cached).
    pub fn with_limits(
        cipher: Cipher,
        key: &[u8],
        own: Option<SessionId>,
        limits: Limits,
    ) -> OpenKeys {
        let limits = Limits {
            sessions: limits.sessions.max(1),
            derivations_per_sec: limits.derivations_per_sec.max(1),
            burst: limits.burst.max(1),
        };
        let mut keys = OpenKeys {
            cipher,
            prk: extract(key),
            limits,
            own,
            slots: Vec::with_capacity(limits.sessions),
            clock: 0,
            credit_ns: 0,
            refilled_ns: 0,
            unknown_sessions: 0,
            derivations: 0,
            scratch: Vec::new(),
        };
        keys.credit_ns = keys.max_credit();
        keys
    }

    /// Refuses datagrams carrying `own`, our sending session id, as
    /// reflections (both sides derive from one key file, so without this
    /// our own datagrams sent back to us would open).
    pub fn set_own_session(&mut self, own: Option<SessionId>) {
        self.own = own;
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Datagrams dropped unopened because their session was unknown and
    /// the derivation budget spent (the `unknown_session` counter).
    pub fn unknown_sessions(&self) -> u64 {
        self.unknown_sessions
    }

    /// Session keys derived so far (each paid one HKDF).
    pub fn derivations(&self) -> u64 {
        self.derivations
    }

    /// The sessions whose keys are cached, most recently used first.
    pub fn cached_sessions(&self) -> Vec<SessionId> {
        let mut v: Vec<&Slot> = self.slots.iter().collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.used));
        v.into_iter().map(|s| s.session).collect()
    }

    /// Whether `session`'s key is cached, i.e. a datagram of it was
    /// opened here. After a key rotation the receiver keeps the previous
    /// `OpenKeys` for `--max-age` and sends a datagram to it when this
    /// says so, to the current one otherwise: trying one and then the
    /// other does not work, as a failed open may overwrite the datagram.
    pub fn is_cached(&self, session: &SessionId) -> bool {
        self.slots.iter().any(|s| s.session == *session)
    }

    fn cost_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.limits.derivations_per_sec)
    }

    fn max_credit(&self) -> u64 {
        self.cost_ns() * u64::from(self.limits.burst)
    }

    /// Takes one derivation from the bucket at `now_ns`, if there is one.
    /// A clock that steps back adds nothing.
    fn take_derivation(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.refilled_ns);
        self.refilled_ns = self.refilled_ns.max(now_ns);
        self.credit_ns = self
            .credit_ns
            .saturating_add(elapsed)
            .min(self.max_credit());
        let cost = self.cost_ns();
        if self.credit_ns < cost {
            return false;
        }
        self.credit_ns -= cost;
        true
    }

    /// Opens `datagram` received at `now_ns` (UNIX ns, for the derivation
    /// budget only): checks the length, refuses our own session, finds or
    /// derives the session's key, checks the tag over session id,
    /// timestamp and ciphertext, and decrypts the frame in place. On
    /// [`AeadError::BadTag`] the bytes after the header may have been
    /// overwritten (the datagram is to be dropped anyway); on every other
    /// error the datagram is untouched, so a receiver can still probe it
    /// with [`looks_like_hmac`](super::looks_like_hmac) (an HMAC datagram reads as a made-up
    /// session, so most are refused as [`AeadError::RateLimited`]).
    /// Freshness, replay and peer checks are the caller's, on
    /// [`Opened::timestamp`].
    pub fn open<'a>(
        &mut self,
        datagram: &'a mut [u8],
        now_ns: u64,
    ) -> Result<Opened<'a>, AeadError> {
        let len = datagram.len();
        if len < OVERHEAD {
            return Err(AeadError::TooShort(len));
        }
        let mut session = SessionId::default();
        session.0.copy_from_slice(&datagram[field::SESSION]);
        if self.own == Some(session) {
            return Err(AeadError::Reflected);
        }
        let mut ts = [0u8; TS_LEN];
        ts.copy_from_slice(&datagram[field::TS]);
        let timestamp = u64::from_be_bytes(ts);
        let (aad, rest) = datagram.split_at_mut(HEADROOM);
        let (body, tag) = rest.split_at_mut(len - OVERHEAD);
        self.clock += 1;
        if let Some(slot) = self.slots.iter_mut().find(|s| s.session == session) {
            slot.key
                .open_in_place_separate_tag(nonce(timestamp), Aad::from(&*aad), tag, body)
                .map_err(|_| AeadError::BadTag)?;
            slot.used = self.clock;
        } else {
            if !self.take_derivation(now_ns) {
                self.unknown_sessions += 1;
                return Err(AeadError::RateLimited);
            }
            self.derivations += 1;
            let key = derive(&self.prk, self.cipher, &session);
            key.open_in_place_separate_tag(nonce(timestamp), Aad::from(&*aad), tag, body)
                .map_err(|_| AeadError::BadTag)?;
            // Authentic: cache it, in place of the least recently used.
            let slot = Slot {
                session,
                key,
                used: self.clock,
            };
            if self.slots.len() < self.limits.sessions {
                self.slots.push(slot);
            } else if let Some(lru) = self.slots.iter_mut().min_by_key(|s| s.used) {
                *lru = slot;
            }
        }
        Ok(Opened {
            session,
            timestamp,
            frame: body,
        })
    }

    /// Whether `datagram` is an authentic datagram of this mode under this
    /// key file, leaving it as it is (it is copied first): an HMAC-mode
    /// receiver calls it, rate-limited, on a datagram whose MAC failed, to
    /// tell a peer started with `--cipher` from junk. Counts against the
    /// same derivation budget as [`OpenKeys::open`].
    pub fn probe(&mut self, datagram: &[u8], now_ns: u64) -> bool {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(datagram);
        let ok = self.open(&mut scratch, now_ns).is_ok();
        self.scratch = scratch;
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{SealKey, session_of};
    use super::*;

    #[test]
    fn one_bit_anywhere_is_refused() {
        for c in Cipher::ALL {
            let mut tx = SealKey::with_session(c, KEY, sid(1));
            let dg = sealed(&mut tx, NOW, &frame(64));
            // A large budget: every flip of the session id needs a derivation.
            let limits = Limits {
                sessions: 8,
                derivations_per_sec: 1_000_000,
                burst: 10_000,
            };
            let mut rx = OpenKeys::with_limits(c, KEY, None, limits);
            for bit in 0..dg.len() * 8 {
                let mut bad = dg.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    rx.open(&mut bad, NOW),
                    Err(AeadError::BadTag),
                    "{c}: bit {bit}"
                );
            }
            assert_eq!(rx.cached_sessions(), vec![], "nothing forged was cached");
            let mut good = dg.clone();
            assert!(rx.open(&mut good, NOW).is_ok());
            // Truncated, extended, too short.
            let mut short = dg[..dg.len() - 1].to_vec();
            assert_eq!(rx.open(&mut short, NOW), Err(AeadError::BadTag));
            let mut long = dg.clone();
            long.push(0);
            assert_eq!(rx.open(&mut long, NOW), Err(AeadError::BadTag));
            let mut tiny = dg[..39].to_vec();
            assert_eq!(rx.open(&mut tiny, NOW), Err(AeadError::TooShort(39)));
            // Another key file, another cipher.
            let mut other = dg.clone();
            let mut wrong = OpenKeys::new(c, b"another key file, 32 bytes long!", None);
            assert_eq!(wrong.open(&mut other, NOW), Err(AeadError::BadTag));
            let c2 = Cipher::ALL.into_iter().find(|&x| x != c).unwrap();
            let mut other = dg.clone();
            assert_eq!(
                OpenKeys::new(c2, KEY, None).open(&mut other, NOW),
                Err(AeadError::BadTag)
            );
        }
    }

    #[test]
    fn reflection_refused() {
        let c = Cipher::ChaCha20Poly1305;
        let mut tx = SealKey::new(c, KEY).unwrap();
        let mut dg = sealed(&mut tx, NOW, b"mine");
        let mut rx = OpenKeys::new(c, KEY, Some(tx.session()));
        assert_eq!(rx.open(&mut dg.clone(), NOW), Err(AeadError::Reflected));
        rx.set_own_session(None);
        assert!(rx.open(&mut dg, NOW).is_ok());
    }

    #[test]
    fn derivations_rate_limited_in_virtual_time() {
        let c = Cipher::Aes256Gcm;
        let limits = Limits {
            sessions: 8,
            derivations_per_sec: 10,
            burst: 5,
        };
        let mut rx = OpenKeys::with_limits(c, KEY, None, limits);
        let forged = |i: u32| {
            let mut d = vec![0u8; 100];
            d[..4].copy_from_slice(&i.to_be_bytes());
            d
        };
        // The burst, then nothing until time passes.
        let mut n = 0;
        for i in 0..1000 {
            match rx.open(&mut forged(i), NOW) {
                Err(AeadError::BadTag) => n += 1,
                Err(AeadError::RateLimited) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((n, rx.derivations(), rx.unknown_sessions()), (5, 5, 995));
        // 10 per second: one every 100 ms, never more than the burst.
        let mut t = NOW;
        let mut derived = 0;
        for i in 0..10_000u32 {
            t += 1_000_000; // 1 ms
            if rx.open(&mut forged(i), t) == Err(AeadError::BadTag) {
                derived += 1;
            }
        }
        assert_eq!(derived, 100, "10 s at 10/s");
        // A long quiet spell refills the burst only.
        t += 3_600_000_000_000;
        let before = rx.derivations();
        for i in 0..100 {
            let _ = rx.open(&mut forged(i), t);
        }
        assert_eq!(rx.derivations() - before, 5);
        // A clock stepping back adds no credit.
        let before = rx.derivations();
        for i in 0..100 {
            let _ = rx.open(&mut forged(i), t - 1_000_000_000_000);
        }
        assert_eq!(rx.derivations(), before);
        // A cached session needs no derivation, budget or not.
        let mut tx = SealKey::with_session(c, KEY, sid(9));
        let mut rx = OpenKeys::with_limits(c, KEY, None, limits);
        for i in 0..5 {
            let _ = rx.open(&mut forged(i), NOW);
        }
        let mut dg = sealed(&mut tx, NOW, b"x");
        assert_eq!(rx.open(&mut dg, NOW), Err(AeadError::RateLimited));
        let mut dg = sealed(&mut tx, NOW + 1, b"x");
        assert!(rx.open(&mut dg, NOW + 100_000_000).is_ok());
        for i in 2..100 {
            let mut dg = sealed(&mut tx, NOW + i, b"x");
            assert!(rx.open(&mut dg, NOW + 100_000_000).is_ok());
        }
    }

    #[test]
    fn rotation_routes_by_session() {
        let c = Cipher::Aes256Gcm;
        let new_key: &[u8] = b"the key after the rotation, 32 B";
        let mut old_tx = SealKey::with_session(c, KEY, sid(1));
        let mut previous = OpenKeys::new(c, KEY, None);
        let mut dg = sealed(&mut old_tx, NOW, b"before");
        previous.open(&mut dg, NOW).unwrap();
        // Both sides rotate: a new key file and a new session.
        let mut new_tx = SealKey::with_session(c, new_key, sid(2));
        let mut current = OpenKeys::new(c, new_key, None);
        let mut route = |dg: &mut Vec<u8>| {
            let s = session_of(dg).unwrap();
            let keys = if previous.is_cached(&s) {
                &mut previous
            } else {
                &mut current
            };
            keys.open(dg, NOW).map(|o| o.frame.to_vec())
        };
        // In flight under the old key, then the new one, then the old again.
        assert_eq!(
            route(&mut sealed(&mut old_tx, NOW + 1, b"old")),
            Ok(b"old".to_vec())
        );
        assert_eq!(
            route(&mut sealed(&mut new_tx, NOW + 2, b"new")),
            Ok(b"new".to_vec())
        );
        assert_eq!(
            route(&mut sealed(&mut old_tx, NOW + 3, b"late")),
            Ok(b"late".to_vec())
        );
        assert_eq!(session_of(&[0u8; 15]), None);
        assert_eq!(session_of(&[7u8; 16]), Some(sid(7)));
    }

    #[test]
    fn cache_is_bounded_lru() {
        let c = Cipher::ChaCha20Poly1305;
        let limits = Limits {
            sessions: 3,
            derivations_per_sec: 1000,
            burst: 1000,
        };
        let mut rx = OpenKeys::with_limits(c, KEY, None, limits);
        let mut senders: Vec<SealKey> = (1..=5)
            .map(|i| SealKey::with_session(c, KEY, sid(i)))
            .collect();
        let mut ts = NOW;
        let mut send = |rx: &mut OpenKeys, s: &mut SealKey| {
            ts += 1;
            let mut dg = sealed(s, ts, b"hello");
            rx.open(&mut dg, NOW).map(|o| o.session)
        };
        for s in senders.iter_mut().take(3) {
            send(&mut rx, s).unwrap();
        }
        assert_eq!(rx.cached_sessions(), vec![sid(3), sid(2), sid(1)]);
        send(&mut rx, &mut senders[0]).unwrap(); // 1 is now the most recent
        send(&mut rx, &mut senders[3]).unwrap(); // evicts 2, the LRU
        assert_eq!(rx.cached_sessions(), vec![sid(4), sid(1), sid(3)]);
        assert_eq!(rx.derivations(), 4);
        send(&mut rx, &mut senders[4]).unwrap(); // evicts 3
        send(&mut rx, &mut senders[1]).unwrap(); // 2 again: derived again, evicts 1
        assert_eq!(rx.cached_sessions(), vec![sid(2), sid(5), sid(4)]);
        assert_eq!(rx.derivations(), 6);
        // Forged datagrams of made-up sessions never evict a real one.
        for i in 100..200u8 {
            let mut d = vec![i; 80];
            assert_eq!(rx.open(&mut d, NOW), Err(AeadError::BadTag));
        }
        assert_eq!(rx.cached_sessions(), vec![sid(2), sid(5), sid(4)]);
    }
}
