//! The TAP's read side has one owner at a time: the TAP→UDP thread, or,
//! right after its own TAP writes, the UDP→TAP thread, which then sends
//! what the kernel queued in answer (ACKs, echo replies) without waiting
//! for the other thread to wake. Each thread owns its own sending half; what passes
//! between them with the role is a [`Handoff`]: the last timestamp sealed,
//! so that the HMAC wire's timestamps rise in the order datagrams leave,
//! whichever thread sealed them, and what the kernel taught about GSO.
//! (The confidential mode's nonces are its session's counter, which the
//! halves share as an atomic.)
//!
//! The role is handed over, never waited for under a lock: the UDP→TAP
//! thread takes it only when it is free (the TAP→UDP thread is parked in
//! `poll`), reads at most a bounded number of frames, sends them, and
//! gives it back; the TAP→UDP thread, woken while the other holds it,
//! asks for it and waits in `poll` for the [`Wake`] that hands it back.

use crate::session::{Handoff, Taught};
use crate::sys::Wake;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Nobody reads the TAP: the TAP→UDP thread is parked.
const FREE: u8 = 0;
/// The TAP→UDP thread reads the TAP.
const SENDER: u8 = 1;
/// The UDP→TAP thread reads the replies.
const REPLIER: u8 = 2;
/// The UDP→TAP thread reads the replies, and the TAP→UDP thread asked
/// for the role back: it is handed over with a wake-up.
const WANTED: u8 = 3;

/// The TAP read role, the [`Handoff`] that goes with it, and the wake-up
/// of the TAP→UDP thread (also used to say "the peer, key or MTU changed").
#[derive(Debug)]
pub(super) struct Role {
    state: AtomicU8,
    last_ts: AtomicU64,
    /// [`Taught`], packed: bit 63 GSO off, the low 32 bits the smallest
    /// datagram size refused in a GSO message (0: none).
    taught: AtomicU64,
    pub(super) wake: Wake,
}

fn pack(t: Taught) -> u64 {
    u64::from(t.gso_off) << 63 | t.too_large.map_or(0, |s| s.min(u32::MAX as usize) as u64)
}

fn unpack(v: u64) -> Taught {
    Taught {
        gso_off: v >> 63 == 1,
        too_large: match v & u64::from(u32::MAX) {
            0 => None,
            s => Some(s as usize),
        },
    }
}

/// What [`Role::take_sender`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    /// The TAP→UDP thread holds the role; go on from this.
    Yes(Handoff),
    /// The UDP→TAP thread holds it; it will hand it back with a wake-up.
    Asked,
}

impl Role {
    /// Starts held by the TAP→UDP thread.
    pub(super) fn new(wake: Wake) -> Role {
        Role {
            state: AtomicU8::new(SENDER),
            last_ts: AtomicU64::new(0),
            taught: AtomicU64::new(0),
            wake,
        }
    }

