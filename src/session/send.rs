//! A session's sending half: frames from the TAP in, sealed batches to one
//! peer out, through a callback that does the system call. The rules of
//! sending live here, so that the engine's threads and the in-memory rig
//! run the same ones: when a batch is due (full, or the TAP drained), that
//! nothing leaves without a peer, what the kernel taught about GSO, the
//! keepalive timer and the announcement of the TAP's addresses.

use super::Keying;
use crate::announce;
use crate::batch::Message;
use crate::mac::MacAddr;
use crate::noise::SendKey;
use crate::offload::VnetHdr;
use crate::tx::{BATCH_DATAGRAMS, Keepalive, Outbound, Push, Sealer, Unsendable};
use crate::wire::HEADER_LEN;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// One sealed batch for the socket: `messages` (ranges of `bytes`, each one
/// datagram or a UDP GSO run of them) to `to`.
#[derive(Debug, Clone, Copy)]
pub struct Transmit<'a> {
    /// The peer.
    pub to: SocketAddr,
    /// Bytes each datagram adds to its frame (for the byte counters).
    pub overhead: usize,
    /// The sealed datagrams, back to back.
    pub bytes: &'a [u8],
    /// The messages of one `sendmmsg` call, in send order.
    pub messages: &'a [Message],
}

/// What the kernel taught the sender while a batch was sent: the engine
/// reports it, the session plans the next batches by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taught {
    /// The socket refuses UDP GSO altogether: one datagram per message.
    pub gso_off: bool,
    /// GSO messages of datagrams this large were refused (larger than the
    /// route's MTU: GSO does not fragment): such datagrams go alone.
    pub too_large: Option<usize>,
}

/// What one sending half passes to another that sends to the same peer
/// through the same socket, when they take turns (the engine's two
/// threads): the last timestamp sealed, so that the HMAC wire's
/// timestamps never repeat and rise in the order datagrams leave (the
/// confidential mode's counter is shared, atomic), and what the kernel
/// taught about the socket, so that it is learnt once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handoff {
    /// The last timestamp sealed.
    pub last_ts: u64,
    /// Everything the kernel taught so far.
    pub taught: Taught,
}

/// What became of a frame from the TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued (or already sent) as this many datagrams.
    Queued(usize),
    /// No peer is known yet: dropped.
    NoPeer,
    /// Confidential mode: no session yet, and the frames kept for the
    /// first one ([`STAGED`]) are many already: dropped.
    NoSession,
    /// Confidential mode: no session yet: kept, and sent once one is up
    /// ([`SendHalf::send_staged`]).
    Staged,
    /// Not sendable (longer than the MTU, a super-frame that cannot be cut).
    Dropped(Unsendable),
}

/// What one [`SendHalf::flush`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams handed to the callback.
    pub sent: usize,
    /// Datagrams dropped because no peer is known.
    pub no_peer: usize,
    /// Datagrams the sealer refused (never sent; their bytes wiped).
    pub refused: usize,
    /// Confidential mode: frames kept for the first session that waited
    /// longer than [`STAGED_FOR_NS`] (not sent).
    pub stale: usize,
}

impl Flushed {
    /// Adds what another flush did.
    pub fn add(&mut self, o: Flushed) {
        self.sent += o.sent;
        self.no_peer += o.no_peer;
        self.refused += o.refused;
        self.stale += o.stale;
    }
}

/// Confidential mode: how many frames read while no session is up are kept
/// for the first one (as WireGuard stages packets during its handshake):
/// the first frames after start (one round trip), and the answer the
/// peer's first frame prompts while the new session is being handed over.
pub const STAGED: usize = 64;
/// Staged frames older than this (ns) are not sent: their moment passed.
pub const STAGED_FOR_NS: u64 = 5_000_000_000;

/// A session's sending half. Pure: `now` (UNIX ns) is an argument, and the
/// only way out is the `send` callback the caller passes.
#[derive(Debug)]
pub struct SendHalf {
    out: Outbound,
    peer: Option<SocketAddr>,
    /// Keepalive interval, ns (0: off).
    keepalive_ns: u64,
    /// A keepalive is due at once, whatever the interval: a peer given at
    /// start learns this side's address before any traffic.
    first: bool,
    /// Everything the kernel taught so far.
    taught: Taught,
    /// Confidential mode: frames read while no session was up, oldest
    /// first (allocated only then).
    staged: std::collections::VecDeque<(u64, VnetHdr, Vec<u8>)>,
}

