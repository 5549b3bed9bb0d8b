//! Opening the TAP and the UDP socket, and probing which offloads the
//! kernel allows; the errors say what to do.

use crate::addr::{self, Cidr, Local};
use crate::config::Config;
use crate::mac::{self, MacAddr};
use crate::sys;
use log::{debug, info, warn};
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

/// Why the tunnel could not start; each says what to do.
#[derive(Debug)]
pub enum TunnelError {
    /// Opening or configuring the TAP failed.
    Tap(io::Error),
    /// Binding the UDP socket failed.
    Bind(SocketAddr, io::Error),
    /// More than one IPv4 `--address`.
    TwoIpv4(Cidr),
    /// Spawning a thread failed.
    Thread(io::Error),
    /// The OS random source failed (the confidential mode's index seed).
    Random(String),
    /// `--fwmark` could not be set on the socket.
    Mark(u32, io::Error),
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::Tap(e) => {
                let hint = match e.raw_os_error() {
                    Some(libc::ENOENT) | Some(libc::ENODEV) => {
                        "; /dev/net/tun is missing: load the tun module (modprobe tun)"
                    }
                    Some(libc::EPERM) => {
                        "; run as root or grant CAP_NET_ADMIN (systemd AmbientCapabilities=CAP_NET_ADMIN, or setcap cap_net_admin+ep taptun)"
                    }
                    Some(libc::EACCES) => {
                        "; this user may not open /dev/net/tun (udev normally makes it mode 0666), or lacks CAP_NET_ADMIN: run as root or grant it (systemd AmbientCapabilities=CAP_NET_ADMIN)"
                    }
                    Some(libc::EBUSY) => {
                        "; another process has a TAP of this --dev name open (another taptun?): pick another name, or stop that one"
                    }
                    Some(libc::EINVAL) => "; is the --dev name taken by another kind of interface?",
                    _ => "",
                };
                write!(f, "cannot create the TAP interface: {e}{hint}")
            }
            TunnelError::Bind(a, e) => {
                let hint = match e.kind() {
                    io::ErrorKind::AddrInUse => {
                        "; another process uses this port: pick another, or stop it"
                    }
                    io::ErrorKind::AddrNotAvailable => "; this host has no such address",
                    io::ErrorKind::PermissionDenied => {
                        "; ports below 1024 need root or CAP_NET_BIND_SERVICE"
                    }
                    _ => "",
                };
                write!(f, "cannot bind UDP {a}: {e}{hint}")
            }
            TunnelError::TwoIpv4(c) => write!(
                f,
                "--address {c}: only one IPv4 address can be set; add more with `ip addr add` (IPv6 may repeat)"
            ),
            TunnelError::Thread(e) => write!(f, "cannot start a thread: {e}"),
            TunnelError::Random(e) => write!(f, "cannot draw the session seed: {e}"),
            TunnelError::Mark(m, e) => write!(
                f,
                "--fwmark {m}: cannot mark the UDP socket: {e}; SO_MARK needs CAP_NET_ADMIN (run as root, or AmbientCapabilities=CAP_NET_ADMIN)"
            ),
        }
    }
}

impl std::error::Error for TunnelError {}

/// The opened TAP and socket, and what the kernel allows on them.
pub(super) struct Devices {
    pub tap: SyncDevice,
    pub socket: UdpSocket,
    /// The address the socket is bound to.
    pub local: SocketAddr,
    /// The TAP's name.
    pub name: String,
    /// The TAP's MAC address.
    pub mac: MacAddr,
    /// TAP offloads (virtio_net_hdr, TSO read, super-frames written).
    pub offload: bool,
    /// Whether UDP runs may be written to the TAP as USO super-frames.
    pub udp_coalesce: bool,
    /// Whether the socket may send UDP GSO messages.
    pub udp_gso: bool,
}

