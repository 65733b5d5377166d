//! The HTTP remote store: the shape of Bazel's HTTP cache protocol.
//!
//! ```text
//!   HEAD <base>/cas/<64 hex BLAKE3>   200 present · 404 absent
//!   GET  <base>/cas/<64 hex BLAKE3>   200 + blob bytes · 404 (or 204, nginx WebDAV) miss
//!   PUT  <base>/cas/<64 hex BLAKE3>   body = blob bytes → 200, 201 or 204
//!   GET  <base>/ac/<64 hex key>       200 + ActionResult JSON (kiln's encoding) · 404 miss
//!   PUT  <base>/ac/<64 hex key>       body = ActionResult JSON → 200, 201 or 204
//! ```
//!
//! Any plain HTTP server that accepts PUT serves it: `kiln serve`, nginx WebDAV, a bucket
//! behind a proxy. Requests carry `Authorization: Bearer <token>` when a token is given;
//! the token never appears in a message.
//!
//! Decisions:
//!
//! * **Trust nothing downloaded.** A blob is hashed while it streams to a temporary file
//!   next to its destination and renamed into place only if its BLAKE3 digest matches.
//!   A mismatch, or an action result that does not decode, is an error of kind
//!   [`ErrorKind::Corrupt`]; the tiered store turns every remote error into a miss plus a
//!   warning, so corrupt data is never used.
//! * **Time is bounded.** Connecting takes at most `connect_timeout` (2 s); a request with
//!   a small body at most `request_timeout` (10 s) in total; no single read or write may
//!   stall longer than `request_timeout`; a large transfer gets `request_timeout` plus its
//!   size at `min_rate` (1 MiB/s). For downloads the size is known only once the headers
//!   arrive, so that budget is enforced while the body streams in.
//! * **Large blobs are streamed**, both ways: uploads send a file with its
//!   `Content-Length`, downloads write to a file; only [`Store::read`] (meant for small
//!   blobs) holds a body in memory, and caps it at [`MAX_READ`].
//! * **No needless uploads.** [`Store::put_file`] asks with HEAD first and sends the file
//!   only when the remote lacks it, as [`crate::LocalStore`] skips blobs it already has.
//!   It hashes the file before sending, so a damaged local blob is never published under
//!   the wrong digest.
//! * **The empty blob** (the stdout of most actions) is never sent or fetched: every store
//!   holds it by definition, which saves two round trips per action.
//! * **No thread or connection per request.** Host names go through
//!   [`resolver::CachingResolver`] (ureq's own resolver starts a thread for every request
//!   that has a timeout), and up to [`MAX_IDLE_CONNECTIONS`] connections stay open for
//!   reuse, more than a build has requests in flight (ureq keeps 3 per host by default).
//!   Both are built from ureq's `unversioned` API, which may change in a minor release.
//! * Redirects are followed for reads (ureq's default); the token is not forwarded to
//!   another host.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use ureq::http::Response;
use ureq::unversioned::transport::DefaultConnector;
use ureq::{Agent, Body};

use resolver::CachingResolver;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::result::ActionResult;
use crate::store::Store;

mod resolver;

/// The largest body [`Store::read`] accepts into memory (and the largest action result).
pub const MAX_READ: u64 = 64 * 1024 * 1024;

/// Idle connections kept open for reuse: more than the requests a build has in flight
/// (its lookup threads, the tiered store's download and upload workers), so that no
/// request pays for a new connection. ureq's default keeps 3 per host.
const MAX_IDLE_CONNECTIONS: usize = 64;

/// The size of the buffer a download streams through.
const CHUNK: usize = 256 * 1024;

/// Connection settings of an [`HttpStore`].
#[derive(Clone)]
pub struct HttpOptions {
    /// Sent as `Authorization: Bearer <token>` on every request.
    pub token: Option<String>,
    /// The longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// The whole budget of a small request, and the longest stall of any read or write.
    pub request_timeout: Duration,
    /// The slowest transfer rate, in bytes per second, a large body is given time for.
    pub min_rate: u64,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            token: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            min_rate: 1024 * 1024,
        }
    }
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("min_rate", &self.min_rate)
            .finish()
    }
}

