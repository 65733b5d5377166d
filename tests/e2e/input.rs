//! Bad input, tried as an attacker would: every file under kiln-out/ has one target,
//! malformed outputs and arguments get one clear line and exit 2, never a panic, and
//! large or deep workspaces load without crashing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

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
fn two_targets_writing_one_output_are_named_with_their_places() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.a]\nouts = [\"same.txt\"]\ncmd = \"echo a > $OUT\"\n\n\
             [genrule.b]\nouts = [\"same.txt\"]\ncmd = \"echo b > $OUT\"\n",
        )
        .build();
    let run = ws.kiln(&["build"]);
    let lines = usage_error(&run);
    assert!(
        lines[0].contains("BUILD.toml:6:9: //:b writes `kiln-out/same.txt`, as //:a does (")
            && lines[0].contains("BUILD.toml:2:9)"),
        "{}",
        run.stderr
    );
    assert!(!ws.path("kiln-out/same.txt").exists(), "nothing was built");
}

#[test]
fn a_root_output_in_a_packages_directory_is_an_overlap() {
    // `sub/x.txt` of the root package and `x.txt` of package `sub` are both
    // kiln-out/sub/x.txt.
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.a]\nouts = [\"sub/x.txt\"]\ncmd = \"echo a > $OUT\"\n",
        )
        .file(
            "sub/BUILD.toml",
            "[genrule.b]\nouts = [\"x.txt\"]\ncmd = \"echo b > $OUT\"\n",
        )
        .build();
    let run = ws.kiln(&["build"]);
    let lines = usage_error(&run);
    assert!(lines[0].contains("`kiln-out/sub/x.txt`"), "{}", run.stderr);
    assert!(
        lines[0].contains("//:a") && lines[0].contains("//sub:b"),
        "{}",
        run.stderr
    );
    assert!(
        lines[0].contains("/ws/BUILD.toml:2:9") && lines[0].contains("/ws/sub/BUILD.toml:2:9"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_output_inside_another_targets_directory_output_is_an_overlap() {
    // An image's layout is the directory kiln-out/img/layout/.
    let ws = workspace()
        .file("hello.txt", "hello\n")
        .file(
            "BUILD.toml",
            "[oci_image.img]\nplatforms = [\"linux/amd64\"]\nfiles = { \"/etc/hello.txt\" = \"hello.txt\" }\n\n\
             [genrule.g]\nouts = [\"img/layout/index.json\"]\ncmd = \"echo {} > $OUT\"\n",
        )
        .build();
    let run = ws.kiln(&["build"]);
    let lines = usage_error(&run);
    assert!(
        lines[0].contains("`kiln-out/img/layout/index.json`")
            && lines[0].contains("`kiln-out/img/layout/`"),
        "{}",
        run.stderr
    );
    assert!(
        lines[0].contains("//:img") && lines[0].contains("//:g"),
        "{}",
        run.stderr
    );
    assert!(lines[0].contains("BUILD.toml:6:9"), "{}", run.stderr);
    assert!(lines[0].contains("BUILD.toml:1:1"), "{}", run.stderr);
}

#[test]
fn a_file_output_cannot_be_the_directory_of_another() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.a]\nouts = [\"a\"]\ncmd = \"echo a > $OUT\"\n\n\
             [genrule.b]\nouts = [\"a/b\"]\ncmd = \"echo b > $OUT\"\n",
        )
        .build();
    let run = ws.kiln(&["build"]);
    let lines = usage_error(&run);
    assert!(
        lines[0].contains("`kiln-out/a/b`") && lines[0].contains("`kiln-out/a`"),
        "{}",
        run.stderr
    );
    assert!(
        lines[0].contains("//:a") && lines[0].contains("//:b"),
        "{}",
        run.stderr
    );
}

#[test]
fn targets_naming_the_same_outputs_are_not_an_overlap() {
    // Reading one output through several targets is not writing it twice.
    let ws = workspace()
        .file("in.txt", "in\n")
        .file(
            "BUILD.toml",
            "[genrule.gen]\nsrcs = [\"in.txt\"]\nouts = [\"gen.txt\"]\ncmd = \"cat $SRCS > $OUT\"\ntools = [\"cat\"]\n\n\
             [filegroup.one]\nsrcs = [\":gen\", \"in.txt\"]\n\n\
             [filegroup.two]\nsrcs = [\":gen\"]\n\n\
             [genrule.both]\nsrcs = [\":one\", \":two\"]\nouts = [\"both.txt\"]\ncmd = \"cat $SRCS > $OUT\"\ntools = [\"cat\"]\n",
        )
        .build();
    ws.kiln(&["build"]).assert_ok();
    assert_eq!(ws.read("kiln-out/both.txt"), "in\nin\nin\n");
}

