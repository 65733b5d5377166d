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
        Error::new(kind, format!("use the cache index: {err}"))
    }
}
