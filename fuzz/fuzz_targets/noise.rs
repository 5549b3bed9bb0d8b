//! Fuzz target for the confidential mode's receiver,
//! `taptun::noise::Keyring::receive`, in both roles. Two keyrings (fixed
//! seeds; the ephemerals are the OS's, as in use) make a session by a real
//! handshake, then the input is a script of datagrams for either side:
//! arbitrary bytes, forgeries shaped like the three messages and naming a
//! live index, genuine datagrams replayed or mutated (bits, bytes, cuts,
//! tails, indices, counters), frames sealed under the session, clock
//! moves, timer polls and honest renewals. It asserts: no panic; nothing
//! but a genuine datagram (one the two sides made, byte for byte) is ever
//! taken; a renewal still succeeds; and at the end a frame sealed by
//! either side opens on the other, unaltered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use taptun::aead::Cipher;
use taptun::noise::wire::{HEADER_LEN, INITIATION_LEN, OVERHEAD, RESPONSE_LEN};
use taptun::noise::{Keyring, Outbox, REKEY_AFTER_NS, Received};

const SEC: u64 = 1_000_000_000;
const PSK: [u8; 32] = [7; 32];
const SEEDS: [[u8; 32]; 2] = [[1; 32], [2; 32]];
/// Honest renewals per input at most (each is two handshakes' CPU).
const RENEWALS: u32 = 4;

/// The script: bytes taken from the front; zeros once it is spent.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

struct Rig {
    k: [Keyring; 2],
    at: [SocketAddr; 2],
    /// A third address: another host's initiations have their own budget.
    stranger: SocketAddr,
    now: u64,
    /// When the sessions in use were made: the clock stays short of their
    /// renewal, so they must keep working.
    made: u64,
    renewals: u32,
    /// Every datagram the two sides made (handshake messages, keepalives,
    /// sealed frames): what may be replayed and mutated, and all that may
    /// be taken.
    genuine: Vec<Vec<u8>>,
}

impl Rig {
    fn new(cipher: Cipher) -> Rig {
        let mut r = Rig {
            k: SEEDS.map(|s| Keyring::new(cipher, &PSK, s)),
            at: [
                "192.0.2.1:4000".parse().unwrap(),
                "192.0.2.2:4000".parse().unwrap(),
            ],
            stranger: "198.51.100.7:9".parse().unwrap(),
            now: 1_000 * SEC,
            made: 0,
            renewals: 0,
            genuine: Vec::new(),
        };
        r.handshake();
        r
    }

    /// Side 0 initiates (its session is due: there is none, or it is past
    /// its renewal) and every message is delivered: both sides must then
    /// send under one new session.
    fn handshake(&mut self) {
        let mut out = Outbox::default();
        self.k[0].poll(Some(self.at[1]), self.now, &mut out);
        assert!(!out.is_empty(), "a session due: an initiation");
        self.carry(0, out);
        let (a, b) = (self.k[0].send_key(), self.k[1].send_key());
        let (a, b) = (
            a.expect("initiator's session"),
            b.expect("responder's session"),
        );
        assert_eq!((a.local(), a.remote()), (b.remote(), b.local()));
        assert_eq!(a.created_ns(), self.now);
        self.made = self.now;
    }

    /// Delivers what `from` put in `out`, and every answer, honestly.
    fn carry(&mut self, from: usize, mut out: Outbox) {
        let mut queue = Vec::new();
        out.drain(|d, _| queue.push((1 - from, d.to_vec())));
        while let Some((to, d)) = queue.pop() {
            self.genuine.push(d.clone());
            let mut b = d;
            let mut o = Outbox::default();
            let src = self.at[1 - to];
            let r = self.k[to].receive(&mut b, src, Some(src), self.now, &mut o);
            assert!(!matches!(r, Received::Refused(_)), "honest delivery: {r:?}");
            o.drain(|d, _| queue.push((1 - to, d.to_vec())));
        }
    }

    /// Hands `dg` to side `to` from `src`; keeps what it sends as genuine.
    fn deliver(&mut self, to: usize, mut dg: Vec<u8>, src: SocketAddr) {
        let forged = !self.genuine.contains(&dg);
        let mut out = Outbox::default();
        let peer = Some(self.at[1 - to]);
        let r = self.k[to].receive(&mut dg, src, peer, self.now, &mut out);
        if forged {
            assert!(
                matches!(r, Received::Refused(_)),
                "side {to} took a datagram neither side made: {r:?}"
            );
        }
        out.drain(|d, _| self.genuine.push(d.to_vec()));
    }

    /// A session index: side `to`'s own (what datagrams to it name) or,
    /// by `pick`, the other side's.
    fn live_index(&self, to: usize, pick: u8) -> u32 {
        let side = if pick & 1 == 0 { to } else { 1 - to };
        self.k[side].status().indices.map_or(0, |(local, _)| local)
    }

    /// A frame of `len` bytes sealed by side `from` under its session.
    fn seal(&self, from: usize, len: usize, fill: u8) -> Vec<u8> {
        let key = self.k[from].send_key().expect("a session");
        let mut d = vec![fill; OVERHEAD + len];
        key.seal(&mut d).expect("room, counters left");
        d
    }

