//! The status socket: `taptun status` asks a running tunnel how it is,
//! over a Unix socket (`/run/taptun/DEV.sock`, mode 0600) that the
//! tunnel creates after its TAP and removes at exit. One request word
//! (`text`, `json` or `prometheus`), one answer, then the connection ends.
//! Without a name, `taptun status` asks every socket in the folder and
//! combines the answers (`query_all`).

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
pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
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
        let form = read_form(&mut conn);
        let view = View {
            facts: &facts,
            shared: &shared,
        };
        if let Err(e) = conn.write_all(view.render(form).as_bytes()) {
            debug!("status socket: {e}");
        }
    }
}

/// Reads one request word from a status connection (text when it says
/// nothing sensible within a second).
pub(crate) fn read_form(conn: &mut UnixStream) -> Form {
    // A client that sends nothing cannot hold the thread.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    {
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
        Form::from_word(word).unwrap_or(Form::Text)
    }
}

/// Why `taptun status` got no answer.
#[derive(Debug)]
pub enum StatusError {
    /// Nothing answers at this path.
    NotRunning(PathBuf, io::Error),
    /// No status socket in this folder (or the folder cannot be read).
    NoSocket(PathBuf),
    /// Status sockets in this folder (how many), but none answered.
    NoneAnswers(PathBuf, usize),
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::NotRunning(p, e) => write!(
                f,
                "no taptun answers at {} ({e}): is it running, and are you root or its user?",
                p.display()
            ),
            StatusError::NoSocket(d) => write!(
                f,
                "no running taptun: no status socket in {} (name the TAP or the socket: taptun status DEV)",
                d.display()
            ),
            StatusError::NoneAnswers(d, n) => write!(
                f,
                "no running taptun: none of the {n} status sockets in {} answers",
                d.display()
            ),
        }
    }
}

impl std::error::Error for StatusError {}

/// What `taptun status [DEV|SOCKET|FOLDER]` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One tunnel's socket.
    One(PathBuf),
    /// Every socket in a folder: every tunnel of the host, like `wg show`.
    All(PathBuf),
}

/// The target `taptun status [DEV|SOCKET|FOLDER]` means: a path as given
/// (a folder: every socket in it), a name in [`RUN_DIR`], or without an
/// argument every socket in [`RUN_DIR`].
pub fn resolve(arg: Option<&str>) -> Target {
    match arg {
        None => Target::All(PathBuf::from(RUN_DIR)),
        Some(a) if a.contains('/') && Path::new(a).is_dir() => Target::All(PathBuf::from(a)),
        Some(a) if a.contains('/') => Target::One(PathBuf::from(a)),
        Some(dev) => Target::One(socket_path(dev)),
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

/// What the tunnels with a socket in one folder answered.
#[derive(Debug)]
pub struct Listing {
    /// Their answers combined into one document of the form asked
    /// ([`combine`]); `None` when none answered.
    pub output: Option<String>,
    /// The sockets that did not answer (a stale socket left by a crash,
    /// one the caller may not read), in name order.
    pub skipped: Vec<StatusError>,
}

/// Asks every tunnel with a socket (`*.sock`) in `dir`, in name order.
/// A socket that does not answer is skipped, not a failure of the whole
/// listing: one stale socket must not hide the tunnels that run.
pub fn query_all(dir: &Path, form: Form) -> Result<Listing, StatusError> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    if found.is_empty() {
        return Err(StatusError::NoSocket(dir.to_path_buf()));
    }
    found.sort();
    let mut answers = Vec::new();
    let mut skipped = Vec::new();
    for p in &found {
        match query(p, form) {
            Ok(a) => answers.push(a),
            Err(e) => skipped.push(e),
        }
    }
    Ok(Listing {
        output: (!answers.is_empty()).then(|| combine(form, &answers)),
        skipped,
    })
}

/// Several tunnels' answers as one document: the text reports one after
/// another (each headed by its `interface:` line) with a blank line
/// between; JSON as one object `{"tunnels":[...]}` on one line, holding
/// each tunnel's object unchanged; Prometheus text with each metric's
/// samples grouped under one HELP and TYPE pair, as the format requires
/// (a family's lines must not be split).
pub fn combine(form: Form, answers: &[String]) -> String {
    match form {
        Form::Text => {
            let reports: Vec<&str> = answers.iter().map(|a| a.trim_end()).collect();
            format!("{}\n", reports.join("\n\n"))
        }
        Form::Json => {
            let objects: Vec<&str> = answers.iter().map(|a| a.trim()).collect();
            format!("{{\"tunnels\":[{}]}}\n", objects.join(","))
        }
        Form::Prometheus => merge_prometheus(answers),
    }
}

/// One metric family of Prometheus text: its HELP and TYPE lines, then
/// its samples.
struct Family<'a> {
    name: &'a str,
    meta: Vec<&'a str>,
    samples: Vec<&'a str>,
}

