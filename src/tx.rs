//! The send path as pure code: frames and super-frames read from the TAP
//! go in, sealed datagrams and the plan of one `sendmmsg` call come out.
//! The caller passes `now`; nothing here reads a clock or touches a
//! socket, so tests run two peers in memory (`tests/pair.rs`) and the
//! engine's sending threads (through `session::SendHalf`) only do the
//! system calls.

use crate::batch::{self, Limits, Message};
use crate::clamp;
use crate::ecn::{self, Ecn};
use crate::noise::{self, SendKey};
use crate::offload::{self, GSO_NONE, OffloadError, VnetHdr};
use crate::wire::{Codec, HEADER_LEN};
use std::ops::Range;
use std::sync::Arc;

/// How datagrams are sealed: tinytaptunnel's HMAC wire (the default, 40
/// bytes before the frame), or the confidential mode (`--cipher`: 16
/// before, 16 after).
#[derive(Debug, Clone)]
// One per sending half, matched per datagram: boxing the codec would cost
// the HMAC wire's hot path an indirection to save a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum Sealer {
    /// `HMAC ‖ timestamp ‖ frame`.
    Hmac(Codec),
    /// `type ‖ receiver index ‖ counter ‖ encrypted frame ‖ tag`, under
    /// the current session's key (`None`: no session yet).
    Noise(Option<Arc<SendKey>>),
}

impl From<Codec> for Sealer {
    fn from(c: Codec) -> Self {
        Sealer::Hmac(c)
    }
}

impl Sealer {
    /// Free bytes before and after each frame.
    fn room(&self) -> (usize, usize) {
        match self {
            Sealer::Hmac(_) => (HEADER_LEN, 0),
            Sealer::Noise(_) => (noise::wire::HEADER_LEN, noise::wire::TAG_LEN),
        }
    }

    /// Seals one datagram in place at `ts`.
    fn seal(&mut self, ts: u64, buf: &mut [u8]) -> Result<(), SealError> {
        match self {
            Sealer::Hmac(c) => c.seal(ts, buf).map_err(|_| SealError),
            Sealer::Noise(Some(k)) => k.seal(buf).map_err(|_| SealError),
            Sealer::Noise(None) => Err(SealError),
        }
    }

    /// Bytes a datagram adds to its frame.
    pub fn overhead(&self) -> usize {
        let (h, t) = self.room();
        h + t
    }

    /// Whether datagrams can be sealed now (the confidential mode needs a
    /// session).
    pub fn ready(&self) -> bool {
        !matches!(self, Sealer::Noise(None))
    }
}

/// A datagram the sealer refused (a buffer without room, or an AEAD
/// nonce not above the last one): it is never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealError;

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the sealer refused the datagram")
    }
}

// MTUs and buffers are sized by the HMAC wire's overhead, the larger: the
// confidential mode's datagrams are 8 bytes shorter for the same frame.
const _: () = assert!(noise::wire::OVERHEAD <= HEADER_LEN);

/// Largest TAP MTU taptun carries (jumbo frames): `--mtu` above it is
/// refused, and a receiver drops datagrams too large for it unread.
pub const MAX_MTU: u16 = 9000;
/// Largest datagram a peer can send: a frame of [`MAX_MTU`] with its
/// Ethernet and VLAN headers, sealed.
pub const MAX_DATAGRAM: usize = HEADER_LEN + MAX_MTU as usize + 14 + 4;
/// Largest Ethernet frame (or super-frame) one TAP read can return.
pub const MAX_FRAME: usize = 65535;
/// A batch is due for sending once it holds this many datagrams: one full
/// GSO message of small frames.
pub const BATCH_DATAGRAMS: usize = batch::MAX_SEGMENTS;
/// Room for the datagrams of one batch: a super-frame's payload plus, per
/// segment, the taptun header and the copied Ethernet/IP/TCP headers.
const BATCH_BUF: usize = MAX_FRAME + 512 * (HEADER_LEN + 128);

/// What [`Outbound::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued as this many datagrams.
    Queued(usize),
    /// The batch has no room left: seal and send it, then push again.
    Full,
    /// Not sendable; the frame is dropped.
    Dropped(Unsendable),
}

