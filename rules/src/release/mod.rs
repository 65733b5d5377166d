//! `release`: collects release files into `kiln-out/<package>/<target>/<version>/` with an
//! in-toto / SLSA provenance statement beside them.
//!
//! ```toml
//! [release.release]
//! version = "{STABLE_GIT_DESCRIBE}"      # stamp variables substituted, as in go_binary
//! srcs = [":checksums", ":image"]          # labels and/or files of this package
//! store = "releases"                       # optional: `kiln run` publishes there
//! sign = true                              # optional: `kiln run` signs (see crate::release::sign)
//! ```
//!
//! With `store`, `kiln run //:release` publishes the built release to the store, and
//! `kiln release list` / `kiln rollback VERSION` read and move it: see
//! [`crate::release::store`].
//!
//! # Layout
//!
//! A file below its target's own output directory `kiln-out/<pkg>/<name>/` keeps its path
//! relative to it (a `checksums` target's `SHA256SUMS` and copies land at the top, so
//! `sha256sum -c SHA256SUMS` works in the release directory; a `go_binary`'s
//! `linux_amd64/server` keeps its platform directory). Any other file (a genrule output,
//! a source file) goes by its file name. Two files landing at one path must be identical
//! (e.g. an image's `index.digest` and a checksums target's copy of it); if they differ the
//! action fails naming both. Directories as srcs are refused (their files are known only
//! once built).
//!
//! # Provenance
//!
//! `provenance.intoto.json` is an in-toto Statement v1 whose predicate is SLSA
//! Provenance v1:
//!
//! | field                                   | holds                                          |
//! |-----------------------------------------|------------------------------------------------|
//! | `subject`                               | every released file (path in the release dir) and its sha256 |
//! | `buildDefinition.buildType`             | [`BUILD_TYPE`]                                 |
//! | `buildDefinition.externalParameters`    | `target` (the label), `command` (`kiln build <label>`), `version` |
//! | `buildDefinition.internalParameters`    | `stamp`: every stamp value of the build        |
//! | `buildDefinition.resolvedDependencies`  | every source file that went into the released files (workspace-relative path, sha256), then every tool (name, kiln's digest: `blake3` of a tool file, `kilnTreeBlake3` of a toolchain tree such as GOROOT) |
//! | `runDetails.builder.id`                 | `https://kiln.build/kiln@<kiln version>`       |
//!
//! Nothing in it depends on the machine, the workspace path or the time (no `startedOn`,
//! no invocation id), so the same sources give the same bytes anywhere. Keys are in a fixed
//! order (serde structs), arrays sorted by name, JSON pretty-printed with a final newline.
//!
//! The sources and tools come from [`Analysis::transitive`] over the released files; the
//! sources are inputs of the release action (their sha256 is computed in the sandbox) and
//! the tools are the builtin's `tools` (their digests come from the executor), so editing
//! any source or changing a toolchain re-runs the action.
//!
//! Decision: one builtin action (`Release`, version 1) both copies and writes the
//! statement, and declares each output file (not the directory), so dependents can name
//! the release's files and every file is checked to be written.
//!
//! # The release domain
//!
//! Beside the `release` rule, this folder holds what a release is made of: the binary
//! transforms [`strip`] and [`upx`] (sharing `transform`), [`checksums`],
//! [`k8s`] manifests, the signatures of [`sign`], and the release history of [`store`].

