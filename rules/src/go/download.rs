//! `GoModDownload`: the fixed-output action that brings a module's dependencies in.
//!
//! Run during analysis when go.sum lists modules and there is no vendor/ directory. Its
//! inputs are go.mod and go.sum only, its environment names the proxy (`[go] proxy` in
//! kiln.toml, default `https://proxy.golang.org`), and it is the one kind of action with
//! network access. `go mod download` checks every module it fetches against go.sum, so
//! the output is fixed by go.sum whatever the network did (Nix's fixed-output
//! derivations); a module whose hash does not match fails the build.

use kiln_engine::action::{Action, ActionKind, Artifact, ExecSpec};
use kiln_engine::rule::Analysis;
use kiln_engine::Result;

use super::{go_env, host_platform, toolchain, Module};

pub const DEFAULT_PROXY: &str = "https://proxy.golang.org";

/// Downloads the module's dependencies; returns the module cache directory and its files,
/// or None when go.sum lists nothing.
pub fn download(
    ctx: &mut Analysis<'_>,
    module: &Module,
) -> Result<Option<(String, Vec<Artifact>)>> {
    let go_sum = module.file("go.sum");
    let lists_modules =
        kiln_engine::workspace::read_file(&ctx.workspace.root, &go_sum).is_ok_and(|bytes| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .any(|l| !l.trim().is_empty())
        });
    if !lists_modules {
        return Ok(None);
    }
    let proxy = match ctx.workspace.section("go")? {
        Some(go) => go.str("proxy")?.map(|p| p.value),
        None => None,
    }
    .unwrap_or_else(|| DEFAULT_PROXY.to_string());
    let cache_dir = format!("{}/.gomodcache", ctx.out_path("").trim_end_matches('/'));
    let go = toolchain(ctx)?;
    let mut env = go_env(module, &host_platform(), false, false);
    env.insert("GOMODCACHE".into(), format!("{{sandbox}}/{cache_dir}"));
    env.insert("GOPROXY".into(), proxy);
    env.insert("GOFLAGS".into(), "-mod=mod -modcacherw".into());
    env.insert("GONOSUMDB".into(), "*".into());
    let inputs = module
        .common
        .iter()
        .filter(|a| a.path.ends_with("go.mod") || a.path.ends_with("go.sum"))
        .cloned()
        .collect();
    let action = Action {
        owner: ctx.label().clone(),
        mnemonic: "GoModDownload".into(),
        discriminator: String::new(),
        inputs,
        outputs: vec![format!("{cache_dir}/")],
        kind: ActionKind::Exec(ExecSpec {
            argv: ["{tool:go}/bin/go", "mod", "download"]
                .map(String::from)
                .to_vec(),
            env,
            tools: vec![go],
            workdir: module.dir.clone(),
            network: true,
            store_access: false,
            batch: None,
            ..Default::default()
        }),
        platform: None,
        show_output: false,
    };
    let files = ctx.run_now_files(action)?;
    Ok(Some((cache_dir, files)))
}
