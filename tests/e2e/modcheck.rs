//! go_mod_check with the real go, offline, on a module with a dependency served by a
//! file-based GOPROXY (the test's own): tidy, verify and vendor/ consistency, each shown
//! passing and failing.

use crate::go::with_proxied_dep;
use crate::support::{go_workspace, Workspace};

const USES_DEP: &str =
    "package use\n\nimport \"example.com/dep\"\n\nfunc Twice() int { return 2 * dep.Answer() }\n";

/// A module requiring `example.com/dep` from a local proxy, tidied (and vendored) by the
/// real go.
fn module(build: &str, vendored: bool) -> (tempfile::TempDir, Workspace) {
    let builder = go_workspace()
        .file(
            "go.mod",
            "module example.com/m\n\ngo 1.23\n\nrequire example.com/dep v1.0.0\n",
        )
        .file("use/use.go", USES_DEP)
        .file("BUILD.toml", build);
    let steps: &[&[&str]] = match vendored {
        true => &[&["mod", "tidy"], &["mod", "vendor"]],
        false => &[&["mod", "tidy"]],
    };
    with_proxied_dep(builder, steps)
}

#[test]
fn tidy_and_verify_pass_on_a_tidy_module_and_an_unused_requirement_fails_with_the_diff() {
    let (_proxy, ws) = module("[go_mod_check.mod]\n", false);
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    let ran = run.ran();
    for action in [
        "GoModDownload //:mod",
        "GoModTidy //:mod",
        "GoModVerify //:mod",
    ] {
        assert!(ran.contains(&action.to_string()), "{action}: {ran:?}");
    }
    let again = ws.kiln(&["test"]);
    again.assert_ok();
    assert_eq!(again.executed(), 0, "{}", again.stderr);

    // The import goes away: go.mod and go.sum still name the module.
    ws.write(
        "use/use.go",
        "package use\n\nfunc Twice() int { return 84 }\n",
    );
    let run = ws.kiln(&["test", "--keep-going"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("GoModTidy //:mod"), "{}", run.stderr);
    assert!(run.stderr.contains("--- current/go.mod"), "{}", run.stderr);
    assert!(
        run.stderr.contains("-require example.com/dep v1.0.0"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("-example.com/dep v1.0.0 h1:"),
        "the go.sum diff too: {}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("hint: go.mod/go.sum are not tidy: run go mod tidy in ."),
        "{}",
        run.stderr
    );
    // No network was needed: the module cache came from the download, GOPROXY=off.
    assert!(!run.stderr.contains("GoModDownload"), "{}", run.stderr);

    ws.write(
        "BUILD.toml",
        "[go_mod_check.mod]\nchecks = [\"tidy\", \"lint\"]\n",
    );
    let run = ws.kiln(&["test"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("BUILD.toml:2:19: unknown check `lint`"),
        "{}",
        run.stderr
    );
}

#[test]
fn vendor_must_be_what_go_mod_vendor_writes() {
    let (_proxy, ws) = module("[go_mod_check.mod]\n", true);
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert!(
        run.ran().contains(&"GoModVendor //:mod".to_string()),
        "{:?}",
        run.ran()
    );
    // A vendored file edited by hand.
    ws.write(
        "vendor/example.com/dep/dep.go",
        "package dep\n\nfunc Answer() int { return 7 }\n",
    );
    let run = ws.kiln(&["test", "--keep-going"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("GoModVendor //:mod"), "{}", run.stderr);
    assert!(
        run.stderr.contains("vendor/example.com/dep/dep.go"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("return 7"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("hint: vendor/ is not what go mod vendor writes"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("GoModTidy //:mod failed"),
        "{}",
        run.stderr
    );
}
