//! Coverage on go_test with the real Go toolchain: per-package profiles cached with the
//! run, the merged profile read by the real `go tool cover`, the total, the gates
//! failing and passing, coverpkg, and race with cover.

use std::process::Command;

use crate::support::{go_root, go_workspace, Builder, Workspace};

/// `calc` is half covered by its tests (Sign's negative branch never runs), `util` fully,
/// `cmd/tool` has no tests.
fn module(build: &str) -> Builder {
    go_workspace()
        .file(
            "calc/calc.go",
            "package calc\n\nfunc Sign(x int) int {\n\tif x < 0 {\n\t\treturn -1\n\t}\n\treturn 1\n}\n\nfunc Twice(x int) int {\n\treturn 2 * x\n}\n",
        )
        .file(
            "calc/calc_test.go",
            "package calc\n\nimport \"testing\"\n\nfunc TestSign(t *testing.T) {\n\tif Sign(3) != 1 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n",
        )
        .file(
            "util/util.go",
            "package util\n\nimport \"example.com/m/calc\"\n\nfunc Four() int { return calc.Twice(2) }\n",
        )
        .file(
            "util/util_test.go",
            "package util\n\nimport \"testing\"\n\nfunc TestFour(t *testing.T) {\n\tif Four() != 4 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n",
        )
        .file(
            "cmd/tool/main.go",
            "package main\n\nimport \"example.com/m/util\"\n\nfunc main() { println(util.Four()) }\n",
        )
        .file("BUILD.toml", build)
}

