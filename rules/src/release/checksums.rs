//! `checksums`: a `SHA256SUMS` file beside copies of release files under stable names,
//! so `sha256sum -c SHA256SUMS` run in that directory verifies them.
//!
//! ```toml
//! [checksums.checksums]
//! srcs = [":server", ":server_packed"]     # labels and/or files of this package
//! ```
//!
//! Output: `kiln-out/<package>/<target>/SHA256SUMS` and one copy per file, named
//!
//! | the file                                  | its name                               |
//! |-------------------------------------------|----------------------------------------|
//! | built for a platform (e.g. a `go_binary`) | `<src target>_<os>_<arch>` plus the file's extension, if any: `server_linux_amd64`, `server_windows_amd64.exe`, `image_linux_arm64.tar` |
//! | anything else (a genrule output, a file)  | its file name: `notes.txt`             |
//!
//! where `<src target>` is the name of the label as written in `srcs`. Two files that
//! would get the same name are an error naming both.
//!
//! One builtin action (`Checksums`, version 1) does the work: it copies each input (mode
//! kept) and writes `<sha256 hex>  <name>` lines, sorted by name, in the text format
//! `sha256sum` writes and `sha256sum -c` reads. The copies cost no space in the cache:
//! their blobs are the originals'.
//!
//! Decisions: a src that provides a directory (its path ends in `/`) is refused, since the
//! file names below it are known only once it ran; names with a newline or a backslash
//! are refused, since `sha256sum` would escape them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use kiln_engine::action::{Action, ActionKind, Artifact, Builtin, BuiltinCtx};
use kiln_engine::label::Label;
use kiln_engine::rule::{labels_in, parse_label, Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::{TargetDecl, OUT_DIR};
use kiln_engine::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const FIELDS: &[&str] = &["srcs"];

/// The file the rule writes beside the copies.
pub const SUMS_FILE: &str = "SHA256SUMS";

pub struct Checksums;

impl Rule for Checksums {
    fn name(&self) -> &'static str {
        "checksums"
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a checksums target")?;
        labels_in(&target.attrs, "srcs", &target.label.package)
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let groups = src_groups(ctx, "srcs")?;
        if groups.is_empty() {
            return Err(ctx
                .error_at(
                    "srcs",
                    "a checksums target needs at least one entry in `srcs`",
                )
                .hint("name the release files, e.g. srcs = [\":server\"]"));
        }
        let dir = ctx.out_path(&target.label.name);
        let entries = name_files(ctx, &groups, &dir)?;
        let params = Params {
            sums: format!("{dir}/{SUMS_FILE}"),
            files: entries,
        };
        let mut outputs = vec![params.sums.clone()];
        outputs.extend(params.files.iter().map(|e| e.output.clone()));
        let action = Action {
            owner: target.label.clone(),
            mnemonic: "Checksums".into(),
            discriminator: String::new(),
            inputs: groups.into_iter().flat_map(|g| g.files).collect(),
            outputs: outputs.clone(),
            kind: ActionKind::Builtin(Builtin {
                name: "checksums".into(),
                version: 1,
                params: serde_json::to_value(&params).expect("params serialize"),
                tools: Vec::new(),
                run: Arc::new(run),
            }),
            platform: None,
            show_output: false,
        };
        let id = ctx.add(action);
        Ok(TargetInfo {
            files: outputs.iter().map(|p| ctx.output(id, p)).collect(),
            ..TargetInfo::default()
        })
    }
}

/// The files of one entry of a list attribute, with the label they came from (None for
/// files of this package).
pub(crate) struct SrcGroup {
    pub label: Option<Label>,
    /// The entry as written, for messages.
    pub written: String,
    pub files: Vec<Artifact>,
}

/// The entries of `attr` in order; directories (paths ending in `/`) are refused.
pub(crate) fn src_groups(ctx: &Analysis<'_>, attr: &str) -> Result<Vec<SrcGroup>> {
    let mut out = Vec::new();
    for s in ctx.attrs().str_list(attr)? {
        let (label, files) = if s.value.starts_with(':') || s.value.starts_with("//") {
            let label = parse_label(ctx.attrs(), &s, ctx.package())?.value;
            let files = ctx.dep(&label).files.clone();
            (Some(label), files)
        } else if s.value.contains(['*', '?', '[']) {
            (None, ctx.glob(&s)?)
        } else {
            (None, vec![ctx.source_file(&s)?])
        };
        if let Some(dir) = files.iter().find(|a| a.path.ends_with('/')) {
            return Err(ctx.error_at(
                attr,
                format!(
                    "`{}` provides the directory `{}`, and only files can be collected",
                    s.value, dir.path
                ),
            ));
        }
        out.push(SrcGroup {
            label,
            written: s.value,
            files,
        });
    }
    Ok(out)
}

/// `kiln-out/<package>/<name>/`: where a target's outputs usually live.
pub(crate) fn target_out_dir(label: &Label) -> String {
    if label.package.is_empty() {
        format!("{OUT_DIR}/{}/", label.name)
    } else {
        format!("{OUT_DIR}/{}/{}/", label.package, label.name)
    }
}

