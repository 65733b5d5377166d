//! `oci_pull`: a base image from a registry, pinned by digest.
//!
//! ```toml
//! [oci_pull.distroless]
//! image = "gcr.io/distroless/static-debian12@sha256:…"   # a tag alone is refused
//! platforms = ["linux/amd64", "linux/arm64"]            # optional, see below
//! ```
//!
//! Each platform is one builtin `OciPull` action, run during analysis (an oci_image
//! needs the layers' diff_ids to plan its actions), writing
//! `kiln-out/<package>/<target>/<os>_<arch>/layout/`: the pinned manifest or index, and
//! that platform's manifest, config and layers. It is a fixed-output action, the only
//! builtin with network: its key is the repository, the digest and the platform, never
//! the credentials or the CA file, and its output is checked against the digest blob by
//! blob ([`crate::oci::registry::pull`]), so a result from any cache, local or
//! remote, is the pinned image.
//!
//! Which platforms: without `platforms`, those the images built on it need, pulled as
//! each oci_image (whose platforms are its own `platforms` or its go_binary files') is
//! analyzed ([`pull_platform`]); the target alone pulls nothing. With `platforms`, those
//! are pulled with the target, and an image needing another is an error naming it. A
//! platform the pinned image lacks is an error naming the platform and the reference;
//! so are a wrong digest and a blob that does not match.
//!
//! `image = "host/repo:tag"` without a digest is refused at analysis; the message asks
//! the registry for the tag's digest and prints the line to pin. Credentials and TLS as
//! for `oci_push`; `base = ":distroless"` in an oci_image uses it, with its config.

use std::sync::Arc;

use kiln_engine::action::{Action, ActionKind, Artifact, Builtin, BuiltinCtx};
use kiln_engine::label::Label;
use kiln_engine::rule::{Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

use crate::oci::registry::pull::hex_of;
use crate::oci::registry::{settings, Repository, Settings};
use crate::oci::rules::META_PULL;
use crate::oci::Platform;

const FIELDS: &[&str] = &["image", "platforms"];
/// 2: one action per platform (1 pulled every listed platform in one).
const VERSION: u32 = 2;

pub struct OciPull;

/// The action's parameters: all of its key besides the builtin's name and version.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PullParams {
    repository: String,
    digest: String,
    platform: String,
}

/// What an oci_pull target tells the images built on it (its `META_PULL` meta, JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullSource {
    pub label: String,
    pub repository: String,
    pub digest: String,
    /// `kiln-out/<package>/<target>`: each platform's layout is below it.
    pub dir: String,
    /// The target's `platforms`; empty: whatever the images need.
    pub platforms: Vec<String>,
}

impl PullSource {
    /// The source an oci_pull target's info describes (None for another rule's).
    pub fn of(info: &TargetInfo) -> Option<PullSource> {
        serde_json::from_str(info.meta.get(META_PULL)?).ok()
    }
}

/// One platform's pulled image: its layout directory (workspace-relative) and files.
pub struct Pulled {
    pub layout: String,
    pub files: Vec<Artifact>,
}

impl Rule for OciPull {
    fn name(&self) -> &'static str {
        "oci_pull"
    }

    fn config_sections(&self) -> &'static [&'static str] {
        &[settings::SECTION]
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "an oci_pull")?;
        Ok(Vec::new())
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let settings = Settings::load(ctx.workspace)?;
        let image = ctx.attrs().required_str("image", "an oci_pull")?;
        let (repository, digest) = pinned(ctx, &image, &settings)?;
        let source = PullSource {
            label: target.label.to_string(),
            repository,
            digest,
            dir: ctx.out_path(&target.label.name),
            platforms: platforms(ctx)?,
        };
        let mut files = Vec::new();
        for platform in &source.platforms {
            files.extend(pull_platform(ctx, &source, platform)?.files);
        }
        Ok(TargetInfo {
            files,
            meta: [(
                META_PULL.to_string(),
                serde_json::to_string(&source).expect("plain data"),
            )]
            .into(),
            run: None,
        })
    }
}

