//! OCI image layout directories: writing one, and finding an image in one.
//!
//! A layout is `oci-layout` (`{"imageLayoutVersion":"1.0.0"}`), `index.json` and
//! `blobs/sha256/<hex>`. kiln's `index.json` has a single entry: the image (usually an image
//! index over platforms) annotated with `org.opencontainers.image.ref.name`, which is how
//! `skopeo ... oci:<dir>:<ref>` and `umoci --image <dir>:<ref>` find it.
//!
//! Blobs come from files (hashed while copied, so their names are right by construction) or
//! from other blobs directories (each copy verified against its name). Before `index.json`
//! is written, every blob the image reaches is checked to be present: a layout that names a
//! missing blob is never produced. Blobs already in place are not copied again; unrelated
//! files already in `dir` are left alone.

use std::fs;
use std::path::{Path, PathBuf};

use super::blob::{blob_path, copy_blob, digest_hex, read_blob, write_atomic};
use super::error::{Error, ErrorKind, Result};
use super::image::to_json;
use super::spec::MEDIA_TYPE_INDEX;
use super::spec::{ConfigPlatform, Descriptor, Index, Manifest, Platform, ANNOTATION_REF_NAME};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// How deep indexes may nest before a layout is considered malformed.
const MAX_DEPTH: usize = 8;

/// Writes an OCI image layout in `dir` whose `index.json` points at `index` under the
/// reference `ref_name`. `blobs` are blob files or blobs directories (`sha256/<hex>`).
pub fn write_layout(
    dir: &Path,
    index: &Descriptor,
    ref_name: &str,
    blobs: &[PathBuf],
) -> Result<()> {
    check_ref_name(ref_name)?;
    let blobs_dir = dir.join("blobs");
    for source in blobs {
        gather(source, &blobs_dir)?;
    }
    visit(&blobs_dir, index, 0, &mut |descriptor| {
        check_present(&blobs_dir, descriptor)
    })?;
    let mut entry = index.clone();
    entry
        .annotations
        .insert(ANNOTATION_REF_NAME.to_owned(), ref_name.to_owned());
    let top = Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX.to_owned(),
        manifests: vec![entry],
    };
    write_atomic(&dir.join("oci-layout"), OCI_LAYOUT)?;
    write_atomic(&dir.join("index.json"), &to_json(&top))
}

/// The image manifest in the layout at `dir` for `platform`: the first one found, walking
/// `index.json` and the indexes it points at in order.
pub fn find_manifest(dir: &Path, platform: &Platform) -> Result<(Descriptor, Manifest)> {
    let blobs_dir = dir.join("blobs");
    for entry in read_top_index(dir)?.manifests {
        if let Some(found) = find_in(&blobs_dir, &entry, platform, 0)? {
            return Ok(found);
        }
    }
    Err(Error::new(
        ErrorKind::PlatformNotFound,
        format!("find an image for {platform} in {}", dir.display()),
    ))
}

fn find_in(
    blobs_dir: &Path,
    descriptor: &Descriptor,
    platform: &Platform,
    depth: usize,
) -> Result<Option<(Descriptor, Manifest)>> {
    check_depth(descriptor, depth)?;
    if descriptor.is_index() {
        let index: Index = read_json(blobs_dir, &descriptor.digest)?;
        for child in &index.manifests {
            if let Some(found) = find_in(blobs_dir, child, platform, depth + 1)? {
                return Ok(Some(found));
            }
        }
        return Ok(None);
    }
    if !descriptor.is_manifest() {
        return Ok(None);
    }
    let manifest: Manifest = read_json(blobs_dir, &descriptor.digest)?;
    let actual = match &descriptor.platform {
        Some(platform) => platform.clone(),
        None => config_platform(blobs_dir, &manifest)?,
    };
    Ok(actual
        .serves(platform)
        .then(|| (descriptor.clone(), manifest)))
}

fn config_platform(blobs_dir: &Path, manifest: &Manifest) -> Result<Platform> {
    let config: ConfigPlatform = read_json(blobs_dir, &manifest.config.digest)?;
    Ok(Platform {
        architecture: config.architecture,
        os: config.os,
        variant: config.variant,
    })
}

