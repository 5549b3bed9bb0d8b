//! The Internet checksum (RFC 1071) as the offloads need it: a fast sum,
//! the fold, the pseudo-header share, and filling in the IPv4 header and
//! TCP/UDP checksums of a frame.

use super::OffloadError;
use super::headers::{Ipv4Packet, Layers, PROTO_UDP, TcpPacket, UdpPacket, parse_l3};

/// Bytes per step of the sum: two SSE2 registers.
const STEP: usize = 32;

/// One's-complement sum of `data` (big-endian 16-bit words) added to `acc`.
/// The result stays below 2^33, so small terms and other sums may be added
/// to it before [`csum_fold`]; it is 0 only when `acc` is and `data` is
/// all zero bytes.
#[inline]
pub fn csum_add(acc: u64, data: &[u8]) -> u64 {
    let mut sum = LeSum::default();
    let mut chunks = data.chunks_exact(STEP);
    for c in &mut chunks {
        sum.step(c.try_into().expect("chunks_exact"));
    }
    sum.finish(chunks.remainder(), acc)
}

/// Copies `src` into `dst` (of the same length) and returns exactly what
/// [`csum_add`]`(acc, src)` returns: the copy and the sum in one pass over
/// the bytes.
///
/// # Panics
/// If `dst` and `src` differ in length (as `copy_from_slice`).
#[inline]
pub fn copy_csum(dst: &mut [u8], src: &[u8], acc: u64) -> u64 {
    assert_eq!(dst.len(), src.len(), "copy_csum: lengths differ");
    let mut sum = LeSum::default();
    let mut to = dst.chunks_exact_mut(STEP);
    let mut from = src.chunks_exact(STEP);
    for (d, s) in (&mut to).zip(&mut from) {
        let s: &[u8; STEP] = s.try_into().expect("chunks_exact");
        d.copy_from_slice(s);
        sum.step(s);
    }
    let rest = from.remainder();
    to.into_remainder().copy_from_slice(rest);
    sum.finish(rest, acc)
}

/// The running sum behind [`csum_add`] and [`copy_csum`]: little-endian
/// 32-bit words in independent lanes, which the compiler turns into plain
/// SSE2 (widen, add; a byte swap per big-endian word kept the loop scalar).
/// The one's-complement sum does not depend on byte order (RFC 1071, 2.B):
/// a big-endian word `256a + b` is 256 times its little-endian reading
/// `a + 256b` modulo 0xffff, and swapping the bytes of the folded 16-bit
/// total multiplies it by 256 again (0 and 0xffff, both zero, stay
/// themselves, and the total is 0 only for zero bytes). 32-bit words in a
/// 64-bit sum: 2^32 ≡ 1 modulo 0xffff, and no lane overflows below 2^34
/// bytes.
#[derive(Default)]
struct LeSum {
    lanes: [u64; STEP / 4],
}

impl LeSum {
    #[inline]
    fn step(&mut self, s: &[u8; STEP]) {
        for (k, lane) in self.lanes.iter_mut().enumerate() {
            let w = [s[4 * k], s[4 * k + 1], s[4 * k + 2], s[4 * k + 3]];
            *lane += u64::from(u32::from_le_bytes(w));
        }
    }

    /// Adds the last bytes (fewer than a step) and `acc`; see [`csum_add`].
    #[inline]
    fn finish(self, rest: &[u8], acc: u64) -> u64 {
        let mut sum: u64 = self.lanes.iter().sum();
        let mut words = rest.chunks_exact(4);
        for w in &mut words {
            sum += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        }
        let mut rest2 = words.remainder().chunks_exact(2);
        for w in &mut rest2 {
            sum += u64::from(u16::from_le_bytes([w[0], w[1]]));
        }
        if let [last] = rest2.remainder() {
            // The high byte of its big-endian word: the low one read backwards.
            sum += u64::from(*last);
        }
        let sum = u64::from(csum_fold(sum).swap_bytes()) + (acc & 0xffff_ffff) + (acc >> 32);
        (sum & 0xffff_ffff) + (sum >> 32)
    }
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
    l4_checksum_with(frame, l, frame.len(), 0)
}

/// [`l4_checksum`] of a frame whose bytes from `at` on were summed already
/// (to `rest_sum`, by [`copy_csum`] while they were copied): only the
/// pseudo-header and `frame[l.l4..at]` are summed here. `at - l.l4` must be
/// even (unless nothing follows), so that the two parts' 16-bit words line
/// up (a TCP or UDP header ends on a 4-byte boundary).
#[inline]
pub fn l4_checksum_with(frame: &[u8], l: &Layers, at: usize, rest_sum: u64) -> u16 {
    debug_assert!(
        (at - l.l4).is_multiple_of(2) || at == frame.len(),
        "split at an odd offset"
    );
    let l4_len = frame.len() - l.l4;
    let acc = pseudo_sum(frame, l, l4_len) + rest_sum;
    !csum_fold(csum_add(acc, &frame[l.l4..at]))
}

