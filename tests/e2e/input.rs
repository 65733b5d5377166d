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
fn a_directory_in_srcs_says_it_is_a_directory() {
    let ws = workspace()
        .file("data/a.txt", "a\n")
        .file(
            "BUILD.toml",
            "[genrule.x]\nsrcs = [\"data\"]\nouts = [\"x\"]\ncmd = \"cat $SRCS > $OUT\"\n",
        )
        .build();
    let run = ws.kiln(&["build"]);
    let lines = usage_error(&run);
    assert!(
        lines[0].contains("BUILD.toml:2:9: source `data` of //:x is a directory"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("data/**") && run.stderr.contains("filegroup"),
        "{}",
        run.stderr
    );
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

#[test]
fn a_20000_deep_chain_is_analyzed_without_crashing() {
    const DEPTH: usize = 20_000;
    let mut text = String::new();
    for i in 0..DEPTH {
        text.push_str(&format!("[genrule.c{i}]\n"));
        if i > 0 {
            text.push_str(&format!("srcs = [\":c{}\"]\n", i - 1));
        }
        text.push_str(&format!(
            "outs = [\"c{i}.txt\"]\ncmd = \"echo {i} > $OUT\"\n\n"
        ));
    }
    let ws = workspace().file("BUILD.toml", &text).build();
    let last = format!("//:c{}", DEPTH - 1);
    let run = ws.kiln(&["graph", "--format", "json", &last]);
    run.assert_ok();
    let graph: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let targets = graph["targets"].as_array().unwrap();
    assert_eq!(targets.len(), DEPTH);
    assert_eq!(targets[0], "//:c0");
    assert_eq!(targets[DEPTH - 1].as_str(), Some(last.as_str()));
    // A cycle through all of them is reported, not a crash.
    ws.write(
        "BUILD.toml",
        &text.replacen(
            "[genrule.c0]\n",
            &format!("[genrule.c0]\nsrcs = [\"{last}\"]\n"),
            1,
        ),
    );
    let run = ws.kiln(&["graph", &last]);
    let lines = usage_error(&run);
    assert!(lines[0].contains("dependency cycle: "), "{}", run.stderr);
}
