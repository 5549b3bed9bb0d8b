//! Which spokes a hub's folder names: one per `NAME.key` file. Pure but
//! for [`scan`], which lists the folder.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Longest spoke name: `tt-` and the name fill the kernel's 15 characters.
pub const MAX_NAME: usize = 12;

/// The TAP of spoke `name`.
pub fn dev_name(name: &str) -> String {
    format!("tt-{name}")
}

/// Whether `name` is a spoke name: 1 to [`MAX_NAME`] letters, digits, `-`
/// or `_` (it becomes part of an interface name and of status lines).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why the folder could not be read as spokes.
#[derive(Debug)]
pub enum SpokesError {
    /// The folder cannot be listed.
    Dir(PathBuf, io::Error),
    /// A `.key` file whose name is no spoke name.
    BadName(PathBuf),
}

impl fmt::Display for SpokesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpokesError::Dir(p, e) => write!(
                f,
                "spoke folder {}: {e}; expected a folder of NAME.key files (taptun genkey DIR/NAME.key)",
                p.display()
            ),
            SpokesError::BadName(p) => write!(
                f,
                "{}: a spoke's key file is NAME.key, NAME of 1 to {MAX_NAME} letters, digits, '-' or '_' (its TAP is tt-NAME); rename it",
                p.display()
            ),
        }
    }
}

impl std::error::Error for SpokesError {}

/// What one file name of the folder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A spoke's key file.
    Spoke(String),
    /// A `.key` file with a bad name.
    BadName,
    /// Anything else (ignored).
    Other,
}

/// Sorts one file name of the folder.
pub fn classify(file_name: &str) -> Entry {
    match file_name.strip_suffix(".key") {
        Some(n) if valid_name(n) => Entry::Spoke(n.to_string()),
        Some(_) => Entry::BadName,
        None => Entry::Other,
    }
}

/// What [`scan`] found: each spoke's name and key file, sorted by name;
/// the names of the other files.
pub type Scan = (Vec<(String, PathBuf)>, Vec<String>);

/// The spokes of folder `dir`, sorted by name, each with its key file;
/// the other files it holds, for a debug line.
pub fn scan(dir: &Path) -> Result<Scan, SpokesError> {
    let rd = std::fs::read_dir(dir).map_err(|e| SpokesError::Dir(dir.to_path_buf(), e))?;
    let mut spokes = Vec::new();
    let mut other = Vec::new();
    for e in rd {
        let e = e.map_err(|e| SpokesError::Dir(dir.to_path_buf(), e))?;
        let file = e.file_name();
        let Some(file) = file.to_str() else {
            other.push(e.file_name().to_string_lossy().into_owned());
            continue;
        };
        match classify(file) {
            Entry::Spoke(n) => spokes.push((n, e.path())),
            Entry::BadName => return Err(SpokesError::BadName(e.path())),
            Entry::Other => other.push(file.to_string()),
        }
    }
    spokes.sort();
    other.sort();
    Ok((spokes, other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("a"));
        assert!(valid_name("home-1_B"));
        assert!(valid_name("abcdefghijkl"));
        assert!(!valid_name("abcdefghijklm"));
        assert!(!valid_name(""));
        assert!(!valid_name("a.b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("é"));
        assert_eq!(dev_name("abcdefghijkl").len(), 15);
    }

    #[test]
    fn files() {
        assert_eq!(classify("home.key"), Entry::Spoke("home".into()));
        assert_eq!(classify("bad name.key"), Entry::BadName);
        assert_eq!(classify(".key"), Entry::BadName);
        assert_eq!(classify("home.key.bak"), Entry::Other);
        assert_eq!(classify("README"), Entry::Other);
    }

    #[test]
    fn scan_sorts_and_refuses_bad_names() {
        let dir = std::env::temp_dir().join(format!("taptun-spokes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["b.key", "a.key", "notes.txt"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let (s, o) = scan(&dir).unwrap();
        let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(o, ["notes.txt"]);
        std::fs::write(dir.join("much-too-long-name.key"), "x").unwrap();
        let e = scan(&dir).unwrap_err().to_string();
        assert!(e.contains("much-too-long-name.key"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
