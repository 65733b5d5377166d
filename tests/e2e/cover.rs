//! Coverage on go_test with the real Go toolchain: per-package profiles cached with the
//! run, the merged profile read by the real `go tool cover`, the total, the gates
//! failing and passing, coverpkg, and race with cover; kiln's blocks and figures against
//! go's own profile of the same module, and measured where the tests ran (sandbox or
//! host), as go measures them there.

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

/// Blocks of a coverage profile, merged as go merges a block seen twice (or-ed in set
/// mode): `file:span` → (statements, covered).
fn blocks(profile: &str) -> std::collections::BTreeMap<String, (u64, bool)> {
    let mut out = std::collections::BTreeMap::new();
    for line in profile.lines().skip(1).filter(|l| !l.is_empty()) {
        let mut parts = line.rsplitn(3, ' ');
        let count: u64 = parts.next().unwrap().parse().unwrap();
        let statements: u64 = parts.next().unwrap().parse().unwrap();
        let block = parts.next().unwrap().to_string();
        let entry = out.entry(block).or_insert((statements, false));
        entry.1 |= count > 0;
    }
    out
}

/// The share of statements covered, as go and kiln show it (one decimal).
fn percent(blocks: &std::collections::BTreeMap<String, (u64, bool)>) -> String {
    let total: u64 = blocks.values().map(|(s, _)| s).sum();
    let covered: u64 = blocks.values().filter(|(_, c)| *c).map(|(s, _)| s).sum();
    format!("{:.1}%", 100.0 * covered as f64 / total as f64)
}

/// `go test ARGS` on the host in `dir` (run under `prefix`, e.g. bubblewrap, if given):
/// its output.
fn host_go_test(dir: &std::path::Path, prefix: &[&str], args: &[&str]) -> String {
    let go = format!("{}/bin/go", go_root());
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.extend([go.as_str(), "test", "-count=1"]);
    argv.extend(args);
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go test {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn the_total_is_go_tests_figure_over_every_block_of_the_merged_profile() {
    // calc has a package-level function literal: go test counts its blocks, `go tool
    // cover -func` (functions only) leaves them out.
    let ws = module("[go_test.unit]\ncover = true\ncoverpkg = [\"./...\"]\n")
        .file(
            "calc/table.go",
            "package calc\n\nvar table = func() map[int]int {\n\tm := map[int]int{}\n\tfor i := 0; i < 3; i++ {\n\t\tm[i] = i\n\t}\n\tif len(m) > 5 {\n\t\tpanic(\"no\")\n\t}\n\treturn m\n}()\n\nfunc Lookup(i int) int { return table[i] }\n",
        )
        .build();
    let run = ws.kiln(&["test"]);
    run.assert_ok();

    // go's own profile of the same module and coverpkg, beside it.
    let dir = tempfile::tempdir().unwrap();
    let go_profile = dir.path().join("go.out");
    let arg = format!("-coverprofile={}", go_profile.display());
    host_go_test(&ws.root, &[], &["-coverpkg=./...", &arg, "./..."]);
    let theirs = blocks(&std::fs::read_to_string(&go_profile).unwrap());
    let ours = blocks(&ws.read(PROFILE));
    assert_eq!(ours, theirs, "kiln's merged profile holds go's blocks");
    let total = percent(&theirs);
    assert!(
        run.stderr.contains(&format!(
            "coverage //:unit: {total} of statements in 3 packages"
        )),
        "{total}: {}",
        run.stderr
    );
    // `go tool cover -func` reads the profile but counts functions only: lower here.
    let (funcs, func_total) = cover_func(&ws, PROFILE);
    assert_ne!(func_total, total, "{funcs}");

    // A coverpkg package neither tested nor linked by a tested package's binary (util,
    // cmd/tool) is left out by go, and so by kiln: the blocks are go's again.
    ws.write(
        "BUILD.toml",
        "[go_test.unit]\npackages = [\"./calc\"]\ncover = true\ncoverpkg = [\"./...\"]\n",
    );
    ws.kiln(&["test"]).assert_ok();
    host_go_test(&ws.root, &[], &["-coverpkg=./...", &arg, "./calc"]);
    let theirs = blocks(&std::fs::read_to_string(&go_profile).unwrap());
    assert_eq!(blocks(&ws.read(PROFILE)), theirs);
    assert!(
        theirs.keys().all(|b| b.starts_with("example.com/m/calc/")),
        "{theirs:?}"
    );

    // One package alone: kiln's figure is the one `go test -cover` prints for it.
    let ws = module("[go_test.unit]\npackages = [\"./calc\"]\ncover = true\n")
        .file("calc/table.go", &ws.read("calc/table.go"))
        .build();
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    let go = host_go_test(&ws.root, &[], &["-cover", "./calc"]);
    let figure = go
        .split("coverage: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("{go}"));
    assert!(
        run.stderr.contains(&format!(
            "coverage //:unit: {figure} of statements in 1 package"
        )),
        "{go}: {}",
        run.stderr
    );
}

#[test]
fn coverage_is_what_go_measures_where_the_tests_ran() {
    // The test takes another branch without a network interface with a hardware
    // address, as in bubblewrap's empty network namespace (loopback only); google/uuid's
    // node ID does the same (87.3% under kiln's sandbox, 87.6% on a host with one).
    let ws = go_workspace()
        .file(
            "netif/netif.go",
            "package netif\n\nimport \"net\"\n\nfunc Hardware() bool {\n\tifs, err := net.Interfaces()\n\tif err != nil {\n\t\treturn false\n\t}\n\tfor _, i := range ifs {\n\t\tif len(i.HardwareAddr) >= 6 {\n\t\t\treturn true\n\t\t}\n\t}\n\treturn false\n}\n",
        )
        .file(
            "netif/netif_test.go",
            "package netif\n\nimport \"testing\"\n\nfunc TestHardware(t *testing.T) { t.Log(Hardware()) }\n",
        )
        .file("BUILD.toml", "[go_test.unit]\ncover = true\n")
        .build();
    let shown = |run: &crate::support::Run| -> String {
        run.assert_ok();
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with("coverage //:unit: "))
            .unwrap_or_else(|| panic!("{}", run.stderr))
            .to_string();
        line["coverage //:unit: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let sandboxed = shown(&ws.kiln(&["test", "--sandbox=bwrap"]));
    let bwrap = ["bwrap", "--unshare-net", "--dev-bind", "/", "/"];
    let go = host_go_test(&ws.root, &bwrap, &["-cover", "./netif"]);
    assert!(
        go.contains(&format!("coverage: {sandboxed} ")),
        "{sandboxed}: {go}"
    );
    let found = "netif/netif.go:12.4,13.1 1 ";
    assert!(
        ws.read(PROFILE).contains(&format!("{found}0")),
        "{}",
        ws.read(PROFILE)
    );

    // Without bubblewrap the tests see the host's interfaces, as `go test` does.
    let elsewhere = ws.copy();
    let plain = shown(&elsewhere.kiln(&["test", "--sandbox=dir"]));
    let go = host_go_test(&ws.root, &[], &["-cover", "./netif"]);
    assert!(go.contains(&format!("coverage: {plain} ")), "{plain}: {go}");
}