/// A [`Store`] on an HTTP cache server. See the module comment.
pub struct HttpStore {
    base: String,
    shown: String,
    agent: Agent,
    opts: HttpOptions,
}

/// What a GET found.
enum Got {
    Found(Response<Body>),
    Missing,
}

impl HttpStore {
    /// A store on the server at `url` (`http://` or `https://`, with any path prefix).
    pub fn new(url: &str, opts: HttpOptions) -> Result<HttpStore> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::new(
                ErrorKind::Remote,
                format!("use remote cache `{url}`: only http:// and https:// URLs are supported"),
            ));
        }
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_recv_response(Some(opts.request_timeout))
            .timeout_per_read(Some(opts.request_timeout))
            .timeout_per_write(Some(opts.request_timeout))
            .max_idle_connections(MAX_IDLE_CONNECTIONS)
            .max_idle_connections_per_host(MAX_IDLE_CONNECTIONS)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = Agent::with_parts(config, DefaultConnector::new(), CachingResolver::default());
        let base = url.trim_end_matches('/').to_string();
        Ok(HttpStore {
            shown: redact(&base),
            base,
            agent,
            opts,
        })
    }

    /// The server's URL as shown in messages (without any user:password part).
    pub fn url(&self) -> &str {
        &self.shown
    }

    fn url_of(&self, kind: &str, digest: &Digest) -> String {
        format!("{}/{kind}/{digest}", self.base)
    }

    fn shown_url(&self, kind: &str, digest: &Digest) -> String {
        format!("{}/{kind}/{digest}", self.shown)
    }

    /// The time budget of a request moving `bytes` of body.
    fn budget(&self, bytes: u64) -> Duration {
        self.opts.request_timeout + Duration::from_secs(bytes / self.opts.min_rate.max(1))
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.opts.token {
            Some(token) => req.header("authorization", format!("Bearer {token}")),
            None => req,
        }
    }

    fn head(&self, kind: &str, digest: &Digest) -> Result<bool> {
        let shown = self.shown_url(kind, digest);
        let req = self.auth(self.agent.head(self.url_of(kind, digest)));
        let req = req.config().timeout_global(Some(self.budget(0))).build();
        let resp = req.call().map_err(|e| remote_err("check", &shown, e))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 | 204 => Ok(false),
            status => Err(status_err("check", &shown, status)),
        }
    }

    /// GETs a URL; `budget` is None for a streamed body (bounded while reading).
    fn get(&self, kind: &str, digest: &Digest, budget: Option<Duration>) -> Result<Got> {
        let shown = self.shown_url(kind, digest);
        let req = self.auth(self.agent.get(self.url_of(kind, digest)));
        let req = req.config().timeout_global(budget).build();
        let mut resp = req.call().map_err(|e| remote_err("download", &shown, e))?;
        match resp.status().as_u16() {
            200 => Ok(Got::Found(resp)),
            404 | 204 => {
                drain(&mut resp);
                Ok(Got::Missing)
            }
            status => Err(status_err("download", &shown, status)),
        }
    }

    fn put(&self, kind: &str, digest: &Digest, body: PutBody<'_>) -> Result<()> {
        let shown = self.shown_url(kind, digest);
        let req = self.auth(self.agent.put(self.url_of(kind, digest)));
        let req = req
            .config()
            .timeout_global(Some(self.budget(body.len())))
            .build();
        let req = req.header("content-length", body.len().to_string());
        let sent = match body {
            PutBody::Bytes(bytes) => req.send(bytes),
            PutBody::File(file, _) => req.send(file),
        };
        let mut resp = sent.map_err(|e| remote_err("upload to", &shown, e))?;
        drain(&mut resp);
        match resp.status().as_u16() {
            200 | 201 | 204 => Ok(()),
            status => Err(status_err("upload to", &shown, status)),
        }
    }

    fn send_file(&self, path: &Path, digest: &Digest) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io("read", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        self.put("cas", digest, PutBody::File(file, len))
    }

    /// Streams a found blob into `dest`, verifying its digest before renaming it in.
    fn download_to(&self, digest: &Digest, resp: Response<Body>, dest: &Path) -> Result<()> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".kiln-download-")
            .tempfile_in(dir)
            .map_err(|e| Error::io("create a temporary file in", dir, e))?;
        self.download_into(digest, resp, tmp.as_file_mut())?;
        tmp.persist(dest)
            .map_err(|e| Error::io("rename into", dest, e.error))?;
        Ok(())
    }

    /// Streams a found blob into `out`; an error of kind [`ErrorKind::Corrupt`] if its
    /// content does not match the digest.
    fn download_into(&self, digest: &Digest, resp: Response<Body>, out: &mut File) -> Result<()> {
        let shown = self.shown_url("cas", digest);
        let got = self.stream_body(resp, out, &shown)?;
        check_digest(digest, &got, &shown)
    }

    /// Copies a response body to `out`, hashing it, within the time its size allows.
    fn stream_body(&self, resp: Response<Body>, out: &mut File, shown: &str) -> Result<Digest> {
        let start = Instant::now();
        let declared = resp.body().content_length();
        let mut reader = resp.into_body().into_reader();
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        BUFFER.with_borrow_mut(|buf| {
            buf.resize(CHUNK, 0);
            loop {
                let n = reader
                    .read(buf)
                    .map_err(|e| Error::new(ErrorKind::Remote, format!("download {shown}: {e}")))?;
                if n == 0 {
                    return Ok(());
                }
                total += n as u64;
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(|e| Error::new(ErrorKind::Io, format!("write a download: {e}")))?;
                if start.elapsed() > self.budget(declared.unwrap_or(total).max(total)) {
                    let msg = format!("download {shown}: too slow, gave up after {total} bytes");
                    return Err(Error::new(ErrorKind::Remote, msg));
                }
            }
        })?;
        if declared.is_some_and(|len| len != total) {
            let msg = format!("download {shown}: body ended after {total} bytes");
            return Err(Error::new(ErrorKind::Remote, msg));
        }
        Ok(Digest::from_bytes(*hasher.finalize().as_bytes()))
    }

    /// GETs a body into memory: a blob (given time for [`MAX_READ`] bytes) or an action
    /// result (given the time of a small request).
    fn read_small(&self, kind: &str, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let budget = self.budget(if kind == "cas" { MAX_READ } else { 0 });
        let resp = match self.get(kind, digest, Some(budget))? {
            Got::Found(resp) => resp,
            Got::Missing => return Ok(None),
        };
        let shown = self.shown_url(kind, digest);
        let bytes = resp
            .into_body()
            .into_with_config()
            .limit(MAX_READ)
            .read_to_vec()
            .map_err(|e| remote_err("download", &shown, e))?;
        Ok(Some(bytes))
    }
}

