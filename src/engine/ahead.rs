//! The UDP→TAP thread's window of runs read ahead of its work: with flow
//! queueing (`--fq`, the HMAC wire), it reads what the socket holds, up to
//! a few runs, and takes a datagram of a sparse flow (`sparse.rs`) before
//! the runs ahead of it; else runs are taken in order, one at a time.

use crate::ecn::Ecn;
use crate::sparse::{self, Flows, Run};
use crate::sys::Received;
use std::net::SocketAddr;
use std::ops::Range;

/// One run received and not yet handled.
#[derive(Debug)]
struct Slot {
    buf: Vec<u8>,
    len: usize,
    segment: Option<usize>,
    ecn: Ecn,
    from: Option<SocketAddr>,
    arrived_ns: Option<u64>,
    took_ns: u64,
}

/// What to handle next: a run, or one datagram of it taken ahead.
#[derive(Debug, Clone)]
pub(super) struct Unit {
    slot: usize,
    /// Its bytes in the slot's buffer.
    pub range: Range<usize>,
    pub segment: Option<usize>,
    pub ecn: Ecn,
    pub from: Option<SocketAddr>,
    /// The kernel's arrival stamp (of the run's first datagram).
    pub arrived_ns: Option<u64>,
    /// How long the receive that got it waited (0: it was queued).
    pub took_ns: u64,
    /// Taken ahead of the runs before it.
    pub ahead: bool,
}

/// The window: runs in arrival order, the first `filled` slots.
#[derive(Debug)]
pub(super) struct Ahead {
    slots: Vec<Slot>,
    flows: Vec<Flows>,
    filled: usize,
}

impl Ahead {
    /// A window of `runs` runs (1: no reading ahead) of `buf` bytes each.
    pub(super) fn new(runs: usize, buf: usize) -> Ahead {
        let runs = runs.max(1);
        Ahead {
            slots: (0..runs)
                .map(|_| Slot {
                    buf: vec![0u8; buf],
                    len: 0,
                    segment: None,
                    ecn: Ecn::NotEct,
                    from: None,
                    arrived_ns: None,
                    took_ns: 0,
                })
                .collect(),
            flows: (0..runs).map(|_| Flows::new()).collect(),
            filled: 0,
        }
    }

    /// Nothing waits in the window.
    pub(super) fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// The buffer to receive the next run into; `None` when the window is full.
    pub(super) fn free(&mut self) -> Option<&mut [u8]> {
        self.slots.get_mut(self.filled).map(|s| &mut s.buf[..])
    }

    /// The run just received into [`Ahead::free`]'s buffer joins the window
    /// (`took_ns`: how long its receive waited).
    pub(super) fn push(&mut self, r: &Received, took_ns: u64) {
        let Some(s) = self.slots.get_mut(self.filled) else {
            return;
        };
        s.len = r.len.min(s.buf.len());
        s.segment = r.segment;
        s.ecn = r.ecn;
        s.from = r.from;
        s.arrived_ns = r.arrived_ns;
        s.took_ns = took_ns;
        self.flows[self.filled].forget();
        self.filled += 1;
    }

    /// What to handle next: with `offset` (the frames' offset in a
    /// datagram, when they can be read before checking), a sparse flow's
    /// datagram if one waits behind others; else the oldest run.
    pub(super) fn next(&mut self, offset: Option<usize>) -> Option<Unit> {
        let first = self.slots.first().filter(|_| self.filled > 0)?;
        let picked = match offset {
            Some(off) if self.filled > 1 || first.segment.is_some() => {
                let mut runs = [Run {
                    data: &[],
                    segment: None,
                }; MAX_RUNS];
                let n = self.filled.min(MAX_RUNS);
                for (r, s) in runs.iter_mut().zip(&self.slots[..n]) {
                    *r = Run {
                        data: &s.buf[..s.len],
                        segment: s.segment,
                    };
                }
                sparse::pick(&runs[..n], off, &mut self.flows[..n])
            }
            _ => None,
        };
        let (slot, range, ahead) = match picked {
            Some((i, r)) => (i, r, true),
            None => (0, 0..first.len, false),
        };
        let s = &self.slots[slot];
        Some(Unit {
            slot,
            segment: if ahead { None } else { s.segment },
            range,
            ecn: s.ecn,
            from: s.from,
            arrived_ns: s.arrived_ns,
            took_ns: s.took_ns,
            ahead,
        })
    }

