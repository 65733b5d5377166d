//! Housekeeping of the local store: `kiln cache gc` (evict least recently used entries
//! until the store fits a size) and `kiln cache verify` (rehash every blob, drop what is
//! corrupt).
//!
//! # What counts
//!
//! The size of a store is the sum of its blob files' sizes (the SQLite index is not
//! counted). Before planning, [`gc`] walks `cas/` and reconciles the `blobs` table with the
//! files: a blob file without a row (a crash between rename and index write) gets one,
//! dated by its mtime; a row without a file is dropped.
//!
//! # Eviction order
//!
//! Candidates are the action results (dated by their `last_use`, which a build sets when
//! it writes a result and when a build that hit it ends) and the *orphan* blobs no result
//! refers to, oldest first. Evicting a result frees the blobs whose last reference it was.
//! A blob a kept result refers to is never removed, nor is the empty blob (it costs
//! nothing, and readers may take it for granted).
//!
//! # Safe while a build runs
//!
//! A build writes a blob (rename, then a `blobs` row), then the action result that names
//! it, then hard-links the blobs into `kiln-out/` and into the sandboxes of the actions
//! that read them. So:
//!
//! 1. **Recent entries are kept**: a result whose `last_use` is within
//!    [`GcOptions::grace`], and a blob whose index `last_use`, mtime or ctime is (a hard
//!    link made by a build moves the ctime), are never removed. A build in progress may
//!    have just written them, or be about to read them. When recent entries alone exceed
//!    the limit, gc says so and leaves the store above it.
//! 2. **Results are removed first**, in one transaction, and only if their `last_use` is
//!    still what gc planned with: a result a build used meanwhile stays.
//! 3. **Blobs are removed last**, inside one `BEGIN IMMEDIATE` transaction that first
//!    re-reads every result: SQLite serializes writers, so no new result can appear between
//!    that check and the unlinks, and a planned blob some result (new or old) names stays.
//!
//! Left open: a build that hits an *old* result whose outputs are already in `kiln-out/`
//! (so no link refreshes the blobs' ctime) and then, more than the grace period later,
//! feeds those outputs to an action that must run, fails with "find blob" if gc removed
//! them meanwhile. It never produces a wrong output, and the next build runs the action
//! again. (Closing it needs builds to record their hits as they happen.)
//!
//! # Leftovers
//!
//! gc also removes what is not an entry: the whole outputs of failed actions that were
//! cut for showing (`logs/`, named in the failure's message), and temporary files a
//! kiln killed while writing a blob left in `tmp/`, once they are older than the grace
//! period. Neither counts towards the size.
//!
//! # verify
//!
//! [`verify`] rehashes every file under `cas/` (in parallel), removes those whose content
//! does not match their name (and files that are not named like a blob), then in one
//! transaction drops their `blobs` rows and every action result that names a removed blob,
//! names a blob whose file is missing, or cannot be decoded. Files are removed before the
//! results, so a build racing with verify can only re-write a good blob, never reuse a bad
//! one. It also reports when the index was last rebuilt after damage, if it was (see
//! `local::index`).
//!
//! Both name the index and leave it marked for the next open to move aside when a query
//! finds it damaged, as every query of the store does.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, TransactionBehavior};

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::filestate::now_ns;
use crate::local::index::Rebuild;
use crate::local::LocalStore;
use crate::result::ActionResult;

/// How long results and blobs stay protected from gc after they were last written or used.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5 * 60);

/// What `kiln cache gc` aims for.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// The store's blobs must fit in this many bytes afterwards (unless protected blobs
    /// alone exceed it).
    pub max_size: u64,
    /// Results and blobs used more recently than this are kept.
    pub grace: Duration,
}

impl GcOptions {
    pub fn new(max_size: u64) -> GcOptions {
        GcOptions {
            max_size,
            grace: DEFAULT_GRACE,
        }
    }
}

/// What [`gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub actions_removed: u64,
    pub blobs_removed: u64,
    pub bytes_removed: u64,
    pub blobs_kept: u64,
    pub bytes_kept: u64,
    /// Results gc would have evicted had they not been used within the grace period.
    pub recent_actions_kept: u64,
    /// Blobs gc would have removed had they not been used within the grace period.
    pub recent_kept: u64,
    pub recent_bytes_kept: u64,
    /// Action results that could not be decoded (removed).
    pub undecodable_removed: u64,
    /// Blob files found without an index row (recorded, then treated like any blob).
    pub untracked_found: u64,
    /// Logs of failed actions' whole output and abandoned temporary files (see
    /// "Leftovers" above), and their bytes.
    pub leftovers_removed: u64,
    pub leftover_bytes_removed: u64,
}

