//! The modules init plans (the root one and nested ones) and the directories of a module
//! that may hold Go packages, walked as `go list ./...` walks them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use kiln_engine::{Error, ErrorKind};

/// A Go module: a directory holding go.mod.
pub struct Module {
    /// The directory, canonical (go list reports canonical directories).
    pub dir: PathBuf,
    /// The directory relative to where init runs ("" for the root module).
    pub rel: String,
    /// The `module` path of go.mod ("" if it has none: go list then says what is wrong).
    pub path: String,
    /// vendor/modules.txt exists: Go reads dependencies from vendor/.
    pub vendored: bool,
}

impl Module {
    fn at(dir: &Path, rel: String) -> Result<Module> {
        let dir = dir.canonicalize()?;
        let go_mod = std::fs::read_to_string(dir.join("go.mod"))?;
        let path = go_mod
            .lines()
            .find_map(|l| l.trim().strip_prefix("module "))
            .map(|m| m.trim().trim_matches('"').to_string())
            .unwrap_or_default();
        let vendored = dir.join("vendor/modules.txt").is_file();
        Ok(Module {
            dir,
            rel,
            path,
            vendored,
        })
    }
}

/// The module whose go.mod is in `dir` (a symlink is followed), or an error naming the
/// path looked for.
pub fn root(dir: &Path) -> Result<Module> {
    let go_mod = dir.join("go.mod");
    if !go_mod.is_file() {
        bail!(missing_go_mod(dir, &go_mod));
    }
    Module::at(dir, String::new())
}

fn missing_go_mod(dir: &Path, go_mod: &Path) -> Error {
    let what = match std::fs::read_link(go_mod) {
        Ok(target) => format!(
            "{} is a symlink to {}, which does not exist",
            go_mod.display(),
            target.display()
        ),
        Err(_) => format!("no go.mod at {}", go_mod.display()),
    };
    let hint = if dir.join("go.work").is_file() {
        "kiln does not read go.work: run kiln init in each module's directory (`kiln -C DIR init`); a module that imports another of the workspace needs a `replace` directive to it in its go.mod"
    } else if dir.join("vendor.mod").is_file() {
        "this project keeps its module in vendor.mod: link it as its scripts do (`ln -s vendor.mod go.mod && ln -s vendor.sum go.sum`), then run kiln init again"
    } else {
        "run kiln init in the directory holding go.mod (or `kiln -C DIR init`)"
    };
    Error::new(ErrorKind::Config, what).hint(hint)
}

/// The go.work that `go` would use in `dir` (there or in a directory above), which
/// kiln's Go actions do not read (GOWORK=off).
pub fn go_work_above(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join("go.work"))
        .find(|f| f.is_file())
}

/// The nested modules below `root`: each directory with its own go.mod, outside
/// directories Go ignores (`_`/`.`-prefixed, testdata) and vendor/.
pub fn nested(root: &Path) -> Vec<Module> {
    let mut found = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for (name, child) in subdirs(&root.join(&rel)) {
            if ignored_by_go(&name) || name.starts_with('_') {
                continue;
            }
            let child_rel = rel_join(&rel, &name);
            if child.join("go.mod").is_file() {
                found.extend(Module::at(&child, child_rel.clone()).ok());
            }
            stack.push(child_rel);
        }
    }
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    found
}

/// Module-relative directories ("" for the root) holding a non-test .go file, in
/// `./...` or below a `_`-prefixed directory, leaving out nested modules.
pub fn source_dirs(module: &Module) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = module.dir.join(&rel);
        if has_go_source(&dir) {
            found.push(rel.clone());
        }
        for (name, child) in subdirs(&dir) {
            if !ignored_by_go(&name) && !child.join("go.mod").exists() {
                stack.push(rel_join(&rel, &name));
            }
        }
    }
    found.sort();
    found
}

/// Directories neither `./...` nor `go build ./dir` mean as the module's programs.
fn ignored_by_go(name: &str) -> bool {
    name.starts_with('.') || name == "testdata" || name == "vendor" || name == "kiln-out"
}

/// The subdirectories of `dir` (symlinks not followed, as `./...` does not), sorted.
fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

fn has_go_source(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.ends_with(".go") && !name.ends_with("_test.go") && !name.starts_with(['.', '_'])
    })
}

/// `dir/rel`, where either may be "".
pub fn rel_join(dir: &str, rel: &str) -> String {
    match (dir.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (_, true) => dir.to_string(),
        _ => format!("{dir}/{rel}"),
    }
}

/// A module-relative directory as a Go pattern: `.` or `./dir`.
pub fn pattern(dir: &str) -> String {
    if dir.is_empty() {
        ".".to_string()
    } else {
        format!("./{dir}")
    }
}
