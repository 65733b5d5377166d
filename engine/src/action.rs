//! The action model: the unit of execution and of caching.
//!
//! An action reads declared input [`Artifact`]s, placed in its sandbox at their
//! workspace-relative paths, and writes declared outputs (paths under `kiln-out/`). It is
//! either an [`ExecSpec`] (a process) or a [`Builtin`] (a Rust function of kiln with a
//! version number). Rules create actions; the engine runs them.
//!
//! Argument and environment strings may hold placeholders, expanded only when the action
//! runs, so that machine-specific paths never enter an action key:
//!
//! | placeholder   | expands to                                             |
//! |---------------|--------------------------------------------------------|
//! | `{tool:NAME}` | the host path of the declared tool NAME                |
//! | `{sandbox}`   | the absolute path of the sandbox root                  |
//! | `{kiln}`      | the running kiln binary (for helpers like gocacheprog) |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::label::Label;
use crate::outputs::{OutputIndex, Problem};

/// Index of an action in its [`ActionGraph`].
pub type ActionId = usize;

/// A file an action reads: a source file of the workspace, or an output of another action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Artifact {
    /// Workspace-relative path, e.g. `pkg/in.txt` or `kiln-out/pkg/upper.txt`.
    pub path: String,
    /// The action that writes it; None for source files.
    pub producer: Option<ActionId>,
    /// The platform (`os/arch`) it was built for, where that means something.
    pub platform: Option<String>,
}

impl Artifact {
    pub fn source(path: impl Into<String>) -> Artifact {
        Artifact {
            path: path.into(),
            producer: None,
            platform: None,
        }
    }

    /// The file name, without directories.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// A host tool an action uses. Its identity in the action key is the digest of its
/// content (a file), or of every file below it (a tree, such as a Go toolchain's GOROOT),
/// never its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub name: String,
    pub path: PathBuf,
    pub tree: bool,
}

/// A process: argv, environment, tools.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// The whole environment, apart from HOME, TMPDIR and PATH, which the sandbox sets
    /// (PATH is kept if given, with the sandbox's tool directory put first).
    pub env: BTreeMap<String, String>,
    pub tools: Vec<Tool>,
    /// Sandbox-relative working directory ("" = the sandbox root).
    pub workdir: String,
    /// Network access (only for fixed-output actions whose outputs are verified).
    pub network: bool,
    /// Whether the process reaches the build's shared store (Go's compile cache, whose
    /// entries are keyed by everything that went into them, so sharing them keeps builds
    /// hermetic): `KILN_STORE_SOCKET` names the socket of the build's server for it, and
    /// under bubblewrap its blob files are visible read-only.
    pub store_access: bool,
    /// Whether the process may read Go's compile cache without adding to it (the go
    /// commands a test runs, a repository's vet tool): `KILN_STORE_SOCKET` names the
    /// socket, its token opens a view (`kiln_cache::gocacheprog::View`) whose hits are
    /// copies in a directory the process sees read-only; the store's blob files stay out
    /// of sight. Ignored when `store_access` is set.
    pub store_view: bool,
    /// Whether actions like this one may share a process (see [`Batch`]).
    pub batch: Option<Batch>,
    /// A directory the process may read anything below, whose files join the key only
    /// as far as the process read them (see [`Reads`]).
    pub reads: Option<Reads>,
    /// Whether it runs tests: `kiln test --rerun` runs it even when its result is
    /// cached, as `go test -count=1` does.
    pub test: bool,
}