/// One blob that [`verify`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptBlob {
    pub path: PathBuf,
    /// The digest the file is named by, if it is named like a blob.
    pub digest: Option<Digest>,
    /// Why it was removed, e.g. "its content hashes to …".
    pub reason: String,
}

/// What [`verify`] found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub corrupt: Vec<CorruptBlob>,
    /// Results removed because they named a corrupt blob.
    pub results_removed: u64,
    /// Results removed because they named a blob whose file is missing.
    pub dangling_removed: u64,
    /// Results removed because they could not be decoded.
    pub undecodable_removed: u64,
    /// When the index was rebuilt after damage, if it was.
    pub index_rebuilt: Option<Rebuild>,
}

impl VerifyReport {
    /// Whether nothing was corrupt (missing blobs are not corruption: their results were
    /// already cache misses).
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.undecodable_removed == 0
    }
}

/// Evicts least recently used results and blobs until the store fits `opts.max_size`.
/// See the module comment for the order and why it is safe while a build runs.
pub fn gc(store: &LocalStore, opts: &GcOptions) -> Result<GcReport> {
    store.checked(run_gc(store, opts))
}

fn run_gc(store: &LocalStore, opts: &GcOptions) -> Result<GcReport> {
    let now = now_ns() / 1_000_000_000;
    let mut db = open_index(store)?;
    let mut report = GcReport::default();
    let (actions, undecodable) = load_actions(&db)?;
    let mut blobs = load_blobs(&db)?;
    report.untracked_found = reconcile(store, &mut db, &mut blobs)?;
    let plan = plan(&actions, &blobs, opts, now);
    report.actions_removed = remove_actions(&mut db, &plan.actions, &undecodable)?;
    report.undecodable_removed = undecodable.len() as u64;
    let removed = remove_blobs(store, &mut db, &plan.blobs)?;
    report.blobs_removed = removed.len() as u64;
    report.bytes_removed = removed.iter().map(|d| blobs[d].size).sum();
    report.blobs_kept = blobs.len() as u64 - report.blobs_removed;
    report.bytes_kept = blobs.values().map(|b| b.size).sum::<u64>() - report.bytes_removed;
    report.recent_actions_kept = plan.recent_actions;
    report.recent_kept = plan.recent.len() as u64;
    report.recent_bytes_kept = plan.recent.iter().map(|d| blobs[d].size).sum();
    let before = now - opts.grace.as_secs() as i64;
    let logs = remove_older(&store.root().join("logs"), before, |_| true);
    let temporary = remove_older(&store.tmp_dir(), before, |name| name.starts_with(".tmp"));
    report.leftovers_removed = logs.0 + temporary.0;
    report.leftover_bytes_removed = logs.1 + temporary.1;
    Ok(report)
}

/// Removes the regular files of `dir` whose names `pick` takes and that were last
/// modified before `before` (seconds since the epoch); returns how many and their bytes.
fn remove_older(dir: &Path, before: i64, pick: impl Fn(&str) -> bool) -> (u64, u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return (0, 0);
    };
    let mut removed = (0, 0);
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta.file_type().is_file() && meta.mtime() < before;
        if old
            && pick(&entry.file_name().to_string_lossy())
            && fs::remove_file(entry.path()).is_ok()
        {
            removed.0 += 1;
            removed.1 += meta.len();
        }
    }
    removed
}

/// Rehashes every blob and removes corrupt ones and the results that name them.
pub fn verify(store: &LocalStore) -> Result<VerifyReport> {
    let mut report = store.checked(run_verify(store))?;
    report.index_rebuilt = store.last_rebuild()?;
    Ok(report)
}

