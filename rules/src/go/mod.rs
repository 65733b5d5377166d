//! The Go rules: `go_test` (one cached action per Go package) and `go_binary` (one
//! reproducible `go build` per platform), and what they share.
//!
//! * **Toolchain**: `[go] root = "/path/to/goroot"` in kiln.toml, else the `go` on PATH
//!   (asked once for `go env GOROOT`, since it may be a shim). It enters action keys as
//!   the digest of the whole GOROOT tree, so switching Go versions rebuilds and moving
//!   the same toolchain elsewhere does not.
//! * **Module**: the BUILD.toml's directory must hold go.mod. Packages are found by a
//!   `go list -json ./...` action (cached, keyed by every file of the module) run during
//!   analysis; each package's inputs are then exactly its transitive sources within the
//!   module (plus go.mod, go.sum, vendor/, the files of modules that go.mod replaces
//!   by a directory ([`replace`]) and, for tests, the package's testdata/).
//! * **Environment** ([`go_env`]): GOPROXY=off, GOSUMDB=off, GOTOOLCHAIN=local (a go.mod
//!   `toolchain` line must not switch compilers), GOWORK=off, GOFLAGS=-mod=vendor when
//!   vendor/ exists else -mod=readonly, GOAMD64=v1 / GOARM64=v8.0 / GOARM=7 pinned, a fresh
//!   GOCACHE per action and Go's compile cache shared through `kiln gocacheprog`
//!   (GOCACHEPROG), which relays to the build's own server of kiln's store, and so to the
//!   remote cache when one is configured (`KILN_GO_CACHE` moves the local part).
//! * **Dependencies** ([`download`]): from vendor/ (GOFLAGS=-mod=vendor), or, when go.sum
//!   lists modules, from one `GoModDownload` fixed-output action: `go mod download` with
//!   the `[go] proxy` of kiln.toml (default `https://proxy.golang.org`), the only kind of
//!   action allowed network access, keyed by go.mod and go.sum alone; Go verifies every
//!   module against go.sum. Its output, a module cache under
//!   `kiln-out/<package>/.gomodcache/`, is an input of every other Go action of the
//!   module, which run with GOPROXY=off and GOMODCACHE pointing at it.
//! * **cgo** ([`cgo`]): off (CGO_ENABLED=0), but for the tests and vet of packages that
//!   link code using cgo (go-sqlite3), and for every package under `race = true`; those
//!   get the host's gcc as a tool.

pub mod binary;
pub mod cgo;
pub mod cover;
pub mod download;
pub mod flags;
mod header;
mod ldflags;
pub mod list;
pub mod modcheck;
pub mod output;
mod replace;
pub mod sbom;
pub mod test;
mod testlog;
pub mod vet;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use kiln_engine::action::{Artifact, Tool};
use kiln_engine::host;
use kiln_engine::rule::Analysis;
use kiln_engine::workspace::OUT_DIR;
use kiln_engine::{Error, ErrorKind, Result};

/// Platforms `go_binary` accepts (`go tool dist list`, first-class and common ports).
pub const PLATFORMS: &[&str] = &[
    "linux/amd64",
    "linux/arm64",
    "linux/arm",
    "linux/386",
    "linux/riscv64",
    "linux/ppc64le",
    "linux/s390x",
    "darwin/amd64",
    "darwin/arm64",
    "windows/amd64",
    "windows/arm64",
    "windows/386",
    "freebsd/amd64",
    "freebsd/arm64",
];

/// The programs of the toolchain's `bin/`, which every Go action has on PATH: a
/// go_test's `tools` naming one means the toolchain's, not the host's.
pub const TOOLCHAIN_PROGRAMS: &[&str] = &["go", "gofmt"];

