//! Go's compile cache on top of kiln's store: the server side of Go's `GOCACHEPROG`
//! protocol, run by `kiln gocacheprog`.
//!
//! Every sandboxed `go build`/`go test` action starts with an empty `GOCACHE`. With
//! `GOCACHEPROG` pointing at `kiln gocacheprog`, the go command asks kiln for each compiled
//! package instead, so the standard library is compiled once per store — and once per
//! remote cache when the [`Store`] is tiered — rather than once per action.
//!
//! # Protocol (Go 1.24+, `cmd/go/internal/cacheprog`)
//!
//! JSON values, one per line, on stdin (requests) and stdout (responses):
//!
//! ```text
//! kiln → go   {"ID":0,"KnownCommands":["get","put","close"]}        handshake, first
//! go → kiln   {"ID":1,"Command":"get","ActionID":"<b64>"}
//! kiln → go   {"ID":1,"Miss":true}   or   {"ID":1,"OutputID":"<b64>","Size":n,
//!                                          "Time":"<RFC 3339>","DiskPath":"/abs/blob"}
//! go → kiln   {"ID":2,"Command":"put","ActionID":"<b64>","OutputID":"<b64>","BodySize":n}
//!             "<base64 of the body>"      (on a later line, only when BodySize > 0)
//! kiln → go   {"ID":2,"DiskPath":"/abs/blob"}
//! go → kiln   {"ID":3,"Command":"close"}  → kiln answers {"ID":3} and returns
//! ```
//!
//! `[]byte` fields are standard base64 with padding, as Go's `encoding/json` writes them.
//! Go before 1.24 spelled `OutputID` as `ObjectID`; both are accepted.
//!
//! # Storage
//!
//! | Go's concept            | kiln's store                                                  |
//! |-------------------------|---------------------------------------------------------------|
//! | action ID (cache key)   | action key `BLAKE3("gocache\0" ++ action ID bytes)`           |
//! | body (compiled package) | a blob in the CAS, named by its BLAKE3 digest                 |
//! | output ID, size, time   | the result's single [`OutputFile`]: `size` is the body size,  |
//! |                         | `path` is `"<output ID hex>@<unix nanoseconds of the put>"`    |
//!
//! The time lives in the output path because it is per entry and must travel with the
//! result through a remote cache; `duration_ms` keeps its meaning (zero here). Go uses the
//! time only to expire test results after `go clean -testcache`. The result's stdout and
//! stderr are the empty blob.
//!
//! A `DiskPath` is always [`LocalStore::blob_path`]: after a put the blob is made local
//! (the store normally writes through the local store; if not, it is added directly), and
//! a get whose blob is only in `store` (a remote) fetches it into the local store first,
//! verifying its digest. A hit whose blob cannot be made local is answered as a miss.
//! Blob files are read-only and have no extension, as the protocol asks. They stay valid
//! until "close" unless `kiln cache gc` removes them meanwhile.
//!
//! # Decisions
//!
//! * Requests are answered one at a time, in order. Go allows answers out of order, but a
//!   get or put is a lookup or a file write, so a single thread keeps up.
//! * Bodies up to [`MEMORY_BODY_LIMIT`] are decoded in memory and stored with
//!   [`Store::put_bytes`]; larger ones are decoded while reading into a temporary file in
//!   the store's `tmp/` and stored with [`Store::put_file`].
//! * A failure of one request (a bad field, a store error, a short body) is answered with
//!   `Err` and the server goes on. Only a broken stream ends [`serve`] with an error: a
//!   read or write failure, a line that is not a request and carries no `ID` to answer,
//!   or one that overruns its bound: a request line longer than [`MAX_REQUEST_LINE`], a
//!   body longer than the base64 of its `BodySize` (or more blank space before it than
//!   a request line may hold). Those are read no further, so a session holds at most
//!   that much memory, whatever a process that has a token sends.
//! * The output ID is not checked against the body (Go computes it as SHA-256); the body
//!   size is.
//! * [`ServeStats::puts`] counts puts that were stored, [`ServeStats::hits`] gets answered
//!   with a `DiskPath`.
//!
//! # Views: reading the cache without adding to it
//!
//! The go commands a test runs (`go build` of its own module, `go vet`) and a
//! repository's vet tool run the repository's code, so they must not put entries that
//! other actions would trust, nor see the store's blob files (every output of every
//! workspace the user builds). Without a cache they compile the standard library and
//! every dependency again, each time: tens of seconds a test. A [`View`] serves them:
//!
//! * a get is looked up in the store as usual, and a hit's blob is **copied** into the
//!   view's own directory, which the action sees read-only; its `DiskPath` is that copy;
//! * a put is written into the view's directory and remembered by the view alone, so a
//!   later get of the same action (from another go command of the same test) finds it;
//!   nothing reaches the store, and the put is not counted in [`ServeStats::puts`].
//!
//! What such an action can learn is what a get can name: the entry of a Go action ID,
//! which is a hash of everything that went into it (sources, flags, toolchain), so it
//! finds only compile results of code it already has. Sessions of a view start with the
//! view's own token ([`socket::Listener::open_view`]), not the listener's.

mod socket;

pub use socket::{relay, Listener, ViewHandle, SOCKET_ENV, TOKEN_ENV};

use std::collections::HashMap;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::local::LocalStore;
use crate::result::{ActionResult, OutputFile};
use crate::store::Store;

/// Bodies larger than this are decoded into a temporary file instead of memory.
pub const MEMORY_BODY_LIMIT: u64 = 1 << 20;

/// The longest request line read, newline excluded (go's are a few hundred bytes); also
/// how much blank space may come before a body. More ends the session.
pub const MAX_REQUEST_LINE: u64 = 64 << 10;

