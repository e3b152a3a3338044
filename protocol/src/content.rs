//! `ContentId`: the SHA-256 of some bytes (an archive, a chunk, an encoded record).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// SHA-256 of a byte string. Archives, chunks and records are named by it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContentId([u8; 32]);

/// Why a string is not a content id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentIdError {
    #[error("content id must be 64 hex digits, got {len} characters")]
    BadLength { len: usize },
    #[error("content id is not hex: {0}")]
    NotHex(String),
}

impl ContentId {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The id of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// The id of everything `source` reads, read 256 KiB at a time.
    pub fn of_reader(mut source: impl std::io::Read) -> std::io::Result<Self> {
        let mut hasher = ContentHasher::new();
        let mut buf = vec![0; 256 * 1024];
        loop {
            match source.read(&mut buf)? {
                0 => return Ok(hasher.finish()),
                n => hasher.update(&buf[..n]),
            }
        }
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for ContentId {
    type Err = ContentIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(ContentIdError::BadLength { len: s.len() });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| ContentIdError::NotHex(e.to_string()))?;
        Ok(Self(out))
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", &self.to_hex()[..16])
    }
}

/// Incremental SHA-256 for data that arrives in pieces (a blob written to disk, chunks).
#[derive(Default, Clone)]
pub struct ContentHasher(Sha256);

impl ContentHasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> ContentId {
        ContentId(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_hex_round_trip() {
        let id = ContentId::of(b"abc");
        assert_eq!(
            id.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(id.to_hex().parse::<ContentId>().unwrap(), id);
        let mut h = ContentHasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), id);
    }

    #[test]
    fn bad_hex_is_refused() {
        assert_eq!(
            "ab".parse::<ContentId>(),
            Err(ContentIdError::BadLength { len: 2 })
        );
        assert!(matches!(
            "z".repeat(64).parse::<ContentId>(),
            Err(ContentIdError::NotHex(_))
        ));
    }
}
