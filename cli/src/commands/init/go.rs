//! The Go toolchain and `go list`, run on the host as kiln's Go rules run Go in a
//! sandbox, so init sees the packages the rules will see.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use kiln_engine::{Error, ErrorKind};
use serde::Deserialize;

use super::module::Module;

const FIELDS: &str =
    "ImportPath,Dir,Name,GoFiles,IgnoredGoFiles,TestGoFiles,XTestGoFiles,Error,DepsErrors";

/// The environment of kiln's Go actions (see the rules' `go_env`) that decides what
/// `go list` sees: offline, this toolchain only, no workspace, no cgo.
const ENV: &[(&str, &str)] = &[
    ("GOPROXY", "off"),
    ("GOSUMDB", "off"),
    ("GOTOOLCHAIN", "local"),
    ("GOWORK", "off"),
    ("GO111MODULE", "on"),
    ("CGO_ENABLED", "0"),
    ("GOTELEMETRY", "off"),
];

/// One package as `go list -e -json` reports it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Package {
    pub import_path: String,
    pub dir: PathBuf,
    pub name: String,
    pub go_files: Vec<String>,
    pub ignored_go_files: Vec<String>,
    pub test_go_files: Vec<String>,
    pub x_test_go_files: Vec<String>,
    pub error: Option<GoError>,
    pub deps_errors: Vec<GoError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GoError {
    pub pos: String,
    pub err: String,
}

impl GoError {
    /// The first line of the message, after its position when it has one; a missing
    /// dependency says so in kiln's words, since Go's words do not name it.
    fn describe(&self) -> String {
        let err = self.err.lines().next().unwrap_or_default();
        let pos = if self.pos.is_empty() || err.starts_with(&self.pos) {
            String::new()
        } else {
            format!("{}: ", self.pos)
        };
        let offline = match err.contains("GOPROXY=off") {
            true => " (a dependency is in neither the module cache nor vendor/: run `go mod download`, then kiln init again)",
            false => "",
        };
        format!("{pos}{err}{offline}")
    }
}

impl Package {
    /// The module-relative directory ("" for the module's root package), from the import
    /// path (a package whose module does not load has no `Dir`).
    pub fn rel(&self, module: &Module) -> String {
        if let Some(rest) = self.import_path.strip_prefix(&module.path) {
            if rest.is_empty() || rest.starts_with('/') {
                return rest.trim_start_matches('/').to_string();
            }
        }
        let rel = self.dir.strip_prefix(&module.dir).unwrap_or(&self.dir);
        rel.to_string_lossy().into_owned()
    }

    /// Why the package does not load, if it does not (its own error or a dependency's).
    pub fn problem(&self) -> Option<String> {
        let err = self.error.iter().chain(&self.deps_errors).next()?;
        Some(err.describe())
    }

    pub fn has_tests(&self) -> bool {
        !self.test_go_files.is_empty() || !self.x_test_go_files.is_empty()
    }
}

/// The `go` command init runs.
pub struct Go {
    bin: PathBuf,
}

impl Go {
    /// `[go] root` of an existing kiln.toml, else the `go` on PATH (asked for its
    /// GOROOT, since it may be a shim).
    pub fn find(root: &Path) -> Result<Go> {
        let goroot = match configured_root(root)? {
            Some(goroot) => refuse_inside(root, goroot)?,
            None => path_goroot(root)?,
        };
        let bin = goroot.join("bin/go");
        if !bin.is_file() {
            bail!(Error::new(
                ErrorKind::Config,
                format!("no Go toolchain at {}", bin.display())
            )
            .hint("set [go] root in kiln.toml to the output of `go env GOROOT`"));
        }
        Ok(Go { bin })
    }

    /// `go list -e -json` of `patterns` in `module`, with build `tags`.
    pub fn list(
        &self,
        module: &Module,
        tags: &[String],
        patterns: &[String],
    ) -> Result<Vec<Package>> {
        let scratch = tempfile::tempdir()?;
        let mut cmd = self.list_command(module, scratch.path())?;
        if !tags.is_empty() {
            cmd.arg(format!("-tags={}", tags.join(",")));
        }
        let out = cmd
            .args(patterns)
            .output()
            .context("failed to run go list")?;
        if !out.status.success() {
            bail!(list_failed(module, &String::from_utf8_lossy(&out.stderr)));
        }
        parse(&out.stdout)
    }

