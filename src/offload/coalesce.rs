//! Receive side: GRO for the TAP. Frames that arrived one by one from the
//! peer (each already authenticated on its own) are merged, where the
//! kernel would cut the result back into the very same frames, into one
//! super-frame written to an offloading TAP once.

use super::checksum::{
    copy_csum, csum_fold, fill_ipv4_checksum, ipv4_checksum_ok, l4_checksum_with, pseudo_sum,
};
use super::headers::{
    Ipv4Packet, Layers, PROTO_TCP, PROTO_UDP, TcpPacket, UdpPacket, parse_l3, tcp_flags,
};
use super::vnet::{F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VNET_HDR_LEN, VnetHdr};
use std::fmt;

/// Largest super-frame handed to the TAP (IP total length is 16 bits).
const MAX_SUPER: usize = 65_000;
/// The buffer: a super-frame and room for one frame more (a larger lone
/// frame grows it).
const BUF_LEN: usize = VNET_HDR_LEN + MAX_SUPER + 1600;
/// Most datagrams in one UDP super-frame (the kernel's `UDP_MAX_SEGMENTS`).
const MAX_UDP_SEGS: usize = 64;

/// Receive-side GRO: merges consecutive in-order TCP segments of one flow,
/// and consecutive equal-sized UDP datagrams of one flow (each already
/// authenticated on its own), into one super-frame, to be written to an
/// offloading TAP once; the kernel cuts it back into the very same frames
/// (or hands it whole to a GRO-aware socket). Everything else passes
/// through as single frames. The output always starts with a [`VnetHdr`].
pub struct Coalescer {
    /// `VnetHdr ‖ frame` being built is `buf[..len]`. The buffer is zeroed
    /// once, at its full size, so that frames are copied (and summed)
    /// straight into place, and a frame appended is taken back by
    /// resetting `len`; what lies beyond `len` is never read.
    buf: Vec<u8>,
    len: usize,
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

/// A frame that may join a run, but for its TCP/UDP checksum: that is
/// verified as the frame is copied into the buffer.
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

impl fmt::Debug for Coalescer {
    /// The output being built, not the whole buffer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalescer")
            .field("pending", &&self.buf[..self.len])
            .field("run", &self.run)
            .field("udp", &self.udp)
            .finish()
    }
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
            buf: vec![0; BUF_LEN],
            len: 0,
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
        let first = match seg {
            Some(seg) => match self.try_append(frame, &seg) {
                Append::Joined => return,
                Append::Unjoinable => Some(seg),
                Append::BadChecksum => None,
            },
            None => None,
        };
        self.flush(emit);
        self.start();
        if let Some(seg) = first {
            // The first of a run, if its checksum is right: summed from L4
            // on as it is copied.
            self.append(&frame[..seg.l.l4]);
            let sum = self.append_csum(&frame[seg.l.l4..]);
            if l4_checksum_with(frame, &seg.l, seg.l.l4, sum) == 0 {
                let len = frame.len() - seg.hl;
                self.run = Some(Run {
                    l: seg.l,
                    hl: seg.hl,
                    mss: len,
                    next_seq: next_seq(&seg, len),
                    next_id: next_id(&seg),
                    segs: 1,
                    closed: seg.flags & tcp_flags::PSH != 0,
                });
                return;
            }
            // A wrong checksum: the buffer holds the frame, copied whole
            // and untouched, to go alone like any other.
        } else {
            self.append(frame);
        }
        emit(&self.buf[..self.len]);
        self.len = 0;
    }

    /// Appends the payload of `frame` to the run if it continues it and
    /// its TCP/UDP checksum is right. The checksum is verified while the
    /// payload is copied: the pseudo-header and L4 header are summed on
    /// their own, the payload on the way into the buffer, and a wrong total
    /// takes the payload back out (`len` as it was, the run unchanged).
    fn try_append(&mut self, frame: &[u8], seg: &Seg) -> Append {
        let Some(mut run) = self.run else {
            return Append::Unjoinable;
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
            || self.len - VNET_HDR_LEN + len > MAX_SUPER
            || !same_flow_headers(prev, &frame[..seg.hl], &run.l)
        {
            return Append::Unjoinable;
        }
        let before = self.len;
        let sum = self.append_csum(&frame[seg.hl..]);
        if l4_checksum_with(frame, &seg.l, seg.hl, sum) != 0 {
            self.len = before;
            return Append::BadChecksum;
        }
        run.next_seq = next_seq(seg, len);
        run.next_id = next_id(seg);
        run.segs += 1;
        // A short segment or PSH ends a run, as in the kernel's GRO.
        run.closed = len < run.mss || seg.flags & tcp_flags::PSH != 0;
        if seg.flags & tcp_flags::PSH != 0 {
            let mut tcp = run.l.tcp_mut(&mut self.buf[VNET_HDR_LEN..self.len]);
            tcp.set_flags(tcp.flags() | tcp_flags::PSH);
        }
        self.run = Some(run);
        Append::Joined
    }

    /// Starts the next output: an empty `VnetHdr`, no frame yet.
    fn start(&mut self) {
        self.buf[..VNET_HDR_LEN].fill(0);
        self.len = VNET_HDR_LEN;
    }

    /// The next `n` bytes of the output, grown into if need be.
    fn room(&mut self, n: usize) -> &mut [u8] {
        let at = self.len;
        self.len += n;
        if self.buf.len() < self.len {
            self.buf.resize(self.len, 0);
        }
        &mut self.buf[at..self.len]
    }

    fn append(&mut self, bytes: &[u8]) {
        self.room(bytes.len()).copy_from_slice(bytes);
    }

    /// Appends `bytes` and returns their one's-complement sum.
    fn append_csum(&mut self, bytes: &[u8]) -> u64 {
        copy_csum(self.room(bytes.len()), bytes, 0)
    }

    /// Emits what is pending (call at the end of each received batch).
    pub fn flush(&mut self, emit: &mut impl FnMut(&[u8])) {
        let Some(run) = self.run.take() else { return };
        if run.segs > 1 {
            let f = &mut self.buf[VNET_HDR_LEN..self.len];
            let l = run.l;
            let l4_len = f.len() - l.l4;
            if l.ipv6 {
                l.ipv6_mut(f).set_payload_len(l4_len as u16);
            } else {
                let total = f.len() - l.l3;
                let mut ip = l.ipv4_mut(f);
                ip.set_total_len(total as u16);
                fill_ipv4_checksum(&mut ip);
            }
            // The kernel completes the checksum: leave it the pseudo-header sum.
            let ps = csum_fold(pseudo_sum(f, &l, l4_len));
            let (gso_type, csum_offset) = if l.proto == PROTO_UDP {
                let mut udp = l.udp_mut(f);
                udp.set_length(l4_len as u16);
                udp.set_checksum(ps);
                (GSO_UDP_L4, UdpPacket::<&[u8]>::CHECKSUM_OFFSET)
            } else {
                l.tcp_mut(f).set_checksum(ps);
                let gso = if l.ipv6 { GSO_TCPV6 } else { GSO_TCPV4 };
                (gso, TcpPacket::<&[u8]>::CHECKSUM_OFFSET)
            };
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
        emit(&self.buf[..self.len]);
        self.len = 0;
    }
}

/// What [`Coalescer::try_append`] did with a frame.
enum Append {
    /// Its payload joined the run.
    Joined,
    /// It does not continue the run (or there is none): it may start one.
    Unjoinable,
    /// It would continue the run but its TCP/UDP checksum is wrong: it goes
    /// alone, untouched (see [`tcp_segment`]).
    BadChecksum,
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
    if l.ipv6 { 0 } else { l.ipv4(frame).ident() }
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
        if usize::from(l.ipv6(frame).payload_len()) != frame.len() - l.l4 {
            return None;
        }
    } else {
        let ip = l.ipv4(frame);
        // The header checksum too: the kernel recomputes it for each
        // segment it cuts, so a wrong one must not be carried into a run.
        if ip.header_len() != Ipv4Packet::<&[u8]>::MIN_HEADER_LEN
            || ip.is_fragment()
            || usize::from(ip.total_len()) != frame.len() - l.l3
            || !ipv4_checksum_ok(&ip)
        {
            return None;
        }
    }
    Some(l)
}

