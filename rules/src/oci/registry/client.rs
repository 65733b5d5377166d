//! One registry host as kiln talks to it: the scheme and TLS trust of its
//! [`Settings`](super::settings), credentials looked up once when a 401 first asks for
//! them ([`super::credentials`]), the challenge answered ([`super::auth`]), and failures
//! sorted into those worth retrying (a dropped connection, a 5xx) and the rest.
//!
//! The `Authorization` header goes only to URLs of the registry's own host and port: a
//! redirect (a blob served from object storage) or an upload `Location` on another host
//! gets none, so a token or password never leaves the host it was issued for; one that
//! leads to plain http (where the registry is not loopback or listed insecure) is refused.
//! Redirects are followed by this module, never by the HTTP library, for that reason.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ureq::http::{Method, Response};
use ureq::{Agent, SendBody};

use super::auth::{fetch_token, Challenge};
use super::credentials::{self, Credential};
use super::settings::{is_loopback, tls_config, HostSettings};

/// Attempts of one operation (a blob, a manifest) before a retryable failure is final.
pub const ATTEMPTS: u32 = 5;
/// The wait before the first retry; doubled after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// A failed request: its message (never holding a credential) and whether trying the
/// operation again may help.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub retry: bool,
}

impl Failure {
    pub fn fatal(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: false,
        }
    }
}

pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A file, opened again for each attempt.
    File(&'a Path),
}

pub struct Request<'a> {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body<'a>,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, url: String) -> Request<'a> {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Request<'a> {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: Body<'a>) -> Request<'a> {
        self.body = body;
        self
    }
}

pub struct Client {
    /// `name[:port]`, lowercase.
    pub host: String,
    /// `scheme://host`.
    pub base: String,
    agent: Agent,
    insecure: bool,
    /// Scopes asked for with every token (e.g. `repository:app:pull,push`).
    scopes: Vec<String>,
    credential: OnceLock<Result<Option<Credential>, String>>,
    authorization: Mutex<Option<String>>,
}

