//! `taptun status` of a hub: a header line (`hub: ADDRESS, N spokes`) and
//! one block per spoke; one JSON object with a `spokes` array; Prometheus
//! text with one series per spoke (label `spoke`). Served on the hub's
//! status socket, in the point-to-point tunnel's protocol
//! (`engine::control`), so that `taptun status` without a name lists a
//! hub among the tunnels. Also the hub's warn lines (`Watch`).

use super::{HubShared, Spoke};
pub use crate::engine::status::Form;
use crate::engine::status::{queue_json, queue_metrics, queue_text, session_json, session_text};
use crate::engine::{Tap, unix_nanos};
use crate::noise::SessionStatus;
use crate::stats::{DropReason, Throttle};
use log::{debug, warn};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Answers status requests until the process exits.
pub(super) fn serve<T: Tap>(listener: UnixListener, shared: Arc<HubShared<T>>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let form = crate::engine::control::read_form(&mut conn);
        if let Err(e) = conn.write_all(render(&shared, form).as_bytes()) {
            debug!("status socket: {e}");
        }
    }
}

/// The hub's status in `form`.
pub(super) fn render<T: Tap>(shared: &HubShared<T>, form: Form) -> String {
    let list = shared.spokes.get();
    let now = unix_nanos();
    match form {
        Form::Text => text(shared, &list, now),
        Form::Json => json(shared, &list, now),
        Form::Prometheus => prometheus(shared, &list, now),
    }
}

fn age(t: u64, now: u64) -> Option<f64> {
    (t != 0).then(|| now.saturating_sub(t) as f64 / 1e9)
}

/// The spoke's sessions' facts, in the confidential mode (none stored
/// yet: no session, no handshake).
fn session<T>(sh: &HubShared<T>, s: &Spoke<T>) -> Option<SessionStatus> {
    sh.cipher?;
    Some(
        s.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_default(),
    )
}

fn offset<T>(s: &Spoke<T>) -> Option<f64> {
    s.has_offset
        .load(Relaxed)
        .then(|| s.offset_ns.load(Relaxed) as f64 / 1e9)
}

fn text<T: Tap>(sh: &HubShared<T>, list: &[Arc<Spoke<T>>], now: u64) -> String {
    let mut s = format!(
        "hub: {}, {} spoke{}\n  mode: {}\n  uptime: {:.0} s\n  unknown addresses: {} trials, {} refused (budget spent), {} datagrams no key opened\n",
        sh.local,
        list.len(),
        if list.len() == 1 { "" } else { "s" },
        sh.cipher
            .map_or("hmac-sha256".to_string(), |c| c.to_string()),
        now.saturating_sub(sh.started_ns) as f64 / 1e9,
        sh.trials.load(Relaxed),
        sh.trials_refused.load(Relaxed),
        sh.unmatched.load(Relaxed),
    );
    // One queue for every spoke: its signals summed over them.
    let signals = list.iter().fold((0, 0), |(m, d), sp| {
        (
            m + sp.counters.aqm_marks.load(Relaxed),
            d + sp.counters.drops(DropReason::Aqm),
        )
    });
    let _ = writeln!(
        s,
        "  receive queue: {}",
        queue_text(&sh.queue, sh.aqm, signals, now)
    );
    let prio = sh.priority.get().copied().unwrap_or_default();
    let _ = writeln!(
        s,
        "  packet threads: {}",
        prio.with_cuts(sh.rt_cut.load(Relaxed))
    );
    for sp in list {
        let c = &sp.counters;
        let _ = write!(
            s,
            "\nspoke: {}\n  tap: {}\n  address: {}\n  last valid datagram: {}\n  {}\n  key rotations: {}\n  rx: {} frames, {} bytes; tx: {} frames, {} bytes; keepalives rx {} tx {}\n  drops:",
            sp.name,
            sp.dev,
            sp.peer
                .get()
                .map_or("(not known yet)".into(), |p| p.to_string()),
            age(sp.last_valid_ns.load(Relaxed), now)
                .map_or("never".into(), |a| format!("{a:.1} s ago")),
            // The confidential mode has no timestamps: its session instead.
            match session(sh, sp) {
                Some(st) => format!("session: {}", session_text(&st, now)),
                None => format!(
                    "clock offset: {}",
                    offset(sp).map_or("-".into(), |o| format!("{o:+.3} s"))
                ),
            },
            sp.key_rotations.load(Relaxed),
            c.rx_frames.load(Relaxed),
            c.rx_bytes.load(Relaxed),
            c.tx_frames.load(Relaxed),
            c.tx_bytes.load(Relaxed),
            c.keepalives_rx.load(Relaxed),
            c.keepalives_tx.load(Relaxed),
        );
        let mut any = false;
        for r in DropReason::ALL {
            let n = c.drops(r);
            if n > 0 {
                let _ = write!(s, " {} {n}", r.name());
                any = true;
            }
        }
        if !any {
            s.push_str(" none");
        }
        s.push('\n');
    }
    s
}

