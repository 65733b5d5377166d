//! Layers: a list of entries in, a deterministic `.tar.gz` and its two digests out.
//!
//! The tar is a pure function of the entries and `mtime`:
//! - entries are sorted by their path bytes, which also puts every directory before what
//!   it holds (a prefix sorts first);
//! - every missing parent directory is added as `0755 root:root`;
//! - modes, owners and the mtime come from the entries, never from the source files, whose
//!   content is the only thing read from disk;
//! - a path given twice, or a path whose parent is given as a file or symlink, is an error
//!   naming the path.
//!
//! The gzip stream is just as fixed: header mtime 0, no file name, OS byte 255 ("unknown",
//! as Go's compress/gzip and so ko write it), compression level 6 from an exactly pinned
//! flate2/miniz_oxide. The tar is hashed on its way into the compressor (the diff_id) and the
//! gzip on its way to disk (the digest), so the layer is read and written once.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};

use super::blob::{persist, temp_beside, HashWriter};
use super::error::{Error, ErrorKind, Result};
use super::path::{ancestors, tar_name};
use super::tar::{Header, Kind, TarWriter};

/// The gzip level of every layer; part of what decides a layer's digest.
pub const GZIP_LEVEL: u32 = 6;
/// The gzip header's OS byte: 255, "unknown".
const GZIP_OS_UNKNOWN: u8 = 255;

/// One file system entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    /// Absolute path inside the image, e.g. `/app/server`.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits, `0o7777` at most (setuid, setgid and sticky included).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file whose content is read from `source`.
    File {
        source: PathBuf,
    },
    /// A regular file with this content.
    Bytes(Vec<u8>),
    Dir,
    /// A symbolic link to this target (stored as given).
    Symlink(String),
}

impl LayerEntry {
    /// A root-owned directory.
    pub fn dir(path: &str, mode: u32) -> LayerEntry {
        LayerEntry::new(path, EntryKind::Dir, mode)
    }

    /// A root-owned file with in-memory content.
    pub fn bytes(path: &str, content: impl Into<Vec<u8>>, mode: u32) -> LayerEntry {
        LayerEntry::new(path, EntryKind::Bytes(content.into()), mode)
    }

    /// A root-owned file copied from `source`.
    pub fn file(path: &str, source: impl Into<PathBuf>, mode: u32) -> LayerEntry {
        let source = source.into();
        LayerEntry::new(path, EntryKind::File { source }, mode)
    }

    /// A root-owned entry of any kind.
    pub fn new(path: &str, kind: EntryKind, mode: u32) -> LayerEntry {
        LayerEntry {
            path: path.to_owned(),
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// The same entry owned by `uid:gid`.
    pub fn owned_by(self, uid: u32, gid: u32) -> LayerEntry {
        LayerEntry { uid, gid, ..self }
    }
}

/// The identity of a written layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// `sha256:<hex>` of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// `sha256:<hex>` of the gzip blob (the manifest's layer digest).
    pub digest: String,
    /// Size in bytes of the gzip blob.
    pub size: u64,
}

/// Writes `entries` as a deterministic gzip-compressed tar layer to `out_tar_gz`.
pub fn write_layer(entries: &[LayerEntry], mtime: u64, out_tar_gz: &Path) -> Result<LayerInfo> {
    let plan = plan(entries)?;
    let tmp = temp_beside(out_tar_gz)?;
    let file = tmp
        .reopen()
        .map_err(|err| Error::io("open", tmp.path(), err))?;
    let (diff_id, digest, size) =
        write_tar_gz(&plan, mtime, file).map_err(|err| err.in_layer(out_tar_gz))?;
    persist(tmp, out_tar_gz)?;
    Ok(LayerInfo {
        diff_id,
        digest,
        size,
    })
}

/// A layer's entries by tar name, parents included, in tar order.
type Plan<'a> = BTreeMap<&'a str, Planned<'a>>;

#[derive(Clone, Copy)]
struct Planned<'a> {
    kind: &'a EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
}

const IMPLICIT_DIR: Planned<'static> = Planned {
    kind: &EntryKind::Dir,
    mode: 0o755,
    uid: 0,
    gid: 0,
};

fn plan(entries: &[LayerEntry]) -> Result<Plan<'_>> {
    let mut plan = Plan::new();
    for entry in entries {
        let name = tar_name(&entry.path)?;
        check_entry(entry)?;
        let planned = Planned {
            kind: &entry.kind,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
        };
        if plan.insert(name, planned).is_some() {
            return Err(Error::new(
                ErrorKind::DuplicatePath,
                format!("add `{}` to a layer: the path is given twice", entry.path),
            ));
        }
    }
    add_parents(&mut plan, entries)?;
    Ok(plan)
}

fn check_entry(entry: &LayerEntry) -> Result<()> {
    if let EntryKind::Symlink(target) = &entry.kind {
        if target.is_empty() || target.contains('\0') {
            return Err(Error::input(format!(
                "add symlink `{}` to a layer: its target is empty or holds a NUL byte",
                entry.path
            )));
        }
    }
    if entry.mode > 0o7777 {
        return Err(Error::input(format!(
            "add `{}` to a layer: mode {:o} has bits beyond 7777",
            entry.path, entry.mode
        )));
    }
    Ok(())
}

