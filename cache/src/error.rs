//! Errors of the store: what failed, on which path.

use std::path::Path;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file system operation failed.
    Io,
    /// The SQLite index failed.
    Database,
    /// The SQLite index is damaged (SQLite says it is malformed, or not a database).
    DamagedIndex,
    /// Stored data does not match its digest or cannot be decoded.
    Corrupt,
    /// A remote store failed (network, protocol, refusal).
    Remote,
    /// The caller asked for something that cannot work (a server nobody could write to).
    Usage,
}

/// A store error: a message that reads well after "failed to …".
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn io(what: &str, path: &Path, err: std::io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("{what} {}: {err}", path.display()))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Error {
        let kind = if crate::local::index::is_damage(&err) {
            ErrorKind::DamagedIndex
        } else {
            ErrorKind::Database
        };
        let full = matches!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
        ) && disk_full_hint();
        match full {
            true => Error::new(
                kind,
                format!("use the cache index: {err}: the disk holding the cache is full (no space left on device)"),
            ),
            false => Error::new(kind, format!("use the cache index: {err}")),
        }
    }
}

/// Whether the disk holding the cache directory has no space left.
fn disk_full_hint() -> bool {
    disk_full(&crate::default_cache_dir())
}

/// Whether the file system holding `path` has no space left for this user.
pub fn disk_full(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs(3) fills the struct it is given; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut st) == 0 && st.f_bavail == 0
    }
}
