//! [`RemoteRunner`]: actions run by an engine's Execution service.
//!
//! The input root is the prepared sandbox (inputs at workspace paths, file tools in
//! `.kiln/bin`), with the tree tools at `.kiln/tools/NAME`, the launcher at
//! [`LAUNCHER_PATH`] and the launch file ([`kiln_engine::sandbox::LAUNCH_FILE`]: argv,
//! environment, working directory with kiln's placeholders). The Command runs the
//! launcher, which starts the process with paths below wherever the worker put the input
//! root ([`kiln_launch::run`]). So the tools are the same bytes whose digests are in
//! kiln's keys, and a worker needs only the base system its platform names (the C
//! library, for the launcher and dynamically linked tools).
//!
//! The launcher is `kiln-launch`, the few hundred KB binary built beside kiln: engines
//! such as buildbox-casd copy every input file into each action's root, and kiln itself
//! is ~85 MB. kiln joins the root (at `.kiln/bin/kiln`) only for an action whose argv or
//! environment names `{kiln}` (helpers such as `kiln go-test-exec`). Where no
//! `kiln-launch` lies beside kiln, kiln itself launches every action
//! (`.kiln/bin/kiln remote-launch`, the same code), and kiln warns once that each root
//! carries it.
//!
//! The outputs come back into the sandbox, where the executor checks them as it
//! checks a local run's: only declared paths are written, only regular files.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bazel_remote_apis::google::longrunning::operation;
use kiln_cache::Digest;
use kiln_engine::action::ExecSpec;
use kiln_engine::remote::{RemoteExecutor, RemotePhases, RemoteRun};
use kiln_engine::sandbox::{launch_of, LAUNCH_FILE, ROOT_FILE};
use kiln_engine::{Error as EngineError, ErrorKind as EngineKind};
use prost::Message;
use re::execution_client::ExecutionClient;

use crate::cas::Blob;
use crate::tree::{tool_dir, FileHashes, InputRoot};
use crate::{backoff, re, retryable, Remote, WireDigest, LAUNCH_COMMAND, MAX_MESSAGE, RETRIES};

/// A [`RemoteExecutor`] on an engine's Execution service.
pub struct RemoteRunner {
    remote: Arc<Remote>,
    /// Platform properties, sorted by name.
    platform: Vec<(String, String)>,
    hashes: FileHashes,
    kiln: PathBuf,
    /// `kiln-launch`, beside kiln; None: kiln launches (`kiln remote-launch`).
    launcher: Option<PathBuf>,
    shown: String,
}

/// Where the launcher lies in an input root (outside `.kiln/bin`, the action's PATH).
pub const LAUNCHER_PATH: &str = ".kiln/kiln-launch";

/// Where kiln lies in the input root of an action that names `{kiln}`.
const KILN_PATH: &str = ".kiln/bin/kiln";

impl RemoteRunner {
    /// `platform`: the properties of `[remote] platform` (a worker must match them).
    pub fn new(remote: Arc<Remote>, platform: BTreeMap<String, String>) -> RemoteRunner {
        let shown = remote.url().to_string();
        let kiln = kiln_engine::sandbox::kiln_exe();
        let launcher = kiln_engine::sandbox::launcher_exe();
        if launcher.is_none() {
            eprintln!(
                "kiln: warning: no `{}` beside {}: kiln itself launches every remote action, in each input root",
                kiln_launch::LAUNCHER,
                kiln.display()
            );
        }
        RemoteRunner {
            remote,
            platform: platform.into_iter().collect(),
            hashes: FileHashes::default(),
            kiln,
            launcher,
            shown,
        }
    }

    /// The Command's arguments: the launcher, run in the input root.
    fn launch_command(&self) -> Vec<String> {
        match self.launcher {
            Some(_) => vec![LAUNCHER_PATH.into()],
            None => vec![KILN_PATH.into(), LAUNCH_COMMAND.into()],
        }
    }