thread_local! {
    /// Each thread's download buffer, reused rather than allocated (and faulted in) anew
    /// for every blob.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

enum PutBody<'a> {
    Bytes(&'a [u8]),
    File(File, u64),
}

impl PutBody<'_> {
    fn len(&self) -> u64 {
        match self {
            PutBody::Bytes(bytes) => bytes.len() as u64,
            PutBody::File(_, len) => *len,
        }
    }
}

impl Store for HttpStore {
    fn contains(&self, digest: &Digest) -> Result<bool> {
        if is_empty_blob(digest) {
            return Ok(true);
        }
        self.head("cas", digest)
    }

    fn read(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        if is_empty_blob(digest) {
            return Ok(Some(Vec::new()));
        }
        let Some(bytes) = self.read_small("cas", digest)? else {
            return Ok(None);
        };
        check_digest(
            digest,
            &Digest::of_bytes(&bytes),
            &self.shown_url("cas", digest),
        )?;
        Ok(Some(bytes))
    }

    fn fetch(&self, digest: &Digest, dest: &Path) -> Result<bool> {
        if is_empty_blob(digest) {
            File::create(dest).map_err(|e| Error::io("create", dest, e))?;
            return Ok(true);
        }
        match self.get("cas", digest, None)? {
            Got::Found(resp) => self.download_to(digest, resp, dest).map(|()| true),
            Got::Missing => Ok(false),
        }
    }

