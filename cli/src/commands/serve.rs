//! `kiln serve`: the built-in remote cache server.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use kiln_cache::server::{parse_size, serve, ServeOptions};

pub fn run(
    listen: SocketAddr,
    dir: &Path,
    max_size: Option<&str>,
    token_env: Option<&str>,
) -> Result<ExitCode> {
    let mut opts = ServeOptions::new(listen, dir.to_path_buf());
    opts.max_size = max_size.map(parse_size).transpose()?;
    if let Some(name) = token_env {
        let token = std::env::var(name)
            .with_context(|| format!("failed to read the token: ${name} is not set"))?;
        opts.token = Some(token);
    }
    serve(opts)?;
    Ok(ExitCode::SUCCESS)
}
