//! `go_test`: one cached `go test` action per Go package.
//!
//! ```toml
//! [go_test.unit]
//! packages = ["./..."]     # patterns as `go test` takes them; default ./...
//! race = true              # -race (cgo, with the host's gcc as a tool of the action)
//! tags = ["integration"]   # build tags
//! timeout = "5m"           # go test -timeout
//! env = { APP_ENV = "test" }
//! flaky_attempts = 2       # run a failing package up to this many times in all
//! ```
//!
//! Each action runs `go test -json -count=1 -trimpath` (kiln caches results, Go's own
//! test cache is off; `-trimpath` lets compiled module packages be shared between
//! sandboxes) in the module directory for one package; its inputs are that package's
//! transitive sources within the module, so an edit reruns exactly the packages that can
//! reach it. Passing results are cached and replayed as `ok  pkg  (cached)`; failures
//! are never cached. With `race`, GORACE=atexit_sleep_ms=0 drops the race runtime's
//! one-second pause at exit (races are still reported while tests run).
//!
//! The packages that miss the cache run together, as one `go test` over all of them
//! (the engine's [`Batch`], split back per package by [`output::Split`]): the go command
//! loads the module and links test binaries once per build, as `go test ./...` does,
//! while each package keeps its own key, result and `(cached)` line. Each test binary
//! runs through `go test -exec` in a copy of exactly its package's inputs, with its own
//! HOME and TMPDIR (the kiln binary's `go-test-exec`), so a test that reads another
//! package's files by relative path fails as it would alone. The members share the
//! process tree and one network namespace, as under `go test ./...`; `batch = false`
//! runs each package in a sandbox of its own.
//!
//! With `flaky_attempts = N`, a failing package is run again up to N times in all
//! (together with the others that failed); one that passes only on a retry passes, and
//! its output carries a `kiln-flaky` event that the report shows.

use std::sync::Arc;

use kiln_engine::action::{Action, ActionKind, Batch, ExecSpec};
use kiln_engine::label::Label;
use kiln_engine::rule::{Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::Result;

use super::list::list;
use super::output;
use super::{cgo_tools, go_env, host_platform, toolchain, Module};

const FIELDS: &[&str] = &[
    "packages",
    "race",
    "tags",
    "timeout",
    "env",
    "flaky_attempts",
    "batch",
];

pub struct GoTest;

impl Rule for GoTest {
    fn name(&self) -> &'static str {
        "go_test"
    }

    fn config_sections(&self) -> &'static [&'static str] {
        &["go"]
    }

    fn is_test(&self) -> bool {
        true
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a go_test")?;
        Ok(Vec::new())
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let attrs = &target.attrs;
        let race = attrs.bool("race")?.unwrap_or(false);
        let attempts = attrs.int("flaky_attempts")?.unwrap_or(1);
        if !(1..=10).contains(&attempts) {
            return Err(ctx.error_at(
                "flaky_attempts",
                "`flaky_attempts` must be between 1 and 10",
            ));
        }
        let module = Module::load(ctx)?;
        let platform = host_platform();
        let packages = list(ctx, &module, &platform)?;
        let mut patterns = attrs.str_list("packages")?;
        if patterns.is_empty() {
            patterns.push(Spanned {
                value: "./...".into(),
                span: attrs.span.clone(),
            });
        }
        let mut dirs = Vec::new();
        for pattern in &patterns {
            let matched = packages.matching(&pattern.value);
            if matched.is_empty() {
                return Err(kiln_engine::Error::new(
                    kiln_engine::ErrorKind::Config,
                    format!(
                        "`{}` matches no Go package in module {}",
                        pattern.value, module.path
                    ),
                )
                .at(attrs.location(pattern.span.start))
                .hint("patterns are relative to go.mod's directory, e.g. ./... or ./store"));
            }
            dirs.extend(matched);
        }
        dirs.sort();
        dirs.dedup();
        let go = toolchain(ctx)?;
        let mut tools = vec![go];
        if race {
            tools.extend(cgo_tools(ctx)?);
        }
        let batch = Batch {
            member_args: 1,
            attempts: attempts as u32,
            split: Arc::new(output::Split),
            shared: attrs.bool("batch")?.unwrap_or(true),
        };
        let mut env = go_env(&module, &platform, race, true);
        for (k, v) in attrs.str_map("env")? {
            env.insert(k.value, v.value);
        }
        if race {
            env.insert("GORACE".into(), "atexit_sleep_ms=0".into());
            env.insert("CC".into(), "gcc".into());
        }
        // -trimpath: without it Go keys compiled module packages by their absolute
        // directory, which is a new sandbox for every action, so nothing would be shared.
        // -exec: each test binary runs in a copy of its own package's inputs (see the
        // kiln binary's `go-test-exec`), as it would in a sandbox of its own.
        let mut go_args: Vec<String> = [
            "{tool:go}/bin/go",
            "test",
            "-json",
            "-count=1",
            "-trimpath",
            "-exec='{kiln}' go-test-exec",
        ]
        .map(String::from)
        .to_vec();
        if race {
            go_args.push("-race".into());
        }
        let tags: Vec<String> = attrs
            .str_list("tags")?
            .into_iter()
            .map(|t| t.value)
            .collect();
        if !tags.is_empty() {
            go_args.push(format!("-tags={}", tags.join(",")));
        }
        if let Some(timeout) = attrs.str("timeout")? {
            go_args.push(format!("-timeout={}", timeout.value));
        }
        for dir in dirs {
            let pkg = &packages.by_dir[&dir];
            if !pkg.has_tests() {
                continue;
            }
            let mut args = go_args.clone();
            args.push(if dir.is_empty() {
                ".".into()
            } else {
                format!("./{dir}")
            });
            let action = Action {
                owner: target.label.clone(),
                mnemonic: "GoTest".into(),
                discriminator: pkg.import_path.clone(),
                inputs: packages.test_inputs(&module, &dir),
                outputs: Vec::new(),
                kind: ActionKind::Exec(ExecSpec {
                    argv: args,
                    env: env.clone(),
                    tools: tools.clone(),
                    workdir: module.dir.clone(),
                    network: false,
                    store_access: true,
                    batch: Some(batch.clone()),
                }),
                platform: Some(platform.clone()),
                show_output: true,
            };
            ctx.add(action);
        }
        Ok(TargetInfo::default())
    }
}
