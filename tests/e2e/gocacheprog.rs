//! `kiln gocacheprog`: Go's compile cache served from kiln's store.
//!
//! The real go command builds a small main package twice, each time with a fresh, empty
//! GOCACHE (as a sandboxed kiln action sees it) and `GOCACHEPROG="<kiln> gocacheprog"`
//! over one kiln store. The cold build compiles the standard library and puts it into
//! kiln's store; the second one must compile nothing, link against package archives
//! inside the kiln store, and produce the same bytes. `go build -x` lists every command
//! go runs, so a broken cache shows up as compile commands in the second build.

use std::path::{Path, PathBuf};
use std::process::Command;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[test]
fn go_build_reuses_compiled_packages_across_fresh_gocache() {
    let tmp = tempfile::tempdir().unwrap();
    let src = write_main_package(tmp.path());
    let kiln_cache = tmp.path().join("kiln-cache");
    let build = |n: u32| GoBuild {
        src: src.clone(),
        kiln_cache: kiln_cache.clone(),
        gocache: tmp.path().join(format!("gocache-{n}")),
        home: tmp.path().join(format!("home-{n}")),
        out: tmp.path().join(format!("hello-{n}")),
    };

    let (cold, warm) = (build(1), build(2));
    let cold_log = cold.run();
    let compiled = compiled_packages(&cold_log);
    assert!(
        compiled.iter().any(|p| p == "fmt") && compiled.iter().any(|p| p == "runtime"),
        "the cold build compiles the standard library; it compiled {compiled:?}:\n{cold_log}"
    );

    let warm_log = warm.run();
    let compiled = compiled_packages(&warm_log);
    assert!(
        compiled.is_empty(),
        "a build with a fresh GOCACHE compiles nothing, it compiled {compiled:?}:\n{warm_log}"
    );
    assert_links_from_kiln_store(&warm_log, "fmt", &kiln_cache);

    let (cold_bin, warm_bin) = (read(&cold.out), read(&warm.out));
    assert!(cold_bin == warm_bin, "both builds give the same bytes");
    let run = Command::new(&warm.out).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello from kiln\n");
}

/// One `go build -trimpath -x` of a package with its own GOCACHE and HOME.
struct GoBuild {
    src: PathBuf,
    kiln_cache: PathBuf,
    gocache: PathBuf,
    home: PathBuf,
    out: PathBuf,
}

impl GoBuild {
    /// Runs the build, asserts it succeeded, and returns its stderr (the `-x` log).
    fn run(&self) -> String {
        std::fs::create_dir_all(&self.gocache).unwrap();
        std::fs::create_dir_all(&self.home).unwrap();
        let go = real_go();
        let path = format!("{}:/usr/bin:/bin", go.parent().unwrap().display());
        let output = Command::new(&go)
            .args(["build", "-trimpath", "-x", "-o"])
            .arg(&self.out)
            .arg(".")
            .current_dir(&self.src)
            .env_clear()
            .env("PATH", path)
            .env("HOME", &self.home)
            .env("GOPATH", self.home.join("go"))
            .env("GOENV", "off")
            .env("GOCACHE", &self.gocache)
            .env("GOCACHEPROG", format!("{} gocacheprog", quoted(KILN)))
            .env("KILN_CACHE", &self.kiln_cache)
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", go.display()));
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "go build failed:\n{log}");
        log
    }
}

/// The go binary itself: `go` on PATH may be a shim that needs the caller's environment.
fn real_go() -> PathBuf {
    let output = Command::new("go")
        .args(["env", "GOROOT"])
        .output()
        .expect("run `go env GOROOT` (go must be on PATH)");
    assert!(output.status.success(), "`go env GOROOT` failed");
    let root = String::from_utf8(output.stdout).unwrap();
    Path::new(root.trim()).join("bin").join("go")
}

/// GOCACHEPROG is split like a shell command line (single or double quotes, no escapes).
fn quoted(path: &str) -> String {
    assert!(
        !path.contains('"'),
        "kiln's path {path} contains a double quote"
    );
    if path.contains(char::is_whitespace) {
        format!("\"{path}\"")
    } else {
        path.to_string()
    }
}

fn write_main_package(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let go_mod = "module example.com/hello\n\ngo 1.22\n";
    let main_go =
        "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from kiln\") }\n";
    std::fs::write(src.join("go.mod"), go_mod).unwrap();
    std::fs::write(src.join("main.go"), main_go).unwrap();
    src
}

/// The import paths (`-p`) of every compile command in a `go build -x` log.
fn compiled_packages(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|t| t.ends_with("/compile"))
        })
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "-p")?;
            words.next().map(str::to_string)
        })
        .collect()
}

/// Checks that the linker was given `package`'s archive from a file in kiln's store.
fn assert_links_from_kiln_store(log: &str, package: &str, kiln_cache: &Path) {
    let prefix = format!("packagefile {package}=");
    let archive = log
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the link lists {package}'s archive:\n{log}"));
    let archive = std::fs::canonicalize(archive).unwrap();
    let store = std::fs::canonicalize(kiln_cache).unwrap();
    assert!(
        archive.starts_with(&store),
        "{package} is linked from {}, not from kiln's store {}",
        archive.display(),
        store.display()
    );
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
