//! `go_sbom`: an SPDX 2.3 JSON document for each platform of a `go_binary`, read from the
//! build information Go writes into every binary.
//!
//! ```toml
//! [go_sbom.sbom]
//! binary = ":server"     # a go_binary
//! ```
//!
//! One builtin action per platform (`GoSbom`): it reads the binary's `.go.buildinfo` blob
//! (Go 1.18+ layout: the `\xff Go buildinf:` header, then the Go version and the module
//! information as length-prefixed strings) without running anything, and writes
//! `kiln-out/<pkg>/<target>/<os>_<arch>/<binary>.spdx.json`:
//!
//! | SPDX | from |
//! |---|---|
//! | document `name`, `documentNamespace` | the binary's name, platform and sha256 (`https://kiln.build/spdx/<name>/<os>_<arch>/<sha256>`): the same binary, the same document |
//! | `creationInfo.created` | SOURCE_DATE_EPOCH of the stamp values (else 1970-01-01), never the clock |
//! | package `SPDXRef-Binary` | the binary: sha256, the main module's path and version, the Go version and every `build` setting (`-ldflags`, `GOOS`, `CGO_ENABLED`, …) in its `comment` |
//! | package `SPDXRef-Module-…` per `dep` | module path, version, purl `pkg:golang/<path>@<version>`, and go.sum's `h1:` hash as a SHA256 checksum (hex of the base64, as syft writes it) |
//! | package `SPDXRef-Go` | the standard library: `go<version>` |
//! | relationships | the document DESCRIBES the binary; the binary DEPENDS_ON each module and the standard library |
//!
//! Keys are in a fixed order and arrays sorted, so the same binary gives the same bytes.
//! Checksums and releases take the documents like any file (`sbom_linux_amd64.json`).

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_engine::action::{Action, ActionKind, Builtin, BuiltinCtx};
use kiln_engine::label::Label;
use kiln_engine::rule::{parse_label, Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::Result;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::release::checksums::hex;

const FIELDS: &[&str] = &["binary"];

pub struct GoSbom;

impl Rule for GoSbom {
    fn name(&self) -> &'static str {
        "go_sbom"
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a go_sbom")?;
        let binary = target.attrs.required_str("binary", "a go_sbom")?;
        Ok(vec![parse_label(
            &target.attrs,
            &binary,
            &target.label.package,
        )?])
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let deps = self.deps(target)?;
        let binaries: Vec<_> = deps
            .iter()
            .flat_map(|l| ctx.dep(&l.value).files.clone())
            .filter(|f| f.platform.is_some())
            .collect();
        if binaries.is_empty() {
            return Err(ctx
                .error_at("binary", "`binary` names no file built for a platform")
                .hint("name a go_binary, e.g. binary = \":server\""));
        }
        let defaults = match ctx.workspace.section("stamp")? {
            Some(t) => t.str_map_self()?,
            None => BTreeMap::new(),
        };
        let epoch = crate::oci::rules::source_date_epoch(ctx.exec.stamp(&defaults));
        let created = kiln_cache::time::rfc3339(epoch as i64, None);
        let mut info = TargetInfo::default();
        for binary in binaries {
            let platform = binary.platform.clone().unwrap_or_default();
            let dir = platform.replace('/', "_");
            let out = ctx.out_path(&format!(
                "{}/{dir}/{}.spdx.json",
                target.label.name,
                binary.file_name()
            ));
            let params = serde_json::json!({
                "name": binary.file_name(),
                "platform": dir,
                "created": created,
                "tool": format!("kiln-{}", env!("CARGO_PKG_VERSION")),
            });
            let action = Action {
                owner: target.label.clone(),
                mnemonic: "GoSbom".into(),
                discriminator: platform.clone(),
                inputs: vec![binary],
                outputs: vec![out.clone()],
                kind: ActionKind::Builtin(Builtin {
                    name: "go-sbom".into(),
                    version: 1,
                    params,
                    tools: Vec::new(),
                    run: Arc::new(write_sbom),
                }),
                platform: Some(platform),
                show_output: false,
            };
            let id = ctx.add(action);
            info.files.push(ctx.output(id, &out));
        }
        Ok(info)
    }
}

