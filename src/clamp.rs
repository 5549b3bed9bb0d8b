//! TCP MSS clamping, pure: lowers the MSS option of the TCP SYN and
//! SYN-ACK segments the tunnel carries, so that TCP across it never sends
//! segments that need IP fragments. No I/O; the engine calls
//! [`clamp_mss`] on each frame and counts the [`Clamp`] it returns.
//!
//! What is looked into: Ethernet with at most two VLAN tags (802.1Q
//! 0x8100, 802.1ad 0x88a8), then IPv4 (options allowed; a fragment other
//! than the first is left alone, as only the first carries the TCP header)
//! or IPv6 with TCP directly after the fixed header: IPv6 extension
//! headers are not followed, and such a frame is left alone. The TCP
//! checksum is updated incrementally (RFC 1624), so a frame whose checksum
//! was wrong stays exactly as wrong and is dropped by its receiver as it
//! would have been without the tunnel.

use crate::offload::headers::{PROTO_TCP, TcpPacket, parse_l3, tcp_flags};

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod harness;

/// What [`clamp_mss`] did to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    /// Not a TCP segment with SYN set whose header it could read (not IP,
    /// not TCP, a later IPv4 fragment, an IPv6 extension header, headers
    /// cut short, or no SYN): untouched.
    NotTcpSyn,
    /// A SYN whose option list is malformed (an option length below 2 or
    /// past the header): untouched, for the receiver to judge.
    Malformed,
    /// A SYN without an MSS option: untouched, as the default MSS its
    /// receiver then assumes (536, RFC 879) fits any tunnel.
    NoOption,
    /// A SYN whose MSS is already no larger than the maximum: untouched.
    Unchanged,
    /// The MSS was lowered from `from` to `to` (the maximum).
    Clamped {
        /// The MSS the sender announced.
        from: u16,
        /// The MSS the receiver now sees.
        to: u16,
    },
}

/// Most MSS options a TCP header holds: 40 bytes of options, 4 each.
const MAX_MSS_OPTIONS: usize = 10;

/// Lowers the MSS option of a TCP SYN or SYN-ACK in one complete Ethernet
/// frame (no virtio header) to `max_mss` if it announces more, and updates
/// the TCP checksum incrementally. Only the two bytes of each oversized
/// MSS value and the two checksum bytes can change; everything else, and
/// every frame that is not such a SYN, is left as it is. Never panics.
pub fn clamp_mss(frame: &mut [u8], max_mss: u16) -> Clamp {
    clamp(frame, Limit::Mss(max_mss))
}

/// The largest MSS a SYN may announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// This MSS (`--clamp-mss N`).
    Mss(u16),
    /// Whatever keeps a full segment's Ethernet frame within this many
    /// bytes (the room one unfragmented datagram leaves): for each SYN,
    /// less its own Ethernet, VLAN, IP and 20-byte TCP headers, so IPv4,
    /// IPv6 and tagged frames each get their own (`--clamp-mss auto`).
    Frame(usize),
}

impl Limit {
    /// The MSS for a SYN whose TCP header starts `l4` bytes into its frame.
    fn mss(self, l4: usize) -> u16 {
        match self {
            Limit::Mss(m) => m,
            Limit::Frame(room) => {
                let mss = room.saturating_sub(l4 + TcpPacket::<&[u8]>::MIN_HEADER_LEN);
                // Never below what every IPv4 host must accept (RFC 879).
                u16::try_from(mss).unwrap_or(u16::MAX).max(536)
            }
        }
    }
}

