//! Remote execution and the gRPC cache end to end, on a real Remote Execution API engine:
//! buildbox-casd started by the test on loopback (its actions run by buildbox-run under
//! bubblewrap, with the host's /usr as the worker's base system).
//!
//! casd is required, not skipped: a test that passes without its engine proves nothing.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_testkit::{free_port, Casd};

use crate::support::{workspace, Run, Workspace, SCRIPT_AND_PAIR};

/// A DAG of genrules: `width` leaves over source files, each layer joining pairs of the
/// layer below, plus an executable output and a two-output action.
pub(crate) fn dag(width: usize, layers: usize) -> Workspace {
    let mut build = String::new();
    let mut b = workspace();
    for i in 0..width {
        b = b.file(&format!("dag/src/f{i}.txt"), &format!("source {i}\n"));
        build += &format!(
            "[genrule.l0_{i}]\nsrcs = [\"src/f{i}.txt\"]\nouts = [\"l0_{i}.txt\"]\n\
             cmd = \"tr a-z A-Z < $SRCS > $OUT; echo leaf {i} >> $OUT\"\ntools = [\"tr\"]\n\n"
        );
    }
    let mut below = width;
    for layer in 1..layers {
        let n = below.div_ceil(2);
        for i in 0..n {
            let a = 2 * i;
            let c = (2 * i + 1).min(below - 1);
            build += &format!(
                "[genrule.l{layer}_{i}]\nsrcs = [\":l{p}_{a}\", \":l{p}_{c}\"]\nouts = [\"l{layer}_{i}.txt\"]\n\
                 cmd = \"cat $SRCS | sort > $OUT\"\ntools = [\"cat\", \"sort\"]\n\n",
                p = layer - 1
            );
        }
        below = n;
    }
    build += SCRIPT_AND_PAIR;
    b.file("dag/BUILD.toml", &build).build()
}

/// Every file under kiln-out: relative path → (bytes, mode).
pub(crate) fn outputs(ws: &Workspace) -> BTreeMap<String, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let root = ws.path("kiln-out");
    let mut found = BTreeMap::new();
    for entry in walk(&root) {
        let meta = std::fs::metadata(&entry).unwrap();
        let rel = entry.strip_prefix(&root).unwrap().display().to_string();
        found.insert(
            rel,
            (
                std::fs::read(&entry).unwrap(),
                meta.permissions().mode() & 0o111,
            ),
        );
    }
    found
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_dag_run_on_casd_is_bit_identical_to_the_local_build_and_shared_through_its_cache() {
    let casd = Casd::start();
    let local = dag(24, 4);
    local.kiln(&["build"]).assert_ok();
    let want = outputs(&local);
    let total = want.len();
    assert!(total > 40, "{total} outputs");

    // Another machine: another path, an empty cache, every action on casd.
    let remote = local.copy();
    let run = remote.kiln(&["build", "--remote-executor", &casd.url()]);
    run.assert_ok();
    let (actions, cached, executed, failed) = run.counts();
    assert_eq!((cached, failed), (0, 0), "{}", run.stderr);
    assert_eq!(executed, actions);
    assert_eq!(
        run.remote_counts(),
        (0, actions),
        "every action ran on casd:\n{}",
        run.stderr
    );
    assert_eq!(
        outputs(&remote),
        want,
        "remote outputs differ from the local build"
    );

    // A third machine reads casd only as a gRPC cache: every result is a remote hit.
    let third = local.copy();
    let run = third.kiln(&["build", "--remote-cache", &casd.url()]);
    run.assert_ok();
    assert_eq!(run.counts(), (actions, actions, 0, 0), "{}", run.stderr);
    assert_eq!(run.remote_counts().0, actions);
    assert_eq!(outputs(&third), want);

    // An edit reruns on casd only what it changes; --json says where each ran.
    third.write("dag/src/f3.txt", "changed\n");
    let json = third.path("events.json");
    let json_arg = json.display().to_string();
    let run = third.kiln(&[
        "build",
        "--remote-executor",
        &casd.url(),
        "--json",
        &json_arg,
    ]);
    run.assert_ok();
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ran: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "action_executed")
        .collect();
    assert_eq!(ran.len(), 4);
    for e in ran {
        assert_eq!(e["ran_on"]["where"], "remote", "{e}");
        assert!(e["ran_on"]["transfer_ms"].is_u64(), "{e}");
        assert!(e["ran_on"]["queue_ms"].is_u64(), "{e}");
    }
    assert_eq!(
        run.executed(),
        4,
        "the leaf and its three joins:\n{}",
        run.stderr
    );
    assert_eq!(run.remote_counts().1, 4);
    assert!(third.read("kiln-out/dag/l0_3.txt").starts_with("CHANGED\n"));
}

