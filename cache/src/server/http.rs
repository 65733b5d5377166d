//! Just enough HTTP/1.1 for the cache protocol: requests with a `Content-Length` body
//! (chunked uploads are refused with 411, as a cache client always knows the size),
//! persistent connections, `Expect: 100-continue`, and responses whose bodies stream
//! from a file.
//!
//! A head whose body length could be read two ways is refused (400, and the connection
//! closed), since a proxy in front may read it the other way and smuggle a request
//! through: two `Content-Length` headers (equal or not) or a list in one, a length that
//! is not plain digits, `Content-Length` together with `Transfer-Encoding`, a header
//! name with white space before its colon, a header folded over two lines (RFC 9112
//! §6.3, §5.1, §5.2). A GET or HEAD that declares a body is answered and its connection
//! closed, its body never read.
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
use std::io::{self, BufRead, Read, Write};
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
    framing: Framing,
}

/// How a request's head says its body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    /// A `Transfer-Encoding` (chunked or other): not read by this server.
    Encoded,
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
        if self.method != "PUT" && self.has_body() {
            return false; // its body is never read
        }
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
        match self.framing {
            Framing::None => Ok(None),
            Framing::Length(len) => Ok(Some(len)),
            Framing::Encoded => Err(()),
        }
    }

    fn has_body(&self) -> bool {
        !matches!(self.framing, Framing::None | Framing::Length(0))
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
pub fn read_request(reader: &mut impl BufRead) -> Result<Request, ReadError> {
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
        if !is_token(name) {
            return Err(ReadError::Bad); // " x: y" (a folded line), "x : y", ""
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let framing = framing(&headers).ok_or(ReadError::Bad)?;
    Ok(Request {
        method: method.to_string(),
        path,
        headers,
        http10: version == "HTTP/1.0",
        framing,
    })
}

/// The body's framing, or None if the head leaves it ambiguous.
fn framing(headers: &[(String, String)]) -> Option<Framing> {
    let mut lengths = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    let encoded = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    match (lengths.next(), lengths.next(), encoded) {
        (None, _, false) => Some(Framing::None),
        (None, _, true) => Some(Framing::Encoded),
        (Some((_, v)), None, false) => parse_length(v).map(Framing::Length),
        _ => None,
    }
}

/// `1*DIGIT`, as RFC 9110 §8.6 has it: no sign, no list, no white space inside.
fn parse_length(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// A header name: one or more of RFC 9110's `tchar`s.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<Request, ReadError> {
        read_request(&mut head.as_bytes())
    }

    fn length_of(headers: &str) -> Option<Result<Option<u64>, ()>> {
        let req = parse(&format!("PUT /cas/x HTTP/1.1\r\n{headers}\r\n")).ok()?;
        Some(req.content_length())
    }

    #[test]
    fn one_plain_length_is_read() {
        assert_eq!(length_of("Content-Length: 12\r\n"), Some(Ok(Some(12))));
        assert_eq!(length_of("content-length:7 \r\n"), Some(Ok(Some(7))));
        assert_eq!(length_of(""), Some(Ok(None)));
        assert_eq!(length_of("Transfer-Encoding: chunked\r\n"), Some(Err(())));
    }

    #[test]
    fn ambiguous_lengths_are_bad_requests() {
        for headers in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5\r\ncontent-length: 5\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 0x5\r\n",
            "Content-Length: \r\n",
            "Content-Length: 99999999999999999999999\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Content-Length : 5\r\n",
            "Host: a\r\n Content-Length: 5\r\n",
            ": 5\r\n",
        ] {
            assert!(length_of(headers).is_none(), "{headers:?}");
        }
    }

    #[test]
    fn a_get_with_a_body_ends_its_connection() {
        let req = parse("GET /cas/x HTTP/1.1\r\nContent-Length: 3\r\n\r\n")
            .ok()
            .unwrap();
        assert!(!req.keep_alive());
        let req = parse("GET /cas/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .ok()
            .unwrap();
        assert!(req.keep_alive());
    }
}
