//! Images and indexes: config, manifest and index JSON blobs over written layers.
//!
//! `created` (the config's and every history entry's) is the caller's SOURCE_DATE_EPOCH, so
//! the same inputs give the same config digest on any day. Choices where the spec is silent:
//! - env keeps the caller's order (later entries may refer to earlier ones); a name given
//!   twice is an error rather than a silent override;
//! - exposed ports must read `port`, `port/tcp`, `port/udp` or `port/sctp` and are stored
//!   as given (a sorted JSON object);
//! - the index keeps the caller's order of manifests and refuses two manifests for one
//!   platform, which no client could choose between;
//! - `write_image` checks that each layer blob exists with its recorded size, but copies no
//!   layer: blobs are gathered once, by the layout writer;
//! - a layer's media type is kiln's gzip OCI type unless the layer says otherwise (a base
//!   layer keeps the type its manifest gave it, so a zstd layer stays zstd).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use super::blob::write_blob;
use super::error::{Error, Result};
use super::layer::LayerInfo;
use super::spec::{
    rfc3339, ConfigFile, Descriptor, Empty, History, Index, Manifest, Platform, RootFs,
    RuntimeConfig, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST,
};

/// What an image runs and on which platform.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means the runtime's default (root).
    pub user: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `(name, value)` pairs, written in this order as `name=value`.
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    /// `8080/tcp`, `53/udp`, `9090`...
    pub exposed_ports: Vec<String>,
    pub working_dir: String,
}

impl ImageConfig {
    /// The platform the image is for.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
        }
    }
}

/// A written layer: its identity, its blob on disk and the history line describing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub info: LayerInfo,
    /// The `.tar.gz` written by [`super::write_layer`].
    pub path: PathBuf,
    /// Shown by `docker history`, e.g. `kiln oci_base //base:static`.
    pub created_by: String,
    /// The layer's media type in the manifest, when it is not kiln's own gzip OCI layer
    /// (a base layer kept as its registry had it: zstd, Docker's gzip type...).
    pub media_type: Option<String>,
}

/// Writes the config and manifest blobs of one image into `blobs_dir` (`sha256/<hex>`) and
/// returns the manifest's descriptor, carrying the image's platform.
pub fn write_image(
    layers: &[LayerBlob],
    config: &ImageConfig,
    created: u64,
    blobs_dir: &Path,
) -> Result<Descriptor> {
    check_layers(layers)?;
    let config_bytes = config_json(layers, config, created)?;
    let config_digest = write_blob(blobs_dir, &config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST.to_owned(),
        config: Descriptor::new(MEDIA_TYPE_CONFIG, config_digest, config_bytes.len() as u64),
        layers: layers.iter().map(layer_descriptor).collect(),
    };
    let manifest_bytes = to_json(&manifest);
    let mut descriptor = Descriptor::new(
        MEDIA_TYPE_MANIFEST,
        write_blob(blobs_dir, &manifest_bytes)?,
        manifest_bytes.len() as u64,
    );
    descriptor.platform = Some(config.platform());
    Ok(descriptor)
}

/// Writes an image index over per-platform manifests into `blobs_dir` and returns its
/// descriptor.
pub fn write_index(manifests: &[Descriptor], blobs_dir: &Path) -> Result<Descriptor> {
    check_platforms(manifests)?;
    let index = Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX.to_owned(),
        manifests: manifests.to_vec(),
    };
    let bytes = to_json(&index);
    let digest = write_blob(blobs_dir, &bytes)?;
    Ok(Descriptor::new(
        MEDIA_TYPE_INDEX,
        digest,
        bytes.len() as u64,
    ))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("OCI documents are plain structs of strings and numbers")
}

fn layer_descriptor(layer: &LayerBlob) -> Descriptor {
    let info = &layer.info;
    let media_type = layer.media_type.as_deref().unwrap_or(MEDIA_TYPE_LAYER_GZIP);
    Descriptor::new(media_type, info.digest.clone(), info.size)
}

fn check_layers(layers: &[LayerBlob]) -> Result<()> {
    for layer in layers {
        let meta = std::fs::metadata(&layer.path)
            .map_err(|err| Error::io("read layer", &layer.path, err))?;
        if meta.len() != layer.info.size {
            return Err(Error::corrupt(format!(
                "use layer {}: it holds {} bytes, its record says {}",
                layer.path.display(),
                meta.len(),
                layer.info.size
            )));
        }
    }
    Ok(())
}

