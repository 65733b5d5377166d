//! kiln against an attacker and against accidents: no action, remote, edit or signal
//! can poison the cache, escape the sandbox or write outside kiln-out. Each attack here
//! succeeded on kiln before its defence; CI runs them as root, and the ones where
//! bubblewrap behaves differently without root run as `nobody` too.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{workspace, KilnServe, Run, Workspace};

fn run_of(out: std::process::Output) -> Run {
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// kiln as the unprivileged user `nobody`, on a workspace and cache it owns.
fn as_nobody(ws: &Workspace, args: &[&str]) -> Run {
    let tmp = ws.root.parent().unwrap();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(tmp)
        .status()
        .unwrap();
    assert!(chown.success());
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(crate::support::KILN)
        .args(args)
        .current_dir(&ws.root)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", tmp)
        .env("KILN_CACHE", &ws.cache);
    run_of(cmd.output().unwrap())
}

/// As root and, where bubblewrap differs without root, as nobody: both sandbox modes.
fn each_mode() -> [&'static str; 2] {
    ["--sandbox=bwrap", "--sandbox=dir"]
}

fn genrule(cmd: &str, tools: &[&str], srcs: &[&str]) -> String {
    format!(
        "[genrule.out]\nsrcs = {srcs:?}\nouts = [\"out.txt\"]\ncmd = {cmd:?}\ntools = {tools:?}\n"
    )
}

#[test]
fn a_remote_result_naming_paths_outside_its_outputs_is_ignored() {
    let server = KilnServe::start();
    let ws = workspace()
        .file("BUILD.toml", &genrule("echo honest > $OUT", &["sh"], &[]))
        .build();
    let run = ws.kiln(&["build", "--remote-cache", &server.url()]);
    run.assert_ok();
    // A writer to the remote (or anyone on the wire of a plain-http cache) rewrites
    // the result to put its blob outside kiln-out, next to the workspace.
    rewrite_the_result(&server, |result| {
        let honest = result["outputs"][0].clone();
        let mut escape = honest.clone();
        escape["path"] = "kiln-out/../../escaped.txt".into();
        result["outputs"] = serde_json::json!([honest, escape]);
    });

    let other = ws.copy();
    let run = other.kiln(&[
        "build",
        "--remote-cache",
        &server.url(),
        "--remote-read-only",
    ]);
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
        run.stderr
            .contains(&format!("remote cache {}", server.url()))
            && run.stderr.contains("kiln-out/../../escaped.txt"),
        "one warning naming the remote: {}",
        run.stderr
    );
}

/// Rewrites the one result the server holds, as a writer to the remote could.
fn rewrite_the_result(server: &KilnServe, edit: impl FnOnce(&mut serde_json::Value)) {
    let ac = server.root().join("ac");
    let entry = std::fs::read_dir(&ac)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let key = entry.file_name().unwrap().to_string_lossy().into_owned();
    let mut result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
    edit(&mut result);
    put(
        server,
        &format!("/ac/{key}"),
        &serde_json::to_vec(&result).unwrap(),
    );
}

#[test]
fn a_remote_result_giving_its_outputs_wrong_sizes_is_a_miss_once() {
    let server = KilnServe::start();
    let ws = workspace()
        .file("BUILD.toml", &genrule("echo honest > $OUT", &["sh"], &[]))
        .build();
    ws.kiln(&["build", "--remote-cache", &server.url()])
        .assert_ok();
    rewrite_the_result(&server, |result| result["outputs"][0]["size"] = 1.into());

    let other = ws.copy();
    let args = [
        "build",
        "--remote-cache",
        &server.url(),
        "--remote-read-only",
    ];
    let run = other.kiln(&args);
    run.assert_ok();
    assert_eq!(run.executed(), 1, "the result is a miss: {}", run.stderr);
    assert!(
        run.stderr
            .contains("the size it gives `kiln-out/out.txt` is not its blob's"),
        "{}",
        run.stderr
    );
    assert_eq!(other.read("kiln-out/out.txt"), "honest\n");
    // The build's own result serves the next build: the remote is not asked again.
    std::fs::remove_dir_all(other.path("kiln-out")).unwrap();
    let run = other.kiln(&args);
    assert_eq!(run.counts(), (1, 1, 0, 0), "{}", run.stderr);
    assert_eq!(run.remote_counts(), (0, 0), "{}", run.stderr);
}

