//! `upx`: packs every platform's binary of a target with the host's upx.
//!
//! ```toml
//! [upx.server_packed]
//! src = ":server_stripped"
//! args = ["--best", "--lzma"]
//! skip_unsupported = false     # default
//! ```
//!
//! One exec action per platform artifact, running `upx ARGS -q -o OUT IN` with the upx on
//! PATH declared as a tool: its content digest is in the key, since upx's output is not
//! promised to be stable across upx builds (upx/upx#927). Output:
//! `kiln-out/<package>/<target>/<os>_<arch>/<file name>`.
//!
//! upx 4.2 packs ELF for linux/{amd64,386,arm,arm64,ppc64le} and PE for windows/{386,amd64}
//! ([`SUPPORTED`]). Any other platform (darwin, whose Mach-O support upx 4 dropped; riscv64;
//! s390x...) is an error naming it, unless `skip_unsupported = true`: then that platform's
//! binary is copied unpacked to the same output path (an `UpxPassThrough` builtin), so a release keeps every
//! platform (as GoReleaser's upx step leaves binaries it does not match). An artifact with
//! no platform is packed (assumed to be for the host).

use kiln_engine::action::{Action, Artifact, Tool};
use kiln_engine::label::Label;
use kiln_engine::rule::{Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::Result;

use crate::oci::rules::{label_attr, passthrough, path_tool, platform_out, src_files};

const FIELDS: &[&str] = &["src", "args", "skip_unsupported"];

/// The platforms upx 4.2 can pack.
pub const SUPPORTED: &[&str] = &[
    "linux/amd64",
    "linux/386",
    "linux/arm",
    "linux/arm64",
    "linux/ppc64le",
    "windows/386",
    "windows/amd64",
];

pub struct Upx;

impl Rule for Upx {
    fn name(&self) -> &'static str {
        "upx"
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a upx target")?;
        Ok(vec![label_attr(target, "src", "a upx target")?])
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let src = label_attr(target, "src", "a upx target")?;
        let args: Vec<String> = ctx
            .attrs()
            .str_list("args")?
            .into_iter()
            .map(|a| a.value)
            .collect();
        let skip = ctx.attrs().bool("skip_unsupported")?.unwrap_or(false);
        let tool = path_tool(ctx, "upx", "src", "install upx-ucl (bookworm-backports)")?;
        let mut info = TargetInfo::default();
        for artifact in src_files(ctx, &src)? {
            match artifact.platform.as_deref() {
                Some(p) if !SUPPORTED.contains(&p) => {
                    if !skip {
                        return Err(unsupported(ctx, &src.value, p));
                    }
                    info.files
                        .push(passthrough(ctx, "UpxPassThrough", artifact));
                }
                _ => {
                    let out = platform_out(ctx, &artifact);
                    let id = ctx.add(upx_action(target, &tool, &args, artifact, &out));
                    info.files.push(ctx.output(id, &out));
                }
            }
        }
        Ok(info)
    }
}

fn unsupported(ctx: &Analysis<'_>, src: &Label, platform: &str) -> kiln_engine::Error {
    ctx.error_at(
        "src",
        format!(
            "upx cannot pack the {platform} binary of {src} for {}",
            ctx.label()
        ),
    )
    .hint(format!(
        "set `skip_unsupported = true` to pass them through unpacked; upx packs {}",
        SUPPORTED.join(", ")
    ))
}

fn upx_action(
    target: &TargetDecl,
    tool: &Tool,
    args: &[String],
    input: Artifact,
    out: &str,
) -> Action {
    let mut argv = vec!["{tool:upx}".to_string()];
    argv.extend(args.iter().cloned());
    argv.extend([
        "-q".into(),
        "-o".into(),
        out.to_string(),
        input.path.clone(),
    ]);
    crate::release::transform::file_transform(target, "Upx", tool, argv, input, out)
}
