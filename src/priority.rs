//! The packet threads' scheduling (`--nice`, `--rt-priority`): those two
//! threads are the only ones a packet waits for, so on a busy host a
//! larger share of a contended CPU (a lower nice value), or preempting
//! every normal thread at once (SCHED_FIFO), shortens every queue the
//! tunnel holds. The tunnel's packet threads ask for SCHED_FIFO 1 by
//! default where the process may have it (root, CAP_SYS_NICE or an
//! RLIMIT_RTPRIO), with each burst bounded as the kernel bounds its own
//! packet work (`burst.rs`); elsewhere they run as started, said once at
//! info. chrony's `-P` is the model of the explicit option.

use crate::sys;
use log::{info, warn};
use std::fmt;

/// The nice values `--nice` takes (the kernel's).
pub const NICE: std::ops::RangeInclusive<i32> = -20..=19;
/// The SCHED_FIFO priorities `--rt-priority` takes (the kernel's).
pub const RT: std::ops::RangeInclusive<i32> = 1..=99;

/// How the packet threads are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// As the process was started.
    #[default]
    AsStarted,
    /// The normal policy at this nice value (`--nice`).
    Nice(i32),
    /// SCHED_FIFO at this priority (`--rt-priority`).
    Fifo(i32),
    /// SCHED_FIFO at this priority if the kernel allows it, as started if
    /// not (the tunnel's default): a refusal is no mistake of the user's.
    FifoWhereAllowed(i32),
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Priority::AsStarted => f.write_str("as started"),
            Priority::Nice(n) => write!(f, "nice {n}"),
            Priority::Fifo(p) => write!(f, "SCHED_FIFO priority {p}"),
            Priority::FifoWhereAllowed(p) => write!(f, "SCHED_FIFO priority {p} where allowed"),
        }
    }
}

impl Priority {
    /// The option that asked for it, with its value.
    fn flag(self) -> String {
        match self {
            Priority::AsStarted => String::new(),
            Priority::Nice(n) => format!("--nice {n}"),
            Priority::Fifo(p) => format!("--rt-priority {p}"),
            Priority::FifoWhereAllowed(p) => format!("the default SCHED_FIFO priority {p}"),
        }
    }

    /// What to do instead under systemd, whose units give no CAP_SYS_NICE.
    fn unit_lines(self) -> String {
        match self {
            Priority::AsStarted => String::new(),
            Priority::Nice(n) => format!("Nice={n}"),
            Priority::Fifo(p) | Priority::FifoWhereAllowed(p) => {
                format!("LimitRTPRIO={p} and no RestrictRealtime=yes")
            }
        }
    }
}

/// What was asked for the packet threads, and what they got (as started
/// when the kernel refused), for the status views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// What the options asked for.
    pub asked: Priority,
    /// What the threads run at: `asked`, or as started if refused.
    pub got: Priority,
}

impl Outcome {
    /// The status JSON's `priority` object (the names hold nothing to
    /// escape: letters, digits, spaces, `-` and `_`), with the count of
    /// real-time bursts cut (`burst.rs`) under SCHED_FIFO.
    pub fn json(&self, bursts_cut: u64) -> String {
        let cut = match self.fifo() {
            true => format!(",\"bursts_cut\":{bursts_cut}"),
            false => String::new(),
        };
        format!(
            "{{\"asked\":\"{}\",\"got\":\"{}\"{cut}}}",
            self.asked, self.got
        )
    }

    /// Whether the threads run under SCHED_FIFO.
    pub fn fifo(&self) -> bool {
        matches!(self.got, Priority::Fifo(_))
    }

    /// The status views' line: what the threads got, and under SCHED_FIFO
    /// how many of their bursts were cut (`burst.rs`).
    pub fn with_cuts(&self, bursts_cut: u64) -> String {
        match self.fifo() {
            true => format!(
                "{self}, {bursts_cut} bursts over {} ms went on at the normal policy",
                crate::burst::LIMIT_MS
            ),
            false => self.to_string(),
        }
    }
}

/// Whether this process may run a thread under SCHED_FIFO (tried on a
/// thread of its own, which then ends): the tests' fork between the
/// privileged case and the other.
#[cfg(test)]
pub(crate) fn may_fifo() -> bool {
    std::thread::spawn(|| crate::sys::set_thread_fifo(2).is_ok())
        .join()
        .unwrap_or(false)
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.asked, self.got) {
            (a, g) if a == g => write!(f, "{g}"),
            (Priority::FifoWhereAllowed(_), g @ Priority::Fifo(_)) => {
                write!(f, "{g} (the default)")
            }
            (Priority::FifoWhereAllowed(_), g) => {
                write!(f, "{g} (the default SCHED_FIFO not allowed: see the log)")
            }
            (a, g) => write!(f, "{g} ({} refused: see the log)", a.flag()),
        }
    }
}

