//! The scheduler: walks the action DAG, runs ready actions on `jobs` worker threads.
//!
//! The main thread owns the graph state. For each ready action it computes the key from
//! its inputs' content digests (so an unchanged upstream output stops the rebuild there:
//! early cutoff), looks the key up (inline, or on a pool of lookup threads when the cache
//! is remote, so round trips overlap), and on a miss hands the action to a worker. A
//! failure stops new work unless `keep_going`.
//!
//! Misses of actions that may share a process (a [`crate::action::Batch`], such as one
//! `go test` per package) wait until no lookup is outstanding, then go to one worker
//! together, grouped by [`Action::batch_group`]; each member still finishes (and is
//! cached) under its own key.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use kiln_cache::{ActionResult, Digest};
use rayon::prelude::*;

use crate::action::{Action, ActionGraph, ActionId, Artifact};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{Done, Executor, Failure, Found, Outcome, Status};
use crate::key::{KeyInput, KeyRecord};

/// What the scheduler tells the user interface.
pub trait Reporter: Send + Sync {
    /// The action's key is being looked up in the cache.
    fn lookup(&self, _action: &Action) {}
    /// A cache miss: the action waits for a worker.
    fn queued(&self, _action: &Action) {}
    /// A cache hit that came from a remote cache.
    fn remote_hit(&self, _action: &Action) {}
    fn started(&self, _action: &Action) {}
    fn finished(
        &self,
        _action: &Action,
        _status: Status,
        _result: Option<&ActionResult>,
        _failure: Option<&Failure>,
    ) {
    }
}

/// A reporter that says nothing.
pub struct Quiet;
impl Reporter for Quiet {}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub jobs: usize,
    pub keep_going: bool,
    /// Threads that look keys up in the cache, so remote round trips overlap; 0 looks
    /// up on the scheduler thread (best for a local cache, where a lookup is microseconds).
    pub lookup_threads: usize,
    /// Run test actions ([`crate::action::ExecSpec::test`]) even when their results are
    /// cached (`kiln test --rerun`).
    pub rerun_tests: bool,
    /// Workers for actions that run on a remote executor, beyond `jobs` (which still
    /// bounds the actions that run here).
    pub remote_jobs: usize,
}

/// An action between its key computation and its end: key, record, staged inputs.
type Keyed = (Digest, KeyRecord, Vec<(Artifact, KeyInput)>);

/// What worker threads send back.
enum Msg {
    Looked(ActionId, Result<Option<Box<Found>>>),
    Ran(ActionId, Outcome),
}

/// The outcome of running a set of actions.
#[derive(Debug, Default)]
pub struct Report {
    pub total: usize,
    pub cached: usize,
    pub remote: usize,
    pub executed: usize,
    /// Of the executed actions, those that ran on a remote executor.
    pub remote_executed: usize,
    pub failed: usize,
    pub elapsed: Duration,
    pub results: HashMap<ActionId, ActionResult>,
    pub statuses: HashMap<ActionId, Status>,
    pub failures: Vec<(ActionId, Failure)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.results.len() == self.total
    }
}

/// Actions for one worker: one, or the members of a batch.
struct Job {
    members: Vec<(ActionId, Vec<(Artifact, KeyInput)>)>,
}

