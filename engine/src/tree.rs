//! Digests of whole directory trees (a Go toolchain's GOROOT, say), for tool identity.
//!
//! Hashing a tree means walking and stat'ing every file (12,000 for a Go toolchain), so
//! the digest is remembered between builds ([`remembered_tree_digest`]) behind a cheap
//! check: the state (size, mtime, ctime, inode) of the root directory, its `VERSION`
//! file, and its `bin/` and `pkg/tool/` directories. A toolchain is taken to be immutable
//! once installed: upgrading or reinstalling it changes those; editing a file inside it
//! in place does not, and is not noticed (delete `$KILN_CACHE/trees/` after doing that).

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

/// The tree's digest, from `memo_dir` when the tree's cheap fingerprint still matches;
/// computed (and remembered) otherwise.
pub fn remembered_tree_digest(
    root: &Path,
    files: &FileStates,
    memo_dir: &Path,
    load: impl FnOnce() -> Result<()>,
) -> Result<Digest> {
    let fingerprint = tree_fingerprint(root);
    let memo = memo_dir.join(
        blake3::hash(root.to_string_lossy().as_bytes())
            .to_hex()
            .as_str(),
    );
    if let Ok(text) = std::fs::read_to_string(&memo) {
        if let Some((fp, digest)) = text.trim().split_once(' ') {
            if fp == fingerprint {
                if let Ok(digest) = digest.parse() {
                    return Ok(digest);
                }
            }
        }
    }
    load()?;
    let digest = tree_digest(root, files)?;
    if std::fs::create_dir_all(memo_dir).is_ok() {
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(memo_dir) {
            use std::io::Write;
            if writeln!(tmp, "{fingerprint} {digest}").is_ok() {
                let _ = tmp.persist(&memo);
            }
        }
    }
    Ok(digest)
}

/// The paths whose state stands for the whole tree (see the module comment).
pub fn fingerprint_paths(root: &Path) -> Vec<std::path::PathBuf> {
    ["", "VERSION", "bin", "pkg/tool"]
        .iter()
        .map(|rel| root.join(rel))
        .collect()
}

fn tree_fingerprint(root: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut text = String::new();
    for path in fingerprint_paths(root) {
        match std::fs::metadata(path) {
            Ok(m) => text.push_str(&format!(
                "{}:{}:{}:{}:{};",
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ino()
            )),
            Err(_) => text.push_str("-;"),
        }
    }
    blake3::hash(text.as_bytes()).to_hex().to_string()
}
