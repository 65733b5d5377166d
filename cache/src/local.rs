//! The local store: blob files plus an SQLite index.
//!
//! ```text
//! $KILN_CACHE/
//!   cas/ab/ab12…ef     blobs, read-only, named by BLAKE3 digest
//!   tmp/               temporary files and sandboxes (same file system, so renames work)
//!   index.db           SQLite (WAL): actions, blobs, file_states, action_keys, key_records,
//!                      blob_sha256
//! ```
//!
//! `blob_sha256` keeps the SHA-256 of blobs kiln hashed or checked for a Remote Execution
//! API engine (whose digests are SHA-256), keyed by BLAKE3 digest, so that no blob is
//! hashed a second time for the engine, in this build or a later one
//! ([`LocalStore::sha256_of`], [`LocalStore::note_sha256`]). Rows are only ever written
//! from bytes kiln hashed itself.
//!
//! Several kiln processes may share one store: blobs appear atomically by rename, and
//! SQLite serializes writers (with a busy timeout). Index writes that only record use
//! or can be rebuilt (last-use times, file states, explain records, the `blobs` rows of
//! new blob files, results downloaded from a remote) are batched and written by
//! [`LocalStore::flush`] in one transaction, or when the store is dropped. Losing them
//! to a crash costs nothing but time: `kiln cache gc` gives a blob file without a row
//! one, dated by the file's mtime and ctime, and a lost remote result is downloaded
//! again. A result is still never written before its blobs are in place, and an executed
//! action's result is written at once.
//!
//! A damaged index is moved aside and started anew when the store is opened; damage a
//! running command finds is one error naming the index (see [`index`]).

pub(crate) mod index;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tempfile::NamedTempFile;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::filestate::{now_ns, FileState, FileStates};
use crate::result::ActionResult;
use crate::store::Store;

/// How stale an action's last-use time may get before a lookup refreshes it.
const TOUCH_INTERVAL_SECS: i64 = 24 * 60 * 60;

/// What the store remembers of an action's key, for `kiln explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key in the last build.
    pub key: Digest,
    /// The key before it last changed, if it ever did.
    pub prev: Option<Digest>,
    /// How the action ended in the last build.
    pub outcome: KeyOutcome,
}

/// How an action ended in the build that recorded its key (stored as a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Its result came from the cache.
    Cached = 0,
    Executed = 1,
    /// It ran and failed (failures are not cached: the next build runs it again).
    Failed = 2,
    /// It ran again under the key with which it had failed.
    RetriedAfterFailure = 3,
    /// It ran and passed, but its result was not kept: what it read is unknown (a Go
    /// test binary that exits before `m.Run` writes no test log), so nothing can say
    /// when the result holds. Every build runs it.
    NotKept = 4,
}

impl KeyOutcome {
    fn from_i64(n: i64) -> KeyOutcome {
        match n {
            0 => KeyOutcome::Cached,
            2 => KeyOutcome::Failed,
            3 => KeyOutcome::RetriedAfterFailure,
            4 => KeyOutcome::NotKept,
            _ => KeyOutcome::Executed,
        }
    }

    /// Whether the action ran (rather than came from the cache).
    pub fn ran(self) -> bool {
        self != KeyOutcome::Cached
    }
}

/// Counts shown by `kiln cache stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CacheStats {
    pub dir: PathBuf,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub actions: u64,
    pub file_states: u64,
    /// The whole outputs of failed actions, kept in `logs/` when cut for showing (not
    /// entries: `kiln cache gc` removes them by age), and their bytes.
    pub logs: u64,
    pub log_bytes: u64,
}

/// Blobs as files, everything else in SQLite. See the module comment.
pub struct LocalStore {
    root: PathBuf,
    db: Mutex<Connection>,
    /// The inode of the index file opened, to mark it if a query finds it damaged.
    index_ino: Option<u64>,
    files: FileStates,
    /// A load of file states in the background, and whether none is under way.
    files_loading: Mutex<Option<std::thread::JoinHandle<Result<FileStateRows>>>>,
    files_ready: AtomicBool,
    touched_actions: Mutex<HashSet<Digest>>,
    pending_keys: Mutex<Vec<(String, KeyEntry, String)>>,
    /// `blobs` rows of blob files written by this process: (digest, size, time).
    pending_blobs: Mutex<Vec<(Digest, u64, i64)>>,
    /// Results whose index row waits for the flush (see [`LocalStore::put_action_deferred`]).
    pending_actions: Mutex<HashMap<Digest, ActionResult>>,
    /// SHA-256 digests learned in this process, by BLAKE3 digest: (sha256, size, whether
    /// its row is still to be written).
    sha256: Mutex<Sha256Table>,
}

