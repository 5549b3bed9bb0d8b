//! The hub's TAPs in one interface group, to remove them all with one
//! rtnetlink request: the messages as bytes, built and parsed here
//! without I/O (`sys::RouteSocket` does the socket calls, `hub::tap` the
//! rest).
//!
//! Why: a TAP goes when its last fd closes, one `unregister_netdevice`
//! each, and each pays its own RCU wait under the RTNL lock (~18 ms): 200
//! spokes took 3.3–4.0 s to stop. `RTM_DELLINK` with `IFLA_GROUP` and no
//! index (`ip link delete group N`) removes every link of the group in
//! one `unregister_netdevice_many`: one wait for all.
//!
//! The group: [`group_of`] the hub's PID in a range of its own, checked
//! at start to hold no link, and checked again before the delete to hold
//! only this hub's TAPs (by index), so that the request cannot remove a
//! link the hub did not create.

use crate::netlink::{self, u32_at};
const IFINFOMSG_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_GROUP: u16 = 27;
const IFLA_EXT_MASK: u16 = 29;
/// `RTEXT_FILTER_SKIP_STATS`: a dump without the counters (smaller).
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

/// The first group of the hubs' range: 't' in the high byte, far from
/// the small numbers people give groups by hand (`/etc/iproute2/group`).
pub const GROUP_BASE: u32 = 0x7400_0000;

/// The group of the hub of PID `pid`: distinct for every live process of
/// a PID namespace (PIDs stay below 2^22, the kernel's `PID_MAX_LIMIT`).
pub fn group_of(pid: u32) -> u32 {
    GROUP_BASE | (pid & 0x00ff_ffff)
}

fn header(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set at the end
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
}

/// `struct ifinfomsg`: family, padding, type, index, flags, change.
fn ifinfomsg(buf: &mut Vec<u8>, index: u32) {
    buf.extend_from_slice(&[0, 0, 0, 0]);
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
}

fn attr_u32(buf: &mut Vec<u8>, kind: u16, v: u32) {
    buf.extend_from_slice(&8u16.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&v.to_ne_bytes());
}

fn finish(mut buf: Vec<u8>) -> Vec<u8> {
    let len = (buf.len() as u32).to_ne_bytes();
    buf[..4].copy_from_slice(&len);
    buf
}

/// `ip link set dev INDEX group GROUP`, acknowledged.
pub fn set_group_request(index: u32, group: u32, seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    header(&mut b, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    ifinfomsg(&mut b, index);
    attr_u32(&mut b, IFLA_GROUP, group);
    finish(b)
}

/// `ip link delete group GROUP`: every link of the group at once,
/// acknowledged.
pub fn delete_group_request(group: u32, seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    header(&mut b, RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    ifinfomsg(&mut b, 0);
    attr_u32(&mut b, IFLA_GROUP, group);
    finish(b)
}

/// `ip link show`: every link of the namespace, without counters.
pub fn dump_request(seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    header(&mut b, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq);
    ifinfomsg(&mut b, 0);
    attr_u32(&mut b, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    finish(b)
}

/// What one read of the socket held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// Links of a dump: (index, group).
    pub links: Vec<(u32, u32)>,
    /// The end: an acknowledgement or the end of a dump.
    pub done: bool,
}

/// A link message's index and group (0, the default, if it has none).
fn parse_link(body: &[u8]) -> Option<(u32, u32)> {
    let index = u32_at(body, 4)?;
    let mut group = 0;
    for attr in netlink::attrs(body, IFINFOMSG_LEN) {
        let (kind, data) = attr.ok()?;
        if kind == IFLA_GROUP {
            group = u32_at(data, 0)?;
        }
    }
    Some((index, group))
}

/// Parses one read: the link messages of sequence number `seq` (others
/// are skipped), the end, or the kernel's error as a positive errno.
/// `Err(0)` says the answer is unreadable.
pub fn parse(buf: &[u8], seq: u32) -> Result<Answer, i32> {
    let mut a = Answer::default();
    for m in netlink::messages(buf) {
        let m = m.map_err(|()| 0)?;
        if m.seq != seq {
            continue;
        }
        let body = m.body;
        match m.kind {
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).ok_or(0)? as i32;
                if errno != 0 {
                    return Err(-errno);
                }
                a.done = true;
            }
            NLMSG_DONE => a.done = true,
            RTM_NEWLINK => a.links.push(parse_link(body).ok_or(0)?),
            _ => {}
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The bytes `ip link set dev 7 group 0x74000123` and `ip link
    /// delete group 0x74000123` send (strace, little-endian).
    #[test]
    fn requests_as_ip_link_sends_them() {
        if cfg!(target_endian = "big") {
            return;
        }
        let g = group_of(0x123);
        assert_eq!(g, 0x7400_0123);
        assert_eq!(
            set_group_request(7, g, 5),
            hex("28000000 1000 0500 05000000 00000000
                 00000000 07000000 00000000 00000000
                 0800 1b00 23010074")
        );
        assert_eq!(
            delete_group_request(g, 6),
            hex("28000000 1100 0500 06000000 00000000
                 00000000 00000000 00000000 00000000
                 0800 1b00 23010074")
        );
        assert_eq!(
            dump_request(9),
            hex("28000000 1200 0103 09000000 00000000
                 00000000 00000000 00000000 00000000
                 0800 1d00 08000000")
        );
    }

    #[test]
    fn groups_stay_in_their_range() {
        assert_eq!(group_of(1), 0x7400_0001);
        assert_eq!(group_of(4_194_304), 0x7440_0000);
        assert_ne!(group_of(0), 0);
    }

    fn link(seq: u32, index: u32, group: Option<u32>) -> Vec<u8> {
        let mut b = Vec::new();
        header(&mut b, RTM_NEWLINK, 0x2, seq);
        ifinfomsg(&mut b, index);
        // IFLA_IFNAME "tt-a", then the group.
        b.extend_from_slice(&9u16.to_ne_bytes());
        b.extend_from_slice(&3u16.to_ne_bytes());
        b.extend_from_slice(b"tt-a\0\0\0\0");
        if let Some(g) = group {
            attr_u32(&mut b, IFLA_GROUP, g);
        }
        finish(b)
    }

    fn control(kind: u16, seq: u32, errno: i32) -> Vec<u8> {
        let mut b = Vec::new();
        header(&mut b, kind, 0, seq);
        b.extend_from_slice(&errno.to_ne_bytes());
        finish(b)
    }

    #[test]
    fn dumps_acks_and_errors() {
        let mut dump = link(3, 1, Some(0));
        dump.extend(link(2, 9, Some(5))); // an earlier request's: skipped
        dump.extend(link(3, 4, Some(0x7400_0001)));
        dump.extend(link(3, 5, None));
        let a = parse(&dump, 3).unwrap();
        assert_eq!(a.links, vec![(1, 0), (4, 0x7400_0001), (5, 0)]);
        assert!(!a.done);
        assert!(parse(&control(NLMSG_DONE, 3, 0), 3).unwrap().done);
        assert!(parse(&control(NLMSG_ERROR, 3, 0), 3).unwrap().done);
        assert_eq!(
            parse(&control(NLMSG_ERROR, 3, -libc::EPERM), 3),
            Err(libc::EPERM)
        );
        assert_eq!(parse(&dump[..20], 3), Err(0));
    }
}
