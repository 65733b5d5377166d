//! An action's input root as REAPI wants it: a Merkle tree of Directory messages whose
//! files are named by wire digest.
//!
//! Where a file's wire digest comes from, cheapest first (nothing is hashed twice):
//! 1. a staged input: its BLAKE3 digest is in the action key, and its wire digest in
//!    [`Remote`]'s table or the local store's index;
//! 2. a file hashed earlier in this build, by (device, inode, size, mtime) — the same
//!    tool or store blob linked into many sandboxes; several actions asking at once
//!    wait for one hash;
//! 3. a file outside the sandbox (kiln itself, a tool) whose recorded file state still
//!    holds: its BLAKE3 digest from the file-state table, then as in 1;
//! 4. hashing it, both ways in one pass (and remembering both).
//!
//! A tree tool (a toolchain) never joins an input root: actions that need one run here
//! (`kiln_engine::remote::runs_remotely`), and a test run gets an empty directory at
//! its place.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use kiln_cache::{Digest, Error, ErrorKind, Result};
use prost::Message;

use crate::cas::Blob;
use crate::{re, Hashers, Remote, WireDigest};

/// A directory being built: files and subdirectories by name.
#[derive(Default)]
pub(crate) struct Dir {
    files: BTreeMap<String, (WireDigest, bool)>,
    dirs: BTreeMap<String, Dir>,
}

type Cell<T> = Arc<OnceLock<std::result::Result<T, String>>>;

/// What a build remembers of files it hashed.
#[derive(Default)]
pub(crate) struct FileHashes {
    by_id: Mutex<HashMap<FileId, Cell<WireDigest>>>,
    /// Directories whose recorded file states were loaded from the local store.
    loaded: Mutex<HashSet<PathBuf>>,
}

/// (device, inode, size, mtime seconds, mtime nanoseconds).
type FileId = (u64, u64, u64, i64, i64);

impl FileHashes {
    /// The wire digest of the file at `path` (`meta` its metadata, links followed),
    /// hashed at most once per build however many actions ask.
    fn file(&self, remote: &Remote, path: &Path, meta: &fs::Metadata) -> Result<WireDigest> {
        let id = (
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
        );
        let cell = self.by_id.lock().unwrap().entry(id).or_default().clone();
        let got = cell.get_or_init(|| self.resolve(remote, path, meta).map_err(|e| e.to_string()));
        got.clone()
            .map_err(|e| Error::new(ErrorKind::Io, format!("hash {}: {e}", path.display())))
    }

    /// Steps 3 and 4 of the module comment.
    fn resolve(&self, remote: &Remote, path: &Path, meta: &fs::Metadata) -> Result<WireDigest> {
        let real = fs::canonicalize(path).map_err(|e| Error::io("resolve", path, e))?;
        let local = remote.local.get();
        if let Some(local) = local {
            self.load_states(local, real.parent().unwrap_or(Path::new("/")))?;
            let known = local.file_states().lookup(&real, meta);
            if let Some(wire) = known.and_then(|d| remote.wire_of(&d)) {
                return Ok(wire);
            }
        }
        let (blake3, wire) = Hashers::of_file(remote.digest_function(), &real)?;
        remote.learn(blake3, wire);
        if let Some(local) = local {
            local.file_states().remember(&real, meta, blake3);
        }
        Ok(wire)
    }

    fn load_states(&self, local: &kiln_cache::LocalStore, dir: &Path) -> Result<()> {
        if self.loaded.lock().unwrap().insert(dir.to_path_buf()) {
            local.load_file_states(dir)?;
        }
        Ok(())
    }
}

/// A tree of files and the blobs it needs in the CAS.
#[derive(Default)]
pub(crate) struct InputRoot {
    pub root: Dir,
    pub blobs: BTreeMap<WireDigest, Blob>,
}