/// Why a frame read from the TAP cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsendable {
    /// Longer than the TAP's MTU allows (`max` bytes with Ethernet and VLAN headers).
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The longest frame the MTU allows.
        max: usize,
    },
    /// A super-frame that cannot be cut, or bad checksum offsets.
    Offload(OffloadError),
}

impl std::fmt::Display for Unsendable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsendable::TooLarge { len, max } => write!(
                f,
                "frame of {len} bytes is longer than the MTU allows ({max} bytes with Ethernet and VLAN headers)"
            ),
            Unsendable::Offload(e) => write!(f, "{e}"),
        }
    }
}

/// One sealed batch: datagrams back to back in `bytes`, grouped into the
/// messages of one `sendmmsg` call (runs of equal-sized datagrams share
/// one UDP GSO message when GSO is on).
#[derive(Debug)]
pub struct Batch<'a> {
    /// The sealed datagrams, back to back.
    pub bytes: &'a [u8],
    /// The messages, in send order, as ranges of `bytes`.
    pub messages: &'a [Message],
    /// Datagrams the sealer refused: left out of every message (their
    /// bytes wiped), to be counted (the `seal_errors` counter).
    pub refused: usize,
}

/// The sending half of one peer: the key it seals with, the timestamps it
/// has used, and the batch being assembled. Buffers are allocated once.
#[derive(Debug)]
pub struct Outbound {
    sealer: Sealer,
    /// A frame longer than MTU + Ethernet + VLAN header cannot be what the
    /// kernel meant to send.
    max_frame: usize,
    /// How datagrams may share a message (UDP GSO).
    limits: Limits,
    /// The last timestamp sealed: each datagram gets a greater one, so the
    /// peer's replay window never sees a tie.
    last_ts: u64,
    /// Datagrams of the batch, back to back from offset 0.
    out: Vec<u8>,
    /// Where each datagram of the batch is in `out`, in send order.
    spans: Vec<Range<usize>>,
    /// The outer ECN field of each datagram in `spans` (same index): its
    /// frame's, the super-frame's for all of a super-frame's segments.
    ecn: Vec<Ecn>,
    /// Scratch: the datagrams of the frame being cut.
    cut: Vec<Range<usize>>,
    msgs: Vec<Message>,
    /// Whether the batch in `out` was handed out sealed; the next push
    /// starts a new one.
    sealed: bool,
    /// How the MSS of TCP SYNs sent is lowered, if at all.
    clamp: Option<clamp::Limit>,
}

impl Outbound {
    /// A sender sealing with `codec`, for a TAP of `mtu` bytes, whose
    /// datagrams cross the underlay unfragmented up to `path` bytes (UDP
    /// payload); `gso`: whether the socket takes UDP GSO messages.
    pub fn new(sealer: impl Into<Sealer>, mtu: u16, path: usize, gso: bool) -> Self {
        let mut limits = Limits::gso(path);
        if !gso {
            limits.max_segs = 1;
        }
        Outbound {
            sealer: sealer.into(),
            max_frame: max_frame(mtu),
            limits,
            last_ts: 0,
            out: vec![0u8; BATCH_BUF],
            spans: Vec::with_capacity(1024),
            ecn: Vec::with_capacity(1024),
            cut: Vec::with_capacity(512),
            msgs: Vec::with_capacity(1024),
            sealed: false,
            clamp: None,
        }
    }

    /// Lowers the MSS of the TCP SYNs this sender sends to `limit`.
    pub fn clamp_mss(mut self, limit: Option<clamp::Limit>) -> Self {
        self.clamp = limit;
        self
    }

    /// Seals with `sealer` from now on (key rotation, a new session).
    pub fn set_sealer(&mut self, sealer: impl Into<Sealer>) {
        self.sealer = sealer.into();
    }

    /// The sealer in use.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Plans one datagram per message from now on (the kernel refused GSO).
    pub fn disable_gso(&mut self) {
        self.limits.max_segs = 1;
    }

    /// Sends datagrams of `seg` bytes or more one per message from now on:
    /// the kernel refused a GSO message of them (they exceed the route's
    /// MTU and need fragmenting, which GSO does not do).
    pub fn gso_refused_at(&mut self, seg: usize) {
        self.limits.max_seg = self.limits.max_seg.min(seg.saturating_sub(1));
    }