#[test]
fn an_action_sees_its_inputs_and_tools_under_the_workers_root_not_the_host() {
    let casd = Casd::start();
    let ws = workspace()
        .file("p/in.txt", "data\n")
        .file(
            "p/BUILD.toml",
            r#"
[genrule.where]
srcs = ["in.txt"]
outs = ["where.txt"]
cmd = "echo host=$(uname -n) > $OUT; echo home=$HOME >> $OUT; ls $SRCS >> $OUT; test ! -e /root/.cargo && echo no-host-files >> $OUT"
tools = ["uname", "ls", "test"]
"#,
        )
        .build();
    let run = ws.kiln(&["build", "--remote-executor", &casd.url()]);
    run.assert_ok();
    let got = ws.read("kiln-out/p/where.txt");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        !got.contains(&format!("host={}", host.trim())),
        "ran on this host:\n{got}"
    );
    assert!(got.contains("p/in.txt"), "{got}");
    assert!(got.contains("no-host-files"), "{got}");
    let home = got.lines().find_map(|l| l.strip_prefix("home=")).unwrap();
    assert!(
        home.ends_with("/.kiln/home"),
        "HOME is below the worker's root: {home}"
    );
    assert!(
        !home.contains(&*ws.cache.to_string_lossy()) && !home.starts_with("/kiln/ws"),
        "HOME is not a local sandbox's: {home}"
    );
}

/// The largest file in casd's storage, in bytes: what the biggest blob kiln sent weighs.
fn largest_blob(casd: &Casd) -> u64 {
    walk(&casd.storage())
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// A plain action's input root carries the small launcher, not kiln itself (an engine
/// such as casd copies every input file into each action's root, and kiln is tens of
/// MB); an action that names `{kiln}` gets kiln there and runs it.
#[test]
fn only_an_action_naming_kiln_carries_kiln_to_the_worker() {
    let casd = Casd::start();
    let ws = workspace()
        .file(
            "p/BUILD.toml",
            r#"
[genrule.plain]
outs = ["plain.txt"]
cmd = "if test -e {sandbox}/.kiln/bin/kiln; then echo kiln; else echo no-kiln; fi > $OUT; wc -c < {sandbox}/.kiln/kiln-launch >> $OUT"
tools = ["test", "wc"]

[genrule.helper]
outs = ["version.txt"]
cmd = "$KILN --version > $OUT"
env = { KILN = "{kiln}" }
"#,
        )
        .build();
    let kiln_size = std::fs::metadata(crate::support::KILN).unwrap().len();

    let run = ws.kiln(&["build", "//p:plain", "--remote-executor", &casd.url()]);
    run.assert_ok();
    assert_eq!(run.remote_counts(), (0, 1), "{}", run.stderr);
    let got = ws.read("kiln-out/p/plain.txt");
    let mut lines = got.lines();
    assert_eq!(lines.next(), Some("no-kiln"), "kiln is in the root:\n{got}");
    let launcher: u64 = lines.next().unwrap().trim().parse().unwrap();
    assert!(
        launcher > 0 && launcher < 2_000_000 && launcher < kiln_size / 10,
        "the launcher in the root is {launcher} bytes (kiln: {kiln_size})"
    );
    let largest = largest_blob(&casd);
    assert!(
        largest < 2_000_000,
        "casd was sent a {largest}-byte blob for a genrule (kiln: {kiln_size})"
    );

    // An action that names {kiln} (as go test runs and go-build-each do) runs it there.
    let run = ws.kiln(&["build", "//p:helper", "--remote-executor", &casd.url()]);
    run.assert_ok();
    assert_eq!(run.remote_counts(), (0, 1), "{}", run.stderr);
    let here = std::process::Command::new(crate::support::KILN)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        ws.read("kiln-out/p/version.txt"),
        String::from_utf8(here.stdout).unwrap()
    );
    assert!(
        largest_blob(&casd) >= kiln_size,
        "kiln itself reached casd for the action that names it"
    );
}

