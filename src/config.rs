//! What the engine needs to start, checked and loaded: built by `cli`,
//! consumed by `engine::Tunnel::open`.

use crate::addr::{Cidr, Local};
use crate::key::Key;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the tunnel needs to start. The key is a [`Key`], whose
/// `Debug` hides the bytes, so printing a `Config` shows no secret.
#[derive(Debug, Clone)]
pub struct Config {
    /// The shared secret, already loaded.
    pub key: Key,
    /// Where to bind the UDP socket.
    pub local: Local,
    /// The peer, when configured.
    pub peer: Option<SocketAddr>,
    /// TAP name; the kernel picks `tapN` when absent.
    pub dev: Option<String>,
    /// TAP MTU.
    pub mtu: u16,
    /// Addresses to put on the TAP.
    pub addresses: Vec<Cidr>,
    /// Maximum timestamp age, either way.
    pub max_age: Duration,
    /// Send a keepalive after this much silence (zero: never).
    pub keepalive: Duration,
    /// Requested socket buffer size, each way.
    pub sockbuf: usize,
    /// Use TAP checksum/segmentation offloads when the kernel allows them.
    pub offload: bool,
}