    /// The input root of an action prepared in `root`; `known`: the BLAKE3 digests of
    /// its staged inputs.
    fn input_root(
        &self,
        root: &Path,
        spec: &ExecSpec,
        known: &HashMap<String, Digest>,
        view: &[(String, PathBuf)],
    ) -> kiln_cache::Result<InputRoot> {
        let remote = &self.remote;
        let mut tree = InputRoot::default();
        let launch = launch_of(spec);
        let file = launch.encode().map_err(|e| {
            kiln_cache::Error::new(kiln_cache::ErrorKind::Usage, format!("launch: {e}"))
        })?;
        let with_kiln = launch.needs_kiln() || self.launcher.is_none();
        let skip = |rel: &str| {
            matches!(rel, ".kiln/stdout" | ".kiln/stderr" | ROOT_FILE)
                || (with_kiln && rel == KILN_PATH)
        };
        tree.add_tree(remote, &self.hashes, "", root, known, &skip)?;
        // The readable directory of an action with reads: workspace files, hashed
        // as they are now (a change after the action started fails it when its
        // reads are checked).
        let none = HashMap::new();
        for (rel, host) in view {
            match fs::metadata(host) {
                Ok(meta) if meta.is_dir() => {
                    tree.add_tree(remote, &self.hashes, rel, host, &none, &|_| false)?
                }
                Ok(meta) if meta.is_file() => {
                    tree.add_file(remote, &self.hashes, rel, host, None)?
                }
                _ => {}
            }
        }
        // A tree tool's place is left empty (only test runs, which have reads, come
        // here with one): the run's log tells whether it reached the tool (see
        // RemoteExecutor::run).
        for tool in spec.tools.iter().filter(|t| t.tree) {
            tree.add_dir(&tool_dir(&tool.name).display().to_string());
        }
        if with_kiln {
            tree.add_file(remote, &self.hashes, KILN_PATH, &self.kiln, None)?;
        }
        if let Some(launcher) = &self.launcher {
            tree.add_file(remote, &self.hashes, LAUNCHER_PATH, launcher, None)?;
        }
        tree.add_bytes(remote, LAUNCH_FILE, file);
        Ok(tree)
    }

