//! Pushing an OCI layout to a registry with the OCI Distribution API (no Docker daemon).
//!
//! For each blob (layers and configs): `HEAD /v2/<name>/blobs/<digest>`, skipped if the
//! registry answers 200; else `POST /v2/<name>/blobs/uploads/` (202 + `Location`) and a
//! monolithic `PUT <location>?digest=<digest>` (201). Then each image manifest is `PUT` by
//! digest, and the image index by digest and under every tag, each with its media type.
//! Children go before their parents, so a registry never sees a manifest naming a blob
//! it does not have.
//!
//! `repository` is `host[:port]/name`; the scheme is `http` for loopback hosts
//! (`localhost`, `127.0.0.1`, `[::1]`), as Docker treats them, else `https`; an explicit
//! `http://` or `https://` prefix wins. No authentication yet.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::Agent;

use crate::oci::{
    Descriptor, Index, Manifest, ANNOTATION_REF_NAME, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};

/// A registry repository to push to.
pub struct Repository {
    base: String,
    name: String,
    agent: Agent,
}

impl Repository {
    /// Parses `host[:port]/name` (optionally with a scheme).
    pub fn parse(text: &str) -> Result<Repository, String> {
        let (scheme, rest) = match text.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (Some(s), rest),
            Some(_) => {
                return Err(format!(
                    "push to `{text}`: only http:// and https:// are supported"
                ))
            }
            None => (None, text),
        };
        let Some((host, name)) = rest
            .split_once('/')
            .filter(|(h, n)| !h.is_empty() && valid_name(n))
        else {
            return Err(format!(
                "push to `{text}`: a repository reads host[:port]/name, with a lowercase name"
            ));
        };
        let loopback = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .any(|l| host == *l || host.starts_with(&format!("{l}:")));
        let scheme = scheme.unwrap_or(if loopback { "http" } else { "https" });
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(600)))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Repository {
            base: format!("{scheme}://{host}"),
            name: name.to_string(),
            agent,
        })
    }

    /// Pushes the image `index.json` of the layout at `layout` names, tagged `tags`;
    /// returns its digest.
    pub fn push_layout(&self, layout: &Path, tags: &[String]) -> Result<String, String> {
        let top: Index = read_json(&layout.join("index.json"))?;
        // The image is the entry with a ref name (or the only one); the others are
        // artifacts referring to it (SBOMs), pushed by digest after it.
        let named = |d: &&Descriptor| d.annotations.contains_key(ANNOTATION_REF_NAME);
        let images: Vec<&Descriptor> = match top.manifests.iter().filter(named).count() {
            0 => top.manifests.iter().collect(),
            _ => top.manifests.iter().filter(named).collect(),
        };
        let [image] = images.as_slice() else {
            return Err(format!(
                "push {}: its index.json must name one image",
                layout.display()
            ));
        };
        let blobs = layout.join("blobs");
        self.push_tree(&blobs, image)?;
        for tag in tags {
            self.put_manifest(&blobs, image, tag)?;
        }
        for artifact in top.manifests.iter().filter(|d| d.digest != image.digest) {
            self.push_tree(&blobs, artifact)?;
        }
        Ok(image.digest.clone())
    }

    fn push_tree(&self, blobs: &Path, descriptor: &Descriptor) -> Result<(), String> {
        if descriptor.media_type == MEDIA_TYPE_INDEX {
            let index: Index = read_json(&blob_path(blobs, &descriptor.digest))?;
            for child in &index.manifests {
                self.push_tree(blobs, child)?;
            }
        } else if descriptor.media_type == MEDIA_TYPE_MANIFEST {
            let manifest: Manifest = read_json(&blob_path(blobs, &descriptor.digest))?;
            for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                self.push_blob(blobs, blob)?;
            }
        } else {
            return Err(format!(
                "push {}: unknown media type {}",
                descriptor.digest, descriptor.media_type
            ));
        }
        self.put_manifest(blobs, descriptor, &descriptor.digest)
    }

    fn push_blob(&self, blobs: &Path, blob: &Descriptor) -> Result<(), String> {
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.name, blob.digest);
        let resp = self
            .agent
            .head(&url)
            .call()
            .map_err(|e| format!("check {url}: {e}"))?;
        if resp.status().as_u16() == 200 {
            return Ok(());
        }
        let location = self.start_upload()?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={}", blob.digest);
        let path = blob_path(blobs, &blob.digest);
        let file = File::open(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let resp = self
            .agent
            .put(&url)
            .header("content-type", "application/octet-stream")
            .header("content-length", blob.size.to_string())
            .send(file)
            .map_err(|e| format!("upload {}: {e}", blob.digest))?;
        expect(
            resp,
            &[201, 204],
            &format!("upload blob {} to {url}", blob.digest),
        )
    }

    fn start_upload(&self) -> Result<String, String> {
        let url = format!("{}/v2/{}/blobs/uploads/", self.base, self.name);
        let resp = self
            .agent
            .post(&url)
            .send_empty()
            .map_err(|e| format!("start an upload at {url}: {e}"))?;
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|l| l.to_str().ok());
        match (status, location) {
            (202, Some(l)) if l.starts_with("http://") || l.starts_with("https://") => {
                Ok(l.to_string())
            }
            (202, Some(l)) => Ok(format!("{}{l}", self.base)),
            _ => Err(format!(
                "start an upload at {url}: the registry answered {status}"
            )),
        }
    }

    fn put_manifest(
        &self,
        blobs: &Path,
        descriptor: &Descriptor,
        reference: &str,
    ) -> Result<(), String> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.name);
        let bytes = std::fs::read(blob_path(blobs, &descriptor.digest))
            .map_err(|e| format!("read manifest {}: {e}", descriptor.digest))?;
        let resp = self
            .agent
            .put(&url)
            .header("content-type", &descriptor.media_type)
            .send(&bytes[..])
            .map_err(|e| format!("put {url}: {e}"))?;
        expect(
            resp,
            &[200, 201],
            &format!("put manifest {} at {url}", descriptor.digest),
        )
    }
}