/// The commands announced in the handshake.
const KNOWN_COMMANDS: [&str; 3] = ["get", "put", "close"];

/// What one [`serve`] session did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// "get" requests received.
    pub gets: u64,
    /// "get" requests answered with a cached body.
    pub hits: u64,
    /// Of the hits, those whose entry came from a remote cache.
    pub remote_hits: u64,
    /// "put" requests stored.
    pub puts: u64,
}

impl ServeStats {
    pub fn add(&mut self, other: &ServeStats) {
        self.gets += other.gets;
        self.hits += other.hits;
        self.remote_hits += other.remote_hits;
        self.puts += other.puts;
    }
}

/// Serves GOCACHEPROG requests from `input` until "close" or EOF, answering on `output`.
///
/// Results and blobs go to `store` (which may be tiered over a remote); `local` is the
/// local store whose blob files are handed to Go as `DiskPath`s. Flushes `store` before
/// returning.
pub fn serve(
    store: &dyn Store,
    local: &LocalStore,
    input: impl BufRead,
    output: impl Write,
) -> Result<ServeStats> {
    let stats = serve_session(store, local, None, input, output)?;
    store.flush()?;
    Ok(stats)
}

/// [`serve`] without the flush at the end (the caller flushes the store once, later),
/// through `view` when the session is one of a view's.
fn serve_session(
    store: &dyn Store,
    local: &LocalStore,
    view: Option<&View>,
    mut input: impl BufRead,
    output: impl Write,
) -> Result<ServeStats> {
    let mut out = BufWriter::new(output);
    send(&mut out, &Response::handshake())?;
    let mut server = Server {
        store,
        local,
        view,
        stats: ServeStats::default(),
        empty_blob: None,
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        if read_line(&mut input, &mut line)? == 0 {
            break;
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        let req = parse_request(&line)?;
        let response = server.answer(&req, &mut input)?;
        send(&mut out, &response)?;
        if req.command == "close" {
            break;
        }
    }
    Ok(server.stats)
}

/// One request as the go command writes it. Byte fields stay base64 until used, so a
/// bad one is answered with `Err` rather than ending the session.
#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "ID")]
    id: i64,
    #[serde(rename = "Command", default)]
    command: String,
    #[serde(rename = "ActionID", default)]
    action_id: Option<String>,
    #[serde(rename = "OutputID", default)]
    output_id: Option<String>,
    #[serde(rename = "ObjectID", default)]
    object_id: Option<String>,
    #[serde(rename = "BodySize", default)]
    body_size: i64,
}

/// One response; empty fields are left out, as Go's `omitempty` does.
#[derive(Debug, Default, Serialize)]
struct Response {
    #[serde(rename = "ID")]
    id: i64,
    #[serde(rename = "Err", skip_serializing_if = "String::is_empty")]
    err: String,
    #[serde(rename = "KnownCommands", skip_serializing_if = "Vec::is_empty")]
    known_commands: Vec<&'static str>,
    #[serde(rename = "Miss", skip_serializing_if = "std::ops::Not::not")]
    miss: bool,
    #[serde(rename = "OutputID", skip_serializing_if = "Option::is_none")]
    output_id: Option<String>,
    #[serde(rename = "Size", skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(rename = "Time", skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(rename = "DiskPath", skip_serializing_if = "Option::is_none")]
    disk_path: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Response {
    fn handshake() -> Response {
        Response {
            known_commands: KNOWN_COMMANDS.to_vec(),
            ..Response::default()
        }
    }

    fn ok(id: i64) -> Response {
        Response {
            id,
            ..Response::default()
        }
    }

    fn miss(id: i64) -> Response {
        Response {
            id,
            miss: true,
            ..Response::default()
        }
    }

    fn failed(id: i64, err: String) -> Response {
        Response {
            id,
            err,
            ..Response::default()
        }
    }
}

fn send(out: &mut impl Write, response: &Response) -> Result<()> {
    let mut line = serde_json::to_vec(response).expect("responses serialize");
    line.push(b'\n');
    out.write_all(&line)
        .and_then(|()| out.flush())
        .map_err(|e| Error::new(ErrorKind::Io, format!("write a GOCACHEPROG response: {e}")))
}

fn read_error(e: io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("read GOCACHEPROG requests: {e}"))
}

/// Reads one request line into `line` (empty at EOF), at most [`MAX_REQUEST_LINE`]
/// bytes before its newline: a longer one breaks the stream, read no further.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>) -> Result<usize> {
    let n = Read::take(&mut *input, MAX_REQUEST_LINE + 1)
        .read_until(b'\n', line)
        .map_err(read_error)?;
    if n as u64 > MAX_REQUEST_LINE && line.last() != Some(&b'\n') {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("read GOCACHEPROG request: a line longer than {MAX_REQUEST_LINE} bytes"),
        ));
    }
    Ok(n)
}

/// Parses a request line. A line that is not a request cannot be answered unless it
/// carries an `ID`; then it is answered as an unknown command.
fn parse_request(line: &[u8]) -> Result<Request> {
    if let Ok(req) = serde_json::from_slice::<Request>(line) {
        return Ok(req);
    }
    let text = String::from_utf8_lossy(line);
    let id = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("ID").and_then(serde_json::Value::as_i64));
    let body_size = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("BodySize").and_then(serde_json::Value::as_i64));
    match id {
        // An empty command marks the request as malformed; its body is skipped.
        Some(id) => Ok(Request {
            id,
            command: String::new(),
            action_id: None,
            output_id: None,
            object_id: None,
            body_size: body_size.unwrap_or(0),
        }),
        None => {
            // The start of it: enough to recognize, not a whole line in a message.
            let text: String = text.trim().chars().take(200).collect();
            Err(Error::new(
                ErrorKind::Corrupt,
                format!("read GOCACHEPROG request `{text}`: not a request"),
            ))
        }
    }
}

