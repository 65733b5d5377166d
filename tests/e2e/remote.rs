//! The remote cache end to end: real `kiln build` processes sharing a cache through a real
//! `kiln serve` process and a real nginx with WebDAV PUT, each started on loopback by the
//! test and stopped when it ends, plus small std::net servers that misbehave.
//!
//! The shape of every round trip: workspace A (cache dir A) builds and populates the
//! remote; `Workspace::copy()` gives B at another path with an empty cache dir, which must
//! get every result from the remote and write byte-identical outputs.
//!
//! Decisions where the brief was silent:
//! - `kiln serve` listens on port 0 and the test reads the bound address from its first
//!   log line, so there is no race for a free port; nginx cannot report its port, so it
//!   gets a port that was free a moment before (as the cache crate's tests do).
//! - nginx is required, not skipped: a test that passes without its server proves nothing.
//! - A fault test asserts the build succeeded, its outputs are the known right bytes, a
//!   `kiln: warning: remote cache` line was printed, and the wall time stayed under
//!   [`BOUND`] (the client's defaults allow 3 failed requests of 10 s each at worst).
//! - "Stopped mid-build" is made deterministic enough by an action that sleeps: the server
//!   is stopped as soon as B has downloaded its first blob, while that action still runs,
//!   so its upload and its dependent's lookup meet a stopped server.

use kiln_testkit::Nginx;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{workspace, KilnServe, Run, Workspace, SCRIPT_AND_PAIR};

/// The longest a build facing a broken remote may take.
const BOUND: Duration = Duration::from_secs(40);

/// The number of actions of [`service`].
const ACTIONS: usize = 6;

const WARNING: &str = "kiln: warning: remote cache";

// ---------------------------------------------------------------------------------------
// The workspace: genrules whose outputs the test knows byte for byte.

const GEN_BUILD: &str = r#"
[genrule.big]
outs = ["big.txt"]
cmd = "yes kiln | head -c 300000 > $OUT"
tools = ["yes", "head"]

[genrule.upper]
srcs = [":big"]
outs = ["upper.txt"]
cmd = "tr a-z A-Z < $SRCS > $OUT"
tools = ["tr"]

[genrule.size]
srcs = [":upper"]
outs = ["size.txt"]
cmd = "wc -c < $SRCS > $OUT"
tools = ["wc"]

"#;

const NOTES_BUILD: &str = r#"
[genrule.copy]
srcs = ["note.txt"]
outs = ["copy.txt"]
cmd = "cat $SRCS > $OUT"
tools = ["cat"]
"#;

/// Two actions to add to a copy: one that takes 3 s, and its dependent.
const SLOW_BUILD: &str = r#"
[genrule.wait]
outs = ["wait.txt"]
cmd = "sleep 3; echo waited > $OUT"
tools = ["sleep"]

[genrule.after]
srcs = [":wait"]
outs = ["after.txt"]
cmd = "cat $SRCS $SRCS > $OUT"
tools = ["cat"]
"#;

/// Six actions: a 300 KB output, a chain on it, an executable, a two-output action.
fn service() -> Workspace {
    workspace()
        .file("notes/note.txt", "remote caches share work\n")
        .file("notes/BUILD.toml", NOTES_BUILD)
        .file("gen/BUILD.toml", &format!("{GEN_BUILD}{SCRIPT_AND_PAIR}"))
        .build()
}

/// (path under kiln-out, content, executable) of every output of [`service`].
fn expected() -> Vec<(&'static str, Vec<u8>, bool)> {
    vec![
        ("gen/big.txt", "kiln\n".repeat(60_000).into_bytes(), false),
        ("gen/hello.sh", b"#!/bin/sh\necho hi\n".to_vec(), true),
        ("gen/size.txt", b"300000\n".to_vec(), false),
        ("gen/upper.txt", "KILN\n".repeat(60_000).into_bytes(), false),
        ("gen/x.txt", b"x\n".to_vec(), false),
        ("gen/y.txt", b"y\n".to_vec(), false),
        (
            "notes/copy.txt",
            b"remote caches share work\n".to_vec(),
            false,
        ),
    ]
}

