//! An in-memory TAP and UDP network for the engine's own tests, which run
//! the real threads and loops without root (wireguard-go's
//! `tuntest.ChannelTUN` is the model).
//!
//! The TAP is one end of a datagram socketpair, so that the engine waits
//! on it as on a real TAP; the test holds the other end, the "kernel",
//! and may answer frames as the kernel does (an echo reply written back at
//! once). The network delivers datagrams between [`MemSocket`]s by address,
//! cutting GSO messages as the kernel does, and can refuse GSO.

use super::io::{Socket, Tap};
use crate::batch::Message;
use crate::ecn::Ecn;
use crate::sys::{Received, Wake};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the "kernel" answers a frame written to the TAP: a frame to queue
/// for the engine to read, or none.
pub(crate) type Answer = Box<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// An in-memory TAP.
pub(crate) struct MemTap {
    engine: UnixDatagram,
    kernel: UnixDatagram,
    mtu: AtomicU16,
    addrs: Mutex<Vec<IpAddr>>,
    answer: Option<Answer>,
}

impl MemTap {
    pub(crate) fn new(mtu: u16, addrs: Vec<IpAddr>, answer: Option<Answer>) -> MemTap {
        let (engine, kernel) = UnixDatagram::pair().expect("socketpair");
        // Room for a few hundred frames queued either way.
        for s in [&engine, &kernel] {
            let _ = crate::sys::set_socket_buffer(s, crate::sys::Buf::Send, 4 << 20);
            let _ = crate::sys::set_socket_buffer(s, crate::sys::Buf::Recv, 4 << 20);
        }
        kernel
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        MemTap {
            engine,
            kernel,
            mtu: AtomicU16::new(mtu),
            addrs: Mutex::new(addrs),
            answer,
        }
    }

    /// The kernel sends a frame out of the TAP (the engine reads it).
    pub(crate) fn inject(&self, frame: &[u8]) {
        self.kernel.send(frame).expect("inject");
    }

    /// Frames the engine wrote to the TAP, until `n` came or `within` passed.
    pub(crate) fn written(&self, n: usize, within: Duration) -> Vec<Vec<u8>> {
        let end = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 70_000];
        while got.len() < n && Instant::now() < end {
            if let Ok(len) = self.kernel.recv(&mut buf) {
                got.push(buf[..len].to_vec());
            }
        }
        got
    }

    /// Changes the interface's MTU (as `ip link set … mtu` would).
    pub(crate) fn set_mtu(&self, mtu: u16) {
        self.mtu.store(mtu, SeqCst);
    }
}

impl Tap for MemTap {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.engine.recv(buf)
    }
    fn write(&self, frame: &[u8]) -> io::Result<()> {
        self.engine.send(frame)?;
        if let Some(reply) = self.answer.as_ref().and_then(|a| a(frame)) {
            self.kernel.send(&reply)?;
        }
        Ok(())
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.engine.set_nonblocking(on)
    }
    fn fd(&self) -> RawFd {
        self.engine.as_raw_fd()
    }
    fn mtu(&self) -> io::Result<u16> {
        Ok(self.mtu.load(SeqCst))
    }
    fn addresses(&self, _name: &str) -> io::Result<Vec<IpAddr>> {
        Ok(self.addrs.lock().expect("addrs").clone())
    }
}

/// A datagram in flight: its bytes, sender, outer ECN field and arrival
/// stamp (UNIX ns).
type Datagram = (Vec<u8>, SocketAddr, Ecn, u64);

/// The network: who listens at which address.
#[derive(Default)]
pub(crate) struct MemNet {
    ports: Mutex<HashMap<SocketAddr, Sender<Datagram>>>,
    /// Marks every datagram CE on its way, Not-ECT ones too (an underlay
    /// that breaks RFC 3168: what RFC 6040's drop rule is for).
    pub mark_ce: AtomicBool,
    /// A datagram already waiting when the receiver asks for one is
    /// stamped as having arrived this long (ns) before it was delivered: a
    /// standing queue at the receiver, as the AQM sees it. (One the
    /// receiver waited for keeps its true stamp: it found no queue.)
    pub queued_ns: AtomicU64,
}

