//! `kiln init`: makes an existing Go module a kiln workspace, writing only targets that
//! build.
//!
//! It writes kiln.toml (if missing), a BUILD.toml next to the root go.mod and one next to
//! each nested module's go.mod (Go rules find their module there), and adds `kiln-out/`
//! to `.gitignore`. It never overwrites a BUILD.toml. What it decides, and why:
//!
//! * **Packages are what the real `go list` sees** ([`go`]), run as kiln's Go rules run
//!   Go (GOPROXY=off, GOTOOLCHAIN=local, GOWORK=off, CGO_ENABLED=0, `-mod=vendor` when
//!   vendor/modules.txt exists else `-mod=mod`) on a copy of go.mod, so init never edits
//!   the module. A symlinked go.mod is followed.
//! * **`go_test.unit`** covers `./...`; when some packages do not load offline (missing
//!   dependencies), it lists the packages with tests that do, and BUILD.toml says what
//!   was left out. `tools` names the programs its tests start by a literal name
//!   (`exec.Command("git", …)`) that are on PATH, but the toolchain's own (`go`, `gofmt`:
//!   a test finds them on PATH from the toolchain it was built with).
//! * **One `go_binary` per main package**: `package main` in the default build with a
//!   `func main` ([`decide`]). Also mains below `_`-prefixed directories (`_examples/foo`,
//!   which `./...` skips but `go build ./_examples/foo` builds) and mains whose every file
//!   needs a build tag (`//go:build docsgen` gives `tags = ["docsgen"]`, checked with
//!   `go list -tags`). Mains in testdata/, vendor/ and `.`-prefixed directories are not
//!   the module's programs and are skipped.
//! * **Left out, with a comment saying why**: a `package main` without `func main`, a
//!   main that does not load, a main behind a build constraint that is not a tag or
//!   `a && b` of tags, or that only another platform satisfies.
//! * **Names** ([`names`]): the binary's name as `go build` gives it (`server` for
//!   ./cmd/server); names that clash take their path joined with `_` (`cmd_server`).
//!
//! The files are written only once every module is planned: an error leaves nothing
//! half-written. Errors are configuration errors (exit 2) with a hint.

mod decide;
mod files;
mod go;
mod module;
mod names;
mod render;
mod source;
mod tags;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_engine::{Error, ErrorKind};

use crate::Cli;
use decide::Plan;
use go::Go;
use module::Module;

pub fn run(cli: &Cli) -> Result<ExitCode> {
    let root = match &cli.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    refuse_existing(&root.join("BUILD.toml"))?;
    let module = module::root(&root)?;
    let go = Go::find(&root)?;
    let mut plans = vec![(Plan::of(&go, &module)?, module)];
    plans.extend(nested_plans(&go, &root));
    files::write_kiln_toml(&root)?;
    for (plan, module) in &plans {
        files::write_build(&root, module, &render::build_toml(plan))?;
        report_left_out(module, plan);
    }
    files::ignore_out_dir(&root)?;
    if let Some(work) = module::go_work_above(&plans[0].1.dir) {
        eprintln!(
            "kiln: note: {} is not read: kiln builds each module on its own (GOWORK=off); a module that imports another of the workspace needs a `replace` directive to it in its go.mod",
            work.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn refuse_existing(build: &Path) -> Result<()> {
    if build.exists() {
        bail!(Error::new(
            ErrorKind::Config,
            format!("{} exists already", build.display())
        )
        .hint("kiln init only writes new files; edit BUILD.toml by hand"));
    }
    Ok(())
}

/// Plans for the nested modules without a BUILD.toml; one that Go cannot list at all is
/// skipped with a warning rather than stopping the others.
fn nested_plans(go: &Go, root: &Path) -> Vec<(Plan, Module)> {
    let mut plans = Vec::new();
    for module in module::nested(root) {
        let build = module.dir.join("BUILD.toml");
        if build.exists() {
            eprintln!("kiln: kept {} (exists already)", shown(root, &build));
            continue;
        }
        match Plan::of(go, &module) {
            Ok(plan) => plans.push((plan, module)),
            Err(err) => eprintln!("kiln: warning: no BUILD.toml for {}/: {err:#}", module.rel),
        }
    }
    plans
}

fn report_left_out(module: &Module, plan: &Plan) {
    for (dir, why) in &plan.left_out {
        let dir = module::pattern(&module::rel_join(&module.rel, dir));
        eprintln!("kiln: left out {dir}: {why}");
    }
}

/// `path` relative to the directory init runs in, as the files it writes are named.
pub fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
