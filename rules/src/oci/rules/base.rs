//! `oci_base`: a distroless/static-like base layer, built from declared values, never
//! pulled.
//!
//! ```toml
//! [oci_base.static]
//! passwd = [{ name = "nonroot", uid = 65532, gid = 65532, home = "/home/nonroot" }]
//! files = { "/etc/ssl/certs/ca-certificates.crt" = "ca.crt" }   # files or labels
//! ```
//!
//! One builtin `oci_layer` action writes `kiln-out/<package>/<target>/layer.tar.gz` and its
//! record `layer.json` (diff_id, digest, size, history line): `/etc/passwd` and
//! `/etc/group` (root, nobody, then the declared users), `/root`, each user's home (0700,
//! owned by the user), `/tmp` (1777), and the declared files (root-owned, 0644). The
//! layer is platform-independent, so every platform image of an `oci_image` shares it
//! (one blob, built once). Its mtime is SOURCE_DATE_EPOCH of the stamp values.
//!
//! `home` defaults to `/home/<name>`; `gid` defaults to `uid`. A `files` value that is a
//! label must name exactly one file.
//!
//! What a real service needs beyond a static binary, each opt-in and each hashed into
//! the layer's key like any input:
//!
//! ```toml
//! ca_certificates = "ca-certificates.crt"   # a PEM bundle (file or one-file label)
//! zoneinfo = "zoneinfo"                     # a directory of the package: a tz tree
//! nsswitch = true                           # /etc/nsswitch.conf: "hosts: files dns"
//! os_release = { ID = "kiln", VERSION_ID = "1" }   # /etc/os-release
//! ```
//!
//! - `ca_certificates` goes to `/etc/ssl/certs/ca-certificates.crt`, the first path Go,
//!   OpenSSL and most runtimes look at on Linux, and images on this base get
//!   `SSL_CERT_FILE` pointing at it (unless they set it). Use Debian's bundle
//!   (`/etc/ssl/certs/ca-certificates.crt` of the ca-certificates package, copied into
//!   the workspace so its digest is in the key) or a company's CA.
//! - `zoneinfo`: every file below the directory goes to `/usr/share/zoneinfo/` (Go's
//!   `time.LoadLocation` reads it there). The alternative needing no base at all: build
//!   the binary with `import _ "time/tzdata"` (about 450 KB of Go's own copy).
//! - `nsswitch`: Go's resolver and glibc read `hosts:` order from it; distroless ships
//!   the same line.
//! - `os_release`: `KEY="value"` lines, in key order, so scanners name the base.

use kiln_engine::action::{Action, Artifact};
use kiln_engine::label::Label;
use kiln_engine::rule::{Analysis, Rule, TargetInfo};
use kiln_engine::value::{Spanned, Table};
use kiln_engine::workspace::TargetDecl;
use kiln_engine::{Error, ErrorKind, Result};

use crate::oci::rules::builtins::{layer_action, FileParam, LayerParams, UserParam};
use crate::oci::rules::paths::check_image_paths;
use crate::oci::rules::{
    map_labels, source_date_epoch, stamp_values, value_files, META_BASE, META_BASE_ENV,
};

const FIELDS: &[&str] = &[
    "passwd",
    "files",
    "ca_certificates",
    "zoneinfo",
    "nsswitch",
    "os_release",
];
/// Where the CA bundle goes, and what `SSL_CERT_FILE` names.
const CA_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";
const ZONEINFO: &str = "/usr/share/zoneinfo";
const NSSWITCH: &str = "passwd: files\ngroup: files\nhosts: files dns\n";
const USER_FIELDS: &[&str] = &["name", "uid", "gid", "home"];

pub struct OciBase;

impl Rule for OciBase {
    fn name(&self) -> &'static str {
        "oci_base"
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "an oci_base")?;
        let mut deps = map_labels(target, "files")?;
        if let Some(ca) = target.attrs.str("ca_certificates")? {
            if ca.value.starts_with(':') || ca.value.starts_with("//") {
                deps.push(kiln_engine::rule::parse_label(
                    &target.attrs,
                    &ca,
                    &target.label.package,
                )?);
            }
        }
        Ok(deps)
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let users = ctx
            .attrs()
            .table_list("passwd")?
            .into_iter()
            .map(user)
            .collect::<Result<Vec<_>>>()?;
        let (mut inputs, mut files) = base_files(ctx)?;
        let mut meta = vec![(META_BASE.to_string(), "layer".to_string())];
        if let Some(ca) = ca_bundle(ctx)? {
            files.push(root_file(CA_PATH, &ca));
            inputs.push(ca);
            meta.push((
                META_BASE_ENV.to_string(),
                format!("SSL_CERT_FILE={CA_PATH}"),
            ));
        }
        for (path, artifact) in zoneinfo(ctx)? {
            files.push(root_file(&path, &artifact));
            inputs.push(artifact);
        }
        let params = LayerParams {
            mtime: source_date_epoch(&stamp_values(ctx)?),
            created_by: format!("kiln oci_base {}", target.label),
            users: Some(users),
            files,
            texts: texts(ctx)?,
        };
        let dir = &target.label.name;
        let outputs = vec![
            ctx.out_path(&format!("{dir}/layer.tar.gz")),
            ctx.out_path(&format!("{dir}/layer.json")),
        ];
        let id = ctx.add(Action {
            owner: target.label.clone(),
            mnemonic: "OciLayer".into(),
            discriminator: String::new(),
            inputs,
            outputs: outputs.clone(),
            kind: layer_action(&params),
            platform: None,
            show_output: false,
        });
        Ok(TargetInfo {
            files: outputs.iter().map(|o| ctx.output(id, o)).collect(),
            meta: meta.into_iter().collect(),
            run: None,
        })
    }
}

