//! `kiln graph [--format dot|json] [LABEL...]`: the action graph, without running it.

use std::process::ExitCode;

use anyhow::Result;
use kiln_engine::action::ActionKind;
use kiln_engine::plan::{expand_patterns, plan};

use crate::context::Context;
use crate::{Cli, GraphFormat};

pub fn run(cli: &Cli, format: GraphFormat, labels: &[String]) -> Result<ExitCode> {
    let ctx = Context::load(cli)?;
    let exec = ctx.executor(cli)?;
    let targets = expand_patterns(&ctx.workspace, &super::default_labels(labels))?;
    let plan = plan(&ctx.workspace, &ctx.rules, &exec, targets)?;
    let graph = &plan.graph;
    match format {
        GraphFormat::Dot => {
            println!("digraph kiln {{");
            for (id, a) in graph.actions.iter().enumerate() {
                println!("  a{id} [label={:?}];", a.describe());
                for d in graph.deps(id) {
                    println!("  a{d} -> a{id};");
                }
            }
            println!("}}");
        }
        GraphFormat::Json => {
            let actions: Vec<serde_json::Value> = graph
                .actions
                .iter()
                .enumerate()
                .map(|(id, a)| {
                    serde_json::json!({
                        "id": id,
                        "target": a.owner.to_string(),
                        "mnemonic": a.mnemonic,
                        "kind": match &a.kind { ActionKind::Exec(_) => "exec", ActionKind::Builtin(_) => "builtin" },
                        "inputs": a.inputs.iter().map(|i| i.path.clone()).collect::<Vec<_>>(),
                        "outputs": a.outputs,
                        "deps": graph.deps(id),
                    })
                })
                .collect();
            let targets: Vec<String> = plan.order.iter().map(|l| l.to_string()).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"targets": targets, "actions": actions})
                )?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
