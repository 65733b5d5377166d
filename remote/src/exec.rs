//! [`RemoteRunner`]: actions run by an engine's Execution service.
//!
//! The input root is the prepared sandbox (inputs at workspace paths, file tools in
//! `.kiln/bin`), with the tree tools at `.kiln/tools/NAME` and kiln itself at
//! `.kiln/bin/kiln`. The Command runs `.kiln/bin/kiln remote-launch`, which reads
//! `.kiln/launch.json` (argv, environment, working directory with kiln's placeholders)
//! and starts the process with paths below wherever the worker put the input root
//! ([`kiln_engine::sandbox::launch`]). So the tools are the same bytes whose digests
//! are in kiln's keys, and a worker needs only the base system its platform names
//! (the C library, for kiln and dynamically linked tools).
//!
//! The outputs come back into the sandbox, where the executor checks them as it
//! checks a local run's: only declared paths are written, only regular files.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bazel_remote_apis::google::longrunning::operation;
use kiln_engine::action::ExecSpec;
use kiln_engine::remote::{RemoteExecutor, RemoteRun};
use kiln_engine::sandbox::{Launch, LAUNCH_FILE};
use kiln_engine::{Error as EngineError, ErrorKind as EngineKind};
use prost::Message;
use re::execution_client::ExecutionClient;

use crate::cas::Blob;
use crate::tree::{tool_dir, FileHashes, InputRoot};
use crate::{re, Remote, Sha, LAUNCH_COMMAND, MAX_MESSAGE};

/// How many times an execution that broke off (an engine or worker lost, a stream
/// cut) is asked again.
const RETRIES: u32 = 3;

/// A [`RemoteExecutor`] on an engine's Execution service.
pub struct RemoteRunner {
    remote: Arc<Remote>,
    /// Platform properties, sorted by name.
    platform: Vec<(String, String)>,
    hashes: FileHashes,
    kiln: PathBuf,
    shown: String,
}

impl RemoteRunner {
    /// `platform`: the properties of `[remote] platform` (a worker must match them).
    pub fn new(remote: Arc<Remote>, platform: BTreeMap<String, String>) -> RemoteRunner {
        let shown = remote.url().to_string();
        RemoteRunner {
            remote,
            platform: platform.into_iter().collect(),
            hashes: FileHashes::default(),
            kiln: kiln_engine::sandbox::kiln_exe(),
            shown,
        }
    }

    /// The input root of an action prepared in `root`.
    fn input_root(&self, root: &Path, spec: &ExecSpec) -> kiln_cache::Result<InputRoot> {
        let mut tree = InputRoot::default();
        let skip = |rel: &str| matches!(rel, ".kiln/stdout" | ".kiln/stderr" | ".kiln/bin/kiln");
        tree.add_tree(&self.remote, &self.hashes, "", root, &skip)?;
        for tool in spec.tools.iter().filter(|t| t.tree) {
            let rel = tool_dir(&tool.name).display().to_string();
            tree.add_tree(&self.remote, &self.hashes, &rel, &tool.path, &|_| false)?;
        }
        tree.add_file(&self.remote, &self.hashes, ".kiln/bin/kiln", &self.kiln)?;
        let launch = serde_json::to_vec(&Launch::of(spec)).expect("a launch spec encodes");
        tree.add_bytes(LAUNCH_FILE, launch);
        Ok(tree)
    }

