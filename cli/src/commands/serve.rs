//! `kiln serve`: the built-in remote cache server.
//!
//! `--token-env NAME` must name a variable holding a token a client can send: unset,
//! empty, or with white space at either end or control characters (which no HTTP header
//! carries), it would start a server nobody can write to, so kiln refuses to start (exit
//! 2, one line naming the variable, never its value).

use std::env::VarError;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use kiln_cache::server::{parse_size, serve, ServeOptions};
use kiln_engine::{Error, ErrorKind};

/// What `kiln serve` was given on its command line.
pub struct Args<'a> {
    pub listen: SocketAddr,
    pub dir: &'a Path,
    pub max_size: Option<&'a str>,
    pub token_env: Option<&'a str>,
    pub max_client_connections: Option<usize>,
}

pub fn run(args: Args<'_>) -> Result<ExitCode> {
    let mut opts = ServeOptions::new(args.listen, args.dir.to_path_buf());
    opts.max_size = args
        .max_size
        .map(parse_size)
        .transpose()
        .map_err(|e| Error::new(ErrorKind::Config, format!("--max-size: {e}")))?;
    if let Some(name) = args.token_env {
        opts.token = Some(token(name)?);
    }
    if let Some(n) = args.max_client_connections {
        if n == 0 {
            let message = "--max-client-connections: give at least 1";
            return Err(Error::new(ErrorKind::Config, message).into());
        }
        opts.max_per_client = n;
    }
    serve(opts)?;
    Ok(ExitCode::SUCCESS)
}

/// The write token in `$name`, if a client could send it.
fn token(name: &str) -> Result<String, Error> {
    let refuse = |why: &str| {
        Error::new(
            ErrorKind::Config,
            format!("--token-env {name}: ${name} {why}, so nobody could write to the cache"),
        )
    };
    match std::env::var(name) {
        Err(VarError::NotPresent) => Err(refuse("is not set")),
        Err(VarError::NotUnicode(_)) => Err(refuse("is not UTF-8")),
        Ok(token) if token.is_empty() => Err(refuse("is empty")),
        Ok(token) if token.trim() != token || token.chars().any(char::is_control) => Err(refuse(
            "has white space at an end or a control character, which no HTTP header carries",
        )),
        Ok(token) => Ok(token),
    }
}
