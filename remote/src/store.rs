//! [`GrpcStore`]: kiln's [`Store`] on an engine's ActionCache and CAS.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kiln_cache::{ActionResult, Digest, Error, ErrorKind, Result, Store};
use re::action_cache_client::ActionCacheClient;

use crate::cas::Blob;
use crate::{corrupt, re, Hashers, Remote, WireDigest, MAX_MESSAGE};

/// The type of the `auxiliary_metadata` entry that carries kiln's own record of a
/// result (its BLAKE3 digests) in a REAPI ActionResult.
const KILN_RESULT_TYPE: &str = "type.kiln.dev/kiln.ActionResult.v1";

/// A [`Store`] on an engine's ActionCache and CAS (see the crate comment).
pub struct GrpcStore {
    remote: Arc<Remote>,
}

impl GrpcStore {
    pub fn new(remote: Arc<Remote>) -> GrpcStore {
        GrpcStore { remote }
    }

    pub fn url(&self) -> &str {
        self.remote.url()
    }

    fn ac(&self) -> ActionCacheClient<crate::Service> {
        ActionCacheClient::with_interceptor(self.remote.channel.clone(), self.remote.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// Fetches a blob into `out`, checked against both digests; a pair that passed is
    /// learned.
    fn fetch_checked(&self, digest: &Digest, out: &mut File) -> Result<bool> {
        let Some(sha) = self.remote.wire_to_fetch(digest) else {
            return Ok(false);
        };
        match self.remote.download(sha, out)? {
            None => Ok(false),
            Some(got) if got == *digest => {
                self.remote.learn(*digest, sha);
                Ok(true)
            }
            Some(_) => Err(corrupt(format!(
                "{}: blob {} does not match its BLAKE3 digest {}",
                self.remote.url(),
                sha.hex(),
                digest.short()
            ))),
        }
    }

    /// Hashes a file both ways, learns the pair, and sends it if the CAS lacks it.
    fn put_path(&self, path: &Path) -> Result<Digest> {
        let (digest, sha) = Hashers::of_file(self.remote.digest_function(), path)?;
        self.remote.learn(digest, sha);
        self.send(sha, path)?;
        Ok(digest)
    }

    fn send(&self, sha: WireDigest, path: &Path) -> Result<()> {
        let blobs = BTreeMap::from([(sha, Blob::File(path.to_path_buf()))]);
        self.remote.upload_missing(&blobs)?;
        Ok(())
    }
}

/// The ActionCache key of a kiln action key.
pub(crate) fn ac_digest(remote: &Remote, key: &Digest) -> WireDigest {
    remote.digest_bytes(format!("kiln action {}", key.to_hex()).as_bytes())
}

impl Store for GrpcStore {
    fn contains(&self, digest: &Digest) -> Result<bool> {
        let Some(sha) = self.remote.wire_to_fetch(digest) else {
            return Ok(false);
        };
        Ok(sha.size == 0 || !self.remote.find_missing(&[sha])?.contains(&sha))
    }

    fn read(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let mut tmp = tempfile::tempfile().map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
        if !self.fetch_checked(digest, &mut tmp)? {
            return Ok(None);
        }
        use std::io::Seek;
        let mut bytes = Vec::new();
        tmp.rewind()
            .and_then(|_| tmp.read_to_end(&mut bytes))
            .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
        Ok(Some(bytes))
    }

    fn fetch(&self, digest: &Digest, dest: &Path) -> Result<bool> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| Error::io("create a file in", dir, e))?;
        if !self.fetch_checked(digest, tmp.as_file_mut())? {
            return Ok(false);
        }
        tmp.persist(dest)
            .map_err(|e| Error::io("write", dest, e.error))?;
        Ok(true)
    }

    fn fetch_into(&self, digest: &Digest, out: &mut File) -> Result<bool> {
        self.fetch_checked(digest, out)
    }