    fn step(&mut self, input: &mut Input) {
        let op = input.byte();
        let to = usize::from(op >> 7);
        let src = if op & 0x40 == 0 {
            self.at[1 - to]
        } else {
            self.stranger
        };
        match op % 8 {
            // Arbitrary bytes.
            0 => {
                let n = usize::from(input.byte());
                let d = input.take(n).to_vec();
                self.deliver(to, d, src);
            }
            // A genuine datagram again.
            1 if !self.genuine.is_empty() => {
                let i = usize::from(input.u16()) % self.genuine.len();
                self.deliver(to, self.genuine[i].clone(), src);
            }
            // A genuine datagram, mutated.
            2 if !self.genuine.is_empty() => {
                let i = usize::from(input.u16()) % self.genuine.len();
                let mut d = self.genuine[i].clone();
                for _ in 0..1 + input.byte() % 4 {
                    let live = self.live_index(to, input.byte());
                    mutate(&mut d, input, live);
                }
                self.deliver(to, d, src);
            }
            // A forgery shaped like one of the three messages, naming a
            // live index: it reaches the key derivation or the AEAD.
            3 => {
                let kind = usize::from(input.byte());
                let len = match kind % 3 {
                    0 => INITIATION_LEN,
                    1 => RESPONSE_LEN,
                    _ => OVERHEAD + usize::from(input.byte()),
                };
                let mut d = vec![0u8; len];
                d[0] = [1, 2, 4][kind % 3];
                let body = input.take(len - 4);
                d[4..4 + body.len()].copy_from_slice(body);
                if kind % 3 > 0 {
                    let ix = self.live_index(to, (kind >> 2) as u8);
                    d[4..8].copy_from_slice(&ix.to_be_bytes());
                }
                self.deliver(to, d, src);
            }
            // A frame sealed under the session; delivered now, or kept.
            4 => {
                let len = usize::from(input.byte());
                let d = self.seal(1 - to, len, input.byte());
                self.genuine.push(d.clone());
                if op & 0x20 != 0 {
                    let mut b = d;
                    let mut out = Outbox::default();
                    let r = self.k[to].receive(&mut b, src, None, self.now, &mut out);
                    // Its first delivery, in time: taken.
                    assert!(
                        matches!(r, Received::Data { ref frame, .. } if frame.len() == len),
                        "{r:?}"
                    );
                }
            }
            // The clock moves, short of the sessions' renewal.
            5 => {
                let step = u64::from(input.u16()) * 1_000_000;
                let limit = self.made + REKEY_AFTER_NS - SEC;
                self.now = (self.now + step).min(limit);
            }
            // A side's timers.
            6 => {
                let mut out = Outbox::default();
                self.k[to].poll(Some(self.at[1 - to]), self.now, &mut out);
                out.drain(|d, _| self.genuine.push(d.to_vec()));
            }
            // An honest renewal: past the initiator's renewal time, before
            // the responder's.
            7 if self.renewals < RENEWALS => {
                self.renewals += 1;
                self.now = self.made + REKEY_AFTER_NS + SEC;
                self.handshake();
            }
            _ => {}
        }
    }

    /// A frame sealed by each side opens on the other, unaltered.
    fn check_session(&mut self) {
        for from in 0..2 {
            let frame: Vec<u8> = (0..60).map(|i| i as u8 ^ from as u8).collect();
            let mut d = vec![0u8; OVERHEAD + frame.len()];
            d[HEADER_LEN..HEADER_LEN + frame.len()].copy_from_slice(&frame);
            let key = self.k[from].send_key().expect("a session still");
            key.seal(&mut d).expect("room, counters left");
            let mut out = Outbox::default();
            let src = self.at[from];
            let r = self.k[1 - from].receive(&mut d, src, Some(src), self.now, &mut out);
            match r {
                Received::Data { frame: f, .. } => assert_eq!(&d[f], &frame[..]),
                r => panic!("side {from}'s frame refused: {r:?}"),
            }
        }
    }
}

/// One change to a genuine datagram.
fn mutate(d: &mut Vec<u8>, input: &mut Input, live: u32) {
    let at = usize::from(input.u16());
    match input.byte() % 7 {
        0 if !d.is_empty() => {
            let bit = at % (d.len() * 8);
            d[bit / 8] ^= 1 << (bit % 8);
        }
        1 if !d.is_empty() => {
            let i = at % d.len();
            d[i] = input.byte();
        }
        2 => d.truncate(at % (d.len() + 1)),
        3 => {
            let n = usize::from(input.byte() % 64);
            d.extend_from_slice(input.take(n));
        }
        // The receiver index (responses, transport).
        4 if d.len() >= 8 => d[4..8].copy_from_slice(&live.to_be_bytes()),
        // The counter (transport).
        5 if d.len() >= 16 => {
            let c = input.take(8);
            d[8..8 + c.len()].copy_from_slice(c);
        }
        // The type byte.
        6 if !d.is_empty() => d[0] = [1, 2, 4, input.byte()][at % 4],
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let cipher = Cipher::ALL[usize::from(input.byte() & 1)];
    let mut rig = Rig::new(cipher);
    while !input.0.is_empty() {
        rig.step(&mut input);
    }
    rig.check_session();
});
