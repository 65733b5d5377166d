//! `kiln serve`: the built-in remote cache server.
//!
//! It serves the protocol [`crate::HttpStore`] speaks (`HEAD/GET/PUT /cas/<hex>` and
//! `/ac/<hex>`, under any path prefix), so the same client works against it and against
//! nginx WebDAV. One thread accepts connections; each connection gets a thread of its own,
//! which serves requests on it until the client closes it or stays silent for
//! [`IDLE_TIMEOUT`].
//!
//! Against slow and greedy clients (see [`slots`]): a connection holds one of at most
//! [`MAX_CONNECTIONS`] slots, and one client (address) at most `max_per_client` of them;
//! each request head must arrive whole within `head_timeout` ([`HEAD_TIMEOUT`]) of the
//! connection being accepted or of the head's first byte, however the client spaces its
//! bytes, or the connection is closed; an upload's body must arrive at [`MIN_BODY_RATE`]
//! on average, after a grace of `head_timeout`; and when the slots run out, a connection
//! idle between requests (or lingering after its last answer) or slow with its head gives
//! its slot up to a newcomer. A connection that finds every slot it could have busy is
//! answered 503 and closed. (A client reading an answer slowly is bounded only by
//! [`IDLE_TIMEOUT`] for each write that makes no progress.)
//!
//! | request              | answer                                                     |
//! |----------------------|------------------------------------------------------------|
//! | GET/HEAD, present    | 200 and the bytes (streamed from the file)                 |
//! | GET, damaged blob    | 200 and a body cut short; the blob is removed             |
//! | GET/HEAD, absent     | 404                                                        |
//! | PUT, stored          | 201 (200 if the blob was already there: it is replaced)    |
//! | PUT, wrong content   | 400: a /cas body whose BLAKE3 digest is not the URL's      |
//! | PUT, no/bad token    | 401 when a token is set (reads stay open)                  |
//! | PUT, too large       | 413 past `max_body` (or past `max_size`), connection closed|
//! | PUT, chunked         | 411: a cache client knows its sizes                        |
//! | ambiguous length     | 400: two Content-Length headers (even equal ones), a list, |
//! |                      | a sign, or Content-Length with Transfer-Encoding; closed   |
//!
//! Decisions where the issue is silent: action results are stored as the client sent
//! them (the server knows bytes, not results); the first request of a limit-breaking
//! upload is answered before its body is read and the connection is then closed, so a
//! huge body costs nothing; every request is logged as one stderr line
//! `kiln serve: <peer> <METHOD> <path> <status> <bytes>B <ms>ms`, bytes being the body
//! received or sent, and a damaged blob found while serving it adds a line
//! `kiln serve: removed damaged blob <path>: its content hashes to <digest>`. A blob is
//! hashed each time it is served, as its uploads are: a server's disk is not trusted
//! more than the network. Storage and eviction are in [`disk`].

mod conn;
mod disk;
mod http;
mod slots;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use conn::Conn;
use disk::{Disk, Entry, Kind, Stored};
use http::{Body, Damaged, ReadError, Request, Response};
use slots::{Phase, Slots};

/// Connections served at once; more are answered 503.
pub const MAX_CONNECTIONS: usize = 512;

/// The default of how many of them one client (address) may hold: half, so that one
/// client cannot take them all, yet a busy build machine (or a few behind one NAT
/// address) has plenty.
pub const DEFAULT_MAX_PER_CLIENT: usize = MAX_CONNECTIONS / 2;

/// How long a connection may stay silent (between requests or inside a body).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The default of how long a request head (request line and headers) may take to arrive.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The slowest an upload's body may arrive, on average, after a grace of the head timeout
/// (kiln's own client gives up below 1 MiB/s).
pub const MIN_BODY_RATE: u64 = 64 * 1024;

/// How long a body of `len` bytes may take beyond the grace.
fn body_time(len: u64) -> Duration {
    Duration::from_secs(len / MIN_BODY_RATE)
}

