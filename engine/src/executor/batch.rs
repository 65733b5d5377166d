//! Running the misses of one batch group as one process (see [`crate::action::Batch`]):
//! one sandbox holding every member's inputs, the output split back per member by the
//! rule's [`crate::action::BatchSplit`], failed members run again (together, in the same
//! sandbox) up to the batch's attempts, and members whose outputs the process only named
//! by digest, where the store no longer holds them, run once more with the batch's
//! `fresh_args`.

use std::time::Instant;

use kiln_cache::OutputFile;

use super::{capture, fail, failure, now_ns, Executor, Failure, Outcome};
use crate::action::{Action, ActionKind, Artifact, Batch, ExecSpec, MemberOutput, NamedOutput};
use crate::error::{Error, Result};
use crate::key::KeyInput;
use crate::sandbox::Sandbox;

/// Where a batch's shared process finds the [`BatchFile`].
pub const BATCH_ENV: &str = "KILN_BATCH";
const BATCH_FILE: &str = ".kiln/batch.json";

/// The members about to run together, as the shared process may need them (a wrapper
/// that must tell which member a call is for, say).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct BatchFile {
    /// The sandbox-relative working directory of the process.
    pub workdir: String,
    pub members: Vec<BatchMember>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct BatchMember {
    /// The member's own arguments.
    pub args: Vec<String>,
    /// Its declared outputs, sandbox-relative.
    pub outputs: Vec<String>,
}

type Member<'a> = (&'a Action, &'a [(Artifact, KeyInput)]);

impl Executor {
    /// Runs the misses of one batch group as one process (see the module comment).
    /// Returns each member's outcome, in order; results are not yet in the action cache.
    pub fn execute_batch(&self, members: &[Member<'_>]) -> Vec<Outcome> {
        let (first, _) = members[0];
        let (ActionKind::Exec(spec), Some(batch)) = (&first.kind, first.batch()) else {
            unreachable!("only batch members run in a batch")
        };
        let mut inputs: Vec<&(Artifact, KeyInput)> =
            members.iter().flat_map(|(_, i)| i.iter()).collect();
        inputs.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        inputs.dedup_by(|a, b| a.0.path == b.0.path);
        let outputs = members.iter().flat_map(|(a, _)| a.outputs.iter());
        let sandbox = match self.prepare(inputs.into_iter(), outputs) {
            Ok(sandbox) => sandbox,
            Err(f) => return members.iter().map(|_| Err(f.clone())).collect(),
        };
        let mut run = Run {
            exec: self,
            members,
            spec,
            batch,
            sandbox: &sandbox,
            started: Instant::now(),
            since: now_ns(),
            outcomes: members.iter().map(|_| None).collect(),
            failed_runs: vec![Vec::new(); members.len()],
            stale: Vec::new(),
        };
        let attempts = batch.attempts.max(1);
        let mut remaining: Vec<usize> = (0..members.len()).collect();
        for attempt in 1..=attempts {
            remaining = run.attempt(&remaining, attempt == attempts, &[]);
            if remaining.is_empty() {
                break;
            }
        }
        let stale = std::mem::take(&mut run.stale);
        if !stale.is_empty() {
            run.attempt(&stale, true, &batch.fresh_args);
        }
        let outcomes: Vec<Outcome> = run
            .outcomes
            .into_iter()
            .map(|o| o.expect("every member of a batch has an outcome"))
            .collect();
        if outcomes.iter().any(Result::is_err) {
            self.maybe_keep(sandbox);
        }
        outcomes
    }
}

/// One batch's run in progress.
struct Run<'a> {
    exec: &'a Executor,
    members: &'a [Member<'a>],
    spec: &'a ExecSpec,
    batch: &'a Batch,
    sandbox: &'a Sandbox,
    started: Instant,
    /// When the first attempt started (ns since the epoch), for the members' reads.
    since: i64,
    outcomes: Vec<Option<Outcome>>,
    /// The outputs of each member's failed attempts.
    failed_runs: Vec<Vec<Vec<u8>>>,
    /// Members that passed naming outputs the store does not hold.
    stale: Vec<usize>,
}

