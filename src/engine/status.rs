//! The tunnel's state as one log line and as one JSON object: the only
//! place either is assembled.

use super::{Tunnel, unix_nanos};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

impl Tunnel {
    /// The counters, the peer and the last valid datagram, as one line for the log.
    pub fn status(&self) -> String {
        let mut s = self.shared.counters.summary();
        match self.peer() {
            Some(p) => {
                let _ = write!(s, ", peer {p}");
            }
            None => s.push_str(", peer none"),
        }
        match self.shared.last_valid_ns.load(Relaxed) {
            0 => s.push_str(", last valid datagram never"),
            t => {
                let age = unix_nanos().saturating_sub(t) as f64 / 1e9;
                let _ = write!(s, ", last valid datagram {age:.1} s ago");
            }
        }
        let _ = write!(
            s,
            ", key rotations {}",
            self.shared.key_rotations.load(Relaxed)
        );
        s
    }

    /// The same as [`Tunnel::status`], as one JSON object on one line.
    pub fn status_json(&self) -> String {
        let now = unix_nanos();
        let last = self.shared.last_valid_ns.load(Relaxed);
        let mut s = String::from("{\"dev\":");
        json_string(&mut s, &self.name);
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
            ",\"key_rotations\":{},\"peer\":",
            self.shared.key_rotations.load(Relaxed)
        );
        match self.peer() {
            Some(p) => json_string(&mut s, &p.to_string()),
            None => s.push_str("null"),
        }
        s.push(',');
        self.shared.counters.write_json_members(&mut s);
        s.push('}');
        s
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
    use super::json_string;

    #[test]
    fn json_strings_escaped() {
        let mut s = String::new();
        json_string(&mut s, "tap\"0\\\n");
        assert_eq!(s, "\"tap\\\"0\\\\\\u000a\"");
    }
}
