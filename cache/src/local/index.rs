//! The local store's SQLite index, `index.db`: opening it, and what happens when it is
//! damaged (cut short, overwritten, a bad sector): SQLite reports `SQLITE_CORRUPT`
//! ("database disk image is malformed") or `SQLITE_NOTADB` ("file is not a database").
//! Nothing else counts as damage: a full disk, a lock or a permission is an error as before.
//!
//! - **Checked on opening, cheaply.** Opening reads the header and the schema on the first
//!   page, which is where SQLite notices a garbage head, and a file shorter than its
//!   header says (a truncation); then the first row of each table, which reads its root.
//!   That adds 0.05–0.08 ms to an open (about 0.25 ms before, on a 17 MB index with 20,000
//!   results and 50,000 file states). No `PRAGMA quick_check`: it reads the whole file,
//!   26–150 ms on that index, on every command that opens the store.
//! - **Moved aside, rebuilt empty.** A damaged index is renamed to
//!   `index.db.damaged-<unix time>` (its `-wal` and `-shm` follow it, under the names
//!   SQLite gives them, so `sqlite3` opens the copy as it was) and a new, empty index is
//!   created, with one warning line on stderr naming where the old one went. This happens
//!   under an exclusive lock on `index.db.lock`, the damage checked again once it is held,
//!   so that two kiln processes finding it move it aside once.
//! - **What is lost, and how it comes back.** Blob files stay. Action results are misses
//!   until their actions run again (or come from the remote) and store them again; file
//!   states are hashed again; `kiln explain` sees a first build. The `blobs` rows (sizes
//!   and use times, which only `kiln cache gc` and `stats` read) are re-registered lazily:
//!   a new blob gets its row when written, and `kiln cache gc` gives every blob file
//!   without a row one, dated by the file, as it does after a crash. Until a gc,
//!   `kiln cache stats` counts only the blobs written since. (A scan of `cas/` at the
//!   rebuild would make the command that found the damage wait for a walk of every blob.)
//! - **Remembered.** The new index records when it was made and where the damaged one
//!   went (the `meta` table), which `kiln cache verify` reports.
//! - **Damage found later**, by a query of a running command (a page opening did not
//!   read): the command fails with one error naming the index and saying to run it again,
//!   and leaves `index.db.rebuild` holding the damaged file's inode number, so the next
//!   open moves that file aside (a mark left for a file already replaced is ignored).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, ErrorKind, Result};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS actions (
  key TEXT PRIMARY KEY, result TEXT NOT NULL, last_use INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
  digest TEXT PRIMARY KEY, size INTEGER NOT NULL, last_use INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS file_states (
  path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
  ctime_ns INTEGER NOT NULL, ino INTEGER NOT NULL, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS action_keys (
  id TEXT PRIMARY KEY, key TEXT NOT NULL, prev_key TEXT, executed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS key_records (key TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blob_sha256 (
  digest TEXT PRIMARY KEY, sha256 BLOB NOT NULL, size INTEGER NOT NULL);
";

/// The tables whose first row opening reads.
const TABLES: [&str; 7] = [
    "actions",
    "blobs",
    "file_states",
    "action_keys",
    "key_records",
    "meta",
    "blob_sha256",
];

/// When the index was rebuilt, and where the damaged one went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuild {
    /// Unix time, seconds.
    pub at: i64,
    pub moved_to: PathBuf,
}

/// `DIR/index.db`, where the index of the store at `DIR` lives.
pub fn path(root: &Path) -> PathBuf {
    root.join("index.db")
}

/// Opens the index of the store at `root`, moving a damaged one aside first (see the
/// module comment).
pub fn open(root: &Path) -> Result<Connection> {
    let path = path(root);
    let why = match check(root) {
        Ok(conn) => return Ok(conn),
        Err(Damage::Not(e)) => return Err(e),
        Err(Damage::Found(why)) => why,
    };
    let _lock = Lock::take(&root.join("index.db.lock"))?;
    match check(root) {
        Ok(conn) => return Ok(conn), // another kiln moved it aside meanwhile
        Err(Damage::Not(e)) => return Err(e),
        Err(Damage::Found(_)) => {}
    }
    let moved_to = move_aside(&path)?;
    let _ = fs::remove_file(mark_path(root));
    let conn = connect(&path).map_err(|e| Error::from(e).at_index(&path))?;
    let at = crate::filestate::now_ns() / 1_000_000_000;
    record(
        &conn,
        &Rebuild {
            at,
            moved_to: moved_to.clone(),
        },
    )
    .map_err(|e| Error::from(e).at_index(&path))?;
    eprintln!(
        "kiln: warning: the cache index {} was damaged ({why}): moved it to {} and started \
         an empty one (cached results are forgotten, blobs are kept)",
        path.display(),
        moved_to.display()
    );
    Ok(conn)
}

/// Why opening failed.
enum Damage {
    /// The index is damaged: SQLite's words for it.
    Found(String),
    /// Something else failed.
    Not(Error),
}

/// Opens and checks the index as it is.
fn check(root: &Path) -> std::result::Result<Connection, Damage> {
    let path = path(root);
    let damage = |e: rusqlite::Error| {
        if is_damage(&e) {
            Damage::Found(e.to_string())
        } else {
            Damage::Not(Error::from(e))
        }
    };
    let conn = open_when_free(&path).map_err(damage)?;
    if marked(root, &path) {
        return Err(Damage::Found("a query found it malformed".into()));
    }
    Ok(conn)
}

/// Connects and reads the first rows. Another process closing its connection at that
/// moment (resetting the write-ahead log) can make SQLite answer "database is locked"
/// at once, without its busy timeout: that is tried again, for up to two seconds.
fn open_when_free(path: &Path) -> rusqlite::Result<Connection> {
    let mut tries = 0;
    loop {
        let opened = connect(path).and_then(|conn| {
            conn.query_row(&first_rows(), [], |_| Ok(()))?;
            Ok(conn)
        });
        match opened {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && tries < 200 =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// One statement reading the first row of every table (so its root page).
fn first_rows() -> String {
    let each: Vec<String> = TABLES
        .iter()
        .map(|t| format!("(SELECT 1 FROM {t} LIMIT 1)"))
        .collect();
    format!("SELECT {}", each.join(", "))
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(60))?;
    // Asked before set: setting the mode wants a lock that another process closing its
    // connection (and checkpointing) holds, and SQLite answers "database is locked" at
    // once there, without waiting. An index in WAL mode stays in it.
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Whether SQLite says the file is damaged.
pub fn is_damage(err: &rusqlite::Error) -> bool {
    use rusqlite::ffi::ErrorCode;
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Renames the index and its -wal and -shm to `index.db.damaged-<unix time>[-wal|-shm]`;
/// returns the new name of the index.
fn move_aside(path: &Path) -> Result<PathBuf> {
    let now = crate::filestate::now_ns() / 1_000_000_000;
    let mut aside = PathBuf::from(format!("{}.damaged-{now}", path.display()));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = PathBuf::from(format!("{}.damaged-{now}.{n}", path.display()));
    }
    fs::rename(path, &aside).map_err(|e| Error::io("move aside", path, e))?;
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("move aside", &from, e)),
        }
    }
    Ok(aside)
}

fn record(conn: &Connection, rebuild: &Rebuild) -> rusqlite::Result<()> {
    let mut put = conn.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
    put.execute(params!["rebuilt_at", rebuild.at.to_string()])?;
    put.execute(params![
        "damaged_moved_to",
        rebuild.moved_to.to_string_lossy()
    ])?;
    Ok(())
}

/// The last rebuild this index records, if it was made by one.
pub fn last_rebuild(conn: &Connection) -> Result<Option<Rebuild>> {
    let get = |key: &str| -> Result<Option<String>> {
        Ok(conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    };
    let (Some(at), Some(moved_to)) = (get("rebuilt_at")?, get("damaged_moved_to")?) else {
        return Ok(None);
    };
    Ok(at.parse().ok().map(|at| Rebuild {
        at,
        moved_to: PathBuf::from(moved_to),
    }))
}

fn mark_path(root: &Path) -> PathBuf {
    root.join("index.db.rebuild")
}

/// The inode of the index file, which a mark names.
pub fn inode(path: &Path) -> Option<u64> {
    fs::metadata(path).map(|m| m.ino()).ok()
}

/// Leaves word for the next open that the index file with this inode is damaged.
pub fn mark(root: &Path, ino: u64) {
    let _ = fs::write(mark_path(root), format!("{ino}\n"));
}

/// Whether a running command marked the index now at `path` as damaged.
fn marked(root: &Path, path: &Path) -> bool {
    let Ok(text) = fs::read_to_string(mark_path(root)) else {
        return false;
    };
    text.trim().parse().ok() == inode(path)
}

/// An exclusive lock on a file, released when dropped (the file closes).
struct Lock(#[allow(dead_code)] fs::File);

impl Lock {
    fn take(path: &Path) -> Result<Lock> {
        use std::os::fd::AsRawFd;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Lock(file));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io("lock", path, err));
            }
        }
    }
}

