//! `oci_image`: one OCI image per platform and an image index over them, written by kiln
//! itself (no Docker daemon), bit-for-bit reproducible.
//!
//! ```toml
//! [oci_image.image]
//! base = ":static"                 # "scratch", an oci_base or oci_pull label, or an OCI layout directory
//! files = { "/app/server" = ":server_packed" }   # per platform
//! entrypoint = ["/app/server"]
//! cmd = ["--addr=:8080"]
//! user = "65532:65532"
//! env = { TZ = "UTC" }
//! labels = { "org.opencontainers.image.version" = "{STABLE_GIT_DESCRIBE}" }
//! exposed_ports = ["8080/tcp"]
//! workdir = "/app"
//! platforms = ["linux/amd64"]      # default: the linux platforms of the labeled files
//! tag = "latest"                   # the layout's reference name (default "latest")
//! docker_archive = true            # also write a docker-load-able tarball per platform
//! repo_tags = ["hello:{STABLE_GIT_DESCRIBE}"]    # tags inside the docker archives
//! ```
//!
//! Actions (all builtins, see [`crate::oci::rules`]), so that an unchanged layer is never
//! rebuilt and changing only the entrypoint reruns the config/manifest and index actions
//! but no layer action:
//! - `OciLayer [os/arch]`: one app layer per platform holding that platform's `files`;
//! - `OciConfig [os/arch]`: config + manifest of one platform over base and app layers;
//! - `OciLayout`: the image index, the layout directory
//!   `kiln-out/<package>/<target>/layout/` (tagged `tag`), `index.digest`, and with
//!   `docker_archive` `kiln-out/<package>/<target>/<os>_<arch>.tar` per platform.
//!
//! Decisions where the issue is silent:
//! - files in the image are root-owned (the user cannot rewrite its own binary), 0755 when
//!   the input is executable, else 0644; missing parent directories are 0755;
//! - platforms default to the `linux/*` platforms of the labeled `files` values, in the
//!   order the first such label lists them; a file value without a platform (a plain file)
//!   goes into every platform's layer; a labeled value must provide each platform;
//! - a layout base (a directory, or an `oci_pull` target) gives its layers and its
//!   runtime configuration where this target sets none, as `FROM` does in a
//!   Dockerfile: user, workdir, entrypoint and cmd (a target entrypoint drops the
//!   base's cmd), env and labels merged key by key (the target wins), exposed ports of
//!   both; an oci_base has no configuration to give;
//! - `created` and every mtime are SOURCE_DATE_EPOCH of the stamp values (default 0);
//!   `{STABLE_*}` stamp variables may appear in `labels`, `env` values and `repo_tags`;
//! - blobs of earlier builds may remain in `kiln-out/.../layout/blobs` (kiln-out is only
//!   ever added to); `index.json` names exactly the current image.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_engine::action::{Action, ActionKind, Artifact};
use kiln_engine::label::Label;
use kiln_engine::rule::{parse_label, Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::{Error, ErrorKind, Result};

use crate::oci::rules::builtins::{
    config_action, layer_action, layout_action, ConfigParam, ConfigParams, FileParam, LayerParams,
    LayerRecord, LayerRef, LayoutParams,
};
use crate::oci::rules::paths::check_image_paths;
use crate::oci::rules::pull::{pull_platform, PullSource};
use crate::oci::rules::{
    map_labels, source_date_epoch, stamp_values, stamped, value_files, META_BASE, META_BASE_ENV,
    META_LAYOUT, META_PULL_FROM,
};
use crate::oci::{find_manifest, LayerInfo, Manifest, Platform, MEDIA_TYPE_LAYER_GZIP};

const FIELDS: &[&str] = &[
    "base",
    "files",
    "entrypoint",
    "cmd",
    "user",
    "env",
    "labels",
    "exposed_ports",
    "workdir",
    "platforms",
    "tag",
    "docker_archive",
    "repo_tags",
    "sbom",
];

pub struct OciImage;

impl Rule for OciImage {
    fn name(&self) -> &'static str {
        "oci_image"
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "an oci_image")?;
        let mut deps = map_labels(target, "files")?;
        if let Some(sbom) = target.attrs.str("sbom")? {
            deps.push(parse_label(&target.attrs, &sbom, &target.label.package)?);
        }
        if let Some(base) = target.attrs.str("base")? {
            if base.value.starts_with(':') || base.value.starts_with("//") {
                deps.push(parse_label(&target.attrs, &base, &target.label.package)?);
            }
        }
        Ok(deps)
    }

    fn analyze(&self, _target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let stamp = stamp_values(ctx)?;
        let created = source_date_epoch(&stamp);
        let files = image_files(ctx)?;
        let platforms = platforms(ctx, &files)?;
        let base = Base::resolve(ctx, &platforms)?;
        let config = runtime_config(ctx, &stamp)?;
        let mut layout = LayoutPlan::default();
        for platform in &platforms {
            let mut layers = base.layers(ctx, platform)?;
            if let Some(app) = app_layer(ctx, &files, platform, created)? {
                layers.push(app);
            }
            let config = base.inherit(ctx, platform, &config)?;
            add_config(ctx, platform, created, &layers, &config, &mut layout);
        }
        let mut info = add_layout(ctx, &platforms, &stamp, layout)?;
        if let Some(origin) = base.origin(ctx) {
            info.meta.insert(META_PULL_FROM.into(), origin);
        }
        Ok(info)
    }
}

