//! `kiln init` on Go modules shaped like public ones: it writes only targets that build,
//! checked by running `kiln build` and `go build` on the same module.

use std::process::Command;

use toml_edit::DocumentMut;

use crate::support::{go_root, go_workspace, Run, Workspace};

const MAIN: &str = "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n";

fn init(ws: &Workspace) -> Run {
    ws.kiln(&["init"])
}

fn build_toml(ws: &Workspace, rel: &str) -> DocumentMut {
    let text = ws.read(rel);
    text.parse()
        .unwrap_or_else(|e| panic!("{rel} is not TOML: {e}\n{text}"))
}

/// The names of the go_binary targets and what each builds, with its tags.
fn binaries(doc: &DocumentMut) -> Vec<(String, String, Vec<String>)> {
    let Some(table) = doc.get("go_binary").and_then(|t| t.as_table()) else {
        return Vec::new();
    };
    table
        .iter()
        .map(|(name, t)| {
            let main = t["main"].as_str().unwrap().to_string();
            let tags = strings(t.get("tags"));
            (name.to_string(), main, tags)
        })
        .collect()
}

fn strings(item: Option<&toml_edit::Item>) -> Vec<String> {
    let Some(array) = item.and_then(|i| i.as_array()) else {
        return Vec::new();
    };
    array
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn binary(name: &str, main: &str, tags: &[&str]) -> (String, String, Vec<String>) {
    let tags = tags.iter().map(|t| t.to_string()).collect();
    (name.to_string(), main.to_string(), tags)
}

/// `go` as kiln runs it: offline, the local toolchain only.
fn go(ws: &Workspace, args: &[&str]) -> std::process::Output {
    Command::new(format!("{}/bin/go", go_root()))
        .args(args)
        .current_dir(&ws.root)
        .envs([
            ("GOFLAGS", "-mod=mod"),
            ("GOPROXY", "off"),
            ("GOWORK", "off"),
        ])
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap()
}

#[track_caller]
fn assert_go_builds(ws: &Workspace, args: &[&str]) {
    let out = go(ws, &[&["build", "-o", "/dev/null"], args].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "go build {args:?}: {stderr}");
}

/// Runs what kiln built for `name` in package `pkg` ("" for the root) on this host.
fn run_built(ws: &Workspace, pkg: &str, name: &str) -> String {
    let dir = ws.path(&format!("kiln-out/{pkg}/{name}"));
    let platform = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = Command::new(platform.join(name)).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_module_with_code_only_in_its_root_package_builds() {
    let ws = go_workspace()
        .file("go.mod", "module example.com/hello\n\ngo 1.23\n")
        .file("main.go", MAIN)
        .file(
            "main_test.go",
            "package main\n\nimport \"testing\"\n\nfunc TestNothing(t *testing.T) {}\n",
        )
        .build();
    std::fs::remove_file(ws.path("kiln.toml")).unwrap();
    let run = init(&ws);
    run.assert_ok();
    assert!(
        run.stderr.contains("kiln: wrote kiln.toml\n"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("kiln: wrote BUILD.toml\n"),
        "{}",
        run.stderr
    );
    let doc = build_toml(&ws, "BUILD.toml");
    assert_eq!(strings(doc["go_test"]["unit"].get("packages")), ["./..."]);
    assert_eq!(binaries(&doc), [binary("hello", ".", &[])]);

    ws.kiln(&["build"]).assert_ok();
    assert_eq!(run_built(&ws, "", "hello"), "hello\n");
    assert_go_builds(&ws, &["./..."]);
}

#[test]
fn a_symlinked_go_mod_is_followed() {
    let ws = go_workspace()
        .file("vendor.mod", "module example.com/linked\n\ngo 1.23\n")
        .file("cmd/tool/main.go", MAIN)
        .build();
    std::fs::remove_file(ws.path("go.mod")).unwrap();
    std::os::unix::fs::symlink("vendor.mod", ws.path("go.mod")).unwrap();
    init(&ws).assert_ok();
    let doc = build_toml(&ws, "BUILD.toml");
    assert_eq!(binaries(&doc), [binary("tool", "./cmd/tool", &[])]);
    assert!(
        std::fs::symlink_metadata(ws.path("go.mod"))
            .unwrap()
            .is_symlink(),
        "init leaves go.mod as it was"
    );
    ws.kiln(&["build"]).assert_ok();
    assert_eq!(run_built(&ws, "", "tool"), "hello\n");
}

/// A go.work workspace: kiln reads no go.work, and init says so, at the workspace's
/// root (no go.mod there) and in a module below it.
#[test]
fn a_go_work_workspace_is_named_as_not_read() {
    let ws = crate::support::workspace()
        .file("go.work", "go 1.23\n\nuse (\n\t./a\n\t./b\n)\n")
        .file("a/go.mod", "module example.com/a\n\ngo 1.23\n")
        .file("a/a.go", "package a\n")
        .file("b/go.mod", "module example.com/b\n\ngo 1.23\n")
        .file("b/b.go", "package b\n")
        .build();
    let run = init(&ws);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("kiln does not read go.work"),
        "{}",
        run.stderr
    );
    let run = ws.kiln(&["-C", "a", "init"]);
    run.assert_ok();
    let work = ws.root.canonicalize().unwrap().join("go.work");
    assert!(
        run.stderr.contains(&format!(
            "kiln: note: {} is not read: kiln builds each module on its own (GOWORK=off)",
            work.display()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_go_mod_is_named_with_a_hint() {
    let ws = crate::support::workspace()
        .file("vendor.mod", "module example.com/linked\n\ngo 1.23\n")
        .build();
    let run = init(&ws);
    assert_eq!(run.status, 2, "{}", run.stderr);
    let looked_for = ws.root.join("go.mod");
    let first = run.stderr.lines().next().unwrap();
    assert_eq!(
        first,
        format!("kiln: error: no go.mod at {}", looked_for.display())
    );
    assert!(
        run.stderr.contains("ln -s vendor.mod go.mod"),
        "{}",
        run.stderr
    );
    assert!(!ws.path("BUILD.toml").exists());

    std::os::unix::fs::symlink("nowhere.mod", ws.path("go.mod")).unwrap();
    let run = init(&ws);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("is a symlink to nowhere.mod, which does not exist"),
        "{}",
        run.stderr
    );
}

#[test]
fn mains_below_underscore_directories_build_and_nested_modules_get_no_root_targets() {
    let ws = go_workspace()
        .file(
            "lib.go",
            "package m\n\nfunc Name() string { return \"m\" }\n",
        )
        .file("_examples/foo/main.go", MAIN)
        .file(
            "_examples/bar/go.mod",
            "module example.com/bar\n\ngo 1.23\n",
        )
        .file("_examples/bar/main.go", MAIN)
        .file(
            "testdata/fixture/main.go",
            "package main\n\nfunc main() { broken }\n",
        )
        .build();
    let run = init(&ws);
    run.assert_ok();
    let doc = build_toml(&ws, "BUILD.toml");
    assert_eq!(binaries(&doc), [binary("foo", "./_examples/foo", &[])]);
    assert!(
        !ws.path("_examples/bar/BUILD.toml").exists(),
        "a module below `_` is an example, not one of the repository's modules"
    );
    ws.kiln(&["build"]).assert_ok();
    assert_eq!(run_built(&ws, "", "foo"), "hello\n");
    assert_go_builds(&ws, &["./_examples/foo"]);
}

#[test]
fn a_main_behind_a_build_tag_gets_the_tag_and_builds() {
    let tagged = |expr: &str| format!("//go:build {expr}\n\n{MAIN}");
    let ws = go_workspace()
        .file("lib.go", "package m\n")
        .file(
            "docs/generate/main.go",
            &tagged("docsgen").replace("hello", "docs"),
        )
        .file("gen/main.go", &tagged("ignore"))
        .file("either/main.go", &tagged("a || b"))
        .build();
    init(&ws).assert_ok();
    let text = ws.read("BUILD.toml");
    let doc = build_toml(&ws, "BUILD.toml");
    assert_eq!(
        binaries(&doc),
        [binary("generate", "./docs/generate", &["docsgen"])]
    );
    assert!(
        text.contains("# ./either: every file is excluded from the build: `//go:build a || b` is more than a tag or `a && b`\n"),
        "{text}"
    );
    assert!(
        text.contains("# ./gen: every file is excluded from the build: its files are marked `//go:build ignore`"),
        "{text}"
    );

    ws.kiln(&["build"]).assert_ok();
    assert_eq!(run_built(&ws, "", "generate"), "docs\n");
    assert_go_builds(&ws, &["./..."]);
    assert_go_builds(&ws, &["-tags", "docsgen", "./docs/generate"]);
}

#[test]
fn a_package_main_without_func_main_is_left_out_with_the_reason() {
    let ws = go_workspace()
        .file("tools/gen.go", "package main\n\n//go:generate echo hi\n")
        .file("cmd/app/main.go", MAIN)
        .build();
    let run = init(&ws);
    run.assert_ok();
    let text = ws.read("BUILD.toml");
    assert_eq!(
        binaries(&build_toml(&ws, "BUILD.toml")),
        [binary("app", "./cmd/app", &[])]
    );
    assert!(
        text.contains("# ./tools: package main without func main in the default build\n"),
        "{text}"
    );
    assert!(
        run.stderr
            .contains("kiln: left out ./tools: package main without func main"),
        "{}",
        run.stderr
    );
}

#[test]
fn mains_with_the_same_base_name_take_their_paths() {
    let ws = go_workspace()
        .file("cmd/server/main.go", MAIN)
        .file("tools/server/main.go", &MAIN.replace("hello", "tool"))
        .file("cmd/unit/main.go", MAIN)
        .file(
            "x_test.go",
            "package m\n\nimport \"testing\"\n\nfunc TestX(t *testing.T) {}\n",
        )
        .file("x.go", "package m\n")
        .build();
    init(&ws).assert_ok();
    let doc = build_toml(&ws, "BUILD.toml");
    assert_eq!(
        binaries(&doc),
        [
            binary("cmd_server", "./cmd/server", &[]),
            binary("cmd_unit", "./cmd/unit", &[]),
            binary("tools_server", "./tools/server", &[]),
        ],
        "`unit` is the go_test's name"
    );
    ws.kiln(&["build"]).assert_ok();
    assert_eq!(run_built(&ws, "", "cmd_server"), "hello\n");
    assert_eq!(run_built(&ws, "", "tools_server"), "tool\n");
    assert_go_builds(&ws, &["./..."]);
}

#[test]
fn programs_tests_start_by_name_become_tools() {
    // Not the toolchain's programs: tests find them on PATH from the toolchain.
    let ws = go_workspace()
        .file("x.go", "package m\n")
        .file(
            "x_test.go",
            r#"package m

import (
	"context"
	"os/exec"
	"testing"
)

func TestTools(t *testing.T) {
	_ = exec.Command("git", "version")
	_ = exec.CommandContext(context.Background(), "sh", "-c", "true")
	_ = exec.Command("/bin/true")
	_ = exec.Command("kiln-no-such-program")
	_ = exec.Command("git")
	_ = exec.Command("go", "env", "GOROOT")
	_ = exec.Command("gofmt", "-l", ".")
}
"#,
        )
        .build();
    init(&ws).assert_ok();
    let doc = build_toml(&ws, "BUILD.toml");
    assert_eq!(strings(doc["go_test"]["unit"].get("tools")), ["git", "sh"]);
}

#[test]
fn each_nested_module_gets_its_own_build_file() {
    let ws = go_workspace()
        .file("cmd/app/main.go", MAIN)
        .file("svc/go.mod", "module example.com/svc\n\ngo 1.23\n")
        .file("svc/cmd/svc/main.go", MAIN)
        .file("kept/go.mod", "module example.com/kept\n\ngo 1.23\n")
        .file("kept/main.go", MAIN)
        .file("kept/BUILD.toml", "# mine\n")
        .build();
    let run = init(&ws);
    run.assert_ok();
    assert!(
        run.stderr.contains("kiln: wrote svc/BUILD.toml\n"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("kiln: kept kept/BUILD.toml (exists already)\n"),
        "{}",
        run.stderr
    );
    assert_eq!(ws.read("kept/BUILD.toml"), "# mine\n");
    let root = build_toml(&ws, "BUILD.toml");
    assert_eq!(binaries(&root), [binary("app", "./cmd/app", &[])]);
    let svc = build_toml(&ws, "svc/BUILD.toml");
    assert_eq!(binaries(&svc), [binary("svc", "./cmd/svc", &[])]);
}

#[test]
fn packages_that_do_not_load_offline_are_left_out_of_the_tests() {
    let ws = go_workspace()
        .file("ok/ok.go", "package ok\n")
        .file(
            "ok/ok_test.go",
            "package ok\n\nimport \"testing\"\n\nfunc TestOk(t *testing.T) {}\n",
        )
        .file(
            "needs/needs.go",
            "package needs\n\nimport \"example.org/absent/dep\"\n\nvar _ = dep.X\n",
        )
        .file("needs/needs_test.go", "package needs\n")
        .build();
    init(&ws).assert_ok();
    let text = ws.read("BUILD.toml");
    let doc = build_toml(&ws, "BUILD.toml");
    assert_eq!(strings(doc["go_test"]["unit"].get("packages")), ["./ok"]);
    assert!(
        text.contains("# ./needs: does not load: needs/needs.go:3:8: "),
        "{text}"
    );
}

#[test]
fn kiln_out_is_ignored_once_where_git_is() {
    let module = || go_workspace().file("x.go", "package m\n");
    let ws = module().build();
    let run = init(&ws);
    assert!(!ws.path(".gitignore").exists(), "not a git work tree");
    assert!(
        run.stderr.contains("keep it out of version control"),
        "{}",
        run.stderr
    );

    let ws = module().build();
    std::fs::create_dir(ws.path(".git")).unwrap();
    let run = init(&ws);
    assert_eq!(ws.read(".gitignore"), "kiln-out/\n");
    assert!(
        run.stderr.contains("kiln: wrote .gitignore\n"),
        "{}",
        run.stderr
    );

    let ws = module().file(".gitignore", "/bin").build();
    init(&ws).assert_ok();
    assert_eq!(ws.read(".gitignore"), "/bin\nkiln-out/\n");

    let ws = module().file(".gitignore", "/kiln-out/\n").build();
    let run = init(&ws);
    assert_eq!(ws.read(".gitignore"), "/kiln-out/\n");
    assert!(!run.stderr.contains(".gitignore"), "{}", run.stderr);
}

#[test]
fn an_existing_build_file_is_never_overwritten() {
    let ws = go_workspace()
        .file("BUILD.toml", "# mine\n")
        .file("x.go", "package m\n")
        .build();
    let run = init(&ws);
    assert_eq!(run.status, 2, "{}", run.stderr);
    let build = ws.root.join("BUILD.toml");
    assert!(
        run.stderr
            .starts_with(&format!("kiln: error: {} exists already", build.display())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint:"), "{}", run.stderr);
    assert_eq!(ws.read("BUILD.toml"), "# mine\n");
}

/// A module whose dependencies are not in the module cache yet (a fresh clone): init
/// lists offline, so it leaves its packages out saying to run `go mod download`; after
/// it, init writes the go_test.
#[test]
fn init_before_go_mod_download_says_to_run_it() {
    let builder = go_workspace()
        .file("go.mod", "module example.com/m\n\ngo 1.23\n\nrequire example.com/dep v1.0.0\n")
        .file("use/use.go", "package use\n\nimport \"example.com/dep\"\n\nfunc Twice() int { return 2 * dep.Answer() }\n")
        .file("use/use_test.go", "package use\n\nimport \"testing\"\n\nfunc TestTwice(t *testing.T) { _ = Twice() }\n");
    let (proxy, ws) = crate::go::with_proxied_dep(builder, &[&["mod", "tidy"]]);
    let cache = tempfile::tempdir().unwrap();
    let init_with_cache = || {
        Run::from(
            ws.cmd(&["init"])
                .env("GOMODCACHE", cache.path())
                .output()
                .unwrap(),
        )
    };
    let run = init_with_cache();
    assert!(
        run.stderr.contains("a dependency is in neither the module cache nor vendor/: run `go mod download`, then kiln init again"),
        "{}",
        run.stderr
    );
    assert!(build_toml(&ws, "BUILD.toml").get("go_test").is_none());
    std::fs::remove_file(ws.path("BUILD.toml")).unwrap();
    let download = Command::new(format!("{}/bin/go", go_root()))
        .args(["mod", "download"])
        .current_dir(&ws.root)
        .env("GOPROXY", format!("file://{}", proxy.path().display()))
        .env("GOSUMDB", "off")
        .env("GOMODCACHE", cache.path())
        .env("GOFLAGS", "-modcacherw")
        .status()
        .unwrap();
    assert!(download.success());
    init_with_cache().assert_ok();
    assert!(build_toml(&ws, "BUILD.toml").get("go_test").is_some());
}
