//! `kiln clean`: deletes kiln-out/ (outputs are copies or links, the cache keeps them).

use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::context::Context;
use crate::Cli;

pub fn run(cli: &Cli) -> Result<ExitCode> {
    let ctx = Context::load(cli)?;
    let out = ctx.out_dir();
    match std::fs::symlink_metadata(&out) {
        Ok(meta) if meta.is_dir() => {
            make_writable(&out);
            std::fs::remove_dir_all(&out)
                .with_context(|| format!("failed to remove {}", out.display()))?;
        }
        // A link (checked in, say, to a directory of the host) is removed, never
        // followed: what it points at is not kiln's to chmod or delete.
        Ok(_) => std::fs::remove_file(&out)
            .with_context(|| format!("failed to remove {}", out.display()))?,
        Err(_) => {}
    }
    eprintln!("kiln: removed {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Directories must be writable for their entries to be removed.
fn make_writable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir_dirs(dir) {
        let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755));
    }
}

fn walkdir_dirs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}
