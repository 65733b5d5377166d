//! What every command needs: the workspace root, the rules, the stores, the executor.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use kiln_cache::{HttpOptions, HttpStore, LocalStore, ReadOnly, Store, TieredStore};
use kiln_engine::executor::{Executor, SharedStore};
use kiln_engine::rule::RuleSet;
use kiln_engine::sandbox::SandboxMode;
use kiln_engine::workspace::{find_root, Workspace};

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
        let url = cli
            .remote_cache
            .clone()
            .or_else(|| {
                std::env::var("KILN_REMOTE_CACHE")
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .or(from_toml("cache")?);
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

impl Context {
    pub fn load(cli: &Cli) -> Result<Context> {
        let start = match &cli.dir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir()?,
        };
        let root = find_root(&start)?;
        let rules = kiln_rules::all();
        let workspace = Workspace::load(&root, &rules.names(), &rules.sections())?;
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
        let mode: SandboxMode = cli.sandbox.parse().map_err(anyhow::Error::msg)?;
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
