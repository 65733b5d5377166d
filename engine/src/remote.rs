//! Running actions elsewhere: the engine's side of remote execution.
//!
//! An [`RemoteExecutor`] (kiln-remote implements one over the Remote Execution API)
//! gets a prepared sandbox directory, runs the action's process on a worker with that
//! directory as its input root, and writes back what the process produced. Everything
//! after that is the local path: the executor collects and checks the declared outputs
//! from the sandbox (regular files only, nothing undeclared), hashes and stores them,
//! so a remote result is trusted no more than a local one.
//!
//! Which actions run remotely ([`runs_remotely`]): processes, each in a sandbox of its
//! own. These stay local, and why:
//!
//! * builtins (tar layers, checksums, image manifests): kiln's own code, cheaper than
//!   sending their inputs;
//! * actions that reach the build's shared store (`go build` and `go test`'s compile
//!   steps, whose compile cache is served to them over a socket by this kiln);
//! * shared batches (many packages or platforms in one process);
//! * fixed-output actions (the only ones with network);
//! * actions that need a tool tree (the Go toolchain's 12,000 files: `go list`, module
//!   checks), but for test runs, which leave it out (below): a worker stages a tree for
//!   every action, so `go list` took 8–15 s on casd against 0.1–0.3 s here, more than
//!   all of a module's remote test runs together (bench/README.md, "go test runs on
//!   casd").
//!
//! An action with reads (a Go test run, [`crate::action::Reads`]) runs remotely with
//! its readable directory in the input root (as the local sandbox shows it, version
//! control data left out: [`crate::sandbox::remote_view`]); its read log comes back
//! with the root as the worker's process saw it, and the executor keys the result by
//! what was read exactly as for a local run. Its tree tools (the Go toolchain) are left
//! out too: staging thousands of files costs a worker seconds for each test, and a
//! test binary seldom needs them. A run whose log reaches the local sandbox's fixed
//! root (paths compiled into a test binary, as `runtime.Caller` gives them) or what
//! was left out (it looked for `go` on PATH, opened a file of GOROOT) runs again here
//! ([`crate::reads::beyond`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use kiln_cache::Digest;

use crate::action::{ActionKind, ExecSpec};
use crate::error::Result;

/// What a remote run ended with.
#[derive(Debug, Clone, Default)]
pub struct RemoteRun {
    pub exit_code: i32,
    /// Whether the engine answered from its own cache instead of running it.
    pub cached: bool,
    /// Time spent moving bytes: kiln sending inputs and fetching outputs, and the
    /// worker fetching its inputs and uploading its outputs (as far as the engine says).
    pub transfer: Duration,
    /// Time between the engine taking the request and a worker starting on it (from the
    /// engine's timestamps; else until the engine said it was executing).
    pub queued: Duration,
    /// The worker that ran it, if the engine says.
    pub worker: String,
    /// Where the time of the run went.
    pub phases: RemotePhases,
    /// BLAKE3 digests of the files the run wrote below the root (declared outputs and
    /// `.kiln/stdout`, `.kiln/stderr`), checked as they were written: the executor
    /// stores them without hashing them again.
    pub written: HashMap<String, Digest>,
    /// For an action with reads: the root as the worker's process saw it (absolute),
    /// against which its read log's paths resolve.
    pub seen_root: Option<std::path::PathBuf>,
}

/// The steps of a remote run. The worker's own come from the ExecutedActionMetadata
/// timestamps of its result, and are zero where the engine leaves them out.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemotePhases {
    /// kiln: building the input root and sending what the engine lacks.
    pub upload: Duration,
    /// The engine: from its worker taking the action to handing back the result.
    pub worker: Duration,
    /// The worker: fetching and staging the input root.
    pub input_fetch: Duration,
    /// The worker: the process itself.
    pub execution: Duration,
    /// The worker: storing the outputs.
    pub output_upload: Duration,
    /// kiln: fetching the outputs.
    pub fetch: Duration,
}

/// Where actions run besides this machine.
pub trait RemoteExecutor: Send + Sync {
    /// Runs `spec` with the files under `root` (a sandbox: inputs at workspace paths,
    /// file tools linked in `.kiln/bin`) as its input root, with the tree tools of
    /// `spec` at `.kiln/tools/NAME`. `inputs` holds the BLAKE3 digests of the staged
    /// inputs by root-relative path (what the action key names; they need no hashing).
    /// `view`: more of the root, as (root-relative path, host file or directory), not
    /// staged in `root` (the readable directory of an action with reads).
    /// Writes the declared `outputs` it produced below `root` and its stdout and
    /// stderr to `root/.kiln/stdout` and `.kiln/stderr`; for an action with reads, its
    /// log too (at `reads.log`), and [`RemoteRun::seen_root`]. An action with reads
    /// gets its tree tools as empty directories (a toolchain is thousands of files to
    /// stage for a test that seldom opens one): its log says whether it reached them.
    /// `fresh`: kiln decided the action must run (`kiln test --rerun`, a retry of a
    /// failed attempt), so the engine must run it rather than answer from its own
    /// cache.
    fn run(
        &self,
        root: &Path,
        spec: &ExecSpec,
        inputs: &HashMap<String, Digest>,
        view: &[(String, std::path::PathBuf)],
        outputs: &[String],
        fresh: bool,
    ) -> Result<RemoteRun>;

    /// How to name it in messages (its endpoint, never a credential).
    fn name(&self) -> &str;
}

/// Whether an action of this kind may run remotely (see the module comment).
pub fn runs_remotely(kind: &ActionKind) -> bool {
    match kind {
        ActionKind::Exec(spec) => {
            let shared = spec.batch.as_ref().is_some_and(|b| b.shared);
            let tree = spec.reads.is_none() && spec.tools.iter().any(|t| t.tree);
            !shared && !spec.store_access && !spec.network && !tree
        }
        ActionKind::Builtin(_) => false,
    }
}
