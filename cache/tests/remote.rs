//! The remote cache, end to end: `HttpStore` and `TieredStore` against kiln's own server
//! and against a real nginx with WebDAV PUT, both on loopback with free ports, plus small
//! std::net servers that misbehave (answer 500, never answer, send garbage).
//!
//! A "build" here is what the engine does with a store: look each action's key up, and
//! on a hit materialize and check its outputs, else "run" it (write its outputs) and store
//! the result. Machine A (cache dir A) populates the remote; machine B (cache dir B, empty)
//! must then get everything from it.

use kiln_testkit::{silent_server, Nginx};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_cache::server::{ServeOptions, Server, ServerHandle};
use kiln_cache::{
    ActionResult, Digest, ErrorKind, HttpOptions, HttpStore, LocalStore, OutputFile, ReadOnly,
    Store, TieredStore,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------
// A workload: actions with deterministic outputs.

struct Action {
    key: Digest,
    outputs: Vec<(String, Vec<u8>, bool)>,
    stdout: Vec<u8>,
}

fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// `n` actions; the first has a `big`-byte executable, all share one file.
fn actions(n: usize, big: usize) -> Vec<Action> {
    (0..n)
        .map(|i| {
            let size = if i == 0 { big } else { 1000 + i * 37 };
            Action {
                key: Digest::of_bytes(format!("action {i}").as_bytes()),
                outputs: vec![
                    (
                        format!("bin/app{i}"),
                        noise(&format!("app {i}"), size),
                        true,
                    ),
                    (
                        format!("lib{i}.txt"),
                        format!("library {i}\n").into_bytes(),
                        false,
                    ),
                    ("shared.txt".into(), b"shared by all\n".to_vec(), false),
                ],
                stdout: format!("ok {i}\n").into_bytes(),
            }
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
struct Tally {
    cached: usize,
    executed: usize,
}

fn build(store: &dyn Store, work: &Path, actions: &[Action]) -> Tally {
    let mut tally = Tally {
        cached: 0,
        executed: 0,
    };
    for action in actions {
        let dir = work.join(action.key.short());
        std::fs::create_dir_all(&dir).unwrap();
        match store.get_action(&action.key).unwrap() {
            Some(result) => {
                check_outputs(store, &result, action, &dir);
                tally.cached += 1;
            }
            None => {
                run(store, action, &dir);
                tally.executed += 1;
            }
        }
    }
    store.flush().unwrap();
    tally
}

fn run(store: &dyn Store, action: &Action, dir: &Path) {
    let mut outputs = Vec::new();
    for (i, (path, bytes, executable)) in action.outputs.iter().enumerate() {
        let file = dir.join(format!("out{i}"));
        std::fs::write(&file, bytes).unwrap();
        let mode = if *executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        outputs.push(OutputFile {
            path: path.clone(),
            digest: store.put_file(&file).unwrap(),
            size: bytes.len() as u64,
            executable: *executable,
        });
    }
    let result = ActionResult {
        outputs,
        exit_code: 0,
        stdout: store.put_bytes(&action.stdout).unwrap(),
        stderr: store.put_bytes(b"").unwrap(),
        duration_ms: 5,
    };
    store.put_action(&action.key, &result).unwrap();
}

fn check_outputs(store: &dyn Store, result: &ActionResult, action: &Action, dir: &Path) {
    for (path, bytes, executable) in &action.outputs {
        let output = result.output(path).expect("every output is in the result");
        let dest = dir.join(path.replace('/', "_"));
        assert!(
            store.fetch(&output.digest, &dest).unwrap(),
            "{path} is fetchable"
        );
        assert!(
            std::fs::read(&dest).unwrap() == *bytes,
            "{path} has its bytes"
        );
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o100 != 0,
            *executable,
            "{path} keeps its executable bit"
        );
    }
    assert_eq!(store.read(&result.stdout).unwrap().unwrap(), action.stdout);
}

// ---------------------------------------------------------------------------------------
// Machines and servers.

/// A cache directory and a work directory, as one machine.
struct Machine {
    _dir: TempDir,
    local: Arc<LocalStore>,
    work: PathBuf,
}

fn machine() -> Machine {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(LocalStore::open(&dir.path().join("cache")).unwrap());
    let work = dir.path().join("work");
    Machine {
        _dir: dir,
        local,
        work,
    }
}

fn fast() -> HttpOptions {
    HttpOptions {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        ..HttpOptions::default()
    }
}

fn http(url: &str, opts: HttpOptions) -> Arc<HttpStore> {
    Arc::new(HttpStore::new(url, opts).unwrap())
}

fn tiered(m: &Machine, url: &str, opts: HttpOptions) -> TieredStore {
    TieredStore::new(m.local.clone(), http(url, opts), url)
}

fn kiln_server(dir: &Path, tweak: impl FnOnce(&mut ServeOptions)) -> ServerHandle {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut opts = ServeOptions::new(listener.local_addr().unwrap(), dir.to_path_buf());
    tweak(&mut opts);
    Server::from_listener(listener, opts).unwrap().spawn()
}

/// A server that reads each request head and answers with `answer(head)`, forever.
fn scripted_server(answer: fn(&str) -> Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || answer_requests(conn, answer));
        }
    });
    addr
}