#[track_caller]
fn check_outputs(ws: &Workspace) {
    for (path, bytes, executable) in expected() {
        let file = ws.path("kiln-out").join(path);
        let got = std::fs::read(&file).unwrap_or_else(|e| panic!("read {path}: {e}"));
        assert!(got == bytes, "{path} has the wrong content");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o100 != 0, executable, "{path}: mode {mode:o}");
    }
}

/// Every file under kiln-out: relative path → (bytes, executable).
fn outputs(ws: &Workspace) -> BTreeMap<PathBuf, (Vec<u8>, bool)> {
    let root = ws.path("kiln-out");
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let exec = std::fs::metadata(&path).unwrap().permissions().mode() & 0o100 != 0;
            let rel = path.strip_prefix(&root).unwrap().to_path_buf();
            found.insert(rel, (std::fs::read(&path).unwrap(), exec));
        }
    }
    found
}

#[track_caller]
fn assert_same_outputs(a: &Workspace, b: &Workspace) {
    let (a, b) = (outputs(a), outputs(b));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (path, content) in &a {
        assert!(b[path] == *content, "{} differs", path.display());
    }
}

// ---------------------------------------------------------------------------------------
// Running kiln.

/// `kiln build` in `ws` against `url`, with no token unless the caller adds one.
fn build_cmd(ws: &Workspace, url: &str, extra: &[&str]) -> Command {
    let mut args = vec!["build", "--remote-cache", url];
    args.extend_from_slice(extra);
    let mut cmd = ws.cmd(&args);
    cmd.env_remove("KILN_REMOTE_TOKEN");
    cmd
}

/// Runs a command to its end: what it printed, and how long it took.
fn timed(mut cmd: Command) -> (Run, Duration) {
    let start = Instant::now();
    let out = cmd.output().unwrap();
    (run_of(out), start.elapsed())
}

fn run_of(out: std::process::Output) -> Run {
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn build(ws: &Workspace, url: &str) -> Run {
    let (run, _) = timed(build_cmd(ws, url, &[]));
    run.assert_ok();
    run
}

/// R of the summary line's `X cached (R remote)`.
fn remote_hits(run: &Run) -> usize {
    let line = run
        .stderr
        .lines()
        .rev()
        .find(|l| l.contains(" actions: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{}", run.stderr));
    let (before, _) = line
        .split_once(" remote)")
        .unwrap_or_else(|| panic!("no remote count in: {line}"));
    let digits = before.rsplit('(').next().unwrap();
    digits.parse().unwrap()
}

fn warned(run: &Run) -> bool {
    run.stderr.contains(WARNING)
}

/// The build succeeded with the right outputs, said why the remote did not help, and
/// stayed within [`BOUND`].
#[track_caller]
fn assert_survived(ws: &Workspace, run: &Run, took: Duration) {
    run.assert_ok();
    check_outputs(ws);
    assert!(warned(run), "no warning about the remote:\n{}", run.stderr);
    assert!(
        took < BOUND,
        "a broken remote cost {took:?}:\n{}",
        run.stderr
    );
}

/// How many entries a server's directory holds under `kind` (`ac` or `cas`).
fn entries(root: &Path, kind: &str) -> usize {
    match std::fs::read_dir(root.join(kind)) {
        Ok(dir) => dir.flatten().filter(|e| e.path().is_file()).count(),
        Err(_) => 0,
    }
}

// ---------------------------------------------------------------------------------------
// Servers.

/// A cache server the tests can point kiln at and stop.
trait Remote {
    fn url(&self) -> String;
    /// The directory holding `cas/` and `ac/`.
    fn root(&self) -> PathBuf;
    /// The request log so far.
    fn requests(&self) -> String;
    /// Stops the server as an outage would.
    fn stop(&mut self);
}

impl Remote for KilnServe {
    fn url(&self) -> String {
        KilnServe::url(self)
    }

    fn root(&self) -> PathBuf {
        KilnServe::root(self)
    }

    fn requests(&self) -> String {
        self.log()
    }

    fn stop(&mut self) {
        KilnServe::stop(self)
    }
}

impl Remote for Nginx {
    fn url(&self) -> String {
        Nginx::url(self)
    }

    fn root(&self) -> PathBuf {
        Nginx::root(self)
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(self.access_log()).unwrap_or_default()
    }

    fn stop(&mut self) {
        Nginx::stop(self)
    }
}

/// A server that answers every request with 500, on a thread that lives as long as the
/// test process.
fn failing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || answer_500(conn));
        }
    });
    format!("http://{addr}")
}

