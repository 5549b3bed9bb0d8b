//! Parsing of the local and peer UDP addresses given on the command line.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// Why an address argument was refused; names the argument and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrError {
    /// Not of the form `host:port`, `:port` or `[v6]:port`.
    Syntax { what: &'static str, value: String },
    /// The port is missing, not a number, or 0 for a peer.
    Port { what: &'static str, value: String },
    /// Name resolution failed or returned nothing.
    Resolve {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// `--address` was not `IP/prefix`.
    Cidr { value: String },
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::Syntax { what, value } => write!(
                f,
                "{what} address {value:?}: expected HOST:PORT, :PORT or [IPv6]:PORT"
            ),
            AddrError::Port { what, value } => write!(
                f,
                "{what} address {value:?}: expected a port number from 1 to 65535"
            ),
            AddrError::Resolve {
                what,
                value,
                reason,
            } => write!(
                f,
                "{what} address {value:?}: cannot resolve ({reason}); check the name and DNS, or give an IP address"
            ),
            AddrError::Cidr { value } => write!(
                f,
                "--address {value:?}: expected IP/PREFIX, e.g. 10.1.2.3/24 or fd00::1/64"
            ),
        }
    }
}

impl std::error::Error for AddrError {}

/// A local address: an explicit one, or "every address" (`:PORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// `:PORT`: bind the dual-stack wildcard `[::]`, or `0.0.0.0` where IPv6 is off.
    Any(u16),
    /// An explicit socket address.
    Addr(SocketAddr),
}

impl Local {
    /// The addresses to try binding, in order.
    pub fn candidates(&self) -> Vec<SocketAddr> {
        match *self {
            Local::Any(port) => vec![
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            ],
            Local::Addr(a) => vec![a],
        }
    }
}

fn split_host_port<'a>(value: &'a str, what: &'static str) -> Result<(&'a str, u16), AddrError> {
    let syntax = || AddrError::Syntax {
        what,
        value: value.to_string(),
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(syntax)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(syntax)?,
        None if host.contains(':') => return Err(syntax()),
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| AddrError::Port {
        what,
        value: value.to_string(),
    })?;
    Ok((host, port))
}

fn resolve(
    host: &str,
    port: u16,
    what: &'static str,
    value: &str,
) -> Result<SocketAddr, AddrError> {
    resolve_all(host, port, what, value).map(|addrs| preferred(&addrs))
}

/// Every address `host` resolves to (at least one), in the resolver's order.
fn resolve_all(
    host: &str,
    port: u16,
    what: &'static str,
    value: &str,
) -> Result<Vec<SocketAddr>, AddrError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let err = |reason: String| AddrError::Resolve {
        what,
        value: value.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(err("no addresses".to_string()));
    }
    Ok(addrs)
}

/// The address taken from a name's answers (not empty): the first IPv4
/// one, like most tools when a name has both (the underlay MTU follows),
/// else the first.
pub fn preferred(addrs: &[SocketAddr]) -> SocketAddr {
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
}

/// Checks the syntax of a local address without resolving it.
pub fn check_local(value: &str) -> Result<(), AddrError> {
    split_host_port(value, "local").map(drop)
}

/// Checks the syntax of a peer address without resolving it: a host and
/// a port other than 0.
pub fn check_peer(value: &str) -> Result<(), AddrError> {
    parse_peer_arg(value).map(drop)
}

/// Parses the local address argument (`:9123`, `0.0.0.0:9123`, `[::1]:9123`, `host:9123`).
pub fn parse_local(value: &str) -> Result<Local, AddrError> {
    let (host, port) = split_host_port(value, "local")?;
    if host.is_empty() {
        return Ok(Local::Any(port));
    }
    resolve(host, port, "local", value).map(Local::Addr)
}

/// The peer argument as given: an address, or a name kept to be resolved
/// again (see `resolve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerArg {
    /// An IP address and port: used as it is.
    Addr(SocketAddr),
    /// A host name and port.
    Name(PeerName),
}

/// A peer's host name and port (`HOST:PORT`), resolved at start and again
/// while the peer is silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerName {
    /// The host name.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl PeerName {
    /// Resolves the name (blocking: `getaddrinfo`); IPv4 first.
    pub fn resolve(&self) -> Result<SocketAddr, AddrError> {
        self.resolve_all().map(|addrs| preferred(&addrs))
    }

    /// Every address the name resolves to (blocking; at least one).
    pub fn resolve_all(&self) -> Result<Vec<SocketAddr>, AddrError> {
        let value = self.to_string();
        resolve_all(&self.host, self.port, "peer", &value)
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Checks the peer address argument without resolving it; port 0 is refused.
pub fn parse_peer_arg(value: &str) -> Result<PeerArg, AddrError> {
    let (host, port) = split_host_port(value, "peer")?;
    if host.is_empty() {
        return Err(AddrError::Syntax {
            what: "peer",
            value: value.to_string(),
        });
    }
    if port == 0 {
        return Err(AddrError::Port {
            what: "peer",
            value: value.to_string(),
        });
    }
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => PeerArg::Addr(SocketAddr::new(ip, port)),
        Err(_) => PeerArg::Name(PeerName {
            host: host.to_string(),
            port,
        }),
    })
}

