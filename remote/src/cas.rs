//! Blob transfer with an engine's CAS: FindMissingBlobs, BatchUpdateBlobs,
//! BatchReadBlobs, and ByteStream for blobs larger than [`crate::BATCH_BLOB`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use kiln_cache::{Digest, Error, ErrorKind, Result};
use re::content_addressable_storage_client::ContentAddressableStorageClient;

use crate::{corrupt, re, Remote, Service, WireDigest, BATCH_BLOB, BATCH_TOTAL, MAX_MESSAGE};

/// The size of a ByteStream chunk.
const CHUNK: usize = 256 * 1024;

/// Where an upload's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Blob {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Blob {
    fn bytes(&self) -> Result<Vec<u8>> {
        match self {
            Blob::Bytes(b) => Ok(b.clone()),
            Blob::File(path) => std::fs::read(path).map_err(|e| Error::io("read", path, e)),
        }
    }
}

/// What this build knows of blobs in the engine's CAS: those found there or sent, and
/// those an action is sending now (which others wait for rather than send too).
#[derive(Default)]
pub(crate) struct Uploads {
    state: Mutex<HashMap<WireDigest, Upload>>,
    changed: Condvar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    Present,
    Sending,
}

impl Uploads {
    /// Of these blobs, those not known to be in the CAS.
    fn unknown(&self, blobs: &[WireDigest]) -> Vec<WireDigest> {
        let state = self.state.lock().unwrap();
        blobs
            .iter()
            .filter(|b| b.size > 0 && state.get(b) != Some(&Upload::Present))
            .copied()
            .collect()
    }

