//! The data path's scheduling priority (`--nice`): its threads are the
//! only ones a packet waits for, so on a busy host a lower nice value
//! (a larger share of the CPU when it is contended) shortens every queue
//! the tunnel holds. Like tinc's `ProcessPriority` and OpenVPN's `--nice`,
//! off by default.

use crate::sys;
use log::{info, warn};

/// The range `--nice` takes (the kernel's).
pub const RANGE: std::ops::RangeInclusive<i32> = -20..=19;

/// Runs `spawn`, which starts the data path's threads, with the calling
/// thread at nice `n`, so that those threads start with it; the calling
/// thread then returns to its own value (the threads it starts later, and
/// the hooks it runs, keep that). A refusal is said once, and the threads
/// start at the caller's value.
pub fn spawn_at<R>(n: Option<i32>, what: &str, spawn: impl FnOnce() -> R) -> R {
    let Some(n) = n else { return spawn() };
    let old = match sys::thread_nice() {
        Ok(old) => old,
        Err(e) => {
            warn!(
                "--nice {n}: cannot read the current nice value ({e}); {what} at the usual priority"
            );
            return spawn();
        }
    };
    if let Err(e) = sys::set_thread_nice(n) {
        warn!(
            "--nice {n}: the kernel refused ({e}); {what} at nice {old}: a lower value needs root or CAP_SYS_NICE (under systemd: Nice={n} in the unit instead)"
        );
        return spawn();
    }
    let r = spawn();
    if let Err(e) = sys::set_thread_nice(old) {
        warn!("--nice {n}: cannot return the main thread to nice {old} ({e})");
    }
    info!("{what} at nice {n}");
    r
}

/// This process's threads named `name` and their nice values (tests).
#[cfg(test)]
pub(crate) fn threads_named(name: &str) -> Vec<i32> {
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
        // After the command's ")": state is field 3, nice field 19.
        let nice = stat[close + 1..].split_whitespace().nth(16);
        if stat[open + 1..close] == *name
            && let Some(n) = nice.and_then(|n| n.parse().ok())
        {
            v.push(n);
        }
    }
    v
}