impl MemNet {
    /// A socket bound to `addr`.
    pub(crate) fn bind(self: &Arc<Self>, addr: SocketAddr) -> MemSocket {
        let (tx, rx) = channel();
        self.ports.lock().expect("ports").insert(addr, tx);
        MemSocket {
            addr,
            net: self.clone(),
            rx: Mutex::new(rx),
            stash: Mutex::new(None),
            refuse_gso: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
        }
    }

    fn deliver(&self, dg: &[u8], from: SocketAddr, to: SocketAddr, ecn: Ecn) {
        let ecn = match self.mark_ce.load(SeqCst) {
            true => Ecn::Ce,
            false => ecn,
        };
        if let Some(port) = self.ports.lock().expect("ports").get(&to) {
            let _ = port.send((dg.to_vec(), from, ecn, super::unix_nanos()));
        }
    }
}

/// One datagram as it left a socket: which thread sent it, whether it was
/// part of a GSO message, its length and its outer ECN field.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub thread: String,
    pub gso: bool,
    pub len: usize,
    pub ecn: Ecn,
}

/// A UDP socket on the [`MemNet`].
pub(crate) struct MemSocket {
    addr: SocketAddr,
    net: Arc<MemNet>,
    rx: Mutex<Receiver<Datagram>>,
    /// A datagram `wait` took from the channel, for the next receive.
    stash: Mutex<Option<Datagram>>,
    /// Refuse GSO messages with EIO, as a kernel or route without UDP GSO.
    pub refuse_gso: AtomicBool,
    /// Every datagram sent, and GSO messages refused (`len` 0).
    pub log: Mutex<Vec<Sent>>,
}

impl MemSocket {
    fn note(&self, gso: bool, len: usize, ecn: Ecn) {
        let thread = std::thread::current().name().unwrap_or("?").to_string();
        self.log.lock().expect("log").push(Sent {
            thread,
            gso,
            len,
            ecn,
        });
    }
}

impl Socket for MemSocket {
    fn send_messages(&self, buf: &[u8], msgs: &[Message], to: SocketAddr) -> io::Result<usize> {
        let n = msgs.len().min(crate::sys::MAX_MESSAGES);
        for (i, m) in msgs[..n].iter().enumerate() {
            if m.is_gso() && self.refuse_gso.load(SeqCst) {
                self.note(true, 0, m.ecn);
                if i == 0 {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                return Ok(i);
            }
            for one in m.split() {
                self.note(m.is_gso(), one.range.len(), one.ecn);
                self.net.deliver(&buf[one.range], self.addr, to, one.ecn);
            }
        }
        Ok(n)
    }

    fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.note(false, datagram.len(), Ecn::NotEct);
        self.net.deliver(datagram, self.addr, to, Ecn::NotEct);
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        match self.try_recv(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            got => return got,
        }
        let rx = self.rx.lock().expect("rx");
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(d) => Ok(fill(buf, d)),
            Err(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        // What `wait` took from the channel came while someone waited.
        if let Some(d) = self.stash.lock().expect("stash").take() {
            return Ok(fill(buf, d));
        }
        match self.rx.lock().expect("rx").try_recv() {
            Ok((dg, from, ecn, at)) => {
                let queued = self.net.queued_ns.load(SeqCst);
                Ok(fill(buf, (dg, from, ecn, at.saturating_sub(queued))))
            }
            Err(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn wait(&self, wake: &Wake, timeout: Duration) -> io::Result<()> {
        // The channel and the eventfd cannot be waited on together: a
        // millisecond at a time on the channel, looking at the wake-up
        // in between.
        let end = Instant::now() + timeout;
        let mut stash = self.stash.lock().expect("stash");
        while stash.is_none() && Instant::now() < end {
            let woken = crate::sys::wait_either(wake, None::<&super::io::Fd>, Some(Duration::ZERO));
            if woken.is_ok_and(|r| r.first) {
                break;
            }
            let slice = end
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(1));
            if let Ok(d) = self.rx.lock().expect("rx").recv_timeout(slice) {
                *stash = Some(d);
            }
        }
        Ok(())
    }
}

/// A received datagram into `buf`, as the real socket reports it.
fn fill(buf: &mut [u8], (dg, from, ecn, arrived): Datagram) -> Received {
    let len = dg.len().min(buf.len());
    buf[..len].copy_from_slice(&dg[..len]);
    Received {
        len,
        from: Some(from),
        segment: None,
        truncated: dg.len() > buf.len(),
        ecn,
        arrived_ns: Some(arrived),
    }
}
