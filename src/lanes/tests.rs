//! Bit-identity with `hmac` + `sha2`, on random keys, lengths and batches.

use super::harness::{EDGES, check, reference, runnable};
use super::*;
use crate::offload::testutil::XorShift;

/// The tests' xorshift generator, with what these tests draw from it.
struct Rng(XorShift);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.0.next() as u8).collect()
    }
    /// A key of 0..=200 bytes (past 64, HMAC hashes it first).
    fn key(&mut self) -> Vec<u8> {
        let n = self.below(201);
        self.bytes(n)
    }
    /// Mostly around block boundaries and taptun's sizes, sometimes anything.
    fn len(&mut self) -> usize {
        match self.below(8) {
            0..=3 => (EDGES[self.below(EDGES.len())] + self.below(5)).saturating_sub(2),
            4 => self.below(64) * 64 + self.below(3),
            5 => self.below(65536),
            _ => self.below(300),
        }
        .min(65535)
    }
}

const ALL: [Impl; 3] = [Impl::ShaNi3, Impl::ShaNi2, Impl::Portable];

/// The implementations these tests exercise: the ones this CPU runs. The
/// SHA-NI ones it cannot run are left out, and said to be (on stderr):
/// `with_impl` would fall back to the portable code, and a test would
/// compare it with itself and pass. With `TAPTUN_REQUIRE_SHANI=1`
/// (dev/test.sh sets it where /proc/cpuinfo shows sha_ni) that is a
/// failure, so that a broken detection cannot pass unseen.
fn impls() -> Vec<Impl> {
    let run = runnable();
    let skipped: Vec<Impl> = ALL.into_iter().filter(|i| !run.contains(i)).collect();
    if !skipped.is_empty() {
        let why = format!("{skipped:?} not tested: this CPU has no SHA-NI (x86-64 `sha`)");
        assert_ne!(
            std::env::var("TAPTUN_REQUIRE_SHANI").as_deref(),
            Ok("1"),
            "TAPTUN_REQUIRE_SHANI=1, but {why}"
        );
        eprintln!("SKIPPED {why}");
    }
    run
}

/// Says which lane code the tests here exercise (dev/test.sh prints it).
#[test]
fn paths_exercised() {
    let run = impls();
    let skipped: Vec<Impl> = ALL.into_iter().filter(|i| !run.contains(i)).collect();
    println!("lanes: tested {run:?}; not tested (no SHA-NI here) {skipped:?}");
    assert!(run.contains(&Impl::Portable));
}

#[test]
fn rfc4231_case_2() {
    let hk = HmacKey::new(b"Jefe");
    let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    for imp in impls() {
        let tags = {
            let mut out = [[0u8; 32]; 3];
            let m: &[u8] = b"what do ya want for nothing?";
            hk.clone().with_impl(imp).mac_many(&[m, m, m], &mut out);
            out
        };
        for t in tags {
            let hex: String = t.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, want, "{imp:?}");
        }
    }
}

#[test]
fn every_length_to_300_and_taptun_sizes() {
    let mut rng = Rng(XorShift(0x2545_F491_4F6C_DD1D));
    for key in [
        rng.bytes(32),
        rng.bytes(64),
        rng.bytes(65),
        rng.bytes(200),
        vec![],
    ] {
        let msgs: Vec<Vec<u8>> = (0..=300)
            .chain([1432, 1440, 1472, 9040, 65535])
            .map(|n| rng.bytes(n))
            .collect();
        let msgs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
        for imp in impls() {
            check(&key, &msgs, imp);
        }
        // Reversed: lanes pair different lengths (SHA-NI only).
        let rev: Vec<&[u8]> = msgs.iter().rev().copied().collect();
        for imp in impls().into_iter().filter(|&i| i != Impl::Portable) {
            check(&key, &rev, imp);
        }
    }
}

#[test]
fn random_batches_of_unequal_lengths() {
    let mut rng = Rng(XorShift(0x9E37_79B9_7F4A_7C15));
    for round in 0..120 {
        let key = rng.key();
        let n = if round < 71 { round } else { rng.below(71) };
        let msgs: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let len = rng.len();
                rng.bytes(len)
            })
            .collect();
        let msgs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
        for imp in impls() {
            check(&key, &msgs, imp);
        }
    }
}

#[test]
fn taptun_batch_of_equal_datagrams() {
    let mut rng = Rng(XorShift(7));
    let key = rng.bytes(32);
    let msgs: Vec<Vec<u8>> = (0..44).map(|_| rng.bytes(1440)).collect();
    let msgs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
    let mut out = [[0u8; 32]; 44];
    HmacKey::new(&key).mac_many(&msgs, &mut out);
    for (m, t) in msgs.iter().zip(out) {
        assert_eq!(t, reference(&key, m));
    }
}

#[test]
fn portable_is_forced_and_sha_ni_only_where_detected() {
    let hk = HmacKey::new(b"k");
    assert_eq!(hk.imp(), Impl::detect());
    assert_eq!(hk.clone().with_impl(Impl::Portable).imp(), Impl::Portable);
    assert_eq!(
        hk.clone().with_impl(Impl::ShaNi2).imp(),
        if Impl::detect() == Impl::Portable {
            Impl::Portable
        } else {
            Impl::ShaNi2
        }
    );
    assert_eq!(hk.with_impl(Impl::ShaNi3).imp(), Impl::detect());
    assert!(!format!("{:?}", HmacKey::new(b"secret")).contains("secret"));
}

#[test]
fn constant_time_compare() {
    let a = [7u8; 32];
    assert!(ct_eq(&a, &a));
    assert!(!ct_eq(&a, &a[..31]));
    assert!(!ct_eq(&a, &[]));
    for i in 0..32 {
        let mut b = a;
        b[i] ^= 0x01;
        assert!(!ct_eq(&a, &b));
    }
}

/// The fuzz harness on pseudo-random input: what `cargo fuzz run lanes`
/// checks, without coverage guidance, on stable Rust.
#[test]
fn harness_random_inputs() {
    let mut rng = Rng(XorShift(0xD1B5_4A32_D192_ED03));
    for _ in 0..60 {
        let len = rng.below(4000);
        harness::run(&rng.bytes(len));
    }
    harness::run(&[]);
}
