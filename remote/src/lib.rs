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
//! * **BLAKE3 at home, the engine's digest on the wire.** kiln's keys and store stay
//!   BLAKE3. REAPI traffic uses BLAKE3 where the engine's Capabilities offer it
//!   ([`choose_digest_function`]) and SHA-256 otherwise (buildbox-casd and BuildGrid
//!   offer no BLAKE3). A blob's SHA-256 is computed in the same pass as its BLAKE3
//!   digest whenever kiln hashes, sends or fetches it, and kept beside it: in
//!   [`Remote`]'s table for the build and in the local store's `blob_sha256` table for
//!   later builds, so nothing is hashed twice. Only pairs kiln computed from the bytes
//!   are kept; a remote's claim (a result naming both digests) is used to fetch the
//!   blob, which is then checked against both.
//! * **kiln's results under kiln's keys.** An action result is stored in the
//!   ActionCache under the digest of `kiln action <BLAKE3 key>`, as a REAPI
//!   ActionResult (output files with their wire digests, stdout, stderr, exit code,
//!   so other clients can read it) that carries kiln's own record (BLAKE3 digests) in
//!   its `execution_metadata.auxiliary_metadata`. A result without that record (one an
//!   engine wrote for an Action digest) is a miss: kiln never trusts a result it cannot
//!   check against its BLAKE3 digests.
//! * **One connection, blocking callers.** kiln's scheduler threads call in and wait;
//!   a small tokio runtime owned by [`Remote`] drives one HTTP/2 channel, which
//!   multiplexes every request.
//! * **Each blob once per build.** Blobs up to [`BATCH_BLOB`] go in BatchUpdateBlobs /
//!   BatchReadBlobs requests, larger ones through ByteStream; FindMissingBlobs comes
//!   before any upload, and asks only about blobs not yet known to be in the CAS in
//!   this build. A blob that several actions need at once (kiln itself, a toolchain)
//!   is hashed and sent by one of them while the others wait. The empty blob is never
//!   sent.
//! * **Retries by status code.** A call that failed with UNAVAILABLE,
//!   RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED or ABORTED is asked again, at most
//!   [`RETRIES`] times, after a growing pause ([`retryable`], [`backoff`]).
//! * The bearer token (from the environment) goes in the `authorization` metadata of
//!   every call and in no message.

mod cas;
mod exec;
mod store;
mod tree;

pub use exec::RemoteRunner;
pub use store::GrpcStore;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use kiln_cache::{Digest, Error, ErrorKind, LocalStore, Result};
use sha2::Digest as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The hidden kiln subcommand that starts an action's process on a remote worker where
/// no `kiln-launch` lies beside kiln (the same code: [`kiln_launch::run`]).
pub const LAUNCH_COMMAND: &str = "remote-launch";

/// Blobs up to this size travel in batch requests; larger ones through ByteStream.
pub const BATCH_BLOB: u64 = 1 << 20;

/// What a batch request may carry in total (below gRPC's 4 MiB default message size,
/// whatever the server advertises).
const BATCH_TOTAL: u64 = 3 << 20;

/// The largest message kiln accepts from a server.
const MAX_MESSAGE: usize = 64 << 20;

/// The digest function of an engine's REAPI traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestFunction {
    #[default]
    Sha256,
    Blake3,
}

impl DigestFunction {
    /// Its number in REAPI messages (`digest_function` fields).
    pub fn value(self) -> i32 {
        use re::digest_function::Value;
        match self {
            DigestFunction::Sha256 => Value::Sha256 as i32,
            DigestFunction::Blake3 => Value::Blake3 as i32,
        }
    }
}

/// The digest function to use with an engine, from its Capabilities, and whether it
/// can execute actions with it. BLAKE3 (REAPI 2.3's `BLAKE3`, kiln's own digest, so no
/// second hash at all) where its cache takes it and, if it executes, its execution
/// service too; SHA-256 otherwise. An empty list means SHA-256, as before REAPI 2.3.
/// The error completes "the engine …".
pub fn choose_digest_function(
    caps: &re::ServerCapabilities,
) -> std::result::Result<(DigestFunction, bool), String> {
    use re::digest_function::Value;
    let (sha256, blake3) = (Value::Sha256 as i32, Value::Blake3 as i32);
    let cache: Vec<i32> = match caps.cache_capabilities.as_ref() {
        Some(c) if !c.digest_functions.is_empty() => c.digest_functions.clone(),
        _ => vec![sha256],
    };
    let exec: Option<Vec<i32>> = caps
        .execution_capabilities
        .as_ref()
        .filter(|e| e.exec_enabled)
        .map(|e| {
            let mut all = e.digest_functions.clone();
            if e.digest_function != Value::Unknown as i32 {
                all.push(e.digest_function);
            }
            if all.is_empty() {
                all.push(sha256);
            }
            all
        });
    let runs = |f: i32| exec.as_ref().is_some_and(|e| e.contains(&f));
    if cache.contains(&blake3) && (exec.is_none() || runs(blake3)) {
        return Ok((DigestFunction::Blake3, runs(blake3)));
    }
    if cache.contains(&sha256) {
        return Ok((DigestFunction::Sha256, runs(sha256)));
    }
    Err("offers neither SHA-256 nor BLAKE3 digests".into())
}

