//! Planning one `sendmmsg` call for a batch of sealed datagrams.
//!
//! The sending thread drains every frame the TAP has queued, seals each
//! into its own datagram, contiguous in one buffer, and sends them all in
//! one system call. Runs of equal-sized datagrams become one message with
//! UDP GSO, so the kernel moves them through its stack as one packet; the
//! rest go one datagram per message. A message's datagrams share one
//! outer ECN field (the socket sets it per message), so datagrams of
//! different ECN never share one. Pure: no I/O, so it is unit-tested.

use crate::ecn::Ecn;
use std::ops::Range;

/// Most datagrams the kernel accepts in one GSO message (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes of UDP payload in one GSO message (under the 64 KiB IP limit
/// with room for the IPv6 and UDP headers).
pub const MAX_GSO_BYTES: usize = 65_000;

/// One message of a `sendmmsg` call: `count` datagrams of `seg` bytes each
/// (the last may be shorter), contiguous at `range` of the batch buffer,
/// all sent with the outer ECN field `ecn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Where the message's bytes are in the batch buffer.
    pub range: Range<usize>,
    /// Size of each datagram but the last; the GSO segment size when `count > 1`.
    pub seg: usize,
    /// How many datagrams the message carries.
    pub count: usize,
    /// The ECN field of the datagrams' IP header: their frames' (RFC
    /// 6040); Not-ECT needs no cmsg.
    pub ecn: Ecn,
}

impl Message {
    /// Whether the message needs UDP GSO (more than one datagram).
    pub fn is_gso(&self) -> bool {
        self.count > 1
    }

    /// The datagrams of the message, each as its own single message: the
    /// fallback when the kernel refuses GSO for this one.
    pub fn split(&self) -> impl Iterator<Item = Message> + '_ {
        let (start, end, seg) = (self.range.start, self.range.end, self.seg.max(1));
        let ecn = self.ecn;
        (start..end).step_by(seg).map(move |s| {
            let e = (s + seg).min(end);
            Message {
                range: s..e,
                seg: e - s,
                count: 1,
                ecn,
            }
        })
    }
}

/// How large a GSO message may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most datagrams in one message; 1 turns GSO off.
    pub max_segs: usize,
    /// Most bytes in one message.
    pub max_bytes: usize,
    /// Largest datagram that may share a message: the kernel refuses GSO
    /// segments that do not fit the route's MTU, and such datagrams must
    /// go alone, to be fragmented.
    pub max_seg: usize,
}

impl Limits {
    /// The kernel's limits, for datagrams of at most `max_seg` bytes.
    pub fn gso(max_seg: usize) -> Limits {
        Limits {
            max_segs: MAX_SEGMENTS,
            max_bytes: MAX_GSO_BYTES,
            max_seg,
        }
    }
}

