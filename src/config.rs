//! What the engine needs to start, checked and loaded: built by `cli`,
//! consumed by `engine::Tunnel::open`.

use crate::addr::{Cidr, Local};
use crate::clamp::Limit;
use crate::key::Key;
use crate::wire::HEADER_LEN;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Everything the tunnel needs to start. The key is a [`Key`], whose
/// `Debug` hides the bytes, so printing a `Config` shows no secret.
#[derive(Debug, Clone)]
pub struct Config {
    /// The shared secret, already loaded.
    pub key: Key,
    /// Where to bind the UDP socket.
    pub local: Local,
    /// The peer, when configured (and, given by name, resolved at start).
    pub peer: Option<SocketAddr>,
    /// The peer's name when given as `HOST:PORT`: resolved again while the
    /// peer is silent (`resolve`).
    pub peer_name: Option<crate::addr::PeerName>,
    /// The least time between two resolutions of `peer_name`.
    pub resolve_every: Duration,
    /// `--fwmark`: the mark (SO_MARK) on the UDP socket, for policy routing.
    pub fwmark: Option<u32>,
    /// TAP name; the kernel picks `tapN` when absent.
    pub dev: Option<String>,
    /// TAP MTU.
    pub mtu: u16,
    /// Addresses to put on the TAP.
    pub addresses: Vec<Cidr>,
    /// Maximum timestamp age, either way.
    pub max_age: Duration,
    /// Send a keepalive after this much silence (zero: never).
    pub keepalive: Duration,
    /// Requested socket buffer size, each way.
    pub sockbuf: usize,
    /// Use TAP checksum/segmentation offloads when the kernel allows them.
    pub offload: bool,
    /// The largest datagram (UDP payload) that crosses the underlay
    /// without IP fragments: `--underlay-mtu` less the IP and UDP headers.
    pub path_payload: usize,
    /// How the MSS of TCP SYNs crossing the tunnel is lowered.
    pub clamp_mss: ClampMss,
    /// CoDel on the receive queue (`--aqm`); none: off.
    pub aqm: Option<crate::codel::Params>,
    /// How long the receiving thread spins after the last datagram (`--busy-poll`, ns; 0: never).
    pub busy_poll_ns: u64,
    /// The packet threads' scheduling (`--nice`, `--rt-priority`).
    pub priority: crate::priority::Priority,
    /// Flow queueing at the receiver (`--fq`): a sparse flow's datagram
    /// ahead of a bulk flow's queue (HMAC wire only).
    pub fq: bool,
    /// The confidential mode's cipher (`--cipher`); none: the HMAC wire.
    pub cipher: Option<crate::aead::Cipher>,
    /// The TAP's MAC (`--mac`); else a persistent one (see `mac`).
    pub mac: Option<crate::mac::MacAddr>,
    /// Where `taptun status` finds this tunnel (default /run/taptun/DEV.sock).
    pub status_socket: Option<std::path::PathBuf>,
    /// The state file (`--state`): the learned peer's last address. Only
    /// without a configured peer (`cli` leaves it out otherwise).
    pub state: Option<std::path::PathBuf>,
}

impl Config {
    /// The MSS clamp both halves apply, from `--clamp-mss`: `auto` keeps a
    /// full segment's frame within one unfragmented datagram.
    pub fn mss_limit(&self) -> Option<Limit> {
        match self.clamp_mss {
            ClampMss::Off => None,
            ClampMss::Auto => Some(Limit::Frame(self.path_payload - HEADER_LEN)),
            ClampMss::Fixed(n) => Some(Limit::Mss(n)),
        }
    }
}

/// `--clamp-mss`: how the MSS option of TCP SYN and SYN-ACK segments
/// crossing the tunnel is lowered, so that full TCP segments never need IP
/// fragments on the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClampMss {
    /// Leave every SYN as it is.
    Off,
    /// Lower to what fits one unfragmented datagram (from `--underlay-mtu`).
    Auto,
    /// Lower to at most this.
    Fixed(u16),
}

/// Smallest `--clamp-mss N`: IPv4's minimum MTU (576) less 40 bytes of headers.
pub const MIN_CLAMP_MSS: u16 = 536;

impl FromStr for ClampMss {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(ClampMss::Off),
            "auto" => Ok(ClampMss::Auto),
            n => match n.parse::<u16>() {
                Ok(m) if m >= MIN_CLAMP_MSS => Ok(ClampMss::Fixed(m)),
                _ => Err(format!(
                    "{n:?}: expected off, auto or an MSS from {MIN_CLAMP_MSS} to 65535"
                )),
            },
        }
    }
}

impl fmt::Display for ClampMss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClampMss::Off => f.write_str("off"),
            ClampMss::Auto => f.write_str("auto"),
            ClampMss::Fixed(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_mss_values() {
        assert_eq!("off".parse(), Ok(ClampMss::Off));
        assert_eq!("auto".parse(), Ok(ClampMss::Auto));
        assert_eq!("1360".parse(), Ok(ClampMss::Fixed(1360)));
        for bad in ["", "535", "65536", "-1", "Auto", "1360 "] {
            assert!(bad.parse::<ClampMss>().is_err(), "{bad:?}");
        }
        assert_eq!(ClampMss::Fixed(1360).to_string(), "1360");
    }
}