/// The next request head on a connection; None once the client is gone.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

fn answer_requests(conn: TcpStream, answer: fn(&str) -> Vec<u8>) {
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    while let Some(head) = read_head(&mut reader) {
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<u64>().unwrap())
            })
            .unwrap_or(0);
        std::io::copy(&mut reader.by_ref().take(len), &mut std::io::sink()).unwrap();
        if out.write_all(&answer(&head)).is_err() {
            return;
        }
    }
}

/// A server of fixed entries (path → body) that waits `delay` before each answer.
fn slow_server(entries: HashMap<String, Vec<u8>>, delay: Duration) -> SocketAddr {
    let entries = Arc::new(entries);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let entries = entries.clone();
            std::thread::spawn(move || answer_slowly(conn, &entries, delay));
        }
    });
    addr
}

fn answer_slowly(conn: TcpStream, entries: &HashMap<String, Vec<u8>>, delay: Duration) {
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    while let Some(head) = read_head(&mut reader) {
        let path = head.split(' ').nth(1).unwrap_or_default();
        std::thread::sleep(delay);
        let answer = match entries.get(path) {
            Some(body) => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                [head.as_bytes(), body].concat()
            }
            None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
        };
        if out.write_all(&answer).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Round trips: A populates the remote, B gets everything from it.

fn round_trip(url: &str) -> (Machine, Machine) {
    let work = actions(8, 8 << 20);
    let a = machine();
    let store_a = tiered(&a, url, HttpOptions::default());
    assert_eq!(
        build(&store_a, &a.work, &work),
        Tally {
            cached: 0,
            executed: 8
        }
    );
    assert_eq!(store_a.remote_hits(), 0);
    assert_eq!(store_a.warnings(), 0);

    let b = machine();
    let store_b = tiered(&b, url, HttpOptions::default());
    let start = Instant::now();
    assert_eq!(
        build(&store_b, &b.work, &work),
        Tally {
            cached: 8,
            executed: 0
        }
    );
    eprintln!(
        "B got 8 actions (8 MiB) from {url} in {:?}",
        start.elapsed()
    );
    assert_eq!(store_b.remote_hits(), 8);
    assert_eq!(store_b.warnings(), 0);

    // B's local store now holds them: a second build is all local.
    let again = tiered(&b, url, HttpOptions::default());
    assert_eq!(
        build(&again, &b.work, &work),
        Tally {
            cached: 8,
            executed: 0
        }
    );
    assert_eq!(again.remote_hits(), 0);
    (a, b)
}

#[test]
fn round_trip_through_kiln_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |_| {});
    round_trip(&server.url());
    let big = Digest::of_bytes(&noise("app 0", 8 << 20));
    assert!(dir.path().join("cas").join(big.to_hex()).exists());
    // 8 results, 8 apps, 8 libs, one shared file, 8 stdouts; the empty stderr is not sent.
    assert_eq!(server.stored_entries(), 8 + 8 + 8 + 1 + 8);
}

