//! `kiln release list [LABEL]` and `kiln rollback VERSION [--release LABEL]`: a release
//! target's store (its `store` attribute), read and moved without building anything
//! (see `kiln_rules::release::store`).

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use kiln_engine::label::Label;
use kiln_engine::{Error, ErrorKind};
use kiln_rules::release::store::Store;

use crate::Cli;

pub fn list(cli: &Cli, label: &str) -> Result<ExitCode> {
    let store = store(cli, label)?;
    let lines = store
        .list()
        .map_err(|e| anyhow!(Error::new(ErrorKind::Io, e)))?;
    if lines.is_empty() {
        eprintln!("kiln: no release published in {} yet", store.dir.display());
    }
    for line in lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rollback(cli: &Cli, version: &str, label: &str) -> Result<ExitCode> {
    let store = store(cli, label)?;
    let record = store
        .record()
        .map_err(|e| anyhow!(Error::new(ErrorKind::Io, e)))?;
    if !record.releases.iter().any(|r| r.version == version) {
        let known: Vec<&str> = record.releases.iter().map(|r| r.version.as_str()).collect();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{version} is not a published release of {label} in {} (published: {known})",
                store.dir.display()
            ),
        )
        .hint("`kiln release list` shows the published versions")
        .into());
    }
    let said = store.rollback(version).map_err(|e| {
        anyhow!(Error::new(
            ErrorKind::Action,
            format!("roll back to {version}: {e}")
        ))
    })?;
    println!("{said}");
    Ok(ExitCode::SUCCESS)
}

/// The store of the release target `label`.
fn store(cli: &Cli, label: &str) -> Result<Store> {
    let (workspace, _) = crate::context::load_workspace(cli)?;
    let label = Label::parse(label, "").map_err(|e| anyhow!(Error::new(ErrorKind::Label, e)))?;
    let Some(target) = workspace.target(&label) else {
        return Err(workspace.missing_target(&label).into());
    };
    if target.rule != "release" {
        return Err(Error::new(
            ErrorKind::Config,
            format!("{label} is a {}, not a release", target.rule),
        )
        .hint("name a release target: kiln release list //pkg:release")
        .into());
    }
    match target.attrs.str("store")? {
        Some(store) => {
            let registries = kiln_rules::oci::registry::Settings::load(&workspace)?;
            Ok(Store::new(workspace.root.join(store.value)).with_registries(registries))
        }
        None => Err(
            Error::new(ErrorKind::Config, format!("{label} has no `store`"))
                .at(target.attrs.location(target.attrs.span.start))
                .hint("add store = \"DIR\" to the release; `kiln run` then publishes there")
                .into(),
        ),
    }
}