impl SendHalf {
    /// A sending half sealing with `keying` for a TAP of `mtu`, whose
    /// datagrams cross unfragmented up to `path` bytes; `gso`: whether the
    /// socket takes UDP GSO messages.
    pub fn new(keying: &Keying, mtu: u16, path: usize, gso: bool) -> SendHalf {
        SendHalf {
            out: Outbound::new(keying.sealer(), mtu, path, gso),
            peer: None,
            keepalive_ns: 0,
            first: false,
            taught: Taught::default(),
            staged: std::collections::VecDeque::new(),
        }
    }

    /// Lowers the MSS of the TCP SYNs sent to `limit`.
    pub fn clamp_mss(mut self, limit: Option<crate::clamp::Limit>) -> Self {
        self.out = self.out.clamp_mss(limit);
        self
    }

    /// Sends a keepalive after `every` ns without sending (zero: never).
    pub fn keepalive_every(mut self, every_ns: u64) -> Self {
        self.keepalive_ns = every_ns;
        self
    }

    /// Sends one keepalive at once when a peer is known (at start, to a
    /// peer given on the command line), keepalives on or off.
    pub fn first_keepalive(mut self) -> Self {
        self.first = true;
        self
    }

    /// The peer as this half knows it.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Sends to `peer` from now on (configured, learned or moved).
    pub fn set_peer(&mut self, peer: Option<SocketAddr>) {
        self.peer = peer.map(crate::addr::canonical);
    }

    /// Seals with the new key from the next datagram on. (Confidential
    /// mode: the session stays; the receiving half renews it under the
    /// new key file.)
    pub fn set_keying(&mut self, keying: &Keying) {
        if matches!(self.out.sealer(), Sealer::Noise(_)) && keying.cipher().is_some() {
            return;
        }
        self.out.set_sealer(keying.sealer());
    }

    /// Confidential mode: seals under this session from the next datagram
    /// on (`None`: none, frames are dropped).
    pub fn set_send_key(&mut self, key: Option<Arc<SendKey>>) {
        if matches!(self.out.sealer(), Sealer::Noise(_)) {
            self.out.set_sealer(Sealer::Noise(key));
        }
    }