/// A read-only view of the cache for one action (see the module comment).
#[derive(Debug)]
pub struct View {
    /// Where hits and the view's own puts are written: out of the action's reach.
    dir: PathBuf,
    /// That directory as the action sees it: what its `DiskPath`s start with.
    seen: PathBuf,
    /// Entries the view's go commands put, by action ID: kept here, never stored.
    own: Mutex<HashMap<Vec<u8>, Entry>>,
}

impl View {
    pub fn new(dir: PathBuf, seen: PathBuf) -> View {
        View {
            dir,
            seen,
            own: Mutex::new(HashMap::new()),
        }
    }

    /// The `DiskPath` of a blob in the view, copying it in from `from` unless it is
    /// there already (copied, not linked: the action must not reach the store's file).
    fn copy_in(&self, digest: &Digest, from: &Path) -> Result<String, String> {
        let name = digest.to_hex();
        let dest = self.dir.join(&name);
        if !dest.exists() {
            let tmp = temp_path(&self.dir)?;
            std::fs::copy(from, &tmp)
                .map_err(|e| format!("copy {} into the view: {e}", from.display()))?;
            self.persist(tmp, &dest)?;
        }
        disk_path(&self.seen.join(name))
    }

    /// Writes a put's body into the view; returns its digest and `DiskPath`.
    fn keep(&self, body: Body) -> Result<(Digest, String), String> {
        let (digest, tmp) = match body {
            Body::Memory(bytes) => {
                let tmp = temp_path(&self.dir)?;
                std::fs::write(&tmp, &bytes)
                    .map_err(|e| format!("write {}: {e}", tmp.display()))?;
                (Digest::of_bytes(&bytes), tmp)
            }
            Body::File(path, _) => {
                let digest = Digest::of_file(&path).map_err(|e| e.to_string())?;
                let tmp = temp_path(&self.dir)?;
                std::fs::copy(&path, &tmp)
                    .map_err(|e| format!("copy {} into the view: {e}", path.display()))?;
                (digest, tmp)
            }
        };
        let name = digest.to_hex();
        self.persist(tmp, &self.dir.join(&name))?;
        Ok((digest, disk_path(&self.seen.join(name))?))
    }

    /// Makes a written file read-only and moves it to its name.
    fn persist(&self, tmp: tempfile::TempPath, dest: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
            .map_err(|e| format!("make {} read-only: {e}", tmp.display()))?;
        tmp.persist(dest)
            .map_err(|e| format!("write {}: {e}", dest.display()))
    }
}

/// The state of one session.
struct Server<'a> {
    store: &'a dyn Store,
    local: &'a LocalStore,
    view: Option<&'a View>,
    stats: ServeStats,
    /// The empty blob, used as every result's stdout and stderr; stored on first put.
    empty_blob: Option<Digest>,
}

impl Server<'_> {
    /// Answers one request. Errors are only those that break the stream.
    fn answer(&mut self, req: &Request, input: &mut impl BufRead) -> Result<Response> {
        if req.command != "put" && req.body_size > 0 {
            skip_body_string(input, req.body_size as u64)?;
        }
        let answer = match req.command.as_str() {
            "get" => self.get(req),
            "put" => {
                let body = read_put_body(req, input, &self.local.tmp_dir())?;
                body.and_then(|body| self.put(req, body))
            }
            "close" => Ok(Response::ok(req.id)),
            "" => Err(format!(
                "read GOCACHEPROG request {}: malformed fields",
                req.id
            )),
            other => Err(format!(
                "serve GOCACHEPROG command `{other}`: unknown command"
            )),
        };
        Ok(answer.unwrap_or_else(|err| Response::failed(req.id, err)))
    }

    fn get(&mut self, req: &Request) -> Result<Response, String> {
        self.stats.gets += 1;
        let action_id = decode_field("ActionID", req.action_id.as_deref())?;
        if let Some(view) = self.view {
            let own = view.own.lock().unwrap().get(&action_id).cloned();
            if let Some(entry) = own {
                self.stats.hits += 1;
                let path = disk_path(&view.seen.join(entry.digest.to_hex()))?;
                return Ok(entry.hit(req.id, path));
            }
        }
        let key = cache_key(&action_id);
        let found = self.store.lookup_action(&key).map_err(|e| e.to_string())?;
        let Some((entry, remote)) =
            found.and_then(|(r, remote)| Some((Entry::from_result(&r)?, remote)))
        else {
            return Ok(Response::miss(req.id));
        };
        let Some(path) = self.local_blob(&entry.digest)? else {
            return Ok(Response::miss(req.id));
        };
        let path = match self.view {
            Some(view) => view.copy_in(&entry.digest, &path)?,
            None => disk_path(&path)?,
        };
        self.stats.hits += 1;
        self.stats.remote_hits += u64::from(remote);
        Ok(entry.hit(req.id, path))
    }

    /// The local path of a blob, fetching it from `store` into the local store if it is
    /// only there. None if neither has it.
    fn local_blob(&self, digest: &Digest) -> Result<Option<PathBuf>, String> {
        let path = self.local.blob_path(digest);
        if self.local.blob_intact(digest, None) {
            return Ok(Some(path));
        }
        let tmp = temp_path(&self.local.tmp_dir())?;
        if !self.store.fetch(digest, &tmp).map_err(|e| e.to_string())? {
            return Ok(None);
        }
        let got = self.local.put_file_move(&tmp).map_err(|e| e.to_string())?;
        if got != *digest {
            return Err(format!("fetch blob {digest}: content has digest {got}"));
        }
        Ok(Some(path))
    }

    fn put(&mut self, req: &Request, body: Body) -> Result<Response, String> {
        let action_id = decode_field("ActionID", req.action_id.as_deref())?;
        let output_id = decode_field("OutputID", req.output_id.as_deref())
            .or_else(|_| decode_field("ObjectID", req.object_id.as_deref()))?;
        if let Some(view) = self.view {
            let size = body.len();
            let (digest, path) = view.keep(body)?;
            let entry = Entry {
                output_id,
                size,
                time_ns: Some(now_ns()),
                digest,
            };
            view.own.lock().unwrap().insert(action_id, entry);
            return Ok(Response {
                id: req.id,
                disk_path: Some(path),
                ..Response::default()
            });
        }
        let digest = self.store_body(&body)?;
        let path = self.local.blob_path(&digest);
        let entry = Entry {
            output_id,
            size: body.len(),
            time_ns: Some(now_ns()),
            digest,
        };
        let empty = self.empty_blob()?;
        let key = cache_key(&action_id);
        let result = entry.to_result(empty);
        self.store
            .put_action(&key, &result)
            .map_err(|e| e.to_string())?;
        self.stats.puts += 1;
        Ok(Response {
            id: req.id,
            disk_path: Some(disk_path(&path)?),
            ..Response::default()
        })
    }

    /// Puts the body into `store` and makes sure the local store has it too.
    fn store_body(&self, body: &Body) -> Result<Digest, String> {
        let stored = match body {
            Body::Memory(bytes) => self.store.put_bytes(bytes),
            Body::File(file, _) => self.store.put_file(file),
        };
        let digest = stored.map_err(|e| e.to_string())?;
        if !self.local.blob_path(&digest).exists() {
            let local = match body {
                Body::Memory(bytes) => self.local.put_bytes(bytes),
                Body::File(file, _) => self.local.put_file(file),
            };
            local.map_err(|e| e.to_string())?;
        }
        Ok(digest)
    }

    fn empty_blob(&mut self) -> Result<Digest, String> {
        if let Some(digest) = self.empty_blob {
            return Ok(digest);
        }
        let digest = self.store.put_bytes(b"").map_err(|e| e.to_string())?;
        if !self.local.blob_path(&digest).exists() {
            self.local.put_bytes(b"").map_err(|e| e.to_string())?;
        }
        self.empty_blob = Some(digest);
        Ok(digest)
    }
}

