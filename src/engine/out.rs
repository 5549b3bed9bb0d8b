//! Sending a sealed batch: one `sendmmsg` call per batch (more only when
//! the kernel takes part of it), the fallback when the kernel refuses a
//! UDP GSO message (its datagrams go one by one, and the session is told
//! what the kernel taught), the counters, and the warn lines about sends
//! that fail. Each sending thread has its own `Out`.

use super::Shared;
use super::io::Socket;
use crate::addr;
use crate::session::{Taught, Transmit};
use crate::stats::{Counters, Throttle};
use crate::tx;
use crate::wire::HEADER_LEN;
use log::{info, warn};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// One thread's way to the socket.
pub(crate) struct Out<S> {
    socket: Arc<S>,
    counters: Arc<Counters>,
    /// Where datagrams refused as too long are counted, for the main
    /// thread to explain (`routing.rs`: the route or the MTU); `None`
    /// for the hub, which says so in the send error's warn line.
    shared: Option<Arc<Shared>>,
    /// The socket is IPv6 (peers are given in its family).
    v6: bool,
    /// Whether this thread has not yet said that the socket refuses GSO
    /// (the limits themselves are the session's: `Taught`).
    gso: bool,
    /// Bytes each datagram of the last batch added to its frame.
    overhead: usize,
    /// One warn line a minute: send errors.
    send_errors: Throttle,
}

impl<S: Socket> Out<S> {
    pub(super) fn new(socket: Arc<S>, shared: Arc<Shared>, v6: bool) -> Self {
        Out {
            socket,
            counters: shared.counters.clone(),
            shared: Some(shared),
            v6,
            gso: true,
            overhead: HEADER_LEN,
            send_errors: Throttle::per_minute(),
        }
    }

    /// A way to the socket that counts into `counters` only (the hub:
    /// one per spoke).
    pub(crate) fn bare(socket: Arc<S>, counters: Arc<Counters>, v6: bool) -> Self {
        Out {
            socket,
            counters,
            shared: None,
            v6,
            gso: true,
            overhead: HEADER_LEN,
            send_errors: Throttle::per_minute(),
        }
    }

    /// Sends a batch; says what the kernel taught about GSO.
    pub(crate) fn send(&mut self, t: Transmit<'_>) -> Taught {
        let to = addr::for_socket(t.to, self.v6);
        self.overhead = t.overhead;
        let msgs = t.messages;
        let mut taught = Taught::default();
        let mut i = 0;
        while i < msgs.len() {
            match self.socket.send_messages(t.bytes, &msgs[i..], to) {
                Ok(k) => {
                    let k = k.max(1).min(msgs.len() - i);
                    for m in &msgs[i..i + k] {
                        self.counters.tx_frames.fetch_add(m.count as u64, Relaxed);
                        self.counters
                            .tx_bytes
                            .fetch_add(tx::frame_bytes(m, t.overhead) as u64, Relaxed);
                    }
                    i += k;
                }
                Err(e) if msgs[i].is_gso() && gso_refused(&e) => {
                    if self.gso && e.raw_os_error() != Some(libc::EINVAL) {
                        self.gso = false;
                        taught.gso_off = true;
                        info!("UDP GSO refused ({e}); sending datagrams one per message");
                    }
                    // EINVAL alone is this route's MTU: GSO does not
                    // fragment. These datagrams go alone from now on,
                    // fragmented by the kernel.
                    if e.raw_os_error() == Some(libc::EINVAL) && taught.too_large.is_none() {
                        taught.too_large = Some(msgs[i].seg);
                        info!(
                            "UDP GSO refused for {}-byte datagrams (larger than the route to {} allows unfragmented): sending them one per message, fragmented by the kernel",
                            msgs[i].seg,
                            addr::canonical(to)
                        );
                    }
                    for one in msgs[i].split() {
                        self.send_one(&t.bytes[one.range], to);
                    }
                    i += 1;
                }
                Err(e) => {
                    self.counters
                        .send_errors
                        .fetch_add(msgs[i].count as u64, Relaxed);
                    self.failed(&e, msgs[i].seg, to);
                    i += 1;
                }
            }
        }
        taught
    }

    /// Sends one sealed datagram and counts it (a keepalive, when
    /// `keepalive`: counted as one, not as a frame).
    pub(crate) fn send_one_of(&mut self, dg: &[u8], to: SocketAddr, keepalive: bool) {
        let to = addr::for_socket(to, self.v6);
        match self.socket.send_to(dg, to) {
            Ok(()) if keepalive => {
                self.counters.keepalives_tx.fetch_add(1, Relaxed);
            }
            Ok(()) => {
                self.counters.tx_frames.fetch_add(1, Relaxed);
                self.counters
                    .tx_bytes
                    .fetch_add(dg.len().saturating_sub(self.overhead) as u64, Relaxed);
            }
            Err(e) => {
                self.counters.send_errors.fetch_add(1, Relaxed);
                if keepalive {
                    log::debug!("keepalive to {}: {e}", addr::canonical(to));
                } else {
                    self.failed(&e, dg.len(), to);
                }
            }
        }
    }

    fn send_one(&mut self, dg: &[u8], to: SocketAddr) {
        self.send_one_of(dg, to, false);
    }

    fn failed(&mut self, e: &io::Error, len: usize, to: SocketAddr) {
        if e.raw_os_error() == Some(libc::EMSGSIZE)
            && let Some(shared) = &self.shared
        {
            // Said by the main thread once it has looked at the route: into
            // the TAP, the MTU advice would be wrong.
            super::routing::refused(shared, len);
            return;
        }
        if let Some(n) = self.send_errors.note(1, Instant::now()) {
            warn!(
                "UDP send to {}: {e} ({n} send errors): check the route to the peer",
                addr::canonical(to)
            );
        }
    }
}

/// Errors with which the kernel says it cannot send this message with GSO.
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
    )
}