    /// The Action message for an input root; its blobs join `blobs`.
    fn action(&self, input_root: Sha, outputs: &[String], blobs: &mut BTreeMap<Sha, Blob>) -> Sha {
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
            arguments: vec![".kiln/bin/kiln".into(), LAUNCH_COMMAND.into()],
            output_paths,
            platform: Some(platform.clone()),
            ..Default::default()
        };
        let command = encode(&command, blobs);
        let action = re::Action {
            command_digest: Some(command.proto()),
            input_root_digest: Some(input_root.proto()),
            do_not_cache: false,
            platform: Some(platform),
            ..Default::default()
        };
        encode(&action, blobs)
    }

    /// Executes the action and waits for its result.
    fn execute(&self, action: Sha) -> kiln_cache::Result<(re::ExecuteResponse, Duration)> {
        let mut last = None;
        for _ in 0..=RETRIES {
            match self.execute_once(action) {
                Ok(got) => return Ok(got),
                Err(e) if retryable(&e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one try"))
    }

    fn execute_once(&self, action: Sha) -> kiln_cache::Result<(re::ExecuteResponse, Duration)> {
        let remote = &self.remote;
        let mut client =
            ExecutionClient::with_interceptor(remote.channel.clone(), remote.auth.clone())
                .max_decoding_message_size(MAX_MESSAGE);
        let req = re::ExecuteRequest {
            instance_name: remote.instance.clone(),
            skip_cache_lookup: false,
            action_digest: Some(action.proto()),
            digest_function: re::digest_function::Value::Sha256 as i32,
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
        match remote.rt.block_on(fut) {
            Ok(got) => Ok(got),
            Err(status) => Err(remote.status_error("execute", &status)),
        }
    }

    /// Writes the result's outputs and captures into the sandbox.
    fn fetch_outputs(
        &self,
        root: &Path,
        outputs: &[String],
        result: &re::ActionResult,
    ) -> kiln_cache::Result<()> {
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
            let sha = Sha::from_proto(
                file.digest
                    .as_ref()
                    .ok_or_else(|| refused("names an output without digest"))?,
            )?;
            self.write_blob(sha, &root.join(&file.path), file.is_executable)?;
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
            let tree = self.read_message::<re::Tree>(Sha::from_proto(digest)?)?;
            let children: BTreeMap<Sha, &re::Directory> = tree
                .children
                .iter()
                .map(|d| (Sha::of_bytes(&d.encode_to_vec()), d))
                .collect();
            let top = tree
                .root
                .as_ref()
                .ok_or_else(|| refused("gives a tree without root"))?;
            self.write_dir(&root.join(&dir.path), top, &children, 0)?;
        }
        for (raw, digest, name) in [
            (&result.stdout_raw, &result.stdout_digest, ".kiln/stdout"),
            (&result.stderr_raw, &result.stderr_digest, ".kiln/stderr"),
        ] {
            let path = root.join(name);
            match digest {
                Some(d) if raw.is_empty() => self.write_blob(Sha::from_proto(d)?, &path, false)?,
                _ => fs::write(&path, raw).map_err(|e| kiln_cache::Error::io("write", &path, e))?,
            }
        }
        Ok(())
    }

    fn write_dir(
        &self,
        at: &Path,
        dir: &re::Directory,
        children: &BTreeMap<Sha, &re::Directory>,
        depth: usize,
    ) -> kiln_cache::Result<()> {
        let bad = |what: String| {
            crate::corrupt(format!("{}: the result's tree {what}", self.remote.url()))
        };
        if depth > 256 {
            return Err(bad("is too deep".into()));
        }
        if !dir.symlinks.is_empty() {
            return Err(bad(
                "holds a symbolic link; outputs are regular files".into()
            ));
        }
        fs::create_dir_all(at).map_err(|e| kiln_cache::Error::io("create", at, e))?;
        for file in &dir.files {
            check_name(&file.name).map_err(&bad)?;
            let sha = Sha::from_proto(
                file.digest
                    .as_ref()
                    .ok_or_else(|| bad("names a file without digest".into()))?,
            )?;
            self.write_blob(sha, &at.join(&file.name), file.is_executable)?;
        }
        for sub in &dir.directories {
            check_name(&sub.name).map_err(&bad)?;
            let sha = Sha::from_proto(
                sub.digest
                    .as_ref()
                    .ok_or_else(|| bad("names a directory without digest".into()))?,
            )?;
            let child = children
                .get(&sha)
                .ok_or_else(|| bad(format!("lacks directory {}", sub.name)))?;
            self.write_dir(&at.join(&sub.name), child, children, depth + 1)?;
        }
        Ok(())
    }

    /// Fetches a blob to a new file at `path` (never through a link at that path).
    fn write_blob(&self, sha: Sha, path: &Path, executable: bool) -> kiln_cache::Result<()> {
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
        Ok(())
    }

    /// The error for a blob a result names that the engine's CAS does not hold.
    fn missing(&self, sha: Sha) -> kiln_cache::Error {
        let message = format!(
            "{}: the result names blob {} its CAS does not hold",
            self.remote.url(),
            sha.hex()
        );
        kiln_cache::Error::new(kiln_cache::ErrorKind::Remote, message)
    }

    fn read_message<M: Message + Default>(&self, sha: Sha) -> kiln_cache::Result<M> {
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

/// Whether an execution error is worth asking again: the engine or a worker went away.
fn retryable(e: &kiln_cache::Error) -> bool {
    let m = e.message();
    m.contains("(Unavailable)")
        || m.contains("(Aborted)")
        || m.contains("(Internal)") && m.contains("stream")
}

fn encode<M: Message>(message: &M, blobs: &mut BTreeMap<Sha, Blob>) -> Sha {
    let bytes = message.encode_to_vec();
    let sha = Sha::of_bytes(&bytes);
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
        outputs: &[String],
    ) -> kiln_engine::Result<RemoteRun> {
        let started = Instant::now();
        let mut tree = self.input_root(root, spec).map_err(remote_error)?;
        let input_root = tree.seal();
        let action = self.action(input_root, outputs, &mut tree.blobs);
        self.remote
            .upload_missing(&tree.blobs)
            .map_err(remote_error)?;
        let sent = started.elapsed();
        let (response, queued) = self.execute(action).map_err(remote_error)?;
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
        self.fetch_outputs(root, outputs, &result)
            .map_err(remote_error)?;
        let worker = result
            .execution_metadata
            .as_ref()
            .map(|m| m.worker.clone())
            .unwrap_or_default();
        Ok(RemoteRun {
            exit_code: result.exit_code,
            cached: response.cached_result,
            transfer: sent + fetch_started.elapsed(),
            queued,
            worker,
        })
    }

    fn name(&self) -> &str {
        &self.shown
    }
}
