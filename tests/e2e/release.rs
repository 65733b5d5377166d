//! Release jobs end to end: `checksums` verified by the real `sha256sum -c`, the
//! `release` directory and its in-toto/SLSA provenance (digests checked against
//! `sha256sum`, bytes identical from two workspace paths), and cache housekeeping: gc under
//! a size cap (and while a build runs), verify catching a blob corrupted on disk.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{go_root, go_workspace, workspace, Builder, Run, Workspace};

/// A Go main package stamped with the version, a genrule, checksums and a release.
pub(crate) fn module() -> Builder {
    go_workspace()
        .file(
            "kiln.toml",
            &format!(
                "[workspace]\nname = \"rel\"\n\n[go]\nroot = \"{}\"\n\n[stamp]\nSTABLE_GIT_DESCRIBE = \"v1.2.3\"\n",
                go_root()
            ),
        )
        .file(
            "cmd/app/main.go",
            "package main\n\nimport \"fmt\"\n\nvar version = \"dev\"\n\nfunc main() { fmt.Println(version) }\n",
        )
        .file("NOTES.md", "release notes\n")
        .file("LICENSE", "Apache-2.0\n")
        .file(
            "BUILD.toml",
            r#"
[go_binary.app]
main = "./cmd/app"
platforms = ["linux/amd64", "windows/amd64"]
ldflags = ["-s", "-w"]
x_defs = { "main.version" = "{STABLE_GIT_DESCRIBE}" }

[genrule.notes]
srcs = ["NOTES.md"]
outs = ["notes.txt"]
cmd = "tr a-z A-Z < $SRCS > $OUT"
tools = ["tr"]

[checksums.sums]
srcs = [":app", ":notes"]

[release.release]
version = "{STABLE_GIT_DESCRIBE}"
srcs = [":sums", "LICENSE"]
"#,
        )
}

const RELEASE_DIR: &str = "kiln-out/release/v1.2.3";

fn tool(program: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed (run .ci/install-deps): {e}"))
}

/// `sha256sum FILE`'s hex digest.
fn sha256sum(path: &Path) -> String {
    let out = tool("sha256sum", &[path.to_str().unwrap()], Path::new("/"));
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Runs `sha256sum -c SHA256SUMS` in `dir` and returns the names it reported OK.
fn sha256sum_check(dir: &Path) -> Vec<String> {
    let out = tool("sha256sum", &["-c", "SHA256SUMS"], dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sha256sum -c failed in {}:\n{stdout}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ok: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_suffix(": OK"))
        .map(String::from)
        .collect();
    ok.sort();
    ok
}

#[test]
fn checksums_agree_with_sha256sum_and_name_files_by_target_and_platform() {
    let ws = module().build();
    ws.kiln(&["build", "//:sums"]).assert_ok();
    let dir = ws.path("kiln-out/sums");
    assert_eq!(
        sha256sum_check(&dir),
        ["app_linux_amd64", "app_windows_amd64.exe", "notes.txt"]
    );
    let sums = ws.read("kiln-out/sums/SHA256SUMS");
    let names: Vec<&str> = sums.lines().map(|l| &l[66..]).collect();
    assert_eq!(
        names,
        ["app_linux_amd64", "app_windows_amd64.exe", "notes.txt"]
    );
    // The copies are the built files themselves.
    let built = sha256sum(&ws.path("kiln-out/app/linux_amd64/app"));
    assert!(
        sums.contains(&format!("{built}  app_linux_amd64\n")),
        "{sums}"
    );
    let run = tool(dir.join("app_linux_amd64").to_str().unwrap(), &[], &dir);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "v1.2.3\n");

    // An edit reaches the sums, and sha256sum still agrees.
    ws.write("NOTES.md", "other notes\n");
    ws.kiln(&["build", "//:sums"]).assert_ok();
    assert_eq!(ws.read("kiln-out/sums/notes.txt"), "OTHER NOTES\n");
    assert_eq!(sha256sum_check(&dir).len(), 3);
}

#[test]
fn checksums_refuse_two_files_with_one_name() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            r#"
[genrule.a]
outs = ["a/x.txt"]
cmd = "echo a > $OUT"

[genrule.b]
outs = ["b/x.txt"]
cmd = "echo b > $OUT"

[checksums.sums]
srcs = [":a", ":b"]
"#,
        )
        .build();
    let run = ws.kiln(&["build", "//:sums"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    for needle in [
        "kiln-out/a/x.txt",
        "kiln-out/b/x.txt",
        "`x.txt`",
        "BUILD.toml:",
    ] {
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    }
}

fn provenance(ws: &Workspace) -> (Vec<u8>, Value) {
    let bytes = std::fs::read(ws.path(&format!("{RELEASE_DIR}/provenance.intoto.json"))).unwrap();
    let value = serde_json::from_slice(&bytes).expect("provenance is JSON");
    (bytes, value)
}

/// The resolved dependency named `name`.
fn dependency<'a>(statement: &'a Value, name: &str) -> &'a Value {
    statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no dependency `{name}` in {statement:#}"))
}

