//! One module per command.

mod build;
mod cache;
mod clean;
mod explain;
pub mod go_build_each;
pub mod go_test_exec;
mod graph;
mod housekeeping;
mod init;
mod release;
mod run;
mod serve;
mod verify_repro;

use std::process::ExitCode;

use anyhow::Result;

use crate::{CacheCommand, Cli, Command, ReleaseCommand, StatsFormat};

pub fn run(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Build { labels } => build::run(cli, labels, &build::Request::default()),
        Command::Test {
            labels,
            junit,
            rerun,
            args,
        } => {
            let request = build::Request {
                test: true,
                junit: junit.clone(),
                rerun: *rerun,
                args: args.clone(),
            };
            build::run(cli, labels, &request)
        }
        Command::Run { label, args } => run::run(cli, label, args),
        Command::Explain { label } => explain::run(cli, label),
        Command::VerifyRepro { labels, cold } => verify_repro::run(cli, labels, *cold),
        Command::Graph { format, labels } => graph::run(cli, *format, labels),
        Command::Clean => clean::run(cli),
        Command::Init => init::run(cli),
        Command::Cache { command } => run_cache(cli, command),
        Command::Gocacheprog => cache::gocacheprog(),
        Command::Release {
            command: ReleaseCommand::List { label },
        } => release::list(cli, label),
        Command::Rollback { version, release } => release::rollback(cli, version, release),
        Command::Serve {
            listen,
            dir,
            max_size,
            token_env,
            max_client_connections,
        } => serve::run(serve::Args {
            listen: *listen,
            dir,
            max_size: max_size.as_deref(),
            token_env: token_env.as_deref(),
            max_client_connections: *max_client_connections,
        }),
    }
}

fn run_cache(cli: &Cli, command: &CacheCommand) -> Result<ExitCode> {
    match command {
        CacheCommand::Stats { format } => cache::stats(*format == StatsFormat::Json),
        CacheCommand::Keys => cache::keys(cli),
        CacheCommand::Gc { max_size } => housekeeping::gc(max_size),
        CacheCommand::Verify => housekeeping::verify(),
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
