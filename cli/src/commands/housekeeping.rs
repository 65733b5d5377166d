//! `kiln cache gc --max-size SIZE` and `kiln cache verify`: housekeeping of the local
//! store at `$KILN_CACHE` (see `kiln_cache::gc` for the order of removal and why both are
//! safe while a build runs).
//!
//! Both print what they removed on stdout, one summary line per kind of entry.
//!
//! Exit codes:
//! - `gc`: 0 when it ran (also when recent blobs kept the store above SIZE: it says so);
//!   2 when SIZE does not parse.
//! - `verify`: 0 when every blob matched its digest and every result decoded; 1 when
//!   anything was corrupt (it was removed, and the next build re-runs the actions that
//!   produced it), so CI can alert on a failing disk. Results that only named a missing
//!   blob are removed and reported but do not fail verify: they were cache misses already.
//!   3 when the store could not be read.

use std::process::ExitCode;

use anyhow::Result;
use kiln_cache::gc::{GcOptions, GcReport, VerifyReport};

use crate::context::open_local;

pub fn gc(max_size: &str) -> Result<ExitCode> {
    let max_size = kiln_cache::server::parse_size(max_size).map_err(|e| {
        kiln_engine::Error::new(
            kiln_engine::ErrorKind::Config,
            format!("--max-size: {e}"),
        )
    })?;
    let store = open_local()?;
    let report = kiln_cache::gc::gc(&store, &GcOptions::new(max_size))?;
    print_gc(&report, max_size);
    Ok(ExitCode::SUCCESS)
}

fn print_gc(r: &GcReport, max_size: u64) {
    println!(
        "removed {} action results and {} blobs ({})",
        r.actions_removed,
        r.blobs_removed,
        size(r.bytes_removed)
    );
    println!(
        "kept {} blobs ({}) of at most {}",
        r.blobs_kept,
        size(r.bytes_kept),
        size(max_size)
    );
    if r.recent_kept > 0 && r.bytes_kept > max_size {
        println!(
            "kept {} blobs ({}) written in the last {} minutes that no result names yet \
             (a build may be writing them)",
            r.recent_kept,
            size(r.recent_bytes_kept),
            kiln_cache::gc::DEFAULT_GRACE.as_secs() / 60
        );
    }
    if r.undecodable_removed > 0 {
        println!(
            "removed {} action results that could not be decoded",
            r.undecodable_removed
        );
    }
    if r.untracked_found > 0 {
        println!(
            "recorded {} blob files the index did not know",
            r.untracked_found
        );
    }
}

pub fn verify() -> Result<ExitCode> {
    let store = open_local()?;
    let report = kiln_cache::gc::verify(&store)?;
    print_verify(&report);
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_verify(r: &VerifyReport) {
    println!(
        "checked {} blobs ({})",
        r.blobs_checked,
        size(r.bytes_checked)
    );
    for bad in &r.corrupt {
        println!(
            "corrupt blob {}: {} (removed)",
            bad.path.display(),
            bad.reason
        );
    }
    println!(
        "removed {} corrupt blobs and {} action results that used them",
        r.corrupt.len(),
        r.results_removed
    );
    if r.dangling_removed > 0 {
        println!(
            "removed {} action results whose blobs were missing",
            r.dangling_removed
        );
    }
    if r.undecodable_removed > 0 {
        println!(
            "removed {} action results that could not be decoded",
            r.undecodable_removed
        );
    }
}

/// Bytes for people: `512 B`, `3.2 KiB`, `1.5 GiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(10 << 30), "10.0 GiB");
    }
}
