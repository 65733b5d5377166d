//! `filegroup`: names a set of files (globs allowed) and other targets' outputs.
//!
//! ```toml
//! [filegroup.configs]
//! srcs = ["*.yaml", "extra/app.json", ":generated"]
//! ```

use kiln_engine::label::Label;
use kiln_engine::rule::{labels_in, Analysis, Rule, TargetInfo};
use kiln_engine::value::Spanned;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::Result;

const FIELDS: &[&str] = &["srcs"];

pub struct Filegroup;

impl Rule for Filegroup {
    fn name(&self) -> &'static str {
        "filegroup"
    }

    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>> {
        target.attrs.check_keys(FIELDS, "a filegroup")?;
        labels_in(&target.attrs, "srcs", &target.label.package)
    }

    fn analyze(&self, _target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo> {
        let mut files = ctx.files("srcs")?;
        let mut seen = std::collections::HashSet::new();
        files.retain(|a| seen.insert(a.path.clone()));
        Ok(TargetInfo {
            files,
            ..TargetInfo::default()
        })
    }
}
