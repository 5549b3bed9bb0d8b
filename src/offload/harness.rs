//! The coalescer fuzz harness, shared by the `cargo fuzz` target
//! (`fuzz/fuzz_targets/coalesce.rs`) and a randomized unit test.
//!
//! Frames handed to the coalescer come from whatever host sits on the
//! peer's LAN, so they are hostile input. The input is a script that builds
//! frames: genuine TCP and UDP flows over IPv4, IPv6 and VLAN (so that runs
//! are reachable), continuations of the last frame (next sequence number or
//! IPv4 ID), raw bytes, bit flips and byte writes anywhere, duplicates,
//! swaps and checksum repairs (so that mutated headers can still look
//! valid). The invariant, checked after every script:
//!
//! every frame that goes in comes out exactly once, in order and unchanged:
//! alone behind an empty `virtio_net_hdr`, or inside a super-frame that
//! [`segment`] (standing in for the kernel) cuts back into the very same
//! bytes.
//!
//! Any violation, and any panic on the way, is a crash for the fuzzer.

use super::checksum::{fill_ipv4_checksum, fill_l4_checksum};
use super::headers::{HeaderError, Layers, PROTO_TCP, PROTO_UDP, TcpPacket, UdpPacket, parse_l3};
use super::{Coalescer, GSO_NONE, VNET_HDR_LEN, VnetHdr, segment};
use crate::script::Cursor;

/// Keeps one execution cheap.
const MAX_FRAMES: usize = 300;
const MAX_LEN: usize = 1600;

/// Ethernet (optionally with a VLAN tag), IP and the L4 header of a flow.
fn template(kind: u8) -> Vec<u8> {
    let (v6, vlan, tcp) = (kind & 1 != 0, kind & 2 != 0, kind & 4 != 0);
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    }
    let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
    if v6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 0, proto, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0, 0xff, 0xfe, 0x40, 0, 64, proto]);
        f.extend_from_slice(&[0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    }
    if tcp {
        f.extend_from_slice(&[0x30, 0x39, 0x13, 0x89, 0xff, 0xff, 0xff, 0x00]);
        f.extend_from_slice(&[0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 0]);
    }
    f
}

/// Length of the headers in front of the payload, if the frame parses.
fn headers(f: &[u8]) -> Option<(Layers, usize)> {
    let l = parse_l3(f).ok()?;
    let hl = match l.proto {
        PROTO_TCP => {
            l.l4 + match TcpPacket::new_checked(f.get(l.l4..)?) {
                Ok(t) => t.header_len(),
                // A data offset below 5 words is not a TCP header (nor
                // room for one): taken as 5, so that such a flow goes on.
                Err(HeaderError::Malformed) => TcpPacket::<&[u8]>::MIN_HEADER_LEN,
                Err(HeaderError::Truncated) => return None,
            }
        }
        PROTO_UDP => l.l4 + UdpPacket::<&[u8]>::HEADER_LEN,
        _ => return None,
    };
    (hl <= f.len()).then_some((l, hl))
}

/// Makes the IP (and UDP) lengths match the frame, then the checksums.
fn set_lengths(f: &mut [u8]) {
    let Some((l, _)) = headers(f) else { return };
    let l4_len = f.len() - l.l4;
    if l.ipv6 {
        l.ipv6_mut(f).set_payload_len(l4_len as u16);
    } else {
        let total = f.len() - l.l3;
        l.ipv4_mut(f).set_total_len(total as u16);
    }
    if l.proto == PROTO_UDP {
        l.udp_mut(f).set_length(l4_len as u16);
    }
    set_checksums(f);
}

/// Recomputes the IPv4 header and TCP/UDP checksums, whatever the fields say.
fn set_checksums(f: &mut [u8]) {
    let Some((l, _)) = headers(f) else { return };
    if !l.ipv6 {
        fill_ipv4_checksum(&mut l.ipv4_mut(f));
    }
    fill_l4_checksum(f, &l);
}

