//! Typed views of the headers the offload code reads and rewrites, in
//! smoltcp's `wire` idiom (as in `crate::wire`): a view wraps a buffer that
//! starts at its header, `new_checked` vouches for the length (and the
//! fields that size the header), and then the getters and setters index
//! fixed fields without further checks of their own. Every byte offset of
//! Ethernet, IPv4, IPv6, TCP and UDP lives here, in the `field` module of
//! each header's file (`ethernet`, `ipv4`, `ipv6`, `tcp` with its options,
//! `udp`); this one holds what they share, the error, the constants that
//! name the layers, and [`parse_l3`] with the [`Layers`] it finds.
//!
//! `new_unchecked` views are for buffers already checked (a frame whose
//! [`Layers`] were parsed): their accessors panic on a short buffer, which
//! would be a bug in this crate, never a property of the input.

use super::OffloadError;
use std::fmt;
use std::ops::Range;

/// Declares the view `$name` over a buffer `T: AsRef<[u8]>` (its one
/// field, `buffer`) with its `new_unchecked`, the same for every header;
/// `new_checked` and the accessors are each view's own.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without checking it.
            #[inline]
            pub fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }
        }
    };
}

/// Writes, inside a view's `impl`, a getter `$get(&self) -> u16` per
/// big-endian 16-bit field that starts at `field::$at.start` of the view's
/// own `field` module.
macro_rules! u16_getters {
    ($($(#[$doc:meta])* $get:ident: $at:ident;)*) => {$(
        $(#[$doc])*
        #[inline]
        pub fn $get(&self) -> u16 {
            super::get_u16(self.buffer.as_ref(), field::$at.start)
        }
    )*};
}

/// Writes, inside a view's `impl` for `T: AsMut<[u8]>`, a setter
/// `$set(&mut self, v: u16)` per field as `u16_getters` reads it.
macro_rules! u16_setters {
    ($($(#[$doc:meta])* $set:ident: $at:ident;)*) => {$(
        $(#[$doc])*
        #[inline]
        pub fn $set(&mut self, v: u16) {
            super::set_u16(self.buffer.as_mut(), field::$at.start, v);
        }
    )*};
}

mod ethernet;
mod ipv4;
mod ipv6;
mod tcp;
mod udp;

pub use ethernet::EthernetFrame;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use tcp::{
    TCP_OPT_EOL, TCP_OPT_MSS, TCP_OPT_MSS_LEN, TCP_OPT_NOP, TcpOption, TcpOptions, TcpPacket,
    tcp_flags,
};
pub use udp::UdpPacket;

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

/// Whether `b` holds a header of `len` bytes: [`HeaderError::Truncated`]
/// if not.
#[inline]
fn holds(b: &[u8], len: usize) -> Result<(), HeaderError> {
    if b.len() < len {
        return Err(HeaderError::Truncated);
    }
    Ok(())
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

/// Writes, inside `impl Layers`, the read and the write accessor of each
/// view: `$get(frame)` and `$get_mut(frame)` wrap `frame[self.$at..]`
/// (`l3` or `l4`) in an unchecked `$view`. The documentation of both is
/// `$what`, with `$note` added on the reader and ", writable" on the writer.
macro_rules! layer_views {
    ($($get:ident, $get_mut:ident: $view:ident at $at:ident, $what:literal $note:literal;)*) => {$(
        #[doc = concat!($what, $note, ".")]
        #[inline]
        pub fn $get<'a>(&self, frame: &'a [u8]) -> $view<&'a [u8]> {
            $view::new_unchecked(&frame[self.$at..])
        }

        #[doc = concat!($what, ", writable.")]
        #[inline]
        pub fn $get_mut<'a>(&self, frame: &'a mut [u8]) -> $view<&'a mut [u8]> {
            $view::new_unchecked(&mut frame[self.$at..])
        }
    )*};
}

/// Views of the headers of a frame whose layers these are. The frame must
/// be the one parsed (or a copy of its headers): the views are unchecked.
impl Layers {
    layer_views! {
        ipv4, ipv4_mut: Ipv4Packet at l3, "The IPv4 header" " (for layers with `ipv6` false)";
        ipv6, ipv6_mut: Ipv6Packet at l3, "The IPv6 header" " (for layers with `ipv6` true)";
        tcp, tcp_mut: TcpPacket at l4, "The TCP header and payload" "";
        udp, udp_mut: UdpPacket at l4, "The UDP header and payload" "";
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testutil::{payload, tcp_frame, udp_frame};

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