/// Runs `wanted` and everything they depend on. `done` holds results already known
/// (actions run during analysis).
pub fn run(
    graph: &ActionGraph,
    wanted: &[ActionId],
    done: &HashMap<ActionId, Done>,
    exec: &Executor,
    reporter: &dyn Reporter,
    opts: Options,
) -> Result<Report> {
    let started = Instant::now();
    let closure = graph.closure(wanted);
    let sources = hash_sources(graph, &closure, exec)?;
    let mut report = Report {
        total: closure.len(),
        ..Report::default()
    };
    let mut waiting: HashMap<ActionId, usize> = HashMap::new();
    let mut dependents: HashMap<ActionId, Vec<ActionId>> = HashMap::new();
    let mut ready = VecDeque::new();
    for &id in &closure {
        let deps = graph.deps(id);
        for &d in &deps {
            dependents.entry(d).or_default().push(id);
        }
        waiting.insert(id, deps.len());
        if deps.is_empty() {
            ready.push_back(id);
        }
    }
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let (lookup_tx, lookup_rx) = crossbeam_channel::unbounded::<(ActionId, Digest, KeyRecord)>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Msg>();
    std::thread::scope(|scope| -> Result<()> {
        let workers = match exec.remote {
            Some(_) => opts.jobs.max(opts.remote_jobs),
            None => opts.jobs,
        };
        for _ in 0..workers.max(1) {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                for job in job_rx {
                    let members: Vec<_> = job
                        .members
                        .iter()
                        .map(|(id, inputs)| (&graph.actions[*id], inputs.as_slice()))
                        .collect();
                    for (action, _) in &members {
                        reporter.started(action);
                    }
                    let outcomes = run_job(exec, &members);
                    for ((id, _), outcome) in job.members.iter().zip(outcomes) {
                        if done_tx.send(Msg::Ran(*id, outcome)).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        for _ in 0..opts.lookup_threads {
            let (lookup_rx, done_tx) = (lookup_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                for (id, key, record) in lookup_rx {
                    let found = exec.lookup(&graph.actions[id], &key, &record);
                    if done_tx
                        .send(Msg::Looked(id, found.map(|f| f.map(Box::new))))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop((job_rx, lookup_rx));
        let mut in_flight = 0usize;
        let mut stop = false;
        let mut state = State {
            graph,
            exec,
            reporter,
            report: &mut report,
            waiting: &mut waiting,
            dependents: &dependents,
            ready: &mut ready,
            keys: HashMap::new(),
            batches: BTreeMap::new(),
            lookups: 0,
        };
        loop {
            while let Some(id) = state.ready.pop_front() {
                if stop {
                    continue;
                }
                if let Some(done) = done.get(&id) {
                    if done.remote {
                        state.report.remote += 1;
                        reporter.remote_hit(&graph.actions[id]);
                    }
                    state.finish(id, done.result.clone(), done.status)?;
                    continue;
                }
                let inputs = input_digests(graph, id, &sources, &state.report.results)?;
                let key_inputs = inputs.iter().map(|(_, k)| k.clone()).collect();
                let action = &graph.actions[id];
                let record = exec.key_record(action, key_inputs)?;
                let key = record.digest();
                in_flight += 1;
                reporter.lookup(action);
                if opts.rerun_tests && action.is_test() {
                    state.keys.insert(id, (key, record, inputs));
                    state.looked(id, Ok(None), &job_tx)?;
                } else if opts.lookup_threads == 0 {
                    let found = exec.lookup(action, &key, &record).map(|f| f.map(Box::new));
                    state.keys.insert(id, (key, record, inputs));
                    if state.looked(id, found, &job_tx)? {
                        in_flight -= 1;
                    }
                } else {
                    state.lookups += 1;
                    lookup_tx
                        .send((id, key, record.clone()))
                        .expect("lookup threads outlive the loop");
                    state.keys.insert(id, (key, record, inputs));
                }
            }
            if state.lookups == 0 {
                in_flight -= state.dispatch_batches(&job_tx, stop);
            }
            if in_flight == 0 {
                break;
            }
            match done_rx.recv().expect("workers send before exiting") {
                Msg::Looked(id, found) => {
                    state.lookups -= 1;
                    if state.looked(id, found, &job_tx)? {
                        in_flight -= 1;
                    }
                }
                Msg::Ran(id, outcome) => {
                    in_flight -= 1;
                    let (key, record, _) =
                        state.keys.remove(&id).expect("running actions have keys");
                    let action = &graph.actions[id];
                    match outcome {
                        Ok(ran) => {
                            exec.store_ran(action, &key, &record, &ran)?;
                            state.finish(id, ran.result, Status::Executed)?;
                        }
                        Err(failure) => {
                            exec.note_failure(action, &key, &record, &failure);
                            state.report.failed += 1;
                            state.report.statuses.insert(id, Status::Failed);
                            reporter.finished(
                                &graph.actions[id],
                                Status::Failed,
                                None,
                                Some(&failure),
                            );
                            state.report.failures.push((id, *failure));
                            stop |= !opts.keep_going;
                        }
                    }
                }
            }
        }
        drop(job_tx);
        drop(lookup_tx);
        Ok(())
    })?;
    exec.flush()?;
    report.remote_executed = exec.remote_stats.lock().unwrap().executed as usize;
    report.elapsed = started.elapsed();
    Ok(report)
}

struct State<'a> {
    graph: &'a ActionGraph,
    exec: &'a Executor,
    reporter: &'a dyn Reporter,
    report: &'a mut Report,
    waiting: &'a mut HashMap<ActionId, usize>,
    dependents: &'a HashMap<ActionId, Vec<ActionId>>,
    ready: &'a mut VecDeque<ActionId>,
    keys: HashMap<ActionId, Keyed>,
    /// Misses waiting to run together, by batch group.
    batches: BTreeMap<String, Vec<ActionId>>,
    /// Lookups sent to the lookup threads and not answered yet.
    lookups: usize,
}

impl State<'_> {
    /// Handles a finished cache lookup: a hit finishes the action (returns true), a miss
    /// sends it to the workers (returns false: it is still in flight).
    fn looked(
        &mut self,
        id: ActionId,
        found: Result<Option<Box<Found>>>,
        job_tx: &crossbeam_channel::Sender<Job>,
    ) -> Result<bool> {
        let action = &self.graph.actions[id];
        match found? {
            Some(found) => {
                if found.remote {
                    self.report.remote += 1;
                    self.reporter.remote_hit(action);
                }
                self.keys.remove(&id).expect("looked-up actions have keys");
                let cached = kiln_cache::KeyOutcome::Cached;
                self.exec
                    .note_key(action, &found.key, &found.record, cached);
                self.finish(id, found.result, Status::Cached)?;
                Ok(true)
            }
            None => {
                self.reporter.queued(action);
                match action.batch_group() {
                    Some(group) => self.batches.entry(group).or_default().push(id),
                    None => self.send(vec![id], job_tx),
                }
                Ok(false)
            }
        }
    }

    fn send(&self, ids: Vec<ActionId>, job_tx: &crossbeam_channel::Sender<Job>) {
        let members = ids
            .into_iter()
            .map(|id| (id, self.keys[&id].2.clone()))
            .collect();
        job_tx
            .send(Job { members })
            .expect("workers outlive the loop");
    }

    /// Sends every waiting batch to the workers, or drops them all once the build
    /// stops; returns how many actions were dropped.
    fn dispatch_batches(&mut self, job_tx: &crossbeam_channel::Sender<Job>, stop: bool) -> usize {
        let mut dropped = 0;
        for (_, ids) in std::mem::take(&mut self.batches) {
            if stop {
                dropped += ids.len();
                for id in &ids {
                    self.keys.remove(id);
                }
            } else {
                self.send(ids, job_tx);
            }
        }
        dropped
    }

    fn finish(&mut self, id: ActionId, result: ActionResult, status: Status) -> Result<()> {
        self.exec.materialize(&result)?;
        match status {
            Status::Cached => self.report.cached += 1,
            Status::Executed => self.report.executed += 1,
            Status::Failed => self.report.failed += 1,
        }
        self.reporter
            .finished(&self.graph.actions[id], status, Some(&result), None);
        self.report.statuses.insert(id, status);
        self.report.results.insert(id, result);
        for &d in self.dependents.get(&id).map(Vec::as_slice).unwrap_or(&[]) {
            let n = self
                .waiting
                .get_mut(&d)
                .expect("dependents are in the closure");
            *n -= 1;
            if *n == 0 {
                self.ready.push_back(d);
            }
        }
        Ok(())
    }
}

/// Runs one job's actions; a panic fails them (rather than leaving the build waiting
/// for a worker that is gone).
fn run_job(exec: &Executor, members: &[(&Action, &[(Artifact, KeyInput)])]) -> Vec<Outcome> {
    let run = || match members[0].0.batch() {
        Some(_) => exec.execute_batch(members),
        None => vec![exec.execute(members[0].0, members[0].1)],
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let failure = Failure {
            error: Error::new(
                ErrorKind::Action,
                format!(
                    "kiln failed internally while running {}: {what}",
                    members[0].0.describe()
                ),
            ),
            stdout: Vec::new(),
            stdout_log: None,
            stderr: Vec::new(),
            exit_code: None,
            reads: None,
        };
        members
            .iter()
            .map(|_| Err(Box::new(failure.clone())))
            .collect()
    })
}

/// Digests of every source file the actions read, hashed in parallel.
fn hash_sources(
    graph: &ActionGraph,
    ids: &[ActionId],
    exec: &Executor,
) -> Result<HashMap<String, KeyInput>> {
    let mut paths: Vec<&str> = ids
        .iter()
        .flat_map(|&id| graph.actions[id].inputs.iter())
        .filter(|a| a.producer.is_none())
        .map(|a| a.path.as_str())
        .collect();
    paths.sort_unstable();
    paths.dedup();
    paths
        .par_iter()
        .map(|p| exec.source_input(p).map(|k| (p.to_string(), k)))
        .collect()
}

fn input_digests(
    graph: &ActionGraph,
    id: ActionId,
    sources: &HashMap<String, KeyInput>,
    results: &HashMap<ActionId, ActionResult>,
) -> Result<Vec<(Artifact, KeyInput)>> {
    graph.actions[id]
        .inputs
        .iter()
        .map(|artifact| {
            let key = match artifact.producer {
                None => sources[&artifact.path].clone(),
                Some(p) => {
                    let out = results[&p].output(&artifact.path).ok_or_else(|| {
                        Error::new(
                            ErrorKind::Action,
                            format!(
                                "{} did not produce {}",
                                graph.actions[p].describe(),
                                artifact.path
                            ),
                        )
                    })?;
                    KeyInput {
                        path: out.path.clone(),
                        digest: out.digest,
                        executable: out.executable,
                    }
                }
            };
            Ok((artifact.clone(), key))
        })
        .collect()
}