fn run_verify(store: &LocalStore) -> Result<VerifyReport> {
    let files = list_cas(store)?;
    let mut report = VerifyReport {
        blobs_checked: files.len() as u64,
        bytes_checked: files.iter().map(|f| f.size).sum(),
        corrupt: check_all(&files),
        ..VerifyReport::default()
    };
    for bad in &report.corrupt {
        match fs::remove_file(&bad.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &bad.path, e)),
        }
    }
    let corrupt: HashSet<Digest> = report.corrupt.iter().filter_map(|c| c.digest).collect();
    let mut db = open_index(store)?;
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for digest in &corrupt {
        tx.execute(
            "DELETE FROM blobs WHERE digest = ?1",
            params![digest.to_hex()],
        )?;
    }
    let (actions, undecodable) = load_actions(&tx)?;
    for key in &undecodable {
        tx.execute("DELETE FROM actions WHERE key = ?1", params![key])?;
    }
    report.undecodable_removed = undecodable.len() as u64;
    for action in &actions {
        let bad = action.blobs.iter().any(|d| corrupt.contains(d));
        let missing = !bad && action.blobs.iter().any(|d| !store.blob_path(d).exists());
        if bad || missing {
            tx.execute("DELETE FROM actions WHERE key = ?1", params![action.key])?;
        }
        report.results_removed += bad as u64;
        report.dangling_removed += missing as u64;
    }
    tx.commit()?;
    Ok(report)
}

/// A second connection to the store's index (the store's own is private to it; SQLite
/// serializes the two like any two processes).
fn open_index(store: &LocalStore) -> Result<Connection> {
    let conn = Connection::open(store.root().join("index.db"))?;
    conn.busy_timeout(Duration::from_secs(60))?;
    Ok(conn)
}

/// One row of the action cache, decoded.
struct ActionRow {
    key: String,
    last_use: i64,
    /// The distinct blobs the result names.
    blobs: Vec<Digest>,
}

/// Every decodable result, and the keys of those that are not.
fn load_actions(db: &Connection) -> Result<(Vec<ActionRow>, Vec<String>)> {
    let mut stmt = db.prepare("SELECT key, result, last_use FROM actions")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut actions = Vec::new();
    let mut undecodable = Vec::new();
    for row in rows {
        let (key, text, last_use) = row?;
        match serde_json::from_str::<ActionResult>(&text) {
            Ok(result) => {
                let mut blobs: Vec<Digest> = result.blobs().collect();
                blobs.sort_unstable();
                blobs.dedup();
                actions.push(ActionRow {
                    key,
                    last_use,
                    blobs,
                });
            }
            Err(_) => undecodable.push(key),
        }
    }
    Ok((actions, undecodable))
}

/// What gc knows of one blob.
#[derive(Debug, Clone, Copy)]
struct BlobRow {
    size: u64,
    /// The latest of its index `last_use` and its file's mtime and ctime, in seconds.
    used: i64,
}

fn load_blobs(db: &Connection) -> Result<HashMap<Digest, BlobRow>> {
    let mut stmt = db.prepare("SELECT digest, size, last_use FROM blobs")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let (digest, size, last_use) = row?;
        if let Ok(digest) = digest.parse() {
            let size = size.max(0) as u64;
            out.insert(
                digest,
                BlobRow {
                    size,
                    used: last_use,
                },
            );
        }
    }
    Ok(out)
}

/// A file under `cas/`.
struct CasFile {
    path: PathBuf,
    /// None when the file is not named like a blob (`cas/ab/ab…` with 64 hex digits).
    digest: Option<Digest>,
    size: u64,
    /// The later of mtime and ctime, in seconds.
    touched: i64,
}

fn list_cas(store: &LocalStore) -> Result<Vec<CasFile>> {
    let cas = store.root().join("cas");
    let mut out = Vec::new();
    for entry in walkdir_sorted(&cas)? {
        let meta = fs::metadata(&entry).map_err(|e| Error::io("stat", &entry, e))?;
        if !meta.is_file() {
            continue;
        }
        out.push(CasFile {
            digest: blob_name(&cas, &entry),
            path: entry,
            size: meta.len(),
            touched: meta.mtime().max(meta.ctime()),
        });
    }
    Ok(out)
}

