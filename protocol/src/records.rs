//! The signed records that make up the catalog: releases, package heads, yanks and key
//! rotations. Each is a body plus an Ed25519 signature by the body's signer over
//! `DOMAIN || encode_body(body)`, verified with `verify_strict`. A record's id is the SHA-256
//! of its canonical encoding, so two records are the same record exactly when their ids match.

use semver::Version;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, encode_body};
use crate::content::ContentId;
use crate::dependency::Dependency;
use crate::keys::{KeyError, PublisherKey, PublisherSecret, Signature};
use crate::limits::*;
use crate::manifest::PackageMeta;
use crate::name::PackageName;

/// SHA-256 of a record's canonical encoding.
pub type RecordId = ContentId;

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record does not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("record signature: {0}")]
    Signature(#[from] KeyError),
    #[error("record breaks a limit: {0}")]
    Limit(String),
    #[error("record is inconsistent: {0}")]
    Inconsistent(String),
}

/// A record body: what it is signed as, and by whom.
pub trait RecordBody: Serialize + DeserializeOwned + Clone {
    /// Domain-separation prefix of the signed bytes.
    const DOMAIN: &'static [u8];
    /// The key whose signature makes this record valid.
    fn signer(&self) -> &PublisherKey;
    /// Structural limits, checked before the signature.
    fn check(&self) -> Result<(), RecordError>;
    /// The package this record is about.
    fn name(&self) -> &PackageName;
}

/// A body and its signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<B> {
    pub body: B,
    pub signature: Signature,
}

impl<B: RecordBody> Signed<B> {
    /// Signs `body` with `secret`, which must be the body's signer.
    pub fn sign(body: B, secret: &PublisherSecret) -> Result<Self, RecordError> {
        if secret.public() != *body.signer() {
            return Err(RecordError::Inconsistent(
                "signing key is not the record's signer".into(),
            ));
        }
        body.check()?;
        let bytes = encode_body(&body);
        check_size(&bytes)?;
        let signature = secret.sign(B::DOMAIN, &bytes);
        Ok(Self { body, signature })
    }

    /// Checks limits (the record's size among them), then the signature.
    pub fn verify(&self) -> Result<(), RecordError> {
        self.body.check()?;
        let bytes = encode_body(&self.body);
        check_size(&bytes)?;
        self.body
            .signer()
            .verify(B::DOMAIN, &bytes, &self.signature)?;
        Ok(())
    }

    /// The record's id: SHA-256 of its canonical encoding.
    pub fn id(&self) -> RecordId {
        ContentId::of(&encode_body(self))
    }

    /// Versioned wire encoding (a DHT value).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a versioned record and verifies it.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let record: Self =
            codec::decode::<Self, MAX_RECORD_BYTES, { codec::claims(MAX_RECORD_BYTES) }>(bytes)?;
        record.verify()?;
        Ok(record)
    }
}

/// Bytes a signature takes in a record's encoding: its length (one varint byte) and 64 bytes.
const SIGNATURE_ENCODED_LEN: usize = 1 + 64;

/// Refuses a record whose encoding (version byte, `body`, signature) would be larger than
/// [`MAX_RECORD_BYTES`].
fn check_size(body: &[u8]) -> Result<(), RecordError> {
    let len = 1 + body.len() + SIGNATURE_ENCODED_LEN;
    if len > MAX_RECORD_BYTES {
        return Err(RecordError::Limit(format!(
            "record is {len} bytes; the limit is {MAX_RECORD_BYTES}"
        )));
    }
    Ok(())
}

/// Where an archive's bytes are and how to check them piece by piece.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    /// SHA-256 of the whole archive.
    pub id: ContentId,
    /// Archive size in bytes.
    pub size: u64,
    /// Every chunk but the last is exactly this long.
    pub chunk_size: u32,
    /// SHA-256 of each chunk, in order.
    pub chunks: Vec<ContentId>,
}

impl ArchiveInfo {
    /// Describes `data` cut into `chunk_size` pieces.
    pub fn describe(data: &[u8], chunk_size: u32) -> Self {
        Self {
            id: ContentId::of(data),
            size: data.len() as u64,
            chunk_size,
            chunks: data
                .chunks(chunk_size.max(1) as usize)
                .map(ContentId::of)
                .collect(),
        }
    }

