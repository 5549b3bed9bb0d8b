//! A packet thread's bound on its own real-time bursts: it applies what
//! [`Burst`] decides (`burst.rs`) to the calling thread, counts the cuts
//! and says, once, if it cannot take its priority back. The tunnel's two
//! packet threads and the hub's two forwarding threads each have one.

use crate::burst::{Burst, LIMIT_MS, LIMIT_NS, Turn};
use crate::sys;
use log::{debug, warn};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// Lives on the thread it bounds (made there: it reads that thread's policy).
pub(crate) struct Bound {
    burst: Burst,
    /// The SCHED_FIFO priority the thread started with (0: none).
    prio: i32,
}

impl Bound {
    /// Bounds the calling thread if it runs under SCHED_FIFO; a no-op
    /// otherwise.
    pub(crate) fn here(now: u64) -> Bound {
        let prio = sys::thread_fifo().ok().flatten().unwrap_or(0);
        Bound {
            burst: Burst::new(prio > 0, LIMIT_NS, now),
            prio,
        }
    }

    /// After each look at the thread's input (`empty`: it found none); a
    /// cut is counted in `cuts`. The tunnel's clock is enough: a step of
    /// the wall clock cuts at most one burst early, undone at the next
    /// empty look.
    #[inline]
    pub(crate) fn at(&mut self, now: u64, empty: bool, cuts: &AtomicU64) {
        match self.burst.at(now, empty) {
            Turn::Stay => {}
            Turn::Demote => match sys::set_thread_normal() {
                Ok(()) => {
                    cuts.fetch_add(1, Relaxed);
                    debug!(
                        "a packet thread worked {LIMIT_MS} ms without a pause: on at the normal policy until its queue empties"
                    );
                }
                Err(e) => {
                    warn!(
                        "a packet thread could not leave SCHED_FIFO ({e}): it stays real-time, unbounded"
                    );
                    self.burst.give_up();
                }
            },
            Turn::Restore => {
                if let Err(e) = sys::set_thread_fifo(self.prio) {
                    warn!(
                        "a packet thread could not take SCHED_FIFO priority {} back ({e}): it runs at the normal policy from now on (allow it with LimitRTPRIO={} or CAP_SYS_NICE)",
                        self.prio, self.prio
                    );
                    self.burst.give_up();
                }
            }
        }
    }
}