/// The action-cache key of a Go action ID.
fn cache_key(action_id: &[u8]) -> Digest {
    let mut bytes = b"gocache\0".to_vec();
    bytes.extend_from_slice(action_id);
    Digest::of_bytes(&bytes)
}

/// What kiln keeps for one Go cache entry; see the module comment for the encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    output_id: Vec<u8>,
    size: u64,
    time_ns: Option<i64>,
    digest: Digest,
}

impl Entry {
    /// The answer to a get that found this entry, its body at `disk_path`.
    fn hit(&self, id: i64, disk_path: String) -> Response {
        Response {
            id,
            output_id: Some(base64::encode(&self.output_id)),
            size: self.size,
            time: self.time_ns.map(rfc3339),
            disk_path: Some(disk_path),
            ..Response::default()
        }
    }

    fn to_result(&self, empty: Digest) -> ActionResult {
        let mut path = hex(&self.output_id);
        if let Some(ns) = self.time_ns {
            path = format!("{path}@{ns}");
        }
        ActionResult {
            outputs: vec![OutputFile {
                path,
                digest: self.digest,
                size: self.size,
                executable: false,
            }],
            exit_code: 0,
            stdout: empty,
            stderr: empty,
            duration_ms: 0,
        }
    }

    /// None for a result that was not written by [`Entry::to_result`].
    fn from_result(result: &ActionResult) -> Option<Entry> {
        let [file] = result.outputs.as_slice() else {
            return None;
        };
        let (id_hex, time) = match file.path.split_once('@') {
            Some((id, ns)) => (id, Some(ns.parse().ok()?)),
            None => (file.path.as_str(), None),
        };
        Some(Entry {
            output_id: unhex(id_hex)?,
            size: file.size,
            time_ns: time,
            digest: file.digest,
        })
    }
}

/// A decoded put body.
enum Body {
    Memory(Vec<u8>),
    /// A temporary file (removed when dropped) and its size.
    File(tempfile::TempPath, u64),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Memory(bytes) => bytes.len() as u64,
            Body::File(_, size) => *size,
        }
    }
}

/// Reads the body that follows a put request (none when `BodySize` is 0). The outer
/// error breaks the stream; the inner one answers the request with `Err`.
fn read_put_body(
    req: &Request,
    input: &mut impl BufRead,
    tmp_dir: &Path,
) -> Result<Result<Body, String>> {
    let size = req.body_size;
    if size < 0 {
        return Ok(Err(format!("read put body: negative BodySize {size}")));
    }
    if size == 0 {
        return Ok(Ok(Body::Memory(Vec::new())));
    }
    let size = size as u64;
    if size <= MEMORY_BODY_LIMIT {
        let mut bytes = Vec::with_capacity(size as usize);
        let decoded = read_body_string(input, size, &mut bytes)?;
        return Ok(decoded.and_then(|n| check_size(n, size).map(|()| Body::Memory(bytes))));
    }
    let file = match tempfile::NamedTempFile::new_in(tmp_dir) {
        Ok(file) => file,
        Err(e) => {
            skip_body_string(input, size)?;
            let dir = tmp_dir.display();
            return Ok(Err(format!("create a temporary file in {dir}: {e}")));
        }
    };
    let (file, path) = file.into_parts();
    let mut writer = BufWriter::new(file);
    let decoded = read_body_string(input, size, &mut writer)?;
    let flushed = writer
        .flush()
        .map_err(|e| format!("write {}: {e}", path.display()));
    Ok(decoded
        .and_then(|n| flushed.and_then(|()| check_size(n, size)))
        .map(|()| Body::File(path, size)))
}