/// A PUT to the server, as any client with write access could send it.
fn put(server: &KilnServe, path: &str, body: &[u8]) {
    let mut conn = TcpStream::connect(server.addr()).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: cache\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 2"), "{answer}");
}

/// What an action finds of the kiln that runs it: processes whose command line says
/// `build`, and a token from kiln's environment.
const SNOOP: &str = "(grep -l 'bui[l]d' /proc/[0-9]*/cmdline; cat /proc/[0-9]*/environ | tr '\\0' '\\n' | grep 'sec[r]et-token-value') > $OUT 2>/dev/null; true";

#[test]
fn an_action_sees_no_other_process_and_no_token_of_kiln() {
    for mode in each_mode() {
        let ws = workspace()
            .file(
                "BUILD.toml",
                &genrule(SNOOP, &["sh", "grep", "cat", "tr"], &[]),
            )
            .build();
        let run = run_of(
            ws.cmd(&["build", mode])
                .env("KILN_REMOTE_TOKEN", "secret-token-value")
                .output()
                .unwrap(),
        );
        run.assert_ok();
        let seen = ws.read("kiln-out/out.txt");
        assert!(!seen.contains("secret-token-value"), "{mode}: {seen}");
        if mode == "--sandbox=bwrap" {
            assert_eq!(seen, "", "{mode}: kiln's own process is out of sight");
        }
    }
    // Without root, bubblewrap works through a user namespace: the same holds.
    let ws = workspace()
        .file(
            "BUILD.toml",
            &genrule(SNOOP, &["sh", "grep", "cat", "tr"], &[]),
        )
        .build();
    let run = as_nobody(&ws, &["build", "--sandbox=bwrap"]);
    run.assert_ok();
    assert_eq!(ws.read("kiln-out/out.txt"), "");
}

#[test]
fn a_symlink_output_fails_and_what_it_points_at_is_left_alone() {
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = victim_dir.path().join("key");
    std::fs::write(&victim, "private\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cmd = format!("ln -s {} $OUT", victim.display());
    for mode in each_mode() {
        let ws = workspace()
            .file("BUILD.toml", &genrule(&cmd, &["ln"], &[]))
            .build();
        let run = ws.kiln(&["build", mode]);
        assert_eq!(run.status, 1, "{mode}: {}", run.stderr);
        assert!(
            run.stderr.contains("kiln-out/out.txt as a symbolic link"),
            "{mode}: {}",
            run.stderr
        );
        let meta = std::fs::metadata(&victim).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{mode}");
        assert!(!ws.path("kiln-out/out.txt").exists(), "{mode}");
    }
}

#[test]
fn an_action_cannot_rewrite_a_generated_input_for_the_actions_after_it() {
    for mode in each_mode() {
        let ws = workspace()
            .file(
                "BUILD.toml",
                r#"
[genrule.good]
outs = ["good.txt"]
cmd = "echo good > $OUT"

[genrule.evil]
srcs = [":good"]
outs = ["evil.txt"]
cmd = "chmod u+w $SRCS; echo POISON > $SRCS; echo done > $OUT; true"
tools = ["chmod"]

[genrule.later]
srcs = [":good", ":evil"]
outs = ["later.txt"]
cmd = "cat kiln-out/good.txt > $OUT"
tools = ["cat"]
"#,
            )
            .build();
        ws.kiln(&["build", mode, "//:good", "//:evil"]).assert_ok();
        ws.kiln(&["build", mode, "//:later"]).assert_ok();
        assert_eq!(ws.read("kiln-out/later.txt"), "good\n", "{mode}");
        assert_eq!(ws.read("kiln-out/good.txt"), "good\n", "{mode}");
        let verify = ws.kiln(&["cache", "verify"]);
        assert!(
            verify.stdout.contains("removed 0 corrupt blobs"),
            "{mode}: {}",
            verify.stdout
        );
    }
}

#[test]
fn a_kiln_out_file_edited_in_place_is_not_served_from_the_cache() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.good]\nouts = [\"good.txt\"]\ncmd = \"echo good > $OUT\"\n\n[genrule.later]\nsrcs = [\":good\"]\nouts = [\"later.txt\"]\ncmd = \"cat $SRCS > $OUT\"\ntools = [\"cat\"]\n",
        )
        .build();
    ws.kiln(&["build", "//:good"]).assert_ok();
    // kiln-out/ holds links to the cache's read-only files; a user (or a script) makes
    // one writable and edits it in place, which writes the cache's own file.
    let out = ws.path("kiln-out/good.txt");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&out, "POISON\n").unwrap();
    let run = ws.kiln(&["build", "//:later"]);
    run.assert_ok();
    assert_eq!(ws.read("kiln-out/later.txt"), "good\n", "{}", run.stderr);
    assert_eq!(ws.read("kiln-out/good.txt"), "good\n");
    assert!(run.stderr.contains("was changed on disk"), "{}", run.stderr);
}

