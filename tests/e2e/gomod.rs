//! Real Go modules: `kiln test` agrees with `go test ./...` package by package on
//! fixtures shaped like the modules kiln meets in the wild (code in the module root,
//! data files beside the tests, `runtime.Caller` lookups, Unix sockets, tests that run
//! programs, symlinked go.mod, vendor/, nested modules), and reruns exactly what a
//! change can reach: a fixture edit only its readers, a comment edit nothing.

use std::collections::BTreeMap;
use std::process::Command;

use crate::support::{go_root, go_workspace, Builder, Run, Workspace};

/// Each package's verdict in `go test` output: `ok`, `FAIL` or `?`.
pub(crate) fn verdicts(output: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in output.lines() {
        let mut fields = line.split(['\t', ' ']).filter(|f| !f.is_empty());
        let (Some(verdict), Some(pkg)) = (fields.next(), fields.next()) else {
            continue;
        };
        if matches!(verdict, "ok" | "FAIL" | "?") && pkg.contains('.') {
            out.insert(pkg.to_string(), verdict.to_string());
        }
    }
    out
}

/// `go test ./...` run offline in `dir` of the workspace, as a developer would.
pub(crate) fn go_test(ws: &Workspace, dir: &str, flags: &[&str]) -> BTreeMap<String, String> {
    let out = Command::new(format!("{}/bin/go", go_root()))
        .arg("test")
        .args(flags)
        .arg("./...")
        .current_dir(ws.path(dir))
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("GOFLAGS", "")
        .env(
            "GOCACHE",
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache"),
        )
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    verdicts(&text)
}

/// kiln's verdicts, checked equal to go's.
#[track_caller]
fn agrees_with_go(ws: &Workspace, run: &Run, dirs: &[&str]) -> BTreeMap<String, String> {
    let kiln = verdicts(&run.stderr);
    let mut go = BTreeMap::new();
    for dir in dirs {
        go.extend(go_test(ws, dir, &[]));
    }
    assert!(!go.is_empty(), "go test said nothing");
    assert_eq!(
        kiln, go,
        "kiln's verdicts differ from go test's:\n{}",
        run.stderr
    );
    kiln
}

pub fn test_file(pkg: &str, imports: &[&str], body: &str) -> String {
    let imports: String = imports.iter().map(|i| format!("\t\"{i}\"\n")).collect();
    format!("package {pkg}\n\nimport (\n{imports}\t\"testing\"\n)\n\nfunc TestIt(t *testing.T) {{\n{body}\n}}\n")
}

/// A module shaped like small public libraries: code in its root, data beside tests.
fn library() -> Builder {
    go_workspace()
        .file("go.mod", "module example.com/lib\n\ngo 1.23\n")
        .file("lib.go", "package lib\n\n// Name is the library's name.\nfunc Name() string { return \"lib\" }\n")
        .file(
            "lib_test.go",
            &test_file("lib", &["os"], "\tb, err := os.ReadFile(\"data.json\")\n\tif err != nil || Name() != \"lib\" {\n\t\tt.Fatal(err)\n\t}\n\t_ = b"),
        )
        .file("data.json", "{\"name\": \"lib\"}\n")
        .file("internal/tls/tls.go", "package tls\n")
        .file(
            "internal/tls/tls_test.go",
            &test_file(
                "tls",
                &["os", "path/filepath", "runtime"],
                "\t_, file, _, _ := runtime.Caller(0)\n\tif _, err := os.ReadFile(filepath.Join(filepath.Dir(file), \"..\", \"testdata\", \"cert.pem\")); err != nil {\n\t\tt.Fatal(err)\n\t}",
            ),
        )
        .file("internal/testdata/cert.pem", "-----BEGIN CERTIFICATE-----\n")
        .file("sock/sock.go", "package sock\n")
        .file(
            "sock/sock_test.go",
            &test_file(
                "sock",
                &["net", "path/filepath"],
                "\tl, err := net.Listen(\"unix\", filepath.Join(t.TempDir(), \"a-rather-long-socket-name.sock\"))\n\tif err != nil {\n\t\tt.Fatal(err)\n\t}\n\tl.Close()",
            ),
        )
        .file("run/run.go", "package run\n")
        .file(
            "run/run_test.go",
            &test_file(
                "run",
                &["os/exec"],
                "\tfor _, c := range [][]string{{\"git\", \"--version\"}, {\"sh\", \"-c\", \"echo hi\"}} {\n\t\tif out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {\n\t\t\tt.Fatal(err, string(out))\n\t\t}\n\t}",
            ),
        )
        .file("writes/writes.go", "package writes\n")
        .file(
            "writes/writes_test.go",
            &test_file(
                "writes",
                &["os"],
                "\tf, err := os.CreateTemp(\".\", \"scratch-\")\n\tif err != nil {\n\t\tt.Fatal(err)\n\t}\n\tf.Close()\n\tos.Remove(f.Name())",
            ),
        )
        .file("notests/notests.go", "package notests\n")
        .file(
            "fails/fails_test.go",
            &test_file("fails", &[], "\tt.Log(\"a log line of the failing test\")\n\tt.Fatal(\"it fails\")"),
        )
        .file("fails/fails.go", "package fails\n")
        .file(
            "fails/passes_test.go",
            "package fails\n\nimport \"testing\"\n\nfunc TestPasses(t *testing.T) { t.Log(\"a passing test's log\") }\n",
        )
        .file(
            "BUILD.toml",
            "[go_test.unit]\npackages = [\"./...\"]\ntools = [\"git\", \"sh\"]\n",
        )
}