pub mod checksums;
pub mod k8s;
pub mod sign;
pub mod store;
pub mod strip;
mod transform;
pub mod upx;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kiln_engine::action::{Action, ActionKind, Artifact, Builtin, BuiltinCtx, Tool};
use kiln_engine::label::Label;
use kiln_engine::rule::{labels_in, parse_label, Analysis, Rule, RunCtx, Runner, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

use crate::release::checksums::{copy, sha256_file, src_groups, target_out_dir, SrcGroup};

const FIELDS: &[&str] = &[
    "srcs",
    "version",
    "store",
    "sign",
    "sign_key_env",
    "images",
    "tag",
];

/// The statement's file name in the release directory.
pub const PROVENANCE_FILE: &str = "provenance.intoto.json";

/// `buildDefinition.buildType` of kiln's provenance.
pub const BUILD_TYPE: &str = "https://kiln.build/release/v1";

pub struct Release;

impl Rule for Release {
    fn name(&self) -> &'static str {
        "release"
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a release")?;
        let mut deps = labels_in(&target.attrs, "srcs", &target.label.package)?;
        for (label, _) in target.attrs.str_map("images")? {
            deps.push(parse_label(&target.attrs, &label, &target.label.package)?);
        }
        Ok(deps)
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let (version, stamp) = version(ctx)?;
        let groups = src_groups(ctx, "srcs")?;
        if groups.is_empty() {
            return Err(ctx
                .error_at("srcs", "a release needs at least one entry in `srcs`")
                .hint("name what to ship, e.g. srcs = [\":checksums\"]"));
        }
        let files = place_files(ctx, &groups)?;
        let released: Vec<Artifact> = groups.into_iter().flat_map(|g| g.files).collect();
        let (sources, tools) = ctx.transitive(&released);
        let tools = unique_names(tools);
        let params = Params {
            dir: ctx.out_path(&format!("{}/{version}", target.label.name)),
            files,
            sources: sources.iter().map(|a| a.path.clone()).collect(),
            tools: tools
                .iter()
                .map(|t| ToolParam {
                    name: t.name.clone(),
                    tree: t.tree,
                })
                .collect(),
            target: target.label.to_string(),
            version: version.clone(),
            stamp,
            builder: format!("https://kiln.build/kiln@{}", env!("CARGO_PKG_VERSION")),
        };
        let mut outputs: Vec<String> = params.files.iter().map(|f| params.path(&f.name)).collect();
        outputs.push(params.path(PROVENANCE_FILE));
        let images = release_images(ctx)?;
        let mut inputs = released;
        inputs.extend(sources);
        // The images' digests: so that `kiln run` builds their layouts, which it pushes.
        inputs.extend(images.iter().map(|i| i.digest.clone()));
        let mut seen = std::collections::HashSet::new();
        inputs.retain(|a| seen.insert(a.path.clone()));
        let action = Action {
            owner: target.label.clone(),
            mnemonic: "Release".into(),
            discriminator: String::new(),
            inputs,
            outputs: outputs.clone(),
            kind: ActionKind::Builtin(Builtin {
                name: "release".into(),
                version: 1,
                params: serde_json::to_value(&params).expect("params serialize"),
                tools,
                run: Arc::new(run),
            }),
            platform: None,
            show_output: false,
        };
        let id = ctx.add(action);
        let mut info = TargetInfo {
            files: outputs.iter().map(|p| ctx.output(id, p)).collect(),
            ..TargetInfo::default()
        };
        let store = ctx.attrs().str("store")?.map(|s| s.value);
        let sign = match ctx.attrs().bool("sign")?.unwrap_or(false) {
            true => Some(key_env(ctx)?),
            false => None,
        };
        if store.is_none() && !images.is_empty() {
            return Err(ctx
                .error_at(
                    "images",
                    "`images` are pushed when a release is published: it needs `store`",
                )
                .hint("add store = \"DIR\" to the release"));
        }
        if store.is_some() || sign.is_some() {
            let tag = release_tag(ctx, &version, !images.is_empty())?;
            let publish = Publish {
                store,
                sign,
                images,
                tag,
                version: version.clone(),
                dir: params.dir.clone(),
                registries: crate::oci::registry::Settings::load(ctx.workspace)?,
            };
            info.run = Some(publish.runner());
        }
        info.meta.insert("version".into(), version);
        Ok(info)
    }
}

