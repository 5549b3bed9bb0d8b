//! `--up` and `--down` hooks: a shell command with the tunnel's environment,
//! waited for while SIGINT/SIGTERM are still answered.

use crate::{engine, sys};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a `--down` hook may run before it is killed, so that a stuck
/// hook cannot keep a stopping service (and its TAP) around for ever.
pub const DOWN_HOOK_LIMIT: Duration = Duration::from_secs(10);

/// How a hook ended.
pub enum HookEnd {
    /// It exited (or was killed by a signal of its own).
    Exited(ExitStatus),
    /// SIGINT/SIGTERM came first; the hook was killed.
    Interrupted(i32),
    /// It ran past its limit and was killed.
    TimedOut,
}

/// Runs `cmd` with `sh -c` and the tunnel's environment, waiting for it
/// while still answering SIGINT/SIGTERM (which kill it).
pub fn run_hook(
    tun: &engine::Tunnel,
    event: &str,
    cmd: &str,
    limit: Option<Duration>,
) -> std::io::Result<HookEnd> {
    let peer = tun.peer().map(|p| p.to_string()).unwrap_or_default();
    let env = [
        ("TAPTUN_EVENT", event.to_string()),
        ("TAPTUN_DEV", tun.name().to_string()),
        ("TAPTUN_MTU", tun.mtu().to_string()),
        ("TAPTUN_PEER", peer),
        ("TAPTUN_LOCAL", tun.local_addr().to_string()),
    ];
    run_hook_env(cmd, &env, limit)
}

/// Runs `cmd` with `sh -c` and `env` added to the environment (the hub's
/// hooks, one run per spoke), as [`run_hook`] does.
pub fn run_hook_env(
    cmd: &str,
    env: &[(&str, String)],
    limit: Option<Duration>,
) -> std::io::Result<HookEnd> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        // The service manager must hear READY/STOPPING from taptun only.
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .spawn()?;
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(HookEnd::Exited(st));
        }
        if limit.is_some_and(|l| start.elapsed() > l) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(HookEnd::TimedOut);
        }
        // Only the stop signals: SIGHUP/SIGUSR1 stay pending for the main loop.
        if let Ok(Some(sig)) =
            sys::wait_signal(&[libc::SIGINT, libc::SIGTERM], Duration::from_millis(20))
        {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(HookEnd::Interrupted(sig));
        }
    }
}