/// Inputs an action discovers as it runs, as Go's test cache records what a test opened.
///
/// The process sees the workspace directory `dir` read-only at its place in the sandbox
/// (a bind mount under bubblewrap, links in `dir` mode) and writes a log of what it read
/// to `log` (sandbox-relative). The action's key is then two-level:
///
/// 1. the key of its declared inputs alone (`K1`) names a *read set*: the files and
///    directories below `dir` that the last run read;
/// 2. the result is stored under `K2`, the key record extended by the state of every
///    entry of that read set (a file's digest, a directory's listing, or its absence).
///
/// A lookup finds the read set under `K1`, computes `K2` from the workspace as it is, and
/// looks that up: an edit to a file the process never read reruns nothing. Reads
/// outside `dir` are not keyed (the toolchain, the host's files, scratch space).
#[derive(Clone)]
pub struct Reads {
    /// Workspace-relative directory ("" for the whole workspace, `kiln-out/` excluded).
    pub dir: String,
    /// Sandbox-relative path of the log.
    pub log: String,
    pub parse: Arc<dyn ReadLog>,
    /// Whether the files of the working directory (a directory below `dir`) are
    /// writable copies, as a test's package directory is under `go test`: what the
    /// process writes there is thrown away with the sandbox. Under bubblewrap only.
    pub scratch_workdir: bool,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reads({:?}, log {:?})", self.dir, self.log)
    }
}

/// One entry of a read log, paths as the process gave them (relative ones resolve
/// against the working directory of the time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    Open(String),
    Stat(String),
    Chdir(String),
    Getenv(String),
}

/// How a rule reads its actions' read logs.
pub trait ReadLog: Send + Sync {
    /// The entries of a log, in order; an error if it is malformed.
    fn entries(&self, log: &[u8]) -> Result<Vec<LogEntry>, String>;

    /// The programs a failed run's output says it could not find on PATH, by the names
    /// it looked for. Such a lookup may leave no log entry (a test's `TestMain` runs
    /// before Go writes its log): a remote run that missed a program the local sandbox
    /// has runs again here.
    fn not_found(&self, _output: &[u8]) -> Vec<String> {
        Vec::new()
    }
}

/// Exec actions that may share one process, as `go test` runs many packages at once.
///
/// Misses whose specs agree on everything but their last [`Batch::member_args`]
/// arguments run as one process: the common arguments followed by every member's own.
/// The rule's [`BatchSplit`] then tells each member's part of the output apart. Keys
/// stay per member, the key the action has alone, so a batch is only a way of running:
/// each member is cached, replayed and explained by itself.
///
/// The shared sandbox holds every member's inputs. So that a member sees only its own,
/// as alone, the process finds the members' own arguments and inputs in
/// `.kiln/batch.json` ([`crate::executor::BatchFile`], path in `KILN_BATCH`): Go's
/// tests run each test binary through a wrapper that copies its package's inputs apart
/// (the kiln binary's `go-test-exec`).
#[derive(Clone)]
pub struct Batch {
    /// How many trailing `argv` entries are this member's own (e.g. a Go package).
    pub member_args: usize,
    /// Runs in all for a member that fails (1: no retry). A retry reruns only the
    /// members that failed, together. It enters the key: it changes what is recorded.
    pub attempts: u32,
    pub split: Arc<dyn BatchSplit>,
    /// False runs every member alone (as a batch of one): a sandbox, network namespace
    /// and process tree of its own.
    pub shared: bool,
    /// Arguments (put before the members' own) that make the process write every
    /// output itself, for members whose outputs it only named by digest
    /// ([`MemberOutput::named`]) where the store no longer holds them. Not in the key:
    /// they change how an output is made, not what it is.
    pub fresh_args: Vec<String>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Batch(member_args {}, attempts {})",
            self.member_args, self.attempts
        )
    }
}

/// One member's part of a shared run's output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberOutput {
    pub stdout: Vec<u8>,
    pub passed: bool,
    /// Outputs the process named by digest instead of writing them (it replayed its
    /// result from a cache of its own): the store supplies those it holds.
    pub named: Vec<NamedOutput>,
}

/// An output given by its digest, as a process reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedOutput {
    /// Sandbox-relative; it must be one of the member's declared outputs.
    pub path: String,
    pub digest: kiln_cache::Digest,
    pub size: u64,
    pub executable: bool,
}