#[test]
fn malformed_outs_are_errors_at_their_place() {
    // (outs, column of the bad entry on line 2, what the message says)
    let cases = [
        (r#"["x", "x"]"#, 14, "listed twice"),
        (r#"["."]"#, 9, "`.`"),
        (r#"["./x"]"#, 9, "`.`"),
        (r#"[".."]"#, 9, "`..`"),
        (r#"["a/../x"]"#, 9, "`..`"),
        (r#"["/abs"]"#, 9, "relative"),
        (r#"[""]"#, 9, "empty"),
        (r#"["a//b"]"#, 9, "empty"),
        (r#"["d/"]"#, 9, "directory"),
    ];
    for (outs, column, says) in cases {
        let ws = workspace()
            .file(
                "BUILD.toml",
                &format!("[genrule.g]\nouts = {outs}\ncmd = \"echo > $OUT\"\n"),
            )
            .build();
        let run = ws.kiln(&["build"]);
        assert_eq!(run.status, 2, "{outs}: {}", run.stderr);
        let lines = usage_error(&run);
        assert!(
            lines[0].contains(&format!("BUILD.toml:2:{column}: ")),
            "{outs}: {}",
            run.stderr
        );
        assert!(lines[0].contains(says), "{outs}: {}", run.stderr);
    }
}

#[test]
fn targets_named_dot_or_dot_dot_are_refused() {
    // A checksums target's outputs live in kiln-out/<package>/<name>/: a name `..` would
    // write beside the sources.
    for name in ["..", "."] {
        let ws = workspace()
            .file("f.txt", "f\n")
            .file(
                "BUILD.toml",
                &format!("[checksums.\"{name}\"]\nsrcs = [\"f.txt\"]\n"),
            )
            .build();
        let run = ws.kiln(&["build", "--sandbox=dir"]);
        let lines = usage_error(&run);
        assert!(lines[0].contains("BUILD.toml:1:"), "{}", run.stderr);
        assert!(lines[0].contains("target name"), "{}", run.stderr);
        assert!(!ws.path("SHA256SUMS").exists());
        assert_eq!(ws.read("f.txt"), "f\n");
    }
}

#[test]
fn non_utf8_arguments_are_usage_errors() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.x]\nouts = [\"x\"]\ncmd = \"true\"\n",
        )
        .build();
    let bad = OsStr::from_bytes(b"//:\xff");
    for (args, says) in [
        (vec![OsStr::new("build"), bad], "UTF-8"),
        (vec![OsStr::new("explain"), bad], "UTF-8"),
        (vec![OsStr::new("go-test-exec"), bad], "UTF-8"),
        (vec![bad], "unrecognized subcommand"),
        (
            vec![OsStr::new("-C"), bad, OsStr::new("build")],
            "find the workspace",
        ),
    ] {
        let out = ws.cmd(&[]).args(&args).output().unwrap();
        let run = Run::from(out);
        let lines = usage_error(&run);
        assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
        assert!(lines[0].contains(says), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn bad_option_values_are_one_line_and_exit_2() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.x]\nouts = [\"x\"]\ncmd = \"true\"\n",
        )
        .build();
    let cases: &[(&[&str], &str)] = &[
        (&["--sandbox=foo", "build"], "foo"),
        (&["--remote-cache", "ftp://x", "build"], "ftp://x"),
        (&["--remote-cache", "http://", "build"], "http://"),
        (&["graph", "--format", "xml"], "xml"),
        (&["cache", "stats", "--format", "foo"], "foo"),
        (&["-j", "0", "build"], "0"),
        (&["-j", "abc", "build"], "abc"),
        (&["bulid"], "bulid"),
        (&["build", "--frobnicate"], "--frobnicate"),
    ];
    for (args, value) in cases {
        let run = ws.kiln(args);
        let lines = usage_error(&run);
        assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
        assert!(lines[0].contains(value), "{args:?}: {}", run.stderr);
        assert!(!ws.path("kiln-out").exists(), "{args:?} built");
    }
    // Help and version are not errors.
    assert_eq!(ws.kiln(&["--help"]).assert_ok().status, 0);
    assert!(ws.kiln(&["--version"]).assert_ok().stdout.contains("kiln"));
}

#[test]
fn a_bad_remote_cache_from_the_environment_or_kiln_toml_is_exit_2() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.x]\nouts = [\"x\"]\ncmd = \"true\"\n",
        )
        .build();
    let run = crate::support::Run::from(
        ws.cmd(&["build"])
            .env("KILN_REMOTE_CACHE", "ftp://x")
            .output()
            .unwrap(),
    );
    let lines = usage_error(&run);
    assert!(lines[0].contains("KILN_REMOTE_CACHE"), "{}", run.stderr);
    ws.write(
        "kiln.toml",
        "[workspace]\nname = \"t\"\n\n[remote]\ncache = \"ftp://x\"\n",
    );
    let run = ws.kiln(&["build"]);
    let lines = usage_error(&run);
    assert!(lines[0].contains("kiln.toml:5:9: "), "{}", run.stderr);
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
fn a_missing_start_directory_is_a_usage_error() {
    let ws = workspace().build();
    let run = ws.kiln(&["-C", "no/such/dir", "build"]);
    let lines = usage_error(&run);
    assert!(lines[0].contains("no/such/dir"), "{}", run.stderr);
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