impl InputRoot {
    /// Adds the file at `path` (following a symbolic link) as `rel`; `known`: its
    /// BLAKE3 digest if the caller knows it.
    pub fn add_file(
        &mut self,
        remote: &Remote,
        hashes: &FileHashes,
        rel: &str,
        path: &Path,
        known: Option<&Digest>,
    ) -> Result<()> {
        let meta = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        let wire = match known.and_then(|d| remote.wire_of(d)) {
            Some(wire) => wire,
            None => match known {
                Some(digest) => hash_staged(remote, path, digest)?,
                None => hashes.file(remote, path, &meta)?,
            },
        };
        let executable = meta.permissions().mode() & 0o111 != 0;
        self.blobs.insert(wire, Blob::File(path.to_path_buf()));
        self.insert(rel, (wire, executable));
        Ok(())
    }

    /// Adds bytes as the file `rel`.
    pub fn add_bytes(&mut self, remote: &Remote, rel: &str, bytes: Vec<u8>) {
        let wire = remote.digest_bytes(&bytes);
        self.blobs.insert(wire, Blob::Bytes(bytes));
        self.insert(rel, (wire, false));
    }

    /// Adds an empty directory `rel` (and its parents).
    pub fn add_dir(&mut self, rel: &str) {
        self.dir_mut(rel);
    }

    fn dir_mut(&mut self, rel: &str) -> &mut Dir {
        let mut dir = &mut self.root;
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir = dir.dirs.entry(part.to_string()).or_default();
        }
        dir
    }

    /// Adds every file below `dir` as `rel/...`, following symbolic links to files and
    /// leaving out those that lead nowhere; `known` gives BLAKE3 digests by
    /// root-relative path; `skip` names root-relative paths left out.
    pub fn add_tree(
        &mut self,
        remote: &Remote,
        hashes: &FileHashes,
        rel: &str,
        dir: &Path,
        known: &HashMap<String, Digest>,
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
                self.add_tree(remote, hashes, &child_rel, &path, known, skip)?;
            } else if meta.is_file() {
                let digest = known.get(&child_rel);
                self.add_file(remote, hashes, &child_rel, &path, digest)?;
            }
        }
        Ok(())
    }

    fn insert(&mut self, rel: &str, file: (WireDigest, bool)) {
        let (parent, name) = match rel.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", rel),
        };
        self.dir_mut(parent).files.insert(name.to_string(), file);
    }

    /// Encodes the tree: the root's digest; every Directory message joins the blobs.
    pub fn seal(&mut self, remote: &Remote) -> WireDigest {
        let root = std::mem::take(&mut self.root);
        encode(remote, root, &mut self.blobs)
    }
}

fn encode(remote: &Remote, dir: Dir, blobs: &mut BTreeMap<WireDigest, Blob>) -> WireDigest {
    // BTreeMaps keep names sorted, as REAPI requires.
    let directories = dir
        .dirs
        .into_iter()
        .map(|(name, sub)| re::DirectoryNode {
            name,
            digest: Some(encode(remote, sub, blobs).proto()),
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
    let sha = remote.digest_bytes(&bytes);
    blobs.insert(sha, Blob::Bytes(bytes));
    sha
}

/// The wire digest of a staged input whose BLAKE3 digest the key names but whose wire
/// digest kiln has not computed yet: both in one pass, the BLAKE3 one checked.
fn hash_staged(remote: &Remote, path: &Path, digest: &Digest) -> Result<WireDigest> {
    let (blake3, wire) = Hashers::of_file(remote.digest_function(), path)?;
    if blake3 != *digest {
        let why = format!(
            "staged input {} is not the content its key names ({})",
            path.display(),
            digest.short()
        );
        return Err(Error::new(ErrorKind::Corrupt, why));
    }
    remote.learn(blake3, wire);
    Ok(wire)
}

/// Where a tool tree lies in the input root.
pub(crate) fn tool_dir(name: &str) -> PathBuf {
    Path::new(".kiln/tools").join(name)
}
