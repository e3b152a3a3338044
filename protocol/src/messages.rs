//! Peer-to-peer messages: gossip on `agora/releases/1`, catalog sync on `/agora/sync/1` and
//! chunk fetch on `/agora/fetch/1`. Each is a [`Wire`] type with its own size limit; records
//! inside them are verified by whoever acts on them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, Wire};
use crate::content::ContentId;
use crate::impl_wire;
use crate::limits::*;
use crate::records::{
    CatalogRecord, KeyRotation, PackageHead, RecordError, RecordId, ReleaseRecord, Unyank, Yank,
};

/// The gossipsub topic every node subscribes to.
pub const GOSSIP_TOPIC: &str = "agora/releases/1";
/// Catalog sync request-response protocol.
pub const SYNC_PROTOCOL: &str = "/agora/sync/1";
/// Chunk fetch request-response protocol.
pub const FETCH_PROTOCOL: &str = "/agora/fetch/1";
/// Chunk availability request-response protocol (who holds which chunks of an archive).
pub const HAVE_PROTOCOL: &str = "/agora/have/1";
/// Kademlia protocol name (a private DHT, apart from the public IPFS one).
pub const KAD_PROTOCOL: &str = "/agora/kad/1.0.0";

/// What is announced on the gossip topic.
#[allow(clippy::large_enum_variant)] // Short-lived decoded values; boxing would add an allocation per message for no gain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMessage {
    Release(ReleaseRecord),
    Yank(Yank),
    Rotation(KeyRotation),
    Head(PackageHead),
    Unyank(Unyank),
}

impl_wire!(GossipMessage, MAX_GOSSIP_BYTES, |_m| Ok(()));

impl GossipMessage {
    /// The package the message is about.
    pub fn name(&self) -> &crate::PackageName {
        match self {
            Self::Release(r) => &r.body.name,
            Self::Yank(r) => &r.body.name,
            Self::Rotation(r) => &r.body.name,
            Self::Head(r) => &r.body.name,
            Self::Unyank(r) => &r.body.name,
        }
    }

    /// Decodes and verifies the record inside (signature and limits).
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, RecordError> {
        let msg = Self::from_wire(bytes)?;
        match &msg {
            Self::Release(r) => r.verify()?,
            Self::Yank(r) => r.verify()?,
            Self::Rotation(r) => r.verify()?,
            Self::Head(r) => r.verify()?,
            Self::Unyank(r) => r.verify()?,
        }
        Ok(msg)
    }
}

/// Digest of one bucket of a catalog: records whose id starts with the bucket's byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketDigest {
    pub count: u32,
    /// SHA-256 over the bucket's sorted record ids (all zeros when empty).
    pub digest: [u8; 32],
}

/// Catalog sync request: summary first, then the ids of differing buckets, then records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    Summary,
    Buckets { buckets: Vec<u8> },
    Records { ids: Vec<RecordId> },
}

impl_wire!(SyncRequest, MAX_SYNC_REQUEST_BYTES, |r| match r {
    SyncRequest::Summary => Ok(()),
    SyncRequest::Buckets { buckets } if buckets.len() > SYNC_BUCKETS => {
        Err(format!(
            "{} buckets requested; there are {SYNC_BUCKETS}",
            buckets.len()
        ))
    }
    SyncRequest::Records { ids } if ids.len() > MAX_SYNC_IDS => {
        Err(format!(
            "{} records requested; the limit is {MAX_SYNC_IDS}",
            ids.len()
        ))
    }
    // One record asked for many times would be read and sent as many times.
    SyncRequest::Records { ids } => {
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        match ids.iter().find(|id| !seen.insert(*id)) {
            Some(id) => Err(format!("record {id} is requested twice")),
            None => Ok(()),
        }
    }
    _ => Ok(()),
});

/// Why a peer did not answer a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The node is overloaded; try another peer or later.
    Busy,
    /// The node does not have what was asked for.
    NotFound,
    /// The request asked for something that does not exist (e.g. a chunk past the end).
    OutOfRange,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    Summary { buckets: Vec<BucketDigest> },
    Ids { ids: Vec<RecordId> },
    Records { records: Vec<CatalogRecord> },
    Refused(Refusal),
}