/// A layer an image action reads: its blob, its record (or inline identity), and the
/// artifacts to declare as inputs.
struct Layer {
    reference: LayerRef,
    inputs: Vec<Artifact>,
}

/// The `files` of the image: image path and the artifacts its value names.
struct ImageFile {
    path: String,
    value: Spanned<String>,
    artifacts: Vec<Artifact>,
}

fn image_files(ctx: &Analysis<'_>) -> Result<Vec<ImageFile>> {
    let map = ctx.attrs().str_map("files")?;
    check_image_paths(ctx, &map.iter().map(|(k, _)| k).collect::<Vec<_>>())?;
    map.into_iter()
        .map(|(path, value)| {
            let artifacts = value_files(ctx, &value)?;
            Ok(ImageFile {
                path: path.value,
                value,
                artifacts,
            })
        })
        .collect()
}

fn platforms(ctx: &Analysis<'_>, files: &[ImageFile]) -> Result<Vec<String>> {
    let attrs = ctx.attrs();
    let listed = attrs.str_list("platforms")?;
    let mut out: Vec<String> = Vec::new();
    for p in &listed {
        if Platform::parse(&p.value).is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("`{}` is not a platform (os/arch)", p.value),
            )
            .at(attrs.location(p.span.start)));
        }
        if !out.contains(&p.value) {
            out.push(p.value.clone());
        }
    }
    if out.is_empty() {
        let first = files
            .iter()
            .find(|f| f.artifacts.iter().any(|a| a.platform.is_some()));
        out = first
            .map(|f| f.artifacts.iter().filter_map(|a| a.platform.clone()))
            .into_iter()
            .flatten()
            .filter(|p| p.starts_with("linux/"))
            .collect();
        out.dedup();
    }
    if out.is_empty() {
        return Err(ctx
            .error_at(
                "files",
                format!(
                    "{} has no linux platform to build an image for",
                    ctx.label()
                ),
            )
            .hint("set `platforms = [\"linux/amd64\"]`, or map a file to a go_binary's output"));
    }
    Ok(out)
}

/// Where base layers come from.
enum Base {
    Scratch,
    /// An oci_base target's layer and record, and the environment it gives images.
    Label(Artifact, Artifact, Vec<(String, String)>),
    /// OCI layout directories (workspace-relative) by platform, and the `base` value:
    /// a directory of the workspace (one for every platform), or the layout an oci_pull
    /// target pulled for each platform, with its files (the blobs, as generated inputs).
    Layout(Spanned<String>, BTreeMap<String, LayoutDir>),
}

