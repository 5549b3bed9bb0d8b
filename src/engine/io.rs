//! What the engine needs of a TAP and a UDP socket, as two traits: the
//! real ones (`tun_rs::SyncDevice`, `std::net::UdpSocket` with the GSO and
//! GRO calls of `sys`) implement them here, and the engine's own tests
//! implement them in memory (`engine/mem.rs`), so that the threads' loops
//! run without root (wireguard-go's `tuntest.ChannelTUN` is the model).

use crate::batch::Message;
use crate::sys::{self, Received, Wake};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;
use tun_rs::SyncDevice;

/// A TAP: frames (with a virtio_net_hdr when offloads are on) in and out.
pub trait Tap: Send + Sync + 'static {
    /// Reads one frame; `WouldBlock` when none is queued (non-blocking).
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame.
    fn write(&self, frame: &[u8]) -> io::Result<()>;
    /// Makes reads return `WouldBlock` instead of waiting.
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
    /// The fd to wait on for readability.
    fn fd(&self) -> RawFd;
    /// The interface's MTU now.
    fn mtu(&self) -> io::Result<u16>;
    /// The interface's addresses now (announced to a peer just learned).
    fn addresses(&self, name: &str) -> io::Result<Vec<IpAddr>>;
}

/// A UDP socket that sends batches (`sendmmsg`, UDP GSO) and receives GRO runs.
pub trait Socket: Send + Sync + 'static {
    /// Sends messages of `buf` to `to` in one call; how many the kernel
    /// took (at least one), or the first one's error.
    fn send_messages(&self, buf: &[u8], msgs: &[Message], to: SocketAddr) -> io::Result<usize>;
    /// Sends one datagram.
    fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()>;
    /// Receives one datagram or GRO run (blocking).
    fn recv(&self, buf: &mut [u8]) -> io::Result<Received>;
    /// Receives one datagram or GRO run; `WouldBlock` when none is queued.
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<Received>;
    /// Waits until a datagram is queued, `wake` is signalled, or `timeout`
    /// passed (whichever first; it does not say which).
    fn wait(&self, wake: &Wake, timeout: Duration) -> io::Result<()>;
}

impl Tap for SyncDevice {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf)
    }
    fn write(&self, frame: &[u8]) -> io::Result<()> {
        self.send(frame).map(|_| ())
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        SyncDevice::set_nonblocking(self, on)
    }
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    fn mtu(&self) -> io::Result<u16> {
        // The device's own (through Deref), not this trait's.
        std::ops::Deref::deref(self).mtu()
    }
    fn addresses(&self, name: &str) -> io::Result<Vec<IpAddr>> {
        sys::addresses(name)
    }
}

impl Socket for UdpSocket {
    fn send_messages(&self, buf: &[u8], msgs: &[Message], to: SocketAddr) -> io::Result<usize> {
        sys::send_messages(self, buf, msgs, to)
    }
    fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        UdpSocket::send_to(self, datagram, to).map(|_| ())
    }
    fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        sys::recv_gro(self, buf)
    }
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        sys::try_recv_gro(self, buf)
    }
    fn wait(&self, wake: &Wake, timeout: Duration) -> io::Result<()> {
        sys::wait_either(self, Some(wake), Some(timeout)).map(|_| ())
    }
}

/// A raw fd as `AsRawFd`, for `sys::wait_either`.
pub(super) struct Fd(pub RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// What a receiving thread does with a failed `recv` on the UDP socket: a
/// timeout or an interruption is the loop's own wake-up and says nothing;
/// anything else is logged (once a minute through `errlog`, with the count)
/// and followed by a 1 ms pause, so that a lasting error cannot spin a core.
pub(crate) fn recv_failed(e: &std::io::Error, errlog: &mut crate::stats::Throttle) {
    use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
    if matches!(e.kind(), Interrupted | WouldBlock | TimedOut) {
        return;
    }
    if let Some(n) = errlog.note(1, std::time::Instant::now()) {
        log::warn!("UDP receive: {e} ({n} errors)");
    }
    std::thread::sleep(std::time::Duration::from_millis(1));
}
