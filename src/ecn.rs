//! ECN across the tunnel, RFC 6040's normal mode, pure.
//!
//! Encapsulation copies the inner packet's ECN field into the outer IP
//! header of its datagram ([`of_frame`]: Ethernet, up to two VLAN tags,
//! then IPv4 or IPv6; anything else is Not-ECT), so that the underlay's
//! AQMs may mark it instead of dropping it. Decapsulation
//! ([`decapsulate`], the table of RFC 6040's Figure 4 in [`combine`])
//! carries what the underlay did back into the inner packet: an outer CE
//! marks an ECN-capable inner packet CE and drops a Not-ECT one (which
//! cannot be told about congestion any other way); an outer ECT(1) turns
//! an inner ECT(0) into ECT(1). The wire formats do not change: the ECN
//! lives in the outer IP header, set and read by the socket (`sys`).

use crate::offload::headers::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetFrame, Ipv4Packet, Ipv6Packet,
};

/// The two ECN bits of an IP header (RFC 3168).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Ecn {
    /// Not ECN-capable transport (00).
    #[default]
    NotEct = 0b00,
    /// ECN-capable transport, ECT(1) (01).
    Ect1 = 0b01,
    /// ECN-capable transport, ECT(0) (10).
    Ect0 = 0b10,
    /// Congestion experienced (11).
    Ce = 0b11,
}

impl Ecn {
    /// Every value, in the order of their bits.
    pub const ALL: [Ecn; 4] = [Ecn::NotEct, Ecn::Ect1, Ecn::Ect0, Ecn::Ce];

    /// The ECN field of a TOS or traffic-class byte (its low 2 bits).
    #[inline]
    pub fn from_tos(tos: u8) -> Ecn {
        Ecn::ALL[usize::from(tos & 0b11)]
    }

    /// The 2 bits (a TOS byte with DSCP 0).
    #[inline]
    pub fn bits(self) -> u8 {
        self as u8
    }
}

/// The ECN field of the IP packet in an Ethernet frame (behind up to two
/// VLAN tags): what a datagram carrying it gets as its outer ECN. A frame
/// that is not IPv4 or IPv6, or too short to hold its IP header, is
/// Not-ECT.
#[inline]
pub fn of_frame(frame: &[u8]) -> Ecn {
    let Ok((l3, ethertype)) = EthernetFrame::new_unchecked(frame).layout() else {
        return Ecn::NotEct;
    };
    let ip = frame.get(l3..).unwrap_or_default();
    let bits = match ethertype {
        ETHERTYPE_IPV4 => Ipv4Packet::new_checked(ip).map(|p| p.ecn()),
        ETHERTYPE_IPV6 => Ipv6Packet::new_checked(ip).map(|p| p.ecn()),
        _ => return Ecn::NotEct,
    };
    bits.map_or(Ecn::NotEct, Ecn::from_tos)
}

/// RFC 6040's Figure 4 (normal mode): the inner packet's ECN after
/// decapsulation from an `outer` header, or `None`: drop it (an outer CE
/// over a Not-ECT inner packet).
#[inline]
pub fn combine(outer: Ecn, inner: Ecn) -> Option<Ecn> {
    use Ecn::*;
    match (inner, outer) {
        (NotEct, Ce) => None,
        (NotEct, _) => Some(NotEct),
        (_, Ce) => Some(Ce),
        (Ect0, Ect1) => Some(Ect1),
        (inner, _) => Some(inner),
    }
}

/// An outer CE over a Not-ECT inner packet: RFC 6040 says drop it (the
/// `ce_not_ect` drop reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CeNotEct;

impl std::fmt::Display for CeNotEct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "congestion experienced on the underlay, but the inner packet is not ECN-capable",
        )
    }
}

impl std::error::Error for CeNotEct {}

