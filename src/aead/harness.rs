//! The confidential-mode harness, shared by the `cargo fuzz` target
//! (`fuzz/fuzz_targets/aead_open.rs`) and a randomized unit test: the
//! aws-lc-rs code of [`SealKey`] and [`OpenKeys`] against an independent
//! implementation of the construction, a [`Reference`] (both callers pass
//! the one in `harness/reference.rs`, on RustCrypto's crates).
//!
//! The input is a script: a cipher, a key file, the receiver's [`Limits`]
//! and four session ids, then operations that seal datagrams (with
//! [`SealKey::encode`], [`SealKey::seal`] or the reference; under the key
//! file, under another one, as our own session), deliver them (opened or
//! probed, and again later), flip one bit of them or mutate them further,
//! send raw bytes, move the clock (backwards too) and change our own
//! session id. It asserts:
//!
//! - what [`SealKey`] seals is byte for byte what the reference seals, and
//!   the reference opens it to the same session, timestamp and frame;
//!   [`SealKey`] refuses a buffer too small and a timestamp not after its
//!   last one, and then seals nothing;
//! - [`OpenKeys`] gives exactly the verdict of a model: too short;
//!   reflected; for a session not cached, a derivation taken from a token
//!   bucket in the caller's time, or else rate-limited (counted, datagram
//!   untouched); then authentic exactly when the reference opens it, with
//!   the reference's frame in place. The cache holds the sessions of the
//!   last authentic datagrams, most recent first, never a forged one;
//! - any single-bit change of a genuine datagram is refused;
//! - [`OpenKeys::probe`] agrees with `open` and leaves its input alone;
//! - nothing panics but a failed assertion.

use super::{
    AeadError, Cipher, HEADROOM, Limits, OVERHEAD, OpenKeys, SESSION_LEN, SealKey, SessionId,
    frame_range,
};
use crate::script::Cursor;

#[cfg(test)]
mod reference;
// The vector files' hex and base64, as `tests/aead_vectors.rs` reads them.
#[cfg(test)]
#[path = "../../tests/common/vector_text.rs"]
mod vector_text;

const BASE_NOW: u64 = 1_763_900_000_000_000_000;
/// Keeps one execution cheap.
const MAX_OPS: usize = 256;
const MAX_FRAME: usize = 1600;
/// Genuine datagrams kept for delivering again.
const MAX_KEPT: usize = 8;
/// What fills a buffer before sealing into it: bytes past the datagram
/// must still hold it afterwards.
const FILL: u8 = 0xa5;

/// An implementation of the construction that is not the code under test,
/// by `--cipher` name and key file bytes, in std types only (so that the
/// fuzz crate can supply one built on its own dependencies).
#[derive(Clone, Copy)]
pub struct Reference {
    /// Seals a frame as (session, timestamp): the whole datagram, `None`
    /// for an unknown cipher name.
    pub seal: SealFn,
    /// Opens a datagram: session, timestamp and frame if it is authentic.
    pub open: OpenFn,
}

/// A reference's seal: (cipher name, key file bytes, session id, timestamp,
/// frame) to the datagram.
pub type SealFn = fn(&str, &[u8], [u8; SESSION_LEN], u64, &[u8]) -> Option<Vec<u8>>;

/// A reference's open: (cipher name, key file bytes, datagram) to session
/// id, timestamp and frame.
pub type OpenFn = fn(&str, &[u8], &[u8]) -> Option<([u8; SESSION_LEN], u64, Vec<u8>)>;

/// What opening a datagram gives: session, timestamp and frame, or why not.
type Verdict = Result<(SessionId, u64, Vec<u8>), AeadError>;

