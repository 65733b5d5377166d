//! `go list`: the packages of a module and what each one needs.
//!
//! Two actions per module, run during analysis:
//!
//! 1. `GoListInputs`, a builtin, copies every file of the module into
//!    `kiln-out/<package>/.go-list/` as `go list` needs to see it: Go files reduced to
//!    their [`super::header::skeleton`] (build constraints, package clause, imports,
//!    `//go:embed` lines); go.mod, go.sum, vendor/modules.txt, C and assembly files
//!    (go/build reads their build constraints) and the downloaded module cache as they
//!    are; every other file empty (`go list` reads only its name, for embed patterns).
//! 2. `GoList` runs `go list -e -json=… ./...` over that copy, one per platform (build
//!    constraints pick files per platform). Keyed by the copy, it does not run again
//!    when an edit changes code but no import, build constraint, embed pattern or file
//!    name: the common edit costs one builtin instead of one `go list` per platform.
//!
//! The listing is parsed into [`GoPackage`]s; [`Packages::test_inputs`] and
//! [`Packages::build_inputs`] then compute each action's exact inputs: the package's own
//! files and the non-test files of every module package it imports, transitively.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use kiln_engine::action::{Action, ActionId, ActionKind, Artifact, Builtin, BuiltinCtx, ExecSpec};
use kiln_engine::rule::Analysis;
use kiln_engine::{Error, ErrorKind, Result};
use serde::Deserialize;

use super::{go_env, toolchain, Module};

const FIELDS: &str =
    "ImportPath,Name,Dir,GoFiles,CgoFiles,CFiles,HFiles,SFiles,SysoFiles,EmbedFiles,\
TestGoFiles,XTestGoFiles,TestEmbedFiles,XTestEmbedFiles,Imports,TestImports,XTestImports,Error";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GoPackage {
    pub import_path: String,
    pub name: String,
    pub go_files: Vec<String>,
    pub cgo_files: Vec<String>,
    pub c_files: Vec<String>,
    pub h_files: Vec<String>,
    pub s_files: Vec<String>,
    pub syso_files: Vec<String>,
    pub embed_files: Vec<String>,
    pub test_go_files: Vec<String>,
    pub x_test_go_files: Vec<String>,
    pub test_embed_files: Vec<String>,
    pub x_test_embed_files: Vec<String>,
    pub imports: Vec<String>,
    pub test_imports: Vec<String>,
    pub x_test_imports: Vec<String>,
    pub error: Option<PackageError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PackageError {
    pub err: String,
}

impl GoPackage {
    fn build_files(&self) -> impl Iterator<Item = &String> {
        self.go_files
            .iter()
            .chain(&self.cgo_files)
            .chain(&self.c_files)
            .chain(&self.h_files)
            .chain(&self.s_files)
            .chain(&self.syso_files)
            .chain(&self.embed_files)
    }

    fn test_files(&self) -> impl Iterator<Item = &String> {
        self.test_go_files
            .iter()
            .chain(&self.x_test_go_files)
            .chain(&self.test_embed_files)
            .chain(&self.x_test_embed_files)
    }

    pub fn has_tests(&self) -> bool {
        !self.test_go_files.is_empty() || !self.x_test_go_files.is_empty()
    }
}

/// The module's packages, by module-relative directory ("" for the root package).
pub struct Packages {
    pub by_dir: BTreeMap<String, GoPackage>,
    module_path: String,
}

/// What one listing sees: the platform and build tags (constraints pick files by
/// both), and `extra` patterns beside `./...` (directories `./...` leaves out, such as
/// `./_examples/server`, which go still builds when they are named).
pub struct Listing<'a> {
    pub platform: &'a str,
    pub tags: &'a [String],
    pub extra: &'a [String],
    /// Whether cgo is on (`-race`, a package that needs it, `cgo = true` on a binary): a
    /// package's cgo files are then part of it.
    pub cgo: bool,
}

/// Lists a module for several platforms over one copy of what `go list` reads (the
/// `GoListInputs` builtin runs once per target, not once per platform).
pub struct Lister {
    /// `kiln-out/<package>/.go-list/`.
    copy: String,
    copy_id: ActionId,
}