/// Every path two levels below `cas/` (the blob files), sorted.
fn walkdir_sorted(cas: &Path) -> Result<Vec<PathBuf>> {
    let read = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(|e| Error::io("list", dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    let mut out = Vec::new();
    for sub in read(cas)? {
        if sub.is_dir() {
            out.extend(read(&sub)?);
        } else {
            out.push(sub);
        }
    }
    Ok(out)
}

/// The digest a file under `cas/` is named by, if it sits where that blob belongs.
fn blob_name(cas: &Path, path: &Path) -> Option<Digest> {
    let name = path.file_name()?.to_str()?;
    let digest: Digest = name.parse().ok()?;
    let expected = cas.join(&name[..2]).join(name);
    (expected == path).then_some(digest)
}

/// Makes the `blobs` table match the files; returns how many files had no row.
fn reconcile(
    store: &LocalStore,
    db: &mut Connection,
    blobs: &mut HashMap<Digest, BlobRow>,
) -> Result<u64> {
    let files = list_cas(store)?;
    let mut present = HashSet::new();
    let mut untracked = 0;
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for file in &files {
        let Some(digest) = file.digest else { continue };
        present.insert(digest);
        match blobs.get_mut(&digest) {
            Some(row) => row.used = row.used.max(file.touched),
            None => {
                tx.execute(
                    "INSERT OR IGNORE INTO blobs (digest, size, last_use) VALUES (?1, ?2, ?3)",
                    params![digest.to_hex(), file.size as i64, file.touched],
                )?;
                let row = BlobRow {
                    size: file.size,
                    used: file.touched,
                };
                blobs.insert(digest, row);
                untracked += 1;
            }
        }
    }
    let gone: Vec<Digest> = blobs
        .keys()
        .filter(|d| !present.contains(*d))
        .copied()
        .collect();
    for digest in gone {
        if !store.blob_path(&digest).exists() {
            tx.execute(
                "DELETE FROM blobs WHERE digest = ?1",
                params![digest.to_hex()],
            )?;
            blobs.remove(&digest);
        }
    }
    tx.commit()?;
    Ok(untracked)
}

/// What gc decided to remove.
#[derive(Default)]
struct Plan {
    /// (key, last_use as planned with).
    actions: Vec<(String, i64)>,
    blobs: HashSet<Digest>,
    /// Blobs kept because they are recent.
    recent: HashSet<Digest>,
    /// Results kept because they are recent, though older ones were evicted.
    recent_actions: u64,
}

/// One eviction candidate, oldest first; results before orphan blobs of the same second.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Candidate {
    Action(i64, usize),
    Orphan(i64, Digest),
}

impl Candidate {
    fn time(&self) -> i64 {
        match self {
            Candidate::Action(t, _) | Candidate::Orphan(t, _) => *t,
        }
    }
}

/// The running state of planning.
struct Planner<'a> {
    blobs: &'a HashMap<Digest, BlobRow>,
    /// The empty blob, which readers may assume is always there: never removed.
    empty: Digest,
    refs: HashMap<Digest, u32>,
    cutoff: i64,
    total: u64,
    plan: Plan,
}

impl Planner<'_> {
    /// Marks a blob no kept result names for removal, unless it is recent (or empty).
    fn free(&mut self, digest: Digest) {
        let Some(row) = self.blobs.get(&digest) else {
            return;
        };
        if digest == self.empty {
            return;
        }
        if row.used > self.cutoff {
            self.plan.recent.insert(digest);
        } else if self.plan.blobs.insert(digest) {
            self.total -= row.size;
        }
    }

    fn evict(&mut self, action: &ActionRow) {
        self.plan
            .actions
            .push((action.key.clone(), action.last_use));
        for d in &action.blobs {
            let n = self.refs.get_mut(d).expect("every reference is counted");
            *n -= 1;
            if *n == 0 {
                self.free(*d);
            }
        }
    }
}

fn plan(
    actions: &[ActionRow],
    blobs: &HashMap<Digest, BlobRow>,
    opts: &GcOptions,
    now: i64,
) -> Plan {
    let mut refs: HashMap<Digest, u32> = HashMap::new();
    for action in actions {
        for d in &action.blobs {
            *refs.entry(*d).or_default() += 1;
        }
    }
    let mut candidates: Vec<Candidate> = actions
        .iter()
        .enumerate()
        .map(|(i, a)| Candidate::Action(a.last_use, i))
        .collect();
    candidates.extend(
        blobs
            .iter()
            .filter(|(d, _)| !refs.contains_key(*d))
            .map(|(d, row)| Candidate::Orphan(row.used, *d)),
    );
    candidates.sort_by(|a, b| a.time().cmp(&b.time()).then(a.cmp(b)));
    let mut planner = Planner {
        blobs,
        empty: Digest::of_bytes(b""),
        refs,
        cutoff: now - opts.grace.as_secs() as i64,
        total: blobs.values().map(|b| b.size).sum(),
        plan: Plan::default(),
    };
    for candidate in candidates {
        if planner.total <= opts.max_size {
            break;
        }
        match candidate {
            Candidate::Orphan(_, digest) => planner.free(digest),
            Candidate::Action(t, _) if t > planner.cutoff => planner.plan.recent_actions += 1,
            Candidate::Action(_, i) => planner.evict(&actions[i]),
        }
    }
    planner.plan
}

