//! Whether taptun's own datagrams to the peer would enter its own TAP (a
//! default route through the tunnel, `dhclient tap0`, a bridge holding
//! the TAP): the main thread asks the kernel once a tick (`ip route get
//! PEER mark MARK`, one rtnetlink round trip, no privilege needed) and
//! says so at warn level with the exact fix. Polling rather than
//! listening to route notifications: the kernel's answer already applies
//! the rules, marks and tables that a listener would have to recompute,
//! it also covers what changes without a route event (the peer's address,
//! a bridge port, `ip rule`), and one lookup a second costs microseconds.
//!
//! It also says why the kernel refuses datagrams as too long (EMSGSIZE,
//! counted by the sending threads in `Shared::refused`): through the TAP,
//! that is the route, not the MTU, and the MTU advice would be wrong.

use super::Shared;
use crate::addr;
use crate::route::{self, Route, RouteError};
use crate::stats::Throttle;
use crate::sys;
use crate::wire::HEADER_LEN;
use log::{debug, info, warn};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// A way out, for the fix: a gateway (none: on-link) and a device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hop {
    gateway: Option<IpAddr>,
    dev: String,
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(g) = self.gateway {
            write!(f, "via {g} ")?;
        }
        write!(f, "dev {}", self.dev)
    }
}

/// How the peer's datagrams would enter the TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// The route's device is the TAP.
    Tap,
    /// The route's device is a bridge holding the TAP, and the next hop
    /// was learned on the TAP's port.
    Bridge(String),
}

/// Why a route lookup failed.
#[derive(Debug)]
enum LookupError {
    /// The netlink socket.
    Io(std::io::Error),
    /// The kernel's answer: an error, or unreadable.
    Route(RouteError),
    /// A dump that did not end within 64 reads.
    Endless,
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::Io(e) => write!(f, "rtnetlink: {e}"),
            LookupError::Route(e) => e.fmt(f),
            LookupError::Endless => f.write_str("the kernel's route dump does not end"),
        }
    }
}

/// The main thread's watch over the route to the peer.
pub(super) struct RouteWatch {
    tap: String,
    /// The TAP's index; none where it has none (the engine's tests).
    tap_index: Option<u32>,
    mark: Option<u32>,
    seq: u32,
    /// The peer and how its route enters the TAP, while it does, and since when.
    into: Option<(IpAddr, Entry, Instant)>,
    /// The last route to the peer that did not enter the TAP.
    last_good: Option<Hop>,
    warned: Throttle,
    errors: Throttle,
    refused: Throttle,
}

impl RouteWatch {
    pub(super) fn new(tap: &str, mark: Option<u32>) -> Self {
        RouteWatch {
            tap: tap.to_string(),
            tap_index: sys::ifindex(tap).ok(),
            mark,
            seq: 0,
            into: None,
            last_good: None,
            warned: Throttle::per_minute(),
            errors: Throttle::per_minute(),
            refused: Throttle::per_minute(),
        }
    }

    /// Once a tick: looks at the route to the peer, then explains the
    /// datagrams the kernel refused as too long since the last tick.
    pub(super) fn tick(&mut self, shared: &Shared) {
        let peer = shared.peer.get().map(addr::canonical);
        if let (Some(p), Some(tap)) = (peer, self.tap_index) {
            self.check(p.ip(), tap);
        }
        let n = shared.refused.swap(0, Relaxed);
        if n == 0 {
            return;
        }
        let len = shared.refused_len.load(Relaxed);
        let to = peer.map_or_else(|| "the peer".to_string(), |p| p.to_string());
        if self.into.is_some() {
            debug!(
                "UDP send to {to}: {n} datagrams of up to {len} bytes refused as too long: the route through {} is the cause",
                self.tap
            );
        } else if let Some(n) = self.refused.note(n, Instant::now()) {
            warn!(
                "UDP send to {to}: the kernel refuses {len}-byte datagrams (Message too long; {n} refused): lower the TAP MTU (--mtu) below {}, or allow fragments on this route; smaller frames still cross",
                len.saturating_sub(HEADER_LEN + 14),
            );
        }
    }

    /// Sends one request, gathers the answer's routes.
    fn lookup(&mut self, msg: &[u8]) -> Result<Vec<Route>, LookupError> {
        let sock = sys::RouteSocket::open().map_err(LookupError::Io)?;
        sock.send(msg).map_err(LookupError::Io)?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut routes = Vec::new();
        // A dump comes in several reads; bounded, whatever the kernel says.
        for _ in 0..64 {
            let n = sock.recv(&mut buf).map_err(LookupError::Io)?;
            let a = route::parse(&buf[..n], self.seq).map_err(LookupError::Route)?;
            routes.extend(a.routes);
            if a.done {
                return Ok(routes);
            }
        }
        Err(LookupError::Endless)
    }