/// How a rule reads a shared run's output back into its members'.
pub trait BatchSplit: Send + Sync {
    /// Each member's part of `stdout`, in the order of `members` (their
    /// discriminators); None where the output says nothing of a member.
    fn split(&self, stdout: &[u8], members: &[&str]) -> Vec<Option<MemberOutput>>;

    /// The stdout recorded for a member that passed on attempt `failed.len() + 1`,
    /// after the failed attempts' outputs `failed`.
    fn retried(&self, failed: &[Vec<u8>], passed: &[u8]) -> Vec<u8>;
}

/// What a builtin action's function sees.
pub struct BuiltinCtx<'a> {
    /// The sandbox root: generated inputs (under `kiln-out/`) are at their
    /// workspace-relative paths below it, and file outputs are written there.
    pub root: &'a Path,
    /// The workspace root, where source inputs are read in place: a builtin never
    /// writes its inputs, so they are not copied into the sandbox ([`BuiltinCtx::input`]).
    pub sources: &'a Path,
    pub inputs: &'a [Artifact],
    pub outputs: &'a [String],
    pub params: &'a serde_json::Value,
    /// The digests of the builtin's declared tools, by name (e.g. for provenance).
    pub tool_digests: &'a BTreeMap<String, kiln_cache::Digest>,
    emitted: std::sync::Mutex<Vec<(String, Emitted)>>,
    printed: std::sync::Mutex<String>,
}

/// An output a builtin gave without writing a file ([`BuiltinCtx::emit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emitted {
    Bytes(Vec<u8>),
    /// The same content as this generated input (workspace-relative path).
    SameAs(String),
}

impl<'a> BuiltinCtx<'a> {
    pub fn new(
        root: &'a Path,
        sources: &'a Path,
        inputs: &'a [Artifact],
        outputs: &'a [String],
        params: &'a serde_json::Value,
        tool_digests: &'a BTreeMap<String, kiln_cache::Digest>,
    ) -> BuiltinCtx<'a> {
        BuiltinCtx {
            root,
            sources,
            inputs,
            outputs,
            params,
            tool_digests,
            emitted: Default::default(),
            printed: Default::default(),
        }
    }

    /// Where to read the input at workspace-relative `path`: generated files in the
    /// sandbox, source files in the workspace.
    pub fn input(&self, path: &str) -> PathBuf {
        let generated = path
            .strip_prefix(crate::workspace::OUT_DIR)
            .is_some_and(|rest| rest.starts_with('/'));
        match generated {
            true => self.root.join(path),
            false => self.sources.join(path),
        }
    }

    /// An output given by its content instead of a file: it goes straight into the
    /// store, so an output the store already holds costs no file at all. `path` is
    /// a declared output or lies below a declared directory.
    pub fn emit(&self, path: impl Into<String>, bytes: Vec<u8>) {
        self.emitted
            .lock()
            .unwrap()
            .push((path.into(), Emitted::Bytes(bytes)));
    }

    /// An output with the content of the generated input at `input` (under `kiln-out/`),
    /// which the store holds already: nothing is read or written.
    pub fn emit_input(&self, path: impl Into<String>, input: &str) {
        let same = Emitted::SameAs(input.to_string());
        self.emitted.lock().unwrap().push((path.into(), same));
    }

    /// Text for the action's stdout: shown to the user when the action has
    /// `show_output`, and replayed with its cached result.
    pub fn print(&self, text: &str) {
        self.printed.lock().unwrap().push_str(text);
    }

    /// What [`BuiltinCtx::print`] was given.
    pub fn take_printed(&self) -> String {
        std::mem::take(&mut self.printed.lock().unwrap())
    }

    /// The outputs given by [`BuiltinCtx::emit`] and [`BuiltinCtx::emit_input`], in order.
    pub fn take_emitted(&self) -> Vec<(String, Emitted)> {
        std::mem::take(&mut self.emitted.lock().unwrap())
    }
}

