//! The example service's runtime half, against the real binary kiln builds: probes,
//! configuration from the environment, graceful shutdown on SIGTERM (not ready while
//! still serving, then draining in-flight requests within the timeout).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{copy_tree, kiln_cmd};

/// The example's server for linux/amd64, built once by kiln for these tests.
fn server() -> &'static Path {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = BUILT.get_or_init(|| {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-service");
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("hello-service");
        copy_tree(&example, &root);
        let out = kiln_cmd(&root, &tmp.path().join("cache"), &["build", "//:server"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = root.join("kiln-out/server/linux_amd64/server");
        (tmp, path)
    });
    path
}

/// The server started with `env`; returns it and the address from its "listening" log.
fn start(env: &[(&str, &str)]) -> (Child, String, BufReader<std::process::ChildStderr>) {
    let mut cmd = Command::new(server());
    cmd.env_clear().stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line
            .split(" addr=")
            .nth(1)
            .filter(|_| line.contains("msg=listening"))
        {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            return (child, addr, stderr);
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    panic!("the server never said where it listens ({status})");
}

/// One HTTP/1.1 request on a new connection: the status code.
fn status(addr: &str, path: &str) -> std::io::Result<u16> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response[9..12].parse().unwrap())
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a plain kill(2) of the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            started.elapsed() < within,
            "the server did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn probes_answer_and_configuration_comes_from_the_environment() {
    let (mut child, addr, _log) = start(&[("ADDR", "127.0.0.1:0")]);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_eq!(status(&addr, "/healthz").unwrap(), 200);
    assert_eq!(status(&addr, "/readyz").unwrap(), 200);
    assert_eq!(status(&addr, "/v1/items/nope").unwrap(), 404);
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);

    // A value that does not parse is an error, never silently the default.
    let out = Command::new(server())
        .env_clear()
        .env("SHUTDOWN_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("SHUTDOWN_TIMEOUT=\"soon\" is not a duration"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_makes_it_unready_then_drains_in_flight_requests() {
    let (mut child, addr, _log) = start(&[
        ("ADDR", "127.0.0.1:0"),
        ("SHUTDOWN_DELAY", "1s"),
        ("SHUTDOWN_TIMEOUT", "10s"),
    ]);
    // A request in flight: its body only half sent.
    let mut in_flight = TcpStream::connect(&addr).unwrap();
    in_flight
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        in_flight,
        "PUT /v1/items/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    // During the delay: alive, not ready, still serving.
    assert_eq!(status(&addr, "/readyz").unwrap(), 503);
    assert_eq!(status(&addr, "/healthz").unwrap(), 200);
    // After it: no new connections, but the request in flight finishes.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        status(&addr, "/healthz").is_err(),
        "new connections are refused"
    );
    assert!(child.try_wait().unwrap().is_none(), "still draining");
    in_flight.write_all(b"world").unwrap();
    let mut response = String::new();
    in_flight.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
}

#[test]
fn a_request_that_outlives_the_shutdown_timeout_does_not_hold_the_exit() {
    let (mut child, addr, _log) = start(&[("ADDR", "127.0.0.1:0"), ("SHUTDOWN_TIMEOUT", "1s")]);
    let mut stuck = TcpStream::connect(&addr).unwrap();
    write!(
        stuck,
        "PUT /v1/items/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhe"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    signal(&child, libc::SIGTERM);
    let code = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(code, 1, "a drain cut short is a failure");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}
