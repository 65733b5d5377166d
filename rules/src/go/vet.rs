//! `go_vet`: Go's static checks, one cached action per package, findings failing the
//! build.
//!
//! ```toml
//! [go_vet.vet]
//! packages = ["./..."]            # as go_test; default ./...
//! tags = ["integration"]
//! flags = ["-printf=false"]       # go vet's analyzer flags
//! vettool = "./tools/myvet"       # optional: a main package of the module, built by
//!                                 # kiln and run as `go vet -vettool=…`
//! ```
//!
//! * **`GoVet`** (one per package): `go vet -json ./dir`, its JSON written to
//!   `kiln-out/<pkg>/<target>/<dir>/vet.json`. `-json` makes go report findings and
//!   succeed, so a package's findings are cached like any result under the key of its
//!   files (with its test files and the module packages it imports), the toolchain and
//!   the flags: an unchanged package is not vetted again, findings or not. A package
//!   that does not type-check fails here, with go's message.
//! * **`GoVetTool`**: with `vettool`, `go build` of that package (its own inputs), an
//!   input of every `GoVet` of the target.
//! * **`GoVetReport`** (a builtin): the findings of every package as
//!   `path:line:col: message (analyzer)`, paths relative to the workspace, sorted; any
//!   finding fails it (and so the build), listing them all. Failures are never cached,
//!   but it only reads the cached findings again.
//!
//! Like `go_test`, a `go_vet` target is a check: `kiln test` runs it (and
//! `kiln build //pkg:vet` when named).

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_engine::action::{Action, ActionKind, Artifact, Builtin, BuiltinCtx, ExecSpec, Tool};
use kiln_engine::label::Label;
use kiln_engine::rule::{Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::Result;
use serde_json::Value;

use super::cgo::CgoUsers;
use super::list::{Lister, Listing, Packages};
use super::test::{package_arg, selected};
use super::{go_env, host_platform, rel_join, toolchain, Module};

const FIELDS: &[&str] = &["packages", "tags", "flags", "vettool"];

pub struct GoVet;

impl Rule for GoVet {
    fn name(&self) -> &'static str {
        "go_vet"
    }

    fn config_sections(&self) -> &'static [&'static str] {
        &["go"]
    }

    fn is_test(&self) -> bool {
        true
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a go_vet")?;
        Ok(Vec::new())
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let attrs = ctx.attrs();
        let tags: Vec<String> = attrs
            .str_list("tags")?
            .into_iter()
            .map(|t| t.value)
            .collect();
        let flags = flags(ctx)?;
        let module = Module::load(ctx)?;
        let platform = host_platform();
        let lister = Lister::new(ctx, &module)?;
        let listing = Listing {
            platform: &platform,
            tags: &tags,
            extra: &[],
            cgo: false,
        };
        let packages = lister.list(ctx, &module, &listing)?;
        let dirs = selected(ctx, &packages, &module)?;
        let cgo = CgoUsers::read(ctx, &lister, &module, &listing, &packages, &dirs)?;
        let vet = Vet {
            module: &module,
            packages: &packages,
            cgo: cgo.as_ref(),
            go: toolchain(ctx)?,
            sh: Tool {
                name: "sh".into(),
                path: "/bin/sh".into(),
                tree: false,
            },
            platform,
            tags,
            flags,
        };
        let tool = vet.tool(ctx, target)?;
        let mut findings = Vec::new();
        let mut dirs_of = BTreeMap::new();
        for dir in dirs {
            let out = ctx.out_path(&format!(
                "{}/{}",
                ctx.label().name,
                rel_join(&dir, "vet.json")
            ));
            let id = ctx.add(vet.package(target, &dir, &out, tool.as_ref()));
            findings.push(ctx.output(id, &out));
            dirs_of.insert(out, module.file(&dir));
        }
        ctx.add(report(target, findings, dirs_of));
        Ok(TargetInfo::default())
    }
}

/// go's build flags, which go vet takes too but are not analyzer flags: `-toolexec`
/// would run a program of the repository in an action that can write Go's compile
/// cache, `-vettool` and `-json` are kiln's.
const BUILD_FLAGS: &[&str] = &[
    "a",
    "asan",
    "asmflags",
    "buildmode",
    "buildvcs",
    "C",
    "compiler",
    "cover",
    "covermode",
    "coverpkg",
    "exec",
    "gccgoflags",
    "gcflags",
    "installsuffix",
    "json",
    "ldflags",
    "linkshared",
    "mod",
    "modcacherw",
    "modfile",
    "msan",
    "n",
    "overlay",
    "p",
    "pgo",
    "pkgdir",
    "race",
    "tags",
    "toolexec",
    "trimpath",
    "v",
    "vettool",
    "work",
    "x",
];

