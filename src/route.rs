//! Which way the kernel sends the peer's datagrams: the rtnetlink
//! messages (an `RTM_GETROUTE` for one address, a dump of the routes) as
//! bytes, built and parsed here without I/O; `sys::netlink_route` does the
//! socket calls and `engine::route` the watching. Only what taptun needs:
//! the output interface and the gateway of a route, the destination,
//! table, type and metric of the routes in a dump.

use crate::netlink::{self, u32_at};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const RTMSG_LEN: usize = 12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RTA_MARK: u16 = 16;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `RTN_UNICAST`: a route to a gateway or a link (not blackhole, local...).
pub const RTN_UNICAST: u8 = 1;
/// `RT_TABLE_MAIN`: the table `ip route` shows.
pub const RT_TABLE_MAIN: u32 = 254;

/// What the kernel's answer says, or why it is unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The kernel answered with an error (an errno: no route, ...).
    Kernel(i32),
    /// A message shorter than its header or than its length says.
    Truncated,
    /// The answer held no route.
    NoRoute,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::Kernel(e) => write!(f, "{}", std::io::Error::from_raw_os_error(*e)),
            RouteError::Truncated => f.write_str("truncated rtnetlink message"),
            RouteError::NoRoute => f.write_str("no route in the kernel's answer"),
        }
    }
}

impl std::error::Error for RouteError {}

/// A route as the kernel describes it (an answer to a lookup, or one
/// entry of a dump).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// Destination prefix (none: the default route, or a lookup's answer
    /// that did not say).
    pub dst: Option<IpAddr>,
    /// Destination prefix length.
    pub dst_len: u8,
    /// The output interface's index.
    pub oif: Option<u32>,
    /// The next hop, when not on-link.
    pub gateway: Option<IpAddr>,
    /// The routing table.
    pub table: u32,
    /// `rtm_type` (`RTN_UNICAST`, ...).
    pub kind: u8,
    /// The metric (`RTA_PRIORITY`), 0 when absent.
    pub priority: u32,
}

