//! Release signatures: SHA256SUMS signed as minisign signs (`minisign -V` verifies it),
//! and the provenance statement wrapped in a DSSE envelope, both with one ed25519 key.
//!
//! ```toml
//! [release.release]
//! version = "{STABLE_GIT_DESCRIBE}"
//! srcs = [":checksums"]
//! sign = true                      # `kiln run //:release` signs
//! sign_key_env = "KILN_SIGNING_KEY" # the default: the variable naming the key file
//! ```
//!
//! * **The key** is a minisign secret key file without a password (`minisign -G -W`),
//!   named by the path in `$KILN_SIGNING_KEY` when `kiln run` runs: never in BUILD.toml,
//!   never in an action key, never in the store. Its checksum (BLAKE2b-256, as minisign
//!   writes it; minisign 0.11 leaves it zero with -W) and its public half are checked. Password-protected keys (scrypt) are refused with a hint.
//! * **Uncached**: signing is part of the release's run action, a side effect like a
//!   push. The release's files, SHA256SUMS and the provenance included, are the build's
//!   cached, reproducible outputs; the signatures are written beside them:
//!   `SHA256SUMS.minisig` and `provenance.intoto.dsse.json`. Ed25519 signatures are
//!   deterministic and the trusted comment names the file and version (no time), so
//!   signing the same release again gives the same bytes.
//! * **minisign**: the prehashed form (`ED`: the signature is over the BLAKE2b-512 of the
//!   file), then the global signature over the signature and the trusted comment.
//! * **DSSE**: `{"payload", "payloadType": "application/vnd.in-toto+json",
//!   "signatures": [{"keyid", "sig"}]}`, the signature over DSSE's pre-authentication
//!   encoding; `keyid` is the sha256 of the raw public key, hex.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use blake2::{Blake2b512, Digest};
use ed25519_dalek::Signer;

type Result<T> = std::result::Result<T, String>;

/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

/// An ed25519 key read from a minisign secret key file.
pub struct SigningKey {
    keynum: [u8; 8],
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// Reads the key file named by the variable `env`.
    pub fn from_env(env: &str) -> Result<SigningKey> {
        let path = std::env::var_os(env).filter(|p| !p.is_empty()).ok_or_else(|| {
            format!("signing needs a key: set {env} to the path of a minisign secret key file (made with `minisign -G -W`)")
        })?;
        // Messages name the variable, not its value: BUILD.toml picks the variable, and
        // could pick one holding a secret (a CI's token) to see it printed in the log.
        let text = std::fs::read_to_string(std::path::PathBuf::from(path))
            .map_err(|e| format!("read the signing key file that {env} names: {e}"))?;
        SigningKey::from_minisign(&text)
            .map_err(|e| format!("the signing key file that {env} names: {e}"))
    }

    /// A minisign secret key file's text.
    pub fn from_minisign(text: &str) -> Result<SigningKey> {
        let line = text
            .lines()
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or("not a minisign secret key: no key line")?;
        let raw = B64
            .decode(line.trim())
            .map_err(|_| "not a minisign secret key: the key line is not base64")?;
        if raw.len() != 158 || &raw[..2] != b"Ed" || &raw[4..6] != b"B2" {
            return Err("not a minisign secret key".into());
        }
        if &raw[2..4] != b"\0\0" {
            return Err("the key is protected by a password, which kiln cannot ask for: make a key without one (`minisign -G -W`) and keep the file itself secret".into());
        }
        let (keynum, sk, checksum) = (&raw[54..62], &raw[62..126], &raw[126..158]);
        // minisign 0.11 writes an all-zero checksum into keys made with -W; the public
        // half of the secret key, which must follow from its seed, is checked anyway.
        let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
        h.update(b"Ed");
        h.update(keynum);
        h.update(sk);
        let unset = checksum.iter().all(|&b| b == 0);
        let seed: [u8; 32] = sk[..32].try_into().expect("32 bytes");
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        if (!unset && h.finalize().as_slice() != checksum)
            || key.verifying_key().as_bytes() != &sk[32..]
        {
            return Err(
                "the minisign secret key's checksum does not match: the file is damaged".into(),
            );
        }
        Ok(SigningKey {
            keynum: keynum.try_into().expect("8 bytes"),
            key,
        })
    }

    /// A `.minisig` file for `data`.
    pub fn minisign(&self, data: &[u8], trusted_comment: &str) -> String {
        let prehash = Blake2b512::digest(data);
        let signature = self.key.sign(&prehash).to_bytes();
        let mut line = b"ED".to_vec();
        line.extend_from_slice(&self.keynum);
        line.extend_from_slice(&signature);
        let mut global = signature.to_vec();
        global.extend_from_slice(trusted_comment.as_bytes());
        let global = self.key.sign(&global).to_bytes();
        format!(
            "untrusted comment: signature from kiln, key {}\n{}\ntrusted comment: {trusted_comment}\n{}\n",
            self.key_id(),
            B64.encode(line),
            B64.encode(global)
        )
    }