    /// Confidential mode: sends the frames kept while no session was up,
    /// once one is (nothing otherwise); says what became of them (`Staged`
    /// ones are counted as queued).
    pub fn send_staged(
        &mut self,
        now: u64,
        send: &mut impl FnMut(Transmit<'_>) -> Taught,
        done: &mut Flushed,
    ) -> usize {
        if self.staged.is_empty() || !self.out.sealer().ready() || self.peer.is_none() {
            return 0;
        }
        let mut n = 0;
        while let Some((at, hdr, frame)) = self.staged.pop_front() {
            if now.saturating_sub(at) > STAGED_FOR_NS {
                done.stale += 1;
                continue;
            }
            if let Pushed::Queued(_) = self.push(&hdr, &frame, now, send, done) {
                n += 1;
            }
        }
        done.add(self.flush(now, send));
        n
    }

    /// Confidential mode: the frames kept for the first session.
    pub fn staged(&self) -> usize {
        self.staged.len()
    }

    /// Confidential mode: the session sealed under.
    pub fn send_key(&self) -> Option<Arc<SendKey>> {
        match self.out.sealer() {
            Sealer::Noise(k) => k.clone(),
            Sealer::Hmac(_) => None,
        }
    }

    /// Bytes each datagram adds to its frame.
    pub fn overhead(&self) -> usize {
        self.out.sealer().overhead()
    }

    /// Follows a change of the TAP's MTU.
    pub fn set_mtu(&mut self, mtu: u16) {
        self.out.set_mtu(mtu);
    }

    /// What another half taking turns with this one needs to go on.
    pub fn handoff(&self) -> Handoff {
        Handoff {
            last_ts: self.out.last_ts(),
            taught: self.taught,
        }
    }

    /// Goes on from where another half left: seals after its last
    /// timestamp, and plans by what the kernel taught it.
    pub fn take_over(&mut self, h: Handoff) {
        self.out.follow_ts(h.last_ts);
        self.learn(h.taught);
    }

    /// Plans by what the kernel taught while sending.
    pub fn learn(&mut self, taught: Taught) {
        if taught.gso_off && !self.taught.gso_off {
            self.out.disable_gso();
            self.taught.gso_off = true;
        }
        if let Some(seg) = taught.too_large
            && self.taught.too_large.is_none_or(|s| seg < s)
        {
            self.out.gso_refused_at(seg);
            self.taught.too_large = Some(seg);
        }
    }

    /// Queues one TAP read (a frame, or a super-frame with its `hdr`).
    /// A full batch is sealed at `now` and handed to `send` first, and a
    /// batch of [`BATCH_DATAGRAMS`] or more right after. The caller calls
    /// [`SendHalf::flush`] when the TAP has nothing more to read.
    pub fn push(
        &mut self,
        hdr: &VnetHdr,
        frame: &[u8],
        now: u64,
        send: &mut impl FnMut(Transmit<'_>) -> Taught,
        done: &mut Flushed,
    ) -> Pushed {
        if !self.out.sealer().ready() {
            // Confidential mode without a session (the peer may not be
            // known yet either: a responder learns it with the session).
            if self.staged.len() >= STAGED {
                return match self.peer {
                    None => Pushed::NoPeer,
                    Some(_) => Pushed::NoSession,
                };
            }
            self.staged.push_back((now, *hdr, frame.to_vec()));
            return Pushed::Staged;
        }
        if self.peer.is_none() {
            return Pushed::NoPeer;
        }
        let mut r = self.out.push(hdr, frame);
        if r == Push::Full {
            done.add(self.flush(now, send));
            r = self.out.push(hdr, frame);
        }
        match r {
            Push::Queued(n) => {
                if self.out.len() >= BATCH_DATAGRAMS {
                    done.add(self.flush(now, send));
                }
                Pushed::Queued(n)
            }
            // Full on an empty batch: one read that alone does not fit.
            Push::Full => {
                Pushed::Dropped(Unsendable::Offload(crate::offload::OffloadError::NoRoom))
            }
            Push::Dropped(e) => Pushed::Dropped(e),
        }
    }

    /// Seals the batch at `now` and hands it to `send`; without a peer the
    /// batch is dropped (and counted in the result).
    pub fn flush(&mut self, now: u64, send: &mut impl FnMut(Transmit<'_>) -> Taught) -> Flushed {
        if self.out.is_empty() {
            return Flushed::default();
        }
        let Some(to) = self.peer else {
            return Flushed {
                no_peer: self.out.discard(),
                ..Flushed::default()
            };
        };
        let overhead = self.out.sealer().overhead();
        let batch = self.out.seal(now);
        let done = Flushed {
            sent: batch.messages.iter().map(|m| m.count).sum(),
            refused: batch.refused,
            no_peer: 0,
            stale: 0,
        };
        let taught = if batch.messages.is_empty() {
            Taught::default()
        } else {
            send(Transmit {
                to,
                overhead,
                bytes: batch.bytes,
                messages: batch.messages,
            })
        };
        self.learn(taught);
        done
    }

    /// The keepalive timer: a sealed empty datagram and where it goes when
    /// one is due at `now` (nothing sent for the interval; the first at
    /// once, so that a peer without our address learns it), else when the
    /// next is due (UNIX ns; `None`: no peer, or keepalives off).
    /// Confidential mode: idle without a session (nothing to seal under;
    /// the driver asks again once [`SendHalf::set_send_key`] gave one),
    /// rather than due again 1 ns later, which kept the sending thread
    /// spinning while the peer was away.
    pub fn keepalive<'b>(&mut self, now: u64, buf: &'b mut [u8; HEADER_LEN]) -> KeepaliveDue<'b> {
        let Some(to) = self.peer else {
            return KeepaliveDue::Idle;
        };
        if !self.out.sealer().ready() {
            return KeepaliveDue::Idle;
        }
        let every = match (self.first, self.keepalive_ns) {
            (true, _) => 0,
            (false, 0) => return KeepaliveDue::Idle,
            (false, every) => every,
        };
        let due = match self.out.keepalive(now, every, buf) {
            Keepalive::Wait(ns) => return KeepaliveDue::At(now + ns),
            Keepalive::Send(dg) => KeepaliveDue::Send(dg, to),
            Keepalive::Refused => KeepaliveDue::Refused,
        };
        self.first = false;
        due
    }

    /// When [`SendHalf::keepalive`] next has something to do (UNIX ns).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.peer?;
        if !self.out.sealer().ready() {
            return None;
        }
        if self.first {
            return Some(0);
        }
        (self.keepalive_ns > 0).then(|| self.out.last_ts().saturating_add(self.keepalive_ns))
    }

