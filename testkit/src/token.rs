//! A token issuer for a registry configured with `auth: token`, as the Distribution
//! token spec describes one: `GET /token?service=S&scope=repository:NAME:pull,push`
//! with Basic credentials (or `POST /token` with `grant_type=refresh_token`, as docker
//! sends an identity token) answers `{"token": JWT, "access_token": JWT}`. The JWT is
//! signed RS256 with the [`crate::Pki`] signing key by the `openssl` command and
//! carries the signing certificate in `x5c`, so the registry verifies it itself against
//! its `rootcertbundle`. Every request is logged for the test to assert on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use crate::Pki;

/// The registry's `service`, the token's `aud`.
pub const SERVICE: &str = "kiln-test-registry";
/// The token's `iss`, as the registry expects it.
pub const ISSUER: &str = "kiln-test-issuer";

/// One request the issuer answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    /// Whether the client proved who it is (Basic or refresh token) and was given access.
    pub granted: bool,
}

struct Secrets {
    /// Tokens still to be narrowed to `pull` whatever was asked (see
    /// [`TokenIssuer::narrow_next`]).
    narrow: AtomicUsize,
    user: String,
    password: String,
    identity_token: String,
    signing_key: PathBuf,
    x5c: String,
}

pub struct TokenIssuer {
    port: u16,
    signing_cert: PathBuf,
    log: Arc<Mutex<Vec<TokenRequest>>>,
    secrets: Arc<Secrets>,
}

impl TokenIssuer {
    /// Serves tokens to `user`/`password` or to the refresh token `identity_token`.
    pub fn start(pki: &Pki, user: &str, password: &str, identity_token: &str) -> TokenIssuer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let secrets = Arc::new(Secrets {
            narrow: AtomicUsize::new(0),
            user: user.into(),
            password: password.into(),
            identity_token: identity_token.into(),
            signing_key: pki.signing_key(),
            x5c: STANDARD.encode(Pki::der(&pki.signing_cert())),
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        let kept = secrets.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (secrets, log) = (kept.clone(), shared.clone());
                std::thread::spawn(move || serve(conn, &secrets, &log));
            }
        });
        TokenIssuer {
            port,
            signing_cert: pki.signing_cert(),
            log,
            secrets,
        }
    }

    /// The next `n` tokens grant only `pull`, whatever was asked: a client must ask
    /// again when the registry answers 401 to a push.
    pub fn narrow_next(&self, n: usize) {
        self.secrets.narrow.store(n, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn signing_cert(&self) -> PathBuf {
        self.signing_cert.clone()
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, secrets: &Secrets, log: &Mutex<Vec<TokenRequest>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or(""),
    );
    let (mut authorization, mut length) = (String::new(), 0usize);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((&header, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "authorization" => authorization = value.trim().to_string(),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let mut params = query(target.split_once('?').map_or("", |(_, q)| q));
    params.extend(query(&String::from_utf8_lossy(&body)));
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(String::from).collect::<Vec<_>>())
        .collect();
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", secrets.user, secrets.password))
    );
    let granted = authorization == basic
        || (get("grant_type").as_deref() == Some("refresh_token")
            && get("refresh_token").as_deref() == Some(secrets.identity_token.as_str()));
    log.lock().unwrap().push(TokenRequest {
        method,
        scopes: scopes.clone(),
        granted,
    });
    let mut out = conn;
    if !granted {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        let _ = write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let token = sign(secrets, &scopes);
    let body = format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#);
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A JWT granting every scope asked for (repository:NAME:ACTIONS).
fn sign(secrets: &Secrets, scopes: &[String]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let narrow = secrets
        .narrow
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let access: Vec<String> = scopes
        .iter()
        .filter_map(|s| {
            let mut p = s.splitn(3, ':');
            let (kind, name, actions) = (p.next()?, p.next()?, p.next()?);
            let actions = if narrow { "pull" } else { actions };
            let actions: Vec<String> = actions.split(',').map(|a| format!("\"{a}\"")).collect();
            Some(format!(
                r#"{{"type":"{kind}","name":"{name}","actions":[{}]}}"#,
                actions.join(",")
            ))
        })
        .collect();
    let header = format!(r#"{{"typ":"JWT","alg":"RS256","x5c":["{}"]}}"#, secrets.x5c);
    let claims = format!(
        r#"{{"iss":"{ISSUER}","sub":"{}","aud":"{SERVICE}","exp":{},"nbf":{},"iat":{now},"jti":"{now}-{}","access":[{}]}}"#,
        secrets.user,
        now + 300,
        now - 10,
        std::process::id(),
        access.join(",")
    );
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&secrets.signing_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl is needed for this test");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl could not sign the token");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
}

/// `a=b&c=d`, percent-decoded (`+` is a space).
fn query(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