/// The default limit of one upload's size.
pub const DEFAULT_MAX_BODY: u64 = 4 << 30;

/// What `kiln serve` was asked for.
#[derive(Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub dir: PathBuf,
    /// Evict least recently used entries past this many bytes.
    pub max_size: Option<u64>,
    /// Required (as `Authorization: Bearer …`) for writes when set.
    pub token: Option<String>,
    /// The largest upload accepted.
    pub max_body: u64,
    /// How long a request head may take, from the connection's accept or the head's
    /// first byte.
    pub head_timeout: Duration,
    /// How many connections one client (an IPv4 address, an IPv6 /64) may hold.
    pub max_per_client: usize,
}

impl ServeOptions {
    /// Listening on `listen`, storing under `dir`, no size limit, no token.
    pub fn new(listen: SocketAddr, dir: PathBuf) -> ServeOptions {
        ServeOptions {
            listen,
            dir,
            max_size: None,
            token: None,
            max_body: DEFAULT_MAX_BODY,
            head_timeout: HEAD_TIMEOUT,
            max_per_client: DEFAULT_MAX_PER_CLIENT,
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("listen", &self.listen)
            .field("dir", &self.dir)
            .field("max_size", &self.max_size)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body", &self.max_body)
            .field("head_timeout", &self.head_timeout)
            .field("max_per_client", &self.max_per_client)
            .finish()
    }
}

/// Serves until the process ends. Prints where it listens first.
pub fn serve(opts: ServeOptions) -> Result<()> {
    let server = Server::bind(opts)?;
    eprintln!(
        "kiln serve: listening on http://{} (cache in {})",
        server.local_addr(),
        server.state.dir.display()
    );
    server.run();
    Ok(())
}

/// A bound server, not yet accepting.
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
}

struct State {
    dir: PathBuf,
    disk: Disk,
    token: Option<String>,
    max_body: u64,
    max_size: Option<u64>,
    head_timeout: Duration,
    stopping: AtomicBool,
    /// Open connections, so a newcomer can take an idle one's place and stopping can
    /// close them as a dying process would.
    slots: Slots,
}

impl Server {
    /// Binds `opts.listen` and opens `opts.dir`.
    pub fn bind(opts: ServeOptions) -> Result<Server> {
        let listener = TcpListener::bind(opts.listen)
            .map_err(|e| Error::new(ErrorKind::Io, format!("listen on {}: {e}", opts.listen)))?;
        Server::from_listener(listener, opts)
    }

