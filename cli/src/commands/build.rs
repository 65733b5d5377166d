//! `kiln build [LABEL...]`.

use std::process::ExitCode;

use anyhow::Result;
use kiln_engine::plan::{expand_patterns, plan};
use kiln_engine::scheduler::{self, Options};

use crate::context::{jobs, Context};
use crate::progress::Progress;
use crate::Cli;

pub fn run(cli: &Cli, labels: &[String]) -> Result<ExitCode> {
    let progress = Progress::new();
    let ctx = Context::load(cli)?;
    let exec = ctx.executor(cli)?;
    let targets = expand_patterns(&ctx.workspace, &super::default_labels(labels))?;
    let plan = plan(&ctx.workspace, &ctx.rules, &exec, targets)?;
    let mut wanted = plan.wanted_actions();
    wanted.extend(plan.done.keys().copied());
    let opts = Options {
        jobs: jobs(cli),
        keep_going: cli.keep_going,
    };
    let report = scheduler::run(&plan.graph, &wanted, &plan.done, &exec, &progress, opts)?;
    progress.summary(&report, ctx.remote_enabled);
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
