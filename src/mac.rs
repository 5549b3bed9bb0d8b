//! The TAP's MAC address: the same across restarts of one configuration
//! (so the peer's and the LAN's neighbour caches stay right), or the one
//! `--mac` names. Pure: the caller reads the machine id and namespace.
//!
//! Derived as systemd's `MACAddressPolicy=persistent` does: a keyed hash
//! of `/etc/machine-id` and the interface name, made unicast and locally
//! administered. taptun also hashes the network namespace's inode: the two
//! ends of a tunnel on one machine (the demo, the tests: two namespaces,
//! the same machine id, both `tap0`) must never share a MAC, and a
//! namespace keeps its inode while it exists (the host's own, where a
//! service runs, has the same one on every boot).

use hmac::{Hmac, KeyInit, Mac as _};
use sha2::Sha256;
use std::fmt;

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;

    /// `XX:XX:XX:XX:XX:XX` (or `-` between), a unicast address other than zero.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?}: expected a unicast MAC address such as 02:00:00:00:00:01");
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut b = [0u8; 6];
        for (o, p) in b.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if b[0] & 1 != 0 {
            return Err(format!(
                "{s:?}: a multicast address (the first byte is odd); expected a unicast MAC"
            ));
        }
        if b == [0; 6] {
            return Err(format!("{s:?}: the zero address; expected a unicast MAC"));
        }
        Ok(MacAddr(b))
    }
}

/// The persistent MAC for the TAP `name` on the machine `machine_id` in
/// the network namespace `netns` (its inode).
pub fn persistent(machine_id: &[u8], name: &str, netns: u64) -> MacAddr {
    // HMAC keys of any length are valid; the fallback cannot happen.
    let mut h = <Hmac<Sha256> as KeyInit>::new_from_slice(machine_id)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new_from_slice(b"").expect("empty key"));
    h.update(b"taptun tap mac v1\0");
    h.update(name.as_bytes());
    h.update(b"\0");
    h.update(&netns.to_be_bytes());
    let d = h.finalize().into_bytes();
    let mut b = [0u8; 6];
    b.copy_from_slice(&d[..6]);
    // Unicast, locally administered.
    b[0] = (b[0] & 0xfe) | 0x02;
    MacAddr(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_is_stable_distinct_unicast_local() {
        let id = b"3d1219c7c4c5404aaa1f6d2a48adfda4";
        let a = persistent(id, "tap0", 4026531992);
        assert_eq!(a, persistent(id, "tap0", 4026531992));
        assert_eq!(a.0[0] & 3, 2, "{a}");
        assert_ne!(a, persistent(id, "tap1", 4026531992));
        assert_ne!(a, persistent(id, "tap0", 4026532300), "two namespaces");
        assert_ne!(a, persistent(b"another machine", "tap0", 4026531992));
    }

    #[test]
    fn parse_mac() {
        let m: MacAddr = "02:AB:cd:00:00:01".parse().unwrap();
        assert_eq!(m.0, [2, 0xab, 0xcd, 0, 0, 1]);
        assert_eq!(m.to_string(), "02:ab:cd:00:00:01");
        assert_eq!("02-00-00-00-00-09".parse::<MacAddr>().unwrap().0[5], 9);
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "0g:00:00:00:00:01",
            "2:00:00:00:00:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(
            "01:00:5e:00:00:01"
                .parse::<MacAddr>()
                .unwrap_err()
                .contains("multicast")
        );
        assert!(
            "00:00:00:00:00:00"
                .parse::<MacAddr>()
                .unwrap_err()
                .contains("zero")
        );
    }
}
