//! Typed views of the headers the offload code reads and rewrites, in
//! smoltcp's `wire` idiom (as in `crate::wire`): a view wraps a buffer that
//! starts at its header, `new_checked` vouches for the length (and the
//! fields that size the header), and then the getters and setters index
//! fixed fields without further checks of their own. Every byte offset of
//! Ethernet, IPv4, IPv6, TCP and UDP lives here, in the `field` modules.
//!
//! `new_unchecked` views are for buffers already checked (a frame whose
//! [`Layers`] were parsed): their accessors panic on a short buffer, which
//! would be a bug in this crate, never a property of the input.

use super::OffloadError;
use std::fmt;
use std::ops::Range;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ) service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Why a buffer is not the header it was taken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than the header (or than the length the header gives itself).
    Truncated,
    /// A field that sizes or identifies the header is impossible (IPv4
    /// version or header length, TCP data offset, a TCP option's length).
    Malformed,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderError::Truncated => "buffer shorter than the header",
            HeaderError::Malformed => "header field out of range",
        })
    }
}

impl std::error::Error for HeaderError {}

#[inline]
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// `a` and `b` equal except in the byte ranges `skip` (ascending, disjoint).
fn eq_except(a: &[u8], b: &[u8], skip: &[Range<usize>]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut from = 0;
    for r in skip {
        let to = r.start.min(a.len());
        if from < to && a[from..to] != b[from..to] {
            return false;
        }
        from = from.max(r.end);
    }
    from >= a.len() || a[from..] == b[from..]
}

/// An Ethernet frame with at most two VLAN tags (802.1Q or 802.1ad) before
/// its EtherType.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

mod eth_field {
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

    /// Wraps a buffer without checking it.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

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
        let mut at = eth_field::ETHERTYPE.start;
        let mut tags = 0;
        loop {
            let t = b.get(at..at + 2).ok_or(HeaderError::Truncated)?;
            let ethertype = u16::from_be_bytes([t[0], t[1]]);
            if (ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ)
                && tags < eth_field::MAX_TAGS
            {
                tags += 1;
                at += eth_field::TAG_LEN;
                continue;
            }
            return Ok((at + 2, ethertype));
        }
    }
}

/// An IPv4 packet: header (with options) and what follows.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod ipv4_field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
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

    /// Wraps a buffer without checking it.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer that starts with a version-4 header of at least 20
    /// bytes and holds all of it (options included).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
        let p = Ipv4Packet { buffer };
        let b = p.buffer.as_ref();
        let v = *b.get(ipv4_field::VER_IHL).ok_or(HeaderError::Truncated)?;
        if v >> 4 != 4 || p.header_len() < Self::MIN_HEADER_LEN {
            return Err(HeaderError::Malformed);
        }
        if b.len() < p.header_len() {
            return Err(HeaderError::Truncated);
        }
        Ok(p)
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[ipv4_field::VER_IHL] & 0x0f) * 4
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Total length: header and payload.
    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), ipv4_field::LENGTH.start)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), ipv4_field::IDENT.start)
    }

    /// Whether this is a fragment: more fragments follow, or it is not the first.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        let f = get_u16(self.buffer.as_ref(), ipv4_field::FLG_OFF.start);
        f & (ipv4_field::MORE_FRAGS | ipv4_field::FRAG_OFFSET) != 0
    }

    /// Fragment offset in 8-byte units (0 for an unfragmented packet or
    /// the first fragment, which alone carries the transport header).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        get_u16(self.buffer.as_ref(), ipv4_field::FLG_OFF.start) & ipv4_field::FRAG_OFFSET
    }

    /// The protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[ipv4_field::PROTOCOL]
    }

    /// Header checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), ipv4_field::CHECKSUM.start)
    }

    /// Source then destination address, as the pseudo-header sums them.
    #[inline]
    pub fn addrs(&self) -> &[u8] {
        &self.buffer.as_ref()[ipv4_field::ADDRS]
    }

    /// Whether the headers agree in every field but those segmentation
    /// rewrites per segment: total length, identification and checksum.
    pub fn same_but_per_segment<U: AsRef<[u8]>>(&self, other: &Ipv4Packet<U>) -> bool {
        const SKIP: [Range<usize>; 2] = [
            ipv4_field::LENGTH.start..ipv4_field::IDENT.end,
            ipv4_field::CHECKSUM,
        ];
        eq_except(self.header(), other.header(), &SKIP)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), ipv4_field::LENGTH.start, v);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), ipv4_field::IDENT.start, v);
    }

    /// Sets or clears the more-fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, on: bool) {
        let b = self.buffer.as_mut();
        let f = get_u16(b, ipv4_field::FLG_OFF.start) & !ipv4_field::MORE_FRAGS;
        let mf = if on { ipv4_field::MORE_FRAGS } else { 0 };
        set_u16(b, ipv4_field::FLG_OFF.start, f | mf);
    }

    /// Sets the fragment offset (8-byte units; the top 3 bits are ignored).
    #[inline]
    pub fn set_frag_offset(&mut self, v: u16) {
        let b = self.buffer.as_mut();
        let f = get_u16(b, ipv4_field::FLG_OFF.start) & !ipv4_field::FRAG_OFFSET;
        set_u16(
            b,
            ipv4_field::FLG_OFF.start,
            f | (v & ipv4_field::FRAG_OFFSET),
        );
    }

    /// Sets the header checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), ipv4_field::CHECKSUM.start, v);
    }

    /// The header, options included, writable.
    #[inline]
    pub fn header_mut(&mut self) -> &mut [u8] {
        let len = self.header_len();
        &mut self.buffer.as_mut()[..len]
    }
}

