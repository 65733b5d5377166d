//! The workspace: the directory holding `kiln.toml`, and every `BUILD.toml` below it.
//!
//! A BUILD.toml holds one table per rule, each holding one table per target:
//!
//! ```toml
//! [genrule.upper]          # rule `genrule`, target `upper`
//! srcs = ["in.txt"]
//! ```
//!
//! Directories named `kiln-out`, and those whose name starts with `.`, are never searched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{did_you_mean, Error, ErrorKind, Result};
use crate::label::Label;
use crate::value::{Table, Value};

pub const WORKSPACE_FILE: &str = "kiln.toml";
pub const BUILD_FILE: &str = "BUILD.toml";
pub const OUT_DIR: &str = "kiln-out";

/// One target as declared: its rule, its label and its attribute table.
#[derive(Debug, Clone)]
pub struct TargetDecl {
    pub rule: String,
    pub label: Label,
    pub attrs: Table,
}

/// A directory with a BUILD.toml.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub build_file: PathBuf,
    pub targets: BTreeMap<String, TargetDecl>,
}

/// The loaded workspace.
#[derive(Debug)]
pub struct Workspace {
    pub root: PathBuf,
    pub config: Table,
    pub packages: BTreeMap<String, Package>,
    /// Every directory searched for BUILD.toml files (a new file in one changes its
    /// modification time, which the no-op fast path watches).
    pub dirs: Vec<PathBuf>,
}