/// Reads requests (head, then the body its content-length declares) and answers 500.
fn answer_500(conn: TcpStream) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Some(len) = read_head(&mut reader) {
        if std::io::copy(&mut reader.by_ref().take(len), &mut std::io::sink()).is_err() {
            return;
        }
        let answer = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops";
        if out.write_all(answer).is_err() {
            return;
        }
    }
}

/// The content length of the next request, or None at the end of the connection.
fn read_head(reader: &mut impl BufRead) -> Option<u64> {
    let mut len = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(len);
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
}

/// A server that accepts connections and never answers, as a URL.
fn silent_server() -> String {
    format!("http://{}", kiln_testkit::silent_server())
}

// ---------------------------------------------------------------------------------------
// Round trips: A populates the remote, B gets everything from it.

/// A builds and uploads; B (another path, empty cache) gets every result from the remote,
/// with `configure` choosing how B is told where the remote is.
fn round_trip(remote: &dyn Remote, configure: impl FnOnce(&Workspace, &mut Command)) {
    let a = service();
    let run = build(&a, &remote.url());
    assert_eq!(run.counts(), (ACTIONS, 0, ACTIONS, 0));
    assert_eq!(remote_hits(&run), 0);
    assert!(!warned(&run), "{}", run.stderr);
    check_outputs(&a);
    assert_eq!(
        entries(&remote.root(), "ac"),
        ACTIONS,
        "kiln waits for its uploads before it exits"
    );

    let b = a.copy();
    let mut cmd = b.cmd(&["build"]);
    cmd.env_remove("KILN_REMOTE_TOKEN");
    configure(&b, &mut cmd);
    let (run, _) = timed(cmd);
    run.assert_ok();
    assert_eq!(run.counts(), (ACTIONS, ACTIONS, 0, 0), "{}", run.stderr);
    assert_eq!(remote_hits(&run), ACTIONS, "all from the remote");
    assert!(!warned(&run), "{}", run.stderr);
    assert_same_outputs(&a, &b);
    check_outputs(&b);

    // B's own cache now holds everything: the next build asks the remote nothing new.
    let again = build(&b, &remote.url());
    assert_eq!(again.counts(), (ACTIONS, ACTIONS, 0, 0));
    assert_eq!(remote_hits(&again), 0);
}

#[test]
fn copy_with_empty_cache_builds_everything_from_kiln_serve() {
    let server = KilnServe::start();
    // B finds the remote through KILN_REMOTE_CACHE.
    round_trip(&server, |_, cmd| {
        cmd.env("KILN_REMOTE_CACHE", server.url());
    });
    let log = server.requests();
    assert!(log.contains(" GET /ac/"), "{log}");
    assert!(log.contains(" GET /cas/"), "{log}");
}

#[test]
fn copy_with_empty_cache_builds_everything_from_nginx_webdav() {
    let nginx = Nginx::start();
    // B finds the remote through kiln.toml's `[remote] cache`.
    round_trip(&nginx, |b, _| {
        b.write(
            "kiln.toml",
            &format!(
                "[workspace]\nname = \"test\"\n\n[remote]\ncache = \"{}\"\n",
                nginx.url()
            ),
        );
    });
    // nginx stored kiln's encoding of the results as plain files.
    let ac = nginx.root().join("ac");
    let first = std::fs::read_dir(&ac).unwrap().next().unwrap().unwrap();
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.path()).unwrap()).unwrap();
    assert!(result["outputs"].is_array(), "{result}");
}

// ---------------------------------------------------------------------------------------
// Faults: each build still succeeds, with correct outputs, in bounded time.

#[test]
fn kiln_serve_stopped_before_the_build() {
    let mut server = KilnServe::start();
    let a = service();
    build(&a, &server.url());
    let url = server.url();
    server.stop();
    let b = a.copy();
    let (run, took) = timed(build_cmd(&b, &url, &[]));
    assert_survived(&b, &run, took);
    assert_eq!(run.counts(), (ACTIONS, 0, ACTIONS, 0));
    assert!(
        run.stderr.contains("switched off"),
        "said once that the remote is off:\n{}",
        run.stderr
    );
}

