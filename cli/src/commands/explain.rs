//! `kiln explain LABEL`: why each action of the target ran in the last build.
//!
//! For an action that executed, the key it had is compared field by field with the key
//! it had before (both records are in the store, see `kiln_engine::key`): which input
//! file changed (path and both digests), which env variable, argument, tool or
//! dependency; or "first build" when kiln has never seen the action before.

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use kiln_cache::KeyOutcome;
use kiln_engine::executor::key_prefix;
use kiln_engine::key::KeyRecord;
use kiln_engine::label::Label;

use crate::context::Context;
use crate::Cli;

pub fn run(cli: &Cli, label: &str) -> Result<ExitCode> {
    let ctx = Context::load(cli)?;
    let label = Label::parse(label, "")
        .map_err(|e| anyhow!(kiln_engine::Error::new(kiln_engine::ErrorKind::Label, e)))?;
    if ctx.workspace.target(&label).is_none() {
        return Err(ctx.workspace.missing_target(&label).into());
    }
    let ws_prefix = key_prefix(&ctx.workspace.root);
    let mut entries: Vec<_> = ctx
        .local
        .last_keys(&format!("{ws_prefix}{label} "))?
        .into_iter()
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    if entries.is_empty() {
        println!("{label}: not built yet with this cache: its next build is a first build");
        return Ok(ExitCode::SUCCESS);
    }
    for (id, entry) in entries {
        let name = &id[ws_prefix.len()..];
        match entry.outcome {
            KeyOutcome::Cached => {
                println!("{name}: cached in the last build, nothing ran");
                continue;
            }
            KeyOutcome::Failed => {
                println!("{name}: failed in the last build; failures are not cached, so the next build runs it again");
                continue;
            }
            KeyOutcome::RetriedAfterFailure => {
                println!(
                    "{name}: executed because its previous run failed (failures are not cached)"
                );
                continue;
            }
            KeyOutcome::NotKept => {
                println!(
                    "{name}: executed, and its result was not kept: what it read is unknown \
                     (a test binary that exits before m.Run writes no test log; go test \
                     caches none such either), so every build runs it"
                );
                continue;
            }
            KeyOutcome::Executed => {}
        }
        let Some(prev) = entry.prev else {
            println!("{name}: executed: first build");
            continue;
        };
        let (old, new) = (record(&ctx, &prev)?, record(&ctx, &entry.key)?);
        match (old, new) {
            (Some(old), Some(new)) => {
                let reasons = new.diff(&old);
                if reasons.is_empty() {
                    println!("{name}: executed: its key was unchanged (the cached result was missing or evicted)");
                } else {
                    println!("{name}: executed because");
                    for reason in reasons {
                        println!("  {reason}");
                    }
                }
            }
            _ => println!("{name}: executed: its key changed, but the earlier key's record is gone (cache gc?)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn record(ctx: &Context, key: &kiln_cache::Digest) -> Result<Option<KeyRecord>> {
    Ok(match ctx.local.key_record(key)? {
        Some(text) => Some(serde_json::from_str(&text)?),
        None => None,
    })
}