/// What `kiln run` of a release with `sign` or a `store` does: signs the built release
/// directory `dir` (workspace-relative) with the key the variable `sign` names (see
/// [`crate::release::sign`]), then publishes it to the store, pushing its images tagged with the
/// version and `tag` (see [`crate::release::store`]).
struct Publish {
    store: Option<String>,
    sign: Option<String>,
    images: Vec<ReleaseImage>,
    tag: String,
    version: String,
    dir: String,
    registries: crate::oci::registry::Settings,
}

/// An image a release pushes: its repository, its layout directory and index digest.
struct ReleaseImage {
    repository: String,
    layout: String,
    digest: Artifact,
}

impl Publish {
    fn runner(self) -> Runner {
        Runner(Arc::new(move |rc: &RunCtx| {
            let dir = rc.root.join(&self.dir);
            let mut said = Vec::new();
            if let Some(env) = &self.sign {
                said.push(crate::release::sign::sign_release(
                    &dir,
                    &self.version,
                    env,
                )?);
            }
            if let Some(store) = &self.store {
                let store = crate::release::store::Store::new(rc.root.join(store))
                    .with_registries(self.registries.clone());
                said.push(store.publish(&self.version, &dir, || self.push(rc.root))?);
            }
            Ok(said.join("\n"))
        }))
    }

    fn push(
        &self,
        root: &std::path::Path,
    ) -> std::result::Result<Vec<crate::release::store::PushedImage>, String> {
        let tags = [self.version.clone(), self.tag.clone()];
        self.images
            .iter()
            .map(|i| {
                let repo = crate::oci::registry::Repository::for_push(
                    &i.repository,
                    &self.registries,
                    &[],
                )?;
                let (digest, counts) = repo.push_layout(&root.join(&i.layout), &tags)?;
                eprintln!("kiln: pushed {}: {counts}", i.repository);
                Ok(crate::release::store::PushedImage {
                    repository: i.repository.clone(),
                    digest,
                    tag: self.tag.clone(),
                })
            })
            .collect()
    }
}

/// `images`: oci_image labels and the repositories they are pushed to.
fn release_images(ctx: &Analysis<'_>) -> Result<Vec<ReleaseImage>> {
    let mut out = Vec::new();
    for (label, repository) in ctx.attrs().str_map("images")? {
        let parsed = parse_label(ctx.attrs(), &label, &ctx.label().package)?.value;
        crate::oci::registry::RepoRef::parse(&repository.value).map_err(|e| {
            Error::new(ErrorKind::Config, e).at(ctx.attrs().location(repository.span.start))
        })?;
        let info = ctx.dep(&parsed);
        let layout = info.meta.get(crate::oci::rules::META_LAYOUT);
        let digest = info
            .files
            .iter()
            .find(|f| f.path.ends_with("/index.digest"));
        let (Some(layout), Some(digest)) = (layout, digest) else {
            return Err(
                Error::new(ErrorKind::Config, format!("{parsed} is not an oci_image"))
                    .at(ctx.attrs().location(label.span.start))
                    .hint("images maps oci_image labels to the repositories they are pushed to"),
            );
        };
        out.push(ReleaseImage {
            repository: repository.value,
            layout: layout.clone(),
            digest: digest.clone(),
        });
    }
    Ok(out)
}

/// `sign_key_env`: the variable naming the signing key file.
fn key_env(ctx: &Analysis<'_>) -> Result<String> {
    let Some(env) = ctx.attrs().str("sign_key_env")? else {
        return Ok("KILN_SIGNING_KEY".into());
    };
    let valid = !env.value.is_empty()
        && env
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !env.value.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return Err(ctx
            .error_at("sign_key_env", format!("`{}` is not an environment variable name", env.value))
            .hint("name the variable that holds the key file's path, e.g. sign_key_env = \"KILN_SIGNING_KEY\""));
    }
    Ok(env.value)
}