impl_wire!(SyncResponse, MAX_SYNC_RESPONSE_BYTES, |r| match r {
    SyncResponse::Summary { buckets } if buckets.len() != SYNC_BUCKETS => {
        Err(format!(
            "summary has {} buckets; expected {SYNC_BUCKETS}",
            buckets.len()
        ))
    }
    SyncResponse::Ids { ids } if ids.len() > MAX_SYNC_LISTED_IDS => {
        Err(format!(
            "{} ids in one listing; the limit is {MAX_SYNC_LISTED_IDS}",
            ids.len()
        ))
    }
    SyncResponse::Records { records } if records.len() > MAX_SYNC_RECORDS => {
        Err(format!(
            "{} records; the limit is {MAX_SYNC_RECORDS}",
            records.len()
        ))
    }
    _ => Ok(()),
});

/// Ask for chunk `index` of the blob `content` cut into `chunk_size` pieces: the bytes
/// `index * chunk_size ..` up to `chunk_size` of them. The asker names the cut it checks the
/// chunk against (its release's), because one archive may be named by several releases that
/// cut it differently, and all of them are right about its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    pub content: ContentId,
    pub chunk_size: u32,
    pub index: u32,
}

impl FetchRequest {
    /// Byte offset and length of the chunk asked for in a blob of `size` bytes, if it has it.
    pub fn range(&self, size: u64) -> Option<(u64, usize)> {
        let start = u64::from(self.index) * u64::from(self.chunk_size);
        (start < size).then(|| {
            (
                start,
                (size - start).min(u64::from(self.chunk_size)) as usize,
            )
        })
    }
}

impl_wire!(FetchRequest, MAX_FETCH_REQUEST_BYTES, |r| {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&r.chunk_size) {
        Err(format!(
            "chunk size {} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
            r.chunk_size
        ))
    } else if (r.index as usize) >= MAX_CHUNKS {
        Err(format!(
            "chunk index {} is past the {MAX_CHUNKS}-chunk limit",
            r.index
        ))
    } else {
        Ok(())
    }
});

/// The answer to a [`FetchRequest`]. A chunk's data is [`Bytes`]: sent without being copied
/// into an encoding, and received as a slice of the buffer it was read into
/// ([`Wire::to_wire_parts`], [`Wire::from_wire_owned`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchResponse {
    Chunk(Bytes),
    Refused(Refusal),
}

/// [`FetchResponse`] with the chunk borrowed from the buffer it is decoded from: the same
/// variants in the same order, so the same encoding.
#[derive(Serialize, Deserialize)]
enum FetchResponseView<'a> {
    Chunk(#[serde(with = "serde_bytes", borrow)] &'a [u8]),
    Refused(Refusal),
}

impl Wire for FetchResponse {
    const MAX_BYTES: usize = MAX_FETCH_RESPONSE_BYTES;

    fn check(&self) -> Result<(), String> {
        match self {
            FetchResponse::Chunk(data) if data.len() > MAX_CHUNK_SIZE as usize => Err(format!(
                "chunk of {} bytes; the limit is {MAX_CHUNK_SIZE}",
                data.len()
            )),
            FetchResponse::Chunk(data) if data.is_empty() => Err("empty chunk".to_owned()),
            _ => Ok(()),
        }
    }

    fn to_wire_parts(&self) -> (Vec<u8>, Bytes) {
        match self {
            // The encoding of the variant and of the data's length; the data follows as is.
            FetchResponse::Chunk(data) => (
                crate::codec::encode(&(0u32, data.len() as u64)),
                data.clone(),
            ),
            FetchResponse::Refused(_) => (self.to_wire(), Bytes::new()),
        }
    }

    fn from_wire(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_wire_owned(Bytes::copy_from_slice(bytes))
    }

