//! The OCI JSON documents, as serde structs whose field order is the byte order.
//!
//! Digests are taken over bytes, so every document is a struct (never a map with unstable
//! order): keys come out in declaration order, maps are `BTreeMap`s (sorted keys), empty
//! optional fields are left out, and the output is compact JSON with no trailing newline.
//! The order follows the OCI spec's own field lists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker's media types, accepted when reading a layout.
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The annotation that names a reference (a tag) in a layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A platform: `linux/amd64`, `linux/arm/v7`...
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch` or `os/arch/variant`.
    pub fn parse(text: &str) -> Option<Platform> {
        let mut parts = text.split('/');
        let os = parts.next().filter(|s| !s.is_empty())?;
        let architecture = parts.next().filter(|s| !s.is_empty())?;
        let variant = parts.next().map(str::to_owned);
        if parts.next().is_some() || variant.as_deref() == Some("") {
            return None;
        }
        Some(Platform {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            variant,
        })
    }

    /// Whether an image for `self` serves a request for `wanted`; a request without a
    /// variant accepts any variant.
    pub fn serves(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (wanted.variant.is_none() || self.variant == wanted.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// A content descriptor: what a blob is, its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub(crate) fn new(media_type: &str, digest: String, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    pub(crate) fn is_index(&self) -> bool {
        self.media_type == MEDIA_TYPE_INDEX || self.media_type == DOCKER_MANIFEST_LIST
    }

    pub(crate) fn is_manifest(&self) -> bool {
        self.media_type == MEDIA_TYPE_MANIFEST || self.media_type == DOCKER_MANIFEST
    }
}

/// An image index (also the shape of a layout's `index.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image configuration.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConfigFile<'a> {
    pub created: String,
    pub architecture: &'a str,
    pub os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<&'a str>,
    pub config: RuntimeConfig<'a>,
    pub rootfs: RootFs,
    pub history: Vec<History<'a>>,
}

/// The execution parameters of an image config, in the spec's order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RuntimeConfig<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    pub user: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub entrypoint: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub cmd: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    pub working_dir: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: &'a BTreeMap<String, String>,
}

/// `{}`: the value of each key of Go's `map[string]struct{}` fields.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Empty {}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct History<'a> {
    pub created: String,
    pub created_by: &'a str,
}

/// Deserializes only the parts of a config kiln reads back.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ConfigPlatform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// RFC 3339 UTC time of a Unix timestamp, e.g. `2024-05-01T12:00:00Z`.
pub(crate) fn rfc3339(unix: u64) -> String {
    kiln_cache::time::rfc3339(unix as i64, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn parses_platforms() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!(Platform::parse("linux").is_none());
        assert!(Platform::parse("linux/amd64/").is_none());
        let any_arm = Platform::parse("linux/arm").unwrap();
        assert!(p.serves(&any_arm) && !any_arm.serves(&p));
    }
}
