//! Fuzz target for confidential mode (`taptun::aead`): `SealKey` and
//! `OpenKeys` against RustCrypto's HKDF, AES-GCM and ChaCha20-Poly1305 (not
//! the aws-lc-rs code under test). The input is a script of seals, opens,
//! probes, mutations and clock moves, see `taptun::aead::harness`, which
//! asserts byte-for-byte agreement with the reference, the exact verdict
//! of a model of the session cache and the derivation budget, and that a
//! genuine datagram with one bit flipped is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taptun::aead::harness::{Reference, run};

// The reference the unit test uses too; it names only std types and the
// RustCrypto crates, which are this crate's dependencies (a library built
// with `--cfg fuzzing` cannot use its own dev-dependencies).
#[path = "../../src/aead/harness/reference.rs"]
mod reference;

const RUSTCRYPTO: Reference = Reference {
    seal: reference::seal,
    open: reference::open,
};

fuzz_target!(|data: &[u8]| {
    run(data, &RUSTCRYPTO);
});
