//! Fuzz target for the receive queue's AQM (`taptun::aqm`, CoDel in
//! `taptun::codel`), on the pure API: the fuzzer picks CoDel's parameters
//! and a sequence of receives (when the thread asked, when the read
//! returned, when the datagram arrived: any u64, clocks stepped either
//! way included). Asserts: no panic (no overflow at any time value); a
//! signal only for a receive that did not wait for its datagram (the call
//! returned within `BLOCKED_NS`) and whose datagram waited at least the
//! target; the per-second figures never claim more
//! receives than were given, nor a longest wait shorter than the mean.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taptun::aqm::{Aqm, BLOCKED_NS};
use taptun::codel::Params;

fn u64_at(d: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = d.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let target_ns = 1 + u64::from(u32::from_le_bytes([data[0], data[1], data[2], 0]));
    let interval_ns = target_ns + 1 + u64::from(u32::from_le_bytes([data[3], data[4], data[5], 0]));
    let mut aqm = Aqm::new(Some(Params {
        target_ns,
        interval_ns,
    }));
    let mut now = u64_at(data, 6) >> (data[11] % 64);
    let mut given = 0u64;
    for c in data[12..].chunks(9) {
        let (kind, v) = (c[0], u64_at(c, 1));
        // Mostly small steps forward; sometimes any value (a stepped clock).
        let (asked, read, arrived) = match kind % 4 {
            0 => (v, u64_at(c, 1).rotate_left(17), v ^ 0x5555),
            1 => {
                let asked = now.saturating_add(v % 1_000_000);
                (asked, asked.saturating_add(v % 50_000), asked.saturating_sub(v % 3_000_000))
            }
            2 => {
                let asked = now.saturating_add(v % 200_000);
                (asked, asked.saturating_add(v % 20_000), asked.saturating_add(v % 10_000))
            }
            _ => {
                let asked = now.saturating_add(v % 5_000);
                (asked, asked.saturating_add(v % 7_000), asked.saturating_sub(v % 900_000))
            }
        };
        given += 1;
        let (signal, second) = aqm.on_receive(asked, read, Some(arrived));
        if signal {
            assert!(read.saturating_sub(asked) <= BLOCKED_NS, "a receive that waited");
            assert!(read.saturating_sub(arrived) >= target_ns, "below target");
        }
        if let Some(s) = second {
            assert!(s.receives >= 1 && s.receives <= given);
            assert!(s.max_ns >= s.mean_ns);
        }
        now = read;
    }
});
