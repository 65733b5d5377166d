//! The image rules, [`base`] (`oci_base`), [`image`] (`oci_image`), [`pull`]
//! (`oci_pull`) and [`push`] (`oci_push`), and helpers they share with the release
//! rules (`strip`, `upx`): per-platform output paths, stamp values, image path checks,
//! and the builtin actions that call the deterministic OCI writer of [`crate::oci`].
//!
//! | builtin      | version | inputs                          | outputs                           |
//! |--------------|---------|---------------------------------|-----------------------------------|
//! | `oci_layer`  | 1       | the files of the layer          | `layer.tar.gz`, `layer.json`      |
//! | `oci_config` | 1       | layer blobs and their records   | `config.json`, `manifest.json`, `descriptor.json` |
//! | `oci_layout` | 1       | every blob and descriptor       | `layout/` (a directory), `index.digest`, docker archives |
//! | `oci_pull`   | 2       | none (repository, digest, platform in the params) | `<os>_<arch>/layout/` (fixed output, see [`crate::oci::rules::pull`]) |
//!
//! Every output has a fixed name, so a dependent action can name it before it exists;
//! the blobs get their digest names only in the layout. A layer's record (`layer.json`)
//! carries its diff_id, digest, size and history line, so an image action reads them
//! instead of hashing the layer again.

pub mod base;
pub mod builtins;
pub mod image;
pub mod paths;
pub mod pull;
pub mod push;

use std::collections::BTreeMap;

use kiln_engine::action::{Artifact, Tool};
use kiln_engine::label::Label;
use kiln_engine::rule::{parse_label, Analysis};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::{Error, ErrorKind, Result};

/// The meta key an `oci_base` target sets (its files are `layer.tar.gz`, `layer.json`).
pub const META_BASE: &str = "oci_base";
/// The meta key of an `oci_base` target's environment for images on it, `NAME=VALUE`
/// lines (`SSL_CERT_FILE=…` when it has CA certificates).
pub const META_BASE_ENV: &str = "oci_base_env";
/// The meta key an `oci_image` target sets: its layout directory, workspace-relative.
pub const META_LAYOUT: &str = "oci_layout";
/// The meta key an `oci_pull` target sets: what to pull, as JSON
/// ([`crate::oci::rules::pull::PullSource`]); images pull the platforms they need from it.
pub const META_PULL: &str = "oci_pull";
/// The meta key an `oci_image` built on an `oci_pull` sets: the repository
/// (`host/name`) its base came from, so that `oci_push` can mount blobs from it.
pub const META_PULL_FROM: &str = "oci_pull_from";

/// The label in the string attribute `attr` (required).
pub fn label_attr(target: &TargetDecl, attr: &str, what: &str) -> Result<Spanned<Label>> {
    let text = target.attrs.required_str(attr, what)?;
    if !(text.value.starts_with(':') || text.value.starts_with("//")) {
        return Err(target
            .attrs
            .error_at(
                attr,
                format!("`{attr}` of {} must be a label", target.label),
            )
            .hint("e.g. \":server\" or \"//cmd:server\""));
    }
    parse_label(&target.attrs, &text, &target.label.package)
}

/// `kiln-out/<pkg>/<target>/<os>_<arch>/<file name>` (no platform directory if the
/// artifact has no platform).
pub fn platform_out(ctx: &Analysis<'_>, artifact: &Artifact) -> String {
    let name = &ctx.label().name;
    match &artifact.platform {
        Some(p) => ctx.out_path(&format!(
            "{name}/{}/{}",
            p.replace('/', "_"),
            artifact.file_name()
        )),
        None => ctx.out_path(&format!("{name}/{}", artifact.file_name())),
    }
}

/// The files of the dependency named by `src`, which must provide at least one.
pub fn src_files(ctx: &Analysis<'_>, src: &Spanned<Label>) -> Result<Vec<Artifact>> {
    let files = ctx.dep(&src.value).files.clone();
    if files.is_empty() {
        return Err(ctx.error_at(
            "src",
            format!("{} provides no files to {}", src.value, ctx.label()),
        ));
    }
    Ok(files)
}

/// A host tool by name, found on PATH (its content digest enters the key).
pub fn path_tool(ctx: &Analysis<'_>, name: &str, attr: &str, install: &str) -> Result<Tool> {
    let path = kiln_engine::sandbox::find_on_path(name).ok_or_else(|| {
        ctx.error_at(
            attr,
            format!("`{name}` is not on PATH ({} needs it)", ctx.label()),
        )
        .hint(install.to_string())
    })?;
    Ok(Tool {
        name: name.to_string(),
        path,
        tree: false,
    })
}

/// The workspace's stamp values (kiln.toml `[stamp]`, overridden by git).
pub fn stamp_values(ctx: &Analysis<'_>) -> Result<BTreeMap<String, String>> {
    let defaults: BTreeMap<String, String> = match ctx.workspace.section("stamp")? {
        Some(t) => t.str_map_self()?,
        None => BTreeMap::new(),
    };
    Ok(ctx.exec.stamp(&defaults).clone())
}

/// `{NAME}` stamp substitution in one attribute string, errors at its location.
pub fn stamped(
    ctx: &Analysis<'_>,
    values: &BTreeMap<String, String>,
    text: &Spanned<String>,
) -> Result<String> {
    kiln_engine::host::substitute(&text.value, values).map_err(|e| {
        Error::new(ErrorKind::Config, format!("{e} in {}", ctx.label()))
            .at(ctx.attrs().location(text.span.start))
    })
}

/// SOURCE_DATE_EPOCH of the stamp values (0 if unset or not a number).
pub fn source_date_epoch(values: &BTreeMap<String, String>) -> u64 {
    values
        .get("SOURCE_DATE_EPOCH")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The labels among the values of the string table `attr` (e.g. `files`).
pub fn map_labels(target: &TargetDecl, attr: &str) -> Result<Vec<Spanned<Label>>> {
    let mut out = Vec::new();
    for (_, value) in target.attrs.str_map(attr)? {
        if value.value.starts_with(':') || value.value.starts_with("//") {
            out.push(parse_label(&target.attrs, &value, &target.label.package)?);
        }
    }
    Ok(out)
}

/// The files a `files` value names: a label's files, or one source file of the package.
pub fn value_files(ctx: &Analysis<'_>, value: &Spanned<String>) -> Result<Vec<Artifact>> {
    if value.value.starts_with(':') || value.value.starts_with("//") {
        let label = parse_label(ctx.attrs(), value, ctx.package())?.value;
        let files = ctx.dep(&label).files.clone();
        if files.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{label} provides no file for {}", ctx.label()),
            )
            .at(ctx.attrs().location(value.span.start)));
        }
        return Ok(files);
    }
    Ok(vec![ctx.source_file(value)?])
}

/// An action copying `input` unchanged to `out` (a platform a tool cannot process, passed
/// through so the target still provides it at its own path, and it is built with it).
pub fn passthrough(ctx: &mut Analysis<'_>, mnemonic: &str, input: Artifact) -> Artifact {
    let out = platform_out(ctx, &input);
    let id = ctx.add(kiln_engine::action::Action {
        owner: ctx.label().clone(),
        mnemonic: mnemonic.into(),
        discriminator: input.platform.clone().unwrap_or_default(),
        platform: input.platform.clone(),
        inputs: vec![input],
        outputs: vec![out.clone()],
        kind: builtins::builtin("copy", 1, &(), builtins::run_copy),
        show_output: false,
    });
    ctx.output(id, &out)
}