#[test]
fn processes_an_action_leaves_behind_end_with_it() {
    for (mode, marker) in [("--sandbox=bwrap", "7.71"), ("--sandbox=dir", "7.72")] {
        let cmd = format!("sleep {marker} & (sleep 1; echo POISON > $OUT) & echo good > $OUT");
        let ws = workspace()
            .file("BUILD.toml", &genrule(&cmd, &["sh", "sleep"], &[]))
            .build();
        ws.kiln(&["build", mode]).assert_ok();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(ws.read("kiln-out/out.txt"), "good\n", "{mode}");
        let left = Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .unwrap();
        assert!(left.stdout.is_empty(), "{mode}: still running");
        // The stored output is what the action wrote, not what came later.
        std::fs::remove_dir_all(ws.path("kiln-out")).unwrap();
        ws.kiln(&["build", mode]).assert_ok();
        assert_eq!(ws.read("kiln-out/out.txt"), "good\n", "{mode}");
    }
}

#[test]
fn a_source_edited_during_the_build_is_never_cached_under_its_old_key() {
    let ws = workspace()
        .file("in.txt", "original\n")
        .file(
            "BUILD.toml",
            r#"
[genrule.slow]
outs = ["slow.txt"]
cmd = "sleep 2; echo > $OUT"
tools = ["sleep"]

[genrule.copy]
srcs = ["in.txt", ":slow"]
outs = ["copy.txt"]
cmd = "cat in.txt > $OUT"
tools = ["cat"]
"#,
        )
        .build();
    let child = ws.cmd(&["build"]).stderr(Stdio::piped()).spawn().unwrap();
    // Hashed when the build starts; copied into the sandbox once `slow` is done.
    std::thread::sleep(Duration::from_millis(800));
    ws.write("in.txt", "edited\n");
    let run = run_of(child.wait_with_output().unwrap());
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("source file `in.txt` changed during the build"),
        "{}",
        run.stderr
    );
    ws.write("in.txt", "original\n");
    ws.kiln(&["build"]).assert_ok();
    assert_eq!(ws.read("kiln-out/copy.txt"), "original\n");
}

/// Waits until the build has a sandbox in the cache's tmp/ (its action started).
fn sandboxes(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("sandbox-")
                })
                .collect()
        })
        .unwrap_or_default()
}

fn started_build(ws: &Workspace, mode: &str) -> std::process::Child {
    let child = ws
        .cmd(&["build", mode])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sandboxes(&ws.cache).is_empty() {
        assert!(Instant::now() < deadline, "the action never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child
}

#[test]
fn sigint_and_sigterm_stop_the_actions_and_remove_their_sandboxes() {
    for (signal, code, mode, marker) in [
        (libc::SIGTERM, 143, "--sandbox=bwrap", "31.41"),
        (libc::SIGINT, 130, "--sandbox=dir", "31.42"),
    ] {
        let cmd = format!("sleep {marker}; echo > $OUT");
        let ws = workspace()
            .file("BUILD.toml", &genrule(&cmd, &["sleep"], &[]))
            .build();
        let mut child = started_build(&ws, mode);
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{mode}");
        let left = Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .unwrap();
        assert!(left.stdout.is_empty(), "{mode}: the action still runs");
        assert!(
            sandboxes(&ws.cache).is_empty(),
            "{mode}: {:?}",
            sandboxes(&ws.cache)
        );
    }
}

#[test]
fn sandboxes_of_a_killed_kiln_are_removed_by_the_next_build() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            &genrule("sleep 29.3; echo > $OUT", &["sleep"], &[]),
        )
        .file(
            "other/BUILD.toml",
            "[genrule.quick]\nouts = [\"q.txt\"]\ncmd = \"echo > $OUT\"\n",
        )
        .build();
    let mut child = started_build(&ws, "--sandbox=bwrap");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !sandboxes(&ws.cache).is_empty(),
        "kill -9 leaves its sandbox"
    );
    ws.kiln(&["build", "//other:quick"]).assert_ok();
    assert!(
        sandboxes(&ws.cache).is_empty(),
        "{:?}",
        sandboxes(&ws.cache)
    );
}

