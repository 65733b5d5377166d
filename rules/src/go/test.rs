//! `go_test`: each Go package's tests as two cached steps, built and then run.
//!
//! ```toml
//! [go_test.unit]
//! packages = ["./..."]     # patterns as `go test` takes them; default ./...
//! race = true              # -race (cgo, with the host's gcc as a tool of the build)
//! tags = ["integration"]   # build tags
//! timeout = "5m"           # go test -timeout
//! env = { APP_ENV = "test" }
//! tools = ["git", "sh"]    # host programs the tests run (on PATH, hashed into keys;
//!                          # `go` and `gofmt` are the toolchain's, always on PATH)
//! flaky_attempts = 2       # run a failing package up to this many times in all
//! ```
//!
//! **Build** (`GoTestBuild`, one per package, with or without test files): `go test`
//! with `-exec` pointing at kiln's `go-test-exec`, which saves the test binary as the
//! action's output instead of running it. Go compiles, vets and links exactly as
//! `go test` does, and reports a package without test files as
//! `?  pkg [no test files]` (a package that does not compile fails here, as under
//! `go test ./...`). Its inputs are the package's Go files and those of every module
//! package it imports; the packages that miss the cache build together, as one `go
//! test` ([`Batch`]), split back per package by [`output::Split`].
//!
//! **Run** (`GoTest`, one per package with tests): the saved binary under `test2json`
//! (built once from the toolchain), in the package's directory, with the whole module
//! visible read-only, as under `go test`: files beside the package, `testdata/`,
//! `../testdata/`, fixtures anywhere in the module. The binary writes Go's test log
//! (`-test.testlogfile`), and the run is keyed as Go's own test cache keys it: by the
//! binary, its flags and environment, and the state of exactly what the test opened or
//! looked at in the module ([`kiln_engine::action::Reads`]). So an edit that leaves a
//! binary unchanged (a comment) reruns nothing, and a fixture edit reruns only the
//! tests that read it. Passing runs are cached and replayed as `ok  pkg  (cached)`;
//! failures never are.
//!
//! **Paths.** Under bubblewrap the module sits at `/kiln/ws/<dir>` and the toolchain at
//! `/kiln/tools/go` for every build and checkout, so test binaries are built without
//! `-trimpath`: `runtime.Caller` gives a test its real source path, and binaries (and so
//! results) still match across machines. A test sees HOME (writable, its own), TMPDIR
//! `/tmp` (private, so `t.TempDir()` paths are short enough for Unix sockets), USER and
//! LOGNAME of the user running kiln (keyed only if read), PATH with the declared `tools`
//! and the toolchain's `bin/`, and no network. In `dir` mode (no bubblewrap) binaries
//! are built with `-trimpath`, and `runtime.Caller`-based lookups do not find files.
//!
//! **cgo.** Off (`CGO_ENABLED=0`, as for binaries), but for packages whose test binary
//! links code that uses cgo, their own or a dependency's (`CgoUsers`, found by one `go
//! list -deps -test` with cgo on): `go test` on a host with a C compiler builds those
//! with cgo, and without it they do not build (only cgo files) or build a stand-in
//! that fails (go-sqlite3's). They are built with cgo and the host's gcc as a tool, as
//! `race = true` builds every package.
//!
//! `kiln test -- -run X -short -v` passes go test's test flags to every run
//! ([`TestArgs`]); `kiln test --rerun` runs tests whose results are cached.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_engine::action::{Action, ActionKind, Artifact, Batch, ExecSpec, Reads, Tool};
use kiln_engine::label::Label;
use kiln_engine::rule::{Analysis, Rule, TargetInfo};
use kiln_engine::sandbox::SandboxMode;
use kiln_engine::value::Spanned;
use kiln_engine::workspace::{TargetDecl, OUT_DIR};
use kiln_engine::{Error, ErrorKind, Result};

use super::cgo::CgoUsers;
use super::cover::{self, Cover};
use super::flags::TestArgs;
use super::list::{GoPackage, Lister, Listing, Packages};
use super::testlog::TestLog;
use super::{cgo_tools, go_env, host_platform, rel_join, toolchain, Module, TOOLCHAIN_PROGRAMS};
use crate::go::output;

const FIELDS: &[&str] = &[
    "packages",
    "race",
    "tags",
    "timeout",
    "env",
    "tools",
    "flaky_attempts",
    "batch",
];

