//! `kiln go-test-exec BINARY ARGS...`: runs one Go test binary of a batched `go test`
//! (`go test -exec`) in the view its package would have had alone.
//!
//! A batch of `go test` packages shares one sandbox holding every member's inputs (see
//! `kiln_engine::action::Batch`). Go runs each package's test binary in that package's
//! directory, so a test reading `../other/testdata/x` would find another member's file
//! and pass where, alone, it would fail — and its result would be cached under its own
//! key. This wrapper gives the binary what a sandbox of its own would hold: it copies
//! the package's declared inputs (from the batch file the engine writes, `KILN_BATCH`)
//! into a fresh directory under TMPDIR (memory, under bubblewrap), with its own HOME
//! (kept across a failed package's retries) and TMPDIR, and runs the binary there, in
//! the package's directory of that copy. The binary no longer sees GOCACHEPROG's
//! settings either: Go's compile cache is the go command's, not the tests'.
//!
//! What the members still share is the process tree and, under bubblewrap, one network
//! namespace without outside access, as packages under `go test ./...` do.
//! `batch = false` runs each package alone.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _, Result};
use kiln_engine::executor::{BatchFile, BATCH_ENV};

pub fn run(args: &[String]) -> Result<ExitCode> {
    let Some((binary, rest)) = args.split_first() else {
        bail!("usage: kiln go-test-exec BINARY [ARGS...]");
    };
    let mut cmd = Command::new(binary);
    cmd.args(rest);
    if let Some(file) = std::env::var_os(BATCH_ENV).filter(|f| !f.is_empty()) {
        isolate(&mut cmd, Path::new(&file))?;
    }
    let err = cmd.exec();
    Err(err).with_context(|| format!("failed to run {binary}"))
}

/// Points `cmd` at a copy of its package's inputs.
fn isolate(cmd: &mut Command, file: &Path) -> Result<()> {
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
    let tmp = std::env::var_os("TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let view = tempfile::Builder::new()
        .prefix("kiln-test-")
        .tempdir_in(&tmp)
        .with_context(|| format!("failed to create a directory in {}", tmp.display()))?
        .keep();
    for input in &member.inputs {
        let (from, to) = (root.join(input), view.join(input));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&from, &to).with_context(|| format!("failed to copy {input}"))?;
    }
    let dir = view.join(rel);
    // HOME lives in the sandbox itself, so a retry of a failed package (flaky_attempts)
    // finds what the attempt before left there, as one sandbox of its own would keep it.
    let home = root.join(".kiln/homes").join(package.replace('/', "%"));
    let scratch = view.join(".kiln/tmp");
    for d in [&dir, &home, &scratch] {
        std::fs::create_dir_all(d)?;
    }
    cmd.current_dir(&dir)
        .env("PWD", &dir)
        .env("HOME", &home)
        .env("TMPDIR", &scratch)
        .env_remove("GOCACHEPROG")
        .env_remove(BATCH_ENV)
        .env_remove(kiln_cache::gocacheprog::SOCKET_ENV);
    Ok(())
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
