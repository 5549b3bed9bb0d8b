//! A session's receiving half: datagram runs from the socket in, frames for
//! the TAP out (coalesced into super-frames when the TAP takes them), with
//! a tally of what happened for the counters and the log watch.

use super::Keying;
use crate::ecn::Ecn;
use crate::offload::Coalescer;
use crate::rx::{Inbound, Tally};
use std::net::SocketAddr;

/// A session's receiving half. Pure: `now` (UNIX ns) is an argument, and
/// the frames leave through the `write` callback the caller passes.
#[derive(Debug)]
pub struct RecvHalf {
    inbound: Inbound,
    /// With TAP offloads: runs of TCP segments (and UDP datagrams) that
    /// arrive together go to the TAP as one super-frame.
    coalescer: Option<Coalescer>,
}

impl RecvHalf {
    /// A receiving half opening with `keying`, accepting timestamps within
    /// `max_age_ns` of now, from `peer` if known (else it is learned).
    pub fn new(keying: &Keying, max_age_ns: u64, peer: Option<SocketAddr>) -> RecvHalf {
        let inbound = Inbound::new(keying.keys(), max_age_ns, peer);
        let inbound = match keying.cipher() {
            // The HMAC wire names a peer started with --cipher.
            None => inbound.detect_confidential(keying.key_bytes()),
            Some(_) => inbound,
        };
        RecvHalf {
            inbound,
            coalescer: None,
        }
    }

    /// Lowers the MSS of the TCP SYNs delivered to `limit`.
    pub fn clamp_mss(mut self, limit: Option<crate::clamp::Limit>) -> Self {
        self.inbound = self.inbound.clamp_mss(limit);
        self
    }

    /// Writes `VnetHdr ‖ frame` (the TAP has offloads on), coalescing runs
    /// of TCP segments, and of UDP datagrams when `udp` is set.
    pub fn coalesce(mut self, udp: bool) -> Self {
        self.coalescer = Some(Coalescer::new().with_udp(udp));
        self
    }

    /// The peer as this half knows it.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.inbound.peer()
    }

    /// Takes `peer` as the peer (the address its name now resolves to);
    /// datagrams from elsewhere move it again, as from any address.
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.inbound.set_peer(peer);
    }

    /// Opens with the new key from now on; the old one is accepted for the
    /// maximum age, for what the peer sealed before it switched.
    pub fn rotate(&mut self, keying: &Keying, now: u64) {
        self.inbound.rotate(keying.keys(), now);
    }

    /// The receiver's queue is congested: the next frame delivered is
    /// marked CE, or dropped if not ECN-capable (see
    /// [`crate::rx::Inbound::signal_congestion`]).
    pub fn signal_congestion(&mut self) {
        self.inbound.signal_congestion();
    }

    /// Confidential mode: the handshake timers at `now` (answers and
    /// initiations wait in [`RecvHalf::outbox`]).
    pub fn poll(&mut self, now: u64) {
        self.inbound.poll(now);
    }

    /// Confidential mode: when [`RecvHalf::poll`] next has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.inbound.poll_timeout()
    }

    /// Confidential mode: whether a message waits to be sent or the
    /// sealing key changed (the driver's cue to do more than poll).
    pub fn handshake_news(&self) -> bool {
        self.inbound.handshake_news()
    }

    /// Handshake messages to send.
    pub fn outbox(&mut self) -> &mut crate::noise::Outbox {
        self.inbound.outbox()
    }

    /// Confidential mode: the sealing key, when it changed.
    pub fn take_send_key(&mut self) -> Option<Option<std::sync::Arc<crate::noise::SendKey>>> {
        self.inbound.take_send_key()
    }

    /// Confidential mode: the sessions' facts.
    pub fn session_status(&self) -> Option<crate::noise::SessionStatus> {
        self.inbound.session_status()
    }

    /// Confidential mode: the session indices datagrams may name to reach
    /// this half (its sessions', its initiation's in flight).
    pub fn session_indices(&self) -> [Option<u32>; crate::noise::INDICES] {
        self.inbound.session_indices()
    }

    /// Confidential mode: keeps one key-log line per new session.
    pub fn with_keylog(mut self) -> Self {
        self.inbound = self.inbound.with_keylog();
        self
    }

    /// Key-log lines of the sessions made since the last call.
    pub fn take_keylog(&mut self) -> Vec<String> {
        self.inbound.take_keylog()
    }

    /// Checks each datagram of one receive from `src` at `now` (`run`:
    /// datagrams of `segment` bytes, a UDP GRO run, or one datagram, whose
    /// outer IP header had the ECN field `outer`) and hands what goes to
    /// the TAP to `write`, in order, `outer` decapsulated into each frame
    /// before coalescing (see [`Inbound::receive_run`]).
    pub fn receive(
        &mut self,
        run: &mut [u8],
        segment: Option<usize>,
        outer: Ecn,
        src: SocketAddr,
        now: u64,
        write: &mut impl FnMut(&[u8]),
    ) -> Tally {
        let co = &mut self.coalescer;
        let t =
            self.inbound.receive_run(
                run,
                segment,
                outer,
                src,
                now,
                &mut |frame| match co.as_mut() {
                    Some(co) => co.push(frame, write),
                    None => write(frame),
                },
            );
        if let Some(co) = co.as_mut() {
            co.flush(write);
        }
        t
    }
}