/// A digest as REAPI names blobs: hash (by the connection's [`DigestFunction`]) and
/// size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireDigest {
    pub hash: [u8; 32],
    pub size: u64,
}

impl WireDigest {
    pub fn of_bytes(function: DigestFunction, bytes: &[u8]) -> WireDigest {
        let hash = match function {
            DigestFunction::Sha256 => sha2::Sha256::digest(bytes).into(),
            DigestFunction::Blake3 => *blake3::hash(bytes).as_bytes(),
        };
        WireDigest {
            hash,
            size: bytes.len() as u64,
        }
    }

    pub fn hex(&self) -> String {
        kiln_cache::Digest::from_bytes(self.hash).to_hex()
    }

    fn proto(&self) -> re::Digest {
        re::Digest {
            hash: self.hex(),
            size_bytes: self.size as i64,
        }
    }

    /// A digest from a server, checked to be of a 32-byte hash's shape.
    fn from_proto(d: &re::Digest) -> Result<WireDigest> {
        let bad = || Error::new(ErrorKind::Corrupt, format!("bad digest `{}`", d.hash));
        if d.hash.len() != 64 || d.size_bytes < 0 {
            return Err(bad());
        }
        // Parsed without slicing the string: a 64-byte hash of multi-byte characters
        // would split one.
        let hash: kiln_cache::Digest = d.hash.parse().map_err(|_| bad())?;
        Ok(WireDigest {
            hash: *hash.as_bytes(),
            size: d.size_bytes as u64,
        })
    }
}

/// Both digests of bytes, computed in one pass (one, when the wire digest is BLAKE3).
pub(crate) struct Hashers {
    function: DigestFunction,
    blake3: blake3::Hasher,
    sha: sha2::Sha256,
    size: u64,
}

impl Hashers {
    pub(crate) fn new(function: DigestFunction) -> Hashers {
        Hashers {
            function,
            blake3: blake3::Hasher::new(),
            sha: sha2::Sha256::default(),
            size: 0,
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.blake3.update(bytes);
        if self.function == DigestFunction::Sha256 {
            self.sha.update(bytes);
        }
        self.size += bytes.len() as u64;
    }

    /// Both digests of a file's content.
    pub(crate) fn of_file(
        function: DigestFunction,
        path: &std::path::Path,
    ) -> Result<(Digest, WireDigest)> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
        let mut hashers = Hashers::new(function);
        // Sized to the file (most inputs are small): a fixed 256 KiB zeroed buffer for
        // every 40-byte source was a tenth of kiln's CPU on a cold remote build, in
        // fresh pages the allocator took from the kernel.
        let len = file.metadata().map_or(0, |m| m.len());
        let mut buf = vec![0u8; (len as usize).clamp(1, 256 * 1024 - 1) + 1];
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

    pub(crate) fn finish(self) -> (Digest, WireDigest) {
        let blake3 = *self.blake3.finalize().as_bytes();
        let hash = match self.function {
            DigestFunction::Sha256 => self.sha.finalize().into(),
            DigestFunction::Blake3 => blake3,
        };
        let wire = WireDigest {
            hash,
            size: self.size,
        };
        (Digest::from_bytes(blake3), wire)
    }
}

/// How many times a call that failed for a passing reason is asked again.
pub const RETRIES: u32 = 4;

/// Whether a call that failed with this status is worth asking again: the engine or a
/// worker went away, was overloaded or too slow, or gave up on a conflict.
pub fn retryable(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Aborted
    )
}

/// The pause before the `attempt`-th try again (1-based): 100 ms doubling, at most
/// 3.2 s, less a little jitter so that many waiting actions do not ask at once.
pub fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << attempt.saturating_sub(1).min(5);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(base - (nanos % (base / 4 + 1)))
}

/// What an error message says when the engine (or a proxy before it) refused the
/// call's credentials.
pub const REFUSED_CREDENTIALS: &str = "the engine refused the credentials";