    /// The Action message for an input root; its blobs join `blobs`.
    fn action(
        &self,
        input_root: WireDigest,
        outputs: &[String],
        blobs: &mut BTreeMap<WireDigest, Blob>,
    ) -> WireDigest {
        let platform = re::Platform {
            properties: self
                .platform
                .iter()
                .map(|(name, value)| re::platform::Property {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        let mut output_paths: Vec<String> = outputs
            .iter()
            .map(|o| o.trim_end_matches('/').to_string())
            .collect();
        output_paths.sort();
        // The platform goes in both places: Command's for engines of REAPI 2.1.
        #[allow(deprecated)]
        let command = re::Command {
            arguments: self.launch_command(),
            output_paths,
            platform: Some(platform.clone()),
            ..Default::default()
        };
        let command = encode(&self.remote, &command, blobs);
        let action = re::Action {
            command_digest: Some(command.proto()),
            input_root_digest: Some(input_root.proto()),
            // Nothing kiln sends is known, before it runs, to be a result kiln will not
            // keep: failures are decided by the run (see `run` for engines that keep them).
            do_not_cache: false,
            platform: Some(platform),
            ..Default::default()
        };
        encode(&self.remote, &action, blobs)
    }

    /// Executes the action and waits for its result (and the time until the engine
    /// said it was executing). An execution that broke off for a passing reason
    /// ([`retryable`]) is asked again, at most [`RETRIES`] times; one the engine
    /// refused for missing inputs (FAILED_PRECONDITION: its CAS dropped them since they
    /// were found there) is asked again once after sending what it lacks. `fresh`:
    /// the engine must run it, not answer from its ActionCache (`skip_cache_lookup`).
    fn execute(
        &self,
        action: WireDigest,
        blobs: &BTreeMap<WireDigest, Blob>,
        fresh: bool,
    ) -> kiln_cache::Result<(re::ExecuteResponse, Duration)> {
        let mut attempt = 0;
        let mut resent = false;
        loop {
            let status = match self.execute_once(action, fresh) {
                Ok(got) => return Ok(got),
                Err(status) => status,
            };
            attempt += 1;
            if status.code() == tonic::Code::FailedPrecondition && !resent {
                resent = true;
                self.remote.uploads.forget();
                self.remote.upload_missing(blobs)?;
                continue;
            }
            if attempt > RETRIES || !retryable(status.code()) {
                return Err(self.remote.status_error("execute", &status));
            }
            std::thread::sleep(backoff(attempt));
        }
    }

    fn execute_once(
        &self,
        action: WireDigest,
        fresh: bool,
    ) -> Result<(re::ExecuteResponse, Duration), tonic::Status> {
        let remote = &self.remote;
        let mut client =
            ExecutionClient::with_interceptor(remote.channel.clone(), remote.auth.clone())
                .max_decoding_message_size(MAX_MESSAGE);
        let req = re::ExecuteRequest {
            instance_name: remote.instance.clone(),
            skip_cache_lookup: fresh,
            action_digest: Some(action.proto()),
            digest_function: remote.digest_function().value(),
            ..Default::default()
        };
        let started = Instant::now();
        let fut = async move {
            let mut stream = client.execute(req).await?.into_inner();
            let mut queued = None;
            let mut name = String::new();
            loop {
                let op = match stream.message().await? {
                    Some(op) => op,
                    // The stream ended early: ask again by the operation's name.
                    None if !name.is_empty() => {
                        let req = re::WaitExecutionRequest { name: name.clone() };
                        stream = client.wait_execution(req).await?.into_inner();
                        continue;
                    }
                    None => return Err(tonic::Status::unavailable("the execution stream ended")),
                };
                name = op.name.clone();
                if queued.is_none() && executing(&op) {
                    queued = Some(started.elapsed());
                }
                if !op.done {
                    continue;
                }
                let queued = queued.unwrap_or_default();
                return match op.result {
                    Some(operation::Result::Response(any)) => {
                        re::ExecuteResponse::decode(any.value.as_slice())
                            .map(|r| (r, queued))
                            .map_err(|e| {
                                tonic::Status::internal(format!(
                                    "an ExecuteResponse that does not decode: {e}"
                                ))
                            })
                    }
                    Some(operation::Result::Error(status)) => {
                        Err(tonic::Status::new(status.code.into(), status.message))
                    }
                    None => Err(tonic::Status::internal(
                        "a finished operation without a result",
                    )),
                };
            }
        };
        remote.rt.block_on(fut)
    }

    /// Writes the result's outputs and captures into the sandbox.
    /// Returns the BLAKE3 digest of each file written, by root-relative path.
    fn fetch_outputs(
        &self,
        root: &Path,
        outputs: &[String],
        result: &re::ActionResult,
    ) -> kiln_cache::Result<HashMap<String, Digest>> {
        let mut written = HashMap::new();
        let url = self.remote.url();
        let refused = |what: &str| crate::corrupt(format!("{url}: the result {what}"));
        #[allow(deprecated)]
        if !(result.output_symlinks.is_empty()
            && result.output_file_symlinks.is_empty()
            && result.output_directory_symlinks.is_empty())
        {
            return Err(refused(
                "gives a symbolic link as an output; outputs are regular files",
            ));
        }
        let files: Vec<&String> = outputs.iter().filter(|o| !o.ends_with('/')).collect();
        for file in &result.output_files {
            if !files.contains(&&file.path) {
                return Err(refused(&format!(
                    "gives `{}`, which the action does not declare",
                    file.path
                )));
            }
            let sha = WireDigest::from_proto(
                file.digest
                    .as_ref()
                    .ok_or_else(|| refused("names an output without digest"))?,
            )?;
            let digest = self.write_blob(sha, &root.join(&file.path), file.is_executable)?;
            written.insert(file.path.clone(), digest);
        }
        for dir in &result.output_directories {
            if !outputs
                .iter()
                .any(|o| o.trim_end_matches('/') == dir.path && o.ends_with('/'))
            {
                return Err(refused(&format!(
                    "gives directory `{}`, which the action does not declare",
                    dir.path
                )));
            }
            let digest = dir
                .tree_digest
                .as_ref()
                .ok_or_else(|| refused("names a directory without digest"))?;
            let tree = self.read_message::<re::Tree>(WireDigest::from_proto(digest)?)?;
            let children: BTreeMap<WireDigest, &re::Directory> = tree
                .children
                .iter()
                .map(|d| (self.remote.digest_bytes(&d.encode_to_vec()), d))
                .collect();
            let top = tree
                .root
                .as_ref()
                .ok_or_else(|| refused("gives a tree without root"))?;
            tree_entries(top, &children, &mut HashMap::new(), 0)
                .map_err(|what| refused(&format!("tree `{}` {what}", dir.path)))?;
            self.write_dir(
                &root.join(&dir.path),
                &dir.path,
                top,
                &children,
                &mut written,
            )?;
        }
        for (raw, digest, name) in [
            (&result.stdout_raw, &result.stdout_digest, ".kiln/stdout"),
            (&result.stderr_raw, &result.stderr_digest, ".kiln/stderr"),
        ] {
            let path = root.join(name);
            let digest = match digest {
                Some(d) if raw.is_empty() => {
                    self.write_blob(WireDigest::from_proto(d)?, &path, false)?
                }
                _ => {
                    fs::write(&path, raw).map_err(|e| kiln_cache::Error::io("write", &path, e))?;
                    Digest::of_bytes(raw)
                }
            };
            written.insert(name.to_string(), digest);
        }
        Ok(written)
    }

    /// Writes the tree at `dir` below `at`, a tree [`tree_entries`] has bounded.
    fn write_dir(
        &self,
        at: &Path,
        rel: &str,
        dir: &re::Directory,
        children: &BTreeMap<WireDigest, &re::Directory>,
        written: &mut HashMap<String, Digest>,
    ) -> kiln_cache::Result<()> {
        let bad = |what: String| {
            crate::corrupt(format!("{}: the result's tree {what}", self.remote.url()))
        };
        if !dir.symlinks.is_empty() {
            return Err(bad(
                "holds a symbolic link; outputs are regular files".into()
            ));
        }
        fs::create_dir_all(at).map_err(|e| kiln_cache::Error::io("create", at, e))?;
        for file in &dir.files {
            check_name(&file.name).map_err(&bad)?;
            let sha = WireDigest::from_proto(
                file.digest
                    .as_ref()
                    .ok_or_else(|| bad("names a file without digest".into()))?,
            )?;
            let digest = self.write_blob(sha, &at.join(&file.name), file.is_executable)?;
            written.insert(format!("{rel}/{}", file.name), digest);
        }
        for sub in &dir.directories {
            check_name(&sub.name).map_err(&bad)?;
            let sha = WireDigest::from_proto(
                sub.digest
                    .as_ref()
                    .ok_or_else(|| bad("names a directory without digest".into()))?,
            )?;
            let child = children
                .get(&sha)
                .ok_or_else(|| bad(format!("lacks directory {}", sub.name)))?;
            self.write_dir(
                &at.join(&sub.name),
                &format!("{rel}/{}", sub.name),
                child,
                children,
                written,
            )?;
        }
        Ok(())
    }

    /// Fetches a blob to a new file at `path` (never through a link at that path);
    /// returns its BLAKE3 digest, computed as it was written.
    fn write_blob(
        &self,
        sha: WireDigest,
        path: &Path,
        executable: bool,
    ) -> kiln_cache::Result<Digest> {
        let io = |e| kiln_cache::Error::io("write", path, e);
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).map_err(io)?,
            Ok(_) => fs::remove_file(path).map_err(io)?,
            Err(_) => {}
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        let Some(blake3) = self.remote.download(sha, &mut file)? else {
            return Err(self.missing(sha));
        };
        self.remote.learn(blake3, sha);
        file.flush().map_err(io)?;
        let mode = if executable { 0o755 } else { 0o644 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)?;
        Ok(blake3)
    }

    /// The error for a blob a result names that the engine's CAS does not hold.
    fn missing(&self, sha: WireDigest) -> kiln_cache::Error {
        let message = format!(
            "{}: the result names blob {} its CAS does not hold",
            self.remote.url(),
            sha.hex()
        );
        kiln_cache::Error::new(kiln_cache::ErrorKind::Remote, message)
    }

    fn read_message<M: Message + Default>(&self, sha: WireDigest) -> kiln_cache::Result<M> {
        let mut tmp = tempfile::tempfile()
            .map_err(|e| kiln_cache::Error::new(kiln_cache::ErrorKind::Io, e.to_string()))?;
        if self.remote.download(sha, &mut tmp)?.is_none() {
            return Err(self.missing(sha));
        }
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        tmp.rewind()
            .and_then(|_| tmp.read_to_end(&mut bytes))
            .map_err(|e| kiln_cache::Error::new(kiln_cache::ErrorKind::Io, e.to_string()))?;
        M::decode(bytes.as_slice()).map_err(|e| {
            crate::corrupt(format!(
                "{}: a message that does not decode: {e}",
                self.remote.url()
            ))
        })
    }
}

/// A name of a tree entry: one path component.
/// The most files and directories one tree output may hold (a directory counted each
/// time it is listed): a small Tree whose directories each list the next one twice
/// would otherwise have kiln write 2^depth entries.
const MAX_TREE_ENTRIES: u64 = 1_000_000;

/// The number of entries writing the tree at `dir` makes, counting a shared directory
/// each time it is listed (`memo` holds the counts of directories already seen); an
/// error for a name listed twice in one directory, a directory missing from the Tree,
/// one nested deeper than kiln writes, or more than [`MAX_TREE_ENTRIES`] in all.
fn tree_entries(
    dir: &re::Directory,
    children: &BTreeMap<WireDigest, &re::Directory>,
    memo: &mut HashMap<WireDigest, u64>,
    depth: usize,
) -> std::result::Result<u64, String> {
    if depth > 256 {
        return Err("is too deep".into());
    }
    let mut names = std::collections::HashSet::new();
    let listed = dir.files.iter().map(|f| &f.name);
    if let Some(twice) = listed
        .chain(dir.directories.iter().map(|d| &d.name))
        .find(|name| !names.insert(*name))
    {
        return Err(format!("lists `{twice}` twice in one directory"));
    }
    let mut total = (dir.files.len() + dir.directories.len()) as u64;
    for sub in &dir.directories {
        let sha = WireDigest::from_proto(
            sub.digest
                .as_ref()
                .ok_or("names a directory without digest")?,
        )
        .map_err(|e| e.to_string())?;
        let below = match memo.get(&sha) {
            Some(n) => *n,
            None => {
                let child = children
                    .get(&sha)
                    .ok_or_else(|| format!("lacks directory {}", sub.name))?;
                let n = tree_entries(child, children, memo, depth + 1)?;
                memo.insert(sha, n);
                n
            }
        };
        total = total.saturating_add(below);
        if total > MAX_TREE_ENTRIES {
            return Err(format!("holds more than {MAX_TREE_ENTRIES} entries"));
        }
    }
    Ok(total)
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    match name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        true => Err(format!("names an entry `{name}`")),
        false => Ok(()),
    }
}

fn executing(op: &bazel_remote_apis::google::longrunning::Operation) -> bool {
    use re::execution_stage::Value;
    op.metadata
        .as_ref()
        .and_then(|m| re::ExecuteOperationMetadata::decode(m.value.as_slice()).ok())
        .is_some_and(|m| m.stage >= Value::Executing as i32)
}

fn encode<M: Message>(
    remote: &Remote,
    message: &M,
    blobs: &mut BTreeMap<WireDigest, Blob>,
) -> WireDigest {
    let bytes = message.encode_to_vec();
    let sha = remote.digest_bytes(&bytes);
    blobs.insert(sha, Blob::Bytes(bytes));
    sha
}

/// An engine error for a failure of the remote (not of the action).
fn remote_error(e: kiln_cache::Error) -> EngineError {
    let kind = match e.kind() {
        kiln_cache::ErrorKind::Remote => EngineKind::Remote,
        _ => EngineKind::Action,
    };
    EngineError::new(kind, e.message().to_string())
}

impl RemoteExecutor for RemoteRunner {
    fn run(
        &self,
        root: &Path,
        spec: &ExecSpec,
        inputs: &HashMap<String, Digest>,
        view: &[(String, PathBuf)],
        outputs: &[String],
        fresh: bool,
    ) -> kiln_engine::Result<RemoteRun> {
        let started = Instant::now();
        let mut tree = self
            .input_root(root, spec, inputs, view)
            .map_err(remote_error)?;
        let input_root = tree.seal(&self.remote);
        // An action with reads brings back its log and where its root was.
        let mut outputs = outputs.to_vec();
        if let Some(reads) = &spec.reads {
            outputs.extend([reads.log.clone(), ROOT_FILE.to_string()]);
        }
        let outputs = &outputs[..];
        let action = self.action(input_root, outputs, &mut tree.blobs);
        self.remote
            .upload_missing(&tree.blobs)
            .map_err(remote_error)?;
        let upload = started.elapsed();
        let mut executed = self.execute(action, &tree.blobs, fresh);
        // kiln never caches a failure; an engine that does would hand it back forever.
        if let Ok((response, _)) = &executed {
            let failed = response.result.as_ref().is_some_and(|r| r.exit_code != 0);
            if response.cached_result && failed && !fresh {
                executed = self.execute(action, &tree.blobs, true);
            }
        }
        let (response, queued) = executed.map_err(remote_error)?;
        if let Some(status) = response.status.as_ref().filter(|s| s.code != 0) {
            let message = format!(
                "{}: the action did not run: {} (code {})",
                self.shown, status.message, status.code
            );
            return Err(EngineError::new(EngineKind::Remote, message));
        }
        let result = response.result.ok_or_else(|| {
            EngineError::new(
                EngineKind::Remote,
                format!("{}: an execution without a result", self.shown),
            )
        })?;
        let fetch_started = Instant::now();
        let written = self
            .fetch_outputs(root, outputs, &result)
            .map_err(remote_error)?;
        let fetch = fetch_started.elapsed();
        let seen_root = match spec.reads {
            Some(_) => seen_root(&root.join(ROOT_FILE)),
            None => None,
        };
        let metadata = result.execution_metadata.clone().unwrap_or_default();
        let phases = RemotePhases {
            upload,
            fetch,
            ..worker_phases(&metadata)
        };
        Ok(RemoteRun {
            exit_code: result.exit_code,
            cached: response.cached_result,
            transfer: upload + fetch + phases.input_fetch + phases.output_upload,
            queued: engine_queue(&metadata).unwrap_or(queued),
            worker: metadata.worker,
            phases,
            written,
            seen_root,
        })
    }

