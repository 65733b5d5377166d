//! Running one action: computing its key, looking it up, executing it in a sandbox on a
//! miss, storing its outputs and materializing them under `kiln-out/`.
//!
//! Order of writes on success (crash-safe by construction): output blobs into the CAS,
//! then stdout/stderr blobs, then the action result. Failures are never cached.
//!
//! Actions that discover their inputs as they run ([`crate::action::Reads`]) are looked
//! up and stored through their read sets ([`discovered`]).

mod batch;
mod discovered;

pub use batch::{BatchFile, BatchMember, BATCH_ENV};
pub use discovered::{Discovered, Found};

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_cache::gocacheprog::{Listener, ViewHandle};
use kiln_cache::{ActionResult, Digest, KeyOutcome, LocalStore, OutputFile, Store};

use crate::action::{Action, ActionKind, Artifact, Builtin, BuiltinCtx, ExecSpec, Tool};
use crate::error::{Error, ErrorKind, Result};
use crate::key::{KeyInput, KeyRecord, KEY_SCHEMA};
use crate::remote::{RemoteExecutor, RemoteRun};
use crate::sandbox::{Host, Sandbox, SandboxMode, StoreAccess, StoreFiles};

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Cached,
    Executed,
    Failed,
}

/// An action run, or found in a cache, during analysis (before the build).
#[derive(Debug, Clone)]
pub struct Done {
    pub result: ActionResult,
    pub status: Status,
    /// Found in a remote cache.
    pub remote: bool,
}

/// What running an action ends with.
pub type Outcome = std::result::Result<Ran, Box<Failure>>;

/// An action that ran and succeeded: its result (not yet in the action cache) and,
/// for an action with reads, what it read.
#[derive(Debug, Clone)]
pub struct Ran {
    pub result: ActionResult,
    pub reads: Option<Discovered>,
}

/// What the process wrote to the sandbox's `.kiln/stdout` or `.kiln/stderr`.
fn capture(sandbox: &Sandbox, name: &str) -> Vec<u8> {
    std::fs::read(sandbox.root().join(".kiln").join(name)).unwrap_or_default()
}

/// How much of a failed action's stdout or stderr kiln keeps to show: the end of it.
pub const SHOWN_OUTPUT: usize = 1 << 20;

/// A failure of an action that ran, with what it printed (the sandbox's captures
/// unless given). Output beyond [`SHOWN_OUTPUT`] is cut to its end; the whole of it is
/// kept in the cache's `logs/`, and the error says where.
fn failure(
    mut error: Error,
    sandbox: &Sandbox,
    captures: Option<(&[u8], &[u8])>,
    exit_code: i32,
) -> Box<Failure> {
    let mut kept = Vec::new();
    let mut shown = |name: &str, given: Option<&[u8]>| {
        let path = sandbox.root().join(".kiln").join(name);
        let (bytes, log) = match given {
            Some(bytes) => cap_bytes(sandbox, name, bytes),
            None => cap_file(sandbox, name, &path),
        };
        kept.extend(log.clone());
        (bytes, log)
    };
    let (stdout, stdout_log) = shown("stdout", captures.map(|c| c.0));
    let (stderr, _) = shown("stderr", captures.map(|c| c.1));
    if kiln_cache::disk_full(sandbox.root()) {
        // The action's own message may be lost with it (its captures could not be
        // written either).
        error.message.push_str(&format!(
            "; the disk holding {} is full (no space left on device)",
            sandbox.root().parent().unwrap_or(sandbox.root()).display()
        ));
    }
    for log in kept {
        error.message.push_str(&format!(
            "; its output was cut to the last {} MiB, the whole of it is in {}",
            SHOWN_OUTPUT >> 20,
            log.display()
        ));
    }
    Box::new(Failure {
        error,
        stdout,
        stdout_log,
        stderr,
        exit_code: Some(exit_code),
        reads: None,
    })
}

/// Where the whole of a cut output is kept: `<cache>/logs/` (the sandbox lies in
/// `<cache>/tmp/`), under a name no other log has (the members of a batch share
/// their sandbox).
fn log_path(sandbox: &Sandbox, name: &str) -> Option<PathBuf> {
    let cache = sandbox.root().parent()?.parent()?;
    let logs = cache.join("logs");
    std::fs::create_dir_all(&logs).ok()?;
    let stem = sandbox.root().file_name()?.to_string_lossy().into_owned();
    (1..1000)
        .map(|n| match n {
            1 => logs.join(format!("{stem}.{name}")),
            n => logs.join(format!("{stem}.{n}.{name}")),
        })
        .find(|path| std::fs::symlink_metadata(path).is_err())
}

/// A capture file's end, and where the whole of it was moved if it was too long.
fn cap_file(sandbox: &Sandbox, name: &str, path: &Path) -> (Vec<u8>, Option<PathBuf>) {
    use std::io::{Read, Seek, SeekFrom};
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    if len as usize <= SHOWN_OUTPUT {
        return (std::fs::read(path).unwrap_or_default(), None);
    }
    let mut tail = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(len - SHOWN_OUTPUT as u64));
        let _ = file.take(SHOWN_OUTPUT as u64).read_to_end(&mut tail);
    }
    let log = log_path(sandbox, name).filter(|log| std::fs::rename(path, log).is_ok());
    (tail, log)
}

/// Captured bytes' end, and where the whole of them was written if they were too long.
fn cap_bytes(sandbox: &Sandbox, name: &str, bytes: &[u8]) -> (Vec<u8>, Option<PathBuf>) {
    if bytes.len() <= SHOWN_OUTPUT {
        return (bytes.to_vec(), None);
    }
    let log = log_path(sandbox, name).filter(|log| std::fs::write(log, bytes).is_ok());
    (bytes[bytes.len() - SHOWN_OUTPUT..].to_vec(), log)
}

fn fail(error: Error) -> Box<Failure> {
    Box::new(Failure {
        error,
        stdout: Vec::new(),
        stdout_log: None,
        stderr: Vec::new(),
        exit_code: None,
        reads: None,
    })
}