fn check_size(got: u64, want: u64) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    Err(format!(
        "read put body: got {got} bytes, BodySize is {want}"
    ))
}

/// Decodes a JSON string of base64 (`"…"`, after any blank lines) from `input` into
/// `sink`, returning the decoded size. The whole string is always consumed, so the next
/// request is read in step even when the body is bad, unless it is longer than the
/// base64 of `size` bytes (the request's `BodySize`): that breaks the stream, read no
/// further.
fn read_body_string(
    input: &mut impl BufRead,
    size: u64,
    sink: &mut dyn Write,
) -> Result<Result<u64, String>> {
    if let Err(msg) = open_string(input)? {
        return Ok(Err(msg));
    }
    let mut left = size.div_ceil(3).saturating_mul(4);
    let mut decoder = base64::Decoder::default();
    let mut decoded = Vec::new();
    let mut written = 0u64;
    let mut fault: Option<String> = None;
    loop {
        let buf = input.fill_buf().map_err(read_error)?;
        if buf.is_empty() {
            return Ok(Err("read put body: input ends inside the body".into()));
        }
        let end = buf.iter().position(|&c| c == b'"');
        let chunk = &buf[..end.unwrap_or(buf.len())];
        if chunk.len() as u64 > left {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("read GOCACHEPROG body: longer than the base64 of its BodySize {size}"),
            ));
        }
        left -= chunk.len() as u64;
        if fault.is_none() {
            decoded.clear();
            fault = decoder.feed(chunk, &mut decoded).err();
        }
        if fault.is_none() {
            fault = sink
                .write_all(&decoded)
                .err()
                .map(|e| format!("write put body: {e}"));
            written += decoded.len() as u64;
        }
        let used = chunk.len() + usize::from(end.is_some());
        input.consume(used);
        if end.is_some() {
            break;
        }
    }
    let fault = fault.or_else(|| decoder.finish().err());
    Ok(fault.map_or(Ok(written), Err))
}

/// Skips blank space (up to [`MAX_REQUEST_LINE`] bytes of it) up to the opening quote
/// of the body and consumes it. Anything else is left in place to be read as the next
/// request.
fn open_string(input: &mut impl BufRead) -> Result<Result<(), String>> {
    let mut left = MAX_REQUEST_LINE;
    loop {
        let buf = input.fill_buf().map_err(read_error)?;
        let Some(&first) = buf.first() else {
            return Ok(Err("read put body: input ends before the body".into()));
        };
        if first == b'"' {
            input.consume(1);
            return Ok(Ok(()));
        }
        if !first.is_ascii_whitespace() {
            return Ok(Err("read put body: no body string after the request".into()));
        }
        let blank = buf.iter().take_while(|c| c.is_ascii_whitespace()).count();
        if blank as u64 > left {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "read GOCACHEPROG body: more than {MAX_REQUEST_LINE} blank bytes before it"
                ),
            ));
        }
        left -= blank as u64;
        input.consume(blank);
    }
}

/// Consumes a body string of at most the base64 of `size` bytes without keeping it.
fn skip_body_string(input: &mut impl BufRead, size: u64) -> Result<()> {
    read_body_string(input, size, &mut io::sink()).map(|_| ())
}

fn decode_field(name: &str, value: Option<&str>) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("read request: no {name}"))?;
    base64::decode(value).map_err(|e| format!("decode {name} `{value}`: {e}"))
}

/// The absolute path of a blob, as a string Go can open.
fn disk_path(path: &Path) -> Result<String, String> {
    let abs = std::path::absolute(path).map_err(|e| format!("resolve {}: {e}", path.display()))?;
    abs.into_os_string()
        .into_string()
        .map_err(|p| format!("report {}: path is not UTF-8", Path::new(&p).display()))
}

/// A fresh path in `dir` for a file that is about to be written there.
fn temp_path(dir: &Path) -> Result<tempfile::TempPath, String> {
    tempfile::NamedTempFile::new_in(dir)
        .map(tempfile::NamedTempFile::into_temp_path)
        .map_err(|e| format!("create a temporary file in {}: {e}", dir.display()))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Unix nanoseconds as RFC 3339 in UTC with nanoseconds, which Go's `time.Time`
/// unmarshals: `2023-11-14T22:13:20.123456789Z`.
fn rfc3339(unix_ns: i64) -> String {
    let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
    crate::time::rfc3339(unix_ns.div_euclid(1_000_000_000), Some(nanos))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            u8::from_str_radix(
                std::str::from_utf8(pair)
                    .ok()
                    .filter(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))?,
                16,
            )
            .ok()
        })
        .collect()
}

