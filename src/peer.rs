//! Which address the peer is at, and when a datagram may change it.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What an authenticated datagram did to the peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerUpdate {
    /// Nothing changed.
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

/// The peer address shared from the receiving thread to the sending one.
///
/// The sender checks `version` (one relaxed load per frame) and takes the
/// lock only when it changed.
#[derive(Debug, Default)]
pub struct SharedPeer {
    version: AtomicU64,
    addr: Mutex<Option<SocketAddr>>,
}

impl SharedPeer {
    /// Starts with the configured peer, if any.
    pub fn new(initial: Option<SocketAddr>) -> Self {
        SharedPeer {
            version: AtomicU64::new(1),
            addr: Mutex::new(initial.map(crate::addr::canonical)),
        }
    }

    /// Publishes a new address.
    pub fn set(&self, addr: SocketAddr) {
        let mut guard = self.addr.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Some(addr);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The current address.
    pub fn get(&self) -> Option<SocketAddr> {
        *self.addr.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The change counter; a different value means `get` may differ.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

/// A sender's cached copy of [`SharedPeer`].
#[derive(Debug, Default)]
pub struct PeerCache {
    version: u64,
    addr: Option<SocketAddr>,
}

impl PeerCache {
    /// The current address, re-read from `shared` only when it changed.
    #[inline]
    pub fn get(&mut self, shared: &SharedPeer) -> Option<SocketAddr> {
        let v = shared.version();
        if v != self.version {
            self.addr = shared.get();
            self.version = v;
        }
        self.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
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

    #[test]
    fn shared_cache_follows() {
        let s = SharedPeer::new(Some(a("[::ffff:1.2.3.4]:5")));
        let mut c = PeerCache::default();
        assert_eq!(c.get(&s), Some(a("1.2.3.4:5")));
        s.set(a("5.6.7.8:9"));
        assert_eq!(c.get(&s), Some(a("5.6.7.8:9")));
        assert_eq!(SharedPeer::new(None).get(), None);
    }
}