fn json_opt(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.3}"))
}

fn json<T: Tap>(sh: &HubShared<T>, list: &[Arc<Spoke<T>>], now: u64) -> String {
    let mut s = format!(
        "{{\"hub\":\"{}\",\"mode\":\"{}\",\"uptime_s\":{:.3},\"trials\":{},\"trials_refused\":{},\"unmatched\":{},",
        sh.local,
        sh.cipher
            .map_or("hmac-sha256".to_string(), |c| c.to_string()),
        now.saturating_sub(sh.started_ns) as f64 / 1e9,
        sh.trials.load(Relaxed),
        sh.trials_refused.load(Relaxed),
        sh.unmatched.load(Relaxed),
    );
    queue_json(&mut s, &sh.queue, sh.aqm, now);
    let prio = sh.priority.get().copied().unwrap_or_default();
    let _ = write!(s, ",\"priority\":{}", prio.json(sh.rt_cut.load(Relaxed)));
    s.push_str(",\"spokes\":[");
    for (i, sp) in list.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Names are letters, digits, '-' and '_': nothing to escape.
        let _ = write!(
            s,
            "{{\"name\":\"{}\",\"dev\":\"{}\",\"peer\":{},\"last_valid_age_s\":{},\"peer_offset_s\":{},\"session\":{},\"key_rotations\":{},",
            sp.name,
            sp.dev,
            sp.peer.get().map_or("null".into(), |p| format!("\"{p}\"")),
            json_opt(age(sp.last_valid_ns.load(Relaxed), now)),
            json_opt(offset(sp).filter(|_| sh.cipher.is_none())),
            session_json(session(sh, sp).as_ref(), now),
            sp.key_rotations.load(Relaxed),
        );
        sp.counters.write_json_members(&mut s);
        s.push('}');
    }
    s.push_str("]}\n");
    s
}