/// The platform kiln runs on, as `os/arch` in Go's words (tests run here).
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// The Go toolchain as a tool of an action.
pub fn toolchain(ctx: &Analysis<'_>) -> Result<Tool> {
    if let Some(go) = ctx.workspace.section("go")? {
        go.check_keys(&["root", "proxy"], "[go]")?;
        if let Some(root) = go.str("root")? {
            let path = PathBuf::from(&root.value);
            if !path.join("bin/go").is_file() {
                return Err(go
                    .error_at("root", format!("`{}` holds no bin/go", root.value))
                    .hint("point [go] root at a Go installation (the output of `go env GOROOT`)"));
            }
            if let Some(owner) = written_by_builds(ctx, &path) {
                return Err(go
                    .error_at("root", format!("`{}` is inside {owner}", root.value))
                    .hint("a toolchain there is the repository's own code, and `go mod download` runs it with the network; point [go] root at a Go installation of the host"));
            }
            return Ok(Tool {
                name: "go".into(),
                path,
                tree: true,
            });
        }
    }
    static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        if let Some(root) = goroot_of_binary() {
            return Ok(root);
        }
        // In the workspace (a shim such as asdf picks its version there), but never
        // switching to the toolchain a go.mod's `toolchain` line names: go would
        // download and run it, outside any sandbox.
        let local = [("GOTOOLCHAIN", "local")];
        host::output_env(&["go", "env", "GOROOT"], &ctx.workspace.root, &local)
            .map(PathBuf::from)
            .map_err(|e| e.message)
    });
    match found {
        Ok(path) => Ok(Tool {
            name: "go".into(),
            path: path.clone(),
            tree: true,
        }),
        Err(message) => Err(Error::new(
            ErrorKind::Config,
            format!("find the Go toolchain: {message}"),
        )
        .hint("put `go` on PATH, or set [go] root = \"/path/to/goroot\" in kiln.toml")),
    }
}

