//! `strip`: strips the symbols of every platform's binary of a target.
//!
//! ```toml
//! [strip.server_stripped]
//! src = ":server"      # every platform the source target has
//! ```
//!
//! One exec action per platform artifact of `src`, running the host's GNU `strip`
//! (binutils-multiarch's handles ELF for every architecture kiln builds), declared as a
//! tool so its content digest is in the key. Output:
//! `kiln-out/<package>/<target>/<os>_<arch>/<file name>`, with the source's platform tag.
//!
//! Decision: only ELF binaries (every OS but darwin and windows) are stripped; Mach-O
//! (darwin) and PE (windows) artifacts are copied unchanged to the same output path (a
//! `StripPassThrough` builtin action). binutils cannot read Mach-O at all, and for PE it rewrites the COFF header
//! (timestamp, section layout) in ways not proven reproducible; Go binaries for those
//! systems drop their symbols with `ldflags = ["-s", "-w"]` instead.

use kiln_engine::action::{Action, Artifact, Tool};
use kiln_engine::label::Label;
use kiln_engine::rule::{Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::Result;

use crate::oci::rules::{label_attr, passthrough, path_tool, platform_out, src_files};

const FIELDS: &[&str] = &["src"];

pub struct Strip;

impl Rule for Strip {
    fn name(&self) -> &'static str {
        "strip"
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a strip target")?;
        Ok(vec![label_attr(target, "src", "a strip target")?])
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let src = label_attr(target, "src", "a strip target")?;
        let tool = path_tool(ctx, "strip", "src", "install binutils-multiarch")?;
        let mut info = TargetInfo::default();
        for artifact in src_files(ctx, &src)? {
            if !is_elf_platform(artifact.platform.as_deref()) {
                info.files
                    .push(passthrough(ctx, "StripPassThrough", artifact));
                continue;
            }
            let out = platform_out(ctx, &artifact);
            let id = ctx.add(strip_action(target, &tool, artifact, &out));
            info.files.push(ctx.output(id, &out));
        }
        Ok(info)
    }
}

/// Whether binaries for `platform` are ELF (None: assumed ELF).
pub fn is_elf_platform(platform: Option<&str>) -> bool {
    !platform.is_some_and(|p| p.starts_with("darwin/") || p.starts_with("windows/"))
}

fn strip_action(target: &TargetDecl, tool: &Tool, input: Artifact, out: &str) -> Action {
    let argv = vec![
        "{tool:strip}".into(),
        "--strip-all".into(),
        "-o".into(),
        out.to_string(),
        input.path.clone(),
    ];
    crate::release::transform::file_transform(target, "Strip", tool, argv, input, out)
}