pub type BuiltinFn = dyn Fn(&BuiltinCtx) -> Result<(), String> + Send + Sync;

/// A Rust function of kiln run as an action. `name`, `version` and `params` enter the key:
/// bump `version` whenever the function's output for the same inputs changes.
#[derive(Clone)]
pub struct Builtin {
    pub name: String,
    pub version: u32,
    pub params: serde_json::Value,
    /// Tools whose identity the function reports (they enter the key like an exec
    /// action's tools); the function does not run them.
    pub tools: Vec<Tool>,
    pub run: Arc<BuiltinFn>,
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Builtin({} v{})", self.name, self.version)
    }
}

#[derive(Debug, Clone)]
pub enum ActionKind {
    Exec(ExecSpec),
    Builtin(Builtin),
}

#[derive(Debug, Clone)]
pub struct Action {
    /// The target that owns it.
    pub owner: Label,
    /// A short kind, e.g. `Genrule`, `GoTest`, `GoBuild`.
    pub mnemonic: String,
    /// Tells actions of one target apart (a Go package, a platform); "" if only one.
    pub discriminator: String,
    pub inputs: Vec<Artifact>,
    /// Workspace-relative output paths, each under `kiln-out/`. A path ending in `/`
    /// is a directory whose whole content is the output.
    pub outputs: Vec<String>,
    pub kind: ActionKind,
    pub platform: Option<String>,
    /// Whether a user wants to see its stdout (test logs), replayed on cache hits.
    pub show_output: bool,
}

impl Action {
    /// A stable name, unique within a workspace, used for `kiln explain`.
    pub fn id(&self) -> String {
        if self.discriminator.is_empty() {
            format!("{} {}", self.owner, self.mnemonic)
        } else {
            format!("{} {} {}", self.owner, self.mnemonic, self.discriminator)
        }
    }

    /// What progress lines show.
    pub fn describe(&self) -> String {
        if self.discriminator.is_empty() {
            format!("{} {}", self.mnemonic, self.owner)
        } else {
            format!("{} {} [{}]", self.mnemonic, self.owner, self.discriminator)
        }
    }

    /// An error of this action: what progress lines call it, then `why`.
    pub fn error(&self, why: &str) -> crate::Error {
        crate::Error::new(
            crate::ErrorKind::Action,
            format!("{} {why}", self.describe()),
        )
    }

    /// Whether a result (from a cache, local or remote) is exactly this action's: its
    /// outputs are the declared ones (each declared file once, files below a declared
    /// directory), every path relative and normal, none twice, and it succeeded.
    pub fn check_result(&self, result: &kiln_cache::ActionResult) -> Result<(), String> {
        if result.exit_code != 0 {
            return Err(format!("it records exit code {}", result.exit_code));
        }
        let mut seen = std::collections::BTreeSet::new();
        for out in &result.outputs {
            if !is_normal(&out.path) {
                return Err(format!(
                    "output path `{}` is not a plain relative path",
                    out.path
                ));
            }
            let under = |d: &String| d.ends_with('/') && out.path.starts_with(d.as_str());
            if !self.outputs.iter().any(|d| *d == out.path || under(d)) {
                return Err(format!("output `{}` is not a declared output", out.path));
            }
            if !seen.insert(out.path.as_str()) {
                return Err(format!("output `{}` is there twice", out.path));
            }
        }
        match self
            .outputs
            .iter()
            .find(|d| !d.ends_with('/') && !seen.contains(d.as_str()))
        {
            Some(missing) => Err(format!("declared output `{missing}` is missing")),
            None => Ok(()),
        }
    }

    /// Whether it runs tests ([`ExecSpec::test`]).
    pub fn is_test(&self) -> bool {
        matches!(&self.kind, ActionKind::Exec(spec) if spec.test)
    }

