//! Pulling an image by digest into an OCI layout, every byte checked.
//!
//! `GET /v2/<name>/manifests/<digest>` (accepting OCI and Docker manifests and
//! indexes); the bytes must hash to the pinned digest. An index is narrowed to the
//! wanted platforms (all of them when none is asked for; a missing one is an error
//! naming the platforms there are); each platform's manifest, config and layers are
//! fetched by digest and written to `blobs/sha256/` only once their sha256 and size
//! match the descriptor. `index.json` then names each pulled platform manifest, with
//! its platform, tagged `os_arch` (`oci:layout:linux_amd64` for skopeo); the pinned
//! index blob is kept too.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};
use ureq::http::Method;

use super::client::{header, Failure, Request};
use super::{expect, Repository};
use crate::oci::{Descriptor, Index, Manifest, Platform, ANNOTATION_REF_NAME, MEDIA_TYPE_INDEX};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

impl Repository {
    /// The digest the registry gives for `tag` (for the message that refuses a tag).
    pub fn resolve_tag(&self, tag: &str) -> Result<String, String> {
        let request = Request::new(Method::HEAD, self.url(&format!("manifests/{tag}")))
            .header("accept", ACCEPT);
        let resp = self.client().retrying(|| self.client().send(&request))?;
        let status = resp.status().as_u16();
        header(&resp, "docker-content-digest")
            .filter(|_| status == 200)
            .ok_or_else(|| format!("find tag {tag}: the registry answered {status}"))
    }

    /// Pulls the image `digest` for `platforms` (empty: every platform) into a new
    /// layout at `layout`; returns the platforms pulled.
    pub fn pull(
        &self,
        digest: &str,
        platforms: &[Platform],
        layout: &Path,
    ) -> Result<Vec<Platform>, String> {
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| format!("create {}: {e}", blobs.display()))?;
        let chosen = self.images(&blobs, digest, platforms)?;
        let mut entries = Vec::new();
        for descriptor in chosen {
            let (entry, platform) = self.pull_image(&blobs, descriptor)?;
            if !platforms.is_empty() && !platforms.iter().any(|w| platform.serves(w)) {
                return Err(format!(
                    "{} is an image for {platform} only; {} asked for",
                    self.reference(digest),
                    list(platforms)
                ));
            }
            entries.push(entry);
        }
        write_index(layout, &entries)?;
        Ok(entries.into_iter().filter_map(|e| e.platform).collect())
    }

    /// The pinned manifest or index, kept; the image manifests to pull.
    fn images(
        &self,
        blobs: &Path,
        digest: &str,
        platforms: &[Platform],
    ) -> Result<Vec<Descriptor>, String> {
        let (media_type, bytes) = self.manifest(digest)?;
        write_blob(blobs, digest, &bytes)?;
        if is_index(&media_type, &bytes) {
            let index: Index = parse(&bytes, digest)?;
            return choose(&index, platforms, &self.reference(digest));
        }
        Ok(vec![Descriptor {
            media_type,
            digest: digest.to_string(),
            size: bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        }])
    }

    /// One image: its manifest, config and layers; returns its `index.json` entry, with
    /// its platform (from the config when the index did not say) and tagged `os_arch`.
    fn pull_image(
        &self,
        blobs: &Path,
        descriptor: Descriptor,
    ) -> Result<(Descriptor, Platform), String> {
        let (media_type, bytes) = self.manifest(&descriptor.digest)?;
        write_blob(blobs, &descriptor.digest, &bytes)?;
        let manifest: Manifest = parse(&bytes, &descriptor.digest)?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            self.client().retrying(|| self.fetch_blob(blobs, blob))?;
        }
        let platform = match &descriptor.platform {
            Some(p) => p.clone(),
            None => config_platform(blobs, &manifest)?,
        };
        let tag = platform.to_string().replace('/', "_");
        let entry = Descriptor {
            media_type,
            platform: Some(platform.clone()),
            annotations: [(ANNOTATION_REF_NAME.to_string(), tag)].into(),
            ..descriptor
        };
        Ok((entry, platform))
    }

    fn reference(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.client().host, self.name)
    }

    /// A manifest or index by digest, checked against it: (media type, bytes).
    fn manifest(&self, digest: &str) -> Result<(String, Vec<u8>), String> {
        let what = format!("pull {}", self.reference(digest));
        let request = Request::new(Method::GET, self.url(&format!("manifests/{digest}")))
            .header("accept", ACCEPT);
        self.client().retrying(|| {
            let mut resp = self.client().send(&request)?;
            if resp.status().as_u16() == 404 {
                return Err(Failure::fatal(format!(
                    "{what}: the registry has no manifest with that digest; check the digest pinned in `image`"
                )));
            }
            let media_type = header(&resp, "content-type").unwrap_or_default();
            if resp.status().as_u16() != 200 {
                return expect(resp, &[200], &what).map(|_| (String::new(), Vec::new()));
            }
            let bytes = resp
                .body_mut()
                .with_config()
                .limit(4 << 20)
                .read_to_vec()
                .map_err(|e| Failure { message: format!("{what}: {e}"), retry: true })?;
            let actual = sha256(&bytes);
            if actual != digest {
                return Err(Failure::fatal(format!(
                    "{what}: the registry served a manifest whose digest is {actual}, not the pinned {digest}"
                )));
            }
            Ok((media_type, bytes))
        })
    }

    /// Downloads one blob into `blobs`, keeping it only if its digest and size match.
    fn fetch_blob(&self, blobs: &Path, blob: &Descriptor) -> Result<(), Failure> {
        let hex = hex_of(&blob.digest).map_err(Failure::fatal)?;
        let dest = blobs.join(hex);
        if dest.is_file() {
            return Ok(());
        }
        let what = format!("pull blob {} of {}", blob.digest, self.name);
        let request = Request::new(Method::GET, self.url(&format!("blobs/{}", blob.digest)));
        let mut resp = self.client().send(&request)?;
        if resp.status().as_u16() != 200 {
            return expect(resp, &[200], &what);
        }
        let tmp = blobs.join(format!(".{hex}.partial"));
        let mut file = std::fs::File::create(&tmp)
            .map_err(|e| Failure::fatal(format!("create {}: {e}", tmp.display())))?;
        // One byte more than the descriptor says is enough to refuse it: a registry
        // serving without end does not fill the disk.
        let mut reader = resp
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .reader()
            .take(blob.size.saturating_add(1));
        let (mut hasher, mut size, mut buf) = (Sha256::new(), 0u64, vec![0; 1 << 16]);
        loop {
            let n = reader.read(&mut buf).map_err(|e| Failure {
                message: format!("{what}: {e}"),
                retry: true,
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            file.write_all(&buf[..n])
                .map_err(|e| Failure::fatal(format!("write {}: {e}", tmp.display())))?;
        }
        if size > blob.size {
            drop(file);
            let _ = std::fs::remove_file(&tmp);
            return Err(Failure::fatal(format!(
                "{what}: the registry served more than the {} bytes the manifest says",
                blob.size
            )));
        }
        let actual = format!("sha256:{:x}", hasher.finalize());
        if actual != blob.digest || size != blob.size {
            let _ = std::fs::remove_file(&tmp);
            return Err(Failure::fatal(format!(
                "{what}: the registry served {size} bytes with digest {actual}; the manifest says {} bytes, {}",
                blob.size, blob.digest
            )));
        }
        std::fs::rename(&tmp, &dest)
            .map_err(|e| Failure::fatal(format!("write {}: {e}", dest.display())))
    }
}

/// `oci-layout` and an `index.json` naming `entries`.
fn write_index(layout: &Path, entries: &[Descriptor]) -> Result<(), String> {
    let index = Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX.into(),
        manifests: entries.to_vec(),
    };
    let write = |name: &str, bytes: Vec<u8>| {
        std::fs::write(layout.join(name), bytes)
            .map_err(|e| format!("write {}: {e}", layout.join(name).display()))
    };
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())?;
    write(
        "index.json",
        serde_json::to_vec(&index).expect("plain data"),
    )
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    if media_type.contains("index") || media_type.contains("manifest.list") {
        return true;
    }
    // Some registries answer a generic type: an index has `manifests`, not `layers`.
    serde_json::from_slice::<serde_json::Value>(bytes)
        .is_ok_and(|v| v.get("manifests").is_some() && v.get("layers").is_none())
}

