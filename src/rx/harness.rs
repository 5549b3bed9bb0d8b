//! The receive-path fuzz harness, shared by the `cargo fuzz` target
//! (`fuzz/fuzz_targets/rx.rs`) and a randomized unit test, so that both
//! check the same invariants.
//!
//! The input is not a datagram but a script: a sequence of operations that
//! seal genuine datagrams with the real key, deliver them (in any order, any
//! number of times, from any of a few source addresses), mutate them, send
//! junk or wrong-key datagrams and move the clock. Valid MACs are therefore
//! reachable, and every verdict is compared with a simple model:
//!
//! - a datagram is accepted only if its MAC is valid under the real key, it
//!   is fresh, and its timestamp was never accepted before (no frame twice);
//! - a genuine, fresh, never-accepted datagram newer than everything accepted
//!   is always accepted, and so is any such datagram while the window is not
//!   yet full (no false replay drops);
//! - the peer is learned or moved exactly when an accepted datagram is the
//!   newest ever and comes from another address, and never otherwise;
//! - short, forged, stale and future datagrams get exactly their drop reason;
//! - after a key rotation, datagrams under the old key are accepted for the
//!   maximum age and refused (bad MAC) after it.
//!
//! Any violation panics, which the fuzzer reports as a crash.

use super::{Inbound, Verdict};
use crate::addr::canonical;
use crate::peer::PeerUpdate;
use crate::replay::CAPACITY;
use crate::script::Cursor;
use crate::stats::DropReason;
use crate::wire::{Codec, HEADER_LEN, MAC_LEN};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

const KEY: &[u8] = b"fuzz key: 32 bytes of secret...!";
/// The key after a rotation (SIGHUP); rotations alternate between the two.
const KEY_B: &[u8] = b"rotated key, 32 bytes of secret!";
const KEYS: [&[u8]; 2] = [KEY, KEY_B];
const WRONG_KEY: &[u8] = b"another key, also 32 bytes long!";
const BASE_NOW: u64 = 1_763_900_000_000_000_000;
const SEC: u64 = 1_000_000_000;
/// Keeps one execution cheap: at most this many sealed datagrams.
const MAX_SEALED: usize = 4096;

/// Whether `dg` carries a valid tag under `key`, computed here
/// independently of `wire::Codec`. Normally only datagrams the harness
/// sealed; but libFuzzer's comparison tracing can lift a whole tag out of
/// the MAC check, so the fuzzer does forge valid datagrams of its own.
fn authentic(key: &[u8], dg: &[u8]) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    if dg.len() < HEADER_LEN {
        return false;
    }
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(&dg[MAC_LEN..]);
    mac.finalize().into_bytes().as_slice() == &dg[..MAC_LEN]
}

fn sources() -> [SocketAddr; 5] {
    [
        "192.0.2.2:9123".parse().expect("literal"),
        // The same address as seen by a dual-stack socket: not a move.
        "[::ffff:192.0.2.2]:9123".parse().expect("literal"),
        // The genuine peer after a NAT rebinding.
        "198.51.100.7:40000".parse().expect("literal"),
        // The attacker.
        "203.0.113.66:9123".parse().expect("literal"),
        "[2001:db8::66]:9123".parse().expect("literal"),
    ]
}

struct Model {
    rx: Inbound,
    /// Index in [`KEYS`] of the current key.
    key: usize,
    /// The key before the last rotation, and until when it is accepted.
    previous: Option<(usize, u64)>,
    now: u64,
    max_age: u64,
    /// The genuine sender's last timestamp (it only goes up).
    sender_ts: u64,
    /// Every datagram the genuine sender sealed (under the key current
    /// then), by timestamp.
    sealed: HashMap<u64, Vec<u8>>,
    /// The same, in sealing order, for the script to pick from.
    order: Vec<u64>,
    delivered: HashSet<u64>,
    highest: u64,
    peer: Option<SocketAddr>,
}