/// Where a run's test log is written, sandbox-relative.
const TEST_LOG: &str = ".kiln/testlog.txt";

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
        let fields: Vec<&str> = FIELDS.iter().chain(cover::FIELDS).copied().collect();
        target.attrs.check_keys(&fields, "a go_test")?;
        Ok(Vec::new())
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let settings = Settings::read(ctx)?;
        let module = Module::load(ctx)?;
        let lister = Lister::new(ctx, &module)?;
        let listing = Listing {
            platform: &settings.platform,
            tags: &settings.tags,
            extra: &[],
            cgo: settings.race,
        };
        let packages = lister.list(ctx, &module, &listing)?;
        let dirs = selected(ctx, &packages, &module)?;
        let cgo = CgoUsers::read(ctx, &lister, &module, &listing, &packages, &dirs)?;
        let test2json = test2json(ctx, &module)?;
        let cover = Cover::read(ctx, &packages, &module, settings.race)?;
        let steps = Steps {
            settings: &settings,
            module: &module,
            packages: &packages,
            test2json,
            cover: cover.as_ref(),
            cgo: cgo.as_ref(),
        };
        let mut profiles = Vec::new();
        for dir in dirs {
            let pkg = &steps.packages_of(&dir).by_dir[&dir];
            let binary = binary_path(ctx, &dir, pkg);
            // A package without tests, measured: go writes its statements, none run.
            let untested = match (&cover, &binary) {
                (Some(_), None) => Some(cover::profile_path(&package_out(ctx, &dir, pkg))),
                _ => None,
            };
            let build = ctx.add(steps.build(target, &dir, binary.as_deref(), untested.as_deref()));
            profiles.extend(untested.map(|p| ctx.output(build, &p)));
            if let Some(binary) = binary {
                let binary = ctx.output(build, &binary);
                let run = steps.run(target, &dir, binary);
                let profile = run.outputs.first().cloned();
                let run = ctx.add(run);
                profiles.extend(profile.map(|p| ctx.output(run, &p)));
            }
        }
        if let Some(cover) = &cover {
            let out = ctx.out_path(&format!("{}/coverage.out", ctx.label().name));
            ctx.add(cover.merge_action(target, profiles, out));
        }
        Ok(TargetInfo::default())
    }
}

/// A go_test's attributes, with the command line's test flags.
struct Settings {
    platform: String,
    race: bool,
    isolated: bool,
    tags: Vec<String>,
    timeout: String,
    attempts: u32,
    shared: bool,
    env: BTreeMap<String, String>,
    /// The build's tools: the toolchain, with the C toolchain for `-race`.
    build_tools: Vec<Tool>,
    /// The run's tools: the toolchain and the declared `tools`.
    run_tools: Vec<Tool>,
    args: TestArgs,
}

impl Settings {
    fn read(ctx: &Analysis<'_>) -> Result<Settings> {
        let attrs = ctx.attrs();
        let race = attrs.bool("race")?.unwrap_or(false);
        let attempts = attrs.int("flaky_attempts")?.unwrap_or(1);
        if !(1..=10).contains(&attempts) {
            return Err(ctx.error_at(
                "flaky_attempts",
                "`flaky_attempts` must be between 1 and 10",
            ));
        }
        let args = TestArgs::parse(&ctx.exec.test_args).map_err(|e| {
            Error::new(ErrorKind::Config, e)
                .hint("for example: kiln test -- -run TestName -short -v")
        })?;
        let go = toolchain(ctx)?;
        let mut build_tools = vec![go.clone()];
        if race {
            build_tools.extend(cgo_tools(ctx)?);
        }
        let mut run_tools = vec![go.clone()];
        for name in attrs.str_list("tools")? {
            // The toolchain's own programs are on the test's PATH already, from the
            // toolchain the binary was built with; the host's `go` may be another
            // version, or a shim (pyenv, asdf) that cannot run in a sandbox.
            if TOOLCHAIN_PROGRAMS.contains(&name.value.as_str()) {
                continue;
            }
            run_tools.push(ctx.host_tool(&name)?);
        }
        let timeout = match (&args.timeout, attrs.str("timeout")?) {
            (Some(t), _) => t.clone(),
            (None, Some(t)) => t.value,
            (None, None) => "10m0s".into(),
        };
        Ok(Settings {
            platform: host_platform(),
            race,
            isolated: ctx.exec.sandbox_mode()? == SandboxMode::Bwrap,
            tags: attrs
                .str_list("tags")?
                .into_iter()
                .map(|t| t.value)
                .collect(),
            timeout,
            attempts: attempts as u32,
            shared: attrs.bool("batch")?.unwrap_or(true),
            env: attrs
                .str_map("env")?
                .into_iter()
                .map(|(k, v)| (k.value, v.value))
                .collect(),
            build_tools,
            run_tools,
            args,
        })
    }
}

