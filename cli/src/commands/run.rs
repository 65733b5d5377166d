//! `kiln run LABEL [-- ARGS]`: builds the target, then performs its run action (a push,
//! say). The run action is a side effect and is never cached.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use kiln_engine::label::Label;
use kiln_engine::rule::RunCtx;

use super::build::build;
use crate::context::Context;
use crate::progress::Progress;
use crate::Cli;

pub fn run(cli: &Cli, label: &str, args: &[String]) -> Result<ExitCode> {
    let ctx = Context::load(cli)?;
    let progress = Progress::new(ctx.store.clone(), false);
    let exec = ctx.executor(cli)?;
    let label = Label::parse(label, "")
        .map_err(|e| anyhow!(kiln_engine::Error::new(kiln_engine::ErrorKind::Label, e)))?;
    if ctx.workspace.target(&label).is_none() {
        return Err(ctx.workspace.missing_target(&label).into());
    }
    let (plan, report) = build(cli, &ctx, &exec, vec![label.clone()], &progress, false)?;
    progress.summary(&report, ctx.remote_enabled, ctx.runner.is_some());
    if !report.ok() {
        return Ok(ExitCode::from(1));
    }
    let Some(runner) = plan.infos.get(&label).and_then(|i| i.run.clone()) else {
        bail!("{label} has nothing to run (rules with a run action: oci_push, go_binary)");
    };
    let defaults: BTreeMap<String, String> = match ctx.workspace.section("stamp")? {
        Some(t) => t.str_map_self()?,
        None => BTreeMap::new(),
    };
    let stamp = exec.stamp(&defaults);
    let rc = RunCtx {
        root: &ctx.workspace.root,
        stamp,
        args,
    };
    match (runner.0)(&rc) {
        Ok(line) => {
            if !line.is_empty() {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => Err(anyhow!(kiln_engine::Error::new(
            kiln_engine::ErrorKind::Action,
            format!("run {label}: {message}")
        ))),
    }
}
