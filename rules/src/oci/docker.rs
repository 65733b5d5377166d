//! `docker load`-able tarballs of one platform's image from a layout.
//!
//! The archive has the shape `docker save` writes since Docker 25, which both the classic
//! loader and the containerd image store read, and which is also an OCI layout archive:
//! - `manifest.json`: `[{"Config": ..., "RepoTags": [...], "Layers": [...]}]`, paths into
//!   `blobs/sha256/`;
//! - `blobs/sha256/<hex>`: the manifest, config and layer blobs as they are in the layout
//!   (layers stay gzip-compressed; loaders detect compression);
//! - `index.json` with the one manifest, and `oci-layout`.
//!
//! Deterministic like the layers: entries in lexical order, mtime 0, root-owned, files 0644,
//! directories 0755, written by the same tar writer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::blob::{blob_path, digest_hex, persist, temp_beside};
use super::error::{Error, Result};
use super::image::to_json;
use super::layout::find_manifest;
use super::spec::{Descriptor, Index, Platform, ANNOTATION_REF_NAME, MEDIA_TYPE_INDEX};
use super::tar::{Header, Kind, TarWriter};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// The annotation containerd reads an image's full name from.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest<'a> {
    config: String,
    repo_tags: &'a [String],
    layers: Vec<String>,
}

/// Writes a `docker load`-able tarball of the image for `platform` found in the layout at
/// `layout_dir`, tagged `repo_tags` (e.g. `registry.example/app:v1`; may be empty).
pub fn write_docker_archive(
    layout_dir: &Path,
    platform: &Platform,
    repo_tags: &[String],
    out_tar: &Path,
) -> Result<()> {
    check_tags(repo_tags)?;
    let (descriptor, manifest) = find_manifest(layout_dir, platform)?;
    let docker_manifest = [DockerManifest {
        config: archive_path(&manifest.config.digest)?,
        repo_tags,
        layers: manifest
            .layers
            .iter()
            .map(|layer| archive_path(&layer.digest))
            .collect::<Result<_>>()?,
    }];
    let mut blobs = BTreeMap::new();
    for blob in [&descriptor, &manifest.config]
        .into_iter()
        .chain(&manifest.layers)
    {
        blobs.insert(digest_hex(&blob.digest)?.to_owned(), blob.clone());
    }
    let documents = Documents {
        index: to_json(&single_index(descriptor, repo_tags)),
        manifest: to_json(&docker_manifest),
    };
    let tmp = temp_beside(out_tar)?;
    let file = tmp
        .reopen()
        .map_err(|err| Error::io("open", tmp.path(), err))?;
    write_archive(file, &layout_dir.join("blobs"), &blobs, &documents)
        .map_err(|err| err.in_archive(out_tar))?;
    persist(tmp, out_tar)
}

struct Documents {
    index: Vec<u8>,
    manifest: Vec<u8>,
}

fn archive_path(digest: &str) -> Result<String> {
    Ok(format!("blobs/sha256/{}", digest_hex(digest)?))
}

fn check_tags(tags: &[String]) -> Result<()> {
    for tag in tags {
        if tag.is_empty() || tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::input(format!(
                "tag the archive `{tag}`: not an image name"
            )));
        }
    }
    Ok(())
}

/// The archive's `index.json`: the one manifest, named like `docker save` names it.
fn single_index(mut descriptor: Descriptor, repo_tags: &[String]) -> Index {
    descriptor.annotations.clear();
    if let Some(name) = repo_tags.first() {
        let tag = tag_of(name);
        descriptor
            .annotations
            .insert(ANNOTATION_CONTAINERD_NAME.to_owned(), name.clone());
        descriptor
            .annotations
            .insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
    }
    Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX.to_owned(),
        manifests: vec![descriptor],
    }
}

/// `v1` of `registry:5000/app:v1`; `latest` when the name has no tag.
fn tag_of(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':').map_or("latest", |(_, tag)| tag)
}

enum ArchiveError {
    Output(std::io::Error),
    Blob(PathBuf, String),
}

impl ArchiveError {
    fn in_archive(self, out: &Path) -> Error {
        match self {
            ArchiveError::Output(err) => Error::io("write docker archive", out, err),
            ArchiveError::Blob(path, why) => Error::corrupt(format!(
                "write docker archive {} from blob {}: {why}",
                out.display(),
                path.display()
            )),
        }
    }
}

impl From<std::io::Error> for ArchiveError {
    fn from(err: std::io::Error) -> ArchiveError {
        ArchiveError::Output(err)
    }
}

fn write_archive(
    file: File,
    blobs_dir: &Path,
    blobs: &BTreeMap<String, Descriptor>,
    documents: &Documents,
) -> std::result::Result<(), ArchiveError> {
    let mut tar = TarWriter::new(BufWriter::new(file));
    tar.write_header(&header("blobs", Kind::Dir, 0o755))?;
    tar.write_header(&header("blobs/sha256", Kind::Dir, 0o755))?;
    for (hex, descriptor) in blobs {
        let name = format!("blobs/sha256/{hex}");
        write_blob_entry(&mut tar, &name, blobs_dir, descriptor)?;
    }
    tar.write_bytes(&header("index.json", Kind::File, 0o644), &documents.index)?;
    tar.write_bytes(
        &header("manifest.json", Kind::File, 0o644),
        &documents.manifest,
    )?;
    tar.write_bytes(&header("oci-layout", Kind::File, 0o644), OCI_LAYOUT)?;
    tar.finish()?.flush()?;
    Ok(())
}

fn write_blob_entry<W: Write>(
    tar: &mut TarWriter<W>,
    name: &str,
    blobs_dir: &Path,
    descriptor: &Descriptor,
) -> std::result::Result<(), ArchiveError> {
    let path = blob_path(blobs_dir, &descriptor.digest)
        .map_err(|err| ArchiveError::Blob(blobs_dir.to_owned(), err.to_string()))?;
    let blob_error = |why: String| ArchiveError::Blob(path.clone(), why);
    let mut file = File::open(&path).map_err(|err| blob_error(err.to_string()))?;
    let size = file
        .metadata()
        .map_err(|err| blob_error(err.to_string()))?
        .len();
    if size != descriptor.size {
        let why = format!(
            "it holds {size} bytes, its descriptor says {}",
            descriptor.size
        );
        return Err(blob_error(why));
    }
    let entry = Header {
        size,
        ..header(name, Kind::File, 0o644)
    };
    tar.write_header(&entry)?;
    tar.write_data(&mut file, size)
        .map_err(|err| blob_error(err.to_string()))
}

fn header(name: &str, kind: Kind, mode: u32) -> Header<'_> {
    Header {
        name,
        kind,
        mode,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 0,
        link: "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_tag_of_a_name() {
        assert_eq!(tag_of("registry:5000/app:v1"), "v1");
        assert_eq!(tag_of("registry:5000/app"), "latest");
        assert_eq!(tag_of("app:dev"), "dev");
    }
}
