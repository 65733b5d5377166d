//! The tiered store: the local store first, then a remote, writing back both ways.
//!
//! ```text
//!  get_action(key) ─▶ local ──hit──▶ result
//!                       └─miss─▶ remote AC ─▶ download each blob (verified) into local
//!                                             ─▶ local.put_action ─▶ result (a remote hit)
//!  put_action(key) ─▶ local.put_action ─▶ upload queue ─▶ workers: each blob put_file
//!                                          (HEAD, PUT only if missing), then the AC entry
//! ```
//!
//! Decisions:
//!
//! * **A remote can cost time, never correctness.** Every remote call goes through a
//!   [`Breaker`]: an error of any kind (down, refused, 5xx, timeout, truncated body,
//!   garbage, a blob whose content does not match its digest) is a miss. The first failure
//!   of a streak prints one `kiln: warning: remote cache …` line; after
//!   [`FAILURE_LIMIT`] failures in a row the remote is switched off for the rest of the
//!   process, said once. Blobs are verified when they enter the local store: hashed
//!   again here, unless the remote's `fetch` already checked them while streaming
//!   ([`Store::fetch_verifies`], as [`crate::HttpStore`] does). With [`crate::HttpOptions`]' defaults, a remote that
//!   accepts connections and never answers costs at most 3 × 10 s (less when requests
//!   overlap); one that is down costs milliseconds.
//! * **A remote result is used only whole.** Its blobs are downloaded before the result is
//!   written locally (crash-safe: a result never names a missing blob); if any blob is
//!   missing or bad, the action is a miss and runs.
//! * **`contains` answers for the local tier only.** It is the cheap check a caller makes
//!   before writing, and a blob serves a build only once it is local. [`Store::read`] and
//!   [`Store::fetch`] do fall back to the remote.
//! * **Only action results are published.** `put_bytes`/`put_file` write locally; a
//!   result's blobs go up with it, in the background, before its AC entry (and only if
//!   they all went up). Blobs already uploaded by this process are not asked about again,
//!   and a blob two workers need at once is sent by one while the other waits.
//! * **Read-only** is a wrapper around the remote, [`ReadOnly`], that drops writes: with
//!   it the upload workers find nothing to do and send no request at all.
//! * [`Store::flush`] (and dropping the store) waits for every queued upload.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::local::LocalStore;
use crate::result::ActionResult;
use crate::store::Store;

/// Failures in a row after which the remote is switched off.
pub const FAILURE_LIMIT: u32 = 3;

/// Threads uploading results in the background.
const UPLOAD_WORKERS: usize = 4;