#[test]
fn round_trip_through_nginx_webdav() {
    let nginx = Nginx::start();
    round_trip(&nginx.url());
    let key = Digest::of_bytes(b"action 3");
    let stored = std::fs::read(nginx.root().join("ac").join(key.to_hex())).unwrap();
    let result: ActionResult = serde_json::from_slice(&stored).unwrap();
    assert_eq!(result.outputs.len(), 3);
}

/// An action with `n` outputs (every third executable) and a stdout; run in `m`, whose
/// store then holds it. Returns the action and the server entries of its result.
fn many_blob_action(n: usize, m: &Machine) -> (Action, HashMap<String, Vec<u8>>) {
    let outputs = (0..n)
        .map(|i| {
            let bytes = noise(&format!("blob {i}"), 20_000 + i);
            (format!("out/{i}"), bytes, i % 3 == 0)
        })
        .collect();
    let action = Action {
        key: Digest::of_bytes(b"many blobs"),
        outputs,
        stdout: b"many blobs\n".to_vec(),
    };
    std::fs::create_dir_all(&m.work).unwrap();
    run(m.local.as_ref(), &action, &m.work);
    let result = m.local.get_action(&action.key).unwrap().unwrap();
    let mut entries = HashMap::new();
    let ac = serde_json::to_vec(&result).unwrap();
    entries.insert(format!("/ac/{}", action.key), ac);
    for digest in result.blobs() {
        let bytes = m.local.read(&digest).unwrap().unwrap();
        entries.insert(format!("/cas/{digest}"), bytes);
    }
    (action, entries)
}

#[test]
fn a_result_with_many_blobs_is_fetched_whole_and_at_once() {
    const BLOBS: usize = 12;
    const DELAY: Duration = Duration::from_millis(200);
    let a = machine();
    let (action, entries) = many_blob_action(BLOBS, &a);
    let result = a.local.get_action(&action.key).unwrap().unwrap();

    // One blob missing: a miss, and no result is kept.
    let mut partial = entries.clone();
    partial.remove(&format!("/cas/{}", result.outputs[5].digest));
    let b = machine();
    let url = format!("http://{}", slow_server(partial, DELAY));
    let store = tiered(&b, &url, HttpOptions::default());
    assert!(store.lookup_action(&action.key).unwrap().is_none());
    store.flush().unwrap();
    assert!(b.local.get_action(&action.key).unwrap().is_none());
    assert_eq!(store.warnings(), 0, "a missing blob is a miss, not a fault");

    // All there: a hit with every blob and executable bit, its 13 downloads overlapping
    // (one after another they would take 13 × 200 ms after the result's own 200 ms).
    let c = machine();
    let url = format!("http://{}", slow_server(entries, DELAY));
    let store = tiered(&c, &url, HttpOptions::default());
    let start = Instant::now();
    let (got, remote) = store.lookup_action(&action.key).unwrap().unwrap();
    let took = start.elapsed();
    assert!(remote);
    assert_eq!(got, result);
    std::fs::create_dir_all(&c.work).unwrap();
    check_outputs(&store, &got, &action, &c.work);
    assert!(
        took < DELAY * (BLOBS as u32) / 2,
        "took {took:?}: the blobs were fetched one after another"
    );
    // The result and its blobs' rows are in the index once the build flushes.
    store.flush().unwrap();
    drop(store);
    let reopened = LocalStore::open(c.local.root()).unwrap();
    assert_eq!(reopened.get_action(&action.key).unwrap(), Some(result));
    assert_eq!(reopened.stats().unwrap().blobs, BLOBS as u64 + 2);
}

#[test]
fn blobs_the_remote_has_are_not_uploaded_again() {
    let nginx = Nginx::start();
    let work = actions(4, 4096);
    let a = machine();
    build(
        &tiered(&a, &nginx.url(), HttpOptions::default()),
        &a.work,
        &work,
    );
    let log = nginx.access_log();
    // nginx logs a request after answering it: give the log a moment to catch up with
    // the count expected, then read it.
    let puts = |what: &str, expected: usize| {
        let count = || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .filter(|l| l.contains(&format!("\"PUT /{what}/")))
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while count() < expected && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50));
        count()
    };
    assert_eq!(
        puts("cas", 4 + 4 + 1 + 4),
        4 + 4 + 1 + 4,
        "each distinct blob is sent once"
    );

    // C runs the same actions with its own empty cache and uploads them: every blob is
    // there already, so only the results are sent.
    let c = machine();
    let store = tiered(&c, &nginx.url(), HttpOptions::default());
    std::fs::create_dir_all(&c.work).unwrap();
    for action in &work {
        run(&store, action, &c.work);
    }
    store.flush().unwrap();
    assert_eq!(puts("ac", 8), 8);
    assert_eq!(puts("cas", 13), 13, "no blob was sent again");
}

