//! The builtin actions of the image rules: thin wrappers over [`crate::oci`] that read
//! their parameters (JSON, part of the action key) and write fixed-name outputs.
//!
//! Bump a builtin's version whenever its output for the same inputs and parameters
//! changes (including a change of the OCI writer's bytes).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_engine::action::{ActionKind, Builtin, BuiltinCtx};
use serde::{Deserialize, Serialize};

use crate::oci::{
    base_entries, write_docker_archive, write_image, write_index, write_layer, write_layout,
    BaseFile, Descriptor, ImageConfig, LayerBlob, LayerEntry, LayerInfo, Manifest, Platform, User,
};

pub const LAYER_VERSION: u32 = 1;
pub const CONFIG_VERSION: u32 = 1;
pub const LAYOUT_VERSION: u32 = 1;

/// What `layer.json` holds: a written layer's identity and its history line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    pub info: LayerInfo,
    pub created_by: String,
    /// The media type of a layer taken from a base whose manifest gives it another
    /// type than kiln's gzip OCI layer (zstd, Docker's); left out of the key otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// One file of a layer: image path, sandbox-relative input, mode (None = 0755 if the input
/// is executable, else 0644), owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileParam {
    pub path: String,
    pub input: String,
    pub mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserParam {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Parameters of `oci_layer`; outputs are `[layer.tar.gz, layer.json]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerParams {
    pub mtime: u64,
    pub created_by: String,
    /// Some for a base layer (passwd, group, homes, /tmp), None for an app layer.
    pub users: Option<Vec<UserParam>>,
    pub files: Vec<FileParam>,
    /// Files whose content is given here (`/etc/nsswitch.conf`, `/etc/os-release`):
    /// (image path, text), root-owned 0644. Left out of the key when empty, so layers
    /// without them keep their keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub texts: Vec<(String, String)>,
}

/// A layer of an image: its blob (sandbox-relative) and either its record file or, for a
/// layer taken from a layout base, its identity given inline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRef {
    pub blob: String,
    pub record: Option<String>,
    pub inline: Option<LayerRecord>,
}

/// The runtime configuration of an image, as given in BUILD.toml (stamped).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigParam {
    pub platform: String,
    pub user: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub exposed_ports: Vec<String>,
    pub working_dir: String,
}

/// Parameters of `oci_config`; outputs are `[config.json, manifest.json, descriptor.json]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigParams {
    pub created: u64,
    pub layers: Vec<LayerRef>,
    pub config: ConfigParam,
}

/// Parameters of `oci_layout`; outputs are `[layout/, index.digest, docker archives...]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayoutParams {
    pub ref_name: String,
    /// Each platform's `descriptor.json`, in index order.
    pub descriptors: Vec<String>,
    /// Every blob file (configs, manifests, layers), sandbox-relative.
    pub blobs: Vec<String>,
    /// `(platform, output)` of each docker archive.
    pub docker: Vec<(String, String)>,
    pub repo_tags: Vec<String>,
    /// `(platform, SPDX document)` to attach to each platform's image (not in the
    /// parameters, so not in the key, when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sboms: Vec<(String, String)>,
}

/// A builtin action kind running `run` with `params`.
pub fn builtin<P: Serialize>(
    name: &str,
    version: u32,
    params: &P,
    run: fn(&BuiltinCtx) -> Result<(), String>,
) -> ActionKind {
    ActionKind::Builtin(Builtin {
        name: name.into(),
        version,
        params: serde_json::to_value(params).expect("parameters are plain data"),
        tools: Vec::new(),
        run: Arc::new(run),
    })
}

pub fn layer_action(params: &LayerParams) -> ActionKind {
    builtin("oci_layer", LAYER_VERSION, params, run_layer)
}

pub fn config_action(params: &ConfigParams) -> ActionKind {
    builtin("oci_config", CONFIG_VERSION, params, run_config)
}

pub fn layout_action(params: &LayoutParams) -> ActionKind {
    builtin("oci_layout", LAYOUT_VERSION, params, run_layout)
}

fn params<P: serde::de::DeserializeOwned>(ctx: &BuiltinCtx) -> Result<P, String> {
    serde_json::from_value(ctx.params.clone()).map_err(|e| format!("read parameters: {e}"))
}

fn out(ctx: &BuiltinCtx, i: usize) -> PathBuf {
    ctx.root.join(ctx.outputs[i].trim_end_matches('/'))
}

fn run_layer(ctx: &BuiltinCtx) -> Result<(), String> {
    let p: LayerParams = params(ctx)?;
    let mut entries = match &p.users {
        Some(users) => base_layer_entries(ctx, users, &p.files)?,
        None => app_layer_entries(ctx, &p.files)?,
    };
    for (path, text) in &p.texts {
        entries.push(LayerEntry::bytes(path, text.as_bytes(), 0o644));
    }
    let info = write_layer(&entries, p.mtime, &out(ctx, 0)).map_err(|e| e.to_string())?;
    let record = LayerRecord {
        info,
        created_by: p.created_by,
        media_type: None,
    };
    write_json(&out(ctx, 1), &record)
}