/// An action that failed: why, and what it printed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: Error,
    /// The end of what the action printed (at most [`SHOWN_OUTPUT`]).
    pub stdout: Vec<u8>,
    /// Where the whole of stdout is kept when `stdout` is only its end.
    pub stdout_log: Option<PathBuf>,
    pub stderr: Vec<u8>,
    pub exit_code: Option<i32>,
    /// What it read, for an action with reads whose log could be read (for `explain`).
    pub reads: Option<Discovered>,
}

/// Shared state for running actions.
pub struct Executor {
    pub root: PathBuf,
    pub local: Arc<LocalStore>,
    pub store: Arc<dyn Store>,
    /// The sandbox asked for; `auto` is resolved when the first action runs, so a build
    /// that executes nothing never probes for bubblewrap.
    pub mode: SandboxMode,
    resolved_mode: std::sync::OnceLock<std::result::Result<SandboxMode, Error>>,
    /// What sandboxes hide and where the workspace is.
    pub host: Host,
    pub keep_sandbox_on_failure: bool,
    /// Whether outputs are placed under `kiln-out/` (off for `kiln verify-repro`'s
    /// second build, which must not touch the workspace).
    pub materialize: bool,
    /// Arguments for test actions from the command line (`kiln test -- ARGS`), which
    /// rules turn into their tests' flags.
    pub test_args: Vec<String>,
    /// Whether test actions run even where a result is cached (`kiln test --rerun`):
    /// a remote executor is then told not to answer from its own cache either.
    pub rerun_tests: bool,
    tool_digests: Mutex<HashMap<PathBuf, Digest>>,
    /// Source directories, each with where it really is (links followed), found once.
    real_dirs: Mutex<HashMap<PathBuf, Option<PathBuf>>>,
    last_keys: HashMap<String, kiln_cache::KeyEntry>,
    key_prefix: String,
    stamp: std::sync::OnceLock<BTreeMap<String, String>>,
    /// The store that actions with `store_access` reach through a socket (Go's compile
    /// cache); None: the store at [`crate::sandbox::go_cache_dir`], which is this
    /// executor's own when that is where its local store is.
    pub shared_store: Option<SharedStore>,
    /// The shared store's server and the directory of its blob files, once started.
    listener: std::sync::OnceLock<std::result::Result<(Listener, PathBuf), Error>>,
    /// Where actions that may run remotely run ([`crate::remote`]).
    pub remote: Option<Arc<dyn RemoteExecutor>>,
    /// Run actions here when the remote executor cannot be reached.
    pub remote_local_fallback: bool,
    /// Set once the remote executor failed and the build fell back to local runs.
    remote_off: AtomicBool,
    /// What ran remotely in this build.
    pub remote_stats: Arc<Mutex<RemoteStats>>,
    /// Bounds the actions that run on this machine when the scheduler has more workers
    /// than cores (for a remote executor's actions).
    pub local_slots: Slots,
}

/// A counting semaphore: at most `limit` holders at once (0: no limit).
#[derive(Default)]
pub struct Slots {
    limit: std::sync::atomic::AtomicUsize,
    taken: Mutex<usize>,
    freed: std::sync::Condvar,
}

/// A slot held until dropped.
pub struct Slot<'a>(&'a Slots);

impl Slots {
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Waits for a free slot.
    pub fn take(&self) -> Slot<'_> {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut taken = self.taken.lock().unwrap();
        while limit > 0 && *taken >= limit {
            taken = self.freed.wait(taken).unwrap();
        }
        *taken += 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.taken.lock().unwrap() -= 1;
        self.0.freed.notify_one();
    }
}

/// What ran on the remote executor in one build.
#[derive(Debug, Default, Clone)]
pub struct RemoteStats {
    /// Actions run remotely that succeeded (the engine's own cache hits included).
    pub executed: u64,
    /// Per action id: where it ran, its queue and transfer time.
    pub runs: HashMap<String, RemoteRun>,
}

impl RemoteStats {
    fn record(&mut self, action: &Action, run: &RemoteRun) {
        self.executed += u64::from(run.exit_code == 0);
        self.runs.insert(action.id(), run.clone());
    }
}

/// A store served to sandboxed actions (see [`kiln_cache::gocacheprog::Listener`]).
#[derive(Clone)]
pub struct SharedStore {
    pub store: Arc<dyn Store>,
    pub local: Arc<LocalStore>,
}

impl Executor {
    pub fn new(
        root: &Path,
        local: Arc<LocalStore>,
        store: Arc<dyn Store>,
        mode: SandboxMode,
    ) -> Result<Executor> {
        let key_prefix = key_prefix(root);
        let last_keys = local.last_keys(&key_prefix)?;
        // While the workspace is analysed; the first source hashed waits for it.
        local.load_file_states_in_background(root);
        crate::sandbox::remove_abandoned(&local.tmp_dir());
        let host = Host {
            workspace: root.to_path_buf(),
            cache: local.root().to_path_buf(),
        };
        Ok(Executor {
            root: root.to_path_buf(),
            local,
            store,
            mode,
            resolved_mode: std::sync::OnceLock::new(),
            host,
            keep_sandbox_on_failure: false,
            materialize: true,
            test_args: Vec::new(),
            rerun_tests: false,
            tool_digests: Mutex::new(HashMap::new()),
            real_dirs: Mutex::new(HashMap::new()),
            last_keys,
            key_prefix,
            stamp: std::sync::OnceLock::new(),
            shared_store: None,
            listener: std::sync::OnceLock::new(),
            remote: None,
            remote_local_fallback: false,
            remote_off: AtomicBool::new(false),
            remote_stats: Arc::default(),
            local_slots: Slots::default(),
        })
    }

    /// The workspace's stamp values, computed once per build (see [`crate::host::stamp_values`]).
    /// The text is also stored as a blob, so a stamp is content-addressed like any output.
    /// Whether any target used the stamp values in this build (they come from git, which
    /// the no-op fast path does not watch).
    pub fn stamp_used(&self) -> bool {
        self.stamp.get().is_some()
    }

    pub fn stamp(&self, defaults: &BTreeMap<String, String>) -> &BTreeMap<String, String> {
        self.stamp.get_or_init(|| {
            let values = crate::host::stamp_values(&self.root, defaults);
            let text: String = values.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
            let _ = self.store.put_bytes(text.as_bytes());
            values
        })
    }

