//! The confidential-mode vectors (`tests/vectors/aead-v1.txt`, made by
//! `tests/tools/aead_vectors.py` with Python's `cryptography`, i.e. an
//! implementation other than taptun's): each one re-encodes to the same
//! bytes and opens to its session, timestamp and frame; changed by one bit
//! anywhere, truncated or extended, it is refused.

#[path = "common/vector_text.rs"]
mod vector_text;
use std::path::PathBuf;
use taptun::aead::{AeadError, Cipher, Limits, OVERHEAD, OpenKeys, SealKey, SessionId};
use vector_text::{b64, hex};

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/aead-v1.txt")
}

struct Vector {
    name: String,
    cipher: Cipher,
    key: Vec<u8>,
    session: SessionId,
    ts: u64,
    frame: Vec<u8>,
    datagram: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the AEAD vectors at {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let c: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(c.len(), 7, "bad vector line: {line}");
            let mut session = SessionId::default();
            session.0.copy_from_slice(&hex(c[3]));
            Vector {
                name: c[0].to_string(),
                cipher: c[1].parse().expect("cipher"),
                key: b64(c[2]),
                session,
                ts: c[4].parse().expect("timestamp"),
                frame: hex(c[5]),
                datagram: hex(c[6]),
            }
        })
        .collect()
}

/// A receiver that may derive as often as the test needs: every flip of a
/// session-id bit is a new session.
fn receiver(v: &Vector) -> OpenKeys {
    let limits = Limits {
        sessions: 8,
        derivations_per_sec: 1_000_000_000,
        burst: 1_000_000,
    };
    OpenKeys::with_limits(v.cipher, &v.key, None, limits)
}

#[test]
fn vectors_open_and_reencode() {
    let all = vectors();
    for c in Cipher::ALL {
        assert!(
            all.iter().filter(|v| v.cipher == c).count() >= 10,
            "too few {c} vectors"
        );
    }
    for v in &all {
        let mut rx = receiver(v);
        let mut dg = v.datagram.clone();
        let o = rx
            .open(&mut dg, v.ts)
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(o.session, v.session, "{}", v.name);
        assert_eq!(o.timestamp, v.ts, "{}", v.name);
        assert_eq!(&o.frame[..], &v.frame[..], "{}", v.name);
        let mut tx = SealKey::with_session(v.cipher, &v.key, v.session);
        let mut out = vec![0u8; OVERHEAD + v.frame.len()];
        let n = tx.encode(v.ts, &v.frame, &mut out).expect("room");
        assert_eq!(
            &out[..n],
            &v.datagram[..],
            "{}: re-encoding differs",
            v.name
        );
    }
}

#[test]
fn vectors_changed_by_one_bit_are_refused() {
    for v in &vectors() {
        let mut rx = receiver(v);
        let len = v.datagram.len();
        // Every bit of datagrams up to a full frame; of larger ones every
        // bit of the header and tag and every 61st bit between.
        let bits: Vec<usize> = (0..len * 8)
            .filter(|&b| len <= 1500 || b < 24 * 8 || b >= (len - 16) * 8 || b % 61 == 0)
            .collect();
        for bit in bits {
            let mut bad = v.datagram.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                rx.open(&mut bad, v.ts),
                Err(AeadError::BadTag),
                "{}: bit {bit} flipped was accepted",
                v.name
            );
        }
        let mut short = v.datagram[..len - 1].to_vec();
        assert!(rx.open(&mut short, v.ts).is_err(), "{}: truncated", v.name);
        let mut long = v.datagram.clone();
        long.push(0);
        assert!(rx.open(&mut long, v.ts).is_err(), "{}: extended", v.name);
        // Under the other cipher it is junk too.
        let other = Cipher::ALL
            .into_iter()
            .find(|&c| c != v.cipher)
            .expect("two ciphers");
        let mut dg = v.datagram.clone();
        assert!(
            OpenKeys::new(other, &v.key, None)
                .open(&mut dg, v.ts)
                .is_err(),
            "{}: opened under {other}",
            v.name
        );
        // The genuine one still opens after all that.
        let mut dg = v.datagram.clone();
        assert!(rx.open(&mut dg, v.ts).is_ok(), "{}", v.name);
    }
}