    fn from_wire_owned(bytes: Bytes) -> Result<Self, DecodeError> {
        let view: FetchResponseView = crate::codec::decode::<
            _,
            MAX_FETCH_RESPONSE_BYTES,
            { crate::codec::claims(MAX_FETCH_RESPONSE_BYTES) },
        >(&bytes)?;
        let value = match view {
            FetchResponseView::Chunk(data) => FetchResponse::Chunk(bytes.slice_ref(data)),
            FetchResponseView::Refused(why) => FetchResponse::Refused(why),
        };
        value.check().map_err(DecodeError::Invalid)?;
        Ok(value)
    }
}

/// Which chunks of an archive a node holds, by the cut a [`HaveRequest`] names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Have {
    /// The whole archive.
    All,
    /// The chunks whose bits are set (a fetch under way): bit `i % 8` of byte `i / 8` is
    /// chunk `i`; `ceil(chunks / 8)` bytes, with the bits past the last chunk clear.
    Chunks(Vec<u8>),
    /// The whole archive, but ask only for the chunks whose bits are set, for now (a seed
    /// serving a crowd: the rest the crowd can copy among itself). A map as in `Chunks`.
    Offer(Vec<u8>),
}

impl Have {
    /// The map of `held` (one flag per chunk).
    pub fn of(held: &[bool]) -> Self {
        Self::Chunks(Self::bits(held))
    }

    /// A seed's offer of the chunks flagged in `offered`.
    pub fn offer(offered: &[bool]) -> Self {
        Self::Offer(Self::bits(offered))
    }

    fn bits(flags: &[bool]) -> Vec<u8> {
        let mut bits = vec![0u8; flags.len().div_ceil(8)];
        for (i, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
            bits[i / 8] |= 1 << (i % 8);
        }
        bits
    }

    /// One flag per chunk of an archive of `chunks` chunks, or why the map cannot be of it.
    pub fn held(&self, chunks: usize) -> Result<Vec<bool>, String> {
        let bits = match self {
            Self::All => return Ok(vec![true; chunks]),
            Self::Chunks(bits) | Self::Offer(bits) => bits,
        };
        if bits.len() != chunks.div_ceil(8) {
            return Err(format!(
                "a map of {} bytes for {chunks} chunks; it takes {}",
                bits.len(),
                chunks.div_ceil(8)
            ));
        }
        let held: Vec<bool> = (0..bits.len() * 8)
            .map(|i| bits[i / 8] & (1 << (i % 8)) != 0)
            .collect();
        if held[chunks..].iter().any(|h| *h) {
            return Err(format!("the map names chunks past the last of {chunks}"));
        }
        Ok(held[..chunks].to_vec())
    }
}

/// Which chunks of `content`, cut into `chunks` pieces of `chunk_size` bytes, does the node
/// hold? The asker says which it holds: two nodes fetching one archive learn of each other
/// from one exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaveRequest {
    pub content: ContentId,
    pub chunk_size: u32,
    pub chunks: u32,
    pub have: Have,
}

impl_wire!(HaveRequest, MAX_HAVE_BYTES, |r| {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&r.chunk_size) {
        Err(format!(
            "chunk size {} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
            r.chunk_size
        ))
    } else if r.chunks == 0 || r.chunks as usize > MAX_CHUNKS {
        Err(format!(
            "{} chunks; an archive has 1..={MAX_CHUNKS}",
            r.chunks
        ))
    } else if matches!(r.have, Have::Offer(_)) {
        Err("an asker says what it holds, not what it offers".into())
    } else {
        r.have.held(r.chunks as usize).map(|_| ())
    }
});

/// The answer to a [`HaveRequest`]: `Refused(NotFound)` from a node that neither holds nor
/// fetches the archive (or fetches it cut another way).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HaveResponse {
    Have(Have),
    Refused(Refusal),
}

impl_wire!(HaveResponse, MAX_HAVE_BYTES, |r| match r {
    HaveResponse::Have(Have::Chunks(bits) | Have::Offer(bits))
        if bits.len() > MAX_CHUNKS.div_ceil(8) =>
        Err(format!(
            "a map of {} bytes; the limit is {}",
            bits.len(),
            MAX_CHUNKS.div_ceil(8)
        )),
    _ => Ok(()),
});

/// Bucket of a record id in a catalog summary.
pub fn bucket_of(id: &RecordId) -> u8 {
    id.as_bytes()[0]
}