    /// What an action with `store_access` or `store_view` is given, and the view to
    /// keep open while it runs: the socket of the shared store's server, with its token
    /// and blob files (`store_access`), or a view's token and directory (`store_view`).
    fn access_for(
        &self,
        spec: &ExecSpec,
        mode: SandboxMode,
    ) -> Result<(Option<StoreAccess>, Option<ViewHandle>)> {
        if !spec.store_access && !spec.store_view {
            return Ok((None, None));
        }
        let (listener, blobs) = self.listener()?;
        let mut access = StoreAccess {
            socket: listener.path().to_path_buf(),
            token: listener.token().to_string(),
            socket_dir: listener.dir().to_path_buf(),
            files: StoreFiles::Blobs(blobs.clone()),
        };
        if spec.store_access {
            return Ok((Some(access), None));
        }
        let seen = (mode == SandboxMode::Bwrap).then(|| Path::new(crate::sandbox::GOCACHE_VIEW));
        let view = listener.open_view(seen)?;
        access.token = view.token().to_string();
        access.files = StoreFiles::View(view.dir().to_path_buf());
        Ok((Some(access), Some(view)))
    }

    /// The shared store's server (started by the first action that reaches it) and the
    /// directory of its blob files.
    fn listener(&self) -> Result<&(Listener, PathBuf)> {
        let started = self.listener.get_or_init(|| {
            let mut shared = match &self.shared_store {
                Some(shared) => shared.clone(),
                None => self.default_shared_store()?,
            };
            if !self.isolated()? {
                // What unisolated processes put stays on this machine.
                shared.store = shared.local.clone();
            }
            let blobs = shared.local.root().join("cas");
            Ok((Listener::start(shared.store, shared.local)?, blobs))
        });
        started.as_ref().map_err(Clone::clone)
    }

    fn default_shared_store(&self) -> Result<SharedStore> {
        let dir = crate::sandbox::go_cache_dir();
        if dir == self.local.root() {
            return Ok(SharedStore {
                store: self.store.clone(),
                local: self.local.clone(),
            });
        }
        let local = Arc::new(LocalStore::open(&dir)?);
        Ok(SharedStore {
            store: local.clone(),
            local,
        })
    }

    /// How the shared store's server did in this build, if any action used it.
    pub fn shared_store_stats(&self) -> Option<kiln_cache::gocacheprog::ServeStats> {
        match self.listener.get() {
            Some(Ok((listener, _))) => Some(listener.stats()),
            _ => None,
        }
    }

    /// Waits for the stores' background work (uploads).
    pub fn flush(&self) -> Result<()> {
        self.store.flush()?;
        if let Some(Ok((listener, _))) = self.listener.get() {
            listener.flush()?;
        }
        Ok(())
    }

    /// The digest of a workspace source file (through the file-state table).
    pub fn source_input(&self, path: &str) -> Result<KeyInput> {
        let abs = self.root.join(path);
        let unread = |e: &dyn std::fmt::Display| {
            Error::new(
                ErrorKind::MissingFile,
                format!("read source file `{path}`: {e}"),
            )
        };
        let stat = |e| unread(&kiln_cache::Error::io("stat", &abs, e));
        // One lstat serves the link check and, for a file that is no link, the hash's
        // state check too.
        let meta = std::fs::symlink_metadata(&abs).map_err(stat)?;
        self.inside_workspace(path, &abs, &meta)?;
        let meta = match meta.file_type().is_symlink() {
            true => std::fs::metadata(&abs).map_err(stat)?,
            false => meta,
        };
        let hashed = self
            .local
            .file_states()
            .hash_with(&abs, &meta)
            .map_err(|e| unread(&e))?;
        Ok(KeyInput {
            path: path.to_string(),
            digest: hashed.digest,
            executable: hashed.executable,
        })
    }

