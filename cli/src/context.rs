//! What every command needs: the workspace root, the rules, the stores, the executor.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use kiln_cache::{LocalStore, Store};
use kiln_engine::executor::Executor;
use kiln_engine::rule::RuleSet;
use kiln_engine::sandbox::SandboxMode;
use kiln_engine::workspace::{find_root, Workspace};

use crate::Cli;

pub struct Context {
    pub workspace: Workspace,
    pub rules: RuleSet,
    pub local: Arc<LocalStore>,
    pub store: Arc<dyn Store>,
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
        let store: Arc<dyn Store> = local.clone();
        Ok(Context {
            workspace,
            rules,
            local,
            store,
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
        Ok(exec)
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