// ---------------------------------------------------------------------------------------
// Faults: each build still succeeds, with correct outputs, in bounded time.

/// Flips a byte of a file on a server's disk; returns the damaged content's digest.
fn damage(path: &Path) -> Digest {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(path, &bytes).unwrap();
    Digest::of_bytes(&bytes)
}

/// How a server answers for a blob damaged on its disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Serves {
    /// The damaged bytes, whole (nginx): the client's check refuses them.
    Damaged,
    /// A body cut short, and the blob removed (`kiln serve` checks what it sends).
    CutShort,
}

/// A blob damaged on the server: B meets it, runs that action again (one warning) and
/// uploads a good copy over it, so C then gets every result from the remote. A client
/// on its own never takes the damaged bytes.
fn corrupted_blob(url: &str, root: &Path, serves: Serves) {
    let work = actions(4, 64 * 1024);
    let a = machine();
    build(&tiered(&a, url, HttpOptions::default()), &a.work, &work);
    let victim = Digest::of_bytes(&work[2].outputs[0].1);
    let path = root.join("cas").join(victim.to_hex());
    let bad = damage(&path);

    let b = machine();
    let store_b = tiered(&b, url, HttpOptions::default());
    assert_eq!(
        build(&store_b, &b.work, &work),
        Tally {
            cached: 3,
            executed: 1
        }
    );
    assert_eq!(store_b.remote_hits(), 3);
    assert_eq!(store_b.warnings(), 1);
    assert!(!store_b.remote_is_off());
    assert!(!b.local.contains(&bad).unwrap(), "bad bytes are not kept");
    assert_eq!(
        Digest::of_file(&path).unwrap(),
        victim,
        "B put a good copy back"
    );

    let c = machine();
    let store_c = tiered(&c, url, HttpOptions::default());
    assert_eq!(
        build(&store_c, &c.work, &work),
        Tally {
            cached: 4,
            executed: 0
        }
    );
    assert_eq!((store_c.remote_hits(), store_c.warnings()), (4, 0));

    // A client alone refuses the bad bytes too, leaving nothing behind.
    damage(&path);
    let client = HttpStore::new(url, HttpOptions::default()).unwrap();
    let dest = b.work.join("victim");
    let err = client.read(&victim).unwrap_err();
    match serves {
        Serves::Damaged => {
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
            let err = client.fetch(&victim, &dest).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        }
        Serves::CutShort => {
            assert_eq!(err.kind(), ErrorKind::Remote, "{err}");
            assert!(!path.exists(), "the server removed the damaged blob");
            assert!(!client.fetch(&victim, &dest).unwrap(), "now a plain miss");
        }
    }
    assert!(!dest.exists());
}

#[test]
fn corrupted_blob_on_kiln_server_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |_| {});
    corrupted_blob(&server.url(), dir.path(), Serves::CutShort);
}

#[test]
fn corrupted_blob_on_nginx_is_replaced() {
    let nginx = Nginx::start();
    corrupted_blob(&nginx.url(), &nginx.root(), Serves::Damaged);
}

#[test]
fn result_whose_blob_the_remote_evicted_is_a_quiet_miss() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |_| {});
    let work = actions(3, 4096);
    let a = machine();
    build(
        &tiered(&a, &server.url(), HttpOptions::default()),
        &a.work,
        &work,
    );
    let gone = Digest::of_bytes(&work[1].outputs[1].1);
    std::fs::remove_file(dir.path().join("cas").join(gone.to_hex())).unwrap();

    let b = machine();
    let store = tiered(&b, &server.url(), HttpOptions::default());
    assert_eq!(
        build(&store, &b.work, &work),
        Tally {
            cached: 2,
            executed: 1
        }
    );
    assert_eq!(store.warnings(), 0, "a missing blob is a miss, not a fault");
    assert!(
        b.local.get_action(&work[1].key).unwrap().is_some(),
        "B ran it and kept it"
    );
}