fn check_platforms(manifests: &[Descriptor]) -> Result<()> {
    let mut seen = HashSet::new();
    for manifest in manifests {
        let Some(platform) = &manifest.platform else {
            return Err(Error::input(format!(
                "add manifest {} to an index: it names no platform",
                manifest.digest
            )));
        };
        if !seen.insert(platform) {
            return Err(Error::input(format!(
                "add manifest {} to an index: another manifest is already for {platform}",
                manifest.digest
            )));
        }
    }
    Ok(())
}

fn config_json(layers: &[LayerBlob], config: &ImageConfig, created: u64) -> Result<Vec<u8>> {
    check_platform(config)?;
    let created = rfc3339(created);
    let file = ConfigFile {
        created: created.clone(),
        architecture: &config.architecture,
        os: &config.os,
        variant: config.variant.as_deref(),
        config: RuntimeConfig {
            user: &config.user,
            exposed_ports: exposed_ports(&config.exposed_ports)?,
            env: env_lines(&config.env)?,
            entrypoint: &config.entrypoint,
            cmd: &config.cmd,
            working_dir: &config.working_dir,
            labels: &config.labels,
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.info.diff_id.clone()).collect(),
        },
        history: layers
            .iter()
            .map(|layer| History {
                created: created.clone(),
                created_by: &layer.created_by,
            })
            .collect(),
    };
    Ok(to_json(&file))
}

fn check_platform(config: &ImageConfig) -> Result<()> {
    let text = config.platform().to_string();
    if Platform::parse(&text).as_ref() != Some(&config.platform()) {
        return Err(Error::input(format!(
            "write an image config: `{text}` is not a platform (os/architecture[/variant])"
        )));
    }
    Ok(())
}

fn env_lines(env: &[(String, String)]) -> Result<Vec<String>> {
    let mut names = BTreeSet::new();
    env.iter()
        .map(|(name, value)| {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(Error::input(format!(
                    "set environment variable `{name}`: not a valid name"
                )));
            }
            if !names.insert(name.as_str()) {
                return Err(Error::input(format!(
                    "set environment variable `{name}`: it is given twice"
                )));
            }
            Ok(format!("{name}={value}"))
        })
        .collect()
}

fn exposed_ports(ports: &[String]) -> Result<BTreeMap<String, Empty>> {
    ports
        .iter()
        .map(|port| check_port(port).map(|()| (port.clone(), Empty {})))
        .collect()
}

fn check_port(port: &str) -> Result<()> {
    let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
    let number_ok = number.parse::<u16>().is_ok_and(|n| n > 0) && !number.starts_with('0');
    if number_ok && matches!(protocol, "tcp" | "udp" | "sctp") {
        return Ok(());
    }
    Err(Error::input(format!(
        "expose port `{port}`: expected `port` or `port/tcp|udp|sctp` with a port in 1..65535"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ImageConfig {
        ImageConfig {
            os: "linux".into(),
            architecture: "amd64".into(),
            user: "65532:65532".into(),
            entrypoint: vec!["/app/server".into()],
            env: vec![("TZ".into(), "UTC".into())],
            exposed_ports: vec!["8080/tcp".into()],
            ..ImageConfig::default()
        }
    }

    #[test]
    fn config_json_has_fixed_key_order() {
        let json = String::from_utf8(config_json(&[], &config(), 0).unwrap()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux","#,
                r#""config":{"User":"65532:65532","ExposedPorts":{"8080/tcp":{}},"#,
                r#""Env":["TZ=UTC"],"Entrypoint":["/app/server"]},"#,
                r#""rootfs":{"type":"layers","diff_ids":[]},"history":[]}"#
            )
        );
    }

    #[test]
    fn refuses_bad_ports_env_and_platforms() {
        for port in ["0", "80/icmp", "65536", "http", "080"] {
            let bad = ImageConfig {
                exposed_ports: vec![port.into()],
                ..config()
            };
            assert!(config_json(&[], &bad, 0).is_err(), "{port}");
        }
        let twice = ImageConfig {
            env: vec![("A".into(), "1".into()), ("A".into(), "2".into())],
            ..config()
        };
        assert!(config_json(&[], &twice, 0).is_err());
        let no_arch = ImageConfig {
            architecture: String::new(),
            ..config()
        };
        assert!(config_json(&[], &no_arch, 0).is_err());
    }
}
