//! Bad input, tried as an attacker would: every file under kiln-out/ has one target,
//! malformed outputs and arguments get one clear line and exit 2, never a panic, and
//! large or deep workspaces load without crashing.

use crate::support::{workspace, Run};

/// The stderr lines of a run that failed with a usage or configuration error, checked
/// to be kiln's own error (no panic, no backtrace).
#[track_caller]
fn usage_error(run: &Run) -> Vec<&str> {
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("kiln: error: "), "{}", run.stderr);
    lines
}

#[test]
fn a_non_utf8_build_file_names_the_first_bad_byte() {
    let ws = workspace().build();
    std::fs::write(
        ws.path("BUILD.toml"),
        b"[genrule.x]\nouts = [\"x\"]\ncmd = \"ab\xffc\"\n",
    )
    .unwrap();
    let run = ws.kiln(&["build"]);
    let lines = usage_error(&run);
    assert!(
        lines[0].contains("BUILD.toml:3:10: ") && lines[0].contains("UTF-8"),
        "{}",
        run.stderr
    );
    // kiln.toml too.
    std::fs::write(ws.path("kiln.toml"), b"[workspace]\nname = \"\xc3\"\n").unwrap();
    let run = ws.kiln(&["build"]);
    let lines = usage_error(&run);
    assert!(lines[0].contains("kiln.toml:2:9: "), "{}", run.stderr);
}
