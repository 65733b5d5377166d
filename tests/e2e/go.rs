//! The Go rules with the real Go toolchain: per-package test caching, failures, the race
//! detector, cross-compiled reproducible binaries, stamping, and BUILD.toml errors.

use std::process::Command;

use crate::support::{go_workspace, Builder, Workspace};

/// Three packages: `leaf`, `mid` (imports leaf) and `alone`; a main package `cmd/app`.
fn module() -> Builder {
    go_workspace()
        .file("leaf/leaf.go", "package leaf\n\nfunc Value() int { return 40 }\n")
        .file(
            "leaf/leaf_test.go",
            "package leaf\n\nimport \"testing\"\n\nfunc TestValue(t *testing.T) {\n\tif Value() != 40 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n",
        )
        .file("mid/mid.go", "package mid\n\nimport \"example.com/m/leaf\"\n\nfunc Value() int { return leaf.Value() + 2 }\n")
        .file(
            "mid/mid_test.go",
            "package mid\n\nimport \"testing\"\n\nfunc TestValue(t *testing.T) {\n\tif Value() < 40 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n",
        )
        .file("alone/alone.go", "package alone\n\nfunc Name() string { return \"alone\" }\n")
        .file(
            "alone/alone_test.go",
            "package alone\n\nimport \"testing\"\n\nfunc TestName(t *testing.T) {\n\tif Name() != \"alone\" {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n",
        )
        .file(
            "cmd/app/main.go",
            "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\n\t\"example.com/m/mid\"\n)\n\nvar version = \"dev\"\n\nfunc main() {\n\tif len(os.Args) > 1 && os.Args[1] == \"-version\" {\n\t\tfmt.Println(version)\n\t\treturn\n\t}\n\tfmt.Println(mid.Value())\n}\n",
        )
        .file(
            "BUILD.toml",
            r#"
[go_test.unit]
packages = ["./..."]

[go_binary.app]
main = "./cmd/app"
platforms = ["linux/amd64", "linux/arm64"]
ldflags = ["-s", "-w"]
x_defs = { "main.version" = "{STABLE_GIT_DESCRIBE}" }
"#,
        )
        .file("kiln.toml", &format!(
            "[workspace]\nname = \"gotest\"\n\n[go]\nroot = \"{}\"\n\n[stamp]\nSTABLE_GIT_DESCRIBE = \"v1.2.3\"\n",
            crate::support::go_root()
        ))
}

fn tested_packages(ws: &Workspace, args: &[&str]) -> (crate::support::Run, Vec<String>) {
    let run = ws.kiln(args);
    let mut ran: Vec<String> = run
        .ran()
        .into_iter()
        .filter_map(|l| {
            l.strip_prefix("GoTest //:unit [")
                .map(|p| p.trim_end_matches(']').to_string())
        })
        .collect();
    ran.sort();
    (run, ran)
}

#[test]
fn editing_a_package_reruns_its_tests_and_its_importers_only() {
    let ws = module().build();
    let (run, ran) = tested_packages(&ws, &["test"]);
    run.assert_ok();
    assert_eq!(
        ran,
        [
            "example.com/m/alone",
            "example.com/m/leaf",
            "example.com/m/mid"
        ]
    );
    assert!(
        run.stderr.contains("ok  \texample.com/m/leaf\t"),
        "{}",
        run.stderr
    );

    let (run, ran) = tested_packages(&ws, &["test"]);
    run.assert_ok();
    assert!(ran.is_empty(), "nothing reruns: {ran:?}");
    assert!(
        run.stderr.contains("ok  \texample.com/m/alone\t(cached)"),
        "{}",
        run.stderr
    );

    // Code that changes the binary (a constant folded to the same value would not).
    ws.write(
        "leaf/leaf.go",
        "package leaf\n\nvar calls int\n\nfunc Value() int { calls++; return 40 }\n",
    );
    let (run, ran) = tested_packages(&ws, &["test"]);
    run.assert_ok();
    assert_eq!(
        ran,
        ["example.com/m/leaf", "example.com/m/mid"],
        "alone does not import leaf"
    );

    // A file outside every package changes the module listing but no test's inputs.
    ws.write("NOTES.md", "notes\n");
    let (run, ran) = tested_packages(&ws, &["test"]);
    run.assert_ok();
    assert!(ran.is_empty(), "{ran:?}");
}

