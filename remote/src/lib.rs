//! kiln-remote: kiln on engines that speak the Remote Execution API v2 (REAPI:
//! Capabilities, ContentAddressableStorage, ByteStream, ActionCache, Execution over
//! gRPC) — BuildGrid, Buildbarn, BuildBuddy, NativeLink, buildbox-casd.
//!
//! * [`GrpcStore`]: a [`kiln_cache::Store`] on the engine's ActionCache and CAS
//!   (`--remote-cache grpc://…`), for actions run here or there.
//! * [`RemoteRunner`]: a [`kiln_engine::remote::RemoteExecutor`] on its Execution
//!   service (`--remote-executor grpc://…`).
//!
//! Decisions:
//!
//! * **SHA-256 on the wire, BLAKE3 at home.** The engines here refuse BLAKE3, so REAPI
//!   traffic uses SHA-256 while kiln's keys and store stay BLAKE3. Each blob's SHA-256
//!   is learned when kiln hashes, sends or fetches it (one pass computes both) and kept
//!   beside its BLAKE3 digest in [`Remote`]'s table for the build, so nothing is hashed
//!   twice within a build. Everything fetched is checked against both digests.
//! * **kiln's results under kiln's keys.** An action result is stored in the
//!   ActionCache under the SHA-256 digest of `kiln action <BLAKE3 key>`, as a REAPI
//!   ActionResult (output files with their SHA-256 digests, stdout, stderr, exit code,
//!   so other clients can read it) that carries kiln's own record (BLAKE3 digests) in
//!   its `execution_metadata.auxiliary_metadata`. A result without that record (one an
//!   engine wrote for an Action digest) is a miss: kiln never trusts a result it cannot
//!   check against its BLAKE3 digests.
//! * **One connection, blocking callers.** kiln's scheduler threads call in and wait;
//!   a small tokio runtime owned by [`Remote`] drives one HTTP/2 channel, which
//!   multiplexes every request.
//! * Blobs up to [`BATCH_BLOB`] go in BatchUpdateBlobs / BatchReadBlobs requests,
//!   larger ones through ByteStream; FindMissingBlobs comes before any upload. The empty
//!   blob is never sent.
//! * The bearer token (from the environment) goes in the `authorization` metadata of
//!   every call and in no message.

mod cas;
mod exec;
mod store;
mod tree;

pub use exec::RemoteRunner;
pub use store::GrpcStore;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use kiln_cache::{Digest, Error, ErrorKind, Result};
use sha2::Digest as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The hidden kiln subcommand that starts an action's process on a remote worker
/// (see [`kiln_engine::sandbox::launch`]).
pub const LAUNCH_COMMAND: &str = "remote-launch";

/// Blobs up to this size travel in batch requests; larger ones through ByteStream.
pub const BATCH_BLOB: u64 = 1 << 20;

/// What a batch request may carry in total (below gRPC's 4 MiB default message size,
/// whatever the server advertises).
const BATCH_TOTAL: u64 = 3 << 20;

/// The largest message kiln accepts from a server.
const MAX_MESSAGE: usize = 64 << 20;

/// A REAPI digest: SHA-256 and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha {
    pub hash: [u8; 32],
    pub size: u64,
}

impl Sha {
    pub fn of_bytes(bytes: &[u8]) -> Sha {
        Sha {
            hash: sha2::Sha256::digest(bytes).into(),
            size: bytes.len() as u64,
        }
    }

    pub fn hex(&self) -> String {
        self.hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn proto(&self) -> re::Digest {
        re::Digest {
            hash: self.hex(),
            size_bytes: self.size as i64,
        }
    }

    /// A digest from a server, checked to be SHA-256's shape.
    fn from_proto(d: &re::Digest) -> Result<Sha> {
        let bad = || Error::new(ErrorKind::Corrupt, format!("bad digest `{}`", d.hash));
        if d.hash.len() != 64 || d.size_bytes < 0 {
            return Err(bad());
        }
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&d.hash[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Sha {
            hash,
            size: d.size_bytes as u64,
        })
    }
}

/// Both digests of bytes, computed in one pass.
#[derive(Default)]
pub(crate) struct Hashers {
    blake3: blake3::Hasher,
    sha: sha2::Sha256,
    size: u64,
}

impl Hashers {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.blake3.update(bytes);
        self.sha.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// Both digests of a file's content.
    pub(crate) fn of_file(path: &std::path::Path) -> Result<(Digest, Sha)> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
        let mut hashers = Hashers::default();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| Error::io("read", path, e))?;
            if n == 0 {
                return Ok(hashers.finish());
            }
            hashers.update(&buf[..n]);
        }
    }

    pub(crate) fn finish(self) -> (Digest, Sha) {
        let blake3 = Digest::from_bytes(*self.blake3.finalize().as_bytes());
        let sha = Sha {
            hash: self.sha.finalize().into(),
            size: self.size,
        };
        (blake3, sha)
    }
}

