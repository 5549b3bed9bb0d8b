//! UDP: the header and its per-segment fields.

use super::{HeaderError, eq_except, holds};

view! {
    /// A UDP datagram: header and payload.
    UdpPacket
}

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Length of the header.
    pub const HEADER_LEN: usize = 8;
    /// Offset of the checksum field from the start of the header.
    pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

    /// Wraps a buffer that holds the header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
        holds(buffer.as_ref(), Self::HEADER_LEN)?;
        Ok(UdpPacket { buffer })
    }

    u16_getters! {
        /// Source port.
        src_port: SRC_PORT;
        /// Destination port.
        dst_port: DST_PORT;
        /// Length of header and payload, as the header says.
        length: LENGTH;
        /// Checksum (0: none, allowed over IPv4 only).
        checksum: CHECKSUM;
    }

    /// Whether the headers agree in every field but those segmentation
    /// rewrites per segment: length and checksum (so: the ports).
    pub fn same_but_per_segment<U: AsRef<[u8]>>(&self, other: &UdpPacket<U>) -> bool {
        let (a, b) = (self.buffer.as_ref(), other.buffer.as_ref());
        eq_except(
            &a[..Self::HEADER_LEN],
            &b[..Self::HEADER_LEN],
            std::slice::from_ref(&(field::LENGTH.start..field::CHECKSUM.end)),
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    u16_setters! {
        /// Sets the source port.
        set_src_port: SRC_PORT;
        /// Sets the destination port.
        set_dst_port: DST_PORT;
        /// Sets the length.
        set_length: LENGTH;
        /// Sets the checksum field as is.
        set_checksum: CHECKSUM;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testutil::{payload, udp_frame};

    #[test]
    fn udp_fields() {
        let f = udp_frame(false, true, &payload(4));
        let u = UdpPacket::new_checked(&f[38..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.length()), (40000, 5201, 12));
        assert_ne!(u.checksum(), 0);
        assert_eq!(
            UdpPacket::new_checked(&f[38..45]).err(),
            Some(HeaderError::Truncated)
        );
        let mut w = UdpPacket::new_unchecked(f[38..].to_vec());
        w.set_length(3);
        w.set_checksum(4);
        assert_eq!((w.length(), w.checksum()), (3, 4));
        assert!(w.same_but_per_segment(&u));
        w.set_src_port(1);
        assert!(!w.same_but_per_segment(&u));
    }
}