    fn fetch_into(&self, digest: &Digest, out: &mut File) -> Result<bool> {
        if is_empty_blob(digest) {
            return Ok(true);
        }
        match self.get("cas", digest, None)? {
            Got::Found(resp) => self.download_into(digest, resp, out).map(|()| true),
            Got::Missing => Ok(false),
        }
    }

    /// Downloads are hashed while streaming and refused on a mismatch.
    fn fetch_verifies(&self) -> bool {
        true
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        if !is_empty_blob(&digest) {
            self.put("cas", &digest, PutBody::Bytes(bytes))?;
        }
        Ok(digest)
    }

    fn put_file(&self, path: &Path) -> Result<Digest> {
        let digest = Digest::of_file(path)?;
        if is_empty_blob(&digest) || self.head("cas", &digest)? {
            return Ok(digest);
        }
        self.send_file(path, &digest)?;
        Ok(digest)
    }

    /// Sends the file without asking first: the copy the server has may be the damaged one.
    fn put_file_replacing(&self, path: &Path) -> Result<Digest> {
        let digest = Digest::of_file(path)?;
        if !is_empty_blob(&digest) {
            self.send_file(path, &digest)?;
        }
        Ok(digest)
    }

    fn get_action(&self, key: &Digest) -> Result<Option<ActionResult>> {
        let Some(bytes) = self.read_small("ac", key)? else {
            return Ok(None);
        };
        let result = serde_json::from_slice(&bytes).map_err(|e| {
            let shown = self.shown_url("ac", key);
            Error::new(ErrorKind::Corrupt, format!("decode {shown}: {e}"))
        })?;
        Ok(Some(result))
    }

    fn put_action(&self, key: &Digest, result: &ActionResult) -> Result<()> {
        let text = serde_json::to_vec(result).expect("action results serialize");
        self.put("ac", key, PutBody::Bytes(&text))
    }
}

fn is_empty_blob(digest: &Digest) -> bool {
    *digest == Digest::of_bytes(b"")
}

fn check_digest(want: &Digest, got: &Digest, shown: &str) -> Result<()> {
    if want == got {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Corrupt,
        format!("verify {shown}: the server sent content with digest {got}"),
    ))
}

/// Reads what is left of a short body, so the connection can be reused.
fn drain(resp: &mut Response<Body>) {
    let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_vec();
}

fn remote_err(what: &str, shown: &str, err: ureq::Error) -> Error {
    Error::new(ErrorKind::Remote, format!("{what} {shown}: {err}"))
}

fn status_err(what: &str, shown: &str, status: u16) -> Error {
    let hint = match status {
        401 | 403 => " (check the remote cache token)",
        413 => " (the server's body size limit is too small)",
        _ => "",
    };
    Error::new(
        ErrorKind::Remote,
        format!("{what} {shown}: the server answered {status}{hint}"),
    )
}

/// The URL without a `user:password@` part.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_user_info() {
        assert_eq!(redact("http://u:p@h:1/x"), "http://h:1/x");
        assert_eq!(redact("https://h/a@b"), "https://h/a@b");
    }

    #[test]
    fn rejects_other_schemes() {
        let err = HttpStore::new("ftp://h", HttpOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("only http://"), "{err}");
    }

    #[test]
    fn budget_grows_with_size() {
        let store = HttpStore::new("http://127.0.0.1:1", HttpOptions::default()).unwrap();
        assert_eq!(store.budget(0), Duration::from_secs(10));
        assert_eq!(store.budget(100 * 1024 * 1024), Duration::from_secs(110));
    }
}
