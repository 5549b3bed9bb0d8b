//! The status socket: `taptun status` asks a running tunnel how it is,
//! over a Unix socket (`/run/taptun/DEV.sock`, mode 0600) that the
//! tunnel creates after its TAP and removes at exit. One request word
//! (`text`, `json` or `prometheus`), one answer, then the connection ends.

use super::status::{Form, View};
use super::{Facts, Shared};
use log::debug;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where status sockets live unless `--status-socket` says otherwise.
pub const RUN_DIR: &str = "/run/taptun";

/// The default status socket of the TAP `dev`.
pub fn socket_path(dev: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{dev}.sock"))
}

/// Creates the socket at `path` (and its folder), replacing a stale one
/// left by a crash, never one another instance still answers on.
pub(super) fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another taptun answers on it",
            ));
        }
        fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers status requests until the process exits.
pub(super) fn serve(listener: UnixListener, facts: Arc<Facts>, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        // A client that sends nothing cannot hold the thread.
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
        let mut req = [0u8; 32];
        let mut n = 0;
        while n < req.len() {
            match conn.read(&mut req[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    if req[..n].contains(&b'\n') {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let word = std::str::from_utf8(&req[..n]).unwrap_or("").trim();
        let form = Form::from_word(word).unwrap_or(Form::Text);
        let view = View {
            facts: &facts,
            shared: &shared,
        };
        if let Err(e) = conn.write_all(view.render(form).as_bytes()) {
            debug!("status socket: {e}");
        }
    }
}

/// Why `taptun status` got no answer.
#[derive(Debug)]
pub enum StatusError {
    /// Nothing answers at this path.
    NotRunning(PathBuf, io::Error),
    /// No socket found in [`RUN_DIR`], or more than one.
    Which(String),
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::NotRunning(p, e) => write!(
                f,
                "no taptun answers at {} ({e}): is it running, and are you root or its user?",
                p.display()
            ),
            StatusError::Which(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for StatusError {}

/// The socket `taptun status [DEV|PATH]` means: a path as given, a name
/// in [`RUN_DIR`], or the only socket there.
pub fn resolve(arg: Option<&str>) -> Result<PathBuf, StatusError> {
    match arg {
        Some(a) if a.contains('/') => Ok(PathBuf::from(a)),
        Some(dev) => Ok(socket_path(dev)),
        None => {
            let mut found: Vec<PathBuf> = fs::read_dir(RUN_DIR)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                        .collect()
                })
                .unwrap_or_default();
            found.sort();
            match found.len() {
                1 => Ok(found.remove(0)),
                0 => Err(StatusError::Which(format!(
                    "no running taptun: no status socket in {RUN_DIR} (name the TAP or the socket: taptun status DEV)"
                ))),
                _ => Err(StatusError::Which(format!(
                    "several tunnels run; name one: taptun status {}",
                    found
                        .iter()
                        .filter_map(|p| p.file_stem()?.to_str())
                        .collect::<Vec<_>>()
                        .join(" | ")
                ))),
            }
        }
    }
}

/// Asks the tunnel at `path` for its status in `form`.
pub fn query(path: &Path, form: Form) -> Result<String, StatusError> {
    let fail = |e| StatusError::NotRunning(path.to_path_buf(), e);
    let mut conn = UnixStream::connect(path).map_err(fail)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(fail)?;
    conn.write_all(format!("{}\n", form.word()).as_bytes())
        .map_err(fail)?;
    let mut out = String::new();
    conn.read_to_string(&mut out).map_err(fail)?;
    Ok(out)
}
