//! Digests of whole directory trees (a Go toolchain's GOROOT, say), for tool identity.

use std::path::Path;

use kiln_cache::{Digest, FileStates};

use crate::error::{Error, ErrorKind, Result};

/// BLAKE3 over the sorted (relative path, content digest, executable bit) of every file
/// below `root`, and the targets of symbolic links. Unchanged files are not rehashed.
pub fn tree_digest(root: &Path, files: &FileStates) -> Result<Digest> {
    use rayon::prelude::*;
    let mut entries = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry
            .map_err(|e| Error::new(ErrorKind::Io, format!("walk {}: {e}", root.display())))?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .into_owned();
        if entry.file_type().is_file() {
            entries.push((rel, Some(entry.into_path()), String::new()));
        } else if entry.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path())
                .map_err(|e| Error::io("read link", entry.path(), e))?;
            entries.push((rel, None, target.to_string_lossy().into_owned()));
        }
    }
    let lines: Vec<String> = entries
        .into_par_iter()
        .map(|(rel, path, link)| match path {
            Some(path) => {
                let h = files.hash(&path)?;
                Ok(format!("{rel}\0{}\0{}\n", h.digest, h.executable))
            }
            None => Ok(format!("{rel}\0->{link}\n")),
        })
        .collect::<Result<_>>()?;
    Ok(Digest::of_bytes(lines.concat().as_bytes()))
}