/// Merges Prometheus text documents family by family, in the order the
/// families first appear; HELP and TYPE of a family once each.
fn merge_prometheus(docs: &[String]) -> String {
    let mut families: Vec<Family> = Vec::new();
    for line in docs.iter().flat_map(|d| d.lines()) {
        let (name, meta) = if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            (rest.split(' ').next().unwrap_or(rest), true)
        } else if line.is_empty() || line.starts_with('#') {
            continue;
        } else {
            (line.split(['{', ' ']).next().unwrap_or(line), false)
        };
        let i = match families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                families.push(Family {
                    name,
                    meta: Vec::new(),
                    samples: Vec::new(),
                });
                families.len() - 1
            }
        };
        let fam = &mut families[i];
        if !meta {
            fam.samples.push(line);
        } else if !fam.meta.iter().any(|m| m.get(..7) == line.get(..7)) {
            // "# HELP " or "# TYPE ": the first document's line stands.
            fam.meta.push(line);
        }
    }
    let mut out = String::new();
    for f in &families {
        for l in f.meta.iter().chain(&f.samples) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// Two tunnels' Prometheus text as `View::prometheus` writes it; the
    /// second has no last-valid gauge yet (no datagram came).
    fn prom(dev: &str, last: bool) -> String {
        let mut s = format!(
            "# HELP taptun_rx_bytes_total Frame bytes.\n# TYPE taptun_rx_bytes_total counter\ntaptun_rx_bytes_total{{dev=\"{dev}\"}} 7\n"
        );
        if last {
            s.push_str(&format!(
                "# HELP taptun_last_valid_age_seconds Age.\n# TYPE taptun_last_valid_age_seconds gauge\ntaptun_last_valid_age_seconds{{dev=\"{dev}\"}} 1.000\n"
            ));
        }
        s.push_str(&format!(
            "# HELP taptun_drops_total Dropped.\n# TYPE taptun_drops_total counter\ntaptun_drops_total{{dev=\"{dev}\",reason=\"short\"}} 0\ntaptun_drops_total{{dev=\"{dev}\",reason=\"stale\"}} 2\n"
        ));
        s
    }

    #[test]
    fn prometheus_families_stay_whole_with_one_help_and_type() {
        let out = combine(Form::Prometheus, &[prom("ta", false), prom("tb", true)]);
        let want = "\
# HELP taptun_rx_bytes_total Frame bytes.
# TYPE taptun_rx_bytes_total counter
taptun_rx_bytes_total{dev=\"ta\"} 7
taptun_rx_bytes_total{dev=\"tb\"} 7
# HELP taptun_drops_total Dropped.
# TYPE taptun_drops_total counter
taptun_drops_total{dev=\"ta\",reason=\"short\"} 0
taptun_drops_total{dev=\"ta\",reason=\"stale\"} 2
taptun_drops_total{dev=\"tb\",reason=\"short\"} 0
taptun_drops_total{dev=\"tb\",reason=\"stale\"} 2
# HELP taptun_last_valid_age_seconds Age.
# TYPE taptun_last_valid_age_seconds gauge
taptun_last_valid_age_seconds{dev=\"tb\"} 1.000
";
        assert_eq!(out, want);
        // One tunnel: its text unchanged.
        assert_eq!(
            combine(Form::Prometheus, &[prom("ta", true)]),
            prom("ta", true)
        );
    }

    #[test]
    fn text_and_json_listings() {
        let a = "interface: ta\n  mtu: 1418\n".to_string();
        let b = "interface: tb\n  mtu: 1400\n".to_string();
        assert_eq!(
            combine(Form::Text, &[a.clone(), b.clone()]),
            "interface: ta\n  mtu: 1418\n\ninterface: tb\n  mtu: 1400\n"
        );
        assert_eq!(combine(Form::Text, std::slice::from_ref(&a)), a);
        assert_eq!(
            combine(
                Form::Json,
                &["{\"dev\":\"ta\"}".into(), "{\"dev\":\"tb\"}\n".into()]
            ),
            "{\"tunnels\":[{\"dev\":\"ta\"},{\"dev\":\"tb\"}]}\n"
        );
    }

    /// A folder of its own for one test.
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("taptun-control-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Answers `n` requests on `path` with `answer`, then stops.
    fn answer(path: &Path, answer: &'static str, n: usize) -> thread::JoinHandle<()> {
        let l = UnixListener::bind(path).unwrap();
        thread::spawn(move || {
            for conn in l.incoming().take(n) {
                let mut conn = conn.unwrap();
                let mut word = [0u8; 16];
                let _ = conn.read(&mut word);
                conn.write_all(answer.as_bytes()).unwrap();
            }
        })
    }

    #[test]
    fn listing_skips_a_stale_socket_and_fails_only_when_none_answers() {
        let dir = scratch("list");
        // A socket file nobody listens on, as a crashed tunnel leaves it.
        drop(UnixListener::bind(dir.join("a-stale.sock")).unwrap());
        fs::write(dir.join("notes.txt"), "not a socket").unwrap();
        let t1 = answer(&dir.join("b.sock"), "interface: b\n", 1);
        let t2 = answer(&dir.join("c.sock"), "interface: c\n", 1);
        let l = query_all(&dir, Form::Text).unwrap();
        assert_eq!(l.output.as_deref(), Some("interface: b\n\ninterface: c\n"));
        assert_eq!(l.skipped.len(), 1, "{:?}", l.skipped);
        assert!(
            l.skipped[0].to_string().contains("a-stale.sock"),
            "{}",
            l.skipped[0]
        );
        t1.join().unwrap();
        t2.join().unwrap();
        // Only the stale one left: no output, the note, and no tunnel.
        fs::remove_file(dir.join("b.sock")).unwrap();
        fs::remove_file(dir.join("c.sock")).unwrap();
        let l = query_all(&dir, Form::Json).unwrap();
        assert!(l.output.is_none());
        assert_eq!(l.skipped.len(), 1);
        // No socket at all.
        fs::remove_file(dir.join("a-stale.sock")).unwrap();
        let e = query_all(&dir, Form::Text).unwrap_err();
        assert!(matches!(e, StatusError::NoSocket(_)), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn targets() {
        assert_eq!(resolve(None), Target::All(PathBuf::from(RUN_DIR)));
        assert_eq!(
            resolve(Some("tap0")),
            Target::One(PathBuf::from("/run/taptun/tap0.sock"))
        );
        assert_eq!(
            resolve(Some("/x/none.sock")),
            Target::One(PathBuf::from("/x/none.sock"))
        );
        let dir = scratch("target");
        let d = dir.to_str().unwrap();
        assert_eq!(resolve(Some(d)), Target::All(dir.clone()));
        let _ = fs::remove_dir_all(&dir);
    }
}