    /// Serves on an already bound listener (`opts.listen` is ignored).
    pub fn from_listener(listener: TcpListener, opts: ServeOptions) -> Result<Server> {
        if opts.token.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(Error::new(
                ErrorKind::Usage,
                "serve with an empty token: nobody could write",
            ));
        }
        let disk = Disk::open(&opts.dir, opts.max_size)?;
        let state = State {
            dir: opts.dir,
            disk,
            token: opts.token,
            max_body: opts.max_body,
            max_size: opts.max_size,
            head_timeout: opts.head_timeout,
            stopping: AtomicBool::new(false),
            slots: Slots::new(MAX_CONNECTIONS, opts.max_per_client.max(1)),
        };
        Ok(Server {
            listener,
            state: Arc::new(state),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Accepts connections until stopped (through a [`ServerHandle`]).
    pub fn run(self) {
        for conn in self.listener.incoming() {
            if self.state.stopping.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            self.state.accept(conn);
        }
    }

    /// Runs in a background thread; stopped when the handle is stopped or dropped.
    pub fn spawn(self) -> ServerHandle {
        let addr = self.local_addr();
        let state = self.state.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-serve".into())
            .spawn(move || self.run())
            .expect("spawn the server thread");
        ServerHandle {
            addr,
            state,
            thread: Some(thread),
        }
    }
}

/// A server running in the background.
pub struct ServerHandle {
    addr: SocketAddr,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the base URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes held in the cache directory.
    pub fn stored_bytes(&self) -> u64 {
        self.state.disk.total()
    }

    /// Files held in the cache directory.
    pub fn stored_entries(&self) -> usize {
        self.state.disk.entries()
    }

    /// Connections holding a slot.
    pub fn connections(&self) -> usize {
        self.state.slots.held()
    }

    /// Stops accepting and closes every open connection.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.state.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accepting thread
        let _ = thread.join();
        self.state.slots.close_all();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// How one request went, for the log line.
struct Outcome {
    status: u16,
    bytes: u64,
    keep_alive: bool,
}

impl State {
    /// Gives a new connection a slot and a thread, or answers 503 and closes it.
    fn accept(self: &Arc<Self>, conn: TcpStream) {
        let (Ok(peer), Ok(handle)) = (conn.peer_addr(), conn.try_clone()) else {
            return;
        };
        let accepted = Instant::now();
        let Some(id) = self.slots.admit(handle, peer.ip(), accepted) else {
            refuse(conn);
            return;
        };
        let state = self.clone();
        let spawned = std::thread::Builder::new()
            .name("kiln-serve-conn".into())
            .spawn(move || {
                state.serve_requests(conn, peer, accepted, id);
                state.slots.release(id);
            });
        if let Err(e) = spawned {
            self.slots.release(id);
            eprintln!("kiln serve: failed to start a connection thread: {e}");
        }
    }

    fn serve_requests(&self, conn: TcpStream, peer: SocketAddr, accepted: Instant, id: u64) {
        let _ = conn.set_write_timeout(Some(IDLE_TIMEOUT));
        let _ = conn.set_nodelay(true);
        let Ok(mut out) = conn.try_clone() else {
            return;
        };
        let peer = peer.to_string();
        let mut reader = BufReader::with_capacity(64 * 1024, Conn::new(conn, IDLE_TIMEOUT));
        let mut first = Some(accepted);
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let req = match self.read_head(&mut reader, id, first.take()) {
                Ok(req) => req,
                Err(ReadError::Closed) => return,
                Err(ReadError::Bad) => {
                    let _ = http::write_response(&mut out, text(400, "bad request", false), false);
                    self.linger_close(id, &mut out, &mut reader);
                    return;
                }
            };
            let start = Instant::now();
            let outcome = self.handle(&req, &mut reader, &mut out);
            log(&peer, &req, &outcome, start.elapsed());
            if !outcome.keep_alive {
                self.linger_close(id, &mut out, &mut reader);
                return;
            }
        }
    }

    /// Reads the next request head, which must arrive whole within the head timeout: of
    /// `accepted` for a connection's first request, else of the head's first byte (before
    /// which the connection is idle, for up to [`IDLE_TIMEOUT`]).
    fn read_head(
        &self,
        reader: &mut BufReader<Conn>,
        id: u64,
        accepted: Option<Instant>,
    ) -> Result<Request, ReadError> {
        let started = match accepted {
            Some(at) => at,
            None => {
                self.slots.set_phase(id, Phase::Idle(Instant::now()));
                if reader.fill_buf().map_or(true, |b| b.is_empty()) {
                    return Err(ReadError::Closed);
                }
                let now = Instant::now();
                self.slots.set_phase(id, Phase::Head(now));
                now
            }
        };
        reader
            .get_mut()
            .set_deadline(Some(started + self.head_timeout));
        let req = http::read_request(reader);
        reader.get_mut().set_deadline(None);
        self.slots.set_phase(id, Phase::Busy);
        req
    }

    /// Closes a connection after its last answer (see [`linger_close`]); meanwhile it
    /// may give its slot up to a newcomer, as an idle one would.
    fn linger_close(&self, id: u64, out: &mut TcpStream, reader: &mut BufReader<Conn>) {
        self.slots.set_phase(id, Phase::Idle(Instant::now()));
        linger_close(out, reader);
    }

    fn handle(&self, req: &Request, body: &mut BufReader<Conn>, out: &mut TcpStream) -> Outcome {
        let keep_alive = req.keep_alive();
        let Some((kind, digest)) = parse_path(&req.path) else {
            let status = if req.method == "PUT" { 400 } else { 404 };
            return respond(
                out,
                req,
                text(status, "unknown path", keep_alive && req.method != "PUT"),
            );
        };
        match req.method.as_str() {
            "GET" | "HEAD" => self.handle_get(req, kind, &digest, out),
            "PUT" => self.handle_put(req, kind, &digest, body, out),
            _ => respond(out, req, text(405, "use GET, HEAD or PUT", false)),
        }
    }

    fn handle_get(
        &self,
        req: &Request,
        kind: Kind,
        digest: &Digest,
        out: &mut TcpStream,
    ) -> Outcome {
        let keep_alive = req.keep_alive();
        match self.disk.open_entry(kind, digest) {
            Some(entry) if kind == Kind::Cas && req.method == "GET" => {
                self.send_blob(req, digest, entry, out)
            }
            Some(Entry { file, len, .. }) => respond(
                out,
                req,
                Response {
                    status: 200,
                    body: Body::File(file, len),
                    keep_alive,
                },
            ),
            None => respond(out, req, text(404, "not found", keep_alive)),
        }
    }

    /// Sends a blob, verifying it as it goes; removes it if it turns out damaged.
    fn send_blob(
        &self,
        req: &Request,
        digest: &Digest,
        mut entry: Entry,
        out: &mut TcpStream,
    ) -> Outcome {
        let len = entry.len;
        let resp = Response {
            status: 200,
            body: Body::Blob(&mut entry.file, len, *digest),
            keep_alive: req.keep_alive(),
        };
        let written = http::write_response(out, resp, false);
        if let Some(damaged) = written.as_ref().err().and_then(damaged) {
            self.disk.remove_damaged(digest, &entry);
            eprintln!("kiln serve: removed damaged blob {}: {damaged}", req.path);
        }
        Outcome {
            status: 200,
            bytes: len,
            keep_alive: req.keep_alive() && written.is_ok(),
        }
    }

    fn handle_put(
        &self,
        req: &Request,
        kind: Kind,
        digest: &Digest,
        body: &mut BufReader<Conn>,
        out: &mut TcpStream,
    ) -> Outcome {
        if let Some(refusal) = self.refuse_put(req) {
            return respond(out, req, refusal);
        }
        let len = req.content_length().ok().flatten().unwrap_or(0);
        if req.expects_continue() && http::write_continue(out).is_err() {
            return Outcome {
                status: 400,
                bytes: 0,
                keep_alive: false,
            };
        }
        let deadline = Instant::now() + self.head_timeout + body_time(len);
        body.get_mut().set_deadline(Some(deadline));
        let stored = self.disk.put(kind, digest, body, len);
        body.get_mut().set_deadline(None);
        let (status, message) = match stored {
            Ok(Stored::Created) => (201, "stored".to_string()),
            Ok(Stored::Present) => (200, "already stored".to_string()),
            Ok(Stored::Mismatch(got)) => (400, format!("content has digest {got}, not {digest}")),
            Ok(Stored::Truncated) => (400, "body ended early".to_string()),
            Err(e) => {
                eprintln!("kiln serve: failed to {e}");
                (500, "cannot store".to_string())
            }
        };
        let keep_alive = req.keep_alive() && status < 400;
        let mut outcome = respond(out, req, text(status, &message, keep_alive));
        outcome.bytes = len;
        outcome
    }

    /// The answer to a PUT that must not be read, if it is one.
    fn refuse_put(&self, req: &Request) -> Option<Response<'static>> {
        if !self.authorized(req) {
            return Some(text(
                401,
                "a valid bearer token is required to write",
                false,
            ));
        }
        let len = match req.content_length() {
            Ok(Some(len)) => len,
            _ => return Some(text(411, "send a content-length", false)),
        };
        let limit = self
            .max_size
            .map_or(self.max_body, |size| size.min(self.max_body));
        if len > limit {
            return Some(text(413, "body too large", false));
        }
        None
    }

    fn authorized(&self, req: &Request) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "));
        given.is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
    }
}