    /// Lends the unit's buffer out (for the handling, which needs the
    /// thread's state too); give it back with [`Ahead::done`].
    pub(super) fn take_buf(&mut self, u: &Unit) -> Vec<u8> {
        std::mem::take(&mut self.slots[u.slot].buf)
    }

    /// The unit was handled: its buffer back, and its bytes leave the window.
    pub(super) fn done(&mut self, u: &Unit, buf: Vec<u8>) {
        let s = &mut self.slots[u.slot];
        s.buf = buf;
        // A datagram taken ahead is its run's last: the run ends before it.
        s.len = u.range.start;
        self.flows[u.slot].forget();
        if s.len == 0 {
            // The run is gone: its slot goes behind the filled ones.
            self.slots[u.slot..self.filled].rotate_left(1);
            self.flows[u.slot..self.filled].rotate_left(1);
            self.filled -= 1;
        }
    }
}

/// Runs a window holds at most (`--fq`'s reading ahead).
pub(super) const MAX_RUNS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    fn received(len: usize, segment: Option<usize>) -> Received {
        Received {
            len,
            from: None,
            segment,
            truncated: false,
            ecn: Ecn::NotEct,
            arrived_ns: Some(1),
        }
    }

    /// Fills a free slot with `data` as one run.
    fn put(a: &mut Ahead, data: &[u8], segment: Option<usize>) {
        a.free().expect("room")[..data.len()].copy_from_slice(data);
        a.push(&received(data.len(), segment), 0);
    }

    /// Handles units until the window is empty; their first bytes in order.
    fn drain(a: &mut Ahead, offset: Option<usize>) -> Vec<(u8, bool)> {
        let mut got = Vec::new();
        while let Some(u) = a.next(offset) {
            let buf = a.take_buf(&u);
            for d in sparse::datagrams(u.range.len(), u.segment) {
                got.push((buf[u.range.start + d.start], u.ahead));
            }
            a.done(&u, buf);
        }
        got
    }

    #[test]
    fn in_order_without_an_offset_and_the_window_empties() {
        let mut a = Ahead::new(4, 100);
        assert!(a.next(None).is_none());
        put(&mut a, &[1; 30], Some(10));
        put(&mut a, &[4; 10], None);
        put(&mut a, &[5; 10], None);
        put(&mut a, &[6; 10], None);
        assert!(a.free().is_none(), "full");
        assert_eq!(
            drain(&mut a, None),
            [
                (1, false),
                (1, false),
                (1, false),
                (4, false),
                (5, false),
                (6, false)
            ]
        );
        assert!(a.is_empty() && a.free().is_some());
    }

    #[test]
    fn a_sparse_datagram_goes_first_and_the_rest_keep_their_order() {
        // Datagrams: 40 header bytes, then an IPv4 frame; the first header
        // byte names it for the test.
        let dg = |name: u8, src: u8, len: usize| {
            let mut d = vec![name; 40];
            d.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
            d.extend_from_slice(&[
                0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, src, 10, 0, 0, 9,
            ]);
            d.resize(len, 0);
            d
        };
        let mut a = Ahead::new(4, 1000);
        let bulk: Vec<u8> = [dg(1, 1, 100), dg(2, 1, 100), dg(3, 2, 80)].concat();
        put(&mut a, &bulk, Some(100));
        put(&mut a, &[dg(4, 1, 100), dg(5, 1, 100)].concat(), Some(100));
        put(&mut a, &dg(6, 3, 80), None);
        assert_eq!(
            drain(&mut a, Some(40)),
            [
                (3, true),
                (6, true),
                (1, false),
                (2, false),
                (4, false),
                (5, false)
            ]
        );
        assert!(a.is_empty());
    }
}