fn read_top_index(dir: &Path) -> Result<Index> {
    let path = dir.join("index.json");
    let bytes = fs::read(&path).map_err(|err| Error::io("read", &path, err))?;
    serde_json::from_slice(&bytes)
        .map_err(|err| Error::corrupt(format!("read {}: {err}", path.display())))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    blobs_dir: &Path,
    digest: &str,
) -> Result<T> {
    let bytes = read_blob(blobs_dir, digest)?;
    serde_json::from_slice(&bytes)
        .map_err(|err| Error::corrupt(format!("read blob {digest}: {err}")))
}

/// Calls `each` on `descriptor` and on every descriptor it reaches.
pub(crate) fn visit(
    blobs_dir: &Path,
    descriptor: &Descriptor,
    depth: usize,
    each: &mut dyn FnMut(&Descriptor) -> Result<()>,
) -> Result<()> {
    check_depth(descriptor, depth)?;
    each(descriptor)?;
    if descriptor.is_index() {
        let index: Index = read_json(blobs_dir, &descriptor.digest)?;
        for child in &index.manifests {
            visit(blobs_dir, child, depth + 1, each)?;
        }
    } else if descriptor.is_manifest() {
        let manifest: Manifest = read_json(blobs_dir, &descriptor.digest)?;
        each(&manifest.config)?;
        for layer in &manifest.layers {
            each(layer)?;
        }
    }
    Ok(())
}

fn check_depth(descriptor: &Descriptor, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::corrupt(format!(
            "read {}: indexes nest deeper than {MAX_DEPTH} levels",
            descriptor.digest
        )));
    }
    Ok(())
}

fn check_present(blobs_dir: &Path, descriptor: &Descriptor) -> Result<()> {
    let path = blob_path(blobs_dir, &descriptor.digest)?;
    match fs::metadata(&path) {
        Ok(meta) if meta.len() == descriptor.size => Ok(()),
        Ok(meta) => Err(Error::corrupt(format!(
            "write the layout: blob {} holds {} bytes, its descriptor says {}",
            descriptor.digest,
            meta.len(),
            descriptor.size
        ))),
        Err(err) => Err(Error::corrupt(format!(
            "write the layout: blob {} ({}) is not among the given blobs: {err}",
            descriptor.digest, descriptor.media_type
        ))),
    }
}

/// Copies one blob file, or every blob of a blobs directory, into `blobs_dir`.
fn gather(source: &Path, blobs_dir: &Path) -> Result<()> {
    let meta = fs::metadata(source).map_err(|err| Error::io("read blobs from", source, err))?;
    if !meta.is_dir() {
        copy_blob(source, blobs_dir, None)?;
        return Ok(());
    }
    if same_dir(source, blobs_dir) {
        return Ok(());
    }
    let from = source.join("sha256");
    let listing = fs::read_dir(&from).map_err(|err| Error::io("list blobs in", &from, err))?;
    for item in listing {
        let item = item.map_err(|err| Error::io("list blobs in", &from, err))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        gather_one(&item.path(), &format!("sha256:{name}"), blobs_dir)?;
    }
    Ok(())
}

fn gather_one(path: &Path, digest: &str, blobs_dir: &Path) -> Result<()> {
    digest_hex(digest)?;
    if !blob_path(blobs_dir, digest)?.exists() {
        copy_blob(path, blobs_dir, Some(digest))?;
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A reference name per the OCI layout's grammar: components of alphanumerics joined by
/// `-._:@+`, separated by `/`.
fn check_ref_name(name: &str) -> Result<()> {
    let component_ok = |c: &str| {
        let starts_ends = |ch: Option<char>| ch.is_some_and(|ch| ch.is_ascii_alphanumeric());
        starts_ends(c.chars().next())
            && starts_ends(c.chars().last())
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-._:@+".contains(ch))
    };
    if name.split('/').all(component_ok) {
        return Ok(());
    }
    Err(Error::input(format!(
        "name the image `{name}`: a reference is alphanumerics joined by -._:@+ and /"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_reference_names() {
        for good in ["latest", "v1.2.3", "kiln/app:v1", "linux-amd64"] {
            assert!(check_ref_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a b", "x/", "tag!"] {
            assert!(check_ref_name(bad).is_err(), "{bad}");
        }
    }
}