/// The entries of `dir` whose names start with `prefix`.
fn entries_named(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_interrupted_or_killed_go_test_leaves_no_view_of_go_s_cache_behind() {
    // A Go test's go commands read Go's compile cache through a view: a directory of
    // copies. A CI runner cancelling the job (SIGTERM) or killing kiln (SIGKILL) must
    // not leave those behind, build after build. This kiln gets a Go cache and a
    // TMPDIR of its own, so that only its views are in sight.
    let ws = crate::support::go_workspace()
        .file(
            "slow/slow_test.go",
            "package slow\n\nimport (\n\t\"testing\"\n\t\"time\"\n)\n\nfunc TestSlow(t *testing.T) { time.Sleep(297 * time.Second / 10) }\n",
        )
        .file(
            "quick/quick_test.go",
            "package quick\n\nimport \"testing\"\n\nfunc TestQuick(t *testing.T) {}\n",
        )
        .file(
            "BUILD.toml",
            "[go_test.slow]\npackages = [\"./slow\"]\n\n[go_test.quick]\npackages = [\"./quick\"]\n",
        )
        .build();
    let go_cache = ws.root.parent().unwrap().join("go-cache");
    let tmpdir = ws.root.parent().unwrap().join("tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    let views = || entries_named(&go_cache.join("tmp"), "gocache-view-");
    let kiln = |args: &[&str]| {
        let mut cmd = ws.cmd(args);
        cmd.env("KILN_GO_CACHE", &go_cache).env("TMPDIR", &tmpdir);
        cmd
    };
    let started = || {
        let child = kiln(&["test", "//:slow"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The first time, the standard library is compiled first.
        let deadline = Instant::now() + Duration::from_secs(300);
        while views().is_empty() {
            assert!(Instant::now() < deadline, "the test never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        child
    };

    let mut child = started();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(143));
    assert_eq!(views(), Vec::<String>::new(), "SIGTERM removes the views");
    assert_eq!(
        entries_named(&tmpdir, "kiln-gocache-"),
        Vec::<String>::new(),
        "and the cache server's socket directory"
    );

    let mut child = started();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!views().is_empty(), "kill -9 leaves its view");
    kiln(&["test", "//:quick"]).output().unwrap();
    assert_eq!(views(), Vec::<String>::new(), "the next build removes it");
}

#[test]
fn a_failing_action_s_flood_of_output_is_cut_and_kept_whole_in_a_file() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            &genrule(
                "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo the end; exit 1",
                &["head", "tr", "sh"],
                &[],
            ),
        )
        .build();
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 1);
    assert!(
        run.stderr.len() < 1_200_000,
        "{} bytes shown",
        run.stderr.len()
    );
    assert!(run.stderr.contains("the end"), "the end of it is shown");
    let kept = run
        .stderr
        .split("the whole of it is in ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no log named: {}", &run.stderr[..200]));
    let kept = kept.trim_end_matches(';');
    assert_eq!(std::fs::metadata(kept).unwrap().len(), 3_000_000 + 9);
}

#[test]
fn results_of_unisolated_runs_are_not_served_to_isolated_builds() {
    let ws = workspace()
        .file("BUILD.toml", &genrule("echo hi > $OUT", &["sh"], &[]))
        .build();
    assert_eq!(ws.kiln(&["build", "--sandbox=dir"]).executed(), 1);
    assert_eq!(ws.kiln(&["build", "--sandbox=bwrap"]).executed(), 1);
    assert_eq!(ws.kiln(&["build", "--sandbox=dir"]).executed(), 0);
}

