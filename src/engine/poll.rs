//! How the UDP→TAP thread gets its next datagram with `--busy-poll`:
//! from the queue if one is there; else, while something happened within
//! the linger (`busypoll.rs`: a datagram received, or the TAP→UDP thread
//! sent after it had slept, an *ask*), by spinning on the socket; else
//! asleep until a datagram, an ask or a second passes. Without
//! `--busy-poll`, one blocking receive, as ever.

use super::io::Socket;
use super::unix_nanos;
use crate::busypoll::BusyPoll;
use crate::stats::Counters;
use crate::sys::{Received, Wake};
use std::io;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

/// The longest the receiving thread sleeps before its loop runs again
/// (the peer's name, the handshake timers look once a second).
const PARK: Duration = Duration::from_secs(1);

/// What passes from the sending thread to the receiving one: the latest
/// ask, and the wake-up of a receiving thread asleep.
#[derive(Debug)]
pub(super) struct Asks {
    at: AtomicU64,
    parked: AtomicBool,
    pub(super) wake: Wake,
}

impl Asks {
    pub(super) fn new(wake: Wake) -> Asks {
        Asks {
            at: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            wake,
        }
    }

    /// The sending thread woke at `now` to send after it had slept: the
    /// receiving thread is to spin for the answer (woken if asleep: a
    /// system call, while the datagram is on its way).
    pub(super) fn ask(&self, now: u64) {
        // SeqCst, with the receiving thread's store of `parked` and load
        // of `at`: either it sees this ask, or this sees it parked.
        self.at.store(now, SeqCst);
        if self.parked.load(SeqCst) {
            self.wake.signal();
        }
    }
}

/// The receiving thread's side: when it spins.
#[derive(Debug)]
pub(super) struct Poller {
    poll: BusyPoll,
    /// The latest ask taken.
    ask: u64,
}

impl Poller {
    /// Spins until `linger_ns` after the last activity (0: never).
    pub(super) fn new(linger_ns: u64) -> Poller {
        Poller {
            poll: BusyPoll::new(linger_ns),
            ask: 0,
        }
    }

    /// The next datagram or GRO run; `WouldBlock` after a sleep that ended
    /// without one (a second passed, or an ask came: call again).
    pub(super) fn next<S: Socket>(
        &mut self,
        socket: &S,
        asks: &Asks,
        buf: &mut [u8],
        counters: &Counters,
    ) -> io::Result<Received> {
        if self.poll.linger_ns() == 0 {
            // Off: one blocking call, as without this module.
            return socket.recv(buf);
        }
        match socket.try_recv(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            got => return self.got(got),
        }
        self.take_ask(asks);
        if self.poll.spin_until(unix_nanos()).is_some() {
            counters.busy_spins.fetch_add(1, Relaxed);
            loop {
                // Gives the CPU to any other thread that wants it: the
                // spin keeps the CPU awake, not from others.
                std::thread::yield_now();
                match socket.try_recv(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    got => {
                        if got.is_ok() {
                            counters.busy_caught.fetch_add(1, Relaxed);
                        }
                        return self.got(got);
                    }
                }
                // An ask extends the spin.
                self.take_ask(asks);
                if self.poll.spin_until(unix_nanos()).is_none() {
                    break;
                }
            }
        }
        asks.parked.store(true, SeqCst);
        // An ask that came since the look above: spin for it instead.
        let waited = match asks.at.load(SeqCst) > self.ask {
            true => Ok(()),
            false => socket.wait(&asks.wake, PARK),
        };
        asks.parked.store(false, SeqCst);
        asks.wake.clear();
        waited?;
        let got = socket.try_recv(buf);
        self.got(got)
    }

    fn take_ask(&mut self, asks: &Asks) {
        let at = asks.at.load(SeqCst);
        if at > self.ask {
            self.ask = at;
            self.poll.activity(at);
        }
    }

    /// A datagram received is activity: the spinning goes on after it.
    fn got(&mut self, got: io::Result<Received>) -> io::Result<Received> {
        if got.is_ok() {
            self.poll.activity(unix_nanos());
        }
        got
    }
}