impl Lister {
    pub fn new(ctx: &mut Analysis<'_>, module: &Module) -> Result<Lister> {
        let copy = format!("{}/.go-list/", ctx.out_path("").trim_end_matches('/'));
        let (copy_id, _) = ctx.run_now(list_inputs(ctx, module, &copy))?;
        Ok(Lister { copy, copy_id })
    }

    /// The module's packages as `listing` sees them.
    pub fn list(
        &self,
        ctx: &mut Analysis<'_>,
        module: &Module,
        listing: &Listing<'_>,
    ) -> Result<Packages> {
        list_copy(ctx, module, listing, &self.copy, self.copy_id)
    }

    /// The module directories whose binaries (test binaries, or a main package's own)
    /// link cgo code, built with cgo on the platform and tags of `listing`, each with
    /// what it links (see [`cgo_users`]).
    pub fn cgo_users(
        &self,
        ctx: &mut Analysis<'_>,
        module: &Module,
        listing: &Listing<'_>,
    ) -> Result<CgoLinks> {
        cgo_users(ctx, module, listing, (&self.copy, self.copy_id))
    }
}

fn list_copy(
    ctx: &mut Analysis<'_>,
    module: &Module,
    listing: &Listing<'_>,
    copy: &str,
    copy_id: ActionId,
) -> Result<Packages> {
    let argv = vec!["-e".to_string(), format!("-json={FIELDS}")];
    let discriminator = match listing.cgo {
        true => format!("{} cgo", listing.platform),
        false => listing.platform.to_string(),
    };
    let stdout = run_list(ctx, module, listing, (copy, copy_id), argv, discriminator)?;
    parse(&stdout, module)
}

/// `go list ARGS ./... EXTRA` over the copy at `copy`, run now; its stdout.
fn run_list(
    ctx: &mut Analysis<'_>,
    module: &Module,
    listing: &Listing<'_>,
    (copy, copy_id): (&str, ActionId),
    args: Vec<String>,
    discriminator: String,
) -> Result<Vec<u8>> {
    let platform = listing.platform;
    let go = toolchain(ctx)?;
    let mut env = go_env(module, platform, listing.cgo, false);
    env.insert("GOFLAGS".into(), format!("{} -e", env["GOFLAGS"]));
    if let Some(cache) = &module.modcache {
        env.insert("GOMODCACHE".into(), format!("{{sandbox}}/{copy}{cache}"));
    }
    let inputs = module
        .all
        .iter()
        .map(|a| ctx.output(copy_id, &format!("{copy}{}", a.path)))
        .collect();
    let action = Action {
        owner: ctx.label().clone(),
        mnemonic: "GoList".into(),
        discriminator,
        inputs,
        outputs: Vec::new(),
        kind: ActionKind::Exec(ExecSpec {
            argv: ["{tool:go}/bin/go".into(), "list".into()]
                .into_iter()
                .chain(args)
                .chain(
                    (!listing.tags.is_empty()).then(|| format!("-tags={}", listing.tags.join(","))),
                )
                .chain(["./...".to_string()])
                .chain(listing.extra.iter().cloned())
                .collect(),
            env,
            tools: vec![go],
            workdir: format!("{copy}{}", module.dir)
                .trim_end_matches('/')
                .to_string(),
            ..Default::default()
        }),
        platform: None,
        show_output: false,
    };
    let (_, result) = ctx.run_now(action)?;
    Ok(ctx.exec.store.read(&result.stdout)?.unwrap_or_default())
}

/// One line per package outside the standard library that a module package or its
/// tests link: its import path, its number of cgo files, its dependencies.
const CGO_USERS_TEMPLATE: &str = "{{if or (not .Standard) (eq .ImportPath \"plugin\")}}\
{{.ImportPath}}\t{{len .CgoFiles}}\t{{join .Deps \" \"}}\n{{end}}";

