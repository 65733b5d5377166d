//! What every command needs: the workspace root, the rules, the stores, the executor.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use kiln_cache::{HttpOptions, HttpStore, LocalStore, ReadOnly, Store, TieredStore};
use kiln_engine::executor::{Executor, SharedStore};
use kiln_engine::remote::RemoteExecutor;
use kiln_engine::rule::RuleSet;
use kiln_engine::sandbox::SandboxMode;
use kiln_engine::value::Table;
use kiln_engine::workspace::{find_root, Workspace};
use kiln_engine::ErrorKind;
use kiln_remote::{GrpcStore, Remote, RemoteRunner};

use crate::Cli;

pub struct Context {
    pub workspace: Workspace,
    pub rules: RuleSet,
    pub local: Arc<LocalStore>,
    pub store: Arc<dyn Store>,
    pub remote_enabled: bool,
    remote: Option<RemoteConfig>,
    /// The remote executor, when one is configured and answered.
    pub runner: Option<Arc<RemoteRunner>>,
    /// The remote cache's connection when it is an REAPI engine.
    grpc: Option<Arc<Remote>>,
}

/// Where the remote cache and executor are and how to talk to them.
///
/// The cache URL comes from `--remote-cache`, else `KILN_REMOTE_CACHE`, else kiln.toml's
/// `[remote] cache`; the executor's from `--remote-executor`, `KILN_REMOTE_EXECUTOR`,
/// `[remote] executor`. The bearer token is read from the environment variable that
/// `[remote] token_env` names (default `KILN_REMOTE_TOKEN`; a name starting with `KILN_`,
/// so that a repository's kiln.toml cannot send other secrets of the environment, such
/// as `AWS_SECRET_ACCESS_KEY`, to a remote of its choosing), never from a file in the
/// workspace, and never printed.
pub struct RemoteConfig {
    /// The cache: http(s):// or grpc(s)://; the executor's own when only it is given.
    pub url: Option<String>,
    pub executor: Option<String>,
    pub instance: String,
    /// `[remote] platform`: properties a worker must have.
    pub platform: BTreeMap<String, String>,
    pub read_only: bool,
    pub local_fallback: bool,
    pub jobs: usize,
    pub token: Option<String>,
}

/// A build's store, and the connection of its remote cache when that is an REAPI engine.
type Stores = (Arc<dyn Store>, Option<Arc<Remote>>);

/// The variable naming the remote cache when the command line does not.
const REMOTE_ENV: &str = "KILN_REMOTE_CACHE";

/// The variable naming the remote executor when the command line does not.
const EXECUTOR_ENV: &str = "KILN_REMOTE_EXECUTOR";