/// A kiln installed without `kiln-launch` beside it says so once and launches remote
/// actions itself (`kiln remote-launch`): the build is the same.
#[test]
fn without_the_launcher_kiln_launches_remote_actions_itself() {
    let casd = Casd::start();
    let ws = dag(2, 1);
    let bin = tempfile::tempdir().unwrap();
    let kiln = bin.path().join("kiln");
    std::fs::copy(crate::support::KILN, &kiln).unwrap();
    let run = Run::from(
        crate::support::kiln_cmd_at(
            &kiln,
            &ws.root,
            &ws.cache,
            &["build", "--remote-executor", &casd.url()],
        )
        .output()
        .unwrap(),
    );
    run.assert_ok();
    let (actions, _, _, _) = run.counts();
    assert_eq!(run.remote_counts(), (0, actions), "{}", run.stderr);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("no `kiln-launch` beside"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert_eq!(ws.read("kiln-out/dag/l0_1.txt"), "SOURCE 1\nleaf 1\n");
    assert!(
        largest_blob(&casd) >= std::fs::metadata(&kiln).unwrap().len(),
        "kiln itself was the launcher"
    );
}

/// A genrule that prints to both streams and fails.
pub(crate) const FAILING: &str = r#"
[genrule.bad]
outs = ["bad.txt"]
cmd = "echo to-stdout; echo to-stderr >&2; exit 7"
"#;

#[test]
fn a_remote_failure_shows_its_output_like_a_local_one() {
    let casd = Casd::start();
    let ws = workspace().file("p/BUILD.toml", FAILING).build();
    let run = ws.kiln(&["build", "--remote-executor", &casd.url()]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("failed with exit code 7"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("to-stdout"), "{}", run.stderr);
    assert!(run.stderr.contains("to-stderr"), "{}", run.stderr);
    assert!(!ws.path("kiln-out/p/bad.txt").exists());
    // Failures are not cached, there or here: the next build runs it again.
    let again = ws.kiln(&["build", "--remote-executor", &casd.url()]);
    assert!(
        again.stderr.contains("failed with exit code 7"),
        "{}",
        again.stderr
    );
}

#[test]
fn an_unreachable_executor_is_one_clear_line_and_local_fallback_builds_here() {
    let ws = workspace()
        .file(
            "p/BUILD.toml",
            "[genrule.a]\nouts = [\"a.txt\"]\ncmd = \"echo a > $OUT\"\n",
        )
        .build();
    let url = format!("grpc://127.0.0.1:{}", free_port());
    let run = ws.kiln(&["build", "--remote-executor", &url]);
    assert!(run.the_error(3).contains(&url), "{}", run.stderr);
    assert!(
        run.stderr.contains("--remote-local-fallback"),
        "a hint:\n{}",
        run.stderr
    );
    assert!(!ws.path("kiln-out/p/a.txt").exists());

    let run = ws.kiln(&[
        "build",
        "--remote-executor",
        &url,
        "--remote-local-fallback",
    ]);
    run.assert_ok();
    assert!(
        run.stderr.contains("kiln: warning: remote executor"),
        "{}",
        run.stderr
    );
    assert_eq!(ws.read("kiln-out/p/a.txt"), "a\n");

    let bad = ws.kiln(&["build", "--remote-executor", "http://127.0.0.1:1"]);
    assert_eq!(bad.status, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("grpc://"), "{}", bad.stderr);
}

#[test]
fn the_executor_comes_from_kiln_toml_and_the_environment() {
    let casd = Casd::start();
    let ws = workspace()
        .file(
            "kiln.toml",
            &format!(
                "[workspace]\nname = \"t\"\n\n[remote]\nexecutor = \"{}\"\n",
                casd.url()
            ),
        )
        .file(
            "p/BUILD.toml",
            "[genrule.a]\nouts = [\"a.txt\"]\ncmd = \"echo a > $OUT\"\n",
        )
        .build();
    let run = ws.kiln(&["build"]);
    run.assert_ok();
    assert_eq!(run.remote_counts(), (0, 1), "{}", run.stderr);

    let other = dag(2, 1);
    let run = Run::from(
        other
            .cmd(&["build"])
            .env("KILN_REMOTE_EXECUTOR", casd.url())
            .output()
            .unwrap(),
    );
    run.assert_ok();
    assert_eq!(run.remote_counts().1, run.counts().0, "{}", run.stderr);

    let bad = workspace()
        .file(
            "kiln.toml",
            "[workspace]\nname = \"t\"\n\n[remote]\nexecutor = \"ftp://x\"\n",
        )
        .build();
    let run = bad.kiln(&["build"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("kiln.toml:5:"), "{}", run.stderr);
}

#[test]
fn a_grpc_cache_result_naming_paths_outside_its_outputs_is_ignored() {
    use kiln_cache::{Digest, Store};
    let casd = Casd::start();
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.out]\nouts = [\"out.txt\"]\ncmd = \"echo honest > $OUT\"\n",
        )
        .build();
    ws.kiln(&["build", "--remote-cache", &casd.url()])
        .assert_ok();
    let keys = ws.kiln(&["cache", "keys"]);
    let key: Digest = keys
        .stdout
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();

    // Any client with write access to the engine's ActionCache stores, under the same
    // key, a result that also puts a blob outside kiln-out.
    let remote = std::sync::Arc::new(
        kiln_remote::Remote::connect(&casd.url(), &kiln_remote::Options::default()).unwrap(),
    );
    let store = kiln_remote::GrpcStore::new(remote);
    let mut result = store.get_action(&key).unwrap().expect("the honest result");
    let evil = store.put_bytes(b"evil\n").unwrap();
    let mut escape = result.outputs[0].clone();
    escape.path = "kiln-out/../../escaped.txt".into();
    escape.digest = evil;
    escape.size = 5;
    result.outputs.push(escape);
    store.put_action(&key, &result).unwrap();
    assert_eq!(
        store.get_action(&key).unwrap().unwrap().outputs.len(),
        2,
        "the attack is stored"
    );

    let other = ws.copy();
    let run = other.kiln(&["build", "--remote-cache", &casd.url()]);
    run.assert_ok();
    let outside = other.root.parent().unwrap().join("escaped.txt");
    assert!(!outside.exists(), "the remote wrote {}", outside.display());
    assert_eq!(other.read("kiln-out/out.txt"), "honest\n");
    assert_eq!(
        run.executed(),
        1,
        "the bad result is a miss: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("remote cache {}", casd.url()))
            && run.stderr.contains("kiln-out/../../escaped.txt"),
        "one warning naming the remote: {}",
        run.stderr
    );
}

/// The example service's release (four platforms, stripped and packed on casd, images,
/// checksums, provenance) built with a remote executor is byte for byte the local one.
#[test]
fn the_example_release_built_through_casd_is_the_local_release() {
    let casd = Casd::start();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-service");
    let tmp = tempfile::tempdir().unwrap();
    let (here, there) = (tmp.path().join("here/hs"), tmp.path().join("there/hs"));
    crate::support::copy_tree(&example, &here);
    crate::support::copy_tree(&example, &there);
    let _ = std::fs::remove_dir_all(here.join("kiln-out"));
    let _ = std::fs::remove_dir_all(there.join("kiln-out"));
    let build = |root: &Path, cache: &str, extra: &[&str]| {
        let mut args = vec!["build", "//:release"];
        args.extend_from_slice(extra);
        Run::from(
            crate::support::kiln_cmd(root, &tmp.path().join(cache), &args)
                .output()
                .unwrap(),
        )
    };
    build(&here, "cache-here", &[]).assert_ok();
    let run = build(&there, "cache-there", &["--remote-executor", &casd.url()]);
    run.assert_ok();
    let (_, remote) = run.remote_counts();
    assert!(remote >= 4, "strip and upx ran on casd:\n{}", run.stderr);
    let read = |root: &Path| {
        let ws_out = root.join("kiln-out");
        walk(&ws_out)
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(&ws_out).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let (a, b) = (read(&here), read(&there));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (path, bytes) in &a {
        assert!(b[path] == *bytes, "{} differs", path.display());
    }
}
