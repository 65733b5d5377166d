//! Just enough HTTP/1.1 for the cache protocol: requests with a `Content-Length` body
//! (chunked uploads are refused with 411, as a cache client always knows the size),
//! persistent connections, `Expect: 100-continue`, and responses whose bodies stream
//! from a file.
//!
//! A blob's body is hashed as it is sent, and its last piece is held back until the
//! whole content has matched the digest it is served under: a damaged blob reaches the
//! client as a body cut short (which every client rejects), never as a complete wrong
//! one, and [`write_response`] reports it with [`Damaged`].
//!
//! Written by hand on `std::net` rather than taken from a server crate so that every
//! limit is ours: header size, body size (answered with 413 and a closed connection,
//! without reading the body), and how long a silent client may hold a connection.

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use crate::digest::Digest;

/// The most bytes a request line plus headers may take.
const MAX_HEAD: u64 = 16 * 1024;

/// The size of the pieces a blob is read, hashed and sent in.
const CHUNK: usize = 256 * 1024;

thread_local! {
    /// Each connection thread's send buffer.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A parsed request head; the body is still in the reader.
pub struct Request {
    pub method: String,
    /// The path, without any query string.
    pub path: String,
    headers: Vec<(String, String)>,
    http10: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept open after this request.
    pub fn keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.http10 {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        }
    }

    /// The declared body length: Ok(None) if there is no body, Err if it is chunked or
    /// unreadable.
    pub fn content_length(&self) -> Result<Option<u64>, ()> {
        if self.header("transfer-encoding").is_some() {
            return Err(());
        }
        match self.header("content-length") {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| ()),
        }
    }

    pub fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

/// Why no request could be read.
pub enum ReadError {
    /// The client closed the connection (or stayed silent) between requests.
    Closed,
    /// The head is malformed or too large: answer 400 and close.
    Bad,
}

/// Reads the next request head from a connection.
pub fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Request, ReadError> {
    let mut head = reader.by_ref().take(MAX_HEAD);
    let line = read_line(&mut head)?.ok_or(ReadError::Closed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad);
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let line = read_line(&mut head)?.ok_or(ReadError::Bad)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or(ReadError::Bad)?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(Request {
        method: method.to_string(),
        path,
        headers,
        http10: version == "HTTP/1.0",
    })
}

/// One CRLF-terminated line without its terminator; None at a clean end of stream.
fn read_line(reader: &mut impl BufRead) -> Result<Option<String>, ReadError> {
    let mut buf = Vec::new();
    match reader.read_until(b'\n', &mut buf) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(_) => return Err(ReadError::Closed),
    }
    if !buf.ends_with(b"\n") {
        return Err(ReadError::Bad);
    }
    buf.pop();
    if buf.ends_with(b"\r") {
        buf.pop();
    }
    String::from_utf8(buf).map(Some).map_err(|_| ReadError::Bad)
}

/// A response about to be written.
pub struct Response<'a> {
    pub status: u16,
    pub body: Body<'a>,
    pub keep_alive: bool,
}

pub enum Body<'a> {
    Text(&'a str),
    File(std::fs::File, u64),
    /// A file whose content must hash to the digest.
    Blob(&'a mut std::fs::File, u64, Digest),
}

impl Body<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Body::Text(text) => text.len() as u64,
            Body::File(_, len) | Body::Blob(_, len, _) => *len,
        }
    }
}

/// The error [`write_response`] returns for a blob whose content is not its digest's:
/// the response was cut short, and the connection must be closed.
#[derive(Debug)]
pub struct Damaged(pub Digest);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "its content hashes to {}", self.0)
    }
}

impl std::error::Error for Damaged {}

/// Writes a response; for HEAD, only its headers.
pub fn write_response(out: &mut TcpStream, resp: Response<'_>, head_only: bool) -> io::Result<()> {
    let connection = if resp.keep_alive {
        "keep-alive"
    } else {
        "close"
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-length: {}\r\nconnection: {connection}\r\n{}\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len(),
        content_type(&resp.body),
    );
    let body = match resp.body {
        Body::Blob(file, len, digest) if !head_only => {
            return write_blob(out, head.as_bytes(), file, len, &digest);
        }
        body => body,
    };
    let mut out = io::BufWriter::with_capacity(256 * 1024, out);
    out.write_all(head.as_bytes())?;
    if !head_only {
        match body {
            Body::Text(text) => out.write_all(text.as_bytes())?,
            Body::File(file, len) => {
                io::copy(&mut file.take(len), &mut out)?;
            }
            Body::Blob(..) => unreachable!("blob bodies are written above"),
        }
    }
    out.flush()
}

/// Sends `head`, then `len` bytes of `file` in pieces, hashing them: the last piece goes
/// out only once the whole content hashed to `want`. Otherwise an error carrying
/// [`Damaged`], the body cut short.
fn write_blob(
    out: &mut TcpStream,
    head: &[u8],
    file: &mut std::fs::File,
    len: u64,
    want: &Digest,
) -> io::Result<()> {
    BUFFER.with_borrow_mut(|buf| {
        let mut hasher = blake3::Hasher::new();
        buf.clear();
        buf.extend_from_slice(head);
        let mut left = len;
        loop {
            let start = buf.len();
            let room = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
            buf.resize(start + room, 0);
            let n = read_full(file, &mut buf[start..])?;
            buf.truncate(start + n);
            hasher.update(&buf[start..]);
            left -= n as u64;
            if left == 0 || n < room {
                let got = Digest::from_bytes(*hasher.finalize().as_bytes());
                if left != 0 || got != *want {
                    return Err(io::Error::other(Damaged(got)));
                }
                return out.write_all(buf);
            }
            out.write_all(buf)?;
            buf.clear();
        }
    })
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Tells a client that sent `Expect: 100-continue` to go on with its body.
pub fn write_continue(out: &mut TcpStream) -> io::Result<()> {
    out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
}

fn content_type(body: &Body<'_>) -> &'static str {
    match body {
        Body::Text(_) => "content-type: text/plain; charset=utf-8\r\n",
        Body::File(..) | Body::Blob(..) => "content-type: application/octet-stream\r\n",
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}