fn write_sbom(ctx: &BuiltinCtx) -> std::result::Result<(), String> {
    let input = &ctx.inputs[0];
    let bytes = std::fs::read(ctx.input(&input.path))
        .map_err(|e| format!("failed to read {}: {e}", input.path))?;
    let info = BuildInfo::read(&bytes).ok_or_else(|| {
        format!(
            "{} holds no Go build information (a Go 1.18+ binary, not packed, has it)",
            input.path
        )
    })?;
    let p = |k: &str| ctx.params[k].as_str().unwrap_or_default().to_string();
    let sha256 = hex(&Sha256::digest(&bytes));
    let doc = document(
        &info,
        &p("name"),
        &p("platform"),
        &p("created"),
        &p("tool"),
        &sha256,
    );
    let mut json = serde_json::to_vec_pretty(&doc).expect("documents serialize");
    json.push(b'\n');
    ctx.emit(ctx.outputs[0].clone(), json);
    Ok(())
}

/// What Go records in a binary.
#[derive(Debug, Default, PartialEq)]
pub struct BuildInfo {
    pub go_version: String,
    pub path: String,
    /// (path, version, sum)
    pub main: (String, String, String),
    pub deps: Vec<(String, String, String)>,
    pub settings: Vec<(String, String)>,
}

impl BuildInfo {
    /// Reads the `.go.buildinfo` blob of a binary (Go 1.18+: strings inline).
    pub fn read(binary: &[u8]) -> Option<BuildInfo> {
        const MAGIC: &[u8] = b"\xff Go buildinf:";
        let at = (0..binary.len().saturating_sub(32))
            .step_by(16)
            .find(|&i| binary[i..].starts_with(MAGIC))?;
        let header = &binary[at..];
        if header[15] & 0x2 == 0 {
            return None;
        }
        let (version, rest) = varint_string(&header[32..])?;
        let (modinfo, _) = varint_string(rest)?;
        let modinfo = match modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
            true => &modinfo[16..modinfo.len() - 16],
            false => modinfo,
        };
        let mut info = BuildInfo {
            go_version: String::from_utf8_lossy(version).into_owned(),
            ..BuildInfo::default()
        };
        for line in String::from_utf8_lossy(modinfo).lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let field = |i: usize| f.get(i).copied().unwrap_or_default().to_string();
            match f[0] {
                "path" => info.path = field(1),
                "mod" => info.main = (field(1), field(2), field(3)),
                "dep" => info.deps.push((field(1), field(2), field(3))),
                "build" => {
                    let (k, v) = field(1)
                        .split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))?;
                    info.settings.push((k, v));
                }
                _ => {}
            }
        }
        Some(info)
    }
}

fn varint_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut n, mut shift, mut i) = (0usize, 0, 0);
    loop {
        let byte = *b.get(i)?;
        n |= usize::from(byte & 0x7f) << shift;
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let end = i.checked_add(n)?;
    Some((b.get(i..end)?, &b[end..]))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
}

#[derive(Serialize)]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    name: String,
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    version_info: String,
    download_location: &'static str,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

