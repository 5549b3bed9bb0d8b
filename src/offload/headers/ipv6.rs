//! IPv6: the fixed header (extension headers are not followed).

use super::{HeaderError, eq_except, holds};

view! {
    /// An IPv6 packet: the fixed header and what follows (extension headers
    /// are not followed).
    Ipv6Packet
}

mod field {
    use std::ops::Range;
    /// The second byte: the traffic class's low nibble (ECN in its low
    /// 2 bits) above the flow label's top nibble.
    pub const TCLASS_LO: usize = 1;
    /// The ECN bits within [`TCLASS_LO`].
    pub const ECN_MASK: u8 = 0b11 << 4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    /// Source and destination address: the pseudo-header's share.
    pub const ADDRS: Range<usize> = 8..40;
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Length of the fixed header.
    pub const HEADER_LEN: usize = 40;

    /// Wraps a buffer that holds the fixed header. The version field is
    /// not looked at: the EtherType said IPv6.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
        holds(buffer.as_ref(), Self::HEADER_LEN)?;
        Ok(Ipv6Packet { buffer })
    }

    u16_getters! {
        /// Payload length (what follows the fixed header).
        payload_len: PAYLOAD_LEN;
    }

    /// The ECN field (the low 2 bits of the traffic class, RFC 3168).
    #[inline]
    pub fn ecn(&self) -> u8 {
        (self.buffer.as_ref()[field::TCLASS_LO] & field::ECN_MASK) >> 4
    }

    /// The next header: the protocol of the payload when there are no
    /// extension headers.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Source then destination address, as the pseudo-header sums them.
    #[inline]
    pub fn addrs(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ADDRS]
    }

    /// Whether the fixed headers agree in every field but the one
    /// segmentation rewrites per segment: the payload length.
    pub fn same_but_per_segment<U: AsRef<[u8]>>(&self, other: &Ipv6Packet<U>) -> bool {
        let (a, b) = (self.buffer.as_ref(), other.buffer.as_ref());
        eq_except(
            &a[..Self::HEADER_LEN],
            &b[..Self::HEADER_LEN],
            std::slice::from_ref(&field::PAYLOAD_LEN),
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    u16_setters! {
        /// Sets the payload length.
        set_payload_len: PAYLOAD_LEN;
    }

    /// Sets the ECN field to `ecn` (its low 2 bits); IPv6 has no header
    /// checksum.
    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::TCLASS_LO];
        *b = (*b & !field::ECN_MASK) | ((ecn & 0b11) << 4);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PROTO_TCP, tcp_flags};
    use super::*;
    use crate::offload::testutil::{payload, tcp_frame};

    #[test]
    fn ipv6_fields() {
        let f = tcp_frame(true, false, tcp_flags::ACK, &[], &payload(3));
        let ip = &f[14..];
        let p = Ipv6Packet::new_checked(ip).unwrap();
        assert_eq!((p.payload_len(), p.next_header()), (23, PROTO_TCP));
        assert_eq!(p.addrs().len(), 32);
        assert_eq!(
            Ipv6Packet::new_checked(&ip[..39]).err(),
            Some(HeaderError::Truncated)
        );
        let mut w = Ipv6Packet::new_unchecked(ip.to_vec());
        w.set_payload_len(7);
        assert_eq!(w.payload_len(), 7);
        assert!(w.same_but_per_segment(&p));
        let mut x = ip.to_vec();
        x[7] = 1; // hop limit
        assert!(!Ipv6Packet::new_unchecked(&x).same_but_per_segment(&p));
    }
}