/// An IPv6 packet: the fixed header and what follows (extension headers
/// are not followed).
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod ipv6_field {
    use std::ops::Range;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    /// Source and destination address: the pseudo-header's share.
    pub const ADDRS: Range<usize> = 8..40;
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Length of the fixed header.
    pub const HEADER_LEN: usize = 40;

    /// Wraps a buffer without checking it.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer that holds the fixed header. The version field is
    /// not looked at: the EtherType said IPv6.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(HeaderError::Truncated);
        }
        Ok(Ipv6Packet { buffer })
    }

    /// Payload length (what follows the fixed header).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), ipv6_field::PAYLOAD_LEN.start)
    }

    /// The next header: the protocol of the payload when there are no
    /// extension headers.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ipv6_field::NEXT_HEADER]
    }

    /// Source then destination address, as the pseudo-header sums them.
    #[inline]
    pub fn addrs(&self) -> &[u8] {
        &self.buffer.as_ref()[ipv6_field::ADDRS]
    }

    /// Whether the fixed headers agree in every field but the one
    /// segmentation rewrites per segment: the payload length.
    pub fn same_but_per_segment<U: AsRef<[u8]>>(&self, other: &Ipv6Packet<U>) -> bool {
        let (a, b) = (self.buffer.as_ref(), other.buffer.as_ref());
        eq_except(
            &a[..Self::HEADER_LEN],
            &b[..Self::HEADER_LEN],
            std::slice::from_ref(&ipv6_field::PAYLOAD_LEN),
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), ipv6_field::PAYLOAD_LEN.start, v);
    }
}

/// A TCP segment: header (with options) and payload.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

mod tcp_field {
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
    pub const CHECKSUM_OFFSET: usize = tcp_field::CHECKSUM.start;