/// Computes and writes the TCP or UDP checksum of a parsed frame. A UDP
/// checksum that comes out 0 is sent as 0xffff: 0 means "none" (RFC 768).
#[inline]
pub fn fill_l4_checksum(frame: &mut [u8], l: &Layers) {
    fill_l4_checksum_with(frame, l, frame.len(), 0);
}

/// [`fill_l4_checksum`] of a frame whose bytes from `at` on sum to
/// `rest_sum`, as for [`l4_checksum_with`]: the headers before `at` are
/// summed here, with the checksum field zeroed first.
#[inline]
pub fn fill_l4_checksum_with(frame: &mut [u8], l: &Layers, at: usize, rest_sum: u64) {
    if l.proto == PROTO_UDP {
        l.udp_mut(frame).set_checksum(0);
        let c = match l4_checksum_with(frame, l, at, rest_sum) {
            0 => 0xffff,
            c => c,
        };
        l.udp_mut(frame).set_checksum(c);
    } else {
        l.tcp_mut(frame).set_checksum(0);
        let c = l4_checksum_with(frame, l, at, rest_sum);
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
    use super::super::testutil::{XorShift, payload, ref_csum, tcp_frame, udp_frame};
    use super::*;

    #[test]
    fn csum_matches_reference() {
        for n in (0..=300).chain([1378, 1499, 65535]) {
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

    /// `copy_csum` is a copy and `csum_add`: same bytes copied (and nothing
    /// around them touched), the very same sum, below 2^33, zero only for
    /// zero bytes and accumulator; for every length up to 2000, odd
    /// and even offsets of source and destination, and random, all-zero and
    /// all-ones bytes and accumulators.
    #[test]
    fn copy_csum_is_copy_and_csum_add() {
        let mut rng = XorShift(0x5851_f42d_4c95_7f2d);
        let src: Vec<u8> = (0..2100).map(|_| rng.next() as u8).collect();
        let mut dst = vec![0u8; 2100];
        let check = |dst: &mut [u8], from: &[u8], at: usize, acc: u64| {
            let n = from.len();
            dst.fill(0xa5);
            let got = copy_csum(&mut dst[at..at + n], from, acc);
            let want = csum_add(acc, from);
            let what = format!("len {n} at {at} acc {acc:#x}");
            assert_eq!(&dst[at..at + n], from, "{what}: copy");
            assert!(dst[..at].iter().all(|&b| b == 0xa5), "{what}: before");
            assert!(dst[at + n..].iter().all(|&b| b == 0xa5), "{what}: after");
            assert_eq!(got, want, "{what}: sum");
            assert!(got < 1 << 33, "{what}: {got:#x} not below 2^33");
            let zero = acc == 0 && from.iter().all(|&b| b == 0);
            assert_eq!(got == 0, zero, "{what}: zero");
        };
        let zeros = [0u8; 2000];
        let ones = [0xffu8; 2000];
        for n in 0..=2000 {
            let from = rng.below(4);
            let at = rng.below(4);
            let acc = match rng.below(4) {
                0 => 0,
                1 => u64::MAX,
                2 => rng.next() % (1 << 33),
                _ => rng.next(),
            };
            check(&mut dst, &src[from..from + n], at, acc);
            check(&mut dst, &zeros[..n], at, 0);
            check(&mut dst, &zeros[..n], at, acc);
            check(&mut dst, &ones[..n], at, acc);
            check(&mut dst, &ones[..n], at, u64::MAX);
        }
        // Against the reference, and chained: a sum fed back as the start of
        // the next one, split at an even offset.
        for n in [0, 1, 2, 31, 32, 33, 63, 64, 65, 1378, 1379, 2000] {
            let d = &src[1..1 + n];
            let mut out = vec![0u8; n];
            assert_eq!(!csum_fold(copy_csum(&mut out, d, 0)), ref_csum(&[d]), "{n}");
            let (a, b) = d.split_at((n / 3) & !1);
            let (oa, ob) = out.split_at_mut(a.len());
            let sum = copy_csum(ob, b, copy_csum(oa, a, 0));
            assert_eq!(!csum_fold(sum), ref_csum(&[d]), "chained {n}");
            let sum = copy_csum(ob, b, csum_add(0, a));
            assert_eq!(!csum_fold(sum), ref_csum(&[d]), "after csum_add {n}");
        }
    }

    /// The 2^33 bound where the sums are largest: all-ones bytes, as many as
    /// a super-frame holds, on the largest accumulator.
    #[test]
    fn copy_csum_bound() {
        for n in [65_535, 65_536, 200_001] {
            let ones = vec![0xffu8; n];
            let mut out = vec![0u8; n];
            for acc in [0, (1 << 33) - 1, u64::MAX] {
                let got = copy_csum(&mut out, &ones, acc);
                assert!(got < 1 << 33, "len {n} acc {acc:#x}: {got:#x}");
                assert_eq!(csum_fold(got), csum_fold(csum_add(acc, &ones)));
                assert_eq!(out, ones);
            }
        }
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn copy_csum_wants_equal_lengths() {
        copy_csum(&mut [0u8; 3], &[1, 2], 0);
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
