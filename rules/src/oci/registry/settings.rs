//! Per-registry settings from kiln.toml, and the TLS trust a registry's client uses.
//!
//! ```toml
//! [registries."registry.internal:5000"]
//! ca_file = "certs/internal-ca.pem"   # trust exactly these CAs for this registry
//!
//! [registries."build-cache.lan:5000"]
//! insecure = true                     # plain http allowed (never for other hosts)
//! ```
//!
//! Trust, first that applies: the registry's `ca_file` (workspace-relative or absolute);
//! `SSL_CERT_FILE` (a PEM bundle that replaces the built-in roots, as it does for
//! OpenSSL and Go); else the Mozilla roots built into kiln (webpki-roots). Plain http is
//! used for loopback hosts (`localhost`, 127.0.0.0/8, `[::1]`) without a `ca_file`, as
//! Docker does, and for registries listed `insecure`; anything else is https, and an
//! explicit `http://` to another host (the machine's own interface address included)
//! is refused before any connection.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_engine::value::{Spanned, Table, Value};
use kiln_engine::workspace::Workspace;
use kiln_engine::Result;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// The kiln.toml section.
pub const SECTION: &str = "registries";

/// What kiln.toml says of one registry host.
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
}

/// Every `[registries."HOST"]` table of kiln.toml.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    hosts: BTreeMap<String, HostSettings>,
}

impl Settings {
    /// Reads kiln.toml's `[registries]`; a bad entry is an error at its location.
    pub fn load(workspace: &Workspace) -> Result<Settings> {
        let mut hosts = BTreeMap::new();
        let Some(section) = workspace.section(SECTION)? else {
            return Ok(Settings { hosts });
        };
        for (host, value) in &section.entries {
            let Value::Table(table) = &value.value else {
                return Err(section
                    .error_at(
                        &host.value,
                        format!("`registries.\"{}\"` must be a table", host.value),
                    )
                    .hint(
                        "e.g. [registries.\"registry.internal:5000\"] with ca_file = \"ca.pem\"",
                    ));
            };
            hosts.insert(host.value.clone(), host_settings(workspace, host, table)?);
        }
        Ok(Settings { hosts })
    }

    pub fn host(&self, host: &str) -> HostSettings {
        self.hosts.get(host).cloned().unwrap_or_default()
    }
}

fn host_settings(
    workspace: &Workspace,
    host: &Spanned<String>,
    table: &Table,
) -> Result<HostSettings> {
    table.check_keys(
        &["ca_file", "insecure"],
        &format!("registry `{}`", host.value),
    )?;
    let ca_file = match table.str("ca_file")? {
        None => None,
        Some(file) => {
            let path = workspace.root.join(&file.value);
            if !path.is_file() {
                return Err(table.error_at(
                    "ca_file",
                    format!(
                        "`ca_file` of registry `{}`: {} is not a file",
                        host.value,
                        path.display()
                    ),
                ));
            }
            Some(path)
        }
    };
    Ok(HostSettings {
        ca_file,
        insecure: table.bool("insecure")?.unwrap_or(false),
    })
}

/// Whether `host` (`name[:port]`) is a loopback host: `localhost`, an address of
/// 127.0.0.0/8 (as Docker's default insecure range), or `[::1]`. Any other name or
/// address, the machine's own interface addresses included, is not: traffic to it may
/// leave the machine, or be seen by others on it.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The TLS configuration for a registry with these settings.
pub fn tls_config(settings: &HostSettings) -> std::result::Result<TlsConfig, String> {
    let bundle = match &settings.ca_file {
        Some(file) => Some(file.clone()),
        None => std::env::var_os("SSL_CERT_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    };
    let Some(bundle) = bundle else {
        return Ok(TlsConfig::default());
    };
    let certs = read_certs(&bundle)?;
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&certs))
        .build())
}

fn read_certs(path: &std::path::Path) -> std::result::Result<Vec<Certificate<'static>>, String> {
    // kiln.toml names the file: a link to /dev/zero must not be read until memory runs out.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(format!(
            "read CA certificates {}: not a regular file",
            path.display()
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| format!("read CA certificates {}: {e}", path.display()))?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&bytes)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!(
            "read CA certificates {}: it holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::{is_loopback, read_certs};

    #[test]
    fn a_ca_file_that_is_a_device_is_refused_unread() {
        let err = read_certs(std::path::Path::new("/dev/zero")).err().unwrap();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn loopback_is_localhost_127_slash_8_and_ipv6_one() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.0.0.2",
            "[::1]:5000",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "192.0.2.2:5000",
            "10.0.0.1",
            "registry.lan:5000",
            "127.0.0.1.example",
            "[::2]:5000",
            "localhost.evil",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