impl Route {
    /// Whether the route covers `ip`.
    pub fn covers(&self, ip: IpAddr) -> bool {
        match (self.dst, ip) {
            (None, _) => self.dst_len == 0,
            (Some(IpAddr::V4(d)), IpAddr::V4(ip)) => {
                prefix_eq(&d.octets(), &ip.octets(), self.dst_len)
            }
            (Some(IpAddr::V6(d)), IpAddr::V6(ip)) => {
                prefix_eq(&d.octets(), &ip.octets(), self.dst_len)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let len = usize::from(len).min(a.len() * 8);
    let (whole, bits) = (len / 8, len % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    bits == 0 || (a[whole] ^ b[whole]) >> (8 - bits) == 0
}

fn header(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set at the end
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
}

fn rtmsg(buf: &mut Vec<u8>, family: u8, dst_len: u8) {
    buf.extend_from_slice(&[family, dst_len, 0, 0, 0, 0, 0, 0]);
    buf.extend_from_slice(&0u32.to_ne_bytes());
}

fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn finish(mut buf: Vec<u8>) -> Vec<u8> {
    let len = (buf.len() as u32).to_ne_bytes();
    buf[..4].copy_from_slice(&len);
    buf
}

fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { AF_INET } else { AF_INET6 }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `ip route get DST [mark MARK]`: the route the kernel would use for a
/// datagram to `dst` from a socket marked `mark`.
pub fn get_request(dst: IpAddr, mark: Option<u32>, seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(48);
    header(&mut b, RTM_GETROUTE, NLM_F_REQUEST, seq);
    let full = if dst.is_ipv4() { 32 } else { 128 };
    rtmsg(&mut b, family(dst), full);
    attr(&mut b, RTA_DST, &ip_bytes(dst));
    if let Some(m) = mark {
        attr(&mut b, RTA_MARK, &m.to_ne_bytes());
    }
    finish(b)
}

/// `ip route show table all` for one family: every route.
pub fn dump_request(v6: bool, seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    header(&mut b, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq);
    rtmsg(&mut b, if v6 { AF_INET6 } else { AF_INET }, 0);
    finish(b)
}

/// What one read of the socket held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The routes, in order.
    pub routes: Vec<Route>,
    /// Whether the answer is complete (a lookup's route, a dump's
    /// `NLMSG_DONE`, or an error).
    pub done: bool,
}

fn ip_from(family: u8, data: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
        _ => None,
    }
}

fn parse_route(body: &[u8]) -> Result<Route, RouteError> {
    let rt = body.get(..RTMSG_LEN).ok_or(RouteError::Truncated)?;
    let fam = rt[0];
    let mut r = Route {
        dst_len: rt[1],
        table: u32::from(rt[4]),
        kind: rt[7],
        ..Route::default()
    };
    for attr in netlink::attrs(body, RTMSG_LEN) {
        let (kind, data) = attr.map_err(|()| RouteError::Truncated)?;
        match kind {
            RTA_DST => r.dst = ip_from(fam, data),
            RTA_GATEWAY => r.gateway = ip_from(fam, data),
            RTA_OIF => r.oif = u32_at(data, 0),
            RTA_PRIORITY => r.priority = u32_at(data, 0).unwrap_or(0),
            RTA_TABLE => r.table = u32_at(data, 0).unwrap_or(r.table),
            _ => {}
        }
    }
    Ok(r)
}

/// Parses what one read of the socket held: route messages of sequence
/// number `seq` (others, left from an earlier request, are skipped), an
/// error, or the end of a dump.
pub fn parse(buf: &[u8], seq: u32) -> Result<Answer, RouteError> {
    let mut a = Answer::default();
    for m in netlink::messages(buf) {
        let m = m.map_err(|()| RouteError::Truncated)?;
        if m.seq != seq {
            continue;
        }
        let (body, flags) = (m.body, m.flags);
        match m.kind {
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).ok_or(RouteError::Truncated)? as i32;
                if errno != 0 {
                    return Err(RouteError::Kernel(-errno));
                }
                a.done = true;
            }
            NLMSG_DONE => a.done = true,
            RTM_NEWROUTE => {
                a.routes.push(parse_route(body)?);
                // A lookup's answer is one message, not a multipart dump.
                if flags & 0x2 == 0 {
                    a.done = true;
                }
            }
            _ => {}
        }
    }
    Ok(a)
}

/// The route of the main table that `ip route get` would pick for `ip` if
/// the routes `avoid` picks did not exist: the longest unicast prefix
/// covering it, lowest metric first. Where the fix for a route through
/// the TAP can send the peer's datagrams instead.
pub fn bypass(routes: &[Route], ip: IpAddr, avoid: impl Fn(&Route) -> bool) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| r.table == RT_TABLE_MAIN && r.kind == RTN_UNICAST && r.covers(ip))
        .filter(|r| r.oif.is_some() && !avoid(r))
        .max_by_key(|r| (r.dst_len, std::cmp::Reverse(r.priority)))
}

/// The MAC address `/proc/net/arp` holds for `ip` on `dev` (complete
/// entries only: flag `ATF_COM`).
pub fn arp_mac(table: &str, ip: Ipv4Addr, dev: &str) -> Option<[u8; 6]> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, _, flags, mac, _, d] = f.as_slice() else {
            return None;
        };
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
        if addr.parse::<Ipv4Addr>().ok()? != ip || *d != dev || flags & 0x2 == 0 {
            return None;
        }
        parse_mac(mac)
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The bridge port a MAC address was learned on, from the bridge's
/// forwarding table as `/sys/class/net/BRIDGE/brforward` gives it (an
/// array of the kernel's 16-byte `struct __fdb_entry`); local entries
/// (the bridge's own addresses) are not ports.
pub fn fdb_port(brforward: &[u8], mac: [u8; 6]) -> Option<u16> {
    brforward.chunks_exact(16).find_map(|e| {
        let is_local = e[7] != 0;
        (e[..6] == mac && !is_local).then(|| u16::from(e[12]) << 8 | u16::from(e[6]))
    })
}

