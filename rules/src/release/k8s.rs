//! `k8s_manifests`: Kubernetes YAML templates whose image references become the digests
//! of the images the build made.
//!
//! ```toml
//! [k8s_manifests.deploy]
//! srcs = ["deploy/*.yaml"]                                  # templates
//! images = { ":image" = "registry.example.com/hello" }       # oci_image → repository
//! ```
//!
//! In a template, `{image://LABEL}` (e.g. `image: {image://:image}`) becomes
//! `REPOSITORY@sha256:…`: the repository `images` gives for that oci_image and the digest
//! of its image index (its `index.digest`), so a deployment names exactly the bytes
//! built, never a tag that can move. Every reference is checked when the target is
//! analyzed: one naming an image not in `images` is an error at its file, line and
//! column. One builtin (`K8sManifests`) writes the rendered files to
//! `kiln-out/<pkg>/<target>/<file name>`; put the target in a release's `srcs` and each
//! release carries its manifests, so rolling back the deployment is applying the
//! previous release's files (`kubectl apply -f DIR/current/`). The text is otherwise
//! copied as it is: kiln does not parse or reformat the YAML.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_engine::action::{Action, ActionKind, Artifact, Builtin, BuiltinCtx};
use kiln_engine::error::Location;
use kiln_engine::label::Label;
use kiln_engine::rule::{labels_in, parse_label, Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::{Error, ErrorKind, Result};

use crate::oci::registry::RepoRef;

const FIELDS: &[&str] = &["srcs", "images"];
const OPEN: &str = "{image://";

pub struct K8sManifests;

impl Rule for K8sManifests {
    fn name(&self) -> &'static str {
        "k8s_manifests"
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a k8s_manifests")?;
        // Templates may be generated (labels in srcs) too.
        let mut deps = labels_in(&target.attrs, "srcs", &target.label.package)?;
        for (label, _) in target.attrs.str_map("images")? {
            deps.push(parse_label(&target.attrs, &label, &target.label.package)?);
        }
        Ok(deps)
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let images = images(target, ctx)?;
        let templates = ctx.files("srcs")?;
        if templates.is_empty() {
            return Err(ctx
                .error_at(
                    "srcs",
                    "a k8s_manifests needs at least one template in `srcs`",
                )
                .hint("e.g. srcs = [\"deploy/*.yaml\"]"));
        }
        let mut outputs = BTreeMap::new();
        for t in &templates {
            if t.producer.is_none() {
                // A generated template is checked as it is rendered.
                check_references(ctx, t, &images)?;
            }
            let out = ctx.out_path(&format!("{}/{}", target.label.name, t.file_name()));
            if let Some(other) = outputs.insert(out.clone(), t.path.clone()) {
                return Err(ctx.error_at(
                    "srcs",
                    format!("`{other}` and `{}` would both be rendered as {out}", t.path),
                ));
            }
        }
        let mut inputs = templates.clone();
        let mut refs = BTreeMap::new();
        for (label, (repository, digest)) in &images {
            inputs.push(digest.clone());
            refs.insert(label.to_string(), (repository.clone(), digest.path.clone()));
        }
        let params = serde_json::json!({
            "package": target.label.package,
            "templates": templates.iter().map(|t| &t.path).collect::<Vec<_>>(),
            "outputs": outputs.keys().collect::<Vec<_>>(),
            "images": refs,
        });
        let out_paths: Vec<String> = outputs.keys().cloned().collect();
        let id = ctx.add(Action {
            owner: target.label.clone(),
            mnemonic: "K8sManifests".into(),
            discriminator: String::new(),
            inputs,
            outputs: out_paths.clone(),
            kind: ActionKind::Builtin(Builtin {
                name: "k8s-manifests".into(),
                version: 1,
                params,
                tools: Vec::new(),
                run: Arc::new(render),
            }),
            platform: None,
            show_output: false,
        });
        Ok(TargetInfo {
            files: out_paths.iter().map(|p| ctx.output(id, p)).collect(),
            ..TargetInfo::default()
        })
    }
}