/// What an error message says when the engine's TLS certificate was not trusted.
pub const UNTRUSTED_CERTIFICATE: &str = "TLS: the engine's certificate is not trusted";

/// Why an engine would not talk to kiln at all: not a passing failure, and not one
/// that checking the address fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// UNAUTHENTICATED or PERMISSION_DENIED, or a proxy's bare HTTP 401 or 403.
    Credentials,
    /// The TLS handshake failed on the server's certificate (an unknown CA, another
    /// name).
    Certificate,
}

/// The refusal a failed call's status is, if any. A proxy that answers 401 with a
/// page of its own instead of a gRPC status reaches tonic as a body it cannot decode,
/// with the HTTP status only in the message.
pub fn refusal(status: &tonic::Status) -> Option<Refusal> {
    use tonic::Code;
    let message = status.message();
    let http = |code: &str| message.contains(&format!("response with status: {code}"));
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => Some(Refusal::Credentials),
        Code::Internal if http("401") || http("403") => Some(Refusal::Credentials),
        Code::Unavailable | Code::Unknown if message.contains("peer certificate") => {
            Some(Refusal::Certificate)
        }
        _ => None,
    }
}

/// Whether a store error says the engine refused kiln (see [`Refusal`]).
pub fn is_refusal(e: &Error) -> bool {
    let m = e.message();
    m.contains(REFUSED_CREDENTIALS) || m.contains(UNTRUSTED_CERTIFICATE)
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
    function: DigestFunction,
    /// Wire digests of blobs by BLAKE3 digest, computed here from their bytes (see the
    /// module comment).
    known: Mutex<HashMap<Digest, WireDigest>>,
    /// Wire digests a remote's result names for blobs by BLAKE3 digest: claims, used
    /// to fetch a blob that is then checked against both.
    claims: Mutex<HashMap<Digest, WireDigest>>,
    /// The local store, whose `blob_sha256` table keeps SHA-256 digests across builds.
    local: OnceLock<Arc<LocalStore>>,
    /// Blobs known to be in the engine's CAS in this build, or being sent.
    uploads: cas::Uploads,
    /// Small blobs being read, sent together.
    reads: cas::Reads,
    /// Whether the engine runs actions (its Capabilities say so).
    pub can_execute: bool,
}

