//! `genrule`: a shell command over files, the rule that proves the engine is not tied to Go.
//!
//! ```toml
//! [genrule.upper]
//! srcs = ["in.txt", ":other"]      # files of this package and/or labels
//! outs = ["upper.txt"]             # written to kiln-out/<package>/upper.txt
//! cmd = "cat $SRCS | tr a-z A-Z > $OUT"
//! tools = ["tr", "cat"]            # host tools, resolved on PATH, hashed into the key
//! env = { LC_ALL = "C" }           # optional extra environment
//! ```
//!
//! Each entry of `outs` is a file path relative to the package, listed once, without
//! `.`, `..` or empty components or a final `/`; a path another target writes too is an
//! error naming both (`kiln_engine::outputs`).
//!
//! `cmd` runs under `/bin/sh -c` at the sandbox root. `SRCS` holds the inputs'
//! sandbox-relative paths in order, separated by spaces (a label expands to that
//! target's outputs); `OUTS` the declared outputs; `OUT` the first. `/bin/sh` itself is
//! a tool of every genrule, so its identity is in the key.

use std::collections::BTreeMap;

use kiln_engine::action::{Action, ActionKind, ExecSpec, Tool};
use kiln_engine::label::Label;
use kiln_engine::rule::{labels_in, Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::Result;

const FIELDS: &[&str] = &["srcs", "outs", "cmd", "tools", "env"];

pub struct Genrule;

impl Rule for Genrule {
    fn name(&self) -> &'static str {
        "genrule"
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a genrule")?;
        labels_in(&target.attrs, "srcs", &target.label.package)
    }

    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let attrs = &target.attrs;
        let cmd = attrs.required_str("cmd", "a genrule")?;
        let srcs = ctx.files("srcs")?;
        let outs = ctx.declared_outputs("outs")?;
        if outs.is_empty() {
            return Err(ctx
                .error_at("outs", "a genrule needs at least one entry in `outs`")
                .hint("list the files the command writes, e.g. outs = [\"out.txt\"]"));
        }
        let out_paths: Vec<String> = outs.into_iter().map(|o| o.value).collect();
        let mut tools = vec![Tool {
            name: "sh".into(),
            path: "/bin/sh".into(),
            tree: false,
        }];
        for name in attrs.str_list("tools")? {
            tools.push(ctx.host_tool(&name)?);
        }
        let mut env: BTreeMap<String, String> = attrs
            .str_map("env")?
            .into_iter()
            .map(|(k, v)| (k.value, v.value))
            .collect();
        let join = |v: &[String]| v.join(" ");
        let src_paths: Vec<String> = srcs.iter().map(|a| a.path.clone()).collect();
        env.insert("SRCS".into(), join(&src_paths));
        env.insert("OUTS".into(), join(&out_paths));
        env.insert("OUT".into(), out_paths[0].clone());
        let action = Action {
            owner: target.label.clone(),
            mnemonic: "Genrule".into(),
            discriminator: String::new(),
            inputs: srcs,
            outputs: out_paths.clone(),
            kind: ActionKind::Exec(ExecSpec {
                argv: vec!["/bin/sh".into(), "-c".into(), cmd.value],
                env,
                tools,
                workdir: String::new(),
                ..Default::default()
            }),
            platform: None,
            show_output: false,
        };
        let id = ctx.add(action);
        let files = out_paths.iter().map(|p| ctx.output(id, p)).collect();
        Ok(TargetInfo {
            files,
            ..TargetInfo::default()
        })
    }
}
