//! Which address the peer is at, and when a datagram may change it.

use std::net::SocketAddr;

/// What an authenticated datagram did to the peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerUpdate {
    /// Nothing changed.
    #[default]
    Unchanged,
    /// The first peer address, learned.
    Learned(SocketAddr),
    /// The peer roamed from one address to another.
    Moved {
        /// The old address.
        from: SocketAddr,
        /// The new address.
        to: SocketAddr,
    },
}

/// Peer learning: the address moves only on a datagram that passed every
/// check *and* is the newest ever accepted, so a replayed or delayed
/// datagram from elsewhere can never divert the tunnel.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    current: Option<SocketAddr>,
}

impl Peer {
    /// A peer known from the command line, or none (learn it).
    pub fn new(initial: Option<SocketAddr>) -> Self {
        Peer {
            current: initial.map(crate::addr::canonical),
        }
    }

    /// The current peer address, canonical (no IPv4-mapped IPv6 form).
    pub fn current(&self) -> Option<SocketAddr> {
        self.current
    }

    /// Takes `addr` as the peer, whatever it was: the address its name
    /// resolves to once it fell silent. Learning goes on from there: a
    /// valid, newest datagram from elsewhere moves it again.
    pub fn set(&mut self, addr: SocketAddr) {
        self.current = Some(crate::addr::canonical(addr));
    }

    /// Called for a datagram that passed MAC, freshness and replay checks.
    pub fn observe(&mut self, src: SocketAddr, newest: bool) -> PeerUpdate {
        let src = crate::addr::canonical(src);
        match self.current {
            Some(cur) if cur == src => PeerUpdate::Unchanged,
            _ if !newest => PeerUpdate::Unchanged,
            None => {
                self.current = Some(src);
                PeerUpdate::Learned(src)
            }
            Some(from) => {
                self.current = Some(src);
                PeerUpdate::Moved { from, to: src }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn set_by_name_then_roams_again() {
        let mut p = Peer::new(Some(a("1.1.1.1:1")));
        p.set(a("[::ffff:2.2.2.2]:1"));
        assert_eq!(p.current(), Some(a("2.2.2.2:1")));
        assert_eq!(p.observe(a("2.2.2.2:1"), true), PeerUpdate::Unchanged);
        // The old address speaks again, newest: it wins.
        assert_eq!(
            p.observe(a("1.1.1.1:1"), true),
            PeerUpdate::Moved {
                from: a("2.2.2.2:1"),
                to: a("1.1.1.1:1")
            }
        );
    }

    #[test]
    fn learns_and_roams_only_on_newest() {
        let mut p = Peer::new(None);
        assert_eq!(p.observe(a("1.1.1.1:1"), false), PeerUpdate::Unchanged);
        assert_eq!(p.current(), None);
        assert_eq!(
            p.observe(a("1.1.1.1:1"), true),
            PeerUpdate::Learned(a("1.1.1.1:1"))
        );
        assert_eq!(
            p.observe(a("[::ffff:1.1.1.1]:1"), true),
            PeerUpdate::Unchanged
        );
        assert_eq!(p.observe(a("6.6.6.6:1"), false), PeerUpdate::Unchanged);
        assert_eq!(p.current(), Some(a("1.1.1.1:1")));
        assert_eq!(
            p.observe(a("2.2.2.2:2"), true),
            PeerUpdate::Moved {
                from: a("1.1.1.1:1"),
                to: a("2.2.2.2:2")
            }
        );
    }
}
