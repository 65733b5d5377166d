//! Bad input gets one clear message naming the file, line and column, with a hint.

use crate::support::workspace;

#[test]
fn unknown_rule_names_file_line_and_suggests() {
    let ws = workspace()
        .file("pkg/BUILD.toml", "\n[genrul.x]\nouts = [\"a\"]\n")
        .build();
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr
            .contains("pkg/BUILD.toml:2:2: unknown rule `genrul`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("did you mean `genrule`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn kiln_test_without_test_targets_is_a_usage_error_with_a_hint() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.x]\nouts = [\"a\"]\ncmd = \"echo > $OUT\"\n",
        )
        .build();
    let run = ws.kiln(&["test"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("no test targets among //...") && run.stderr.contains("kiln init"),
        "{}",
        run.stderr
    );
}

#[test]
fn unknown_field_names_file_line_and_suggests() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.x]\nouts = [\"a\"]\ncmd = \"true\"\nsrc = [\"in\"]\n",
        )
        .build();
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr
            .contains("BUILD.toml:4:1: unknown field `src` in a genrule"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("did you mean `srcs`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    let ws = workspace()
        .file("BUILD.toml", "[genrule.x]\nouts = [\"a\"\ncmd = 1\n")
        .build();
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("BUILD.toml:3:"), "{}", run.stderr);
    assert!(run.stderr.contains("invalid TOML"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"));
}

#[test]
fn cycle_is_reported_with_its_whole_path() {
    let ws = workspace()
        .file(
            "a/BUILD.toml",
            "[genrule.x]\nsrcs = [\"//b:y\"]\nouts = [\"x\"]\ncmd = \"true\"\n",
        )
        .file(
            "b/BUILD.toml",
            "[genrule.y]\nsrcs = [\"//b:z\"]\nouts = [\"y\"]\ncmd = \"true\"\n\n[genrule.z]\nsrcs = [\"//a:x\"]\nouts = [\"z\"]\ncmd = \"true\"\n",
        )
        .build();
    let run = ws.kiln(&["build", "//a:x"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr
            .contains("dependency cycle: //a:x -> //b:y -> //b:z -> //a:x"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("a/BUILD.toml:1:"), "{}", run.stderr);
}

#[test]
fn missing_label_names_the_target_that_referred_to_it() {
    let ws = workspace()
        .file("BUILD.toml", "[genrule.x]\nsrcs = [\":nope\"]\nouts = [\"x\"]\ncmd = \"true\"\n\n[genrule.nop]\nouts = [\"n\"]\ncmd = \"true\"\n")
        .build();
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr
            .contains("BUILD.toml:2:9: no target `//:nope`, referenced by //:x"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("did you mean `nop`?"), "{}", run.stderr);
}

#[test]
fn missing_source_file_is_named() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.x]\nsrcs = [\"gone.txt\"]\nouts = [\"x\"]\ncmd = \"true\"\n",
        )
        .build();
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr
            .contains("BUILD.toml:2:9: source file `gone.txt` of //:x does not exist"),
        "{}",
        run.stderr
    );
}

#[test]
fn unknown_command_line_label_is_an_error() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.x]\nouts = [\"x\"]\ncmd = \"true\"\n",
        )
        .build();
    let run = ws.kiln(&["build", "//:y"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("no target `//:y`"), "{}", run.stderr);
}

#[test]
fn outside_a_workspace_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::support::kiln_cmd(dir.path(), &dir.path().join("c"), &["build"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("kiln.toml"), "{stderr}");
}
