//! The server's files and their least-recently-used order.
//!
//! ```text
//! DIR/cas/<64 hex>   blobs, named by BLAKE3 digest (verified on upload)
//! DIR/ac/<64 hex>    action results, as the client sent them
//! DIR/tmp/           uploads in progress; emptied at start
//! ```
//!
//! This is the layout nginx WebDAV writes for the same URLs, so a cache directory can
//! move between `kiln serve` and nginx. Uploads go to `tmp/` and are renamed in, so a
//! reader never sees a partial file. Files are not fsynced: after a power loss (or a bad
//! disk) a file may be damaged. A damaged blob is found when it is next served (the
//! server hashes what it sends, see [`super::http`]) and removed with
//! [`Disk::remove_damaged`], so the next client that runs the action uploads it again;
//! an upload of a blob that is already there replaces it, its content having just been
//! verified. A damaged result is detected by the client (it does not decode) and is a miss.
//!
//! The use order lives in memory (a map plus a tick-ordered tree) and is persisted as each
//! file's mtime, which a hit refreshes; at start the directory is scanned and ordered by
//! mtime. Past the size limit the least recently used entries are deleted, blobs and
//! results alike (a result whose blob is gone is a miss for the client, never an error).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The two namespaces of the protocol.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    Cas,
    Ac,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "cas" => Some(Kind::Cas),
            "ac" => Some(Kind::Ac),
            _ => None,
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Kind::Cas => "cas",
            Kind::Ac => "ac",
        }
    }
}

type Key = (Kind, Digest);

/// An entry opened for reading.
pub struct Entry {
    pub file: File,
    pub len: u64,
    /// Its inode, so that removing it as damaged cannot remove a good copy uploaded since.
    ino: u64,
}

/// How an upload ended.
pub enum Stored {
    Created,
    /// A blob with this digest was there already (it is replaced).
    Present,
    /// The content's digest is not the one in the URL.
    Mismatch(Digest),
    /// The client sent fewer bytes than it declared.
    Truncated,
}

/// Files on disk plus their use order. See the module comment.
pub struct Disk {
    root: PathBuf,
    max_size: Option<u64>,
    lru: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<Key, (u64, u64)>, // key → (size, tick)
    order: BTreeMap<u64, Key>,         // tick → key
    total: u64,
    tick: u64,
}

impl Disk {
    pub fn open(root: &Path, max_size: Option<u64>) -> Result<Disk> {
        for sub in ["cas", "ac", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        }
        clear_dir(&root.join("tmp"));
        let disk = Disk {
            root: root.to_path_buf(),
            max_size,
            lru: Mutex::new(Lru::default()),
        };
        disk.scan()?;
        disk.evict();
        Ok(disk)
    }

    /// Total bytes held.
    pub fn total(&self) -> u64 {
        self.lru.lock().unwrap().total
    }

    pub fn entries(&self) -> usize {
        self.lru.lock().unwrap().entries.len()
    }

    fn path(&self, (kind, digest): Key) -> PathBuf {
        self.root.join(kind.dir()).join(digest.to_hex())
    }

    /// Loads every file into the use order, oldest mtime first.
    fn scan(&self) -> Result<()> {
        let mut found = Vec::new();
        for kind in [Kind::Cas, Kind::Ac] {
            let dir = self.root.join(kind.dir());
            let entries = fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(digest) = name.to_str().and_then(|n| n.parse::<Digest>().ok()) else {
                    continue;
                };
                let Ok(meta) = entry.metadata() else { continue };
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((mtime, (kind, digest), meta.len()));
            }
        }
        found.sort_by_key(|(mtime, _, _)| *mtime);
        let mut lru = self.lru.lock().unwrap();
        for (_, key, size) in found {
            lru.insert(key, size);
        }
        Ok(())
    }

    /// Opens an entry for reading and records the use. None if absent.
    pub fn open_entry(&self, kind: Kind, digest: &Digest) -> Option<Entry> {
        let key = (kind, *digest);
        let file = File::open(self.path(key)).ok()?;
        let meta = file.metadata().ok()?;
        let _ = file.set_modified(SystemTime::now());
        self.lru.lock().unwrap().touch(key, meta.len());
        Some(Entry {
            file,
            len: meta.len(),
            ino: meta.ino(),
        })
    }

    /// Removes a blob found damaged while serving `entry`, unless the file under its name
    /// is no longer that one (a good copy was uploaded meanwhile).
    pub fn remove_damaged(&self, digest: &Digest, entry: &Entry) {
        let key = (Kind::Cas, *digest);
        let path = self.path(key);
        let mut lru = self.lru.lock().unwrap();
        if fs::metadata(&path).is_ok_and(|m| m.ino() == entry.ino) {
            let _ = fs::remove_file(&path);
            lru.remove(key);
        }
    }

    /// Stores `len` bytes read from `body` under the key, verifying blobs, then evicts
    /// past the size limit.
    pub fn put(
        &self,
        kind: Kind,
        digest: &Digest,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<Stored> {
        let key = (kind, *digest);
        let tmp_dir = self.root.join("tmp");
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(|e| Error::io("create a temporary file in", &tmp_dir, e))?;
        let (got, written) = copy_hashing(&mut body.take(len), tmp.as_file_mut())
            .map_err(|e| Error::io("receive an upload into", tmp.path(), e))?;
        if written != len {
            return Ok(Stored::Truncated);
        }
        if kind == Kind::Cas && got != *digest {
            return Ok(Stored::Mismatch(got));
        }
        let dest = self.path(key);
        let present = kind == Kind::Cas && dest.exists();
        // Renamed in even over a blob that is there: that copy may be damaged, this one
        // was just verified. Under the LRU lock, so that `remove_damaged` cannot remove it.
        let mut lru = self.lru.lock().unwrap();
        tmp.persist(&dest)
            .map_err(|e| Error::io("rename into", &dest, e.error))?;
        lru.touch(key, len);
        drop(lru);
        self.evict();
        Ok(if present {
            Stored::Present
        } else {
            Stored::Created
        })
    }

    /// Deletes least recently used entries until the total fits the limit.
    fn evict(&self) {
        let Some(max) = self.max_size else { return };
        let mut lru = self.lru.lock().unwrap();
        while lru.total > max {
            let Some(key) = lru.pop_oldest() else { break };
            let _ = fs::remove_file(self.path(key));
        }
    }
}

