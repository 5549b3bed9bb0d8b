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

use crate::wire::Codec;
use aws_lc_rs::aead::{self as lc, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::str::FromStr;

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
/// ([`looks_like_hmac`], [`OpenKeys::probe`]) has shown what it sends.
pub fn mismatch_message(src: SocketAddr, ours: Mode, theirs: Mode) -> String {
    format!(
        "peer at {src} sends {theirs}, but this side expects {ours}; start both sides with the same --cipher"
    )
}

/// Whether `datagram` is an authentic HMAC-mode datagram under `codec`:
/// an AEAD-mode receiver calls it (rate-limited: it costs one HMAC) on an
/// intact datagram, before [`OpenKeys::open`], which may overwrite a
/// datagram it refuses. A `true` means the peer runs without `--cipher`.
pub fn looks_like_hmac(datagram: &[u8], codec: &Codec) -> bool {
    codec.open(datagram).is_ok()
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

/// An authentic datagram, decrypted in place.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The sender's session.
    pub session: SessionId,
    /// The sender's timestamp (UNIX ns), authenticated: feed it to the
    /// freshness check and the replay window.
    pub timestamp: u64,
    /// The Ethernet frame, plaintext (empty for a keepalive); it lies at
    /// [`frame_range`] of the datagram.
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
    /// with [`looks_like_hmac`] (an HMAC datagram reads as a made-up
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
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_763_900_000_000_000_000;
    const SIZES: [usize; 5] = [0, 1, 64, 1432, 9000];

    fn sid(b: u8) -> SessionId {
        SessionId([b; SESSION_LEN])
    }

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    fn sealed(k: &mut SealKey, ts: u64, f: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; OVERHEAD + f.len()];
        let n = k.encode(ts, f, &mut out).unwrap();
        assert_eq!(n, out.len());
        out
    }

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
            .open_in_place_separate_tag(nonce(NOW + 1), Aad::from(&*aad), &tag, body)
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