fn user(table: &Table) -> Result<UserParam> {
    table.check_keys(USER_FIELDS, "a passwd entry")?;
    let name = table.required_str("name", "a passwd entry")?.value;
    let id = |key: &str| -> Result<Option<u32>> {
        match table.int(key)? {
            None => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| {
                table.error_at(key, format!("`{key}` must be between 0 and 4294967295"))
            }),
        }
    };
    let uid = id("uid")?
        .ok_or_else(|| table.error_at("uid", format!("passwd entry `{name}` needs `uid`")))?;
    let gid = id("gid")?.unwrap_or(uid);
    let home = table
        .str("home")?
        .map_or(format!("/home/{name}"), |h| h.value);
    Ok(UserParam {
        name,
        uid,
        gid,
        home,
    })
}

/// The declared extra files: their inputs and their layer entries.
fn base_files(ctx: &Analysis<'_>) -> Result<(Vec<Artifact>, Vec<FileParam>)> {
    let map = ctx.attrs().str_map("files")?;
    check_image_paths(ctx, &map.iter().map(|(k, _)| k).collect::<Vec<_>>())?;
    let (mut inputs, mut files) = (Vec::new(), Vec::new());
    for (path, value) in &map {
        let mut found = value_files(ctx, value)?;
        if found.len() != 1 {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "`{}` names {} files; an image path takes one",
                    value.value,
                    found.len()
                ),
            )
            .at(ctx.attrs().location(value.span.start)));
        }
        let artifact = found.remove(0);
        files.push(root_file(&path.value, &artifact));
        inputs.push(artifact);
    }
    Ok((inputs, files))
}

/// A root-owned 0644 file of the layer.
fn root_file(path: &str, artifact: &Artifact) -> FileParam {
    FileParam {
        path: path.to_string(),
        input: artifact.path.clone(),
        mode: Some(0o644),
        uid: 0,
        gid: 0,
    }
}

/// The `ca_certificates` bundle: one file, checked to hold a PEM certificate.
fn ca_bundle(ctx: &Analysis<'_>) -> Result<Option<Artifact>> {
    let Some(value) = ctx.attrs().str("ca_certificates")? else {
        return Ok(None);
    };
    let at = ctx.attrs().location(value.span.start);
    let mut found = value_files(ctx, &value)?;
    if found.len() != 1 {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "`ca_certificates` of {} names {} files; it takes one PEM bundle",
                ctx.label(),
                found.len()
            ),
        )
        .at(at));
    }
    let artifact = found.remove(0);
    if artifact.producer.is_none() {
        let text = kiln_engine::workspace::read_file(&ctx.workspace.root, &artifact.path)
            .unwrap_or_default();
        if !String::from_utf8_lossy(&text).contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "`ca_certificates` of {}: `{}` holds no PEM certificate",
                    ctx.label(),
                    artifact.path
                ),
            )
            .at(at)
            .hint("e.g. a copy of Debian's /etc/ssl/certs/ca-certificates.crt"));
        }
    }
    Ok(Some(artifact))
}

/// Every file below the `zoneinfo` directory, with its path under /usr/share/zoneinfo.
fn zoneinfo(ctx: &Analysis<'_>) -> Result<Vec<(String, Artifact)>> {
    let Some(dir) = ctx.attrs().str("zoneinfo")? else {
        return Ok(Vec::new());
    };
    let rel = dir.value.trim_end_matches('/').to_string();
    let pattern = Spanned {
        value: format!("{rel}/**"),
        span: dir.span.clone(),
    };
    let files = ctx.glob(&pattern)?;
    if files.is_empty() {
        return Err(ctx
            .error_at("zoneinfo", format!("`zoneinfo` of {}: `{rel}` holds no files", ctx.label()))
            .hint("a directory of the package shaped like /usr/share/zoneinfo (Europe/Berlin, UTC, ...)"));
    }
    let prefix = format!("{}/", ctx.package_path(&rel));
    Ok(files
        .into_iter()
        .filter_map(|a| {
            let inner = a.path.strip_prefix(&prefix)?.to_string();
            Some((format!("{ZONEINFO}/{inner}"), a))
        })
        .collect())
}

/// `/etc/nsswitch.conf` and `/etc/os-release`, when asked for.
fn texts(ctx: &Analysis<'_>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if ctx.attrs().bool("nsswitch")?.unwrap_or(false) {
        out.push(("/etc/nsswitch.conf".to_string(), NSSWITCH.to_string()));
    }
    let fields = ctx.attrs().str_map("os_release")?;
    if !fields.is_empty() {
        let mut lines: Vec<(String, String)> = Vec::new();
        for (key, value) in fields {
            let ok = key
                .value
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !ok || key.value.is_empty() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "`os_release` key `{}` of {}: keys are A-Z, 0-9 and _",
                        key.value,
                        ctx.label()
                    ),
                )
                .at(ctx.attrs().location(key.span.start)));
            }
            lines.push((key.value, value.value));
        }
        lines.sort();
        let text: String = lines
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"\n", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        out.push(("/etc/os-release".to_string(), text));
    }
    Ok(out)
}