/// A layout base's directory for one platform, and its files if an action wrote them.
struct LayoutDir {
    dir: String,
    files: Vec<Artifact>,
}

impl Base {
    fn resolve(ctx: &mut Analysis<'_>, platforms: &[String]) -> Result<Base> {
        let Some(base) = ctx.attrs().str("base")? else {
            return Ok(Base::Scratch);
        };
        if base.value == "scratch" {
            return Ok(Base::Scratch);
        }
        if base.value.starts_with(':') || base.value.starts_with("//") {
            let label = parse_label(ctx.attrs(), &base, ctx.package())?.value;
            if let Some(source) = PullSource::of(ctx.dep(&label)) {
                let dirs = pulled_dirs(ctx, &base, &source, platforms)?;
                return Ok(Base::Layout(base, dirs));
            }
            return built_base(ctx, &label);
        }
        kiln_engine::rule::check_relative(base.value.trim_end_matches('/')).map_err(|e| {
            Error::new(ErrorKind::Config, e).at(ctx.attrs().location(base.span.start))
        })?;
        let dir = ctx.package_path(base.value.trim_end_matches('/'));
        if !ctx.workspace.root.join(&dir).join("index.json").is_file() {
            return Err(ctx
                .error_at("base", format!("`base` of {}: `{dir}` is not an OCI layout directory", ctx.label()))
                .hint("use \"scratch\", an oci_base label, or a directory holding index.json and blobs/"));
        }
        let dirs = platforms
            .iter()
            .map(|p| {
                let files = Vec::new();
                (
                    p.clone(),
                    LayoutDir {
                        dir: dir.clone(),
                        files,
                    },
                )
            })
            .collect();
        Ok(Base::Layout(base, dirs))
    }

    fn layers(&self, ctx: &Analysis<'_>, platform: &str) -> Result<Vec<Layer>> {
        match self {
            Base::Scratch => Ok(Vec::new()),
            Base::Label(blob, record, _) => Ok(vec![Layer {
                reference: LayerRef {
                    blob: blob.path.clone(),
                    record: Some(record.path.clone()),
                    inline: None,
                },
                inputs: vec![blob.clone(), record.clone()],
            }]),
            Base::Layout(at, dirs) => {
                let LayoutDir { dir, files } = &dirs[platform];
                layout_layers(ctx, dir, files, platform).map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        format!("use base `{dir}` for {}: {e}", ctx.label()),
                    )
                    .at(ctx.attrs().location(at.span.start))
                })
            }
        }
    }
}

/// An oci_base target as a base: its layer, record and environment.
fn built_base(ctx: &Analysis<'_>, label: &Label) -> Result<Base> {
    let info = ctx.dep(label);
    if !info.meta.contains_key(META_BASE) || info.files.len() != 2 {
        return Err(ctx.error_at(
            "base",
            format!(
                "`base` of {}: {label} is not an oci_base or oci_pull",
                ctx.label()
            ),
        ));
    }
    let env = info
        .meta
        .get(META_BASE_ENV)
        .map(|lines| {
            lines
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Base::Label(
        info.files[0].clone(),
        info.files[1].clone(),
        env,
    ))
}

/// The layouts of a pulled base for the image's platforms, pulled now if no other
/// image pulled them yet; a platform the oci_pull's own `platforms` leaves out, or the
/// pinned image lacks, is an error at `base`.
fn pulled_dirs(
    ctx: &mut Analysis<'_>,
    base: &Spanned<String>,
    source: &PullSource,
    platforms: &[String],
) -> Result<BTreeMap<String, LayoutDir>> {
    let at = ctx.attrs().location(base.span.start);
    let mut dirs = BTreeMap::new();
    for platform in platforms {
        if !source.platforms.is_empty() && !source.platforms.contains(platform) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "`base` of {} is {}, which pulls {} only; the image needs {platform}",
                    ctx.label(),
                    source.label,
                    source.platforms.join(", ")
                ),
            )
            .at(at)
            .hint(format!(
                "add \"{platform}\" to the `platforms` of {}, or drop its `platforms` to pull what the images need",
                source.label
            )));
        }
        let pulled = pull_platform(ctx, source, platform).map_err(|e| Error {
            message: format!(
                "pull {platform} of `base` {} for {}: {}",
                source.label,
                ctx.label(),
                e.message
            ),
            location: Some(at.clone()),
            ..e
        })?;
        let dir = LayoutDir {
            dir: pulled.layout,
            files: pulled.files,
        };
        dirs.insert(platform.clone(), dir);
    }
    Ok(dirs)
}

