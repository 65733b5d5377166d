//! Release history: `kiln run //:release` publishing to a store, `kiln release list`,
//! and `kiln rollback` back and forth, checking the `current` pointer, the files it
//! reaches (the stamped binary prints its version) and the record at every step.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::release::module;
use crate::support::Workspace;

/// The release module with `store` set to a directory of its own (kept by the caller).
fn with_store() -> (tempfile::TempDir, std::path::PathBuf, Workspace) {
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("releases");
    let ws = module().build();
    ws.write(
        "BUILD.toml",
        &format!("{}store = \"{}\"\n", ws.read("BUILD.toml"), store.display()),
    );
    (store_dir, store, ws)
}

/// The release's stamp version set to `version` in kiln.toml.
fn set_version(ws: &Workspace, version: &str) {
    let toml = ws.read("kiln.toml");
    let start = toml.find("STABLE_GIT_DESCRIBE").unwrap();
    let end = start + toml[start..].find('\n').unwrap();
    let line = format!("STABLE_GIT_DESCRIBE = \"{version}\"");
    ws.write(
        "kiln.toml",
        &format!("{}{line}{}", &toml[..start], &toml[end..]),
    );
}

/// What the current release's linux binary prints (its stamped version).
fn current_binary_says(store: &Path) -> String {
    let out = Command::new(store.join("current/app_linux_amd64"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn current(store: &Path) -> String {
    let link = std::fs::read_link(store.join("current")).unwrap();
    link.to_string_lossy().into_owned()
}

fn record(store: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(store.join("releases.json")).unwrap()).unwrap()
}

#[test]
fn releases_are_kept_by_version_and_rollback_moves_current_back_and_forth() {
    let (_store_dir, store, ws) = with_store();
    let versions = ["v1.0.0", "v1.1.0", "v1.2.0"];
    for v in versions {
        set_version(&ws, v);
        let run = ws.kiln(&["run", "//:release"]);
        run.assert_ok();
        assert!(
            run.stdout.contains(&format!("published {v} to ")),
            "{}",
            run.stdout
        );
        assert_eq!(current(&store), v);
        assert_eq!(current_binary_says(&store), v);
        // The store's copy verifies with the real sha256sum.
        let check = Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(store.join(v))
            .output()
            .unwrap();
        assert!(check.status.success(), "{v}: {check:?}");
    }
    let list = ws.kiln(&["release", "list"]);
    list.assert_ok();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", list.stdout);
    for (line, v) in lines.iter().zip(versions) {
        assert!(line[2..].starts_with(v), "{line}");
        assert!(line.contains("T") && line.contains("Z  sha256:"), "{line}");
    }
    assert!(lines[2].starts_with("* v1.2.0"), "{}", list.stdout);
    let digests: Vec<&str> = lines
        .iter()
        .map(|l| l.split("  ").find(|f| f.starts_with("sha256:")).unwrap())
        .collect();
    assert_ne!(digests[0], digests[1]);

    // Back and forth, several times: nothing is built, and every pointer and file follows.
    let mut slowest = 0.0f64;
    for (to, was) in [
        ("v1.0.0", "v1.2.0"),
        ("v1.2.0", "v1.0.0"),
        ("v1.1.0", "v1.2.0"),
        ("v1.0.0", "v1.1.0"),
        ("v1.2.0", "v1.0.0"),
    ] {
        let started = Instant::now();
        let run = ws.kiln(&["rollback", to]);
        slowest = slowest.max(started.elapsed().as_secs_f64());
        run.assert_ok();
        assert_eq!(run.stdout.trim(), format!("current: {to} (was {was})"));
        assert!(
            !run.stderr.contains("actions:"),
            "nothing built: {}",
            run.stderr
        );
        assert_eq!(current(&store), to);
        assert_eq!(current_binary_says(&store), to);
        let rec = record(&store);
        assert_eq!(rec["current"], to);
        let last = rec["history"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["action"], "rollback");
        assert_eq!(last["version"], to);
        let list = ws.kiln(&["release", "list"]);
        let marked: Vec<&str> = list.stdout.lines().filter(|l| l.starts_with('*')).collect();
        assert_eq!(marked.len(), 1);
        assert!(marked[0].starts_with(&format!("* {to}")), "{}", list.stdout);
    }
    eprintln!("slowest rollback: {slowest:.3}s");
    assert!(slowest < 1.0, "a rollback took {slowest:.3}s");
    // Every version's files are untouched by the moves.
    for v in versions {
        assert_eq!(
            Command::new(store.join(v).join("app_linux_amd64"))
                .output()
                .unwrap()
                .stdout,
            format!("{v}\n").into_bytes()
        );
    }
}

#[test]
fn a_published_version_is_never_replaced_and_a_damaged_one_is_never_made_current() {
    let (_store_dir, store, ws) = with_store();
    set_version(&ws, "v1.0.0");
    ws.kiln(&["run", "//:release"]).assert_ok();
    set_version(&ws, "v2.0.0");
    ws.kiln(&["run", "//:release"]).assert_ok();

    // Other bytes under a published version: refused, the store unchanged.
    ws.write("NOTES.md", "changed notes\n");
    let before = std::fs::read(store.join("v2.0.0/notes.txt")).unwrap();
    let run = ws.kiln(&["run", "//:release"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("does not hold the release v2.0.0"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("differs"), "{}", run.stderr);
    assert!(
        run.stderr.contains("publish changes under a new version"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(store.join("v2.0.0/notes.txt")).unwrap(),
        before
    );

    // A file of v1.0.0 damaged in the store: rollback refuses, current stays.
    let sums = store.join("v1.0.0/notes.txt");
    let mut perms = std::fs::metadata(&sums).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&sums, perms).unwrap();
    std::fs::write(&sums, "TAMPERED\n").unwrap();
    let run = ws.kiln(&["rollback", "v1.0.0"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("`notes.txt` differs"), "{}", run.stderr);
    assert_eq!(current(&store), "v2.0.0");

    // Unknown versions and targets without a store are usage errors.
    let run = ws.kiln(&["rollback", "v9.9.9"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("v9.9.9 is not a published release of //:release"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("published: v1.0.0, v2.0.0"),
        "{}",
        run.stderr
    );
    let run = ws.kiln(&["release", "list", "//:sums"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("//:sums is a checksums, not a release"),
        "{}",
        run.stderr
    );
}

/// The digest a registry gives for `repository:tag` (its Docker-Content-Digest).
fn tagged(repository: &str, tag: &str) -> String {
    let (host, name) = repository.split_once('/').unwrap();
    let url = format!("http://{host}/v2/{name}/manifests/{tag}");
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request as u; r = u.Request(sys.argv[1], headers={'Accept': 'application/vnd.oci.image.index.v1+json'}); print(u.urlopen(r).headers['Docker-Content-Digest'])",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn images_are_pushed_by_version_and_rollback_moves_the_stable_tag() {
    let registry = kiln_testkit::Registry::start();
    let repository = format!("127.0.0.1:{}/hello/app", registry.port());
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let ws = crate::support::workspace()
        .file(
            "kiln.toml",
            "[workspace]\nname = \"img\"\n\n[stamp]\nSTABLE_GIT_DESCRIBE = \"v1\"\n",
        )
        .file("hello.txt", "one\n")
        .file(
            "BUILD.toml",
            &format!(
                "[oci_image.image]\nplatforms = [\"linux/amd64\"]\nfiles = {{ \"/etc/hello.txt\" = \"hello.txt\" }}\n\n\
                 [release.release]\nversion = \"{{STABLE_GIT_DESCRIBE}}\"\nsrcs = [\"hello.txt\"]\n\
                 images = {{ \":image\" = \"{repository}\" }}\nstore = \"{}\"\n",
                store.display()
            ),
        )
        .build();
    let mut digests = Vec::new();
    for (version, text) in [("v1", "one\n"), ("v2", "two\n")] {
        set_version(&ws, version);
        ws.write("hello.txt", text);
        ws.kiln(&["run", "//:release"]).assert_ok();
        let digest = ws.read("kiln-out/image/index.digest").trim().to_string();
        assert_eq!(tagged(&repository, version), digest);
        assert_eq!(tagged(&repository, "stable"), digest);
        digests.push(digest);
    }
    assert_ne!(digests[0], digests[1]);
    let list = ws.kiln(&["release", "list"]);
    assert!(
        list.stdout
            .contains(&format!("{repository}@{}", digests[0])),
        "{}",
        list.stdout
    );
    for (to, digest) in [
        ("v1", &digests[0]),
        ("v2", &digests[1]),
        ("v1", &digests[0]),
    ] {
        ws.kiln(&["rollback", to]).assert_ok();
        assert_eq!(
            &tagged(&repository, "stable"),
            digest,
            "stable after rollback to {to}"
        );
        assert_eq!(current(&store), to);
    }
    // The version tags never move.
    assert_eq!(tagged(&repository, "v2"), digests[1]);

    // A release that would replace v2 with other files pushes nothing.
    ws.write("hello.txt", "three\n");
    let run = ws.kiln(&["run", "//:release"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert_eq!(tagged(&repository, "v2"), digests[1]);
    assert_eq!(tagged(&repository, "stable"), digests[0]);

    // Tags that are no image tags are refused where they are written, before anything
    // is published or pushed: the moving tag, and a version that tags images.
    let build = ws.read("BUILD.toml");
    ws.write("BUILD.toml", &format!("{build}tag = \"../latest\"\n"));
    let run = ws.kiln(&["run", "//:release"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("BUILD.toml:")
            && run.stderr.contains("`../latest` is not an image tag"),
        "{}",
        run.stderr
    );
    ws.write("BUILD.toml", &build);
    set_version(&ws, "v3+build.7");
    let run = ws.kiln(&["run", "//:release"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("version `v3+build.7` tags the release's images"),
        "{}",
        run.stderr
    );
    assert!(!store.join("v3+build.7").exists());
    assert_eq!(tagged(&repository, "stable"), digests[0]);
}

#[test]
fn a_hand_edited_record_never_moves_current_outside_the_store() {
    let (store_dir, store, ws) = with_store();
    set_version(&ws, "v1.0.0");
    ws.kiln(&["run", "//:release"]).assert_ok();
    let good = record(&store);
    // A copy of v1.0.0 outside the store, which the record is edited to name: as a
    // version that climbs out of the store, and as a version whose directory in the
    // store is a link to it.
    let outside = store_dir.path().join("outside");
    let cp = Command::new("cp")
        .arg("-r")
        .arg(store.join("v1.0.0"))
        .arg(&outside)
        .status()
        .unwrap();
    assert!(cp.success());
    std::os::unix::fs::symlink(&outside, store.join("v9.0.0")).unwrap();
    let edited = |version: &str| {
        let mut hostile = good.clone();
        let mut entry = good["releases"][0].clone();
        entry["version"] = version.into();
        hostile["releases"].as_array_mut().unwrap().push(entry);
        std::fs::write(
            store.join("releases.json"),
            serde_json::to_vec(&hostile).unwrap(),
        )
        .unwrap();
    };
    for version in ["../outside", &outside.display().to_string()] {
        edited(version);
        let run = ws.kiln(&["rollback", version]);
        assert_ne!(run.status, 0, "{version}: {}", run.stdout);
        assert!(
            run.stderr.contains("releases.json") && run.stderr.contains("cannot name a directory"),
            "{version}: {}",
            run.stderr
        );
        let run = ws.kiln(&["release", "list"]);
        assert_ne!(run.status, 0, "{version}: {}", run.stdout);
        assert_eq!(current(&store), "v1.0.0");
    }
    // A version printed by `release list` cannot carry terminal escapes.
    edited("v2\u{1b}[2J");
    let run = ws.kiln(&["release", "list"]);
    assert_ne!(run.status, 0, "{}", run.stdout);
    assert!(!run.stdout.contains('\u{1b}'), "{}", run.stdout);

    edited("v9.0.0");
    let run = ws.kiln(&["rollback", "v9.0.0"]);
    assert_ne!(run.status, 0, "{}", run.stdout);
    assert!(run.stderr.contains("is not a directory"), "{}", run.stderr);
    assert_eq!(current(&store), "v1.0.0");
}