/// B builds half, the remote goes away, B builds the rest.
fn stopped_midway(url: &str, stop: &mut dyn FnMut()) {
    let work = actions(10, 4096);
    let a = machine();
    build(&tiered(&a, url, fast()), &a.work, &work);

    let b = machine();
    let store_b = tiered(&b, url, fast());
    assert_eq!(
        build(&store_b, &b.work, &work[..5]),
        Tally {
            cached: 5,
            executed: 0
        }
    );
    stop();
    let start = Instant::now();
    assert_eq!(
        build(&store_b, &b.work, &work[5..]),
        Tally {
            cached: 0,
            executed: 5
        }
    );
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a stopped remote cost {took:?}"
    );
    assert!(store_b.remote_is_off());
    assert_eq!(store_b.warnings(), 2, "one failure, then switched off");
    assert_eq!(store_b.remote_hits(), 5);
}

#[test]
fn kiln_server_stopped_midway() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |_| {});
    let url = server.url();
    let mut server = Some(server);
    stopped_midway(&url, &mut || server.take().unwrap().stop());
}

#[test]
fn nginx_stopped_midway() {
    let mut nginx = Nginx::start();
    let url = nginx.url();
    stopped_midway(&url, &mut || nginx.stop());
}

#[test]
fn server_answering_500_costs_little() {
    let addr = scripted_server(|_| {
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops".to_vec()
    });
    let work = actions(10, 4096);
    let b = machine();
    let store = tiered(&b, &format!("http://{addr}"), fast());
    let start = Instant::now();
    assert_eq!(
        build(&store, &b.work, &work),
        Tally {
            cached: 0,
            executed: 10
        }
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(store.remote_is_off());
    assert_eq!(store.warnings(), 2);
    // And again, from the local store alone: everything is correct and cached.
    assert_eq!(
        build(&store, &b.work, &work),
        Tally {
            cached: 10,
            executed: 0
        }
    );
}

#[test]
fn server_that_never_answers_costs_bounded_time() {
    let addr = silent_server();
    let work = actions(10, 4096);
    let b = machine();
    let store = tiered(&b, &format!("http://{addr}"), fast());
    let start = Instant::now();
    assert_eq!(
        build(&store, &b.work, &work),
        Tally {
            cached: 0,
            executed: 10
        }
    );
    let took = start.elapsed();
    // Three requests of one second each (an upload of the first result runs alongside
    // the lookups), then the remote is off and the rest costs nothing.
    assert!(
        took < Duration::from_secs(6),
        "a silent remote cost {took:?}"
    );
    assert!(took >= Duration::from_secs(2), "requests waited: {took:?}");
    assert!(store.remote_is_off());
    assert_eq!(store.warnings(), 2);
}

#[test]
fn garbage_and_truncated_bodies_are_errors_never_data() {
    let addr = scripted_server(|head| {
        if head.contains("/ac/") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nnot json!".to_vec()
        } else {
            // Declares 1000 bytes, sends 5, then the connection goes on to the next
            // request: the client must not take the 5 bytes (or what follows) as the blob.
            b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\nshort".to_vec()
        }
    });
    let store = HttpStore::new(&format!("http://{addr}"), fast()).unwrap();
    let err = store.get_action(&Digest::of_bytes(b"k")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let start = Instant::now();
    assert!(store.fetch(&Digest::of_bytes(b"blob"), &dest).is_err());
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(!dest.exists(), "nothing is left at the destination");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temporary file left"
    );
}

// ---------------------------------------------------------------------------------------
// The server's rules.