    /// How the action may share a process with others, if it may.
    pub fn batch(&self) -> Option<&Batch> {
        match &self.kind {
            ActionKind::Exec(spec) => spec.batch.as_ref(),
            ActionKind::Builtin(_) => None,
        }
    }

    /// Actions with equal groups may run as one process (see [`Batch`]); None for an
    /// action that runs alone. Equal groups mean equal specs but for the members' own
    /// arguments.
    pub fn batch_group(&self) -> Option<String> {
        let (ActionKind::Exec(spec), Some(batch)) = (&self.kind, self.batch()) else {
            return None;
        };
        let common = spec.argv.len().checked_sub(batch.member_args)?;
        let tools: Vec<_> = spec
            .tools
            .iter()
            .map(|t| (&t.name, &t.path, t.tree))
            .collect();
        let alone = if batch.shared {
            ""
        } else {
            &self.discriminator
        };
        // The platform is not part of it: a member's own arguments may name it (one
        // `go build` each for several platforms).
        Some(format!(
            "{} {alone} {} {:?} {:?} {tools:?} {:?} {} {} {}",
            self.mnemonic,
            batch.attempts,
            &spec.argv[..common],
            spec.env,
            spec.workdir,
            spec.network,
            spec.store_access,
            spec.store_view,
        ))
    }

    /// The artifact this action writes at `path`.
    pub fn output_artifact(&self, id: ActionId, path: &str) -> Artifact {
        Artifact {
            path: path.to_string(),
            producer: Some(id),
            platform: self.platform.clone(),
        }
    }
}

/// Every action of a build, in the order rules added them.
#[derive(Debug, Default)]
pub struct ActionGraph {
    pub actions: Vec<Action>,
    pub by_target: BTreeMap<Label, Vec<ActionId>>,
    /// Which action writes each output.
    outputs: OutputIndex,
}

impl ActionGraph {
    /// Adds an action. An output that another action writes too, or that is not below
    /// `kiln-out/`, is noted for [`ActionGraph::take_problem`] (the action is added
    /// still, so that the rule adding it goes on; the plan stops after its target).
    pub fn add(&mut self, action: Action) -> ActionId {
        let id = self.actions.len();
        self.outputs.insert(id, &action.outputs);
        self.by_target
            .entry(action.owner.clone())
            .or_default()
            .push(id);
        self.actions.push(action);
        id
    }

    /// The action that writes the output `path`, if one does.
    pub fn writer(&self, path: &str) -> Option<ActionId> {
        self.outputs.writer(path)
    }

    /// The first output problem (two writers of one path, a path outside `kiln-out/`)
    /// since the last call.
    pub fn take_problem(&mut self) -> Option<Problem> {
        self.outputs.take_problem()
    }

    /// The distinct actions whose outputs `id` reads.
    pub fn deps(&self, id: ActionId) -> Vec<ActionId> {
        let mut deps: Vec<ActionId> = self.actions[id]
            .inputs
            .iter()
            .filter_map(|a| a.producer)
            .collect();
        deps.sort_unstable();
        deps.dedup();
        deps
    }

    /// `roots` and every action they depend on.
    pub fn closure(&self, roots: &[ActionId]) -> Vec<ActionId> {
        let mut seen = vec![false; self.actions.len()];
        let mut stack: Vec<ActionId> = roots.to_vec();
        let mut out = Vec::new();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id], true) {
                continue;
            }
            out.push(id);
            stack.extend(self.deps(id));
        }
        out.sort_unstable();
        out
    }
}

