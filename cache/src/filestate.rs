//! The file-state table: (path, size, mtime, inode, ctime) → digest, as git's index does,
//! so an unchanged file is never hashed twice.
//!
//! A state is trusted only if the file's modification time is older than the moment the
//! state was recorded by more than [`RACY_WINDOW_NS`]: a file written in the same instant
//! as it was hashed could change again without its mtime moving ("racy git").

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// A file modified within this many nanoseconds of being hashed is hashed again next time.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// What the table remembers of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileState {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub digest: Digest,
}

impl FileState {
    fn matches(&self, meta: &std::fs::Metadata) -> bool {
        self.size == meta.size()
            && self.mtime_ns == mtime_ns(meta)
            && self.ctime_ns == ctime_ns(meta)
            && self.ino == meta.ino()
    }
}

/// The in-memory view of the table: loaded once, looked up by many threads, written back
/// by [`crate::LocalStore::flush`].
#[derive(Default)]
pub struct FileStates {
    known: RwLock<HashMap<PathBuf, FileState>>,
    pending: Mutex<Vec<(PathBuf, FileState)>>,
}

/// A file's digest together with the facts a key needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashedFile {
    pub digest: Digest,
    pub size: u64,
    pub executable: bool,
}

impl FileStates {
    pub(crate) fn insert_loaded(&self, states: Vec<(PathBuf, FileState)>) {
        let mut known = self.known.write().unwrap();
        known.reserve(states.len());
        known.extend(states);
    }

    /// The digest of the file at `path` (absolute), rehashing only if its state changed.
    pub fn hash(&self, path: &Path) -> Result<HashedFile> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        self.hash_with(path, &meta)
    }

    /// [`FileStates::hash`] of a file whose metadata (links followed) the caller has.
    pub fn hash_with(&self, path: &Path, meta: &std::fs::Metadata) -> Result<HashedFile> {
        let executable = meta.mode() & 0o111 != 0;
        if let Some(state) = self.known.read().unwrap().get(path) {
            if state.matches(meta) {
                return Ok(HashedFile {
                    digest: state.digest,
                    size: state.size,
                    executable,
                });
            }
        }
        let digest = Digest::of_file(path)?;
        self.remember(path, meta, digest);
        Ok(HashedFile {
            digest,
            size: meta.size(),
            executable,
        })
    }

    /// Records a digest the caller knows for a file (one it just wrote, say).
    pub fn remember(&self, path: &Path, meta: &std::fs::Metadata, digest: Digest) {
        let state = FileState {
            size: meta.size(),
            mtime_ns: mtime_ns(meta),
            ctime_ns: ctime_ns(meta),
            ino: meta.ino(),
            digest,
        };
        let racy = now_ns() - state.mtime_ns.max(state.ctime_ns) < RACY_WINDOW_NS;
        let mut known = self.known.write().unwrap();
        if known.get(path) == Some(&state) {
            return;
        }
        known.insert(path.to_path_buf(), state);
        drop(known);
        if !racy {
            self.pending
                .lock()
                .unwrap()
                .push((path.to_path_buf(), state));
        }
    }

    /// The digest recorded for `path` if the file is still as recorded, without hashing.
    pub fn lookup(&self, path: &Path, meta: &std::fs::Metadata) -> Option<Digest> {
        let known = self.known.read().unwrap();
        known
            .get(path)
            .filter(|s| s.matches(meta))
            .map(|s| s.digest)
    }

    pub(crate) fn take_pending(&self) -> Vec<(PathBuf, FileState)> {
        std::mem::take(&mut *self.pending.lock().unwrap())
    }
}

pub(crate) fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

pub(crate) fn ctime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