    /// Follows a change of the TAP's MTU.
    pub fn set_mtu(&mut self, mtu: u16) {
        self.max_frame = max_frame(mtu);
    }

    /// The last timestamp sealed (0: none yet).
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    /// Seals after `ts` from now on: another sender of the same peer (the
    /// engine's reply path) sealed up to `ts`, and every datagram to a peer
    /// gets a timestamp greater than the last, whoever sealed it.
    pub fn follow_ts(&mut self, ts: u64) {
        self.last_ts = self.last_ts.max(ts);
    }

    /// How many datagrams the batch holds.
    pub fn len(&self) -> usize {
        if self.sealed { 0 } else { self.spans.len() }
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cuts one TAP read (a frame, or a super-frame with its `hdr`) into
    /// datagrams at the end of the batch.
    pub fn push(&mut self, hdr: &VnetHdr, frame: &[u8]) -> Push {
        if self.sealed {
            self.spans.clear();
            self.ecn.clear();
            self.sealed = false;
        }
        if hdr.gso_type == GSO_NONE && frame.len() > self.max_frame {
            return Push::Dropped(Unsendable::TooLarge {
                len: frame.len(),
                max: self.max_frame,
            });
        }
        let at = self.spans.last().map_or(0, |s| s.end);
        let (head, tail) = self.sealer.room();
        let r = offload::segment_with_room(
            hdr,
            frame,
            self.max_frame,
            (head, tail),
            &mut self.out[at..],
            &mut self.cut,
        );
        match r {
            Ok(()) => {
                // SYNs are never super-frames, and their checksum is
                // complete only now, after `segment`: clamp here.
                if let Some(limit) = self.clamp
                    && hdr.gso_type == GSO_NONE
                    && let Some(s) = self.cut.first()
                {
                    clamp::clamp(&mut self.out[at + s.start + head..at + s.end - tail], limit);
                }
                self.spans
                    .extend(self.cut.iter().map(|s| s.start + at..s.end + at));
                // RFC 6040: the outer header copies the inner ECN field. A
                // super-frame's segments copy its IP header, so its ECN.
                let ecn = ecn::of_frame(frame);
                self.ecn.extend(std::iter::repeat_n(ecn, self.cut.len()));
                Push::Queued(self.cut.len())
            }
            Err(OffloadError::NoRoom) if at > 0 => Push::Full,
            Err(e) => Push::Dropped(Unsendable::Offload(e)),
        }
    }

    /// Seals every datagram of the batch with distinct, increasing
    /// timestamps from `now` (UNIX ns) and plans the messages. The batch
    /// stays readable until the next push.
    pub fn seal(&mut self, now: u64) -> Batch<'_> {
        if self.sealed {
            self.spans.clear();
            self.ecn.clear();
        }
        let last = &mut self.last_ts;
        let mut refused = 0;
        match &mut self.sealer {
            // The tags in lanes; refused whole when a span has no room for
            // the header (nothing is written then).
            Sealer::Hmac(c) => {
                if c.seal_spans(&mut self.out, &self.spans, || next_ts(last, now))
                    .is_err()
                {
                    refused = self.spans.len();
                    self.spans.clear();
                    self.ecn.clear();
                }
            }
            // A datagram the key refuses still holds its frame in the
            // clear: wiped, and left out of the batch. (The timestamp only
            // times the keepalive: the counter is the nonce.)
            Sealer::Noise(k) => {
                let out = &mut self.out;
                // The datagrams kept move down, each with its ECN.
                let mut kept = 0;
                for i in 0..self.spans.len() {
                    let span = self.spans[i].clone();
                    next_ts(last, now);
                    let sealed = k
                        .as_ref()
                        .is_some_and(|k| k.seal(&mut out[span.clone()]).is_ok());
                    if sealed {
                        self.spans[kept] = span;
                        self.ecn[kept] = self.ecn[i];
                        kept += 1;
                    } else {
                        out[span].fill(0);
                        refused += 1;
                    }
                }
                self.spans.truncate(kept);
                self.ecn.truncate(kept);
            }
        }
        self.msgs.clear();
        batch::plan(&self.spans, &self.ecn, self.limits, &mut self.msgs);
        self.sealed = true;
        let end = self.spans.last().map_or(0, |s| s.end);
        Batch {
            bytes: &self.out[..end],
            messages: &self.msgs,
            refused,
        }
    }

