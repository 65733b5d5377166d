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

use kiln_engine::action::{Action, Artifact};
use kiln_engine::label::Label;
use kiln_engine::rule::{Analysis, Rule, TargetInfo};
use kiln_engine::value::{Spanned, Table};
use kiln_engine::workspace::TargetDecl;
use kiln_engine::{Error, ErrorKind, Result};

use crate::oci_rules::builtins::{layer_action, FileParam, LayerParams, UserParam};
use crate::oci_rules::paths::check_image_paths;
use crate::oci_rules::{map_labels, source_date_epoch, stamp_values, value_files, META_BASE};

const FIELDS: &[&str] = &["passwd", "files"];
const USER_FIELDS: &[&str] = &["name", "uid", "gid", "home"];

pub struct OciBase;

impl Rule for OciBase {
    fn name(&self) -> &'static str {
        "oci_base"
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "an oci_base")?;
        map_labels(target, "files")
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let users = ctx
            .attrs()
            .table_list("passwd")?
            .into_iter()
            .map(user)
            .collect::<Result<Vec<_>>>()?;
        let (inputs, files) = base_files(ctx)?;
        let params = LayerParams {
            mtime: source_date_epoch(&stamp_values(ctx)?),
            created_by: format!("kiln oci_base {}", target.label),
            users: Some(users),
            files,
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
            meta: [(META_BASE.to_string(), "layer".to_string())].into(),
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
        files.push(FileParam {
            path: path.value.clone(),
            input: artifact.path.clone(),
            mode: Some(0o644),
            uid: 0,
            gid: 0,
        });
        inputs.push(artifact);
    }
    Ok((inputs, files))
}
