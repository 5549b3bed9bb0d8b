//! The tunnel's state, assembled in one place: a log line, a report like
//! `wg show` for `taptun status`, one JSON object (stable field names,
//! documented in docs/operating.md) and Prometheus text for
//! node_exporter's textfile collector. No key material goes in any of them.

use super::{Facts, Shared, Tunnel, unix_nanos};
use crate::aqm::QueueStats;
use crate::codel::Params;
use crate::noise::SessionStatus;
use crate::stats::DropReason;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

/// Which form `taptun status` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A report for people, like `wg show`.
    Text,
    /// One JSON object on one line.
    Json,
    /// Prometheus text exposition format.
    Prometheus,
}

impl Form {
    /// The request word sent over the status socket.
    pub fn word(self) -> &'static str {
        match self {
            Form::Text => "text",
            Form::Json => "json",
            Form::Prometheus => "prometheus",
        }
    }

    /// The form a request word names.
    pub fn from_word(w: &str) -> Option<Form> {
        [Form::Text, Form::Json, Form::Prometheus]
            .into_iter()
            .find(|f| f.word() == w)
    }
}

/// Seconds from `t` (ns) to `now`.
fn ago(t: u64, now: u64) -> f64 {
    now.saturating_sub(t) as f64 / 1e9
}

/// Confidential mode: the sessions' facts as the text line's value
/// (`session: ...`, for the tunnel and for each of a hub's spokes):
/// `initiator|responder, age N s, latest handshake N s ago, handshakes K`,
/// or `none` for the session when there is none (yet, or any more).
pub(crate) fn session_text(st: &SessionStatus, now: u64) -> String {
    let mut s = match st.since_ns {
        Some(t) => format!(
            "{}, age {:.0} s",
            if st.initiator {
                "initiator"
            } else {
                "responder"
            },
            ago(t, now)
        ),
        None => "none".to_string(),
    };
    match st.last_handshake_ns {
        Some(t) => {
            let _ = write!(s, ", latest handshake {:.0} s ago", ago(t, now));
        }
        None => s.push_str(", latest handshake never"),
    }
    let _ = write!(s, ", handshakes {}", st.handshakes);
    s
}

/// The receive queue's line (`receive queue: ...`): the last second's
/// sojourn times, or idle; and the AQM with its marks and drops.
pub(crate) fn queue_text(
    q: &QueueStats,
    aqm: Option<Params>,
    (marks, drops): (u64, u64),
    now: u64,
) -> String {
    let mut s = match q.recent(now) {
        Some(q) => format!(
            "waited {:.2} ms on average, {:.2} ms at most ({} receives in the last second)",
            q.mean_ns as f64 / 1e6,
            q.max_ns as f64 / 1e6,
            q.receives
        ),
        None => "idle".to_string(),
    };
    match aqm {
        Some(p) => {
            let _ = write!(s, "; AQM CoDel ({p}): {marks} marked CE, {drops} dropped");
        }
        None => s.push_str("; AQM off"),
    }
    s
}

/// The busy-poll line (`busy polling: ...`): off, or the linger and how
/// many spins ended with a datagram.
fn busy_text(linger_ns: u64, c: &crate::stats::Counters) -> String {
    if linger_ns == 0 {
        return "off".to_string();
    }
    let (spins, caught) = (c.busy_spins.load(Relaxed), c.busy_caught.load(Relaxed));
    format!(
        "spinning up to {} ms after the last datagram; {caught} of {spins} spins got one",
        linger_ns as f64 / 1e6
    )
}

