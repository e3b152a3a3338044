//! The registry: the catalog of verified records and the blobs this node serves, and the
//! decisions on everything the network brings in (gossip verdicts, inbound DHT puts, sync and
//! fetch requests).
//!
//! This is the in-memory core that the node runs today; persistent storage (redb and the
//! on-disk blob store) and the search index plug in behind the same methods.

pub mod fetch;
pub mod inbound;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use agora_protocol::ContentId;
use agora_protocol::codec::Wire;
use agora_protocol::dht::{DhtKey, DhtValue};
use agora_protocol::limits::DEFAULT_CHUNK_SIZE;
use agora_protocol::messages::{BucketDigest, GossipMessage, Refusal};
use agora_protocol::records::{ArchiveInfo, CatalogRecord, RecordId, ReleaseRecord};

use crate::network::{NetworkError, NetworkHandle};

/// Counters of what the registry decided, for tests, status and metrics.
#[derive(Debug, Default)]
pub struct RegistryStats {
    pub gossip_accepted: AtomicU64,
    pub gossip_rejected: AtomicU64,
    pub gossip_ignored: AtomicU64,
    pub records_stored: AtomicU64,
    pub records_refused: AtomicU64,
    pub chunks_served: AtomicU64,
}

/// An archive this node serves: how it is cut, and its bytes.
type ServedBlob = (ArchiveInfo, Arc<Vec<u8>>);

/// What the node knows and serves.
pub struct Registry {
    net: NetworkHandle,
    /// Every verified catalog record, by id (sorted, so sync buckets are cheap to digest).
    catalog: RwLock<BTreeMap<RecordId, CatalogRecord>>,
    /// Archives this node serves, with how they are cut into chunks.
    blobs: RwLock<HashMap<ContentId, ServedBlob>>,
    pub stats: RegistryStats,
}

impl Registry {
    pub fn new(net: NetworkHandle) -> Arc<Self> {
        Arc::new(Self {
            net,
            catalog: RwLock::new(BTreeMap::new()),
            blobs: RwLock::new(HashMap::new()),
            stats: RegistryStats::default(),
        })
    }

    pub fn network(&self) -> &NetworkHandle {
        &self.net
    }

    pub fn catalog_len(&self) -> usize {
        self.catalog.read().map_or(0, |c| c.len())
    }

    pub fn has_record(&self, id: &RecordId) -> bool {
        self.catalog.read().is_ok_and(|c| c.contains_key(id))
    }

    /// Adds a verified record; returns false if it was already there.
    pub(crate) fn insert(&self, record: CatalogRecord) -> bool {
        let id = record.id();
        match self.catalog.write() {
            Ok(mut c) => c.insert(id, record).is_none(),
            Err(_) => false,
        }
    }

    /// Digest of each of the 256 id buckets of the catalog.
    pub fn summary(&self) -> Vec<BucketDigest> {
        let mut hashers: Vec<(u32, agora_protocol::ContentHasher)> = (0
            ..agora_protocol::limits::SYNC_BUCKETS)
            .map(|_| (0, agora_protocol::ContentHasher::new()))
            .collect();
        if let Ok(c) = self.catalog.read() {
            for id in c.keys() {
                let (count, h) = &mut hashers[agora_protocol::messages::bucket_of(id) as usize];
                *count += 1;
                h.update(id.as_bytes());
            }
        }
        hashers
            .into_iter()
            .map(|(count, h)| BucketDigest {
                count,
                digest: if count == 0 {
                    [0; 32]
                } else {
                    *h.finish().as_bytes()
                },
            })
            .collect()
    }

    /// Ids in the given buckets.
    pub fn ids_in(&self, buckets: &[u8]) -> Vec<RecordId> {
        let Ok(c) = self.catalog.read() else {
            return Vec::new();
        };
        c.keys()
            .filter(|id| buckets.contains(&agora_protocol::messages::bucket_of(id)))
            .copied()
            .collect()
    }

    /// The records with these ids that we have.
    pub fn records(&self, ids: &[RecordId]) -> Vec<CatalogRecord> {
        let Ok(c) = self.catalog.read() else {
            return Vec::new();
        };
        ids.iter().filter_map(|id| c.get(id).cloned()).collect()
    }

    /// Serves an archive from memory and announces this node as its provider.
    pub async fn add_blob(&self, data: Vec<u8>) -> Result<ArchiveInfo, NetworkError> {
        let info = ArchiveInfo::describe(&data, DEFAULT_CHUNK_SIZE);
        self.add_blob_with(info.clone(), data).await?;
        Ok(info)
    }

    /// Serves `data`, cut as `info` says, and provides it on the DHT.
    pub async fn add_blob_with(
        &self,
        info: ArchiveInfo,
        data: Vec<u8>,
    ) -> Result<(), NetworkError> {
        let id = info.id;
        if let Ok(mut b) = self.blobs.write() {
            b.insert(id, (info, Arc::new(data)));
        }
        self.net
            .start_providing(DhtKey::Content(id).to_bytes())
            .await
            .or_else(tolerate_lonely)
    }

    /// Chunk `index` of a blob we serve, or why not.
    pub(crate) fn chunk(&self, id: &ContentId, index: u32) -> Result<Vec<u8>, Refusal> {
        let blobs = self.blobs.read().map_err(|_| Refusal::Busy)?;
        let (info, data) = blobs.get(id).ok_or(Refusal::NotFound)?;
        let (start, len) = info.chunk_range(index).ok_or(Refusal::OutOfRange)?;
        Ok(data[start as usize..start as usize + len].to_vec())
    }

    /// Publishes a verified release: into the catalog, under its DHT key, and on gossip.
    pub async fn announce(&self, record: ReleaseRecord) -> Result<(), NetworkError> {
        self.insert(CatalogRecord::Release(record.clone()));
        let value = DhtValue::Release(record.clone());
        self.net
            .put_record(value.key().to_bytes(), value.encode())
            .await
            .or_else(tolerate_lonely)?;
        self.net
            .publish(GossipMessage::Release(record).to_wire())
            .await
    }

    /// Mark a count.
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A DHT write that reached no other node still stored the value locally, and replication
/// will carry it on once peers appear: not an error for a publisher.
fn tolerate_lonely(e: NetworkError) -> Result<(), NetworkError> {
    match e {
        NetworkError::Query(_) => Ok(()),
        other => Err(other),
    }
}