#[test]
fn kill_9_at_random_points_never_leaves_a_wrong_or_damaged_cache() {
    let mut build = String::new();
    for i in 0..6 {
        build.push_str(&format!(
            "[genrule.g{i}]\nouts = [\"g{i}.txt\"]\ncmd = \"sleep 0.0{i}; echo {i} > $OUT\"\ntools = [\"sleep\"]\n\n"
        ));
    }
    build.push_str("[genrule.all]\nsrcs = [\":g0\", \":g1\", \":g2\", \":g3\", \":g4\", \":g5\"]\nouts = [\"all.txt\"]\ncmd = \"cat $SRCS > $OUT\"\ntools = [\"cat\"]\n");
    let ws = workspace().file("BUILD.toml", &build).build();
    // A fixed sequence of "random" delays, so a failure can be run again as it was.
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for round in 0..12 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ws.write("salt.txt", &round.to_string());
        let mut child = ws.cmd(&["build"]).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(x % 250));
        let _ = child.kill();
        let _ = child.wait();
        // Something changes before the next round, so it is not all cached.
        let edited = build.replace("echo 0", &format!("echo {}", round % 2));
        ws.write("BUILD.toml", &edited);
        ws.kiln(&["build"]).assert_ok();
        let want: String = (0..6)
            .map(|i| format!("{}\n", if i == 0 { round % 2 } else { i }))
            .collect();
        assert_eq!(ws.read("kiln-out/all.txt"), want, "round {round}");
        let verify = ws.kiln(&["cache", "verify"]);
        assert!(
            verify.stdout.contains("removed 0 corrupt blobs"),
            "round {round}: {}",
            verify.stdout
        );
        assert!(sandboxes(&ws.cache).is_empty(), "round {round}");
    }
}

#[test]
fn a_full_disk_is_named_as_such() {
    // A cache and workspace on a 2 MiB file system of their own (a tmpfs in a private
    // mount namespace: root only, as CI runs).
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to mount a small file system");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "set -e; mount -t tmpfs -o size=2m tmpfs {d}; mkdir -p {d}/ws; cd {d}/ws; \
         printf '[workspace]\\nname = \"full\"\\n' > kiln.toml; \
         printf '[genrule.big]\\nouts = [\"big.bin\"]\\ncmd = \"head -c 4000000 /dev/zero > $OUT\"\\ntools = [\"head\"]\\n' > BUILD.toml; \
         KILN_CACHE={d}/cache {kiln} build --sandbox=dir",
        d = dir.path().display(),
        kiln = crate::support::KILN
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no space left on device"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_output_directory_made_a_link_to_a_host_directory_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    // The action replaces the directory of its output with a link to a directory of
    // the host (here one of the workspace, which bubblewrap hides from it) where a file
    // has the output's name: kiln must not move that file into the cache, chmod it or
    // place it in kiln-out.
    for mode in each_mode() {
        let ws = workspace().file("private/out.txt", "private\n").build();
        let victim = ws.path("private/out.txt");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cmd = format!(
            "rm -r kiln-out/sub; ln -s {} kiln-out/sub",
            ws.path("private").display()
        );
        ws.write(
            "BUILD.toml",
            &format!(
                "[genrule.out]\nouts = [\"sub/out.txt\"]\ncmd = {cmd:?}\ntools = [\"rm\", \"ln\"]\n"
            ),
        );
        let run = ws.kiln(&["build", mode]);
        assert_eq!(run.status, 1, "{mode}: {}", run.stderr);
        assert!(
            run.stderr.contains("kiln-out/sub") && run.stderr.contains("symbolic link"),
            "{mode}: {}",
            run.stderr
        );
        assert_eq!(ws.read("private/out.txt"), "private\n", "{mode}");
        let meta = std::fs::metadata(&victim).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{mode}");
        assert!(!ws.path("kiln-out/sub/out.txt").exists(), "{mode}");
    }
}