/// The receive queue as a JSON object (`"queue":{...}`): the last
/// second's sojourn times in ms (null when idle) and the AQM's parameters
/// (null when off).
pub(crate) fn queue_json(s: &mut String, q: &QueueStats, aqm: Option<Params>, now: u64) {
    s.push_str("\"queue\":{\"sojourn_mean_ms\":");
    match q.recent(now) {
        Some(q) => {
            let _ = write!(
                s,
                "{:.3},\"sojourn_max_ms\":{:.3},\"receives\":{}",
                q.mean_ns as f64 / 1e6,
                q.max_ns as f64 / 1e6,
                q.receives
            );
        }
        None => s.push_str("null,\"sojourn_max_ms\":null,\"receives\":0"),
    }
    match aqm {
        Some(p) => {
            let _ = write!(
                s,
                ",\"aqm\":{{\"target_ms\":{},\"interval_ms\":{}}}}}",
                p.target_ns as f64 / 1e6,
                p.interval_ns as f64 / 1e6
            );
        }
        None => s.push_str(",\"aqm\":null}"),
    }
}

/// The receive queue's sojourn gauges (Prometheus), when not idle.
pub(crate) fn queue_metrics(
    q: &QueueStats,
    now: u64,
    metric: &mut impl FnMut(&str, &str, &str, String),
) {
    if let Some(q) = q.recent(now) {
        metric(
            "taptun_receive_sojourn_mean_seconds",
            "gauge",
            "How long datagrams waited in the UDP socket's receive queue, on average over the last second.",
            format!("{:.6}", q.mean_ns as f64 / 1e9),
        );
        metric(
            "taptun_receive_sojourn_max_seconds",
            "gauge",
            "The longest wait in the UDP socket's receive queue in the last second.",
            format!("{:.6}", q.max_ns as f64 / 1e9),
        );
    }
}

/// Confidential mode: the sessions' facts as a JSON object (`null` in the
/// HMAC mode): `initiator` (null without a session), `age_s`,
/// `latest_handshake_s` (null: none yet), `handshakes`, `initiations`,
/// `refused`.
pub(crate) fn session_json(st: Option<&SessionStatus>, now: u64) -> String {
    let Some(st) = st else {
        return "null".into();
    };
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
    format!(
        "{{\"initiator\":{},\"age_s\":{},\"latest_handshake_s\":{},\"handshakes\":{},\"initiations\":{},\"refused\":{}}}",
        st.since_ns
            .map_or("null".to_string(), |_| st.initiator.to_string()),
        opt(st.since_ns.map(|t| ago(t, now))),
        opt(st.last_handshake_ns.map(|t| ago(t, now))),
        st.handshakes,
        st.initiations,
        st.refused,
    )
}

/// A view of the tunnel's state at one moment.
pub(super) struct View<'a> {
    pub facts: &'a Facts,
    pub shared: &'a Shared,
}

