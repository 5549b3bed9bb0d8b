//! When a peer given by name is resolved again, and what an answer does:
//! pure rules, `now` (UNIX ns) passed in. The engine runs the resolution
//! itself (`getaddrinfo` blocks) in a thread of its own.
//!
//! The rule: while the peer talks, the address it talks from wins (peer
//! learning, `peer.rs`); once it has been silent for [`Schedule::silence`],
//! the name wins. So a name is resolved again only when no valid datagram
//! came for that long (or no address is known at all: the name did not
//! resolve at start), at most once every `--resolve-every` seconds, and an
//! answer that differs from the address in use replaces it only if the
//! peer is still silent when it comes.

use std::net::SocketAddr;
use std::time::Duration;

/// Default `--resolve-every`: the least time between two resolutions.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(30);

/// When to resolve the peer's name again.
#[derive(Debug, Clone)]
pub struct Schedule {
    every_ns: u64,
    silence_ns: u64,
    /// When the last resolution started (UNIX ns).
    last_try: Option<u64>,
}

impl Schedule {
    /// Resolves at most once every `every`; the peer counts as silent after
    /// two keepalive intervals without a valid datagram (its keepalives
    /// stopped: it is gone or moved), or after `every` when keepalives are
    /// off (silence then also means an idle peer, and a resolution that
    /// finds the address in use changes nothing).
    pub fn new(every: Duration, keepalive: Duration) -> Self {
        let every_ns = every.as_nanos() as u64;
        let silence_ns = if keepalive.is_zero() {
            every_ns
        } else {
            2 * keepalive.as_nanos() as u64
        };
        Schedule {
            every_ns,
            silence_ns,
            last_try: None,
        }
    }

    /// How long without a valid datagram makes the peer silent.
    pub fn silence(&self) -> Duration {
        Duration::from_nanos(self.silence_ns)
    }

    /// Whether the peer is silent at `now`, its last valid datagram at
    /// `heard` (UNIX ns; the start when none came).
    pub fn silent(&self, now: u64, heard: u64) -> bool {
        now.saturating_sub(heard) >= self.silence_ns
    }

    /// Whether a resolution is to start at `now`: no address known, or the
    /// peer silent, and none started for `every`. Records it as started.
    pub fn due(&mut self, now: u64, known: bool, heard: u64) -> bool {
        if known && !self.silent(now, heard) {
            return false;
        }
        if let Some(t) = self.last_try
            && now.saturating_sub(t) < self.every_ns
        {
            return false;
        }
        self.last_try = Some(now);
        true
    }
}

/// What an answer of the name does to the peer address in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The answer is the address in use: nothing changes.
    Same,
    /// The peer talked meanwhile: the address it talks from stays.
    Talking,
    /// The name now points elsewhere and the peer is silent: send there.
    Switch {
        /// The address in use until now (none: the name never resolved).
        from: Option<SocketAddr>,
        /// The name's answer.
        to: SocketAddr,
    },
}

/// Judges the name's `answers` (not empty) against the address `in_use`
/// (canonical forms compared), the peer being `silent` or not. An address
/// in use that is among the answers stays (a name with several addresses
/// must not make the peer hop between them); else the preferred answer
/// (`addr::preferred`) is the one to send to.
pub fn judge(answers: &[SocketAddr], in_use: Option<SocketAddr>, silent: bool) -> Verdict {
    let in_use = in_use.map(crate::addr::canonical);
    if in_use.is_some_and(|u| answers.iter().any(|&a| crate::addr::canonical(a) == u)) {
        return Verdict::Same;
    }
    let to = crate::addr::canonical(crate::addr::preferred(answers));
    if in_use.is_some() && !silent {
        Verdict::Talking
    } else {
        Verdict::Switch { from: in_use, to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resolves_only_when_silent_and_at_most_every() {
        // Keepalive 25 s: silent after 50 s; at most every 30 s.
        let mut s = Schedule::new(Duration::from_secs(30), Duration::from_secs(25));
        assert_eq!(s.silence(), Duration::from_secs(50));
        let heard = 1000 * S;
        assert!(!s.due(heard + 49 * S, true, heard));
        assert!(s.due(heard + 50 * S, true, heard));
        assert!(!s.due(heard + 79 * S, true, heard));
        assert!(s.due(heard + 80 * S, true, heard));
        // The peer talks again: no more resolutions.
        let heard = heard + 81 * S;
        assert!(!s.due(heard + 20 * S, true, heard));
    }

    #[test]
    fn unknown_address_resolved_every_interval() {
        let mut s = Schedule::new(Duration::from_secs(2), Duration::from_secs(25));
        let start = 5 * S;
        // Heard just now (a learned peer is known; this one is not).
        assert!(s.due(start, false, start));
        assert!(!s.due(start + S, false, start));
        assert!(s.due(start + 2 * S, false, start));
    }

    #[test]
    fn keepalives_off_silence_is_every() {
        let s = Schedule::new(Duration::from_secs(7), Duration::ZERO);
        assert_eq!(s.silence(), Duration::from_secs(7));
        assert!(!s.silent(10 * S, 4 * S));
        assert!(s.silent(11 * S, 4 * S));
    }

    #[test]
    fn verdicts() {
        let old = a("192.0.2.2:9123");
        let new = a("198.51.100.2:9123");
        assert_eq!(judge(&[old], Some(old), true), Verdict::Same);
        assert_eq!(
            judge(&[a("[::ffff:192.0.2.2]:9123")], Some(old), true),
            Verdict::Same
        );
        assert_eq!(judge(&[new], Some(old), false), Verdict::Talking);
        assert_eq!(
            judge(&[new], Some(old), true),
            Verdict::Switch {
                from: Some(old),
                to: new
            }
        );
        // No address yet (the name did not resolve at start): taken at once.
        assert_eq!(
            judge(&[new], None, false),
            Verdict::Switch {
                from: None,
                to: new
            }
        );
    }

    #[test]
    fn several_answers_keep_the_one_in_use() {
        let (one, two) = (a("192.0.2.2:9123"), a("192.0.2.3:9123"));
        let v6 = a("[2001:db8::2]:9123");
        // Round-robin DNS: whatever comes first, the address in use stays.
        assert_eq!(judge(&[two, one], Some(one), true), Verdict::Same);
        assert_eq!(judge(&[v6, one], Some(one), true), Verdict::Same);
        // None in use is among them: the first IPv4 answer.
        assert_eq!(
            judge(&[v6, two, one], Some(a("203.0.113.1:9123")), true),
            Verdict::Switch {
                from: Some(a("203.0.113.1:9123")),
                to: two
            }
        );
        assert_eq!(
            judge(&[v6], None, true),
            Verdict::Switch { from: None, to: v6 }
        );
    }
}