/// One file to copy and list.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    input: String,
    output: String,
    name: String,
}

/// The builtin's parameters (they enter the action key).
#[derive(Debug, Serialize, Deserialize)]
struct Params {
    sums: String,
    files: Vec<Entry>,
}

/// Gives every file its stable name, sorted by name; refuses collisions.
fn name_files(ctx: &Analysis<'_>, groups: &[SrcGroup], dir: &str) -> Result<Vec<Entry>> {
    let mut named: BTreeMap<String, (String, &str)> = BTreeMap::new();
    for group in groups {
        for file in &group.files {
            let name = stable_name(group.label.as_ref(), file);
            if name.contains(['\n', '\\', '/']) || name == SUMS_FILE {
                return Err(ctx.error_at(
                    "srcs",
                    format!("`{}` cannot be listed under the name `{name}`", file.path),
                ));
            }
            if let Some((other, from)) = named.get(&name) {
                if *other == file.path {
                    continue;
                }
                return Err(ctx
                    .error_at(
                        "srcs",
                        format!(
                            "`{other}` (from `{from}`) and `{}` (from `{}`) would both be named `{name}`",
                            file.path, group.written
                        ),
                    )
                    .hint("list them in separate checksums targets, or rename one of the targets"));
            }
            named.insert(name, (file.path.clone(), &group.written));
        }
    }
    Ok(named
        .into_iter()
        .map(|(name, (input, _))| Entry {
            input,
            output: format!("{dir}/{name}"),
            name,
        })
        .collect())
}

/// `<target>_<os>_<arch>[.ext]` for a file built for a platform, else the file name.
fn stable_name(label: Option<&Label>, file: &Artifact) -> String {
    match (label, &file.platform) {
        (Some(label), Some(platform)) => {
            let name = file.file_name();
            let ext = match name.rfind('.') {
                Some(i) if i > 0 => &name[i..],
                _ => "",
            };
            format!("{}_{}{ext}", label.name, platform.replace('/', "_"))
        }
        _ => file.file_name().to_string(),
    }
}

/// The builtin: copy every input to its name, then write the sums.
fn run(ctx: &BuiltinCtx) -> std::result::Result<(), String> {
    let params: Params = serde_json::from_value(ctx.params.clone())
        .map_err(|e| format!("decode the checksums parameters: {e}"))?;
    let mut text = String::new();
    for entry in &params.files {
        // The copy is hashed, so that each line matches the file beside it.
        let output = ctx.root.join(&entry.output);
        copy(&ctx.input(&entry.input), &output)?;
        let hex = sha256_file(&output)?;
        text.push_str(&format!("{hex}  {}\n", entry.name));
    }
    let sums = ctx.root.join(&params.sums);
    std::fs::write(&sums, text).map_err(|e| format!("write {}: {e}", sums.display()))
}

/// Copies a file with its mode.
pub(crate) fn copy(from: &Path, to: &Path) -> std::result::Result<(), String> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
}

/// The SHA-256 of a file, as lowercase hex.
pub(crate) fn sha256_file(path: &Path) -> std::result::Result<String, String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Bytes as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(path: &str, platform: Option<&str>) -> Artifact {
        Artifact {
            path: path.into(),
            producer: Some(0),
            platform: platform.map(String::from),
        }
    }

    #[test]
    fn names_carry_target_and_platform() {
        let server = Label::new("", "server");
        let linux = artifact("kiln-out/server/linux_amd64/server", Some("linux/amd64"));
        let win = artifact(
            "kiln-out/server/windows_amd64/server.exe",
            Some("windows/amd64"),
        );
        let notes = artifact("kiln-out/notes.txt", None);
        let tar = artifact("kiln-out/image/linux_arm64.tar", Some("linux/arm64"));
        let image = Label::new("", "image");
        assert_eq!(stable_name(Some(&image), &tar), "image_linux_arm64.tar");
        assert_eq!(stable_name(Some(&server), &linux), "server_linux_amd64");
        assert_eq!(stable_name(Some(&server), &win), "server_windows_amd64.exe");
        assert_eq!(stable_name(Some(&server), &notes), "notes.txt");
        assert_eq!(stable_name(None, &notes), "notes.txt");
    }

    #[test]
    fn the_builtin_writes_sha256sum_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
        std::fs::write(dir.path().join("in/a"), b"abc").unwrap();
        let params = Params {
            sums: "out/SHA256SUMS".into(),
            files: vec![Entry {
                input: "in/a".into(),
                output: "out/a_linux_amd64".into(),
                name: "a_linux_amd64".into(),
            }],
        };
        let params = serde_json::to_value(&params).unwrap();
        let tools = BTreeMap::new();
        let ctx = BuiltinCtx::new(dir.path(), dir.path(), &[], &[], &params, &tools);
        run(&ctx).unwrap();
        let sums = std::fs::read_to_string(dir.path().join("out/SHA256SUMS")).unwrap();
        assert_eq!(
            sums,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  a_linux_amd64\n"
        );
        assert_eq!(
            std::fs::read(dir.path().join("out/a_linux_amd64")).unwrap(),
            b"abc"
        );
    }
}