/// Standard base64 with padding, as Go's `encoding/json` writes `[]byte` and as
/// `base64.StdEncoding` writes put bodies.
mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for group in bytes.chunks(3) {
            let mut n = 0u32;
            for (i, &b) in group.iter().enumerate() {
                n |= u32::from(b) << (16 - 8 * i);
            }
            for i in 0..4 {
                if i <= group.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(text.len() / 4 * 3);
        let mut decoder = Decoder::default();
        decoder.feed(text.as_bytes(), &mut out)?;
        decoder.finish()?;
        Ok(out)
    }

    /// Decodes base64 fed in pieces of any size.
    #[derive(Default)]
    pub struct Decoder {
        quad: [u8; 4],
        len: usize,
        padded: bool,
    }

    impl Decoder {
        pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
            for &c in chunk {
                if self.padded {
                    return Err("base64 data after padding".into());
                }
                self.quad[self.len] = c;
                self.len += 1;
                if self.len == 4 {
                    self.len = 0;
                    self.decode_quad(out)?;
                }
            }
            Ok(())
        }

        pub fn finish(&self) -> Result<(), String> {
            match self.len {
                0 => Ok(()),
                _ => Err("base64 data ends mid-group".into()),
            }
        }

        fn decode_quad(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
            let pad = self.quad.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 {
                return Err("base64 group is all padding".into());
            }
            let mut n = 0u32;
            for &c in &self.quad[..4 - pad] {
                n = n << 6 | value(c)?;
            }
            n <<= 6 * pad;
            out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
            self.padded = pad > 0;
            Ok(())
        }
    }

    fn value(c: u8) -> Result<u32, String> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("invalid base64 byte {:?}", c as char)),
        };
        Ok(u32::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn b64(bytes: &[u8]) -> String {
        base64::encode(bytes)
    }

    /// Runs one session over `input` and returns its stats and parsed response lines.
    fn session(store: &dyn Store, local: &LocalStore, input: &str) -> (ServeStats, Vec<Value>) {
        let mut out = Vec::new();
        let stats = serve(store, local, input.as_bytes(), &mut out).unwrap();
        let lines = String::from_utf8(out).unwrap();
        let values = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (stats, values)
    }

    fn put_lines(id: i64, action: &[u8], body: &[u8], blank_lines: &str) -> String {
        let head = json!({
            "ID": id, "Command": "put", "ActionID": b64(action),
            "OutputID": b64(&[7u8; 32]), "BodySize": body.len(),
        });
        if body.is_empty() {
            return format!("{head}\n");
        }
        format!("{head}\n{blank_lines}\"{}\"\n", b64(body))
    }

    fn get_line(id: i64, action: &[u8]) -> String {
        format!(
            "{}\n",
            json!({"ID": id, "Command": "get", "ActionID": b64(action)})
        )
    }

    fn read_disk_path(response: &Value) -> Vec<u8> {
        let path = response["DiskPath"].as_str().expect("a DiskPath");
        assert!(Path::new(path).is_absolute(), "{path} is not absolute");
        std::fs::read(path).unwrap()
    }

    fn open(dir: &Path) -> LocalStore {
        LocalStore::open(dir).unwrap()
    }

    /// One session with `listener` that starts with `token`: its parsed responses (none
    /// when the listener closes it unanswered).
    fn talk(listener: &Listener, token: &str, input: String) -> Vec<Value> {
        use std::io::{Read, Write};
        let mut conn = std::os::unix::net::UnixStream::connect(listener.path()).unwrap();
        // A listener that refuses the token closes the connection after its first line,
        // so the rest of the write may meet a broken pipe: that is an answer too (none).
        let _ = conn.write_all(format!("{token}\n{input}").as_bytes());
        let mut out = String::new();
        let _ = conn.read_to_string(&mut out);
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn the_listener_serves_each_connection_as_a_session_of_one_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open(dir.path()));
        let listener = Listener::start(store.clone(), store.clone()).unwrap();
        let close = "{\"ID\":9,\"Command\":\"close\"}\n";
        let talk = |input: String| talk(&listener, listener.token(), input);
        let out = talk(put_lines(1, b"compile x", b"object code", "") + close);
        assert_eq!(read_disk_path(&out[1]), b"object code");
        // Another go process, another connection: the same store.
        let out = talk(get_line(1, b"compile x") + close);
        assert_eq!(read_disk_path(&out[1]), b"object code");
        assert_eq!(out[2], json!({"ID": 9}));
        let want = ServeStats {
            gets: 1,
            hits: 1,
            puts: 1,
            ..ServeStats::default()
        };
        assert_eq!(listener.stats(), want);
        let socket = listener.path().to_path_buf();
        drop(listener);
        assert!(
            !socket.exists(),
            "the socket's directory goes with the listener"
        );
    }

    /// A view reads the store's entries as copies in its own directory; what its go
    /// commands put stays in the view (a later session of the same view finds it), never
    /// in the store; its token stops working when the view is dropped.
    #[test]
    fn a_view_reads_copies_and_keeps_its_puts_out_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open(dir.path()));
        let listener = Listener::start(store.clone(), store.clone()).unwrap();
        let close = "{\"ID\":9,\"Command\":\"close\"}\n";
        let talk = |token: &str, input: String| talk(&listener, token, input);
        let out = talk(
            listener.token(),
            put_lines(1, b"compile std", b"std object", "") + close,
        );
        let stored = out[1]["DiskPath"].as_str().unwrap().to_string();

        let view = listener.open_view(None).unwrap();
        let out = talk(view.token(), get_line(1, b"compile std") + close);
        let copy = out[1]["DiskPath"].as_str().unwrap();
        assert!(copy.starts_with(&*view.dir().to_string_lossy()), "{copy}");
        assert_ne!(copy, stored, "a copy, not the store's file");
        assert_eq!(std::fs::read(copy).unwrap(), b"std object");

        let out = talk(
            view.token(),
            put_lines(1, b"compile mine", b"my object", "") + close,
        );
        let mine = read_disk_path(&out[1]);
        assert_eq!(mine, b"my object");
        let out = talk(view.token(), get_line(1, b"compile mine") + close);
        assert_eq!(read_disk_path(&out[1]), b"my object", "the view's own put");
        // The store never saw it.
        assert!(store
            .get_action(&cache_key(b"compile mine"))
            .unwrap()
            .is_none());
        let out = talk(listener.token(), get_line(1, b"compile mine") + close);
        assert_eq!(out[1]["Miss"], json!(true));
        assert_eq!(listener.stats().puts, 1, "only the store's own put");

        let (token, view_dir) = (view.token().to_string(), view.dir().to_path_buf());
        drop(view);
        assert!(!view_dir.exists());
        assert!(talk(&token, get_line(1, b"compile std") + close).is_empty());
    }

    #[test]
    fn a_session_without_the_listener_s_token_is_closed_unanswered() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open(dir.path()));
        let listener = Listener::start(store.clone(), store.clone()).unwrap();
        for first in ["", "not-the-token\n"] {
            let mut conn = std::os::unix::net::UnixStream::connect(listener.path()).unwrap();
            let put = put_lines(1, b"compile x", b"forged object", "");
            let _ = conn.write_all(format!("{first}{put}").as_bytes());
            let mut out = String::new();
            let _ = conn.read_to_string(&mut out);
            assert_eq!(out, "", "{first:?}");
        }
        assert_eq!(listener.stats(), ServeStats::default());
    }

    #[test]
    fn a_listener_whose_socket_was_removed_still_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open(dir.path()));
        let listener = Listener::start(store.clone(), store).unwrap();
        std::fs::remove_file(listener.path()).unwrap();
        let (done, stopped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(listener);
            let _ = done.send(());
        });
        let waited = stopped.recv_timeout(std::time::Duration::from_secs(10));
        assert!(waited.is_ok(), "the accepting thread was not woken");
    }

    #[test]
    fn handshake_comes_first_and_close_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (stats, out) = session(&store, &store, "{\"ID\":1,\"Command\":\"close\"}\n");
        assert_eq!(
            out[0],
            json!({"ID": 0, "KnownCommands": ["get", "put", "close"]})
        );
        assert_eq!(out[1], json!({"ID": 1}));
        assert_eq!(stats, ServeStats::default());
    }

    #[test]
    fn put_body_after_blank_lines_is_stored_and_got_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let body = b"compiled package archive".to_vec();
        let input = put_lines(1, b"action-1", &body, "\n\n")
            + &get_line(2, b"action-1")
            + &get_line(3, b"action-2")
            + "{\"ID\":4,\"Command\":\"close\"}\n";
        let (stats, out) = session(&store, &store, &input);
        assert_eq!(out[1]["ID"], 1);
        assert_eq!(read_disk_path(&out[1]), body);
        assert_eq!(out[2]["ID"], 2);
        assert_eq!(out[2]["OutputID"], b64(&[7u8; 32]));
        assert_eq!(out[2]["Size"], body.len());
        assert!(out[2]["Time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(read_disk_path(&out[2]), body);
        assert_eq!(out[3], json!({"ID": 3, "Miss": true}));
        assert_eq!(out[4], json!({"ID": 4}));
        let want = ServeStats {
            gets: 2,
            hits: 1,
            puts: 1,
            ..ServeStats::default()
        };
        assert_eq!(stats, want);
    }

    #[test]
    fn entries_outlive_the_session_and_empty_bodies_work() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        session(&store, &store, &put_lines(1, b"empty", b"", ""));
        // A new process: a new store handle on the same directory, ending at EOF.
        let store = open(dir.path());
        let (stats, out) = session(&store, &store, &get_line(1, b"empty"));
        assert_eq!(read_disk_path(&out[1]), b"");
        assert_eq!(out[1].get("Size"), None);
        assert_eq!(
            stats,
            ServeStats {
                gets: 1,
                hits: 1,
                ..ServeStats::default()
            }
        );
    }

    #[test]
    fn large_bodies_stream_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let body: Vec<u8> = (0..MEMORY_BODY_LIMIT as usize * 2 + 1)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let input = put_lines(1, b"big", &body, "") + &get_line(2, b"big");
        let (_, out) = session(&store, &store, &input);
        assert_eq!(read_disk_path(&out[1]), body);
        assert_eq!(read_disk_path(&out[2]), body);
        let leftovers = std::fs::read_dir(store.tmp_dir()).unwrap().count();
        assert_eq!(leftovers, 0, "temporary files are removed");
    }

    #[test]
    fn a_bad_request_is_answered_with_err_and_serving_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let wrong_size = json!({
            "ID": 2, "Command": "put", "ActionID": b64(b"a"),
            "OutputID": b64(b"o"), "BodySize": 99,
        });
        let bad_body = json!({
            "ID": 3, "Command": "put", "ActionID": b64(b"a"),
            "OutputID": b64(b"o"), "BodySize": 3,
        });
        let input = format!(
            "{}\n{wrong_size}\n\"{}\"\n{bad_body}\n\"!!!!\"\n{}\n{}",
            json!({"ID": 1, "Command": "get", "ActionID": "not base64!"}),
            b64(b"abc"),
            json!({"ID": 4, "Command": "frobnicate"}),
            get_line(5, b"a"),
        );
        let (stats, out) = session(&store, &store, &input);
        let ids: Vec<_> = out.iter().map(|v| v["ID"].as_i64().unwrap()).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
        for response in &out[1..5] {
            assert!(!response["Err"].as_str().unwrap().is_empty(), "{response}");
        }
        assert_eq!(out[5], json!({"ID": 5, "Miss": true}));
        assert_eq!(stats.puts, 0);
    }

    /// `head`, then `byte` without end (up to 256 MiB, so that a server that reads all
    /// of it ends too), counting the bytes read.
    struct Endless {
        head: io::Cursor<Vec<u8>>,
        byte: u8,
        read: u64,
    }

    impl Endless {
        fn new(head: impl Into<Vec<u8>>, byte: u8) -> io::BufReader<Endless> {
            let head = io::Cursor::new(head.into());
            io::BufReader::new(Endless {
                head,
                byte,
                read: 0,
            })
        }
    }

    impl io::Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut n = self.head.read(buf)?;
            if n == 0 && self.read < 256 << 20 {
                buf.fill(self.byte);
                n = buf.len();
            }
            self.read += n as u64;
            Ok(n)
        }
    }

    /// Serves `input` to its end; the error, and how much of it was read.
    fn serve_endless(mut input: io::BufReader<Endless>) -> (String, u64) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let served = serve(&store, &store, &mut input, io::sink());
        let read = input.get_ref().read;
        (
            served
                .expect_err("the session ends with an error")
                .to_string(),
            read,
        )
    }

    /// A process with a token (a test's go command, through its view) sends a line
    /// without end: the session ends once the line passes its bound, read no further.
    #[test]
    fn a_line_without_end_ends_the_session_with_memory_bounded() {
        let head = get_line(1, b"x") + "{\"ID\":2,\"Command\":\"get\",\"ActionID\":\"";
        let (err, read) = serve_endless(Endless::new(head, b'A'));
        assert!(err.contains("a line longer than 65536 bytes"), "{err}");
        assert!(read < MAX_REQUEST_LINE + (1 << 20), "read {read} bytes");
    }

    /// A body without its closing quote (or blank space without end before it) ends the
    /// session past the base64 length of its `BodySize`, in memory or through a file,
    /// and when it follows a request that takes none.
    #[test]
    fn a_body_without_end_ends_the_session_with_memory_bounded() {
        let big = MEMORY_BODY_LIMIT * 2;
        for (size, command) in [(3, "put"), (big, "put"), (3, "get")] {
            let head = json!({
                "ID": 1, "Command": command, "ActionID": b64(b"a"),
                "OutputID": b64(b"o"), "BodySize": size,
            });
            let (err, read) = serve_endless(Endless::new(format!("{head}\n\""), b'A'));
            assert!(err.contains(&format!("BodySize {size}")), "{err}");
            let bound = size.div_ceil(3) * 4 + (1 << 20);
            assert!(read < bound, "{command} of {size}: read {read} bytes");
        }
        let head = json!({
            "ID": 1, "Command": "put", "ActionID": b64(b"a"),
            "OutputID": b64(b"o"), "BodySize": 3,
        });
        let (err, read) = serve_endless(Endless::new(format!("{head}\n"), b'\n'));
        assert!(err.contains("blank bytes before it"), "{err}");
        assert!(read < MAX_REQUEST_LINE + (1 << 20), "read {read} bytes");
    }

    /// The listener drops a session that overruns a bound, and serves the next one.
    #[test]
    fn a_session_past_its_bounds_is_dropped_and_others_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open(dir.path()));
        let listener = Listener::start(store.clone(), store.clone()).unwrap();
        let endless = "A".repeat(MAX_REQUEST_LINE as usize * 3);
        let out = talk(&listener, listener.token(), get_line(1, b"x") + &endless);
        assert_eq!(out.len(), 2, "the handshake and the get: {out:?}");
        let close = "{\"ID\":9,\"Command\":\"close\"}\n";
        let out = talk(&listener, listener.token(), get_line(1, b"x") + close);
        assert_eq!(out[1], json!({"ID": 1, "Miss": true}));
        assert_eq!(out[2], json!({"ID": 9}));
    }

    #[test]
    fn a_line_without_an_id_ends_the_session_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let err = serve(&store, &store, &b"garbage\n"[..], io::sink()).unwrap_err();
        assert!(err.to_string().contains("garbage"), "{err}");
    }

    #[test]
    fn a_blob_only_in_the_shared_store_is_fetched_into_the_local_one() {
        let shared_dir = tempfile::tempdir().unwrap();
        let local_dir = tempfile::tempdir().unwrap();
        let shared = open(shared_dir.path());
        let first_local = open(local_dir.path());
        session(
            &shared,
            &first_local,
            &put_lines(1, b"x", b"shared body", ""),
        );
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh_local = open(fresh_dir.path());
        let (stats, out) = session(&shared, &fresh_local, &get_line(1, b"x"));
        let path = out[1]["DiskPath"].as_str().unwrap();
        assert!(
            path.starts_with(fresh_dir.path().to_str().unwrap()),
            "{path}"
        );
        assert_eq!(read_disk_path(&out[1]), b"shared body");
        assert_eq!(stats.hits, 1);
    }

    #[test]
    fn old_objectid_spelling_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let put = json!({
            "ID": 1, "Command": "put", "ActionID": b64(b"old"),
            "ObjectID": b64(&[9u8; 32]), "BodySize": 2,
        });
        let input = format!("{put}\n\"{}\"\n{}", b64(b"hi"), get_line(2, b"old"));
        let (_, out) = session(&store, &store, &input);
        assert_eq!(out[2]["OutputID"], b64(&[9u8; 32]));
    }

    #[test]
    fn base64_round_trips_and_matches_known_values() {
        for (raw, text) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v")] {
            assert_eq!(base64::encode(raw.as_bytes()), text);
            assert_eq!(base64::decode(text).unwrap(), raw.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64::decode(&base64::encode(&all)).unwrap(), all);
        assert!(base64::decode("Zg=").is_err());
        assert!(base64::decode("Zg==Zg==").is_err());
        assert!(base64::decode("Z===").is_err());
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn entries_round_trip_through_action_results() {
        let entry = Entry {
            output_id: vec![0xab; 32],
            size: 12,
            time_ns: Some(42),
            digest: Digest::of_bytes(b"body"),
        };
        let result = entry.to_result(Digest::of_bytes(b""));
        assert_eq!(result.outputs[0].path, format!("{}@42", "ab".repeat(32)));
        assert_eq!(Entry::from_result(&result), Some(entry));
    }
}