impl Client {
    /// A client for `host`; `scheme` None picks http for loopback (without a CA file)
    /// and insecure-listed hosts, https otherwise.
    pub fn new(
        host: &str,
        scheme: Option<&str>,
        settings: &HostSettings,
        scopes: Vec<String>,
    ) -> Result<Client, String> {
        let plain_ok = settings.insecure || is_loopback(host);
        let scheme = match scheme {
            Some("http") if !plain_ok => {
                return Err(format!(
                    "registry {host}: plain http is used only for loopback hosts and registries listed with `insecure = true` under [registries.\"{host}\"] in kiln.toml"
                ))
            }
            Some(s) => s,
            None if settings.insecure || (is_loopback(host) && settings.ca_file.is_none()) => {
                "http"
            }
            None => "https",
        };
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls_config(settings)?)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(600)))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Client {
            host: host.to_ascii_lowercase(),
            base: format!("{scheme}://{host}"),
            agent,
            insecure: settings.insecure,
            scopes,
            credential: OnceLock::new(),
            authorization: Mutex::new(None),
        })
    }

    /// Sends `request`, answering one 401 challenge and following redirects of GET and
    /// HEAD; a 5xx or a transport error is a retryable failure.
    pub fn send(&self, request: &Request<'_>) -> Result<Response<ureq::Body>, Failure> {
        let mut url = request.url.clone();
        let (mut reauthed, mut redirects) = (false, 0);
        loop {
            let own_host = authority(&url) == self.host;
            if !url.starts_with("https://") && !self.plain_ok(&authority(&url)) {
                return Err(Failure::fatal(format!(
                    "{} {}: registry {} sent kiln to plain http; kiln speaks http only to loopback and to registries listed with `insecure = true`",
                    request.method,
                    shown(&url),
                    self.host
                )));
            }
            let sent = if own_host {
                self.authorization.lock().unwrap().clone()
            } else {
                None
            };
            let what = format!("{} {}", request.method, shown(&url));
            let response = self
                .send_once(request, &url, sent.as_deref())
                .map_err(|e| Failure {
                    message: format!("{what}: {e}"),
                    retry: true,
                })?;
            let status = response.status().as_u16();
            if status == 401 && own_host && !reauthed {
                let challenge = header(&response, "www-authenticate");
                self.authenticate(challenge.as_deref())?;
                reauthed = true;
                continue;
            }
            if (status == 401 || status == 403) && !own_host {
                return Err(Failure::fatal(format!(
                    "{what}: registry {} sent kiln to {}, which asks for credentials; kiln sends them only to {}",
                    self.host,
                    authority(&url),
                    self.host
                )));
            }
            if status == 401 || status == 403 {
                return Err(Failure::fatal(self.refused(&what, status)));
            }
            let redirect = matches!(status, 301 | 302 | 303 | 307 | 308)
                && matches!(request.method, Method::GET | Method::HEAD);
            if redirect && redirects < 5 {
                let location = header(&response, "location").ok_or_else(|| {
                    Failure::fatal(format!("{what}: a redirect without Location"))
                })?;
                url = self.resolve(&location);
                redirects += 1;
                continue;
            }
            if status >= 500 {
                return Err(Failure {
                    message: format!("{what}: the registry answered {status}"),
                    retry: true,
                });
            }
            return Ok(response);
        }
    }

    /// Runs `op` up to [`ATTEMPTS`] times while it fails in a retryable way, waiting
    /// 0.25 s, 0.5 s, 1 s, 2 s between attempts (a warning on stderr each time).
    pub fn retrying<T>(&self, mut op: impl FnMut() -> Result<T, Failure>) -> Result<T, String> {
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match op() {
                Ok(value) => return Ok(value),
                Err(f) if f.retry && attempt < ATTEMPTS => {
                    eprintln!(
                        "kiln: warning: {}; trying again in {:.2}s (attempt {} of {ATTEMPTS})",
                        f.message,
                        delay.as_secs_f64(),
                        attempt + 1
                    );
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                Err(f) => return Err(f.message),
            }
        }
    }

    /// An absolute URL for a path or URL the registry gave.
    pub fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        }
    }

    fn send_once(
        &self,
        request: &Request<'_>,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<Response<ureq::Body>, String> {
        let mut builder = ureq::http::Request::builder()
            .method(request.method.clone())
            .uri(url);
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        if let Some(a) = authorization {
            builder = builder.header("authorization", a);
        }
        let built = |b: ureq::http::request::Builder| b.body(()).map_err(|e| e.to_string());
        match &request.body {
            Body::Empty if matches!(request.method, Method::POST | Method::PUT) => {
                let b = builder.header("content-length", "0");
                self.agent.run(built(b)?).map_err(|e| e.to_string())
            }
            Body::Empty => self.agent.run(built(builder)?).map_err(|e| e.to_string()),
            Body::Bytes(bytes) => {
                let r = builder.body(*bytes).map_err(|e| e.to_string())?;
                self.agent.run(r).map_err(|e| e.to_string())
            }
            Body::File(path) => {
                let file = File::open(path).map_err(|e| format!("read {}: {e}", path.display()))?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                if size >= PROGRESS_FROM && std::io::stderr().is_terminal() {
                    let shown = Progress::new(file, path, size);
                    let r = builder
                        .body(SendBody::from_owned_reader(shown))
                        .map_err(|e| e.to_string())?;
                    return self.agent.run(r).map_err(|e| e.to_string());
                }
                let r = builder.body(file).map_err(|e| e.to_string())?;
                self.agent.run(r).map_err(|e| e.to_string())
            }
        }
    }

    /// Whether this client pushes (its scopes ask for push), rather than only pulls.
    fn pushing(&self) -> bool {
        self.scopes.iter().any(|s| s.ends_with(",push"))
    }

    fn credential(&self) -> Result<Option<&Credential>, Failure> {
        let found = self
            .credential
            .get_or_init(|| credentials::lookup(&self.host, self.pushing()));
        match found {
            Ok(c) => Ok(c.as_ref()),
            Err(e) => Err(Failure::fatal(e.clone())),
        }
    }

    fn authenticate(&self, challenge: Option<&str>) -> Result<(), Failure> {
        let challenge = challenge.and_then(Challenge::parse).ok_or_else(|| {
            Failure::fatal(format!(
                "registry {} answered 401 without a challenge kiln understands",
                self.host
            ))
        })?;
        let credential = self.credential()?;
        let header = match challenge {
            Challenge::Basic => credential
                .and_then(Credential::basic_header)
                .ok_or_else(|| Failure::fatal(self.no_credentials()))?,
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                self.check_realm(&realm)?;
                let mut scopes = self.scopes.clone();
                scopes.extend(scope.filter(|s| !self.scopes.contains(s)));
                fetch_token(&self.agent, &realm, service.as_deref(), &scopes, credential).map_err(
                    |f| match credential {
                        None if !f.retry => {
                            Failure::fatal(format!("{}; {}", f.message, self.no_credentials()))
                        }
                        _ => f,
                    },
                )?
            }
        };
        *self.authorization.lock().unwrap() = Some(header);
        Ok(())
    }

    /// Credentials go to the realm only over https, or to loopback and insecure hosts.
    fn check_realm(&self, realm: &str) -> Result<(), Failure> {
        let plain_ok = self.plain_ok(&authority(realm));
        if realm.starts_with("https://") || (realm.starts_with("http://") && plain_ok) {
            return Ok(());
        }
        Err(Failure::fatal(format!(
            "registry {} names the token realm {realm}: kiln sends credentials only over https (or to loopback)",
            self.host
        )))
    }

    /// Whether plain http may go to `host`: loopback, or this registry listed insecure.
    fn plain_ok(&self, host: &str) -> bool {
        is_loopback(host) || (self.insecure && host == self.host)
    }

    fn no_credentials(&self) -> String {
        format!(
            "registry {} asks for credentials and kiln found none for it: set KILN_REGISTRY_USER and KILN_REGISTRY_PASSWORD, or log in (an `auths` or `credHelpers` entry for {} in $DOCKER_CONFIG/config.json, else ~/.docker/config.json)",
            self.host, self.host
        )
    }

    fn refused(&self, what: &str, status: u16) -> String {
        match self.credential() {
            Ok(Some(c)) => format!(
                "{what}: the registry answered {status}: it refused the credentials from {}",
                c.source
            ),
            Ok(None) => format!(
                "{what}: the registry answered {status}; {}",
                self.no_credentials()
            ),
            Err(f) => format!("{what}: the registry answered {status}; {}", f.message),
        }
    }
}

