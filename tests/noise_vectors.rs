//! The confidential mode's handshake and transport against vectors made by
//! an independent implementation: Python `noiseprotocol` (vendored in
//! tests/tools/vendor, on PyPI's `cryptography`), checked again by a
//! from-scratch NNpsk0 in tests/tools/noise_v2.py. Fixed ephemerals and
//! indices give byte-exact messages; the split keys, every transport
//! datagram and every refusal must match.

use serde_json::Value;
use std::process::Command;
use taptun::aead::Cipher;
use taptun::noise::handshake::{self, Pending};
use taptun::noise::wire::{INITIATION_LEN, RESPONSE_LEN};
use taptun::noise::{RecvKey, SendKey};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/noise-v2.json");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/noise_vectors.py");

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn k32(v: &Value, field: &str) -> [u8; 32] {
    hex(v[field].as_str().expect(field))
        .try_into()
        .expect("32 bytes")
}

fn vectors() -> Value {
    serde_json::from_str(&std::fs::read_to_string(VECTORS).expect("read vectors")).expect("json")
}

fn cipher(h: &Value) -> Cipher {
    h["cipher"].as_str().unwrap().parse().unwrap()
}

fn initiate(h: &Value) -> (Pending, [u8; INITIATION_LEN]) {
    let mut m1 = [0u8; INITIATION_LEN];
    let p = handshake::initiate(
        cipher(h),
        &k32(h, "psk_hex"),
        h["initiator_index"].as_u64().unwrap() as u32,
        Some(&k32(h, "initiator_ephemeral_private_hex")),
        &mut m1,
    )
    .unwrap();
    (p, m1)
}

#[test]
fn handshakes_and_transport_match_noiseprotocol() {
    let v = vectors();
    let hs = v["handshakes"].as_array().unwrap();
    assert_eq!(hs.len(), 4);
    let mut datagrams = 0;
    for h in hs {
        let c = cipher(h);
        let name = h["name"].as_str().unwrap();
        assert_eq!(handshake::protocol_name(c), h["protocol"].as_str().unwrap());
        assert_eq!(
            handshake::PROLOGUE,
            &hex(h["prologue_hex"].as_str().unwrap())[..]
        );
        let psk = k32(h, "psk_hex");
        let (i_index, r_index) = (
            h["initiator_index"].as_u64().unwrap() as u32,
            h["responder_index"].as_u64().unwrap() as u32,
        );
        let (pending, m1) = initiate(h);
        assert_eq!(
            &m1[..],
            &hex(h["initiation_hex"].as_str().unwrap())[..],
            "{name}"
        );
        let eph_r = k32(h, "responder_ephemeral_private_hex");
        let read = handshake::read_initiation(c, &psk, Some(&eph_r), &m1).unwrap();
        assert_eq!(read.remote, i_index);
        let mut m2 = [0u8; RESPONSE_LEN];
        let r = handshake::respond(read, r_index, &mut m2).unwrap();
        assert_eq!(
            &m2[..],
            &hex(h["response_hex"].as_str().unwrap())[..],
            "{name}"
        );
        let i = handshake::finish(pending, &m2).unwrap();
        let (k1, k2) = (k32(h, "k1_hex"), k32(h, "k2_hex"));
        assert_eq!(
            (i.send, i.recv, i.local, i.remote),
            (k1, k2, i_index, r_index)
        );
        assert_eq!(
            (r.send, r.recv, r.local, r.remote),
            (k2, k1, r_index, i_index)
        );
        for t in h["transport"].as_array().unwrap() {
            let (key, to) = match t["sender"].as_str().unwrap() {
                "initiator" => (k1, r_index),
                _ => (k2, i_index),
            };
            assert_eq!(t["receiver_index"].as_u64().unwrap() as u32, to);
            let frame = hex(t["frame_hex"].as_str().unwrap());
            let want = hex(t["datagram_hex"].as_str().unwrap());
            let counter = t["counter"].as_u64().unwrap();
            let mut dg = vec![0u8; 32 + frame.len()];
            dg[16..16 + frame.len()].copy_from_slice(&frame);
            SendKey::new(c, &key, 0, to, 0)
                .seal_at(counter, &mut dg)
                .unwrap();
            assert_eq!(dg, want, "{name} counter {counter} len {}", frame.len());
            let o = RecvKey::new(c, &key).open(&mut dg).unwrap();
            assert_eq!(&dg[o.frame], &frame[..]);
            datagrams += 1;
        }
    }
    assert_eq!(datagrams, 160);
}

#[test]
fn every_negative_vector_is_refused() {
    let v = vectors();
    let hs = v["handshakes"].as_array().unwrap();
    let by_name = |n: &str| hs.iter().find(|h| h["name"] == n).expect("handshake");
    let negatives = v["negative"].as_array().unwrap();
    assert!(negatives.len() >= 50);
    for n in negatives {
        let h = by_name(n["handshake"].as_str().unwrap());
        let c = cipher(h);
        let mut dg = hex(n["datagram_hex"].as_str().unwrap());
        let what = n["name"].as_str().unwrap();
        let refused = match (n["kind"].as_str().unwrap(), n["receiver"].as_str().unwrap()) {
            ("initiation", _) => {
                handshake::read_initiation(c, &k32(h, "psk_hex"), None, &dg).is_err()
            }
            ("response", _) => handshake::finish(initiate(h).0, &dg).is_err(),
            ("transport", receiver) => {
                let key = if receiver == "responder" {
                    "k1_hex"
                } else {
                    "k2_hex"
                };
                RecvKey::new(c, &k32(h, key)).open(&mut dg).is_err()
            }
            (k, _) => panic!("unknown kind {k}"),
        };
        assert!(refused, "{what}: accepted");
    }
}

/// The vectors say reserved bytes of handshake messages are ignored;
/// taptun is stricter and refuses a datagram whose reserved bytes are not
/// zero as not of this mode (docs/protocol.md). This records the
/// difference, so that it is a choice and not an accident.
#[test]
fn nonzero_reserved_bytes_are_refused_here() {
    let v = vectors();
    for r in v["reserved_ignored"].as_array().unwrap() {
        let dg = hex(r["datagram_hex"].as_str().unwrap());
        assert_eq!(
            taptun::noise::wire::kind(&dg),
            taptun::noise::wire::Kind::Other
        );
    }
}

/// The committed vectors are what the independent implementation writes
/// today (run it again: a change on either side shows).
#[test]
fn the_python_implementation_writes_the_same_vectors() {
    let out = Command::new("python3").arg(SCRIPT).output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        other => {
            let why = format!("python3 {SCRIPT} did not run: {other:?}");
            if std::env::var("TAPTUN_E2E").as_deref() == Ok("require") {
                panic!("{why}");
            }
            eprintln!("skipped: {why}");
            return;
        }
    };
    let committed = std::fs::read(VECTORS).unwrap();
    assert!(
        out.stdout == committed,
        "tests/tools/noise_vectors.py writes other vectors than tests/vectors/noise-v2.json"
    );
}
