//! The Internet checksum (RFC 1071) as the offloads need it: a fast sum,
//! the fold, the pseudo-header share, and filling in the IPv4 header and
//! TCP/UDP checksums of a frame.

use super::OffloadError;
use super::headers::{Ipv4Packet, Layers, PROTO_UDP, TcpPacket, UdpPacket, parse_l3};

/// One's-complement sum of `data` (big-endian 16-bit words) added to `acc`.
/// The result stays below 2^33, so small terms and other sums may be added
/// to it before [`csum_fold`].
#[inline]
pub fn csum_add(acc: u64, data: &[u8]) -> u64 {
    // 32-bit words into a 64-bit sum: 2^32 ≡ 1 modulo 0xffff, so this is
    // the same one's-complement sum as word by word, cannot overflow for
    // any frame, and the independent adds let the compiler vectorise.
    let mut chunks = data.chunks_exact(4);
    let mut sum: u64 = chunks
        .by_ref()
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .sum();
    let rest = chunks.remainder();
    let mut rest2 = rest.chunks_exact(2);
    for c in &mut rest2 {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = rest2.remainder() {
        sum += u64::from(*last) << 8;
    }
    // Fold to 32 bits (plus a carry) so callers can add small terms.
    let sum = (sum & 0xffff_ffff) + (sum >> 32) + (acc & 0xffff_ffff) + (acc >> 32);
    (sum & 0xffff_ffff) + (sum >> 32)
}

/// Folds a sum to 16 bits (not inverted).
#[inline]
pub fn csum_fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The pseudo-header's share of a TCP/UDP sum: the address bytes (source
/// then destination, as the IP header holds them), the protocol and the
/// transport length.
#[inline]
pub fn pseudo_header_sum(addrs: &[u8], proto: u8, l4_len: usize) -> u64 {
    csum_add(0, addrs) + u64::from(proto) + l4_len as u64
}

/// The pseudo-header sum of a parsed frame, for `l4_len` transport bytes.
#[inline]
pub fn pseudo_sum(frame: &[u8], l: &Layers, l4_len: usize) -> u64 {
    if l.ipv6 {
        pseudo_header_sum(l.ipv6(frame).addrs(), l.proto, l4_len)
    } else {
        pseudo_header_sum(l.ipv4(frame).addrs(), l.proto, l4_len)
    }
}

/// The TCP/UDP checksum over pseudo-header and `frame[l.l4..]`, with the
/// checksum field as it stands: 0 when that field is right, the value to
/// write when it was zeroed.
#[inline]
pub fn l4_checksum(frame: &[u8], l: &Layers) -> u16 {
    let l4_len = frame.len() - l.l4;
    !csum_fold(csum_add(pseudo_sum(frame, l, l4_len), &frame[l.l4..]))
}

/// Computes and writes the TCP or UDP checksum of a parsed frame. A UDP
/// checksum that comes out 0 is sent as 0xffff: 0 means "none" (RFC 768).
#[inline]
pub fn fill_l4_checksum(frame: &mut [u8], l: &Layers) {
    if l.proto == PROTO_UDP {
        l.udp_mut(frame).set_checksum(0);
        let c = match l4_checksum(frame, l) {
            0 => 0xffff,
            c => c,
        };
        l.udp_mut(frame).set_checksum(c);
    } else {
        l.tcp_mut(frame).set_checksum(0);
        let c = l4_checksum(frame, l);
        l.tcp_mut(frame).set_checksum(c);
    }
}

/// Computes and writes an IPv4 header checksum.
#[inline]
pub fn fill_ipv4_checksum(ip: &mut Ipv4Packet<&mut [u8]>) {
    ip.set_checksum(0);
    let c = !csum_fold(csum_add(0, ip.header()));
    ip.set_checksum(c);
}

/// Whether an IPv4 header checksum is right.
#[inline]
pub fn ipv4_checksum_ok(ip: &Ipv4Packet<&[u8]>) -> bool {
    csum_fold(csum_add(0, ip.header())) == 0xffff
}

/// Where the checksum field of a TCP or UDP header is, from its start.
#[inline]
pub fn l4_checksum_offset(proto: u8) -> usize {
    if proto == PROTO_UDP {
        UdpPacket::<&[u8]>::CHECKSUM_OFFSET
    } else {
        TcpPacket::<&[u8]>::CHECKSUM_OFFSET
    }
}

/// Completes a `NEEDS_CSUM` checksum in place: the field holds the
/// pseudo-header sum; the result covers `frame[csum_start..]`.
pub fn complete_csum(
    frame: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), OffloadError> {
    let at = csum_start
        .checked_add(csum_offset)
        .ok_or(OffloadError::BadCsum)?;
    if at + 2 > frame.len() || csum_start > frame.len() {
        return Err(OffloadError::BadCsum);
    }
    let mut c = !csum_fold(csum_add(0, &frame[csum_start..]));
    // A zero UDP checksum means "none"; any checksum may be sent as 0xffff instead.
    if c == 0 && is_udp_at(frame, csum_start) {
        c = 0xffff;
    }
    // The kernel's offsets, not a header field: written where it said.
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

fn is_udp_at(frame: &[u8], l4: usize) -> bool {
    parse_l3(frame)
        .map(|l| l.l4 == l4 && l.proto == PROTO_UDP)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{payload, ref_csum, tcp_frame, udp_frame};
    use super::*;

    #[test]
    fn csum_matches_reference() {
        for n in [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 1499, 65535] {
            let d = payload(n);
            assert_eq!(!csum_fold(csum_add(0, &d)), ref_csum(&[&d]), "len {n}");
            // All ones: every add carries.
            let ones = vec![0xffu8; n];
            assert_eq!(
                !csum_fold(csum_add(0, &ones)),
                ref_csum(&[&ones]),
                "ones {n}"
            );
            // Sums chain: a sum fed back as the start of the next one.
            let (a, b) = d.split_at((n / 2) & !1);
            assert_eq!(
                !csum_fold(csum_add(csum_add(0, a), b)),
                ref_csum(&[&d]),
                "chained {n}"
            );
        }
    }

    #[test]
    fn fill_and_verify_frame_checksums() {
        for v6 in [false, true] {
            for mut f in [
                tcp_frame(v6, false, 0x18, &[], &payload(99)),
                udp_frame(v6, true, &payload(33)),
            ] {
                let l = parse_l3(&f).unwrap();
                assert_eq!(l4_checksum(&f, &l), 0, "builders make right checksums");
                if !v6 {
                    assert!(ipv4_checksum_ok(&l.ipv4(&f)));
                    let mut ip = l.ipv4_mut(&mut f);
                    ip.set_checksum(0x1234);
                    fill_ipv4_checksum(&mut ip);
                    assert!(ipv4_checksum_ok(&l.ipv4(&f)));
                }
                let at = l.l4 + l4_checksum_offset(l.proto);
                f[at] ^= 0x55;
                assert_ne!(l4_checksum(&f, &l), 0);
                fill_l4_checksum(&mut f, &l);
                assert_eq!(l4_checksum(&f, &l), 0);
            }
        }
    }

    #[test]
    fn complete_csum_bounds() {
        let mut f = tcp_frame(false, false, 0x10, &[], &payload(10));
        let n = f.len();
        assert_eq!(complete_csum(&mut f, n, 0), Err(OffloadError::BadCsum));
        assert_eq!(
            complete_csum(&mut f, usize::MAX, 2),
            Err(OffloadError::BadCsum)
        );
        assert_eq!(complete_csum(&mut f, n - 2, 0), Ok(()));
    }
}