    /// Forgets the batch unsent (no peer to send it to).
    pub fn discard(&mut self) -> usize {
        let n = self.len();
        self.spans.clear();
        self.ecn.clear();
        self.sealed = false;
        n
    }

    /// The keepalive timer, driven by the caller's clock: a sealed
    /// keepalive (a datagram with no frame, in `buf`) when nothing was
    /// sealed for `every` ns up to `now`, else how many ns until one is due.
    pub fn keepalive<'b>(
        &mut self,
        now: u64,
        every: u64,
        buf: &'b mut [u8; HEADER_LEN],
    ) -> Keepalive<'b> {
        let due = self.last_ts.saturating_add(every);
        if self.last_ts != 0 && now < due {
            return Keepalive::Wait(due - now);
        }
        if !self.sealer.ready() {
            return Keepalive::Wait(every.max(1));
        }
        let ts = next_ts(&mut self.last_ts, now);
        let n = self.sealer.overhead();
        match self.sealer.seal(ts, &mut buf[..n]) {
            Ok(()) => Keepalive::Send(&buf[..n]),
            Err(_) => Keepalive::Refused,
        }
    }
}

/// What the keepalive timer says.
#[derive(Debug, PartialEq, Eq)]
pub enum Keepalive<'b> {
    /// Send this sealed keepalive now.
    Send(&'b [u8]),
    /// Nothing is due for this many ns.
    Wait(u64),
    /// One was due, but the sealer refused it: nothing to send.
    Refused,
}

/// A timestamp greater than `last` (the last one sealed), at or after
/// `now`; it becomes `last`.
fn next_ts(last: &mut u64, now: u64) -> u64 {
    *last = now.max(last.saturating_add(1));
    *last
}

/// The longest frame a TAP of `mtu` bytes can mean to send: MTU plus
/// the Ethernet header and one VLAN tag.
fn max_frame(mtu: u16) -> usize {
    usize::from(mtu) + 14 + 4
}

