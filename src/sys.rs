//! The few syscalls std lacks. This is the only module with `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Signals the main thread waits for; workers inherit them blocked.
pub const HANDLED_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1];

fn sigset(signals: &[i32]) -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        if libc::sigemptyset(&mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        for &s in signals {
            if libc::sigaddset(&mut set, s) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(set)
    }
}

/// Blocks `signals` in the calling thread (and in threads it spawns later),
/// so that they are only ever taken by [`wait_signal`].
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    let set = sigset(signals)?;
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits up to `timeout` for one of `signals` (which must be blocked);
/// `Ok(None)` on timeout.
pub fn wait_signal(signals: &[i32], timeout: Duration) -> io::Result<Option<i32>> {
    let set = sigset(signals)?;
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid set and timespec; siginfo may be null.
    let rc = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if rc >= 0 {
        return Ok(Some(rc));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        _ => Err(err),
    }
}

fn getsockopt_int(fd: i32, opt: libc::c_int) -> io::Result<usize> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: val and len point to valid memory of the stated size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(val.max(0) as usize)
}

fn setsockopt_int(
    fd: i32,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: val points to a c_int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Which socket buffer.
#[derive(Debug, Clone, Copy)]
pub enum Buf {
    /// SO_RCVBUF.
    Recv,
    /// SO_SNDBUF.
    Send,
}

/// Asks for a socket buffer of `bytes`; with CAP_NET_ADMIN the `*FORCE`
/// option passes `net.core.{r,w}mem_max`. Returns what the kernel granted
/// (as it reports it: twice the usable size).
pub fn set_socket_buffer(sock: &impl AsRawFd, which: Buf, bytes: usize) -> io::Result<usize> {
    let fd = sock.as_raw_fd();
    let (force, plain) = match which {
        Buf::Recv => (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        Buf::Send => (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    };
    let val = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    if setsockopt_int(fd, libc::SOL_SOCKET, force, val).is_err() {
        setsockopt_int(fd, libc::SOL_SOCKET, plain, val)?;
    }
    getsockopt_int(fd, plain)
}
