//! One module per command.

mod build;
mod cache;
mod clean;
mod graph;
mod serve;

use std::process::ExitCode;

use anyhow::Result;

use crate::{CacheCommand, Cli, Command};

pub fn run(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Build { labels } => build::run(cli, labels, build::Mode::Build, None),
        Command::Test { labels, junit } => {
            build::run(cli, labels, build::Mode::Test, junit.as_deref())
        }
        Command::Graph { format, labels } => graph::run(cli, format, labels),
        Command::Clean => clean::run(cli),
        Command::Cache {
            command: CacheCommand::Stats { json },
        } => cache::stats(*json),
        Command::Cache {
            command: CacheCommand::Keys,
        } => cache::keys(cli),
        Command::Gocacheprog => cache::gocacheprog(),
        Command::Serve {
            listen,
            dir,
            max_size,
            token_env,
        } => serve::run(*listen, dir, max_size.as_deref(), token_env.as_deref()),
    }
}

/// `//...` when no label is given.
pub fn default_labels(labels: &[String]) -> Vec<String> {
    if labels.is_empty() {
        vec!["//...".to_string()]
    } else {
        labels.to_vec()
    }
}
