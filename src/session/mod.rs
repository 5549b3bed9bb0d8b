//! One peer's whole protocol state, as pure code: the [`Session`].
//!
//! It owns what the tunnel knows about its peer: the sending half
//! ([`SendHalf`]: the batch, timestamps, GSO limits the kernel taught it,
//! the keepalive timer, the announcement), the receiving half
//! ([`RecvHalf`]: MAC or AEAD checks, freshness, the replay window, peer
//! learning, coalescing for the TAP), and the keying of both. `now` (UNIX
//! ns) is an argument everywhere; datagrams leave through a `send`
//! callback and frames through a `write` callback, which are all the I/O a
//! driver supplies. No clock, no lock inside; the only system call is the
//! confidential mode's: `snow` draws each handshake's ephemeral key from the
//! OS.
//!
//! Two drivers run the same code: the in-memory rig (`tests/pair.rs`)
//! drives a whole `Session`, in which a peer learned by the receiving half
//! is the sending half's at once; the engine splits it ([`Session::split`])
//! so that each of its two threads owns one half, and carries the peer and
//! key between them itself (`engine/`).

mod recv;
mod send;

pub use recv::RecvHalf;
pub use send::{Flushed, Handoff, KeepaliveDue, Pushed, STAGED, SendHalf, Taught, Transmit};

use crate::aead::Cipher;
use crate::clamp;
use crate::ecn::Ecn;
use crate::key::Key;
use crate::mac::MacAddr;
use crate::noise::{SendKey, SessionStatus};
use crate::offload::VnetHdr;
use crate::peer::PeerUpdate;
use crate::rx::{Keys, NoiseKeys, Tally};
use crate::tx::Sealer;
use crate::wire::{Codec, HEADER_LEN};
use std::net::{IpAddr, SocketAddr};

/// The key in use, as both halves need it: the HMAC codec and, in the
/// confidential mode, the cipher and the seed that draws this side's
/// session indices (random per process; fixed in tests).
#[derive(Debug, Clone)]
pub struct Keying {
    key: Key,
    codec: Codec,
    aead: Option<(Cipher, [u8; 32])>,
}

impl Keying {
    /// The HMAC wire under `key`, or the confidential mode with `aead`'s
    /// cipher and index seed.
    pub fn new(key: &Key, aead: Option<(Cipher, [u8; 32])>) -> Keying {
        Keying {
            codec: Codec::new(key.as_bytes()),
            key: key.clone(),
            aead,
        }
    }

    /// The confidential mode's cipher, if on.
    pub fn cipher(&self) -> Option<Cipher> {
        self.aead.map(|(c, _)| c)
    }

    /// The key file's bytes.
    pub fn key_bytes(&self) -> &[u8] {
        self.key.as_bytes()
    }

    /// What the sending half seals with (confidential mode: nothing until
    /// the receiving half's first session).
    pub fn sealer(&self) -> Sealer {
        match &self.aead {
            None => Sealer::Hmac(self.codec.clone()),
            Some(_) => Sealer::Noise(None),
        }
    }

    /// What the receiving half opens with.
    pub fn keys(&self) -> Keys {
        Keys {
            codec: self.codec.clone(),
            noise: self.aead.map(|(cipher, seed)| NoiseKeys {
                cipher,
                psk: crate::noise::psk_from(self.key.as_bytes()),
                seed,
            }),
        }
    }
}

/// How a session starts.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The key, and the mode.
    pub keying: Keying,
    /// The TAP's MTU.
    pub mtu: u16,
    /// Largest UDP payload that crosses the underlay unfragmented.
    pub path: usize,
    /// Whether the socket takes UDP GSO messages.
    pub gso: bool,
    /// With TAP offloads: coalesce for the TAP (`Some(udp)`: UDP runs too).
    pub coalesce: Option<bool>,
    /// How the MSS of TCP SYNs is lowered, both ways.
    pub clamp: Option<clamp::Limit>,
    /// Freshness: the largest clock difference accepted (ns).
    pub max_age_ns: u64,
    /// Keepalive interval (ns; 0: off).
    pub keepalive_ns: u64,
    /// The peer given at start; `None`: learned from the first valid datagram.
    pub peer: Option<SocketAddr>,
}

impl Setup {
    /// A sending half for this setup (the engine makes two: one per thread
    /// that sends).
    pub fn send_half(&self) -> SendHalf {
        let mut tx = SendHalf::new(&self.keying, self.mtu, self.path, self.gso)
            .clamp_mss(self.clamp)
            .keepalive_every(self.keepalive_ns);
        if self.peer.is_some() {
            tx = tx.first_keepalive();
        }
        tx.set_peer(self.peer);
        tx
    }

