//! `kiln cache …` and `kiln gocacheprog`.

use std::process::ExitCode;

use anyhow::Result;

use crate::context::{open_local, Context};
use crate::Cli;

pub fn stats(json: bool) -> Result<ExitCode> {
    let stats = open_local()?.stats()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!("cache directory: {}", stats.dir.display());
        println!(
            "blobs:           {} ({} bytes)",
            stats.blobs, stats.blob_bytes
        );
        println!("action results:  {}", stats.actions);
        println!("file states:     {}", stats.file_states);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gocacheprog() -> Result<ExitCode> {
    anyhow::bail!("gocacheprog is not available in this build yet")
}

/// Prints `ACTION-ID KEY` for every action of the workspace, sorted.
pub fn keys(cli: &Cli) -> Result<ExitCode> {
    let ctx = Context::load(cli)?;
    let prefix = kiln_engine::executor::key_prefix(&ctx.workspace.root);
    let mut keys: Vec<(String, String)> = ctx
        .local
        .last_keys(&prefix)?
        .into_iter()
        .map(|(id, key)| (id[prefix.len()..].to_string(), key.to_string()))
        .collect();
    keys.sort();
    for (id, key) in keys {
        println!("{id} {key}");
    }
    Ok(ExitCode::SUCCESS)
}