/// What one script reached, so that a test can tell that the harness is
/// not vacuous (that its scripts do open datagrams, flip bits, spend the
/// budget).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Datagrams sealed by [`SealKey`] and checked against the reference.
    pub sealed: usize,
    /// Seals refused (buffer too small, timestamp not after the last).
    pub seal_refused: usize,
    /// Datagrams opened or probed as authentic.
    pub opened: usize,
    /// Genuine datagrams with one bit flipped, refused.
    pub flipped: usize,
    /// Datagrams refused with a bad tag (flipped ones included).
    pub bad_tag: usize,
    /// Datagrams refused unopened: their session was not cached and the
    /// budget was spent.
    pub rate_limited: usize,
    /// Datagrams refused as our own session's.
    pub reflected: usize,
}

impl Tally {
    /// Counts one delivery's verdict.
    fn count(&mut self, verdict: &Verdict, forged: bool) {
        match verdict {
            Ok(_) => self.opened += 1,
            Err(AeadError::BadTag) => self.bad_tag += 1,
            Err(AeadError::RateLimited) => self.rate_limited += 1,
            Err(AeadError::Reflected) => self.reflected += 1,
            Err(_) => {}
        }
        if forged {
            self.flipped += 1;
        }
    }

    /// Adds another script's tally.
    pub fn add(&mut self, o: &Tally) {
        self.sealed += o.sealed;
        self.seal_refused += o.seal_refused;
        self.opened += o.opened;
        self.flipped += o.flipped;
        self.bad_tag += o.bad_tag;
        self.rate_limited += o.rate_limited;
        self.reflected += o.reflected;
    }
}

/// The derivation budget as `OpenKeys` documents it: `burst` derivations
/// at once, refilled at `derivations_per_sec` (one per whole nanosecond
/// count `1e9 / derivations_per_sec`), a clock that steps back adding
/// nothing.
struct Bucket {
    cost_ns: u64,
    max_ns: u64,
    credit_ns: u64,
    /// The latest time seen.
    at_ns: u64,
}

impl Bucket {
    fn new(per_sec: u32, burst: u32) -> Bucket {
        let cost_ns = 1_000_000_000 / u64::from(per_sec);
        let max_ns = cost_ns * u64::from(burst);
        Bucket {
            cost_ns,
            max_ns,
            credit_ns: max_ns,
            at_ns: 0,
        }
    }

    fn take(&mut self, now: u64) -> bool {
        if now > self.at_ns {
            self.credit_ns = self
                .credit_ns
                .saturating_add(now - self.at_ns)
                .min(self.max_ns);
            self.at_ns = now;
        }
        if self.credit_ns < self.cost_ns {
            return false;
        }
        self.credit_ns -= self.cost_ns;
        true
    }
}

/// What the receiver should hold and count, and the reference to judge by.
struct Model {
    reference: Reference,
    cipher: Cipher,
    /// The receiver's key file.
    key: Vec<u8>,
    own: Option<SessionId>,
    capacity: usize,
    /// Cached sessions, most recently used first.
    cache: Vec<SessionId>,
    bucket: Bucket,
    derivations: u64,
    unknown: u64,
}

impl Model {
    /// What opening `dg` at `now` must give, keeping the model's state in
    /// step with the receiver's.
    fn open(&mut self, dg: &[u8], now: u64) -> Verdict {
        if dg.len() < OVERHEAD {
            return Err(AeadError::TooShort(dg.len()));
        }
        let mut session = SessionId::default();
        session.0.copy_from_slice(&dg[..SESSION_LEN]);
        if self.own == Some(session) {
            return Err(AeadError::Reflected);
        }
        let cached = self.cache.iter().position(|&s| s == session);
        if cached.is_none() {
            if !self.bucket.take(now) {
                self.unknown += 1;
                return Err(AeadError::RateLimited);
            }
            self.derivations += 1;
        }
        let (s, ts, frame) =
            (self.reference.open)(self.cipher.name(), &self.key, dg).ok_or(AeadError::BadTag)?;
        assert_eq!(s, session.0, "the reference read another session id");
        // Authentic: to the front of the cache, the least recent out.
        if let Some(i) = cached {
            self.cache.remove(i);
        }
        self.cache.insert(0, session);
        self.cache.truncate(self.capacity);
        Ok((session, ts, frame))
    }

