//! `kiln cache gc --max-size SIZE` and `kiln cache verify`: housekeeping of the local
//! store at `$KILN_CACHE` (see `kiln_cache::gc` for the order of removal and why both are
//! safe while a build runs).
//!
//! Both print what they removed on stdout, one summary line per kind of entry.
//!
//! gc keeps every result and blob used in the last 5 minutes, since a build running at
//! the same time may be writing or reading them; `KILN_GC_GRACE=SECONDS` changes that
//! window (`0` makes the limit strict, for a store no build is using).
//!
//! Exit codes:
//! - `gc`: 0 when it ran (also when recent blobs kept the store above SIZE: it says so);
//!   2 when SIZE does not parse.
//! - `verify`: 0 when every blob matched its digest and every result decoded; 1 when
//!   anything was corrupt (it was removed, and the next build re-runs the actions that
//!   produced it), so CI can alert on a failing disk. Results that only named a missing
//!   blob are removed and reported but do not fail verify: they were cache misses already.
//!   Nor does an index rebuilt after damage (it is reported, with when and where the
//!   damaged one went): its results were lost, not wrong. 3 when the store could not be
//!   read.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use kiln_cache::gc::{GcOptions, GcReport, VerifyReport};

use crate::context::open_local;

pub fn gc(max_size: &str) -> Result<ExitCode> {
    let max_size = kiln_cache::server::parse_size(max_size).map_err(|e| {
        kiln_engine::Error::new(kiln_engine::ErrorKind::Config, format!("--max-size: {e}"))
    })?;
    let opts = GcOptions {
        grace: grace()?,
        ..GcOptions::new(max_size)
    };
    let store = open_local()?;
    // Sandboxes of kilns that were killed (kill -9) go first.
    kiln_engine::sandbox::remove_abandoned(&store.tmp_dir());
    let report = kiln_cache::gc::gc(&store, &opts)?;
    print_gc(&report, &opts);
    Ok(ExitCode::SUCCESS)
}

/// The protection window: `KILN_GC_GRACE` seconds, else the default.
fn grace() -> Result<Duration> {
    match std::env::var("KILN_GC_GRACE") {
        Ok(text) if !text.is_empty() => {
            let secs: u64 = text.trim().parse().map_err(|_| {
                kiln_engine::Error::new(
                    kiln_engine::ErrorKind::Config,
                    format!("parse KILN_GC_GRACE `{text}` as seconds"),
                )
            })?;
            Ok(Duration::from_secs(secs))
        }
        _ => Ok(kiln_cache::gc::DEFAULT_GRACE),
    }
}

fn print_gc(r: &GcReport, opts: &GcOptions) {
    let max_size = opts.max_size;
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
    if r.bytes_kept > max_size {
        println!(
            "the cache stays above the limit: {} action results and {} blobs ({}) were used \
             in the last {} seconds, and a running build may need them",
            r.recent_actions_kept,
            r.recent_kept,
            size(r.recent_bytes_kept),
            opts.grace.as_secs()
        );
    }
    if r.undecodable_removed > 0 {
        println!(
            "removed {} action results that could not be decoded",
            r.undecodable_removed
        );
    }
    if r.leftovers_removed > 0 {
        println!(
            "removed {} logs of failed actions and abandoned temporary files ({})",
            r.leftovers_removed,
            size(r.leftover_bytes_removed)
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
    if let Some(rebuild) = &r.index_rebuilt {
        println!(
            "the index was rebuilt empty at {} after it was found damaged (the damaged one \
             was moved to {})",
            kiln_cache::time::rfc3339(rebuild.at, None),
            rebuild.moved_to.display()
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