impl View<'_> {
    pub(super) fn render(&self, form: Form) -> String {
        match form {
            Form::Text => self.text(),
            Form::Json => self.json(),
            Form::Prometheus => self.prometheus(),
        }
    }

    /// Seconds since the last valid datagram, if any.
    fn last_valid_age(&self, now: u64) -> Option<f64> {
        match self.shared.last_valid_ns.load(Relaxed) {
            0 => None,
            t => Some(now.saturating_sub(t) as f64 / 1e9),
        }
    }

    /// Confidential mode: the sessions' facts, once the receiving thread
    /// stored them.
    fn session(&self) -> Option<SessionStatus> {
        *self
            .shared
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The peer's clock offset (s), once an authentic datagram came (the
    /// HMAC wire's timestamps; the confidential mode has none).
    fn offset(&self) -> Option<f64> {
        if self.facts.cipher.is_some() {
            return None;
        }
        (self.shared.last_valid_ns.load(Relaxed) != 0
            || self.shared.peer_offset_ns.load(Relaxed) != 0)
            .then(|| self.shared.peer_offset_ns.load(Relaxed) as f64 / 1e9)
    }

    /// The name's last answer (and its age, s) and the last error, when
    /// the peer was given by name.
    fn name_answer(&self, now: u64) -> (Option<(std::net::SocketAddr, f64)>, Option<String>) {
        let n = self.shared.name.lock().unwrap_or_else(|p| p.into_inner());
        let answer = n
            .answer
            .map(|(a, t)| (a, now.saturating_sub(t) as f64 / 1e9));
        (answer, n.error.clone())
    }

    fn peer_source(&self) -> &'static str {
        if self.shared.peer_from_state.load(Relaxed) {
            "state"
        } else if self.shared.peer_learned.load(Relaxed) {
            "learned"
        } else {
            "configured"
        }
    }

    /// The counters, the peer and the last valid datagram, as one line.
    pub(super) fn line(&self) -> String {
        let mut s = self.shared.counters.summary();
        match (self.shared.peer.get(), &self.shared.peer_name) {
            (Some(p), None) => {
                let _ = write!(s, ", peer {p}");
            }
            (Some(p), Some(n)) => {
                let _ = write!(s, ", peer {n} ({p})");
            }
            (None, Some(n)) => {
                let _ = write!(s, ", peer {n} (not resolved)");
            }
            (None, None) => s.push_str(", peer none"),
        }
        match self.last_valid_age(unix_nanos()) {
            Some(age) => {
                let _ = write!(s, ", last valid datagram {age:.1} s ago");
            }
            None => s.push_str(", last valid datagram never"),
        }
        let _ = write!(
            s,
            ", key rotations {}",
            self.shared.key_rotations.load(Relaxed)
        );
        s
    }

    fn text(&self) -> String {
        let (f, sh, now) = (self.facts, self.shared, unix_nanos());
        let c = &sh.counters;
        let mut s = String::new();
        let _ = writeln!(s, "interface: {}", f.name);
        let _ = writeln!(s, "  mac: {}", f.mac);
        let _ = writeln!(s, "  listening: {}", f.local);
        let _ = writeln!(
            s,
            "  mode: {}",
            match f.cipher {
                None => "authenticated, not encrypted (tinytaptunnel HMAC wire)".to_string(),
                Some(c) => format!("encrypted, {c}"),
            }
        );
        let _ = writeln!(
            s,
            "  mtu: {}, tcp mss clamping: {}",
            sh.mtu.load(Relaxed),
            f.clamp_mss
        );
        let _ = writeln!(
            s,
            "  offloads: tap {}, udp gso {}, udp coalescing {}",
            on(f.offload),
            on(f.udp_gso),
            on(f.udp_coalesce)
        );
        let _ = writeln!(
            s,
            "  key: in use for {:.0} s, rotations {}",
            now.saturating_sub(sh.key_since_ns.load(Relaxed)) as f64 / 1e9,
            sh.key_rotations.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "  up: {:.0} s",
            now.saturating_sub(f.started_ns) as f64 / 1e9
        );
        match sh.peer.get() {
            Some(p) if sh.peer_from_state.load(Relaxed) => {
                let _ = writeln!(s, "\npeer: {p} (from the state file, not heard yet)");
            }
            Some(p) => {
                let _ = writeln!(s, "\npeer: {p} ({})", self.peer_source());
            }
            None if sh.peer_name.is_some() => {
                s.push_str("\npeer: none yet (its name does not resolve)\n")
            }
            None => s.push_str("\npeer: none yet (learned from the first valid datagram)\n"),
        }
        if let Some(name) = &sh.peer_name {
            let (answer, error) = self.name_answer(now);
            let _ = write!(s, "  name: {name}");
            match answer {
                Some((a, age)) => {
                    let _ = write!(s, ", resolved to {a} {age:.0} s ago");
                }
                None => s.push_str(", never resolved"),
            }
            match error {
                Some(e) => {
                    let _ = writeln!(s, "; the last try failed: {e}");
                }
                None => s.push('\n'),
            }
        }
        match self.last_valid_age(now) {
            Some(a) => {
                let _ = writeln!(s, "  last valid datagram: {a:.1} s ago");
            }
            None => s.push_str("  last valid datagram: never\n"),
        }
        if let Some(o) = self.offset() {
            let _ = writeln!(
                s,
                "  clock offset: {o:+.3} s (--max-age {:.1} s)",
                f.max_age.as_secs_f64()
            );
        }
        if f.cipher.is_some() {
            let st = self.session().unwrap_or_default();
            let _ = writeln!(s, "  session: {}", session_text(&st, now));
        }
        let _ = writeln!(
            s,
            "  transfer: {} received ({} frames), {} sent ({} frames)",
            bytes(c.rx_bytes.load(Relaxed)),
            c.rx_frames.load(Relaxed),
            bytes(c.tx_bytes.load(Relaxed)),
            c.tx_frames.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "  receive queue: {}",
            queue_text(
                &c.queue,
                f.aqm,
                (c.aqm_marks.load(Relaxed), c.drops(DropReason::Aqm)),
                now
            )
        );
        let fq = match f.fq {
            true => format!(
                "on, {} datagrams of sparse flows taken ahead",
                c.fq_ahead.load(Relaxed)
            ),
            false => "off".to_string(),
        };
        let _ = writeln!(s, "  flow queueing: {fq}");
        let _ = writeln!(s, "  busy polling: {}", busy_text(f.busy_poll_ns, c));
        let prio = sh.priority.get().copied().unwrap_or_default();
        let _ = writeln!(
            s,
            "  packet threads: {}",
            prio.with_cuts(c.rt_cut.load(Relaxed))
        );
        let _ = writeln!(
            s,
            "  keepalives: every {} s, {} sent, {} received",
            f.keepalive.as_secs(),
            c.keepalives_tx.load(Relaxed),
            c.keepalives_rx.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "  errors: {} send, {} tap write, {} seal",
            c.send_errors.load(Relaxed),
            c.tap_errors.load(Relaxed),
            c.seal_errors.load(Relaxed)
        );
        let dropped: Vec<String> = DropReason::ALL
            .iter()
            .filter(|r| c.drops(**r) > 0)
            .map(|r| format!("{} {}", r.name(), c.drops(*r)))
            .collect();
        let _ = writeln!(
            s,
            "  drops: {}",
            if dropped.is_empty() {
                "none".to_string()
            } else {
                dropped.join(", ")
            }
        );
        s
    }

    /// One JSON object: `--stats-json` and `taptun status --json`.
    pub(super) fn json(&self) -> String {
        let (f, sh, now) = (self.facts, self.shared, unix_nanos());
        let last = sh.last_valid_ns.load(Relaxed);
        let mut s = String::from("{\"dev\":");
        json_string(&mut s, &f.name);
        let _ = write!(s, ",\"time\":{:.3},\"last_valid\":", now as f64 / 1e9);
        if last == 0 {
            s.push_str("null,\"last_valid_age\":null");
        } else {
            let _ = write!(
                s,
                "{:.3},\"last_valid_age\":{:.3}",
                last as f64 / 1e9,
                now.saturating_sub(last) as f64 / 1e9
            );
        }
        let _ = write!(
            s,
            ",\"key_rotations\":{},\"key_age\":{:.3},\"local\":",
            sh.key_rotations.load(Relaxed),
            now.saturating_sub(sh.key_since_ns.load(Relaxed)) as f64 / 1e9
        );
        json_string(&mut s, &f.local.to_string());
        let _ = write!(s, ",\"mac\":\"{}\"", f.mac);
        let _ = write!(
            s,
            ",\"cipher\":\"{}\"",
            f.cipher.map_or("none".to_string(), |c| c.to_string())
        );
        let _ = write!(
            s,
            ",\"mtu\":{},\"clamp_mss\":\"{}\",\"offload\":{},\"udp_gso\":{},\"udp_coalesce\":{},\"uptime\":{:.3},\"peer_clock_offset\":",
            sh.mtu.load(Relaxed),
            f.clamp_mss,
            f.offload,
            f.udp_gso,
            f.udp_coalesce,
            now.saturating_sub(f.started_ns) as f64 / 1e9
        );
        match self.offset() {
            Some(o) => {
                let _ = write!(s, "{o:.3}");
            }
            None => s.push_str("null"),
        }
        s.push_str(",\"peer\":");
        match sh.peer.get() {
            Some(p) => {
                json_string(&mut s, &p.to_string());
                let _ = write!(s, ",\"peer_source\":\"{}\"", self.peer_source());
            }
            None => s.push_str("null,\"peer_source\":null"),
        }
        s.push_str(",\"peer_name\":");
        match &sh.peer_name {
            Some(n) => json_string(&mut s, n),
            None => s.push_str("null"),
        }
        s.push_str(",\"peer_name_address\":");
        match self.name_answer(now).0 {
            Some((a, _)) => json_string(&mut s, &a.to_string()),
            None => s.push_str("null"),
        }
        let st = f.cipher.map(|_| self.session().unwrap_or_default());
        let _ = write!(s, ",\"session\":{},", session_json(st.as_ref(), now));
        queue_json(&mut s, &sh.counters.queue, f.aqm, now);
        let c = &sh.counters;
        let _ = write!(
            s,
            ",\"fq\":{{\"on\":{},\"ahead\":{}}},\"busy_poll\":{{\"linger_ms\":{},\"spins\":{},\"caught\":{}}},",
            f.fq,
            c.fq_ahead.load(Relaxed),
            f.busy_poll_ns as f64 / 1e6,
            c.busy_spins.load(Relaxed),
            c.busy_caught.load(Relaxed)
        );
        let prio = sh.priority.get().copied().unwrap_or_default();
        let _ = write!(s, "\"priority\":{},", prio.json(c.rt_cut.load(Relaxed)));
        sh.counters.write_json_members(&mut s);
        s.push('}');
        s
    }

    fn prometheus(&self) -> String {
        let (f, sh, now) = (self.facts, self.shared, unix_nanos());
        let c = &sh.counters;
        let dev = f.name.replace(['\\', '"', '\n'], "_");
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(s, "{name}{{dev=\"{dev}\"}} {value}");
        };
        let counters = [
            (
                "rx_bytes",
                "Frame bytes received and written to the TAP.",
                &c.rx_bytes,
            ),
            (
                "rx_frames",
                "Frames received and written to the TAP.",
                &c.rx_frames,
            ),
            (
                "tx_bytes",
                "Frame bytes read from the TAP and sent.",
                &c.tx_bytes,
            ),
            (
                "tx_frames",
                "Frames read from the TAP and sent.",
                &c.tx_frames,
            ),
            ("keepalives_sent", "Keepalives sent.", &c.keepalives_tx),
            (
                "keepalives_received",
                "Keepalives received.",
                &c.keepalives_rx,
            ),
            ("send_errors", "UDP send errors.", &c.send_errors),
            ("tap_errors", "TAP write errors.", &c.tap_errors),
            (
                "seal_errors",
                "Frames the sealer refused (dropped, never sent).",
                &c.seal_errors,
            ),
            (
                "key_rotations",
                "Keys replaced by SIGHUP.",
                &sh.key_rotations,
            ),
            (
                "aqm_marks",
                "Frames the receive queue's AQM marked CE (its drops: reason aqm).",
                &c.aqm_marks,
            ),
            (
                "fq_ahead",
                "Datagrams of sparse flows taken ahead of the runs before them (--fq).",
                &c.fq_ahead,
            ),
            (
                "rt_bursts_cut",
                "Real-time bursts of the packet threads cut at 10 ms (they went on at the normal policy until their input emptied).",
                &c.rt_cut,
            ),
            (
                "busy_poll_spins",
                "Spins on the UDP socket (--busy-poll).",
                &c.busy_spins,
            ),
            (
                "busy_poll_caught",
                "Spins that ended with a datagram (the rest slept after the linger).",
                &c.busy_caught,
            ),
        ];
        for (name, help, v) in counters {
            metric(
                &format!("taptun_{name}_total"),
                "counter",
                help,
                v.load(Relaxed).to_string(),
            );
        }
        metric(
            "taptun_mtu_bytes",
            "gauge",
            "The TAP's MTU.",
            sh.mtu.load(Relaxed).to_string(),
        );
        metric(
            "taptun_peer_known",
            "gauge",
            "1 when a peer address is known.",
            u8::from(sh.peer.get().is_some()).to_string(),
        );
        if let Some(a) = self.last_valid_age(now) {
            metric(
                "taptun_last_valid_age_seconds",
                "gauge",
                "Seconds since the last valid datagram.",
                format!("{a:.3}"),
            );
        }
        if let Some(o) = self.offset() {
            metric(
                "taptun_peer_clock_offset_seconds",
                "gauge",
                "The peer's clock less this host's, less the one-way transit time.",
                format!("{o:.3}"),
            );
        }
        queue_metrics(&c.queue, now, &mut metric);
        if let Some(st) = self.session() {
            if let Some(t) = st.since_ns {
                metric(
                    "taptun_session_age_seconds",
                    "gauge",
                    "Confidential mode: the age of the session sealed under.",
                    format!("{:.3}", ago(t, now)),
                );
            }
            if let Some(t) = st.last_handshake_ns {
                metric(
                    "taptun_latest_handshake_seconds",
                    "gauge",
                    "Confidential mode: seconds since the latest completed handshake.",
                    format!("{:.3}", ago(t, now)),
                );
            }
            metric(
                "taptun_handshakes_total",
                "counter",
                "Confidential mode: handshakes completed.",
                st.handshakes.to_string(),
            );
        }
        let peer = sh.peer.get();
        if peer.is_some() || sh.peer_name.is_some() {
            let label = |v: &str| v.replace(['\\', '"', '\n'], "_");
            let _ = writeln!(
                s,
                "# HELP taptun_peer_info The peer: its name as given (empty: given as an address, or learned) and the address in use (empty: none).\n# TYPE taptun_peer_info gauge\ntaptun_peer_info{{dev=\"{dev}\",name=\"{}\",address=\"{}\"}} 1",
                label(sh.peer_name.as_deref().unwrap_or("")),
                peer.map_or_else(String::new, |p| p.to_string())
            );
        }
        let _ = writeln!(
            s,
            "# HELP taptun_drops_total Datagrams and frames dropped, by reason.\n# TYPE taptun_drops_total counter"
        );
        for r in DropReason::ALL {
            let _ = writeln!(
                s,
                "taptun_drops_total{{dev=\"{dev}\",reason=\"{}\"}} {}",
                r.name(),
                c.drops(r)
            );
        }
        s
    }
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Bytes for people: B, KiB, MiB, GiB.
fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

impl<T: super::io::Tap, S: super::io::Socket> Tunnel<T, S> {
    fn view(&self) -> View<'_> {
        View {
            facts: &self.facts,
            shared: &self.shared,
        }
    }

    /// The counters, the peer and the last valid datagram, as one line for the log.
    pub fn status(&self) -> String {
        self.view().line()
    }

    /// The state as one JSON object on one line (`--stats-json`).
    pub fn status_json(&self) -> String {
        self.view().json()
    }

    /// The status socket's report (tests).
    #[cfg(test)]
    pub(crate) fn status_text(&self) -> String {
        self.view().text()
    }
}

/// Appends `text` as a JSON string.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escaped() {
        let mut s = String::new();
        json_string(&mut s, "tap\"0\\\n");
        assert_eq!(s, "\"tap\\\"0\\\\\\u000a\"");
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(3 << 30), "3.00 GiB");
    }

    #[test]
    fn forms_round_trip_their_words() {
        for f in [Form::Text, Form::Json, Form::Prometheus] {
            assert_eq!(Form::from_word(f.word()), Some(f));
        }
        assert_eq!(Form::from_word("key"), None);
    }
}