#[test]
fn upload_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |o| o.token = Some("s3cret".into()));
    let anonymous = HttpStore::new(&server.url(), HttpOptions::default()).unwrap();
    let err = anonymous.put_bytes(b"payload").unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let wrong = HttpOptions {
        token: Some("guess".into()),
        ..HttpOptions::default()
    };
    assert!(HttpStore::new(&server.url(), wrong)
        .unwrap()
        .put_bytes(b"payload")
        .is_err());
    assert_eq!(server.stored_entries(), 0);

    // A tiered store without the token builds correctly and uploads nothing.
    let work = actions(3, 4096);
    let a = machine();
    let store = tiered(&a, &server.url(), HttpOptions::default());
    assert_eq!(
        build(&store, &a.work, &work),
        Tally {
            cached: 0,
            executed: 3
        }
    );
    assert_eq!(server.stored_entries(), 0);

    // With the token it uploads, and reads need no token.
    let right = HttpOptions {
        token: Some("s3cret".into()),
        ..HttpOptions::default()
    };
    let d = HttpStore::new(&server.url(), right)
        .unwrap()
        .put_bytes(b"payload")
        .unwrap();
    assert_eq!(anonymous.read(&d).unwrap().unwrap(), b"payload");
}

#[test]
fn blob_not_matching_its_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |_| {});
    let claimed = Digest::of_bytes(b"what the URL says");
    let resp = ureq::put(format!("{}/cas/{claimed}", server.url()))
        .config()
        .http_status_as_error(false)
        .build()
        .send(&b"something else"[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(!dir.path().join("cas").join(claimed.to_hex()).exists());
    assert_eq!(server.stored_entries(), 0);
    // The right content under the same URL is accepted.
    let resp = ureq::put(format!("{}/cas/{claimed}", server.url()))
        .send(&b"what the URL says"[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
}

#[test]
fn body_larger_than_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |o| o.max_body = 1024);
    let store = HttpStore::new(&server.url(), HttpOptions::default()).unwrap();
    let err = store.put_bytes(&[7u8; 4096]).unwrap_err();
    assert!(err.to_string().contains("413"), "{err}");
    store.put_bytes(&[7u8; 1000]).unwrap();
    assert_eq!(server.stored_entries(), 1);
}

fn read_only(url: &str, stored: &dyn Fn() -> usize) {
    let work = actions(4, 4096);
    let a = machine();
    let remote: Arc<dyn Store> = Arc::new(ReadOnly::new(http(url, HttpOptions::default())));
    let store = TieredStore::new(a.local.clone(), remote.clone(), url);
    assert_eq!(
        build(&store, &a.work, &work),
        Tally {
            cached: 0,
            executed: 4
        }
    );
    assert_eq!(stored(), 0, "read-only uploads nothing");

    // It still reads what a trusted machine uploaded.
    let t = machine();
    build(&tiered(&t, url, HttpOptions::default()), &t.work, &work);
    let b = machine();
    let store = TieredStore::new(b.local.clone(), remote, url);
    assert_eq!(
        build(&store, &b.work, &work),
        Tally {
            cached: 4,
            executed: 0
        }
    );
    assert_eq!(store.remote_hits(), 4);
}

#[test]
fn read_only_uploads_nothing_to_kiln_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |_| {});
    read_only(&server.url(), &|| server.stored_entries());
}

#[test]
fn read_only_uploads_nothing_to_nginx() {
    let nginx = Nginx::start();
    let root = nginx.root();
    let count = move || walk_files(&root);
    read_only(&nginx.url(), &count);
}

fn walk_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn least_recently_used_entries_are_evicted_past_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |o| o.max_size = Some(3 << 20));
    let store = HttpStore::new(&server.url(), HttpOptions::default()).unwrap();
    let blobs: Vec<Vec<u8>> = (0..5)
        .map(|i| noise(&format!("blob {i}"), 1 << 20))
        .collect();
    let d0 = store.put_bytes(&blobs[0]).unwrap();
    let d1 = store.put_bytes(&blobs[1]).unwrap();
    let d2 = store.put_bytes(&blobs[2]).unwrap();
    assert_eq!(store.read(&d0).unwrap().unwrap(), blobs[0]); // d0 is now the newest
    let d3 = store.put_bytes(&blobs[3]).unwrap(); // evicts d1
    assert!(server.stored_bytes() <= 3 << 20);
    assert!(store.read(&d1).unwrap().is_none());
    let d4 = store.put_bytes(&blobs[4]).unwrap(); // evicts d2
    assert!(!store.contains(&d2).unwrap());
    for d in [d0, d3, d4] {
        assert!(store.contains(&d).unwrap());
    }
    assert!(!dir.path().join("cas").join(d1.to_hex()).exists());
}