    /// `go list` in the module directory with the rules' environment, on a copy of
    /// go.mod and go.sum in `scratch` (`-modfile`), so `-mod=mod` never edits the
    /// module's own.
    fn list_command(&self, module: &Module, scratch: &Path) -> Result<Command> {
        let mod_file = scratch.join("go.mod");
        std::fs::copy(module.dir.join("go.mod"), &mod_file)?;
        if module.dir.join("go.sum").is_file() {
            std::fs::copy(module.dir.join("go.sum"), scratch.join("go.sum"))?;
        }
        let mode = if module.vendored { "vendor" } else { "mod" };
        let mut cmd = Command::new(&self.bin);
        cmd.args(["list", "-e", &format!("-json={FIELDS}")])
            .arg(format!("-modfile={}", mod_file.display()))
            .current_dir(&module.dir)
            .env("PWD", &module.dir)
            .env("GOFLAGS", format!("-mod={mode}"))
            .envs(ENV.iter().copied())
            .env_remove("GOOS")
            .env_remove("GOARCH");
        Ok(cmd)
    }
}

fn configured_root(root: &Path) -> Result<Option<PathBuf>> {
    let Ok(text) = std::fs::read_to_string(root.join("kiln.toml")) else {
        return Ok(None);
    };
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let path = root.join("kiln.toml");
        Error::new(
            ErrorKind::Config,
            format!("parse {}: {}", path.display(), e.message()),
        )
    })?;
    let goroot = doc
        .get("go")
        .and_then(|go| go.get("root"))
        .and_then(|r| r.as_str());
    Ok(goroot.map(|r| root.join(r)))
}

/// A `[go] root` inside the module init reads is the module's own code, which init
/// would run on the host, outside any sandbox.
fn refuse_inside(root: &Path, goroot: PathBuf) -> Result<PathBuf> {
    let (Ok(real), Ok(top)) = (goroot.canonicalize(), root.canonicalize()) else {
        return Ok(goroot);
    };
    if real.starts_with(&top) {
        bail!(Error::new(
            ErrorKind::Config,
            format!("[go] root of {} is inside it: {}", root.join("kiln.toml").display(), goroot.display())
        )
        .hint("kiln init runs that go on the host; point [go] root at a Go installation outside the workspace"));
    }
    Ok(goroot)
}

fn path_goroot(root: &Path) -> Result<PathBuf> {
    let not_found = |why: String| {
        Error::new(
            ErrorKind::Config,
            format!("failed to find the Go toolchain: {why}"),
        )
        .hint("put `go` on PATH, or set [go] root = \"/path/to/goroot\" in kiln.toml")
    };
    let out = Command::new("go")
        .args(["env", "GOROOT"])
        .current_dir(root)
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| not_found(format!("`go env GOROOT`: {e}")))?;
    let goroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || goroot.is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(not_found(format!("`go env GOROOT`: {}", stderr.trim())));
    }
    Ok(PathBuf::from(goroot))
}

fn list_failed(module: &Module, stderr: &str) -> Error {
    let first = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    let hint = match stderr.contains("GOPROXY=off") {
        true => "kiln init lists packages offline, from the module cache: run `go mod download` first (kiln's own builds download through [go] proxy)",
        false => "kiln init lists packages offline, as kiln builds: `go build ./...` should pass with GOPROXY=off GOFLAGS=-mod=mod",
    };
    Error::new(
        ErrorKind::Config,
        format!("go list failed in {}: {first}", module.dir.display()),
    )
    .hint(hint)
}

fn parse(stdout: &[u8]) -> Result<Vec<Package>> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Package>()
        .map(|p| p.context("failed to parse go list output"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_is_placed_by_its_import_path_even_without_a_dir() {
        let module = Module {
            dir: PathBuf::from("/src/m"),
            rel: String::new(),
            path: "example.com/m".into(),
            vendored: false,
        };
        let pkg = |import_path: &str, dir: &str| Package {
            import_path: import_path.into(),
            dir: dir.into(),
            ..Package::default()
        };
        assert_eq!(
            pkg("example.com/m/internal/x", "").rel(&module),
            "internal/x"
        );
        assert_eq!(pkg("example.com/m", "").rel(&module), "");
        assert_eq!(pkg("example.com/mx", "/src/m/mx").rel(&module), "mx");
    }
}