impl Base {
    /// The repository a pulled base came from (an oci_push to the same registry mounts
    /// its blobs from there instead of uploading them).
    fn origin(&self, ctx: &Analysis<'_>) -> Option<String> {
        let base = ctx.attrs().str("base").ok()??;
        if !matches!(self, Base::Layout(..)) || !base.value.starts_with([':', '/']) {
            return None;
        }
        let label = parse_label(ctx.attrs(), &base, ctx.package()).ok()?.value;
        PullSource::of(ctx.dep(&label)).map(|s| s.repository)
    }

    /// `config` completed from the base image's config for `platform` where the target
    /// leaves a field unset (see [`inherit`]); an oci_base gives only its environment
    /// (`SSL_CERT_FILE`), scratch nothing.
    fn inherit(
        &self,
        ctx: &Analysis<'_>,
        platform: &str,
        config: &ConfigParam,
    ) -> Result<ConfigParam> {
        let (dir, at) = match self {
            Base::Scratch => return Ok(config.clone()),
            Base::Label(_, _, env) => {
                let base = serde_json::json!({
                    "Env": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()
                });
                return Ok(inherit(config, &base));
            }
            Base::Layout(at, dirs) => (&dirs[platform].dir, at),
        };
        let base = base_config(ctx, dir, platform).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("use base `{dir}` for {}: {e}", ctx.label()),
            )
            .at(ctx.attrs().location(at.span.start))
        })?;
        Ok(inherit(config, &base))
    }
}

/// The `config` object of the base image's config blob for `platform`.
fn base_config(
    ctx: &Analysis<'_>,
    dir: &str,
    platform: &str,
) -> std::result::Result<serde_json::Value, String> {
    let wanted =
        Platform::parse(platform).ok_or_else(|| format!("`{platform}` is not a platform"))?;
    let abs = ctx.workspace.root.join(dir);
    let (_, manifest) = find_manifest(&abs, &wanted).map_err(|e| e.to_string())?;
    let path = abs
        .join("blobs/sha256")
        .join(manifest.config.digest.trim_start_matches("sha256:"));
    let bytes = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(value.get("config").cloned().unwrap_or_default())
}

