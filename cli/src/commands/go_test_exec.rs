//! `kiln go-test-exec BINARY ARGS...`: saves a Go test binary instead of running it.
//!
//! A go_test's build step runs `go test -exec "kiln go-test-exec" ./pkg …` (see
//! `kiln_rules::go::test`): Go compiles, vets and links each package's test binary as
//! `go test` does, then, instead of running it, hands it to this command in the
//! package's directory. The command finds the package's member of the batch (the
//! engine's batch file, `KILN_BATCH`) and copies the binary to that member's declared
//! output, where the run step takes it from, and prints a line naming it by digest
//! (`kiln_rules::go::output::SAVED_BINARY`). It succeeds, so `go test` reports the
//! package as passed (its verdict is the run step's) and keeps that line in Go's test
//! cache: when the binary's link inputs are the same another time, go replays the line
//! rather than linking again, and kiln takes the binary from its store.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use kiln_engine::executor::{BatchFile, BATCH_ENV};
use kiln_rules::go::output::SAVED_BINARY;

pub fn run(args: &[String]) -> Result<ExitCode> {
    let Some(binary) = args.first() else {
        bail!("usage: kiln go-test-exec BINARY [ARGS...]");
    };
    let file = std::env::var_os(BATCH_ENV)
        .filter(|f| !f.is_empty())
        .with_context(|| {
            format!("{BATCH_ENV} is not set: go-test-exec runs inside a go_test build")
        })?;
    let file = Path::new(&file);
    let text = std::fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
    let batch: BatchFile = serde_json::from_slice(&text)
        .with_context(|| format!("failed to read {}", file.display()))?;
    // The batch file is `<sandbox>/.kiln/batch.json`.
    let root = file
        .parent()
        .and_then(Path::parent)
        .context("the batch file lies in the sandbox's .kiln/")?;
    let cwd = std::env::current_dir()?;
    let rel = cwd.strip_prefix(root).with_context(|| {
        format!(
            "{} is outside the sandbox {}",
            cwd.display(),
            root.display()
        )
    })?;
    let package = package_arg(&batch.workdir, rel)
        .with_context(|| format!("{} is outside the module", rel.display()))?;
    let member = batch
        .members
        .iter()
        .find(|m| m.args.last() == Some(&package))
        .with_context(|| format!("no member of the batch tests `{package}`"))?;
    let out = member
        .outputs
        .first()
        .with_context(|| format!("`{package}` has no test binary to save"))?;
    let dest = root.join(out);
    std::fs::copy(binary, &dest)
        .with_context(|| format!("failed to save {binary} as {}", dest.display()))?;
    let digest = kiln_cache::Digest::of_file(&dest)?;
    let size = std::fs::metadata(&dest)?.len();
    println!("{SAVED_BINARY} {out} {digest} {size}");
    // Go caches a test's output only when the test wrote its test log (which a binary
    // run through -exec does not get told to): this one read nothing.
    let log = Path::new(binary).with_file_name("testlog.txt");
    std::fs::write(&log, "# test log\n")
        .with_context(|| format!("failed to write {}", log.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// The `go test` argument naming the package in directory `rel` (sandbox-relative) of
/// a module whose directory is `workdir`: `./store`, or `.` for the module's root.
fn package_arg(workdir: &str, rel: &Path) -> Option<String> {
    let inside = rel.strip_prefix(workdir).ok()?;
    Some(match inside.as_os_str().is_empty() {
        true => ".".to_string(),
        false => format!("./{}", inside.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_are_named_as_go_test_was_given_them() {
        assert_eq!(
            package_arg("", Path::new("store")).as_deref(),
            Some("./store")
        );
        assert_eq!(
            package_arg("svc", Path::new("svc/a/b")).as_deref(),
            Some("./a/b")
        );
        assert_eq!(package_arg("svc", Path::new("svc")).as_deref(), Some("."));
        assert_eq!(package_arg("svc", Path::new("other")), None);
    }
}