    /// The receiver's cache and counters are the model's.
    fn check(&self, keys: &OpenKeys) {
        assert_eq!(keys.cached_sessions(), self.cache, "cached sessions");
        assert_eq!(keys.derivations(), self.derivations, "derivations");
        assert_eq!(keys.unknown_sessions(), self.unknown, "unknown sessions");
        for s in &self.cache {
            assert!(keys.is_cached(s), "{s} not cached");
        }
    }
}

/// One sender: a sending key and the key file it was made from.
struct Sender {
    key: SealKey,
    key_file: Vec<u8>,
}

impl Sender {
    /// What sealing `frame` at `ts` must give, given the key's last
    /// timestamp and `room`, the bytes there are for the datagram.
    fn expect(&self, ts: u64, frame: &[u8], room: usize) -> Result<(), AeadError> {
        if room < OVERHEAD + frame.len() {
            return Err(AeadError::BufferTooSmall);
        }
        match self.key.last_timestamp() {
            Some(last) if ts <= last => Err(AeadError::NonceReuse { ts, last }),
            _ => Ok(()),
        }
    }

    /// Checks a datagram [`SealKey`] sealed against the reference.
    fn agree(&self, r: &Reference, ts: u64, frame: &[u8], dg: &[u8]) {
        let name = self.key.cipher().name();
        let session = self.key.session().0;
        let theirs = (r.seal)(name, &self.key_file, session, ts, frame);
        assert_eq!(
            Some(dg),
            theirs.as_deref(),
            "SealKey and the reference seal differently"
        );
        assert_eq!(
            (r.open)(name, &self.key_file, dg),
            Some((session, ts, frame.to_vec())),
            "the reference cannot open what SealKey sealed"
        );
        assert_eq!(self.key.last_timestamp(), Some(ts));
    }

    /// Seals with [`SealKey::encode`] into a buffer of `room` bytes.
    fn encode(&mut self, r: &Reference, ts: u64, frame: &[u8], room: usize) -> Option<Vec<u8>> {
        let expected = self.expect(ts, frame, room);
        let last = self.key.last_timestamp();
        let mut out = vec![FILL; room];
        let got = self.key.encode(ts, frame, &mut out);
        assert_eq!(
            got.clone().map(|_| ()),
            expected,
            "encode at {ts}, room {room}"
        );
        let Ok(len) = got else {
            assert_eq!(self.key.last_timestamp(), last, "a refused seal counted");
            return None;
        };
        assert_eq!(len, OVERHEAD + frame.len());
        assert!(out[len..].iter().all(|&b| b == FILL), "wrote past the end");
        out.truncate(len);
        self.agree(r, ts, frame, &out);
        Some(out)
    }

    /// Seals in place with [`SealKey::seal`]: `buf` holds junk headroom,
    /// the frame and junk tailroom (or is too short for them).
    fn seal(&mut self, r: &Reference, ts: u64, mut buf: Vec<u8>) -> Option<Vec<u8>> {
        let frame = match buf.len() {
            n if n >= OVERHEAD => buf[24..n - 16].to_vec(),
            _ => Vec::new(),
        };
        let expected = self.expect(ts, &frame, buf.len());
        let last = self.key.last_timestamp();
        let got = self.key.seal(ts, &mut buf);
        assert_eq!(got, expected, "seal at {ts}, {} bytes", buf.len());
        if got.is_err() {
            assert_eq!(self.key.last_timestamp(), last, "a refused seal counted");
            return None;
        }
        self.agree(r, ts, &frame, &buf);
        Some(buf)
    }
}