    /// Announces the TAP's `mac` and addresses to the peer (a gratuitous
    /// ARP per IPv4 address, an unsolicited neighbour advertisement per
    /// IPv6 one), so that neighbour caches naming an old MAC are corrected
    /// at once; sent at `now` through `send`. Rare (start, a peer learned):
    /// building the frames may allocate.
    pub fn announce(
        &mut self,
        mac: MacAddr,
        addrs: &[IpAddr],
        now: u64,
        send: &mut impl FnMut(Transmit<'_>) -> Taught,
    ) -> Flushed {
        let mut done = Flushed::default();
        for ip in addrs {
            let frame: Vec<u8> = match ip {
                IpAddr::V4(v4) => announce::garp(mac, *v4).to_vec(),
                IpAddr::V6(v6) => announce::unsolicited_na(mac, *v6).to_vec(),
            };
            if let Pushed::NoPeer | Pushed::NoSession | Pushed::Staged =
                self.push(&VnetHdr::default(), &frame, now, send, &mut done)
            {
                return done;
            }
        }
        done.add(self.flush(now, send));
        done
    }
}

/// What the keepalive timer says.
#[derive(Debug, PartialEq, Eq)]
pub enum KeepaliveDue<'b> {
    /// Send this sealed keepalive to this address now.
    Send(&'b [u8], SocketAddr),
    /// Nothing is due before this time (UNIX ns).
    At(u64),
    /// No peer, or keepalives are off.
    Idle,
    /// One was due but the sealer refused it (count it; nothing to send).
    Refused,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use crate::session::Keying;
    use crate::wire::Codec;

    const NOW: u64 = 1_780_000_000_000_000_000;
    const KEY: &[u8; 32] = b"a send half's test key, 32 bytes";

    fn half(gso: bool) -> SendHalf {
        let key = Key::parse(
            "YSBzZW5kIGhhbGYncyB0ZXN0IGtleSwgMzIgYnl0ZXM=",
            std::path::Path::new("k"),
        )
        .unwrap();
        assert_eq!(key.as_bytes(), KEY);
        SendHalf::new(&Keying::new(&key, None), 1418, 1472, gso)
    }

    fn peer() -> SocketAddr {
        "192.0.2.2:9123".parse().unwrap()
    }

    /// Everything a batch hands over, as (timestamp, frame length, in a GSO message).
    fn sent(t: Transmit<'_>, log: &mut Vec<(u64, usize, bool)>) -> Taught {
        let codec = Codec::new(KEY);
        for m in t.messages {
            for one in m.split() {
                let dg = codec.open(&t.bytes[one.range]).expect("authentic");
                log.push((dg.timestamp(), dg.frame().len(), m.is_gso()));
            }
        }
        Taught::default()
    }

    #[test]
    fn without_a_peer_nothing_leaves() {
        let mut tx = half(true);
        let mut log = Vec::new();
        let mut done = Flushed::default();
        let mut send = |t: Transmit<'_>| sent(t, &mut log);
        assert_eq!(
            tx.push(&VnetHdr::default(), &[1; 60], NOW, &mut send, &mut done),
            Pushed::NoPeer
        );
        assert_eq!(tx.flush(NOW, &mut send), Flushed::default());
        let mut buf = [0u8; HEADER_LEN];
        assert_eq!(tx.keepalive(NOW, &mut buf), KeepaliveDue::Idle);
        assert_eq!(tx.poll_timeout(), None);
        assert!(log.is_empty());
    }

    #[test]
    fn first_keepalive_at_once_then_after_silence() {
        let mut tx = half(true).keepalive_every(25).first_keepalive();
        tx.set_peer(Some(peer()));
        let mut buf = [0u8; HEADER_LEN];
        assert_eq!(tx.poll_timeout(), Some(0));
        assert!(matches!(tx.keepalive(NOW, &mut buf), KeepaliveDue::Send(_, p) if p == peer()));
        assert_eq!(tx.poll_timeout(), Some(NOW + 25));
        assert_eq!(tx.keepalive(NOW + 10, &mut buf), KeepaliveDue::At(NOW + 25));
        assert!(matches!(
            tx.keepalive(NOW + 25, &mut buf),
            KeepaliveDue::Send(..)
        ));
        // Off: only the first one.
        let mut off = half(true).first_keepalive();
        off.set_peer(Some(peer()));
        assert!(matches!(
            off.keepalive(NOW, &mut buf),
            KeepaliveDue::Send(..)
        ));
        assert_eq!(
            off.keepalive(NOW + 1_000_000_000_000, &mut buf),
            KeepaliveDue::Idle
        );
        assert_eq!(off.poll_timeout(), None);
    }

    /// Two halves sending to one peer in turns, each taking over from the
    /// other: every timestamp is greater than all sealed before it, by
    /// either half, even when the second half's clock reads earlier; and
    /// what the kernel taught one half, the other plans by.
    #[test]
    fn halves_taking_turns_keep_timestamps_rising_and_learn_once() {
        let (mut a, mut b) = (half(true), half(true));
        a.set_peer(Some(peer()));
        b.set_peer(Some(peer()));
        let mut log = Vec::new();
        let mut done = Flushed::default();
        for i in 0..6u64 {
            let (me, other) = if i % 2 == 0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            me.take_over(other.handoff());
            // The second half's clock lags: NOW - i.
            let now = NOW - i;
            let mut send = |t: Transmit<'_>| sent(t, &mut log);
            for _ in 0..10 {
                me.push(&VnetHdr::default(), &[7; 100], now, &mut send, &mut done);
            }
            me.flush(now, &mut send);
            if i == 1 {
                me.learn(Taught {
                    gso_off: true,
                    too_large: None,
                });
            }
        }
        assert_eq!(log.len(), 60);
        assert!(log.windows(2).all(|w| w[0].0 < w[1].0), "{log:?}");
        // Batches 0 and 1 went as GSO runs; after b learnt GSO off (and a
        // took over from b), none did.
        assert!(log[..20].iter().all(|d| d.2));
        assert!(log[20..].iter().all(|d| !d.2), "{log:?}");
    }

    /// Confidential mode: frames read before the first session are kept
    /// (up to STAGED) and leave, in order, once it is up.
    #[test]
    fn frames_wait_for_the_first_session() {
        use crate::aead::Cipher;
        use crate::noise::{RecvKey, SendKey};
        let key = Key::parse(
            "YSBzZW5kIGhhbGYncyB0ZXN0IGtleSwgMzIgYnl0ZXM=",
            std::path::Path::new("k"),
        )
        .unwrap();
        let c = Cipher::Aes256Gcm;
        let mut tx = SendHalf::new(&Keying::new(&key, Some((c, [1; 32]))), 1418, 1472, true);
        tx.set_peer(Some(peer()));
        let mut done = Flushed::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut rx = RecvKey::new(c, &[5; 32]);
        let mut send = |t: Transmit<'_>| {
            for m in t.messages {
                for one in m.split() {
                    let mut d = t.bytes[one.range].to_vec();
                    let o = rx.open(&mut d).expect("authentic");
                    got.push(d[o.frame].to_vec());
                }
            }
            Taught::default()
        };
        for i in 0..STAGED as u8 {
            assert_eq!(
                tx.push(&VnetHdr::default(), &[i; 60], NOW, &mut send, &mut done),
                Pushed::Staged
            );
        }
        assert_eq!(
            tx.push(&VnetHdr::default(), &[0xff; 60], NOW, &mut send, &mut done),
            Pushed::NoSession
        );
        assert_eq!(
            tx.send_staged(NOW, &mut send, &mut done),
            0,
            "no session yet"
        );
        tx.set_send_key(Some(std::sync::Arc::new(SendKey::new(
            c, &[5; 32], 1, 2, 0,
        ))));
        assert_eq!(tx.send_staged(NOW, &mut send, &mut done), STAGED);
        assert_eq!(tx.staged(), 0);
        assert_eq!(got.len(), STAGED);
        assert!(got.iter().enumerate().all(|(i, f)| f == &[i as u8; 60]));
    }
}
