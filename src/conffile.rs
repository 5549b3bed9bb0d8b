//! The config file of `taptun --config FILE` (taptun.conf(5)): one
//! `name = value` a line; `#` starts a comment, at the start of a line or
//! after a value; blank lines are ignored and whitespace around names and
//! values is trimmed. A value in double quotes keeps its spaces and `#`
//! (`\"` and `\\` inside stand for `"` and `\`; any other backslash is
//! kept). The names are those of [`crate::cli::config_names`]: `key`,
//! `local`, `peer` and every long option without its dashes; `taptun hub
//! --config` reads the same syntax with the hub's names (`dir`, `local`
//! and its long options: [`parse_for`]).
//!
//! Pure: bytes in, the settings (or the first error, with its line) out.
//! Each value is checked as the command line would check it, so that a
//! bad one is reported with its line rather than later without one.

use crate::cli::{self, ConfigArgs, Kind};
use std::fmt;

/// One `name = value` line the parser accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Its line number, from 1.
    pub line: usize,
    /// A name of [`cli::config_names`].
    pub name: String,
    /// The value: unquoted, unescaped, trimmed when it was not quoted.
    pub value: String,
}

/// The first line the parser refused, and why (one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    /// Its line number, from 1.
    pub line: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfError {
    /// `LINE: message`; the caller puts the file name in front.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.line, self.message)
    }
}

impl std::error::Error for ConfError {}

/// Parses a whole config file of `taptun --config`.
pub fn parse(bytes: &[u8]) -> Result<Vec<Setting>, ConfError> {
    parse_for::<cli::Cli>(bytes)
}

/// Parses a whole config file of command `A` (`taptun` or `taptun hub`):
/// the same syntax, with `A`'s names and checks.
pub fn parse_for<A: ConfigArgs>(bytes: &[u8]) -> Result<Vec<Setting>, ConfError> {
    let names = cli::config_names_of::<A>();
    let mut settings: Vec<Setting> = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let err = |message: String| ConfError { line, message };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw)
            .map_err(|_| err("not UTF-8 text; expected name = value".into()))?;
        let text = if line == 1 {
            text.strip_prefix('\u{feff}').unwrap_or(text)
        } else {
            text
        };
        if let Some(c) = text.chars().find(|&c| c.is_control() && c != '\t') {
            return Err(err(format!(
                "control character {:?}; expected text (name = value)",
                c
            )));
        }
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let Some((name, rest)) = text.split_once('=').filter(|(n, _)| !n.contains('#')) else {
            let first = text.split([' ', '\t', '#']).next().unwrap_or(text);
            return Err(err(match names.iter().find(|(n, _)| *n == first) {
                Some((n, Kind::Switch)) => format!("{text:?}: expected {n} = true"),
                Some((n, _)) => format!("{text:?}: expected {n} = VALUE"),
                None => format!("{text:?}: expected name = value"),
            }));
        };
        let name = name.trim();
        let value = parse_value(rest).map_err(err)?;
        if A::OLD_NAMES.contains(&name) {
            return Err(err(old_format(name, &value)));
        }
        if name == "config" {
            return Err(err(
                "config cannot be set in a config file (there are no includes)".into(),
            ));
        }
        let Some(&(name, kind)) = names.iter().find(|(n, _)| *n == name) else {
            let close = close_names(name, names.iter().map(|(n, _)| *n));
            return Err(err(match close.as_slice() {
                [] => format!("unknown name {name:?}; the names are listed in taptun.conf(5)"),
                c => format!("unknown name {name:?}; did you mean {}?", c.join(" or ")),
            }));
        };
        if kind != Kind::Repeated
            && let Some(first) = settings.iter().find(|s| s.name == name)
        {
            let repeatable: Vec<&str> = names
                .iter()
                .filter(|(_, k)| *k == Kind::Repeated)
                .map(|(n, _)| *n)
                .collect();
            return Err(err(format!(
                "{name} is already set on line {}; give it once (only {} may repeat)",
                first.line,
                repeatable.join(", ")
            )));
        }
        cli::check_setting_of::<A>(name, kind, &value)
            .map_err(|msg| err(format!("{name} = {value:?}: {msg}")))?;
        settings.push(Setting {
            line,
            name: name.to_string(),
            value,
        });
    }
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|s| (s.name.as_str(), s.value.as_str()))
        .collect();
    if let Err((i, why)) = A::check_together(&pairs) {
        let s = &settings[i];
        return Err(ConfError {
            line: s.line,
            message: format!("{} = {:?}: {why}", s.name, s.value),
        });
    }
    Ok(settings)
}