/// Each image label with its repository and the artifact holding its index digest.
fn images(target: &TargetDecl, ctx: &Analysis<'_>) -> Result<BTreeMap<Label, (String, Artifact)>> {
    let mut out = BTreeMap::new();
    for (label, repository) in target.attrs.str_map("images")? {
        let parsed = parse_label(&target.attrs, &label, &target.label.package)?.value;
        let at = || ctx.attrs().location(repository.span.start);
        RepoRef::parse(&repository.value).map_err(|e| Error::new(ErrorKind::Config, e).at(at()))?;
        let digest = ctx
            .dep(&parsed)
            .files
            .iter()
            .find(|f| f.path.ends_with("/index.digest"))
            .cloned()
            .ok_or_else(|| {
                Error::new(ErrorKind::Config, format!("{parsed} is not an oci_image"))
                    .at(ctx.attrs().location(label.span.start))
                    .hint("images maps oci_image labels to the repositories they are pushed to")
            })?;
        out.insert(parsed, (repository.value, digest));
    }
    Ok(out)
}

/// Every `{image://LABEL}` of a template names an image of `images`.
fn check_references(
    ctx: &Analysis<'_>,
    template: &Artifact,
    images: &BTreeMap<Label, (String, Artifact)>,
) -> Result<()> {
    let path = ctx.workspace.root.join(&template.path);
    let bytes =
        kiln_engine::workspace::read_file(&ctx.workspace.root, &template.path).map_err(|e| {
            Error::new(
                ErrorKind::MissingFile,
                format!("read {}: {e}", template.path),
            )
        })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::new(
            ErrorKind::MissingFile,
            format!("read {}: {e}", template.path),
        )
    })?;
    for (at, reference) in references(&text) {
        let location = Location::at(&path, &text, at);
        let label = match reference {
            Some(label) => Label::parse(label, ctx.package()).ok(),
            None => None,
        };
        match label {
            Some(label) if images.contains_key(&label) => {}
            Some(label) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{label} is not one of the images of {}", ctx.label()),
                )
                .at(location)
                .hint(format!(
                    "add it to images, e.g. images = {{ \"{label}\" = \"REGISTRY/REPOSITORY\" }}"
                )))
            }
            None => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "an image reference is `{image://LABEL}`, e.g. {image://:image}",
                )
                .at(location))
            }
        }
    }
    Ok(())
}

/// The byte offset of each `{image://…}` and its label (None if it is not closed or
/// empty).
fn references(text: &str) -> Vec<(usize, Option<&str>)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(OPEN) {
        let at = from + i;
        let rest = &text[at + OPEN.len()..];
        let label = rest
            .find(['}', '\n'])
            .filter(|&end| rest.as_bytes()[end] == b'}' && end > 0)
            .map(|end| &rest[..end]);
        out.push((at, label));
        from = at + OPEN.len();
    }
    out
}

fn render(ctx: &BuiltinCtx) -> std::result::Result<(), String> {
    let p = ctx.params;
    let package = p["package"].as_str().unwrap_or_default();
    let mut by_label = BTreeMap::new();
    for (label, value) in p["images"].as_object().into_iter().flatten() {
        let repository = value[0].as_str().unwrap_or_default();
        let digest_file = value[1].as_str().unwrap_or_default();
        let digest = std::fs::read_to_string(ctx.input(digest_file))
            .map_err(|e| format!("read {digest_file}: {e}"))?;
        by_label.insert(label.clone(), format!("{repository}@{}", digest.trim()));
    }
    let templates = p["templates"].as_array().cloned().unwrap_or_default();
    let outputs = p["outputs"].as_array().cloned().unwrap_or_default();
    for (template, out) in templates.iter().zip(&outputs) {
        let (template, out) = (
            template.as_str().unwrap_or_default(),
            out.as_str().unwrap_or_default(),
        );
        let text = std::fs::read_to_string(ctx.input(template))
            .map_err(|e| format!("read {template}: {e}"))?;
        let mut rendered = String::with_capacity(text.len());
        let mut last = 0;
        for (at, label) in references(&text) {
            let label = label
                .and_then(|l| Label::parse(l, package).ok())
                .ok_or_else(|| format!("{template}: a malformed image reference"))?;
            let image = by_label
                .get(&label.to_string())
                .ok_or_else(|| format!("{template}: {label} is not an image of the target"))?;
            rendered.push_str(&text[last..at]);
            rendered.push_str(image);
            last = at + OPEN.len() + text[at + OPEN.len()..].find('}').unwrap_or(0) + 1;
        }
        rendered.push_str(&text[last..]);
        ctx.emit(out.to_string(), rendered.into_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_with_their_offsets() {
        let text = "image: {image://:image}\nother: {image://}\nx: {image://:a\n";
        let found = references(text);
        assert_eq!(found[0], (7, Some(":image")));
        assert_eq!(found[1], (text.find("{image://}").unwrap(), None));
        assert_eq!(found[2].1, None);
    }
}
