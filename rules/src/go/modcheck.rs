//! `go_mod_check`: module hygiene, offline.
//!
//! ```toml
//! [go_mod_check.mod]      # in the BUILD.toml next to go.mod
//! checks = ["tidy", "verify", "vendor"]   # default: each that applies
//! ```
//!
//! | check | action | fails when |
//! |---|---|---|
//! | `tidy` | `GoModTidy`: `go mod tidy -diff` | go.mod or go.sum is not what `go mod tidy` would write; the diff is shown |
//! | `verify` | `GoModVerify`: `go mod verify` (when go.sum lists modules) | a downloaded module differs from what go.sum records |
//! | `vendor` | `GoModVendor`: `go mod vendor` into scratch space, `diff -r` against vendor/ (when there is one) | vendor/ is not what `go mod vendor` writes from go.mod: a module missing, added, or edited by hand |
//!
//! Every check runs with `GOPROXY=off` on the module cache of the module's
//! `GoModDownload` action (see [`super::download`]), the one action allowed the network,
//! whose output go.sum fixes; a vendored module gets that download too, since `go mod
//! tidy` and `go mod vendor` read whole modules, which vendor/ does not hold. The inputs
//! are go.mod, go.sum, vendor/ and the module's Go files (tidy reads their imports), so
//! a passing check is cached until one of them changes. Like go_test, it is a check:
//! `kiln test` runs it.
//!
//! `verify` is kept for parity with the hand-written pipeline, but under kiln it has
//! nothing left to catch: the download that fills the module cache already refuses a
//! module whose hash is not go.sum's (tests/e2e/go.rs,
//! `dependencies_come_from_a_download_verified_against_go_sum`), and that cache reaches
//! the check through kiln's store, which refetches or reruns a damaged blob rather than
//! hand it on. A go.sum that disagrees with the proxy therefore fails at the download,
//! naming the module and `checksum mismatch`.

use kiln_engine::action::{Action, ActionKind, Artifact, ExecSpec, Tool};
use kiln_engine::label::Label;
use kiln_engine::rule::{Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::Result;

use super::{download, go_env, host_platform, toolchain, Module};

const FIELDS: &[&str] = &["checks"];
const CHECKS: &[&str] = &["tidy", "verify", "vendor"];

pub struct GoModCheck;

impl Rule for GoModCheck {
    fn name(&self) -> &'static str {
        "go_mod_check"
    }

    fn config_sections(&self) -> &'static [&'static str] {
        &["go"]
    }

    fn is_test(&self) -> bool {
        true
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a go_mod_check")?;
        Ok(Vec::new())
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let asked = checks(ctx)?;
        let mut module = Module::load(ctx)?;
        if module.vendored && module.modcache.is_none() {
            if let Some((dir, files)) = download::download(ctx, &module)? {
                module.common.extend(files);
                module.modcache = Some(dir);
            }
        }
        let check = Check {
            target,
            module: &module,
            go: toolchain(ctx)?,
            inputs: inputs(&module),
        };
        let wanted = |name: &str| asked.as_ref().is_none_or(|a| a.iter().any(|c| c == name));
        if wanted("tidy") {
            ctx.add(check.tidy());
        }
        if wanted("verify") && module.modcache.is_some() {
            ctx.add(check.verify());
        }
        if wanted("vendor") && module.vendored {
            ctx.add(check.vendor(ctx)?);
        }
        Ok(TargetInfo::default())
    }
}

/// `checks`, if given: names from [`CHECKS`].
fn checks(ctx: &Analysis<'_>) -> Result<Option<Vec<String>>> {
    if ctx.attrs().get("checks").is_none() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for c in ctx.attrs().str_list("checks")? {
        if !CHECKS.contains(&c.value.as_str()) {
            return Err(kiln_engine::Error::new(
                kiln_engine::ErrorKind::Config,
                format!("unknown check `{}`", c.value),
            )
            .at(ctx.attrs().location(c.span.start))
            .hint(format!("checks are {}", CHECKS.join(", "))));
        }
        out.push(c.value);
    }
    Ok(Some(out))
}

/// go.mod, go.sum, vendor/, the downloaded modules and every Go file of the module.
fn inputs(module: &Module) -> Vec<Artifact> {
    let mut inputs = module.common.clone();
    inputs.extend(
        module
            .all
            .iter()
            .filter(|a| a.path.ends_with(".go") && !inputs.contains(a))
            .cloned()
            .collect::<Vec<_>>(),
    );
    inputs
}

struct Check<'a> {
    target: &'a TargetDecl,
    module: &'a Module,
    go: Tool,
    inputs: Vec<Artifact>,
}

impl Check<'_> {
    fn tidy(&self) -> Action {
        let script = "go mod tidy -diff || { echo \"kiln: hint: go.mod/go.sum are not tidy: run go mod tidy in $1 (the diff above is what it would change)\" >&2; exit 1; }";
        self.action("GoModTidy", self.shell(script), Vec::new())
    }

    fn verify(&self) -> Action {
        let argv = ["{tool:go}/bin/go", "mod", "verify"]
            .map(String::from)
            .to_vec();
        self.action("GoModVerify", argv, Vec::new())
    }

    fn vendor(&self, ctx: &Analysis<'_>) -> Result<Action> {
        let diff = ctx.host_tool(&Spanned {
            value: "diff".into(),
            span: ctx.attrs().span.clone(),
        })?;
        let script = "go mod vendor -o \"$TMPDIR/vendor\" && diff -r vendor \"$TMPDIR/vendor\" || { echo \"kiln: hint: vendor/ is not what go mod vendor writes from go.mod: run go mod vendor in $1 (the differences are above)\" >&2; exit 1; }";
        Ok(self.action("GoModVendor", self.shell(script), vec![diff]))
    }

    fn shell(&self, script: &str) -> Vec<String> {
        let dir = match self.module.dir.as_str() {
            "" => ".",
            dir => dir,
        };
        ["/bin/sh", "-c", script, "sh", dir]
            .map(String::from)
            .to_vec()
    }

    fn action(&self, mnemonic: &str, argv: Vec<String>, extra: Vec<Tool>) -> Action {
        let platform = host_platform();
        let mut env = go_env(self.module, &platform, false, false);
        // tidy and vendor read whole modules from the cache, never vendor/.
        env.insert("GOFLAGS".into(), String::new());
        let mut tools = vec![
            self.go.clone(),
            Tool {
                name: "sh".into(),
                path: "/bin/sh".into(),
                tree: false,
            },
        ];
        tools.extend(extra);
        Action {
            owner: self.target.label.clone(),
            mnemonic: mnemonic.into(),
            discriminator: String::new(),
            inputs: self.inputs.clone(),
            outputs: Vec::new(),
            kind: ActionKind::Exec(ExecSpec {
                argv,
                env,
                tools,
                workdir: self.module.dir.clone(),
                ..Default::default()
            }),
            platform: Some(platform),
            show_output: false,
        }
    }
}
