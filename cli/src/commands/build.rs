//! `kiln build [LABEL...]` and `kiln test [LABEL...] [--junit FILE]`.
//!
//! Both analyze the targets and run their actions. `build` leaves test targets out of
//! recursive patterns (`//...`), as Bazel does; naming a test target builds (runs) it.
//! `test` keeps only test targets, shows each package's result as `go test` does, and
//! can write JUnit XML.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use kiln_engine::executor::Executor;
use kiln_engine::label::{Label, Pattern};
use kiln_engine::noop;
use kiln_engine::plan::{expand_patterns, plan, Plan};
use kiln_engine::scheduler::{self, Options, Report, Reporter};

use crate::context::{jobs, Context};
use crate::progress::Progress;
use crate::trace::{Events, Tee, Trace};
use crate::Cli;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Build,
    Test,
}

/// What `kiln build` or `kiln test` was asked for, beyond the labels.
#[derive(Debug, Default, Clone)]
pub struct Request {
    /// `kiln test`.
    pub test: bool,
    pub junit: Option<PathBuf>,
    /// Run tests whose results are cached.
    pub rerun: bool,
    /// Test flags (`kiln test -- ARGS`).
    pub args: Vec<String>,
}

impl Request {
    fn mode(&self) -> Mode {
        match self.test {
            true => Mode::Test,
            false => Mode::Build,
        }
    }

    /// Whether test output is shown as `go test -v` shows it.
    fn verbose(&self) -> bool {
        kiln_rules::go::flags::TestArgs::parse(&self.args).is_ok_and(|a| a.verbose)
    }
}

pub fn run(cli: &Cli, labels: &[String], request: &Request) -> Result<ExitCode> {
    let mode = request.mode();
    let fast = FastPath::new(cli, labels, request)?;
    if let Some(code) = fast.as_ref().and_then(FastPath::replay) {
        return Ok(code);
    }
    let ctx = Context::load(cli)?;
    let progress = Progress::new(ctx.store.clone(), request.verbose());
    let mut exec = ctx.executor(cli)?;
    exec.test_args = request.args.clone();
    exec.rerun_tests = request.rerun;
    let targets = select(&ctx, &super::default_labels(labels), mode)?;
    let (plan, report) = build(cli, &ctx, &exec, targets, &progress, request.rerun)?;
    if let Some(path) = &request.junit {
        write_junit(&ctx, &plan.graph, &report, path)?;
    }
    progress.summary(&report, ctx.remote_enabled, ctx.runner.is_some());
    if let Some(fast) = fast {
        fast.record(&ctx, &exec, &plan, &report, &progress);
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The no-op fast path (see `kiln_engine::noop`) for `build` and `test` without
/// `--json`, `--profile` or `--junit`, which want a full build's events.
struct FastPath {
    manifest: PathBuf,
    root: PathBuf,
}

impl FastPath {
    fn new(cli: &Cli, labels: &[String], request: &Request) -> Result<Option<FastPath>> {
        let plain = request.junit.is_none() && !request.rerun;
        if !plain || cli.json.is_some() || cli.profile.is_some() {
            return Ok(None);
        }
        let start = match &cli.dir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir()?,
        };
        let Ok(root) = kiln_engine::workspace::find_root(&start) else {
            return Ok(None);
        };
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| std::fs::metadata(p).ok());
        let exe = exe.map(|m| (m.len(), m.modified().ok()));
        let env: Vec<(&str, Option<String>)> = [
            "PATH",
            "KILN_GO_CACHE",
            "KILN_REMOTE_CACHE",
            "GOROOT",
            "GOTOOLCHAIN",
            "HOME",
            "XDG_CONFIG_HOME",
        ]
        .iter()
        .map(|k| (*k, std::env::var(k).ok()))
        .collect();
        let fingerprint = format!(
            "{:?} {labels:?} {:?} {} {:?} {} {exe:?} {env:?}",
            request.test, request.args, cli.sandbox, cli.remote_cache, cli.remote_read_only
        );
        let manifest = noop::manifest_path(&kiln_cache::default_cache_dir(), &root, &fingerprint);
        Ok(Some(FastPath { manifest, root }))
    }

    /// Replays the recorded build if nothing it depended on changed.
    fn replay(&self) -> Option<ExitCode> {
        let started = std::time::Instant::now();
        let m = noop::check(&self.manifest, Some(&self.root))?;
        eprintln!("kiln: nothing changed since the last build");
        for line in &m.lines {
            eprint!("{line}");
        }
        let cached = if m.remote {
            format!("{} cached (0 remote)", m.total)
        } else {
            format!("{} cached", m.total)
        };
        eprintln!(
            "kiln: {} actions: {cached}, 0 executed, 0 failed in {:.2}s",
            m.total,
            started.elapsed().as_secs_f64()
        );
        Some(ExitCode::SUCCESS)
    }

    fn record(
        &self,
        ctx: &Context,
        exec: &Executor,
        plan: &Plan,
        report: &Report,
        progress: &Progress,
    ) {
        // Recorded only after a build that ran nothing, so that what `kiln explain` says
        // of the last build (nothing executed) stays true while builds are replayed.
        if !report.ok() || report.executed > 0 {
            let _ = std::fs::remove_file(&self.manifest);
            return;
        }
        let mut lines = Vec::new();
        for (id, action) in plan.graph.actions.iter().enumerate() {
            if let (true, Some(r)) = (action.show_output, report.results.get(&id)) {
                let stdout = ctx.store.read(&r.stdout).ok().flatten().unwrap_or_default();
                lines.push(progress.render_output(action, &stdout, true));
            }
        }
        let stamp = match exec.stamp_used() {
            true => {
                let defaults = match ctx.workspace.section("stamp") {
                    Ok(Some(t)) => t.str_map_self().unwrap_or_default(),
                    _ => Default::default(),
                };
                let values = exec.stamp(&defaults).clone();
                Some(noop::Stamp { defaults, values })
            }
            false => None,
        };
        let files = noop::watched_files(&ctx.workspace, &plan.graph, report);
        noop::record(
            &self.manifest,
            files,
            report.total,
            ctx.remote_enabled,
            lines,
            stamp,
        );
    }
}