/// Docker's rules for a config built FROM a base: user, workdir, entrypoint and cmd come
/// from the base when the target sets none (a target entrypoint drops the base's cmd,
/// as a Dockerfile ENTRYPOINT does); env and labels are the base's, overridden key by
/// key; exposed ports are both.
fn inherit(target: &ConfigParam, base: &serde_json::Value) -> ConfigParam {
    let text = |k: &str| base[k].as_str().unwrap_or_default().to_string();
    let list = |k: &str| -> Vec<String> {
        base[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = target.clone();
    if out.user.is_empty() {
        out.user = text("User");
    }
    if out.working_dir.is_empty() {
        out.working_dir = text("WorkingDir");
    }
    if target.entrypoint.is_empty() {
        out.entrypoint = list("Entrypoint");
        if target.cmd.is_empty() {
            out.cmd = list("Cmd");
        }
    }
    let mut env: Vec<(String, String)> = list("Env")
        .into_iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .filter(|(k, _)| !target.env.iter().any(|(t, _)| t == k))
        .collect();
    env.extend(target.env.iter().cloned());
    out.env = env;
    if let Some(labels) = base["Labels"].as_object() {
        for (k, v) in labels {
            if let Some(v) = v.as_str() {
                out.labels.entry(k.clone()).or_insert_with(|| v.to_string());
            }
        }
    }
    if let Some(ports) = base["ExposedPorts"].as_object() {
        for port in ports.keys() {
            if !out.exposed_ports.contains(port) {
                out.exposed_ports.push(port.clone());
            }
        }
    }
    out
}

/// The layers of the layout base's image for `platform`: each blob a source input, or
/// the oci_pull output among `files`.
fn layout_layers(
    ctx: &Analysis<'_>,
    dir: &str,
    files: &[Artifact],
    platform: &str,
) -> std::result::Result<Vec<Layer>, String> {
    let wanted =
        Platform::parse(platform).ok_or_else(|| format!("`{platform}` is not a platform"))?;
    let abs = ctx.workspace.root.join(dir);
    let (_, manifest) = find_manifest(&abs, &wanted).map_err(|e| e.to_string())?;
    let diff_ids = diff_ids(&abs, &manifest)?;
    if diff_ids.len() != manifest.layers.len() {
        return Err("its config lists a different number of layers than its manifest".into());
    }
    manifest
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(layer, diff_id)| {
            let hex = layer
                .digest
                .strip_prefix("sha256:")
                .ok_or("only sha256 blobs are supported")?;
            let blob = format!("{dir}/blobs/sha256/{hex}");
            let info = LayerInfo {
                diff_id,
                digest: layer.digest.clone(),
                size: layer.size,
            };
            Ok(Layer {
                reference: LayerRef {
                    blob: blob.clone(),
                    record: None,
                    inline: Some(LayerRecord {
                        info,
                        created_by: format!("base layer from {dir}"),
                        media_type: Some(layer.media_type.clone())
                            .filter(|t| t != MEDIA_TYPE_LAYER_GZIP),
                    }),
                },
                inputs: vec![files
                    .iter()
                    .find(|a| a.path == blob)
                    .cloned()
                    .unwrap_or_else(|| Artifact::source(blob))],
            })
        })
        .collect()
}

fn diff_ids(layout: &Path, manifest: &Manifest) -> std::result::Result<Vec<String>, String> {
    let hex = manifest.config.digest.trim_start_matches("sha256:");
    let path = layout.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let config: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("read {}: {e}", path.display()))?;
    let ids = config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| format!("{} has no rootfs.diff_ids", path.display()))?;
    Ok(ids
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect())
}

/// The app layer of one platform (None when `files` is empty).
fn app_layer(
    ctx: &mut Analysis<'_>,
    files: &[ImageFile],
    platform: &str,
    created: u64,
) -> Result<Option<Layer>> {
    if files.is_empty() {
        return Ok(None);
    }
    let (mut inputs, mut params) = (Vec::new(), Vec::new());
    for file in files {
        let artifact = pick(ctx, file, platform)?;
        params.push(FileParam {
            path: file.path.clone(),
            input: artifact.path.clone(),
            mode: None,
            uid: 0,
            gid: 0,
        });
        inputs.push(artifact);
    }
    let label = ctx.label().clone();
    let dir = format!("{}/{}", label.name, platform.replace('/', "_"));
    let outputs = vec![
        ctx.out_path(&format!("{dir}/layer.tar.gz")),
        ctx.out_path(&format!("{dir}/layer.json")),
    ];
    let params = LayerParams {
        mtime: created,
        created_by: format!("kiln oci_image {label}"),
        users: None,
        files: params,
        texts: Vec::new(),
    };
    let id = ctx.add(Action {
        owner: label,
        mnemonic: "OciLayer".into(),
        discriminator: platform.to_string(),
        inputs,
        outputs: outputs.clone(),
        kind: layer_action(&params),
        platform: Some(platform.to_string()),
        show_output: false,
    });
    let (blob, record) = (ctx.output(id, &outputs[0]), ctx.output(id, &outputs[1]));
    Ok(Some(Layer {
        reference: LayerRef {
            blob: blob.path.clone(),
            record: Some(record.path.clone()),
            inline: None,
        },
        inputs: vec![blob, record],
    }))
}

