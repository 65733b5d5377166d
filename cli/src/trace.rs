//! `--profile FILE` and `--json FILE`: what happened during a build, for people and tools.
//!
//! * [`Trace`] collects one span per action and writes a Chrome trace-event JSON file
//!   (open it in Perfetto or chrome://tracing): executed actions on the worker thread
//!   that ran them, with their queue wait; cache hits on the scheduler row, marked
//!   `hit` or `remote`, spanning their lookup (for a remote hit, the transfer).
//! * [`Events`] writes one JSON object per line as the build goes: `build_started`,
//!   `action_cached` / `action_executed` / `action_failed` (with output digests),
//!   `test_result`, `target_finished`, `build_finished`.
//! * [`Tee`] passes scheduler callbacks to several reporters.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Instant;

use anyhow::{Context as _, Result};
use kiln_cache::gocacheprog::ServeStats;
use kiln_cache::{ActionResult, Store};
use kiln_engine::action::Action;
use kiln_engine::executor::{Failure, RemoteStats, Status};
use kiln_engine::scheduler::{Report, Reporter};
use serde_json::{json, Value};

/// Forwards every callback to each reporter in turn.
pub struct Tee<'a>(pub Vec<&'a dyn Reporter>);

impl Reporter for Tee<'_> {
    fn lookup(&self, action: &Action) {
        self.0.iter().for_each(|r| r.lookup(action));
    }
    fn queued(&self, action: &Action) {
        self.0.iter().for_each(|r| r.queued(action));
    }
    fn remote_hit(&self, action: &Action) {
        self.0.iter().for_each(|r| r.remote_hit(action));
    }
    fn started(&self, action: &Action) {
        self.0.iter().for_each(|r| r.started(action));
    }
    fn finished(
        &self,
        action: &Action,
        status: Status,
        result: Option<&ActionResult>,
        failure: Option<&Failure>,
    ) {
        self.0
            .iter()
            .for_each(|r| r.finished(action, status, result, failure));
    }
}

#[derive(Default)]
struct Span {
    lookup: Option<Instant>,
    queued: Option<Instant>,
    started: Option<Instant>,
    thread: Option<ThreadId>,
    remote: bool,
}

/// Spans for `--profile`.
pub struct Trace {
    /// What ran on the remote executor (where, queue and transfer time).
    pub remote_runs: Option<RemoteRuns>,
    origin: Instant,
    open: Mutex<HashMap<String, Span>>,
    events: Mutex<Vec<Value>>,
    threads: Mutex<Vec<ThreadId>>,
}

impl Trace {
    pub fn new() -> Trace {
        Trace {
            remote_runs: None,
            origin: Instant::now(),
            open: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        }
    }

    fn micros(&self, t: Instant) -> u64 {
        t.duration_since(self.origin).as_micros() as u64
    }

    fn tid(&self, thread: Option<ThreadId>) -> usize {
        let Some(thread) = thread else { return 0 };
        let mut threads = self.threads.lock().unwrap();
        match threads.iter().position(|t| *t == thread) {
            Some(i) => i + 1,
            None => {
                threads.push(thread);
                threads.len()
            }
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let mut events = self.events.lock().unwrap().clone();
        events.push(json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "scheduler (cache hits)"}}));
        for i in 1..=self.threads.lock().unwrap().len() {
            events.push(json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": i, "args": {"name": format!("worker {i}")}}));
        }
        let doc = json!({"traceEvents": events, "displayTimeUnit": "ms"});
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("failed to write {}", path.display()))
    }
}

impl Trace {
    fn with_span(&self, action: &Action, f: impl FnOnce(&mut Span)) {
        f(self.open.lock().unwrap().entry(action.id()).or_default());
    }
}

impl Reporter for Trace {
    fn lookup(&self, action: &Action) {
        self.with_span(action, |s| s.lookup = Some(Instant::now()));
    }

    fn queued(&self, action: &Action) {
        self.with_span(action, |s| s.queued = Some(Instant::now()));
    }

    fn remote_hit(&self, action: &Action) {
        self.with_span(action, |s| s.remote = true);
    }

    fn started(&self, action: &Action) {
        let mut open = self.open.lock().unwrap();
        let span = open.entry(action.id()).or_default();
        span.started = Some(Instant::now());
        span.thread = Some(std::thread::current().id());
    }

    fn finished(
        &self,
        action: &Action,
        status: Status,
        _result: Option<&ActionResult>,
        _failure: Option<&Failure>,
    ) {
        let now = Instant::now();
        let span = self
            .open
            .lock()
            .unwrap()
            .remove(&action.id())
            .unwrap_or_default();
        // A cache hit's span is its lookup (for a remote hit: the round trips and the
        // transfer of its blobs); an executed action's span is its run on a worker.
        let start = span.started.or(span.lookup).unwrap_or(now);
        let cache = match (status, span.remote) {
            (Status::Cached, true) => "remote",
            (Status::Cached, false) => "hit",
            _ => "miss",
        };
        let wait = match (span.queued, span.started) {
            (Some(q), Some(s)) => s.duration_since(q).as_micros() as u64,
            _ => 0,
        };
        let event = json!({
            "name": action.describe(),
            "cat": cache,
            "ph": "X",
            "ts": self.micros(start),
            "dur": now.duration_since(start).as_micros() as u64,
            "pid": 1,
            "tid": self.tid(span.thread),
            "args": {
                "target": action.owner.to_string(),
                "mnemonic": action.mnemonic,
                "cache": cache,
                "status": format!("{status:?}").to_lowercase(),
                "queue_wait_us": wait,
            },
        });
        let mut event = event;
        if status != Status::Cached {
            event["args"]["ran_on"] = where_it_ran(&self.remote_runs, action);
        }
        self.events.lock().unwrap().push(event);
    }
}

