//! The `kiln` command line: parses arguments, runs one command, decides the exit code.
//!
//! Exit codes (decided only in [`exit_code`]): 0 success, 1 a build or test failed,
//! 2 bad usage or configuration (a bad argument, a BUILD.toml error, an unknown label),
//! 3 an internal or cache error; 130 and 143 after SIGINT and SIGTERM (see [`signals`]).
//! Bad arguments, as every error, are one line (`kiln: error: …`): option values are
//! checked as clap parses them.

/// mimalloc (an edit build: 487M instructions with the system allocator, 353M with it),
/// built without its transparent-huge-page advice (cli/Cargo.toml, `no_thp`): with it,
/// every thread's first allocations faulted in and zeroed 2 MiB pages, a quarter of
/// kiln's CPU when 1,000 results come from a gRPC cache on 16 threads.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;
mod context;
mod environ;
mod fds;
mod progress;
mod signals;
mod trace;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kiln_engine::sandbox::SandboxMode;

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
    #[arg(short = 'j', long, global = true, value_parser = at_least_one)]
    pub jobs: Option<usize>,
    /// Keep building what does not depend on a failure.
    #[arg(short = 'k', long, global = true)]
    pub keep_going: bool,
    /// Sandbox: auto (bubblewrap where it works), bwrap, or dir.
    #[arg(long, global = true, value_enum, default_value_t = Sandbox::Auto)]
    pub sandbox: Sandbox,
    /// Keep the sandbox directory of a failed action for inspection.
    #[arg(long, global = true)]
    pub keep_sandbox: bool,
    /// Remote cache base URL (also KILN_REMOTE_CACHE, or `[remote] cache` in kiln.toml).
    #[arg(long, global = true, value_name = "URL", value_parser = context::check_remote_url)]
    pub remote_cache: Option<String>,
    /// Read from the remote cache but never upload (for untrusted CI jobs).
    #[arg(long, global = true)]
    pub remote_read_only: bool,
    /// Run actions on a Remote Execution API engine, grpc://HOST:PORT or grpcs://
    /// (also KILN_REMOTE_EXECUTOR, or `[remote] executor`); its cache is the remote
    /// cache unless one is given.
    #[arg(long, global = true, value_name = "URL", value_parser = context::check_executor_url)]
    pub remote_executor: Option<String>,
    /// The REAPI instance name (also `[remote] instance`).
    #[arg(long, global = true, value_name = "NAME")]
    pub remote_instance: Option<String>,
    /// Run actions here when the remote executor cannot be reached.
    #[arg(long, global = true)]
    pub remote_local_fallback: bool,
    /// Actions in flight on the remote executor at once (default 32), beyond -j, which
    /// bounds the actions that run here.
    #[arg(long, global = true, value_name = "N", value_parser = at_least_one)]
    pub remote_jobs: Option<usize>,
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
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
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
    /// The published releases of a release target with a `store`.
    Release {
        #[command(subcommand)]
        command: ReleaseCommand,
    },
    /// Point a release store's `current` at a published VERSION, after checking its
    /// files against their checksums; builds nothing.
    Rollback {
        version: String,
        /// The release target whose store to use.
        #[arg(long, default_value = "//:release")]
        release: String,
    },
}

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Versions, publication times, digests; `*` marks the current one.
    List {
        #[arg(default_value = "//:release")]
        label: String,
    },
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Counts and sizes.
    Stats {
        /// Output format: text or json.
        #[arg(long, value_enum, default_value_t = StatsFormat::Text)]
        format: StatsFormat,
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

/// How actions are sandboxed (`--sandbox`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Sandbox {
    Auto,
    Bwrap,
    Dir,
}

impl From<Sandbox> for SandboxMode {
    fn from(s: Sandbox) -> SandboxMode {
        match s {
            Sandbox::Auto => SandboxMode::Auto,
            Sandbox::Bwrap => SandboxMode::Bwrap,
            Sandbox::Dir => SandboxMode::Dir,
        }
    }
}