/// `go tool cover -func` on a profile: its lines, and the total's figure.
fn cover_func(ws: &Workspace, profile: &str) -> (String, String) {
    let go = format!("{}/bin/go", go_root());
    let out = Command::new(go)
        .args(["tool", "cover", "-func", profile])
        .current_dir(&ws.root)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool cover: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total = text
        .lines()
        .find(|l| l.starts_with("total:"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_default()
        .to_string();
    (text, total)
}

const PROFILE: &str = "kiln-out/unit/coverage.out";

#[test]
fn cover_merges_profiles_that_go_tool_cover_reads_and_caches_them() {
    let ws = module("[go_test.unit]\ncover = true\n").build();
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    // calc: Sign 2 of 3 statements, Twice 0 of 1 (util's test calls it, but without
    // coverpkg only calc's own tests measure calc); util: 1 of 1; cmd/tool, without
    // tests, 0 of 1 (as go test -coverprofile ./... counts it). Total 3 of 6.
    assert!(
        run.stderr.contains("ok  \texample.com/m/calc\t0."),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("coverage: 50.0% of statements"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("\texample.com/m/cmd/tool\t\tcoverage: 0.0% of statements"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("coverage //:unit: 50.0% of statements in 3 packages"),
        "{}",
        run.stderr
    );
    let (funcs, total) = cover_func(&ws, PROFILE);
    assert_eq!(total, "50.0%", "{funcs}");
    assert!(funcs.contains("example.com/m/calc/calc.go:3:"), "{funcs}");
    assert!(
        funcs.contains("example.com/m/cmd/tool/main.go:5:"),
        "{funcs}"
    );
    assert!(funcs.contains("Sign"), "{funcs}");
    let merged = ws.read(PROFILE);
    assert!(merged.starts_with("mode: set\n"), "{merged}");
    // -html reads it too.
    let go = format!("{}/bin/go", go_root());
    // Written outside the module: a new file of the module would list it again.
    let html_dir = tempfile::tempdir().unwrap();
    let html = html_dir.path().join("cover.html");
    let out = Command::new(go)
        .args(["tool", "cover", "-html", PROFILE, "-o"])
        .arg(&html)
        .current_dir(&ws.root)
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(&html).unwrap().contains("Sign"));

    // Cached: nothing runs, the profile is replayed, the total shown again.
    std::fs::remove_dir_all(ws.path("kiln-out")).unwrap();
    let again = ws.kiln(&["test"]);
    again.assert_ok();
    assert_eq!(again.executed(), 0, "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("ok  \texample.com/m/calc\t(cached)\tcoverage: 50.0%"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("coverage //:unit: 50.0%"),
        "{}",
        again.stderr
    );
    assert_eq!(ws.read(PROFILE), merged);

    // A new test of the negative branch: calc's run and the merge run, util's does not.
    ws.write(
        "calc/neg_test.go",
        "package calc\n\nimport \"testing\"\n\nfunc TestNeg(t *testing.T) {\n\tif Sign(-3) != -1 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n",
    );
    let third = ws.kiln(&["test"]);
    third.assert_ok();
    let ran = third.ran();
    assert!(
        ran.contains(&"GoTest //:unit [example.com/m/calc]".to_string()),
        "{ran:?}"
    );
    assert!(
        !ran.contains(&"GoTest //:unit [example.com/m/util]".to_string()),
        "{ran:?}"
    );
    assert!(ran.contains(&"GoCover //:unit".to_string()), "{ran:?}");
    let (_, total) = cover_func(&ws, PROFILE);
    assert_eq!(total, "66.7%");
}

#[test]
fn coverage_gates_fail_listing_the_packages_below_and_pass_when_met() {
    let gated = "[go_test.unit]\npackages = [\"./calc\", \"./util\"]\ncover = true\nmin_coverage = 70.0\nmin_package_coverage = 60\n";
    let ws = module(gated).build();
    let run = ws.kiln(&["test"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("coverage of //:unit is below its gates"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("BUILD.toml:4:"), "{}", run.stderr);
    assert!(
        run.stderr.contains("total 60.0% < min_coverage 70.0%"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("example.com/m/calc 50.0% < min_package_coverage 60.0%"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("example.com/m/util 100"),
        "{}",
        run.stderr
    );
    // A failed gate is not cached: it fails again, without running the tests again.
    let again = ws.kiln(&["test"]);
    assert_eq!(again.status, 1, "{}", again.stderr);
    assert_eq!(again.ran(), ["GoCover //:unit"], "{}", again.stderr);

    // Lower gates pass on the same profiles: only the merge runs.
    ws.write(
        "BUILD.toml",
        "[go_test.unit]\npackages = [\"./calc\", \"./util\"]\ncover = true\nmin_coverage = 60.0\nmin_package_coverage = 50\n",
    );
    let pass = ws.kiln(&["test"]);
    pass.assert_ok();
    // (GoListInputs copies the module's files, BUILD.toml among them, for `go list`.)
    assert_eq!(
        pass.ran(),
        ["GoCover //:unit", "GoListInputs //:unit"],
        "{}",
        pass.stderr
    );
}

#[test]
fn coverpkg_counts_other_packages_tests_and_race_goes_with_cover() {
    let build = "[go_test.unit]\ncover = true\ncoverpkg = [\"./calc\", \"./util\"]\nrace = true\nmin_package_coverage = 75.0\n";
    let ws = module(build).build();
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    // util's test runs calc.Twice: calc is 3 of 4 statements.
    let (funcs, total) = cover_func(&ws, PROFILE);
    assert_eq!(total, "80.0%", "{funcs}");
    let merged = ws.read(PROFILE);
    assert!(
        merged.starts_with("mode: atomic\n"),
        "race means atomic: {merged}"
    );
    assert!(
        run.stderr
            .contains("of statements in example.com/m/calc, example.com/m/util"),
        "{}",
        run.stderr
    );
}

#[test]
fn cover_settings_are_checked_with_their_place() {
    for (build, says) in [
        (
            "[go_test.unit]\nmin_coverage = 80.0\n",
            "BUILD.toml:2:16: `min_coverage` needs `cover = true`",
        ),
        (
            "[go_test.unit]\ncover = true\nmin_coverage = 180.0\n",
            "`min_coverage` must be a percentage, 0 to 100, not 180",
        ),
        (
            "[go_test.unit]\ncover = true\nrace = true\ncovermode = \"count\"\n",
            "with race = true, covermode must be `atomic`",
        ),
        (
            "[go_test.unit]\ncover = true\ncoverpkg = [\"./nope\"]\n",
            "coverpkg `./nope` matches no Go package in module example.com/m",
        ),
        (
            "[go_test.unit]\ncover = true\nmin_coverage = \"high\"\n",
            "`min_coverage` must be a number, not a string",
        ),
    ] {
        let ws = module(build).build();
        let run = ws.kiln(&["test"]);
        assert_eq!(run.status, 2, "{build}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{build}: {}", run.stderr);
        assert!(
            run.stderr.contains("hint") || says.contains("number"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn a_package_without_tests_counts_as_uncovered_and_fails_a_package_gate() {
    let ws = module("[go_test.unit]\ncover = true\nmin_package_coverage = 40\n").build();
    let run = ws.kiln(&["test"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("example.com/m/cmd/tool 0.0% < min_package_coverage 40.0%"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("example.com/m/calc 50"),
        "{}",
        run.stderr
    );
}
