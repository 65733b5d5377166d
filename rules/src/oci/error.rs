//! Errors of the OCI writer: what failed, naming the image path, file or digest.

use std::path::Path;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file system operation failed.
    Io,
    /// A path inside the image is not absolute, holds `..`, `.` or an empty component.
    InvalidPath,
    /// Two entries of one layer claim the same path inside the image.
    DuplicatePath,
    /// An entry needs a parent directory that another entry declares as a file or symlink.
    NotADirectory,
    /// A value of the image (mode, port, env name, user name, platform...) is malformed.
    InvalidInput,
    /// A blob or JSON document of a layout is missing, malformed or does not match its digest.
    Corrupt,
    /// The layout holds no image for the requested platform.
    PlatformNotFound,
}

/// An OCI writer error: a message that reads well after "failed to …".
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

    pub(crate) fn io(what: &str, path: &Path, err: std::io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("{what} {}: {err}", path.display()))
    }

    pub(crate) fn input(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Corrupt, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}
