//! Send side: cutting a TSO/USO super-frame read from an offloading TAP
//! into ordinary Ethernet frames that each fit the tunnel MTU, with
//! complete checksums, as the kernel's own GSO would.

use super::OffloadError;
use super::checksum::{complete_csum, copy_csum, fill_ipv4_checksum, fill_l4_checksum_with};
use super::headers::{PROTO_TCP, PROTO_UDP, TcpPacket, UdpPacket, parse_l3, tcp_flags};
use super::vnet::{F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VnetHdr};
use std::ops::Range;

/// Splits a frame read from an offloading TAP into wire-ready Ethernet
/// frames, each with complete checksums and at most `max_frame` bytes long
/// (segments carry `gso_size` bytes of payload, or fewer to fit). Each output frame is placed in
/// `out` after `headroom` free bytes (room for the taptun header), and its
/// span (headroom included) pushed to `spans`. A non-GSO frame yields one.
pub fn segment(
    hdr: &VnetHdr,
    frame: &[u8],
    max_frame: usize,
    headroom: usize,
    out: &mut [u8],
    spans: &mut Vec<Range<usize>>,
) -> Result<(), OffloadError> {
    segment_with_room(hdr, frame, max_frame, (headroom, 0), out, spans)
}

/// [`segment`] with `tailroom` free bytes after each frame too (the
/// confidential mode's tag): `room` is (headroom, tailroom), and each span
/// covers both.
pub fn segment_with_room(
    hdr: &VnetHdr,
    frame: &[u8],
    max_frame: usize,
    room: (usize, usize),
    out: &mut [u8],
    spans: &mut Vec<Range<usize>>,
) -> Result<(), OffloadError> {
    let (headroom, tailroom) = room;
    spans.clear();
    let gso = hdr.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        let end = headroom + frame.len();
        if out.len() < end + tailroom {
            return Err(OffloadError::NoRoom);
        }
        let dst = &mut out[headroom..end];
        dst.copy_from_slice(frame);
        if hdr.flags & F_NEEDS_CSUM != 0 {
            complete_csum(
                dst,
                usize::from(hdr.csum_start),
                usize::from(hdr.csum_offset),
            )?;
        }
        spans.push(0..end + tailroom);
        return Ok(());
    }
    let l = parse_l3(frame)?;
    let (is_tcp, ok) = match gso {
        GSO_TCPV4 => (true, !l.ipv6 && l.proto == PROTO_TCP),
        GSO_TCPV6 => (true, l.ipv6 && l.proto == PROTO_TCP),
        GSO_UDP_L4 => (false, l.proto == PROTO_UDP),
        _ => (false, false),
    };
    if !ok {
        return Err(OffloadError::Unsupported);
    }
    let l4 = frame.get(l.l4..).ok_or(OffloadError::Truncated)?;
    let l4_hdr = if is_tcp {
        TcpPacket::new_checked(l4)?.header_len()
    } else {
        UdpPacket::new_checked(l4)?;
        UdpPacket::<&[u8]>::HEADER_LEN
    };
    let hl = l.l4 + l4_hdr;
    let mss = match usize::from(hdr.gso_size) {
        0 => max_frame.saturating_sub(hl),
        g => g.min(max_frame.saturating_sub(hl)),
    };
    if mss == 0 {
        return Err(OffloadError::Unsupported);
    }
    let payload = &frame[hl..];
    let seq0 = if is_tcp { l.tcp(frame).seq_number() } else { 0 };
    let id0 = if l.ipv6 { 0 } else { l.ipv4(frame).ident() };
    let n = payload.len().div_ceil(mss).max(1);
    let mut pos = 0;
    for (i, chunk) in payload
        .chunks(mss)
        .chain(std::iter::once(&[][..]).take(usize::from(payload.is_empty())))
        .enumerate()
    {
        let start = pos + headroom;
        let end = start + hl + chunk.len();
        if out.len() < end + tailroom {
            return Err(OffloadError::NoRoom);
        }
        let seg = &mut out[start..end];
        seg[..hl].copy_from_slice(&frame[..hl]);
        // The payload's share of the L4 checksum, summed as it is copied;
        // the headers (fixed below) are summed last, on their own.
        let payload_sum = copy_csum(&mut seg[hl..], chunk, 0);
        let l4_len = l4_hdr + chunk.len();
        if l.ipv6 {
            l.ipv6_mut(seg).set_payload_len(l4_len as u16);
        } else {
            let mut ip = l.ipv4_mut(seg);
            ip.set_total_len((l.l4 - l.l3 + l4_len) as u16);
            // The kernel numbers the segments it cuts consecutively.
            ip.set_ident(id0.wrapping_add(i as u16));
            fill_ipv4_checksum(&mut ip);
        }
        if is_tcp {
            let mut tcp = l.tcp_mut(seg);
            tcp.set_seq_number(seq0.wrapping_add((i * mss) as u32));
            // FIN and PSH belong to the last segment, CWR to the first.
            let mut flags = tcp.flags();
            if i + 1 < n {
                flags &= !(tcp_flags::FIN | tcp_flags::PSH);
            }
            if i > 0 {
                flags &= !tcp_flags::CWR;
            }
            tcp.set_flags(flags);
        } else {
            l.udp_mut(seg).set_length(l4_len as u16);
        }
        fill_l4_checksum_with(seg, &l, hl, payload_sum);
        spans.push(pos..end + tailroom);
        pos = end + tailroom;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::checksum::fill_l4_checksum;
    use super::super::testutil::{payload, ref_csum, ref_l4_csum, split, tcp4_super, tcp6_super};
    use super::*;

    /// Checks one output segment against the reference checksums and
    /// returns (seq, flags, payload).
    fn check_tcp(seg: &[u8], v6: bool) -> (u32, u8, Vec<u8>) {
        let l = parse_l3(seg).unwrap();
        assert_eq!(l.ipv6, v6);
        if v6 {
            assert_eq!(
                usize::from(l.ipv6(seg).payload_len()),
                seg.len() - l.l4,
                "IPv6 payload length"
            );
        } else {
            let ip = l.ipv4(seg);
            assert_eq!(
                usize::from(ip.total_len()),
                seg.len() - l.l3,
                "IPv4 total length"
            );
            assert_eq!(ref_csum(&[ip.header()]), 0, "IPv4 header checksum");
        }
        assert_eq!(ref_l4_csum(seg), 0, "TCP checksum");
        // The very checksum a sum over the whole segment writes.
        let mut whole = seg.to_vec();
        fill_l4_checksum(&mut whole, &l);
        assert_eq!(whole, seg, "TCP checksum field");
        let tcp = l.tcp(seg);
        let data = seg[l.l4 + tcp.header_len()..].to_vec();
        (tcp.seq_number(), tcp.flags(), data)
    }

    fn tcp4_case(vlan: bool, options: &[u8], n: usize, flags: u8, max: usize) {
        let data = payload(n);
        let (hdr, f) = tcp4_super(vlan, flags, options, &data);
        let segs = split(&hdr, &f, max);
        let mss = max.min(1000);
        assert_eq!(segs.len(), n.div_ceil(mss).max(1));
        let mut joined = Vec::new();
        let (fin_psh, cwr) = (tcp_flags::FIN | tcp_flags::PSH, tcp_flags::CWR);
        for (i, s) in segs.iter().enumerate() {
            let (seq, fl, p) = check_tcp(s, false);
            assert_eq!(seq, 0x1020_3040u32.wrapping_add((i * mss) as u32));
            let last = i + 1 == segs.len();
            assert_eq!(
                fl & fin_psh != 0,
                last && flags & fin_psh != 0,
                "seg {i} flags {fl:#x}"
            );
            assert_eq!(fl & cwr != 0, i == 0 && flags & cwr != 0);
            let l = parse_l3(s).unwrap();
            assert_eq!(l.ipv4(s).ident(), 0x1234u16.wrapping_add(i as u16), "IP ID");
            assert!(p.len() <= mss);
            joined.extend_from_slice(&p);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn tcp4_segments() {
        tcp4_case(false, &[], 10_000, 0x18, 1400); // even split
        tcp4_case(false, &[], 10_001, 0x19 | tcp_flags::CWR, 1400); // odd last, FIN+PSH+CWR
        tcp4_case(
            true,
            &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            3333,
            0x10,
            1400,
        ); // VLAN, options
        tcp4_case(false, &[], 999, 0x18, 1400); // one segment
        tcp4_case(false, &[], 5000, 0x10, 700); // MTU smaller than gso_size
    }

    #[test]
    fn tcp6_segments() {
        let data = payload(5000);
        let (hdr, f) = tcp6_super(0x18, &data);
        let segs = split(&hdr, &f, 1400);
        assert_eq!(segs.len(), 5);
        let mut joined = Vec::new();
        for s in &segs {
            joined.extend(check_tcp(s, true).2);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn non_gso_needs_csum_completed() {
        let data = payload(101);
        let (mut hdr, f) = tcp4_super(false, 0x18, &[], &data);
        hdr.gso_type = GSO_NONE;
        let segs = split(&hdr, &f, 1400);
        assert_eq!(segs.len(), 1);
        assert_eq!(check_tcp(&segs[0], false).2, data);
        // Without NEEDS_CSUM the frame passes untouched.
        hdr.flags = 0;
        assert_eq!(split(&hdr, &f, 1400), vec![f.clone()]);
    }

    #[test]
    fn rejects_what_it_cannot_segment() {
        let (mut hdr, f) = tcp4_super(false, 0x10, &[], &payload(3000));
        let mut out = vec![0u8; 100_000];
        let mut spans = Vec::new();
        hdr.gso_type = GSO_TCPV6;
        assert_eq!(
            segment(&hdr, &f, 1400, 40, &mut out, &mut spans),
            Err(OffloadError::Unsupported)
        );
        hdr.gso_type = GSO_TCPV4;
        assert_eq!(
            segment(&hdr, &f[..40], 1400, 40, &mut out, &mut spans),
            Err(OffloadError::Truncated)
        );
        assert_eq!(
            segment(&hdr, &f, 1400, 40, &mut out[..2000], &mut spans),
            Err(OffloadError::NoRoom)
        );
        hdr.gso_type = GSO_NONE;
        hdr.csum_start = 60_000;
        assert_eq!(
            segment(&hdr, &f, 1400, 40, &mut out, &mut spans),
            Err(OffloadError::BadCsum)
        );
    }
}
