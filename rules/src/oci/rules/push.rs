//! `oci_push`: `kiln run //pkg:push` pushes an image to a registry. Never cached.
//!
//! ```toml
//! [oci_push.push]
//! image = ":image"                               # an oci_image target
//! repository = "127.0.0.1:5000/hello"            # host[:port]/name
//! tags = ["latest", "{STABLE_GIT_DESCRIBE}"]     # stamp variables allowed
//! ```
//!
//! `kiln build` of this target builds the image and writes
//! `kiln-out/<package>/<target>/push.json` (repository, tags, index digest: a cached
//! builtin, so the image is built and the plan is visible). `kiln run` then pushes the
//! image's layout with [`crate::oci::registry`] and prints one line per tag,
//! `<repository>:<tag>@<digest>` (`<repository>@<digest>` without tags): every tag
//! names the same index, pushed by digest first. The push itself is a side effect,
//! never cached: a registry that already has every blob only sees HEAD requests and
//! manifest PUTs. Tags are substituted at analysis, so a bad tag fails before anything
//! is built. Credentials, TLS trust and plain-http rules: see
//! [`crate::oci::registry`]; `[registries]` of kiln.toml is read at analysis.

use std::sync::Arc;

use kiln_engine::action::{Action, BuiltinCtx};
use kiln_engine::label::Label;
use kiln_engine::rule::{Analysis, Rule, RunCtx, Runner, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::Result;

use crate::oci::registry::{valid_tag, RepoRef, Repository, Settings, TAG_SYNTAX};
use crate::oci::rules::builtins::builtin;
use crate::oci::rules::{label_attr, stamp_values, stamped, META_LAYOUT, META_PULL_FROM};

const FIELDS: &[&str] = &["image", "repository", "tags"];

pub struct OciPush;

impl Rule for OciPush {
    fn name(&self) -> &'static str {
        "oci_push"
    }

    fn config_sections(&self) -> &'static [&'static str] {
        &[crate::oci::registry::settings::SECTION]
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "an oci_push")?;
        Ok(vec![label_attr(target, "image", "an oci_push")?])
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let image = label_attr(target, "image", "an oci_push")?.value;
        let info = ctx.dep(&image).clone();
        let Some(layout) = info.meta.get(META_LAYOUT).cloned() else {
            return Err(ctx.error_at(
                "image",
                format!("`image` of {}: {image} is not an oci_image", target.label),
            ));
        };
        let repository = ctx.attrs().required_str("repository", "an oci_push")?;
        RepoRef::parse(&repository.value).map_err(|e| ctx.error_at("repository", e))?;
        let settings = Settings::load(ctx.workspace)?;
        let stamp = stamp_values(ctx)?;
        let mut tags = Vec::new();
        for tag in ctx.attrs().str_list("tags")? {
            let value = stamped(ctx, &stamp, &tag)?;
            if !valid_tag(&value) {
                return Err(kiln_engine::Error::new(
                    kiln_engine::ErrorKind::Config,
                    format!("tag `{value}` of {}: tags are {TAG_SYNTAX}", target.label),
                )
                .at(ctx.attrs().location(tag.span.start)));
            }
            tags.push(value);
        }
        let out = ctx.out_path(&format!("{}/push.json", target.label.name));
        let params = serde_json::json!({ "repository": repository.value, "tags": tags });
        ctx.add(Action {
            owner: target.label.clone(),
            mnemonic: "OciPushPlan".into(),
            discriminator: String::new(),
            inputs: info.files[..1].to_vec(),
            outputs: vec![out],
            kind: builtin("oci_push_plan", 1, &params, write_plan),
            platform: None,
            show_output: false,
        });
        Ok(TargetInfo {
            run: Some(runner(Plan {
                repository: repository.value,
                tags,
                layout,
                settings,
                mount_from: info.meta.get(META_PULL_FROM).cloned().into_iter().collect(),
            })),
            ..TargetInfo::default()
        })
    }
}

fn write_plan(ctx: &BuiltinCtx) -> std::result::Result<(), String> {
    let digest = std::fs::read_to_string(ctx.input(&ctx.inputs[0].path))
        .map_err(|e| format!("read the image digest: {e}"))?;
    let mut plan = ctx.params.clone();
    plan["digest"] = serde_json::Value::String(digest.trim().to_string());
    let out = ctx.root.join(&ctx.outputs[0]);
    std::fs::write(&out, plan.to_string()).map_err(|e| format!("write {}: {e}", out.display()))
}

/// What `kiln run` pushes.
struct Plan {
    repository: String,
    tags: Vec<String>,
    layout: String,
    settings: Settings,
    /// Repositories blobs may be mounted from (the pulled base's).
    mount_from: Vec<String>,
}

fn runner(plan: Plan) -> Runner {
    Runner(Arc::new(move |rc: &RunCtx| {
        let Plan {
            repository,
            tags,
            layout,
            settings,
            mount_from,
        } = &plan;
        let repo = Repository::for_push(repository, settings, mount_from)?;
        let (digest, counts) = repo.push_layout(&rc.root.join(layout), tags)?;
        eprintln!("kiln: pushed {repository}: {counts}");
        if tags.is_empty() {
            return Ok(format!("{repository}@{digest}"));
        }
        let lines: Vec<String> = tags
            .iter()
            .map(|tag| format!("{repository}:{tag}@{digest}"))
            .collect();
        Ok(lines.join("\n"))
    }))
}