/// The artifact of `file` for `platform`.
fn pick(ctx: &Analysis<'_>, file: &ImageFile, platform: &str) -> Result<Artifact> {
    let at = ctx.attrs().location(file.value.span.start);
    if let Some(a) = file
        .artifacts
        .iter()
        .find(|a| a.platform.as_deref() == Some(platform))
    {
        return Ok(a.clone());
    }
    let plain: Vec<&Artifact> = file
        .artifacts
        .iter()
        .filter(|a| a.platform.is_none())
        .collect();
    match plain.as_slice() {
        [one] if file.artifacts.len() == 1 => Ok((*one).clone()),
        [] => Err(Error::new(
            ErrorKind::Config,
            format!(
                "`{}` has no file for {platform} (image path `{}` of {})",
                file.value.value,
                file.path,
                ctx.label()
            ),
        )
        .at(at)
        .hint("build the source for that platform, or set `platforms`")),
        _ => Err(Error::new(
            ErrorKind::Config,
            format!(
                "`{}` names {} files; image path `{}` takes one",
                file.value.value,
                file.artifacts.len(),
                file.path
            ),
        )
        .at(at)),
    }
}

fn runtime_config(ctx: &Analysis<'_>, stamp: &BTreeMap<String, String>) -> Result<ConfigParam> {
    let attrs = ctx.attrs();
    let list = |key: &str| -> Result<Vec<String>> {
        Ok(attrs.str_list(key)?.into_iter().map(|s| s.value).collect())
    };
    let string =
        |key: &str| -> Result<String> { Ok(attrs.str(key)?.map(|s| s.value).unwrap_or_default()) };
    let stamped_map = |key: &str| -> Result<Vec<(String, String)>> {
        attrs
            .str_map(key)?
            .into_iter()
            .map(|(k, v)| Ok((k.value, stamped(ctx, stamp, &v)?)))
            .collect()
    };
    Ok(ConfigParam {
        platform: String::new(),
        user: string("user")?,
        entrypoint: list("entrypoint")?,
        cmd: list("cmd")?,
        env: stamped_map("env")?,
        labels: stamped_map("labels")?.into_iter().collect(),
        exposed_ports: list("exposed_ports")?,
        working_dir: string("workdir")?,
    })
}

/// What the layout action gathers from the per-platform actions.
#[derive(Default)]
struct LayoutPlan {
    inputs: Vec<Artifact>,
    descriptors: Vec<String>,
    blobs: Vec<String>,
}

fn add_config(
    ctx: &mut Analysis<'_>,
    platform: &str,
    created: u64,
    layers: &[Layer],
    config: &ConfigParam,
    layout: &mut LayoutPlan,
) {
    let label = ctx.label().clone();
    let dir = format!("{}/{}", label.name, platform.replace('/', "_"));
    let outputs: Vec<String> = ["config.json", "manifest.json", "descriptor.json"]
        .iter()
        .map(|f| ctx.out_path(&format!("{dir}/{f}")))
        .collect();
    let params = ConfigParams {
        created,
        layers: layers.iter().map(|l| l.reference.clone()).collect(),
        config: ConfigParam {
            platform: platform.to_string(),
            ..config.clone()
        },
    };
    let inputs: Vec<Artifact> = layers.iter().flat_map(|l| l.inputs.clone()).collect();
    let id = ctx.add(Action {
        owner: label,
        mnemonic: "OciConfig".into(),
        discriminator: platform.to_string(),
        inputs: inputs.clone(),
        outputs: outputs.clone(),
        kind: config_action(&params),
        platform: Some(platform.to_string()),
        show_output: false,
    });
    for layer in layers {
        if !layout.blobs.contains(&layer.reference.blob) {
            layout.blobs.push(layer.reference.blob.clone());
            layout.inputs.push(layer.inputs[0].clone());
        }
    }
    for out in &outputs {
        layout.inputs.push(ctx.output(id, out));
    }
    layout.blobs.extend(outputs[..2].iter().cloned());
    layout.descriptors.push(outputs[2].clone());
}