impl Run<'_> {
    /// Runs the members `which` together (with `extra` arguments); settles each that
    /// passed, or failed for the last time (`last`); returns those to run again.
    fn attempt(&mut self, which: &[usize], last: bool, extra: &[String]) -> Vec<usize> {
        let (exit_code, stdout, stderr) = match self.run_process(which, extra) {
            Ok(done) => done,
            Err(f) => {
                which
                    .iter()
                    .for_each(|&i| self.outcomes[i] = Some(Err(f.clone())));
                return Vec::new();
            }
        };
        let names: Vec<&str> = which
            .iter()
            .map(|&i| self.members[i].0.discriminator.as_str())
            .collect();
        let mut parts = self.batch.split.split(&stdout, &names);
        parts.resize(which.len(), None);
        if exit_code != 0 && parts.iter().all(|p| p.as_ref().is_some_and(|p| p.passed)) {
            // The process failed, yet every member says it passed: believe none.
            parts.iter_mut().flatten().for_each(|p| p.passed = false);
        }
        let mut again = Vec::new();
        for (&i, part) in which.iter().zip(parts) {
            match part {
                Some(p) if p.passed => self.passed(i, p, extra.is_empty()),
                part if !last => {
                    self.failed_runs[i].push(part.map(|p| p.stdout).unwrap_or_default());
                    again.push(i);
                }
                Some(p) => self.failed(i, &p.stdout, &stderr, "failed", exit_code),
                None => self.failed(i, &stdout, &stderr, "reported no result", exit_code),
            }
        }
        again
    }

    /// Writes the batch file and runs the shared process over the members `which`:
    /// its exit code, stdout and stderr.
    fn run_process(
        &self,
        which: &[usize],
        extra: &[String],
    ) -> std::result::Result<(i32, Vec<u8>, Vec<u8>), Box<Failure>> {
        let listed: Vec<&Action> = which.iter().map(|&i| self.members[i].0).collect();
        write_batch_file(self.sandbox, self.spec, self.batch, &listed).map_err(fail)?;
        let mut env = self.spec.env.clone();
        env.insert(BATCH_ENV.into(), format!("{{sandbox}}/{BATCH_FILE}"));
        let kind = ActionKind::Exec(ExecSpec {
            argv: shared_argv(self.spec, self.batch, &listed, extra),
            env,
            ..self.spec.clone()
        });
        // The members' inputs by digest, for a remote executor (a batch that is not
        // shared runs one member: its own).
        let inputs: Vec<(Artifact, KeyInput)> = which
            .iter()
            .flat_map(|&i| self.members[i].1.iter().cloned())
            .collect();
        // A retry runs because an attempt failed: an engine that keeps failures in its
        // cache must not hand that one back.
        let retry = which.iter().any(|&i| !self.failed_runs[i].is_empty());
        let fresh = retry || listed.iter().any(|a| self.exec.must_run(a));
        let (exit_code, _, _) = self
            .exec
            .run(listed[0], &kind, self.sandbox, &inputs, fresh)?;
        let read = |name: &str| capture(self.sandbox, name);
        Ok((exit_code, read("stdout"), read("stderr")))
    }

    /// Settles a member that passed, unless it named an output the store lacks (then
    /// it runs again with the batch's `fresh_args`, if it may).
    fn passed(&mut self, i: usize, part: MemberOutput, may_refresh: bool) {
        let action = self.members[i].0;
        let named = match self.named_outputs(action, &part.named) {
            Ok(named) => named,
            Err(_) if may_refresh => return self.stale.push(i),
            Err(e) => return self.settle(i, Err(failure(e, self.sandbox, None, 0))),
        };
        let stdout = match self.failed_runs[i].is_empty() {
            true => part.stdout,
            false => self.batch.split.retried(&self.failed_runs[i], &part.stdout),
        };
        let captures = Some((stdout.as_slice(), &[][..]));
        let result = self
            .exec
            .result(
                action,
                self.sandbox.root(),
                captures,
                named,
                &super::Written::new(),
                self.started,
            )
            .map_err(|e| failure(e, self.sandbox, captures, 0));
        self.settle(i, result);
    }

    fn failed(&mut self, i: usize, stdout: &[u8], stderr: &[u8], why: &str, exit_code: i32) {
        let action = self.members[i].0;
        // The process's stderr is the batch's, not the member's: it is kept with the
        // members that failed, where it may explain why.
        let why = format!("{why} (exit code {exit_code})");
        let captures = Some((stdout, stderr));
        let f = failure(action.error(&why), self.sandbox, captures, exit_code);
        self.settle(i, Err(f));
    }

    fn settle(
        &mut self,
        i: usize,
        outcome: std::result::Result<kiln_cache::ActionResult, Box<Failure>>,
    ) {
        let action = self.members[i].0;
        let outcome = self
            .exec
            .with_reads(action, self.sandbox, self.since, outcome);
        self.outcomes[i] = Some(outcome);
    }

    /// The outputs a member named by digest that the sandbox lacks, as the store holds
    /// them; an error if it named an undeclared output or one the store does not hold.
    fn named_outputs(&self, action: &Action, named: &[NamedOutput]) -> Result<Vec<OutputFile>> {
        let mut out = Vec::new();
        for n in named {
            if !action.outputs.contains(&n.path) {
                return Err(action.error(&format!("named an undeclared output: {}", n.path)));
            }
            if self.sandbox.root().join(&n.path).is_file() {
                continue;
            }
            if !self.exec.store.contains(&n.digest)? {
                let why = format!(
                    "named {} as blob {}, which the cache no longer holds",
                    n.path, n.digest
                );
                return Err(action.error(&why));
            }
            out.push(OutputFile {
                path: n.path.clone(),
                digest: n.digest,
                size: n.size,
                executable: n.executable,
            });
        }
        Ok(out)
    }
}

