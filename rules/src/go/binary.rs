//! `go_binary`: one reproducible `go build` per platform.
//!
//! ```toml
//! [go_binary.server]
//! main = "./cmd/server"
//! platforms = ["linux/amd64", "linux/arm64"]     # default: the host platform
//! ldflags = ["-s", "-w"]
//! x_defs = { "main.version" = "{STABLE_GIT_DESCRIBE}" }
//! tags = ["netgo"]
//! ```
//!
//! Every action runs `go build -trimpath -buildvcs=false` with CGO_ENABLED=0 and the
//! pinned environment of [`super::go_env`], so the same inputs give the same bytes on
//! any machine and path. Output: `kiln-out/<package>/<target>/<os>_<arch>/<target>`
//! (`.exe` on windows).
//!
//! **cgo.** Binaries are static and built without cgo, where `go build` on a host with
//! gcc would use it. A main package that links code using cgo (`import "C"`) still
//! builds, but a package like github.com/mattn/go-sqlite3 then compiles a stand-in that
//! fails when the program runs. So the first platform's packages are also listed with
//! cgo on ([`super::list::Lister::cgo_users`], a cached `go list`), and such a binary
//! gets a warning naming what it links and the way out. `cgo = true` builds it with cgo
//! and the host's gcc, as and ld as tools (in the key); the host's C headers and
//! libraries are not, and the binary links the host's libc dynamically (an image needs
//! a base that has it). That is only offered for the host platform: cross-compiling cgo
//! needs a C cross-compiler, which kiln does not set up.
//!
//! Stamping: `{NAME}` in `x_defs` values is replaced by the workspace's stamp value
//! (see `kiln_engine::host::stamp_values`) before the key is computed, so a binary is
//! relinked exactly when a stamp value it uses changes, never because time passed.
//!
//! **Go's compile cache.** The build shares it (puts what it compiles) unless its
//! ldflags could make the linker run a program of the repository's (`-extld`, `-extar`,
//! `-extldflags`, anything but `-s`, `-w`, `-X` and a few others that change only the
//! binary: see `ldflags.rs`); then it reads the cache through a view and what it
//! compiles stays its own.

use std::sync::Arc;

use kiln_engine::action::{Action, ActionKind, Batch, BatchSplit, ExecSpec, MemberOutput};
use kiln_engine::error::did_you_mean;
use kiln_engine::label::Label;
use kiln_engine::rule::{Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::{Error, ErrorKind, Result};

use super::ldflags;
use super::list::{Lister, Listing};
use super::{cgo_tools, go_env, host_platform, platform_env, toolchain, Module, PLATFORMS};

const FIELDS: &[&str] = &["main", "platforms", "ldflags", "x_defs", "tags", "cgo"];

pub struct GoBinary;

impl Rule for GoBinary {
    fn name(&self) -> &'static str {
        "go_binary"
    }

    fn config_sections(&self) -> &'static [&'static str] {
        &["go"]
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a go_binary")?;
        Ok(Vec::new())
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let attrs = &target.attrs;
        let main = attrs.required_str("main", "a go_binary")?;
        let platforms = platforms(ctx)?;
        let ldflags = ldflags::ldflags(ctx)?;
        // A link that runs a program of the repository's gets a view of Go's compile
        // cache, not the token that lets it put entries (see `ldflags.rs`).
        let shared = ldflags::links_alone(&ldflags);
        let module = Module::load(ctx)?;
        let go = toolchain(ctx)?;
        let tags: Vec<String> = attrs
            .str_list("tags")?
            .into_iter()
            .map(|t| t.value)
            .collect();
        let cgo = cgo_setting(ctx, &platforms)?;
        let mut tools = vec![go.clone()];
        if cgo {
            tools.extend(cgo_tools(ctx)?);
        }
        let mut info = TargetInfo::default();
        info.meta.insert("name".into(), target.label.name.clone());
        let lister = Lister::new(ctx, &module)?;
        for (n, platform) in platforms.into_iter().enumerate() {
            let extra = outside_all(&main.value);
            let listing = Listing {
                platform: &platform,
                tags: &tags,
                extra: &extra,
                cgo,
            };
            let packages = lister.list(ctx, &module, &listing)?;
            let dirs = packages.matching(&main.value);
            let Some(dir) = dirs.first().filter(|_| !main.value.ends_with("...")) else {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "main package `{}` not found in module {}",
                        main.value, module.path
                    ),
                )
                .at(attrs.location(main.span.start))
                .hint("`main` is a package directory relative to go.mod, e.g. ./cmd/server"));
            };
            let pkg = &packages.by_dir[dir];
            if pkg.name != "main" {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "`{}` is package {}, not a main package",
                        main.value, pkg.name
                    ),
                )
                .at(attrs.location(main.span.start)));
            }
            if n == 0 && !cgo {
                let links = lister.cgo_users(ctx, &module, &listing)?;
                if let Some(linked) = links.get(dir) {
                    let linked: Vec<&str> = linked.iter().map(String::as_str).collect();
                    eprintln!(
                        "kiln: warning: go_binary {}: its main package links code that uses cgo \
                         ({}), which kiln builds without (CGO_ENABLED=0, a static binary): it may \
                         fail only when it runs (github.com/mattn/go-sqlite3 does); set `cgo = true` \
                         to build it with the host's C compiler, or use a package without cgo",
                        target.label,
                        linked.join(", ")
                    );
                }
            }
            let (os, arch) = platform.split_once('/').expect("platforms are checked");
            let exe = if os == "windows" { ".exe" } else { "" };
            let out = ctx.out_path(&format!(
                "{}/{os}_{arch}/{}{exe}",
                target.label.name, target.label.name
            ));
            let mut argv: Vec<String> = [
                "{kiln}",
                "go-build-each",
                "{tool:go}/bin/go",
                "build",
                "-trimpath",
                "-buildvcs=false",
            ]
            .map(String::from)
            .to_vec();
            if !tags.is_empty() {
                argv.push(format!("-tags={}", tags.join(",")));
            }
            argv.push(format!("-ldflags={ldflags}"));
            // This platform's own: the platform, the output, the main package.
            argv.push(platform.clone());
            argv.push(format!("{{sandbox}}/{out}"));
            argv.push(if dir.is_empty() {
                ".".into()
            } else {
                format!("./{dir}")
            });
            let mut env = go_env(&module, &platform, cgo, true);
            for (k, _) in platform_env(&platform) {
                env.remove(k);
            }
            let action = Action {
                owner: target.label.clone(),
                mnemonic: "GoBuild".into(),
                discriminator: platform.clone(),
                inputs: packages.build_inputs(&module, dir),
                outputs: vec![out.clone()],
                kind: ActionKind::Exec(ExecSpec {
                    argv,
                    env,
                    tools: tools.clone(),
                    workdir: module.dir.clone(),
                    network: false,
                    store_access: shared,
                    store_view: !shared,
                    // The platforms that miss build in one sandbox (`kiln go-build-each`, as
                    // many go builds at once as there are cores): the sources are staged
                    // once, not once per platform.
                    batch: Some(Batch {
                        member_args: 3,
                        attempts: 1,
                        split: Arc::new(EachSplit),
                        shared: true,
                        fresh_args: Vec::new(),
                    }),
                    ..Default::default()
                }),
                platform: Some(platform.clone()),
                show_output: false,
            };
            let id = ctx.add(action);
            info.files.push(ctx.output(id, &out));
        }
        Ok(info)
    }
}