/// Whether `root` (links followed) is inside the workspace or kiln's cache, which the
/// repository being built writes: "the workspace" or "kiln's cache".
fn written_by_builds(ctx: &Analysis<'_>, root: &std::path::Path) -> Option<&'static str> {
    let real = std::fs::canonicalize(root).ok()?;
    let inside =
        |dir: &std::path::Path| std::fs::canonicalize(dir).is_ok_and(|dir| real.starts_with(dir));
    if inside(&ctx.workspace.root) {
        Some("the workspace")
    } else if inside(&kiln_cache::default_cache_dir()) {
        Some("kiln's cache")
    } else {
        None
    }
}

/// GOROOT read off the `go` on PATH when it is a real toolchain binary
/// (`<GOROOT>/bin/go` next to `<GOROOT>/src/runtime`), without running it. A shim
/// (pyenv, asdf, goenv) is not: then `go env GOROOT` answers, at the cost of a process
/// (set `[go] root` in kiln.toml to skip it).
fn goroot_of_binary() -> Option<PathBuf> {
    let go = std::fs::canonicalize(kiln_engine::sandbox::find_on_path("go")?).ok()?;
    let root = go.parent()?.parent()?;
    (go.parent()?.file_name()? == "bin"
        && root.join("src/runtime").is_dir()
        && root.join("VERSION").is_file())
    .then(|| root.to_path_buf())
}

/// The Go module of the target's package.
pub struct Module {
    /// Workspace-relative directory of go.mod ("" at the root).
    pub dir: String,
    /// The `module` path of go.mod.
    pub path: String,
    pub vendored: bool,
    /// go.mod, go.sum and vendor/ files: inputs of every Go action.
    pub common: Vec<Artifact>,
    /// Every file of the module (inputs of `go list`), with the downloaded modules.
    pub all: Vec<Artifact>,
    /// The sandbox-relative module cache of downloaded dependencies, if any.
    pub modcache: Option<String>,
    /// The files of modules go.mod replaces by a directory.
    pub replaced: Vec<Artifact>,
}

impl Module {
    pub fn load(ctx: &mut Analysis<'_>) -> Result<Module> {
        let dir = ctx.package().to_string();
        let go_mod = ctx.workspace.root.join(&dir).join("go.mod");
        let rel = rel_join(&dir, "go.mod");
        let text = match kiln_engine::workspace::read_file(&ctx.workspace.root, &rel) {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(Error::new(ErrorKind::Config, format!("read {rel}: {e}"))
                    .at(ctx.attrs().location(ctx.attrs().span.start))
                    .hint("go.mod must be a file of the workspace"));
            }
            read => read.ok().and_then(|b| String::from_utf8(b).ok()),
        };
        let text = text.ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("{} needs go.mod in its package directory", ctx.label()),
            )
            .at(ctx.attrs().location(ctx.attrs().span.start))
            .hint("declare Go targets in the BUILD.toml next to go.mod")
        })?;
        let path = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("module "))
            .map(|m| m.trim().trim_matches('"').to_string())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("{} has no module line", go_mod.display()),
                )
            })?;
        let mut all = module_files(ctx, &dir)?;
        let vendor_prefix = rel_join(&dir, "vendor/");
        let mut common = all
            .iter()
            .filter(|a| {
                a.path == rel_join(&dir, "go.mod")
                    || a.path == rel_join(&dir, "go.sum")
                    || a.path.starts_with(&vendor_prefix)
            })
            .cloned()
            .collect::<Vec<_>>();
        let vendored = common.iter().any(|a| a.path.starts_with(&vendor_prefix));
        let replaced = replaced_files(ctx, &dir, &go_mod, &text)?;
        all.extend(replaced.iter().cloned());
        common.extend(replaced.iter().cloned());
        let mut module = Module {
            dir,
            path,
            vendored,
            common,
            all,
            modcache: None,
            replaced,
        };
        if !vendored {
            if let Some((cache_dir, files)) = download::download(ctx, &module)? {
                module.common.extend(files.iter().cloned());
                module.all.extend(files);
                module.modcache = Some(cache_dir);
            }
        }
        Ok(module)
    }

    /// What the go commands a test runs need beyond the module itself: the downloaded
    /// module cache's files and those of the modules go.mod replaces by a directory.
    pub fn dependency_files(&self) -> Vec<Artifact> {
        let mut out = self.replaced.clone();
        if let Some(dir) = &self.modcache {
            let prefix = format!("{dir}/");
            let cache = self.common.iter().filter(|a| a.path.starts_with(&prefix));
            out.extend(cache.cloned());
        }
        out
    }

    /// The workspace-relative path of a module-relative one.
    pub fn file(&self, rel: &str) -> String {
        rel_join(&self.dir, rel)
    }

    /// The module-relative directory of an import path inside the module.
    pub fn package_dir(&self, import_path: &str) -> Option<String> {
        if import_path == self.path {
            return Some(String::new());
        }
        import_path
            .strip_prefix(&format!("{}/", self.path))
            .map(str::to_string)
    }
}

pub fn rel_join(dir: &str, rel: &str) -> String {
    if dir.is_empty() {
        rel.to_string()
    } else if rel.is_empty() {
        dir.to_string()
    } else {
        format!("{dir}/{rel}")
    }
}

/// The files of the modules that go.mod's `replace` directives name by directory
/// (see [`replace`]).
fn replaced_files(
    ctx: &Analysis<'_>,
    dir: &str,
    go_mod: &std::path::Path,
    text: &str,
) -> Result<Vec<Artifact>> {
    let mut out = Vec::new();
    for r in replace::local_replaces(text) {
        let shown = go_mod.strip_prefix(&ctx.workspace.root).unwrap_or(go_mod);
        let target = replace::resolve(dir, shown, &r)?;
        if !ctx.workspace.root.join(&target).join("go.mod").is_file() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{}:{}: replace with {}: no go.mod in {}/",
                    shown.display(),
                    r.line,
                    r.dir,
                    if target.is_empty() { "." } else { &target }
                ),
            )
            .hint("a directory that replaces a module holds that module's go.mod"));
        }
        out.extend(module_files(ctx, &target)?);
    }
    Ok(out)
}