#[test]
fn release_collects_files_with_a_reproducible_provenance_statement() {
    let ws = module().build();
    ws.kiln(&["build", "//:release"]).assert_ok();
    let dir = ws.path(RELEASE_DIR);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "LICENSE",
            "SHA256SUMS",
            "app_linux_amd64",
            "app_windows_amd64.exe",
            "notes.txt",
            "provenance.intoto.json"
        ]
    );
    assert_eq!(sha256sum_check(&dir).len(), 3);

    let (bytes, st) = provenance(&ws);
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    let subjects = st["subject"].as_array().unwrap();
    assert_eq!(subjects.len(), 5);
    for s in subjects {
        let name = s["name"].as_str().unwrap();
        assert_eq!(s["digest"]["sha256"], sha256sum(&dir.join(name)), "{name}");
    }
    let def = &st["predicate"]["buildDefinition"];
    assert_eq!(def["externalParameters"]["target"], "//:release");
    assert_eq!(
        def["externalParameters"]["command"],
        "kiln build //:release"
    );
    assert_eq!(
        def["internalParameters"]["stamp"]["STABLE_GIT_DESCRIBE"],
        "v1.2.3"
    );
    let builder = st["predicate"]["runDetails"]["builder"]["id"]
        .as_str()
        .unwrap();
    assert!(builder.starts_with("https://kiln.build/kiln@"), "{builder}");
    for source in ["cmd/app/main.go", "go.mod", "NOTES.md", "LICENSE"] {
        let dep = dependency(&st, source);
        assert_eq!(
            dep["digest"]["sha256"],
            sha256sum(&ws.path(source)),
            "{source}"
        );
        assert_eq!(dep["annotations"]["kind"], "source");
    }
    let go = dependency(&st, "go");
    assert_eq!(go["annotations"]["kind"], "toolchain");
    let go_digest = go["digest"]["kilnTreeBlake3"].as_str().unwrap();
    assert!(go_digest.len() == 64 && go_digest.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(dependency(&st, "tr")["digest"]["blake3"].is_string());
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        !text.contains(ws.root.to_str().unwrap()),
        "no workspace path"
    );

    // Another path, another cache: the same bytes.
    let other = ws.copy();
    other.kiln(&["build", "//:release"]).assert_ok();
    assert_eq!(
        provenance(&other).0,
        bytes,
        "provenance differs between paths"
    );

    // An edited source shows in the statement with its new digest.
    ws.write(
        "cmd/app/main.go",
        "package main\n\nvar version = \"dev\"\n\nfunc main() { println(version) }\n",
    );
    ws.kiln(&["build", "//:release"]).assert_ok();
    let (after, st) = provenance(&ws);
    assert_ne!(after, bytes);
    assert_eq!(
        dependency(&st, "cmd/app/main.go")["digest"]["sha256"],
        sha256sum(&ws.path("cmd/app/main.go"))
    );
}

/// Three genrules writing 100 000 distinct bytes each.
fn three_blobs() -> Workspace {
    let mut b = workspace();
    let mut build = String::new();
    for name in ["a", "b", "c"] {
        b = b.file(&format!("{name}.in"), &format!("{name}\n"));
        build.push_str(&format!(
            "[genrule.{name}]\nsrcs = [\"{name}.in\"]\nouts = [\"{name}.txt\"]\n\
             cmd = \"yes $(cat $SRCS) | head -c 100000 > $OUT\"\ntools = [\"yes\", \"head\", \"cat\"]\n\n"
        ));
    }
    b.file("BUILD.toml", &build).build()
}

fn gc(ws: &Workspace, max_size: &str, grace: Option<&str>) -> Run {
    let mut cmd = ws.cmd(&["cache", "gc", "--max-size", max_size]);
    if let Some(g) = grace {
        cmd.env("KILN_GC_GRACE", g);
    }
    let out = cmd.output().unwrap();
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The bytes of every blob file under the cache's `cas/`.
fn blob_bytes(ws: &Workspace) -> u64 {
    let mut total = 0;
    for sub in std::fs::read_dir(ws.cache.join("cas")).unwrap() {
        for blob in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            total += blob.unwrap().metadata().unwrap().len();
        }
    }
    total
}