    fn mark_present(&self, blobs: impl IntoIterator<Item = WireDigest>) {
        let mut state = self.state.lock().unwrap();
        for blob in blobs {
            state.insert(blob, Upload::Present);
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Takes the sending of each missing blob no other action is sending; returns
    /// (taken, being sent by others).
    fn claim(&self, missing: &[WireDigest]) -> (Vec<WireDigest>, Vec<WireDigest>) {
        let mut state = self.state.lock().unwrap();
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for blob in missing {
            match state.get(blob) {
                Some(Upload::Present) => {}
                Some(Upload::Sending) => theirs.push(*blob),
                None => {
                    state.insert(*blob, Upload::Sending);
                    mine.push(*blob);
                }
            }
        }
        (mine, theirs)
    }

    /// Gives up sending these (the upload failed): another action may try.
    fn release(&self, blobs: &[WireDigest]) {
        let mut state = self.state.lock().unwrap();
        for blob in blobs {
            if state.get(blob) == Some(&Upload::Sending) {
                state.remove(blob);
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until none of these is being sent; returns those that were not sent.
    fn wait(&self, blobs: &[WireDigest]) -> Vec<WireDigest> {
        let mut state = self.state.lock().unwrap();
        while blobs.iter().any(|b| state.get(b) == Some(&Upload::Sending)) {
            state = self.changed.wait(state).unwrap();
        }
        blobs
            .iter()
            .filter(|b| state.get(b) != Some(&Upload::Present))
            .copied()
            .collect()
    }

    /// Forgets what was found in the CAS (an engine that says an input is missing may
    /// have evicted it since).
    pub(crate) fn forget(&self) {
        let mut state = self.state.lock().unwrap();
        state.retain(|_, u| *u == Upload::Sending);
    }
}

/// Small blobs that concurrent actions read, sent together. A reader that finds no
/// batch in flight sends everything queued (up to [`BATCH_TOTAL`]) as one
/// BatchReadBlobs and hands each blob to its readers; the others queue theirs and wait.
/// A warm build from a gRPC cache reads one output for each of thousands of results:
/// one request each cost the engine and kiln more than the lookups themselves.
#[derive(Default)]
pub(crate) struct Reads {
    state: Mutex<ReadState>,
    changed: Condvar,
}

/// A blob's bytes, None if the CAS lacks it, or the error of the batch that read it.
type ReadOutcome = std::result::Result<Option<std::sync::Arc<Vec<u8>>>, String>;

#[derive(Default)]
struct ReadState {
    /// Blobs no batch has taken yet, in the order they were asked for.
    queued: Vec<WireDigest>,
    /// How many readers wait for each blob (queued, in flight or read).
    readers: HashMap<WireDigest, usize>,
    /// Blobs a batch read, until their last reader takes them.
    read: HashMap<WireDigest, ReadOutcome>,
    sending: bool,
}

impl Reads {
    /// `sha`'s bytes (checked), None if the CAS lacks it; `batch` reads a batch.
    fn read(
        &self,
        sha: WireDigest,
        batch: impl Fn(&[WireDigest]) -> Result<Vec<(WireDigest, Vec<u8>)>>,
    ) -> Result<Option<std::sync::Arc<Vec<u8>>>> {
        let mut state = self.state.lock().unwrap();
        let readers = state.readers.entry(sha).or_insert(0);
        *readers += 1;
        if *readers == 1 {
            state.queued.push(sha);
        }
        loop {
            if state.read.contains_key(&sha) {
                let readers = state.readers.get_mut(&sha).expect("a reader is counted");
                *readers -= 1;
                let outcome = match *readers {
                    0 => {
                        state.readers.remove(&sha);
                        state.read.remove(&sha).expect("checked above")
                    }
                    _ => state.read[&sha].clone(),
                };
                return outcome.map_err(|message| Error::new(ErrorKind::Remote, message));
            }
            if state.sending || state.queued.is_empty() {
                state = self.changed.wait(state).unwrap();
                continue;
            }
            let (mut size, mut take) = (0, 0);
            for queued in &state.queued {
                if take > 0 && size + queued.size > BATCH_TOTAL {
                    break;
                }
                size += queued.size;
                take += 1;
            }
            let shas: Vec<WireDigest> = state.queued.drain(..take).collect();
            state.sending = true;
            drop(state);
            let got = batch(&shas);
            state = self.state.lock().unwrap();
            state.sending = false;
            match got {
                Ok(got) => {
                    let mut got: HashMap<_, _> = got.into_iter().collect();
                    for sha in shas {
                        let bytes = got.remove(&sha).map(std::sync::Arc::new);
                        state.read.insert(sha, Ok(bytes));
                    }
                }
                Err(e) => {
                    for sha in shas {
                        state.read.insert(sha, Err(e.message().to_string()));
                    }
                }
            }
            self.changed.notify_all();
        }
    }
}

/// The time a transfer of `size` bytes is given: 30 s plus 1 MiB/s.
fn budget(size: u64) -> Duration {
    Duration::from_secs(30 + size / (1 << 20))
}

impl Remote {
    fn cas(&self) -> ContentAddressableStorageClient<Service> {
        ContentAddressableStorageClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn bytestream(&self) -> ByteStreamClient<Service> {
        ByteStreamClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// Of these blobs, those the CAS lacks, asking only about those this build has not
    /// yet found there or sent.
    pub(crate) fn find_missing(&self, blobs: &[WireDigest]) -> Result<HashSet<WireDigest>> {
        let mut wanted = self.uploads.unknown(blobs);
        wanted.sort();
        wanted.dedup();
        let mut missing = HashSet::new();
        for chunk in wanted.chunks(4096) {
            let req = re::FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: chunk.iter().map(WireDigest::proto).collect(),
                digest_function: self.function.value(),
            };
            let cas = self.cas();
            let resp = self.call("find missing blobs", budget(0), || {
                let (mut cas, req) = (cas.clone(), req.clone());
                async move { cas.find_missing_blobs(req).await }
            })?;
            let mut lacking = HashSet::new();
            for d in &resp.missing_blob_digests {
                lacking.insert(WireDigest::from_proto(d)?);
            }
            let present = chunk.iter().filter(|b| !lacking.contains(b)).copied();
            self.uploads.mark_present(present);
            missing.extend(lacking);
        }
        Ok(missing)
    }

    /// Sends the blobs the CAS lacks (asked first); a blob another action is sending
    /// is waited for rather than sent twice. Returns how many bytes this call sent.
    pub(crate) fn upload_missing(&self, blobs: &BTreeMap<WireDigest, Blob>) -> Result<u64> {
        let all: Vec<WireDigest> = blobs.keys().copied().collect();
        let missing: Vec<WireDigest> = self.find_missing(&all)?.into_iter().collect();
        let (mine, theirs) = self.uploads.claim(&missing);
        let mut sent = self.send_claimed(blobs, &mine)?;
        let left = self.uploads.wait(&theirs);
        if !left.is_empty() {
            // Their upload failed: this action sends them itself.
            let (mine, _) = self.uploads.claim(&left);
            sent += self.send_claimed(blobs, &mine)?;
        }
        Ok(sent)
    }

    /// Sends blobs whose sending this call claimed, marking them present, or releasing
    /// them on failure.
    fn send_claimed(&self, blobs: &BTreeMap<WireDigest, Blob>, mine: &[WireDigest]) -> Result<u64> {
        match self.send(blobs, mine) {
            Ok(sent) => {
                self.uploads.mark_present(mine.iter().copied());
                Ok(sent)
            }
            Err(e) => {
                self.uploads.release(mine);
                Err(e)
            }
        }
    }

    fn send(&self, blobs: &BTreeMap<WireDigest, Blob>, which: &[WireDigest]) -> Result<u64> {
        let mut sent = 0;
        let mut batch: Vec<(WireDigest, Vec<u8>)> = Vec::new();
        let mut batch_size = 0;
        for (sha, blob) in which.iter().filter_map(|s| blobs.get(s).map(|b| (s, b))) {
            if sha.size > BATCH_BLOB {
                self.write_stream(*sha, blob)?;
                sent += sha.size;
                continue;
            }
            if batch_size + sha.size > BATCH_TOTAL {
                self.write_batch(std::mem::take(&mut batch))?;
                batch_size = 0;
            }
            let bytes = blob.bytes()?;
            if self.digest_bytes(&bytes) != *sha {
                return Err(corrupt(format!(
                    "a blob changed while it was sent ({:?})",
                    blob
                )));
            }
            batch_size += sha.size;
            sent += sha.size;
            batch.push((*sha, bytes));
        }
        if !batch.is_empty() {
            self.write_batch(batch)?;
        }
        Ok(sent)
    }

    fn write_batch(&self, blobs: Vec<(WireDigest, Vec<u8>)>) -> Result<()> {
        let size: u64 = blobs.iter().map(|(s, _)| s.size).sum();
        let req = re::BatchUpdateBlobsRequest {
            instance_name: self.instance.clone(),
            requests: blobs
                .into_iter()
                .map(|(sha, data)| re::batch_update_blobs_request::Request {
                    digest: Some(sha.proto()),
                    data,
                    compressor: 0,
                })
                .collect(),
            digest_function: self.function.value(),
        };
        let cas = self.cas();
        let resp = self.call("upload blobs", budget(size), || {
            let (mut cas, req) = (cas.clone(), req.clone());
            async move { cas.batch_update_blobs(req).await }
        })?;
        for r in resp.responses {
            if let Some(status) = r.status.filter(|s| s.code != 0) {
                let what = r.digest.map(|d| d.hash).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Remote,
                    format!("{}: upload blob {what}: {}", self.url, status.message),
                ));
            }
        }
        Ok(())
    }

    /// Sends one large blob through ByteStream.Write, streamed from its file.
    fn write_stream(&self, sha: WireDigest, blob: &Blob) -> Result<()> {
        let resource = format!(
            "{}uploads/{}/blobs/{}/{}",
            self.instance_prefix(),
            upload_id(),
            sha.hex(),
            sha.size
        );
        let mut reader: Box<dyn Read + Send> = match blob {
            Blob::Bytes(b) => Box::new(std::io::Cursor::new(b.clone())),
            Blob::File(path) => Box::new(File::open(path).map_err(|e| Error::io("read", path, e))?),
        };
        let mut offset = 0u64;
        let mut first = true;
        let mut hashers = self.hashers();
        let mut chunks = Vec::new();
        // Read it whole before sending (blobs large enough for this are rare and the
        // checks must pass before any byte goes).
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = read_full(&mut reader, &mut buf)
                .map_err(|e| Error::new(ErrorKind::Io, format!("read {blob:?}: {e}")))?;
            buf.truncate(n);
            hashers.update(&buf);
            let finish = offset + n as u64 >= sha.size || n == 0;
            chunks.push(WriteRequest {
                resource_name: if first {
                    resource.clone()
                } else {
                    String::new()
                },
                write_offset: offset as i64,
                finish_write: finish,
                data: buf,
            });
            first = false;
            offset += n as u64;
            if finish {
                break;
            }
        }
        if hashers.finish().1 != sha {
            return Err(corrupt(format!(
                "a blob changed while it was sent ({blob:?})"
            )));
        }
        let client = self.bytestream();
        let resp = self.call("upload a blob", budget(sha.size), || {
            let (mut client, chunks) = (client.clone(), chunks.clone());
            async move { client.write(tokio_stream::iter(chunks)).await }
        })?;
        if resp.committed_size != sha.size as i64 && resp.committed_size != -1 {
            return Err(Error::new(
                ErrorKind::Remote,
                format!(
                    "{}: upload {}: the server kept {} of {} bytes",
                    self.url,
                    sha.hex(),
                    resp.committed_size,
                    sha.size
                ),
            ));
        }
        Ok(())
    }

    /// Writes a blob to `out` (an empty file), checking it against `sha`; returns its
    /// BLAKE3 digest, or None if the CAS does not hold it.
    pub(crate) fn download(&self, sha: WireDigest, out: &mut File) -> Result<Option<Digest>> {
        let bytes = match sha.size {
            // Never asked for; but an empty blob has one digest, which a result's
            // claim of size 0 must name (with BLAKE3 it is what kiln stores it under).
            0 if sha != self.digest_bytes(b"") => {
                return Err(corrupt(format!(
                    "{}: blob {} does not match its digest",
                    self.url,
                    sha.hex()
                )))
            }
            0 => Some(std::sync::Arc::new(Vec::new())),
            size if size <= BATCH_BLOB => self.reads.read(sha, |shas| self.read_batch(shas))?,
            _ => return self.read_stream(sha, out),
        };
        let Some(bytes) = bytes else { return Ok(None) };
        out.write_all(&bytes)
            .map_err(|e| Error::new(ErrorKind::Io, format!("write a downloaded blob: {e}")))?;
        let blake3 = match self.function {
            crate::DigestFunction::Blake3 => Digest::from_bytes(sha.hash),
            crate::DigestFunction::Sha256 => Digest::of_bytes(&bytes),
        };
        Ok(Some(blake3))
    }

    /// Small blobs by BatchReadBlobs, each checked against its digest; a blob the CAS
    /// lacks is left out.
    pub(crate) fn read_batch(&self, shas: &[WireDigest]) -> Result<Vec<(WireDigest, Vec<u8>)>> {
        let req = re::BatchReadBlobsRequest {
            instance_name: self.instance.clone(),
            digests: shas.iter().map(WireDigest::proto).collect(),
            acceptable_compressors: Vec::new(),
            digest_function: self.function.value(),
        };
        let size = shas.iter().map(|s| s.size).sum();
        let cas = self.cas();
        let resp = self.call("read blobs", budget(size), || {
            let (mut cas, req) = (cas.clone(), req.clone());
            async move { cas.batch_read_blobs(req).await }
        })?;
        let mut got = Vec::new();
        for r in resp.responses {
            let code = r.status.as_ref().map_or(0, |s| s.code);
            if code == tonic::Code::NotFound as i32 {
                continue;
            }
            let Some(digest) = r.digest.as_ref() else {
                return Err(corrupt(format!(
                    "{}: a read blob without its digest",
                    self.url
                )));
            };
            let sha = WireDigest::from_proto(digest)?;
            if code != 0 {
                let message = r.status.map(|s| s.message).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Remote,
                    format!("{}: read blob {}: {message}", self.url, sha.hex()),
                ));
            }
            if !shas.contains(&sha) || self.digest_bytes(&r.data) != sha {
                return Err(corrupt(format!(
                    "{}: blob {} does not match its digest",
                    self.url,
                    sha.hex()
                )));
            }
            got.push((sha, r.data));
        }
        Ok(got)
    }

    fn read_stream(&self, sha: WireDigest, out: &mut File) -> Result<Option<Digest>> {
        let req = ReadRequest {
            resource_name: format!("{}blobs/{}/{}", self.instance_prefix(), sha.hex(), sha.size),
            read_offset: 0,
            read_limit: 0,
        };
        let mut client = self.bytestream();
        let url = self.url.clone();
        let hashers = self.hashers();
        let fut = async move {
            let mut stream = match client.read(req).await {
                Ok(resp) => resp.into_inner(),
                Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
                Err(status) => return Err(status),
            };
            let mut hashers = hashers;
            while let Some(msg) = stream.message().await? {
                if hashers.size + msg.data.len() as u64 > sha.size {
                    return Err(tonic::Status::data_loss(
                        "more bytes than the digest's size",
                    ));
                }
                hashers.update(&msg.data);
                out.write_all(&msg.data).map_err(|e| {
                    tonic::Status::internal(format!("write a downloaded blob: {e}"))
                })?;
            }
            Ok(Some(hashers.finish()))
        };
        let got = self
            .rt
            .block_on(async { tokio::time::timeout(budget(sha.size), fut).await });
        let got = match got {
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Remote,
                    format!("{url}: read blob {}: timed out", sha.hex()),
                ))
            }
            Ok(Err(status)) => return Err(self.status_error("read a blob", &status)),
            Ok(Ok(got)) => got,
        };
        match got {
            None => Ok(None),
            Some((blake3, got)) if got == sha => Ok(Some(blake3)),
            Some(_) => Err(corrupt(format!(
                "{url}: blob {} does not match its digest",
                sha.hex()
            ))),
        }
    }
}

