//! IPv4: the header (with options) and its per-segment fields.

use super::{HeaderError, eq_except, get_u16, holds, set_u16};
use std::ops::Range;

view! {
    /// An IPv4 packet: header (with options) and what follows.
    Ipv4Packet
}

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    /// DSCP (high 6 bits) and ECN (low 2 bits).
    pub const TOS: usize = 1;
    pub const ECN_MASK: u8 = 0b11;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source and destination address: the pseudo-header's share.
    pub const ADDRS: Range<usize> = 12..20;
    pub const MORE_FRAGS: u16 = 0x2000;
    pub const FRAG_OFFSET: u16 = 0x1fff;
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = 20;

    /// Wraps a buffer that starts with a version-4 header of at least 20
    /// bytes and holds all of it (options included).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
        let p = Ipv4Packet { buffer };
        let b = p.buffer.as_ref();
        let v = *b.get(field::VER_IHL).ok_or(HeaderError::Truncated)?;
        if v >> 4 != 4 || p.header_len() < Self::MIN_HEADER_LEN {
            return Err(HeaderError::Malformed);
        }
        holds(b, p.header_len())?;
        Ok(p)
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    u16_getters! {
        /// Total length: header and payload.
        total_len: LENGTH;
        /// Identification.
        ident: IDENT;
        /// Header checksum.
        checksum: CHECKSUM;
    }

    /// Whether this is a fragment: more fragments follow, or it is not the first.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        let f = get_u16(self.buffer.as_ref(), field::FLG_OFF.start);
        f & (field::MORE_FRAGS | field::FRAG_OFFSET) != 0
    }

    /// Fragment offset in 8-byte units (0 for an unfragmented packet or
    /// the first fragment, which alone carries the transport header).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & field::FRAG_OFFSET
    }

    /// The ECN field (the low 2 bits of the TOS byte, RFC 3168).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::TOS] & field::ECN_MASK
    }

    /// The protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Source then destination address, as the pseudo-header sums them.
    #[inline]
    pub fn addrs(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ADDRS]
    }

    /// Whether the headers agree in every field but those segmentation
    /// rewrites per segment: total length, identification and checksum.
    pub fn same_but_per_segment<U: AsRef<[u8]>>(&self, other: &Ipv4Packet<U>) -> bool {
        const SKIP: [Range<usize>; 2] = [field::LENGTH.start..field::IDENT.end, field::CHECKSUM];
        eq_except(self.header(), other.header(), &SKIP)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    u16_setters! {
        /// Sets the total length.
        set_total_len: LENGTH;
        /// Sets the identification.
        set_ident: IDENT;
        /// Sets the header checksum field as is.
        set_checksum: CHECKSUM;
    }

    /// Sets the ECN field to `ecn` (its low 2 bits) and updates the header
    /// checksum incrementally (RFC 1624: HC' = ~(~HC + ~m + m')), so that
    /// a header whose checksum was right stays right, and one that was
    /// wrong stays wrong.
    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = self.buffer.as_mut();
        // The TOS byte is the low byte of the header's first 16-bit word.
        let old = get_u16(b, field::VER_IHL);
        b[field::TOS] = (b[field::TOS] & !field::ECN_MASK) | (ecn & field::ECN_MASK);
        let new = get_u16(b, field::VER_IHL);
        let hc = get_u16(b, field::CHECKSUM.start);
        let sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = (sum & 0xffff) + (sum >> 16);
        set_u16(b, field::CHECKSUM.start, !(sum as u16));
    }

    /// Sets or clears the more-fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, on: bool) {
        let b = self.buffer.as_mut();
        let f = get_u16(b, field::FLG_OFF.start) & !field::MORE_FRAGS;
        let mf = if on { field::MORE_FRAGS } else { 0 };
        set_u16(b, field::FLG_OFF.start, f | mf);
    }

    /// Sets the fragment offset (8-byte units; the top 3 bits are ignored).
    #[inline]
    pub fn set_frag_offset(&mut self, v: u16) {
        let b = self.buffer.as_mut();
        let f = get_u16(b, field::FLG_OFF.start) & !field::FRAG_OFFSET;
        set_u16(b, field::FLG_OFF.start, f | (v & field::FRAG_OFFSET));
    }

    /// The header, options included, writable.
    #[inline]
    pub fn header_mut(&mut self) -> &mut [u8] {
        let len = self.header_len();
        &mut self.buffer.as_mut()[..len]
    }
}

#[cfg(test)]
mod tests {
    use super::super::PROTO_UDP;
    use super::*;
    use crate::offload::testutil::{payload, udp_frame};

    #[test]
    fn ipv4_checks_and_fields() {
        let f = udp_frame(false, false, &payload(5));
        let ip = &f[14..];
        let p = Ipv4Packet::new_checked(ip).unwrap();
        assert_eq!((p.header_len(), p.total_len(), p.ident()), (20, 33, 0x1234));
        assert_eq!(
            (p.protocol(), p.is_fragment(), p.frag_offset()),
            (PROTO_UDP, false, 0)
        );
        assert_eq!(p.addrs(), &[10, 0, 0, 1, 10, 0, 0, 2]);
        assert_eq!(
            Ipv4Packet::new_checked(&ip[..19]).err(),
            Some(HeaderError::Truncated)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&[][..]).err(),
            Some(HeaderError::Truncated)
        );
        let mut bad = ip.to_vec();
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad).err(),
            Some(HeaderError::Malformed)
        );
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bad).err(),
            Some(HeaderError::Malformed)
        );
        bad[0] = 0x4f; // 60-byte header in a 33-byte packet
        assert_eq!(
            Ipv4Packet::new_checked(&bad).err(),
            Some(HeaderError::Truncated)
        );

        let mut w = Ipv4Packet::new_unchecked(ip.to_vec());
        w.set_more_frags(true);
        assert!(w.is_fragment() && w.frag_offset() == 0);
        w.set_more_frags(false);
        w.set_frag_offset(185);
        assert!(w.is_fragment() && w.frag_offset() == 185);
        w.set_frag_offset(0);
        w.set_total_len(1);
        w.set_ident(2);
        w.set_checksum(3);
        assert_eq!((w.total_len(), w.ident(), w.checksum()), (1, 2, 3));
        assert!(
            w.same_but_per_segment(&p),
            "length, ID and checksum differ only"
        );
        w.header_mut()[8] = 1; // TTL
        assert!(!w.same_but_per_segment(&p));
    }
}