    fn check(&mut self, ip: IpAddr, tap: u32) {
        self.seq = self.seq.wrapping_add(1);
        let r = match self.lookup(&route::get_request(ip, self.mark, self.seq)) {
            Ok(mut rs) if !rs.is_empty() => rs.swap_remove(0),
            Ok(_) => return,
            // No route at all: the send errors say so.
            Err(LookupError::Route(RouteError::Kernel(libc::ENETUNREACH))) => return,
            Err(e) => {
                if let Some(n) = self.errors.note(1, Instant::now()) {
                    debug!("route lookup for the peer {ip}: {e} ({n} failed)");
                }
                return;
            }
        };
        match self.enters(&r, ip, tap) {
            Some(into) => {
                let now = Instant::now();
                let since = match &self.into {
                    Some((p, e, t)) if *p == ip && *e == into => *t,
                    _ => now,
                };
                self.into = Some((ip, into.clone(), since));
                if self.warned.note(1, now).is_some() {
                    let fix = self.fix(ip, tap, &r);
                    let (dev, how) = match &into {
                        Entry::Tap => (self.tap.clone(), "this tunnel's own TAP".to_string()),
                        Entry::Bridge(b) => (
                            b.clone(),
                            format!("a bridge holding {}, towards a neighbour on it", self.tap),
                        ),
                    };
                    let gw = r.gateway.map_or_else(String::new, |g| format!("via {g} "));
                    // Said again once a minute while it lasts.
                    let again = match now.duration_since(since).as_secs() {
                        0 => String::new(),
                        s => format!(" (for {s} s now)"),
                    };
                    warn!(
                        "the route to the peer {ip} ({gw}dev {dev}) leads into {how}: taptun's datagrams would enter the tunnel that carries them, and nothing crosses; {fix}{again}"
                    );
                }
            }
            None => {
                if let Some((_, into, _)) = self.into.take() {
                    let dev = match into {
                        Entry::Tap => self.tap.clone(),
                        Entry::Bridge(b) => b,
                    };
                    info!(
                        "the route to the peer {ip} no longer leads into {dev}: the tunnel can carry traffic again"
                    );
                }
                if let Some(oif) = r.oif
                    && let Ok(dev) = sys::ifname(oif)
                {
                    self.last_good = Some(Hop {
                        gateway: r.gateway,
                        dev,
                    });
                }
            }
        }
    }

    /// Whether route `r` to `ip` enters the TAP (index `tap`).
    fn enters(&self, r: &Route, ip: IpAddr, tap: u32) -> Option<Entry> {
        let oif = r.oif?;
        if oif == tap {
            return Some(Entry::Tap);
        }
        // A bridge holding the TAP: its datagrams enter the TAP only if
        // the next hop sits behind the TAP's port (the bridging host's own
        // uplink is usually on the same bridge, through another port).
        let br = sys::ifname(oif).ok()?;
        let sysfs = format!("/sys/class/net/{br}");
        std::fs::metadata(format!("{sysfs}/brif/{}", self.tap)).ok()?;
        let IpAddr::V4(hop) = r.gateway.unwrap_or(ip) else {
            return None;
        };
        let arp = std::fs::read_to_string("/proc/net/arp").ok()?;
        let mac = route::arp_mac(&arp, hop, &br)?;
        let fdb = std::fs::read(format!("{sysfs}/brforward")).ok()?;
        let port = route::fdb_port(&fdb, mac)?;
        let tap_port =
            std::fs::read_to_string(format!("/sys/class/net/{}/brport/port_no", self.tap))
                .ok()
                .and_then(|t| route::port_no(&t))?;
        (port == tap_port).then_some(Entry::Bridge(br))
    }

    /// The fix, as a command where taptun can tell the way out.
    fn fix(&mut self, ip: IpAddr, tap: u32, bad: &Route) -> String {
        if let Some(m) = self.mark {
            return format!(
                "--fwmark {m} is set, but marked datagrams still take this route: put the route through {} in a table of its own that marked traffic skips (ip rule add not fwmark {m} table {m}; ip route add default dev {} table {m}; ip rule add table main suppress_prefixlength 0; see --fwmark in man taptun)",
                self.tap, self.tap
            );
        }
        let host = match ip {
            IpAddr::V4(_) => format!("{ip}/32"),
            IpAddr::V6(_) => format!("{ip}/128"),
        };
        // Not through the TAP, nor by the hop that leads into it (through
        // a bridge, other routes on the bridge are fine).
        let avoid =
            |r: &Route| r.oif == Some(tap) || (r.oif == bad.oif && r.gateway == bad.gateway);
        self.seq = self.seq.wrapping_add(1);
        let dumped = self
            .lookup(&route::dump_request(ip.is_ipv6(), self.seq))
            .ok()
            .and_then(|rs| {
                let r = route::bypass(&rs, ip, avoid)?;
                Some(Hop {
                    gateway: r.gateway,
                    dev: sys::ifname(r.oif?).ok()?,
                })
            });
        let (hop, whence) = match (dumped, &self.last_good) {
            (Some(h), _) => (h, "the main table's route besides the one through"),
            (None, Some(h)) => (h.clone(), "the route to the peer before it went through"),
            (None, None) => {
                return format!(
                    "fix: a host route to the peer through the underlay's gateway (ip route add {host} via GATEWAY dev ETH), or keep taptun's datagrams out of the tunnel with --fwmark and policy routing (see --fwmark in man taptun)"
                );
            }
        };
        format!(
            "fix: ip route add {host} {hop} ({whence} {}), or keep taptun's datagrams out of the tunnel with --fwmark and policy routing (see --fwmark in man taptun)",
            self.tap
        )
    }
}

/// Counts a datagram the kernel refused as too long, for the main thread
/// to explain (from the sending threads).
pub(super) fn refused(shared: &Shared, len: usize) {
    shared.refused_len.store(len, Relaxed);
    shared.refused.fetch_add(1, Relaxed);
}
