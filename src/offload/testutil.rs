//! Frame builders and a reference checksum, shared by the unit tests of
//! the offload modules (and of `crate::clamp`).

use super::checksum::{csum_fold, pseudo_sum};
use super::headers::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, Ipv4Packet, PROTO_TCP, PROTO_UDP, TcpPacket, UdpPacket,
    parse_l3,
};
use super::segment::segment;
use super::vnet::{F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VnetHdr};

/// Straightforward reference: 16-bit words, end-around carry, byte by byte.
pub fn ref_csum(parts: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut s: u32 = 0;
    for w in bytes.chunks(2) {
        s += u32::from(w[0]) << 8 | u32::from(w[1]);
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The reference TCP/UDP checksum over pseudo-header and transport bytes
/// of a frame: 0 when the checksum in it is right.
pub fn ref_l4_csum(f: &[u8]) -> u16 {
    let l = parse_l3(f).unwrap();
    let (v6, v4) = (l.ipv6(f), l.ipv4(f));
    let addrs = if l.ipv6 { v6.addrs() } else { v4.addrs() };
    let len = ((f.len() - l.l4) as u32).to_be_bytes();
    ref_csum(&[addrs, &[0, l.proto], &len, &f[l.l4..]])
}

/// `n` bytes of a recognisable pattern.
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// An Ethernet header, with one 802.1Q tag (VLAN 7) if `vlan`.
pub fn eth(ethertype: u16, vlan: bool) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// Appends an IPv4 header (10.0.0.1 → 10.0.0.2, DF, TTL 64) with its checksum.
pub fn ipv4_hdr(f: &mut Vec<u8>, total: usize, id: u16, proto: u8) {
    let l3 = f.len();
    f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8]);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    let c = ref_csum(&[&f[l3..]]);
    Ipv4Packet::new_unchecked(&mut f[l3..]).set_checksum(c);
}

/// Appends an IPv6 header (fd00::1 → fd00::2, hop limit 64).
pub fn ipv6_hdr(f: &mut Vec<u8>, payload_len: usize, proto: u8) {
    f.extend_from_slice(&[
        0x60,
        0,
        0,
        0,
        (payload_len >> 8) as u8,
        payload_len as u8,
        proto,
        64,
    ]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
}

/// A TCP header (port 12345 → 5001, seq 0x10203040, ack 1, window 0xffff,
/// checksum 0) with `options` (a multiple of 4 bytes).
pub fn tcp_hdr(flags: u8, options: &[u8]) -> Vec<u8> {
    let doff = (20 + options.len()) / 4;
    let mut t = vec![
        0x30,
        0x39,
        0x13,
        0x89,
        0x10,
        0x20,
        0x30,
        0x40,
        0,
        0,
        0,
        1,
        (doff as u8) << 4,
        flags,
        0xff,
        0xff,
        0,
        0,
        0,
        0,
    ];
    t.extend_from_slice(options);
    t
}

/// Ethernet, IP (IPv4 ID 0x1234) and `l4` (a transport header and its
/// payload) with all lengths right; transport checksum left as in `l4`.
fn ip_frame(v6: bool, vlan: bool, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = eth(if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 }, vlan);
    if v6 {
        ipv6_hdr(&mut f, l4.len(), proto);
    } else {
        ipv4_hdr(&mut f, 20 + l4.len(), 0x1234, proto);
    }
    f.extend_from_slice(l4);
    f
}

/// A complete TCP frame with a right checksum.
pub fn tcp_frame(v6: bool, vlan: bool, flags: u8, options: &[u8], data: &[u8]) -> Vec<u8> {
    let mut f = ip_frame(
        v6,
        vlan,
        PROTO_TCP,
        &[tcp_hdr(flags, options), data.to_vec()].concat(),
    );
    let c = ref_l4_csum(&f);
    let l = parse_l3(&f).unwrap();
    l.tcp_mut(&mut f).set_checksum(c);
    f
}

/// A complete UDP frame (port 40000 → 5201) with a right checksum.
pub fn udp_frame(v6: bool, vlan: bool, data: &[u8]) -> Vec<u8> {
    let len = 8 + data.len();
    let hdr = [0x9c, 0x40, 0x14, 0x51, (len >> 8) as u8, len as u8, 0, 0];
    let mut f = ip_frame(v6, vlan, PROTO_UDP, &[&hdr[..], data].concat());
    let c = ref_l4_csum(&f);
    let l = parse_l3(&f).unwrap();
    l.udp_mut(&mut f).set_checksum(c);
    f
}

/// Leaves in the transport checksum field what the TAP puts there for
/// `NEEDS_CSUM`: the pseudo-header sum, not inverted.
fn set_pseudo_sum(f: &mut [u8]) {
    let l = parse_l3(f).unwrap();
    let ps = csum_fold(pseudo_sum(f, &l, f.len() - l.l4));
    if l.proto == PROTO_UDP {
        l.udp_mut(f).set_checksum(ps);
    } else {
        l.tcp_mut(f).set_checksum(ps);
    }
}

