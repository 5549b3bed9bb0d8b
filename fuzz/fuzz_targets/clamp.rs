//! Fuzz target for TCP MSS clamping, which rewrites SYNs from any host on
//! either side. The input is a shape byte, a maximum and a SYN's options
//! and mutations (or a raw frame), see `taptun::clamp::harness`, which
//! asserts: no panic, length kept, only MSS and checksum bytes changed, a
//! right checksum kept right.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    taptun::clamp::harness::run(data);
});