#[test]
fn many_clients_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |_| {});
    let url = server.url();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let store = HttpStore::new(&url, HttpOptions::default()).unwrap();
                for i in 0..20 {
                    let bytes = noise(&format!("{t}/{i}"), 10_000 + i);
                    let d = store.put_bytes(&bytes).unwrap();
                    assert_eq!(store.read(&d).unwrap().unwrap(), bytes);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.stored_entries(), 16 * 20);
}

#[test]
fn large_blob_streams_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |_| {});
    let store = HttpStore::new(&server.url(), HttpOptions::default()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("big");
    let bytes = noise("big", 64 << 20);
    std::fs::write(&src, &bytes).unwrap();
    let start = Instant::now();
    let d = store.put_file(&src).unwrap();
    let up = start.elapsed();
    let dest = work.path().join("back");
    let start = Instant::now();
    assert!(store.fetch(&d, &dest).unwrap());
    let down = start.elapsed();
    eprintln!("64 MiB: upload {up:?}, download {down:?}");
    assert_eq!(Digest::of_file(&dest).unwrap(), d);
}

/// curl as a third-party client: `Expect: 100-continue` uploads, refusals it can read.
#[test]
fn curl_speaks_to_kiln_server() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |o| o.token = Some("s3cret".into()));
    let file = dir.path().join("upload");
    let bytes = noise("curl", 3 << 20);
    std::fs::write(&file, &bytes).unwrap();
    let url = format!("{}/cas/{}", server.url(), Digest::of_bytes(&bytes));
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let file = file.to_str().unwrap();
    assert_eq!(curl(&["-T", file, &url]), "401", "no token");
    assert_eq!(
        curl(&["-T", file, "-H", "Authorization: Bearer nope", &url]),
        "401"
    );
    let auth = "Authorization: Bearer s3cret";
    assert_eq!(curl(&["-T", file, "-H", auth, &url]), "201");
    assert_eq!(
        curl(&["-T", file, "-H", auth, &url]),
        "200",
        "already there"
    );
    assert_eq!(curl(&["-I", &url]), "200");
    assert_eq!(curl(&[&url.replace("/cas/", "/cas/0")]), "404");
    let chunked = [
        "-T",
        "-",
        "-H",
        auth,
        "-H",
        "Transfer-Encoding: chunked",
        &url,
    ];
    assert_eq!(curl(&chunked), "411");
}

// ---------------------------------------------------------------------------------------
// The server against slow and greedy clients (a real `kiln serve` process faces hundreds
// of slow connections in the kiln binary's e2e tests).

/// Sends `request` on `conn` and reads one answer's status code and body (the answer
/// must say its content-length).
fn exchange(conn: &mut TcpStream, request: &str) -> (u16, String) {
    conn.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let head = read_head(&mut reader).expect("an answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Whether the server closed the connection (within `within`).
fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    conn.set_read_timeout(Some(within)).unwrap();
    let mut sink = Vec::new();
    conn.read_to_end(&mut sink).is_ok()
}

#[test]
fn a_head_sent_a_byte_a_second_is_cut_off_at_the_head_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |o| o.head_timeout = Duration::from_secs(1));
    let addr: SocketAddr = server.addr();
    let start = Instant::now();
    let slow = kiln_testkit::SlowClients::open(addr, &[std::net::Ipv4Addr::LOCALHOST], 5);
    assert_eq!(slow.open_count(), 5);
    let deadline = Instant::now() + Duration::from_secs(15);
    while slow.open_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} slow heads still open after {:?}",
            slow.open_count(),
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.connections(), 0, "their slots are free");
}

