//! Fuzz target for the receive-side coalescer, which parses frames from
//! any host on the peer's LAN. The input is a script that builds frames,
//! see `taptun::offload::harness`, which asserts that every frame comes out
//! exactly once, in order and unchanged (alone, or cut back from a
//! super-frame).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    taptun::offload::harness::run(data);
});