fn add_parents<'a>(plan: &mut Plan<'a>, entries: &'a [LayerEntry]) -> Result<()> {
    for entry in entries {
        for parent in ancestors(&entry.path[1..]) {
            let planned = plan.entry(parent).or_insert(IMPLICIT_DIR);
            if *planned.kind != EntryKind::Dir {
                return Err(Error::new(
                    ErrorKind::NotADirectory,
                    format!(
                        "add `{}` to a layer: its parent `/{parent}` is not a directory",
                        entry.path
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Why writing a layer failed: the output or one source file.
enum WriteError {
    Output(std::io::Error),
    Source(PathBuf, std::io::Error),
}

impl WriteError {
    fn in_layer(self, out: &Path) -> Error {
        match self {
            WriteError::Output(err) => Error::io("write layer", out, err),
            WriteError::Source(source, err) => {
                Error::io(&format!("write layer {} from", out.display()), &source, err)
            }
        }
    }
}

impl From<std::io::Error> for WriteError {
    fn from(err: std::io::Error) -> WriteError {
        WriteError::Output(err)
    }
}

fn write_tar_gz(
    plan: &Plan,
    mtime: u64,
    file: File,
) -> std::result::Result<(String, String, u64), WriteError> {
    let compressed = HashWriter::new(BufWriter::new(file));
    let gzip = GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        .write(compressed, Compression::new(GZIP_LEVEL));
    let mut tar = TarWriter::new(HashWriter::new(gzip));
    for (name, planned) in plan {
        write_entry(&mut tar, name, planned, mtime)?;
    }
    let (gzip, diff_id, _) = tar.finish()?.finish();
    let (buffered, digest, size) = gzip.finish()?.finish();
    buffered.into_inner().map_err(|err| err.into_error())?;
    Ok((diff_id, digest, size))
}

fn write_entry<W: Write>(
    tar: &mut TarWriter<W>,
    name: &str,
    planned: &Planned,
    mtime: u64,
) -> std::result::Result<(), WriteError> {
    let mut header = Header {
        name,
        kind: Kind::Dir,
        mode: planned.mode,
        uid: planned.uid,
        gid: planned.gid,
        size: 0,
        mtime,
        link: "",
    };
    match planned.kind {
        EntryKind::Dir => tar.write_header(&header)?,
        EntryKind::Symlink(target) => {
            header.kind = Kind::Symlink;
            header.link = target;
            tar.write_header(&header)?;
        }
        EntryKind::Bytes(bytes) => {
            header.kind = Kind::File;
            tar.write_bytes(&header, bytes)?;
        }
        EntryKind::File { source } => write_file(tar, header, source)?,
    }
    Ok(())
}

fn write_file<W: Write>(
    tar: &mut TarWriter<W>,
    mut header: Header,
    source: &Path,
) -> std::result::Result<(), WriteError> {
    let source_error = |err| WriteError::Source(source.to_owned(), err);
    let mut file = File::open(source).map_err(source_error)?;
    let meta = file.metadata().map_err(source_error)?;
    if !meta.is_file() {
        let err = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
        return Err(source_error(err));
    }
    header.kind = Kind::File;
    header.size = meta.len();
    tar.write_header(&header)?;
    tar.write_data(&mut file, header.size).map_err(source_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_sorted() {
        let entries = [
            LayerEntry::bytes("/b/x", "1", 0o644),
            LayerEntry::bytes("/a-b", "2", 0o644),
            LayerEntry::dir("/a", 0o700),
            LayerEntry::bytes("/a/c/d", "3", 0o644),
        ];
        let plan = plan(&entries).unwrap();
        let names: Vec<_> = plan.keys().copied().collect();
        assert_eq!(names, ["a", "a-b", "a/c", "a/c/d", "b", "b/x"]);
        assert_eq!(
            plan["a"].mode, 0o700,
            "an explicit directory keeps its mode"
        );
        assert_eq!(plan["b"].mode, 0o755);
    }

    /// Pins the bytes of a small layer. If this fails, every image digest kiln produces has
    /// changed (a new tar rule, or a flate2/miniz_oxide version or backend switched by
    /// feature unification): change the expected values only on purpose.
    #[test]
    fn layer_bytes_are_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let entries = [
            LayerEntry::bytes("/app/server", "#!/bin/sh\necho hi\n", 0o755).owned_by(65532, 65532),
            LayerEntry::dir("/tmp", 0o1777),
        ];
        let info = write_layer(&entries, 1_714_564_800, &dir.path().join("l.tar.gz")).unwrap();
        let expected = LayerInfo {
            diff_id: "sha256:d649d1635f35201ef27104dce1e21521d589287e1c5381256c7d329ece96332d"
                .into(),
            digest: "sha256:8d60317e8f883eddd02decd55f1f316c233bdbf5a2499fec2c268272f1836827"
                .into(),
            size: 159,
        };
        assert_eq!(info, expected);
    }

    #[test]
    fn a_file_cannot_be_a_parent() {
        let entries = [
            LayerEntry::bytes("/a", "1", 0o644),
            LayerEntry::bytes("/a/b", "2", 0o644),
        ];
        let err = plan(&entries).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotADirectory);
        assert!(err.to_string().contains("`/a/b`"), "{err}");
    }
}