fn base_layer_entries(
    ctx: &BuiltinCtx,
    users: &[UserParam],
    files: &[FileParam],
) -> Result<Vec<LayerEntry>, String> {
    let users: Vec<User> = users
        .iter()
        .map(|u| User {
            name: u.name.clone(),
            uid: u.uid,
            gid: u.gid,
            home: u.home.clone(),
        })
        .collect();
    let files: Vec<BaseFile> = files
        .iter()
        .map(|f| BaseFile {
            path: f.path.clone(),
            source: ctx.input(&f.input),
            mode: f.mode.unwrap_or(0o644),
        })
        .collect();
    base_entries(&users, &files).map_err(|e| e.to_string())
}

fn app_layer_entries(ctx: &BuiltinCtx, files: &[FileParam]) -> Result<Vec<LayerEntry>, String> {
    files
        .iter()
        .map(|f| {
            let source = ctx.input(&f.input);
            let mode = match f.mode {
                Some(m) => m,
                None => default_mode(&source)?,
            };
            Ok(LayerEntry::file(&f.path, source, mode).owned_by(f.uid, f.gid))
        })
        .collect()
}

/// 0755 for an executable input, else 0644 (the executable bit is part of the key).
fn default_mode(source: &Path) -> Result<u32, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(source).map_err(|e| format!("read {}: {e}", source.display()))?;
    Ok(if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    })
}

fn run_config(ctx: &BuiltinCtx) -> Result<(), String> {
    let p: ConfigParams = params(ctx)?;
    let layers = p
        .layers
        .iter()
        .map(|l| layer_blob(ctx, l))
        .collect::<Result<Vec<_>, _>>()?;
    let config = image_config(&p.config)?;
    let blobs = ctx.root.join(".kiln-blobs");
    let descriptor = write_image(&layers, &config, p.created, &blobs).map_err(|e| e.to_string())?;
    let manifest_path = blob_file(&blobs, &descriptor.digest);
    let manifest: Manifest = read_json(&manifest_path)?;
    copy(&blob_file(&blobs, &manifest.config.digest), &out(ctx, 0))?;
    copy(&manifest_path, &out(ctx, 1))?;
    write_json(&out(ctx, 2), &descriptor)
}

fn layer_blob(ctx: &BuiltinCtx, layer: &LayerRef) -> Result<LayerBlob, String> {
    let record = match (&layer.record, &layer.inline) {
        (Some(path), _) => read_json::<LayerRecord>(&ctx.input(path))?,
        (None, Some(inline)) => inline.clone(),
        (None, None) => return Err(format!("layer {} has no record", layer.blob)),
    };
    Ok(LayerBlob {
        info: record.info,
        path: ctx.input(&layer.blob),
        created_by: record.created_by,
        media_type: record.media_type,
    })
}

fn image_config(c: &ConfigParam) -> Result<ImageConfig, String> {
    let platform = Platform::parse(&c.platform)
        .ok_or_else(|| format!("`{}` is not a platform", c.platform))?;
    Ok(ImageConfig {
        os: platform.os,
        architecture: platform.architecture,
        variant: platform.variant,
        user: c.user.clone(),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        env: c.env.clone(),
        labels: c.labels.clone(),
        exposed_ports: c.exposed_ports.clone(),
        working_dir: c.working_dir.clone(),
    })
}

fn run_layout(ctx: &BuiltinCtx) -> Result<(), String> {
    let p: LayoutParams = params(ctx)?;
    let descriptors = p
        .descriptors
        .iter()
        .map(|d| read_json::<Descriptor>(&ctx.input(d)))
        .collect::<Result<Vec<_>, _>>()?;
    let layout = out(ctx, 0);
    let index = write_index(&descriptors, &layout.join("blobs")).map_err(|e| e.to_string())?;
    let blobs: Vec<PathBuf> = p.blobs.iter().map(|b| ctx.input(b)).collect();
    write_layout(&layout, &index, &p.ref_name, &blobs).map_err(|e| e.to_string())?;
    if !p.sboms.is_empty() {
        let sboms: Vec<(String, PathBuf)> = p
            .sboms
            .iter()
            .map(|(platform, doc)| (platform.clone(), ctx.input(doc)))
            .collect();
        let sboms: Vec<(String, &Path)> = sboms
            .iter()
            .map(|(p, d)| (p.clone(), d.as_path()))
            .collect();
        crate::oci::attach_sboms(&layout, &descriptors, &sboms).map_err(|e| e.to_string())?;
    }
    std::fs::write(out(ctx, 1), format!("{}\n", index.digest))
        .map_err(|e| format!("write {}: {e}", out(ctx, 1).display()))?;
    for (platform, archive) in &p.docker {
        let platform =
            Platform::parse(platform).ok_or_else(|| format!("`{platform}` is not a platform"))?;
        write_docker_archive(&layout, &platform, &p.repo_tags, &ctx.root.join(archive))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn blob_file(blobs: &Path, digest: &str) -> PathBuf {
    blobs
        .join("sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("read {}: {e}", path.display()))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).expect("records are plain data");
    std::fs::write(path, bytes).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Copies the one input to the one output, keeping the executable bit.
pub fn run_copy(ctx: &BuiltinCtx) -> Result<(), String> {
    copy(&ctx.input(&ctx.inputs[0].path), &out(ctx, 0))
}