/// Recorded file states, by absolute path.
type FileStateRows = Vec<(PathBuf, FileState)>;

/// SHA-256 digest and size by BLAKE3 digest, and whether the row is yet to be written.
type Sha256Table = HashMap<Digest, ([u8; 32], u64, bool)>;

impl LocalStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<LocalStore> {
        for sub in ["cas", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        }
        let conn = index::open(root)?;
        let store = LocalStore {
            root: root.to_path_buf(),
            db: Mutex::new(conn),
            index_ino: index::inode(&index::path(root)),
            files: FileStates::default(),
            files_loading: Mutex::new(None),
            files_ready: AtomicBool::new(true),
            touched_actions: Mutex::new(HashSet::new()),
            pending_keys: Mutex::new(Vec::new()),
            pending_blobs: Mutex::new(Vec::new()),
            pending_actions: Mutex::new(HashMap::new()),
            sha256: Mutex::new(HashMap::new()),
        };
        store.put_bytes(b"")?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A directory for temporary files on the store's file system.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where the blob with this digest lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join("cas").join(&hex[..2]).join(hex)
    }

    /// The file-state table. Call [`LocalStore::load_file_states`] (or
    /// [`LocalStore::load_file_states_in_background`]) first for the directories a build
    /// will look at; this waits for a load in the background to end.
    pub fn file_states(&self) -> &FileStates {
        if !self.files_ready.load(Ordering::Acquire) {
            // Joined under the lock: every thread that asks meanwhile waits for the load.
            let mut loading = self.files_loading.lock().unwrap();
            if let Some(Ok(rows)) = loading.take().map(|load| load.join()) {
                if let Ok(rows) = self.checked(rows) {
                    self.files.insert_loaded(rows);
                }
            }
            self.files_ready.store(true, Ordering::Release);
        }
        &self.files
    }

    /// Loads the recorded states of every file below `dir` into memory.
    pub fn load_file_states(&self, dir: &Path) -> Result<()> {
        self.query(|db| self.load_file_states_from(db, dir))
    }

    /// [`LocalStore::load_file_states`] on a thread of its own, with a read-only
    /// connection of its own, while the caller goes on (loading and analysing the
    /// workspace); [`LocalStore::file_states`] waits for it and takes its rows. If the
    /// load fails, files are hashed again (a damaged index is marked as by any query).
    pub fn load_file_states_in_background(&self, dir: &Path) {
        self.file_states(); // one load at a time
        let index = index::path(&self.root);
        let dir = dir.to_path_buf();
        let mut loading = self.files_loading.lock().unwrap();
        self.files_ready.store(false, Ordering::Release);
        *loading = Some(std::thread::spawn(move || {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let db = Connection::open_with_flags(&index, flags)?;
            read_file_states(&db, &dir)
        }));
    }

    fn load_file_states_from(&self, db: &mut Connection, dir: &Path) -> Result<()> {
        self.files.insert_loaded(read_file_states(db, dir)?);
        Ok(())
    }

    /// Moves a finished file into the store (renaming when possible) and returns its
    /// digest. The file is gone from `path` afterwards.
    pub fn put_file_move(&self, path: &Path) -> Result<Digest> {
        let digest = Digest::of_file(path)?;
        self.put_file_move_verified(path, digest)?;
        Ok(digest)
    }

    /// Like [`LocalStore::put_file_move`] for a file whose digest the caller has just
    /// checked while writing it (a verified download), so it is not hashed twice.
    pub fn put_file_move_verified(&self, path: &Path, digest: Digest) -> Result<Digest> {
        let dest = self.blob_path(&digest);
        let size = fs::metadata(path)
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        if self.blob_intact(&digest, Some(size)) {
            let _ = fs::remove_file(path);
            return Ok(digest);
        }
        make_read_only(path)?;
        if rename_into(path, &dest).is_err() {
            create_parent(&dest)?;
            self.copy_in(path, &dest)?;
        }
        self.note_blob(&digest, size);
        Ok(digest)
    }

    /// A new temporary file in the store, already read-only (and executable if asked),
    /// for a blob the caller writes and then moves in with [`LocalStore::adopt_blob`].
    pub fn blob_writer(&self, executable: bool) -> Result<NamedTempFile> {
        let tmp_dir = self.tmp_dir();
        let tmp = NamedTempFile::new_in(&tmp_dir)
            .map_err(|e| Error::io("create a temporary file in", &tmp_dir, e))?;
        let mode = if executable { 0o555 } else { 0o444 };
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", tmp.path(), e))?;
        Ok(tmp)
    }

    /// Moves in a blob written through [`LocalStore::blob_writer`] whose content the
    /// caller has checked to have this digest (a verified download).
    pub fn adopt_blob(&self, tmp: NamedTempFile, digest: &Digest) -> Result<()> {
        tmp.as_file()
            .set_modified(sealed_time())
            .map_err(|e| Error::io("set the time of", tmp.path(), e))?;
        let size = tmp
            .as_file()
            .metadata()
            .map_err(|e| Error::io("stat", tmp.path(), e))?
            .len();
        let dest = self.blob_path(digest);
        if let Err(e) = tmp.persist(&dest) {
            // Only the first blob of each `cas/xx/` directory pays for a mkdir.
            if e.error.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::io("rename into", &dest, e.error));
            }
            create_parent(&dest)?;
            e.file
                .persist(&dest)
                .map_err(|e| Error::io("rename into", &dest, e.error))?;
        }
        self.note_blob(digest, size);
        Ok(())
    }

    fn copy_in(&self, src: &Path, dest: &Path) -> Result<()> {
        let tmp = tempfile::NamedTempFile::new_in(self.tmp_dir())
            .map_err(|e| Error::io("create a temporary file in", &self.tmp_dir(), e))?;
        fs::copy(src, tmp.path()).map_err(|e| Error::io("copy", src, e))?;
        make_read_only(tmp.path())?;
        tmp.persist(dest)
            .map_err(|e| Error::io("rename into", dest, e.error))?;
        Ok(())
    }

    /// Records a new blob file's `blobs` row, written at the flush.
    fn note_blob(&self, digest: &Digest, size: u64) {
        self.pending_blobs
            .lock()
            .unwrap()
            .push((*digest, size, now_secs()));
    }

    /// Stores a result whose blobs are all in the store, like [`Store::put_action`], but
    /// writes its index row at the flush: for results downloaded from a remote, which a
    /// crash would only cost a download again. Lookups in this process find it at once.
    pub fn put_action_deferred(&self, key: &Digest, result: &ActionResult) {
        self.pending_actions
            .lock()
            .unwrap()
            .insert(*key, result.clone());
    }

    /// The SHA-256 digest and size recorded for the blob with this BLAKE3 digest, if
    /// kiln ever hashed its bytes both ways (see the module comment).
    pub fn sha256_of(&self, digest: &Digest) -> Result<Option<([u8; 32], u64)>> {
        if let Some((sha, size, _)) = self.sha256.lock().unwrap().get(digest) {
            return Ok(Some((*sha, *size)));
        }
        let row: Option<(Vec<u8>, i64)> = self.query(|db| {
            let mut stmt =
                db.prepare_cached("SELECT sha256, size FROM blob_sha256 WHERE digest = ?1")?;
            Ok(stmt
                .query_row(params![digest.to_hex()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })?;
        let Some((bytes, size)) = row else {
            return Ok(None);
        };
        let Ok(sha) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            return Ok(None);
        };
        self.sha256
            .lock()
            .unwrap()
            .insert(*digest, (sha, size as u64, false));
        Ok(Some((sha, size as u64)))
    }

    /// Records the SHA-256 digest of bytes whose BLAKE3 digest is `digest`, computed by
    /// the caller from the bytes themselves (never a remote's claim). Written at the
    /// flush.
    pub fn note_sha256(&self, digest: &Digest, sha256: [u8; 32], size: u64) {
        let mut known = self.sha256.lock().unwrap();
        if known
            .get(digest)
            .is_none_or(|(s, n, _)| (*s, *n) != (sha256, size))
        {
            known.insert(*digest, (sha256, size, true));
        }
    }

    /// Records the key an action had in this build and how it ended, for
    /// `kiln explain`. Written at flush; the key it replaces becomes `prev`.
    pub fn record_key(&self, id: &str, key: &Digest, record: String, outcome: KeyOutcome) {
        let entry = KeyEntry {
            key: *key,
            prev: None,
            outcome,
        };
        self.pending_keys
            .lock()
            .unwrap()
            .push((id.to_string(), entry, record));
    }

    /// The last recorded key of every action whose id starts with `prefix`.
    pub fn last_keys(&self, prefix: &str) -> Result<HashMap<String, KeyEntry>> {
        self.query(|db| last_keys(db, prefix))
    }

    /// The key record stored for a key, if any.
    pub fn key_record(&self, key: &Digest) -> Result<Option<String>> {
        self.query(|db| {
            let record = db
                .prepare_cached("SELECT record FROM key_records WHERE key = ?1")?
                .query_row(params![key.to_hex()], |r| r.get(0))
                .optional()?;
            Ok(record)
        })
    }

    pub fn stats(&self) -> Result<CacheStats> {
        let logs: Vec<u64> = fs::read_dir(self.root.join("logs"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok().filter(|m| m.is_file()))
                    .map(|m| m.len())
                    .collect()
            })
            .unwrap_or_default();
        self.query(|db| {
            let count = |sql: &str| -> Result<u64> {
                Ok(db.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
            };
            Ok(CacheStats {
                dir: self.root.clone(),
                blobs: count("SELECT COUNT(*) FROM blobs")?,
                blob_bytes: count("SELECT COALESCE(SUM(size), 0) FROM blobs")?,
                actions: count("SELECT COUNT(*) FROM actions")?,
                file_states: count("SELECT COUNT(*) FROM file_states")?,
                logs: logs.len() as u64,
                log_bytes: logs.iter().sum(),
            })
        })
    }

    /// When this index was made to replace a damaged one, if it was.
    pub fn last_rebuild(&self) -> Result<Option<index::Rebuild>> {
        self.query(|db| index::last_rebuild(db))
    }

    /// Runs `f` on the index. Damage it finds becomes an error naming the index and
    /// saying what to do, and marks the index for the next open to move aside.
    fn query<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let result = f(&mut self.db.lock().unwrap());
        self.checked(result)
    }

    /// `result`, with an error saying the index is damaged made clear (see
    /// [`LocalStore::query`]). For queries on connections of the store's own.
    pub(crate) fn checked<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|e| {
            if e.kind() == ErrorKind::DamagedIndex {
                if let Some(ino) = self.index_ino {
                    index::mark(&self.root, ino);
                }
            }
            e.at_index(&index::path(&self.root))
        })
    }
}

