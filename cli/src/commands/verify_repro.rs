//! `kiln verify-repro [LABEL...]`: proves that the targets' outputs are reproducible.
//!
//! The targets are built normally first. Then every action runs again with kiln's cache
//! bypassed: a fresh, empty store in a new temporary directory (so sandboxes sit at
//! another path) and nothing materialized into the workspace. Every output digest of the
//! second build is compared with the first. A difference is reported with the first
//! differing byte offset and, for tar archives (plain or gzip'd, e.g. OCI layers), the
//! first differing entry. Exit status 0 only if every output is identical.
//!
//! Go's compile cache (`KILN_GO_CACHE`) is shared by both builds by default: its entries
//! are keyed by Go itself over every input, and every kiln action (compile+link of each
//! binary, strip, upx, image layers) still runs again. `--cold` gives the second build
//! an empty Go cache too, so the standard library is compiled again (minutes).

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use kiln_cache::{Digest, LocalStore, Store};
use kiln_engine::executor::Executor;
use kiln_engine::plan::plan;
use kiln_engine::scheduler::{self, Options, Quiet, Report};

use super::build::{build, select, Mode};
use crate::context::{jobs, Context};
use crate::progress::Progress;
use crate::Cli;

pub fn run(cli: &Cli, labels: &[String], cold: bool) -> Result<ExitCode> {
    let ctx = Context::load(cli)?;
    let progress = Progress::new(ctx.store.clone(), false);
    let exec = ctx.executor(cli)?;
    let targets = select(&ctx, &super::default_labels(labels), Mode::Build)?;
    let (_, first) = build(cli, &ctx, &exec, targets.clone(), &progress, false)?;
    progress.summary(&first, ctx.remote_enabled, ctx.runner.is_some());
    if !first.ok() {
        return Ok(ExitCode::from(1));
    }
    eprintln!("kiln: verify-repro: building again with an empty cache");
    let fresh_dir = tempfile::Builder::new()
        .prefix("kiln-verify-repro-")
        .tempdir()?;
    if cold {
        std::env::set_var("KILN_GO_CACHE", fresh_dir.path().join("go-cache"));
    }
    let fresh = Arc::new(LocalStore::open(&fresh_dir.path().join("store"))?);
    let mut fresh_exec =
        Executor::new(&ctx.workspace.root, fresh.clone(), fresh.clone(), exec.mode)?;
    fresh_exec.materialize = false;
    let plan2 = plan(&ctx.workspace, &ctx.rules, &fresh_exec, targets)?;
    let mut wanted = plan2.wanted_actions();
    wanted.extend(plan2.done.keys().copied());
    let opts = Options {
        jobs: jobs(cli),
        keep_going: false,
        lookup_threads: 0,
        rerun_tests: false,
        remote_jobs: 0,
    };
    let second = scheduler::run(
        &plan2.graph,
        &wanted,
        &plan2.done,
        &fresh_exec,
        &Quiet,
        opts,
    )?;
    if !second.ok() {
        let why = second
            .failures
            .first()
            .map(|(_, f)| f.error.to_string())
            .unwrap_or_default();
        anyhow::bail!("the second build failed: {why}");
    }
    let diffs = compare(&outputs(&first), &outputs(&second), &ctx.local, &fresh)?;
    let total = outputs(&first).len();
    if diffs.is_empty() {
        eprintln!("kiln: verify-repro: {total} outputs compared, all identical");
        return Ok(ExitCode::SUCCESS);
    }
    for d in &diffs {
        eprintln!("kiln: verify-repro: {d}");
    }
    eprintln!(
        "kiln: verify-repro: {} of {total} outputs differ",
        diffs.len()
    );
    Ok(ExitCode::from(1))
}

/// Output path → digest of every action result of a build.
fn outputs(report: &Report) -> BTreeMap<String, Digest> {
    report
        .results
        .values()
        .flat_map(|r| r.outputs.iter())
        .map(|o| (o.path.clone(), o.digest))
        .collect()
}

fn compare(
    first: &BTreeMap<String, Digest>,
    second: &BTreeMap<String, Digest>,
    a: &LocalStore,
    b: &LocalStore,
) -> Result<Vec<String>> {
    let mut diffs = Vec::new();
    for (path, da) in first {
        match second.get(path) {
            None => diffs.push(format!("{path}: missing from the second build")),
            Some(db) if db != da => {
                let (x, y) = (read_blob(a, da)?, read_blob(b, db)?);
                diffs.push(format!("{path}: {}", describe_difference(&x, &y)));
            }
            Some(_) => {}
        }
    }
    Ok(diffs)
}

fn read_blob(store: &LocalStore, digest: &Digest) -> Result<Vec<u8>> {
    Ok(store.read(digest)?.unwrap_or_default())
}

/// "differs at byte N" plus, for archives, the first differing entry.
pub fn describe_difference(a: &[u8], b: &[u8]) -> String {
    let offset = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let mut text = format!(
        "differs at byte {offset} (sizes {} and {})",
        a.len(),
        b.len()
    );
    if let (Some(ea), Some(eb)) = (tar_entries(a), tar_entries(b)) {
        let first = ea
            .iter()
            .zip(&eb)
            .find(|(x, y)| x != y)
            .map(|(x, _)| x.0.clone());
        let entry = first.or_else(|| {
            let (longer, n) = if ea.len() > eb.len() {
                (&ea, eb.len())
            } else {
                (&eb, ea.len())
            };
            longer.get(n).map(|e| e.0.clone())
        });
        if let Some(name) = entry {
            text.push_str(&format!("; first differing archive entry: {name}"));
        }
    }
    text
}

/// (name, header+content digest) of each entry of a tar or gzip'd tar; None otherwise.
fn tar_entries(bytes: &[u8]) -> Option<Vec<(String, Digest)>> {
    let data = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .ok()?;
        out
    } else {
        bytes.to_vec()
    };
    if data.len() < 512 || &data[257..262] != b"ustar" {
        return None;
    }
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos + 512 <= data.len() && data[pos..pos + 512].iter().any(|&b| b != 0) {
        let header = &data[pos..pos + 512];
        let field = |r: std::ops::Range<usize>| {
            let raw = &header[r];
            String::from_utf8_lossy(&raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())])
                .into_owned()
        };
        let size = u64::from_str_radix(field(124..136).trim(), 8).unwrap_or(0) as usize;
        let prefix = field(345..500);
        let name = if prefix.is_empty() {
            field(0..100)
        } else {
            format!("{prefix}/{}", field(0..100))
        };
        let end = (pos + 512 + size).min(data.len());
        entries.push((name, Digest::of_bytes(&data[pos..end])));
        pos += 512 + size.div_ceil(512) * 512;
    }
    Some(entries)
}