#[test]
fn a_kept_alive_connection_may_idle_longer_than_the_head_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |o| o.head_timeout = Duration::from_secs(1));
    let mut conn = TcpStream::connect(server.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let get = format!(
        "GET /cas/{} HTTP/1.1\r\nHost: c\r\n\r\n",
        Digest::of_bytes(b"x")
    );
    assert_eq!(exchange(&mut conn, &get).0, 404);
    std::thread::sleep(Duration::from_millis(2500));
    // The second head's clock starts at its first byte, not at the end of the first.
    assert_eq!(exchange(&mut conn, &get).0, 404);
}

#[test]
fn one_client_cannot_take_every_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |o| o.max_per_client = 4);
    let greedy = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let digest = Digest::of_bytes(b"never sent");
    let put = format!("PUT /cas/{digest} HTTP/1.1\r\nHost: c\r\nContent-Length: 1000\r\n\r\n");
    // Four uploads that never send their bodies: busy, so nobody takes their slots.
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut conn = kiln_testkit::connect_from(greedy, server.addr()).unwrap();
            conn.write_all(put.as_bytes()).unwrap();
            conn
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fifth = kiln_testkit::connect_from(greedy, server.addr()).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let get = format!("GET /cas/{digest} HTTP/1.1\r\nHost: c\r\n\r\n");
    let _ = fifth.write_all(get.as_bytes());
    let mut answer = String::new();
    let _ = fifth.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    // Another client is served at once.
    let other = std::net::Ipv4Addr::new(127, 0, 0, 3);
    let mut conn = kiln_testkit::connect_from(other, server.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(exchange(&mut conn, &get).0, 404);
    for conn in &mut held {
        assert!(
            !closed_within(conn, Duration::from_millis(50)),
            "busy uploads are not cut"
        );
    }
}

#[test]
fn two_hundred_clients_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |_| {});
    let url = server.url();
    let barrier = Arc::new(std::sync::Barrier::new(200));
    let threads: Vec<_> = (0..200)
        .map(|t| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let store = HttpStore::new(&url, HttpOptions::default()).unwrap();
                let bytes = noise(&format!("client {t}"), 5000);
                barrier.wait();
                let d = store.put_bytes(&bytes).unwrap();
                assert_eq!(store.read(&d).unwrap().unwrap(), bytes);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.stored_entries(), 200);
}

#[test]
fn paths_outside_the_protocol_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), b"not for clients").unwrap();
    let server = kiln_server(dir.path().join("cache").as_path(), |_| {});
    let hex = Digest::of_bytes(b"x").to_hex();
    for (method, path, status) in [
        ("GET", "/cas/../../secret".to_string(), 404),
        ("GET", format!("/cas/../cas/{hex}/../../../secret"), 404),
        ("GET", "/cas/%2e%2e/%2e%2e/secret".to_string(), 404),
        ("PUT", format!("/ac/../../{hex}"), 400),
        ("PUT", format!("/cas/{}", hex.to_uppercase()), 400),
    ] {
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = format!("{method} {path} HTTP/1.1\r\nHost: c\r\nContent-Length: 1\r\n\r\nx");
        let (got, body) = exchange(&mut conn, &request);
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(!body.contains("not for clients"));
    }
    assert_eq!(server.stored_entries(), 0);
}

#[test]
fn an_upload_sent_a_byte_a_second_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = kiln_server(dir.path(), |o| o.head_timeout = Duration::from_secs(1));
    let body = noise("slow body", 1000);
    let put = format!(
        "PUT /cas/{} HTTP/1.1\r\nHost: c\r\nContent-Length: 1000\r\n\r\n",
        Digest::of_bytes(&body)
    );
    let mut conn = TcpStream::connect(server.addr()).unwrap();
    conn.write_all(put.as_bytes()).unwrap();
    let start = Instant::now();
    let mut sent = 0;
    // 1000 bytes get 1 s plus 1000 bytes at 64 KiB/s: cut off well before 10 s.
    while sent < body.len() && conn.write_all(&body[sent..sent + 1]).is_ok() {
        sent += 1;
        if start.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        closed_within(&mut conn, Duration::from_secs(10)),
        "still open after {:?} and {sent} bytes",
        start.elapsed()
    );
    assert!(
        sent < 30,
        "cut off after {sent} bytes, {:?}",
        start.elapsed()
    );
    assert_eq!(server.stored_entries(), 0);
}