#[test]
fn verdicts_match_go_test_on_a_library_with_its_code_in_the_root() {
    let ws = library().build();
    let run = ws.kiln(&["test", "--keep-going"]);
    assert_eq!(run.status, 1, "fails/ fails: {}", run.stderr);
    let verdicts = agrees_with_go(&ws, &run, &[""]);
    assert_eq!(
        verdicts["example.com/lib"], "ok",
        "the module-root package ran"
    );
    assert_eq!(verdicts["example.com/lib/notests"], "?");
    assert_eq!(
        verdicts["example.com/lib/writes"], "ok",
        "a test may write into its package directory, as under go test"
    );
    assert!(
        run.stderr
            .contains("?   \texample.com/lib/notests\t[no test files]"),
        "{}",
        run.stderr
    );
    // A failing package shows its failing test, as go test does: not its passing ones.
    assert!(run.stderr.contains("--- FAIL: TestIt"), "{}", run.stderr);
    assert!(
        run.stderr.contains("a log line of the failing test"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("a passing test's log"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("=== RUN"), "{}", run.stderr);

    // -v shows everything; -run picks tests; both are the binaries' flags.
    let run = ws.kiln(&["test", "--keep-going", "--", "-v", "-run", "TestPasses"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("a passing test's log"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("=== RUN   TestPasses"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("it fails"), "{}", run.stderr);
}

#[test]
fn a_test_running_an_undeclared_program_gets_a_hint_naming_it() {
    let ws = library()
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./run\"]\n")
        .build();
    let run = ws.kiln(&["test"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("executable file not found in $PATH"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("declare it with tools = [\"git\"]"),
        "{}",
        run.stderr
    );
}

#[test]
fn explain_says_a_failed_package_is_run_again_because_failures_are_not_cached() {
    let ws = library()
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./fails\"]\n")
        .build();
    assert_eq!(ws.kiln(&["test"]).status, 1);
    let explain = ws.kiln(&["explain", "//:unit"]);
    assert!(
        explain.stdout.contains(
            "GoTest example.com/lib/fails: failed in the last build; failures are not cached"
        ),
        "{}",
        explain.stdout
    );
    assert_eq!(ws.kiln(&["test"]).status, 1);
    let explain = ws.kiln(&["explain", "//:unit"]);
    assert!(
        !explain.stdout.contains("first build"),
        "{}",
        explain.stdout
    );
}

/// Three packages: `a` reads its testdata, `b` a file elsewhere in the module, `c`
/// nothing; `leaf` is imported by `a`.
fn readers() -> Builder {
    go_workspace()
        .file("leaf/leaf.go", "package leaf\n\n// Value is a value.\n// It is forty.\nfunc Value() int { return 40 }\n")
        .file("a/a.go", "package a\n\nimport \"example.com/m/leaf\"\n\nfunc A() int { return leaf.Value() }\n")
        .file(
            "a/a_test.go",
            &test_file("a", &["os"], "\tif _, err := os.ReadFile(\"testdata/a.json\"); err != nil {\n\t\tt.Fatal(err)\n\t}\n\tt.Log(A())"),
        )
        .file("a/testdata/a.json", "{}\n")
        .file("b/b.go", "package b\n")
        .file(
            "b/b_test.go",
            &test_file("b", &["os"], "\tif _, err := os.ReadFile(\"../shared/b.json\"); err != nil {\n\t\tt.Fatal(err)\n\t}"),
        )
        .file("shared/b.json", "{}\n")
        .file("c/c.go", "package c\n")
        .file("c/c_test.go", &test_file("c", &[], "\t_ = 1"))
        .file("BUILD.toml", "[go_test.unit]\n")
}

fn runs(run: &Run) -> Vec<String> {
    run.ran()
        .into_iter()
        .filter_map(|l| {
            l.strip_prefix("GoTest //:unit [")
                .map(|p| p.trim_end_matches(']').to_string())
        })
        .collect()
}

#[test]
fn a_fixture_edit_reruns_only_the_tests_that_read_it() {
    let ws = readers().build();
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    agrees_with_go(&ws, &run, &[""]);

    ws.write("a/testdata/a.json", "{\"changed\": true}\n");
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert_eq!(runs(&run), ["example.com/m/a"], "{}", run.stderr);
    let explain = ws.kiln(&["explain", "//:unit"]);
    assert!(
        explain.stdout.contains("input changed: a/testdata/a.json"),
        "{}",
        explain.stdout
    );

    ws.write("shared/b.json", "[]\n");
    let run = ws.kiln(&["test"]);
    assert_eq!(runs(&run), ["example.com/m/b"], "{}", run.stderr);

    // A new file nobody reads, in a directory nobody lists, reruns nothing.
    ws.write("shared/other.txt", "x\n");
    let run = ws.kiln(&["test"]);
    assert!(runs(&run).is_empty(), "{}", run.stderr);
    // Taking a's fixture away fails a, as under go test.
    std::fs::remove_file(ws.path("a/testdata/a.json")).unwrap();
    let run = ws.kiln(&["test", "--keep-going"]);
    assert_eq!(run.status, 1);
    assert_eq!(runs(&run), ["example.com/m/a"], "{}", run.stderr);
    agrees_with_go(&ws, &run, &[""]);
}

#[test]
fn a_comment_only_edit_in_a_dependency_reruns_no_test() {
    let ws = readers().build();
    ws.kiln(&["test"]).assert_ok();
    ws.write(
        "leaf/leaf.go",
        "package leaf\n\n// Value is the value.\n// It is 40.\nfunc Value() int { return 40 }\n",
    );
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert!(
        run.stderr
            .contains("kiln: GoTestBuild //:unit [example.com/m/a]"),
        "the binary is built again: {}",
        run.stderr
    );
    assert!(
        runs(&run).is_empty(),
        "it is the same binary: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("ok  \texample.com/m/a\t(cached)"),
        "{}",
        run.stderr
    );
    // A code edit changes the binary: its tests and its importers' run again.
    ws.write(
        "leaf/leaf.go",
        "package leaf\n\nfunc Value() int { return 41 }\n",
    );
    let run = ws.kiln(&["test"]);
    assert_eq!(runs(&run), ["example.com/m/a"], "{}", run.stderr);
}

#[test]
fn test_binaries_and_results_are_shared_across_checkouts_at_other_paths() {
    let ws = library()
        .file(
            "BUILD.toml",
            "[go_test.unit]\npackages = [\"./internal/...\", \".\"]\n",
        )
        .build();
    ws.kiln(&["test"]).assert_ok();
    // Another checkout, another cache directory, the same remote-less store of Go's
    // compile cache: the same keys, so the first cache serves it whole.
    let copy = ws.copy();
    let run = crate::support::kiln_cmd(&copy.root, &ws.cache, &["test"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains(" 0 executed"), "{stderr}");
    assert!(
        stderr.contains("ok  \texample.com/lib/internal/tls\t(cached)"),
        "{stderr}"
    );
}

#[test]
fn symlinked_go_mod_vendor_nested_modules_and_mains_outside_dot_dot_dot() {
    let ws = go_workspace()
        .file("vendor.mod", "module example.com/big\n\ngo 1.23\n\nrequire example.com/dep v1.0.0\n")
        .file("vendor/modules.txt", "# example.com/dep v1.0.0\n## explicit\nexample.com/dep\n")
        .file("vendor/example.com/dep/dep.go", "package dep\n\nfunc Answer() int { return 42 }\n")
        .file("use/use.go", "package use\n\nimport \"example.com/dep\"\n\nfunc Twice() int { return 2 * dep.Answer() }\n")
        .file("use/use_test.go", &test_file("use", &[], "\tif Twice() != 84 {\n\t\tt.Fatal(Twice())\n\t}"))
        .file("_examples/hello/main.go", "package main\n\nfunc main() { println(\"hello\") }\n")
        .file("cmd/docs/main.go", "//go:build docsgen\n\npackage main\n\nfunc main() { println(\"docs\") }\n")
        .file("nested/go.mod", "module example.com/nested\n\ngo 1.23\n")
        .file("nested/n.go", "package nested\n\nfunc N() int { return 1 }\n")
        .file("nested/n_test.go", &test_file("nested", &[], "\tif N() != 1 {\n\t\tt.Fatal()\n\t}"))
        .file("nested/BUILD.toml", "[go_test.unit]\n")
        .file(
            "BUILD.toml",
            "[go_test.unit]\n\n[go_binary.hello]\nmain = \"./_examples/hello\"\n\n[go_binary.docs]\nmain = \"./cmd/docs\"\ntags = [\"docsgen\"]\n",
        )
        .build();
    std::fs::remove_file(ws.path("go.mod")).unwrap();
    std::os::unix::fs::symlink("vendor.mod", ws.path("go.mod")).unwrap();
    let run = ws.kiln(&["test", "//..."]);
    run.assert_ok();
    let kiln = verdicts(&run.stderr);
    let mut go = go_test(&ws, "", &["-mod=vendor"]);
    go.extend(go_test(&ws, "nested", &[]));
    assert_eq!(kiln, go, "{}", run.stderr);
    assert_eq!(kiln["example.com/nested"], "ok");
    assert_eq!(kiln["example.com/big/use"], "ok");
    let run = ws.kiln(&["build", "//:hello", "//:docs"]);
    run.assert_ok();
    let platform = crate::support::host_go_platform();
    assert!(ws
        .path(&format!("kiln-out/hello/{platform}/hello"))
        .is_file());
    assert!(ws.path(&format!("kiln-out/docs/{platform}/docs")).is_file());
}

#[test]
fn rerun_runs_cached_tests_again() {
    let ws = readers().build();
    ws.kiln(&["test"]).assert_ok();
    let run = ws.kiln(&["test"]);
    assert!(runs(&run).is_empty(), "{}", run.stderr);
    let run = ws.kiln(&["test", "--rerun"]);
    run.assert_ok();
    assert_eq!(runs(&run).len(), 3, "{}", run.stderr);
    assert!(
        !run.stderr.contains("GoTestBuild"),
        "binaries come from the cache: {}",
        run.stderr
    );
}

/// A test that runs `go` gets the toolchain its binary was built with, even where
/// `tools = ["go"]` names it (as `kiln init` once wrote) and the host's `go` is a shim
/// (pyenv, asdf: `#!/usr/bin/env bash`, which finds no bash on a test's PATH).
#[test]
fn a_test_running_go_gets_the_toolchain_not_the_hosts_go() {
    let ws = go_workspace()
        .file("gov/gov.go", "package gov\n")
        .file(
            "gov/gov_test.go",
            &test_file(
                "gov",
                &["os/exec", "runtime", "strings"],
                "\tout, err := exec.Command(\"go\", \"env\", \"GOVERSION\").CombinedOutput()\n\tif err != nil {\n\t\tt.Fatalf(\"%v: %s\", err, out)\n\t}\n\tif v := strings.TrimSpace(string(out)); v != runtime.Version() {\n\t\tt.Fatalf(\"go %s, built with %s\", v, runtime.Version())\n\t}",
            ),
        )
        .file("BUILD.toml", "[go_test.unit]\ntools = [\"go\"]\n")
        .file(
            "shims/go",
            &format!("#!/usr/bin/env bash\nexec {}/bin/go \"$@\"\n", go_root()),
        )
        .build();
    let shim = ws.path("shims/go");
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        ws.path("shims").display(),
        std::env::var("PATH").unwrap()
    );
    let run = Run::from(ws.cmd(&["test"]).env("PATH", path).output().unwrap());
    run.assert_ok();
    assert_eq!(
        verdicts(&run.stderr),
        go_test(&ws, "", &[]),
        "{}",
        run.stderr
    );
}

/// A test that runs the go command on its own module (`go build`, `go run`: cobra's
/// dead-code check, logrus's exit handler test) finds the module's downloaded
/// dependencies, as under `go test` with a filled module cache.
#[test]
fn a_test_running_go_on_its_module_finds_the_downloaded_dependencies() {
    let builder = go_workspace()
        .file("go.mod", "module example.com/m\n\ngo 1.23\n\nrequire example.com/dep v1.0.0\n")
        .file("use/use.go", "package use\n\nimport \"example.com/dep\"\n\nfunc Twice() int { return 2 * dep.Answer() }\n")
        .file(
            "use/use_test.go",
            &test_file(
                "use",
                &["os", "os/exec"],
                "\tout, err := exec.Command(\"go\", \"build\", \"-o\", os.DevNull, \".\").CombinedOutput()\n\tif err != nil {\n\t\tt.Fatalf(\"%v: %s\", err, out)\n\t}",
            ),
        )
        .file("BUILD.toml", "[go_test.unit]\n");
    let (_proxy, ws) = crate::go::with_proxied_dep(builder, &[&["mod", "tidy"]]);
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("ok  \texample.com/m/use"),
        "{}",
        run.stderr
    );
}

/// The go commands a test runs read Go's compile cache through a view: what kiln
/// compiled for the test binary (net/http and what it imports) is not compiled again,
/// and what they compile themselves never reaches the store, so a rerun compiles it
/// again. Before views, every such go command compiled the standard library afresh.
#[test]
fn a_test_running_go_reads_the_compile_cache_and_adds_nothing_to_it() {
    let ws = go_workspace()
        .file("go.mod", "module example.com/m\n\ngo 1.23\n")
        .file(
            "use/use.go",
            "package use\n\nimport \"net/http\"\n\nfunc Code() int { return http.StatusTeapot }\n",
        )
        .file(
            "use/use_test.go",
            &test_file(
                "use",
                &["os", "os/exec", "path/filepath"],
                // A module of the test's own making, so nothing else ever compiled it.
                "\tdir := t.TempDir()\n\tos.WriteFile(filepath.Join(dir, \"go.mod\"), []byte(\"module example.com/scratch\\n\\ngo 1.23\\n\"), 0o644)\n\tos.WriteFile(filepath.Join(dir, \"main.go\"), []byte(\"package main\\n\\nimport (\\n\\t\\\"fmt\\\"\\n\\t\\\"net/http\\\"\\n)\\n\\nfunc main() { fmt.Println(http.StatusOK) }\\n\"), 0o644)\n\tcmd := exec.Command(\"go\", \"build\", \"-v\", \"-o\", os.DevNull, \".\")\n\tcmd.Dir = dir\n\tout, err := cmd.CombinedOutput()\n\tif err != nil {\n\t\tt.Fatalf(\"%v: %s\", err, out)\n\t}\n\tt.Logf(\"compiled [%s]\", out)",
            ),
        )
        .file("BUILD.toml", "[go_test.unit]\n")
        .build();
    let compiled = |run: &Run| -> String {
        let all = format!("{}{}", run.stdout, run.stderr);
        let start = all.find("compiled [").unwrap_or_else(|| panic!("{all}"));
        let end = all[start..].find(']').unwrap() + start;
        all[start..end].to_string()
    };
    let run = ws.kiln(&["test", "--", "-v"]);
    run.assert_ok();
    let first = compiled(&run);
    assert!(first.contains("example.com/scratch"), "{first}");
    for cached in ["net/http", "runtime", "fmt"] {
        assert!(!first.contains(cached), "{cached} compiled again: {first}");
    }
    // The scratch package, compiled by the test's go build, was not stored.
    let run = ws.kiln(&["test", "--rerun", "--", "-v"]);
    run.assert_ok();
    let again = compiled(&run);
    assert!(again.contains("example.com/scratch"), "{again}");
    assert!(!again.contains("net/http"), "{again}");
}

/// A test of the module's root package sees its directory as `go test` gives it:
/// os.Getwd() (which returns PWD) is a clean path, without a trailing `/`.
#[test]
fn a_test_of_the_root_package_gets_a_clean_working_directory() {
    let ws = go_workspace()
        .file("root.go", "package root\n")
        .file(
            "root_test.go",
            &test_file(
                "root",
                &["os", "path/filepath"],
                "\twd, err := os.Getwd()\n\tif err != nil || wd != filepath.Clean(wd) {\n\t\tt.Fatalf(\"%q %v\", wd, err)\n\t}",
            ),
        )
        .file("BUILD.toml", "[go_test.unit]\n");
    let ws = ws.build();
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    agrees_with_go(&ws, &run, &[""]);
}

/// A vendored module whose vendor/ holds its dependencies' go.mod files (`go mod
/// vendor` copies each beside the package when the main module says `go` 1.16 or
/// older, as cobra's does): they are vendored modules, not nested ones.
#[test]
fn a_vendored_dependency_with_its_go_mod_builds_from_vendor() {
    let builder = go_workspace()
        .file("go.mod", "module example.com/m\n\ngo 1.15\n\nrequire example.com/dep v1.0.0\n")
        .file("use/use.go", "package use\n\nimport \"example.com/dep\"\n\nfunc Twice() int { return 2 * dep.Answer() }\n")
        .file(
            "use/use_test.go",
            &test_file("use", &[], "\tif Twice() != 84 {\n\t\tt.Fatal(Twice())\n\t}"),
        )
        .file("BUILD.toml", "[go_test.unit]\n");
    let steps: &[&[&str]] = &[&["mod", "tidy"], &["mod", "vendor"]];
    let (_proxy, ws) = crate::go::with_proxied_dep_go(builder, steps, "1.15");
    assert!(ws.path("vendor/example.com/dep/go.mod").is_file());
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert!(!run.stderr.contains("GoModDownload"), "{}", run.stderr);
    let verdicts = agrees_with_go(&ws, &run, &[""]);
    assert_eq!(verdicts["example.com/m/use"], "ok");
}

/// A nested module that takes its parent by a directory replacement (`replace
/// example.com/m => ../`, as zap's exp module does) builds from the parent's files (so
/// does a `go build` its test runs), and reruns when they change; a replacement outside the workspace is refused,
/// naming go.mod's line.
#[test]
fn a_module_replaced_by_a_directory_in_the_workspace_builds_from_it() {
    let ws = go_workspace()
        .file("lib/lib.go", "package lib\n\nfunc Answer() int { return 42 }\n")
        .file(
            "sub/go.mod",
            "module example.com/m/sub\n\ngo 1.23\n\nrequire example.com/m v0.0.0\n\nreplace example.com/m => ../\n",
        )
        .file("sub/use/use.go", "package use\n\nimport \"example.com/m/lib\"\n\nfunc Twice() int { return 2 * lib.Answer() }\n")
        .file(
            "sub/use/use_test.go",
            &test_file("use", &[], "\tif Twice() != 84 {\n\t\tt.Fatal(Twice())\n\t}"),
        )
        .file(
            "sub/use/build_test.go",
            "package use\n\nimport (\n\t\"os\"\n\t\"os/exec\"\n\t\"testing\"\n)\n\nfunc TestBuilds(t *testing.T) {\n\tout, err := exec.Command(\"go\", \"build\", \"-o\", os.DevNull, \".\").CombinedOutput()\n\tif err != nil {\n\t\tt.Fatalf(\"%v: %s\", err, out)\n\t}\n}\n",
        )
        .file("sub/BUILD.toml", "[go_test.unit]\n")
        .build();
    let run = ws.kiln(&["test", "//sub:unit"]);
    run.assert_ok();
    agrees_with_go(&ws, &run, &["sub"]);

    ws.write(
        "lib/lib.go",
        "package lib\n\nfunc Answer() int { return 41 }\n",
    );
    let run = ws.kiln(&["test", "//sub:unit"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("FAIL\texample.com/m/sub/use"),
        "{}",
        run.stderr
    );

    ws.write(
        "sub/go.mod",
        "module example.com/m/sub\n\ngo 1.23\n\nrequire example.com/m v0.0.0\n\nreplace example.com/m => ../../elsewhere\n",
    );
    let run = ws.kiln(&["test", "//sub:unit"]);
    assert_eq!(
        run.the_error(2),
        "kiln: error: sub/go.mod:7: replace with ../../elsewhere: a directory outside the workspace"
    );
}

/// go takes `..` for a directory as it takes `../x`, and reads a quoted path unquoted:
/// a replacement by the directory above a module at the workspace's root, however it is
/// written, is refused as any other outside the workspace, naming go.mod's line.
#[test]
fn a_replacement_by_the_directory_above_the_workspace_is_refused() {
    for (target, shown) in [
        ("..", ".."),
        ("\"\\x2e\\x2e\"", ".."),
        ("\"\\x2fetc\"", "/etc"),
    ] {
        let ws = go_workspace()
            .file(
                "go.mod",
                &format!("module example.com/m\n\ngo 1.23\n\nrequire example.com/x v0.0.0\n\nreplace example.com/x => {target}\n"),
            )
            .file("m.go", "package m\n")
            .file("BUILD.toml", "[go_test.unit]\n")
            .build();
        let run = ws.kiln(&["test"]);
        let why = match shown {
            ".." => "a directory outside the workspace",
            _ => "an absolute directory",
        };
        assert_eq!(
            run.the_error(2),
            format!("kiln: error: go.mod:7: replace with {shown}: {why}")
        );
    }
}

/// A module whose packages need cgo, as Go services that use github.com/mattn/go-sqlite3
/// do: `csum` has only cgo files; `store` imports `example.com/cdb` (another module, by a
/// directory replacement), whose cgo file has a `!cgo` stand-in that panics, as
/// go-sqlite3's does; `plain` needs no cgo and says how it was built.
fn cgo_module() -> Builder {
    go_workspace()
        .file(
            "go.mod",
            "module example.com/m\n\ngo 1.23\n\nrequire example.com/cdb v0.0.0\n\nreplace example.com/cdb => ./cdb\n",
        )
        .file("cdb/go.mod", "module example.com/cdb\n\ngo 1.23\n")
        .file(
            "cdb/cdb.go",
            "package cdb\n\n/*\n#include <string.h>\nstatic int length(const char *s) { return strlen(s); }\n*/\nimport \"C\"\n\n// Len is the length of s, measured in C.\nfunc Len(s string) int { return int(C.length(C.CString(s))) }\n",
        )
        .file(
            "cdb/nocgo.go",
            "//go:build !cgo\n\npackage cdb\n\nfunc Len(s string) int { panic(\"cdb was built without cgo\") }\n",
        )
        .file(
            "csum/csum.go",
            "package csum\n\n// static int add(int a, int b) { return a + b; }\nimport \"C\"\n\nfunc Add(a, b int) int { return int(C.add(C.int(a), C.int(b))) }\n",
        )
        .file(
            "csum/csum_test.go",
            &test_file("csum", &[], "\tif Add(40, 2) != 42 {\n\t\tt.Fatal(Add(40, 2))\n\t}"),
        )
        .file("store/store.go", "package store\n\nimport \"example.com/cdb\"\n\nfunc Size(key string) int { return cdb.Len(key) }\n")
        .file(
            "store/store_test.go",
            &test_file("store", &[], "\tif Size(\"kiln\") != 4 {\n\t\tt.Fatal(Size(\"kiln\"))\n\t}"),
        )
        .file("plain/on.go", "//go:build cgo\n\npackage plain\n\nconst Cgo = \"on\"\n")
        .file("plain/off.go", "//go:build !cgo\n\npackage plain\n\nconst Cgo = \"off\"\n")
        .file(
            "plain/plain_test.go",
            &test_file("plain", &[], "\tt.Log(\"cgo is \" + Cgo)"),
        )
        .file("BUILD.toml", "[go_test.unit]\n")
}

/// Packages whose tests link cgo code (their own or a dependency's) are built with cgo
/// and the host's gcc, as `go test` builds them; the others stay without cgo.
#[test]
fn packages_that_need_cgo_are_tested_with_cgo_as_under_go_test() {
    let ws = cgo_module().build();
    let run = ws.kiln(&["test", "--keep-going", "--", "-v"]);
    run.assert_ok();
    agrees_with_go(&ws, &run, &[""]);
    assert!(run.stderr.contains("cgo is off"), "{}", run.stderr);

    let again = ws.kiln(&["test"]);
    again.assert_ok();
    assert!(again.ran().is_empty(), "{}", again.stderr);
    // An edit of a package's C code rebuilds and reruns that package alone.
    ws.write(
        "csum/csum.go",
        &ws.read("csum/csum.go")
            .replace("return a + b;", "volatile int r = a + b; return r;"),
    );
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert_eq!(runs(&run), ["example.com/m/csum"], "{}", run.stderr);
}

/// The standard library's `plugin` has no pure-Go fallback: without cgo it is a
/// stand-in whose Open says "not implemented" (cespare/xxhash's dynamic test, which
/// opens a plugin it builds). Its users are tested with cgo, as `go test` tests them.
#[test]
fn a_package_using_the_plugin_package_is_tested_with_cgo() {
    let ws = go_workspace()
        .file("dyn/dyn.go", "package dyn\n\nimport \"plugin\"\n\nfunc Open(p string) error {\n\t_, err := plugin.Open(p)\n\treturn err\n}\n")
        .file(
            "dyn/dyn_test.go",
            &test_file(
                "dyn",
                &["strings"],
                "\terr := Open(\"testdata/missing.so\")\n\tif err == nil || strings.Contains(err.Error(), \"not implemented\") {\n\t\tt.Fatal(err)\n\t}\n\tt.Log(err)",
            ),
        )
        .file("plain/plain.go", "package plain\n")
        .file("plain/plain_test.go", &test_file("plain", &[], "\t_ = 1"))
        .file("BUILD.toml", "[go_test.unit]\n")
        .build();
    let run = ws.kiln(&["test", "--keep-going"]);
    run.assert_ok();
    agrees_with_go(&ws, &run, &[""]);
}

/// A program of [`cgo_module`] that links `cdb` (through `store`): it prints 4, or
/// panics when built without cgo.
const CGO_APP: &str = "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/m/store\"\n)\n\nfunc main() { fmt.Println(store.Size(\"kiln\")) }\n";

/// A binary whose main package links cgo code is built without cgo, as every binary,
/// but kiln says so, naming what it links: go-sqlite3's stand-in (as `cdb`'s here) only
/// fails when the program runs. `cgo = true` builds it with the host's C compiler, for
/// the host platform alone.
#[test]
fn a_binary_linking_cgo_code_is_named_and_cgo_true_builds_it_with_cgo() {
    let ws = cgo_module()
        .file("cmd/app/main.go", CGO_APP)
        .file("BUILD.toml", "[go_binary.app]\nmain = \"./cmd/app\"\n")
        .build();
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let binary = ws.path(&format!("kiln-out/app/linux_{arch}/app"));
    let run = ws.kiln(&["build", "//:app"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("kiln: warning: go_binary //:app: its main package links code that uses cgo (example.com/cdb)")
            && run.stderr.contains("set `cgo = true`"),
        "{}",
        run.stderr
    );
    let out = Command::new(&binary).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cdb was built without cgo"),
        "{out:?}"
    );

    ws.write(
        "BUILD.toml",
        "[go_binary.app]\nmain = \"./cmd/app\"\ncgo = true\n",
    );
    let run = ws.kiln(&["build", "//:app"]);
    run.assert_ok();
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    let out = Command::new(&binary).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "4\n", "{out:?}");

    let other = if arch == "amd64" {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    ws.write(
        "BUILD.toml",
        &format!("[go_binary.app]\nmain = \"./cmd/app\"\nplatforms = [\"{other}\"]\ncgo = true\n"),
    );
    let run = ws.kiln(&["build", "//:app"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("BUILD.toml:4:7")
            && run.stderr.contains("which builds for linux/")
            && run.stderr.contains("hint: set `platforms = [\"linux/"),
        "{}",
        run.stderr
    );
}

/// The test of a package built with cgo runs its go commands with cgo too, as under `go
/// test` on a host with gcc: a TestMain or test that builds the program it tests (here
/// `go run` of a main linking `cdb`) gets the real `cdb`, not its stand-in.
#[test]
fn a_test_of_a_cgo_package_runs_go_with_cgo_as_under_go_test() {
    let ws = cgo_module()
        .file("cmd/app/main.go", CGO_APP)
        .file(
            "store/run_test.go",
            &test_file(
                "store",
                &["os/exec", "strings"],
                "\tout, err := exec.Command(\"go\", \"run\", \"../cmd/app\").CombinedOutput()\n\tif err != nil || strings.TrimSpace(string(out)) != \"4\" {\n\t\tt.Fatalf(\"%v: %s\", err, out)\n\t}",
            )
            .replace("func TestIt(", "func TestRunsTheApp("),
        )
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./store\"]\n")
        .build();
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("ok  \texample.com/m/store"),
        "{}",
        run.stderr
    );
}

/// Without a C compiler, a package that needs cgo is an error naming it, before
/// anything runs (go test would build it without cgo, and its tests would fail).
#[test]
fn a_package_needing_cgo_without_a_c_compiler_is_an_error_naming_it() {
    let ws = cgo_module().build();
    let run = Run::from(
        ws.cmd(&["test"])
            .env("PATH", "/nonexistent")
            .output()
            .unwrap(),
    );
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("tool `gcc` is not on PATH"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("example.com/m/csum (with its tests) links code that uses cgo"),
        "{}",
        run.stderr
    );
}

/// go_vet vets a package that needs cgo with cgo, as `go vet` does on a host with gcc:
/// without it, `csum` (only cgo files) does not load.
#[test]
fn go_vet_vets_packages_that_need_cgo_with_cgo() {
    let ws = cgo_module().file("BUILD.toml", "[go_vet.vet]\n").build();
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("GoVet //:vet [example.com/m/csum]"),
        "{}",
        run.stderr
    );
    let go = Command::new(format!("{}/bin/go", go_root()))
        .args(["vet", "./..."])
        .current_dir(ws.path(""))
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .output()
        .unwrap();
    assert!(
        go.status.success(),
        "{}",
        String::from_utf8_lossy(&go.stderr)
    );
}

/// A test binary that exits in `TestMain` before `m.Run` (bbolt's tests that need root)
/// writes no test log: go test does not cache its result, nor does kiln, and `kiln
/// explain` says why it runs every time.
#[test]
fn a_test_exiting_before_m_run_is_run_every_time_and_explain_says_why() {
    let ws = go_workspace()
        .file("root/root.go", "package root\n")
        .file(
            "root/main_test.go",
            "package root\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\t\"testing\"\n)\n\nfunc TestMain(m *testing.M) {\n\tfmt.Fprintln(os.Stderr, \"Skip tests that require root\")\n\tos.Exit(0)\n}\n\nfunc TestNeedsRoot(t *testing.T) {}\n",
        )
        .file("BUILD.toml", "[go_test.unit]\n")
        .build();
    ws.kiln(&["test"]).assert_ok();
    let again = ws.kiln(&["test"]);
    again.assert_ok();
    assert_eq!(runs(&again), ["example.com/m/root"], "{}", again.stderr);
    let explain = ws.kiln(&["explain", "//:unit"]);
    assert!(
        explain.stdout.contains(
            "GoTest example.com/m/root: executed, and its result was not kept: what it read is unknown"
        ),
        "{}",
        explain.stdout
    );
}