#[test]
fn an_action_cannot_swap_kiln_s_captures_for_links_to_host_files() {
    use std::os::unix::fs::PermissionsExt;
    // `.kiln/stdout` and `.kiln/stderr` are kiln's captures of the process's output,
    // which kiln prints (a failure) or stores (a success); `.kiln` holds them. Each
    // made a link to a file the action cannot read (in the hidden workspace).
    let attacks = [
        ("ln -sf @SECRET@ .kiln/stderr; exit 1", ".kiln/stderr"),
        ("ln -sf @SECRET@ .kiln/stdout; echo > $OUT", ".kiln/stdout"),
        (
            "mv .kiln moved; moved/bin/ln -s @DIR@ .kiln; exit 1",
            ".kiln",
        ),
    ];
    for mode in each_mode() {
        for (attack, named) in attacks {
            let ws = workspace().file("private/stderr", "secret-bytes\n").build();
            let secret = ws.path("private/stderr");
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
            let cmd = attack
                .replace("@SECRET@", &secret.display().to_string())
                .replace("@DIR@", &ws.path("private").display().to_string());
            ws.write("BUILD.toml", &genrule(&cmd, &["ln", "mv"], &[]));
            let run = ws.kiln(&["build", mode]);
            assert_eq!(run.status, 1, "{mode} {attack}: {}", run.stderr);
            assert!(
                !run.stderr.contains("secret-bytes") && !run.stdout.contains("secret-bytes"),
                "{mode} {attack}: {}",
                run.stderr
            );
            assert!(
                run.stderr.contains(named),
                "{mode} {attack}: {}",
                run.stderr
            );
            let meta = std::fs::symlink_metadata(&secret).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{mode} {attack}");
            assert_eq!(ws.read("private/stderr"), "secret-bytes\n");
            let links = walk_links(&ws.cache);
            assert!(links.is_empty(), "{mode} {attack}: {links:?} in the cache");
        }
    }
}

/// Symbolic links below a directory.
fn walk_links(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let t = entry.file_type().unwrap();
        if t.is_symlink() {
            found.push(entry.path());
        } else if t.is_dir() {
            found.extend(walk_links(&entry.path()));
        }
    }
    found
}

/// A Go test that looks for the socket of kiln's Go compile cache below `dir` (where
/// kiln's TMPDIR puts it) and, finding one, talks to it as a go command would, but
/// without what kiln gave the compile actions: it fails if the server answers.
fn socket_snoop_test(dir: &Path) -> String {
    format!(
        r#"package p

import (
	"bufio"
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestSnoop(t *testing.T) {{
	found, _ := filepath.Glob("{}/kiln-gocache-*/socket")
	for _, s := range found {{
		c, err := net.Dial("unix", s)
		if err != nil {{
			continue
		}}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("{{\"ID\":1,\"Command\":\"close\"}}\n"))
		line, _ := bufio.NewReader(c).ReadString('\n')
		if line != "" {{
			t.Errorf("reached the store's server at %s: %s", s, line)
		}}
	}}
}}
"#,
        dir.display()
    )
}

#[test]
fn a_go_test_cannot_reach_the_compile_cache_server_of_the_build() {
    // kiln's TMPDIR outside /tmp (as many CI runners set it), where sandboxes see it
    // read-only, which lets a process connect to a socket there: the server of Go's
    // compile cache must not take what such a process puts.
    let tmpdir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ws = crate::support::go_workspace()
        .file("p/p.go", "package p\n\nfunc V() int { return 1 }\n")
        .file("p/p_test.go", &socket_snoop_test(tmpdir.path()))
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./...\"]\n")
        .build();
    let run = Run::from(
        ws.cmd(&["test", "--sandbox=bwrap"])
            .env("TMPDIR", tmpdir.path())
            .output()
            .unwrap(),
    );
    run.assert_ok();
}

#[test]
fn an_action_cannot_reach_the_host_s_service_sockets_in_run() {
    // Services listen in /run (docker.sock, the system and user buses, containerd):
    // connecting needs no write access, so a read-only view of the host would let an
    // action drive them, as root a way out of any sandbox. Here a stand-in for
    // /run/docker.sock, owned by root as the real one is.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to listen in /run");
        return;
    }
    let dir = tempfile::tempdir_in("/run").unwrap();
    let socket = dir.path().join("docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let source = format!(
        "package p\n\nimport (\n\t\"net\"\n\t\"testing\"\n)\n\nfunc TestDial(t *testing.T) {{\n\tif c, err := net.Dial(\"unix\", {:?}); err == nil {{\n\t\tc.Write([]byte(\"pwned\"))\n\t\tt.Error(\"reached the host's service\")\n\t}}\n}}\n",
        socket.display().to_string()
    );
    let ws = crate::support::go_workspace()
        .file("p/p.go", "package p\n")
        .file("p/p_test.go", &source)
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./...\"]\n")
        .build();
    let run = ws.kiln(&["test", "--sandbox=bwrap"]);
    let reached = listener.accept().is_ok();
    run.assert_ok();
    assert!(!reached, "an action connected to {}", socket.display());
}
