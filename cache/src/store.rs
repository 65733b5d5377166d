//! The one interface to every store: local, remote, tiered.

use std::fs::File;
use std::path::Path;

use crate::digest::Digest;
use crate::error::Result;
use crate::result::ActionResult;

/// What a caller requires of a result it looks up: Ok, or why not.
pub type Check<'a> = dyn Fn(&ActionResult) -> std::result::Result<(), String> + Sync + 'a;

/// Blobs by digest and action results by key.
///
/// Implementations must be safe to share between threads and between processes using
/// the same location: a blob is visible under its digest only once complete, and a
/// result is written only after the blobs it names.
pub trait Store: Send + Sync {
    /// Whether the store holds the blob.
    fn contains(&self, digest: &Digest) -> Result<bool>;

    /// The blob's bytes, for small blobs (stdout, metadata).
    fn read(&self, digest: &Digest) -> Result<Option<Vec<u8>>>;

    /// Writes the blob to a new file at `dest` (replacing one that is there). Returns
    /// false if the store does not hold it.
    fn fetch(&self, digest: &Digest, dest: &Path) -> Result<bool>;

    /// Writes the blob's bytes to `out`, an empty file the caller made (a temporary file:
    /// after an error or a false return it may hold part of the blob). Returns false if
    /// the store does not hold it.
    fn fetch_into(&self, digest: &Digest, out: &mut File) -> Result<bool>;

    /// Whether [`Store::fetch`] and [`Store::fetch_into`] check the content against the digest as it writes it
    /// (so a caller need not hash the file again).
    fn fetch_verifies(&self) -> bool {
        false
    }

    /// Stores bytes; returns their digest.
    fn put_bytes(&self, bytes: &[u8]) -> Result<Digest>;

    /// Stores a file's content; the file is left in place.
    fn put_file(&self, path: &Path) -> Result<Digest>;

    /// Stores the local store's blob file at `path`, whose digest the caller knows: a
    /// store that names blobs by another digest (a REAPI engine's SHA-256) can look that
    /// one up instead of hashing the file again. Returns the digest stored.
    fn put_blob(&self, digest: &Digest, path: &Path) -> Result<Digest> {
        let _ = digest;
        self.put_file(path)
    }

    /// Stores a file's content even where the store says it holds that digest already:
    /// for a blob whose copy in this store was found damaged. Stores that cannot hold a
    /// damaged copy need not override it.
    fn put_file_replacing(&self, path: &Path) -> Result<Digest> {
        self.put_file(path)
    }

    /// The result stored under an action key.
    fn get_action(&self, key: &Digest) -> Result<Option<ActionResult>>;

    /// The result stored under an action key, and whether it came from a remote store.
    fn lookup_action(&self, key: &Digest) -> Result<Option<(ActionResult, bool)>> {
        Ok(self.get_action(key)?.map(|r| (r, false)))
    }

    /// The result stored under an action key if it passes `check` (which knows what the
    /// action declared): a result that fails it is a miss. A remote's result that fails
    /// it is never stored locally, and the remote is named in a warning.
    fn lookup_checked(
        &self,
        key: &Digest,
        check: &Check<'_>,
    ) -> Result<Option<(ActionResult, bool)>> {
        Ok(self.lookup_action(key)?.filter(|(r, _)| check(r).is_ok()))
    }

    /// Stores a result. Callers put every blob it names first.
    fn put_action(&self, key: &Digest, result: &ActionResult) -> Result<()>;

    /// Waits for background work (uploads, deferred index writes) to finish.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
