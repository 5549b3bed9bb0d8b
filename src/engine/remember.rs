//! The state file of a tunnel that learns its peer (`--state`): the peer's
//! last valid address, so that a restarted tunnel sends to it at once (a
//! keepalive, then frames) rather than waiting for the peer's next
//! keepalive. The format is the hub's (`crate::state`), with one line,
//! `peer ADDRESS`. Read when the tunnel is made; written by the main
//! thread's tick (temp + rename) when the learned peer changed, never by a
//! forwarding thread. It is a cache, not configuration: a bad or
//! unreadable file is one warn line and ignored.

use super::Shared;
use crate::state::{self, Table};
use log::{debug, info, warn};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;

/// The file's one name.
const NAME: &str = "peer";
/// The file's first line.
const HEADER: &str = "taptun: the learned peer's last valid address (written by taptun)";

/// The state file and what it holds now; owned by the main thread.
#[derive(Debug)]
pub(super) struct StateWatch {
    path: PathBuf,
    /// The address the file holds (as read at start or last written).
    written: Option<SocketAddr>,
    /// The last write failed: said once, until one succeeds.
    failed: bool,
}

impl StateWatch {
    /// Reads the file at `path`: missing is none yet; bad or unreadable is
    /// one warn line, and none.
    pub(super) fn open(path: PathBuf) -> StateWatch {
        let written = match std::fs::read(&path) {
            Ok(b) => match state::parse(&b) {
                Ok(t) => match t.get(NAME) {
                    Some(&a) => {
                        info!(
                            "state file {}: the peer was last at {a}: sending to it until the peer is heard",
                            path.display()
                        );
                        Some(crate::addr::canonical(a))
                    }
                    None => {
                        info!("state file {}: no peer address in it", path.display());
                        None
                    }
                },
                Err(e) => {
                    warn!(
                        "state file {}: {e}; ignoring it (the peer is learned from its next datagram)",
                        path.display()
                    );
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                info!("state file {}: none yet", path.display());
                None
            }
            Err(e) => {
                warn!(
                    "state file {}: cannot read it: {e}; ignoring it (the peer is learned from its next datagram)",
                    path.display()
                );
                None
            }
        };
        StateWatch {
            path,
            written,
            failed: false,
        }
    }

    /// The address the file holds.
    pub(super) fn written(&self) -> Option<SocketAddr> {
        self.written
    }

    /// Writes the file when the peer the receiving thread published is
    /// heard and differs from the file's (about once a second: the main
    /// thread's tick).
    pub(super) fn tick(&mut self, shared: &Shared) {
        let Some(peer) = shared.peer.get() else {
            return;
        };
        if Some(peer) == self.written || shared.peer_from_state.load(Relaxed) {
            return;
        }
        let table = Table::from([(NAME.to_string(), peer)]);
        match state::write(&self.path, HEADER, &table) {
            Ok(()) => {
                debug!("state file {} written: peer {peer}", self.path.display());
                self.written = Some(peer);
                self.failed = false;
            }
            Err(e) => {
                if !self.failed {
                    warn!(
                        "state file {}: cannot write it: {e}; a restarted tunnel waits for the peer's next datagram (check the folder: systemd StateDirectory=)",
                        self.path.display()
                    );
                }
                self.failed = true;
            }
        }
    }
}
