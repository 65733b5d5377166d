//! `kiln serve` against an attacker: hundreds of connections that send their request
//! head a byte a second, requests whose body length is ambiguous, and a write token that
//! nobody could send. Each test runs a real `kiln serve` process on loopback.
//!
//! The slow connections outnumber the server's connection slots (512), so on a server
//! without defences they lock every other client out (503) for as long as they last;
//! the check is that a real client (kiln's own `HttpStore`) is served within
//! [`SERVED_WITHIN`] while they are open.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_cache::{Digest, HttpOptions, HttpStore, Store};
use kiln_testkit::SlowClients;

use crate::support::{KilnServe, KILN};

/// More slow connections than the server has slots.
const SLOW: usize = 600;

/// How soon a real client must be served while the slow connections are open.
const SERVED_WITHIN: Duration = Duration::from_secs(10);

/// Stores and reads back a blob through kiln's client, retrying until it works or
/// [`SERVED_WITHIN`] has passed; the time it took, or the last error.
fn serve_a_real_client(url: &str) -> Result<Duration, String> {
    let opts = HttpOptions {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..HttpOptions::default()
    };
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < SERVED_WITHIN {
        let store = HttpStore::new(url, opts.clone()).unwrap();
        let bytes = format!("served at {:?}", Instant::now()).into_bytes();
        match store.put_bytes(&bytes).and_then(|d| store.read(&d)) {
            Ok(Some(back)) if back == bytes => return Ok(start.elapsed()),
            Ok(other) => last = format!("read back {other:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(last)
}

/// Opens the slow connections and lets them trickle for a few seconds (long enough for
/// any of them to look like what it is), then has a real client served.
fn real_client_served_despite(server: &KilnServe, from: &[Ipv4Addr], per_address: usize) {
    let slow = SlowClients::open(server.addr(), from, per_address);
    std::thread::sleep(Duration::from_secs(3));
    let open = slow.open_count();
    assert!(open > 0, "the attack is under way");
    let served = serve_a_real_client(&server.url());
    eprintln!("{open} slow connections open; a real client was served: {served:?}");
    let took = served.unwrap_or_else(|e| {
        panic!("no real client served within {SERVED_WITHIN:?} while {open} slow connections were open: {e}")
    });
    assert!(took < SERVED_WITHIN);
    assert!(slow.open_count() > 0, "the attack lasted the whole test");
}

#[test]
fn slow_connections_from_one_address_lock_no_client_out() {
    let server = KilnServe::start();
    // The attacker shares the real client's address (127.0.0.1), as behind one NAT.
    real_client_served_despite(&server, &[Ipv4Addr::LOCALHOST], SLOW);
}

#[test]
fn slow_connections_from_many_addresses_lock_no_client_out() {
    let server = KilnServe::start();
    // 20 addresses, 30 connections each: no address holds many, together they hold all.
    let from: Vec<Ipv4Addr> = (10..30).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    real_client_served_despite(&server, &from, SLOW / from.len());
}

/// Sends one raw request and returns the status code of the answer.
fn status_of(server: &KilnServe, request: &str) -> u16 {
    let mut conn = TcpStream::connect(server.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).unwrap_or("");
    status
        .parse()
        .unwrap_or_else(|_| panic!("no status in {answer:?}"))
}

#[test]
fn ambiguous_body_lengths_are_refused() {
    let server = KilnServe::start();
    let body = "hello";
    let path = format!("/cas/{}", Digest::of_bytes(body.as_bytes()));
    let put = |headers: &str| -> u16 {
        let request = format!("PUT {path} HTTP/1.1\r\nHost: cache\r\n{headers}\r\n{body}");
        status_of(&server, &request)
    };
    let refused = [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: +5\r\n",
        "Content-Length : 5\r\n",
    ];
    for headers in refused {
        assert_eq!(put(headers), 400, "{headers:?}");
    }
    assert!(
        !server.root().join("cas").join(&path[5..]).exists(),
        "nothing was stored"
    );
    // A GET with two lengths is no better.
    let get = format!("GET {path} HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(status_of(&server, &get), 400);
    // The same upload, unambiguous, is stored.
    assert_eq!(put("Content-Length: 5\r\nConnection: close\r\n"), 201);
}

/// Runs `kiln serve --token-env VAR` and waits (up to 10 s) for it to exit.
fn serve_with_token_env(var: &str, value: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(KILN);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token-env",
        var,
        "--dir",
    ])
    .arg(dir.path().join("cache"))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    match value {
        Some(value) => cmd.env(var, value),
        None => cmd.env_remove(var),
    };
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kiln serve --token-env {var} (= {value:?}) started a server");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_write_token_nobody_can_send_is_refused_at_start() {
    let var = "KILN_E2E_SERVE_TOKEN_CHECK";
    for value in [Some(""), None, Some(" t0ken\n")] {
        let (code, stderr) = serve_with_token_env(var, value);
        assert_eq!(code, 2, "{value:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{value:?}: one line: {stderr}");
        assert!(
            stderr.contains(var),
            "{value:?}: names the variable: {stderr}"
        );
        assert!(
            !stderr.contains("t0ken"),
            "never prints the token: {stderr}"
        );
    }
}
