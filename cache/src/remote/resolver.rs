//! Host names to addresses for [`super::HttpStore`], without a thread per request.
//!
//! ureq's default resolver runs every lookup on a new thread whenever the request has a
//! timeout (so that a hanging DNS query cannot outlast it), even for an IP literal and
//! even when the request then reuses a pooled connection: with kiln's bounded requests
//! that is one thread per request. [`CachingResolver`] answers IP literals (`127.0.0.1`,
//! `[::1]`) at once, and asks the default resolver (with its timeout thread) about a name
//! at most once per [`TTL`], sharing the answer between threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a looked-up name's addresses are reused.
pub const TTL: Duration = Duration::from_secs(60);

/// See the module comment.
#[derive(Debug, Default)]
pub struct CachingResolver {
    inner: DefaultResolver,
    names: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host_port = uri
            .scheme()
            .zip(uri.authority())
            .and_then(|(scheme, authority)| DefaultResolver::host_and_port(scheme, authority));
        let Some(host_port) = host_port else {
            return self.inner.resolve(uri, config, timeout); // it reports the bad URI
        };
        if let Ok(addr) = host_port.parse::<SocketAddr>() {
            let mut addrs = self.empty();
            addrs.push(addr);
            return Ok(addrs);
        }
        if let Some(addrs) = self.cached(&host_port) {
            return Ok(addrs);
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let mut names = self.names.lock().unwrap();
        names.insert(host_port, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

impl CachingResolver {
    fn cached(&self, host_port: &str) -> Option<ResolvedSocketAddrs> {
        let names = self.names.lock().unwrap();
        let (at, addrs) = names.get(host_port)?;
        (at.elapsed() < TTL).then(|| addrs.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(uri: &str) -> Vec<SocketAddr> {
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from_secs(1),
            reason: ureq::Timeout::Resolve,
            ..NextTimeout::default()
        };
        let config = Config::default();
        let addrs = CachingResolver::default()
            .resolve(&uri.parse().unwrap(), &config, timeout)
            .unwrap();
        addrs.iter().copied().collect()
    }

    #[test]
    fn ip_literals_are_answered_as_they_are() {
        assert_eq!(
            resolve("http://127.0.0.1:8080/cas/x"),
            ["127.0.0.1:8080".parse().unwrap()]
        );
        assert_eq!(resolve("http://[::1]/ac"), ["[::1]:80".parse().unwrap()]);
    }

    #[test]
    fn names_are_looked_up() {
        assert!(resolve("http://localhost:9/").iter().all(|a| a.port() == 9));
    }
}