/// The value after the `=`: quoted, or up to a `#`, trimmed.
fn parse_value(rest: &str) -> Result<String, String> {
    let rest = rest.trim_start();
    let Some(quoted) = rest.strip_prefix('"') else {
        let value = rest.split('#').next().unwrap_or("");
        return Ok(value.trim().to_string());
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((_, c)) = chars.next() {
        match c {
            '"' => {
                let after = chars.as_str().trim();
                if after.is_empty() || after.starts_with('#') {
                    return Ok(value);
                }
                return Err(format!(
                    "{after:?} after the closing quote; expected the end of the line or a # comment"
                ));
            }
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => value.push(e),
                Some((_, e)) => {
                    value.push('\\');
                    value.push(e);
                }
                None => value.push('\\'),
            },
            c => value.push(c),
        }
    }
    Err("no closing double quote; expected \"VALUE\"".into())
}

/// The value as a config file line holds it: quoted when it must be.
pub fn quote(value: &str) -> String {
    if value.trim() != value || value.contains('#') || value.starts_with('"') {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        value.to_string()
    }
}

/// A config file holding `settings`, one a line.
pub fn render(settings: &[Setting]) -> String {
    settings
        .iter()
        .map(|s| format!("{} = {}\n", s.name, quote(&s.value)))
        .collect()
}

/// The message for a line of the old EnvironmentFile format: how to
/// write it now.
fn old_format(name: &str, value: &str) -> String {
    let head = format!(
        "{name}= is the old EnvironmentFile format of /etc/taptun/NAME.conf, which taptun no longer reads"
    );
    let now = if name == "ARGS" {
        match translate_args(value) {
            Some(lines) if !lines.is_empty() => format!(
                "write each option on a line of its own: {}",
                lines.join("; ")
            ),
            _ => {
                "write each option on a line of its own, as name = value without the dashes".into()
            }
        }
    } else if value.is_empty() {
        format!("leave it out, or write {} = VALUE", name.to_lowercase())
    } else {
        format!("write {} = {}", name.to_lowercase(), quote(value))
    };
    format!("{head}; {now}, and so on for every line (see taptun.conf(5))")
}

/// An old `ARGS=` value (options split at whitespace) as `name = value`
/// lines; None when a word is not an option taptun knows.
fn translate_args(value: &str) -> Option<Vec<String>> {
    let names = cli::config_names();
    let mut words = value.split_whitespace();
    let mut lines = Vec::new();
    while let Some(w) = words.next() {
        let name = cli::long_name(w)?;
        let (_, kind) = names.iter().find(|(n, _)| *n == name)?;
        match kind {
            Kind::Switch => lines.push(format!("{name} = true")),
            _ => lines.push(format!("{name} = {}", quote(words.next()?))),
        }
    }
    Some(lines)
}

/// The names of `known` that `given` may have been meant as: at most two
/// edits away, ignoring case, leading dashes and `_` for `-`; the closest
/// first, at most three.
pub fn close_names<'a>(given: &str, known: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let norm = |s: &str| s.trim_start_matches('-').to_lowercase().replace('_', "-");
    let g = norm(given);
    let mut close: Vec<(usize, &str)> = known
        .map(|k| (distance(&g, &norm(k)), k))
        .filter(|&(d, _)| d <= 2)
        .collect();
    close.sort();
    close.into_iter().take(3).map(|(_, k)| k).collect()
}

/// The Levenshtein distance between two strings, in chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