/// Binds the UDP socket to the first of `local`'s candidates that the
/// host has (the hub's socket too), and asks for each receive's ECN field
/// (RFC 6040's outer header: a CE the underlay marked reaches the frame).
pub(crate) fn bind_udp(local: Local) -> Result<UdpSocket, TunnelError> {
    let mut last = None;
    for a in local.candidates() {
        match UdpSocket::bind(a) {
            Ok(s) => {
                if let Err(e) = sys::enable_recv_ecn(&s, a.is_ipv6()) {
                    warn!(
                        "cannot read the ECN field of datagrams received ({e}): congestion the underlay marks (CE) does not reach the frames"
                    );
                }
                if let Err(e) = sys::enable_rx_timestamps(&s) {
                    warn!(
                        "cannot stamp datagrams with their arrival time ({e}): no AQM on the receive queue, and no sojourn times in the status"
                    );
                }
                return Ok(s);
            }
            // IPv6 disabled on this host: fall back to the IPv4 wildcard.
            Err(e)
                if e.raw_os_error() == Some(libc::EAFNOSUPPORT)
                    || e.kind() == io::ErrorKind::AddrNotAvailable =>
            {
                last = Some(TunnelError::Bind(a, e))
            }
            Err(e) => return Err(TunnelError::Bind(a, e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        TunnelError::Bind(local.candidates()[0], io::ErrorKind::InvalidInput.into())
    }))
}

/// Binds the socket, creates the TAP and brings it up.
pub(super) fn open(cfg: &Config) -> Result<Devices, TunnelError> {
    let socket = bind_udp(cfg.local)?;
    let local = socket
        .local_addr()
        .map_err(|e| TunnelError::Bind(cfg.local.candidates()[0], e))?;
    // Before anything is sent, and before --user drops the capability.
    if let Some(m) = cfg.fwmark {
        sys::set_mark(&socket, m).map_err(|e| TunnelError::Mark(m, e))?;
    }
    // With a peer name, the receiving thread looks every second for an
    // address the name now resolves to, also while nothing arrives.
    // In the confidential mode, also for the handshake timers.
    if (cfg.peer_name.is_some() || cfg.cipher.is_some())
        && let Err(e) = socket.set_read_timeout(Some(std::time::Duration::from_secs(1)))
    {
        warn!(
            "cannot set a receive timeout on the UDP socket ({e}): a new address of the peer's name is taken only when a datagram arrives"
        );
    }
    for (which, name) in [(sys::Buf::Recv, "receive"), (sys::Buf::Send, "send")] {
        match sys::set_socket_buffer(&socket, which, cfg.sockbuf) {
            Ok(got) if got < cfg.sockbuf => warn!(
                "UDP {name} buffer is {got} bytes, less than the {} asked for; raise net.core.{}mem_max",
                cfg.sockbuf,
                if matches!(which, sys::Buf::Recv) {
                    "r"
                } else {
                    "w"
                }
            ),
            Ok(_) => {}
            Err(e) => warn!("cannot set the UDP {name} buffer: {e}"),
        }
    }

    let mut ipv4 = None;
    let mut ipv6 = Vec::new();
    for c in &cfg.addresses {
        match c.ip {
            std::net::IpAddr::V4(ip) if ipv4.is_none() => ipv4 = Some((ip, c.prefix)),
            std::net::IpAddr::V4(_) => return Err(TunnelError::TwoIpv4(*c)),
            std::net::IpAddr::V6(ip) => ipv6.push((ip, c.prefix)),
        }
    }
    let named_mac = cfg.dev.as_deref().map(|n| mac_for(cfg, n));
    let build = |offload: bool| {
        let mut b = DeviceBuilder::new()
            .layer(Layer::L2)
            .mtu(cfg.mtu)
            .offload(offload)
            .enable(true);
        if let Some(name) = &cfg.dev {
            b = b.name(name.clone());
            // Set before the TAP comes up, so its IPv6 link-local address
            // derives from it.
            if let Some(m) = named_mac {
                b = b.mac_addr(m.0);
            }
        }
        if let Some((ip, prefix)) = ipv4 {
            b = b.ipv4(ip, prefix, None);
        }
        for &(ip, prefix) in &ipv6 {
            b = b.ipv6(ip, prefix);
        }
        b.build_sync()
    };
    if cfg.offload
        && let Err(e) = sys::enable_udp_gro(&socket)
    {
        info!("UDP GRO unavailable ({e}); receiving datagrams one by one");
    }
    let udp_gso = cfg.offload
        && match sys::udp_gso_available(&socket) {
            Ok(()) => true,
            Err(e) => {
                info!("UDP GSO unavailable ({e}); sending datagrams one per message");
                false
            }
        };
    let (tap, offload) = if cfg.offload {
        // TCP offloads only: UDP super-frames (USO) would be segmented
        // by code that the kernel never exercises here.
        match build(true).and_then(|t| sys::tun_set_offload(&t, sys::TUN_TCP_OFFLOADS).map(|_| t)) {
            Ok(t) => (t, true),
            // The name is taken: that is the error, not the offloads.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Err(TunnelError::Tap(e)),
            Err(e) => {
                info!("TAP offloads unavailable ({e}); using one frame per read");
                (build(false).map_err(TunnelError::Tap)?, false)
            }
        }
    } else {
        (build(false).map_err(TunnelError::Tap)?, false)
    };
    // UDP super-frames may be written to the TAP only if the kernel
    // knows USO (6.2+); older ones refuse the write. Asking for USO is
    // the kernel's own way to test for it; then it is switched off
    // again, since taptun does not read UDP super-frames.
    let udp_coalesce =
        offload && sys::tun_set_offload(&tap, sys::TUN_TCP_OFFLOADS | sys::TUN_USO).is_ok();
    if udp_coalesce && let Err(e) = sys::tun_set_offload(&tap, sys::TUN_TCP_OFFLOADS) {
        // Harmless: UDP super-frames from the kernel are cut like TCP ones.
        debug!("cannot switch TAP USO off again: {e}");
    }
    if offload && !udp_coalesce {
        info!("kernel without TAP USO (before 6.2): UDP datagrams go to the TAP one by one");
    }
    let name = tap.name().map_err(TunnelError::Tap)?;
    let mac = named_mac.unwrap_or_else(|| mac_for(cfg, &name));
    if named_mac.is_none()
        && let Err(e) = tap.set_mac_address(mac.0)
    {
        warn!("cannot set {name}'s MAC to {mac}: {e}; it keeps a random one");
    }
    let mac = tap.mac_address().map(MacAddr).unwrap_or(mac);
    info!(
        "{name} up, mac {mac}, mtu {}, UDP {}, offloads {}, {}",
        cfg.mtu,
        addr::canonical(local),
        if offload { "on" } else { "off" },
        match (cfg.peer, &cfg.peer_name) {
            (Some(p), None) => format!("peer {}", addr::canonical(p)),
            (Some(p), Some(n)) => format!("peer {n} ({})", addr::canonical(p)),
            (None, Some(n)) => format!("peer {n} (not resolved yet)"),
            (None, None) => "waiting for peer".to_string(),
        }
    );
    for c in &cfg.addresses {
        info!("{name} address {c}");
    }
    Ok(Devices {
        mac,
        tap,
        socket,
        local,
        name,
        offload,
        udp_coalesce,
        udp_gso,
    })
}

/// The MAC the TAP `name` gets: `--mac`, else the persistent one, else
/// (no machine id) a random one.
fn mac_for(cfg: &Config, name: &str) -> MacAddr {
    if let Some(m) = cfg.mac {
        return m;
    }
    machine_mac(name)
}

/// The persistent MAC of the TAP `name` (machine id, name, network
/// namespace), or a random one without a machine id.
pub(crate) fn machine_mac(name: &str) -> MacAddr {
    use std::os::unix::fs::MetadataExt;
    let id = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read(p).ok().filter(|b| !b.trim_ascii().is_empty()));
    let netns = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino());
    match id {
        Some(id) => mac::persistent(id.trim_ascii(), name, netns),
        None => {
            let mut b = [0u8; 6];
            let _ = getrandom::fill(&mut b);
            b[0] = (b[0] & 0xfe) | 0x02;
            info!("no /etc/machine-id: {name} gets a random MAC on each start (--mac pins one)");
            MacAddr(b)
        }
    }
}
