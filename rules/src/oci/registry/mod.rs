//! Talking to OCI registries with the Distribution API (no Docker daemon): pushing an
//! OCI layout, pulling an image by digest.
//!
//! | module | what |
//! |---|---|
//! | [`settings`] | `[registries."HOST"]` of kiln.toml: `ca_file`, `insecure`; TLS trust |
//! | [`credentials`] | credentials as docker/podman/crane find them, never shown |
//! | [`auth`] | `WWW-Authenticate` challenges, bearer tokens from the realm |
//! | [`client`] | one host: auth on 401, redirects, retries with backoff |
//!
//! Push: for each blob (layers and configs) `HEAD /v2/<name>/blobs/<digest>`, skipped if
//! the registry answers 200; else `POST /v2/<name>/blobs/uploads/` (202 + `Location`)
//! and a monolithic `PUT <location>?digest=<digest>` (201). Then each image manifest is
//! `PUT` by digest, and the image index by digest and under every tag, each with its
//! media type; the registry's `Docker-Content-Digest` must match. Children go before
//! their parents, so a registry never sees a manifest naming a blob it does not have.
//! A blob a pulled base brought (`mount_from`, same registry) is first offered as a
//! cross-repository mount, `POST …/blobs/uploads/?mount=<digest>&from=<repo>` (201:
//! done; 202: the registry declined and opened an upload instead). Blobs above
//! [`CHUNK_SIZE`] go up as `PATCH` chunks with `Content-Range`, then a `PUT`.
//! Each blob and manifest is one operation, tried again from its start (a new upload
//! session) after a dropped connection or a 5xx, up to [`client::ATTEMPTS`] times.
//!
//! `repository` is `host[:port]/name`, optionally with `http://` or `https://`; see
//! [`settings`] for which scheme is used.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod pull;
pub mod settings;

use std::path::{Path, PathBuf};

use ureq::http::Method;

use crate::oci::{
    Descriptor, Index, Manifest, ANNOTATION_REF_NAME, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use client::{header, Body, Client, Failure, Request};
pub use settings::Settings;

/// A registry repository (`host[:port]/name`).
pub struct Repository {
    client: Client,
    name: String,
    /// Repositories of the same registry to mount missing blobs from.
    mount_from: Vec<String>,
    /// Blobs larger than this are uploaded in chunks of this size.
    chunk_size: u64,
}

/// Blobs above this size go up in PATCH chunks of it (`KILN_PUSH_CHUNK_SIZE` bytes
/// overrides it): some registries and proxies cap one request's body.
pub const CHUNK_SIZE: u64 = 64 << 20;

/// How each blob of a push got there.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub present: usize,
    pub mounted: usize,
    pub uploaded: usize,
    pub chunked: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} blobs uploaded ({} in chunks), {} mounted, {} already there",
            self.uploaded, self.chunked, self.mounted, self.present
        )
    }
}

enum Pushed {
    Present,
    Mounted,
    Uploaded,
    Chunked,
}

/// `[scheme://]host[:port]/name` split, checked.
pub struct RepoRef {
    pub scheme: Option<String>,
    pub host: String,
    pub name: String,
}

impl RepoRef {
    pub fn parse(text: &str) -> Result<RepoRef, String> {
        let (scheme, rest) = match text.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (Some(s.to_string()), rest),
            Some(_) => {
                return Err(format!(
                    "registry reference `{text}`: only http:// and https:// are supported"
                ))
            }
            None => (None, text),
        };
        // As docker reads a reference: the first component is a registry host only if
        // it looks like one; otherwise the image is on Docker Hub.
        let (host, name) = match rest.split_once('/') {
            Some((h, n)) if scheme.is_some() || h.contains(['.', ':']) || h == "localhost" => {
                (h.to_string(), n.to_string())
            }
            _ => ("docker.io".to_string(), rest.to_string()),
        };
        let (host, name) = docker_hub(host, name);
        if !valid_host(&host) || !valid_name(&name) {
            return Err(format!(
                "registry reference `{text}`: a repository reads host[:port]/name, with a lowercase name"
            ));
        }
        Ok(RepoRef { scheme, host, name })
    }
}