/// The entries of `index` serving the wanted platforms (every image entry if none).
fn choose(index: &Index, wanted: &[Platform], reference: &str) -> Result<Vec<Descriptor>, String> {
    let images = index
        .manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| p.os != "unknown"));
    if wanted.is_empty() {
        return Ok(images.cloned().collect());
    }
    let available: Vec<Platform> = images.clone().filter_map(|d| d.platform.clone()).collect();
    wanted
        .iter()
        .map(|w| {
            images
                .clone()
                .find(|d| d.platform.as_ref().is_some_and(|p| p.serves(w)))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "{reference} has no image for {w}; it has {}",
                        list(&available)
                    )
                })
        })
        .collect()
}

fn list(platforms: &[Platform]) -> String {
    let names: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
    names.join(", ")
}

fn config_platform(blobs: &Path, manifest: &Manifest) -> Result<Platform, String> {
    let path = blobs.join(hex_of(&manifest.config.digest)?);
    let bytes = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("read {}: {e}", path.display()))?;
    let field = |k: &str| v[k].as_str().map(String::from);
    Ok(Platform {
        os: field("os").unwrap_or_default(),
        architecture: field("architecture").unwrap_or_default(),
        variant: field("variant"),
    })
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], digest: &str) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("read manifest {digest}: {e}"))
}

fn write_blob(blobs: &Path, digest: &str, bytes: &[u8]) -> Result<(), String> {
    let path = blobs.join(hex_of(digest)?);
    std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))
}

/// The hex of a `sha256:` digest, checked (it becomes a file name).
pub fn hex_of(digest: &str) -> Result<&str, String> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or_else(|| {
            format!("`{digest}` is not a sha256 digest (sha256: and 64 lowercase hex digits)")
        })
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}
