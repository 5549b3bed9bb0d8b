//! The TAP's read side has one owner at a time: the TAP→UDP thread, or,
//! right after its own TAP writes, the UDP→TAP thread, which then sends
//! what the kernel queued in answer (ACKs, echo replies) without waking
//! the other thread. Each thread owns its own sending half; what passes
//! between them with the role is the last timestamp sealed, so that
//! timestamps (AEAD nonces) rise in the order datagrams leave, whichever
//! thread sealed them.
//!
//! The role is handed over, never waited for under a lock: the UDP→TAP
//! thread takes it only when it is free (the TAP→UDP thread is parked in
//! `poll`), reads at most a bounded number of frames, sends them, and
//! gives it back; the TAP→UDP thread, woken while the other holds it,
//! asks for it and waits in `poll` for the [`Wake`] that hands it back.

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

/// The TAP read role, the last timestamp sealed under it, and the wake-up
/// of the TAP→UDP thread (also used to say "the peer changed").
#[derive(Debug)]
pub(super) struct Role {
    state: AtomicU8,
    last_ts: AtomicU64,
    pub(super) wake: Wake,
}

/// What [`Role::take_sender`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    /// The TAP→UDP thread holds the role; seal after this timestamp.
    Yes(u64),
    /// The UDP→TAP thread holds it; it will hand it back with a wake-up.
    Asked,
}

impl Role {
    /// Starts held by the TAP→UDP thread.
    pub(super) fn new(wake: Wake) -> Role {
        Role {
            state: AtomicU8::new(SENDER),
            last_ts: AtomicU64::new(0),
            wake,
        }
    }

    /// The TAP→UDP thread takes the role (it was free, or handed back).
    pub(super) fn take_sender(&self) -> Taken {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let next = match cur {
                FREE => SENDER,
                SENDER => return Taken::Yes(self.last_ts.load(Ordering::Acquire)),
                REPLIER => WANTED,
                _ => return Taken::Asked,
            };
            match self
                .state
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == SENDER => {
                    return Taken::Yes(self.last_ts.load(Ordering::Acquire));
                }
                Ok(_) => return Taken::Asked,
                Err(now) => cur = now,
            }
        }
    }

    /// The TAP→UDP thread parks: the role is free until it takes it again.
    pub(super) fn release_sender(&self, last_ts: u64) {
        self.last_ts.store(last_ts, Ordering::Release);
        self.state.store(FREE, Ordering::Release);
    }

    /// The UDP→TAP thread takes the role if it is free.
    pub(super) fn try_take_replier(&self) -> Option<u64> {
        self.state
            .compare_exchange(FREE, REPLIER, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| self.last_ts.load(Ordering::Acquire))
    }

    /// The UDP→TAP thread gives the role back: free, or straight to the
    /// TAP→UDP thread if it asked, with a wake-up.
    pub(super) fn release_replier(&self, last_ts: u64) {
        self.last_ts.store(last_ts, Ordering::Release);
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

    #[test]
    fn one_reader_at_a_time_and_the_timestamp_goes_with_the_role() {
        let r = Role::new(Wake::new().unwrap());
        // Held by the sender: the replier cannot take it.
        assert_eq!(r.try_take_replier(), None);
        r.release_sender(10);
        assert_eq!(r.try_take_replier(), Some(10));
        assert_eq!(r.try_take_replier(), None);
        // The sender, woken meanwhile, asks; it is handed back with a wake.
        assert_eq!(r.take_sender(), Taken::Asked);
        assert_eq!(r.take_sender(), Taken::Asked);
        r.release_replier(20);
        assert_eq!(r.take_sender(), Taken::Yes(20));
        assert_eq!(r.try_take_replier(), None);
        // Not asked: given back free.
        r.release_sender(30);
        assert_eq!(r.try_take_replier(), Some(30));
        r.release_replier(40);
        assert_eq!(r.take_sender(), Taken::Yes(40));
    }

    /// Two threads hammering the role never both hold it.
    #[test]
    fn never_two_holders() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicU32;
        let r = Arc::new(Role::new(Wake::new().unwrap()));
        let inside = Arc::new(AtomicU32::new(0));
        let (r2, in2) = (r.clone(), inside.clone());
        let replier = std::thread::spawn(move || {
            let mut held = 0;
            for i in 0..200_000u64 {
                if r2.try_take_replier().is_some() {
                    assert_eq!(in2.fetch_add(1, Ordering::SeqCst), 0);
                    in2.fetch_sub(1, Ordering::SeqCst);
                    r2.release_replier(i);
                    held += 1;
                }
            }
            held
        });
        let mut held = 0;
        for i in 0..200_000u64 {
            if let Taken::Yes(_) = r.take_sender() {
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                inside.fetch_sub(1, Ordering::SeqCst);
                r.release_sender(i);
                held += 1;
            }
        }
        let replier_held = replier.join().unwrap();
        assert!(held > 0 && replier_held > 0, "{held} {replier_held}");
    }
}