    /// The chunk size a publisher cuts an archive of `size` bytes into: the smallest power of
    /// two that makes at most [`PUBLISH_CHUNKS`] chunks, within [`MIN_PUBLISH_CHUNK_SIZE`]
    /// ..= [`MAX_CHUNK_SIZE`]. Small chunks spread through a crowd sooner; each costs a
    /// request, and the release record carries one hash for each.
    pub fn chunk_size_for(size: u64) -> u32 {
        let wanted = size.div_ceil(PUBLISH_CHUNKS).max(1).next_power_of_two();
        wanted.clamp(u64::from(MIN_PUBLISH_CHUNK_SIZE), u64::from(MAX_CHUNK_SIZE)) as u32
    }

    /// Number of chunks an archive of `size` bytes has.
    pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
        size.div_ceil(u64::from(chunk_size.max(1)))
    }

    /// Byte offset and length of chunk `index`, if it exists.
    pub fn chunk_range(&self, index: u32) -> Option<(u64, usize)> {
        let start = u64::from(index) * u64::from(self.chunk_size);
        if (index as usize) >= self.chunks.len() || start >= self.size {
            return None;
        }
        let len = (self.size - start).min(u64::from(self.chunk_size)) as usize;
        Some((start, len))
    }

    pub fn check(&self) -> Result<(), RecordError> {
        if self.size == 0 || self.size > MAX_ARCHIVE_BYTES {
            return Err(RecordError::Limit(format!(
                "archive size {} is outside 1..={MAX_ARCHIVE_BYTES}",
                self.size
            )));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(RecordError::Limit(format!(
                "chunk size {} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                self.chunk_size
            )));
        }
        let expected = Self::chunk_count(self.size, self.chunk_size);
        if self.chunks.len() as u64 != expected {
            return Err(RecordError::Inconsistent(format!(
                "{} chunk hashes for {expected} chunks",
                self.chunks.len()
            )));
        }
        if self.chunks.len() > MAX_CHUNKS {
            return Err(RecordError::Limit(format!(
                "{} chunks; the limit is {MAX_CHUNKS}",
                self.chunks.len()
            )));
        }
        Ok(())
    }
}

fn check_version(v: &Version) -> Result<(), RecordError> {
    let len = v.to_string().len();
    if len > MAX_VERSION_LEN {
        return Err(RecordError::Limit(format!(
            "version is {len} bytes; the limit is {MAX_VERSION_LEN}"
        )));
    }
    Ok(())
}

/// One published version of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseBody {
    pub name: PackageName,
    pub version: Version,
    pub meta: PackageMeta,
    pub dependencies: Vec<Dependency>,
    pub archive: ArchiveInfo,
    /// Seconds since the Unix epoch, as claimed by the publisher.
    pub published_at: u64,
    pub publisher: PublisherKey,
    /// Id of this publisher's previous release of this name (a per-name hash chain).
    pub previous: Option<RecordId>,
}

impl RecordBody for ReleaseBody {
    const DOMAIN: &'static [u8] = b"agora/v1/release\0";
    fn signer(&self) -> &PublisherKey {
        &self.publisher
    }
    fn name(&self) -> &PackageName {
        &self.name
    }
    fn check(&self) -> Result<(), RecordError> {
        check_version(&self.version)?;
        self.meta.check().map_err(RecordError::Limit)?;
        if self.dependencies.len() > MAX_DEPENDENCIES {
            return Err(RecordError::Limit(format!(
                "{} dependencies; the limit is {MAX_DEPENDENCIES}",
                self.dependencies.len()
            )));
        }
        for d in &self.dependencies {
            let len = d.req.to_string().len();
            if len > MAX_VERSION_LEN {
                return Err(RecordError::Limit(format!(
                    "requirement of {} is {len} bytes",
                    d.name
                )));
            }
            if d.name == self.name {
                return Err(RecordError::Inconsistent(format!(
                    "{} depends on itself",
                    self.name
                )));
            }
        }
        self.archive.check()
    }
}

/// The signed latest state of a package name: its owner and newest versions (the
/// `agora/pkg/<name>` DHT value). Higher `seq` wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadBody {
    pub name: PackageName,
    pub owner: PublisherKey,
    /// Newest versions, strictly increasing, at most [`MAX_HEAD_VERSIONS`].
    pub versions: Vec<Version>,
    pub seq: u64,
    pub updated_at: u64,
}