/// Analyzes the targets and runs their actions, with `--profile` and `--json` when asked.
pub fn build(
    cli: &Cli,
    ctx: &Context,
    exec: &Executor,
    targets: Vec<Label>,
    progress: &Progress,
    rerun_tests: bool,
) -> Result<(Plan, Report)> {
    let remote_runs = exec.remote.as_ref().map(|_| exec.remote_stats.clone());
    let mut events = cli
        .json
        .as_deref()
        .map(|p| Events::create(p, ctx.store.clone()))
        .transpose()?;
    if let Some(events) = &mut events {
        events.remote_runs = remote_runs.clone();
    }
    let mut trace = cli.profile.as_ref().map(|_| Trace::new());
    if let Some(trace) = &mut trace {
        trace.remote_runs = remote_runs;
    }
    if let Some(events) = &events {
        let names: Vec<String> = targets.iter().map(Label::to_string).collect();
        events.emit(serde_json::json!({"event": "build_started", "targets": names}));
    }
    let plan = plan(&ctx.workspace, &ctx.rules, exec, targets)?;
    let mut wanted = plan.wanted_actions();
    wanted.extend(plan.done.keys().copied());
    let opts = Options {
        jobs: jobs(cli),
        keep_going: cli.keep_going,
        lookup_threads: if ctx.remote_enabled { 16 } else { 0 },
        rerun_tests,
        remote_jobs: ctx.remote_jobs(cli),
    };
    let mut reporters: Vec<&dyn Reporter> = vec![progress];
    reporters.extend(events.as_ref().map(|e| e as &dyn Reporter));
    reporters.extend(trace.as_ref().map(|t| t as &dyn Reporter));
    let report = scheduler::run(
        &plan.graph,
        &wanted,
        &plan.done,
        exec,
        &Tee(reporters),
        opts,
    )?;
    if let (Some(trace), Some(path)) = (&trace, &cli.profile) {
        trace.write(path)?;
    }
    if let Some(events) = &events {
        emit_targets(events, &plan, &report);
        events.finish(&report, exec.shared_store_stats());
    }
    Ok((plan, report))
}

fn emit_targets(events: &Events, plan: &Plan, report: &Report) {
    for label in &plan.targets {
        let ids = plan.graph.by_target.get(label).cloned().unwrap_or_default();
        let ok = ids.iter().all(|id| report.results.contains_key(id));
        let outputs: Vec<serde_json::Value> = ids
            .iter()
            .filter_map(|id| report.results.get(id))
            .flat_map(|r| r.outputs.iter())
            .map(|o| serde_json::json!({"path": o.path, "digest": o.digest.to_string()}))
            .collect();
        events.emit(serde_json::json!({"event": "target_finished", "target": label.to_string(), "ok": ok, "outputs": outputs}));
    }
}

/// The targets a command works on.
pub fn select(ctx: &Context, patterns: &[String], mode: Mode) -> Result<Vec<Label>> {
    let is_test = |l: &Label| {
        let rule = &ctx.workspace.target(l).expect("expanded labels exist").rule;
        ctx.rules.get(rule).is_some_and(|r| r.is_test())
    };
    let mut out = Vec::new();
    for text in patterns {
        let labels = expand_patterns(&ctx.workspace, std::slice::from_ref(text))?;
        let recursive = matches!(Pattern::parse(text, ""), Ok(Pattern::Recursive(_)));
        out.extend(labels.into_iter().filter(|l| match mode {
            Mode::Test => is_test(l),
            Mode::Build => !recursive || !is_test(l),
        }));
    }
    if mode == Mode::Test && out.is_empty() {
        let message = format!("no test targets among {}", patterns.join(" "));
        return Err(kiln_engine::Error::new(kiln_engine::ErrorKind::Config, message)
            .hint("`kiln test` runs go_test and other test targets: declare one in a BUILD.toml (`kiln init` writes a go_test for a Go module), or name other targets with `kiln build`")
            .into());
    }
    Ok(out)
}

fn write_junit(
    ctx: &Context,
    graph: &kiln_engine::action::ActionGraph,
    report: &Report,
    path: &Path,
) -> Result<()> {
    use kiln_rules::go::output;
    let mut reports = Vec::new();
    for (id, action) in graph.actions.iter().enumerate() {
        if action.mnemonic != "GoTest" {
            continue;
        }
        let stdout = if let Some(result) = report.results.get(&id) {
            ctx.store.read(&result.stdout)?.unwrap_or_default()
        } else if let Some((_, f)) = report.failures.iter().find(|(i, _)| *i == id) {
            output::failed_stdout(f).into_owned()
        } else {
            continue;
        };
        let mut r = output::parse(&stdout);
        if r.package.is_empty() {
            r.package = action.discriminator.clone();
        }
        reports.push(r);
    }
    std::fs::write(path, output::junit(&reports))
        .with_context(|| format!("failed to write {}", path.display()))
}
