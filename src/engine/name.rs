//! A peer given by name, resolved again while it is silent (the rules are
//! `resolve.rs`'s). The main thread's tick starts each resolution in a
//! short-lived thread of its own (`getaddrinfo` blocks, for seconds when
//! DNS is down) and collects the answer at a later tick; the data path
//! never waits for it. An address to switch to is not published as the
//! peer by this thread: it is handed to the receiving thread (`Redirect`
//! in `Shared::redirect`), which owns the peer and takes it only if no
//! valid datagram came meanwhile.

use super::{Shared, unix_nanos};
use crate::addr::{AddrError, PeerName};
use crate::resolve::{Schedule, Verdict, judge};
use crate::stats::Throttle;
use log::{debug, info, warn};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

/// A new address for the peer, from its name, for the receiving thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Redirect {
    /// The name's answer.
    pub to: SocketAddr,
    /// `Shared::last_valid_ns` when the peer was judged silent: taken only
    /// if it is still that (no valid datagram since).
    pub heard: u64,
}

/// What `taptun status` shows of the name.
#[derive(Debug, Clone, Default)]
pub(super) struct NameStatus {
    /// The last answer, and when it came (UNIX ns).
    pub answer: Option<(SocketAddr, u64)>,
    /// Why the last resolution failed, if it did.
    pub error: Option<String>,
}

type Answer = Result<Vec<SocketAddr>, AddrError>;

/// The main thread's side: when to resolve, the resolution under way.
pub(super) struct NameWatch {
    name: PeerName,
    schedule: Schedule,
    every: Duration,
    pending: Option<Receiver<Answer>>,
    failed: Throttle,
    /// Whether the last resolution failed (the next success says so).
    failing: bool,
    started_ns: u64,
}

impl NameWatch {
    pub(super) fn new(name: PeerName, every: Duration, keepalive: Duration, ok: bool) -> Self {
        let schedule = Schedule::new(every, keepalive);
        info!(
            "peer {name}: resolved again once silent for {:.0} s, at most every {} s",
            schedule.silence().as_secs_f64(),
            every.as_secs()
        );
        NameWatch {
            name,
            schedule,
            every,
            pending: None,
            failed: Throttle::per_minute(),
            failing: !ok,
            started_ns: unix_nanos(),
        }
    }

    /// Called once a tick: collects a finished resolution, starts one when due.
    pub(super) fn tick(&mut self, shared: &Shared, now: u64) {
        if let Some(rx) = &self.pending {
            match rx.try_recv() {
                Ok(answer) => {
                    self.pending = None;
                    self.take(shared, answer, now);
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.pending = None,
            }
        }
        let last = shared.last_valid_ns.load(Relaxed);
        let heard = if last == 0 { self.started_ns } else { last };
        if !self.schedule.due(now, shared.peer.get().is_some(), heard) {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let name = self.name.clone();
        let spawned = thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let _ = tx.send(name.resolve_all());
            });
        match spawned {
            Ok(_) => self.pending = Some(rx),
            Err(e) => {
                if let Some(n) = self.failed.note(1, Instant::now()) {
                    warn!(
                        "peer {}: cannot start a thread to resolve it: {e} ({n} failures)",
                        self.name
                    );
                }
            }
        }
    }

    /// Acts on an answer.
    fn take(&mut self, shared: &Shared, answer: Answer, now: u64) {
        let in_use = shared.peer.get();
        let answers = match answer {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => return,
            Err(e) => {
                let reason = e.to_string();
                if let Some(n) = self.failed.note(1, Instant::now()) {
                    let keep = match in_use {
                        Some(p) => format!("still sending to {p}"),
                        None => "no address for it yet".to_string(),
                    };
                    warn!(
                        "{reason}; {keep}, trying again every {} s ({n} failed)",
                        self.every.as_secs()
                    );
                }
                self.failing = true;
                shared.name_status(|s| s.error = Some(reason));
                return;
            }
        };
        let last = shared.last_valid_ns.load(Relaxed);
        let heard = if last == 0 { self.started_ns } else { last };
        let verdict = judge(&answers, in_use, self.schedule.silent(now, heard));
        // The answer that counts: the address in use when it is among them.
        let a = match (verdict, in_use) {
            (Verdict::Same, Some(u)) => u,
            _ => crate::addr::preferred(&answers),
        };
        shared.name_status(|s| {
            s.answer = Some((crate::addr::canonical(a), now));
            s.error = None;
        });
        if self.failing {
            self.failing = false;
            self.failed.reset();
            // A switch is said by the receiving thread when it takes it.
            if !matches!(verdict, Verdict::Switch { .. }) {
                info!("peer {} resolves again, to {a}", self.name);
            }
        }
        match verdict {
            Verdict::Same => debug!("peer {} still resolves to {a}", self.name),
            Verdict::Talking => debug!(
                "peer {} resolves to {a}, but the peer talks from {}: that stays",
                self.name,
                in_use.map_or_else(String::new, |p| p.to_string())
            ),
            Verdict::Switch { to, .. } => {
                shared.redirect.set(Some(Redirect { to, heard: last }));
            }
        }
    }
}

impl Shared {
    /// Updates what `taptun status` shows of the name.
    pub(super) fn name_status(&self, f: impl FnOnce(&mut NameStatus)) {
        f(&mut self.name.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