impl fmt::Display for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.to_possible_value().expect("no value is skipped");
        f.write_str(value.get_name())
    }
}

/// `kiln graph --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Json,
}

/// `kiln cache stats --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    Text,
    Json,
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("give at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A command line kiln cannot run, in one line.
#[derive(Debug)]
struct Usage(String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

impl Usage {
    /// clap's error as one line: its message and hints, without the usage and help
    /// lines that follow.
    fn from_clap(err: &clap::Error) -> Usage {
        let text = err.render().to_string();
        let parts: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
            .collect();
        let mut line = String::new();
        for part in parts {
            if !line.is_empty() {
                // A list of values reads on; a tip is a clause of its own.
                line.push_str(if part.starts_with('[') { " " } else { "; " });
            }
            line.push_str(part);
        }
        Usage(hide_passwords(
            line.strip_prefix("error: ").unwrap_or(&line),
        ))
    }

    fn not_utf8(arg: &OsString) -> Usage {
        Usage(format!("argument {arg:?} is not valid UTF-8"))
    }
}

/// A message with the `user:password@` part of every URL in it left out (a bad
/// `--remote-cache` value is quoted by clap).
fn hide_passwords(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '\'' || c == '`' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        out.push_str(
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host),
        );
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The arguments after the program name, checked to be UTF-8.
fn utf8_args(args: &[OsString]) -> Result<Vec<String>, Usage> {
    args.iter()
        .map(|a| {
            a.to_str()
                .map(String::from)
                .ok_or_else(|| Usage::not_utf8(a))
        })
        .collect()
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when a reader stops reading
    // (`kiln graph | head`) instead of failing to write.
    environ::scrub();
    fds::close_inherited_on_exec();
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let code = match run(std::env::args_os().collect()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kiln: error: {err:#}");
            exit_code(&err)
        }
    };
    signals::wait_if_interrupted();
    // Everything is flushed by now: exit without freeing the build's memory.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(if code == ExitCode::SUCCESS {
        0
    } else {
        exit_status(&code)
    })
}

fn run(args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    use clap::error::ErrorKind;
    // Helpers run inside sandboxes with arguments of their own: not parsed as kiln's.
    let helper = match args.get(1).and_then(|a| a.to_str()) {
        Some("go-test-exec") => Some(commands::go_test_exec::run as fn(&[String]) -> _),
        Some("go-build-each") => Some(commands::go_build_each::run as fn(&[String]) -> _),
        Some(kiln_remote::LAUNCH_COMMAND) => {
            // A remote worker's input root, where no kiln-launch lies beside kiln: returns
            // only if the process could not start.
            let e = kiln_launch::run();
            let message = format!("kiln launch: {e}");
            return Err(kiln_engine::Error::new(kiln_engine::ErrorKind::Action, message).into());
        }
        _ => None,
    };
    if let Some(helper) = helper {
        return helper(&utf8_args(&args[2..])?);
    }
    signals::install();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version: not errors.
            err.print()?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(err) if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            err.print()?;
            return Err(Usage("a command is needed".into()).into());
        }
        Err(err) if err.kind() == ErrorKind::InvalidUtf8 => {
            let bad = args.iter().find(|a| a.to_str().is_none());
            return Err(bad
                .map_or_else(|| Usage::from_clap(&err), Usage::not_utf8)
                .into());
        }
        Err(err) => return Err(Usage::from_clap(&err).into()),
    };
    commands::run(&cli)
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
    if err.downcast_ref::<Usage>().is_some() {
        return ExitCode::from(2);
    }
    match err.downcast_ref::<kiln_engine::Error>().map(|e| e.kind) {
        Some(K::Config | K::Label | K::Cycle | K::MissingFile) => ExitCode::from(2),
        Some(K::Action) => ExitCode::from(1),
        _ => ExitCode::from(3),
    }
}
