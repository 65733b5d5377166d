//! BLAKE3 digests, shown as 64 lowercase hex characters.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};

/// A BLAKE3 digest of a blob or of an action key record.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// The largest read buffer of a hash.
const BUFFER: usize = 64 * 1024;

impl Digest {
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// Hashes a file by streaming it, through a buffer no larger than the file (most
    /// sources are small: a zeroed 64 KiB buffer for each was most of their cost).
    pub fn of_file(path: &Path) -> Result<Digest> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
        let len = file.metadata().map_or(0, |m| m.len());
        Self::hash_reader(&mut file, (len as usize).clamp(1, BUFFER - 1) + 1)
            .map_err(|e| Error::io("read", path, e))
    }

    pub fn of_reader(reader: &mut dyn Read) -> std::io::Result<Digest> {
        Self::hash_reader(reader, BUFFER)
    }

    fn hash_reader(reader: &mut dyn Read, buffer: usize) -> std::io::Result<Digest> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; buffer];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Digest(*hasher.finalize().as_bytes()))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first 12 hex characters, for messages.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest> {
        // blake3's decoder: no allocation, no UTF-8 round trips (index rows parse
        // thousands of these per build).
        match blake3::Hash::from_hex(s) {
            Ok(hash) if s.len() == 64 => Ok(Digest(*hash.as_bytes())),
            _ => Err(Error::new(
                ErrorKind::Corrupt,
                format!("parse digest `{s}`"),
            )),
        }
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest of 64 hex characters")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Digest, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_hashes_as_its_bytes_whatever_its_size_against_the_buffer() {
        let tmp = tempfile::tempdir().unwrap();
        for size in [0, 1, BUFFER - 1, BUFFER, BUFFER + 1, 3 * BUFFER + 7] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let path = tmp.path().join(format!("f{size}"));
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(
                Digest::of_file(&path).unwrap(),
                Digest::of_bytes(&bytes),
                "{size}"
            );
        }
    }

    #[test]
    fn hex_round_trip() {
        let d = Digest::of_bytes(b"kiln");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_ne!(d, Digest::of_bytes(b"kiln "));
        assert_eq!(d.to_string().to_uppercase().parse::<Digest>().unwrap(), d);
        assert!("zz".parse::<Digest>().is_err());
        assert!("g".repeat(64).parse::<Digest>().is_err());
        assert!(format!("{}é", &d.to_string()[..62])
            .parse::<Digest>()
            .is_err());
        assert!(format!("{d}0").parse::<Digest>().is_err());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"zz\"").is_err());
    }
}