/// The module directories the target's patterns select, sorted.
pub(super) fn selected(
    ctx: &Analysis<'_>,
    packages: &Packages,
    module: &Module,
) -> Result<Vec<String>> {
    let attrs = ctx.attrs();
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
            return Err(Error::new(
                ErrorKind::Config,
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
    Ok(dirs)
}

/// Where the test binary of the package in `dir` goes, if it has tests:
/// `kiln-out/<package>/<target>/<dir>/<name>.test`, named as go names it.
fn binary_path(ctx: &Analysis<'_>, dir: &str, pkg: &GoPackage) -> Option<String> {
    pkg.has_tests().then(|| package_out(ctx, dir, pkg))
}

/// `kiln-out/<package>/<target>/<dir>/<name>.test`, whether or not the package has tests.
fn package_out(ctx: &Analysis<'_>, dir: &str, pkg: &GoPackage) -> String {
    let base = pkg.import_path.rsplit('/').next().unwrap_or("pkg");
    let file = rel_join(dir, &format!("{base}.test"));
    ctx.out_path(&format!("{}/{file}", ctx.label().name))
}

/// `test2json` built from the toolchain (once for every go_test: newer toolchains do
/// not ship it prebuilt), which turns a test binary's output into `go test -json` events.
fn test2json(ctx: &mut Analysis<'_>, module: &Module) -> Result<Artifact> {
    let go = toolchain(ctx)?;
    let out = format!("{OUT_DIR}/.go-tools/test2json");
    let mut env = go_env(module, &host_platform(), false, true);
    env.insert("GOFLAGS".into(), String::new());
    let action = Action {
        owner: ctx.label().clone(),
        mnemonic: "GoTool".into(),
        discriminator: "test2json".into(),
        inputs: Vec::new(),
        outputs: vec![out.clone()],
        kind: ActionKind::Exec(ExecSpec {
            argv: [
                "{tool:go}/bin/go",
                "build",
                "-trimpath",
                "-o",
                &format!("{{sandbox}}/{out}"),
                "cmd/test2json",
            ]
            .map(String::from)
            .to_vec(),
            env,
            tools: vec![go],
            store_access: true,
            ..Default::default()
        }),
        platform: None,
        show_output: false,
    };
    let id = ctx.add_shared(action);
    Ok(ctx.output(id, &out))
}

/// The build and run steps of the target's packages.
struct Steps<'a> {
    settings: &'a Settings,
    module: &'a Module,
    packages: &'a Packages,
    test2json: Artifact,
    cover: Option<&'a Cover>,
    cgo: Option<&'a CgoUsers>,
}

impl Steps<'_> {
    /// Whether the package in `dir` is built with cgo.
    fn cgo(&self, dir: &str) -> bool {
        self.settings.race || self.cgo.is_some_and(|c| c.uses(dir))
    }

    /// The listing the package in `dir` is built from: with cgo files when it is built
    /// with cgo.
    fn packages_of(&self, dir: &str) -> &Packages {
        CgoUsers::packages_of(self.cgo, self.packages, dir)
    }

    /// The tools of the package in `dir`'s build: the toolchain, and the C toolchain
    /// when it is built with cgo.
    fn build_tools(&self, dir: &str) -> Vec<Tool> {
        let mut tools = self.settings.build_tools.clone();
        tools.extend_from_slice(CgoUsers::tools_of(self.cgo, dir));
        tools
    }

    /// `go test -exec go-test-exec ./dir`: the package compiled, vetted and linked; its
    /// test binary (if it has tests) saved at `binary`.
    ///
    /// With `profile` (a package without tests, under cover), it runs alone and writes
    /// go's profile of the package there (`-coverprofile`: its statements, none run),
    /// as `go test -coverprofile ./...` has it since Go 1.22.
    fn build(
        &self,
        target: &TargetDecl,
        dir: &str,
        binary: Option<&str>,
        profile: Option<&str>,
    ) -> Action {
        let s = self.settings;
        // Go's own test cache stays on: when the test binary's link inputs are unchanged
        // (a comment edit), go replays the line go-test-exec printed naming the binary
        // instead of linking it again (see `output::SAVED_BINARY`).
        let mut argv: Vec<String> = ["{tool:go}/bin/go", "test", "-json"]
            .map(String::from)
            .to_vec();
        if !s.isolated {
            // Paths differ from sandbox to sandbox: keep them out of the binaries.
            argv.push("-trimpath".into());
        }
        argv.push("-exec='{kiln}' go-test-exec".into());
        if s.race {
            argv.push("-race".into());
        }
        if !s.tags.is_empty() {
            argv.push(format!("-tags={}", s.tags.join(",")));
        }
        let packages = self.packages_of(dir);
        let mut inputs = packages.test_build_inputs(self.module, dir);
        if let Some(cover) = self.cover {
            argv.extend(cover.build_args());
            // go loads every package -coverpkg names.
            inputs = packages.with_build_files(self.module, inputs, &cover.coverpkg_dirs);
        }
        if let Some(profile) = profile {
            argv.push(format!("-coverprofile={{sandbox}}/{profile}"));
        }
        argv.push(package_arg(dir));
        let pkg = &packages.by_dir[dir];
        Action {
            owner: target.label.clone(),
            mnemonic: "GoTestBuild".into(),
            discriminator: pkg.import_path.clone(),
            inputs,
            outputs: binary.or(profile).map(String::from).into_iter().collect(),
            kind: ActionKind::Exec(ExecSpec {
                argv,
                env: go_env(self.module, &s.platform, self.cgo(dir), true),
                tools: self.build_tools(dir),
                workdir: self.module.dir.clone(),
                store_access: true,
                batch: Some(Batch {
                    member_args: 1,
                    attempts: 1,
                    split: Arc::new(output::Split),
                    // -coverprofile is one file for the whole command: alone.
                    shared: s.shared && profile.is_none(),
                    // A binary the store no longer holds is linked again.
                    fresh_args: vec!["-count=1".into()],
                }),
                ..Default::default()
            }),
            platform: Some(s.platform.clone()),
            // Shown for a package without tests: its `?  pkg [no test files]` line.
            show_output: binary.is_none(),
        }
    }

    /// The test binary run under test2json in its package's directory.
    fn run(&self, target: &TargetDecl, dir: &str, binary: Artifact) -> Action {
        let s = self.settings;
        let pkg = &self.packages.by_dir[dir];
        let mut argv = vec![
            format!("{{sandbox}}/{}", self.test2json.path),
            "-t".into(),
            "-p".into(),
            pkg.import_path.clone(),
            format!("{{sandbox}}/{}", binary.path),
            "-test.v=test2json".into(),
            "-test.paniconexit0".into(),
            format!("-test.timeout={}", s.timeout),
            format!("-test.testlogfile={{sandbox}}/{TEST_LOG}"),
        ];
        let mut outputs = Vec::new();
        if self.cover.is_some() {
            let profile = cover::profile_path(&binary.path);
            argv.push(format!("-test.coverprofile={{sandbox}}/{profile}"));
            outputs.push(profile);
        }
        argv.extend(s.args.binary.iter().cloned());
        // The dependencies too: a test that runs the go command on its module (`go run`,
        // `go build`, `go vet`) needs them, as under `go test`.
        let mut inputs = vec![binary, self.test2json.clone()];
        inputs.extend(self.module.dependency_files());
        Action {
            owner: target.label.clone(),
            mnemonic: "GoTest".into(),
            discriminator: pkg.import_path.clone(),
            inputs,
            outputs,
            kind: ActionKind::Exec(ExecSpec {
                argv,
                env: self.run_env(dir),
                tools: self.run_tools(dir),
                workdir: self.module.file(dir),
                reads: Some(Reads {
                    dir: self.module.dir.clone(),
                    log: TEST_LOG.into(),
                    parse: Arc::new(TestLog),
                    scratch_workdir: true,
                }),
                store_view: true,
                test: true,
                batch: Some(Batch {
                    member_args: 0,
                    attempts: s.attempts,
                    split: Arc::new(output::Split),
                    shared: false,
                    fresh_args: Vec::new(),
                }),
                ..Default::default()
            }),
            platform: Some(s.platform.clone()),
            show_output: true,
        }
    }

    /// The tools of the test in `dir`'s run: the toolchain and the declared `tools`, and
    /// the C toolchain when its package is built with cgo, so that the go commands it
    /// runs (a TestMain building the service it tests) build as its own binary was built.
    fn run_tools(&self, dir: &str) -> Vec<Tool> {
        let mut tools = self.settings.run_tools.clone();
        if self.cgo(dir) {
            for tool in self.build_tools(dir) {
                if !tools.iter().any(|t| t.name == tool.name) {
                    tools.push(tool);
                }
            }
        }
        tools
    }

    /// A test's environment: what its go commands need (Go's compile cache through a
    /// view: they read what kiln compiled, and what they put stays theirs; cgo as its
    /// package was built), the user's name, the target's `env`.
    fn run_env(&self, dir: &str) -> BTreeMap<String, String> {
        let s = self.settings;
        let mut env = go_env(self.module, &s.platform, self.cgo(dir), true);
        env.insert("USER".into(), "{user}".into());
        env.insert("LOGNAME".into(), "{user}".into());
        if s.race {
            // Drop the race runtime's one-second pause at exit (races are still reported).
            env.insert("GORACE".into(), "atexit_sleep_ms=0".into());
        }
        env.extend(s.env.clone());
        env
    }
}

/// The `go test` argument naming the package in module-relative `dir`.
pub(super) fn package_arg(dir: &str) -> String {
    match dir.is_empty() {
        true => ".".into(),
        false => format!("./{dir}"),
    }
}