impl Remote {
    /// Connects and asks the engine's Capabilities: an engine that cannot be reached,
    /// speaks no digest function kiln does or refuses the credentials fails here, once,
    /// before the build starts.
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
            function: DigestFunction::Sha256,
            known: Mutex::new(HashMap::new()),
            claims: Mutex::new(HashMap::new()),
            local: OnceLock::new(),
            uploads: cas::Uploads::default(),
            reads: cas::Reads::default(),
            can_execute: false,
        };
        let caps = remote.capabilities()?;
        let (function, can_execute) =
            choose_digest_function(&caps).map_err(|why| remote_err(format!("the engine {why}")))?;
        remote.function = function;
        remote.can_execute = can_execute;
        remote.learn(Digest::of_bytes(b""), WireDigest::of_bytes(function, b""));
        Ok(remote)
    }

    /// Keeps the SHA-256 digests kiln computes in `local`'s index, and looks them up
    /// there, so that a later build hashes nothing again.
    pub fn with_local_store(&self, local: Arc<LocalStore>) {
        let _ = self.local.set(local);
    }

    /// The endpoint, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The digest function of this connection's traffic.
    pub fn digest_function(&self) -> DigestFunction {
        self.function
    }

    /// The engine's Capabilities.
    fn capabilities(&self) -> Result<re::ServerCapabilities> {
        use re::capabilities_client::CapabilitiesClient;
        let client = CapabilitiesClient::with_interceptor(self.channel.clone(), self.auth.clone());
        let req = re::GetCapabilitiesRequest {
            instance_name: self.instance.clone(),
        };
        self.call("ask its capabilities", Duration::from_secs(10), || {
            let (mut client, req) = (client.clone(), req.clone());
            async move { client.get_capabilities(req).await }
        })
    }

    /// Runs a call on the runtime, with a deadline for each try, turning a gRPC error
    /// into a store error that says what kiln was doing. A call that failed for a
    /// passing reason ([`retryable`]) is made again, up to [`RETRIES`] times.
    fn call<T, F, Fut>(&self, what: &str, timeout: Duration, mut make: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut attempt = 0;
        loop {
            let got = self
                .rt
                .block_on(async { tokio::time::timeout(timeout, make()).await });
            let status = match got {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded(format!(
                    "no answer within {} s",
                    timeout.as_secs()
                )),
            };
            attempt += 1;
            let passing = retryable(status.code()) && refusal(&status).is_none();
            if attempt > RETRIES || !passing {
                return Err(self.status_error(what, &status));
            }
            std::thread::sleep(backoff(attempt));
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
        let code = status.code();
        let text = match refusal(status) {
            Some(Refusal::Credentials) => {
                let advice = match self.auth.0 {
                    Some(_) => "the token kiln sent is not one it takes",
                    None => "kiln sent no token: set the variable `[remote] token_env` names (KILN_REMOTE_TOKEN by default)",
                };
                format!(
                    "{}: {what}: {REFUSED_CREDENTIALS}: {message} ({code:?}); {advice}",
                    self.url
                )
            }
            Some(Refusal::Certificate) => format!(
                "{}: {what}: {UNTRUSTED_CERTIFICATE} ({message}); trust its CA with SSL_CERT_FILE",
                self.url
            ),
            None => format!("{}: {what}: {message} ({code:?})", self.url),
        };
        Error::new(ErrorKind::Remote, text)
    }

    /// The wire digest of bytes.
    pub(crate) fn digest_bytes(&self, bytes: &[u8]) -> WireDigest {
        WireDigest::of_bytes(self.function, bytes)
    }

    pub(crate) fn hashers(&self) -> Hashers {
        Hashers::new(self.function)
    }

    /// Records a blob's wire digest beside its BLAKE3 digest: both computed here from
    /// the blob's bytes (kept for later builds too).
    pub(crate) fn learn(&self, blake3: Digest, wire: WireDigest) {
        let new = self.known.lock().unwrap().insert(blake3, wire) != Some(wire);
        if let (true, DigestFunction::Sha256, Some(local)) = (new, self.function, self.local.get())
        {
            local.note_sha256(&blake3, wire.hash, wire.size);
        }
    }

    /// Records what a remote's result says a blob's wire digest is (checked when the
    /// blob is fetched).
    pub(crate) fn claim(&self, blake3: Digest, wire: WireDigest) {
        if self.wire_of(&blake3).is_none() {
            self.claims.lock().unwrap().insert(blake3, wire);
        }
    }

    /// The wire digest of a blob kiln hashed itself, in this build or an earlier one.
    pub(crate) fn wire_of(&self, blake3: &Digest) -> Option<WireDigest> {
        if let Some(wire) = self.known.lock().unwrap().get(blake3) {
            return Some(*wire);
        }
        let local = self.local.get()?;
        let wire = match self.function {
            DigestFunction::Sha256 => {
                let (hash, size) = local.sha256_of(blake3).ok()??;
                WireDigest { hash, size }
            }
            // BLAKE3 on the wire: the digest is the same; the size is the blob's.
            DigestFunction::Blake3 => {
                let size = std::fs::metadata(local.blob_path(blake3)).ok()?.len();
                WireDigest {
                    hash: *blake3.as_bytes(),
                    size,
                }
            }
        };
        self.known.lock().unwrap().insert(*blake3, wire);
        Some(wire)
    }

    /// The wire digest to fetch a blob by: known, or claimed by a remote's result.
    pub(crate) fn wire_to_fetch(&self, blake3: &Digest) -> Option<WireDigest> {
        self.wire_of(blake3)
            .or_else(|| self.claims.lock().unwrap().get(blake3).copied())
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

#[cfg(test)]
mod tests {
    use super::*;
    use re::digest_function::Value;

    fn caps(cache: &[Value], exec: Option<(&[Value], Value)>) -> re::ServerCapabilities {
        re::ServerCapabilities {
            cache_capabilities: Some(re::CacheCapabilities {
                digest_functions: cache.iter().map(|v| *v as i32).collect(),
                ..Default::default()
            }),
            execution_capabilities: exec.map(|(all, one)| re::ExecutionCapabilities {
                digest_function: one as i32,
                digest_functions: all.iter().map(|v| *v as i32).collect(),
                exec_enabled: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// BLAKE3 where every service kiln uses offers it, SHA-256 otherwise (what casd and
    /// BuildGrid offer), and an engine with neither is refused.
    #[test]
    fn the_digest_function_follows_the_capabilities() {
        use DigestFunction::{Blake3, Sha256};
        let both = [Value::Sha256, Value::Blake3];
        // casd: SHA-256 and others, no BLAKE3.
        let casd = [Value::Sha256, Value::Sha1, Value::Sha384, Value::Sha512];
        let cases = [
            (
                caps(&casd, Some((&casd, Value::Sha256))),
                Ok((Sha256, true)),
            ),
            (
                caps(&both, Some((&both, Value::Sha256))),
                Ok((Blake3, true)),
            ),
            // A cache alone (no execution) with BLAKE3.
            (caps(&both, None), Ok((Blake3, false))),
            // The cache offers BLAKE3, execution only SHA-256: SHA-256 for both.
            (
                caps(&both, Some((&[Value::Sha256], Value::Sha256))),
                Ok((Sha256, true)),
            ),
            // Before REAPI 2.3: empty lists and the single execution field.
            (caps(&[], Some((&[], Value::Sha256))), Ok((Sha256, true))),
            (caps(&[], None), Ok((Sha256, false))),
            // Execution in BLAKE3 only, cache in both: BLAKE3.
            (
                caps(&both, Some((&[Value::Blake3], Value::Unknown))),
                Ok((Blake3, true)),
            ),
            // A cache in SHA-256 whose execution takes only SHA-1: a cache, no executor.
            (
                caps(&[Value::Sha256], Some((&[Value::Sha1], Value::Sha1))),
                Ok((Sha256, false)),
            ),
        ];
        for (i, (caps, want)) in cases.into_iter().enumerate() {
            assert_eq!(choose_digest_function(&caps), want, "case {i}");
        }
        let neither = caps(&[Value::Sha1, Value::Md5], None);
        assert!(choose_digest_function(&neither).is_err());
    }

    /// What is asked again goes by the status code, not the message.
    #[test]
    fn retries_go_by_status_code() {
        use tonic::Code;
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
            Code::Aborted,
        ] {
            assert!(retryable(code), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::FailedPrecondition,
            Code::Internal,
            Code::Unknown,
        ] {
            assert!(!retryable(code), "{code:?}");
        }
        // A message that reads like a passing failure does not make one.
        let status = tonic::Status::invalid_argument("(Unavailable) stream");
        assert!(!retryable(status.code()));
    }

    /// Refused credentials (a gRPC status or a proxy's bare HTTP answer) and an
    /// untrusted certificate are told apart from passing failures.
    #[test]
    fn refusals_are_told_apart() {
        use tonic::{Code, Status};
        let cases = [
            (Status::unauthenticated("no token"), Some(Refusal::Credentials)),
            (Status::permission_denied("read only"), Some(Refusal::Credentials)),
            (
                Status::internal("protocol error: received message with invalid compression flag: 60 (valid flags are 0 and 1) while receiving response with status: 401 Unauthorized"),
                Some(Refusal::Credentials),
            ),
            (
                Status::unavailable("invalid peer certificate: UnknownIssuer"),
                Some(Refusal::Certificate),
            ),
            (Status::unavailable("connection refused"), None),
            (Status::internal("status: 500"), None),
            (Status::new(Code::NotFound, "401"), None),
        ];
        for (status, want) in cases {
            assert_eq!(refusal(&status), want, "{status:?}");
        }
    }

    /// Pauses grow, stay bounded, and the retries end.
    #[test]
    fn backoff_grows_and_is_bounded() {
        let pauses: Vec<Duration> = (1..=RETRIES + 3).map(backoff).collect();
        for (i, pause) in pauses.iter().enumerate() {
            let base = 100u64 << (i as u32).min(5);
            assert!(*pause <= Duration::from_millis(base), "{i}: {pause:?}");
            assert!(
                *pause >= Duration::from_millis(base * 3 / 4),
                "{i}: {pause:?}"
            );
        }
        assert!(pauses.iter().all(|p| *p <= Duration::from_millis(3200)));
        let total: Duration = (1..=RETRIES).map(backoff).sum();
        assert!(total <= Duration::from_secs(2), "{total:?}");
    }

    /// One pass gives both digests; with BLAKE3 on the wire the two are the same.
    #[test]
    fn hashers_give_both_digests() {
        let mut h = Hashers::new(DigestFunction::Sha256);
        h.update(b"hello ");
        h.update(b"world");
        let (blake3, wire) = h.finish();
        assert_eq!(blake3, Digest::of_bytes(b"hello world"));
        assert_eq!(
            wire,
            WireDigest::of_bytes(DigestFunction::Sha256, b"hello world")
        );
        assert_eq!(
            wire.hex(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let mut h = Hashers::new(DigestFunction::Blake3);
        h.update(b"hello world");
        let (blake3, wire) = h.finish();
        assert_eq!(wire.hash, *blake3.as_bytes());
        assert_eq!(wire.size, 11);
    }
}