/// The frame after `prev` in its flow, with `len` payload bytes: next TCP
/// sequence number, or next IPv4 ID for UDP.
fn next_of(prev: &[u8], len: usize, fill: u8) -> Option<Vec<u8>> {
    let (l, hl) = headers(prev)?;
    let mut f = prev[..hl].to_vec();
    f.extend((0..len).map(|i| fill.wrapping_add(i as u8)));
    if l.proto == PROTO_TCP {
        let seq = l.tcp(prev).seq_number();
        l.tcp_mut(&mut f)
            .set_seq_number(seq.wrapping_add((prev.len() - hl) as u32));
    }
    if !l.ipv6 {
        let id = l.ipv4(prev).ident().wrapping_add(1);
        l.ipv4_mut(&mut f).set_ident(id);
    }
    set_lengths(&mut f);
    Some(f)
}

/// Builds the frames the script describes.
fn frames(data: &[u8]) -> Vec<Vec<u8>> {
    let mut c = Cursor::new(data);
    let mut v: Vec<Vec<u8>> = Vec::new();
    while !c.done() && v.len() < MAX_FRAMES {
        let op = c.u8();
        let pick = |c: &mut Cursor, n: usize| usize::from(c.u16()) % n.max(1);
        match op % 8 {
            0 => {
                let mut f = template(c.u8());
                let len = usize::from(c.u16()) % 1400 + 1;
                let fill = c.u8();
                f.extend((0..len).map(|i| fill.wrapping_add(i as u8)));
                set_lengths(&mut f);
                v.push(f);
            }
            1 => {
                // Same payload size as the last frame, or a given one.
                let Some(prev) = v.last() else { continue };
                let same = headers(prev).map_or(1, |(_, hl)| prev.len() - hl);
                let len = if op & 0x80 != 0 {
                    usize::from(c.u16()) % 1400 + 1
                } else {
                    same
                };
                if let Some(f) = next_of(prev, len, c.u8()) {
                    v.push(f);
                }
            }
            2 if !v.is_empty() => {
                let i = pick(&mut c, v.len());
                let at = pick(&mut c, v[i].len());
                v[i][at] ^= 1 << (c.u8() % 8);
            }
            3 if !v.is_empty() => {
                let i = pick(&mut c, v.len());
                v.insert(i, v[i].clone());
            }
            4 if v.len() > 1 => {
                let i = pick(&mut c, v.len() - 1);
                v.swap(i, i + 1);
            }
            5 => {
                let len = usize::from(c.u16()) % MAX_LEN;
                v.push(c.bytes(len));
            }
            6 if !v.is_empty() => {
                let i = pick(&mut c, v.len());
                set_checksums(&mut v[i]);
            }
            7 if !v.is_empty() => {
                let i = pick(&mut c, v.len());
                let at = pick(&mut c, v[i].len());
                v[i][at] = c.u8();
            }
            _ => {}
        }
        v.retain(|f| !f.is_empty());
    }
    v
}

/// Runs one script; panics if a frame is lost, duplicated, reordered or
/// changed. Returns how many super-frames the coalescer made.
pub fn run(data: &[u8]) -> usize {
    let input = frames(data);
    let mut co = Coalescer::new();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for f in &input {
        co.push(f, &mut |b| out.push(b.to_vec()));
    }
    co.flush(&mut |b| out.push(b.to_vec()));

    let mut cut = vec![0u8; 200_000];
    let mut spans = Vec::new();
    let mut again: Vec<Vec<u8>> = Vec::new();
    let mut supers = 0;
    for o in &out {
        let h = VnetHdr::parse(o).expect("output starts with a virtio_net_hdr");
        let f = &o[VNET_HDR_LEN..];
        if h.gso_type == GSO_NONE {
            assert_eq!(h, VnetHdr::default(), "a lone frame has an empty header");
            again.push(f.to_vec());
            continue;
        }
        assert!(f.len() <= 65_535, "super-frame of {} bytes", f.len());
        supers += 1;
        segment(&h, f, 65_535, 0, &mut cut, &mut spans).expect("super-frame cuts");
        again.extend(spans.iter().map(|s| cut[s.clone()].to_vec()));
    }
    assert_eq!(again.len(), input.len(), "frames in and out");
    for (i, (a, b)) in again.iter().zip(&input).enumerate() {
        assert!(a == b, "frame {i} of {} changed", input.len());
    }
    supers
}