    /// Wraps a buffer without checking it.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer that holds the whole header: a data offset of at
    /// least 5 words, and that many bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
        let p = TcpPacket { buffer };
        let b = p.buffer.as_ref();
        let doff = b.get(tcp_field::DATA_OFF).ok_or(HeaderError::Truncated)?;
        if usize::from(doff >> 4) * 4 < Self::MIN_HEADER_LEN {
            return Err(HeaderError::Malformed);
        }
        if b.len() < p.header_len() {
            return Err(HeaderError::Truncated);
        }
        Ok(p)
    }

    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[tcp_field::DATA_OFF] >> 4) * 4
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), tcp_field::SRC_PORT.start)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), tcp_field::DST_PORT.start)
    }

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        let b = &self.buffer.as_ref()[tcp_field::SEQ_NUM];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The flags byte (see [`tcp_flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[tcp_field::FLAGS]
    }

    /// Checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), tcp_field::CHECKSUM.start)
    }

    /// The options, padding included.
    #[inline]
    pub fn options(&self) -> TcpOptions<'_> {
        TcpOptions {
            opts: &self.buffer.as_ref()[tcp_field::OPTIONS..self.header_len()],
            at: 0,
        }
    }

    /// Whether the headers agree in every field but those segmentation
    /// rewrites per segment: sequence number, flags and checksum.
    pub fn same_but_per_segment<U: AsRef<[u8]>>(&self, other: &TcpPacket<U>) -> bool {
        const SKIP: [Range<usize>; 3] = [
            tcp_field::SEQ_NUM,
            tcp_field::FLAGS..tcp_field::FLAGS + 1,
            tcp_field::CHECKSUM,
        ];
        let (a, b) = (self.buffer.as_ref(), other.buffer.as_ref());
        eq_except(&a[..self.header_len()], &b[..other.header_len()], &SKIP)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), tcp_field::SRC_PORT.start, v);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), tcp_field::DST_PORT.start, v);
    }

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        self.buffer.as_mut()[tcp_field::SEQ_NUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[tcp_field::FLAGS] = v;
    }

    /// Sets the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), tcp_field::CHECKSUM.start, v);
    }

    /// Writes `mss` into the MSS option whose kind byte is `offset` bytes
    /// into the options (a [`TcpOption::offset`]). Does nothing unless a
    /// well-formed MSS option (kind 2, length 4) is there, inside the header.
    #[inline]
    pub fn set_mss_option(&mut self, offset: usize, mss: u16) {
        let end = self.header_len();
        let b = self.buffer.as_mut();
        let at = tcp_field::OPTIONS + offset;
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

/// A UDP datagram: header and payload.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

mod udp_field {
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
    pub const CHECKSUM_OFFSET: usize = udp_field::CHECKSUM.start;

    /// Wraps a buffer without checking it.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer that holds the header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(HeaderError::Truncated);
        }
        Ok(UdpPacket { buffer })
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), udp_field::SRC_PORT.start)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), udp_field::DST_PORT.start)
    }

    /// Length of header and payload, as the header says.
    #[inline]
    pub fn length(&self) -> u16 {
        get_u16(self.buffer.as_ref(), udp_field::LENGTH.start)
    }

    /// Checksum (0: none, allowed over IPv4 only).
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), udp_field::CHECKSUM.start)
    }

    /// Whether the headers agree in every field but those segmentation
    /// rewrites per segment: length and checksum (so: the ports).
    pub fn same_but_per_segment<U: AsRef<[u8]>>(&self, other: &UdpPacket<U>) -> bool {
        let (a, b) = (self.buffer.as_ref(), other.buffer.as_ref());
        eq_except(
            &a[..Self::HEADER_LEN],
            &b[..Self::HEADER_LEN],
            std::slice::from_ref(&(udp_field::LENGTH.start..udp_field::CHECKSUM.end)),
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), udp_field::SRC_PORT.start, v);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), udp_field::DST_PORT.start, v);
    }

    /// Sets the length.
    #[inline]
    pub fn set_length(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), udp_field::LENGTH.start, v);
    }

    /// Sets the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), udp_field::CHECKSUM.start, v);
    }
}

/// Where the layers of an Ethernet frame start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    /// Offset of the IP header.
    pub l3: usize,
    /// True for IPv6.
    pub ipv6: bool,
    /// Offset of the transport header.
    pub l4: usize,
    /// Transport protocol number.
    pub proto: u8,
}

/// Finds IP and transport headers behind Ethernet and up to two VLAN tags.
/// IPv6 extension headers are not followed.
pub fn parse_l3(frame: &[u8]) -> Result<Layers, OffloadError> {
    let (l3, ethertype) = EthernetFrame::new_unchecked(frame).layout()?;
    // `layout` read the EtherType ending at `l3`, so the slice exists.
    let ip = frame.get(l3..).ok_or(OffloadError::Truncated)?;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let p = Ipv4Packet::new_checked(ip)?;
            Ok(Layers {
                l3,
                ipv6: false,
                l4: l3 + p.header_len(),
                proto: p.protocol(),
            })
        }
        ETHERTYPE_IPV6 => {
            let p = Ipv6Packet::new_checked(ip)?;
            Ok(Layers {
                l3,
                ipv6: true,
                l4: l3 + Ipv6Packet::<&[u8]>::HEADER_LEN,
                proto: p.next_header(),
            })
        }
        _ => Err(OffloadError::Unsupported),
    }
}

/// Views of the headers of a frame whose layers these are. The frame must
/// be the one parsed (or a copy of its headers): the views are unchecked.
impl Layers {
    /// The IPv4 header (for layers with `ipv6` false).
    #[inline]
    pub fn ipv4<'a>(&self, frame: &'a [u8]) -> Ipv4Packet<&'a [u8]> {
        Ipv4Packet::new_unchecked(&frame[self.l3..])
    }

    /// The IPv4 header, writable.
    #[inline]
    pub fn ipv4_mut<'a>(&self, frame: &'a mut [u8]) -> Ipv4Packet<&'a mut [u8]> {
        Ipv4Packet::new_unchecked(&mut frame[self.l3..])
    }

    /// The IPv6 header (for layers with `ipv6` true).
    #[inline]
    pub fn ipv6<'a>(&self, frame: &'a [u8]) -> Ipv6Packet<&'a [u8]> {
        Ipv6Packet::new_unchecked(&frame[self.l3..])
    }

    /// The IPv6 header, writable.
    #[inline]
    pub fn ipv6_mut<'a>(&self, frame: &'a mut [u8]) -> Ipv6Packet<&'a mut [u8]> {
        Ipv6Packet::new_unchecked(&mut frame[self.l3..])
    }

    /// The TCP header and payload.
    #[inline]
    pub fn tcp<'a>(&self, frame: &'a [u8]) -> TcpPacket<&'a [u8]> {
        TcpPacket::new_unchecked(&frame[self.l4..])
    }

    /// The TCP header and payload, writable.
    #[inline]
    pub fn tcp_mut<'a>(&self, frame: &'a mut [u8]) -> TcpPacket<&'a mut [u8]> {
        TcpPacket::new_unchecked(&mut frame[self.l4..])
    }

    /// The UDP header and payload.
    #[inline]
    pub fn udp<'a>(&self, frame: &'a [u8]) -> UdpPacket<&'a [u8]> {
        UdpPacket::new_unchecked(&frame[self.l4..])
    }

    /// The UDP header and payload, writable.
    #[inline]
    pub fn udp_mut<'a>(&self, frame: &'a mut [u8]) -> UdpPacket<&'a mut [u8]> {
        UdpPacket::new_unchecked(&mut frame[self.l4..])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{eth, payload, tcp_frame, udp_frame};
    use super::*;

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

    #[test]
    fn layers_of_frames() {
        let f = tcp_frame(false, true, tcp_flags::ACK, &[], &payload(1));
        let l = parse_l3(&f).unwrap();
        assert_eq!(
            l,
            Layers {
                l3: 18,
                ipv6: false,
                l4: 38,
                proto: PROTO_TCP
            }
        );
        let f = udp_frame(true, false, &payload(1));
        let l = parse_l3(&f).unwrap();
        assert_eq!(
            l,
            Layers {
                l3: 14,
                ipv6: true,
                l4: 54,
                proto: PROTO_UDP
            }
        );
        assert_eq!(parse_l3(&f[..53]), Err(OffloadError::Truncated));
        assert_eq!(parse_l3(&[0xffu8; 60]), Err(OffloadError::Unsupported));
        assert_eq!(parse_l3(&[0u8; 13]), Err(OffloadError::Truncated));
        // An IPv4 header length below 20 counts as truncated, as it always has.
        let mut g = tcp_frame(false, false, tcp_flags::ACK, &[], &payload(1));
        g[14] = 0x44;
        assert_eq!(parse_l3(&g), Err(OffloadError::Truncated));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn eq_except_edges() {
        assert!(eq_except(b"abcd", b"aXcd", &[1..2]));
        assert!(!eq_except(b"abcd", b"aXcY", &[1..2]));
        assert!(!eq_except(b"abc", b"abcd", &[]));
        assert!(eq_except(b"ab", b"aZ", &[1..4]));
    }
}
