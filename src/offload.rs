//! TAP offloads, pure: the `virtio_net_hdr` that a TAP opened with
//! `IFF_VNET_HDR` puts before every frame, checksum completion, and the
//! segmentation of a TSO/USO super-frame into ordinary Ethernet frames
//! that each fit the tunnel MTU. No I/O here; the tunnel does that.

use std::fmt;
use std::ops::Range;

// The coalescer fuzz harness: compiled for tests and under `cargo fuzz`
// (which sets `--cfg fuzzing`), never into the shipped binary.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod harness;

/// Size of the `virtio_net_hdr` (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `flags`: the checksum at `csum_start + csum_offset` is to be completed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was already validated.
pub const F_DATA_VALID: u8 = 2;
/// `gso_type`: not a super-frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO).
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: ECN was used (CWR only on the first segment).
pub const GSO_ECN: u8 = 0x80;

const ETH_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The header in front of each frame on an `IFF_VNET_HDR` TAP (little-endian).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of all headers (Ethernet to L4).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum field is.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header from the first [`VNET_HDR_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<VnetHdr, OffloadError> {
        let b = b.get(..VNET_HDR_LEN).ok_or(OffloadError::Truncated)?;
        let u16le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16le(2),
            gso_size: u16le(4),
            csum_start: u16le(6),
            csum_offset: u16le(8),
        })
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes.
    pub fn write(&self, b: &mut [u8]) -> Result<(), OffloadError> {
        let b = b.get_mut(..VNET_HDR_LEN).ok_or(OffloadError::NoRoom)?;
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        Ok(())
    }
}

/// Why a frame from the TAP could not be prepared for the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// Shorter than the headers it claims.
    Truncated,
    /// A GSO type, protocol or header layout this code does not segment.
    Unsupported,
    /// The checksum position lies outside the frame.
    BadCsum,
    /// The output buffer is too small.
    NoRoom,
}

impl fmt::Display for OffloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffloadError::Truncated => "frame shorter than its headers",
            OffloadError::Unsupported => "unsupported offload frame (GSO type or headers)",
            OffloadError::BadCsum => "checksum offsets outside the frame",
            OffloadError::NoRoom => "segment buffer too small",
        })
    }
}

impl std::error::Error for OffloadError {}

/// One's-complement sum of `data` (big-endian 16-bit words) added to `acc`.
/// The result stays below 2^33, so small terms and other sums may be added
/// to it before [`csum_fold`].
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
pub fn csum_fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
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
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

fn is_udp_at(frame: &[u8], l4: usize) -> bool {
    parse_l3(frame)
        .map(|l| l.l4 == l4 && l.proto == PROTO_UDP)
        .unwrap_or(false)
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
    let mut off = ETH_LEN - 2;
    let mut ethertype;
    let mut tags = 0;
    loop {
        let b = frame.get(off..off + 2).ok_or(OffloadError::Truncated)?;
        ethertype = u16::from_be_bytes([b[0], b[1]]);
        off += 2;
        if (ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ) && tags < 2 {
            tags += 1;
            off += 2;
            continue;
        }
        break;
    }
    let l3 = off;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let v = *frame.get(l3).ok_or(OffloadError::Truncated)?;
            let ihl = usize::from(v & 0x0f) * 4;
            if v >> 4 != 4 || ihl < 20 || frame.len() < l3 + ihl {
                return Err(OffloadError::Truncated);
            }
            Ok(Layers {
                l3,
                ipv6: false,
                l4: l3 + ihl,
                proto: frame[l3 + 9],
            })
        }
        ETHERTYPE_IPV6 => {
            if frame.len() < l3 + 40 {
                return Err(OffloadError::Truncated);
            }
            Ok(Layers {
                l3,
                ipv6: true,
                l4: l3 + 40,
                proto: frame[l3 + 6],
            })
        }
        _ => Err(OffloadError::Unsupported),
    }
}

fn pseudo_sum(frame: &[u8], l: &Layers, l4_len: usize) -> u64 {
    let acc = if l.ipv6 {
        csum_add(0, &frame[l.l3 + 8..l.l3 + 40])
    } else {
        csum_add(0, &frame[l.l3 + 12..l.l3 + 20])
    };
    acc + u64::from(l.proto) + l4_len as u64
}

fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Splits a frame read from an offloading TAP into wire-ready Ethernet
/// frames, each with complete checksums and at most `max_frame` bytes long
/// (segments carry `gso_size` bytes of payload, or fewer to fit). Each output frame is placed in
/// `out` after `headroom` free bytes (room for the taptun header), and its
/// span (headroom included) pushed to `spans`. A non-GSO frame yields one.
pub fn segment(
    hdr: &VnetHdr,
    frame: &[u8],
    max_frame: usize,
    headroom: usize,
    out: &mut [u8],
    spans: &mut Vec<Range<usize>>,
) -> Result<(), OffloadError> {
    spans.clear();
    let gso = hdr.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        let end = headroom + frame.len();
        let dst = out.get_mut(headroom..end).ok_or(OffloadError::NoRoom)?;
        dst.copy_from_slice(frame);
        if hdr.flags & F_NEEDS_CSUM != 0 {
            complete_csum(
                dst,
                usize::from(hdr.csum_start),
                usize::from(hdr.csum_offset),
            )?;
        }
        spans.push(0..end);
        return Ok(());
    }
    let l = parse_l3(frame)?;
    let (is_tcp, ok) = match gso {
        GSO_TCPV4 => (true, !l.ipv6 && l.proto == PROTO_TCP),
        GSO_TCPV6 => (true, l.ipv6 && l.proto == PROTO_TCP),
        GSO_UDP_L4 => (false, l.proto == PROTO_UDP),
        _ => (false, false),
    };
    if !ok {
        return Err(OffloadError::Unsupported);
    }
    let l4_hdr = if is_tcp {
        let doff = usize::from(*frame.get(l.l4 + 12).ok_or(OffloadError::Truncated)? >> 4) * 4;
        if doff < 20 {
            return Err(OffloadError::Truncated);
        }
        doff
    } else {
        8
    };
    let hl = l.l4 + l4_hdr;
    if frame.len() < hl {
        return Err(OffloadError::Truncated);
    }
    let mss = match usize::from(hdr.gso_size) {
        0 => max_frame.saturating_sub(hl),
        g => g.min(max_frame.saturating_sub(hl)),
    };
    if mss == 0 {
        return Err(OffloadError::Unsupported);
    }
    let payload = &frame[hl..];
    let seq0 = if is_tcp {
        u32::from_be_bytes([
            frame[l.l4 + 4],
            frame[l.l4 + 5],
            frame[l.l4 + 6],
            frame[l.l4 + 7],
        ])
    } else {
        0
    };
    let id0 = if l.ipv6 { 0 } else { get_u16(frame, l.l3 + 4) };
    let n = payload.len().div_ceil(mss).max(1);
    let mut pos = 0;
    for (i, chunk) in payload
        .chunks(mss)
        .chain(std::iter::once(&[][..]).take(usize::from(payload.is_empty())))
        .enumerate()
    {
        let start = pos + headroom;
        let end = start + hl + chunk.len();
        let seg = out.get_mut(start..end).ok_or(OffloadError::NoRoom)?;
        seg[..hl].copy_from_slice(&frame[..hl]);
        seg[hl..].copy_from_slice(chunk);
        let l4_len = l4_hdr + chunk.len();
        if l.ipv6 {
            set_u16(seg, l.l3 + 4, l4_len as u16);
        } else {
            let ihl = l.l4 - l.l3;
            set_u16(seg, l.l3 + 2, (ihl + l4_len) as u16);
            set_u16(seg, l.l3 + 4, id0.wrapping_add(i as u16));
            set_u16(seg, l.l3 + 10, 0);
            let c = !csum_fold(csum_add(0, &seg[l.l3..l.l4]));
            set_u16(seg, l.l3 + 10, c);
        }
        let csum_at = if is_tcp {
            let seq = seq0.wrapping_add((i * mss) as u32);
            seg[l.l4 + 4..l.l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let flags = &mut seg[l.l4 + 13];
            if i + 1 < n {
                *flags &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                *flags &= !TCP_CWR;
            }
            l.l4 + 16
        } else {
            set_u16(seg, l.l4 + 4, l4_len as u16);
            l.l4 + 6
        };
        set_u16(seg, csum_at, 0);
        let sum = csum_add(pseudo_sum(seg, &l, l4_len), &seg[l.l4..]);
        let mut c = !csum_fold(sum);
        if c == 0 && !is_tcp {
            c = 0xffff;
        }
        set_u16(seg, csum_at, c);
        spans.push(pos..end);
        pos = end;
    }
    Ok(())
}

/// Largest super-frame handed to the TAP (IP total length is 16 bits).
const MAX_SUPER: usize = 65_000;
/// Most datagrams in one UDP super-frame (the kernel's `UDP_MAX_SEGMENTS`).
const MAX_UDP_SEGS: usize = 64;
const TCP_ACK: u8 = 0x10;

/// Receive-side GRO: merges consecutive in-order TCP segments of one flow,
/// and consecutive equal-sized UDP datagrams of one flow (each already
/// authenticated on its own), into one super-frame, to be written to an
/// offloading TAP once; the kernel cuts it back into the very same frames
/// (or hands it whole to a GRO-aware socket). Everything else passes
/// through as single frames. The output always starts with a [`VnetHdr`].
#[derive(Debug)]
pub struct Coalescer {
    buf: Vec<u8>,
    run: Option<Run>,
    /// Whether UDP runs are coalesced (the kernel must know USO).
    udp: bool,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    l: Layers,
    /// Length of all headers, Ethernet to L4.
    hl: usize,
    /// Payload bytes of the first segment: the GSO size.
    mss: usize,
    /// The TCP sequence number the next segment must carry (0 for UDP).
    next_seq: u32,
    /// The IPv4 ID the next segment must carry (0 for IPv6): the kernel
    /// numbers the segments it cuts consecutively, so only such runs come
    /// back unchanged.
    next_id: u16,
    segs: usize,
    closed: bool,
}

/// A frame that may join a run.
struct Seg {
    l: Layers,
    hl: usize,
    /// TCP sequence number (0 for UDP).
    seq: u32,
    /// IPv4 ID (0 for IPv6).
    id: u16,
    /// TCP flags (0 for UDP).
    flags: u8,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    /// One reusable buffer, allocated once.
    pub fn new() -> Self {
        Coalescer {
            buf: Vec::with_capacity(VNET_HDR_LEN + MAX_SUPER + 1600),
            run: None,
            udp: true,
        }
    }

    /// Turns UDP coalescing on or off (TCP is always on): a kernel before
    /// 6.2 refuses UDP super-frames written to a TAP.
    pub fn with_udp(mut self, on: bool) -> Self {
        self.udp = on;
        self
    }

    /// Adds a frame; calls `emit` with each finished `VnetHdr ‖ frame`.
    pub fn push(&mut self, frame: &[u8], emit: &mut impl FnMut(&[u8])) {
        let seg = tcp_segment(frame).or_else(|| udp_datagram(frame).filter(|_| self.udp));
        if let Some(seg) = seg {
            if self.try_append(frame, &seg) {
                return;
            }
            self.flush(emit);
            self.buf.clear();
            self.buf.extend_from_slice(&[0u8; VNET_HDR_LEN]);
            self.buf.extend_from_slice(frame);
            let len = frame.len() - seg.hl;
            self.run = Some(Run {
                l: seg.l,
                hl: seg.hl,
                mss: len,
                next_seq: next_seq(&seg, len),
                next_id: next_id(&seg),
                segs: 1,
                closed: seg.flags & TCP_PSH != 0,
            });
            return;
        }
        self.flush(emit);
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; VNET_HDR_LEN]);
        self.buf.extend_from_slice(frame);
        emit(&self.buf);
        self.buf.clear();
    }

    fn try_append(&mut self, frame: &[u8], seg: &Seg) -> bool {
        let Some(run) = self.run.as_mut() else {
            return false;
        };
        let len = frame.len() - seg.hl;
        let udp = run.l.proto == PROTO_UDP;
        let prev = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + run.hl];
        if run.closed
            || seg.hl != run.hl
            || seg.l != run.l
            || seg.seq != run.next_seq
            || seg.id != run.next_id
            || len > run.mss
            || (udp && run.segs >= MAX_UDP_SEGS)
            || self.buf.len() - VNET_HDR_LEN + len > MAX_SUPER
            || !same_flow_headers(prev, &frame[..seg.hl], &run.l)
        {
            return false;
        }
        self.buf.extend_from_slice(&frame[seg.hl..]);
        run.next_seq = next_seq(seg, len);
        run.next_id = next_id(seg);
        run.segs += 1;
        // A short segment or PSH ends a run, as in the kernel's GRO.
        run.closed = len < run.mss || seg.flags & TCP_PSH != 0;
        if seg.flags & TCP_PSH != 0 {
            let at = VNET_HDR_LEN + run.l.l4 + 13;
            self.buf[at] |= TCP_PSH;
        }
        true
    }

    /// Emits what is pending (call at the end of each received batch).
    pub fn flush(&mut self, emit: &mut impl FnMut(&[u8])) {
        let Some(run) = self.run.take() else { return };
        if run.segs > 1 {
            let f = &mut self.buf[VNET_HDR_LEN..];
            let l = run.l;
            let l4_len = f.len() - l.l4;
            if l.ipv6 {
                set_u16(f, l.l3 + 4, l4_len as u16);
            } else {
                set_u16(f, l.l3 + 2, (f.len() - l.l3) as u16);
                set_u16(f, l.l3 + 10, 0);
                let c = !csum_fold(csum_add(0, &f[l.l3..l.l4]));
                set_u16(f, l.l3 + 10, c);
            }
            let (gso_type, csum_offset) = match (l.proto, l.ipv6) {
                (PROTO_UDP, _) => {
                    set_u16(f, l.l4 + 4, l4_len as u16);
                    (GSO_UDP_L4, 6)
                }
                (_, true) => (GSO_TCPV6, 16),
                (_, false) => (GSO_TCPV4, 16),
            };
            // The kernel completes the checksum: leave it the pseudo-header sum.
            let ps = csum_fold(pseudo_sum(f, &l, l4_len));
            set_u16(f, l.l4 + csum_offset, ps);
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type,
                hdr_len: run.hl as u16,
                gso_size: run.mss as u16,
                csum_start: l.l4 as u16,
                csum_offset: csum_offset as u16,
            };
            let _ = hdr.write(&mut self.buf);
        }
        emit(&self.buf);
        self.buf.clear();
    }
}

/// The TCP sequence number of the segment after `seg` (of `len` payload bytes).
fn next_seq(seg: &Seg, len: usize) -> u32 {
    if seg.l.proto == PROTO_UDP {
        0
    } else {
        seg.seq.wrapping_add(len as u32)
    }
}

/// The IPv4 ID of the segment after `seg`.
fn next_id(seg: &Seg) -> u16 {
    if seg.l.ipv6 {
        0
    } else {
        seg.id.wrapping_add(1)
    }
}

/// The IPv4 ID of a frame (0 for IPv6).
fn ip_id(frame: &[u8], l: &Layers) -> u16 {
    if l.ipv6 { 0 } else { get_u16(frame, l.l3 + 4) }
}

/// The IP checks a frame must pass to join a run: not an IP fragment, no
/// IPv4 options or IPv6 extension headers, lengths that match the frame,
/// and a right IPv4 header checksum.
fn plain_ip(frame: &[u8], proto: u8) -> Option<Layers> {
    let l = parse_l3(frame).ok()?;
    if l.proto != proto {
        return None;
    }
    if l.ipv6 {
        if usize::from(get_u16(frame, l.l3 + 4)) != frame.len() - l.l4 {
            return None;
        }
    } else {
        let frag = get_u16(frame, l.l3 + 6);
        // The header checksum too: the kernel recomputes it for each
        // segment it cuts, so a wrong one must not be carried into a run.
        if l.l4 - l.l3 != 20
            || frag & 0x3fff != 0
            || usize::from(get_u16(frame, l.l3 + 2)) != frame.len() - l.l3
            || csum_fold(csum_add(0, &frame[l.l3..l.l4])) != 0xffff
        {
            return None;
        }
    }
    Some(l)
}

/// Whether the TCP or UDP checksum of `frame` is right. The kernel does not
/// check the checksums of the segments it cuts from a super-frame (they
/// come out recomputed), so, as in its own GRO, a frame joins a run only
/// with a right checksum; a wrong one reaches the kernel alone, untouched,
/// and is dropped there as it would be without the tunnel.
fn l4_csum_ok(frame: &[u8], l: &Layers) -> bool {
    let l4_len = frame.len() - l.l4;
    csum_fold(csum_add(pseudo_sum(frame, l, l4_len), &frame[l.l4..])) == 0xffff
}

/// A frame that may join a TCP run: payload, only ACK (and PSH), and a
/// right checksum.
fn tcp_segment(frame: &[u8]) -> Option<Seg> {
    let l = plain_ip(frame, PROTO_TCP)?;
    let doff = usize::from(*frame.get(l.l4 + 12)? >> 4) * 4;
    let hl = l.l4 + doff;
    let flags = *frame.get(l.l4 + 13)?;
    if doff < 20 || frame.len() <= hl || flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 {
        return None;
    }
    if !l4_csum_ok(frame, &l) {
        return None;
    }
    let seq = u32::from_be_bytes([
        frame[l.l4 + 4],
        frame[l.l4 + 5],
        frame[l.l4 + 6],
        frame[l.l4 + 7],
    ]);
    Some(Seg {
        l,
        hl,
        seq,
        id: ip_id(frame, &l),
        flags,
    })
}

/// A frame that may join a UDP run: payload, a UDP length that matches,
/// and a checksum that is present and right.
fn udp_datagram(frame: &[u8]) -> Option<Seg> {
    let l = plain_ip(frame, PROTO_UDP)?;
    let hl = l.l4 + 8;
    let l4_len = frame.len().checked_sub(l.l4)?;
    if frame.len() <= hl
        || usize::from(get_u16(frame, l.l4 + 4)) != l4_len
        || get_u16(frame, l.l4 + 6) == 0
        || !l4_csum_ok(frame, &l)
    {
        return None;
    }
    Some(Seg {
        l,
        hl,
        seq: 0,
        id: ip_id(frame, &l),
        flags: 0,
    })
}

/// Same flow and same header content, except what differs per segment:
/// IPv4 total length, ID and checksum; IPv6 payload length; TCP sequence,
/// PSH and checksum; UDP length and checksum.
fn same_flow_headers(a: &[u8], b: &[u8], l: &Layers) -> bool {
    let udp = l.proto == PROTO_UDP;
    let skip = |i: usize| {
        let ip = if l.ipv6 {
            (l.l3 + 4..l.l3 + 6).contains(&i)
        } else {
            (l.l3 + 2..l.l3 + 6).contains(&i) || (l.l3 + 10..l.l3 + 12).contains(&i)
        };
        let l4 = if udp {
            (l.l4 + 4..l.l4 + 8).contains(&i)
        } else {
            (l.l4 + 4..l.l4 + 8).contains(&i)
                || i == l.l4 + 13
                || (l.l4 + 16..l.l4 + 18).contains(&i)
        };
        ip || l4
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .enumerate()
            .all(|(i, (x, y))| x == y || skip(i))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Segments with `segment` and returns the frames.
    pub fn split(hdr: &VnetHdr, f: &[u8], max: usize) -> Vec<Vec<u8>> {
        run(hdr, f, max)
    }

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
        let c = ref_csum(&[&f[l3..l3 + 20]]);
        set_u16(f, l3 + 10, c);
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

    fn tcp_hdr(flags: u8, options: &[u8]) -> Vec<u8> {
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

    pub fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// A super-frame as the TAP gives it: IPv4 total length of the whole,
    /// pseudo-header sum (not inverted) in the TCP checksum field.
    fn tcp4_super(vlan: bool, flags: u8, options: &[u8], data: &[u8]) -> (VnetHdr, Vec<u8>) {
        let mut f = eth(ETHERTYPE_IPV4, vlan);
        let l3 = f.len();
        let tcp = tcp_hdr(flags, options);
        ipv4_hdr(&mut f, 20 + tcp.len() + data.len(), 0x1234, PROTO_TCP);
        let l4 = f.len();
        f.extend_from_slice(&tcp);
        f.extend_from_slice(data);
        let ps = csum_fold(csum_add(0, &f[l3 + 12..l3 + 20]) + 6 + (tcp.len() + data.len()) as u64);
        set_u16(&mut f, l4 + 16, ps);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: (l4 + tcp.len()) as u16,
            gso_size: 1000,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        (hdr, f)
    }

    fn tcp6_super(flags: u8, data: &[u8]) -> (VnetHdr, Vec<u8>) {
        let mut f = eth(ETHERTYPE_IPV6, false);
        let l3 = f.len();
        let tcp = tcp_hdr(flags, &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        let plen = tcp.len() + data.len();
        ipv6_hdr(&mut f, plen, PROTO_TCP);
        let l4 = f.len();
        f.extend_from_slice(&tcp);
        f.extend_from_slice(data);
        let ps = csum_fold(csum_add(0, &f[l3 + 8..l3 + 40]) + 6 + plen as u64);
        set_u16(&mut f, l4 + 16, ps);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6,
            hdr_len: 0,
            gso_size: 1200,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        (hdr, f)
    }

    /// Checks one output segment against the reference checksum and returns
    /// (seq, flags, payload).
    fn check_tcp(seg: &[u8], v6: bool) -> (u32, u8, Vec<u8>) {
        let l = parse_l3(seg).unwrap();
        let (src_dst, l4_len) = if v6 {
            assert_eq!(get_u16(seg, l.l3 + 4) as usize, seg.len() - l.l4);
            (&seg[l.l3 + 8..l.l3 + 40], seg.len() - l.l4)
        } else {
            assert_eq!(
                get_u16(seg, l.l3 + 2) as usize,
                seg.len() - l.l3,
                "IPv4 total length"
            );
            assert_eq!(ref_csum(&[&seg[l.l3..l.l4]]), 0, "IPv4 header checksum");
            (&seg[l.l3 + 12..l.l3 + 20], seg.len() - l.l4)
        };
        let len = (l4_len as u32).to_be_bytes();
        assert_eq!(
            ref_csum(&[src_dst, &[0, 6], &len, &seg[l.l4..]]),
            0,
            "TCP checksum"
        );
        let doff = usize::from(seg[l.l4 + 12] >> 4) * 4;
        let seq = u32::from_be_bytes(seg[l.l4 + 4..l.l4 + 8].try_into().unwrap());
        (seq, seg[l.l4 + 13], seg[l.l4 + doff..].to_vec())
    }

    /// Segments with at most `max` payload bytes per segment.
    fn run(hdr: &VnetHdr, f: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut out = vec![0u8; 200_000];
        let mut spans = Vec::new();
        let hl = parse_l3(f)
            .map(|l| l.l4 + usize::from(f[l.l4 + 12] >> 4) * 4)
            .unwrap_or(0);
        segment(hdr, f, max + hl, 40, &mut out, &mut spans).unwrap();
        spans
            .iter()
            .map(|s| out[s.start + 40..s.end].to_vec())
            .collect()
    }

    #[test]
    fn vnet_hdr_roundtrip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 0x81,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0u8; 10];
        h.write(&mut b).unwrap();
        assert_eq!(b, [1, 0x81, 66, 0, 0xa8, 5, 34, 0, 16, 0]);
        assert_eq!(VnetHdr::parse(&b), Ok(h));
        assert_eq!(VnetHdr::parse(&b[..9]), Err(OffloadError::Truncated));
    }

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

    fn tcp4_case(vlan: bool, options: &[u8], n: usize, flags: u8, max: usize) {
        let data = payload(n);
        let (hdr, f) = tcp4_super(vlan, flags, options, &data);
        let segs = run(&hdr, &f, max);
        let mss = max.min(1000);
        assert_eq!(segs.len(), n.div_ceil(mss).max(1));
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let (seq, fl, p) = check_tcp(s, false);
            assert_eq!(seq, 0x1020_3040u32.wrapping_add((i * mss) as u32));
            let last = i + 1 == segs.len();
            assert_eq!(
                fl & (TCP_FIN | TCP_PSH) != 0,
                last && flags & (TCP_FIN | TCP_PSH) != 0,
                "seg {i} flags {fl:#x}"
            );
            assert_eq!(fl & TCP_CWR != 0, i == 0 && flags & TCP_CWR != 0);
            let l = parse_l3(s).unwrap();
            assert_eq!(
                get_u16(s, l.l3 + 4),
                0x1234u16.wrapping_add(i as u16),
                "IP ID"
            );
            assert!(p.len() <= mss);
            joined.extend_from_slice(&p);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn tcp4_segments() {
        tcp4_case(false, &[], 10_000, 0x18, 1400); // even split
        tcp4_case(false, &[], 10_001, 0x19 | TCP_CWR, 1400); // odd last, FIN+PSH+CWR
        tcp4_case(
            true,
            &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            3333,
            0x10,
            1400,
        ); // VLAN, options
        tcp4_case(false, &[], 999, 0x18, 1400); // one segment
        tcp4_case(false, &[], 5000, 0x10, 700); // MTU smaller than gso_size
    }

    #[test]
    fn tcp6_segments() {
        let data = payload(5000);
        let (hdr, f) = tcp6_super(0x18, &data);
        let segs = run(&hdr, &f, 1400);
        assert_eq!(segs.len(), 5);
        let mut joined = Vec::new();
        for s in &segs {
            joined.extend(check_tcp(s, true).2);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn non_gso_needs_csum_completed() {
        let data = payload(101);
        let (mut hdr, f) = tcp4_super(false, 0x18, &[], &data);
        hdr.gso_type = GSO_NONE;
        let segs = run(&hdr, &f, 1400);
        assert_eq!(segs.len(), 1);
        assert_eq!(check_tcp(&segs[0], false).2, data);
        // Without NEEDS_CSUM the frame passes untouched.
        hdr.flags = 0;
        assert_eq!(run(&hdr, &f, 1400), vec![f.clone()]);
    }

    #[test]
    fn rejects_what_it_cannot_segment() {
        let (mut hdr, f) = tcp4_super(false, 0x10, &[], &payload(3000));
        let mut out = vec![0u8; 100_000];
        let mut spans = Vec::new();
        hdr.gso_type = GSO_TCPV6;
        assert_eq!(
            segment(&hdr, &f, 1400, 40, &mut out, &mut spans),
            Err(OffloadError::Unsupported)
        );
        hdr.gso_type = GSO_TCPV4;
        assert_eq!(
            segment(&hdr, &f[..40], 1400, 40, &mut out, &mut spans),
            Err(OffloadError::Truncated)
        );
        assert_eq!(
            segment(&hdr, &f, 1400, 40, &mut out[..2000], &mut spans),
            Err(OffloadError::NoRoom)
        );
        hdr.gso_type = GSO_NONE;
        hdr.csum_start = 60_000;
        assert_eq!(
            segment(&hdr, &f, 1400, 40, &mut out, &mut spans),
            Err(OffloadError::BadCsum)
        );
    }
}

#[cfg(test)]
mod coalesce_tests {
    use super::tests::{eth, ipv4_hdr, ipv6_hdr, payload, ref_csum, split, super_frame};
    use super::*;

    /// Recomputes the TCP (`at` 16) or UDP (`at` 6) checksum after an edit.
    fn fix_l4_csum(f: &mut [u8], at: usize) {
        let l = parse_l3(f).unwrap();
        set_u16(f, l.l4 + at, 0);
        let l4_len = f.len() - l.l4;
        let c = !csum_fold(csum_add(pseudo_sum(f, &l, l4_len), &f[l.l4..]));
        set_u16(f, l.l4 + at, c);
    }

    fn collect(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut c = Coalescer::new();
        let mut out = Vec::new();
        for f in frames {
            c.push(f, &mut |b| out.push(b.to_vec()));
        }
        c.flush(&mut |b| out.push(b.to_vec()));
        out
    }

    #[test]
    fn run_coalesces_and_resegments_identically() {
        for v6 in [false, true] {
            let (hdr, sup) = super_frame(v6, 5000, 0x18);
            let segs = split(&hdr, &sup, 1400);
            assert_eq!(segs.len(), 5);
            let out = collect(&segs);
            assert_eq!(out.len(), 1, "v6={v6}");
            let h = VnetHdr::parse(&out[0]).unwrap();
            assert_eq!(h.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
            assert_eq!(
                (h.flags, h.gso_size, h.csum_offset),
                (F_NEEDS_CSUM, 1000, 16)
            );
            // Segmenting the coalesced frame again gives the very same segments.
            assert_eq!(split(&h, &out[0][VNET_HDR_LEN..], 1400), segs, "v6={v6}");
        }
    }

    #[test]
    fn what_must_not_be_coalesced() {
        let (hdr, sup) = super_frame(false, 4000, 0x10);
        let segs = split(&hdr, &sup, 1400);
        // A gap: segment 2 missing.
        let gap = vec![segs[0].clone(), segs[2].clone(), segs[3].clone()];
        assert_eq!(collect(&gap).len(), 2);
        // Reordered.
        assert_eq!(collect(&[segs[1].clone(), segs[0].clone()]).len(), 2);
        // FIN, RST, URG, SYN never join.
        for flag in [0x01u8, 0x04, 0x20, 0x02] {
            let mut s = segs.clone();
            let l = parse_l3(&s[1]).unwrap();
            s[1][l.l4 + 13] |= flag;
            fix_l4_csum(&mut s[1], 16);
            assert!(collect(&s).len() >= 3, "flag {flag:#x}");
        }
        // Another flow (other source port) interleaved.
        let mut other = segs[1].clone();
        let l = parse_l3(&other).unwrap();
        other[l.l4] ^= 1;
        fix_l4_csum(&mut other, 16);
        assert_eq!(collect(&[segs[0].clone(), other, segs[1].clone()]).len(), 3);
        // A wrong checksum: that segment reaches the kernel alone, untouched.
        let mut s = segs.clone();
        s[1][l.l4 + 30] ^= 0x10;
        let out = collect(&s);
        assert_eq!(out.len(), 3);
        assert_eq!(out[1][..VNET_HDR_LEN], [0u8; VNET_HDR_LEN]);
        assert_eq!(&out[1][VNET_HDR_LEN..], &s[1][..]);
        // PSH closes a run: what follows starts a new one.
        let mut s = segs.clone();
        s[1][l.l4 + 13] |= TCP_PSH;
        fix_l4_csum(&mut s[1], 16);
        let out = collect(&s);
        assert_eq!(out.len(), 2);
        // A lone segment passes through untouched, with an empty header.
        let out = collect(&segs[..1]);
        assert_eq!(out[0][..VNET_HDR_LEN], [0u8; VNET_HDR_LEN]);
        assert_eq!(&out[0][VNET_HDR_LEN..], &segs[0][..]);
        // Non-TCP passes through.
        let arp = vec![0xffu8; 60];
        assert_eq!(
            collect(std::slice::from_ref(&arp)),
            vec![[vec![0u8; VNET_HDR_LEN], arp].concat()]
        );
    }

    /// A USO super-frame as an application's UDP GSO send reaches the TAP:
    /// `data` cut every `gso` bytes, IPv4 ID 0xfff0 (so runs wrap), the
    /// pseudo-header sum in the checksum field.
    fn udp_super(v6: bool, vlan: bool, data: &[u8], gso: u16) -> (VnetHdr, Vec<u8>) {
        let mut f = eth(if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 }, vlan);
        let l4_len = 8 + data.len();
        if v6 {
            ipv6_hdr(&mut f, l4_len, PROTO_UDP);
        } else {
            ipv4_hdr(&mut f, 20 + l4_len, 0xfff0, PROTO_UDP);
        }
        let l4 = f.len();
        f.extend_from_slice(&[
            0x9c,
            0x40,
            0x14,
            0x51,
            (l4_len >> 8) as u8,
            l4_len as u8,
            0,
            0,
        ]);
        f.extend_from_slice(data);
        let l = parse_l3(&f).unwrap();
        let ps = csum_fold(pseudo_sum(&f, &l, l4_len));
        set_u16(&mut f, l4 + 6, ps);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: (l4 + 8) as u16,
            gso_size: gso,
            csum_start: l4 as u16,
            csum_offset: 6,
        };
        (hdr, f)
    }

    /// The datagrams an application's GSO send of `n` bytes in `gso`-byte
    /// pieces puts on the wire, each with its own complete checksum.
    fn udp_datagrams(v6: bool, vlan: bool, n: usize, gso: u16) -> Vec<Vec<u8>> {
        let (hdr, f) = udp_super(v6, vlan, &payload(n), gso);
        let mut out = vec![0u8; 400_000];
        let mut spans = Vec::new();
        segment(&hdr, &f, 1514, 0, &mut out, &mut spans).unwrap();
        spans.iter().map(|s| out[s.clone()].to_vec()).collect()
    }

    /// Each datagram checks against the reference checksum.
    fn udp_checks(d: &[u8]) -> bool {
        let l = parse_l3(d).unwrap();
        let len = ((d.len() - l.l4) as u32).to_be_bytes();
        let addrs = if l.ipv6 {
            &d[l.l3 + 8..l.l3 + 40]
        } else {
            &d[l.l3 + 12..l.l3 + 20]
        };
        ref_csum(&[addrs, &[0, 17], &len, &d[l.l4..]]) == 0
    }

    #[test]
    fn udp_run_coalesces_and_resegments_identically() {
        for (v6, vlan) in [(false, false), (true, false), (false, true)] {
            // 20 datagrams of 100 bytes and a shorter last one.
            let dgs = udp_datagrams(v6, vlan, 2030, 100);
            assert_eq!(dgs.len(), 21);
            assert!(dgs.iter().all(|d| udp_checks(d)));
            let out = collect(&dgs);
            assert_eq!(out.len(), 1, "v6={v6} vlan={vlan}");
            let h = VnetHdr::parse(&out[0]).unwrap();
            assert_eq!(
                (h.flags, h.gso_type, h.gso_size, h.csum_offset),
                (F_NEEDS_CSUM, GSO_UDP_L4, 100, 6)
            );
            let f = &out[0][VNET_HDR_LEN..];
            let l = parse_l3(f).unwrap();
            assert_eq!(usize::from(h.csum_start), l.l4);
            assert_eq!(usize::from(h.hdr_len), l.l4 + 8);
            // What the kernel expects to cut from: whole lengths and the
            // pseudo-header sum over the whole.
            let l4_len = f.len() - l.l4;
            assert_eq!(usize::from(get_u16(f, l.l4 + 4)), l4_len);
            assert_eq!(get_u16(f, l.l4 + 6), csum_fold(pseudo_sum(f, &l, l4_len)));
            if !l.ipv6 {
                assert_eq!(ref_csum(&[&f[l.l3..l.l4]]), 0, "IPv4 header checksum");
            }
            // Cutting it again gives the very same datagrams, IDs included.
            let mut again = vec![0u8; 400_000];
            let mut spans = Vec::new();
            segment(&h, f, 1514, 0, &mut again, &mut spans).unwrap();
            let again: Vec<Vec<u8>> = spans.iter().map(|s| again[s.clone()].to_vec()).collect();
            assert_eq!(again, dgs, "v6={v6} vlan={vlan}");
        }
    }

    #[test]
    fn udp_coalescing_can_be_off() {
        let dgs = udp_datagrams(false, false, 1000, 100);
        let mut c = Coalescer::new().with_udp(false);
        let mut out = Vec::new();
        for f in &dgs {
            c.push(f, &mut |b| out.push(b.to_vec()));
        }
        c.flush(&mut |b| out.push(b.to_vec()));
        let alone: Vec<Vec<u8>> = dgs
            .iter()
            .map(|d| [&[0u8; VNET_HDR_LEN][..], d].concat())
            .collect();
        assert_eq!(out, alone);
        // TCP still coalesces.
        let (hdr, sup) = super_frame(false, 5000, 0x10);
        let segs = split(&hdr, &sup, 1400);
        let mut c = Coalescer::new().with_udp(false);
        let mut n = 0;
        for f in &segs {
            c.push(f, &mut |_| n += 1);
        }
        c.flush(&mut |_| n += 1);
        assert_eq!(n, 1);
    }

    #[test]
    fn udp_runs_stop_at_64_datagrams() {
        let dgs = udp_datagrams(false, false, 100 * 100, 100);
        let out = collect(&dgs);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len() - VNET_HDR_LEN, 14 + 20 + 8 + 64 * 100);
        assert_eq!(out[1].len() - VNET_HDR_LEN, 14 + 20 + 8 + 36 * 100);
    }

    #[test]
    fn udp_what_must_not_be_coalesced() {
        let dgs = udp_datagrams(false, false, 1000, 100);
        assert_eq!(collect(&dgs).len(), 1);
        let l = parse_l3(&dgs[0]).unwrap();
        let alone = |out: &[Vec<u8>], d: &[u8]| {
            out.iter()
                .any(|o| o[..VNET_HDR_LEN] == [0u8; VNET_HDR_LEN] && &o[VNET_HDR_LEN..] == d)
        };

        // A wrong checksum reaches the kernel alone, untouched, to be dropped there.
        let mut s = dgs.clone();
        s[4][l.l4 + 8] ^= 0x40;
        assert!(!udp_checks(&s[4]));
        let out = collect(&s);
        assert_eq!(out.len(), 3);
        assert!(alone(&out, &s[4]));

        // No checksum (IPv4 zero) is not vouched for either.
        let mut s = dgs.clone();
        set_u16(&mut s[4], l.l4 + 6, 0);
        let out = collect(&s);
        assert_eq!(out.len(), 3);
        assert!(alone(&out, &s[4]));

        // IPv4 IDs that do not follow on: the kernel would renumber them.
        let mut s = dgs.clone();
        for (i, d) in s.iter_mut().enumerate() {
            set_u16(d, l.l3 + 4, (i as u16) * 2);
            set_u16(d, l.l3 + 10, 0);
            let c = ref_csum(&[&d[l.l3..l.l4]]);
            set_u16(d, l.l3 + 10, c);
        }
        assert_eq!(collect(&s).len(), s.len());

        // An IPv4 fragment (MF) never joins.
        let mut s = dgs.clone();
        s[4][l.l3 + 6] |= 0x20;
        assert_eq!(collect(&s).len(), 3);

        // Another flow (other destination port) in between.
        let mut other = dgs[1].clone();
        other[l.l4 + 3] ^= 1;
        fix_l4_csum(&mut other, 6);
        assert!(udp_checks(&other));
        assert_eq!(collect(&[dgs[0].clone(), other, dgs[1].clone()]).len(), 3);

        // A larger datagram after a run starts a new one; a shorter one ends it.
        let big = udp_datagrams(false, false, 200, 200);
        let mut s = dgs[..3].to_vec();
        s.push(big[0].clone());
        assert_eq!(collect(&s).len(), 2);
        let mut short = udp_datagrams(false, false, 50, 50).remove(0);
        set_u16(&mut short, l.l3 + 4, 0xfff3); // follows dgs[2]
        set_u16(&mut short, l.l3 + 10, 0);
        let c = ref_csum(&[&short[l.l3..l.l4]]);
        set_u16(&mut short, l.l3 + 10, c);
        let mut s = dgs[..3].to_vec();
        s.push(short);
        s.push(dgs[3].clone());
        let out = collect(&s);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len() - VNET_HDR_LEN, 14 + 20 + 8 + 3 * 100 + 50);
    }

    /// Every frame that goes in comes out exactly once, unchanged, in
    /// order: alone, or inside a super-frame that the kernel (here
    /// `segment`) cuts back into the very same bytes. Checked on shuffled,
    /// dropped, duplicated and bit-flipped mixes of TCP and UDP flows.
    #[test]
    fn anything_in_comes_out_identical() {
        let mut pool: Vec<Vec<Vec<u8>>> = Vec::new();
        for v6 in [false, true] {
            let (hdr, sup) = super_frame(v6, 6000, 0x18);
            pool.push(split(&hdr, &sup, 1400));
            pool.push(udp_datagrams(v6, false, 2000, 100));
        }
        pool.push(udp_datagrams(false, true, 700, 64));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let mut cut = vec![0u8; 400_000];
        let mut spans = Vec::new();
        let (mut supers, mut udp_supers) = (0, 0);
        for round in 0..5000 {
            // A few flows, interleaved in runs, with mishaps.
            let mut input: Vec<Vec<u8>> = Vec::new();
            for _ in 0..1 + rnd(4) {
                let flow = &pool[rnd(pool.len())];
                let from = rnd(flow.len());
                let to = (from + 1 + rnd(flow.len())).min(flow.len());
                input.extend(flow[from..to].iter().cloned());
            }
            for _ in 0..rnd(3) {
                match rnd(4) {
                    0 if input.len() > 1 => {
                        let n = input.len();
                        let i = rnd(n - 1);
                        input.swap(i, i + 1);
                    }
                    1 if input.len() > 1 => {
                        let n = input.len();
                        input.remove(rnd(n));
                    }
                    2 => {
                        let n = input.len();
                        let i = rnd(n);
                        input.insert(i, input[i].clone());
                    }
                    _ => {
                        let n = input.len();
                        let f = &mut input[rnd(n)];
                        let at = rnd(f.len());
                        f[at] ^= 1 << rnd(8);
                    }
                }
            }
            let out = collect(&input);
            let mut again = Vec::new();
            for o in &out {
                let h = VnetHdr::parse(o).unwrap();
                let f = &o[VNET_HDR_LEN..];
                if h.gso_type == GSO_NONE {
                    assert_eq!(h, VnetHdr::default(), "round {round}");
                    again.push(f.to_vec());
                    continue;
                }
                supers += 1;
                udp_supers += usize::from(h.gso_type == GSO_UDP_L4);
                segment(&h, f, 65_535, 0, &mut cut, &mut spans).unwrap();
                again.extend(spans.iter().map(|s| cut[s.clone()].to_vec()));
            }
            assert_eq!(again.len(), input.len(), "round {round}");
            for (i, (a, b)) in again.iter().zip(&input).enumerate() {
                let at = a.iter().zip(b).position(|(x, y)| x != y);
                assert!(
                    a == b,
                    "round {round}: frame {i} of {} changed at {at:?} (len {} vs {})",
                    input.len(),
                    a.len(),
                    b.len()
                );
            }
        }
        // The property was tested on real runs, not only on frames passed alone.
        assert!(
            supers > 5000 && udp_supers > 3000,
            "{supers} super-frames, {udp_supers} UDP"
        );
    }

    /// The fuzz harness on pseudo-random scripts: the same invariant as
    /// `cargo fuzz run coalesce`, without coverage guidance, on stable Rust.
    #[test]
    fn harness_random_scripts() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut supers = 0;
        for _ in 0..300 {
            // Mostly whole operations that start flows and continue them,
            // so that runs form; random bytes between them mutate.
            let mut script = Vec::new();
            for _ in 0..next() % 150 {
                let r = next();
                match r % 8 {
                    0..=3 => script.extend_from_slice(&[0x01, (r >> 8) as u8]),
                    4 => script.extend_from_slice(&[0x00, (r >> 8) as u8, 0, (r >> 16) as u8, 7]),
                    _ => script.push((r >> 8) as u8),
                }
            }
            supers += super::harness::run(&script);
        }
        // The invariant was checked on real runs, not only on lone frames.
        assert!(supers > 300, "only {supers} super-frames");
    }

    /// Inputs the fuzzer found, kept so they stay fixed.
    #[test]
    fn harness_regressions() {
        // Two TCP segments in sequence whose IPv4 IDs did not follow on
        // (0xbffe, then 0xffff, both checksums right): they were coalesced,
        // and the kernel's cut renumbered the second. TCP runs now need
        // consecutive IDs, like UDP runs.
        super::harness::run(&[
            0x00, 0x16, 0xa6, 0x00, 0x3d, 0x01, 0xe8, 0x6a, 0xfe, 0x00, 0x16, 0x00, 0xa6, 0xde,
        ]);
        // The harness's own (found by the fuzzer, written out by hand here):
        // a TCP frame whose data offset was set to 0, then continued with a
        // 1-byte segment, made the harness's "next segment" builder write
        // past the frame. taptun itself never takes such a frame into a run.
        super::harness::run(&[
            0x00, 0x04, 0x00, 0x00, 0x00, // a TCP/IPv4 flow, 1 payload byte
            0x07, 0x00, 0x00, 0x2e, 0x00, 0x00, // frame 0, byte 46 (data offset) := 0
            0x81, 0x00, 0x00, 0x00, // the next segment, 1 payload byte
        ]);
    }
}