    fn fetch_verifies(&self) -> bool {
        true
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let (digest, sha) = (Digest::of_bytes(bytes), self.remote.digest_bytes(bytes));
        self.remote.learn(digest, sha);
        let blobs = BTreeMap::from([(sha, Blob::Bytes(bytes.to_vec()))]);
        self.remote.upload_missing(&blobs)?;
        Ok(digest)
    }

    fn put_file(&self, path: &Path) -> Result<Digest> {
        self.put_path(path)
    }

    /// A local blob whose wire digest kiln computed before (in this build or, from the
    /// local store's index, an earlier one) is not hashed again.
    fn put_blob(&self, digest: &Digest, path: &Path) -> Result<Digest> {
        match self.remote.wire_of(digest) {
            Some(sha) => {
                self.send(sha, path)?;
                Ok(*digest)
            }
            None => self.put_path(path),
        }
    }

    fn get_action(&self, key: &Digest) -> Result<Option<ActionResult>> {
        let req = re::GetActionResultRequest {
            instance_name: self.remote.instance.clone(),
            action_digest: Some(ac_digest(&self.remote, key).proto()),
            inline_stdout: false,
            inline_stderr: false,
            inline_output_files: Vec::new(),
            digest_function: self.remote.digest_function().value(),
        };
        let ac = self.ac();
        // A miss is an answer, not an error: NOT_FOUND becomes None.
        let got = self
            .remote
            .call("look up a result", Duration::from_secs(30), || {
                let (mut ac, req) = (ac.clone(), req.clone());
                async move {
                    match ac.get_action_result(req).await {
                        Ok(resp) => Ok(resp.map(Some)),
                        Err(status) if status.code() == tonic::Code::NotFound => {
                            Ok(tonic::Response::new(None))
                        }
                        Err(status) => Err(status),
                    }
                }
            })?;
        match got {
            Some(result) => self.read_reapi(&result).map(Some),
            None => Ok(None),
        }
    }

    fn put_action(&self, key: &Digest, result: &ActionResult) -> Result<()> {
        let action_result = self.to_reapi(result)?;
        let req = re::UpdateActionResultRequest {
            instance_name: self.remote.instance.clone(),
            action_digest: Some(ac_digest(&self.remote, key).proto()),
            action_result: Some(action_result),
            results_cache_policy: None,
            digest_function: self.remote.digest_function().value(),
        };
        let ac = self.ac();
        self.remote
            .call("store a result", Duration::from_secs(30), || {
                let (mut ac, req) = (ac.clone(), req.clone());
                async move { ac.update_action_result(req).await }
            })?;
        Ok(())
    }
}