/// The stamped `version` (checked to be one path component) and every stamp value.
/// The moving tag (`tag`, default `stable`) its images get besides the version, both
/// checked as tags when it pushes images: a bad one would fail the push after the
/// files were published.
fn release_tag(ctx: &Analysis<'_>, version: &str, images: bool) -> Result<String> {
    use crate::oci::registry::{valid_tag, TAG_SYNTAX};
    let tag = ctx.attrs().str("tag")?;
    if let Some(tag) = tag.as_ref().filter(|t| !valid_tag(&t.value)) {
        return Err(ctx
            .error_at("tag", format!("tag `{}` is not an image tag", tag.value))
            .hint(format!("tags are {TAG_SYNTAX}, e.g. stable")));
    }
    if images && !valid_tag(version) {
        return Err(ctx
            .error_at(
                "version",
                format!("version `{version}` tags the release's images, and is not an image tag"),
            )
            .hint(format!("tags are {TAG_SYNTAX}, e.g. v1.2.3")));
    }
    Ok(tag.map_or("stable".into(), |t| t.value))
}

fn version(ctx: &Analysis<'_>) -> Result<(String, BTreeMap<String, String>)> {
    let attrs = ctx.attrs();
    let raw = attrs.required_str("version", "a release")?;
    let defaults = match ctx.workspace.section("stamp")? {
        Some(t) => t.str_map_self()?,
        None => BTreeMap::new(),
    };
    let stamp = ctx.exec.stamp(&defaults).clone();
    let at = attrs.location(raw.span.start);
    let version = kiln_engine::host::substitute(&raw.value, &stamp)
        .map_err(|e| Error::new(ErrorKind::Config, e).at(at.clone()))?;
    if !crate::release::store::is_version(&version) {
        return Err(Error::new(
            ErrorKind::Config,
            format!("version `{version}` cannot name a directory"),
        )
        .at(at)
        .hint("a version is one path component not starting with `.`, other than `current` and `releases.json`, e.g. v1.2.3"));
    }
    Ok((version, stamp))
}

/// Where each file goes in the release directory. Files of different paths that land at
/// one name must have the same content (checked when the action runs): a checksums
/// target's copy of an image's `index.digest` and the image's own, say.
fn place_files(ctx: &Analysis<'_>, groups: &[SrcGroup]) -> Result<Vec<Placed>> {
    let mut placed: BTreeMap<String, Placed> = BTreeMap::new();
    for group in groups {
        let own_dir = group.label.as_ref().map(target_out_dir);
        for file in &group.files {
            let name = own_dir
                .as_deref()
                .and_then(|d| file.path.strip_prefix(d))
                .unwrap_or(file.file_name())
                .to_string();
            if name == PROVENANCE_FILE {
                return Err(ctx.error_at(
                    "srcs",
                    format!("`{}` would replace the provenance statement", file.path),
                ));
            }
            let entry = placed.entry(name.clone()).or_insert_with(|| Placed {
                input: file.path.clone(),
                name,
                same: Vec::new(),
            });
            if entry.input != file.path && !entry.same.contains(&file.path) {
                entry.same.push(file.path.clone());
            }
        }
    }
    Ok(placed.into_values().collect())
}

/// Tools with names made unique (`go`, `go-2`, …): the builtin sees digests by name.
fn unique_names(tools: Vec<Tool>) -> Vec<Tool> {
    let mut count: HashMap<String, usize> = HashMap::new();
    tools
        .into_iter()
        .map(|mut t| {
            let n = count.entry(t.name.clone()).or_default();
            *n += 1;
            if *n > 1 {
                t.name = format!("{}-{n}", t.name);
            }
            t
        })
        .collect()
}

/// One released file: where it is in the sandbox, and its path in the release directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Placed {
    input: String,
    name: String,
    /// Other inputs released under the same name, which must have the same content.
    #[serde(default)]
    same: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ToolParam {
    name: String,
    tree: bool,
}