/// A remote cache URL: `http://`, `https://`, `grpc://` or `grpcs://`, a host, no white
/// space. The error completes "`URL` …".
pub fn check_remote_url(url: &str) -> std::result::Result<String, String> {
    if kiln_remote::is_grpc(url) {
        return kiln_remote::check_endpoint(url);
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("is not an http://, https://, grpc:// or grpcs:// URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || host.starts_with('@') {
        return Err("names no host".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("holds white space or a control character".into());
    }
    Ok(url.to_string())
}

/// A remote executor URL: `grpc://HOST:PORT` or `grpcs://HOST:PORT`.
pub fn check_executor_url(url: &str) -> std::result::Result<String, String> {
    kiln_remote::check_endpoint(url)
}

impl RemoteConfig {
    pub fn resolve(cli: &Cli, ws: &Workspace) -> Result<Option<RemoteConfig>> {
        let section = ws.section("remote")?;
        if let Some(t) = section {
            t.check_keys(
                &[
                    "cache",
                    "executor",
                    "instance",
                    "platform",
                    "read_only",
                    "token_env",
                    "jobs",
                ],
                "[remote]",
            )?;
        }
        let from_toml = |key: &str| -> Result<Option<String>> {
            Ok(match section {
                Some(t) => t.str(key)?.map(|s| s.value),
                None => None,
            })
        };
        let url = match &cli.remote_cache {
            Some(url) => Some(url.clone()),
            None => Self::url_from(section, REMOTE_ENV, "cache", check_remote_url)?,
        };
        let executor = match &cli.remote_executor {
            Some(url) => Some(url.clone()),
            None => Self::url_from(section, EXECUTOR_ENV, "executor", check_executor_url)?,
        };
        if url.is_none() && executor.is_none() {
            return Ok(None);
        }
        let toml_read_only = match section {
            Some(t) => t.bool("read_only")?.unwrap_or(false),
            None => false,
        };
        let platform = match section.map(|t| t.table("platform")).transpose()?.flatten() {
            Some(t) => t.str_map_self()?,
            None => BTreeMap::new(),
        };
        let toml_jobs = match section.map(|t| t.int("jobs")).transpose()?.flatten() {
            Some(n) if n >= 1 => Some(n as usize),
            Some(_) => {
                let t = section.expect("jobs came from it");
                return Err(t
                    .error_at("jobs", "[remote] jobs must be at least 1")
                    .into());
            }
            None => None,
        };
        let token_env = match section.map(|t| t.str("token_env")).transpose()?.flatten() {
            Some(name) if !name.value.starts_with("KILN_") => {
                let t = section.expect("token_env came from it");
                let message = format!(
                    "[remote] token_env `{}` does not start with KILN_",
                    name.value
                );
                return Err(t
                    .error_at("token_env", message)
                    .hint("kiln sends that variable to the remote kiln.toml names, so kiln.toml may name only kiln's own: rename the variable, e.g. KILN_CACHE_TOKEN")
                    .into());
            }
            Some(name) => name.value,
            None => "KILN_REMOTE_TOKEN".into(),
        };
        let token = std::env::var(&token_env).ok().filter(|v| !v.is_empty());
        Ok(Some(RemoteConfig {
            url,
            executor,
            instance: match &cli.remote_instance {
                Some(name) => name.clone(),
                None => from_toml("instance")?.unwrap_or_default(),
            },
            platform,
            read_only: cli.remote_read_only || toml_read_only,
            local_fallback: cli.remote_local_fallback,
            jobs: cli.remote_jobs.or(toml_jobs).unwrap_or(32),
            token,
        }))
    }

    /// The URL the command line did not give: from the variable `env`, else kiln.toml's
    /// `key`, each checked (a bad one is a configuration error naming where it came from).
    fn url_from(
        section: Option<&Table>,
        env: &str,
        key: &str,
        check: fn(&str) -> std::result::Result<String, String>,
    ) -> Result<Option<String>> {
        if let Some(url) = std::env::var_os(env).filter(|v| !v.is_empty()) {
            let url = url.to_str().map(String::from).ok_or_else(|| {
                let message = format!("{env} is not valid UTF-8");
                kiln_engine::Error::new(ErrorKind::Config, message)
            })?;
            return match check(&url) {
                Ok(url) => Ok(Some(url)),
                Err(e) => Err(kiln_engine::Error::new(
                    ErrorKind::Config,
                    format!("{env}: `{}` {e}", kiln_cache::redact_url(&url)),
                )
                .into()),
            };
        }
        let Some(url) = section.map(|t| t.str(key)).transpose()?.flatten() else {
            return Ok(None);
        };
        let at = section
            .expect("the url came from it")
            .location(url.span.start);
        check(&url.value).map(Some).map_err(|e| {
            let message = format!("remote {key} `{}` {e}", kiln_cache::redact_url(&url.value));
            kiln_engine::Error::new(ErrorKind::Config, message)
                .at(at)
                .into()
        })
    }

    fn options(&self) -> kiln_remote::Options {
        kiln_remote::Options {
            instance: self.instance.clone(),
            token: self.token.clone(),
        }
    }

    /// Connects to the executor: None, with a warning, if it cannot be reached and
    /// local fallback is allowed.
    fn connect_executor(&self) -> Result<Option<Arc<Remote>>> {
        let Some(url) = &self.executor else {
            return Ok(None);
        };
        let remote = match Remote::connect(url, &self.options()) {
            Ok(remote) => remote,
            Err(e) if self.local_fallback => {
                eprintln!("kiln: warning: remote executor {e}; running every action here (--remote-local-fallback)");
                return Ok(None);
            }
            Err(e) => {
                let error =
                    kiln_engine::Error::new(ErrorKind::Remote, format!("remote executor {e}"));
                // A refusal (credentials, certificate) says in its message what to fix.
                return Err(match kiln_remote::is_refusal(&e) {
                    true => error,
                    false => error.hint("check the address and that the engine runs, or add --remote-local-fallback to build here"),
                }
                .into());
            }
        };
        if !remote.can_execute {
            let message =
                format!("remote executor {url} does not execute actions (its capabilities say so)");
            return Err(kiln_engine::Error::new(ErrorKind::Remote, message).into());
        }
        Ok(Some(Arc::new(remote)))
    }

    /// The remote store over `local`, and the connection when it is an REAPI engine.
    fn tiered(&self, local: Arc<LocalStore>, executor: Option<&Arc<Remote>>) -> Result<Stores> {
        let url = match (&self.url, executor) {
            (Some(url), _) => url.clone(),
            (None, Some(exec)) => exec.url().to_string(),
            (None, None) => return Ok((local, None)),
        };
        let (remote, grpc): (Arc<dyn Store>, _) = if kiln_remote::is_grpc(&url) {
            let conn = match executor.filter(|e| e.url() == url) {
                Some(exec) => exec.clone(),
                None => {
                    match Remote::connect(&url, &self.options()) {
                        Ok(conn) => Arc::new(conn),
                        Err(e) => {
                            eprintln!("kiln: warning: remote cache {e}; building with the local cache only");
                            return Ok((local, None));
                        }
                    }
                }
            };
            (Arc::new(GrpcStore::new(conn.clone())), Some(conn))
        } else {
            let opts = HttpOptions {
                token: self.token.clone(),
                ..HttpOptions::default()
            };
            (Arc::new(HttpStore::new(&url, opts)?), None)
        };
        let remote: Arc<dyn Store> = if self.read_only {
            Arc::new(ReadOnly::new(remote))
        } else {
            remote
        };
        let shown = kiln_cache::redact_url(&url);
        Ok((Arc::new(TieredStore::new(local, remote, &shown)), grpc))
    }
}

/// The workspace of `-C DIR` (or the current directory) and the rules it was loaded
/// with, without opening the cache.
pub fn load_workspace(cli: &Cli) -> Result<(Workspace, RuleSet)> {
    let start = match &cli.dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir()?,
    };
    let root = find_root(&start)?;
    let rules = kiln_rules::all();
    let workspace = Workspace::load(&root, &rules.names(), &rules.sections())?;
    Ok((workspace, rules))
}

impl Context {
    pub fn load(cli: &Cli) -> Result<Context> {
        let (workspace, rules) = load_workspace(cli)?;
        let local = Arc::new(open_local()?);
        crate::signals::flush_on_interrupt(&local);
        let remote = RemoteConfig::resolve(cli, &workspace)?;
        let (mut store, mut grpc, mut runner): (Arc<dyn Store>, _, _) = (local.clone(), None, None);
        if let Some(config) = &remote {
            let executor = config.connect_executor()?;
            (store, grpc) = config.tiered(local.clone(), executor.as_ref())?;
            // SHA-256 digests computed for the engine are kept in the local index.
            for conn in executor.iter().chain(grpc.iter()) {
                conn.with_local_store(local.clone());
            }
            runner = executor.map(|e| Arc::new(RemoteRunner::new(e, config.platform.clone())));
        }
        Ok(Context {
            workspace,
            rules,
            local: local.clone(),
            remote_enabled: !Arc::ptr_eq(&store, &(local as Arc<dyn Store>)),
            store,
            remote,
            runner,
            grpc,
        })
    }

    pub fn executor(&self, cli: &Cli) -> Result<Executor> {
        let mode: SandboxMode = cli.sandbox.into();
        let mut exec = Executor::new(
            &self.workspace.root,
            self.local.clone(),
            self.store.clone(),
            mode,
        )?;
        exec.keep_sandbox_on_failure = cli.keep_sandbox;
        exec.shared_store = self.go_store()?;
        if let Some(runner) = &self.runner {
            exec.remote = Some(runner.clone() as Arc<dyn RemoteExecutor>);
            exec.remote_local_fallback = cli.remote_local_fallback;
            exec.local_slots.set_limit(jobs(cli));
        }
        Ok(exec)
    }

    /// Scheduler workers for remote actions (see `--remote-jobs`).
    pub fn remote_jobs(&self, cli: &Cli) -> usize {
        match (&self.runner, &self.remote) {
            (Some(_), Some(config)) => config.jobs,
            _ => jobs(cli),
        }
    }

    /// Go's compile cache when it is kept apart from the main store (`KILN_GO_CACHE`)
    /// and a remote is configured: a store of its own, tiered over the same remote. (In
    /// the main store it is the main store, remote and all; without a remote the
    /// executor opens it itself.)
    fn go_store(&self) -> Result<Option<SharedStore>> {
        let dir = kiln_engine::sandbox::go_cache_dir();
        let Some(remote) = self.remote.as_ref().filter(|_| dir != self.local.root()) else {
            return Ok(None);
        };
        if !self.remote_enabled {
            return Ok(None);
        }
        let local = Arc::new(LocalStore::open(&dir)?);
        let (store, _) = remote.tiered(local.clone(), self.grpc.as_ref())?;
        Ok(Some(SharedStore { store, local }))
    }

    pub fn out_dir(&self) -> PathBuf {
        self.workspace.root.join(kiln_engine::workspace::OUT_DIR)
    }
}

/// Opens the local store at `$KILN_CACHE` or the XDG cache directory.
pub fn open_local() -> Result<LocalStore> {
    Ok(LocalStore::open(&kiln_cache::default_cache_dir())?)
}

pub fn jobs(cli: &Cli) -> usize {
    cli.jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1)
}
