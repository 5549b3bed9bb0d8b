//! Fuzz target for flow queueing's choice (`taptun::sparse::pick`), which
//! reads frames' headers before any check: the fuzzer gives a window of up
//! to eight runs (bytes, a GRO segment size) and the frames' offset.
//! Asserts: no panic; a pick is the last datagram of its run, within it,
//! not the very next datagram; its flow is an IP one and occurs in no
//! other datagram of the window.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taptun::sparse::{Flows, Run, datagrams, flow_of, pick};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let offset = usize::from(data[0] % 64);
    let nruns = 1 + usize::from(data[1] % 8);
    // Each run: a segment byte (0: none) and a length byte, from the rest.
    let mut rest = &data[2..];
    let mut runs = Vec::new();
    for _ in 0..nruns {
        if rest.len() < 2 {
            break;
        }
        let segment = (rest[0] > 0).then(|| usize::from(rest[0]));
        let len = usize::from(rest[1]).min(rest.len() - 2);
        runs.push(Run {
            data: &rest[2..2 + len],
            segment,
        });
        rest = &rest[2 + len..];
    }
    let mut flows: Vec<Flows> = runs.iter().map(|_| Flows::new()).collect();
    let Some((i, r)) = pick(&runs, offset, &mut flows) else {
        return;
    };
    let run = runs[i];
    let last = datagrams(run.data.len(), run.segment).last().expect("a datagram");
    assert_eq!(r, last);
    assert!(i > 0 || r.start > 0, "the very next datagram");
    let flow = |d: &[u8], r: std::ops::Range<usize>| flow_of(d.get(r.start + offset..r.end).unwrap_or(&[]));
    let h = flow(run.data, r.clone());
    assert_ne!(h, 0);
    for (j, o) in runs.iter().enumerate() {
        for d in datagrams(o.data.len(), o.segment) {
            if j == i && d == r {
                continue;
            }
            assert_ne!(flow(o.data, d), h, "another datagram of the flow");
        }
    }
});