/// The recorded states of every file below `dir`.
fn read_file_states(db: &Connection, dir: &Path) -> Result<FileStateRows> {
    let lo = format!("{}/", dir.display());
    let hi = format!("{}0", dir.display()); // '0' is the character after '/'
    let mut stmt = db.prepare_cached(
        "SELECT path, size, mtime_ns, ctime_ns, ino, digest FROM file_states
         WHERE path >= ?1 AND path < ?2",
    )?;
    let rows = stmt.query_map(params![lo, hi], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, i64>(3)?,
            row.get::<_, i64>(4)?,
            row.get_ref(5)?.as_str().ok().and_then(|d| d.parse().ok()),
        ))
    })?;
    let mut loaded = Vec::new();
    for row in rows {
        let (path, size, mtime_ns, ctime_ns, ino, digest) = row?;
        let Some(digest) = digest else { continue };
        let state = FileState {
            size: size as u64,
            mtime_ns,
            ctime_ns,
            ino: ino as u64,
            digest,
        };
        loaded.push((PathBuf::from(path), state));
    }
    Ok(loaded)
}

/// The last recorded key of every action whose id starts with `prefix`.
fn last_keys(db: &Connection, prefix: &str) -> Result<HashMap<String, KeyEntry>> {
    let mut stmt = db.prepare_cached(
        "SELECT id, key, prev_key, executed FROM action_keys WHERE substr(id, 1, ?2) = ?1",
    )?;
    let rows = stmt.query_map(params![prefix, prefix.chars().count() as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let (id, key, prev, outcome) = row?;
        if let Ok(key) = key.parse() {
            let prev = prev.and_then(|p| p.parse().ok());
            out.insert(
                id,
                KeyEntry {
                    key,
                    prev,
                    outcome: KeyOutcome::from_i64(outcome),
                },
            );
        }
    }
    Ok(out)
}

impl Store for LocalStore {
    fn contains(&self, digest: &Digest) -> Result<bool> {
        Ok(self.blob_path(digest).exists())
    }

    fn read(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let path = self.blob_path(digest);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    fn fetch(&self, digest: &Digest, dest: &Path) -> Result<bool> {
        let blob = self.blob_path(digest);
        if !blob.exists() {
            return Ok(false);
        }
        let _ = fs::remove_file(dest);
        if fs::hard_link(&blob, dest).is_err() {
            // A copy (the store is on another file system) goes to a new file of a fresh
            // name: a fixed name could already be a link, planted in a checked-in
            // kiln-out/, that the copy would follow to a file of the host.
            let dir = dest.parent().unwrap_or(Path::new("."));
            let tmp = tempfile::Builder::new()
                .prefix(".kiln-fetch")
                .tempfile_in(dir)
                .map_err(|e| Error::io("create a temporary file in", dir, e))?;
            fs::copy(&blob, tmp.path()).map_err(|e| Error::io("copy", &blob, e))?;
            tmp.persist(dest)
                .map_err(|e| Error::io("rename into", dest, e.error))?;
        }
        Ok(true)
    }

    fn fetch_into(&self, digest: &Digest, out: &mut fs::File) -> Result<bool> {
        let path = self.blob_path(digest);
        let mut blob = match fs::File::open(&path) {
            Ok(blob) => blob,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        std::io::copy(&mut blob, out).map_err(|e| Error::io("copy", &path, e))?;
        Ok(true)
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        let dest = self.blob_path(&digest);
        if self.blob_intact(&digest, Some(bytes.len() as u64)) {
            return Ok(digest);
        }
        create_parent(&dest)?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.tmp_dir())
            .map_err(|e| Error::io("create a temporary file in", &self.tmp_dir(), e))?;
        tmp.write_all(bytes)
            .map_err(|e| Error::io("write", tmp.path(), e))?;
        make_read_only(tmp.path())?;
        tmp.persist(&dest)
            .map_err(|e| Error::io("rename into", &dest, e.error))?;
        self.note_blob(&digest, bytes.len() as u64);
        Ok(digest)
    }

    fn put_file(&self, path: &Path) -> Result<Digest> {
        let digest = Digest::of_file(path)?;
        let dest = self.blob_path(&digest);
        let size = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        if !self.blob_intact(&digest, Some(size.len())) {
            create_parent(&dest)?;
            self.copy_in(path, &dest)?;
            let size = fs::metadata(&dest)
                .map_err(|e| Error::io("stat", &dest, e))?
                .len();
            self.note_blob(&digest, size);
        }
        Ok(digest)
    }

    fn get_action(&self, key: &Digest) -> Result<Option<ActionResult>> {
        let pending = self.pending_actions.lock().unwrap().get(key).cloned();
        if let Some(result) = pending {
            return Ok(self.has_blobs(&result).then_some(result));
        }
        let row: Option<(String, i64)> = self.query(|db| {
            let mut stmt =
                db.prepare_cached("SELECT result, last_use FROM actions WHERE key = ?1")?;
            Ok(stmt
                .query_row(params![key.to_hex()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })?;
        let Some((text, last_use)) = row else {
            return Ok(None);
        };
        let result: ActionResult = serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::Corrupt,
                format!("decode action result {key}: {e}"),
            )
        })?;
        // A result whose blobs are gone (deleted by hand, say) is a miss, not an error.
        if !self.has_blobs(&result) {
            return Ok(None);
        }
        // Last-use times only steer eviction: refresh them at most once a day, so a no-op
        // build writes nothing.
        if now_secs() - last_use > TOUCH_INTERVAL_SECS {
            self.touched_actions.lock().unwrap().insert(*key);
        }
        Ok(Some(result))
    }

    fn put_action(&self, key: &Digest, result: &ActionResult) -> Result<()> {
        self.pending_actions.lock().unwrap().remove(key);
        let text = serde_json::to_string(result).expect("action results serialize");
        self.query(|db| {
            // IMMEDIATE: the write lock is taken at BEGIN, under the busy timeout; a
            // write that starts as a read can find its snapshot stale when another
            // process wrote meanwhile, and fails at once ("database is locked").
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO actions (key, result, last_use) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET result = excluded.result, last_use = excluded.last_use",
            )?
            .execute(params![key.to_hex(), text, now_secs()])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn flush(&self) -> Result<()> {
        let pending = Pending {
            states: self.file_states().take_pending(),
            blobs: std::mem::take(&mut *self.pending_blobs.lock().unwrap()),
            actions: std::mem::take(&mut *self.pending_actions.lock().unwrap()),
            touched: self.touched_actions.lock().unwrap().drain().collect(),
            keys: std::mem::take(&mut *self.pending_keys.lock().unwrap()),
            sha256: take_new_sha256(&self.sha256),
        };
        self.write_pending(pending)
    }
}

impl Drop for LocalStore {
    /// Writes what a later build can use: blob rows and downloaded results (not explain
    /// records or use times, which only a build that reached its flush records).
    fn drop(&mut self) {
        let pending = Pending {
            blobs: std::mem::take(self.pending_blobs.get_mut().unwrap()),
            actions: std::mem::take(self.pending_actions.get_mut().unwrap()),
            sha256: take_new_sha256(&self.sha256),
            ..Pending::default()
        };
        let _ = self.write_pending(pending);
    }
}

/// Index writes batched until the flush.
#[derive(Default)]
struct Pending {
    states: Vec<(PathBuf, FileState)>,
    blobs: Vec<(Digest, u64, i64)>,
    actions: HashMap<Digest, ActionResult>,
    touched: Vec<Digest>,
    keys: Vec<(String, KeyEntry, String)>,
    sha256: Vec<(Digest, [u8; 32], u64)>,
}

/// The SHA-256 rows not yet written, marked written.
fn take_new_sha256(known: &Mutex<Sha256Table>) -> Vec<(Digest, [u8; 32], u64)> {
    let mut known = known.lock().unwrap();
    known
        .iter_mut()
        .filter(|(_, (_, _, new))| *new)
        .map(|(digest, (sha, size, new))| {
            *new = false;
            (*digest, *sha, *size)
        })
        .collect()
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.sha256.is_empty()
            && self.states.is_empty()
            && self.blobs.is_empty()
            && self.actions.is_empty()
            && self.touched.is_empty()
            && self.keys.is_empty()
    }
}

impl LocalStore {
    /// Whether every blob a result names is in the store. The empty blob (most stdout
    /// and stderr) is always there.
    /// Whether every blob of a result is here and intact: a result whose blob is gone
    /// or was changed is a miss.
    fn has_blobs(&self, result: &ActionResult) -> bool {
        let empty = Digest::of_bytes(b"");
        let sized = result.outputs.iter().map(|o| (o.digest, Some(o.size)));
        let captures = [result.stdout, result.stderr].map(|d| (d, None));
        sized
            .chain(captures)
            .filter(|(d, _)| *d != empty)
            .all(|(d, size)| self.blob_intact(&d, size))
    }

    /// Whether the blob file is there and still holds its digest's content. A stat
    /// answers for an untouched blob (its size, and the fixed [`BLOB_MTIME`]); one whose
    /// time moved is hashed again, and removed if it no longer matches.
    pub fn blob_intact(&self, digest: &Digest, size: Option<u64>) -> bool {
        let path = self.blob_path(digest);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return false;
        };
        // A size other than the result says makes the result wrong, not the blob.
        let sized = size.is_none_or(|s| s == meta.len());
        if !meta.is_file() {
            return false;
        }
        if meta.modified().ok() == Some(sealed_time()) {
            return sized;
        }
        match Digest::of_file(&path).ok() == Some(*digest) {
            true => set_sealed_time(&path).is_ok() && sized,
            false => {
                eprintln!(
                    "kiln: warning: blob {digest} in the cache was changed on disk (edited through kiln-out/?); removed, its results run again"
                );
                let _ = fs::remove_file(&path);
                false
            }
        }
    }

    /// Writes batched index rows in one transaction, blob rows before the results that
    /// name them.
    fn write_pending(&self, pending: Pending) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        self.query(|db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            write_states(&tx, &pending.states)?;
            write_blobs(&tx, &pending.blobs)?;
            write_actions(&tx, &pending.actions)?;
            write_touched(&tx, &pending.touched)?;
            write_keys(&tx, &pending.keys)?;
            write_sha256(&tx, &pending.sha256)?;
            tx.commit()?;
            Ok(())
        })
    }
}

