//! Debian's `docker-registry` (distribution 2.8) on a free loopback port, storing in a
//! temporary directory: open, behind htpasswd (Basic), or behind bearer tokens
//! (`auth: token`) that a [`crate::TokenIssuer`] signs and the registry checks itself;
//! plain http, or TLS with a [`crate::Pki`] server certificate.

use std::ffi::{CStr, CString};
use std::process::{Child, Command, Stdio};

use crate::{free_port, wait_for, Pki, TokenIssuer};

/// How the registry authenticates clients.
pub enum RegistryAuth<'a> {
    None,
    /// htpasswd with one account (bcrypt, as the registry requires).
    Basic {
        user: &'a str,
        password: &'a str,
    },
    /// `auth: token`: tokens from this issuer, checked against its signing certificate.
    Token(&'a TokenIssuer),
    /// The same, but clients are sent to `realm` (a proxy in front of the issuer).
    TokenVia {
        issuer: &'a TokenIssuer,
        realm: String,
    },
}

pub struct Registry {
    child: Child,
    /// The address it listens on (127.0.0.1 unless started with [`Registry::start_on`]).
    ip: std::net::IpAddr,
    port: u16,
    tls: bool,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts an open registry on plain http.
    pub fn start() -> Registry {
        Registry::start_with(RegistryAuth::None, None)
    }

    /// Starts a registry; panics if docker-registry is not installed.
    pub fn start_with(auth: RegistryAuth<'_>, tls: Option<&Pki>) -> Registry {
        Registry::start_at(auth, tls, free_port(), None)
    }

    /// Starts an open plain-http registry listening on `ip` only (e.g. the machine's
    /// own interface address, which is not loopback).
    pub fn start_on(ip: std::net::IpAddr) -> Registry {
        Registry::start_bound(RegistryAuth::None, None, ip, free_port(), None)
    }

    /// Starts a registry on `port` that names `public_url` (its `http.host`) in the
    /// absolute URLs it sends, such as upload `Location`s: a registry behind another
    /// host name, or one sending clients elsewhere.
    pub fn start_at(
        auth: RegistryAuth<'_>,
        tls: Option<&Pki>,
        port: u16,
        public_url: Option<&str>,
    ) -> Registry {
        let ip = std::net::Ipv4Addr::LOCALHOST.into();
        Registry::start_bound(auth, tls, ip, port, public_url)
    }

    fn start_bound(
        auth: RegistryAuth<'_>,
        tls: Option<&Pki>,
        ip: std::net::IpAddr,
        port: u16,
        public_url: Option<&str>,
    ) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n",
            dir.path().join("storage").display(),
            std::net::SocketAddr::new(ip, port)
        );
        if let Some(url) = public_url {
            config += &format!("  host: {url}\n");
        }
        if let Some(pki) = tls {
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                pki.server_cert().display(),
                pki.server_key().display()
            );
        }
        config += &auth_config(&auth, dir.path());
        let path = dir.path().join("config.yml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is needed: run .ci/install-deps");
        wait_for(ip, port);
        Registry {
            child,
            ip,
            port,
            tls: tls.is_some(),
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT` (or the address it listens on), as a repository reference
    /// starts.
    pub fn host(&self) -> String {
        std::net::SocketAddr::new(self.ip, self.port).to_string()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// The data file of a blob in the registry's storage (to tamper with it).
    pub fn blob_file(&self, digest: &str) -> std::path::PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// What the registry logged (requests, auth failures).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn auth_config(auth: &RegistryAuth<'_>, dir: &std::path::Path) -> String {
    match auth {
        RegistryAuth::None => String::new(),
        RegistryAuth::Basic { user, password } => {
            let file = dir.join("htpasswd");
            std::fs::write(&file, format!("{user}:{}\n", bcrypt(password))).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                file.display()
            )
        }
        RegistryAuth::Token(issuer) => token_config(issuer, &format!("{}/token", issuer.url())),
        RegistryAuth::TokenVia { issuer, realm } => token_config(issuer, realm),
    }
}

fn token_config(issuer: &TokenIssuer, realm: &str) -> String {
    format!(
        "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
        crate::token::SERVICE,
        crate::token::ISSUER,
        issuer.signing_cert().display()
    )
}

#[link(name = "crypt")]
extern "C" {
    fn crypt(key: *const libc::c_char, salt: *const libc::c_char) -> *mut libc::c_char;
}

/// A bcrypt hash (`$2b$`) from the C library's crypt(3) (libxcrypt), as htpasswd -B
/// writes it.
fn bcrypt(password: &str) -> String {
    let key = CString::new(password).unwrap();
    let salt = CString::new("$2b$05$abcdefghijklmnopqrstuu").unwrap();
    // SAFETY: both arguments are NUL-terminated; crypt returns a static buffer, copied
    // at once (tests call this from one thread per registry; the buffer is per thread
    // in libxcrypt).
    unsafe {
        let out = crypt(key.as_ptr(), salt.as_ptr());
        assert!(!out.is_null(), "crypt(3) has no bcrypt");
        CStr::from_ptr(out).to_string_lossy().into_owned()
    }
}
