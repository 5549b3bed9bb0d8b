//! The hub's TAP→UDP thread: waits on every spoke's TAP at once (one
//! `poll`, with the eventfd that says the spoke set, a key, an address or
//! an MTU changed), drains each readable TAP into that spoke's sending
//! half (at most [`ROUND_FRAMES`] frames a turn, so that one busy spoke
//! cannot starve the others) and sends each batch to the spoke's address;
//! also each spoke's keepalives.

use super::{HubShared, Spoke};
use crate::engine::{Drained, Out, Reader, Socket, Tap, unix_nanos};
use crate::published::Cached;
use crate::session::{KeepaliveDue, Keying, SendHalf, Setup};
use crate::stats::Throttle;
use crate::sys;
use crate::wire::HEADER_LEN;
use log::warn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::{Duration, Instant};

/// Most frames read from one spoke's TAP before the next spoke's turn.
const ROUND_FRAMES: usize = 256;

/// One spoke as this thread runs it.
struct Slot<T, S> {
    spoke: Arc<Spoke<T>>,
    tx: SendHalf,
    key: Cached<Keying>,
    peer: Cached<Option<SocketAddr>>,
    reader: Reader,
    out: Out<S>,
    mtu: u16,
    /// The TAP had more than a turn's frames: read it again before waiting.
    more: bool,
}

impl<T: Tap, S: Socket> Slot<T, S> {
    fn new(spoke: Arc<Spoke<T>>, socket: &Arc<S>, v6: bool) -> Self {
        let setup = Setup {
            keying: spoke.key.get(),
            peer: spoke.peer.get(),
            ..spoke.setup.clone()
        };
        Slot {
            tx: setup.send_half(),
            key: Cached::new(&spoke.key),
            peer: Cached::new(&spoke.peer),
            reader: Reader::new(spoke.offload, true),
            out: Out::bare(socket.clone(), spoke.counters.clone(), v6),
            mtu: setup.mtu,
            more: true,
            spoke,
        }
    }

    /// Takes what the other threads published: key, address, MTU.
    fn follow(&mut self) {
        let s = &*self.spoke;
        if let Some(k) = self.key.changed(&s.key) {
            self.tx.set_keying(k);
        }
        if let Some(p) = self.peer.changed(&s.peer) {
            self.tx.set_peer(*p);
        }
        let mtu = s.mtu.load(Relaxed) as u16;
        if mtu != self.mtu {
            self.mtu = mtu;
            self.tx.set_mtu(mtu);
        }
    }

    /// Sends a keepalive if one is due at `now`; says when the next one is.
    fn keepalive(&mut self, now: u64) -> Option<u64> {
        let mut buf = [0u8; HEADER_LEN];
        match self.tx.keepalive(now, &mut buf) {
            KeepaliveDue::Send(dg, to) => {
                self.out.send_one_of(dg, to, true);
                self.tx.poll_timeout()
            }
            KeepaliveDue::Refused => {
                self.spoke.counters.seal_errors.fetch_add(1, Relaxed);
                self.tx.poll_timeout()
            }
            KeepaliveDue::At(t) => Some(t),
            KeepaliveDue::Idle => None,
        }
    }
}

/// The thread's state.
pub(super) struct Sender<T, S> {
    socket: Arc<S>,
    shared: Arc<HubShared<T>>,
    list: Cached<Arc<Vec<Arc<Spoke<T>>>>>,
    slots: Vec<Slot<T, S>>,
    /// The eventfd first, then each slot's TAP, in slot order.
    fds: Vec<libc::pollfd>,
}

impl<T: Tap, S: Socket> Sender<T, S> {
    pub(super) fn new(socket: Arc<S>, shared: Arc<HubShared<T>>) -> Self {
        Sender {
            list: Cached::new(&shared.spokes),
            socket,
            slots: Vec::new(),
            fds: Vec::new(),
            shared,
        }
        .rebuilt()
    }

    fn rebuilt(mut self) -> Self {
        let list = self.shared.spokes.get();
        self.rebuild(&list);
        self
    }

    /// Follows the published spoke set (halves of staying spokes kept).
    fn rebuild(&mut self, list: &[Arc<Spoke<T>>]) {
        let v6 = self.shared.local.is_ipv6();
        let mut old: Vec<Option<Slot<T, S>>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(Some)
            .collect();
        for s in list {
            let kept = old
                .iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| o.spoke.id == s.id))
                .and_then(Option::take);
            self.slots
                .push(kept.unwrap_or_else(|| Slot::new(s.clone(), &self.socket, v6)));
        }
        let fd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        self.fds.clear();
        self.fds.push(fd(self.shared.wake.as_raw_fd()));
        for s in &self.slots {
            self.fds.push(fd(s.spoke.tap.fd()));
        }
    }

    /// Runs until the hub stops.
    pub(super) fn run(mut self) {
        let mut errlog = Throttle::per_minute();
        while !self.shared.stop.load(Relaxed) {
            if let Some(list) = self.list.changed(&self.shared.spokes) {
                let list = list.clone();
                self.rebuild(&list);
            }
            let mut more = false;
            for (i, slot) in self.slots.iter_mut().enumerate() {
                slot.follow();
                if self.fds[i + 1].revents == 0 && !slot.more {
                    continue;
                }
                let s = &*slot.spoke;
                let (why, _) = slot.reader.drain(
                    &s.tap,
                    &mut slot.tx,
                    &mut slot.out,
                    &s.counters,
                    ROUND_FRAMES,
                );
                slot.more = why == Drained::Limit;
                more |= slot.more;
            }
            let now = unix_nanos();
            let mut due: Option<u64> = None;
            for slot in &mut self.slots {
                if let Some(at) = slot.keepalive(now) {
                    due = Some(due.map_or(at, |d| d.min(at)));
                }
            }
            let timeout = if more {
                Some(Duration::ZERO)
            } else {
                due.map(|at| Duration::from_nanos(at.saturating_sub(now)))
            };
            match sys::poll_readable(&mut self.fds, timeout) {
                Ok(_) => {
                    if self.fds[0].revents != 0 {
                        self.shared.wake.clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(n) = errlog.note(1, Instant::now()) {
                        warn!("TAP wait: {e} ({n} errors)");
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}