impl RecordBody for HeadBody {
    const DOMAIN: &'static [u8] = b"agora/v1/head\0";
    fn signer(&self) -> &PublisherKey {
        &self.owner
    }
    fn name(&self) -> &PackageName {
        &self.name
    }
    fn check(&self) -> Result<(), RecordError> {
        if self.versions.is_empty() || self.versions.len() > MAX_HEAD_VERSIONS {
            return Err(RecordError::Limit(format!(
                "head lists {} versions; 1..={MAX_HEAD_VERSIONS} allowed",
                self.versions.len()
            )));
        }
        self.versions.iter().try_for_each(check_version)?;
        if self.versions.windows(2).any(|w| w[0] >= w[1]) {
            return Err(RecordError::Inconsistent(
                "head versions are not strictly increasing".into(),
            ));
        }
        Ok(())
    }
}

/// The owner withdraws a version from new resolutions (lockfiles may still fetch it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct YankBody {
    pub name: PackageName,
    pub version: Version,
    pub publisher: PublisherKey,
    pub yanked_at: u64,
    pub reason: String,
}

impl RecordBody for YankBody {
    const DOMAIN: &'static [u8] = b"agora/v1/yank\0";
    fn signer(&self) -> &PublisherKey {
        &self.publisher
    }
    fn name(&self) -> &PackageName {
        &self.name
    }
    fn check(&self) -> Result<(), RecordError> {
        check_version(&self.version)?;
        if self.reason.len() > MAX_YANK_REASON_LEN {
            return Err(RecordError::Limit(format!(
                "yank reason is {} bytes; the limit is {MAX_YANK_REASON_LEN}",
                self.reason.len()
            )));
        }
        Ok(())
    }
}

/// The owner takes back one yank of a version (`yank --undo`). It names the yank it undoes
/// (a yank record, or the rotation that carried the version's yank over to the new key), so a
/// version is yanked while any yank of it stands: sets that only grow, which every node reaches
/// whatever order the records come in, with no verdict resting on a claimed time. Yanking
/// again is a new yank record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnyankBody {
    pub name: PackageName,
    pub version: Version,
    pub publisher: PublisherKey,
    /// The yank (or carrying rotation) it undoes.
    pub undoes: RecordId,
    pub unyanked_at: u64,
}

impl RecordBody for UnyankBody {
    const DOMAIN: &'static [u8] = b"agora/v1/unyank\0";
    fn signer(&self) -> &PublisherKey {
        &self.publisher
    }
    fn name(&self) -> &PackageName {
        &self.name
    }
    fn check(&self) -> Result<(), RecordError> {
        check_version(&self.version)
    }
}

/// The current owner of a name hands it to a new key.
///
/// `last` and `yanked` say what of the name the old key vouches for: once the rotation is
/// admitted, the old key's releases count only if `last` chains to them, and its yanks only as
/// listed here. Whatever else it signs (before or after, whatever time it claims) then has no
/// effect, so every node reaches the same catalog whichever order the records came in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationBody {
    pub name: PackageName,
    pub from: PublisherKey,
    pub to: PublisherKey,
    /// The newest release of the name when it was rotated.
    pub last: RecordId,
    /// Versions yanked when it was rotated, in increasing order.
    pub yanked: Vec<Version>,
    pub rotated_at: u64,
}

impl RecordBody for RotationBody {
    const DOMAIN: &'static [u8] = b"agora/v1/rotation\0";
    fn signer(&self) -> &PublisherKey {
        &self.from
    }
    fn name(&self) -> &PackageName {
        &self.name
    }
    fn check(&self) -> Result<(), RecordError> {
        if self.from == self.to {
            return Err(RecordError::Inconsistent("rotation to the same key".into()));
        }
        if self.yanked.len() > MAX_ROTATION_YANKS {
            return Err(RecordError::Limit(format!(
                "rotation lists {} yanked versions; the limit is {MAX_ROTATION_YANKS}",
                self.yanked.len()
            )));
        }
        for v in &self.yanked {
            check_version(v)?;
        }
        if !self.yanked.is_sorted_by(|a, b| a < b) {
            return Err(RecordError::Inconsistent(
                "a rotation's yanked versions must be in increasing order, each once".into(),
            ));
        }
        Ok(())
    }
}

pub type ReleaseRecord = Signed<ReleaseBody>;
pub type PackageHead = Signed<HeadBody>;
pub type Yank = Signed<YankBody>;
pub type KeyRotation = Signed<RotationBody>;
pub type Unyank = Signed<UnyankBody>;

/// Any record that belongs in the catalog (what catalog sync exchanges).
#[allow(clippy::large_enum_variant)] // Short-lived decoded values; boxing would add an allocation per message for no gain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogRecord {
    Release(ReleaseRecord),
    Yank(Yank),
    Rotation(KeyRotation),
    Unyank(Unyank),
}

