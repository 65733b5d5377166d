//! `kiln cache …` and `kiln gocacheprog`.

use std::process::ExitCode;

use anyhow::Result;

use crate::context::open_local;

pub fn stats(json: bool) -> Result<ExitCode> {
    let stats = open_local()?.stats()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!("cache directory: {}", stats.dir.display());
        println!("blobs:           {} ({} bytes)", stats.blobs, stats.blob_bytes);
        println!("action results:  {}", stats.actions);
        println!("file states:     {}", stats.file_states);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gocacheprog() -> Result<ExitCode> {
    anyhow::bail!("gocacheprog is not available in this build yet")
}