    /// The TAP→UDP thread takes the role (it was free, or handed back).
    pub(super) fn take_sender(&self) -> Taken {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let next = match cur {
                FREE => SENDER,
                SENDER => return Taken::Yes(self.handoff()),
                REPLIER => WANTED,
                _ => return Taken::Asked,
            };
            match self
                .state
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == SENDER => {
                    return Taken::Yes(self.handoff());
                }
                Ok(_) => return Taken::Asked,
                Err(now) => cur = now,
            }
        }
    }

    fn handoff(&self) -> Handoff {
        Handoff {
            last_ts: self.last_ts.load(Ordering::Acquire),
            taught: unpack(self.taught.load(Ordering::Acquire)),
        }
    }

    /// Stored before the state that releases the role (Release), read
    /// after the state that takes it (Acquire).
    fn leave(&self, h: Handoff) {
        self.last_ts.store(h.last_ts, Ordering::Release);
        self.taught.store(pack(h.taught), Ordering::Release);
    }

    /// The TAP→UDP thread parks: the role is free until it takes it again.
    pub(super) fn release_sender(&self, h: Handoff) {
        self.leave(h);
        self.state.store(FREE, Ordering::Release);
    }

    /// The UDP→TAP thread takes the role if it is free.
    pub(super) fn try_take_replier(&self) -> Option<Handoff> {
        self.state
            .compare_exchange(FREE, REPLIER, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| self.handoff())
    }

    /// The UDP→TAP thread gives the role back: free, or straight to the
    /// TAP→UDP thread if it asked, with a wake-up.
    pub(super) fn release_replier(&self, h: Handoff) {
        self.leave(h);
        if self
            .state
            .compare_exchange(REPLIER, FREE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // WANTED: only the TAP→UDP thread changes it from here.
            self.state.store(SENDER, Ordering::Release);
            self.wake.signal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(last_ts: u64) -> Handoff {
        Handoff {
            last_ts,
            taught: Taught::default(),
        }
    }

    #[test]
    fn one_reader_at_a_time_and_the_handoff_goes_with_the_role() {
        let r = Role::new(Wake::new().unwrap());
        // Held by the sender: the replier cannot take it.
        assert_eq!(r.try_take_replier(), None);
        r.release_sender(h(10));
        assert_eq!(r.try_take_replier(), Some(h(10)));
        assert_eq!(r.try_take_replier(), None);
        // The sender, woken meanwhile, asks; it is handed back with a wake.
        assert_eq!(r.take_sender(), Taken::Asked);
        assert_eq!(r.take_sender(), Taken::Asked);
        let taught = Taught {
            gso_off: true,
            too_large: Some(1472),
        };
        r.release_replier(Handoff {
            last_ts: 20,
            taught,
        });
        assert_eq!(
            r.take_sender(),
            Taken::Yes(Handoff {
                last_ts: 20,
                taught
            })
        );
        assert_eq!(r.try_take_replier(), None);
        // Not asked: given back free.
        r.release_sender(h(30));
        assert_eq!(r.try_take_replier(), Some(h(30)));
        r.release_replier(h(40));
        assert_eq!(r.take_sender(), Taken::Yes(h(40)));
    }

    /// Two threads taking turns as fast as they can never both hold it.
    #[test]
    fn never_two_holders() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU32};
        use std::time::{Duration, Instant};
        let r = Arc::new(Role::new(Wake::new().unwrap()));
        let inside = Arc::new(AtomicU32::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(AtomicU32::new(0));
        let turn = |holding: &AtomicU32| {
            assert_eq!(holding.fetch_add(1, Ordering::SeqCst), 0, "two holders");
            std::hint::spin_loop();
            holding.fetch_sub(1, Ordering::SeqCst);
        };
        let (r2, in2, done2, n2) = (r.clone(), inside.clone(), done.clone(), replies.clone());
        let replier = std::thread::spawn(move || {
            while !done2.load(Ordering::SeqCst) {
                if let Some(x) = r2.try_take_replier() {
                    turn(&in2);
                    r2.release_replier(h(x.last_ts + 1));
                    n2.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::yield_now();
            }
        });
        // Until each side held it a thousand times (5 s at most).
        let end = Instant::now() + Duration::from_secs(5);
        let (mut held, mut ts) = (0u32, 0);
        while Instant::now() < end && (held < 1000 || replies.load(Ordering::SeqCst) < 1000) {
            if let Taken::Yes(x) = r.take_sender() {
                assert!(x.last_ts >= ts, "the timestamp went back");
                turn(&inside);
                ts = x.last_ts + 1;
                r.release_sender(h(ts));
                held += 1;
            }
            std::thread::yield_now();
        }
        done.store(true, Ordering::SeqCst);
        replier.join().unwrap();
        let replier_held = replies.load(Ordering::SeqCst);
        assert!(
            held >= 1000 && replier_held >= 1000,
            "{held} {replier_held}"
        );
    }
}