    /// Fails if a source is a link (or below one) that leads out of the workspace: its
    /// bytes, a file of the host, would become an input (sent to a remote executor's
    /// store, embedded by `//go:embed`, which go itself refuses for links).
    fn inside_workspace(&self, path: &str, abs: &Path, meta: &std::fs::Metadata) -> Result<()> {
        let Some(real) = self.real_path(abs, meta) else {
            return Ok(());
        };
        let root = self
            .real_dir(&self.root)
            .unwrap_or_else(|| self.root.clone());
        if real.starts_with(&root) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::MissingFile,
            format!(
                "source file `{path}` is a link to {}, outside the workspace",
                real.display()
            ),
        )
        .hint("sources are the workspace's files; copy the file into the workspace"))
    }

    /// Where a source file really is: its directory's real path (found once per
    /// directory) and its name, or, for a file that is itself a link, where that leads.
    fn real_path(&self, abs: &Path, meta: &std::fs::Metadata) -> Option<PathBuf> {
        if meta.file_type().is_symlink() {
            return std::fs::canonicalize(abs).ok();
        }
        Some(self.real_dir(abs.parent()?)?.join(abs.file_name()?))
    }

    fn real_dir(&self, dir: &Path) -> Option<PathBuf> {
        if let Some(found) = self.real_dirs.lock().unwrap().get(dir) {
            return found.clone();
        }
        let found = std::fs::canonicalize(dir).ok();
        self.real_dirs
            .lock()
            .unwrap()
            .insert(dir.to_path_buf(), found.clone());
        found
    }

    /// The identity of a tool: the digest of its file, or of its whole tree.
    pub fn tool_digest(&self, tool: &Tool) -> Result<Digest> {
        if let Some(d) = self.tool_digests.lock().unwrap().get(&tool.path) {
            return Ok(*d);
        }
        let digest = if tool.tree {
            let memo = self.local.root().join("trees");
            let load = || Ok(self.local.load_file_states(&tool.path)?);
            crate::tree::remembered_tree_digest(&tool.path, self.local.file_states(), &memo, load)?
        } else {
            let real = std::fs::canonicalize(&tool.path)
                .map_err(|e| Error::io("resolve tool", &tool.path, e))?;
            self.local.file_states().hash(&real)?.digest
        };
        self.tool_digests
            .lock()
            .unwrap()
            .insert(tool.path.clone(), digest);
        Ok(digest)
    }

    /// Name → digest of each tool.
    pub fn tool_digests(&self, tools: &[Tool]) -> Result<BTreeMap<String, Digest>> {
        tools
            .iter()
            .map(|t| Ok((t.name.clone(), self.tool_digest(t)?)))
            .collect()
    }

    /// Builds the key record of an action from its inputs' digests.
    pub fn key_record(&self, action: &Action, inputs: Vec<KeyInput>) -> Result<KeyRecord> {
        let mut inputs = inputs;
        inputs.sort_by(|a, b| a.path.cmp(&b.path));
        inputs.dedup_by(|a, b| a.path == b.path);
        let record = match &action.kind {
            ActionKind::Exec(spec) => {
                let tools = self.tool_digests(&spec.tools)?;
                KeyRecord {
                    schema: KEY_SCHEMA,
                    kind: "exec".into(),
                    version: 0,
                    params: serde_json::Value::Null,
                    tools,
                    argv: spec.argv.clone(),
                    env: spec.env.clone(),
                    workdir: spec.workdir.clone(),
                    inputs,
                    outputs: action.outputs.clone(),
                    platform: action.platform.clone(),
                    network: spec.network,
                    attempts: spec.batch.as_ref().map_or(1, |b| b.attempts),
                    reads: spec.reads.as_ref().map(|r| r.dir.clone()),
                    discovered: None,
                    unisolated: !self.isolated()?,
                }
            }
            ActionKind::Builtin(b) => KeyRecord {
                schema: KEY_SCHEMA,
                kind: format!("builtin:{}", b.name),
                version: b.version,
                params: b.params.clone(),
                tools: self.tool_digests(&b.tools)?,
                argv: Vec::new(),
                env: BTreeMap::new(),
                workdir: String::new(),
                inputs,
                outputs: action.outputs.clone(),
                platform: action.platform.clone(),
                network: false,
                attempts: 1,
                reads: None,
                discovered: None,
                unisolated: false,
            },
        };
        Ok(record)
    }

    /// Remembers the key an action had in this build and how it ended, for
    /// `kiln explain` (written only when that differs from what is recorded).
    pub fn note_key(&self, action: &Action, key: &Digest, record: &KeyRecord, outcome: KeyOutcome) {
        let id = format!("{}{}", self.key_prefix, action.id());
        let known = self.last_keys.get(&id);
        let failed_before = known.is_some_and(|e| e.key == *key && e.outcome == KeyOutcome::Failed);
        let outcome = match outcome {
            KeyOutcome::Executed if failed_before => KeyOutcome::RetriedAfterFailure,
            other => other,
        };
        if known.is_none_or(|e| e.key != *key || e.outcome != outcome) {
            let json = serde_json::to_string(record).expect("key records serialize");
            self.local.record_key(&id, key, json, outcome);
        }
    }

    /// Whether actions run isolated (under bubblewrap). Results of unisolated runs are
    /// keyed apart (`unisolated` in their key records), so they are never served to
    /// isolated builds, and they are not uploaded.
    pub fn isolated(&self) -> Result<bool> {
        Ok(self.sandbox_mode()? == SandboxMode::Bwrap)
    }

    /// The sandbox mode actions run in (`auto` resolved).
    pub fn sandbox_mode(&self) -> Result<SandboxMode> {
        self.resolved_mode
            .get_or_init(|| self.mode.resolve(&self.local.root().join("bwrap-works")))
            .clone()
    }

    /// A hint for a process that found no program or file it needed (exit code 126 or
    /// 127, as shells give it) under bubblewrap, where a declared tool outside the
    /// host's system directories is in sight alone: a shim or a script whose tree lies
    /// beside it fails so (pyenv's shims, a tool in `~/.local/bin`).
    fn not_found_hint(&self, action: &Action, exit_code: i32, error: Error) -> Error {
        let ActionKind::Exec(spec) = &action.kind else {
            return error;
        };
        if !matches!(exit_code, 126 | 127) || !matches!(self.sandbox_mode(), Ok(SandboxMode::Bwrap))
        {
            return error;
        }
        let alone = crate::sandbox::tools_seen_alone(spec);
        let Some(tool) = alone.first() else {
            return error;
        };
        error.hint(format!(
            "the tool `{}` ({}) lives outside the host's system directories (/usr, /opt, /etc, \
             /bin, /lib): the sandbox shows that file alone, not what lies beside it; a tool \
             that needs its own tree (a script's libraries, a version manager's shim) belongs \
             under /usr/local or /opt",
            tool.name,
            tool.path.display()
        ))
    }

    /// Runs an action in a fresh sandbox and stores its outputs. On success returns the
    /// result (not yet written to the action cache).
    pub fn execute(&self, action: &Action, inputs: &[(Artifact, KeyInput)]) -> Outcome {
        if action.batch().is_some() {
            // A batch of one, so that it runs (and retries) as it would with others.
            return self.execute_batch(&[(action, inputs)]).remove(0);
        }
        let started = Instant::now();
        // A builtin reads its source inputs in place (see `BuiltinCtx::input`).
        let builtin = matches!(action.kind, ActionKind::Builtin(_));
        let staged = inputs
            .iter()
            .filter(|(a, _)| !builtin || a.producer.is_some());
        let sandbox = self.prepare(staged, action.outputs.iter())?;
        let since = now_ns();
        let fresh = self.must_run(action);
        let (exit_code, emitted, written) =
            self.run(action, &action.kind, &sandbox, inputs, fresh)?;
        let emitted = self
            .store_emitted(emitted, inputs, &sandbox)
            .map_err(fail)?;
        let outcome = if exit_code != 0 {
            let why = format!("failed with exit code {exit_code}");
            let error = self.not_found_hint(action, exit_code, action.error(&why));
            Err(failure(error, &sandbox, None, exit_code))
        } else {
            self.result(action, sandbox.root(), None, emitted, &written, started)
                .map_err(|e| failure(e, &sandbox, None, exit_code))
        };
        let outcome = self.with_reads(action, &sandbox, since, outcome);
        if outcome.is_err() {
            self.maybe_keep(sandbox);
        }
        outcome
    }

    /// An outcome with what the action read, for an action with reads (a read that
    /// changed while it ran fails it).
    fn with_reads(
        &self,
        action: &Action,
        sandbox: &Sandbox,
        since: i64,
        outcome: std::result::Result<ActionResult, Box<Failure>>,
    ) -> Outcome {
        let reads = self.discover(action, sandbox, since);
        match (outcome, reads) {
            (Ok(result), Ok(reads)) => Ok(Ran { result, reads }),
            (Ok(_), Err(e)) => Err(failure(e, sandbox, None, 0)),
            (Err(mut f), reads) => {
                f.reads = reads.ok().flatten();
                Err(f)
            }
        }
    }

    /// A fresh sandbox holding the inputs, with the outputs' directories made.
    fn prepare<'a>(
        &self,
        inputs: impl Iterator<Item = &'a (Artifact, KeyInput)>,
        outputs: impl Iterator<Item = &'a String>,
    ) -> Result<Sandbox, Box<Failure>> {
        let mut sandbox = Sandbox::create(&self.local.tmp_dir()).map_err(fail)?;
        // Generated inputs are the store's own files: hard links that no process may
        // write, under bubblewrap (read-only binds), or copies.
        let copies = self.sandbox_mode().map_err(fail)? != SandboxMode::Bwrap;
        let mut generated = Vec::new();
        for (artifact, key) in inputs {
            self.stage_input(&sandbox, artifact, key, copies)
                .map_err(fail)?;
            if artifact.producer.is_some() {
                generated.push(artifact.path.as_str());
            }
        }
        let outputs: Vec<&String> = outputs.collect();
        for out in &outputs {
            let path = sandbox
                .prepare_path(out.trim_end_matches('/'))
                .map_err(fail)?;
            if out.ends_with('/') {
                std::fs::create_dir_all(&path).map_err(|e| fail(Error::io("create", &path, e)))?;
            }
        }
        sandbox.seal(seal_roots(&generated, &outputs));
        Ok(sandbox)
    }

    /// Whether kiln runs the action whatever a cache holds for it (a test under
    /// `kiln test --rerun`), so that an engine's own cache must not answer either.
    pub(super) fn must_run(&self, action: &Action) -> bool {
        self.rerun_tests && action.is_test()
    }

    /// Runs `kind` (the action's own, or a batch's shared process) in the sandbox;
    /// returns its exit code, the outputs a builtin gave as bytes, and the digests of
    /// the files a remote run wrote (checked as they were written). `fresh`: kiln
    /// decided it must run ([`Executor::must_run`], a retry of a failed attempt), so a
    /// remote engine must not answer from its own cache.
    fn run(
        &self,
        action: &Action,
        kind: &ActionKind,
        sandbox: &Sandbox,
        inputs: &[(Artifact, KeyInput)],
        fresh: bool,
    ) -> Result<(i32, Given, Written), Box<Failure>> {
        match kind {
            ActionKind::Exec(spec) => {
                let remote = self.run_remotely(action, kind, spec, sandbox, inputs, fresh)?;
                if let Some(run) = remote {
                    return Ok((run.exit_code, Vec::new(), run.written));
                }
                let _slot = self.local_slots.take();
                let mode = self.sandbox_mode().map_err(fail)?;
                let (access, view) = self.access_for(spec, mode).map_err(fail)?;
                let code = sandbox.run(spec, mode, &self.host, access.as_ref());
                drop(view);
                let code = code.map_err(fail)?;
                sandbox
                    .check_own()
                    .map_err(|why| fail(action.error(&why)))?;
                Ok((code, Vec::new(), Written::new()))
            }
            ActionKind::Builtin(b) => {
                let _slot = self.local_slots.take();
                let digests = self.tool_digests(&b.tools).map_err(fail)?;
                let (code, given) = run_builtin(b, sandbox, &self.root, action, &digests);
                Ok((code, given, Written::new()))
            }
        }
    }

    /// Runs the process on the remote executor if there is one and the action may run
    /// there ([`crate::remote::runs_remotely`]); None: run it here. An executor that
    /// cannot be reached fails the action, or, with `remote_local_fallback`, is named
    /// once and left for the rest of the build.
    fn run_remotely(
        &self,
        action: &Action,
        kind: &ActionKind,
        spec: &ExecSpec,
        sandbox: &Sandbox,
        inputs: &[(Artifact, KeyInput)],
        fresh: bool,
    ) -> Result<Option<RemoteRun>, Box<Failure>> {
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        if !crate::remote::runs_remotely(kind) || self.remote_off.load(Ordering::Relaxed) {
            return Ok(None);
        }
        sandbox.link_tools(&spec.tools).map_err(fail)?;
        let staged: HashMap<String, Digest> = inputs
            .iter()
            .map(|(artifact, key)| (artifact.path.clone(), key.digest))
            .collect();
        let (view, mut left_out) = match &spec.reads {
            Some(reads) => crate::sandbox::remote_view(&self.root, reads).map_err(fail)?,
            None => Default::default(),
        };
        if spec.reads.is_some() {
            // Tree tools are left out of such a root (see RemoteExecutor::run).
            let trees = spec.tools.iter().filter(|t| t.tree);
            left_out.extend(trees.map(|t| format!(".kiln/tools/{}", t.name)));
        }
        let spec = &remote_spec(spec);
        let outputs = &action.outputs;
        match remote.run(sandbox.root(), spec, &staged, &view, outputs, fresh) {
            Ok(mut run) => {
                if let Some(what) = self.reaches_beyond(sandbox, spec, &run, &left_out) {
                    eprintln!(
                        "kiln: warning: {}: its remote run {what}, which a worker's root \
                         does not hold as a sandbox here does; running it here",
                        action.describe()
                    );
                    sandbox.set_remote_root(None);
                    return Ok(None);
                }
                let written = std::mem::take(&mut run.written);
                self.remote_stats.lock().unwrap().record(action, &run);
                run.written = written;
                Ok(Some(run))
            }
            Err(e) if self.remote_local_fallback && e.kind == ErrorKind::Remote => {
                if !self.remote_off.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "kiln: warning: remote executor {}: {}; running actions here \
                         (--remote-local-fallback)",
                        remote.name(),
                        e.message
                    );
                }
                Ok(None)
            }
            Err(e) => Err(fail(action.error(&format!(
                "could not run on remote executor {}: {}",
                remote.name(),
                e.message
            )))),
        }
    }

    /// For an action with reads that ran remotely: notes the root its process saw (so
    /// that its log resolves against it), and says where the run reached what the
    /// worker's root did not hold as a local sandbox would: a path its log names
    /// ([`crate::reads::beyond`]), or, for a failed run, a program its output says it
    /// could not find that a local sandbox has on PATH ([`Self::left_out_program`]).
    /// A run that did not say where its root was leaves no log: what it read is unknown.
    fn reaches_beyond(
        &self,
        sandbox: &Sandbox,
        spec: &ExecSpec,
        run: &RemoteRun,
        left_out: &[String],
    ) -> Option<String> {
        let reads = spec.reads.as_ref()?;
        let log = sandbox.root().join(&reads.log);
        let Some(root) = &run.seen_root else {
            let _ = std::fs::remove_file(&log);
            return None;
        };
        sandbox.set_remote_root(Some(root.clone()));
        if run.exit_code != 0 {
            if let Some(found) = self.left_out_program(sandbox, spec, reads, root) {
                return Some(found);
            }
        }
        let entries = reads.parse.entries(&std::fs::read(&log).ok()?).ok()?;
        // In dir mode nothing is compiled in at a fixed path: no root but the worker's.
        let mode = self.sandbox_mode().ok()?;
        let fixed = crate::sandbox::fixed_root(mode).unwrap_or(root);
        crate::reads::beyond(&entries, root, &spec.workdir, fixed, left_out)
            .map(|path| format!("read {path}"))
    }

    /// A program a failed remote run could not find (as its output says) that a local
    /// sandbox finds on PATH in a tool tree left out of a worker's root (the Go
    /// toolchain's `go`), as `ran NAME (<root>/.kiln/tools/TOOL/…)`. The run's read log
    /// may not show the lookup: Go writes it only once a test's `TestMain` calls `Run`.
    fn left_out_program(
        &self,
        sandbox: &Sandbox,
        spec: &ExecSpec,
        reads: &crate::action::Reads,
        root: &Path,
    ) -> Option<String> {
        let mut output = std::fs::read(sandbox.root().join(".kiln/stdout")).unwrap_or_default();
        output.extend(std::fs::read(sandbox.root().join(".kiln/stderr")).unwrap_or_default());
        let names = reads.parse.not_found(&output);
        let path = spec.env.get("PATH")?;
        for tool in spec.tools.iter().filter(|t| t.tree) {
            // `{tool:NAME}` holds a colon: PATH splits once it is expanded.
            let host = tool.path.display().to_string();
            let expanded = path.replace(&format!("{{tool:{}}}", tool.name), &host);
            for dir in expanded.split(':') {
                let Ok(sub) = Path::new(dir).strip_prefix(&tool.path) else {
                    continue;
                };
                if let Some(name) = names.iter().find(|n| tool.path.join(sub).join(n).is_file()) {
                    let seen = root.join(".kiln/tools").join(&tool.name).join(sub);
                    return Some(format!("ran {name} ({})", seen.join(name).display()));
                }
            }
        }
        None
    }

    /// The result of an action that succeeded in the sandbox at `root`: its declared
    /// outputs, and its stdout and stderr (the sandbox's captures unless given).
    fn result(
        &self,
        action: &Action,
        root: &Path,
        captures: Option<(&[u8], &[u8])>,
        emitted: Vec<OutputFile>,
        written: &Written,
        started: Instant,
    ) -> Result<ActionResult> {
        let outputs = self.collect_outputs(action, root, emitted, written)?;
        let (stdout, stderr) = match captures {
            Some((out, err)) => (self.local.put_bytes(out)?, self.local.put_bytes(err)?),
            None => {
                let put = |name: &str| {
                    let rel = format!(".kiln/{name}");
                    let path = root.join(&rel);
                    match written.get(&rel) {
                        Some(digest) => self.local.put_file_move_verified(&path, *digest),
                        None => self.local.put_file_move(&path),
                    }
                };
                (put("stdout")?, put("stderr")?)
            }
        };
        Ok(ActionResult {
            outputs,
            exit_code: 0,
            stdout,
            stderr,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// The outputs a builtin gave without files, in the store: bytes are stored, and an
    /// output "the same as generated input X" is that input's blob.
    fn store_emitted(
        &self,
        given: Given,
        inputs: &[(Artifact, KeyInput)],
        sandbox: &Sandbox,
    ) -> Result<Vec<OutputFile>> {
        use crate::action::Emitted;
        let generated: HashMap<&str, &Digest> = inputs
            .iter()
            .filter(|(a, _)| a.producer.is_some())
            .map(|(a, key)| (a.path.as_str(), &key.digest))
            .collect();
        let store = |(path, given): (String, Emitted)| {
            let (digest, size) = match given {
                Emitted::Bytes(bytes) => (self.local.put_bytes(&bytes)?, bytes.len() as u64),
                Emitted::SameAs(input) => {
                    let digest = generated.get(input.as_str()).ok_or_else(|| {
                        let why =
                            format!("gives {path} as {input}, which is not a generated input");
                        Error::new(ErrorKind::Action, why)
                    })?;
                    let staged = sandbox.root().join(&input);
                    let meta =
                        std::fs::metadata(&staged).map_err(|e| Error::io("stat", &staged, e))?;
                    (**digest, meta.len())
                }
            };
            Ok(OutputFile {
                path,
                digest,
                size,
                executable: false,
            })
        };
        given.into_iter().map(store).collect()
    }

    fn maybe_keep(&self, sandbox: Sandbox) {
        if self.keep_sandbox_on_failure {
            let path = sandbox.keep();
            eprintln!(
                "kiln: kept the failed action's sandbox at {}",
                path.display()
            );
        }
    }

    /// Places an input in the sandbox: a source file copied (and checked to be what
    /// was hashed), a generated one linked from the store, or copied (`copy`).
    fn stage_input(
        &self,
        sandbox: &Sandbox,
        artifact: &Artifact,
        key: &KeyInput,
        copy: bool,
    ) -> Result<()> {
        let dest = sandbox.prepare_path(&artifact.path)?;
        if artifact.producer.is_none() {
            let src = self.root.join(&artifact.path);
            std::fs::copy(&src, &dest).map_err(|e| Error::io("copy input", &src, e))?;
            return self.check_unchanged(&src, &artifact.path, &key.digest);
        }
        let fetched = match copy {
            true => self.copy_blob(&key.digest, &dest)?,
            false => self.store.fetch(&key.digest, &dest)?,
        };
        if !fetched {
            let why = format!("find blob {} in the cache", key.digest);
            return Err(Error::new(ErrorKind::Cache, why));
        }
        fix_mode(&dest, key.executable)
    }

    /// A new file at `dest` with a blob's content (not a link to the store's file).
    fn copy_blob(&self, digest: &Digest, dest: &Path) -> Result<bool> {
        let mut file = std::fs::File::create(dest).map_err(|e| Error::io("create", dest, e))?;
        Ok(self.store.fetch_into(digest, &mut file)?)
    }

    /// Fails if the source at `src` is no longer as it was when it was hashed (it was
    /// edited while the build ran): the action would run on other bytes than its key
    /// names.
    fn check_unchanged(&self, src: &Path, rel: &str, digest: &Digest) -> Result<()> {
        let meta = std::fs::metadata(src).map_err(|e| Error::io("stat", src, e))?;
        match self.local.file_states().lookup(src, &meta) {
            Some(d) if d == *digest => Ok(()),
            _ => Err(Error::new(
                ErrorKind::Action,
                format!("source file `{rel}` changed during the build"),
            )
            .hint("run the build again")),
        }
    }

    fn collect_outputs(
        &self,
        action: &Action,
        root: &Path,
        emitted: Vec<OutputFile>,
        written: &Written,
    ) -> Result<Vec<OutputFile>> {
        let declared = |rel: &str| {
            let under = |out: &String| out.ends_with('/') && rel.starts_with(out.as_str());
            action.outputs.iter().any(|out| out == rel || under(out))
        };
        if let Some(out) = emitted.iter().find(|o| !declared(&o.path)) {
            return Err(action.error(&format!("gave an undeclared output: {}", out.path)));
        }
        let mut files: Vec<String> = Vec::new();
        let mut missing = Vec::new();
        for out in &action.outputs {
            let path = root.join(out.trim_end_matches('/'));
            // Never followed, nor a link in place of a directory on the way: a link
            // could lead anywhere on the host.
            let found = crate::sandbox::lstat_beneath(root, out).map_err(|(dir, what)| {
                action.error(&format!(
                    "made {dir}, a directory of its outputs, {what}; outputs must be regular files below real directories"
                ))
            })?;
            match (found, out.ends_with('/')) {
                (Some(meta), true) if meta.is_dir() => {
                    list_dir_files(action, &path, out, &mut files)?
                }
                (Some(meta), false) if meta.is_file() => files.push(out.clone()),
                (Some(meta), _) => return Err(not_regular(action, out, &meta)),
                (None, _) if emitted.iter().any(|o| o.path == *out) => {}
                (None, _) => missing.push(out.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(Error::new(
                ErrorKind::Action,
                format!(
                    "{} did not write its declared outputs: {}",
                    action.describe(),
                    missing.join(", ")
                ),
            ));
        }
        files
            .into_iter()
            .map(|rel| {
                let path = root.join(&rel);
                let meta =
                    std::fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
                let executable = meta.mode() & 0o111 != 0;
                // A file with other names (a link to an input, or to a host file where
                // nothing stops that) is copied: moving and sealing it would change them.
                // A file a remote run wrote was hashed as it was written.
                let digest = match (meta.nlink(), written.get(&rel)) {
                    (1, Some(digest)) => self.local.put_file_move_verified(&path, *digest)?,
                    (1, None) => self.local.put_file_move(&path)?,
                    _ => self.local.put_file(&path)?,
                };
                Ok(OutputFile {
                    path: rel,
                    digest,
                    size: meta.len(),
                    executable,
                })
            })
            .chain(emitted.into_iter().map(Ok))
            .collect()
    }

    /// Makes `kiln-out/…` hold the result's outputs (hard links or copies from the CAS).
    pub fn materialize(&self, result: &ActionResult) -> Result<()> {
        if !self.materialize {
            return Ok(());
        }
        for out in &result.outputs {
            let in_out_dir = out
                .path
                .strip_prefix(crate::workspace::OUT_DIR)
                .is_some_and(|rest| rest.starts_with('/'));
            if !in_out_dir || !crate::action::is_normal(&out.path) {
                continue;
            }
            let dest = self.root.join(&out.path);
            if self.is_materialized(&dest, out) {
                continue;
            }
            real_dirs(&self.root, &out.path)?;
            if !self.store.fetch(&out.digest, &dest)? {
                return Err(Error::new(
                    ErrorKind::Cache,
                    format!("find blob {} for {}", out.digest, out.path),
                ));
            }
            fix_mode(&dest, out.executable)?;
        }
        Ok(())
    }

    fn is_materialized(&self, dest: &Path, out: &OutputFile) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(dest) else {
            return false;
        };
        if !meta.is_file() || meta.len() != out.size || (meta.mode() & 0o111 != 0) != out.executable
        {
            return false;
        }
        let blob = self.local.blob_path(&out.digest);
        if std::fs::metadata(&blob).is_ok_and(|b| b.ino() == meta.ino() && b.dev() == meta.dev()) {
            return true;
        }
        self.local.file_states().lookup(dest, &meta) == Some(out.digest)
    }
}

/// What to make read-only in a sandbox so that no generated input can be written: for
/// each, the highest directory below `kiln-out/` that holds no output (or the input
/// itself), each once (a tree of downloaded modules is one mount, not thousands).
fn seal_roots(generated: &[&str], outputs: &[&String]) -> Vec<String> {
    let holds_output = |dir: &str| {
        outputs.iter().any(|o| {
            let o = o.trim_end_matches('/');
            o == dir || o.starts_with(&format!("{dir}/")) || dir.starts_with(&format!("{o}/"))
        })
    };
    let mut roots: Vec<String> = Vec::new();
    for path in generated {
        let mut top = path.to_string();
        while let Some((parent, _)) = top.rsplit_once('/') {
            if parent == crate::workspace::OUT_DIR || holds_output(parent) {
                break;
            }
            top = parent.to_string();
        }
        roots.push(top);
    }
    roots.sort();
    roots.dedup();
    let mut out: Vec<String> = Vec::new();
    for root in roots {
        if !out.iter().any(|r| root.starts_with(&format!("{r}/"))) {
            out.push(root);
        }
    }
    out
}

/// Makes every directory of `rel`'s parent below `root` a real directory: one that is
/// a link or a file is replaced, so that what is placed at `rel` lands below `root`
/// (kiln-out/ is kiln's own).
fn real_dirs(root: &Path, rel: &str) -> Result<()> {
    let mut dir = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => std::fs::remove_file(&dir).map_err(|e| Error::io("remove", &dir, e))?,
            Err(_) => {}
        }
        std::fs::create_dir(&dir).map_err(|e| Error::io("create", &dir, e))?;
    }
    Ok(())
}

/// The prefix of the ids under which a workspace's last action keys are recorded.
pub fn key_prefix(root: &Path) -> String {
    format!("{}\t", root.display())
}

/// Gives a fetched file the wanted executable bit, copying it if it is a hard link into
/// the CAS whose mode differs (so the stored blob is never changed).
fn fix_mode(path: &Path, executable: bool) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if (meta.mode() & 0o111 != 0) == executable {
        return Ok(());
    }
    // A new file of a fresh name: a fixed one could be a link planted in a checked-in
    // kiln-out/, which the copy and the chmod would follow to a file of the host.
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-mode")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, e))?;
    std::fs::copy(path, tmp.path()).map_err(|e| Error::io("copy", path, e))?;
    let mode = if executable { 0o555 } else { 0o444 };
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", tmp.path(), e))?;
    tmp.persist(path)
        .map(drop)
        .map_err(|e| Error::io("rename", path, e.error))
}