/// B starts with a warm remote and two actions of its own; the remote stops as soon as
/// B has downloaded a blob, while B's slow action still runs.
fn stopped_mid_build(remote: &mut dyn Remote) {
    let a = service();
    build(&a, &remote.url());
    let b = a.copy();
    b.write("slow/BUILD.toml", SLOW_BUILD);
    let start = Instant::now();
    let child = build_cmd(&b, &remote.url(), &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_download(remote);
    remote.stop();
    let run = run_of(child.wait_with_output().unwrap());
    let took = start.elapsed();
    assert_survived(&b, &run, took);
    assert_eq!(b.read("kiln-out/slow/after.txt"), "waited\nwaited\n");
    let (total, cached, executed, failed) = run.counts();
    assert_eq!((total, failed), (ACTIONS + 2, 0));
    // Whether the results in flight when the server stopped still arrive depends on
    // timing (lookups overlap, and a killed server may reset connections with data
    // in flight): what must hold is a correct build, which the checks above make.
    assert!(
        executed >= 2 && cached + executed == total,
        "{}",
        run.stderr
    );
}

fn wait_for_download(remote: &dyn Remote) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !remote.requests().contains("GET /cas/") {
        assert!(Instant::now() < deadline, "B downloaded nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kiln_serve_stopped_mid_build() {
    stopped_mid_build(&mut KilnServe::start());
}

#[test]
fn nginx_stopped_mid_build() {
    stopped_mid_build(&mut Nginx::start());
}

#[test]
fn server_answering_500_costs_a_warning() {
    let url = failing_server();
    let ws = service();
    let (run, took) = timed(build_cmd(&ws, &url, &[]));
    assert_survived(&ws, &run, took);
    assert_eq!(run.counts(), (ACTIONS, 0, ACTIONS, 0));
    assert!(run.stderr.contains("500"), "{}", run.stderr);
}

#[test]
fn server_that_never_answers_costs_bounded_time() {
    let url = silent_server();
    let ws = service();
    let (run, took) = timed(build_cmd(&ws, &url, &[]));
    eprintln!("a silent remote cost {took:?}");
    assert_survived(&ws, &run, took);
    assert_eq!(run.counts(), (ACTIONS, 0, ACTIONS, 0));
    assert!(run.stderr.contains("switched off"), "{}", run.stderr);
}

/// A's big output is damaged on the server's disk: B runs that one action, gets the rest
/// from the remote, and its outputs are right.
/// A blob damaged on the server's disk: B runs that action again (with a warning) and
/// puts a good copy back, so C, later, gets everything from the remote.
fn corrupted_blob(remote: &dyn Remote) {
    let a = service();
    build(&a, &remote.url());
    let big = std::fs::read(a.path("kiln-out/gen/big.txt")).unwrap();
    let blob = find_blob(&remote.root(), &big);
    let mut bytes = big.clone();
    bytes[1000] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();

    let b = a.copy();
    let (run, took) = timed(build_cmd(&b, &remote.url(), &[]));
    assert_survived(&b, &run, took);
    assert_eq!(run.counts(), (ACTIONS, ACTIONS - 1, 1, 0), "{}", run.stderr);
    assert_eq!(remote_hits(&run), ACTIONS - 1);
    assert!(
        run.ran() == ["Genrule //gen:big"],
        "only the damaged action ran: {:?}",
        run.ran()
    );
    assert!(
        std::fs::read(&blob).unwrap() == big,
        "B replaced the damaged copy"
    );

    let c = a.copy();
    let run = build(&c, &remote.url());
    assert_eq!(run.counts(), (ACTIONS, ACTIONS, 0, 0), "{}", run.stderr);
    assert_eq!(remote_hits(&run), ACTIONS);
    assert!(!warned(&run), "{}", run.stderr);
    check_outputs(&c);
}

/// The file under `root/cas` holding exactly `content`.
fn find_blob(root: &Path, content: &[u8]) -> PathBuf {
    std::fs::read_dir(root.join("cas"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::read(p).is_ok_and(|b| b == content))
        .expect("the remote holds the blob")
}

#[test]
fn corrupted_blob_on_kiln_serve_is_run_again_and_repaired() {
    let server = KilnServe::start();
    corrupted_blob(&server);
    let removed = server
        .requests()
        .lines()
        .filter(|l| l.contains("removed damaged blob /cas/"))
        .count();
    assert_eq!(removed, 1, "{}", server.requests());
}

#[test]
fn corrupted_blob_on_nginx_is_run_again_and_repaired() {
    corrupted_blob(&Nginx::start());
}

// ---------------------------------------------------------------------------------------
// Who may write.

const TOKEN: &str = "e2e-t0ken-7c41d9a2";

#[test]
fn kiln_serve_refuses_uploads_without_the_token() {
    let server = KilnServe::start_with(
        &["--token-env", "KILN_E2E_SERVE_TOKEN"],
        &[("KILN_E2E_SERVE_TOKEN", TOKEN)],
    );
    let url = server.url();
    let mut runs = Vec::new();

    // No token, then a wrong one: the builds succeed, nothing is stored.
    let a = service();
    let (run, _) = timed(build_cmd(&a, &url, &[]));
    run.assert_ok();
    check_outputs(&a);
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    runs.push(run);
    let wrong = a.copy();
    let mut cmd = build_cmd(&wrong, &url, &[]);
    cmd.env("KILN_REMOTE_TOKEN", "not-the-token");
    let (run, _) = timed(cmd);
    run.assert_ok();
    assert!(warned(&run), "{}", run.stderr);
    assert!(!run.stderr.contains("not-the-token"), "{}", run.stderr);
    runs.push(run);
    assert_eq!(entries(&server.root(), "ac"), 0);
    assert_eq!(entries(&server.root(), "cas"), 0);

    // With the token in KILN_REMOTE_TOKEN, everything is stored.
    let trusted = a.copy();
    let mut cmd = build_cmd(&trusted, &url, &[]);
    cmd.env("KILN_REMOTE_TOKEN", TOKEN);
    let (run, _) = timed(cmd);
    run.assert_ok();
    assert!(!warned(&run), "{}", run.stderr);
    runs.push(run);
    assert_eq!(entries(&server.root(), "ac"), ACTIONS);

    // Reads need no token.
    let reader = a.copy();
    let run = build(&reader, &url);
    assert_eq!(remote_hits(&run), ACTIONS);
    runs.push(run);

    runs.push(upload_with_token_env_from_kiln_toml(&a, &server));
    for run in &runs {
        assert!(
            !run.stdout.contains(TOKEN),
            "token printed:\n{}",
            run.stdout
        );
        assert!(
            !run.stderr.contains(TOKEN),
            "token printed:\n{}",
            run.stderr
        );
    }
    assert!(
        !server.requests().contains(TOKEN),
        "token in the server log"
    );
}

/// kiln.toml's `[remote] token_env` names the variable holding the token, and wins over
/// a (wrong) KILN_REMOTE_TOKEN: one new action's result is stored.
fn upload_with_token_env_from_kiln_toml(a: &Workspace, server: &KilnServe) -> Run {
    let ci = a.copy();
    ci.write(
        "kiln.toml",
        &format!(
            "[workspace]\nname = \"test\"\n\n[remote]\ncache = \"{}\"\ntoken_env = \"KILN_E2E_CI_TOKEN\"\n",
            server.url()
        ),
    );
    ci.write(
        "extra/BUILD.toml",
        "[genrule.new]\nouts = [\"new.txt\"]\ncmd = \"echo new > $OUT\"\n",
    );
    let mut cmd = ci.cmd(&["build"]);
    cmd.env("KILN_REMOTE_TOKEN", "not-the-token")
        .env("KILN_E2E_CI_TOKEN", TOKEN);
    let (run, _) = timed(cmd);
    run.assert_ok();
    assert!(!warned(&run), "{}", run.stderr);
    assert_eq!(remote_hits(&run), ACTIONS);
    assert_eq!(entries(&server.root(), "ac"), ACTIONS + 1);
    run
}

#[test]
fn read_only_mode_uploads_nothing() {
    let server = KilnServe::start();
    let a = service();
    let (run, _) = timed(build_cmd(&a, &server.url(), &["--remote-read-only"]));
    run.assert_ok();
    assert_eq!(run.counts(), (ACTIONS, 0, ACTIONS, 0));
    assert!(!warned(&run), "{}", run.stderr);
    check_outputs(&a);

    // `[remote] read_only = true` in kiln.toml does the same.
    let b = a.copy();
    b.write(
        "kiln.toml",
        "[workspace]\nname = \"test\"\n\n[remote]\nread_only = true\n",
    );
    build(&b, &server.url());
    assert_eq!(entries(&server.root(), "ac"), 0);
    assert_eq!(entries(&server.root(), "cas"), 0);
    assert!(
        !server.requests().contains(" PUT "),
        "{}",
        server.requests()
    );

    // It still reads what a trusted build uploaded.
    build(&a.copy(), &server.url());
    assert_eq!(entries(&server.root(), "ac"), ACTIONS);
    let c = a.copy();
    let (run, _) = timed(build_cmd(&c, &server.url(), &["--remote-read-only"]));
    run.assert_ok();
    assert_eq!(remote_hits(&run), ACTIONS);
    check_outputs(&c);
}

// ---------------------------------------------------------------------------------------
// Go's compile cache through the remote.

/// What Go's compile cache served in a build, from its `--json` events.
fn go_cache_stats(events: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(events).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "build_finished", "{text}");
    last["go_cache"].clone()
}

#[test]
fn go_compile_cache_travels_through_the_remote() {
    let server = KilnServe::start();
    let main = |word: &str| format!("package main\n\nfunc main() {{ println(\"{word}\") }}\n");
    let a = crate::support::go_workspace()
        .file("cmd/app/main.go", &main("a"))
        .file(
            "BUILD.toml",
            "[go_binary.app]\nmain = \"./cmd/app\"\nplatforms = [\"linux/amd64\"]\n",
        )
        .build();
    // Each side starts with a Go compile cache of its own, empty: A compiles the
    // runtime and puts it; B, at another path, must get it from the remote.
    let build_go = |ws: &Workspace| {
        let events = ws.path("../events.json");
        let events_arg = events.to_str().unwrap().to_string();
        let mut cmd = build_cmd(ws, &server.url(), &["--json", &events_arg]);
        cmd.env("KILN_GO_CACHE", ws.path("../go-cache"));
        let (run, _) = timed(cmd);
        run.assert_ok();
        (run, go_cache_stats(&events))
    };
    let (_, stats) = build_go(&a);
    assert_eq!(stats["hits"], 0, "A's Go cache was empty: {stats}");
    assert!(stats["puts"].as_u64().unwrap() > 20, "{stats}");

    let b = a.copy();
    b.write("cmd/app/main.go", &main("b"));
    let (run, stats) = build_go(&b);
    assert!(
        run.ran().iter().any(|l| l.starts_with("GoBuild")),
        "{}",
        run.stderr
    );
    let remote = stats["remote_hits"].as_u64().unwrap();
    assert!(remote > 20, "the runtime came from the remote: {stats}");
    assert_eq!(stats["hits"].as_u64().unwrap(), remote, "{stats}");
    assert!(
        stats["puts"].as_u64().unwrap() < 10,
        "B compiled only its main package: {stats}"
    );
    let out = Command::new(b.path("kiln-out/app/linux_amd64/app"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "b\n");
}

/// A remote cache URL may carry a password (`https://user:password@host/`): it never
/// reaches a message, whether the server cannot be reached or the URL is malformed.
#[test]
fn a_password_in_the_remote_cache_url_is_never_shown() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.out]\nouts = [\"o.txt\"]\ncmd = \"echo > $OUT\"\n",
        )
        .build();
    // A port nothing listens on: every request fails and is warned about.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://ci:hunter2-secret@127.0.0.1:{port}/cache");
    let run = ws.kiln(&["build", "--remote-cache", &url]);
    run.assert_ok();
    assert!(
        run.stderr.contains("warning: remote cache"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter2-secret"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("http://127.0.0.1:{port}/cache")),
        "{}",
        run.stderr
    );
    // Malformed, from the environment and from kiln.toml.
    let bad = "http://ci:hunter2-secret@cache.example/ x";
    let run = Run::from(
        ws.cmd(&["build"])
            .env("KILN_REMOTE_CACHE", bad)
            .output()
            .unwrap(),
    );
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2-secret"), "{}", run.stderr);
    ws.write(
        "kiln.toml",
        &format!("[workspace]\nname = \"test\"\n\n[remote]\ncache = {bad:?}\n"),
    );
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2-secret"), "{}", run.stderr);
    let run = ws.kiln(&["build", "--remote-cache", bad]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2-secret"), "{}", run.stderr);
}