/// `flags`: go vet's own flags, each `-name` or `-name=value`.
fn flags(ctx: &Analysis<'_>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for flag in ctx.attrs().str_list("flags")? {
        // Go's flag package reads `--name` as `-name`.
        let name = flag
            .value
            .strip_prefix('-')
            .map(|f| f.strip_prefix('-').unwrap_or(f));
        let name = name.map(|n| n.split_once('=').map_or(n, |(n, _)| n));
        let bad = name.is_none_or(|n| n.is_empty() || BUILD_FLAGS.contains(&n));
        if bad {
            let location = ctx.attrs().location(flag.span.start);
            return Err(kiln_engine::Error::new(
                kiln_engine::ErrorKind::Config,
                format!("`{}` is not a go vet flag kiln passes on", flag.value),
            )
            .at(location)
            .hint("flags are analyzer flags such as \"-printf=false\"; use vettool = \"./path\" for a vet tool"));
        }
        out.push(flag.value);
    }
    Ok(out)
}

/// What every package's vet shares.
struct Vet<'a> {
    module: &'a Module,
    packages: &'a Packages,
    /// The packages vetted with cgo, as go vets them on a host with gcc.
    cgo: Option<&'a CgoUsers>,
    go: Tool,
    sh: Tool,
    platform: String,
    tags: Vec<String>,
    flags: Vec<String>,
}

impl Vet<'_> {
    /// The `vettool` binary, built from the module, if the target names one.
    fn tool(&self, ctx: &mut Analysis<'_>, target: &TargetDecl) -> Result<Option<Artifact>> {
        let Some(main) = ctx.attrs().str("vettool")? else {
            return Ok(None);
        };
        let dirs = self.packages.matching(&main.value);
        let dir = match dirs.as_slice() {
            [dir] if self.packages.by_dir[dir].name == "main" => dir.clone(),
            _ => {
                return Err(ctx
                    .error_at(
                        "vettool",
                        format!("`{}` is not a main package of module {}", main.value, self.module.path),
                    )
                    .hint("vettool names the directory of a vet tool's main package, e.g. \"./tools/myvet\""))
            }
        };
        let out = ctx.out_path(&format!("{}/.vettool/vettool", ctx.label().name));
        let mut argv: Vec<String> = ["{tool:go}/bin/go", "build", "-trimpath", "-buildvcs=false"]
            .map(String::from)
            .to_vec();
        argv.push(format!("-o={{sandbox}}/{out}"));
        argv.push(package_arg(&dir));
        let action = Action {
            owner: target.label.clone(),
            mnemonic: "GoVetTool".into(),
            discriminator: String::new(),
            inputs: self.packages.build_inputs(self.module, &dir),
            outputs: vec![out.clone()],
            kind: ActionKind::Exec(ExecSpec {
                argv,
                env: go_env(self.module, &self.platform, false, true),
                tools: vec![self.go.clone()],
                workdir: self.module.dir.clone(),
                store_access: true,
                ..Default::default()
            }),
            platform: Some(self.platform.clone()),
            show_output: false,
        };
        let id = ctx.add(action);
        Ok(Some(ctx.output(id, &out)))
    }

    /// `go vet -json ./dir > out`.
    fn package(
        &self,
        target: &TargetDecl,
        dir: &str,
        out: &str,
        tool: Option<&Artifact>,
    ) -> Action {
        let mut argv: Vec<String> = vec![
            "/bin/sh".into(),
            "-c".into(),
            "out=$1; shift; exec go vet -json \"$@\" > \"$out\"".into(),
            "sh".into(),
            format!("{{sandbox}}/{out}"),
        ];
        if !self.tags.is_empty() {
            argv.push(format!("-tags={}", self.tags.join(",")));
        }
        let packages = CgoUsers::packages_of(self.cgo, self.packages, dir);
        let cgo = self.cgo.is_some_and(|c| c.uses(dir));
        let mut inputs = packages.test_build_inputs(self.module, dir);
        // A vet tool is the repository's code: it reads Go's compile cache through a
        // view, never with the token that lets the cache take entries.
        let shared = tool.is_none();
        if let Some(tool) = tool {
            argv.push(format!("-vettool={{sandbox}}/{}", tool.path));
            inputs.push(tool.clone());
        }
        argv.extend(self.flags.iter().cloned());
        argv.push(package_arg(dir));
        Action {
            owner: target.label.clone(),
            mnemonic: "GoVet".into(),
            discriminator: packages.by_dir[dir].import_path.clone(),
            inputs,
            outputs: vec![out.to_string()],
            kind: ActionKind::Exec(ExecSpec {
                argv,
                env: go_env(self.module, &self.platform, cgo, true),
                tools: [self.go.clone(), self.sh.clone()]
                    .into_iter()
                    .chain(CgoUsers::tools_of(self.cgo, dir).iter().cloned())
                    .collect(),
                workdir: self.module.dir.clone(),
                store_access: shared,
                store_view: !shared,
                ..Default::default()
            }),
            platform: Some(self.platform.clone()),
            show_output: false,
        }
    }
}

