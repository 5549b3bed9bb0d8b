//! The state file: the last valid address of each peer a node learned, so
//! that a restarted node reaches its peers at once instead of waiting for
//! their next keepalive. The hub keeps one line per spoke; a
//! point-to-point tunnel that learns its peer keeps one line, `peer`. One
//! `NAME ADDRESS` a line; `#` comments. Pure but for [`write`]: the main
//! thread reads it at start and writes it (temp + rename) when an address
//! changed, never a forwarding thread.

// Names follow the hub's spoke names (the point-to-point file's `peer` is one).
use crate::hub::spokes::valid_name;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// Each spoke's last valid address, by name.
pub type Table = BTreeMap<String, SocketAddr>;

/// A line of the state file that is not `NAME ADDRESS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError {
    /// The line (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub what: &'static str,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

impl std::error::Error for StateError {}

/// The file's text for `table`, after the comment line `# HEADER`, which
/// says whose file it is.
pub fn render(header: &str, table: &Table) -> String {
    let mut s = format!("# {header}\n");
    for (name, addr) in table {
        s.push_str(name);
        s.push(' ');
        s.push_str(&addr.to_string());
        s.push('\n');
    }
    s
}

/// Reads the file's bytes; the first bad line is the error.
pub fn parse(bytes: &[u8]) -> Result<Table, StateError> {
    let text = std::str::from_utf8(bytes).map_err(|_| StateError {
        line: 1 + bytes
            .iter()
            .take(bytes.utf8_chunks().next().map_or(0, |c| c.valid().len()))
            .filter(|&&b| b == b'\n')
            .count(),
        what: "not UTF-8",
    })?;
    let mut table = Table::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |what| StateError { line: i + 1, what };
        let mut words = line.split_ascii_whitespace();
        let (Some(name), Some(addr), None) = (words.next(), words.next(), words.next()) else {
            return Err(err("expected NAME ADDRESS"));
        };
        if !valid_name(name) {
            return Err(err("not a spoke name"));
        }
        let addr: SocketAddr = addr.parse().map_err(|_| err("not an IP:PORT"))?;
        table.insert(name.to_string(), addr);
    }
    Ok(table)
}

/// Writes `table` to `path` atomically: a temporary file beside it, then
/// a rename, so that a crash leaves the old file or the new one.
pub fn write(path: &Path, header: &str, table: &Table) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, render(header, table))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic PRNG (xorshift), as the other property tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn random_table(r: &mut Rng) -> Table {
        const CHARS: &[u8] = b"abcXYZ019-_";
        let mut t = Table::new();
        for _ in 0..r.next() % 8 {
            let len = 1 + (r.next() % 12) as usize;
            let name: String = (0..len)
                .map(|_| CHARS[(r.next() % CHARS.len() as u64) as usize] as char)
                .collect();
            let port = (r.next() % 65536) as u16;
            let addr: SocketAddr = if r.next().is_multiple_of(2) {
                (std::net::Ipv4Addr::from(r.next() as u32), port).into()
            } else {
                let ip =
                    std::net::Ipv6Addr::from(u128::from(r.next()) << 64 | u128::from(r.next()));
                (ip, port).into()
            };
            t.insert(name, addr);
        }
        t
    }

    #[test]
    fn rendered_then_parsed_is_the_same_table() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let t = random_table(&mut r);
            assert_eq!(parse(render("h", &t).as_bytes()), Ok(t));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut r = Rng(12345);
        let alphabet = b"ab_-1 \n#:.[]9\xff\xc3";
        for _ in 0..20000 {
            let len = (r.next() % 64) as usize;
            let b: Vec<u8> = if r.next().is_multiple_of(2) {
                (0..len).map(|_| r.next() as u8).collect()
            } else {
                (0..len)
                    .map(|_| alphabet[(r.next() % alphabet.len() as u64) as usize])
                    .collect()
            };
            let _ = parse(&b);
        }
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse(b"# c\n\na 1.2.3.4:5\n").unwrap().len(), 1);
        assert_eq!(parse(b"a 1.2.3.4:5\nb\n").unwrap_err().line, 2);
        assert_eq!(
            parse(b"a.b 1.2.3.4:5\n").unwrap_err().what,
            "not a spoke name"
        );
        assert_eq!(parse(b"a 1.2.3.4\n").unwrap_err().what, "not an IP:PORT");
        assert_eq!(parse(b"a 1.2.3.4:5 x\n").unwrap_err().line, 1);
        assert_eq!(parse(b"\n\n\xff").unwrap_err().line, 3);
        assert_eq!(
            parse(b"v6 [fd00::1]:9\n").unwrap()["v6"],
            "[fd00::1]:9".parse().unwrap()
        );
    }

    #[test]
    fn write_replaces_atomically() {
        let p = std::env::temp_dir().join(format!("taptun-state-{}", std::process::id()));
        let mut t = Table::new();
        t.insert("a".into(), "1.2.3.4:5".parse().unwrap());
        write(&p, "h", &t).unwrap();
        assert_eq!(parse(&std::fs::read(&p).unwrap()), Ok(t));
        let _ = std::fs::remove_file(&p);
    }
}