/// The files below a directory output, as outputs; anything but files and directories
/// (a link, a fifo) fails the action.
fn list_dir_files(action: &Action, dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry =
            entry.map_err(|e| Error::new(ErrorKind::Io, format!("walk {}: {e}", dir.display())))?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let name = format!("{prefix}{}", rel.display());
        if entry.file_type().is_file() {
            out.push(name);
        } else if !entry.file_type().is_dir() {
            let meta = std::fs::symlink_metadata(entry.path())
                .map_err(|e| Error::io("stat", entry.path(), e))?;
            return Err(not_regular(action, &name, &meta));
        }
    }
    Ok(())
}

/// An output that is not a regular file (or, for a directory output, a directory).
fn not_regular(action: &Action, output: &str, meta: &std::fs::Metadata) -> Error {
    let what = match crate::sandbox::kind_of(meta) {
        "a regular file" => "a regular file where a directory was declared",
        what => what,
    };
    action.error(&format!(
        "wrote {output} as {what}; outputs must be regular files (a directory output, declared with a trailing /, a directory of them)"
    ))
}

/// Runs a builtin: its exit code (1 with the message on stderr if it failed) and the
/// outputs it gave as bytes.
fn run_builtin(
    b: &Builtin,
    sandbox: &Sandbox,
    sources: &Path,
    action: &Action,
    tool_digests: &BTreeMap<String, Digest>,
) -> (i32, Given) {
    let ctx = BuiltinCtx::new(
        sandbox.root(),
        sources,
        &action.inputs,
        &action.outputs,
        &b.params,
        tool_digests,
    );
    let outcome = (b.run)(&ctx);
    let printed = ctx.take_printed();
    if !printed.is_empty() {
        let _ = std::fs::write(sandbox.root().join(".kiln/stdout"), printed.as_bytes());
    }
    match outcome {
        Ok(()) => (0, ctx.take_emitted()),
        Err(message) => {
            let _ = std::fs::write(sandbox.root().join(".kiln/stderr"), message.as_bytes());
            (1, Vec::new())
        }
    }
}

