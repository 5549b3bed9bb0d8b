//! Fuzz target for the receive path (decode, MAC, freshness, replay window,
//! peer learning). The input is a script of operations, see
//! `taptun::rx::harness`, which asserts the anti-replay and peer invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    taptun::rx::harness::run(data);
});