    /// The receiving half for this setup.
    pub fn recv_half(&self) -> RecvHalf {
        let rx = RecvHalf::new(&self.keying, self.max_age_ns, self.peer).clamp_mss(self.clamp);
        match self.coalesce {
            Some(udp) => rx.coalesce(udp),
            None => rx,
        }
    }
}

/// One peer's protocol state: both halves, driven by one owner. See the
/// module documentation.
#[derive(Debug)]
pub struct Session {
    tx: SendHalf,
    rx: RecvHalf,
}

impl Session {
    /// A session as `setup` says.
    pub fn new(setup: &Setup) -> Session {
        Session {
            tx: setup.send_half(),
            rx: setup.recv_half(),
        }
    }

    /// The two halves, for a driver that runs them on two threads; it then
    /// carries what [`Session::receive`] carries itself: the peer from the
    /// receiving half to the sending one ([`SendHalf::set_peer`]).
    pub fn split(self) -> (SendHalf, RecvHalf) {
        (self.tx, self.rx)
    }

    /// The current peer.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.tx.peer()
    }

    /// Queues one TAP read; see [`SendHalf::push`].
    pub fn push(
        &mut self,
        hdr: &VnetHdr,
        frame: &[u8],
        now: u64,
        send: &mut impl FnMut(Transmit<'_>) -> Taught,
        done: &mut Flushed,
    ) -> Pushed {
        self.tx.push(hdr, frame, now, send, done)
    }

    /// Sends what is queued; see [`SendHalf::flush`].
    pub fn flush(&mut self, now: u64, send: &mut impl FnMut(Transmit<'_>) -> Taught) -> Flushed {
        self.tx.flush(now, send)
    }

    /// Receives one run of datagrams from `src`; see [`RecvHalf::receive`].
    /// A peer learned or moved is where the sending half sends from now on.
    pub fn receive(
        &mut self,
        run: &mut [u8],
        segment: Option<usize>,
        outer: Ecn,
        src: SocketAddr,
        now: u64,
        write: &mut impl FnMut(&[u8]),
    ) -> Tally {
        let t = self.rx.receive(run, segment, outer, src, now, write);
        if let PeerUpdate::Learned(p) | PeerUpdate::Moved { to: p, .. } = t.peer {
            self.tx.set_peer(Some(p));
        }
        self.follow_session();
        t
    }

    /// Confidential mode: the sending half seals under the receiving
    /// half's current session.
    fn follow_session(&mut self) {
        if let Some(k) = self.rx.take_send_key() {
            self.tx.set_send_key(k);
        }
    }

    /// Confidential mode: the handshake timers at `now`; then every
    /// handshake message waiting (answers to what [`Session::receive`]
    /// took, initiations) goes to `send`.
    pub fn handshake(&mut self, now: u64, send: &mut impl FnMut(&[u8], SocketAddr)) {
        self.rx.poll(now);
        self.follow_session();
        self.rx.outbox().drain(send);
    }

    /// Confidential mode: the sessions' facts.
    pub fn session_status(&self) -> Option<SessionStatus> {
        self.rx.session_status()
    }

    /// Confidential mode: the key the sending half seals with.
    pub fn send_key(&self) -> Option<std::sync::Arc<SendKey>> {
        self.tx.send_key()
    }

    /// Replaces the key at `now`: sealing with it at once, opening with
    /// both for the maximum age.
    pub fn rotate(&mut self, keying: &Keying, now: u64) {
        self.tx.set_keying(keying);
        self.rx.rotate(keying, now);
    }

    /// Follows a change of the TAP's MTU.
    pub fn set_mtu(&mut self, mtu: u16) {
        self.tx.set_mtu(mtu);
    }

    /// When the session next needs [`Session::keepalive`] or
    /// [`Session::handshake`] (UNIX ns).
    pub fn poll_timeout(&self) -> Option<u64> {
        match (self.tx.poll_timeout(), self.rx.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The keepalive timer; see [`SendHalf::keepalive`].
    pub fn keepalive<'b>(&mut self, now: u64, buf: &'b mut [u8; HEADER_LEN]) -> KeepaliveDue<'b> {
        self.tx.keepalive(now, buf)
    }

    /// Announces the TAP to the peer; see [`SendHalf::announce`].
    pub fn announce(
        &mut self,
        mac: MacAddr,
        addrs: &[IpAddr],
        now: u64,
        send: &mut impl FnMut(Transmit<'_>) -> Taught,
    ) -> Flushed {
        self.tx.announce(mac, addrs, now, send)
    }
}