/// Groups `spans` (datagrams in send order, each with the outer ECN field
/// of the same index in `ecn`; missing entries are Not-ECT) into
/// messages, appended to `out`. A run of contiguous datagrams of one size
/// (at most `limits.max_seg`) and one ECN, optionally ended by one shorter
/// datagram, becomes one message within `limits`; any other datagram goes
/// alone.
pub fn plan(spans: &[Range<usize>], ecn: &[Ecn], limits: Limits, out: &mut Vec<Message>) {
    let ecn_of = |i: usize| ecn.get(i).copied().unwrap_or_default();
    let mut i = 0;
    while i < spans.len() {
        let first = &spans[i];
        let seg = first.len();
        let mut m = Message {
            range: first.clone(),
            seg,
            count: 1,
            ecn: ecn_of(i),
        };
        i += 1;
        let max_segs = if seg > limits.max_seg {
            1
        } else {
            limits.max_segs
        };
        let max_bytes = limits.max_bytes;
        while i < spans.len() && m.count < max_segs {
            let s = &spans[i];
            let fits = s.start == m.range.end
                && ecn_of(i) == m.ecn
                && s.len() <= seg
                && !s.is_empty()
                && m.range.len() + s.len() <= max_bytes;
            if !fits {
                break;
            }
            m.range.end = s.end;
            m.count += 1;
            i += 1;
            if s.len() < seg {
                // A shorter datagram can only end a GSO run.
                break;
            }
        }
        out.push(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lays out datagrams of the given sizes back to back from offset 0.
    fn layout(sizes: &[usize]) -> Vec<Range<usize>> {
        let mut at = 0;
        sizes
            .iter()
            .map(|&n| {
                at += n;
                at - n..at
            })
            .collect()
    }

    fn planned(spans: &[Range<usize>], max_segs: usize, max_bytes: usize) -> Vec<Message> {
        let mut out = Vec::new();
        let limits = Limits {
            max_segs,
            max_bytes,
            max_seg: usize::MAX,
        };
        plan(spans, &[], limits, &mut out);
        out
    }

    #[test]
    fn datagrams_too_large_for_the_path_go_alone() {
        // 1558-byte datagrams (a 1500-MTU TAP) over a 1472-byte path.
        let spans = layout(&[1558, 1558, 1472, 1472, 1558, 100]);
        let mut m = Vec::new();
        plan(&spans, &[], Limits::gso(1472), &mut m);
        let counts: Vec<usize> = m.iter().map(|m| m.count).collect();
        assert_eq!(counts, vec![1, 1, 2, 1, 1]);
        covers(&spans, &m);
    }

    /// Every datagram is in exactly one message, in order, and each
    /// message's datagrams are what GSO would cut from its range.
    fn covers(spans: &[Range<usize>], msgs: &[Message]) {
        let cut: Vec<Range<usize>> = msgs
            .iter()
            .flat_map(|m| m.split().map(|s| s.range))
            .collect();
        assert_eq!(cut, spans);
        let total: usize = msgs.iter().map(|m| m.count).sum();
        assert_eq!(total, spans.len());
    }

    #[test]
    fn equal_sizes_make_one_gso_message() {
        let spans = layout(&[146; 10]);
        let m = planned(&spans, 64, MAX_GSO_BYTES);
        assert_eq!(
            m,
            vec![Message {
                range: 0..1460,
                seg: 146,
                count: 10,
                ecn: Ecn::NotEct,
            }]
        );
        assert!(m[0].is_gso());
        covers(&spans, &m);
    }

    #[test]
    fn a_shorter_datagram_ends_the_run() {
        let spans = layout(&[100, 100, 60, 100, 100]);
        let m = planned(&spans, 64, MAX_GSO_BYTES);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].count, m[0].seg, m[0].range.clone()), (3, 100, 0..260));
        assert_eq!(
            (m[1].count, m[1].seg, m[1].range.clone()),
            (2, 100, 260..460)
        );
        covers(&spans, &m);
    }

    #[test]
    fn a_longer_datagram_starts_a_new_message() {
        let spans = layout(&[60, 100, 100]);
        let m = planned(&spans, 64, MAX_GSO_BYTES);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].count, m[0].seg), (1, 60));
        assert!(!m[0].is_gso());
        assert_eq!((m[1].count, m[1].seg), (2, 100));
        covers(&spans, &m);
    }

    #[test]
    fn segment_and_byte_limits_split_runs() {
        let spans = layout(&[146; 150]);
        let m = planned(&spans, 64, MAX_GSO_BYTES);
        assert_eq!(m.iter().map(|m| m.count).collect::<Vec<_>>(), [64, 64, 22]);
        covers(&spans, &m);

        let big = layout(&[1472; 100]);
        let m = planned(&big, 64, MAX_GSO_BYTES);
        assert!(m.iter().all(|m| m.range.len() <= MAX_GSO_BYTES));
        assert_eq!(m[0].count, MAX_GSO_BYTES / 1472);
        covers(&big, &m);
    }

    #[test]
    fn gaps_are_never_bridged() {
        let spans = vec![0..100, 100..200, 300..400, 400..500];
        let m = planned(&spans, 64, MAX_GSO_BYTES);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].range, 0..200);
        assert_eq!(m[1].range, 300..500);
        covers(&spans, &m);
    }

    #[test]
    fn one_segment_per_message_turns_gso_off() {
        let spans = layout(&[146; 5]);
        let m = planned(&spans, 1, MAX_GSO_BYTES);
        assert_eq!(m.len(), 5);
        assert!(m.iter().all(|m| !m.is_gso()));
        covers(&spans, &m);
    }

    #[test]
    fn mixed_sizes_keep_order_and_cover_everything() {
        // A deterministic jumble of sizes, including runs and singles.
        let mut sizes = Vec::new();
        let mut x: u32 = 12345;
        for _ in 0..500 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = [64, 64, 64, 146, 1472, 90, 1][(x >> 16) as usize % 7];
            sizes.push(n);
        }
        let spans = layout(&sizes);
        for max_segs in [1, 2, 7, 64] {
            let m = planned(&spans, max_segs, MAX_GSO_BYTES);
            covers(&spans, &m);
            for msg in &m {
                assert!(msg.count <= max_segs);
                assert!(msg.count == 1 || msg.range.len() <= MAX_GSO_BYTES);
            }
        }
    }

    /// Datagrams of another ECN field never join a message: the socket
    /// sets one per message. Equal ones still share.
    #[test]
    fn a_change_of_ecn_ends_the_run() {
        use Ecn::*;
        let spans = layout(&[100; 8]);
        let ecn = [Ect0, Ect0, Ect0, NotEct, NotEct, Ce, Ce, Ect0];
        let mut m = Vec::new();
        plan(&spans, &ecn, Limits::gso(1472), &mut m);
        let got: Vec<(usize, Ecn)> = m.iter().map(|m| (m.count, m.ecn)).collect();
        assert_eq!(got, [(3, Ect0), (2, NotEct), (2, Ce), (1, Ect0)]);
        covers(&spans, &m);
        assert!(m.iter().all(|m| m.split().all(|s| s.ecn == m.ecn)));
    }

    #[test]
    fn empty_batch_plans_nothing() {
        assert!(planned(&[], 64, MAX_GSO_BYTES).is_empty());
    }
}