fn prometheus<T: Tap>(sh: &HubShared<T>, list: &[Arc<Spoke<T>>], now: u64) -> String {
    let mut s = String::new();
    let port = sh.local.port();
    let mut family = |name: &str, kind: &str, help: &str, values: Vec<(String, String)>| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in values {
            let _ = writeln!(s, "{name}{{{labels}}} {v}");
        }
    };
    let per = |f: &dyn Fn(&Spoke<T>) -> Option<String>| -> Vec<(String, String)> {
        list.iter()
            .filter_map(|sp| {
                f(sp).map(|v| {
                    (
                        format!("hub=\"{port}\",spoke=\"{}\",dev=\"{}\"", sp.name, sp.dev),
                        v,
                    )
                })
            })
            .collect()
    };

    #[allow(clippy::type_complexity)]
    let counters: [(&str, &str, fn(&Spoke<T>) -> u64); 7] = [
        (
            "rx_frames",
            "Frames received from the spoke and written to its TAP.",
            |s| s.counters.rx_frames.load(Relaxed),
        ),
        ("rx_bytes", "Frame bytes received from the spoke.", |s| {
            s.counters.rx_bytes.load(Relaxed)
        }),
        (
            "tx_frames",
            "Frames read from the spoke's TAP and sent.",
            |s| s.counters.tx_frames.load(Relaxed),
        ),
        ("tx_bytes", "Frame bytes sent to the spoke.", |s| {
            s.counters.tx_bytes.load(Relaxed)
        }),
        (
            "keepalives_received",
            "Keepalives received from the spoke.",
            |s| s.counters.keepalives_rx.load(Relaxed),
        ),
        (
            "auth_failed",
            "Runs from the spoke's address its key did not open.",
            |s| s.auth_failed.load(Relaxed),
        ),
        (
            "aqm_marks",
            "Frames of the spoke the receive queue's AQM marked CE (its drops: reason aqm).",
            |s| s.counters.aqm_marks.load(Relaxed),
        ),
    ];
    for (name, help, f) in counters {
        family(
            &format!("taptun_hub_spoke_{name}_total"),
            "counter",
            help,
            per(&|sp| Some(f(sp).to_string())),
        );
    }
    family(
        "taptun_hub_spoke_peer_known",
        "gauge",
        "1 when the spoke's address is known.",
        per(&|sp| Some(u8::from(sp.peer.get().is_some()).to_string())),
    );
    family(
        "taptun_hub_spoke_last_valid_age_seconds",
        "gauge",
        "Seconds since the spoke's last valid datagram.",
        per(&|sp| age(sp.last_valid_ns.load(Relaxed), now).map(|a| format!("{a:.3}"))),
    );
    family(
        "taptun_hub_spoke_clock_offset_seconds",
        "gauge",
        "The spoke's clock offset less the transit time, from its last authentic datagram.",
        per(&|sp| {
            offset(sp)
                .filter(|_| sh.cipher.is_none())
                .map(|o| format!("{o:.3}"))
        }),
    );
    family(
        "taptun_hub_spoke_session_age_seconds",
        "gauge",
        "Confidential mode: the age of the spoke's session sealed under.",
        per(&|sp| {
            let t = session(sh, sp)?.since_ns?;
            Some(format!("{:.3}", now.saturating_sub(t) as f64 / 1e9))
        }),
    );
    family(
        "taptun_hub_spoke_latest_handshake_seconds",
        "gauge",
        "Confidential mode: seconds since the spoke's latest completed handshake.",
        per(&|sp| {
            let t = session(sh, sp)?.last_handshake_ns?;
            Some(format!("{:.3}", now.saturating_sub(t) as f64 / 1e9))
        }),
    );
    family(
        "taptun_hub_spoke_handshakes_total",
        "counter",
        "Confidential mode: the spoke's handshakes completed.",
        per(&|sp| Some(session(sh, sp)?.handshakes.to_string())),
    );
    let mut drops = Vec::new();
    for sp in list {
        for r in DropReason::ALL {
            drops.push((
                format!(
                    "hub=\"{port}\",spoke=\"{}\",dev=\"{}\",reason=\"{}\"",
                    sp.name,
                    sp.dev,
                    r.name()
                ),
                sp.counters.drops(r).to_string(),
            ));
        }
    }
    family(
        "taptun_hub_spoke_drops_total",
        "counter",
        "Datagrams and frames of the spoke dropped, by reason.",
        drops,
    );
    family(
        "taptun_hub_spokes",
        "gauge",
        "Spokes the hub serves.",
        vec![(format!("hub=\"{port}\""), list.len().to_string())],
    );
    family(
        "taptun_hub_trials_total",
        "counter",
        "Verifications of datagrams from unknown addresses against the spokes' keys.",
        vec![(
            format!("hub=\"{port}\""),
            sh.trials.load(Relaxed).to_string(),
        )],
    );
    family(
        "taptun_hub_rt_bursts_cut_total",
        "counter",
        "Real-time bursts of the forwarding threads cut at 10 ms (they went on at the normal policy until their input emptied).",
        vec![(
            format!("hub=\"{port}\""),
            sh.rt_cut.load(Relaxed).to_string(),
        )],
    );
    family(
        "taptun_hub_trials_refused_total",
        "counter",
        "Trials refused because the budget of the second was spent.",
        vec![(
            format!("hub=\"{port}\""),
            sh.trials_refused.load(Relaxed).to_string(),
        )],
    );
    queue_metrics(&sh.queue, now, &mut |name, kind, help, v| {
        family(name, kind, help, vec![(format!("hub=\"{port}\""), v)])
    });
    s
}

