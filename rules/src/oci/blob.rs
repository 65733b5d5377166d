//! sha256 digests and the blob directory shape shared by every writer here.
//!
//! A *blobs directory* is laid out as an OCI layout's `blobs/`: `sha256/<hex>`. Every blob is
//! written to a temporary file beside its final name and renamed into place, so a crash never
//! leaves a half blob under a real digest. Digests read from documents are checked to be
//! `sha256:` plus 64 lowercase hex digits before they become a path.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::error::{Error, Result};

/// A writer that hashes and counts what passes through it.
pub(crate) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> HashWriter<W> {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The inner writer, the `sha256:<hex>` digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, digest_string(self.hasher), self.len)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `sha256:<hex>` of some bytes.
pub(crate) fn sha256_of(bytes: &[u8]) -> String {
    digest_string(Sha256::new_with_prefix(bytes))
}

fn digest_string(hasher: Sha256) -> String {
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The hex part of a well-formed sha256 digest.
pub(crate) fn digest_hex(digest: &str) -> Result<&str> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    let well_formed =
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if well_formed {
        Ok(hex)
    } else {
        Err(Error::corrupt(format!(
            "use digest `{digest}`: only sha256 digests of 64 lowercase hex digits are supported"
        )))
    }
}

/// Where the blob with `digest` lives under a blobs directory.
pub(crate) fn blob_path(blobs_dir: &Path, digest: &str) -> Result<PathBuf> {
    Ok(blobs_dir.join("sha256").join(digest_hex(digest)?))
}

/// Writes `bytes` as a blob and returns its digest.
pub(crate) fn write_blob(blobs_dir: &Path, bytes: &[u8]) -> Result<String> {
    let digest = sha256_of(bytes);
    let path = blob_path(blobs_dir, &digest)?;
    write_atomic(&path, bytes)?;
    Ok(digest)
}

/// Writes a file through a temporary file beside it and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = temp_beside(path)?;
    tmp.write_all(bytes)
        .map_err(|err| Error::io("write", path, err))?;
    persist(tmp, path)
}

/// Copies a file into a blobs directory under the digest of its content, verifying
/// `expected` when given. Returns the digest.
pub(crate) fn copy_blob(source: &Path, blobs_dir: &Path, expected: Option<&str>) -> Result<String> {
    let staging = blobs_dir.join("sha256");
    let tmp = temp_in(&staging)?;
    let mut input = File::open(source).map_err(|err| Error::io("open", source, err))?;
    let mut hashing = HashWriter::new(BufWriter::new(tmp));
    io::copy(&mut input, &mut hashing).map_err(|err| Error::io("copy", source, err))?;
    let (out, digest, _) = hashing.finish();
    if let Some(expected) = expected.filter(|&e| e != digest) {
        return Err(Error::corrupt(format!(
            "copy blob {}: its digest is {digest}, not {expected}",
            source.display()
        )));
    }
    let tmp = out
        .into_inner()
        .map_err(|err| Error::io("write", &staging, err.into_error()))?;
    persist(tmp, &blob_path(blobs_dir, &digest)?)?;
    Ok(digest)
}

/// Reads a whole blob, checking that it matches its digest.
pub(crate) fn read_blob(blobs_dir: &Path, digest: &str) -> Result<Vec<u8>> {
    let path = blob_path(blobs_dir, digest)?;
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|err| Error::io("read blob", &path, err))?;
    if sha256_of(&bytes) != digest {
        return Err(Error::corrupt(format!(
            "read blob {}: its content does not match its digest",
            path.display()
        )));
    }
    Ok(bytes)
}

/// A temporary file in the directory of `path`, creating that directory.
pub(crate) fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    temp_in(path.parent().unwrap_or(Path::new(".")))
}

fn temp_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    fs::create_dir_all(dir).map_err(|err| Error::io("create directory", dir, err))?;
    tempfile::Builder::new()
        .prefix(".kiln-tmp")
        .tempfile_in(dir)
        .map_err(|err| Error::io("create a temporary file in", dir, err))
}

/// Renames a finished temporary file to `path`, readable by everyone (0644).
pub(crate) fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .sync_all()
        .map_err(|err| Error::io("write", path, err))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .map_err(|err| Error::io("set permissions of", path, err))?;
    tmp.persist(path)
        .map_err(|err| Error::io("rename into", path, err.error))?;
    Ok(())
}