impl Lru {
    fn insert(&mut self, key: Key, size: u64) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((old_size, old_tick)) = self.entries.insert(key, (size, tick)) {
            self.order.remove(&old_tick);
            self.total -= old_size;
        }
        self.order.insert(tick, key);
        self.total += size;
    }

    fn touch(&mut self, key: Key, size: u64) {
        self.insert(key, size);
    }

    fn remove(&mut self, key: Key) {
        if let Some((size, tick)) = self.entries.remove(&key) {
            self.order.remove(&tick);
            self.total -= size;
        }
    }

    fn pop_oldest(&mut self) -> Option<Key> {
        let (_, key) = self.order.pop_first()?;
        if let Some((size, _)) = self.entries.remove(&key) {
            self.total -= size;
        }
        Some(key)
    }
}

/// Copies everything, returning the BLAKE3 digest of what passed and its length.
fn copy_hashing(from: &mut dyn Read, to: &mut File) -> std::io::Result<(Digest, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break, // a client that went away: the length check reports it
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((Digest::from_bytes(*hasher.finalize().as_bytes()), total))
}

fn clear_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(disk: &Disk, bytes: &[u8]) -> Digest {
        let d = Digest::of_bytes(bytes);
        let stored = disk.put(Kind::Cas, &d, &mut &bytes[..], bytes.len() as u64);
        assert!(matches!(stored.unwrap(), Stored::Created));
        d
    }

    #[test]
    fn evicts_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), Some(250)).unwrap();
        let a = put(&disk, &[1; 100]);
        let b = put(&disk, &[2; 100]);
        assert!(disk.open_entry(Kind::Cas, &a).is_some()); // a is now newer than b
        let c = put(&disk, &[3; 100]);
        assert!(disk.open_entry(Kind::Cas, &b).is_none());
        assert!(disk.open_entry(Kind::Cas, &a).is_some());
        assert!(disk.open_entry(Kind::Cas, &c).is_some());
        assert_eq!(disk.total(), 200);
    }

    #[test]
    fn refuses_mismatch_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), None).unwrap();
        let d = Digest::of_bytes(b"right");
        let stored = disk.put(Kind::Cas, &d, &mut &b"wrong"[..], 5).unwrap();
        assert!(matches!(stored, Stored::Mismatch(_)));
        let stored = disk.put(Kind::Cas, &d, &mut &b"rig"[..], 5).unwrap();
        assert!(matches!(stored, Stored::Truncated));
        assert!(disk.open_entry(Kind::Cas, &d).is_none());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn an_upload_replaces_a_damaged_copy_and_only_the_damaged_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), None).unwrap();
        let good = [5u8; 100];
        let d = put(&disk, &good);
        let path = disk.path((Kind::Cas, d));
        fs::write(&path, [6u8; 100]).unwrap();
        let damaged = disk.open_entry(Kind::Cas, &d).unwrap();
        let stored = disk.put(Kind::Cas, &d, &mut &good[..], 100).unwrap();
        assert!(matches!(stored, Stored::Present));
        assert_eq!(fs::read(&path).unwrap(), good);
        // Found damaged by a reader that opened it before the good copy came.
        disk.remove_damaged(&d, &damaged);
        assert!(path.exists(), "the good copy stays");
        let entry = disk.open_entry(Kind::Cas, &d).unwrap();
        disk.remove_damaged(&d, &entry);
        assert!(!path.exists());
        assert_eq!((disk.total(), disk.entries()), (0, 0));
    }

    #[test]
    fn order_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let disk = Disk::open(dir.path(), None).unwrap();
            let a = put(&disk, &[1; 100]);
            std::thread::sleep(std::time::Duration::from_millis(20));
            let b = put(&disk, &[2; 100]);
            std::thread::sleep(std::time::Duration::from_millis(20));
            disk.open_entry(Kind::Cas, &a).unwrap();
            (a, b)
        };
        let disk = Disk::open(dir.path(), Some(150)).unwrap();
        assert!(disk.open_entry(Kind::Cas, &b).is_none());
        assert!(disk.open_entry(Kind::Cas, &a).is_some());
    }
}
