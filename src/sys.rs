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

/// A user account, as `getpwnam` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The login name.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
}

/// Looks up a user by name; `Ok(None)` when there is no such user.
pub fn lookup_user(name: &str) -> io::Result<Option<User>> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in user name"))?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: passwd is plain data filled by getpwnam_r; `buf` outlives the
        // call and its length is passed; `result` is a valid out-pointer.
        let (rc, found, uid, gid) = unsafe {
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            (rc, !result.is_null(), pw.pw_uid, pw.pw_gid)
        };
        match rc {
            0 if found => {
                return Ok(Some(User {
                    name: name.to_string(),
                    uid,
                    gid,
                }));
            }
            0 | libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Switches the whole process to `user`: its supplementary groups
/// (initgroups), then real, effective and saved gid and uid. Every
/// capability goes with root. Checks that root cannot be regained.
/// Call it before starting threads (glibc applies it to all threads anyway).
pub fn drop_privileges(user: &User) -> io::Result<()> {
    let cname = std::ffi::CString::new(user.name.as_str())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in user name"))?;
    // SAFETY: plain syscalls with a valid NUL-terminated name and integer ids.
    unsafe {
        if libc::initgroups(cname.as_ptr(), user.gid as libc::gid_t) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setresgid(user.gid, user.gid, user.gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setresuid(user.uid, user.uid, user.uid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if user.uid != 0 && libc::setuid(0) == 0 {
            return Err(io::Error::other("could regain root after dropping it"));
        }
    }
    Ok(())
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// The service manager's notification socket (`$NOTIFY_SOCKET`), for
/// `sd_notify`-style messages without libsystemd.
#[derive(Debug)]
pub struct Notifier {
    sock: std::os::unix::net::UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
    /// `Ok(None)` when it is unset or empty (not run by systemd).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let bytes = value.as_bytes();
        let addr = match bytes.first() {
            None => return Ok(None),
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(&value))?,
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET={}: expected an absolute path or @abstract-name",
                        value.to_string_lossy()
                    ),
                ));
            }
        };
        Ok(Some(Notifier {
            sock: UnixDatagram::unbound()?,
            addr,
        }))
    }

    /// Sends one message, e.g. `READY=1`.
    pub fn notify(&self, msg: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(msg.as_bytes(), &self.addr)
            .map(|_| ())
    }
}

/// `TUNSETOFFLOAD`, `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;

/// Sets the offloads a TAP opened with `IFF_VNET_HDR` may hand us
/// (`TUN_F_*` bits); the kernel takes the mask by value.
pub fn tun_set_offload(tap: &impl AsRawFd, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes an integer argument, no pointer.
    let rc = unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETOFFLOAD as _, flags as libc::c_ulong) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`: checksum and TCP segmentation
/// offload, without UDP segmentation (USO).
pub const TUN_TCP_OFFLOADS: u32 = 0x01 | 0x02 | 0x04;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_nobody() {
        let root = lookup_user("root").unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup_user("no-such-user-taptun").unwrap(), None);
        assert!(lookup_user("a\0b").is_err());
    }

    #[test]
    fn notifier_sends_to_a_path() {
        let dir = std::env::temp_dir().join(format!("taptun-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            sock: std::os::unix::net::UnixDatagram::unbound().unwrap(),
            addr: std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
        };
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
