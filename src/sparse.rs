//! Flow isolation at the receiver, as far as a FIFO socket allows: the
//! receiving thread reads a few runs ahead of its work, and a datagram of a
//! flow that has no other datagram among them (a ping, a DNS query, an
//! SSH keystroke: fq_codel's "sparse flows"; a bulk transfer has many) is
//! taken before the runs ahead of it, so that it does not wait behind a
//! bulk transfer's queue.
//!
//! Only the last datagram of a run can be such a one: the kernel's GRO
//! merges datagrams of one size, and a shorter one ends the run; a lone
//! datagram is a run of its own. A flow is the inner IP packet's addresses,
//! protocol and ports (a hash: a collision only keeps a datagram in its
//! place); a datagram whose flow occurs elsewhere in the window keeps its
//! place, so no flow is ever reordered. Frames that are not IP (ARP) keep
//! their place and hold no one back.
//!
//! Pure, allocation-free once the caches have grown: the caller owns the
//! runs and a [`Flows`] cache per run.

use crate::offload::headers::{PROTO_TCP, PROTO_UDP, parse_l3};
use std::ops::Range;

/// The most datagrams a GRO run holds (the kernel's `UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 128;

/// The datagram ranges of a run of `len` bytes cut in `segment`-byte
/// datagrams (the last may be shorter); one datagram without `segment`.
pub fn datagrams(len: usize, segment: Option<usize>) -> impl Iterator<Item = Range<usize>> {
    let step = match segment {
        Some(s) if s > 0 => s,
        _ => len.max(1),
    };
    (0..len).step_by(step).map(move |s| s..(s + step).min(len))
}

/// The flow of an Ethernet frame: a hash of the IP version, addresses,
/// protocol and (TCP, UDP, not a fragment) ports; 0 when it is not IP or
/// too short to tell.
pub fn flow_of(frame: &[u8]) -> u64 {
    let Ok(l) = parse_l3(frame) else { return 0 };
    let addrs = match l.ipv6 {
        false => l.l3 + 12..l.l3 + 20,
        true => l.l3 + 8..l.l3 + 40,
    };
    let Some(a) = frame.get(addrs) else { return 0 };
    let mut h = Fnv::new();
    h.write(&[u8::from(l.ipv6), l.proto]);
    h.write(a);
    let fragment = !l.ipv6 && l.ipv4(frame).is_fragment();
    if matches!(l.proto, PROTO_TCP | PROTO_UDP)
        && !fragment
        && let Some(ports) = frame.get(l.l4..l.l4 + 4)
    {
        h.write(ports);
    }
    h.finish().max(1)
}

/// FNV-1a, 64 bits: a few dozen bytes per datagram, no keying needed (a
/// collision only keeps a datagram in its place).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The flows of one run's datagrams, computed once when first needed.
#[derive(Debug, Default)]
pub struct Flows {
    known: bool,
    hashes: Vec<u64>,
}

impl Flows {
    /// A cache with room for a full run.
    pub fn new() -> Flows {
        Flows {
            known: false,
            hashes: Vec::with_capacity(MAX_SEGMENTS),
        }
    }

    /// The run changed (read anew, or its last datagram taken).
    pub fn forget(&mut self) {
        self.known = false;
    }

    fn of(&mut self, run: &Run<'_>, offset: usize) -> &[u64] {
        if !self.known {
            self.hashes.clear();
            for d in datagrams(run.data.len(), run.segment) {
                let frame = run.data.get(d.start + offset..d.end).unwrap_or(&[]);
                self.hashes.push(flow_of(frame));
            }
            self.known = true;
        }
        &self.hashes
    }
}

/// A run received and not yet handled: its bytes and GRO segment size.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub data: &'a [u8],
    pub segment: Option<usize>,
}