/// Opens (or, if `probe`, probes) `dg` and compares with the model;
/// `forged` says it is a genuine datagram with one bit changed. Returns
/// the verdict.
fn deliver(
    keys: &mut OpenKeys,
    m: &mut Model,
    dg: &[u8],
    now: u64,
    probe: bool,
    forged: bool,
) -> Verdict {
    let expected = m.open(dg, now);
    let ok = if probe {
        // `dg` is borrowed immutably: the probe cannot change it.
        let ok = keys.probe(dg, now);
        assert_eq!(ok, expected.is_ok(), "probe: expected {expected:?}");
        ok
    } else {
        let mut buf = dg.to_vec();
        let got = keys
            .open(&mut buf, now)
            .map(|o| (o.session, o.timestamp, o.frame.to_vec()));
        assert_eq!(got, expected, "open of {} bytes at {now}", dg.len());
        match &got {
            Ok((_, _, frame)) => {
                // Between the 24 bytes of session id and timestamp and the
                // 16 of the tag, as docs/protocol.md draws it.
                let at = 24..dg.len() - 16;
                assert_eq!(frame_range(dg.len()), Some(at.clone()), "frame range");
                assert_eq!(&buf[at], &frame[..], "the frame is not in place");
                assert_eq!(buf[..HEADROOM], dg[..HEADROOM], "header changed");
            }
            // Only a refused tag may have overwritten the rest.
            Err(AeadError::BadTag) => {
                assert_eq!(buf[..HEADROOM], dg[..HEADROOM], "header changed")
            }
            Err(_) => assert_eq!(buf, dg, "a datagram refused unopened was changed"),
        }
        got.is_ok()
    };
    if forged {
        assert!(!ok, "a genuine datagram with one bit flipped was accepted");
    }
    m.check(keys);
    expected
}

fn u64_of(c: &mut Cursor) -> u64 {
    (u64::from(c.u32()) << 32) | u64::from(c.u32())
}

fn session(c: &mut Cursor) -> SessionId {
    let mut id = SessionId::default();
    for b in &mut id.0 {
        *b = c.u8();
    }
    id
}

/// `len` bytes from one byte of the script: what a frame holds does not
/// matter to the AEAD, and frames taken from the script would use it up
/// in a few operations.
fn filler(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(151)))
        .collect()
}

/// `dg` with bit `at` (modulo its length) flipped, if it has any bit.
fn flip(mut dg: Vec<u8>, at: usize) -> Vec<u8> {
    if !dg.is_empty() {
        let bit = at % (dg.len() * 8);
        dg[bit / 8] ^= 1 << (bit % 8);
    }
    dg
}

