//! `kiln cache …` and `kiln gocacheprog`.

use std::process::ExitCode;

use anyhow::{Context as _, Result};

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
        println!(
            "failed outputs:  {} ({} bytes, in logs/; `kiln cache gc` removes old ones)",
            stats.logs, stats.log_bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Serves Go's GOCACHEPROG protocol on stdin/stdout: inside a build's sandbox by
/// relaying to the build's server (`KILN_STORE_SOCKET`), else from the store at
/// `$KILN_CACHE`. With `KILN_GOCACHEPROG_STATS=1` the latter prints its counts to
/// stderr when Go closes it.
pub fn gocacheprog() -> Result<ExitCode> {
    use kiln_cache::gocacheprog::{relay, SOCKET_ENV, TOKEN_ENV};
    if let Some(socket) = std::env::var_os(SOCKET_ENV).filter(|s| !s.is_empty()) {
        let socket = std::path::PathBuf::from(socket);
        let token = std::env::var(TOKEN_ENV).unwrap_or_default();
        relay(&socket, &token)
            .with_context(|| format!("failed to relay to {}", socket.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let local = open_local()?;
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    let stats = kiln_cache::gocacheprog::serve(&local, &local, stdin, stdout)?;
    if std::env::var_os("KILN_GOCACHEPROG_STATS").is_some_and(|v| v == "1") {
        eprintln!(
            "kiln gocacheprog: {} gets, {} hits, {} puts",
            stats.gets, stats.hits, stats.puts
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `ACTION-ID KEY` for every action of the workspace, sorted.
pub fn keys(cli: &Cli) -> Result<ExitCode> {
    let ctx = Context::load(cli)?;
    let prefix = kiln_engine::executor::key_prefix(&ctx.workspace.root);
    let mut keys: Vec<(String, String)> = ctx
        .local
        .last_keys(&prefix)?
        .into_iter()
        .map(|(id, entry)| (id[prefix.len()..].to_string(), entry.key.to_string()))
        .collect();
    keys.sort();
    for (id, key) in keys {
        println!("{id} {key}");
    }
    Ok(ExitCode::SUCCESS)
}
