//! An action's input root as REAPI wants it: a Merkle tree of Directory messages whose
//! files are named by SHA-256 digest.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_cache::{Error, Result};
use prost::Message;

use crate::cas::Blob;
use crate::{re, Hashers, Remote, Sha};

/// A directory being built: files and subdirectories by name.
#[derive(Default)]
pub(crate) struct Dir {
    files: BTreeMap<String, (Sha, bool)>,
    dirs: BTreeMap<String, Dir>,
}

/// SHA-256 digests of files already hashed, by (device, inode, size, mtime): the same
/// tool or store blob linked into many sandboxes is hashed once per build, also when
/// many actions reach it at once (kiln itself, ~80 MB, starts every input root).
#[derive(Default)]
pub(crate) struct FileHashes(Mutex<HashMap<FileId, OnceSha>>);

/// A file's digest, computed by the first action that needs it while the others wait.
type OnceSha = Arc<Mutex<Option<Sha>>>;

/// (device, inode, size, mtime seconds, mtime nanoseconds).
type FileId = (u64, u64, u64, i64, i64);

/// A tree of files and the blobs it needs in the CAS.
#[derive(Default)]
pub(crate) struct InputRoot {
    pub root: Dir,
    pub blobs: BTreeMap<Sha, Blob>,
}

impl InputRoot {
    /// Adds the file at `path` (following a symbolic link) as `rel`.
    pub fn add_file(
        &mut self,
        remote: &Remote,
        hashes: &FileHashes,
        rel: &str,
        path: &Path,
    ) -> Result<()> {
        let meta = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        let id = (
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
        );
        let once = hashes.0.lock().unwrap().entry(id).or_default().clone();
        let mut known = once.lock().unwrap();
        let sha = match *known {
            Some(sha) => sha,
            None => *known.insert(hash_file(remote, path)?),
        };
        drop(known);
        let executable = meta.permissions().mode() & 0o111 != 0;
        self.blobs.insert(sha, Blob::File(path.to_path_buf()));
        self.insert(rel, (sha, executable));
        Ok(())
    }

    /// Adds bytes as the file `rel`.
    pub fn add_bytes(&mut self, rel: &str, bytes: Vec<u8>) {
        let sha = Sha::of_bytes(&bytes);
        self.blobs.insert(sha, Blob::Bytes(bytes));
        self.insert(rel, (sha, false));
    }

    /// Adds an empty directory `rel` (and its parents).
    pub fn add_dir(&mut self, rel: &str) {
        let mut dir = &mut self.root;
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir = dir.dirs.entry(part.to_string()).or_default();
        }
    }

    /// Adds every file below `dir` as `rel/...`, following symbolic links to files and
    /// leaving out those that lead nowhere; `skip` names root-relative paths left out.
    pub fn add_tree(
        &mut self,
        remote: &Remote,
        hashes: &FileHashes,
        rel: &str,
        dir: &Path,
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        self.add_dir(rel);
        let entries = fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = match rel.is_empty() {
                true => name,
                false => format!("{rel}/{name}"),
            };
            if skip(&child_rel) {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                self.add_tree(remote, hashes, &child_rel, &path, skip)?;
            } else if meta.is_file() {
                self.add_file(remote, hashes, &child_rel, &path)?;
            }
        }
        Ok(())
    }

    fn insert(&mut self, rel: &str, file: (Sha, bool)) {
        let (parent, name) = match rel.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", rel),
        };
        self.add_dir(parent);
        let mut dir = &mut self.root;
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            dir = dir.dirs.get_mut(part).expect("just added");
        }
        dir.files.insert(name.to_string(), file);
    }

    /// Encodes the tree: the root's digest; every Directory message joins the blobs.
    pub fn seal(&mut self) -> Sha {
        let root = std::mem::take(&mut self.root);
        encode(root, &mut self.blobs)
    }
}

fn encode(dir: Dir, blobs: &mut BTreeMap<Sha, Blob>) -> Sha {
    // BTreeMaps keep names sorted, as REAPI requires.
    let directories = dir
        .dirs
        .into_iter()
        .map(|(name, sub)| re::DirectoryNode {
            name,
            digest: Some(encode(sub, blobs).proto()),
        })
        .collect();
    let files = dir
        .files
        .into_iter()
        .map(|(name, (sha, is_executable))| re::FileNode {
            name,
            digest: Some(sha.proto()),
            is_executable,
            node_properties: None,
        })
        .collect();
    let message = re::Directory {
        files,
        directories,
        symlinks: Vec::new(),
        node_properties: None,
    };
    let bytes = message.encode_to_vec();
    let sha = Sha::of_bytes(&bytes);
    blobs.insert(sha, Blob::Bytes(bytes));
    sha
}

/// A file's SHA-256; its BLAKE3 digest is learned on the way, so a result that names
/// the file (an output the store already holds) is not hashed again.
fn hash_file(remote: &Remote, path: &Path) -> Result<Sha> {
    let (blake3, sha) = Hashers::of_file(path)?;
    remote.learn(blake3, sha);
    Ok(sha)
}

/// Where a tool tree lies in the input root.
pub(crate) fn tool_dir(name: &str) -> PathBuf {
    Path::new(".kiln/tools").join(name)
}