#[test]
fn go_list_runs_again_only_when_an_import_changes() {
    let ws = module().build();
    ws.kiln(&["test"]).assert_ok();
    let listed = |run: &crate::support::Run| run.ran().iter().any(|l| l.starts_with("GoList //"));

    ws.write(
        "leaf/leaf.go",
        "package leaf\n\nvar calls int\n\nfunc Value() int { calls++; return 40 }\n",
    );
    let (run, ran) = tested_packages(&ws, &["test"]);
    run.assert_ok();
    assert!(
        !listed(&run),
        "a code edit needs no new listing: {}",
        run.stderr
    );
    assert_eq!(ran, ["example.com/m/leaf", "example.com/m/mid"]);

    // alone now imports leaf: listed again, and from now on leaf's edits rerun it.
    ws.write(
        "alone/alone.go",
        "package alone\n\nimport \"example.com/m/leaf\"\n\nfunc Name() string { _ = leaf.Value(); return \"alone\" }\n",
    );
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert!(listed(&run), "{}", run.stderr);
    ws.write(
        "leaf/leaf.go",
        "package leaf\n\nvar calls int\n\nfunc Value() int { calls += 2; return 40 }\n",
    );
    let (run, ran) = tested_packages(&ws, &["test"]);
    run.assert_ok();
    assert!(!listed(&run), "{}", run.stderr);
    assert_eq!(
        built_packages(&run),
        [
            "example.com/m/alone",
            "example.com/m/cmd/app",
            "example.com/m/leaf",
            "example.com/m/mid"
        ]
    );
    assert_eq!(
        ran,
        [
            "example.com/m/alone",
            "example.com/m/leaf",
            "example.com/m/mid"
        ]
    );
}

#[test]
fn failing_test_shows_its_log_exits_non_zero_and_is_not_cached() {
    let ws = module()
        .file(
            "alone/alone_test.go",
            "package alone\n\nimport \"testing\"\n\nfunc TestName(t *testing.T) {\n\tt.Log(\"looking closely\")\n\tt.Fatalf(\"got %q\", Name())\n}\n",
        )
        .build();
    let junit = ws.path("junit.xml");
    let run = ws.kiln(&["test", "--keep-going", "--junit", junit.to_str().unwrap()]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("--- FAIL: TestName"), "{}", run.stderr);
    assert!(run.stderr.contains("looking closely"), "{}", run.stderr);
    assert!(run.stderr.contains("got \"alone\""), "{}", run.stderr);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("name=\"TestName\""), "{xml}");
    assert!(xml.contains("<failure"), "{xml}");
    assert!(
        xml.contains("name=\"example.com/m/leaf\" tests=\"1\" failures=\"0\""),
        "{xml}"
    );
    // Failures are never cached: the next run executes it again.
    let (run, ran) = tested_packages(&ws, &["test", "--keep-going"]);
    assert_eq!(run.status, 1);
    assert_eq!(ran, ["example.com/m/alone"]);
}