impl Error {
    /// This error, if it says the index is damaged, as one that names the index and says
    /// what to do (and the index marked for the next open); else unchanged.
    pub(crate) fn at_index(self, path: &Path) -> Error {
        if self.kind() != ErrorKind::DamagedIndex {
            return self;
        }
        Error::new(
            ErrorKind::DamagedIndex,
            format!(
                "use the cache index {}: it is damaged ({}); run the command again: kiln \
                 will move it aside and start an empty one",
                path.display(),
                self.message().trim_start_matches("use the cache index: ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalStore;
    use crate::store::Store;
    use crate::Digest;

    /// A store whose `actions` table spans many pages; returns the index's page size.
    fn filled(root: &Path) -> u64 {
        let store = LocalStore::open(root).unwrap();
        let out = store.put_bytes(b"out").unwrap();
        for i in 0..400u32 {
            let result = crate::ActionResult {
                outputs: vec![crate::OutputFile {
                    path: format!("some/longish/output/path/number/{i}.txt"),
                    digest: out,
                    size: 3,
                    executable: false,
                }],
                exit_code: 0,
                stdout: Digest::of_bytes(b""),
                stderr: Digest::of_bytes(b""),
                duration_ms: 1,
            };
            store
                .put_action(&Digest::of_bytes(&i.to_le_bytes()), &result)
                .unwrap();
        }
        let page = store.query(|db| Ok(db.query_row("PRAGMA page_size", [], |r| r.get(0))?));
        page.unwrap()
    }

    /// Overwrites a page in the middle of the index (a leaf of `actions`, which opening
    /// does not read), once every write is in the file itself.
    fn damage_a_middle_page(root: &Path, page: u64) {
        use std::os::unix::fs::FileExt;
        let conn = Connection::open(path(root)).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        drop(conn);
        let file = fs::OpenOptions::new().write(true).open(path(root)).unwrap();
        let pages = file.metadata().unwrap().len() / page;
        file.write_all_at(&vec![0xa5; page as usize], pages / 2 * page)
            .unwrap();
    }

    #[test]
    fn damage_a_query_finds_is_one_clear_error_and_the_next_open_moves_it_aside() {
        let dir = tempfile::tempdir().unwrap();
        let page = filled(dir.path());
        damage_a_middle_page(dir.path(), page);

        let store = LocalStore::open(dir.path()).expect("opening reads too little to notice");
        let err = crate::gc::verify(&store).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DamagedIndex, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&path(dir.path()).display().to_string()),
            "{text}"
        );
        assert!(text.contains("run the command again"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
        drop(store);

        let store = LocalStore::open(dir.path()).unwrap();
        let stats = store.stats().unwrap();
        assert_eq!(stats.actions, 0, "an empty index");
        let rebuild = store
            .last_rebuild()
            .unwrap()
            .expect("the rebuild is recorded");
        assert!(rebuild.moved_to.exists(), "{}", rebuild.moved_to.display());
        assert!(
            !mark_path(dir.path()).exists(),
            "the mark is gone with the file"
        );
        drop(store);
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(store.last_rebuild().unwrap(), Some(rebuild), "moved once");
    }

    #[test]
    fn a_mark_for_a_file_since_replaced_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let key = Digest::of_bytes(b"k");
        let empty = Digest::of_bytes(b"");
        let result = crate::ActionResult {
            outputs: vec![],
            exit_code: 0,
            stdout: empty,
            stderr: empty,
            duration_ms: 1,
        };
        store.put_action(&key, &result).unwrap();
        let ino = inode(&path(dir.path())).unwrap();
        drop(store);
        mark(dir.path(), ino + 1);
        let store = LocalStore::open(dir.path()).unwrap();
        assert!(store.get_action(&key).unwrap().is_some(), "kept");
        assert_eq!(store.last_rebuild().unwrap(), None);
    }

    #[test]
    fn garbage_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        drop(LocalStore::open(dir.path()).unwrap());
        fs::write(path(dir.path()), vec![0x5a; 8192]).unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let rebuild = store.last_rebuild().unwrap().unwrap();
        assert_eq!(fs::read(&rebuild.moved_to).unwrap(), vec![0x5a; 8192]);
        assert!(store.stats().is_ok());
    }
}