/// Docker Hub's API host, and `library/` before one-component names, as docker does.
fn docker_hub(host: String, name: String) -> (String, String) {
    if !matches!(host.as_str(), "docker.io" | "index.docker.io") {
        return (host, name);
    }
    let name = if name.contains('/') {
        name
    } else {
        format!("library/{name}")
    };
    ("registry-1.docker.io".to_string(), name)
}

impl Repository {
    /// A repository to push to (token scope `pull,push`, and `pull` on each
    /// repository of the same registry in `mount_from`).
    pub fn for_push(
        text: &str,
        settings: &Settings,
        mount_from: &[String],
    ) -> Result<Repository, String> {
        let r = RepoRef::parse(text)?;
        let mount_from: Vec<String> = mount_from
            .iter()
            .filter_map(|m| RepoRef::parse(m).ok())
            .filter(|m| m.host == r.host && m.name != r.name)
            .map(|m| m.name)
            .collect();
        let mut scopes = vec![format!("repository:{}:pull,push", r.name)];
        scopes.extend(mount_from.iter().map(|m| format!("repository:{m}:pull")));
        Repository::open(r, settings, scopes, mount_from)
    }

    /// A repository to pull from (token scope `pull`).
    pub fn for_pull(text: &str, settings: &Settings) -> Result<Repository, String> {
        let r = RepoRef::parse(text)?;
        let scopes = vec![format!("repository:{}:pull", r.name)];
        Repository::open(r, settings, scopes, Vec::new())
    }