impl CatalogRecord {
    /// Decodes a versioned record from a node's own store, whose records were verified when
    /// admitted and written with [`codec::encode`] (so neither the signature nor the
    /// encoding's canonical form is checked again: [`codec::decode_own`]), and returns its id,
    /// hashed from `bytes` rather than from a second encoding: `bytes` are the record's
    /// encoding, `[WIRE_VERSION, variant index, the inner record]`, the index a one-byte
    /// varint. The size limit is the one every record was admitted under.
    pub fn decode_stored(bytes: &[u8]) -> Result<(Self, RecordId), DecodeError> {
        let record: Self = codec::decode_own::<
            Self,
            MAX_TAGGED_RECORD_BYTES,
            { codec::claims(MAX_TAGGED_RECORD_BYTES) },
        >(bytes)?;
        let id = ContentId::of(&bytes[2..]);
        debug_assert_eq!(id, record.id());
        Ok((record, id))
    }

    pub fn verify(&self) -> Result<(), RecordError> {
        match self {
            Self::Release(r) => r.verify(),
            Self::Yank(r) => r.verify(),
            Self::Rotation(r) => r.verify(),
            Self::Unyank(r) => r.verify(),
        }
    }

    /// The id of the inner record (the same as the id of the record on its own).
    pub fn id(&self) -> RecordId {
        match self {
            Self::Release(r) => r.id(),
            Self::Yank(r) => r.id(),
            Self::Rotation(r) => r.id(),
            Self::Unyank(r) => r.id(),
        }
    }

    pub fn name(&self) -> &PackageName {
        match self {
            Self::Release(r) => &r.body.name,
            Self::Yank(r) => &r.body.name,
            Self::Rotation(r) => &r.body.name,
            Self::Unyank(r) => &r.body.name,
        }
    }

    /// The key that signed it.
    pub fn signer(&self) -> &PublisherKey {
        match self {
            Self::Release(r) => r.body.signer(),
            Self::Yank(r) => r.body.signer(),
            Self::Rotation(r) => r.body.signer(),
            Self::Unyank(r) => r.body.signer(),
        }
    }

    /// When its signer says it was made (seconds since the Unix epoch, the signer's clock).
    pub fn made_at(&self) -> u64 {
        match self {
            Self::Release(r) => r.body.published_at,
            Self::Yank(r) => r.body.yanked_at,
            Self::Rotation(r) => r.body.rotated_at,
            Self::Unyank(r) => r.body.unyanked_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_cuts_archives_into_at_most_256_chunks_of_256_kib_to_1_mib() {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let cases = [
            (0, 256 * KIB),
            (1, 256 * KIB),
            (64 * MIB, 256 * KIB),
            (64 * MIB + 1, 512 * KIB),
            (100_000_000, 512 * KIB),
            (128 * MIB, 512 * KIB),
            (128 * MIB + 1, 1024 * KIB),
            (MAX_ARCHIVE_BYTES, 1024 * KIB),
            (u64::MAX / 2, 1024 * KIB),
        ];
        for (size, chunk) in cases {
            let got = u64::from(ArchiveInfo::chunk_size_for(size));
            assert_eq!(got, chunk, "archive of {size} bytes");
            assert!(ArchiveInfo::chunk_count(size.min(MAX_ARCHIVE_BYTES), got as u32) <= 256);
        }
    }

    #[test]
    fn a_record_is_measured_as_its_encoding_and_refused_one_byte_over() {
        let key = PublisherSecret::from_bytes([3; 32]);
        let body = YankBody {
            name: "pkg".parse().unwrap(),
            version: Version::new(1, 0, 0),
            publisher: key.public(),
            yanked_at: 1,
            reason: "broken".into(),
        };
        let yank = Signed::sign(body.clone(), &key).unwrap();
        assert_eq!(
            yank.encode().len(),
            1 + encode_body(&body).len() + SIGNATURE_ENCODED_LEN
        );
        let fits = MAX_RECORD_BYTES - 1 - SIGNATURE_ENCODED_LEN;
        assert_eq!(check_size(&vec![0; fits]), Ok(()));
        assert_eq!(
            check_size(&vec![0; fits + 1]),
            Err(RecordError::Limit(format!(
                "record is {} bytes; the limit is {MAX_RECORD_BYTES}",
                MAX_RECORD_BYTES + 1
            )))
        );
    }
}