/// The datagram to take ahead of the others, if any: the last datagram of
/// a run (not the very next one) whose flow has no other datagram in
/// `runs` (oldest first), the first such; its run's index and range.
/// `offset`: where the frame starts in a datagram (the HMAC wire's header
/// length). `flows`: one cache per run, in the same order.
pub fn pick(runs: &[Run<'_>], offset: usize, flows: &mut [Flows]) -> Option<(usize, Range<usize>)> {
    for (i, run) in runs.iter().enumerate() {
        let Some(last) = datagrams(run.data.len(), run.segment).last() else {
            continue;
        };
        let alone = last.start == 0;
        let shorter = run.segment.is_some_and(|s| last.len() < s);
        // The very next datagram needs no moving; a full-size last one of
        // a run is (all but surely) the run's own flow.
        if (alone && i == 0) || (!alone && !shorter) {
            continue;
        }
        let h = match flows[i].of(run, offset).last() {
            Some(&h) if h != 0 => h,
            _ => continue,
        };
        let mut others = 0;
        for (j, (f, r)) in flows.iter_mut().zip(runs).enumerate() {
            let hs = f.of(r, offset);
            // Its own run's other datagrams, and every other run's.
            let mine = if j == i { &hs[..hs.len() - 1] } else { hs };
            others += mine.iter().filter(|&&g| g == h).count();
            if others > 0 {
                break;
            }
        }
        if others == 0 {
            return Some((i, last));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testutil::XorShift;

    const OFF: usize = 40;

    /// A datagram: 40 header bytes, then an Ethernet frame of IPv4 `proto`
    /// from 10.0.0.`src` port `sport`, padded to `len` bytes.
    fn dg(src: u8, proto: u8, sport: u16, len: usize) -> Vec<u8> {
        let mut d = vec![0u8; OFF];
        d.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 10, 0, 0, src, 10, 0, 0, 99,
        ];
        ip.extend_from_slice(&sport.to_be_bytes());
        ip.extend_from_slice(&80u16.to_be_bytes());
        d.extend_from_slice(&ip);
        d.resize(len.max(d.len()), 0);
        d
    }

    fn run_of(dgs: &[Vec<u8>]) -> (Vec<u8>, Option<usize>) {
        let seg = (dgs.len() > 1).then(|| dgs[0].len());
        (dgs.concat(), seg)
    }

    fn pick_in(runs: &[(Vec<u8>, Option<usize>)]) -> Option<(usize, Range<usize>)> {
        let views: Vec<Run<'_>> = runs
            .iter()
            .map(|(d, s)| Run {
                data: d,
                segment: *s,
            })
            .collect();
        let mut flows: Vec<Flows> = runs.iter().map(|_| Flows::new()).collect();
        pick(&views, OFF, &mut flows)
    }

    #[test]
    fn a_ping_behind_a_bulk_run_is_taken_ahead() {
        let bulk = |n| run_of(&vec![dg(1, 6, 5000, 1000); n]);
        let ping = run_of(&[dg(2, 1, 0, 138)]);
        assert_eq!(
            pick_in(&[bulk(10), bulk(10), ping.clone()]),
            Some((2, 0..138))
        );
        // At the end of a bulk run (GRO appends a shorter datagram).
        let mut tail = vec![dg(1, 6, 5000, 1000); 5];
        tail.push(dg(2, 1, 0, 138));
        assert_eq!(pick_in(&[bulk(3), run_of(&tail)]), Some((1, 5000..5138)));
        // Also when it is the next run's: ahead of its own run.
        assert_eq!(pick_in(&[run_of(&tail)]), Some((0, 5000..5138)));
        // Next anyway: nothing to move.
        assert_eq!(pick_in(&[ping.clone(), bulk(3)]), None);
    }

    #[test]
    fn a_flow_with_another_datagram_waiting_keeps_its_place() {
        let bulk = run_of(&vec![dg(1, 6, 5000, 1000); 4]);
        // The bulk flow's own short tail, alone or at a run's end.
        let tail = run_of(&[dg(1, 6, 5000, 300)]);
        assert_eq!(pick_in(&[bulk.clone(), tail]), None);
        let mut t = vec![dg(1, 6, 5000, 1000); 3];
        t.push(dg(1, 6, 5000, 300));
        assert_eq!(pick_in(&[run_of(&t)]), None);
        // A flow with two datagrams waiting is not sparse.
        let ping = run_of(&[dg(2, 1, 0, 138)]);
        assert_eq!(
            pick_in(&[bulk.clone(), ping.clone(), bulk.clone(), ping.clone()]),
            None
        );
        assert_eq!(pick_in(&[ping.clone(), bulk.clone(), ping.clone()]), None);
        // Nor a bulk flow's lone datagrams (no GRO at a low rate).
        let lone = run_of(&[dg(1, 6, 5000, 1000)]);
        assert_eq!(pick_in(&[ping.clone(), lone.clone(), lone.clone()]), None);
        // Other ports are other flows; ARP moves nothing and holds no one.
        let other = run_of(&[dg(1, 6, 5001, 300)]);
        assert_eq!(pick_in(&[bulk.clone(), other]), Some((1, 0..300)));
        let mut arp = dg(3, 1, 0, 100);
        arp[OFF + 12..OFF + 14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(pick_in(&[bulk.clone(), run_of(&[arp.clone()])]), None);
        assert_eq!(pick_in(&[run_of(&[arp]), bulk, ping]), Some((2, 0..138)));
    }

    #[test]
    fn flows_are_addresses_protocol_and_ports() {
        let f = |d: &[u8]| flow_of(&d[OFF..]);
        assert_eq!(f(&dg(1, 6, 5000, 100)), f(&dg(1, 6, 5000, 1400)));
        assert_ne!(f(&dg(1, 6, 5000, 100)), f(&dg(1, 6, 5001, 100)));
        assert_ne!(f(&dg(1, 6, 5000, 100)), f(&dg(1, 17, 5000, 100)));
        assert_ne!(f(&dg(1, 6, 5000, 100)), f(&dg(2, 6, 5000, 100)));
        // ICMP: no ports; a fragment: none either (its later pieces have none).
        assert_eq!(f(&dg(1, 1, 5000, 100)), f(&dg(1, 1, 7, 100)));
        let mut frag = dg(1, 17, 5000, 100);
        frag[OFF + 14 + 6] = 0x20; // more fragments
        let mut later = dg(1, 17, 1234, 100);
        later[OFF + 14 + 7] = 0x10; // offset
        assert_eq!(f(&frag), f(&later));
        assert_eq!(flow_of(&[]), 0);
        assert_eq!(flow_of(&dg(1, 6, 5000, 100)[OFF..OFF + 20]), 0);
    }

    /// Property, over random windows of runs (flows, sizes, tails): a pick
    /// is the last datagram of its run, not the very next datagram, and
    /// its flow is IP and occurs in no other datagram of the window (a
    /// brute-force model), the first such; and when nothing is picked,
    /// there is none.
    #[test]
    fn random_windows_never_reorder_a_flow() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3_000 {
            let nruns = 1 + rng.next() as usize % 6;
            let mut runs = Vec::new();
            for _ in 0..nruns {
                let n = 1 + rng.next() as usize % 8;
                let size = [138, 600, 1000][rng.next() as usize % 3];
                let mut dgs: Vec<Vec<u8>> = (0..n)
                    .map(|_| {
                        dg(
                            1 + (rng.next() % 3) as u8,
                            [1, 6, 17][rng.next() as usize % 3],
                            5000 + (rng.next() % 2) as u16,
                            size,
                        )
                    })
                    .collect();
                if n > 1 && rng.next().is_multiple_of(2) {
                    let l = dgs.len() - 1;
                    dgs[l].truncate(100);
                }
                runs.push(run_of(&dgs));
            }
            // The model: every datagram in order, with its flow.
            let mut all = Vec::new();
            for (i, (d, s)) in runs.iter().enumerate() {
                for r in datagrams(d.len(), *s) {
                    all.push((i, r.clone(), flow_of(&d[r.start + OFF..r.end])));
                }
            }
            let movable = |k: usize| {
                let (i, r, h) = &all[k];
                let last = r.end == runs[*i].0.len();
                let shorter = runs[*i].1.is_some_and(|s| r.len() < s);
                let alone = r.start == 0;
                k > 0
                    && last
                    && (alone || shorter)
                    && *h != 0
                    && all
                        .iter()
                        .enumerate()
                        .all(|(j, (_, _, g))| j == k || g != h)
            };
            match pick_in(&runs) {
                Some((i, r)) => {
                    let k = all
                        .iter()
                        .position(|(j, q, _)| *j == i && *q == r)
                        .expect("a datagram");
                    assert!(movable(k), "{i} {r:?}");
                    // The first such: none earlier was passed over.
                    assert!((0..k).all(|j| !movable(j)));
                }
                None => assert!((0..all.len()).all(|k| !movable(k))),
            }
        }
    }
}