/// Every file below the module directory (and every link to a file), leaving out
/// kiln-out/, hidden directories and nested modules. A go.mod below vendor/ is a
/// vendored module's (`go mod vendor` copies it beside the package), not a nested one.
fn module_files(ctx: &Analysis<'_>, dir: &str) -> Result<Vec<Artifact>> {
    let base = ctx.workspace.root.join(dir);
    let vendor = base.join("vendor");
    let walker = walkdir::WalkDir::new(&base)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            if e.depth() == 0 || !e.file_type().is_dir() {
                return true;
            }
            let name = e.file_name().to_string_lossy();
            let nested = !e.path().starts_with(&vendor) && e.path().join("go.mod").exists();
            !(name.starts_with('.') || name == OUT_DIR || nested)
        });
    let mut out = Vec::new();
    for entry in walker {
        let entry = entry
            .map_err(|e| Error::new(ErrorKind::Io, format!("walk {}: {e}", base.display())))?;
        // A link to a file is the file (a go.mod linked to vendor.mod, say); go does
        // not descend into linked directories, and neither does this.
        let file = entry.file_type().is_file()
            || (entry.file_type().is_symlink() && entry.path().is_file());
        if file {
            let rel = entry
                .path()
                .strip_prefix(&ctx.workspace.root)
                .unwrap_or(entry.path());
            out.push(Artifact::source(rel.to_string_lossy().into_owned()));
        }
    }
    Ok(out)
}

/// The environment of every Go action. `platform` is `os/arch`.
pub fn go_env(
    module: &Module,
    platform: &str,
    cgo: bool,
    share_cache: bool,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_string(), v.to_string());
    };
    set("PATH", "{tool:go}/bin");
    set("GOROOT", "{tool:go}");
    // Under TMPDIR, which bubblewrap sandboxes mount as tmpfs: Go creates 256
    // directories in a fresh GOCACHE, costly on a disk file system for every action.
    set("GOCACHE", "{sandbox}/.kiln/tmp/gocache");
    set("GOPATH", "{sandbox}/.kiln/gopath");
    match &module.modcache {
        Some(dir) => set("GOMODCACHE", &format!("{{sandbox}}/{dir}")),
        None => set("GOMODCACHE", "{sandbox}/.kiln/gopath/pkg/mod"),
    }
    // As go itself: vendor/ when there is one, else go.mod and go.sum as they are
    // (a module whose go.mod needs updating fails, as under `go build`).
    set(
        "GOFLAGS",
        if module.vendored {
            "-mod=vendor"
        } else {
            "-mod=readonly"
        },
    );
    set("GOPROXY", "off");
    set("GOSUMDB", "off");
    set("GOTOOLCHAIN", "local");
    set("GOWORK", "off");
    set("GO111MODULE", "on");
    set("GOTELEMETRY", "off");
    set("CGO_ENABLED", if cgo { "1" } else { "0" });
    for (k, v) in platform_env(platform) {
        set(k, &v);
    }
    if share_cache {
        set("GOCACHEPROG", "{kiln} gocacheprog");
    }
    env
}

/// The variables that pick a platform (`os/arch`): GOOS, GOARCH, and the pinned
/// instruction-set level (GOAMD64=v1, GOARM64=v8.0, GOARM=7), so that a binary is the
/// same whatever the machine that builds it would default to.
pub fn platform_env(platform: &str) -> Vec<(&'static str, String)> {
    let (os, arch) = platform.split_once('/').unwrap_or(("linux", "amd64"));
    let mut env = vec![("GOOS", os.to_string()), ("GOARCH", arch.to_string())];
    match arch {
        "amd64" => env.push(("GOAMD64", "v1".into())),
        "arm64" => env.push(("GOARM64", "v8.0".into())),
        "arm" => env.push(("GOARM", "7".into())),
        _ => {}
    }
    env
}

/// Host tools a cgo build needs (the C compiler driver and binutils).
pub fn cgo_tools(ctx: &Analysis<'_>) -> Result<Vec<Tool>> {
    use kiln_engine::value::Spanned;
    ["gcc", "as", "ld"]
        .iter()
        .map(|name| {
            ctx.host_tool(&Spanned {
                value: name.to_string(),
                span: ctx.attrs().span.clone(),
            })
        })
        .collect()
}
