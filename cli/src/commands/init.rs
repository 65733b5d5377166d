//! `kiln init`: makes an existing Go module a kiln workspace.
//!
//! Writes kiln.toml (if missing) and, next to go.mod, a BUILD.toml with one `go_test`
//! target over `./...` and one `go_binary` per main package (found by reading the
//! `package` clause of .go files, skipping vendor/, testdata/ and hidden directories).
//! An existing BUILD.toml is never overwritten.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};

use crate::Cli;

pub fn run(cli: &Cli) -> Result<ExitCode> {
    let dir = match &cli.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    let build = dir.join("BUILD.toml");
    if build.exists() {
        bail!(kiln_engine::Error::new(
            kiln_engine::ErrorKind::Config,
            format!("{} exists already", build.display())
        )
        .hint("kiln init only writes new files; edit BUILD.toml by hand"));
    }
    if !dir.join("go.mod").is_file() {
        bail!(kiln_engine::Error::new(
            kiln_engine::ErrorKind::Config,
            format!("no go.mod in {}", dir.display())
        )
        .hint("run kiln init at the root of a Go module"));
    }
    let kiln_toml = dir.join("kiln.toml");
    if !kiln_toml.exists() {
        let name = dir
            .canonicalize()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        write(&kiln_toml, &format!("[workspace]\nname = {name:?}\n"))?;
    }
    let mut text = String::from("[go_test.unit]\npackages = [\"./...\"]\n");
    for main in main_packages(&dir)? {
        let name = main.rsplit('/').next().unwrap_or(&main).replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-',
            "_",
        );
        let name = if name.is_empty() {
            "app".to_string()
        } else {
            name
        };
        let target = if main.is_empty() {
            ".".to_string()
        } else {
            format!("./{main}")
        };
        text.push_str(&format!(
            "\n[go_binary.{name}]\nmain = \"{target}\"\nldflags = [\"-s\", \"-w\"]\n"
        ));
    }
    write(&build, &text)?;
    eprintln!("kiln: wrote {}", build.display());
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))
}

/// Module-relative directories holding a `package main`, sorted.
fn main_packages(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut is_main = false;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir() {
                let skip = name.starts_with('.')
                    || name == "vendor"
                    || name == "testdata"
                    || name == "kiln-out";
                if !skip && !path.join("go.mod").exists() {
                    stack.push(path);
                }
            } else if name.ends_with(".go") && !name.ends_with("_test.go") {
                let src = std::fs::read_to_string(&path).unwrap_or_default();
                is_main |= src.lines().any(|l| l.trim() == "package main");
            }
        }
        if is_main {
            let rel = dir
                .strip_prefix(root)
                .unwrap_or(&dir)
                .to_string_lossy()
                .into_owned();
            out.push(rel);
        }
    }
    out.sort();
    Ok(out)
}