    fn name(&self) -> &str {
        &self.shown
    }
}

/// The root a worker's launcher said its process saw: an absolute, plain path (it
/// comes from the worker; None if it is anything else).
fn seen_root(file: &Path) -> Option<PathBuf> {
    let bytes = fs::read(file).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let plain = text.starts_with('/')
        && text.len() < 4096
        && !text.contains('\0')
        && text.split('/').all(|c| c != "." && c != "..");
    plain.then(|| PathBuf::from(text))
}

/// The time between two of the engine's timestamps; None where either is missing or
/// they run backwards.
fn between(
    from: &Option<bazel_remote_apis::google::protobuf::Timestamp>,
    to: &Option<bazel_remote_apis::google::protobuf::Timestamp>,
) -> Option<Duration> {
    let nanos = |t: &bazel_remote_apis::google::protobuf::Timestamp| {
        (t.seconds != 0 || t.nanos != 0)
            .then(|| t.seconds as i128 * 1_000_000_000 + t.nanos as i128)
    };
    let (a, b) = (nanos(from.as_ref()?)?, nanos(to.as_ref()?)?);
    (b >= a).then(|| Duration::from_nanos((b - a) as u64))
}

/// The time the action waited in the engine's queue, from its timestamps.
fn engine_queue(m: &re::ExecutedActionMetadata) -> Option<Duration> {
    between(&m.queued_timestamp, &m.worker_start_timestamp)
}

/// The worker's steps, from the engine's timestamps (zero where it leaves them out).
fn worker_phases(m: &re::ExecutedActionMetadata) -> RemotePhases {
    let span = |from, to| between(from, to).unwrap_or_default();
    RemotePhases {
        worker: span(&m.worker_start_timestamp, &m.worker_completed_timestamp),
        input_fetch: span(
            &m.input_fetch_start_timestamp,
            &m.input_fetch_completed_timestamp,
        ),
        execution: span(
            &m.execution_start_timestamp,
            &m.execution_completed_timestamp,
        ),
        output_upload: span(
            &m.output_upload_start_timestamp,
            &m.output_upload_completed_timestamp,
        ),
        ..RemotePhases::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazel_remote_apis::google::protobuf::Timestamp;

    fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    /// The engine's timestamps give the queue time and the worker's steps; missing or
    /// backward ones give nothing rather than nonsense.
    #[test]
    fn phases_come_from_the_engine_timestamps() {
        let m = re::ExecutedActionMetadata {
            queued_timestamp: at(100, 0),
            worker_start_timestamp: at(100, 250_000_000),
            input_fetch_start_timestamp: at(100, 300_000_000),
            input_fetch_completed_timestamp: at(100, 340_000_000),
            execution_start_timestamp: at(100, 350_000_000),
            execution_completed_timestamp: at(101, 50_000_000),
            output_upload_start_timestamp: at(101, 60_000_000),
            output_upload_completed_timestamp: at(101, 70_000_000),
            worker_completed_timestamp: at(101, 100_000_000),
            ..Default::default()
        };
        assert_eq!(engine_queue(&m), Some(Duration::from_millis(250)));
        let p = worker_phases(&m);
        assert_eq!(p.worker, Duration::from_millis(850));
        assert_eq!(p.input_fetch, Duration::from_millis(40));
        assert_eq!(p.execution, Duration::from_millis(700));
        assert_eq!(p.output_upload, Duration::from_millis(10));
        let none = re::ExecutedActionMetadata {
            queued_timestamp: at(100, 0),
            worker_start_timestamp: at(99, 0),
            ..Default::default()
        };
        assert_eq!(engine_queue(&none), None);
        assert_eq!(worker_phases(&none).worker, Duration::ZERO);
    }

    /// A Tree of a few hundred bytes whose every directory lists the next one twice
    /// (under two names) stands for 2^depth entries: refused before anything is
    /// written; a name listed twice in one directory is refused too.
    #[test]
    fn a_digest_of_multi_byte_characters_is_refused_not_a_panic() {
        let d = re::Digest {
            hash: format!("a{}a", "é".repeat(31)),
            size_bytes: 1,
        };
        assert!(WireDigest::from_proto(&d).is_err());
    }

    #[test]
    fn a_tree_that_expands_beyond_its_size_is_refused() {
        let function = crate::DigestFunction::Sha256;
        let file = re::FileNode {
            name: "f".into(),
            digest: Some(WireDigest::of_bytes(function, b"x").proto()),
            ..Default::default()
        };
        let mut dirs = vec![re::Directory {
            files: vec![file.clone()],
            ..Default::default()
        }];
        for _ in 0..64 {
            let below = WireDigest::of_bytes(function, &dirs.last().unwrap().encode_to_vec());
            let node = |name: &str| re::DirectoryNode {
                name: name.into(),
                digest: Some(below.proto()),
            };
            dirs.push(re::Directory {
                directories: vec![node("a"), node("b")],
                ..Default::default()
            });
        }
        let children: BTreeMap<WireDigest, &re::Directory> = dirs
            .iter()
            .map(|d| (WireDigest::of_bytes(function, &d.encode_to_vec()), d))
            .collect();
        let entries = |top: &re::Directory| tree_entries(top, &children, &mut HashMap::new(), 0);
        // Ten levels: 2^10 files and 2^11 - 2 directories, fine.
        assert_eq!(entries(&dirs[10]), Ok(1024 + 2046));
        let huge = entries(dirs.last().unwrap()).unwrap_err();
        assert!(huge.contains("more than"), "{huge}");

        let twice = re::Directory {
            files: vec![file.clone(), file],
            ..Default::default()
        };
        assert!(entries(&twice).unwrap_err().contains("`f` twice"));
    }
}
