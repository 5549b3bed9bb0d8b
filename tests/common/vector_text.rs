//! Parsing helpers for the vector-file test (tests/vectors.rs; the Noise
//! vectors of tests/noise_vectors.rs are JSON, read with serde_json),
//! included with `#[path]` so that it does not pull in the e2e rig of
//! `tests/common/mod.rs`.

/// Bytes from hex; `-` stands for none.
pub fn hex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Bytes from standard base64 (the vectors' keys).
pub fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64 key")
}
