//! The files init writes, each announced as `kiln: wrote PATH` (relative to where init
//! runs): kiln.toml when missing, BUILD.toml files, and `kiln-out/` in .gitignore.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::module::Module;
use super::shown;

const IGNORE_LINE: &str = "kiln-out/";

pub fn write_kiln_toml(root: &Path) -> Result<()> {
    let path = root.join("kiln.toml");
    if path.exists() {
        return Ok(());
    }
    let name = root
        .canonicalize()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    write(root, &path, &format!("[workspace]\nname = {name:?}\n"))
}

pub fn write_build(root: &Path, module: &Module, text: &str) -> Result<()> {
    write(root, &root.join(&module.rel).join("BUILD.toml"), text)
}

/// Adds `kiln-out/` to .gitignore in a git work tree or where a .gitignore exists;
/// else says to ignore it.
pub fn ignore_out_dir(root: &Path) -> Result<()> {
    let path = root.join(".gitignore");
    if !path.exists() && !in_git_work_tree(root) {
        eprintln!("kiln: outputs go to kiln-out/: keep it out of version control");
        return Ok(());
    }
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    if ignores_out_dir(&text) {
        return Ok(());
    }
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    write(root, &path, &format!("{text}{sep}{IGNORE_LINE}\n"))
}

fn ignores_out_dir(gitignore: &str) -> bool {
    gitignore.lines().any(|l| {
        matches!(
            l.trim(),
            "kiln-out" | "kiln-out/" | "/kiln-out" | "/kiln-out/"
        )
    })
}

fn in_git_work_tree(dir: &Path) -> bool {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.ancestors().any(|d| d.join(".git").exists())
}

fn write(root: &Path, path: &Path, text: &str) -> Result<()> {
    // A checked-in link (even one to nothing) would take the write to a file of the
    // host: init writes regular files of the workspace only.
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        anyhow::bail!(kiln_engine::Error::new(
            kiln_engine::ErrorKind::Config,
            format!("{} is a link or not a regular file", shown(root, path)),
        )
        .hint(
            "kiln init writes only regular files of the workspace: remove it, or write it by hand"
        ));
    }
    std::fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))?;
    eprintln!("kiln: wrote {}", shown(root, path));
    Ok(())
}
