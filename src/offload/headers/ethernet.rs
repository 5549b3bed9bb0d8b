//! Ethernet: the EtherType behind up to two VLAN tags.

use super::{ETHERTYPE_QINQ, ETHERTYPE_VLAN, HeaderError};

view! {
    /// An Ethernet frame with at most two VLAN tags (802.1Q or 802.1ad) before
    /// its EtherType.
    EthernetFrame
}

mod field {
    use std::ops::Range;
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// A VLAN tag: TPID (the EtherType position) and TCI.
    pub const TAG_LEN: usize = 4;
    /// As many tags as QinQ stacks; a third is taken for the EtherType.
    pub const MAX_TAGS: usize = 2;
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Length of an untagged Ethernet header.
    pub const HEADER_LEN: usize = 14;

    /// Wraps a buffer that holds the whole header, tags included.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
        let f = EthernetFrame { buffer };
        f.layout()?;
        Ok(f)
    }

    /// Steps over the tags: the header length (14, 18 or 22, tags
    /// included) and the EtherType behind the tags. Walks the tags each
    /// time, as they are not fixed fields; call it once.
    #[inline]
    pub fn layout(&self) -> Result<(usize, u16), HeaderError> {
        let b = self.buffer.as_ref();
        let mut at = field::ETHERTYPE.start;
        let mut tags = 0;
        loop {
            let t = b.get(at..at + 2).ok_or(HeaderError::Truncated)?;
            let ethertype = u16::from_be_bytes([t[0], t[1]]);
            if (ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ)
                && tags < field::MAX_TAGS
            {
                tags += 1;
                at += field::TAG_LEN;
                continue;
            }
            return Ok((at + 2, ethertype));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
    use super::*;
    use crate::offload::testutil::eth;

    #[test]
    fn ethernet_tags() {
        let plain = eth(ETHERTYPE_IPV4, false);
        assert_eq!(
            EthernetFrame::new_unchecked(&plain).layout(),
            Ok((14, ETHERTYPE_IPV4))
        );
        let one = eth(ETHERTYPE_IPV6, true);
        assert_eq!(
            EthernetFrame::new_unchecked(&one).layout(),
            Ok((18, ETHERTYPE_IPV6))
        );
        // QinQ: an 802.1ad tag, then an 802.1Q tag.
        let mut two = plain[..12].to_vec();
        two.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00]);
        assert_eq!(
            EthernetFrame::new_unchecked(&two).layout(),
            Ok((22, ETHERTYPE_IPV4))
        );
        // A third tag is taken for the EtherType.
        let mut three = two[..20].to_vec();
        three.extend_from_slice(&[0x81, 0x00, 0, 3, 0x08, 0x00]);
        assert_eq!(
            EthernetFrame::new_unchecked(&three).layout(),
            Ok((22, ETHERTYPE_VLAN))
        );
        for n in [0, 13, 17, 21] {
            assert_eq!(
                EthernetFrame::new_checked(&two[..n]).err(),
                Some(HeaderError::Truncated),
                "{n} bytes"
            );
        }
    }
}