fn document(
    info: &BuildInfo,
    name: &str,
    platform: &str,
    created: &str,
    tool: &str,
    sha256: &str,
) -> Document {
    let settings: Vec<String> = info
        .settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut packages = vec![Package {
        name: name.to_string(),
        spdx_id: "SPDXRef-Binary".into(),
        version_info: info.main.1.clone(),
        download_location: "NOASSERTION",
        files_analyzed: false,
        checksums: vec![Checksum {
            algorithm: "SHA256",
            checksum_value: sha256.to_string(),
        }],
        primary_package_purpose: Some("APPLICATION"),
        external_refs: Vec::new(),
        comment: Some(format!(
            "Go binary {} of module {} {} for {platform}, built with {}; build settings: {}",
            info.path,
            info.main.0,
            info.main.1,
            info.go_version,
            settings.join(" ")
        )),
    }];
    packages.push(Package {
        name: "stdlib".into(),
        spdx_id: "SPDXRef-Go".into(),
        version_info: info.go_version.clone(),
        download_location: "https://go.dev/dl/",
        files_analyzed: false,
        checksums: Vec::new(),
        primary_package_purpose: Some("LIBRARY"),
        external_refs: vec![purl("stdlib", info.go_version.trim_start_matches("go"))],
        comment: None,
    });
    let mut deps = info.deps.clone();
    deps.sort();
    for (path, version, sum) in &deps {
        packages.push(Package {
            name: path.clone(),
            spdx_id: format!(
                "SPDXRef-Module-{}",
                spdx_id_part(&format!("{path}-{version}"))
            ),
            version_info: version.clone(),
            download_location: "NOASSERTION",
            files_analyzed: false,
            checksums: h1_hex(sum)
                .map(|hex| Checksum {
                    algorithm: "SHA256",
                    checksum_value: hex,
                })
                .into_iter()
                .collect(),
            primary_package_purpose: Some("LIBRARY"),
            external_refs: vec![purl(path, version)],
            comment: (!sum.is_empty()).then(|| format!("go.sum: {sum}")),
        });
    }
    let mut relationships = vec![Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES",
        related_spdx_element: "SPDXRef-Binary".into(),
    }];
    for p in &packages[1..] {
        relationships.push(Relationship {
            spdx_element_id: "SPDXRef-Binary".into(),
            relationship_type: "DEPENDS_ON",
            related_spdx_element: p.spdx_id.clone(),
        });
    }
    Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("{name}-{platform}"),
        document_namespace: format!("https://kiln.build/spdx/{name}/{platform}/{sha256}"),
        creation_info: CreationInfo {
            created: created.to_string(),
            creators: vec![format!("Tool: {tool}")],
        },
        packages,
        relationships,
    }
}

fn purl(path: &str, version: &str) -> ExternalRef {
    ExternalRef {
        reference_category: "PACKAGE-MANAGER",
        reference_type: "purl",
        reference_locator: format!("pkg:golang/{path}@{version}"),
    }
}

/// Letters, digits, `.` and `-` only, as SPDX identifiers allow.
fn spdx_id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// go.sum's `h1:<base64 sha256>` as hex.
fn h1_hex(sum: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sum.strip_prefix("h1:")?)
        .ok()?;
    (bytes.len() == 32).then(|| hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h1_sums_become_hex_sha256() {
        assert_eq!(
            h1_hex("h1:AE/rcLqadfg7N9Zuz7m8JQil1P8EXoM7P8v+LmERAVs=").unwrap(),
            "004feb70ba9a75f83b37d66ecfb9bc2508a5d4ff045e833b3fcbfe2e6111015b"
        );
        assert_eq!(h1_hex("h2:xx"), None);
    }

    #[test]
    fn build_info_is_read_from_the_blob() {
        let modinfo = "path\tex/cmd/app\nmod\tex\t(devel)\t\ndep\tex.com/dep\tv1.0.0\th1:x\nbuild\tGOOS=linux\n";
        let mut blob = vec![0u8; 16];
        blob.extend_from_slice(b"\xff Go buildinf:\x08\x02");
        blob.resize(16 + 32, 0);
        blob.push(8);
        blob.extend_from_slice(b"go1.27.3");
        let mut wrapped = vec![b'x'; 16];
        wrapped.extend_from_slice(modinfo.as_bytes());
        wrapped.extend_from_slice(&[b'y'; 16]);
        blob.push(wrapped.len() as u8);
        blob.extend_from_slice(&wrapped);
        blob.resize(blob.len() + 32, 0);
        let info = BuildInfo::read(&blob).unwrap();
        assert_eq!(info.go_version, "go1.27.3");
        assert_eq!(info.path, "ex/cmd/app");
        assert_eq!(
            info.deps,
            [("ex.com/dep".into(), "v1.0.0".into(), "h1:x".into())]
        );
        assert_eq!(info.settings, [("GOOS".into(), "linux".into())]);
    }
}