/// Decapsulation: applies [`combine`] of the datagram's `outer` ECN to
/// the IP packet in `frame` (IPv4: its header checksum updated
/// incrementally; IPv6: its traffic class). `Err`: drop the frame. A
/// frame with no IP header (ARP, other EtherTypes, too short) has no
/// ECN field and passes unchanged, as in Linux's tunnels.
#[inline]
pub fn decapsulate(outer: Ecn, frame: &mut [u8]) -> Result<(), CeNotEct> {
    // Most datagrams: nothing to change, whatever the inner packet.
    if matches!(outer, Ecn::NotEct | Ecn::Ect0) {
        return Ok(());
    }
    let Ok((l3, ethertype)) = EthernetFrame::new_unchecked(&*frame).layout() else {
        return Ok(());
    };
    let Some(ip) = frame.get_mut(l3..) else {
        return Ok(());
    };
    match ethertype {
        ETHERTYPE_IPV4 => {
            let Ok(mut p) = Ipv4Packet::new_checked(ip) else {
                return Ok(());
            };
            let inner = Ecn::from_tos(p.ecn());
            let new = combine(outer, inner).ok_or(CeNotEct)?;
            if new != inner {
                p.set_ecn(new.bits());
            }
        }
        ETHERTYPE_IPV6 => {
            let Ok(mut p) = Ipv6Packet::new_checked(ip) else {
                return Ok(());
            };
            let inner = Ecn::from_tos(p.ecn());
            let new = combine(outer, inner).ok_or(CeNotEct)?;
            if new != inner {
                p.set_ecn(new.bits());
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::checksum::ipv4_checksum_ok;
    use crate::offload::headers::tcp_flags;
    use crate::offload::testutil::{XorShift, payload, tcp_frame, udp_frame};
    use Ecn::*;

    /// RFC 6040, Figure 4, row by row: the inner header as it arrives, then
    /// the result for an outer Not-ECT, ECT(0), ECT(1), CE (`None`: drop).
    const FIGURE_4: [(Ecn, [Option<Ecn>; 4]); 4] = [
        (NotEct, [Some(NotEct), Some(NotEct), Some(NotEct), None]),
        (Ect0, [Some(Ect0), Some(Ect0), Some(Ect1), Some(Ce)]),
        (Ect1, [Some(Ect1), Some(Ect1), Some(Ect1), Some(Ce)]),
        (Ce, [Some(Ce), Some(Ce), Some(Ce), Some(Ce)]),
    ];
    const OUTERS: [Ecn; 4] = [NotEct, Ect0, Ect1, Ce];

    #[test]
    fn combine_is_rfc_6040_figure_4() {
        for (inner, row) in FIGURE_4 {
            for (outer, want) in OUTERS.into_iter().zip(row) {
                assert_eq!(
                    combine(outer, inner),
                    want,
                    "inner {inner:?} outer {outer:?}"
                );
            }
        }
    }

    /// A frame of each kind with the inner ECN `e`.
    fn frames(e: Ecn) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for ipv6 in [false, true] {
            for vlan in [false, true] {
                let mut f = tcp_frame(ipv6, vlan, tcp_flags::ACK, &[], &payload(40));
                let l3 = if vlan { 18 } else { 14 };
                if ipv6 {
                    Ipv6Packet::new_unchecked(&mut f[l3..]).set_ecn(e.bits());
                } else {
                    Ipv4Packet::new_unchecked(&mut f[l3..]).set_ecn(e.bits());
                }
                v.push(f);
            }
        }
        v
    }

    #[test]
    fn of_frame_reads_ipv4_and_ipv6_behind_vlan_tags() {
        for e in Ecn::ALL {
            for f in frames(e) {
                assert_eq!(of_frame(&f), e);
            }
        }
        // DSCP bits are not ECN.
        let mut f = udp_frame(false, false, &payload(3));
        f[15] = 0xb8 | 0b01;
        assert_eq!(of_frame(&f), Ect1);
        let mut f = udp_frame(true, false, &payload(3));
        f[14] = 0x6b;
        f[15] = 0x80 | 0x20;
        assert_eq!(of_frame(&f), Ect0);
        // Not IP, or cut short: Not-ECT.
        let mut arp = udp_frame(false, false, &payload(3));
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(of_frame(&arp), NotEct);
        assert_eq!(of_frame(&frames(Ce)[0][..30]), NotEct);
        assert_eq!(of_frame(&[]), NotEct);
    }

    #[test]
    fn decapsulate_applies_figure_4_to_frames() {
        for (inner, row) in FIGURE_4 {
            for (outer, want) in OUTERS.into_iter().zip(row) {
                for f in frames(inner) {
                    let mut g = f.clone();
                    let r = decapsulate(outer, &mut g);
                    match want {
                        None => assert_eq!(r, Err(CeNotEct)),
                        Some(w) => {
                            assert_eq!(r, Ok(()));
                            assert_eq!(of_frame(&g), w, "{inner:?} under {outer:?}");
                            // Nothing but the ECN bits (and the checksum) moved.
                            let l3 = if f[12] == 0x81 { 18 } else { 14 };
                            let diff: Vec<usize> = (0..f.len()).filter(|&i| f[i] != g[i]).collect();
                            assert!(
                                diff.iter()
                                    .all(|&i| i == l3 + 1 || (l3 + 10..l3 + 12).contains(&i)),
                                "{diff:?}"
                            );
                        }
                    }
                }
            }
        }
        // No IP header: nothing to mark, nothing to drop.
        let mut arp = udp_frame(false, false, &payload(3));
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let before = arp.clone();
        assert_eq!(decapsulate(Ce, &mut arp), Ok(()));
        assert_eq!(arp, before);
        assert_eq!(decapsulate(Ce, &mut []), Ok(()));
    }

    /// Property: for any IPv4 header (any length, options, TOS, checksum
    /// right), marking keeps the checksum right; a wrong one stays wrong.
    #[test]
    fn ipv4_checksum_stays_valid() {
        let mut rng = XorShift(0x0ec0_6040_dead_beef);
        for _ in 0..20_000 {
            let ihl = 5 + (rng.next() % 11) as usize;
            let mut h = vec![0u8; ihl * 4];
            for b in h.iter_mut() {
                *b = rng.next() as u8;
            }
            h[0] = 0x40 | ihl as u8;
            let mut p = Ipv4Packet::new_unchecked(&mut h[..]);
            crate::offload::checksum::fill_ipv4_checksum(&mut p);
            let outer = Ecn::ALL[(rng.next() % 4) as usize];
            let inner = Ecn::from_tos(h[1]);
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            f.extend_from_slice(&h);
            let r = decapsulate(outer, &mut f);
            assert_eq!(r.is_err(), combine(outer, inner).is_none());
            let p = Ipv4Packet::new_checked(&f[14..]).unwrap();
            assert!(ipv4_checksum_ok(&p), "{h:02x?} under {outer:?}");
            assert_eq!(
                Some(Ecn::from_tos(p.ecn())),
                combine(outer, inner).or(Some(inner))
            );
            // Everything but the ECN bits and the checksum is as it was.
            assert_eq!(f[14], h[0]);
            assert_eq!(f[15] & !0b11, h[1] & !0b11);
            assert_eq!(f[16..24], h[2..10]);
            assert_eq!(f[26..], h[12..]);
            // A wrong checksum is not made right.
            let mut bad = f.clone();
            bad[24] ^= 0x10;
            let before = ipv4_checksum_ok(&Ipv4Packet::new_unchecked(&bad[14..]));
            Ipv4Packet::new_unchecked(&mut bad[14..])
                .set_ecn(Ecn::ALL[(rng.next() % 4) as usize].bits());
            assert_eq!(
                ipv4_checksum_ok(&Ipv4Packet::new_unchecked(&bad[14..])),
                before
            );
        }
    }
}