impl GrpcStore {
    /// kiln's result as a REAPI ActionResult carrying kiln's own record.
    fn to_reapi(&self, result: &ActionResult) -> Result<re::ActionResult> {
        // Digests kiln computed, or (for a result read from this engine and stored
        // again) the ones the engine gave: a result names blobs, it vouches for none.
        let sha = |d: &Digest| {
            self.remote.wire_to_fetch(d).ok_or_else(|| {
                let message = format!("blob {} was not sent before its result", d.short());
                Error::new(ErrorKind::Remote, message)
            })
        };
        let output_files = result
            .outputs
            .iter()
            .map(|o| {
                Ok(re::OutputFile {
                    path: o.path.clone(),
                    digest: Some(sha(&o.digest)?.proto()),
                    is_executable: o.executable,
                    contents: Vec::new(),
                    node_properties: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let record = serde_json::to_vec(result).map_err(|e| corrupt(e.to_string()))?;
        let metadata = re::ExecutedActionMetadata {
            auxiliary_metadata: vec![bazel_remote_apis::google::protobuf::Any {
                type_url: KILN_RESULT_TYPE.into(),
                value: record,
            }],
            ..Default::default()
        };
        Ok(re::ActionResult {
            output_files,
            exit_code: result.exit_code,
            stdout_digest: Some(sha(&result.stdout)?.proto()),
            stderr_digest: Some(sha(&result.stderr)?.proto()),
            execution_metadata: Some(metadata),
            ..Default::default()
        })
    }

    /// kiln's result from a REAPI ActionResult: its record, checked to agree with the
    /// REAPI fields, whose SHA-256 digests are learned for the fetches that follow.
    fn read_reapi(&self, result: &re::ActionResult) -> Result<ActionResult> {
        let url = self.remote.url();
        let record = result
            .execution_metadata
            .as_ref()
            .and_then(|m| {
                m.auxiliary_metadata
                    .iter()
                    .find(|a| a.type_url == KILN_RESULT_TYPE)
            })
            .ok_or_else(|| corrupt(format!("{url}: a result without kiln's record")))?;
        let ours: ActionResult = serde_json::from_slice(&record.value).map_err(|e| {
            corrupt(format!(
                "{url}: a result whose kiln record does not decode: {e}"
            ))
        })?;
        if result.output_files.len() != ours.outputs.len() {
            return Err(corrupt(format!(
                "{url}: a result whose outputs disagree with kiln's record"
            )));
        }
        let mut pairs = Vec::new();
        for file in &result.output_files {
            let mine = ours.output(&file.path).ok_or_else(|| {
                corrupt(format!(
                    "{url}: a result whose outputs disagree with kiln's record"
                ))
            })?;
            let sha = WireDigest::from_proto(
                file.digest
                    .as_ref()
                    .ok_or_else(|| corrupt("an output without a digest"))?,
            )?;
            if sha.size != mine.size {
                return Err(corrupt(format!(
                    "{url}: a result whose sizes disagree with kiln's record"
                )));
            }
            pairs.push((mine.digest, sha));
        }
        for (digest, given) in [
            (ours.stdout, &result.stdout_digest),
            (ours.stderr, &result.stderr_digest),
        ] {
            if let Some(d) = given {
                pairs.push((digest, WireDigest::from_proto(d)?));
            }
        }
        // A pair is only a claim until the blob is fetched and checked both ways.
        for (digest, sha) in pairs {
            self.remote.claim(digest, sha);
        }
        Ok(ours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_testkit::Casd;

    /// A server that answers a blob's SHA-256 with bytes whose BLAKE3 digest is not the
    /// one kiln's record names (a record and REAPI fields that disagree) is caught when
    /// the blob is fetched: nothing is written under the record's digest.
    #[test]
    fn a_blob_whose_two_digests_disagree_is_refused() {
        let casd = Casd::start();
        let remote = Arc::new(Remote::connect(&casd.url(), &crate::Options::default()).unwrap());
        let store = GrpcStore::new(remote.clone());
        let honest = Digest::of_bytes(b"honest\n");
        store.put_bytes(b"forged\n").unwrap();
        // The claim a bad result makes: the honest digest is these other bytes.
        remote.claim(honest, remote.digest_bytes(b"forged\n"));
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let err = store.fetch(&honest, &dest).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(!dest.exists());
        assert!(store.read(&honest).is_err());
        // The honest pairing fetches.
        let real = store.put_bytes(b"honest\n").unwrap();
        assert!(store.fetch(&real, &dest).unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"honest\n");
    }

    /// A result that claims a blob is empty (size 0, which is never asked of the
    /// engine) under the digest of other bytes: with BLAKE3 on the wire, where the
    /// claimed hash is the BLAKE3 digest, nothing may be written under that digest.
    #[test]
    fn an_empty_blob_claimed_under_another_digest_is_refused() {
        let casd = Casd::start();
        for function in [crate::DigestFunction::Sha256, crate::DigestFunction::Blake3] {
            let mut remote = Remote::connect(&casd.url(), &crate::Options::default()).unwrap();
            remote.function = function;
            let remote = Arc::new(remote);
            let store = GrpcStore::new(remote.clone());
            let honest = Digest::of_bytes(b"honest\n");
            let hash = match function {
                crate::DigestFunction::Blake3 => *honest.as_bytes(),
                crate::DigestFunction::Sha256 => remote.digest_bytes(b"honest\n").hash,
            };
            remote.claim(honest, WireDigest { hash, size: 0 });
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("out");
            let err = store.fetch(&honest, &dest).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{function:?}: {err}");
            assert!(!dest.exists(), "{function:?}");
        }
    }
}
