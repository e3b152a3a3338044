//! DHT keys and values. `agora/pkg/<name>` holds the newest signed [`PackageHead`];
//! `agora/rel/<name>/<version>` holds the [`ReleaseRecord`]; `agora/cid/<sha256 hex>` is the
//! provider key of an archive. Every value a node stores or returns passes [`validate`]: it
//! decodes, its signature verifies, and it is the record its key names.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use semver::Version;

use crate::content::ContentId;
use crate::limits::MAX_DHT_VALUE_BYTES;
use crate::manifest::parse_version;
use crate::name::PackageName;
use crate::records::{PackageHead, RecordError, ReleaseRecord};

/// A DHT key Agora uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DhtKey {
    Head(PackageName),
    Release(PackageName, Version),
    Content(ContentId),
}

/// A validated DHT value.
#[allow(clippy::large_enum_variant)] // Short-lived decoded values; boxing would add an allocation per message for no gain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtValue {
    Head(PackageHead),
    Release(ReleaseRecord),
}

/// Why a DHT key or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhtError {
    #[error("not an Agora DHT key: {0}")]
    BadKey(String),
    #[error("key {0} holds no value (it is a provider key)")]
    NotAValueKey(String),
    #[error("value is {len} bytes; the limit is {MAX_DHT_VALUE_BYTES}")]
    TooLarge { len: usize },
    #[error("value under {key} is a record for {found}")]
    KeyMismatch { key: String, found: String },
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl DhtKey {
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, DhtError> {
        let s = std::str::from_utf8(bytes).map_err(|_| DhtError::BadKey("not UTF-8".into()))?;
        s.parse()
    }
}

impl fmt::Display for DhtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Head(n) => write!(f, "agora/pkg/{n}"),
            Self::Release(n, v) => write!(f, "agora/rel/{n}/{v}"),
            Self::Content(c) => write!(f, "agora/cid/{c}"),
        }
    }
}

impl FromStr for DhtKey {
    type Err = DhtError;
    fn from_str(s: &str) -> Result<Self, DhtError> {
        let bad = |why: &str| {
            DhtError::BadKey(format!(
                "{why}: {:?}",
                s.chars().take(80).collect::<String>()
            ))
        };
        if let Some(name) = s.strip_prefix("agora/pkg/") {
            return Ok(Self::Head(
                name.parse().map_err(|_| bad("bad package name"))?,
            ));
        }
        if let Some(rest) = s.strip_prefix("agora/rel/") {
            let (name, version) = rest.split_once('/').ok_or_else(|| bad("missing version"))?;
            let name = name.parse().map_err(|_| bad("bad package name"))?;
            let version = parse_version(version).map_err(|_| bad("bad version"))?;
            return Ok(Self::Release(name, version));
        }
        if let Some(hex) = s.strip_prefix("agora/cid/") {
            return Ok(Self::Content(
                hex.parse().map_err(|_| bad("bad content id"))?,
            ));
        }
        Err(bad("unknown prefix"))
    }
}

impl DhtValue {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Head(h) => h.encode(),
            Self::Release(r) => r.encode(),
        }
    }

    /// The key this value belongs under.
    pub fn key(&self) -> DhtKey {
        match self {
            Self::Head(h) => DhtKey::Head(h.body.name.clone()),
            Self::Release(r) => DhtKey::Release(r.body.name.clone(), r.body.version.clone()),
        }
    }
}

/// Validates a DHT value under its key: decodes it, verifies its signature and limits, and
/// checks it is the record the key names.
pub fn validate(key: &[u8], value: &[u8]) -> Result<DhtValue, DhtError> {
    let key = DhtKey::parse(key)?;
    if value.len() > MAX_DHT_VALUE_BYTES {
        return Err(DhtError::TooLarge { len: value.len() });
    }
    let decoded = match &key {
        DhtKey::Head(_) => DhtValue::Head(PackageHead::decode(value)?),
        DhtKey::Release(..) => DhtValue::Release(ReleaseRecord::decode(value)?),
        DhtKey::Content(_) => return Err(DhtError::NotAValueKey(key.to_string())),
    };
    if decoded.key() != key {
        return Err(DhtError::KeyMismatch {
            key: key.to_string(),
            found: decoded.key().to_string(),
        });
    }
    Ok(decoded)
}

/// Deterministic order of two valid heads for one name: higher `seq` is better; on a tie the
/// lower record id wins, so every node picks the same one.
pub fn compare_heads(a: &PackageHead, b: &PackageHead) -> Ordering {
    a.body
        .seq
        .cmp(&b.body.seq)
        .then_with(|| b.id().cmp(&a.id()))
}
