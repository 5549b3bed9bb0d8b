//! TCP: the header, its flags, and the walk over its options.

use super::{HeaderError, eq_except, holds};
use std::ops::Range;

view! {
    /// A TCP segment: header (with options) and payload.
    TcpPacket
}

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const OPTIONS: usize = 20;
}

/// TCP flag bits, as in the flags byte.
pub mod tcp_flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push the data to the application.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is valid.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is valid.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// TCP option kind: end of the option list.
pub const TCP_OPT_EOL: u8 = 0;
/// TCP option kind: no operation (padding).
pub const TCP_OPT_NOP: u8 = 1;
/// TCP option kind: maximum segment size (length 4, a 16-bit value).
pub const TCP_OPT_MSS: u8 = 2;
/// Length of a well-formed MSS option, kind and length bytes included.
pub const TCP_OPT_MSS_LEN: usize = 4;

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = 20;
    /// Offset of the checksum field from the start of the header.
    pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

    /// Wraps a buffer that holds the whole header: a data offset of at
    /// least 5 words, and that many bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
        let p = TcpPacket { buffer };
        let b = p.buffer.as_ref();
        let doff = b.get(field::DATA_OFF).ok_or(HeaderError::Truncated)?;
        if usize::from(doff >> 4) * 4 < Self::MIN_HEADER_LEN {
            return Err(HeaderError::Malformed);
        }
        holds(b, p.header_len())?;
        Ok(p)
    }

    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    u16_getters! {
        /// Source port.
        src_port: SRC_PORT;
        /// Destination port.
        dst_port: DST_PORT;
        /// Checksum.
        checksum: CHECKSUM;
    }

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SEQ_NUM];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The flags byte (see [`tcp_flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The options, padding included.
    #[inline]
    pub fn options(&self) -> TcpOptions<'_> {
        TcpOptions {
            opts: &self.buffer.as_ref()[field::OPTIONS..self.header_len()],
            at: 0,
        }
    }

    /// Whether the headers agree in every field but those segmentation
    /// rewrites per segment: sequence number, flags and checksum.
    pub fn same_but_per_segment<U: AsRef<[u8]>>(&self, other: &TcpPacket<U>) -> bool {
        const SKIP: [Range<usize>; 3] = [
            field::SEQ_NUM,
            field::FLAGS..field::FLAGS + 1,
            field::CHECKSUM,
        ];
        let (a, b) = (self.buffer.as_ref(), other.buffer.as_ref());
        eq_except(&a[..self.header_len()], &b[..other.header_len()], &SKIP)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    u16_setters! {
        /// Sets the source port.
        set_src_port: SRC_PORT;
        /// Sets the destination port.
        set_dst_port: DST_PORT;
        /// Sets the checksum field as is.
        set_checksum: CHECKSUM;
    }

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Writes `mss` into the MSS option whose kind byte is `offset` bytes
    /// into the options (a [`TcpOption::offset`]). Does nothing unless a
    /// well-formed MSS option (kind 2, length 4) is there, inside the header.
    #[inline]
    pub fn set_mss_option(&mut self, offset: usize, mss: u16) {
        let end = self.header_len();
        let b = self.buffer.as_mut();
        let at = field::OPTIONS + offset;
        if let Some([kind, len, value @ ..]) = b.get_mut(at..at + TCP_OPT_MSS_LEN)
            && *kind == TCP_OPT_MSS
            && usize::from(*len) == TCP_OPT_MSS_LEN
            && at + TCP_OPT_MSS_LEN <= end
        {
            value.copy_from_slice(&mss.to_be_bytes());
        }
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOption<'a> {
    /// Where its kind byte is, from the start of the options.
    pub offset: usize,
    /// Its kind.
    pub kind: u8,
    /// What follows kind and length (empty for EOL and NOP).
    pub data: &'a [u8],
}

impl TcpOption<'_> {
    /// The MSS this option announces, if it is a well-formed MSS option.
    #[inline]
    pub fn mss(&self) -> Option<u16> {
        match (self.kind, self.data) {
            (TCP_OPT_MSS, &[hi, lo]) => Some(u16::from_be_bytes([hi, lo])),
            _ => None,
        }
    }
}

/// The options of a TCP header, in order, up to and including EOL. An
/// option whose length byte is missing, below 2 or past the header yields
/// [`HeaderError::Malformed`] and ends the walk.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    opts: &'a [u8],
    at: usize,
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>, HeaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.at;
        let kind = *self.opts.get(offset)?;
        let len = match kind {
            // Whatever follows EOL is padding, not options.
            TCP_OPT_EOL => self.opts.len() - offset,
            TCP_OPT_NOP => 1,
            _ => match self.opts.get(offset + 1).map(|&l| usize::from(l)) {
                Some(l) if l >= 2 && offset + l <= self.opts.len() => l,
                _ => {
                    self.at = self.opts.len();
                    return Some(Err(HeaderError::Malformed));
                }
            },
        };
        self.at = offset + len;
        let data = match kind {
            TCP_OPT_EOL | TCP_OPT_NOP => &[][..],
            _ => &self.opts[offset + 2..offset + len],
        };
        Some(Ok(TcpOption { offset, kind, data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testutil::tcp_frame;

    #[test]
    fn tcp_checks_and_fields() {
        let opts = [2, 4, 5, 0xb4, 1, 3, 3, 7];
        let f = tcp_frame(false, false, tcp_flags::SYN, &opts, &[]);
        let t = TcpPacket::new_checked(&f[34..]).unwrap();
        assert_eq!(
            (t.header_len(), t.src_port(), t.dst_port()),
            (28, 12345, 5001)
        );
        assert_eq!((t.seq_number(), t.flags()), (0x1020_3040, tcp_flags::SYN));
        assert_eq!(
            TcpPacket::new_checked(&f[34..61]).err(),
            Some(HeaderError::Truncated)
        );
        assert_eq!(
            TcpPacket::new_checked(&f[34..46]).err(),
            Some(HeaderError::Truncated)
        );
        let mut bad = f[34..].to_vec();
        bad[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&bad).err(),
            Some(HeaderError::Malformed)
        );

        let mut w = TcpPacket::new_unchecked(f[34..].to_vec());
        w.set_seq_number(9);
        w.set_flags(tcp_flags::ACK);
        w.set_checksum(0xbeef);
        assert_eq!(
            (w.seq_number(), w.flags(), w.checksum()),
            (9, tcp_flags::ACK, 0xbeef)
        );
        assert!(w.same_but_per_segment(&t));
        w.set_dst_port(1);
        assert!(!w.same_but_per_segment(&t));
    }

    /// (offset, kind, data) of each option, or the error that ended the walk.
    type Walk = Vec<Result<(usize, u8, Vec<u8>), HeaderError>>;

    fn kinds(opts: &[u8]) -> Walk {
        let mut f = vec![0u8; 20];
        f[12] = (((20 + opts.len()) / 4) as u8) << 4;
        f.extend_from_slice(opts);
        TcpPacket::new_checked(&f)
            .unwrap()
            .options()
            .map(|o| o.map(|o| (o.offset, o.kind, o.data.to_vec())))
            .collect()
    }

    #[test]
    fn tcp_options_walk() {
        // MSS, NOP, window scale, SACK-permitted, then EOL and padding.
        let got = kinds(&[2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 0, 9]);
        assert_eq!(
            got,
            vec![
                Ok((0, TCP_OPT_MSS, vec![5, 0xb4])),
                Ok((4, TCP_OPT_NOP, vec![])),
                Ok((5, 3, vec![7])),
                Ok((8, 4, vec![])),
                Ok((10, TCP_OPT_EOL, vec![])),
            ]
        );
        assert_eq!(kinds(&[]), vec![]);
        // A length of 0 or 1, or past the header, is malformed and ends the walk.
        for bad in [[1, 2, 0, 1], [1, 3, 1, 1], [1, 1, 8, 10]] {
            let got = kinds(&bad);
            assert_eq!(got.last(), Some(&Err(HeaderError::Malformed)), "{bad:?}");
            assert_eq!(got.iter().filter(|o| o.is_err()).count(), 1);
        }
        // The length byte itself missing.
        assert_eq!(
            kinds(&[1, 1, 1, 8]).last(),
            Some(&Err(HeaderError::Malformed))
        );
        let mss = |d: &[u8]| {
            TcpOption {
                offset: 0,
                kind: TCP_OPT_MSS,
                data: d,
            }
            .mss()
        };
        assert_eq!(mss(&[5, 0xb4]), Some(1460));
        assert_eq!(mss(&[5, 0xb4, 0]), None);
    }

    #[test]
    fn tcp_set_mss_option() {
        let opts = [1, 1, 2, 4, 5, 0xb4];
        let mut f = vec![0u8; 20];
        f[12] = 7 << 4;
        f.extend_from_slice(&opts);
        f.extend_from_slice(&[0, 0]);
        let t = TcpPacket::new_checked(&f[..]).unwrap();
        let at = t.options().nth(2).unwrap().unwrap().offset;
        let mut t = TcpPacket::new_unchecked(&mut f[..]);
        t.set_mss_option(at, 1200);
        // Not an MSS option there: nothing written.
        t.set_mss_option(0, 1);
        t.set_mss_option(5, 1);
        assert_eq!(&f[20..], &[1, 1, 2, 4, 0x04, 0xb0, 0, 0]);
    }
}
