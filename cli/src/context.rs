//! What every command needs: the workspace root, the rules, the stores, the executor.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use kiln_cache::{HttpOptions, HttpStore, LocalStore, ReadOnly, Store, TieredStore};
use kiln_engine::executor::{Executor, SharedStore};
use kiln_engine::rule::RuleSet;
use kiln_engine::sandbox::SandboxMode;
use kiln_engine::value::Table;
use kiln_engine::workspace::{find_root, Workspace};
use kiln_engine::ErrorKind;

use crate::Cli;

pub struct Context {
    pub workspace: Workspace,
    pub rules: RuleSet,
    pub local: Arc<LocalStore>,
    pub store: Arc<dyn Store>,
    pub remote_enabled: bool,
    remote: Option<RemoteConfig>,
}

/// Where the remote cache is and how to talk to it.
///
/// The URL comes from `--remote-cache`, else `KILN_REMOTE_CACHE`, else kiln.toml's
/// `[remote] cache`. The bearer token is read from the environment variable that
/// `[remote] token_env` names (default `KILN_REMOTE_TOKEN`), never from a file in the
/// workspace, and never printed.
pub struct RemoteConfig {
    pub url: String,
    pub read_only: bool,
    pub token: Option<String>,
}

/// The variable naming the remote cache when the command line does not.
const REMOTE_ENV: &str = "KILN_REMOTE_CACHE";

/// A remote cache URL: `http://` or `https://`, a host, no white space. The error
/// completes "`URL` …".
pub fn check_remote_url(url: &str) -> std::result::Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("is not an http:// or https:// URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || host.starts_with('@') {
        return Err("names no host".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("holds white space or a control character".into());
    }
    Ok(url.to_string())
}

impl RemoteConfig {
    pub fn resolve(cli: &Cli, ws: &Workspace) -> Result<Option<RemoteConfig>> {
        let section = ws.section("remote")?;
        if let Some(t) = section {
            t.check_keys(&["cache", "read_only", "token_env"], "[remote]")?;
        }
        let from_toml = |key: &str| -> Result<Option<String>> {
            Ok(match section {
                Some(t) => t.str(key)?.map(|s| s.value),
                None => None,
            })
        };
        let url = match &cli.remote_cache {
            Some(url) => Some(url.clone()),
            None => Self::remote_url_from(section)?,
        };
        let Some(url) = url else { return Ok(None) };
        let toml_read_only = match section {
            Some(t) => t.bool("read_only")?.unwrap_or(false),
            None => false,
        };
        let token_env = from_toml("token_env")?.unwrap_or_else(|| "KILN_REMOTE_TOKEN".into());
        let token = std::env::var(&token_env).ok().filter(|v| !v.is_empty());
        Ok(Some(RemoteConfig {
            url,
            read_only: cli.remote_read_only || toml_read_only,
            token,
        }))
    }

    /// The url the command line did not give: `KILN_REMOTE_CACHE`, else kiln.toml's,
    /// each checked (a bad one is a configuration error naming where it came from).
    fn remote_url_from(section: Option<&Table>) -> Result<Option<String>> {
        if let Some(url) = std::env::var_os(REMOTE_ENV).filter(|v| !v.is_empty()) {
            let url = url.to_str().map(String::from).ok_or_else(|| {
                let message = format!("{REMOTE_ENV} is not valid UTF-8");
                kiln_engine::Error::new(ErrorKind::Config, message)
            })?;
            return match check_remote_url(&url) {
                Ok(url) => Ok(Some(url)),
                Err(e) => Err(kiln_engine::Error::new(
                    ErrorKind::Config,
                    format!("{REMOTE_ENV}: `{url}` {e}"),
                )
                .into()),
            };
        }
        let Some(url) = section.map(|t| t.str("cache")).transpose()?.flatten() else {
            return Ok(None);
        };
        let at = section
            .expect("the url came from it")
            .location(url.span.start);
        check_remote_url(&url.value).map(Some).map_err(|e| {
            let message = format!("remote cache `{}` {e}", url.value);
            kiln_engine::Error::new(ErrorKind::Config, message)
                .at(at)
                .into()
        })
    }

    fn tiered(&self, local: Arc<LocalStore>) -> Result<TieredStore> {
        let opts = HttpOptions {
            token: self.token.clone(),
            ..HttpOptions::default()
        };
        let http = HttpStore::new(&self.url, opts)?;
        let name = http.url().to_string();
        let remote: Arc<dyn Store> = if self.read_only {
            Arc::new(ReadOnly::new(Arc::new(http)))
        } else {
            Arc::new(http)
        };
        Ok(TieredStore::new(local, remote, &name))
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
        let store: Arc<dyn Store> = match &remote {
            Some(r) => Arc::new(r.tiered(local.clone())?),
            None => local.clone(),
        };
        Ok(Context {
            workspace,
            rules,
            local,
            store,
            remote_enabled: remote.is_some(),
            remote,
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
        Ok(exec)
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
        let local = Arc::new(LocalStore::open(&dir)?);
        Ok(Some(SharedStore {
            store: Arc::new(remote.tiered(local.clone())?),
            local,
        }))
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