#[test]
fn a_failed_test_shows_though_the_tests_after_it_print_over_a_mebibyte() {
    // TestA fails first; TestB then passes printing 3 MiB. kiln keeps only the last MiB
    // of a failed action's output to show, but the report comes from all of it: the
    // `--- FAIL` line, the failure's message and the JUnit failure are all there.
    let ws = module()
        .file(
            "alone/alone_test.go",
            "package alone\n\nimport (\n\t\"strings\"\n\t\"testing\"\n)\n\nfunc TestA(t *testing.T) {\n\tt.Fatalf(\"early failure of %q\", Name())\n}\n\nfunc TestB(t *testing.T) {\n\tline := strings.Repeat(\"x\", 1023)\n\tfor i := 0; i < 3072; i++ {\n\t\tt.Log(line)\n\t}\n}\n",
        )
        .build();
    let junit = ws.path("junit.xml");
    let run = ws.kiln(&["test", "--keep-going", "--junit", junit.to_str().unwrap()]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let shown = &run.stderr;
    assert!(
        shown.contains("--- FAIL: TestA"),
        "{}",
        &shown[..shown.len().min(4000)]
    );
    assert!(
        shown.contains("early failure of \"alone\""),
        "{}",
        &shown[..shown.len().min(4000)]
    );
    assert!(
        shown.contains("FAIL\texample.com/m/alone"),
        "{}",
        &shown[..shown.len().min(4000)]
    );
    assert!(
        shown.contains("the whole of it is in"),
        "{}",
        &shown[..shown.len().min(4000)]
    );
    // Without -v the passing test's 3 MiB are not shown, as under go test.
    assert!(shown.len() < 64 * 1024, "{} bytes shown", shown.len());
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("name=\"TestA\""),
        "{}",
        &xml[..xml.len().min(4000)]
    );
    assert!(xml.contains("<failure"), "{}", &xml[..xml.len().min(4000)]);
}

#[test]
fn a_run_that_matches_no_test_says_so_as_go_test_does() {
    let ws = module().build();
    let run = ws.kiln(&["test", "--", "-run", "NoSuchTest"]);
    run.assert_ok();
    for pkg in ["leaf", "mid", "alone"] {
        let line = format!("ok  \texample.com/m/{pkg}\t");
        let shown = run.stderr.lines().find(|l| l.starts_with(&line));
        assert!(
            shown.is_some_and(|l| l.ends_with(" [no tests to run]")),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn race_detector_finds_a_planted_race() {
    let ws = module()
        .file(
            "alone/race_test.go",
            "package alone\n\nimport (\n\t\"sync\"\n\t\"testing\"\n)\n\nfunc TestRace(t *testing.T) {\n\tcounter := 0\n\tvar wg sync.WaitGroup\n\tfor i := 0; i < 2; i++ {\n\t\twg.Add(1)\n\t\tgo func() { defer wg.Done(); counter++ }()\n\t}\n\twg.Wait()\n\t_ = counter\n}\n",
        )
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./alone\"]\nrace = true\n")
        .build();
    let run = ws.kiln(&["test"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("WARNING: DATA RACE"), "{}", run.stderr);
}

/// With `race = true` cgo is on, so a package's cgo files are part of it, as under
/// `go test -race`.
#[test]
fn race_tests_build_a_package_with_its_cgo_files() {
    let ws = module()
        .file(
            "alone/twice.go",
            "package alone\n\n// int twice(int x) { return 2 * x; }\nimport \"C\"\n\nfunc Twice(x int) int { return int(C.twice(C.int(x))) }\n",
        )
        .file(
            "alone/twice_test.go",
            "package alone\n\nimport \"testing\"\n\nfunc TestTwice(t *testing.T) {\n\tif Twice(21) != 42 {\n\t\tt.Fatal(Twice(21))\n\t}\n}\n",
        )
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./alone\"]\nrace = true\n")
        .build();
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert!(run.stderr.contains("ok  \texample.com/"), "{}", run.stderr);
}

#[test]
fn flaky_test_passes_on_retry_and_is_reported() {
    let ws = module()
        .file(
            "alone/flaky_test.go",
            "package alone\n\nimport (\n\t\"os\"\n\t\"path/filepath\"\n\t\"testing\"\n)\n\nfunc TestFlaky(t *testing.T) {\n\tmark := filepath.Join(os.Getenv(\"HOME\"), \"tried\")\n\tif _, err := os.Stat(mark); err != nil {\n\t\tos.WriteFile(mark, nil, 0o644)\n\t\tt.Fatal(\"first attempt fails\")\n\t}\n}\n",
        )
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./alone\"]\nflaky_attempts = 3\n")
        .build();
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("(flaky: passed on attempt 2)"),
        "{}",
        run.stderr
    );
}

/// How many `go test` commands a run started (from the sandbox commands kiln prints
/// with KILN_DEBUG_SANDBOX).
fn go_test_commands(ws: &Workspace, args: &[&str]) -> (crate::support::Run, usize) {
    let out = ws
        .cmd(args)
        .env("KILN_DEBUG_SANDBOX", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let n = stderr
        .lines()
        .filter(|l| l.starts_with("kiln: sandbox command:") && l.contains("\"test\" \"-json\""))
        .count();
    let run = crate::support::Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    };
    (run, n)
}

