//! Frames that announce the TAP to the peer's side: a gratuitous ARP for
//! each IPv4 address and an unsolicited neighbour advertisement (override
//! set) for each IPv6 one, so that hosts whose neighbour caches still name
//! an old MAC (after a restart with a new `--mac`, or a first start) reach
//! this side at once instead of after their entries expire. Pure.

use crate::mac::MacAddr;
use crate::offload::{csum_add, csum_fold};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A gratuitous ARP request: "who has `ip`? tell `ip`", from `mac`, broadcast.
pub fn garp(mac: MacAddr, ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    // Ethernet, IPv4, 6- and 4-byte addresses, request.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac.0);
    f[28..32].copy_from_slice(&ip.octets());
    // Target hardware address zero, target IP the sender's own.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// An unsolicited neighbour advertisement for `ip` with `mac` (override
/// set, solicited clear), to all nodes (ff02::1), hop limit 255.
pub fn unsolicited_na(mac: MacAddr, ip: Ipv6Addr) -> [u8; 86] {
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut f = [0u8; 86];
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    // IPv6: version 6, payload 32 bytes of ICMPv6, hop limit 255.
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes());
    f[20] = 58;
    f[21] = 255;
    f[22..38].copy_from_slice(&ip.octets());
    f[38..54].copy_from_slice(&dst.octets());
    // ICMPv6 type 136 (NA), code 0, checksum, flags: override.
    f[54] = 136;
    f[58] = 0x20;
    f[62..78].copy_from_slice(&ip.octets());
    // Option: target link-layer address (2), 1 unit of 8 bytes.
    f[78] = 2;
    f[79] = 1;
    f[80..86].copy_from_slice(&mac.0);
    let mut sum = csum_add(0, &f[22..54]);
    sum = csum_add(sum, &[0, 0, 0, 32, 0, 0, 0, 58]);
    sum = csum_add(sum, &f[54..86]);
    let c = !csum_fold(sum);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([2, 0x11, 0x22, 0x33, 0x44, 0x55]);

    #[test]
    fn garp_names_itself() {
        let f = garp(MAC, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &MAC.0);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[28..32], &[10, 1, 2, 3]);
        assert_eq!(&f[38..42], &[10, 1, 2, 3]);
        assert_eq!(&f[32..38], &[0; 6]);
    }

    #[test]
    fn na_checksum_verifies() {
        let ip: Ipv6Addr = "fd00::1".parse().unwrap();
        let f = unsolicited_na(MAC, ip);
        let mut sum = csum_add(0, &f[22..54]);
        sum = csum_add(sum, &[0, 0, 0, 32, 0, 0, 0, 58]);
        sum = csum_add(sum, &f[54..86]);
        assert_eq!(csum_fold(sum), 0xffff);
        assert_eq!(f[54], 136);
        assert_eq!(f[58] & 0xe0, 0x20, "override only");
        assert_eq!(&f[80..86], &MAC.0);
    }
}