/// Whether `path` is relative and normal: no leading `/`, no empty, `.` or `..` part.
pub fn is_normal(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_cache::{ActionResult, Digest, OutputFile};

    fn action(outputs: &[&str]) -> Action {
        Action {
            owner: Label::new("", "t"),
            mnemonic: "T".into(),
            discriminator: String::new(),
            inputs: Vec::new(),
            outputs: outputs.iter().map(|o| o.to_string()).collect(),
            kind: ActionKind::Exec(ExecSpec::default()),
            platform: None,
            show_output: false,
        }
    }

    fn result(paths: &[&str]) -> ActionResult {
        let d = Digest::of_bytes(b"");
        ActionResult {
            outputs: paths
                .iter()
                .map(|p| OutputFile {
                    path: p.to_string(),
                    digest: d,
                    size: 0,
                    executable: false,
                })
                .collect(),
            exit_code: 0,
            stdout: d,
            stderr: d,
            duration_ms: 0,
        }
    }

    /// A small deterministic generator (xorshift), so the fuzz runs the same cases
    /// everywhere; `KILN_FUZZ_CASES` runs more.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[(self.next() % from.len() as u64) as usize]
        }
    }

    fn cases() -> u64 {
        std::env::var("KILN_FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(20_000)
    }

    #[test]
    fn fuzzed_remote_results_are_used_only_when_exactly_the_declared_outputs() {
        const PARTS: &[&str] = &["kiln-out", "p", "a.txt", "dir", "x", "..", ".", "", "/"];
        let a = action(&["kiln-out/p/a.txt", "kiln-out/p/dir/"]);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for _ in 0..cases() {
            let n = rng.next() % 4;
            // Near misses of valid paths: a valid one with a part put in or replaced.
            const VALID: &[&str] = &[
                "kiln-out/p/a.txt",
                "kiln-out/p/dir/x",
                "kiln-out/p/dir/x/a.txt",
            ];
            let mut paths: Vec<String> = vec!["kiln-out/p/a.txt".to_string()];
            paths.extend((0..n).map(|_| {
                let mut parts: Vec<&str> = rng.pick(VALID).split('/').collect();
                let at = (rng.next() % (parts.len() as u64 + 1)) as usize;
                match rng.next() % 3 {
                    0 => parts.insert(at, rng.pick(PARTS)),
                    1 if at < parts.len() => parts[at] = rng.pick(PARTS),
                    _ => {}
                }
                parts.join("/")
            }));
            let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
            if a.check_result(&result(&refs)).is_err() {
                continue;
            }
            accepted += 1;
            assert!(paths.contains(&"kiln-out/p/a.txt".to_string()), "{paths:?}");
            let mut unique = paths.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), paths.len(), "{paths:?}");
            for p in &paths {
                assert!(is_normal(p), "{p}");
                assert!(
                    p == "kiln-out/p/a.txt" || p.starts_with("kiln-out/p/dir/"),
                    "{p}"
                );
            }
        }
        assert!(accepted > 0, "the fuzz reached accepted results");
    }

    #[test]
    fn a_result_must_be_exactly_the_declared_outputs() {
        let a = action(&["kiln-out/p/a.txt", "kiln-out/p/dir/"]);
        assert!(a.check_result(&result(&["kiln-out/p/a.txt"])).is_ok());
        assert!(a
            .check_result(&result(&["kiln-out/p/a.txt", "kiln-out/p/dir/x/y"]))
            .is_ok());
        for bad in [
            &["kiln-out/p/a.txt", "kiln-out/p/a.txt"][..],
            &["kiln-out/p/a.txt", "kiln-out/../x"],
            &["kiln-out/p/a.txt", "kiln-out/p/dir/../../a"],
            &["kiln-out/p/a.txt", "/etc/passwd"],
            &["kiln-out/p/a.txt", "kiln-out/p/b.txt"],
            &["kiln-out/p/a.txt", "kiln-out/p/dir"],
            &["kiln-out/p/dir/x"],
            &["kiln-out/p/a.txt", "kiln-out/p/dir//x"],
        ] {
            assert!(a.check_result(&result(bad)).is_err(), "{bad:?}");
        }
        let mut failed = result(&["kiln-out/p/a.txt"]);
        failed.exit_code = 1;
        assert!(a.check_result(&failed).is_err());
    }
}