fn write_states(tx: &Transaction<'_>, states: &[(PathBuf, FileState)]) -> Result<()> {
    let mut put_state = tx.prepare_cached(
        "INSERT OR REPLACE INTO file_states (path, size, mtime_ns, ctime_ns, ino, digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (path, s) in states {
        put_state.execute(params![
            path.to_string_lossy(),
            s.size as i64,
            s.mtime_ns,
            s.ctime_ns,
            s.ino as i64,
            s.digest.to_hex()
        ])?;
    }
    Ok(())
}

fn write_blobs(tx: &Transaction<'_>, blobs: &[(Digest, u64, i64)]) -> Result<()> {
    let mut put_blob = tx.prepare_cached(
        "INSERT INTO blobs (digest, size, last_use) VALUES (?1, ?2, ?3)
         ON CONFLICT(digest) DO UPDATE SET last_use = excluded.last_use",
    )?;
    for (digest, size, at) in blobs {
        put_blob.execute(params![digest.to_hex(), *size as i64, at])?;
    }
    Ok(())
}

fn write_actions(tx: &Transaction<'_>, actions: &HashMap<Digest, ActionResult>) -> Result<()> {
    let mut put_action = tx.prepare_cached(
        "INSERT INTO actions (key, result, last_use) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET result = excluded.result, last_use = excluded.last_use",
    )?;
    let now = now_secs();
    for (key, result) in actions {
        let text = serde_json::to_string(result).expect("action results serialize");
        put_action.execute(params![key.to_hex(), text, now])?;
    }
    Ok(())
}

