//! Registry credentials, found where the container tools (docker, podman, crane, ko)
//! find them, first that applies:
//!
//! 1. `KILN_REGISTRY_USER` and `KILN_REGISTRY_PASSWORD` (CI); when `KILN_REGISTRY_HOST`
//!    is set too, only for that host, so a job pulling from one registry and pushing to
//!    another sends its password to one of them only; without it, only for pushes (a
//!    pull, which any build of any repository makes, would send them to any host);
//! 2. `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`): `credHelpers[HOST]`,
//!    else `credsStore`: runs `docker-credential-NAME get` with the host on stdin, and
//!    reads `{"Username", "Secret"}` (`Username` `<token>` means an identity token);
//! 3. the same file's `auths[HOST]`: `auth` (base64 `user:password`), `username` and
//!    `password`, or `identitytoken` (an OAuth2 refresh token, sent to the token realm);
//! 4. 2 and 3 again in podman's auth file (`REGISTRY_AUTH_FILE`, else
//!    `$XDG_RUNTIME_DIR/containers/auth.json`), which has the same shape.
//!
//! Keys of `auths` match with or without a scheme and path (`https://host/v1/`); Docker
//! Hub (`docker.io`, `registry-1.docker.io`) is `index.docker.io`, as docker stores it.
//! A [`Credential`] never prints its secret: its `Debug` shows only where it came from,
//! and every message names that source, never the value.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;

pub enum Secret {
    Basic {
        user: String,
        password: String,
    },
    /// An identity (refresh) token, exchanged for access tokens at the realm.
    IdentityToken(String),
}

pub struct Credential {
    pub secret: Secret,
    /// Where it came from, e.g. `KILN_REGISTRY_USER/KILN_REGISTRY_PASSWORD` or
    /// `auths in /home/me/.docker/config.json`: safe to show.
    pub source: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential(from {})", self.source)
    }
}

impl Credential {
    /// The `Authorization` value for Basic auth (None for an identity token).
    pub fn basic_header(&self) -> Option<String> {
        match &self.secret {
            Secret::Basic { user, password } => Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{user}:{password}"))
            )),
            Secret::IdentityToken(_) => None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Config {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The credential for `host` (`name[:port]`), or None when none is configured.
/// `pushing`: whether it is for a push (`kiln run`); a pull happens in any build, of
/// any repository, to the registry its BUILD.toml names.
pub fn lookup(host: &str, pushing: bool) -> Result<Option<Credential>, String> {
    if let Some(c) = from_env(host, pushing) {
        return Ok(Some(c));
    }
    for path in config_paths() {
        if let Some(c) = from_file(&path, host)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// What one docker config (or podman auth.json) file has for `host`.
fn from_file(path: &std::path::Path, host: &str) -> Result<Option<Credential>, String> {
    let config: Config = match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| format!("read {}: {e}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let wanted = normalize(host);
    let helper = config
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize(k) == wanted)
        .map(|(_, v)| v.clone())
        .or(config.creds_store.clone())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        if let Some(c) = run_helper(&helper, host, path)? {
            return Ok(Some(c));
        }
    }
    let entry = config.auths.iter().find(|(k, _)| normalize(k) == wanted);
    match entry {
        Some((_, entry)) => from_auth_entry(entry, path),
        None => Ok(None),
    }
}

fn from_env(host: &str, pushing: bool) -> Option<Credential> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (user, password) = (var("KILN_REGISTRY_USER")?, var("KILN_REGISTRY_PASSWORD")?);
    match var("KILN_REGISTRY_HOST") {
        Some(only) if normalize(&only) != normalize(host) => return None,
        // Without a host named, the variables go to what is pushed to, never to a
        // registry a pull names: a repository's BUILD.toml could name its own.
        None if !pushing => return None,
        _ => {}
    }
    Some(Credential {
        secret: Secret::Basic { user, password },
        source: "KILN_REGISTRY_USER/KILN_REGISTRY_PASSWORD".into(),
    })
}

/// docker's file, then podman's (`REGISTRY_AUTH_FILE`, else
/// `$XDG_RUNTIME_DIR/containers/auth.json`), which share the format.
fn config_paths() -> Vec<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let docker = match var("DOCKER_CONFIG") {
        Some(dir) => Some(dir.join("config.json")),
        None => var("HOME").map(|h| h.join(".docker/config.json")),
    };
    let podman = var("REGISTRY_AUTH_FILE")
        .or_else(|| var("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    docker.into_iter().chain(podman).collect()
}

/// `https://host:port/v1/` → `host:port`; Docker Hub's names → `index.docker.io`.
fn normalize(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "index.docker.io".into()
        }
        _ => host,
    }
}

fn from_auth_entry(
    entry: &AuthEntry,
    path: &std::path::Path,
) -> Result<Option<Credential>, String> {
    let source = format!("auths in {}", path.display());
    if let Some(token) = entry.identitytoken.clone().filter(|t| !t.is_empty()) {
        return Ok(Some(Credential {
            secret: Secret::IdentityToken(token),
            source,
        }));
    }
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let bad = || format!("{source}: an `auth` value is not base64 of user:password");
        let decoded = STANDARD.decode(auth.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, password) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credential {
            secret: Secret::Basic {
                user: user.into(),
                password: password.into(),
            },
            source,
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(user), Some(password)) => Ok(Some(Credential {
            secret: Secret::Basic {
                user: user.clone(),
                password: password.clone(),
            },
            source,
        })),
        _ => Ok(None),
    }
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-NAME get`; None when the helper has nothing for the host.
fn run_helper(
    name: &str,
    host: &str,
    config: &std::path::Path,
) -> Result<Option<Credential>, String> {
    let program = format!("docker-credential-{name}");
    let source = format!("{program} (named in {})", config.display());
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run {source}: {e}; is it on PATH?"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("run {source}: {e}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let first = said
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect::<String>();
        return Err(format!("{source} failed for {host}: {}", first.trim()));
    }
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout)
        .map_err(|_| format!("{source} gave no JSON credentials for {host}"))?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    let secret = if answer.username == "<token>" {
        Secret::IdentityToken(answer.secret)
    } else {
        Secret::Basic {
            user: answer.username,
            password: answer.secret,
        }
    };
    Ok(Some(Credential { secret, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_keys_match_with_or_without_scheme_and_docker_hub_is_its_index() {
        assert_eq!(
            normalize("https://reg.example:5000/v1/"),
            "reg.example:5000"
        );
        assert_eq!(normalize("reg.example:5000"), "reg.example:5000");
        assert_eq!(
            normalize("docker.io"),
            normalize("https://index.docker.io/v1/")
        );
    }

    #[test]
    fn debug_shows_the_source_never_the_secret() {
        let c = Credential {
            secret: Secret::Basic {
                user: "u".into(),
                password: "hunter2".into(),
            },
            source: "auths in /x/config.json".into(),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("auths in /x/config.json"));
    }
}