/// Reads until `buf` is full or the reader ends.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

/// A fresh id for a ByteStream upload (a UUID's shape, as the spec asks).
fn upload_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
    );
    let h = blake3::hash(seed.as_bytes()).to_hex();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    use super::*;

    fn sha(n: u8) -> WireDigest {
        WireDigest {
            hash: [n; 32],
            size: 10,
        }
    }

    #[test]
    fn concurrent_reads_share_batches_and_each_reader_gets_its_blob() {
        let reads = Reads::default();
        let (batches, asked) = (Mutex::new(Vec::new()), AtomicUsize::new(0));
        let threads = 24;
        // Blob n holds [n]; 7 is missing; a batch holding 9 fails. The first batch waits
        // until every reader has asked (a reader coming after a blob's others took it
        // asks again, rightly; on a loaded machine that made the count below vary).
        let batch = |shas: &[WireDigest]| -> Result<Vec<(WireDigest, Vec<u8>)>> {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while asked.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
                let waiting: usize = reads.state.lock().unwrap().readers.values().sum();
                if waiting == threads {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            batches.lock().unwrap().push(shas.len());
            asked.fetch_add(shas.len(), Ordering::SeqCst);
            if shas.contains(&sha(9)) {
                return Err(Error::new(ErrorKind::Remote, "the engine went away"));
            }
            let found = shas.iter().filter(|s| s.hash[0] != 7);
            Ok(found.map(|s| (*s, vec![s.hash[0]])).collect())
        };
        let start = Barrier::new(threads);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (reads, batch, start) = (&reads, &batch, &start);
                scope.spawn(move || {
                    start.wait();
                    // Three readers for each blob 0..8.
                    let n = (t / 3) as u8;
                    let got = reads.read(sha(n), batch);
                    match n {
                        7 => assert!(got.unwrap().is_none()),
                        9 => unreachable!(),
                        _ => assert_eq!(*got.unwrap().unwrap(), vec![n]),
                    }
                });
            }
        });
        // Every blob was asked for once, in fewer batches than blobs.
        assert_eq!(asked.load(Ordering::SeqCst), 8);
        let batches = batches.lock().unwrap().clone();
        assert!(batches.len() < 8, "{batches:?}");
        assert!(reads.state.lock().unwrap().read.is_empty());
        assert!(reads.state.lock().unwrap().readers.is_empty());

        // A failed batch fails each of its readers, and leaves nothing behind.
        let err = reads.read(sha(9), batch).unwrap_err();
        assert!(err.to_string().contains("went away"), "{err}");
        assert!(reads.state.lock().unwrap().read.is_empty());
    }
}