/// Reads a file of the workspace that a rule reads itself while analyzing (go.mod,
/// go.sum, a template): only a regular file, and only one inside the workspace once
/// links are followed. A checked-in link to `/dev/zero` would otherwise be read until
/// memory runs out, and one to a host file would be read as the repository's own.
pub fn read_file(root: &Path, rel: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{Error as IoError, ErrorKind as IoKind, Read};
    let path = root.join(rel);
    let real = std::fs::canonicalize(&path)?;
    let top = std::fs::canonicalize(root)?;
    if !real.starts_with(&top) {
        let why = format!("a link to {}, outside the workspace", real.display());
        return Err(IoError::new(IoKind::InvalidInput, why));
    }
    let mut file = std::fs::File::open(&real)?;
    if !file.metadata()?.is_file() {
        return Err(IoError::new(IoKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Finds the workspace root: `start` or its closest ancestor holding kiln.toml.
pub fn find_root(start: &Path) -> Result<PathBuf> {
    let start = std::fs::canonicalize(start).map_err(|e| {
        let message = format!("find the workspace from {}: {e}", start.display());
        Error::new(ErrorKind::Config, message)
    })?;
    for dir in start.ancestors() {
        if dir.join(WORKSPACE_FILE).is_file() {
            return Ok(dir.to_path_buf());
        }
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "find {WORKSPACE_FILE} in {} or any parent directory",
            start.display()
        ),
    )
    .hint("run kiln inside a workspace, or create kiln.toml at its root (`kiln init`)"))
}

impl Workspace {
    /// Loads kiln.toml and every BUILD.toml. `rules` are the known rule names;
    /// `sections` the known kiln.toml sections.
    pub fn load(root: &Path, rules: &[&str], sections: &[&str]) -> Result<Workspace> {
        let config = read_toml(&root.join(WORKSPACE_FILE))?;
        config.check_keys(sections, WORKSPACE_FILE)?;
        let mut packages = BTreeMap::new();
        let (build_files, dirs) = find_build_files(root)?;
        // Parsed in parallel; the first error in walk order is the one reported.
        let loaded: Vec<Result<(String, Package)>> = build_files
            .par_iter()
            .map(|build_file| {
                let dir = build_file.parent().unwrap_or(root);
                let name = dir
                    .strip_prefix(root)
                    .unwrap_or(Path::new(""))
                    .to_string_lossy()
                    .into_owned();
                let package = load_package(&name, build_file, rules)?;
                Ok((name, package))
            })
            .collect();
        for package in loaded {
            let (name, package) = package?;
            packages.insert(name, package);
        }
        Ok(Workspace {
            root: root.to_path_buf(),
            config,
            packages,
            dirs,
        })
    }

    pub fn target(&self, label: &Label) -> Option<&TargetDecl> {
        self.packages.get(&label.package)?.targets.get(&label.name)
    }

    /// An error for a label that names no target, with a hint.
    pub fn missing_target(&self, label: &Label) -> Error {
        let err = Error::new(ErrorKind::Label, format!("no target `{label}`"));
        match self.packages.get(&label.package) {
            None => err.hint(format!(
                "there is no {BUILD_FILE} in `{}`",
                if label.package.is_empty() {
                    "."
                } else {
                    &label.package
                }
            )),
            Some(pkg) => {
                let names = pkg.targets.keys().map(String::as_str);
                match did_you_mean(&label.name, names) {
                    Some(hint) => err.hint(hint),
                    None => err.hint(format!(
                        "targets in {}: {}",
                        pkg.build_file.display(),
                        pkg.targets.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        }
    }

    /// The kiln.toml section `name`, if present.
    pub fn section(&self, name: &str) -> Result<Option<&Table>> {
        self.config.table(name)
    }
}

fn read_toml(path: &Path) -> Result<Table> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    Table::parse_bytes(path, bytes)
}

fn find_build_files(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut found = Vec::new();
    let mut dirs = Vec::new();
    let walker = walkdir::WalkDir::new(root).into_iter().filter_entry(|e| {
        e.depth() == 0 || {
            let name = e.file_name().to_string_lossy();
            !(e.file_type().is_dir() && (name.starts_with('.') || name == OUT_DIR))
        }
    });
    for entry in walker {
        let entry = entry.map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("walk the workspace {}: {e}", root.display()),
            )
        })?;
        if entry.file_type().is_dir() {
            dirs.push(entry.into_path());
        } else if entry.file_type().is_file() && entry.file_name() == BUILD_FILE {
            found.push(entry.into_path());
        }
    }
    // Sorted once here rather than each directory's entries during the walk: the same
    // order (paths compare component by component).
    found.sort_unstable();
    dirs.sort_unstable();
    Ok((found, dirs))
}

fn load_package(name: &str, build_file: &Path, rules: &[&str]) -> Result<Package> {
    let bytes = std::fs::read(build_file).map_err(|e| Error::io("read", build_file, e))?;
    parse_package(name, build_file, bytes, rules)
}

/// The package `name` from the bytes of its BUILD.toml. Linear in the file's size: a
/// location is computed only for an error, and each target's table is moved out of the
/// document, not copied.
pub fn parse_package(
    name: &str,
    build_file: &Path,
    bytes: Vec<u8>,
    rules: &[&str],
) -> Result<Package> {
    let doc = Table::parse_bytes(build_file, bytes)?;
    let file = doc.file.clone();
    let mut targets = BTreeMap::new();
    for (rule, value) in doc.entries {
        let at = |offset: usize| file.location(offset);
        if !rules.contains(&rule.value.as_str()) {
            let hint = did_you_mean(&rule.value, rules.iter().copied())
                .unwrap_or_else(|| format!("known rules: {}", rules.join(", ")));
            return Err(
                Error::new(ErrorKind::Config, format!("unknown rule `{}`", rule.value))
                    .at(at(rule.span.start))
                    .hint(hint),
            );
        }
        let Value::Table(rule_table) = value.value else {
            return Err(Error::new(
                ErrorKind::Config,
                format!("`{}` must be a table of targets", rule.value),
            )
            .at(at(rule.span.start))
            .hint(format!("declare targets as [{}.NAME]", rule.value)));
        };
        for (target, attrs) in rule_table.entries {
            let Value::Table(attrs) = attrs.value else {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("`{}.{}` must be a table", rule.value, target.value),
                )
                .at(at(target.span.start))
                .hint(format!(
                    "declare the target as [{}.{}]",
                    rule.value, target.value
                )));
            };
            let label = Label::parse(&format!(":{}", target.value), name)
                .map_err(|e| Error::new(ErrorKind::Config, e).at(at(target.span.start)))?;
            if let Some(prev) = targets.get(&target.value) {
                let prev: &TargetDecl = prev;
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "target `{}` is declared twice (also as a {})",
                        target.value, prev.rule
                    ),
                )
                .at(at(target.span.start)));
            }
            let rule = rule.value.clone();
            targets.insert(target.value, TargetDecl { rule, label, attrs });
        }
    }
    Ok(Package {
        name: name.to_string(),
        build_file: build_file.to_path_buf(),
        targets,
    })
}