/// Runs one script against `reference`; panics when [`SealKey`] or
/// [`OpenKeys`] breaks an invariant (or disagrees with the reference).
/// Returns what it reached.
pub fn run(script: &[u8], reference: &Reference) -> Tally {
    let mut tally = Tally::default();
    let mut c = Cursor::new(script);
    let cipher = Cipher::ALL[usize::from(c.u8() & 1)];
    let key_len = usize::from(c.u8() % 65);
    let key = c.bytes(key_len);
    // Zeros included: the receiver takes at least one of each.
    let limits = Limits {
        sessions: usize::from(c.u8() % 5),
        derivations_per_sec: u32::from(c.u8() % 9),
        burst: u32::from(c.u8() % 5),
    };
    let mut now = BASE_NOW + u64::from(c.u32());
    let ids = [
        session(&mut c),
        session(&mut c),
        session(&mut c),
        session(&mut c),
    ];
    let own = ids[3];
    // Another key file: HKDF takes the whole of it, so one more byte makes
    // every session key another.
    let mut wrong = key.clone();
    wrong.push(0x5a);
    // Three genuine senders, our own session (reflections), and a sender
    // under the wrong key file that shares sender 0's session id.
    let mut senders: Vec<Sender> = [(0, &key), (1, &key), (2, &key), (3, &key), (0, &wrong)]
        .into_iter()
        .map(|(i, k)| Sender {
            key: SealKey::with_session(cipher, k, ids[i]),
            key_file: k.clone(),
        })
        .collect();
    let mut keys = OpenKeys::with_limits(cipher, &key, Some(own), limits);
    let mut m = Model {
        reference: *reference,
        cipher,
        key: key.clone(),
        own: Some(own),
        capacity: limits.sessions.max(1),
        cache: Vec::new(),
        bucket: Bucket::new(limits.derivations_per_sec.max(1), limits.burst.max(1)),
        derivations: 0,
        unknown: 0,
    };
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for _ in 0..MAX_OPS {
        if c.done() {
            break;
        }
        let op = c.u8();
        let probe = op & 0x80 != 0;
        let dg = match op & 7 {
            // Raw bytes.
            0 => {
                let n = usize::from(c.u16()) % 320;
                c.bytes(n)
            }
            // A sender seals a frame, at its next timestamp or any.
            1..=3 => {
                let s = &mut senders[usize::from(c.u8()) % 5];
                let ts = if op & 0x40 == 0 {
                    let step = u64::from(c.u8());
                    s.key
                        .last_timestamp()
                        .map_or(now, |t| t.saturating_add(1 + step))
                } else {
                    u64_of(&mut c)
                };
                let len = usize::from(c.u16()) % MAX_FRAME;
                let sealed = if op & 7 == 3 {
                    // In place; sometimes too short even for the overhead.
                    let room = if c.u8().is_multiple_of(4) {
                        0
                    } else {
                        OVERHEAD
                    };
                    let buf = filler(len + room, c.u8());
                    s.seal(reference, ts, buf)
                } else {
                    let frame = filler(len, c.u8());
                    // Room for it, or a byte short, or some to spare.
                    let room = match c.u8() % 8 {
                        0 => (OVERHEAD + frame.len()).saturating_sub(1),
                        1 => OVERHEAD + frame.len() + 7,
                        _ => OVERHEAD + frame.len(),
                    };
                    s.encode(reference, ts, &frame, room)
                };
                let Some(dg) = sealed else {
                    tally.seal_refused += 1;
                    continue;
                };
                tally.sealed += 1;
                if kept.len() == MAX_KEPT {
                    kept.remove(0);
                }
                kept.push(dg.clone());
                match (op >> 4) & 3 {
                    0 => dg,
                    // One bit flipped anywhere: must be refused.
                    1 => {
                        let dg = flip(dg, usize::from(c.u16()));
                        let v = deliver(&mut keys, &mut m, &dg, now, probe, true);
                        tally.count(&v, true);
                        continue;
                    }
                    // Several changes: flips, truncation, extension.
                    2 => {
                        let mut dg = dg;
                        for _ in 0..1 + c.u8() % 4 {
                            let at = usize::from(c.u16());
                            match c.u8() % 3 {
                                0 => dg = flip(dg, at),
                                1 => dg.truncate(at % (dg.len() + 1)),
                                _ => dg.push(at as u8),
                            }
                        }
                        dg
                    }
                    // Kept, to be delivered later.
                    _ => continue,
                }
            }
            // The reference seals, for a sender's session or a new one,
            // under the key file (or the wrong one); OpenKeys must agree.
            4 => {
                let id = match c.u8() % 6 {
                    i @ 0..=3 => ids[usize::from(i)],
                    _ => session(&mut c),
                };
                let k = if op & 0x40 == 0 { &key } else { &wrong };
                let ts = u64_of(&mut c);
                let len = usize::from(c.u16()) % MAX_FRAME;
                let frame = filler(len, c.u8());
                let dg = (reference.seal)(cipher.name(), k, id.0, ts, &frame)
                    .expect("the reference knows both ciphers");
                if op & 0x20 != 0 {
                    let dg = flip(dg, usize::from(c.u16()));
                    let v = deliver(&mut keys, &mut m, &dg, now, probe, true);
                    tally.count(&v, true);
                    continue;
                }
                dg
            }
            // A datagram seen before, again (the receiver has no replay
            // window: that is `rx`'s, on the timestamp).
            5 => match kept.len() {
                0 => continue,
                n => kept[usize::from(c.u8()) % n].clone(),
            },
            // The clock moves, forwards or back, or jumps anywhere.
            6 => {
                let step = u64::from(c.u16()) * 10_000_000;
                now = match (op >> 5) & 3 {
                    0 | 1 => now.saturating_add(step),
                    2 => now.saturating_sub(step),
                    _ => u64_of(&mut c),
                };
                continue;
            }
            // Our own session changes (a rotation draws a new one).
            _ => {
                let own = match c.u8() % 4 {
                    0 => None,
                    1 => Some(ids[usize::from(c.u8()) % 4]),
                    _ => Some(own),
                };
                keys.set_own_session(own);
                m.own = own;
                continue;
            }
        };
        let v = deliver(&mut keys, &mut m, &dg, now, probe, false);
        tally.count(&v, false);
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUSTCRYPTO: Reference = Reference {
        seal: reference::seal,
        open: reference::open,
    };

    fn scripts(n: usize, seed: u64) -> impl Iterator<Item = Vec<u8>> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n).map(move |_| {
            let len = (next() % 6000) as usize;
            (0..len).map(|_| next() as u8).collect()
        })
    }

    /// The harness on pseudo-random scripts: the same invariants as
    /// `cargo fuzz run aead_open`, without coverage guidance, on stable Rust.
    #[test]
    fn harness_random_scripts() {
        let mut all = Tally::default();
        for script in scripts(150, 0x2545_F491_4F6C_DD1D) {
            all.add(&run(&script, &RUSTCRYPTO));
        }
        all.add(&run(&[], &RUSTCRYPTO));
        // About half of what these scripts reach today: a harness change
        // that stops reaching a case fails here instead of passing idly.
        assert!(all.sealed > 1500 && all.seal_refused > 500, "{all:?}");
        assert!(all.opened > 400 && all.flipped > 800, "{all:?}");
        assert!(all.rate_limited > 1000 && all.reflected > 300, "{all:?}");
    }

    /// The reference seals and opens every datagram of
    /// `tests/vectors/aead-v1.txt` (made with OpenSSL) exactly, so a
    /// harness that passes is not two copies of one mistake.
    #[test]
    fn reference_matches_the_vectors() {
        use super::vector_text::{b64, hex};
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/aead-v1.txt");
        let text = std::fs::read_to_string(path).expect("the AEAD vectors");
        let mut n = 0;
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let c: Vec<&str> = line.split_whitespace().collect();
            let (name, cipher, key) = (c[0], c[1], b64(c[2]));
            let session: [u8; SESSION_LEN] = hex(c[3]).try_into().expect("a session id");
            let ts: u64 = c[4].parse().expect("a timestamp");
            let (frame, dg) = (hex(c[5]), hex(c[6]));
            let sealed = reference::seal(cipher, &key, session, ts, &frame);
            assert_eq!(sealed.as_ref(), Some(&dg), "{name}");
            assert_eq!(
                reference::open(cipher, &key, &dg),
                Some((session, ts, frame))
            );
            n += 1;
        }
        assert!(n >= 20, "only {n} vectors");
    }

    /// The harness is not blind: against a reference that is wrong by one
    /// tag bit, it fails.
    #[test]
    fn harness_fails_on_a_wrong_reference() {
        let wrong = Reference {
            seal: |c, k, s, ts, f| {
                let mut dg = reference::seal(c, k, s, ts, f)?;
                if let Some(b) = dg.last_mut() {
                    *b ^= 1;
                }
                Some(dg)
            },
            open: reference::open,
        };
        let caught = scripts(20, 0x9E37_79B9_7F4A_7C15)
            .any(|script| std::panic::catch_unwind(|| run(&script, &wrong)).is_err());
        assert!(caught, "a wrong reference went unnoticed");
    }
}