/// Outputs a builtin gave without files, as it gave them.
type Given = Vec<(String, crate::action::Emitted)>;

/// The spec a remote worker runs: environment values that are not in keys expanded
/// here ([`crate::sandbox::is_volatile`]), so that a test reading USER sees this
/// machine's value, the one its result is keyed by.
fn remote_spec(spec: &ExecSpec) -> ExecSpec {
    let mut spec = spec.clone();
    for value in spec.env.values_mut() {
        if crate::sandbox::is_volatile(value) {
            *value = crate::sandbox::expand_volatile(value);
        }
    }
    spec
}

/// The BLAKE3 digests of files a remote run wrote into the sandbox, by relative path.
type Written = HashMap<String, Digest>;

/// The time now, in nanoseconds since the epoch (as file times are compared).
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The members of a batch share their sandbox; each keeps its own whole output.
    #[test]
    fn outputs_cut_in_one_sandbox_are_kept_whole_apart() {
        let cache = tempfile::tempdir().unwrap();
        let tmp = cache.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let sandbox = Sandbox::create(&tmp).unwrap();
        let kept: Vec<PathBuf> = [b'a', b'b']
            .iter()
            .map(|&byte| {
                let (shown, log) = cap_bytes(&sandbox, "stdout", &vec![byte; SHOWN_OUTPUT + 1]);
                assert_eq!(shown.len(), SHOWN_OUTPUT);
                log.expect("the whole of it is kept")
            })
            .collect();
        assert_ne!(kept[0], kept[1]);
        assert!(kept
            .iter()
            .all(|p| p.starts_with(cache.path().join("logs"))));
        assert_eq!(std::fs::read(&kept[0]).unwrap()[0], b'a');
        assert_eq!(std::fs::read(&kept[1]).unwrap()[0], b'b');
    }

    #[test]
    fn generated_inputs_are_sealed_by_their_highest_directory_without_outputs() {
        let outs = [
            "kiln-out/p/t/out.txt".to_string(),
            "kiln-out/p/gen/".to_string(),
        ];
        let outs: Vec<&String> = outs.iter().collect();
        let generated = [
            "kiln-out/p/.gomodcache/a/b.go",
            "kiln-out/p/.gomodcache/c.go",
            "kiln-out/p/t/in.txt",
            "kiln-out/q/x/bin",
            "kiln-out/top.txt",
        ];
        assert_eq!(
            seal_roots(&generated, &outs),
            [
                "kiln-out/p/.gomodcache",
                "kiln-out/p/t/in.txt",
                "kiln-out/q",
                "kiln-out/top.txt"
            ]
        );
    }
}