fn write_sha256(tx: &Transaction<'_>, rows: &[(Digest, [u8; 32], u64)]) -> Result<()> {
    let mut put = tx.prepare_cached(
        "INSERT OR REPLACE INTO blob_sha256 (digest, sha256, size) VALUES (?1, ?2, ?3)",
    )?;
    for (digest, sha, size) in rows {
        put.execute(params![digest.to_hex(), &sha[..], *size as i64])?;
    }
    Ok(())
}

fn write_touched(tx: &Transaction<'_>, touched: &[Digest]) -> Result<()> {
    let now = now_secs();
    let mut touch = tx.prepare_cached("UPDATE actions SET last_use = ?2 WHERE key = ?1")?;
    for key in touched {
        touch.execute(params![key.to_hex(), now])?;
    }
    Ok(())
}

fn write_keys(tx: &Transaction<'_>, keys: &[(String, KeyEntry, String)]) -> Result<()> {
    let mut put_key = tx.prepare_cached(
        "INSERT INTO action_keys (id, key, prev_key, executed) VALUES (?1, ?2, NULL, ?3)
         ON CONFLICT(id) DO UPDATE SET
           prev_key = CASE WHEN action_keys.key != excluded.key
                           THEN action_keys.key ELSE action_keys.prev_key END,
           key = excluded.key, executed = excluded.executed",
    )?;
    let mut put_record =
        tx.prepare_cached("INSERT OR IGNORE INTO key_records (key, record) VALUES (?1, ?2)")?;
    for (id, entry, record) in keys {
        put_key.execute(params![id, entry.key.to_hex(), entry.outcome as i64])?;
        put_record.execute(params![entry.key.to_hex(), record])?;
    }
    Ok(())
}