/// The builtin's parameters (they enter the action key).
#[derive(Debug, Serialize, Deserialize)]
struct Params {
    /// `kiln-out/<package>/<target>/<version>`.
    dir: String,
    files: Vec<Placed>,
    sources: Vec<String>,
    tools: Vec<ToolParam>,
    target: String,
    version: String,
    stamp: BTreeMap<String, String>,
    builder: String,
}

impl Params {
    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }
}

/// The builtin: copy the files, then write the statement.
fn run(ctx: &BuiltinCtx) -> std::result::Result<(), String> {
    let params: Params = serde_json::from_value(ctx.params.clone())
        .map_err(|e| format!("decode the release parameters: {e}"))?;
    let mut subject = Vec::new();
    for file in &params.files {
        // The copy is hashed, so that the statement speaks of the file released.
        let to = ctx.root.join(params.path(&file.name));
        copy(&ctx.input(&file.input), &to)?;
        let hex = sha256_file(&to)?;
        for other in &file.same {
            if sha256_file(&ctx.input(other))? != hex {
                return Err(format!(
                    "release `{}` and `{other}` as `{}`: both would have that name and they differ",
                    file.input, file.name
                ));
            }
        }
        subject.push(Resource::sha256(&file.name, hex));
    }
    let statement = statement(ctx, &params, subject)?;
    let mut json = serde_json::to_string_pretty(&statement).expect("statements serialize");
    json.push('\n');
    let path = ctx.root.join(params.path(PROVENANCE_FILE));
    std::fs::write(&path, json).map_err(|e| format!("write {}: {e}", path.display()))
}

fn statement<'a>(
    ctx: &BuiltinCtx,
    params: &'a Params,
    subject: Vec<Resource>,
) -> std::result::Result<Statement<'a>, String> {
    let mut deps = Vec::new();
    for source in &params.sources {
        let hex = sha256_file(&ctx.input(source))?;
        deps.push(Resource::sha256(source, hex).kind("source"));
    }
    for tool in &params.tools {
        let digest = ctx
            .tool_digests
            .get(&tool.name)
            .ok_or_else(|| format!("find the digest of tool `{}`", tool.name))?;
        let algorithm = if tool.tree {
            "kilnTreeBlake3"
        } else {
            "blake3"
        };
        let resource = Resource {
            name: tool.name.clone(),
            digest: BTreeMap::from([(algorithm, digest.to_hex())]),
            annotations: None,
        };
        deps.push(resource.kind("toolchain"));
    }
    Ok(Statement {
        type_: "https://in-toto.io/Statement/v1",
        subject,
        predicate_type: "https://slsa.dev/provenance/v1",
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE,
                external_parameters: ExternalParameters {
                    target: &params.target,
                    command: format!("kiln build {}", params.target),
                    version: &params.version,
                },
                internal_parameters: InternalParameters {
                    stamp: &params.stamp,
                },
                resolved_dependencies: deps,
            },
            run_details: RunDetails {
                builder: BuilderId {
                    id: &params.builder,
                },
            },
        },
    })
}

/// An in-toto Statement v1.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Statement<'a> {
    #[serde(rename = "_type")]
    type_: &'static str,
    subject: Vec<Resource>,
    predicate_type: &'static str,
    predicate: Provenance<'a>,
}

/// An in-toto ResourceDescriptor (the fields kiln uses).
#[derive(Serialize)]
struct Resource {
    name: String,
    digest: BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'static str, &'static str>>,
}

impl Resource {
    fn sha256(name: &str, hex: String) -> Resource {
        Resource {
            name: name.to_string(),
            digest: BTreeMap::from([("sha256", hex)]),
            annotations: None,
        }
    }

    /// Marks what the dependency is: `source` or `toolchain`.
    fn kind(mut self, kind: &'static str) -> Resource {
        self.annotations = Some(BTreeMap::from([("kind", kind)]));
        self
    }
}