/// Pulls `platform` of `source` now (once per build and key, whichever target asks
/// first), as an action of the oci_pull target.
pub fn pull_platform(
    ctx: &mut Analysis<'_>,
    source: &PullSource,
    platform: &str,
) -> Result<Pulled> {
    let owner = Label::parse(&source.label, "").map_err(|e| Error::new(ErrorKind::Label, e))?;
    let layout = format!("{}/{}/layout", source.dir, platform.replace('/', "_"));
    let params = PullParams {
        repository: source.repository.clone(),
        digest: source.digest.clone(),
        platform: platform.to_string(),
    };
    let settings = Settings::load(ctx.workspace)?;
    let action = Action {
        owner,
        mnemonic: "OciPull".into(),
        discriminator: platform.to_string(),
        inputs: Vec::new(),
        outputs: vec![format!("{layout}/")],
        kind: pull_action(&params, settings),
        platform: Some(platform.to_string()),
        show_output: false,
    };
    let files = ctx.run_now_files(action)?;
    Ok(Pulled { layout, files })
}

/// `host/repo@sha256:…` split into repository and digest; a tag alone is an error that
/// prints the digest to pin.
fn pinned(
    ctx: &Analysis<'_>,
    image: &Spanned<String>,
    settings: &Settings,
) -> Result<(String, String)> {
    let at = ctx.attrs().location(image.span.start);
    let error = |message: String| Error::new(ErrorKind::Config, message).at(at.clone());
    if let Some((repo, digest)) = image.value.split_once('@') {
        hex_of(digest).map_err(|e| error(format!("`image` of {}: {e}", ctx.label())))?;
        let repo = strip_tag(repo).0;
        Repository::for_pull(repo, settings).map_err(&error)?;
        return Ok((repo.to_string(), digest.to_string()));
    }
    let (repo, tag) = strip_tag(&image.value);
    let tag = tag.unwrap_or("latest");
    let found = Repository::for_pull(repo, settings).and_then(|r| r.resolve_tag(tag));
    let message = format!(
        "`image` of {} names the tag `{tag}` alone: a pulled base is pinned by digest, so every build uses the same bytes",
        ctx.label()
    );
    Err(match found {
        Ok(digest) => error(message).hint(format!("pin it: image = \"{repo}@{digest}\"")),
        Err(e) => error(message).hint(format!(
            "append @sha256:<digest> (`skopeo inspect docker://{repo}:{tag}` shows it; asking the registry failed: {e})"
        )),
    })
}

/// `host:port/name:tag` → (`host:port/name`, Some(tag)).
fn strip_tag(reference: &str) -> (&str, Option<&str>) {
    let last = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last..].rfind(':') {
        Some(i) => (&reference[..last + i], Some(&reference[last + i + 1..])),
        None => (reference, None),
    }
}

fn platforms(ctx: &Analysis<'_>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in ctx.attrs().str_list("platforms")? {
        if Platform::parse(&p.value).is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("`{}` is not a platform (os/arch)", p.value),
            )
            .at(ctx.attrs().location(p.span.start)));
        }
        if !out.contains(&p.value) {
            out.push(p.value);
        }
    }
    Ok(out)
}

fn pull_action(params: &PullParams, settings: Settings) -> ActionKind {
    let p = params.clone();
    ActionKind::Builtin(Builtin {
        name: "oci_pull".into(),
        version: VERSION,
        params: serde_json::to_value(params).expect("parameters are plain data"),
        tools: Vec::new(),
        run: Arc::new(move |ctx: &BuiltinCtx| run_pull(ctx, &p, &settings)),
    })
}

fn run_pull(
    ctx: &BuiltinCtx,
    p: &PullParams,
    settings: &Settings,
) -> std::result::Result<(), String> {
    let layout = ctx.root.join(ctx.outputs[0].trim_end_matches('/'));
    let platform = Platform::parse(&p.platform)
        .ok_or_else(|| format!("`{}` is not a platform (os/arch)", p.platform))?;
    Repository::for_pull(&p.repository, settings)?.pull(&p.digest, &[platform], &layout)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::strip_tag;

    #[test]
    fn tags_are_split_after_the_last_slash_only() {
        assert_eq!(
            strip_tag("127.0.0.1:5000/base:v1"),
            ("127.0.0.1:5000/base", Some("v1"))
        );
        assert_eq!(
            strip_tag("127.0.0.1:5000/base"),
            ("127.0.0.1:5000/base", None)
        );
    }
}