/// The [`Damaged`] inside an error of [`http::write_response`], if that is what it was.
fn damaged(err: &std::io::Error) -> Option<&Damaged> {
    err.get_ref()?.downcast_ref::<Damaged>()
}

fn text(status: u16, message: &str, keep_alive: bool) -> Response<'_> {
    Response {
        status,
        body: Body::Text(message),
        keep_alive,
    }
}

fn respond(out: &mut TcpStream, req: &Request, resp: Response<'_>) -> Outcome {
    let head_only = req.method == "HEAD";
    let status = resp.status;
    let bytes = if head_only { 0 } else { resp.body.len() };
    let keep_alive = resp.keep_alive;
    let written = http::write_response(out, resp, head_only).is_ok();
    Outcome {
        status,
        bytes,
        keep_alive: keep_alive && written,
    }
}

/// `…/cas/<hex>` or `…/ac/<hex>`: the last two segments, after any prefix.
fn parse_path(path: &str) -> Option<(Kind, Digest)> {
    let mut segments = path.rsplit('/');
    let hex = segments.next()?;
    let kind = Kind::parse(segments.next()?)?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Some((kind, hex.parse().ok()?))
}

/// Closes after a response the client may still be sending a body for: stops writing,
/// then reads (and drops) what arrives for a moment, so the client's kernel does not
/// receive a reset that would discard the response before the client reads it.
fn linger_close(out: &mut TcpStream, reader: &mut BufReader<Conn>) {
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Write);
    reader.get_mut().set_idle(Duration::from_millis(500));
    let mut sink = [0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Answers a connection that got no slot with 503 and closes it, from the accepting
/// thread: without waiting for the client (the answer fits in the socket's buffer, and
/// is lost if the client sent what it will not read).
fn refuse(conn: TcpStream) {
    let _ = conn.set_nonblocking(true);
    let body = "too many connections";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\nconnection: close\r\n\
         content-type: text/plain; charset=utf-8\r\n\r\n{body}",
        body.len()
    );
    let _ = (&conn).write_all(answer.as_bytes());
    let _ = conn.shutdown(Shutdown::Write);
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn log(peer: &str, req: &Request, outcome: &Outcome, took: Duration) {
    eprintln!(
        "kiln serve: {peer} {} {} {} {}B {}ms",
        req.method,
        req.path,
        outcome.status,
        outcome.bytes,
        took.as_millis()
    );
}

/// Parses a size such as `50G`, `512M`, `64K` or `1000` (bytes; powers of 1024).
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::new(
            ErrorKind::Corrupt,
            format!("parse size `{text}` (use e.g. 50G, 512M)"),
        )
    };
    let t = text.trim().trim_end_matches(['B', 'b']);
    let (digits, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("50G").unwrap(), 50 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("2KB").unwrap(), 2048);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn parses_paths() {
        let hex = Digest::of_bytes(b"x").to_hex();
        assert_eq!(parse_path(&format!("/cas/{hex}")).unwrap().0, Kind::Cas);
        assert_eq!(parse_path(&format!("/team/ac/{hex}")).unwrap().0, Kind::Ac);
        assert!(parse_path(&format!("/other/{hex}")).is_none());
        assert!(parse_path("/cas/abc").is_none());
        assert!(parse_path(&format!("/cas/{}", hex.to_uppercase())).is_none());
    }
}