/// The directories of the module's packages whose test binaries link a package that
/// uses cgo (`import "C"`), their own or a dependency's (github.com/mattn/go-sqlite3,
/// say); the standard library's cgo packages (net, os/user) do not count, they have
/// pure-Go fallbacks, but for `plugin`, whose stand-in without cgo only fails
/// ("plugin: not implemented"; a test of it builds its plugin with
/// `-buildmode=plugin`, which needs cgo too). One `go list -deps -test` with cgo on,
/// over the copy.
fn cgo_users(
    ctx: &mut Analysis<'_>,
    module: &Module,
    listing: &Listing<'_>,
    copy: (&str, ActionId),
) -> Result<CgoLinks> {
    let argv = ["-e", "-deps", "-test", "-f", CGO_USERS_TEMPLATE].map(String::from);
    let cgo = Listing {
        cgo: true,
        ..*listing
    };
    let discriminator = format!("{} cgo users", listing.platform);
    let stdout = run_list(ctx, module, &cgo, copy, argv.to_vec(), discriminator)?;
    Ok(parse_cgo_users(&String::from_utf8_lossy(&stdout), module))
}

/// The module directories whose binaries (their test binaries, or the main package's
/// own) link code that uses cgo, each with the import paths of the packages with cgo
/// files it links.
pub type CgoLinks = BTreeMap<String, BTreeSet<String>>;

/// [`cgo_users`] from its `go list` lines.
fn parse_cgo_users(stdout: &str, module: &Module) -> CgoLinks {
    // `pkg [pkg.test]` is pkg compiled with its tests: the same cgo files.
    let plain = |path: &str| path.split(" [").next().unwrap_or(path).to_string();
    let lines: Vec<(&str, bool, Vec<String>)> = stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let path = fields.next()?;
            let cgo = fields.next()? != "0";
            let deps = fields.next().unwrap_or("").split(' ').map(plain).collect();
            Some((path, cgo, deps))
        })
        .collect();
    let uses_cgo: BTreeSet<String> = lines
        .iter()
        .filter(|(_, cgo, _)| *cgo)
        .map(|(path, _, _)| plain(path))
        .collect();
    let mut users = CgoLinks::new();
    for (path, _, deps) in &lines {
        let linked: BTreeSet<String> = std::iter::once(plain(path))
            .chain(deps.iter().cloned())
            .filter(|p| uses_cgo.contains(p))
            .collect();
        if let (false, Some(dir)) = (linked.is_empty(), module.package_dir(tested(path))) {
            users.entry(dir).or_default().extend(linked);
        }
    }
    users
}

/// The package whose test binary links the package `go list -test` calls `path`:
/// `pkg.test` (its main package), `pkg [pkg.test]` and `pkg_test [pkg.test]` (its test
/// files) are pkg's; any other is itself.
fn tested(path: &str) -> &str {
    match path.split_once(" [") {
        Some((_, test)) => test.trim_end_matches(']').trim_end_matches(".test"),
        None => path.strip_suffix(".test").unwrap_or(path),
    }
}

/// The builtin that writes what `go list` reads of the module's files under `copy`.
fn list_inputs(ctx: &Analysis<'_>, module: &Module, copy: &str) -> Action {
    let params = serde_json::json!({ "copy": copy });
    Action {
        owner: ctx.label().clone(),
        mnemonic: "GoListInputs".into(),
        discriminator: String::new(),
        inputs: module.all.clone(),
        outputs: vec![copy.to_string()],
        kind: ActionKind::Builtin(Builtin {
            name: "go_list_inputs".into(),
            version: 1,
            params,
            tools: Vec::new(),
            run: Arc::new(write_list_inputs),
        }),
        platform: None,
        show_output: false,
    }
}

fn write_list_inputs(ctx: &BuiltinCtx) -> std::result::Result<(), String> {
    let copy = ctx.params["copy"].as_str().unwrap_or_default();
    for input in ctx.inputs {
        let out = format!("{copy}{}", input.path);
        let read = || {
            let src = ctx.input(&input.path);
            std::fs::read(&src).map_err(|e| format!("read {}: {e}", src.display()))
        };
        match ListedAs::of(input) {
            ListedAs::Header => ctx.emit(out, super::header::skeleton(&read()?)),
            ListedAs::Whole => ctx.emit(out, read()?),
            ListedAs::Downloaded => ctx.emit_input(out, &input.path),
            ListedAs::Name => ctx.emit(out, Vec::new()),
        }
    }
    Ok(())
}