/// [`clamp_mss`] with the limit worked out per frame.
pub fn clamp(frame: &mut [u8], limit: Limit) -> Clamp {
    let Some(l4) = tcp_syn_offset(frame) else {
        return Clamp::NotTcpSyn;
    };
    let max_mss = limit.mss(l4);
    let tcp = TcpPacket::new_unchecked(&frame[l4..]);
    // Where the oversized MSS values are, found before anything is
    // written: a malformed list must be left whole.
    let mut found = [(0usize, 0u16); MAX_MSS_OPTIONS];
    let (mut n, mut any) = (0, false);
    for opt in tcp.options() {
        let Ok(opt) = opt else {
            return Clamp::Malformed;
        };
        if let Some(mss) = opt.mss() {
            any = true;
            if mss > max_mss && n < MAX_MSS_OPTIONS {
                found[n] = (opt.offset, mss);
                n += 1;
            }
        }
    }
    if n == 0 {
        return if any {
            Clamp::Unchanged
        } else {
            Clamp::NoOption
        };
    }
    let mut tcp = TcpPacket::new_unchecked(&mut frame[l4..]);
    let mut sum = tcp.checksum();
    for &(offset, mss) in &found[..n] {
        tcp.set_mss_option(offset, max_mss);
        // The value sits 2 bytes after the option's kind, 20 + offset
        // bytes into the header: an odd position adds its bytes to the
        // sum swapped.
        let odd = !(TcpPacket::<&[u8]>::MIN_HEADER_LEN + offset + 2).is_multiple_of(2);
        let (old, new) = if odd {
            (mss.swap_bytes(), max_mss.swap_bytes())
        } else {
            (mss, max_mss)
        };
        sum = update_checksum(sum, old, new);
    }
    tcp.set_checksum(sum);
    Clamp::Clamped {
        from: found[0].1,
        to: max_mss,
    }
}

