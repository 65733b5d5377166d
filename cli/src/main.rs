//! The `kiln` command line: parses arguments, runs one command, decides the exit code.
//!
//! Exit codes (decided only in [`exit_code`]): 0 success, 1 a build or test failed,
//! 2 bad usage or configuration (a BUILD.toml error, an unknown label), 3 an internal or
//! cache error; 130 and 143 after SIGINT and SIGTERM (see [`signals`]).

mod commands;
mod context;
mod environ;
mod progress;
mod signals;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Declarative, content-addressed builds for Go services"
)]
pub struct Cli {
    /// Run as if kiln was started in DIR.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Parallel actions (default: number of cores).
    #[arg(short = 'j', long, global = true)]
    pub jobs: Option<usize>,
    /// Keep building what does not depend on a failure.
    #[arg(short = 'k', long, global = true)]
    pub keep_going: bool,
    /// Sandbox: auto (bubblewrap where it works), bwrap, or dir.
    #[arg(long, global = true, default_value = "auto")]
    pub sandbox: String,
    /// Keep the sandbox directory of a failed action for inspection.
    #[arg(long, global = true)]
    pub keep_sandbox: bool,
    /// Remote cache base URL (also KILN_REMOTE_CACHE, or `[remote] cache` in kiln.toml).
    #[arg(long, global = true, value_name = "URL")]
    pub remote_cache: Option<String>,
    /// Read from the remote cache but never upload (for untrusted CI jobs).
    #[arg(long, global = true)]
    pub remote_read_only: bool,
    /// Write a Chrome trace-event JSON of the build (Perfetto, chrome://tracing).
    #[arg(long, global = true, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Write build events as JSON lines, for CI tools.
    #[arg(long, global = true, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build targets (default //...).
    Build { labels: Vec<String> },
    /// Run test targets (default //...): each Go package's tests built and run as
    /// cached actions. Arguments after `--` are go test's test flags (-run, -short, -v,
    /// -count, ...; a test binary's own flags after -args).
    Test {
        labels: Vec<String>,
        /// Write JUnit XML for CI systems.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Run tests even where their results are cached (as go test -count=1).
        #[arg(long)]
        rerun: bool,
        /// go test's test flags, for every test.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build a target, then perform its run action (e.g. an oci_push).
    Run {
        label: String,
        /// Arguments for the run action.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Why the last build ran each action of a target: what changed in its key.
    Explain { label: String },
    /// Build again with the cache bypassed, in a fresh store and sandbox path, and
    /// compare every output with the normal build.
    VerifyRepro {
        labels: Vec<String>,
        /// Give the second build an empty Go compile cache too.
        #[arg(long)]
        cold: bool,
    },
    /// Write kiln.toml and BUILD.toml files (targets that build) for the Go module in the
    /// current directory and the modules nested in it.
    Init,
    /// Print the action graph.
    Graph {
        #[arg(long, default_value = "dot")]
        format: String,
        labels: Vec<String>,
    },
    /// Delete kiln-out/ (the cache is kept).
    Clean,
    /// Inspect the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Serve the remote cache protocol (HEAD/GET/PUT /cas/<digest>, /ac/<key>).
    Serve {
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        dir: PathBuf,
        /// Evict least recently used entries past this size (e.g. 50G).
        #[arg(long)]
        max_size: Option<String>,
        /// Require `Authorization: Bearer $NAME` for writes.
        #[arg(long, value_name = "NAME")]
        token_env: Option<String>,
        /// Connections one client address may hold at once (default 256 of 512).
        #[arg(long, value_name = "N")]
        max_client_connections: Option<usize>,
    },
    /// Serve Go's GOCACHEPROG protocol on stdin/stdout from kiln's store.
    #[command(hide = true)]
    Gocacheprog,
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Counts and sizes.
    Stats {
        /// Output format: text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// The key each action of this workspace had in its last build.
    Keys,
    /// Evict least recently used entries until the cache fits SIZE (e.g. 10G).
    Gc {
        #[arg(long)]
        max_size: String,
    },
    /// Rehash every blob; remove corrupt ones and the results that point at them.
    Verify,
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when a reader stops reading
    // (`kiln graph | head`) instead of failing to write.
    environ::scrub();
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Helpers run inside sandboxes with arguments of their own: not parsed as kiln's.
    let args: Vec<String> = std::env::args().collect();
    let helper = match args.get(1).map(String::as_str) {
        Some("go-test-exec") => Some(commands::go_test_exec::run as fn(&[String]) -> _),
        Some("go-build-each") => Some(commands::go_build_each::run as fn(&[String]) -> _),
        _ => None,
    };
    if let Some(helper) = helper {
        return match helper(&args[2..]) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("kiln: error: {err:#}");
                ExitCode::from(3)
            }
        };
    }
    signals::install();
    let cli = Cli::parse();
    let code = match commands::run(&cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kiln: error: {err:#}");
            exit_code(&err)
        }
    };
    // Everything is flushed by now: exit without freeing the build's memory.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(if code == ExitCode::SUCCESS {
        0
    } else {
        exit_status(&code)
    })
}

fn exit_status(code: &ExitCode) -> i32 {
    // ExitCode hides its value; the few codes kiln uses are compared one by one.
    (1..=3)
        .find(|&c| *code == ExitCode::from(c as u8))
        .unwrap_or(1)
}

/// The one place exit codes are decided.
fn exit_code(err: &anyhow::Error) -> ExitCode {
    use kiln_engine::ErrorKind as K;
    match err.downcast_ref::<kiln_engine::Error>().map(|e| e.kind) {
        Some(K::Config | K::Label | K::Cycle | K::MissingFile) => ExitCode::from(2),
        Some(K::Action) => ExitCode::from(1),
        _ => ExitCode::from(3),
    }
}