/// What `go list` reads of a file of the module.
enum ListedAs {
    /// A Go file of the module: its header.
    Header,
    /// The module's own files (go.mod, go.sum, vendor/modules.txt) and the non-Go
    /// sources whose build constraints go/build reads (C, assembly, ...).
    Whole,
    /// What a download wrote into the module cache: as it is, given by reference (it
    /// never changes under an edit, so nothing of it is read).
    Downloaded,
    /// Anything else: only its name, for embed patterns.
    Name,
}

impl ListedAs {
    fn of(input: &Artifact) -> ListedAs {
        const CONSTRAINED: &[&str] = &[
            "c", "cc", "cpp", "cxx", "h", "hh", "hpp", "hxx", "m", "s", "S", "sx", "f", "F", "for",
            "f90", "swig", "swigcxx",
        ];
        let name = input.file_name();
        let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
        if input.producer.is_some() {
            ListedAs::Downloaded
        } else if name.ends_with(".go") {
            ListedAs::Header
        } else if matches!(name, "go.mod" | "go.sum" | "modules.txt") || CONSTRAINED.contains(&ext)
        {
            ListedAs::Whole
        } else {
            ListedAs::Name
        }
    }
}

fn parse(stdout: &[u8], module: &Module) -> Result<Packages> {
    let mut by_dir = BTreeMap::new();
    for item in serde_json::Deserializer::from_slice(stdout).into_iter::<GoPackage>() {
        let pkg = item
            .map_err(|e| Error::new(ErrorKind::Action, format!("parse `go list` output: {e}")))?;
        if let Some(dir) = module.package_dir(&pkg.import_path) {
            by_dir.insert(dir, pkg);
        }
    }
    Ok(Packages {
        by_dir,
        module_path: module.path.clone(),
    })
}

impl Packages {
    /// Module-relative directories matching a `go test`-style pattern: `./...`,
    /// `./dir/...` or `./dir`.
    pub fn matching(&self, pattern: &str) -> Vec<String> {
        let p = pattern.trim_start_matches("./");
        let p = if p == "." { "" } else { p };
        if p == "..." {
            return self.by_dir.keys().cloned().collect();
        }
        if let Some(prefix) = p.strip_suffix("/...") {
            return self
                .by_dir
                .keys()
                .filter(|d| *d == prefix || d.starts_with(&format!("{prefix}/")))
                .cloned()
                .collect();
        }
        self.by_dir.keys().filter(|d| *d == p).cloned().collect()
    }

    fn dir_of(&self, import_path: &str) -> Option<&str> {
        let dir = if import_path == self.module_path {
            ""
        } else {
            import_path.strip_prefix(&format!("{}/", self.module_path))?
        };
        self.by_dir.get_key_value(dir).map(|(k, _)| k.as_str())
    }