/// A module no other run has built: Go's test cache (shared by the tests through their
/// one Go compile cache) holds none of its binaries.
fn unique_module() -> Builder {
    let nonce = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
        std::process::id()
    );
    let file = |pkg: &str| {
        format!("package {pkg}\n\n// Nonce makes this module's binaries its own (init keeps it in them).\nvar Nonce = \"{nonce}\"\n\nfunc init() {{\n\tif Nonce == \"\" {{\n\t\tpanic(\"no nonce\")\n\t}}\n}}\n")
    };
    module()
        .file("leaf/nonce.go", &file("leaf"))
        .file("alone/nonce.go", &file("alone"))
}

#[test]
fn packages_that_miss_build_in_one_go_command_unless_batch_is_off() {
    let ws = unique_module().build();
    let (run, commands) = go_test_commands(&ws, &["test"]);
    run.assert_ok();
    assert_eq!(
        commands, 1,
        "one go test builds all four packages: {}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("kiln: GoTestBuild ").count(),
        4,
        "{}",
        run.stderr
    );

    let ws = unique_module()
        .file(
            "BUILD.toml",
            "[go_test.unit]\npackages = [\"./...\"]\nbatch = false\n",
        )
        .build();
    let (run, commands) = go_test_commands(&ws, &["test"]);
    run.assert_ok();
    assert_eq!(commands, 4, "a go command each: {}", run.stderr);
}

/// The packages whose tests were built (`GoTestBuild`) in a run.
fn built_packages(run: &crate::support::Run) -> Vec<String> {
    let mut built: Vec<String> = run
        .ran()
        .into_iter()
        .filter_map(|l| {
            l.strip_prefix("GoTestBuild //:unit [")
                .map(|p| p.trim_end_matches(']').to_string())
        })
        .collect();
    built.sort();
    built
}