/// Renames a file to a blob's path, creating its `cas/xx/` directory when missing (so
/// only the first blob of each directory pays for a `mkdir`).
fn rename_into(path: &Path, dest: &Path) -> Result<()> {
    match fs::rename(path, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_parent(dest)?;
            fs::rename(path, dest).map_err(|e| Error::io("rename into", dest, e))
        }
        Err(e) => Err(Error::io("rename into", dest, e)),
    }
}

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().expect("blob paths have a parent");
    fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))
}

/// The modification time of every blob file: one second past the epoch (as in Nix's
/// store). Writing a blob in place (through a link in kiln-out/, say) moves it, so a
/// stat tells a blob that may have been changed ([`LocalStore::blob_intact`]).
pub const BLOB_MTIME: std::time::Duration = std::time::Duration::from_secs(1);

fn sealed_time() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + BLOB_MTIME
}

/// Makes a file about to become a blob read-only, with the blobs' fixed mtime.
fn make_read_only(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    let exec = meta.permissions().mode() & 0o111 != 0;
    let mode = if exec { 0o555 } else { 0o444 };
    set_sealed_time(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", path, e))
}

fn set_sealed_time(path: &Path) -> Result<()> {
    let file = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    file.set_modified(sealed_time())
        .map_err(|e| Error::io("set the time of", path, e))
}

fn now_secs() -> i64 {
    now_ns() / 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_damaged_blob_is_replaced_when_its_content_is_stored_again() {
        // A blob cut short on disk, its time kept: the result naming it misses (its size
        // is wrong), the action runs again, and storing its output kept the damaged blob,
        // which the actions after it then read.
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("store")).unwrap();
        let digest = store.put_bytes(b"the whole output\n").unwrap();
        let blob = store.blob_path(&digest);
        fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&blob, b"the whole").unwrap();
        set_sealed_time(&blob).unwrap();
        let out = dir.path().join("out");
        fs::write(&out, b"the whole output\n").unwrap();
        assert_eq!(store.put_file_move(&out).unwrap(), digest);
        assert_eq!(fs::read(&blob).unwrap(), b"the whole output\n");
        for damage in [&b"cut"[..], &b"the whole"[..]] {
            fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
            fs::write(&blob, damage).unwrap();
            set_sealed_time(&blob).unwrap();
            let copy = dir.path().join("copy");
            fs::write(&copy, b"the whole output\n").unwrap();
            match damage.len() {
                3 => assert_eq!(store.put_bytes(b"the whole output\n").unwrap(), digest),
                _ => assert_eq!(store.put_file(&copy).unwrap(), digest),
            }
            assert_eq!(fs::read(&blob).unwrap(), b"the whole output\n");
        }
    }

    #[test]
    fn blobs_and_results_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let d = store.put_bytes(b"hello").unwrap();
        assert!(store.contains(&d).unwrap());
        assert_eq!(store.read(&d).unwrap().unwrap(), b"hello");
        let result = ActionResult {
            outputs: vec![crate::OutputFile {
                path: "out.txt".into(),
                digest: d,
                size: 5,
                executable: false,
            }],
            exit_code: 0,
            stdout: store.put_bytes(b"").unwrap(),
            stderr: store.put_bytes(b"").unwrap(),
            duration_ms: 1,
        };
        let key = Digest::of_bytes(b"key");
        assert!(store.get_action(&key).unwrap().is_none());
        store.put_action(&key, &result).unwrap();
        assert_eq!(store.get_action(&key).unwrap().unwrap(), result);
        // A result whose blob vanished is a miss.
        fs::remove_file(store.blob_path(&d)).unwrap();
        assert!(store.get_action(&key).unwrap().is_none());
    }

    /// States recorded by an earlier build are found after a load in the background,
    /// by any thread that asks first, and only for files below the directory loaded.
    #[test]
    fn file_states_loaded_in_the_background_are_found() {
        use crate::filestate::{ctime_ns, mtime_ns};
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        fs::create_dir_all(&ws).unwrap();
        let (inside, outside) = (ws.join("a.txt"), dir.path().join("b.txt"));
        let digest = Digest::of_bytes(b"a\n");
        {
            let store = LocalStore::open(&dir.path().join("cache")).unwrap();
            for path in [&inside, &outside] {
                fs::write(path, "a\n").unwrap();
                let meta = fs::metadata(path).unwrap();
                store
                    .query(|db| {
                        db.execute(
                            "INSERT INTO file_states (path, size, mtime_ns, ctime_ns, ino, digest)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![
                                path.to_str().unwrap(),
                                meta.size() as i64,
                                mtime_ns(&meta),
                                ctime_ns(&meta),
                                meta.ino() as i64,
                                digest.to_hex()
                            ],
                        )?;
                        Ok(())
                    })
                    .unwrap();
            }
        }
        let store = LocalStore::open(&dir.path().join("cache")).unwrap();
        store.load_file_states_in_background(&ws);
        let found = |path: &Path| {
            let meta = fs::metadata(path).unwrap();
            store.file_states().lookup(path, &meta)
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| found(&inside));
            let b = s.spawn(|| found(&inside));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!((a, b), (Some(digest), Some(digest)));
        assert_eq!(
            found(&outside),
            None,
            "only the directory asked for is loaded"
        );
    }

    /// A blob's SHA-256 noted in one process is found by the next, from the index,
    /// without the blob being hashed again; a gc that removes the blob drops its row.
    #[test]
    fn sha256_digests_outlive_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::of_bytes(b"payload");
        let sha = [7u8; 32];
        {
            let store = LocalStore::open(dir.path()).unwrap();
            assert_eq!(store.sha256_of(&digest).unwrap(), None);
            store.note_sha256(&digest, sha, 7);
            assert_eq!(store.sha256_of(&digest).unwrap(), Some((sha, 7)));
            store.flush().unwrap();
        }
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(store.sha256_of(&digest).unwrap(), Some((sha, 7)));
        // Noted again unchanged: nothing left to write.
        store.note_sha256(&digest, sha, 7);
        assert!(take_new_sha256(&store.sha256).is_empty());
    }

    fn one_output(store: &LocalStore, bytes: &[u8]) -> ActionResult {
        let mut tmp = store.blob_writer(true).unwrap();
        tmp.write_all(bytes).unwrap();
        let digest = Digest::of_bytes(bytes);
        store.adopt_blob(tmp, &digest).unwrap();
        let mode = fs::metadata(store.blob_path(&digest)).unwrap().mode();
        assert_eq!(mode & 0o777, 0o555, "adopted blobs are read-only");
        ActionResult {
            outputs: vec![crate::OutputFile {
                path: "out".into(),
                digest,
                size: bytes.len() as u64,
                executable: true,
            }],
            exit_code: 0,
            stdout: Digest::of_bytes(b""),
            stderr: Digest::of_bytes(b""),
            duration_ms: 1,
        }
    }

    #[test]
    fn deferred_results_are_found_at_once_and_written_by_flush_or_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let other = LocalStore::open(dir.path()).unwrap(); // another process, as it were
        let (k1, k2) = (Digest::of_bytes(b"k1"), Digest::of_bytes(b"k2"));
        let r1 = one_output(&store, b"first");
        store.put_action_deferred(&k1, &r1);
        assert_eq!(store.get_action(&k1).unwrap().as_ref(), Some(&r1));
        assert!(other.get_action(&k1).unwrap().is_none(), "not written yet");
        store.flush().unwrap();
        assert_eq!(other.get_action(&k1).unwrap(), Some(r1));

        let r2 = one_output(&store, b"second");
        store.put_action_deferred(&k2, &r2);
        drop(store);
        assert_eq!(other.get_action(&k2).unwrap(), Some(r2));
        assert_eq!(
            other.stats().unwrap().blobs,
            3,
            "the empty blob and two outputs"
        );
    }
}
