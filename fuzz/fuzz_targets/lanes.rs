//! Fuzz target for multi-lane HMAC-SHA256: a fuzzer-chosen key and batch of
//! messages, every `taptun::lanes::HmacKey` method compared with the `hmac`
//! and `sha2` crates on both implementations (`taptun::lanes::harness`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    taptun::lanes::harness::run(data);
});
