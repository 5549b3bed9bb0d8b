//! The key file: base64 (standard alphabet) of the shared secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;
/// Length of a key that taptun generates, in bytes.
pub const GENERATED_KEY_LEN: usize = 32;

/// What went wrong with a key file; every message names the file.
#[derive(Debug)]
pub enum KeyError {
    /// The file could not be read or written.
    Io(PathBuf, io::Error),
    /// A new key file could not be created (directory missing, read-only
    /// or not writable).
    Create(PathBuf, io::Error),
    /// The file holds nothing but whitespace.
    Empty(PathBuf),
    /// The content is not standard base64.
    NotBase64(PathBuf),
    /// The key decodes to fewer than [`MIN_KEY_LEN`] bytes.
    TooShort(PathBuf, usize),
    /// Group or others may read the file.
    Readable(PathBuf, u32),
    /// The OS random source failed.
    Random(String),
    /// `create` was asked for a file that already exists.
    Exists(PathBuf),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Io(p, e) => write!(f, "key file {}: {e}", p.display()),
            KeyError::Create(p, e) => write!(
                f,
                "key file {}: cannot create it: {e}; fix the path, or create the key beforehand with taptun genkey FILE where it may be written (under systemd /etc is read-only)",
                p.display()
            ),
            KeyError::Empty(p) => write!(
                f,
                "key file {}: is empty; expected the base64 of at least {MIN_KEY_LEN} random bytes (delete it to have one generated)",
                p.display()
            ),
            KeyError::NotBase64(p) => write!(
                f,
                "key file {}: is not valid base64 (standard alphabet); expected the base64 of at least {MIN_KEY_LEN} random bytes",
                p.display()
            ),
            KeyError::TooShort(p, n) => write!(
                f,
                "key file {}: key is {n} bytes; expected at least {MIN_KEY_LEN} (taptun generates {GENERATED_KEY_LEN})",
                p.display()
            ),
            KeyError::Readable(p, mode) => write!(
                f,
                "key file {}: mode {mode:04o} lets group or others read the key; run chmod 600 {}",
                p.display(),
                p.display()
            ),
            KeyError::Random(e) => write!(f, "cannot read the OS random source: {e}"),
            KeyError::Exists(p) => write!(
                f,
                "key file {}: already exists; refusing to overwrite it",
                p.display()
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// A shared secret. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(<{} bytes>)", self.0.len())
    }
}

impl Key {
    /// The raw secret, for keying the codec.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Decodes the text of a key file (surrounding whitespace ignored).
    pub fn parse(text: &str, path: &Path) -> Result<Key, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Empty(path.to_path_buf()));
        }
        let bytes = STANDARD
            .decode(text)
            .map_err(|_| KeyError::NotBase64(path.to_path_buf()))?;
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(path.to_path_buf(), bytes.len()));
        }
        Ok(Key(bytes))
    }

    /// A fresh key of [`GENERATED_KEY_LEN`] bytes from the OS random source.
    pub fn generate() -> Result<Key, KeyError> {
        let mut bytes = vec![0u8; GENERATED_KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Key(bytes))
    }

    /// The key file text for this key.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.0)
    }
}

/// Reads a key file, refusing one that group or others can read.
pub fn load(path: &Path) -> Result<Key, KeyError> {
    let io_err = |e| KeyError::Io(path.to_path_buf(), e);
    let meta = fs::metadata(path).map_err(io_err)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Readable(path.to_path_buf(), mode));
    }
    let text = fs::read_to_string(path).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => KeyError::NotBase64(path.to_path_buf()),
        _ => io_err(e),
    })?;
    Key::parse(&text, path)
}

/// Writes a new random key to `path` with mode 0600; fails if it exists.
pub fn create(path: &Path) -> Result<Key, KeyError> {
    let key = Key::generate()?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
            _ => KeyError::Create(path.to_path_buf(), e),
        })?;
    writeln!(file, "{}", key.to_base64())
        .and_then(|_| file.sync_all())
        .map_err(|e| KeyError::Io(path.to_path_buf(), e))?;
    Ok(key)
}

/// Loads the key, or creates it when the file does not exist.
/// The flag says whether it was created.
pub fn load_or_create(path: &Path) -> Result<(Key, bool), KeyError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match create(path) {
            Ok(key) => Ok((key, true)),
            // Lost a race with another creator: read what it wrote.
            Err(KeyError::Exists(_)) => load(path).map(|k| (k, false)),
            Err(e) => Err(e),
        },
        _ => load(path).map(|k| (k, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn tmp(name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "taptun-key-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn write_mode(path: &Path, text: &str, mode: u32) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn create_then_load() {
        let p = tmp("k.b64");
        let (k1, created) = load_or_create(&p).unwrap();
        assert!(created);
        assert_eq!(k1.as_bytes().len(), GENERATED_KEY_LEN);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (k2, created) = load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(k1, k2);
        assert!(matches!(create(&p), Err(KeyError::Exists(_))));
        assert_ne!(Key::generate().unwrap(), k1);
    }

    #[test]
    fn parse_errors_name_the_file() {
        let p = Path::new("/etc/taptun/x.b64");
        let e = Key::parse("  \n", p).unwrap_err();
        assert!(matches!(e, KeyError::Empty(_)));
        assert!(e.to_string().contains("/etc/taptun/x.b64"));
        assert!(matches!(
            Key::parse("not base64!!", p),
            Err(KeyError::NotBase64(_))
        ));
        // 15 bytes
        assert!(matches!(
            Key::parse("AAAAAAAAAAAAAAAAAAAA", p),
            Err(KeyError::TooShort(_, 15))
        ));
        let k = Key::parse("\n  AAAAAAAAAAAAAAAAAAAAAA==  \n", p).unwrap();
        assert_eq!(k.as_bytes(), &[0u8; 16]);
        assert_eq!(format!("{k:?}"), "Key(<16 bytes>)");
    }

    #[test]
    fn refuses_readable_file() {
        let p = tmp("open.b64");
        write_mode(&p, "AAAAAAAAAAAAAAAAAAAAAA==", 0o644);
        let e = load(&p).unwrap_err();
        assert!(matches!(e, KeyError::Readable(_, 0o644)));
        assert!(e.to_string().contains("chmod 600"));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load(&p).is_ok());
    }

    #[test]
    fn empty_and_binary_files() {
        let p = tmp("empty.b64");
        write_mode(&p, "", 0o600);
        assert!(matches!(load_or_create(&p), Err(KeyError::Empty(_))));
        fs::write(&p, [0xffu8, 0xfe, 0x00]).unwrap();
        assert!(matches!(load(&p), Err(KeyError::NotBase64(_))));
        let missing_dir = tmp("no/such/dir/k.b64");
        assert!(matches!(
            load_or_create(&missing_dir),
            Err(KeyError::Create(..))
        ));
    }
}