/// A bridge port's number as `/sys/class/net/PORT/brport/port_no` gives it ("0x2").
pub fn port_no(text: &str) -> Option<u16> {
    u16::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::u16_at;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // Captured from a namespace with two veth ends, d0 (index 3,
    // 192.0.2.2/24) and d1 (index 5, 10.99.0.2/24), two default routes
    // (via 10.99.0.1 dev d1 metric 10, via 192.0.2.1 dev d0 metric 100),
    // and `ip rule add fwmark 5 table 100` with an unreachable default in
    // table 100 (x86_64, Linux 6.x).
    const GET_VIA_D1: &str = "700000001800000007000000900d000002200000fe0000010002000008000f00fe00000008000100c63364070800040005000000080007000a630002080005000a630001080019000000000024000c000200000000000000000000000000000000000000000000000000000000000000";
    const GET_MARK5_UNREACHABLE: &str = "400000000200000007000000900d00008fffffff2c0000001a000100070000000000000002200000000000000000000008000100cb0071090800100005000000";
    const DUMP: &str = "240000001800020007000000900d000002000000640300070000000008000f00640000003c0000001800020007000000900d000002000000fe0300010000000008000f00fe000000080006000a000000080005000a63000108000400050000003c0000001800020007000000900d000002000000fe0300010000000008000f00fe000000080006006400000008000500c000020108000400030000003c0000001800020007000000900d000002180000fe02fd010000000008000f00fe000000080001000a630000080007000a63000208000400050000003c0000001800020007000000900d000002180000fe02fd010000000008000f00fe00000008000100c000020008000700c000020208000400030000003c0000001800020007000000900d000002200000ff02fe020000000008000f00ff000000080001000a630002080007000a63000208000400050000003c0000001800020007000000900d000002200000ff02fd030000000008000f00ff000000080001000a6300ff080007000a63000208000400050000003c0000001800020007000000900d000002200000ff02fe020000000008000f00ff00000008000100c000020208000700c000020208000400030000003c0000001800020007000000900d000002200000ff02fd030000000008000f00ff00000008000100c00002ff08000700c00002020800040003000000140000000300020007000000900d000000000000";

    #[test]
    fn requests_as_ip_route_get_sends_them() {
        // The same bytes as the capture's request (seq 7, no port id).
        assert_eq!(
            get_request(ip("198.51.100.7"), None, 7),
            hex("240000001a000100070000000000000002200000000000000000000008000100c6336407")
        );
        assert_eq!(
            get_request(ip("203.0.113.9"), Some(5), 7),
            // As echoed in the kernel's error answer to it.
            hex(
                "2c0000001a000100070000000000000002200000000000000000000008000100cb0071090800100005000000"
            )
        );
        let v6 = get_request(ip("fd00::1"), None, 1);
        assert_eq!(v6.len(), 16 + 12 + 20);
        assert_eq!(&v6[16..18], &[AF_INET6, 128]);
        let d = dump_request(false, 9);
        assert_eq!(d.len(), 28);
        assert_eq!(u16_at(&d, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
    }

    #[test]
    fn lookup_answer() {
        let a = parse(&hex(GET_VIA_D1), 7).unwrap();
        assert!(a.done);
        assert_eq!(a.routes.len(), 1);
        let r = &a.routes[0];
        assert_eq!(r.oif, Some(5));
        assert_eq!(r.gateway, Some(ip("10.99.0.1")));
        assert_eq!(r.dst, Some(ip("198.51.100.7")));
        assert_eq!(r.table, RT_TABLE_MAIN);
        // Another request's answer is not this one's.
        assert_eq!(parse(&hex(GET_VIA_D1), 8).unwrap(), Answer::default());
    }

    #[test]
    fn kernel_errors() {
        assert_eq!(
            parse(&hex(GET_MARK5_UNREACHABLE), 7),
            Err(RouteError::Kernel(libc::EHOSTUNREACH))
        );
        let mut cut = hex(GET_VIA_D1);
        cut.truncate(60);
        assert_eq!(parse(&cut, 7), Err(RouteError::Truncated));
        let mut bad = hex(GET_VIA_D1);
        bad[0] = 0xff; // longer than the buffer
        assert_eq!(parse(&bad, 7), Err(RouteError::Truncated));
    }

    #[test]
    fn dump_and_bypass() {
        let a = parse(&hex(DUMP), 7).unwrap();
        assert!(a.done);
        assert_eq!(a.routes.len(), 9);
        let main: Vec<_> = a.routes.iter().filter(|r| r.table == 254).collect();
        assert_eq!(main.len(), 4);
        // Without d1 (the "TAP"), the peer goes via 192.0.2.1 on d0.
        let not_d1 = |r: &Route| r.oif == Some(5);
        let r = bypass(&a.routes, ip("198.51.100.7"), not_d1).unwrap();
        assert_eq!((r.gateway, r.oif), (Some(ip("192.0.2.1")), Some(3)));
        // With everything allowed: the metric-10 default via d1.
        let r = bypass(&a.routes, ip("198.51.100.7"), |_| false).unwrap();
        assert_eq!(r.oif, Some(5));
        // Only that hop avoided (a bridge: other routes on it stay).
        let hop = |r: &Route| r.oif == Some(5) && r.gateway == Some(ip("10.99.0.1"));
        let r = bypass(&a.routes, ip("198.51.100.7"), hop).unwrap();
        assert_eq!(r.oif, Some(3));
        // On-link: the connected /24, no gateway.
        let r = bypass(&a.routes, ip("192.0.2.77"), not_d1).unwrap();
        assert_eq!((r.gateway, r.dst_len), (None, 24));
        assert!(bypass(&a.routes, ip("198.51.100.7"), |r| r.oif.is_some()).is_none());
    }

    #[test]
    fn arp_entries() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device
192.0.2.1        0x1         0x2         02:fc:00:00:00:05     *        eth0
192.0.2.7        0x1         0x0         00:00:00:00:00:00     *        br0
10.1.0.1         0x1         0x2         52:54:00:aa:bb:cc     *        br0
";
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            arp_mac(table, ip("10.1.0.1"), "br0"),
            Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])
        );
        assert_eq!(arp_mac(table, ip("10.1.0.1"), "eth0"), None);
        // Incomplete: no answer yet.
        assert_eq!(arp_mac(table, ip("192.0.2.7"), "br0"), None);
        assert_eq!(arp_mac("", ip("192.0.2.1"), "eth0"), None);
    }

    #[test]
    fn bridge_forwarding_table() {
        // Captured: /sys/class/net/br0/brforward of a bridge with a veth
        // v0 (port 1, 02:…:01) and a TAP t0 (port 2, 02:…:02): a
        // neighbour (52:54:00:aa:bb:cc, v0's other end) learned on port
        // 1, then the two ports' own addresses (local).
        let fdb = hex(concat!(
            "525400aabbcc01009700000000000000",
            "02000000000202010000000000000000",
            "02000000000101010000000000000000"
        ));
        assert_eq!(fdb_port(&fdb, [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]), Some(1));
        assert_eq!(fdb_port(&fdb, [2, 0, 0, 0, 0, 2]), None);
        let mut hi = fdb.clone();
        hi[12] = 1; // port_hi: port 257
        assert_eq!(fdb_port(&hi, [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]), Some(257));
        assert_eq!(fdb_port(&fdb, [9; 6]), None);
        assert_eq!(port_no("0x2\n"), Some(2));
        assert_eq!(port_no("0x10"), Some(16));
        assert_eq!(port_no("x"), None);
    }

    #[test]
    fn prefixes() {
        let r = Route {
            dst: Some(ip("10.1.2.0")),
            dst_len: 23,
            ..Route::default()
        };
        assert!(r.covers(ip("10.1.3.255")));
        assert!(!r.covers(ip("10.1.4.0")));
        assert!(!r.covers(ip("fd00::1")));
        let d = Route::default();
        assert!(d.covers(ip("fd00::1")));
    }
}