/// Removes planned results whose `last_use` did not move, and undecodable ones.
fn remove_actions(
    db: &mut Connection,
    planned: &[(String, i64)],
    undecodable: &[String],
) -> Result<u64> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut removed = 0;
    {
        let mut delete = tx.prepare("DELETE FROM actions WHERE key = ?1 AND last_use = ?2")?;
        for (key, last_use) in planned {
            removed += delete.execute(params![key, last_use])? as u64;
        }
        for key in undecodable {
            tx.execute("DELETE FROM actions WHERE key = ?1", params![key])?;
        }
    }
    tx.commit()?;
    Ok(removed)
}

/// Removes the planned blobs no result names, holding SQLite's write lock so that no
/// result can be added meanwhile. Returns the removed digests.
fn remove_blobs(
    store: &LocalStore,
    db: &mut Connection,
    planned: &HashSet<Digest>,
) -> Result<Vec<Digest>> {
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (actions, _) = load_actions(&tx)?;
    let named: HashSet<Digest> = actions
        .iter()
        .flat_map(|a| a.blobs.iter().copied())
        .filter(|d| planned.contains(d))
        .collect();
    let mut removed = Vec::new();
    let mut sorted: Vec<&Digest> = planned.difference(&named).collect();
    sorted.sort_unstable();
    for digest in sorted {
        let path = store.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
        tx.execute(
            "DELETE FROM blobs WHERE digest = ?1",
            params![digest.to_hex()],
        )?;
        tx.execute(
            "DELETE FROM blob_sha256 WHERE digest = ?1",
            params![digest.to_hex()],
        )?;
        removed.push(*digest);
    }
    tx.commit()?;
    Ok(removed)
}

/// Rehashes files on all cores; returns the bad ones in path order.
fn check_all(files: &[CasFile]) -> Vec<CorruptBlob> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = files.len().div_ceil(threads).max(1);
    let mut bad: Vec<CorruptBlob> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().filter_map(check).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("hashing threads do not panic"))
            .collect()
    });
    bad.sort_by(|a, b| a.path.cmp(&b.path));
    bad
}