/// How many frame bytes a message carries (its datagrams less their
/// `overhead` each).
pub fn frame_bytes(m: &Message, overhead: usize) -> usize {
    m.range.len() - m.count * overhead
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::GSO_TCPV4;
    use crate::wire::Codec;

    const NOW: u64 = 1_763_900_000_000_000_000;

    fn codec() -> Codec {
        Codec::new(b"0123456789abcdef0123456789abcdef")
    }

    fn frames_of<'a>(c: &Codec, b: &Batch<'a>) -> Vec<(u64, &'a [u8])> {
        let mut v = Vec::new();
        for m in b.messages {
            for one in m.split() {
                let dg = c.open(&b.bytes[one.range]).expect("authentic");
                v.push((dg.timestamp(), dg.into_frame()));
            }
        }
        v
    }

    #[test]
    fn frames_sealed_in_order_with_increasing_timestamps() {
        let mut ob = Outbound::new(codec(), 1418, 1472, true);
        let frames: Vec<Vec<u8>> = (0..10u8)
            .map(|i| vec![i; 60 + usize::from(i % 2)])
            .collect();
        for f in &frames {
            assert_eq!(ob.push(&VnetHdr::default(), f), Push::Queued(1));
        }
        assert_eq!(ob.len(), 10);
        let b = ob.seal(NOW);
        let got = frames_of(&codec(), &b);
        assert_eq!(got.len(), 10);
        for (i, (ts, f)) in got.iter().enumerate() {
            assert_eq!(*ts, NOW + i as u64);
            assert_eq!(*f, &frames[i][..]);
        }
        // A datagram joins a GSO message of its size or ends one larger:
        // 60 alone (61 is longer), then 61 + 60 four times, then the last 61.
        let counts: Vec<usize> = b.messages.iter().map(|m| m.count).collect();
        assert_eq!(counts, [1, 2, 2, 2, 2, 1]);
        // The next push starts a new batch; time never goes back.
        assert_eq!(ob.len(), 0);
        ob.push(&VnetHdr::default(), &frames[0]);
        let b = ob.seal(NOW - 1_000_000);
        assert_eq!(frames_of(&codec(), &b)[0].0, NOW + 10);
    }

    /// RFC 6040: each datagram's outer ECN is its frame's, a
    /// super-frame's segments all get the super-frame's, and datagrams of
    /// different ECN never share a GSO message (the socket sets one ECN
    /// per message); with a key that refuses some, the rest keep theirs.
    #[test]
    fn each_message_carries_its_frames_ecn() {
        use crate::offload::headers::{Ipv4Packet, Ipv6Packet, tcp_flags};
        use crate::offload::testutil::{super_frame, tcp_frame};
        let with = |mut f: Vec<u8>, v6: bool, e: Ecn| {
            if v6 {
                Ipv6Packet::new_unchecked(&mut f[14..]).set_ecn(e.bits());
            } else {
                Ipv4Packet::new_unchecked(&mut f[14..]).set_ecn(e.bits());
            }
            f
        };
        let small =
            |v6: bool, e: Ecn| with(tcp_frame(v6, false, tcp_flags::ACK, &[], &[7; 40]), v6, e);
        let mut ob = Outbound::new(codec(), 1500, 1472, true);
        ob.push(&VnetHdr::default(), &small(false, Ecn::Ect0));
        ob.push(&VnetHdr::default(), &small(false, Ecn::Ect0));
        ob.push(&VnetHdr::default(), &small(false, Ecn::NotEct));
        ob.push(&VnetHdr::default(), &small(true, Ecn::Ect1));
        let (hdr, sup) = super_frame(false, 4000, tcp_flags::ACK);
        let sup = with(sup, false, Ecn::Ce);
        let Push::Queued(n) = ob.push(&hdr, &sup) else {
            panic!("super-frame refused")
        };
        assert!(n > 1);
        ob.push(&VnetHdr::default(), &[0u8; 60]); // not IP: Not-ECT
        let b = ob.seal(NOW);
        let got: Vec<(usize, Ecn)> = b.messages.iter().map(|m| (m.count, m.ecn)).collect();
        assert_eq!(
            got[..3],
            [(2, Ecn::Ect0), (1, Ecn::NotEct), (1, Ecn::Ect1)],
            "{got:?}"
        );
        // The segments: CE, whatever messages they make.
        let ce: usize = got[3..got.len() - 1]
            .iter()
            .map(|&(c, e)| {
                assert_eq!(e, Ecn::Ce);
                c
            })
            .sum();
        assert_eq!(ce, n);
        assert_eq!(got.last(), Some(&(1, Ecn::NotEct)));
        // Each datagram's frame has the ECN its message carries.
        for m in b.messages {
            for one in m.split() {
                let dg = codec().open(&b.bytes[one.range]).unwrap();
                let f = dg.frame();
                if f[12..14] != [0, 0] {
                    assert_eq!(ecn::of_frame(f), m.ecn);
                }
            }
        }
    }

    #[test]
    fn no_gso_one_datagram_per_message() {
        let mut ob = Outbound::new(codec(), 1418, 1472, true);
        ob.disable_gso();
        for _ in 0..5 {
            ob.push(&VnetHdr::default(), &[7u8; 100]);
        }
        let b = ob.seal(NOW);
        assert_eq!(b.messages.len(), 5);
        assert!(b.messages.iter().all(|m| m.count == 1));
        assert_eq!(
            b.messages
                .iter()
                .map(|m| frame_bytes(m, HEADER_LEN))
                .sum::<usize>(),
            500
        );
    }

    #[test]
    fn oversize_and_uncuttable_dropped() {
        let mut ob = Outbound::new(codec(), 1418, 1472, true);
        assert_eq!(
            ob.push(&VnetHdr::default(), &[0u8; 1418 + 18 + 1]),
            Push::Dropped(Unsendable::TooLarge {
                len: 1437,
                max: 1436
            })
        );
        assert_eq!(
            ob.push(&VnetHdr::default(), &[0u8; 1418 + 18]),
            Push::Queued(1)
        );
        // A "TSO" super-frame that is not TCP cannot be cut.
        let hdr = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            ..VnetHdr::default()
        };
        assert!(matches!(ob.push(&hdr, &[0u8; 3000]), Push::Dropped(_)));
        assert_eq!(ob.len(), 1);
    }

    #[test]
    fn full_batch_asks_to_be_sent() {
        let mut ob = Outbound::new(codec(), 9000, 1472, true);
        let big = vec![1u8; 9000];
        let mut queued = 0;
        loop {
            match ob.push(&VnetHdr::default(), &big) {
                Push::Queued(1) => queued += 1,
                Push::Full => break,
                other => panic!("{other:?}"),
            }
            assert!(queued < 100, "never full");
        }
        assert_eq!(ob.len(), queued);
        let n = ob.seal(NOW).messages.iter().map(|m| m.count).sum::<usize>();
        assert_eq!(n, queued);
        assert_eq!(ob.push(&VnetHdr::default(), &big), Push::Queued(1));
    }

    /// A key that refuses to seal (its counters spent, or no session at
    /// all): every datagram it refuses is left out of the batch and
    /// counted, its bytes wiped, and nothing sent carries a frame's bytes.
    #[test]
    fn refused_seals_never_leave_and_leak_nothing() {
        use crate::aead::Cipher;
        use crate::noise::transport::REJECT_AFTER_MESSAGES;
        let mut rng = crate::offload::testutil::XorShift(0x1234_5678_9abc_def1);
        for cipher in Cipher::ALL {
            for round in 0..40u64 {
                // The key seals `left` more datagrams, then refuses; a
                // round in four has no session at all.
                let left = rng.next() % 200;
                let key = (round % 4 != 3).then(|| {
                    let k = SendKey::new(cipher, &[7; 32], 1, 2, 0);
                    k.skip_to(REJECT_AFTER_MESSAGES - left);
                    Arc::new(k)
                });
                let none = key.is_none();
                let mut ob = Outbound::new(Sealer::Noise(key), 1418, 1472, round % 2 == 0);
                let n = 1 + (rng.next() % 150) as usize;
                // Frames of a recognisable byte pattern (never all zero).
                let frames: Vec<Vec<u8>> = (0..n)
                    .map(|i| vec![0xa0 | (i % 16) as u8; 60 + (rng.next() % 3) as usize * 500])
                    .collect();
                for f in &frames {
                    if ob.push(&VnetHdr::default(), f) == Push::Full {
                        break;
                    }
                }
                let queued = ob.len();
                let b = ob.seal(NOW);
                let sent: usize = b.messages.iter().map(|m| m.count).sum();
                let ok = if none { 0 } else { (left as usize).min(queued) };
                assert_eq!(
                    (b.refused, sent),
                    (queued - ok, ok),
                    "{cipher} round {round}"
                );
                // The whole buffer holds no run of a frame's plaintext.
                for w in b.bytes.windows(16) {
                    assert!(
                        !w.iter().all(|&x| x & 0xf0 == 0xa0 && x == w[0]),
                        "{cipher}: plaintext in the batch"
                    );
                }
            }
        }
    }

    #[test]
    fn keepalive_only_after_silence() {
        let mut ob = Outbound::new(codec(), 1418, 1472, true);
        let mut buf = [0u8; HEADER_LEN];
        // Nothing sent yet: one is due at once (it lets the peer learn us).
        let Keepalive::Send(ka) = ob.keepalive(NOW, 25, &mut buf) else {
            panic!("due at start")
        };
        let dg = codec().open(ka).unwrap();
        assert_eq!((dg.timestamp(), dg.frame().len()), (NOW, 0));
        assert_eq!(ob.keepalive(NOW + 10, 25, &mut buf), Keepalive::Wait(15));
        // Traffic postpones it.
        ob.push(&VnetHdr::default(), &[1u8; 60]);
        let _ = ob.seal(NOW + 20);
        assert_eq!(ob.keepalive(NOW + 30, 25, &mut buf), Keepalive::Wait(15));
        assert!(matches!(
            ob.keepalive(NOW + 45, 25, &mut buf),
            Keepalive::Send(_)
        ));
        assert_eq!(ob.discard(), 0);
    }
}