/// The remote executor's record of a build's runs.
pub type RemoteRuns = Arc<Mutex<RemoteStats>>;

/// Where an action that ran did: `{"where": "local"}`, or the remote's worker, the time
/// it waited in the engine's queue, the time its inputs and outputs took to move, and
/// the steps of the run (kiln's upload and fetch, the worker's own from the engine's
/// timestamps).
fn where_it_ran(runs: &Option<RemoteRuns>, action: &Action) -> Value {
    let run = runs
        .as_ref()
        .and_then(|r| r.lock().unwrap().runs.get(&action.id()).cloned());
    match run {
        None => json!({"where": "local"}),
        Some(run) => {
            let ms = |d: std::time::Duration| d.as_millis() as u64;
            let p = &run.phases;
            json!({
                "where": "remote",
                "worker": run.worker,
                "engine_cached": run.cached,
                "queue_ms": ms(run.queued),
                "transfer_ms": ms(run.transfer),
                "phases_ms": {
                    "upload": ms(p.upload),
                    "worker": ms(p.worker),
                    "input_fetch": ms(p.input_fetch),
                    "execution": ms(p.execution),
                    "output_upload": ms(p.output_upload),
                    "fetch": ms(p.fetch),
                },
            })
        }
    }
}

/// The `--json` event stream.
pub struct Events {
    /// What ran on the remote executor (where, queue and transfer time).
    pub remote_runs: Option<RemoteRuns>,
    out: Mutex<BufWriter<File>>,
    store: Arc<dyn Store>,
    remote: Mutex<std::collections::HashSet<String>>,
}

impl Events {
    pub fn create(path: &Path, store: Arc<dyn Store>) -> Result<Events> {
        let file =
            File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
        Ok(Events {
            remote_runs: None,
            out: Mutex::new(BufWriter::new(file)),
            store,
            remote: Mutex::default(),
        })
    }

    pub fn emit(&self, event: Value) {
        let mut out = self.out.lock().unwrap();
        let _ = serde_json::to_writer(&mut *out, &event);
        let _ = out.write_all(b"\n");
    }

    /// The last event; `go_cache` is what Go's compile cache served, if any action used it.
    pub fn finish(&self, report: &Report, go_cache: Option<ServeStats>) {
        let go_cache = go_cache.map(|s| {
            json!({"gets": s.gets, "hits": s.hits, "remote_hits": s.remote_hits, "puts": s.puts})
        });
        self.emit(json!({
            "event": "build_finished",
            "total": report.total,
            "cached": report.cached,
            "remote": report.remote,
            "executed": report.executed,
            "failed": report.failed,
            "elapsed_s": report.elapsed.as_secs_f64(),
            "go_cache": go_cache,
        }));
        let _ = self.out.lock().unwrap().flush();
    }
}

fn outputs_json(result: &ActionResult) -> Value {
    result
        .outputs
        .iter()
        .map(|o| json!({"path": o.path, "digest": o.digest.to_string(), "size": o.size, "executable": o.executable}))
        .collect()
}

impl Reporter for Events {
    fn remote_hit(&self, action: &Action) {
        self.remote.lock().unwrap().insert(action.id());
    }

    fn started(&self, action: &Action) {
        self.emit(json!({"event": "action_started", "id": action.id(), "target": action.owner.to_string(), "mnemonic": action.mnemonic}));
    }

    fn finished(
        &self,
        action: &Action,
        status: Status,
        result: Option<&ActionResult>,
        failure: Option<&Failure>,
    ) {
        let name = match status {
            Status::Cached => "action_cached",
            Status::Executed => "action_executed",
            Status::Failed => "action_failed",
        };
        let mut event = json!({
            "event": name,
            "id": action.id(),
            "target": action.owner.to_string(),
            "mnemonic": action.mnemonic,
            "remote": self.remote.lock().unwrap().contains(&action.id()),
        });
        if status != Status::Cached {
            event["ran_on"] = where_it_ran(&self.remote_runs, action);
        }
        if let Some(r) = result {
            event["outputs"] = outputs_json(r);
            event["duration_ms"] = json!(r.duration_ms);
        }
        if let Some(f) = failure {
            event["error"] = json!(f.error.to_string());
        }
        self.emit(event);
        if action.mnemonic == "GoTest" {
            let stdout = match (result, failure) {
                (Some(r), _) => self
                    .store
                    .read(&r.stdout)
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
                (None, Some(f)) => kiln_rules::go::output::failed_stdout(f).into_owned(),
                _ => Vec::new(),
            };
            let report = kiln_rules::go::output::parse(&stdout);
            let tests: Vec<Value> = report
                .tests
                .iter()
                .map(|t| json!({"name": t.name, "status": t.status, "elapsed_s": t.elapsed}))
                .collect();
            self.emit(json!({
                "event": "test_result",
                "package": if report.package.is_empty() { action.discriminator.clone() } else { report.package.clone() },
                "passed": status != Status::Failed && report.passed,
                "cached": status == Status::Cached,
                "elapsed_s": report.elapsed,
                "flaky_attempt": report.flaky_attempt,
                "tests": tests,
            }));
        }
    }
}