/// RFC 1624, eqn. 3: the checksum after one 16-bit word of the summed
/// data changes from `old` to `new`, `HC' = ~(~HC + ~m + m')`.
fn update_checksum(hc: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Where the TCP header of a SYN (or SYN-ACK) starts, if the frame is one
/// whose whole TCP header lies inside the IP packet.
fn tcp_syn_offset(frame: &[u8]) -> Option<usize> {
    let l = parse_l3(frame).ok()?;
    if l.proto != PROTO_TCP {
        return None;
    }
    // What the IP header says follows its headers.
    let ip_payload = if l.ipv6 {
        usize::from(l.ipv6(frame).payload_len())
    } else {
        let ip = l.ipv4(frame);
        if ip.frag_offset() != 0 {
            return None;
        }
        usize::from(ip.total_len()).checked_sub(ip.header_len())?
    };
    let tcp = TcpPacket::new_checked(frame.get(l.l4..)?).ok()?;
    if tcp.flags() & tcp_flags::SYN == 0 || tcp.header_len() > ip_payload {
        return None;
    }
    Some(l.l4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_limit_per_header_shape() {
        // 1432 bytes of frame room (a 1500-MTU IPv4 underlay).
        let room = Limit::Frame(1500 - 28 - 40);
        for (v6, vlan, want) in [
            (false, false, 1378),
            (true, false, 1358),
            (false, true, 1374),
        ] {
            let mut f = harness::syn(v6, vlan, tcp_flags::SYN, &[2, 4, 0x05, 0xb4]);
            assert_eq!(
                super::clamp(&mut f, room),
                Clamp::Clamped {
                    from: 1460,
                    to: want
                },
                "v6 {v6} vlan {vlan}"
            );
        }
        // Never below 536, however small the room.
        let mut f = harness::syn(false, false, tcp_flags::SYN, &[2, 4, 0x05, 0xb4]);
        assert_eq!(
            super::clamp(&mut f, Limit::Frame(100)),
            Clamp::Clamped {
                from: 1460,
                to: 536
            }
        );
    }
    use crate::offload::headers::{
        Ipv4Packet,
        tcp_flags::{ACK, SYN},
    };
    use crate::offload::testutil::{XorShift, payload, ref_l4_csum, tcp_frame, udp_frame};

    const MSS_1460: [u8; 4] = [2, 4, 0x05, 0xb4];
    const SACK_OK: [u8; 2] = [4, 2];
    const TS: [u8; 10] = [8, 10, 0, 0, 0, 1, 0, 0, 0, 0];
    const WSCALE: [u8; 3] = [3, 3, 7];
    const NOP: u8 = 1;

    /// The MSS the frame's first MSS option announces.
    fn mss_of(f: &[u8]) -> Option<u16> {
        let l = parse_l3(f).unwrap();
        let tcp = TcpPacket::new_checked(&f[l.l4..]).unwrap();
        tcp.options().flatten().find_map(|o| o.mss())
    }

    /// Clamps to 1380 and checks the result, the checksum (from scratch)
    /// and that nothing else moved.
    fn clamp(mut f: Vec<u8>) -> (Clamp, Vec<u8>) {
        assert_eq!(ref_l4_csum(&f), 0, "built with a right checksum");
        let r = harness::check(&f, 1380);
        assert_eq!(clamp_mss(&mut f, 1380), r);
        assert_eq!(ref_l4_csum(&f), 0, "checksum right after {r:?}");
        (r, f)
    }

    fn opts(parts: &[&[u8]]) -> Vec<u8> {
        let mut o = parts.concat();
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
        o
    }

    #[test]
    fn syn_ipv4_mss_1460_is_clamped() {
        let (r, f) = clamp(tcp_frame(false, false, SYN, &MSS_1460, &[]));
        assert_eq!(
            r,
            Clamp::Clamped {
                from: 1460,
                to: 1380
            }
        );
        assert_eq!(mss_of(&f), Some(1380));
        // A SYN-ACK too.
        let (r, _) = clamp(tcp_frame(false, false, SYN | ACK, &MSS_1460, &[]));
        assert_eq!(
            r,
            Clamp::Clamped {
                from: 1460,
                to: 1380
            }
        );
    }

    #[test]
    fn ipv6_and_vlan() {
        for (v6, vlan) in [(true, false), (false, true), (true, true)] {
            let (r, f) = clamp(tcp_frame(v6, vlan, SYN, &MSS_1460, &[]));
            assert_eq!(
                r,
                Clamp::Clamped {
                    from: 1460,
                    to: 1380
                },
                "v6={v6} vlan={vlan}"
            );
            assert_eq!(mss_of(&f), Some(1380));
        }
        // QinQ: an 802.1ad tag before the 802.1Q one.
        let mut f = tcp_frame(false, true, SYN, &MSS_1460, &[]);
        f.splice(12..12, [0x88, 0xa8, 0, 9]);
        assert_eq!(
            clamp(f).0,
            Clamp::Clamped {
                from: 1460,
                to: 1380
            }
        );
    }

    #[test]
    fn what_is_left_alone() {
        let untouched = |f: Vec<u8>, want: Clamp| {
            let (r, g) = clamp(f.clone());
            assert_eq!(r, want);
            assert_eq!(g, f);
        };
        untouched(tcp_frame(false, false, SYN, &[], &[]), Clamp::NoOption);
        let small = [2, 4, 0x05, 0x00];
        untouched(tcp_frame(true, false, SYN, &small, &[]), Clamp::Unchanged);
        let exact = [2, 4, 0x05, 0x64]; // 1380
        untouched(tcp_frame(false, false, SYN, &exact, &[]), Clamp::Unchanged);
        untouched(
            tcp_frame(false, false, ACK, &MSS_1460, &payload(8)),
            Clamp::NotTcpSyn,
        );
        untouched(udp_frame(false, false, &MSS_1460), Clamp::NotTcpSyn);
        let junk = vec![0xff; 60];
        assert_eq!(clamp_on_copy(&junk), (Clamp::NotTcpSyn, junk.clone()));
        // A later IPv4 fragment: what looks like TCP there is payload.
        let mut f = tcp_frame(false, false, SYN, &MSS_1460, &[]);
        Ipv4Packet::new_unchecked(&mut f[14..]).set_frag_offset(185);
        untouched(f, Clamp::NotTcpSyn);
        // A first fragment (MF, offset 0) carries the TCP header: clamped.
        let mut f = tcp_frame(false, false, SYN, &MSS_1460, &payload(4));
        Ipv4Packet::new_unchecked(&mut f[14..]).set_more_frags(true);
        assert_eq!(
            clamp(f).0,
            Clamp::Clamped {
                from: 1460,
                to: 1380
            }
        );
        // Malformed option lists: a zero length, a length past the header.
        for bad in [
            opts(&[&[NOP, 5, 0], &MSS_1460]),
            opts(&[&MSS_1460, &[NOP, 8, 10, 0]]),
        ] {
            untouched(tcp_frame(false, false, SYN, &bad, &[]), Clamp::Malformed);
        }
        // An MSS option of the wrong length is not an MSS option.
        let odd = opts(&[&[2, 3, 0x05], &[NOP]]);
        untouched(tcp_frame(false, false, SYN, &odd, &[]), Clamp::NoOption);
        // Short frames of every length.
        let f = tcp_frame(false, true, SYN, &MSS_1460, &[]);
        for n in 0..f.len() {
            let (r, g) = clamp_on_copy(&f[..n]);
            assert_eq!(r, Clamp::NotTcpSyn, "{n} bytes");
            assert_eq!(g, &f[..n]);
        }
    }

    fn clamp_on_copy(f: &[u8]) -> (Clamp, Vec<u8>) {
        let mut g = f.to_vec();
        (clamp_mss(&mut g, 1380), g)
    }

    #[test]
    fn other_options_untouched_in_any_order() {
        let orders: [&[&[u8]]; 5] = [
            &[&MSS_1460, &SACK_OK, &TS, &[NOP], &WSCALE],
            &[&[NOP], &WSCALE, &MSS_1460, &SACK_OK, &TS],
            &[&SACK_OK, &[NOP], &MSS_1460, &TS, &WSCALE],
            &[&TS, &[NOP, NOP], &WSCALE, &[NOP], &MSS_1460],
            &[&[NOP], &MSS_1460, &[NOP], &WSCALE, &SACK_OK],
        ];
        for parts in orders {
            let o = opts(parts);
            let before = tcp_frame(false, false, SYN, &o, &[]);
            let (r, after) = clamp(before.clone());
            assert_eq!(
                r,
                Clamp::Clamped {
                    from: 1460,
                    to: 1380
                },
                "{o:?}"
            );
            let changed: Vec<usize> = (0..before.len())
                .filter(|&i| before[i] != after[i])
                .collect();
            assert!(changed.len() <= 4, "{changed:?}");
            assert_eq!(mss_of(&after), Some(1380));
        }
    }

    #[test]
    fn incremental_update_matches_rfc1624() {
        // RFC 1624 section 4: HC 0xdd2f, m 0x5555 → m' 0x3285 gives 0x0000.
        assert_eq!(update_checksum(0xdd2f, 0x5555, 0x3285), 0x0000);
        assert_eq!(update_checksum(0x1234, 0xabcd, 0xabcd), 0x1234);
    }

    #[test]
    fn a_wrong_checksum_stays_wrong() {
        let mut f = tcp_frame(false, false, SYN, &MSS_1460, &[]);
        let l = parse_l3(&f).unwrap();
        let c = l.tcp(&f).checksum();
        l.tcp_mut(&mut f).set_checksum(c ^ 0x0101);
        let before = ref_l4_csum(&f);
        assert_eq!(
            clamp_mss(&mut f, 1380),
            Clamp::Clamped {
                from: 1460,
                to: 1380
            }
        );
        assert_eq!(ref_l4_csum(&f), before, "off by exactly as much as before");
    }

    /// Random SYNs (random option lists, maxima, bit flips) and random
    /// bytes: no panic, length kept, only MSS and checksum bytes changed,
    /// a right checksum kept right.
    #[test]
    fn random_frames_keep_the_invariants() {
        let mut rng = XorShift(0x853c_49e6_748f_ea9b);
        let menu: [&[u8]; 7] = [
            &MSS_1460,
            &SACK_OK,
            &TS,
            &WSCALE,
            &[NOP],
            &[0],
            &[2, 4, 0xff, 0xff],
        ];
        let mut clamped = 0;
        for _ in 0..20_000 {
            let max = match rng.below(4) {
                0 => rng.next() as u16,
                _ => 1200 + rng.below(300) as u16,
            };
            let mut f = if rng.below(10) == 0 {
                (0..rng.below(120)).map(|_| rng.next() as u8).collect()
            } else {
                let mut o = Vec::new();
                for _ in 0..rng.below(6) {
                    o.extend_from_slice(menu[rng.below(menu.len())]);
                }
                if rng.below(4) == 0 {
                    o.push(rng.next() as u8);
                }
                let flags = SYN | (rng.next() as u8 & ACK);
                harness::syn(rng.below(2) == 1, rng.below(2) == 1, flags, &o)
            };
            for _ in 0..rng.below(3) {
                let at = rng.below(f.len().max(1));
                if let Some(b) = f.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            if matches!(harness::check(&f, max), Clamp::Clamped { .. }) {
                clamped += 1;
            }
        }
        assert!(clamped > 3000, "only {clamped} frames clamped");
    }

    #[test]
    fn harness_runs_fuzzer_shaped_inputs() {
        // Shape 0 (IPv4 SYN), max 1000, options MSS 1460 then NOP.
        assert_eq!(
            harness::run(&[0, 0xe8, 0x03, 5, 2, 4, 0x05, 0xb4, 1]),
            Clamp::Clamped {
                from: 1460,
                to: 1000
            }
        );
        harness::run(&[0x80, 1, 2, 3]);
        harness::run(&[]);
    }
}