    /// The minisign public key file of this key.
    pub fn minisign_public(&self) -> String {
        let mut raw = b"Ed".to_vec();
        raw.extend_from_slice(&self.keynum);
        raw.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id(),
            B64.encode(raw)
        )
    }

    /// minisign's key ID: the key number as a little-endian integer, in hex.
    pub fn key_id(&self) -> String {
        format!("{:016X}", u64::from_le_bytes(self.keynum))
    }

    /// The DSSE keyid: sha256 of the raw public key, hex.
    pub fn dsse_keyid(&self) -> String {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(self.key.verifying_key().as_bytes());
        crate::release::checksums::hex(&digest)
    }

    /// A DSSE envelope of `payload`, as pretty JSON with a final newline.
    pub fn dsse(&self, payload: &[u8], payload_type: &str) -> String {
        let sig = self.key.sign(&pae(payload_type, payload)).to_bytes();
        let envelope = serde_json::json!({
            "payload": B64.encode(payload),
            "payloadType": payload_type,
            "signatures": [{ "keyid": self.dsse_keyid(), "sig": B64.encode(sig) }],
        });
        let mut text = serde_json::to_string_pretty(&envelope).expect("envelopes serialize");
        text.push('\n');
        text
    }

    /// The raw public key, hex (for verifiers such as securesystemslib).
    pub fn public_hex(&self) -> String {
        crate::release::checksums::hex(self.key.verifying_key().as_bytes())
    }
}

/// DSSE's pre-authentication encoding.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Signs a built release directory: `SHA256SUMS.minisig` and
/// `provenance.intoto.dsse.json` beside the files. Returns a line to show.
pub fn sign_release(dir: &std::path::Path, version: &str, key_env: &str) -> Result<String> {
    let key = SigningKey::from_env(key_env)?;
    let sums = dir.join("SHA256SUMS");
    let data = std::fs::read(&sums).map_err(|e| {
        format!(
            "nothing to sign: {}: {e}\nhint: put a checksums target in the release's srcs",
            sums.display()
        )
    })?;
    let comment = format!("file:SHA256SUMS version:{version}");
    write(
        &dir.join("SHA256SUMS.minisig"),
        &key.minisign(&data, &comment),
    )?;
    let provenance = dir.join(crate::release::PROVENANCE_FILE);
    let statement =
        std::fs::read(&provenance).map_err(|e| format!("read {}: {e}", provenance.display()))?;
    write(
        &dir.join("provenance.intoto.dsse.json"),
        &key.dsse(&statement, IN_TOTO),
    )?;
    Ok(format!(
        "signed SHA256SUMS and the provenance of {version} with key {}",
        key.key_id()
    ))
}

/// Writes a file, replacing one a previous signing left.
fn write(path: &std::path::Path, text: &str) -> Result<()> {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minisign secret key file made here, as `minisign -G -W` lays it out.
    fn key_file(seed: [u8; 32]) -> String {
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let keynum = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut sk = seed.to_vec();
        sk.extend_from_slice(key.verifying_key().as_bytes());
        let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
        h.update(b"Ed");
        h.update(keynum);
        h.update(&sk);
        let mut raw = b"Ed\0\0B2".to_vec();
        raw.extend_from_slice(&[0u8; 48]);
        raw.extend_from_slice(&keynum);
        raw.extend_from_slice(&sk);
        raw.extend_from_slice(&h.finalize());
        format!("untrusted comment: test key\n{}\n", B64.encode(raw))
    }

    #[test]
    fn a_bad_key_variable_is_named_but_its_value_never_shown() {
        // No other test reads or writes this variable.
        std::env::set_var("KILN_TEST_SIGN_SECRET", "ghp_value_of_a_ci_token");
        let err = SigningKey::from_env("KILN_TEST_SIGN_SECRET").err().unwrap();
        assert!(err.contains("KILN_TEST_SIGN_SECRET"), "{err}");
        assert!(!err.contains("ghp_value"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ghp_value_as_a_file");
        std::fs::write(&file, "not a key\n").unwrap();
        std::env::set_var("KILN_TEST_SIGN_SECRET", &file);
        let err = SigningKey::from_env("KILN_TEST_SIGN_SECRET").err().unwrap();
        assert!(!err.contains("ghp_value"), "{err}");
    }

    #[test]
    fn keys_are_checked_and_signatures_are_deterministic() {
        let key = SigningKey::from_minisign(&key_file([7; 32])).unwrap();
        assert_eq!(key.key_id(), "0807060504030201");
        let a = key.minisign(b"data", "file:x");
        assert_eq!(a, key.minisign(b"data", "file:x"));
        assert!(a.contains("\ntrusted comment: file:x\n"));
        let mut damaged = B64
            .decode(key_file([7; 32]).lines().nth(1).unwrap())
            .unwrap();
        damaged[100] ^= 1;
        let text = format!("untrusted comment: x\n{}\n", B64.encode(damaged));
        let err = SigningKey::from_minisign(&text).err().unwrap();
        assert!(err.contains("checksum does not match"), "{err}");
        assert!(SigningKey::from_minisign("nonsense").is_err());
        assert_eq!(
            pae("t", b"ab"),
            b"DSSEv1 1 t 2 ab".to_vec(),
            "DSSE's pre-authentication encoding"
        );
    }
}