/// Uploads at least this large show progress when stderr is a terminal.
const PROGRESS_FROM: u64 = 16 << 20;

/// A file being uploaded, its progress redrawn on stderr (a terminal) twice a second.
struct Progress {
    file: File,
    name: String,
    size: u64,
    sent: u64,
    drawn: Instant,
    finished: bool,
}

impl Progress {
    fn new(file: File, path: &Path, size: u64) -> Progress {
        let name = path.file_name().map_or(String::new(), |n| {
            n.to_string_lossy().chars().take(12).collect()
        });
        Progress {
            file,
            name,
            size,
            sent: 0,
            drawn: Instant::now(),
            finished: false,
        }
    }
}

impl Read for Progress {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.sent += n as u64;
        let done = n == 0 || self.sent == self.size;
        if self.finished {
            return Ok(n);
        }
        if done || self.drawn.elapsed() >= Duration::from_millis(500) {
            self.drawn = Instant::now();
            self.finished = done;
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            eprint!(
                "\rkiln: uploading {}: {:.1} of {:.1} MiB{}",
                self.name,
                mib(self.sent),
                mib(self.size),
                if done { "\n" } else { "" }
            );
        }
        Ok(n)
    }
}

/// A response header as text.
pub fn header(response: &Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// A URL as messages show it: without its query, which for upload sessions and storage
/// redirects carries signed state or temporary storage credentials.
fn shown(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// `scheme://HOST[:port]/…` → `host[:port]`, lowercase.
pub fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_urls_without_their_query() {
        assert_eq!(
            shown("https://s3.example/blob?X-Amz-Signature=abc"),
            "https://s3.example/blob"
        );
    }

    #[test]
    fn authority_is_host_and_port_without_user_info() {
        assert_eq!(
            authority("https://Reg.example:5000/v2/x"),
            "reg.example:5000"
        );
        assert_eq!(authority("http://user@evil.example/x"), "evil.example");
        assert_eq!(authority("https://s3.example?x=1"), "s3.example");
    }

    #[test]
    fn a_redirect_to_plain_http_is_refused_before_anything_is_sent() {
        let none = HostSettings::default();
        let c = Client::new("registry.example", None, &none, vec![]).unwrap();
        *c.authorization.lock().unwrap() = Some("Bearer secret-token".into());
        for url in [
            "http://registry.example/v2/app/blobs/uploads/1",
            "http://storage.example/blob",
        ] {
            let request = Request::new(Method::GET, url.into());
            let err = c.send(&request).unwrap_err();
            assert!(!err.retry, "{}", err.message);
            assert!(
                err.message
                    .contains("registry registry.example sent kiln to plain http"),
                "{}",
                err.message
            );
            assert!(!err.message.contains("secret-token"), "{}", err.message);
        }
    }

    #[test]
    fn credentials_go_to_a_realm_only_over_https_or_loopback() {
        let none = HostSettings::default();
        let c = Client::new("registry.example", None, &none, vec![]).unwrap();
        assert!(c.check_realm("https://auth.example/token").is_ok());
        assert!(c.check_realm("http://127.0.0.1:8080/token").is_ok());
        let refused = c.check_realm("http://auth.example/token").unwrap_err();
        assert!(
            refused.message.contains("only over https"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn plain_http_only_for_loopback_and_insecure_hosts() {
        let none = HostSettings::default();
        let c = Client::new("127.0.0.1:5000", None, &none, vec![]).unwrap();
        assert_eq!(c.base, "http://127.0.0.1:5000");
        let c = Client::new("registry.example", None, &none, vec![]).unwrap();
        assert_eq!(c.base, "https://registry.example");
        assert!(Client::new("registry.example", Some("http"), &none, vec![]).is_err());
        let insecure = HostSettings {
            insecure: true,
            ..HostSettings::default()
        };
        let c = Client::new("registry.lan", None, &insecure, vec![]).unwrap();
        assert_eq!(c.base, "http://registry.lan");
    }
}