/// Local first, then remote. See the module comment.
pub struct TieredStore {
    shared: Arc<Shared>,
    remote_hits: AtomicU64,
    queue: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

/// What the caller's threads and the upload workers share.
struct Shared {
    local: Arc<LocalStore>,
    remote: Arc<dyn Store>,
    breaker: Breaker,
    pending: Pending,
    uploaded: Uploaded,
}

struct Job {
    key: Digest,
    result: ActionResult,
}

impl TieredStore {
    /// `remote` is named `remote_name` (its URL) in warnings.
    pub fn new(local: Arc<LocalStore>, remote: Arc<dyn Store>, remote_name: &str) -> TieredStore {
        let shared = Arc::new(Shared {
            local,
            remote,
            breaker: Breaker::new(remote_name),
            pending: Pending::default(),
            uploaded: Uploaded::default(),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let workers = (0..UPLOAD_WORKERS)
            .map(|_| spawn_worker(shared.clone(), rx.clone()))
            .collect();
        TieredStore {
            shared,
            remote_hits: AtomicU64::new(0),
            queue: Some(tx),
            workers,
        }
    }

    pub fn local(&self) -> &Arc<LocalStore> {
        &self.shared.local
    }

    /// Whether the remote was switched off after repeated failures.
    pub fn remote_is_off(&self) -> bool {
        self.shared.breaker.is_off()
    }

    /// How many `kiln: warning: remote cache …` lines this store printed.
    pub fn warnings(&self) -> u64 {
        self.shared.breaker.warnings.load(Ordering::Relaxed)
    }

    fn download_result(&self, result: &ActionResult) -> Result<bool> {
        for output in &result.outputs {
            if !self.shared.download(&output.digest, output.executable)? {
                return Ok(false);
            }
        }
        for digest in [result.stdout, result.stderr] {
            if !self.shared.download(&digest, false)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Shared {
    /// Makes the blob local, from the remote if needed. False if it cannot be had.
    fn download(&self, digest: &Digest, executable: bool) -> Result<bool> {
        if self.local.contains(digest)? {
            return Ok(true);
        }
        let tmp_dir = self.local.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix("remote-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| Error::io("create a temporary file in", &tmp_dir, e))?
            .into_temp_path();
        if self.breaker.call(|| self.remote.fetch(digest, &tmp)) != Some(true) {
            return Ok(false);
        }
        if executable {
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("chmod", &tmp, e))?;
        }
        let got = if self.remote.fetch_verifies() {
            self.local.put_file_move_verified(&tmp, *digest)?
        } else {
            self.local.put_file_move(&tmp)?
        };
        if got != *digest {
            let what = format!("verify blob {digest}: the remote sent content with digest {got}");
            self.breaker.fail(&what);
            return Ok(false);
        }
        Ok(true)
    }

    fn upload(&self, job: &Job) {
        for digest in job.result.blobs() {
            if !self.upload_blob(&digest) {
                return;
            }
        }
        self.breaker
            .call(|| self.remote.put_action(&job.key, &job.result));
    }

    fn upload_blob(&self, digest: &Digest) -> bool {
        if self.uploaded.claim(digest) == Claim::Done {
            return true;
        }
        let path = self.local.blob_path(digest);
        let sent = self.breaker.call(|| self.remote.put_file(&path)) == Some(*digest);
        self.uploaded.finish(digest, sent);
        sent
    }
}

fn spawn_worker(shared: Arc<Shared>, jobs: Receiver<Job>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("kiln-upload".into())
        .spawn(move || {
            for job in jobs {
                if !shared.breaker.is_off() {
                    shared.upload(&job);
                }
                shared.pending.done();
            }
        })
        .expect("spawn an upload thread")
}

impl Store for TieredStore {
    fn contains(&self, digest: &Digest) -> Result<bool> {
        self.shared.local.contains(digest)
    }

    fn read(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        if let Some(bytes) = self.shared.local.read(digest)? {
            return Ok(Some(bytes));
        }
        let shared = &self.shared;
        let Some(Some(bytes)) = shared.breaker.call(|| shared.remote.read(digest)) else {
            return Ok(None);
        };
        if Digest::of_bytes(&bytes) != *digest {
            shared
                .breaker
                .fail(&format!("verify blob {digest}: content does not match"));
            return Ok(None);
        }
        shared.local.put_bytes(&bytes)?;
        Ok(Some(bytes))
    }

    fn fetch(&self, digest: &Digest, dest: &Path) -> Result<bool> {
        if self.shared.local.fetch(digest, dest)? {
            return Ok(true);
        }
        if !self.shared.download(digest, false)? {
            return Ok(false);
        }
        self.shared.local.fetch(digest, dest)
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        self.shared.local.put_bytes(bytes)
    }

    fn put_file(&self, path: &Path) -> Result<Digest> {
        self.shared.local.put_file(path)
    }

    fn get_action(&self, key: &Digest) -> Result<Option<ActionResult>> {
        Ok(self.lookup_action(key)?.map(|(r, _)| r))
    }

    fn lookup_action(&self, key: &Digest) -> Result<Option<(ActionResult, bool)>> {
        let shared = &self.shared;
        if let Some(result) = shared.local.get_action(key)? {
            return Ok(Some((result, false)));
        }
        let Some(Some(result)) = shared.breaker.call(|| shared.remote.get_action(key)) else {
            return Ok(None);
        };
        if !self.download_result(&result)? {
            return Ok(None);
        }
        shared.local.put_action(key, &result)?;
        self.remote_hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some((result, true)))
    }

    fn put_action(&self, key: &Digest, result: &ActionResult) -> Result<()> {
        self.shared.local.put_action(key, result)?;
        if let (Some(queue), false) = (&self.queue, self.shared.breaker.is_off()) {
            self.shared.pending.add();
            let job = Job {
                key: *key,
                result: result.clone(),
            };
            if queue.send(job).is_err() {
                self.shared.pending.done();
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.shared.local.flush()?;
        self.shared.pending.wait();
        Ok(())
    }

    fn remote_hits(&self) -> u64 {
        self.remote_hits.load(Ordering::Relaxed)
    }
}

impl Drop for TieredStore {
    fn drop(&mut self) {
        self.queue = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Uploads queued and not yet finished.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Pending {
    fn add(&self) {
        *self.count.lock().unwrap() += 1;
    }

    fn done(&self) {
        let mut count = self.count.lock().unwrap();
        *count -= 1;
        if *count == 0 {
            self.idle.notify_all();
        }
    }

    fn wait(&self) {
        let mut count = self.count.lock().unwrap();
        while *count > 0 {
            count = self.idle.wait(count).unwrap();
        }
    }
}

/// Blobs known to be on the remote (true) or being sent by a worker now (false), so a
/// blob shared by results uploaded at the same time is sent once, and no result goes up
/// before a blob it names.
#[derive(Default)]
struct Uploaded {
    state: Mutex<HashMap<Digest, bool>>,
    changed: Condvar,
}

#[derive(PartialEq, Eq)]
enum Claim {
    /// The remote has it.
    Done,
    /// The caller must send it, then call [`Uploaded::finish`].
    Mine,
}

impl Uploaded {
    /// Waits while another worker sends the blob.
    fn claim(&self, digest: &Digest) -> Claim {
        let mut state = self.state.lock().unwrap();
        loop {
            match state.get(digest) {
                Some(true) => return Claim::Done,
                Some(false) => state = self.changed.wait(state).unwrap(),
                None => {
                    state.insert(*digest, false);
                    return Claim::Mine;
                }
            }
        }
    }

    fn finish(&self, digest: &Digest, sent: bool) {
        let mut state = self.state.lock().unwrap();
        if sent {
            state.insert(*digest, true);
        } else {
            state.remove(digest);
        }
        self.changed.notify_all();
    }
}

/// Turns remote errors into misses, warns, and switches the remote off after
/// [`FAILURE_LIMIT`] failures in a row.
struct Breaker {
    name: String,
    streak: AtomicU32,
    off: AtomicBool,
    warnings: AtomicU64,
}

impl Breaker {
    fn new(name: &str) -> Breaker {
        Breaker {
            name: name.to_string(),
            streak: AtomicU32::new(0),
            off: AtomicBool::new(false),
            warnings: AtomicU64::new(0),
        }
    }

    fn is_off(&self) -> bool {
        self.off.load(Ordering::Relaxed)
    }

    /// Runs a remote call; None if the remote is off or the call failed.
    fn call<T>(&self, f: impl FnOnce() -> Result<T>) -> Option<T> {
        if self.is_off() {
            return None;
        }
        match f() {
            Ok(value) => {
                self.streak.store(0, Ordering::Relaxed);
                Some(value)
            }
            Err(err) => {
                self.fail(&err.to_string());
                None
            }
        }
    }

    /// Records a failure described by a fragment that reads after "failed to".
    fn fail(&self, what: &str) {
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        if streak == 1 {
            self.warn(&format!("failed to {what}; treated as a miss"));
        }
        if streak >= FAILURE_LIMIT && !self.off.swap(true, Ordering::Relaxed) {
            self.warn(&format!(
                "switched off for the rest of this build after {FAILURE_LIMIT} failures in a row"
            ));
        }
    }

    fn warn(&self, message: &str) {
        self.warnings.fetch_add(1, Ordering::Relaxed);
        eprintln!("kiln: warning: remote cache {}: {message}", self.name);
    }
}

/// A remote that is read but never written: for untrusted CI jobs
/// (`--remote-read-only`). Writes are dropped without a request (`put_file` still hashes
/// the file, as the trait promises its digest).
pub struct ReadOnly {
    inner: Arc<dyn Store>,
}

impl ReadOnly {
    pub fn new(inner: Arc<dyn Store>) -> ReadOnly {
        ReadOnly { inner }
    }
}

impl Store for ReadOnly {
    fn contains(&self, digest: &Digest) -> Result<bool> {
        self.inner.contains(digest)
    }

    fn read(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        self.inner.read(digest)
    }

    fn fetch(&self, digest: &Digest, dest: &Path) -> Result<bool> {
        self.inner.fetch(digest, dest)
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        Ok(Digest::of_bytes(bytes))
    }

    fn put_file(&self, path: &Path) -> Result<Digest> {
        Digest::of_file(path)
    }

    fn get_action(&self, key: &Digest) -> Result<Option<ActionResult>> {
        self.inner.get_action(key)
    }

    fn fetch_verifies(&self) -> bool {
        self.inner.fetch_verifies()
    }

    fn put_action(&self, _key: &Digest, _result: &ActionResult) -> Result<()> {
        Ok(())
    }
}