/// A TCP/IPv4 super-frame as the TAP gives it: IPv4 total length of the
/// whole, pseudo-header sum in the TCP checksum field, gso_size 1000.
pub fn tcp4_super(vlan: bool, flags: u8, options: &[u8], data: &[u8]) -> (VnetHdr, Vec<u8>) {
    let mut f = ip_frame(
        false,
        vlan,
        PROTO_TCP,
        &[tcp_hdr(flags, options), data.to_vec()].concat(),
    );
    set_pseudo_sum(&mut f);
    let l = parse_l3(&f).unwrap();
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: (l.l4 + 20 + options.len()) as u16,
        gso_size: 1000,
        csum_start: l.l4 as u16,
        csum_offset: TcpPacket::<&[u8]>::CHECKSUM_OFFSET as u16,
    };
    (hdr, f)
}

/// A TCP/IPv6 super-frame with a timestamps option, gso_size 1200 and no
/// `hdr_len` (which segmentation does not need).
pub fn tcp6_super(flags: u8, data: &[u8]) -> (VnetHdr, Vec<u8>) {
    let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let mut f = ip_frame(
        true,
        false,
        PROTO_TCP,
        &[tcp_hdr(flags, &opts), data.to_vec()].concat(),
    );
    set_pseudo_sum(&mut f);
    let l = parse_l3(&f).unwrap();
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV6,
        hdr_len: 0,
        gso_size: 1200,
        csum_start: l.l4 as u16,
        csum_offset: TcpPacket::<&[u8]>::CHECKSUM_OFFSET as u16,
    };
    (hdr, f)
}

/// A TCP super-frame (IPv4 or IPv6) of `n` payload bytes, gso_size 1000.
pub fn super_frame(v6: bool, n: usize, flags: u8) -> (VnetHdr, Vec<u8>) {
    if v6 {
        let (mut h, f) = tcp6_super(flags, &payload(n));
        h.gso_size = 1000;
        (h, f)
    } else {
        tcp4_super(false, flags, &[], &payload(n))
    }
}

/// A USO super-frame as an application's UDP GSO send reaches the TAP:
/// `data` cut every `gso` bytes, IPv4 ID 0xfff0 (so runs wrap), the
/// pseudo-header sum in the checksum field.
pub fn udp_super(v6: bool, vlan: bool, data: &[u8], gso: u16) -> (VnetHdr, Vec<u8>) {
    let mut f = udp_frame(v6, vlan, data);
    let l = parse_l3(&f).unwrap();
    if !v6 {
        let mut ip = l.ipv4_mut(&mut f);
        ip.set_ident(0xfff0);
        ip.set_checksum(0);
        let c = ref_csum(&[ip.header()]);
        ip.set_checksum(c);
    }
    set_pseudo_sum(&mut f);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_UDP_L4,
        hdr_len: (l.l4 + UdpPacket::<&[u8]>::HEADER_LEN) as u16,
        gso_size: gso,
        csum_start: l.l4 as u16,
        csum_offset: UdpPacket::<&[u8]>::CHECKSUM_OFFSET as u16,
    };
    (hdr, f)
}

/// Segments with at most `max` payload bytes per segment and returns the
/// frames (without the 40 bytes of headroom asked for).
pub fn split(hdr: &VnetHdr, f: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut out = vec![0u8; 200_000];
    let mut spans = Vec::new();
    let hl = parse_l3(f)
        .map(|l| l.l4 + l.tcp(f).header_len())
        .unwrap_or(0);
    segment(hdr, f, max + hl, 40, &mut out, &mut spans).unwrap();
    spans
        .iter()
        .map(|s| out[s.start + 40..s.end].to_vec())
        .collect()
}

/// Cuts a super-frame into frames of at most `max_frame` bytes, no headroom.
pub fn cut(hdr: &VnetHdr, f: &[u8], max_frame: usize) -> Vec<Vec<u8>> {
    let mut out = vec![0u8; 400_000];
    let mut spans = Vec::new();
    segment(hdr, f, max_frame, 0, &mut out, &mut spans).unwrap();
    spans.iter().map(|s| out[s.clone()].to_vec()).collect()
}

/// The datagrams an application's GSO send of `n` bytes in `gso`-byte
/// pieces puts on the wire, each with its own complete checksum.
pub fn udp_datagrams(v6: bool, vlan: bool, n: usize, gso: u16) -> Vec<Vec<u8>> {
    let (hdr, f) = udp_super(v6, vlan, &payload(n), gso);
    cut(&hdr, &f, 1514)
}

/// A xorshift64 generator: the tests' reproducible randomness, no crate.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// A number below `n` (which must not be 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
