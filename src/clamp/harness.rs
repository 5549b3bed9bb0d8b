//! The MSS clamping harness, shared by the `cargo fuzz` target
//! (`fuzz/fuzz_targets/clamp.rs`) and a randomized unit test.
//!
//! Frames reach the clamp from whatever host sits on either side, so they
//! are hostile input. [`check`] asserts, for one frame and one maximum:
//!
//! - no panic, and the length is unchanged;
//! - only the value bytes of MSS options and the TCP checksum can change,
//!   and only when the result is [`Clamp::Clamped`]; then every MSS
//!   option left announces at most the maximum;
//! - a TCP checksum right before is right after (recomputed from scratch).
//!
//! [`run`] turns fuzzer bytes into a frame, mostly a genuine SYN (so that
//! clamping is reachable) with options and mutations taken from the input.

use super::{Clamp, clamp_mss};
use crate::offload::checksum::l4_checksum;
use crate::offload::headers::{Layers, PROTO_TCP, TcpPacket, parse_l3};
use crate::script::Cursor;

/// Where the TCP header is, if the frame has one that parses.
fn tcp_at(frame: &[u8]) -> Option<Layers> {
    let l = parse_l3(frame).ok()?;
    let tcp = TcpPacket::new_checked(frame.get(l.l4..)?).ok()?;
    (l.proto == PROTO_TCP && tcp.header_len() >= TcpPacket::<&[u8]>::MIN_HEADER_LEN).then_some(l)
}

/// Whether the TCP checksum of the frame is right (false if no TCP).
fn checksum_ok(frame: &[u8]) -> bool {
    tcp_at(frame).is_some_and(|l| l4_checksum(frame, &l) == 0)
}

/// Whether byte `i` of the frame may change: inside the value of an MSS
/// option or the checksum of the TCP header, as the frame was before.
fn may_change(before: &[u8], i: usize) -> bool {
    let Some(l) = tcp_at(before) else {
        return false;
    };
    let tcp = TcpPacket::new_unchecked(&before[l.l4..]);
    let csum = l.l4 + TcpPacket::<&[u8]>::CHECKSUM_OFFSET;
    if (csum..csum + 2).contains(&i) {
        return true;
    }
    tcp.options().flatten().any(|o| {
        let value = l.l4 + TcpPacket::<&[u8]>::MIN_HEADER_LEN + o.offset + 2;
        o.mss().is_some() && (value..value + 2).contains(&i)
    })
}

/// Clamps a copy of `before` to `max_mss` and panics if any invariant
/// breaks. Returns what the clamp did.
pub fn check(before: &[u8], max_mss: u16) -> Clamp {
    let mut after = before.to_vec();
    let result = clamp_mss(&mut after, max_mss);
    assert_eq!(after.len(), before.len(), "length changed");
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    match result {
        Clamp::Clamped { from, to } => {
            assert!(
                from > max_mss && to == max_mss,
                "{result:?} for max {max_mss}"
            );
            for &i in &changed {
                assert!(may_change(before, i), "byte {i} changed");
            }
            let l = tcp_at(&after).expect("a clamped frame is TCP");
            let tcp = TcpPacket::new_unchecked(&after[l.l4..]);
            for o in tcp.options() {
                let o = o.expect("a clamped frame has well-formed options");
                assert!(o.mss().is_none_or(|m| m <= max_mss), "MSS left above max");
            }
        }
        _ => assert!(
            changed.is_empty(),
            "{result:?} but bytes {changed:?} changed"
        ),
    }
    if checksum_ok(before) {
        assert!(checksum_ok(&after), "a right checksum went wrong");
    }
    result
}

/// A TCP SYN over IPv4 or IPv6, maybe VLAN-tagged, with `options`
/// (padded with EOL to whole words) and a right checksum.
pub fn syn(v6: bool, vlan: bool, flags: u8, options: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    opts.truncate(40);
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let tcp_len = 20 + opts.len();
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    }
    if v6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, tcp_len as u8, PROTO_TCP, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        let total = 20 + tcp_len as u8;
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, total, 0, 1, 0x40, 0, 64, PROTO_TCP]);
        f.extend_from_slice(&[0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    }
    let l4 = f.len();
    f.extend_from_slice(&[0x30, 0x39, 0x13, 0x89, 0x10, 0x20, 0x30, 0x40, 0, 0, 0, 0]);
    f.extend_from_slice(&[((tcp_len / 4) as u8) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(&opts);
    let l = parse_l3(&f).expect("a frame built to parse");
    if !l.ipv6 {
        crate::offload::checksum::fill_ipv4_checksum(&mut l.ipv4_mut(&mut f));
    }
    debug_assert_eq!(l.l4, l4);
    crate::offload::checksum::fill_l4_checksum(&mut f, &l);
    f
}

/// Runs one fuzzer input: byte 0 picks the shape, bytes 1–2 the maximum;
/// then either a SYN with the next bytes as options, mutated by the rest
/// (pairs of position and XOR mask), or the rest as a raw frame.
pub fn run(data: &[u8]) -> Clamp {
    let mut c = Cursor::new(data);
    let shape = c.u8();
    let max_mss = c.u16();
    let frame = if shape & 0x80 == 0 {
        let n = usize::from(c.u8() % 41);
        let opts = c.bytes(n);
        let mut f = syn(shape & 1 != 0, shape & 2 != 0, 0x02 | (shape & 0x10), &opts);
        while !c.done() {
            let at = usize::from(c.u16()) % f.len();
            f[at] ^= c.u8();
        }
        f
    } else {
        c.bytes(usize::MAX)
    };
    check(&frame, max_mss)
}