#[test]
fn gc_evicts_the_least_recently_used_until_the_cache_fits() {
    let ws = three_blobs();
    ws.kiln(&["build", "//:a"]).assert_ok();
    std::thread::sleep(Duration::from_millis(1100));
    ws.kiln(&["build", "//:b", "//:c"]).assert_ok();
    assert_eq!(blob_bytes(&ws), 300_000);

    // Right after a build everything is recent: a build may still need it.
    let run = gc(&ws, "0", None);
    run.assert_ok();
    assert!(
        run.stdout.contains("removed 0 action results and 0 blobs"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("stays above the limit"),
        "{}",
        run.stdout
    );

    let run = gc(&ws, "250K", Some("0"));
    run.assert_ok();
    assert!(
        run.stdout
            .contains("removed 1 action results and 1 blobs (97.7 KiB)"),
        "{}",
        run.stdout
    );
    assert_eq!(blob_bytes(&ws), 200_000);
    let verify = ws.kiln(&["cache", "verify"]);
    verify.assert_ok();
    assert!(!verify.stdout.contains("missing"), "{}", verify.stdout);

    let run = ws.kiln(&["build"]);
    run.assert_ok();
    assert_eq!(run.counts(), (3, 2, 1, 0));
    assert_eq!(run.ran(), ["Genrule //:a"]);
    for name in ["a", "b", "c"] {
        let text = ws.read(&format!("kiln-out/{name}.txt"));
        assert_eq!(text.len(), 100_000);
        assert!(text.starts_with(&format!("{name}\n{name}\n")));
    }
}

#[test]
fn gc_running_alongside_a_build_takes_nothing_the_build_needs() {
    let mut build = String::new();
    let mut b = workspace().file("seed.txt", "0\n");
    for i in 0..24 {
        let src = if i == 0 {
            "seed.txt".to_string()
        } else {
            format!(":s{}", i - 1)
        };
        build.push_str(&format!(
            "[genrule.s{i}]\nsrcs = [\"{src}\"]\nouts = [\"s{i}.txt\"]\n\
             cmd = \"sleep 0.05; cat $SRCS $SRCS | head -c 4096 > $OUT; echo {i} >> $OUT\"\n\
             tools = [\"sleep\", \"cat\", \"head\"]\n\n"
        ));
    }
    b = b.file("BUILD.toml", &build);
    let ws = b.build();
    let mut child = ws
        .cmd(&["build"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rounds = 0;
    while child.try_wait().unwrap().is_none() {
        gc(&ws, "0", None).assert_ok();
        rounds += 1;
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rounds > 1, "gc ran during the build");
    let last = ws.read("kiln-out/s23.txt");
    assert!(last.len() == 4099 && last.ends_with("\n23\n"), "{last}");
    let again = ws.kiln(&["build"]);
    again.assert_ok();
    assert_eq!(again.counts(), (24, 24, 0, 0));
}

#[test]
fn verify_removes_a_blob_corrupted_on_disk_and_the_next_build_reruns() {
    let ws = workspace()
        .file("a.txt", "hello\n")
        .file(
            "BUILD.toml",
            r#"
[genrule.upper]
srcs = ["a.txt"]
outs = ["upper.txt"]
cmd = "tr a-z A-Z < $SRCS > $OUT"
tools = ["tr"]

[genrule.twice]
srcs = [":upper"]
outs = ["twice.txt"]
cmd = "cat $SRCS $SRCS > $OUT"
tools = ["cat"]
"#,
        )
        .build();
    ws.kiln(&["build"]).assert_ok();
    let clean = ws.kiln(&["cache", "verify"]);
    clean.assert_ok();
    assert!(
        clean.stdout.contains("removed 0 corrupt blobs"),
        "{}",
        clean.stdout
    );

    let b3 = tool("b3sum", &["--no-names", "kiln-out/upper.txt"], &ws.root);
    let hex = String::from_utf8(b3.stdout).unwrap().trim().to_string();
    let blob = ws.cache.join("cas").join(&hex[..2]).join(&hex);
    assert!(blob.is_file(), "{}", blob.display());
    assert!(tool("chmod", &["u+w", blob.to_str().unwrap()], &ws.root)
        .status
        .success());
    std::fs::write(&blob, "HELLO, TAMPERED\n").unwrap();

    let run = ws.kiln(&["cache", "verify"]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&hex), "{}", run.stdout);
    assert!(run.stdout.contains("hashes to"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("removed 1 corrupt blobs and 1 action results"),
        "{}",
        run.stdout
    );
    assert!(!blob.exists());
    ws.kiln(&["cache", "verify"]).assert_ok();

    let run = ws.kiln(&["build"]);
    run.assert_ok();
    assert_eq!(run.ran(), ["Genrule //:upper"], "twice is cut off early");
    assert_eq!(ws.read("kiln-out/upper.txt"), "HELLO\n");
    assert_eq!(ws.read("kiln-out/twice.txt"), "HELLO\nHELLO\n");
    assert!(blob.is_file(), "the blob is back, intact");
}

/// The example service's whole release (binaries for four platforms, stripped, packed,
/// images, checksums, provenance) is reproducible, and its checksums verify.
#[test]
fn example_release_passes_verify_repro() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-service");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hello-service");
    crate::support::copy_tree(&example, &root);
    let cache = tmp.path().join("cache");
    let out = crate::support::kiln_cmd(&root, &cache, &["verify-repro", "//:release"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("outputs compared, all identical"),
        "{stderr}"
    );
    let release = root.join("kiln-out/release/v0.1.0");
    for name in [
        "server_linux_amd64",
        "server_packed_linux_arm64",
        "server_windows_amd64.exe",
        "image_linux_amd64.tar",
        "provenance.intoto.json",
    ] {
        assert!(release.join(name).is_file(), "{name} is released");
    }
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&release)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}