/// Writes `.kiln/batch.json` for the members about to run together.
fn write_batch_file(
    sandbox: &Sandbox,
    spec: &ExecSpec,
    batch: &Batch,
    members: &[&Action],
) -> Result<()> {
    let file = BatchFile {
        workdir: spec.workdir.clone(),
        members: members
            .iter()
            .map(|action| BatchMember {
                args: own_args(action, batch).to_vec(),
                outputs: action.outputs.clone(),
            })
            .collect(),
    };
    let path = sandbox.root().join(BATCH_FILE);
    let json = serde_json::to_vec(&file).expect("batch files serialize");
    // A new file, never written through whatever an earlier attempt left at its path.
    let _ = std::fs::remove_file(&path);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("write", &path, e))?;
    std::io::Write::write_all(&mut out, &json).map_err(|e| Error::io("write", &path, e))
}

/// A batch member's own arguments: the last `member_args` of its argv.
fn own_args<'a>(action: &'a Action, batch: &Batch) -> &'a [String] {
    match &action.kind {
        ActionKind::Exec(spec) => &spec.argv[own_start(spec, batch)..],
        ActionKind::Builtin(_) => &[],
    }
}

fn own_start(spec: &ExecSpec, batch: &Batch) -> usize {
    spec.argv.len().saturating_sub(batch.member_args)
}

/// The common arguments of a batch's members, `extra`, then each member's own.
fn shared_argv(spec: &ExecSpec, batch: &Batch, group: &[&Action], extra: &[String]) -> Vec<String> {
    let mut argv = spec.argv[..own_start(spec, batch)].to_vec();
    argv.extend_from_slice(extra);
    for action in group {
        argv.extend_from_slice(own_args(action, batch));
    }
    argv
}