impl Model {
    fn check(&mut self, dg: &[u8], src: SocketAddr) {
        let (verdict, update) = self.rx.receive(dg, src, self.now);
        let ts = dg
            .get(MAC_LEN..HEADER_LEN)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
        let genuine = authentic(KEYS[self.key], dg)
            || self
                .previous
                .is_some_and(|(k, until)| self.now <= until && authentic(KEYS[k], dg));
        let accepted = matches!(verdict, Verdict::Frame(_) | Verdict::Keepalive);
        if dg.len() < HEADER_LEN {
            assert_eq!(verdict, Verdict::Drop(DropReason::Short), "short datagram");
        } else if dg.len() > crate::tx::MAX_DATAGRAM {
            assert_eq!(verdict, Verdict::Drop(DropReason::Oversize), "too long");
        } else if !genuine {
            assert_eq!(
                verdict,
                Verdict::Drop(DropReason::BadMac),
                "forged accepted"
            );
        } else {
            let ts = ts.expect("genuine has a timestamp");
            let fresh = if ts <= self.now {
                if self.now - ts > self.max_age {
                    Some(DropReason::Stale)
                } else {
                    None
                }
            } else if ts - self.now > self.max_age {
                Some(DropReason::Future)
            } else {
                None
            };
            if let Some(reason) = fresh {
                assert_eq!(verdict, Verdict::Drop(reason), "freshness of {ts}");
            } else if self.delivered.contains(&ts) || ts == 0 {
                assert_eq!(verdict, Verdict::Drop(DropReason::Replay), "replay of {ts}");
            } else if ts > self.highest || self.delivered.len() < CAPACITY {
                assert!(accepted, "genuine fresh new {ts} refused: {verdict:?}");
            } else {
                assert!(
                    accepted || verdict == Verdict::Drop(DropReason::Replay),
                    "{verdict:?}"
                );
            }
        }
        if accepted {
            let ts = ts.expect("accepted has a timestamp");
            assert!(genuine, "accepted a datagram without a valid MAC");
            assert!(self.delivered.insert(ts), "{ts} delivered twice");
            let frame = &dg[HEADER_LEN..];
            match verdict {
                Verdict::Frame(f) => assert!(!f.is_empty() && f == frame, "wrong frame"),
                _ => assert!(frame.is_empty(), "keepalive with a frame"),
            }
            let newest = ts > self.highest;
            self.highest = self.highest.max(ts);
            let src = canonical(src);
            let expect = match self.peer {
                Some(cur) if cur == src => PeerUpdate::Unchanged,
                _ if !newest => PeerUpdate::Unchanged,
                None => PeerUpdate::Learned(src),
                Some(from) => PeerUpdate::Moved { from, to: src },
            };
            assert_eq!(update, expect, "peer update for {ts} from {src}");
            if newest {
                self.peer = Some(src);
            }
        } else {
            assert_eq!(
                update,
                PeerUpdate::Unchanged,
                "peer moved by a dropped datagram"
            );
        }
        assert_eq!(self.rx.peer(), self.peer, "peer state");
    }

    fn seal(&mut self, ts: u64, frame: &[u8]) {
        if self.sealed.len() >= MAX_SEALED || self.sealed.contains_key(&ts) {
            // The genuine sender never reuses a timestamp.
            return;
        }
        let mut dg = vec![0u8; HEADER_LEN + frame.len()];
        let n = Codec::new(KEYS[self.key])
            .encode(ts, frame, &mut dg)
            .expect("buffer sized for the frame");
        dg.truncate(n);
        self.sealed.insert(ts, dg);
        self.order.push(ts);
    }

    fn pick(&self, c: &mut Cursor) -> Option<Vec<u8>> {
        if self.order.is_empty() {
            return None;
        }
        let i = c.u16() as usize % self.order.len();
        // Bias towards recent datagrams, as a capture would.
        let i = self.order.len() - 1 - i.min(self.order.len() - 1);
        self.sealed.get(&self.order[i]).cloned()
    }
}

