//! The wire vectors (`tests/vectors/wire-v1.txt`, a copy of the ones shared
//! with tinytaptunnel): every valid one decodes and re-encodes to the same
//! bytes, every invalid one is rejected. `TAPTUN_VECTORS` points elsewhere.

#[path = "common/vector_text.rs"]
mod vector_text;
use std::path::PathBuf;
use taptun::wire::{Codec, HEADER_LEN};
use vector_text::{b64, hex};

fn vectors_path() -> PathBuf {
    if let Ok(p) = std::env::var("TAPTUN_VECTORS") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/wire-v1.txt")
}

#[test]
fn wire_vectors() {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the wire vectors at {}: {e}", path.display()));
    let (mut valid, mut invalid) = (0, 0);
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // The empty datagram has no last column.
        assert!(
            cols.len() == 6 || cols.len() == 5,
            "bad vector line: {line}"
        );
        let (name, verdict, key, ts) = (
            cols[0],
            cols[1],
            b64(cols[2]),
            cols[3].parse::<u64>().unwrap(),
        );
        let frame = hex(cols[4]);
        let datagram = cols.get(5).map(|d| hex(d)).unwrap_or_default();
        let codec = Codec::new(&key);
        match verdict {
            "valid" => {
                let dg = codec
                    .open(&datagram)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(dg.timestamp(), ts, "{name}");
                assert_eq!(dg.frame(), &frame[..], "{name}");
                let mut out = vec![0u8; HEADER_LEN + frame.len()];
                let n = codec.encode(ts, &frame, &mut out).unwrap();
                assert_eq!(&out[..n], &datagram[..], "{name}: re-encoding differs");
                valid += 1;
            }
            "invalid" => {
                assert!(codec.open(&datagram).is_err(), "{name}: accepted");
                invalid += 1;
            }
            v => panic!("{name}: unknown verdict {v}"),
        }
    }
    assert!(
        valid >= 6 && invalid >= 7,
        "too few vectors read: {valid} valid, {invalid} invalid"
    );
}

/// `key-32.b64`, beside the vectors, is the key file form (base64 of 32
/// bytes, one line) of the key that most vectors use.
#[test]
fn key_file_is_the_vectors_key() {
    let path = vectors_path().with_file_name("key-32.b64");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let key = text.trim();
    assert_eq!(b64(key).len(), 32, "{}", path.display());
    let vectors = std::fs::read_to_string(vectors_path()).unwrap();
    let users = vectors
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(key))
        .count();
    assert!(users >= 6, "only {users} vectors use {key}");
}