/// How to reach an engine.
#[derive(Clone, Default)]
pub struct Options {
    /// The REAPI instance name ("" for none).
    pub instance: String,
    /// Sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("instance", &self.instance)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A `grpc://HOST:PORT` or `grpcs://HOST:PORT` endpoint. The error completes
/// "`URL` …".
pub fn check_endpoint(url: &str) -> std::result::Result<String, String> {
    let rest = url
        .strip_prefix("grpc://")
        .or_else(|| url.strip_prefix("grpcs://"))
        .ok_or("is not a grpc:// or grpcs:// URL")?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.starts_with(':') || host.contains(['/', '@', '?', '#']) {
        return Err("names no host:port (give grpc://HOST:PORT)".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("holds white space or a control character".into());
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Whether a URL names a REAPI endpoint rather than an HTTP cache.
pub fn is_grpc(url: &str) -> bool {
    url.starts_with("grpc://") || url.starts_with("grpcs://")
}

#[derive(Clone)]
struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

type Service = InterceptedService<Channel, Auth>;

/// A connection to an engine, shared by its store and runner.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    auth: Auth,
    instance: String,
    url: String,
    /// SHA-256 digests of blobs by BLAKE3 digest (see the module comment).
    shas: Mutex<HashMap<Digest, Sha>>,
    /// Whether the engine runs actions (its Capabilities say so).
    pub can_execute: bool,
}

impl Remote {
    /// Connects and asks the engine's Capabilities: an engine that cannot be reached,
    /// does not speak SHA-256 or refuses the credentials fails here, once, before the
    /// build starts.
    pub fn connect(url: &str, opts: &Options) -> Result<Remote> {
        let remote_err = |what: String| Error::new(ErrorKind::Remote, format!("{url}: {what}"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kiln-remote")
            .enable_all()
            .build()
            .map_err(|e| remote_err(format!("start its runtime: {e}")))?;
        let (scheme, rest) = url.split_once("://").unwrap_or(("grpc", url));
        let tls = scheme == "grpcs";
        let http = format!("{}://{rest}", if tls { "https" } else { "http" });
        let mut endpoint = Endpoint::from_shared(http)
            .map_err(|e| remote_err(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        if tls {
            let config = ClientTlsConfig::new().with_native_roots();
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| remote_err(format!("TLS: {e}")))?;
        }
        let channel = {
            let _guard = rt.enter();
            endpoint.connect_lazy()
        };
        let auth = match &opts.token {
            Some(token) => {
                let value = format!("Bearer {token}").parse().map_err(|_| {
                    remote_err("the token holds characters a header cannot carry".into())
                })?;
                Auth(Some(value))
            }
            None => Auth(None),
        };
        let mut remote = Remote {
            rt,
            channel,
            auth,
            instance: opts.instance.clone(),
            url: url.to_string(),
            shas: Mutex::new(HashMap::new()),
            can_execute: false,
        };
        remote.learn(Digest::of_bytes(b""), Sha::of_bytes(b""));
        remote.can_execute = remote.capabilities()?;
        Ok(remote)
    }

    /// The endpoint, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Checks the engine's Capabilities; returns whether it executes actions.
    fn capabilities(&self) -> Result<bool> {
        use re::capabilities_client::CapabilitiesClient;
        use re::digest_function::Value;
        let mut client =
            CapabilitiesClient::with_interceptor(self.channel.clone(), self.auth.clone());
        let req = re::GetCapabilitiesRequest {
            instance_name: self.instance.clone(),
        };
        let caps = self.call(
            "ask its capabilities",
            Duration::from_secs(10),
            async move { client.get_capabilities(req).await },
        )?;
        let sha256 = Value::Sha256 as i32;
        if let Some(cache) = &caps.cache_capabilities {
            if !cache.digest_functions.is_empty() && !cache.digest_functions.contains(&sha256) {
                return Err(Error::new(
                    ErrorKind::Remote,
                    format!("{}: its cache does not take SHA-256 digests", self.url),
                ));
            }
        }
        Ok(caps.execution_capabilities.as_ref().is_some_and(|e| {
            e.exec_enabled && (e.digest_function == sha256 || e.digest_functions.contains(&sha256))
        }))
    }

    /// Runs a call on the runtime, with a deadline, turning a gRPC error into a store
    /// error that says what kiln was doing.
    fn call<T, F>(&self, what: &str, timeout: Duration, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let got = self
            .rt
            .block_on(async { tokio::time::timeout(timeout, fut).await });
        match got {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(self.status_error(what, &status)),
            Err(_) => Err(Error::new(
                ErrorKind::Remote,
                format!(
                    "{}: {what}: no answer within {} s",
                    self.url,
                    timeout.as_secs()
                ),
            )),
        }
    }

    fn status_error(&self, what: &str, status: &tonic::Status) -> Error {
        let mut message = status.message().to_string();
        if message.is_empty() {
            message = format!("{:?}", status.code());
        }
        let message: String = message
            .chars()
            .filter(|c| !c.is_control())
            .take(500)
            .collect();
        Error::new(
            ErrorKind::Remote,
            format!("{}: {what}: {message} ({:?})", self.url, status.code()),
        )
    }

    /// Records a blob's SHA-256 beside its BLAKE3 digest.
    pub(crate) fn learn(&self, blake3: Digest, sha: Sha) {
        self.shas.lock().unwrap().insert(blake3, sha);
    }

    pub(crate) fn sha_of(&self, blake3: &Digest) -> Option<Sha> {
        self.shas.lock().unwrap().get(blake3).copied()
    }

    fn instance_prefix(&self) -> String {
        match self.instance.is_empty() {
            true => String::new(),
            false => format!("{}/", self.instance),
        }
    }
}

/// A store error for a REAPI reply that breaks the protocol or kiln's rules.
pub(crate) fn corrupt(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, message)
}
