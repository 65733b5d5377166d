//! Blob transfer with an engine's CAS: FindMissingBlobs, BatchUpdateBlobs,
//! BatchReadBlobs, and ByteStream for blobs larger than [`crate::BATCH_BLOB`].

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use kiln_cache::{Digest, Error, ErrorKind, Result};
use re::content_addressable_storage_client::ContentAddressableStorageClient;

use crate::{corrupt, re, Hashers, Remote, Service, Sha, BATCH_BLOB, BATCH_TOTAL, MAX_MESSAGE};

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

    /// Of these blobs, those the CAS lacks.
    pub(crate) fn find_missing(&self, shas: &[Sha]) -> Result<HashSet<Sha>> {
        let mut missing = HashSet::new();
        let wanted: Vec<Sha> = {
            let mut v: Vec<Sha> = shas.iter().filter(|s| s.size > 0).copied().collect();
            v.sort();
            v.dedup();
            v
        };
        for chunk in wanted.chunks(4096) {
            let req = re::FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: chunk.iter().map(Sha::proto).collect(),
                digest_function: re::digest_function::Value::Sha256 as i32,
            };
            let mut cas = self.cas();
            let resp = self.call("find missing blobs", budget(0), async move {
                cas.find_missing_blobs(req).await
            })?;
            for d in &resp.missing_blob_digests {
                missing.insert(Sha::from_proto(d)?);
            }
        }
        Ok(missing)
    }

    /// Sends blobs the CAS lacks (asked first). Returns how many bytes went.
    pub(crate) fn upload_missing(&self, blobs: &BTreeMap<Sha, Blob>) -> Result<u64> {
        let shas: Vec<Sha> = blobs.keys().copied().collect();
        let missing = self.find_missing(&shas)?;
        let mut sent = 0;
        let mut batch: Vec<(Sha, Vec<u8>)> = Vec::new();
        let mut batch_size = 0;
        for (sha, blob) in blobs.iter().filter(|(s, _)| missing.contains(s)) {
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
            if Sha::of_bytes(&bytes) != *sha {
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

    fn write_batch(&self, blobs: Vec<(Sha, Vec<u8>)>) -> Result<()> {
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
            digest_function: re::digest_function::Value::Sha256 as i32,
        };
        let mut cas = self.cas();
        let resp = self.call("upload blobs", budget(size), async move {
            cas.batch_update_blobs(req).await
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
    fn write_stream(&self, sha: Sha, blob: &Blob) -> Result<()> {
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
        let mut hashers = Hashers::default();
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
        let mut client = self.bytestream();
        let resp = self.call("upload a blob", budget(sha.size), async move {
            client.write(tokio_stream::iter(chunks)).await
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
    pub(crate) fn download(&self, sha: Sha, out: &mut File) -> Result<Option<Digest>> {
        let bytes = match sha.size {
            0 => Some(Vec::new()),
            size if size <= BATCH_BLOB => {
                self.read_batch(&[sha])?.into_iter().next().map(|(_, b)| b)
            }
            _ => return self.read_stream(sha, out),
        };
        let Some(bytes) = bytes else { return Ok(None) };
        out.write_all(&bytes)
            .map_err(|e| Error::new(ErrorKind::Io, format!("write a downloaded blob: {e}")))?;
        Ok(Some(Digest::of_bytes(&bytes)))
    }

    /// Small blobs by BatchReadBlobs, each checked against its digest; a blob the CAS
    /// lacks is left out.
    pub(crate) fn read_batch(&self, shas: &[Sha]) -> Result<Vec<(Sha, Vec<u8>)>> {
        let req = re::BatchReadBlobsRequest {
            instance_name: self.instance.clone(),
            digests: shas.iter().map(Sha::proto).collect(),
            acceptable_compressors: Vec::new(),
            digest_function: re::digest_function::Value::Sha256 as i32,
        };
        let size = shas.iter().map(|s| s.size).sum();
        let mut cas = self.cas();
        let resp = self.call("read blobs", budget(size), async move {
            cas.batch_read_blobs(req).await
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
            let sha = Sha::from_proto(digest)?;
            if code != 0 {
                let message = r.status.map(|s| s.message).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Remote,
                    format!("{}: read blob {}: {message}", self.url, sha.hex()),
                ));
            }
            if !shas.contains(&sha) || Sha::of_bytes(&r.data) != sha {
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

    fn read_stream(&self, sha: Sha, out: &mut File) -> Result<Option<Digest>> {
        let req = ReadRequest {
            resource_name: format!("{}blobs/{}/{}", self.instance_prefix(), sha.hex(), sha.size),
            read_offset: 0,
            read_limit: 0,
        };
        let mut client = self.bytestream();
        let url = self.url.clone();
        let fut = async move {
            let mut stream = match client.read(req).await {
                Ok(resp) => resp.into_inner(),
                Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
                Err(status) => return Err(status),
            };
            let mut hashers = Hashers::default();
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