/// A frame that may join a TCP run: payload, only ACK (and PSH), and a
/// right checksum.
///
/// The checksum is not verified here but by the [`Coalescer`], as the
/// frame is copied into its buffer. The kernel does not check the
/// checksums of the segments it cuts from a super-frame (they come out
/// recomputed), so, as in its own GRO, a frame joins a run only with a
/// right checksum; a wrong one reaches the kernel alone, untouched, and is
/// dropped there as it would be without the tunnel.
fn tcp_segment(frame: &[u8]) -> Option<Seg> {
    let l = plain_ip(frame, PROTO_TCP)?;
    let tcp = TcpPacket::new_checked(frame.get(l.l4..)?).ok()?;
    let hl = l.l4 + tcp.header_len();
    let flags = tcp.flags();
    let ack = tcp_flags::ACK;
    if frame.len() <= hl || flags & !(ack | tcp_flags::PSH) != 0 || flags & ack == 0 {
        return None;
    }
    Some(Seg {
        l,
        hl,
        seq: tcp.seq_number(),
        id: ip_id(frame, &l),
        flags,
    })
}

/// A frame that may join a UDP run: payload, a UDP length that matches,
/// and a checksum that is present and right (verified as for
/// [`tcp_segment`]).
fn udp_datagram(frame: &[u8]) -> Option<Seg> {
    let l = plain_ip(frame, PROTO_UDP)?;
    let udp = UdpPacket::new_checked(frame.get(l.l4..)?).ok()?;
    let hl = l.l4 + UdpPacket::<&[u8]>::HEADER_LEN;
    if frame.len() <= hl || usize::from(udp.length()) != frame.len() - l.l4 || udp.checksum() == 0 {
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

/// Same flow and same header content (headers `a` and `b`, Ethernet to
/// L4, of frames with layers `l`), except what differs per segment: IPv4
/// total length, ID and checksum; IPv6 payload length; TCP sequence, flags
/// and checksum; UDP length and checksum.
fn same_flow_headers(a: &[u8], b: &[u8], l: &Layers) -> bool {
    if a.len() != b.len() || a[..l.l3] != b[..l.l3] {
        return false;
    }
    let ip = if l.ipv6 {
        l.ipv6(a).same_but_per_segment(&l.ipv6(b))
    } else {
        l.ipv4(a).same_but_per_segment(&l.ipv4(b))
    };
    ip && if l.proto == PROTO_UDP {
        l.udp(a).same_but_per_segment(&l.udp(b))
    } else {
        l.tcp(a).same_but_per_segment(&l.tcp(b))
    }
}

#[cfg(test)]
mod tests {
    use super::super::checksum::{fill_l4_checksum, l4_checksum_offset};
    use super::super::segment::segment;
    use super::super::testutil::{
        XorShift, cut, ref_csum, ref_l4_csum, split, super_frame, udp_datagrams,
    };
    use super::super::vnet::GSO_NONE;
    use super::*;

    fn collect(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut c = Coalescer::new();
        let mut out = Vec::new();
        for f in frames {
            c.push(f, &mut |b| out.push(b.to_vec()));
        }
        c.flush(&mut |b| out.push(b.to_vec()));
        out
    }

    /// Edits a frame's headers through its views, then makes its
    /// checksums right again.
    fn edit(f: &mut [u8], op: impl FnOnce(&Layers, &mut [u8])) {
        let l = parse_l3(f).unwrap();
        op(&l, f);
        if !l.ipv6 {
            fill_ipv4_checksum(&mut l.ipv4_mut(f));
        }
        fill_l4_checksum(f, &l);
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
        for flag in [
            tcp_flags::FIN,
            tcp_flags::RST,
            tcp_flags::URG,
            tcp_flags::SYN,
        ] {
            let mut s = segs.clone();
            edit(&mut s[1], |l, f| {
                let mut t = l.tcp_mut(f);
                t.set_flags(t.flags() | flag);
            });
            assert!(collect(&s).len() >= 3, "flag {flag:#x}");
        }
        // Another flow (other source port) interleaved.
        let mut other = segs[1].clone();
        edit(&mut other, |l, f| {
            let mut t = l.tcp_mut(f);
            t.set_src_port(t.src_port() ^ 0x100);
        });
        assert_eq!(collect(&[segs[0].clone(), other, segs[1].clone()]).len(), 3);
        // A wrong checksum: that segment reaches the kernel alone, untouched.
        let mut s = segs.clone();
        let l = parse_l3(&s[1]).unwrap();
        s[1][l.l4 + l.tcp(&segs[1]).header_len() + 10] ^= 0x10;
        let out = collect(&s);
        assert_eq!(out.len(), 3);
        assert_eq!(out[1][..VNET_HDR_LEN], [0u8; VNET_HDR_LEN]);
        assert_eq!(&out[1][VNET_HDR_LEN..], &s[1][..]);
        // PSH closes a run: what follows starts a new one.
        let mut s = segs.clone();
        edit(&mut s[1], |l, f| {
            let mut t = l.tcp_mut(f);
            t.set_flags(t.flags() | tcp_flags::PSH);
        });
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

    /// A frame with a wrong checksum, wherever it falls in a run (first,
    /// middle, last; the payload or the checksum field corrupted), goes
    /// alone and untouched, and leaves no trace in the super-frames around
    /// it: before it, what its predecessors alone make; after it, what its
    /// successors alone make (its sequence number or IPv4 ID started a new
    /// run). Its payload was copied into the buffer before the check failed.
    #[test]
    fn wrong_checksum_leaves_no_trace() {
        let mut flows = Vec::new();
        for v6 in [false, true] {
            let (hdr, sup) = super_frame(v6, 7000, 0x18);
            flows.push(split(&hdr, &sup, 1400));
            flows.push(udp_datagrams(v6, !v6, 1000, 100));
        }
        for frames in &flows {
            let l = parse_l3(&frames[0]).unwrap();
            let csum_at = l.l4 + l4_checksum_offset(l.proto);
            for k in 0..frames.len() {
                for at in [frames[k].len() - 1, csum_at] {
                    let mut s = frames.clone();
                    s[k][at] ^= 0x01;
                    assert_ne!(ref_l4_csum(&s[k]), 0);
                    let alone = [&[0u8; VNET_HDR_LEN][..], &s[k]].concat();
                    // Real runs on either side.
                    assert_eq!(collect(&frames[..k]).len(), usize::from(k > 0));
                    let want: Vec<Vec<u8>> = collect(&frames[..k])
                        .into_iter()
                        .chain([alone])
                        .chain(collect(&frames[k + 1..]))
                        .collect();
                    assert_eq!(collect(&s), want, "frame {k} of {}, byte {at}", s.len());
                }
            }
        }
    }

    #[test]
    fn udp_run_coalesces_and_resegments_identically() {
        for (v6, vlan) in [(false, false), (true, false), (false, true)] {
            // 20 datagrams of 100 bytes and a shorter last one.
            let dgs = udp_datagrams(v6, vlan, 2030, 100);
            assert_eq!(dgs.len(), 21);
            assert!(dgs.iter().all(|d| ref_l4_csum(d) == 0));
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
            assert_eq!(usize::from(l.udp(f).length()), l4_len);
            assert_eq!(l.udp(f).checksum(), csum_fold(pseudo_sum(f, &l, l4_len)));
            if !l.ipv6 {
                assert_eq!(ref_csum(&[l.ipv4(f).header()]), 0, "IPv4 header checksum");
            }
            // Cutting it again gives the very same datagrams, IDs included.
            assert_eq!(cut(&h, f, 1514), dgs, "v6={v6} vlan={vlan}");
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
        let data = l.l4 + UdpPacket::<&[u8]>::HEADER_LEN;
        let alone = |out: &[Vec<u8>], d: &[u8]| {
            out.iter()
                .any(|o| o[..VNET_HDR_LEN] == [0u8; VNET_HDR_LEN] && &o[VNET_HDR_LEN..] == d)
        };

        // A wrong checksum reaches the kernel alone, untouched, to be dropped there.
        let mut s = dgs.clone();
        s[4][data] ^= 0x40;
        assert_ne!(ref_l4_csum(&s[4]), 0);
        let out = collect(&s);
        assert_eq!(out.len(), 3);
        assert!(alone(&out, &s[4]));

        // No checksum (IPv4 zero) is not vouched for either.
        let mut s = dgs.clone();
        l.udp_mut(&mut s[4]).set_checksum(0);
        let out = collect(&s);
        assert_eq!(out.len(), 3);
        assert!(alone(&out, &s[4]));

        // IPv4 IDs that do not follow on: the kernel would renumber them.
        let mut s = dgs.clone();
        for (i, d) in s.iter_mut().enumerate() {
            let mut ip = l.ipv4_mut(d);
            ip.set_ident((i as u16) * 2);
            fill_ipv4_checksum(&mut ip);
        }
        assert_eq!(collect(&s).len(), s.len());

        // An IPv4 fragment (MF) never joins.
        let mut s = dgs.clone();
        l.ipv4_mut(&mut s[4]).set_more_frags(true);
        assert_eq!(collect(&s).len(), 3);

        // Another flow (other destination port) in between.
        let mut other = dgs[1].clone();
        edit(&mut other, |l, f| {
            let mut u = l.udp_mut(f);
            u.set_dst_port(u.dst_port() ^ 1);
        });
        assert_eq!(ref_l4_csum(&other), 0);
        assert_eq!(collect(&[dgs[0].clone(), other, dgs[1].clone()]).len(), 3);

        // A larger datagram after a run starts a new one; a shorter one ends it.
        let big = udp_datagrams(false, false, 200, 200);
        let mut s = dgs[..3].to_vec();
        s.push(big[0].clone());
        assert_eq!(collect(&s).len(), 2);
        let mut short = udp_datagrams(false, false, 50, 50).remove(0);
        let mut ip = l.ipv4_mut(&mut short);
        ip.set_ident(0xfff3); // follows dgs[2]
        fill_ipv4_checksum(&mut ip);
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
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut rnd = |n: usize| rng.below(n);
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
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut next = || rng.next();
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
            supers += super::super::harness::run(&script);
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
        super::super::harness::run(&[
            0x00, 0x16, 0xa6, 0x00, 0x3d, 0x01, 0xe8, 0x6a, 0xfe, 0x00, 0x16, 0x00, 0xa6, 0xde,
        ]);
        // The harness's own (found by the fuzzer, written out by hand here):
        // a TCP frame whose data offset was set to 0, then continued with a
        // 1-byte segment, made the harness's "next segment" builder write
        // past the frame. taptun itself never takes such a frame into a run.
        super::super::harness::run(&[
            0x00, 0x04, 0x00, 0x00, 0x00, // a TCP/IPv4 flow, 1 payload byte
            0x07, 0x00, 0x00, 0x2e, 0x00, 0x00, // frame 0, byte 46 (data offset) := 0
            0x81, 0x00, 0x00, 0x00, // the next segment, 1 payload byte
        ]);
    }
}