/// `main` when `./...` does not match it (a directory below one whose name starts with
/// `_` or `.`, or `testdata`), so that it is listed by name, as `go build` would take it.
fn outside_all(main: &str) -> Vec<String> {
    let rel = main.trim_start_matches("./");
    let hidden = rel
        .split('/')
        .any(|c| c.starts_with('_') || (c.starts_with('.') && c != ".") || c == "testdata");
    match hidden {
        true => vec![main.to_string()],
        false => Vec::new(),
    }
}

/// `cgo`: false unless set, and then only for the host platform alone.
fn cgo_setting(ctx: &Analysis<'_>, platforms: &[String]) -> Result<bool> {
    if ctx.attrs().bool("cgo")? != Some(true) {
        return Ok(false);
    }
    let host = host_platform();
    if platforms != [host.clone()] {
        return Err(ctx
            .error_at(
                "cgo",
                format!("`cgo = true` builds with the host's C compiler, which builds for {host} only"),
            )
            .hint(format!(
                "set `platforms = [\"{host}\"]` (cross-compiling cgo needs a C cross-compiler, which kiln does not set up), or build the other platforms in a target without cgo"
            )));
    }
    Ok(true)
}

fn platforms(ctx: &Analysis<'_>) -> Result<Vec<String>> {
    let attrs = ctx.attrs();
    let list = attrs.str_list("platforms")?;
    if list.is_empty() {
        return Ok(vec![host_platform()]);
    }
    let mut out = Vec::new();
    for p in list {
        if !PLATFORMS.contains(&p.value.as_str()) {
            let hint = did_you_mean(&p.value, PLATFORMS.iter().copied())
                .unwrap_or_else(|| format!("known platforms: {}", PLATFORMS.join(", ")));
            return Err(
                Error::new(ErrorKind::Config, format!("unknown platform `{}`", p.value))
                    .at(attrs.location(p.span.start))
                    .hint(hint),
            );
        }
        if !out.contains(&p.value) {
            out.push(p.value);
        }
    }
    Ok(out)
}

/// What `kiln go-build-each` prints of each member: one JSON line,
/// `{"member": i, "exit": code, "output": "..."}`, in the order of the batch file.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct EachResult {
    pub member: usize,
    pub exit: i32,
    pub output: String,
}

/// Splits `kiln go-build-each`'s output back per platform.
pub struct EachSplit;

impl BatchSplit for EachSplit {
    fn split(&self, stdout: &[u8], members: &[&str]) -> Vec<Option<MemberOutput>> {
        let mut parts: Vec<Option<MemberOutput>> = vec![None; members.len()];
        for line in stdout.split(|b| *b == b'\n') {
            let Ok(r) = serde_json::from_slice::<EachResult>(line) else {
                continue;
            };
            if let Some(part) = parts.get_mut(r.member) {
                *part = Some(MemberOutput {
                    stdout: r.output.into_bytes(),
                    passed: r.exit == 0,
                    named: Vec::new(),
                });
            }
        }
        parts
    }

    fn retried(&self, failed: &[Vec<u8>], passed: &[u8]) -> Vec<u8> {
        let mut out = failed.concat();
        out.extend_from_slice(passed);
        out
    }
}