    /// Module packages reachable from `imports` through non-test imports.
    fn closure<'a>(&'a self, imports: impl Iterator<Item = &'a String>) -> BTreeSet<&'a str> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&str> = imports.filter_map(|i| self.dir_of(i)).collect();
        while let Some(dir) = stack.pop() {
            if seen.insert(dir) {
                stack.extend(
                    self.by_dir[dir]
                        .imports
                        .iter()
                        .filter_map(|i| self.dir_of(i)),
                );
            }
        }
        seen
    }

    fn files_of(
        &self,
        module: &Module,
        dir: &str,
        files: impl Iterator<Item = String>,
    ) -> Vec<Artifact> {
        files
            .map(|f| Artifact::source(module.file(&super::rel_join(dir, &f))))
            .collect()
    }

    /// Inputs of building the tests of the package in `dir`: its files (with its test
    /// files and what they embed), the build files of every module package it reaches,
    /// go.mod & co. Not testdata/: what a test reads as it runs is the run's business.
    pub fn test_build_inputs(&self, module: &Module, dir: &str) -> Vec<Artifact> {
        let pkg = &self.by_dir[dir];
        let mut inputs = module.common.clone();
        let own = pkg.build_files().chain(pkg.test_files()).cloned();
        inputs.extend(self.files_of(module, dir, own));
        let imports = pkg
            .imports
            .iter()
            .chain(&pkg.test_imports)
            .chain(&pkg.x_test_imports);
        for dep in self.closure(imports) {
            if dep != dir {
                inputs.extend(self.files_of(module, dep, self.by_dir[dep].build_files().cloned()));
            }
        }
        dedup(inputs)
    }

    /// `inputs` with the build files of the packages in `dirs`.
    pub fn with_build_files(
        &self,
        module: &Module,
        mut inputs: Vec<Artifact>,
        dirs: &[String],
    ) -> Vec<Artifact> {
        for dir in dirs {
            inputs.extend(self.files_of(module, dir, self.by_dir[dir].build_files().cloned()));
        }
        dedup(inputs)
    }

    /// Inputs of building the package in `dir` (a main package): its build files and
    /// those of every module package it reaches.
    pub fn build_inputs(&self, module: &Module, dir: &str) -> Vec<Artifact> {
        let pkg = &self.by_dir[dir];
        let mut inputs = module.common.clone();
        inputs.extend(self.files_of(module, dir, pkg.build_files().cloned()));
        for dep in self.closure(pkg.imports.iter()) {
            inputs.extend(self.files_of(module, dep, self.by_dir[dep].build_files().cloned()));
        }
        dedup(inputs)
    }
}

fn dedup(mut v: Vec<Artifact>) -> Vec<Artifact> {
    let mut seen = BTreeSet::new();
    v.retain(|a| seen.insert(a.path.clone()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> Module {
        Module {
            dir: String::new(),
            path: "example.com/svc".into(),
            vendored: false,
            common: Vec::new(),
            all: Vec::new(),
            modcache: None,
            replaced: Vec::new(),
        }
    }

    /// Lines as `go list -deps -test` prints them (dependency lists cut short).
    #[test]
    fn packages_linking_a_cgo_dependency_or_having_cgo_files_use_cgo() {
        let out = "\
github.com/mattn/go-sqlite3\t11\tbytes database/sql runtime/cgo
example.com/svc/store\t0\tdatabase/sql github.com/mattn/go-sqlite3
example.com/svc/util\t0\t
example.com/svc/util [example.com/svc/util.test]\t0\tfmt testing
example.com/svc/util.test\t0\tfmt testing example.com/svc/util
example.com/svc/api\t0\tnet/http
example.com/svc/api_test [example.com/svc/api.test]\t0\tnet/http github.com/mattn/go-sqlite3 [example.com/svc/api.test]
example.com/svc/api.test\t0\tnet/http example.com/svc/api_test
example.com/svc/csum\t1\truntime/cgo
";
        let users = parse_cgo_users(out, &module());
        let dirs: Vec<&String> = users.keys().collect();
        assert_eq!(dirs, ["api", "csum", "store"]);
        let sqlite = BTreeSet::from(["github.com/mattn/go-sqlite3".to_string()]);
        assert_eq!(users["store"], sqlite);
        assert_eq!(users["api"], sqlite);
        assert_eq!(
            users["csum"],
            BTreeSet::from(["example.com/svc/csum".to_string()])
        );
    }

    #[test]
    fn test_variants_belong_to_the_package_under_test() {
        assert_eq!(
            tested("example.com/m/a [example.com/m/a.test]"),
            "example.com/m/a"
        );
        assert_eq!(
            tested("example.com/m/a_test [example.com/m/a.test]"),
            "example.com/m/a"
        );
        assert_eq!(tested("example.com/m/a.test"), "example.com/m/a");
        assert_eq!(tested("example.com/m/a"), "example.com/m/a");
    }
}
