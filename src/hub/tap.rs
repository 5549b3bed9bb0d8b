//! A spoke's TAP: created with the same offloads as the point-to-point
//! tunnel's, and, with `--bridge`, made a port of the bridge the way
//! `scripts/l2_bridge_up.sh` does it (the TAP's MTU raised to the
//! bridge's first, so that the bridge keeps its MTU).

use crate::engine::machine_mac;
use crate::linkgroup;
use crate::sys;
use log::{debug, info};
use std::fmt;
use std::io;
use std::path::Path;
use std::process::Command;
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

/// A spoke's TAP could not be set up.
#[derive(Debug)]
pub enum TapError {
    /// Creating the TAP failed.
    Create(String, io::Error),
    /// The bridge does not exist (or is no bridge).
    NoBridge(String),
    /// `ip` failed to set the MTU or the master.
    Ip(String, String),
}

impl fmt::Display for TapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TapError::Create(dev, e) => {
                let hint = match e.raw_os_error() {
                    Some(libc::EPERM) | Some(libc::EACCES) => {
                        "; run as root or with CAP_NET_ADMIN (a spoke added by SIGHUP after --user dropped root cannot get its TAP)"
                    }
                    Some(libc::EBUSY) => "; another process has it open (another hub?)",
                    Some(libc::ENOENT) | Some(libc::ENODEV) => {
                        "; /dev/net/tun is missing: load the tun module (modprobe tun)"
                    }
                    _ => "",
                };
                write!(f, "cannot create TAP {dev}: {e}{hint}")
            }
            TapError::NoBridge(br) => write!(
                f,
                "--bridge {br}: no such bridge; create it first (ip link add {br} type bridge; ip link set {br} up), or run scripts/l2_bridge_up.sh"
            ),
            TapError::Ip(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for TapError {}

/// An opened TAP, up, and what it allows.
pub struct Opened<T = SyncDevice> {
    /// The device.
    pub tap: T,
    /// TAP offloads on (virtio_net_hdr on every read and write).
    pub offload: bool,
    /// Whether UDP runs may be written as USO super-frames.
    pub udp_coalesce: bool,
}

/// Creates TAP `dev` of `mtu`, up, with its persistent MAC, with offloads
/// when `offload` and the kernel allows.
pub fn open(dev: &str, mtu: u16, offload: bool) -> Result<Opened, TapError> {
    let mac = machine_mac(dev);
    let build = |off: bool| {
        DeviceBuilder::new()
            .layer(Layer::L2)
            .name(dev.to_string())
            .mac_addr(mac.0)
            .mtu(mtu)
            .offload(off)
            .enable(true)
            .build_sync()
    };
    let fail = |e| TapError::Create(dev.to_string(), e);
    let (tap, offload) = if offload {
        match build(true).and_then(|t| sys::tun_set_offload(&t, sys::TUN_TCP_OFFLOADS).map(|_| t)) {
            Ok(t) => (t, true),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Err(fail(e)),
            Err(e) => {
                info!("{dev}: TAP offloads unavailable ({e}); one frame per read");
                (build(false).map_err(fail)?, false)
            }
        }
    } else {
        (build(false).map_err(fail)?, false)
    };
    // As the point-to-point tunnel does (engine/setup.rs): USO only when
    // the kernel knows it, and then off again for reads.
    let udp_coalesce =
        offload && sys::tun_set_offload(&tap, sys::TUN_TCP_OFFLOADS | sys::TUN_USO).is_ok();
    if udp_coalesce && let Err(e) = sys::tun_set_offload(&tap, sys::TUN_TCP_OFFLOADS) {
        debug!("{dev}: cannot switch TAP USO off again: {e}");
    }
    Ok(Opened {
        tap,
        offload,
        udp_coalesce,
    })
}

/// Checks that `br` is a bridge.
pub fn check_bridge(br: &str) -> Result<(), TapError> {
    if Path::new("/sys/class/net").join(br).join("bridge").is_dir() {
        Ok(())
    } else {
        Err(TapError::NoBridge(br.to_string()))
    }
}

fn mtu_of(dev: &str) -> Option<u16> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(dev).join("mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn ip(args: &[&str]) -> Result<(), TapError> {
    let what = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| TapError::Ip(what.clone(), e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TapError::Ip(
            what,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Makes `dev` a port of bridge `br`: its MTU raised to the bridge's
/// first when lower (a bridge's MTU is its smallest port's), then the
/// master set.
pub fn join_bridge(dev: &str, br: &str) -> Result<(), TapError> {
    check_bridge(br)?;
    if let (Some(b), Some(t)) = (mtu_of(br), mtu_of(dev))
        && t < b
    {
        ip(&["link", "set", "dev", dev, "mtu", &b.to_string()])?;
    }
    ip(&["link", "set", "dev", dev, "master", br])
}

/// The hub's TAPs in one interface group ([`crate::linkgroup`]), so that
/// stopping removes them all with one request instead of one slow
/// unregistration per closed fd.
pub struct Group {
    sock: sys::RouteSocket,
    group: u32,
    seq: u32,
}

impl Group {
    /// This process's group, if no link holds it yet (else another
    /// process of the same PID in another PID namespace may use it).
    pub fn choose() -> io::Result<Group> {
        let mut g = Group {
            sock: sys::RouteSocket::open()?,
            group: linkgroup::group_of(std::process::id()),
            seq: 0,
        };
        if let Some(&(index, _)) = g.links()?.iter().find(|l| l.1 == g.group) {
            return Err(io::Error::other(format!(
                "group {:#x} is held by link {index} already",
                g.group
            )));
        }
        Ok(g)
    }

    /// The group's number.
    pub fn number(&self) -> u32 {
        self.group
    }

    fn request(&mut self, msg: impl Fn(u32) -> Vec<u8>) -> io::Result<Vec<(u32, u32)>> {
        self.seq += 1;
        let seq = self.seq;
        self.sock.send(&msg(seq))?;
        let mut buf = vec![0u8; 1 << 16];
        let mut links = Vec::new();
        loop {
            let n = self.sock.recv(&mut buf)?;
            match linkgroup::parse(&buf[..n], seq) {
                Ok(a) => {
                    links.extend(a.links);
                    if a.done {
                        return Ok(links);
                    }
                }
                Err(0) => return Err(io::Error::other("unreadable rtnetlink answer")),
                Err(e) => return Err(io::Error::from_raw_os_error(e)),
            }
        }
    }

    /// Every link of the namespace: (index, group).
    fn links(&mut self) -> io::Result<Vec<(u32, u32)>> {
        self.request(linkgroup::dump_request)
    }

    /// Puts `dev` in the group.
    pub fn join(&mut self, dev: &str) -> io::Result<()> {
        let index = sys::ifindex(dev)?;
        let group = self.group;
        self.request(|seq| linkgroup::set_group_request(index, group, seq))
            .map(|_| ())
    }

    /// Removes every link of the group at once, if the group holds only
    /// links of `ours` (indexes); else removes nothing and says which
    /// link is foreign.
    pub fn remove_all(&mut self, ours: &[u32]) -> io::Result<()> {
        let links = self.links()?;
        if let Some(&(index, _)) = links
            .iter()
            .find(|&&(i, g)| g == self.group && !ours.contains(&i))
        {
            return Err(io::Error::other(format!(
                "link {index} is in group {:#x} and is no TAP of this hub",
                self.group
            )));
        }
        if !links.iter().any(|l| l.1 == self.group) {
            return Ok(());
        }
        let group = self.group;
        self.request(|seq| linkgroup::delete_group_request(group, seq))
            .map(|_| ())
    }
}