fn check(file: &CasFile) -> Option<CorruptBlob> {
    let corrupt = |reason: String| CorruptBlob {
        path: file.path.clone(),
        digest: file.digest,
        reason,
    };
    let Some(expected) = file.digest else {
        return Some(corrupt("it is not named like a blob".into()));
    };
    match Digest::of_file(&file.path) {
        Ok(actual) if actual == expected => None,
        Ok(actual) => Some(corrupt(format!("its content hashes to {actual}"))),
        Err(e) if e.kind() == ErrorKind::Io && !file.path.exists() => None,
        Err(e) => Some(corrupt(format!("it cannot be read: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::result::OutputFile;
    use crate::store::Store;

    fn result(store: &LocalStore, outputs: &[Digest]) -> ActionResult {
        let empty = store.put_bytes(b"").unwrap();
        ActionResult {
            outputs: outputs
                .iter()
                .enumerate()
                .map(|(i, d)| OutputFile {
                    path: format!("out{i}"),
                    digest: *d,
                    size: fs::metadata(store.blob_path(d)).map_or(0, |m| m.len()),
                    executable: false,
                })
                .collect(),
            exit_code: 0,
            stdout: empty,
            stderr: empty,
            duration_ms: 0,
        }
    }

    fn d(n: u8) -> Digest {
        Digest::of_bytes(&[n])
    }

    fn action(key: &str, last_use: i64, blobs: &[Digest]) -> ActionRow {
        ActionRow {
            key: key.into(),
            last_use,
            blobs: blobs.to_vec(),
        }
    }

    fn blob(used: i64) -> BlobRow {
        BlobRow { size: 1000, used }
    }

    #[test]
    fn plans_oldest_first_and_keeps_shared_and_recent_entries() {
        let now = 100_000;
        let (old, shared, new, orphan_old, orphan_new) = (d(1), d(2), d(3), d(4), d(5));
        let (linked, recent_result) = (d(6), d(7));
        let actions = [
            action("old", now - 3600, &[old, shared]),
            action("new", now - 3500, &[new, shared]),
            action("linked", now - 3400, &[linked]),
            action("recent", now - 10, &[recent_result]),
        ];
        let blobs = HashMap::from([
            (old, blob(now - 3600)),
            (shared, blob(now - 3600)),
            (new, blob(now - 3500)),
            (orphan_old, blob(now - 7200)),
            (orphan_new, blob(now - 5)),
            // Written long ago, but a running build just hard-linked it (ctime).
            (linked, blob(now - 1)),
            (recent_result, blob(now - 10)),
            // The empty blob, old and named by nothing: still kept.
            (Digest::of_bytes(b""), BlobRow { size: 0, used: 1 }),
        ]);
        let opts = GcOptions {
            max_size: 0,
            grace: Duration::from_secs(60),
        };
        let plan = plan(&actions, &blobs, &opts, now);
        let keys: Vec<&str> = plan.actions.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["old", "new", "linked"]);
        assert_eq!(plan.blobs, HashSet::from([orphan_old, old, shared, new]));
        assert_eq!(plan.recent, HashSet::from([orphan_new, linked]));
        assert_eq!(plan.recent_actions, 1);

        // With room for 4000 bytes, only the oldest orphan and result go; `shared` stays,
        // since "new" still names it.
        let plan = super::plan(
            &actions,
            &blobs,
            &GcOptions {
                max_size: 5000,
                ..opts
            },
            now,
        );
        assert_eq!(plan.actions, [("old".to_string(), now - 3600)]);
        assert_eq!(plan.blobs, HashSet::from([orphan_old, old]));
    }

    #[test]
    fn gc_removes_results_before_their_blobs_and_leaves_a_consistent_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let a = store.put_bytes(&[1u8; 1000]).unwrap();
        let b = store.put_bytes(&[2u8; 1000]).unwrap();
        let key = Digest::of_bytes(b"k");
        store.put_action(&key, &result(&store, &[a])).unwrap();
        let opts = GcOptions {
            max_size: 0,
            grace: Duration::ZERO,
        };
        let report = gc(&store, &opts).unwrap();
        assert_eq!(report.actions_removed, 1);
        assert_eq!(report.blobs_removed, 2, "a and b; never the empty blob");
        assert_eq!(report.bytes_removed, 2000);
        assert!(store.get_action(&key).unwrap().is_none());
        assert!(!store.contains(&a).unwrap() && !store.contains(&b).unwrap());
        assert!(store.contains(&Digest::of_bytes(b"")).unwrap());
        let stats = store.stats().unwrap();
        assert_eq!((stats.blobs, stats.blob_bytes, stats.actions), (1, 0, 0));
    }

    #[test]
    fn old_logs_and_abandoned_temporary_files_go_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let logs = dir.path().join("logs");
        fs::create_dir_all(&logs).unwrap();
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        let file = |path: &Path, bytes: usize, old: bool| {
            fs::write(path, vec![b'x'; bytes]).unwrap();
            if old {
                let f = fs::File::options().write(true).open(path).unwrap();
                f.set_modified(hour_ago).unwrap();
            }
        };
        file(&logs.join("sandbox-a.stdout"), 3000, true);
        file(&logs.join("sandbox-b.stdout"), 5, false);
        file(&store.tmp_dir().join(".tmpOld"), 700, true);
        file(&store.tmp_dir().join(".tmpNew"), 7, false);
        // A held directory's lock, however old, is not a temporary file.
        file(&store.tmp_dir().join("sandbox-c.lock"), 0, true);
        let stats = store.stats().unwrap();
        assert_eq!(
            (stats.logs, stats.log_bytes),
            (2, 3005),
            "stats count the logs"
        );
        let report = gc(&store, &GcOptions::new(1 << 30)).unwrap();
        assert_eq!(report.leftovers_removed, 2);
        assert_eq!(report.leftover_bytes_removed, 3700);
        assert!(!logs.join("sandbox-a.stdout").exists());
        assert!(logs.join("sandbox-b.stdout").exists(), "a recent log stays");
        assert!(!store.tmp_dir().join(".tmpOld").exists());
        assert!(
            store.tmp_dir().join(".tmpNew").exists(),
            "one being written stays"
        );
        assert!(store.tmp_dir().join("sandbox-c.lock").exists());
        assert_eq!(store.stats().unwrap().log_bytes, 5);
    }

    #[test]
    fn recent_entries_survive_a_zero_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let a = store.put_bytes(&[1u8; 1000]).unwrap();
        let key = Digest::of_bytes(b"k");
        store.put_action(&key, &result(&store, &[a])).unwrap();
        let report = gc(&store, &GcOptions::new(0)).unwrap();
        assert_eq!((report.actions_removed, report.blobs_removed), (0, 0));
        assert_eq!(report.recent_actions_kept, 1);
        assert!(store.get_action(&key).unwrap().is_some());
    }

    #[test]
    fn a_store_under_the_limit_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let d = store.put_bytes(b"data").unwrap();
        let key = Digest::of_bytes(b"k");
        store.put_action(&key, &result(&store, &[d])).unwrap();
        let report = gc(&store, &GcOptions::new(1 << 20)).unwrap();
        assert_eq!((report.actions_removed, report.blobs_removed), (0, 0));
        assert!(store.get_action(&key).unwrap().is_some());
    }

    #[test]
    fn a_result_used_after_planning_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let d = store.put_bytes(&[7u8; 100]).unwrap();
        let key = Digest::of_bytes(b"k");
        store.put_action(&key, &result(&store, &[d])).unwrap();
        let mut db = open_index(&store).unwrap();
        // Planned with an older last_use than the row now has: a build touched it.
        let removed = remove_actions(&mut db, &[(key.to_hex(), 1)], &[]).unwrap();
        assert_eq!(removed, 0);
        // And a planned blob that a result names is not removed.
        let planned = HashSet::from([d]);
        assert!(remove_blobs(&store, &mut db, &planned).unwrap().is_empty());
        assert!(store.contains(&d).unwrap());
    }

    #[test]
    fn untracked_files_are_recorded_and_missing_rows_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let gone = store.put_bytes(b"gone").unwrap();
        store.flush().unwrap(); // blob rows are written by the flush
        fs::remove_file(store.blob_path(&gone)).unwrap();
        let stray = Digest::of_bytes(b"stray");
        let path = store.blob_path(&stray);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"stray").unwrap();
        let report = gc(&store, &GcOptions::new(1 << 20)).unwrap();
        assert_eq!(report.untracked_found, 1);
        let stats = store.stats().unwrap();
        let empty = store.contains(&Digest::of_bytes(b"")).unwrap() as u64;
        assert_eq!((stats.blobs, stats.blob_bytes), (1 + empty, 5));
    }

    #[test]
    fn verify_removes_corrupt_blobs_and_their_results() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let good = store.put_bytes(b"good").unwrap();
        let bad = store.put_bytes(b"bad").unwrap();
        let vanished = store.put_bytes(b"vanished").unwrap();
        let keys = [b"a", b"b", b"c"].map(|k| Digest::of_bytes(k));
        store
            .put_action(&keys[0], &result(&store, &[good]))
            .unwrap();
        store
            .put_action(&keys[1], &result(&store, &[good, bad]))
            .unwrap();
        store
            .put_action(&keys[2], &result(&store, &[vanished]))
            .unwrap();
        assert!(verify(&store).unwrap().is_clean());

        let path = store.blob_path(&bad);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"BAD").unwrap();
        fs::remove_file(store.blob_path(&vanished)).unwrap();
        let report = verify(&store).unwrap();
        assert!(!report.is_clean());
        assert_eq!(report.corrupt.len(), 1);
        assert_eq!(report.corrupt[0].digest, Some(bad));
        assert!(report.corrupt[0].reason.contains("hashes to"));
        assert_eq!((report.results_removed, report.dangling_removed), (1, 1));
        assert!(!path.exists());
        assert!(store.get_action(&keys[0]).unwrap().is_some());
        let db = open_index(&store).unwrap();
        let left: i64 = db
            .query_row("SELECT COUNT(*) FROM actions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 1);
        assert!(verify(&store).unwrap().is_clean());
    }
}