/// SLSA Provenance v1.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Provenance<'a> {
    build_definition: BuildDefinition<'a>,
    run_details: RunDetails<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildDefinition<'a> {
    build_type: &'static str,
    external_parameters: ExternalParameters<'a>,
    internal_parameters: InternalParameters<'a>,
    resolved_dependencies: Vec<Resource>,
}

#[derive(Serialize)]
struct ExternalParameters<'a> {
    target: &'a str,
    command: String,
    version: &'a str,
}

#[derive(Serialize)]
struct InternalParameters<'a> {
    stamp: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RunDetails<'a> {
    builder: BuilderId<'a>,
}

#[derive(Serialize)]
struct BuilderId<'a> {
    id: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_lists_subjects_sources_and_tools_in_a_fixed_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("kiln-out/bin")).unwrap();
        std::fs::write(root.join("kiln-out/bin/app"), b"abc").unwrap();
        std::fs::write(root.join("main.go"), b"").unwrap();
        let params = Params {
            dir: "kiln-out/release/v1".into(),
            files: vec![Placed {
                input: "kiln-out/bin/app".into(),
                name: "app".into(),
                same: Vec::new(),
            }],
            sources: vec!["main.go".into()],
            tools: vec![ToolParam {
                name: "go".into(),
                tree: true,
            }],
            target: "//:release".into(),
            version: "v1".into(),
            stamp: BTreeMap::from([("STABLE_GIT_DESCRIBE".into(), "v1".into())]),
            builder: "https://kiln.build/kiln@0.1.0".into(),
        };
        let value = serde_json::to_value(&params).unwrap();
        let go = kiln_cache::Digest::of_bytes(b"go");
        let tools = BTreeMap::from([("go".to_string(), go)]);
        let ctx = BuiltinCtx::new(root, root, &[], &[], &value, &tools);
        run(&ctx).unwrap();
        let text = std::fs::read_to_string(root.join("kiln-out/release/v1/provenance.intoto.json"))
            .unwrap();
        let order = [
            "\"_type\"",
            "\"subject\"",
            "\"predicateType\"",
            "\"predicate\"",
        ];
        let at: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["subject"][0]["digest"]["sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let deps = &v["predicate"]["buildDefinition"]["resolvedDependencies"];
        assert_eq!(deps[0]["name"], "main.go");
        assert_eq!(
            deps[0]["digest"]["sha256"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(deps[1]["digest"]["kilnTreeBlake3"], go.to_hex());
        assert_eq!(
            v["predicate"]["buildDefinition"]["externalParameters"]["command"],
            "kiln build //:release"
        );
        assert_eq!(
            std::fs::read(root.join("kiln-out/release/v1/app")).unwrap(),
            b"abc"
        );
    }

    #[test]
    fn files_released_under_one_name_must_be_identical() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, text) in [("a/x", "1"), ("b/x", "1"), ("c/x", "2")] {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), text).unwrap();
        }
        let run_with = |same: &str| {
            let params = Params {
                dir: "out/v1".into(),
                files: vec![Placed {
                    input: "a/x".into(),
                    name: "x".into(),
                    same: vec![same.into()],
                }],
                sources: Vec::new(),
                tools: Vec::new(),
                target: "//:release".into(),
                version: "v1".into(),
                stamp: BTreeMap::new(),
                builder: "https://kiln.build/kiln@0".into(),
            };
            let value = serde_json::to_value(&params).unwrap();
            let tools = BTreeMap::new();
            let ctx = BuiltinCtx::new(root, root, &[], &[], &value, &tools);
            run(&ctx)
        };
        run_with("b/x").unwrap();
        let err = run_with("c/x").unwrap_err();
        assert!(err.contains("`a/x`") && err.contains("`c/x`"), "{err}");
    }

    #[test]
    fn duplicate_tool_names_are_told_apart() {
        let tool = |p: &str| Tool {
            name: "go".into(),
            path: p.into(),
            tree: true,
        };
        let names: Vec<String> = unique_names(vec![tool("/a"), tool("/b")])
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["go", "go-2"]);
    }
}
