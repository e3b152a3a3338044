//! Publisher keys and signatures. A publisher is an Ed25519 key, separate from the node's
//! libp2p identity. Verification is always `verify_strict` over domain-separated bytes, so a
//! signature made for one kind of record can never be replayed as another.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{LazyLock, Mutex, PoisonError};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// A publisher's public key. Only keys that decode to a valid, non-weak curve point exist.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "[u8; 32]", into = "[u8; 32]")]
pub struct PublisherKey([u8; 32]);

/// An Ed25519 signature (64 bytes on the wire).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "serde_bytes")] [u8; 64]);

/// A publisher's secret key. Never serialized by this crate; the daemon keeps it in a 0600 file.
#[derive(Clone)]
pub struct PublisherSecret(SigningKey);

/// Why a key or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("publisher key is not a valid Ed25519 point")]
    InvalidKey,
    #[error("publisher key is a weak (small-order) Ed25519 point")]
    WeakKey,
    #[error("publisher key must be 64 hex digits")]
    BadHex,
    #[error("signature does not verify for this publisher key and record kind")]
    BadSignature,
}

/// Most keys [`checked`] remembers; past it, it starts again from none (a peer sending many
/// distinct keys costs itself the checks, never memory).
const CHECKED_KEYS: usize = 1024;

/// Keys already found valid and not weak, with their decompressed point. Every record
/// carries its publisher's key, and decompressing it costs about as much as decoding the
/// rest of the record many times over; a catalog has few publishers and many records.
static CHECKED: LazyLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> =
    LazyLock::new(|| Mutex::new(HashMap::with_capacity(64)));

/// `bytes` as a valid, non-weak Ed25519 point (the check is a pure function of the bytes,
/// so an answer once found is reused).
fn checked(bytes: &[u8; 32]) -> Result<VerifyingKey, KeyError> {
    let seen = || CHECKED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(key) = seen().get(bytes) {
        return Ok(*key);
    }
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidKey)?;
    if key.is_weak() {
        return Err(KeyError::WeakKey);
    }
    let mut seen = seen();
    if seen.len() >= CHECKED_KEYS {
        seen.clear();
    }
    seen.insert(*bytes, key);
    Ok(key)
}

impl PublisherKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        checked(&bytes)?;
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks `signature` over `domain || message` with `verify_strict` (no malleable or
    /// small-order signatures).
    pub fn verify(
        &self,
        domain: &[u8],
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), KeyError> {
        // The bytes were validated when the key was built.
        let key = checked(&self.0)?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        let mut signed = Vec::with_capacity(domain.len() + message.len());
        signed.extend_from_slice(domain);
        signed.extend_from_slice(message);
        key.verify_strict(&signed, &sig)
            .map_err(|_| KeyError::BadSignature)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl TryFrom<[u8; 32]> for PublisherKey {
    type Error = KeyError;
    fn try_from(bytes: [u8; 32]) -> Result<Self, KeyError> {
        Self::from_bytes(bytes)
    }
}

impl From<PublisherKey> for [u8; 32] {
    fn from(k: PublisherKey) -> [u8; 32] {
        k.0
    }
}

impl FromStr for PublisherKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::BadHex)?;
        Self::from_bytes(out)
    }
}

impl fmt::Display for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublisherKey({})", &self.to_hex()[..16])
    }
}

impl Signature {
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }
    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

impl PublisherSecret {
    /// Builds a key from 32 secret bytes (from the OS RNG, or a key file).
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&secret))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> PublisherKey {
        PublisherKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `domain || message`.
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> Signature {
        let mut signed = Vec::with_capacity(domain.len() + message.len());
        signed.extend_from_slice(domain);
        signed.extend_from_slice(message);
        Signature(self.0.sign(&signed).to_bytes())
    }
}

impl fmt::Debug for PublisherSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublisherSecret(public: {})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_domain_separation() {
        let secret = PublisherSecret::from_bytes([7; 32]);
        let key = secret.public();
        let sig = secret.sign(b"agora/v1/release\0", b"body");
        assert_eq!(key.verify(b"agora/v1/release\0", b"body", &sig), Ok(()));
        assert_eq!(
            key.verify(b"agora/v1/yank\0", b"body", &sig),
            Err(KeyError::BadSignature)
        );
        assert_eq!(
            key.verify(b"agora/v1/release\0", b"bodz", &sig),
            Err(KeyError::BadSignature)
        );
        let other = PublisherSecret::from_bytes([8; 32]).public();
        assert_eq!(
            other.verify(b"agora/v1/release\0", b"body", &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point (y = 1) is small-order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublisherKey::from_bytes(identity), Err(KeyError::WeakKey));
        assert_eq!("zz".parse::<PublisherKey>(), Err(KeyError::BadHex));
    }

    /// The answer without the cache of checked keys.
    fn uncached(bytes: [u8; 32]) -> Result<(), KeyError> {
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidKey)?;
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        Ok(())
    }

    #[test]
    fn remembered_key_checks_answer_as_fresh_ones() {
        // Valid, weak and invalid keys, and more distinct valid ones than the cache holds,
        // each asked twice (the second answer comes from the cache while it holds it).
        let mut candidates: Vec<[u8; 32]> = (0..=255u8).map(|b| [b; 32]).collect();
        candidates.extend((0..CHECKED_KEYS as u32 + 100).map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            *PublisherSecret::from_bytes(seed).public().as_bytes()
        }));
        let mut kinds = HashMap::new();
        for bytes in candidates {
            let want = uncached(bytes);
            for _ in 0..2 {
                assert_eq!(PublisherKey::from_bytes(bytes).map(|_| ()), want);
            }
            *kinds.entry(format!("{want:?}")).or_insert(0) += 1;
        }
        // The candidates cover all three answers.
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        assert!(CHECKED.lock().unwrap().len() <= CHECKED_KEYS);
    }

    #[test]
    fn malleated_signature_is_refused() {
        // Adding the group order L to S yields a signature that lax verifiers accept.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let secret = PublisherSecret::from_bytes([9; 32]);
        let sig = secret.sign(b"d", b"m");
        let mut bytes = *sig.as_bytes();
        let mut carry = 0u16;
        for i in 0..32 {
            let v = bytes[32 + i] as u16 + L[i] as u16 + carry;
            bytes[32 + i] = v as u8;
            carry = v >> 8;
        }
        let malleated = Signature::from_bytes(bytes);
        assert_ne!(malleated, sig);
        assert_eq!(
            secret.public().verify(b"d", b"m", &malleated),
            Err(KeyError::BadSignature)
        );
    }
}
