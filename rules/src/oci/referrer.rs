//! SBOMs attached to images as OCI artifacts (image-spec 1.1 "referrers").
//!
//! For each platform's image manifest, an artifact manifest: `artifactType`
//! `application/spdx+json`, the empty config (`{}`, `application/vnd.oci.empty.v1+json`),
//! one layer holding the SPDX document, and `subject` naming the image manifest. Each is
//! listed in the layout's `index.json` beside the image (without a ref name, so tools
//! that open the image by its tag see only the image), and pushed by digest after it, so
//! a registry with the referrers API lists it under the image. No time or other noise in
//! it: the same image and document give the same digest.

use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::error::{Error, ErrorKind, Result};
use super::spec::{Descriptor, Platform, MEDIA_TYPE_MANIFEST};

pub const ARTIFACT_TYPE_SPDX: &str = "application/spdx+json";
const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Adds an SPDX artifact for each `(platform, document)` to the layout at `dir`, whose
/// image manifests are `images`.
pub fn attach_sboms(dir: &Path, images: &[Descriptor], sboms: &[(String, &Path)]) -> Result<()> {
    let blobs = dir.join("blobs");
    let index_path = dir.join("index.json");
    let mut index: Value = serde_json::from_slice(&read(&index_path)?)
        .map_err(|e| err(format!("read {}: {e}", index_path.display())))?;
    for (platform, document) in sboms {
        let wanted = Platform::parse(platform)
            .ok_or_else(|| err(format!("`{platform}` is not a platform")))?;
        let subject = images
            .iter()
            .find(|d| d.platform.as_ref() == Some(&wanted))
            .ok_or_else(|| err(format!("the image has no {platform} manifest for its SBOM")))?;
        let layer = put_blob(&blobs, &read(document)?)?;
        let config = put_blob(&blobs, b"{}")?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "artifactType": ARTIFACT_TYPE_SPDX,
            "config": { "mediaType": MEDIA_TYPE_EMPTY, "digest": config.0, "size": config.1 },
            "layers": [{ "mediaType": ARTIFACT_TYPE_SPDX, "digest": layer.0, "size": layer.1 }],
            "subject": { "mediaType": subject.media_type, "digest": subject.digest, "size": subject.size },
        });
        let (digest, size) = put_blob(&blobs, manifest.to_string().as_bytes())?;
        let entry = json!({
            "mediaType": MEDIA_TYPE_MANIFEST,
            "digest": digest,
            "size": size,
            "artifactType": ARTIFACT_TYPE_SPDX,
        });
        index["manifests"]
            .as_array_mut()
            .ok_or_else(|| err(format!("{} has no manifests", index_path.display())))?
            .push(entry);
    }
    let mut text = serde_json::to_vec(&index).expect("JSON values serialize");
    text.push(b'\n');
    super::blob::write_atomic(&index_path, &text)
}

fn put_blob(blobs: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = blobs.join("sha256").join(&hex);
    if !path.exists() {
        std::fs::write(&path, bytes).map_err(|e| err(format!("write {}: {e}", path.display())))?;
    }
    Ok((format!("sha256:{hex}"), bytes.len() as u64))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| err(format!("read {}: {e}", path.display())))
}

fn err(message: String) -> Error {
    Error::new(ErrorKind::Io, message)
}