/// The main thread's warn lines about spokes: at most one a minute per
/// cause and spoke, each with what it stands for since the last one and
/// the fix.
pub struct Watch {
    /// Per spoke name.
    spokes: std::collections::HashMap<String, SpokeWatch>,
    state: Throttle,
}

/// One spoke's lines, and its counters as last seen.
struct SpokeWatch {
    key: Throttle,
    clock: Throttle,
    /// `auth_failed` as last seen.
    failed: u64,
    /// Its stale and future drops as last seen.
    refused: u64,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            spokes: Default::default(),
            state: Throttle::per_minute(),
        }
    }
}

impl Watch {
    /// Whether to say that the state file cannot be written (once a minute).
    pub(super) fn state_error(&mut self) -> bool {
        self.state.note(1, Instant::now()).is_some()
    }

    /// Logs what [`Watch::lines`] finds now. `dir`: the hub's key folder,
    /// to name the file to compare.
    pub(super) fn tick<T: Tap>(
        &mut self,
        list: &[&Arc<Spoke<T>>],
        max_age: Duration,
        dir: &std::path::Path,
    ) {
        for line in self.lines(list, max_age, dir, Instant::now()) {
            warn!("{line}");
        }
    }

    /// The warn lines due at `now`: a spoke whose datagrams its key does
    /// not open; a spoke whose clock is off, while its datagrams are
    /// refused for it (only then: a spoke that went quiet is not blamed
    /// again every minute for what it did before).
    pub(super) fn lines<T: Tap>(
        &mut self,
        list: &[&Arc<Spoke<T>>],
        max_age: Duration,
        dir: &std::path::Path,
        now: Instant,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        self.spokes
            .retain(|name, _| list.iter().any(|s| &s.name == name));
        for sp in list {
            let w = self
                .spokes
                .entry(sp.name.clone())
                .or_insert_with(|| SpokeWatch {
                    key: Throttle::per_minute(),
                    clock: Throttle::per_minute(),
                    failed: 0,
                    refused: 0,
                });
            let failed = sp.auth_failed.load(Relaxed);
            let new = failed.saturating_sub(w.failed);
            w.failed = failed;
            if new > 0
                && let Some(all) = w.key.note(new, now)
            {
                lines.push(format!(
                    "spoke {}: {all} datagrams from its address {} fail authentication under its key (and every other spoke's): the key files differ, or the spoke runs another --cipher; compare the spoke's key file with {}, or copy it to the spoke again",
                    sp.name,
                    sp.peer.get().map_or("?".into(), |p| p.to_string()),
                    dir.join(format!("{}.key", sp.name)).display()
                ));
            }
            let refused =
                sp.counters.drops(DropReason::Stale) + sp.counters.drops(DropReason::Future);
            let new = refused.saturating_sub(w.refused);
            w.refused = refused;
            if new > 0
                && let Some(off) = offset(sp)
                && off.abs() > max_age.as_secs_f64() / 2.0
                && let Some(all) = w.clock.note(new, now)
            {
                lines.push(format!(
                    "spoke {}: its clock is {off:+.1} s off this host's ({}), more than --max-age {:.1} s allows: {all} datagrams refused as stale or future; sync both clocks (NTP: chrony, systemd-timesyncd), or raise --max-age on the hub and the spoke",
                    sp.name,
                    if off > 0.0 { "ahead" } else { "behind" },
                    max_age.as_secs_f64(),
                ));
            }
        }
        lines
    }
}