    fn open(
        r: RepoRef,
        settings: &Settings,
        scopes: Vec<String>,
        mount_from: Vec<String>,
    ) -> Result<Repository, String> {
        let host = settings.host(&r.host);
        let client = Client::new(&r.host, r.scheme.as_deref(), &host, scopes)?;
        let chunk_size = std::env::var("KILN_PUSH_CHUNK_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &u64| n > 0)
            .unwrap_or(CHUNK_SIZE);
        Ok(Repository {
            client,
            name: r.name,
            mount_from,
            chunk_size,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `base/v2/<name>/<rest>`.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.client.base, self.name)
    }

    /// Pushes the image `index.json` of the layout at `layout` names, tagged `tags`;
    /// returns its digest and how its blobs got there.
    pub fn push_layout(&self, layout: &Path, tags: &[String]) -> Result<(String, Counts), String> {
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
        let mut counts = Counts::default();
        self.push_tree(&blobs, image, &mut counts)?;
        for tag in tags {
            self.put_manifest(&blobs, image, tag)?;
        }
        for artifact in top.manifests.iter().filter(|d| d.digest != image.digest) {
            self.push_tree(&blobs, artifact, &mut counts)?;
        }
        Ok((image.digest.clone(), counts))
    }

    /// Points `tag` at the manifest or index `digest` names in this repository (a
    /// release's moving tag), after checking the bytes the registry gives are that
    /// digest's.
    pub fn retag(&self, digest: &str, tag: &str) -> Result<(), String> {
        let what = format!("get manifest {digest}");
        let (bytes, media_type) = self.client.retrying(|| {
            let get = Request::new(Method::GET, self.url(&format!("manifests/{digest}"))).header(
                "accept",
                format!("{MEDIA_TYPE_INDEX}, {MEDIA_TYPE_MANIFEST}"),
            );
            let mut resp = self.client.send(&get)?;
            if resp.status().as_u16() != 200 {
                return Err(Failure::fatal(format!(
                    "{what}: the registry answered {}",
                    resp.status()
                )));
            }
            let media_type = header(&resp, "content-type").unwrap_or(MEDIA_TYPE_INDEX.into());
            let bytes = resp
                .body_mut()
                .with_config()
                .limit(4 << 20)
                .read_to_vec()
                .map_err(|e| Failure::fatal(format!("{what}: {e}")))?;
            Ok((bytes, media_type))
        })?;
        let got = format!(
            "sha256:{}",
            crate::release::checksums::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        );
        if got != digest {
            return Err(format!("{what}: the registry gave {got}, not {digest}"));
        }
        let what = format!("tag {digest} as {tag}");
        self.client.retrying(|| {
            let put = Request::new(Method::PUT, self.url(&format!("manifests/{tag}")))
                .header("content-type", media_type.clone())
                .body(Body::Bytes(&bytes));
            expect(self.client.send(&put)?, &[200, 201], &what)
        })
    }

    fn push_tree(
        &self,
        blobs: &Path,
        descriptor: &Descriptor,
        counts: &mut Counts,
    ) -> Result<(), String> {
        if descriptor.media_type == MEDIA_TYPE_INDEX {
            let index: Index = read_json(&blob_path(blobs, &descriptor.digest))?;
            for child in &index.manifests {
                self.push_tree(blobs, child, counts)?;
            }
        } else if descriptor.media_type == MEDIA_TYPE_MANIFEST {
            let manifest: Manifest = read_json(&blob_path(blobs, &descriptor.digest))?;
            for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                let path = blob_path(blobs, &blob.digest);
                match self.client.retrying(|| self.push_blob(&path, blob))? {
                    Pushed::Present => counts.present += 1,
                    Pushed::Mounted => counts.mounted += 1,
                    Pushed::Uploaded => counts.uploaded += 1,
                    Pushed::Chunked => {
                        counts.uploaded += 1;
                        counts.chunked += 1;
                    }
                }
            }
        } else {
            return Err(format!(
                "push {}: unknown media type {}",
                descriptor.digest, descriptor.media_type
            ));
        }
        self.put_manifest(blobs, descriptor, &descriptor.digest)
    }

    /// One blob: nothing if the registry has it, else mounted from a repository of
    /// `mount_from`, else uploaded (in chunks above the chunk size).
    fn push_blob(&self, path: &Path, blob: &Descriptor) -> Result<Pushed, Failure> {
        let url = self.url(&format!("blobs/{}", blob.digest));
        let head = self.client.send(&Request::new(Method::HEAD, url))?;
        if head.status().as_u16() == 200 {
            return Ok(Pushed::Present);
        }
        let mut location = None;
        for from in &self.mount_from {
            let query = format!("blobs/uploads/?mount={}&from={from}", blob.digest);
            match self.start_upload(&query)? {
                Started::Mounted => return Ok(Pushed::Mounted),
                Started::Upload(l) => location = Some(l),
            }
        }
        let location = match location {
            Some(l) => l,
            None => match self.start_upload("blobs/uploads/")? {
                Started::Upload(l) => l,
                Started::Mounted => return Ok(Pushed::Mounted),
            },
        };
        if blob.size > self.chunk_size {
            return self
                .upload_chunks(location, path, blob)
                .map(|_| Pushed::Chunked);
        }
        let put = Request::new(Method::PUT, with_digest(&location, &blob.digest))
            .header("content-type", "application/octet-stream")
            .header("content-length", blob.size.to_string())
            .body(Body::File(path));
        let resp = self.client.send(&put)?;
        expect(resp, &[201, 204], &format!("upload blob {}", blob.digest))?;
        Ok(Pushed::Uploaded)
    }

    /// `PATCH` chunks of the blob (each answered 202 with the next location), then a
    /// `PUT` with the digest and no body.
    fn upload_chunks(
        &self,
        mut location: String,
        path: &Path,
        blob: &Descriptor,
    ) -> Result<(), Failure> {
        use std::io::Read;
        let what = format!("upload blob {} in chunks", blob.digest);
        let mut file = std::fs::File::open(path)
            .map_err(|e| Failure::fatal(format!("read {}: {e}", path.display())))?;
        let mut offset = 0u64;
        let mut chunk = Vec::new();
        loop {
            chunk.clear();
            let n = (&mut file)
                .take(self.chunk_size)
                .read_to_end(&mut chunk)
                .map_err(|e| Failure::fatal(format!("read {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            let end = offset + n as u64 - 1;
            let patch = Request::new(Method::PATCH, location.clone())
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{offset}-{end}"))
                .header("content-length", n.to_string())
                .body(Body::Bytes(&chunk));
            let resp = self.client.send(&patch)?;
            let next = header(&resp, "location");
            let status = resp.status().as_u16();
            location = match (status, next) {
                (202, Some(l)) => self.client.resolve(&l),
                _ => return expect(resp, &[202], &what),
            };
            offset += n as u64;
        }
        let put = Request::new(Method::PUT, with_digest(&location, &blob.digest));
        expect(self.client.send(&put)?, &[201, 204], &what)
    }

    /// `POST` to `blobs/uploads/…`: 201 when a mount worked, else 202 and a location.
    fn start_upload(&self, rest: &str) -> Result<Started, Failure> {
        let url = self.url(rest);
        let resp = self.client.send(&Request::new(Method::POST, url.clone()))?;
        let status = resp.status().as_u16();
        match (status, header(&resp, "location")) {
            (201, _) => Ok(Started::Mounted),
            (202, Some(l)) => Ok(Started::Upload(self.client.resolve(&l))),
            _ => Err(Failure::fatal(format!(
                "start an upload at {url}: the registry answered {status}"
            ))),
        }
    }

    fn put_manifest(
        &self,
        blobs: &Path,
        descriptor: &Descriptor,
        reference: &str,
    ) -> Result<(), String> {
        let bytes = std::fs::read(blob_path(blobs, &descriptor.digest))
            .map_err(|e| format!("read manifest {}: {e}", descriptor.digest))?;
        let what = format!("put manifest {} as {reference}", descriptor.digest);
        self.client.retrying(|| {
            let put = Request::new(Method::PUT, self.url(&format!("manifests/{reference}")))
                .header("content-type", descriptor.media_type.clone())
                .body(Body::Bytes(&bytes));
            let resp = self.client.send(&put)?;
            let given = header(&resp, "docker-content-digest");
            expect(resp, &[200, 201], &what)?;
            match given {
                Some(d) if d != descriptor.digest => Err(Failure::fatal(format!(
                    "{what}: the registry stored it as {d}"
                ))),
                _ => Ok(()),
            }
        })
    }
}

enum Started {
    Mounted,
    Upload(String),
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// An error naming the status and the start of the registry's answer, unless `status`
/// is one of `ok`.
pub fn expect(
    mut resp: ureq::http::Response<ureq::Body>,
    ok: &[u16],
    what: &str,
) -> Result<(), Failure> {
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
    Err(Failure::fatal(format!(
        "{what}: the registry answered {status} {}",
        body.trim()
    )))
}

/// Repository names per the distribution spec: lowercase path components.
/// A tag per the distribution spec ([`TAG_SYNTAX`]).
pub fn valid_tag(tag: &str) -> bool {
    tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// What [`valid_tag`] accepts, for messages.
pub const TAG_SYNTAX: &str = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";

/// A registry host as a URL's authority may hold it: a name or address, maybe a port
/// (no user info, path, query or fragment to smuggle another host in).
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repositories() {
        let none = Settings::default();
        let r = Repository::for_push("127.0.0.1:5000/hello/server", &none, &[]).unwrap();
        assert_eq!(
            (r.client.base.as_str(), r.name.as_str()),
            ("http://127.0.0.1:5000", "hello/server")
        );
        let r = Repository::for_push("registry.example/app", &none, &[]).unwrap();
        assert_eq!(r.client.base, "https://registry.example");
        for hub in [
            "alpine",
            "docker.io/alpine",
            "index.docker.io/library/alpine",
        ] {
            let r = Repository::for_pull(hub, &none).unwrap();
            assert_eq!(
                (r.client.base.as_str(), r.name.as_str()),
                ("https://registry-1.docker.io", "library/alpine"),
                "{hub}"
            );
        }
        let r = Repository::for_pull("team/app", &none).unwrap();
        assert_eq!(r.name, "team/app");
        for bad in ["/x", "host/UPPER", "ftp://h/x", "http://registry.example/x"] {
            assert!(Repository::for_push(bad, &none, &[]).is_err(), "{bad}");
        }
    }
}