/// Parses and resolves (once) the peer address argument; port 0 is refused.
pub fn parse_peer(value: &str) -> Result<SocketAddr, AddrError> {
    match parse_peer_arg(value)? {
        PeerArg::Addr(a) => Ok(a),
        PeerArg::Name(n) => n.resolve(),
    }
}

/// An interface address with prefix length, from `--address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub ip: IpAddr,
    /// The prefix length (0..=32 or 0..=128).
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = AddrError;
    fn from_str(value: &str) -> Result<Self, AddrError> {
        let bad = || AddrError::Cidr {
            value: value.to_string(),
        };
        let (ip, prefix) = value.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { ip, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// The same address in the form a socket of the given family sends to:
/// IPv4 peers become `::ffff:a.b.c.d` on an IPv6 (dual-stack) socket.
pub fn for_socket(addr: SocketAddr, socket_is_v6: bool) -> SocketAddr {
    match (addr, socket_is_v6) {
        (SocketAddr::V4(v4), true) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => addr,
    }
}

/// The address as a person reads it: `::ffff:a.b.c.d` shown as `a.b.c.d`.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Default TAP MTU for an underlay MTU: minus IP, UDP, taptun and Ethernet headers.
pub fn default_tap_mtu(underlay_mtu: u16, ipv6: bool) -> u16 {
    let ip = if ipv6 { 40 } else { 20 };
    underlay_mtu.saturating_sub(ip + 8 + crate::wire::HEADER_LEN as u16 + 14)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_forms() {
        assert_eq!(parse_local(":9123"), Ok(Local::Any(9123)));
        assert_eq!(
            parse_local("0.0.0.0:9123"),
            Ok(Local::Addr("0.0.0.0:9123".parse().unwrap()))
        );
        assert_eq!(
            parse_local("[::]:9123"),
            Ok(Local::Addr("[::]:9123".parse().unwrap()))
        );
        assert_eq!(
            parse_local("127.0.0.1:1"),
            Ok(Local::Addr("127.0.0.1:1".parse().unwrap()))
        );
        assert_eq!(
            parse_local("localhost:7").map(|l| l.candidates()[0].port()),
            Ok(7)
        );
        assert_eq!(Local::Any(5).candidates()[0], "[::]:5".parse().unwrap());
    }

    #[test]
    fn bad_forms() {
        for v in ["9123", "", "::1:9123", "[::1:9123", "host"] {
            assert!(
                matches!(parse_local(v), Err(AddrError::Syntax { .. })),
                "{v}"
            );
        }
        for v in [":x", ":70000", ":", "1.2.3.4:"] {
            assert!(matches!(parse_local(v), Err(AddrError::Port { .. })), "{v}");
        }
        assert!(matches!(parse_peer(":9123"), Err(AddrError::Syntax { .. })));
        assert!(matches!(
            parse_peer("1.2.3.4:0"),
            Err(AddrError::Port { .. })
        ));
        let e = parse_peer("no-such-host.invalid:9").unwrap_err();
        assert!(matches!(e, AddrError::Resolve { .. }));
        assert!(e.to_string().contains("no-such-host.invalid"));
    }

    #[test]
    fn peer_forms() {
        assert_eq!(
            parse_peer("203.0.113.15:9123"),
            Ok("203.0.113.15:9123".parse().unwrap())
        );
        assert_eq!(
            parse_peer("[2001:db8::1]:9"),
            Ok("[2001:db8::1]:9".parse().unwrap())
        );
        assert_eq!(
            parse_peer("localhost:9").map(|a| a.ip().is_loopback()),
            Ok(true)
        );
    }

    #[test]
    fn peer_names_kept() {
        assert_eq!(
            parse_peer_arg("10.0.0.2:9"),
            Ok(PeerArg::Addr("10.0.0.2:9".parse().unwrap()))
        );
        let n = PeerName {
            host: "peer.example".into(),
            port: 9123,
        };
        assert_eq!(
            parse_peer_arg("peer.example:9123"),
            Ok(PeerArg::Name(n.clone()))
        );
        assert_eq!(n.to_string(), "peer.example:9123");
        // Checked without resolving: a name that does not resolve passes.
        assert!(parse_peer_arg("no-such-host.invalid:9").is_ok());
        assert!(matches!(parse_peer_arg("x:0"), Err(AddrError::Port { .. })));
    }

    #[test]
    fn cidr() {
        assert_eq!(
            "10.1.2.3/24".parse(),
            Ok(Cidr {
                ip: "10.1.2.3".parse().unwrap(),
                prefix: 24
            })
        );
        assert_eq!(
            "fd00::1/64".parse::<Cidr>().unwrap().to_string(),
            "fd00::1/64"
        );
        for v in [
            "10.1.2.3",
            "10.1.2.3/33",
            "fd00::1/129",
            "x/1",
            "10.0.0.1/-1",
        ] {
            assert!(v.parse::<Cidr>().is_err(), "{v}");
        }
    }

    #[test]
    fn families_and_mtu() {
        let v4: SocketAddr = "1.2.3.4:5".parse().unwrap();
        let mapped = for_socket(v4, true);
        assert_eq!(mapped, "[::ffff:1.2.3.4]:5".parse().unwrap());
        assert_eq!(canonical(mapped), v4);
        assert_eq!(for_socket(v4, false), v4);
        assert_eq!(default_tap_mtu(1500, false), 1418);
        assert_eq!(default_tap_mtu(1500, true), 1398);
        assert_eq!(default_tap_mtu(50, true), 0);
    }
}
