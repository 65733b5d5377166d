//! kiln-cache: the content-addressed store under every kiln build.
//!
//! # Overview
//!
//! The cache knows bytes, not what actions mean. It holds two kinds of entries:
//!
//! * **blobs** in the content-addressed store (CAS), named by their BLAKE3 [`Digest`];
//! * **action results** ([`ActionResult`]) in the action cache, named by an action key
//!   (also a [`Digest`], computed by the engine).
//!
//! All access goes through the [`Store`] trait. [`LocalStore`] keeps blobs as read-only
//! files under `cas/<2 hex>/<64 hex>` (written to a temporary file and renamed, so a crash
//! never leaves a half blob under a real name) and an SQLite database (WAL) with the action
//! cache, sizes and last-use times, the file-state table ([`FileStates`]) that lets a build
//! skip rehashing unchanged files, and the last key record of each action for
//! `kiln explain`.
//!
//! A result is written only after every blob it names is in the store, so a reader that
//! finds a result can always materialize its outputs.
//!
//! ```text
//!  engine ──Store::get_action(key)──▶ LocalStore ──▶ index.db (actions)
//!         ──Store::fetch(digest)────▶            ──▶ cas/ab/ab12…
//! ```

mod digest;
mod error;
mod filestate;
pub mod gc;
pub mod gocacheprog;
pub mod held;
mod local;
mod remote;
mod result;
pub mod server;
mod store;
mod tiered;
pub mod time;

pub use digest::Digest;
pub use error::{disk_full, Error, ErrorKind, Result};
pub use filestate::{FileState, FileStates, HashedFile};
pub use local::index::Rebuild;
pub use local::{CacheStats, KeyEntry, KeyOutcome, LocalStore};
pub use remote::{redact as redact_url, HttpOptions, HttpStore};
pub use result::{ActionResult, OutputFile};
pub use store::{Check, Store};
pub use tiered::{ReadOnly, TieredStore};

/// The default cache directory: `$KILN_CACHE`, else `$XDG_CACHE_HOME/kiln`, else
/// `$HOME/.cache/kiln`, made absolute.
pub fn default_cache_dir() -> std::path::PathBuf {
    let dir = configured_cache_dir();
    if dir.is_absolute() {
        return dir;
    }
    // Sandboxes and helpers run elsewhere: a relative setting is made absolute once.
    std::env::current_dir()
        .map(|cwd| cwd.join(&dir))
        .unwrap_or(dir)
}

fn configured_cache_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(dir) = std::env::var_os("KILN_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("kiln");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("kiln")
}