/// The builtin that lists every finding and fails on any. `dirs_of` maps each findings
/// file to its package's workspace-relative directory.
fn report(
    target: &TargetDecl,
    findings: Vec<Artifact>,
    dirs_of: BTreeMap<String, String>,
) -> Action {
    let label = target.label.to_string();
    Action {
        owner: target.label.clone(),
        mnemonic: "GoVetReport".into(),
        discriminator: String::new(),
        inputs: findings,
        outputs: Vec::new(),
        kind: ActionKind::Builtin(Builtin {
            name: "go-vet-report".into(),
            version: 1,
            params: serde_json::json!({ "dirs": dirs_of }),
            tools: Vec::new(),
            run: Arc::new(move |ctx| check(ctx, &label)),
        }),
        platform: None,
        show_output: false,
    }
}

fn check(ctx: &BuiltinCtx<'_>, label: &str) -> std::result::Result<(), String> {
    let mut all = Vec::new();
    for input in ctx.inputs {
        let dir = ctx.params["dirs"][&input.path].as_str().unwrap_or_default();
        let text = std::fs::read(ctx.input(&input.path))
            .map_err(|e| format!("failed to read {}: {e}", input.path))?;
        all.extend(findings(&text, dir).map_err(|e| format!("{}: {e}", input.path))?);
    }
    all.sort();
    all.dedup();
    if all.is_empty() {
        return Ok(());
    }
    let plural = if all.len() == 1 { "" } else { "s" };
    Err(format!(
        "go vet found {} problem{plural} in {label}:\n{}\nhint: fix them, or turn an analyzer off with flags = [\"-NAME=false\"] on the go_vet\n",
        all.len(),
        all.join("\n")
    ))
}

/// The findings in `go vet -json` output (one JSON object per vetted unit:
/// `{pkg: {analyzer: [{posn, message}] | {error}}}`), as `path:line:col: message
/// (analyzer)` with `dir/` before each file's name.
pub fn findings(json: &[u8], dir: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for unit in serde_json::Deserializer::from_slice(json).into_iter::<Value>() {
        let unit = unit.map_err(|e| format!("not go vet's JSON: {e}"))?;
        let Some(packages) = unit.as_object() else {
            continue;
        };
        for (pkg, analyzers) in packages {
            for (analyzer, found) in analyzers.as_object().into_iter().flatten() {
                if let Some(error) = found.get("error") {
                    let message = error
                        .as_str()
                        .map_or_else(|| error.to_string(), String::from);
                    out.push(format!("{dir}: {pkg}: {analyzer}: {message}"));
                    continue;
                }
                for d in found.as_array().into_iter().flatten() {
                    let posn = d["posn"].as_str().unwrap_or_default();
                    let message = d["message"].as_str().unwrap_or_default();
                    out.push(format!("{}: {message} ({analyzer})", relative(posn, dir)));
                }
            }
        }
    }
    Ok(out)
}

/// `/abs/sandbox/pkg/file.go:5:28` as `dir/file.go:5:28`: findings are in the files of
/// the vetted package, whatever the sandbox's path.
fn relative(posn: &str, dir: &str) -> String {
    let file_end = posn
        .rsplitn(3, ':')
        .nth(2)
        .filter(|f| !f.is_empty())
        .map_or(posn.len(), str::len);
    let (file, position) = posn.split_at(file_end);
    let name = file.rsplit('/').next().unwrap_or(file);
    format!("{}{position}", rel_join(dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_relative_to_the_workspace_and_name_their_analyzer() {
        let json = br#"{
	"ex/b": {
		"printf": [
			{"posn": "/kiln/ws/svc/b/b.go:5:28", "end": "/kiln/ws/svc/b/b.go:5:30", "message": "fmt.Printf format %d has arg \"x\" of wrong type string"}
		]
	}
}
{"ex/b [ex/b.test]": {"copylocks": [{"posn": "/tmp/x/svc/b/b_test.go:9:2", "message": "bad lock"}]}}
{"ex/c": {"todo": {"error": "analysis failed"}}}
"#;
        let found = findings(json, "svc/b").unwrap();
        assert_eq!(
            found,
            [
                "svc/b/b.go:5:28: fmt.Printf format %d has arg \"x\" of wrong type string (printf)",
                "svc/b/b_test.go:9:2: bad lock (copylocks)",
                "svc/b: ex/c: todo: analysis failed",
            ]
        );
        assert_eq!(relative("/r/a.go:1:2", ""), "a.go:1:2");
        assert!(findings(b"{oops", "").is_err());
    }
}