/// `sbom`: the SPDX document (of a go_sbom) for each platform of the image, attached to
/// it as an OCI artifact (see [`crate::oci::attach_sboms`]).
fn sbom_documents(ctx: &Analysis<'_>, platforms: &[String]) -> Result<Vec<(String, Artifact)>> {
    let Some(sbom) = ctx.attrs().str("sbom")? else {
        return Ok(Vec::new());
    };
    let label = parse_label(ctx.attrs(), &sbom, &ctx.label().package)?.value;
    let files = &ctx.dep(&label).files;
    platforms
        .iter()
        .map(|platform| {
            let doc = files.iter().find(|f| {
                f.platform.as_deref() == Some(platform) && f.path.ends_with(".spdx.json")
            });
            match doc {
                Some(doc) => Ok((platform.clone(), doc.clone())),
                None => Err(ctx
                    .error_at(
                        "sbom",
                        format!("{label} has no SPDX document for {platform}"),
                    )
                    .hint("name a go_sbom of the binary the image holds, built for its platforms")),
            }
        })
        .collect()
}

fn add_layout(
    ctx: &mut Analysis<'_>,
    platforms: &[String],
    stamp: &BTreeMap<String, String>,
    plan: LayoutPlan,
) -> Result<TargetInfo> {
    let attrs = ctx.attrs();
    let label = ctx.label().clone();
    let ref_name = attrs.str("tag")?.map_or("latest".to_string(), |t| t.value);
    let repo_tags = attrs
        .str_list("repo_tags")?
        .iter()
        .map(|t| stamped(ctx, stamp, t))
        .collect::<Result<Vec<_>>>()?;
    let layout_dir = ctx.out_path(&format!("{}/layout", label.name));
    let digest_file = ctx.out_path(&format!("{}/index.digest", label.name));
    let docker: Vec<(String, String)> = if attrs.bool("docker_archive")?.unwrap_or(false) {
        platforms
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    ctx.out_path(&format!("{}/{}.tar", label.name, p.replace('/', "_"))),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut outputs = vec![format!("{layout_dir}/"), digest_file.clone()];
    outputs.extend(docker.iter().map(|(_, o)| o.clone()));
    let sboms = sbom_documents(ctx, platforms)?;
    let mut inputs = plan.inputs;
    inputs.extend(sboms.iter().map(|(_, a)| a.clone()));
    let params = LayoutParams {
        ref_name,
        descriptors: plan.descriptors,
        blobs: plan.blobs,
        docker: docker.clone(),
        repo_tags,
        sboms: sboms.into_iter().map(|(p, a)| (p, a.path)).collect(),
    };
    let kind: ActionKind = layout_action(&params);
    let id = ctx.add(Action {
        owner: label,
        mnemonic: "OciLayout".into(),
        discriminator: String::new(),
        inputs,
        outputs,
        kind,
        platform: None,
        show_output: false,
    });
    let mut info = TargetInfo::default();
    info.files.push(ctx.output(id, &digest_file));
    for (platform, out) in &docker {
        let mut artifact = ctx.output(id, out);
        artifact.platform = Some(platform.clone());
        info.files.push(artifact);
    }
    info.meta.insert(META_LAYOUT.into(), layout_dir);
    Ok(info)
}