fn expect(
    mut resp: ureq::http::Response<ureq::Body>,
    ok: &[u16],
    what: &str,
) -> Result<(), String> {
    let status = resp.status().as_u16();
    if ok.contains(&status) {
        return Ok(());
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    Err(format!(
        "{what}: the registry answered {status} {}",
        body.trim()
    ))
}

/// Repository names per the distribution spec: lowercase path components.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        })
}

fn blob_path(blobs: &Path, digest: &str) -> PathBuf {
    blobs
        .join("sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("read {}: {e}", path.display()))
}

/// Moving tags (a release's `stable`): the manifest a digest names, put under a tag.
impl Repository {
    /// Points `tag` at the manifest or index `digest` names in this repository, after
    /// checking the bytes the registry gives are that digest's.
    pub fn retag(&self, digest: &str, tag: &str) -> Result<(), String> {
        let url = format!("{}/v2/{}/manifests/{digest}", self.base, self.name);
        let mut resp = self
            .agent
            .get(&url)
            .header(
                "accept",
                format!("{MEDIA_TYPE_INDEX}, {MEDIA_TYPE_MANIFEST}"),
            )
            .call()
            .map_err(|e| format!("get {url}: {e}"))?;
        if resp.status().as_u16() != 200 {
            return Err(format!(
                "get {url}: the registry answered {}",
                resp.status()
            ));
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(MEDIA_TYPE_INDEX)
            .to_string();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| format!("get {url}: {e}"))?;
        let got = format!(
            "sha256:{}",
            crate::checksums::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        );
        if got != digest {
            return Err(format!("get {url}: the registry gave {got}, not {digest}"));
        }
        let url = format!("{}/v2/{}/manifests/{tag}", self.base, self.name);
        let resp = self
            .agent
            .put(&url)
            .header("content-type", &media_type)
            .send(&bytes[..])
            .map_err(|e| format!("put {url}: {e}"))?;
        expect(
            resp,
            &[200, 201],
            &format!("tag {digest} as {tag} at {url}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repositories() {
        let r = Repository::parse("127.0.0.1:5000/hello/server").unwrap();
        assert_eq!(
            (r.base.as_str(), r.name.as_str()),
            ("http://127.0.0.1:5000", "hello/server")
        );
        let r = Repository::parse("registry.example/app").unwrap();
        assert_eq!(r.base, "https://registry.example");
        for bad in ["noslash", "/x", "host/UPPER", "ftp://h/x"] {
            assert!(Repository::parse(bad).is_err(), "{bad}");
        }
    }
}