/// Runs one script; panics when the receive path breaks an invariant.
pub fn run(data: &[u8]) {
    let mut c = Cursor::new(data);
    let src = sources();
    let setup = c.u8();
    let max_age = [3 * SEC, SEC, SEC / 1000, 0][(setup & 3) as usize];
    let now = match (setup >> 2) & 3 {
        // Near the ends of the clock, to reach the arithmetic edges.
        0 => max_age / 2,
        1 => u64::MAX - SEC,
        _ => BASE_NOW,
    };
    let peer = match (setup >> 4) & 3 {
        0 | 1 => None,
        2 => Some(src[0]),
        _ => Some(src[1]),
    };
    let mut m = Model {
        rx: Inbound::new(Codec::new(KEY), max_age, peer),
        key: 0,
        previous: None,
        now,
        max_age,
        sender_ts: now.saturating_sub(max_age / 2),
        sealed: HashMap::new(),
        order: Vec::new(),
        delivered: HashSet::new(),
        highest: 0,
        peer: peer.map(canonical),
    };
    let wrong = Codec::new(WRONG_KEY);
    while !c.done() {
        let op = c.u8();
        let from = src[(op >> 4) as usize % src.len()];
        match op & 15 {
            // The genuine sender seals a frame at its next timestamp.
            0..=3 => {
                let step = 1 + u64::from(c.u16()) * u64::from(1 + (op & 3)) * 1000;
                let Some(ts) = m.sender_ts.checked_add(step) else {
                    continue;
                };
                m.sender_ts = ts;
                let len = usize::from(c.u8() % 48);
                let frame = c.bytes(len);
                m.seal(ts, &frame);
                // Usually delivered at once.
                if op & 1 == 0
                    && let Some(dg) = m.sealed.get(&ts).cloned()
                {
                    m.check(&dg, from);
                }
            }
            // Deliver (again, or late) a sealed datagram: reordering and replay.
            4..=6 => {
                if let Some(dg) = m.pick(&mut c) {
                    m.check(&dg, from);
                }
            }
            // Mutate a sealed datagram: flip, truncate, extend.
            7 => {
                if let Some(mut dg) = m.pick(&mut c) {
                    let pos = usize::from(c.u16()) % (dg.len() + 1);
                    let val = c.u8();
                    match c.u8() % 3 {
                        0 if pos < dg.len() => dg[pos] ^= val,
                        1 => dg.truncate(pos),
                        _ => dg.extend(std::iter::repeat_n(val, pos % 64)),
                    }
                    m.check(&dg, from);
                }
            }
            // Random bytes.
            8 => {
                let len = usize::from(c.u8());
                let junk = c.bytes(len);
                m.check(&junk, from);
            }
            // Well-formed but under the wrong key, at a fresh timestamp.
            9 => {
                let len = usize::from(c.u8() % 48);
                let frame = c.bytes(len);
                let mut dg = vec![0u8; HEADER_LEN + frame.len()];
                let n = wrong
                    .encode(m.sender_ts.wrapping_add(1), &frame, &mut dg)
                    .expect("sized");
                m.check(&dg[..n], from);
            }
            // The clock moves on (up to ~4 s), or the sender's clock is off.
            10 | 11 => {
                let d = u64::from(c.u16()) * 65_536;
                m.now = m.now.saturating_add(d);
                if op & 1 == 1 {
                    m.sender_ts = m.sender_ts.max(m.now);
                }
            }
            // A genuine datagram at any timestamp near now, sealed and delivered:
            // reaches stale, future and out-of-order cases.
            12 | 13 => {
                let off = u64::from(c.u32()) * 8;
                let ts = if op & 1 == 0 {
                    m.now.saturating_sub(off)
                } else {
                    m.now.saturating_add(off)
                };
                m.seal(ts, b"x");
                if let Some(dg) = m.sealed.get(&ts).cloned() {
                    m.check(&dg, from);
                }
            }
            // An oversized datagram (the largest a UDP socket can hand over).
            14 => {
                let mut dg = vec![c.u8(); 65_535];
                if c.u8() & 1 == 1
                    && let Some(g) = m.pick(&mut c)
                {
                    dg[..g.len()].copy_from_slice(&g);
                }
                m.check(&dg, from);
            }
            // Key rotation: receiver and sender switch; what the sender
            // sealed before stays acceptable for the maximum age.
            _ if op & 0x80 != 0 => {
                let new = 1 - m.key;
                m.rx.rotate(Codec::new(KEYS[new]), m.now);
                m.previous = Some((m.key, m.now.saturating_add(m.max_age)));
                m.key = new;
            }
            // Empty datagram.
            _ => m.check(&[], from),
        }
    }
}