/// Sets the calling thread to `p` (the normal policy for a nice value).
fn set(p: Priority) -> std::io::Result<()> {
    match p {
        Priority::AsStarted => Ok(()),
        Priority::Nice(n) => sys::set_thread_nice(n),
        Priority::Fifo(prio) | Priority::FifoWhereAllowed(prio) => sys::set_thread_fifo(prio),
    }
}

/// Before the process drops root (`--user`): raises RLIMIT_RTPRIO to the
/// real-time priority `p` asks for, so that the packet threads, started
/// after the drop, may still take it, and take it back after a cut burst
/// (`burst.rs`): the kernel lets an unprivileged thread go that high and
/// no higher. Nothing for another priority; a refusal is left to the
/// threads' own attempt to report.
pub fn keep_after_drop(p: Priority) {
    if let Priority::Fifo(prio) | Priority::FifoWhereAllowed(prio) = p
        && let Err(e) = sys::raise_rtprio_limit(prio as u64)
    {
        log::debug!("RLIMIT_RTPRIO to {prio}: {e}");
    }
}

/// Runs `spawn`, which starts the packet threads, on a short-lived thread
/// set to `p`, so that those threads start with it and the caller keeps
/// its own scheduling (the threads it starts later and the hooks it runs
/// too; and an unprivileged caller could not lower its nice value back).
/// A refusal is said once, and the threads start as the caller runs.
pub fn spawn_at<R: Send>(
    p: Priority,
    what: &str,
    spawn: impl FnOnce() -> R + Send,
) -> (R, Outcome) {
    // Where allowed, the default is what an explicit option would give.
    let got = match p {
        Priority::FifoWhereAllowed(prio) => Priority::Fifo(prio),
        p => p,
    };
    let mut outcome = Outcome { asked: p, got };
    let wanted = got;
    if p == Priority::AsStarted {
        return (spawn(), outcome);
    }
    let got = &mut outcome.got;
    let launch = || {
        match set(p) {
            Ok(()) => info!("{what} at {wanted}"),
            Err(e) => {
                *got = Priority::AsStarted;
                let needs = match p {
                    Priority::Fifo(_) | Priority::FifoWhereAllowed(_) => {
                        "a real-time priority needs root or CAP_SYS_NICE (or an RLIMIT_RTPRIO that allows it), and real-time time for this cgroup where the cpu controller rations it"
                    }
                    _ => {
                        "a lower nice value needs root or CAP_SYS_NICE (or an RLIMIT_NICE that allows it)"
                    }
                };
                match p {
                    // Not asked for: the host runs as it did; said once
                    // for whoever wonders about latency under load.
                    Priority::FifoWhereAllowed(_) => info!(
                        "{what} as started, not under SCHED_FIFO: the kernel refused ({e}); {needs} (under systemd: {} in the unit; --rt-priority off not to ask)",
                        p.unit_lines()
                    ),
                    _ => warn!(
                        "{}: the kernel refused ({e}); {what} as started: {needs} (under systemd: {} in the unit instead)",
                        p.flag(),
                        p.unit_lines()
                    ),
                }
            }
        }
        spawn()
    };
    let r = std::thread::scope(|s| match s.spawn(launch).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    });
    (r, outcome)
}

/// This process's threads named `name`: their nice values and their
/// SCHED_FIFO priority where they run under it (tests).
#[cfg(test)]
pub(crate) fn threads_named(name: &str) -> Vec<(i32, Option<i32>)> {
    let mut v = Vec::new();
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        // After the command's ")": state is field 3, nice 19, the
        // real-time priority 40, the policy 41.
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if stat[open + 1..close] == *name
            && let (Some(n), Some(rt), Some(pol)) = (f.get(16), f.get(37), f.get(38))
            && let (Ok(n), Ok(rt), Ok(pol)) = (n.parse(), rt.parse(), pol.parse::<i32>())
        {
            v.push((n, (pol == libc::SCHED_FIFO).then_some(rt)));
        }
    }
    v
}

/// Waits (up to 2 s) for a thread named `name` that `want` accepts, and
/// says whether one came; also what was seen. A new thread takes its name
/// only once it runs, a moment after its spawn returned (tests).
#[cfg(test)]
pub(crate) fn thread_named(
    name: &str,
    want: impl Fn(i32, Option<i32>) -> bool,
) -> (bool, Vec<(i32, Option<i32>)>) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let seen = threads_named(name);
        if seen.iter().any(|&(n, f)| want(n, f)) {
            return (true, seen);
        }
        if std::time::Instant::now() >= end {
            return (false, seen);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