#[test]
fn a_package_that_fails_to_build_shows_the_compiler_and_spares_the_others() {
    let ws = module()
        .file("mid/broken.go", "package mid\n\nvar _ = nope\n")
        .build();
    let (run, ran) = tested_packages(&ws, &["test", "--keep-going"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert_eq!(built_packages(&run).len(), 4, "{}", run.stderr);
    assert_eq!(
        ran,
        ["example.com/m/alone", "example.com/m/leaf"],
        "mid never runs"
    );
    assert!(run.stderr.contains("undefined: nope"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("FAIL\texample.com/m/mid [build failed]"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("ok  \texample.com/m/leaf\t"),
        "{}",
        run.stderr
    );
    // The compiler's output shows with each package that failed to build for it: mid
    // and cmd/app, which imports it; never with the others.
    assert!(
        run.stderr
            .contains("FAIL\texample.com/m/cmd/app [build failed]"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("undefined: nope").count(),
        run.stderr.matches("[build failed]").count(),
        "{}",
        run.stderr
    );

    // The packages that passed in the same run were cached; only mid builds again.
    let (run, ran) = tested_packages(&ws, &["test", "--keep-going"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert_eq!(
        built_packages(&run),
        ["example.com/m/cmd/app", "example.com/m/mid"]
    );
    assert!(ran.is_empty(), "{ran:?}");
    assert!(
        run.stderr.contains("ok  \texample.com/m/alone\t(cached)"),
        "{}",
        run.stderr
    );
}

fn elf_machine(bytes: &[u8]) -> u16 {
    assert_eq!(&bytes[..4], b"\x7fELF", "an ELF file");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

#[test]
fn binaries_are_cross_compiled_stamped_and_identical_across_paths_and_caches() {
    let ws = module().build();
    ws.kiln(&["build", "//:app"]).assert_ok();
    let amd64 = std::fs::read(ws.path("kiln-out/app/linux_amd64/app")).unwrap();
    let arm64 = std::fs::read(ws.path("kiln-out/app/linux_arm64/app")).unwrap();
    assert_eq!(elf_machine(&amd64), 62, "x86-64");
    assert_eq!(elf_machine(&arm64), 183, "aarch64");
    let out = Command::new(ws.path("kiln-out/app/linux_amd64/app"))
        .arg("-version")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v1.2.3\n");

    let copy = ws.copy();
    copy.kiln(&["build", "//:app"]).assert_ok();
    for platform in ["linux_amd64", "linux_arm64"] {
        let rel = format!("kiln-out/app/{platform}/app");
        assert!(
            std::fs::read(ws.path(&rel)).unwrap() == std::fs::read(copy.path(&rel)).unwrap(),
            "{rel} differs between the two workspaces"
        );
    }
}

fn git(ws: &Workspace, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(&ws.root)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn a_new_commit_changes_the_stamp_and_an_untouched_tree_does_not() {
    let ws = module()
        .file("BUILD.toml", "[go_binary.app]\nmain = \"./cmd/app\"\nx_defs = { \"main.version\" = \"{STABLE_GIT_COMMIT}\" }\n")
        .file(".gitignore", "kiln-out/\n")
        .build();
    git(&ws, &["init", "-q"]);
    git(&ws, &["add", "."]);
    git(&ws, &["commit", "-q", "-m", "one"]);
    ws.kiln(&["build"]).assert_ok();
    let platform = format!(
        "linux_{}",
        if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        }
    );
    let bin = ws.path(&format!("kiln-out/app/{platform}/app"));
    let first =
        String::from_utf8(Command::new(&bin).arg("-version").output().unwrap().stdout).unwrap();
    assert_eq!(first.trim().len(), 40, "a commit hash: {first}");

    let again = ws.kiln(&["build"]);
    again.assert_ok();
    assert_eq!(
        again.executed(),
        0,
        "time passing relinks nothing: {}",
        again.stderr
    );

    // After the racy window, an unchanged tree and commit replay the build (the no-op
    // fast path asks git for the stamp values again)...
    std::thread::sleep(std::time::Duration::from_millis(2100));
    ws.kiln(&["build"]).assert_ok();
    let replay = ws.kiln(&["build"]);
    assert!(
        replay
            .stderr
            .contains("nothing changed since the last build"),
        "{}",
        replay.stderr
    );

    // ...and a new commit is a new stamp: relinked, not replayed.
    git(&ws, &["commit", "-q", "--allow-empty", "-m", "two"]);
    let run = ws.kiln(&["build"]);
    assert!(!run.stderr.contains("nothing changed"), "{}", run.stderr);
    run.assert_ok();
    assert_eq!(
        run.ran(),
        [format!("GoBuild //:app [{}]", platform.replace('_', "/"))]
    );
    let second =
        String::from_utf8(Command::new(&bin).arg("-version").output().unwrap().stdout).unwrap();
    assert_ne!(first, second);
}

#[test]
fn unknown_platform_and_missing_main_are_clear_errors() {
    let ws = module()
        .file(
            "BUILD.toml",
            "[go_binary.app]\nmain = \"./cmd/app\"\nplatforms = [\"linux/amd46\"]\n",
        )
        .build();
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr
            .contains("BUILD.toml:3:14: unknown platform `linux/amd46`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("did you mean `linux/amd64`?"),
        "{}",
        run.stderr
    );

    ws.write("BUILD.toml", "[go_binary.app]\nmain = \"./cmd/nope\"\n");
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr.contains(
            "BUILD.toml:2:8: main package `./cmd/nope` not found in module example.com/m"
        ),
        "{}",
        run.stderr
    );

    ws.write("BUILD.toml", "[go_binary.app]\nmain = \"./leaf\"\n");
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr
            .contains("`./leaf` is package leaf, not a main package"),
        "{}",
        run.stderr
    );
}

/// A file-based GOPROXY holding `example.com/dep v1.0.0`, written by the test.
pub(crate) fn write_proxy(dir: &std::path::Path, answer: u32) {
    write_proxy_go(dir, answer, "1.23");
}

/// [`write_proxy`] with the dependency's go.mod saying `go {go}`.
pub(crate) fn write_proxy_go(dir: &std::path::Path, answer: u32, go: &str) {
    let script = format!(
        r#"
import os, sys, zipfile
root = sys.argv[1]
v = os.path.join(root, "example.com", "dep", "@v")
os.makedirs(v, exist_ok=True)
open(os.path.join(v, "list"), "w").write("v1.0.0\n")
open(os.path.join(v, "v1.0.0.info"), "w").write('{{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}}')
mod = "module example.com/dep\n\ngo {go}\n"
open(os.path.join(v, "v1.0.0.mod"), "w").write(mod)
with zipfile.ZipFile(os.path.join(v, "v1.0.0.zip"), "w") as z:
    z.writestr("example.com/dep@v1.0.0/go.mod", mod)
    z.writestr("example.com/dep@v1.0.0/dep.go", "package dep\n\nfunc Answer() int {{ return {answer} }}\n")
"#
    );
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A workspace from `builder` (its go.mod requiring `example.com/dep`) with `[go] proxy`
/// pointing at a file GOPROXY serving it (the directory returned, kept by the caller),
/// after the real go ran each of `steps` (`mod tidy` writes go.sum as a developer
/// would have it) against that proxy.
pub(crate) fn with_proxied_dep(
    builder: Builder,
    steps: &[&[&str]],
) -> (tempfile::TempDir, Workspace) {
    with_proxied_dep_go(builder, steps, "1.23")
}

/// [`with_proxied_dep`] with the dependency's go.mod saying `go {go}`.
pub(crate) fn with_proxied_dep_go(
    builder: Builder,
    steps: &[&[&str]],
    go: &str,
) -> (tempfile::TempDir, Workspace) {
    let proxy = tempfile::tempdir().unwrap();
    write_proxy_go(proxy.path(), 42, go);
    let proxy_url = format!("file://{}", proxy.path().display());
    let ws = builder.build();
    ws.write(
        "kiln.toml",
        &format!("{}proxy = \"{proxy_url}\"\n", ws.read("kiln.toml")),
    );
    let modcache = tempfile::tempdir().unwrap();
    for args in steps {
        let out = Command::new(format!("{}/bin/go", crate::support::go_root()))
            .args(*args)
            .current_dir(&ws.root)
            .env("GOPROXY", &proxy_url)
            .env("GOSUMDB", "off")
            .env("GOFLAGS", "-mod=mod -modcacherw")
            .env("GOMODCACHE", modcache.path())
            .env("GOTOOLCHAIN", "local")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (proxy, ws)
}

#[test]
fn dependencies_come_from_a_download_verified_against_go_sum() {
    let builder = go_workspace()
        .file("go.mod", "module example.com/m\n\ngo 1.23\n\nrequire example.com/dep v1.0.0\n")
        .file("use/use.go", "package use\n\nimport \"example.com/dep\"\n\nfunc Twice() int { return 2 * dep.Answer() }\n")
        .file(
            "use/use_test.go",
            "package use\n\nimport \"testing\"\n\nfunc TestTwice(t *testing.T) {\n\tif Twice() != 84 {\n\t\tt.Fatal(Twice())\n\t}\n}\n",
        )
        .file("BUILD.toml", "[go_test.unit]\n");
    let (proxy, ws) = with_proxied_dep(builder, &[&["mod", "tidy"]]);
    assert!(ws.read("go.sum").contains("example.com/dep v1.0.0 h1:"));

    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert!(
        run.ran().contains(&"GoModDownload //:unit".to_string()),
        "{:?}",
        run.ran()
    );
    assert!(
        run.stderr.contains("ok  \texample.com/m/use"),
        "{}",
        run.stderr
    );
    let again = ws.kiln(&["test"]);
    assert_eq!(again.executed(), 0, "{}", again.stderr);

    // The proxy now serves other bytes for the same version: a fresh cache downloads
    // again, and go.sum refuses them.
    write_proxy(proxy.path(), 7);
    let copy = ws.copy();
    let run = copy.kiln(&["test"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("GoModDownload"), "{}", run.stderr);
    assert!(run.stderr.contains("checksum mismatch"), "{}", run.stderr);
}
