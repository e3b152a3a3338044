//! The registry: the owner of the catalog. It admits signed records (trust rules, then a
//! durable write, then the search index), answers queries (get, versions, exists, search,
//! resolve), publishes and yanks, fetches archives from the best peers, and keeps peer
//! reputation. Everything the network brings in reaches it through [`inbound`].
//!
//! Disk work (redb, blobs, tantivy) runs on blocking threads, never on the event loop and
//! never while holding up an async worker. A write is acknowledged only after it committed.

pub mod archive;
#[cfg(test)]
mod convergence;
pub mod fetch;
pub mod inbound;
mod lookup;
pub mod refusals;
pub mod resolve;
pub mod sync;
pub mod trust;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_protocol::codec::Wire;
use agora_protocol::dht::{DhtKey, DhtValue};
use agora_protocol::ipc::IndexState;
use agora_protocol::limits::{DEFAULT_CHUNK_SIZE, MAX_HEAD_VERSIONS, SYNC_BUCKETS};
use agora_protocol::messages::{BucketDigest, FetchRequest, GossipMessage, Refusal};
use agora_protocol::records::{
    ArchiveInfo, CatalogRecord, HeadBody, PackageHead, RecordError, RecordId, ReleaseBody,
    ReleaseRecord, RotationBody, Signed, YankBody,
};
use agora_protocol::search::{SearchQuery, SearchResults};
use agora_protocol::{
    ContentHasher, ContentId, Dependency, PackageName, PublisherKey, PublisherSecret, Version,
    VersionReq,
};
use futures::{FutureExt, StreamExt};
use libp2p::PeerId;
use tracing::{Instrument, debug, error, info, warn};

use crate::index::{CatchUp, IndexDoc, IndexError, OVERLAY_MAX, Seal, SearchIndex, Ticket};
use crate::lock;
use crate::network::{NetworkError, NetworkHandle};
use crate::reputation::{PeerRecord, Reputation};
use crate::store::{BlobKind, BlobStore, CatalogWrite, Db, StoreError, blobs::BlobCheck};
use archive::PackError;
use fetch::{FetchError, PeerOutcome};
use refusals::{RefusalChanges, Refusals};
use resolve::{Candidate, ResolveError, fmt_versions};
use trust::{Admission, Trust, TrustError, TrustPolicy};

/// Default size of the cache of fetched archives: enough for thousands of template packs.
pub const DEFAULT_CACHE_QUOTA: u64 = 1024 * 1024 * 1024;
/// Records admitted per durable transaction when a big batch (a sync) comes in.
const INGEST_BATCH: usize = 2048;
/// Times a batch's refused records are decided again once the rest of it is in.
const INGEST_RETRIES: usize = 4;
/// Longest a publish waits for its DHT writes once the release is durable, gossiped and
/// searchable here. A DHT write ends when the closest peers have answered, and on a network
/// with departed peers that can take until the query timeout; it goes on in the background.
const PUBLISH_DHT_WAIT: Duration = Duration::from_secs(3);

/// Documents sent to the index writer at a time while the search index is rebuilt.
const REBUILD_CHUNK: usize = 4096;
/// Chunks of documents that may wait for the index writer.
const REBUILD_CHUNKS_AHEAD: usize = 2;
/// A saved search index is caught up at start-up while the names to re-index are at most
/// this fraction of the indexed names (1/4) or an overlay's worth; with more, a rebuild is
/// cheaper.
const CATCH_UP_FRACTION: u64 = 4;
/// Records put back into the local DHT store per event-loop command at start: about a
/// millisecond of the loop's time each.
const RESTORE_CHUNK: usize = 1024;
/// A running node saves its search index once the catalog has grown by this fraction of the
/// indexed names (1/8, half what a catch-up takes) or an overlay's worth since the copy on
/// disk: so a crash leaves a copy the next start catches up instead of rebuilding.
const SAVE_BEHIND_FRACTION: u64 = 8;

/// Where a registry keeps its state and how it decides trust.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Holds `catalog.redb`, `index/`, `blobs/`, `tmp/` and `partial/`.
    pub data_dir: PathBuf,
    /// Bytes of fetched archives kept before the least recently used are evicted.
    pub cache_quota: u64,
    pub trust: TrustPolicy,
    /// How often the node syncs its catalog with a random connected peer.
    pub sync_interval: Duration,
}

impl RegistryConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            cache_quota: DEFAULT_CACHE_QUOTA,
            trust: TrustPolicy::FirstUse,
            sync_interval: sync::SYNC_INTERVAL,
        }
    }
}

/// Counters of what the registry decided, for tests, status and metrics.
#[derive(Debug, Default)]
pub struct RegistryStats {
    pub gossip_accepted: AtomicU64,
    pub gossip_rejected: AtomicU64,
    pub gossip_ignored: AtomicU64,
    pub records_stored: AtomicU64,
    pub records_refused: AtomicU64,
    /// Records refused because they would roll a name back (a release below its predecessor,
    /// a head hiding newer versions).
    pub rollbacks_refused: AtomicU64,
    /// Second records for an existing version (kept as evidence).
    pub equivocations: AtomicU64,
    pub chunks_served: AtomicU64,
    pub bytes_served: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub syncs_completed: AtomicU64,
    /// Record ids peers listed to us in syncs (what reconciliation cost).
    pub sync_ids_listed: AtomicU64,
    pub records_synced: AtomicU64,
    pub searches: AtomicU64,
    pub publishes: AtomicU64,
    /// Archives fetched from the network (cache misses that succeeded).
    pub fetches: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub peers_banned: AtomicU64,
}

/// Why a registry operation failed. Each variant is something the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("package '{name}' not found in the catalog ({catalog} packages)")]
    NotFound { name: PackageName, catalog: usize },
    #[error("no installable version of '{name}' matches {req}; available: {}", fmt_versions(.available))]
    NoMatchingVersion {
        name: PackageName,
        req: VersionReq,
        available: Vec<Version>,
    },
    #[error("'{name}' has no version {version}")]
    VersionNotFound { name: PackageName, version: Version },
    #[error(
        "{name}@{version} has two different signed records (equivocation); it cannot be installed"
    )]
    Equivocated { name: PackageName, version: Version },
    #[error("{name}@{version} is already published")]
    AlreadyPublished { name: PackageName, version: Version },
    #[error("{name}@{version} is not newer than {highest}, the highest version published")]
    NotNewer {
        name: PackageName,
        version: Version,
        highest: Version,
    },
    #[error(
        "the DHT holds heads of '{name}' from {} keys ({}), and this node has no record of it to tell which owns it",
        .owners.len(),
        .owners.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
    )]
    DisputedName {
        name: PackageName,
        owners: Vec<PublisherKey>,
    },
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("record {0} was refused by this node before")]
    RefusedBefore(RecordId),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What happened to one record offered to the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingested {
    Added(Admission),
    Duplicate,
    Invalid(RecordError),
    Refused(TrustError),
    /// Refused for good by the trust rules earlier, and remembered.
    RefusedBefore,
}

/// One version of a package as `versions` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: Version,
    pub record: RecordId,
    pub yanked: bool,
    /// More than one record exists for this version: not installable.
    pub equivocated: bool,
}

/// A finished publish.
#[derive(Clone, Debug)]
pub struct Published {
    pub record: ReleaseRecord,
    pub head: PackageHead,
    /// False when no peer was subscribed yet: peers get the release by sync instead.
    pub gossiped: bool,
}

/// A finished fetch.
#[derive(Clone, Debug)]
pub struct FetchedBlob {
    pub content: ContentId,
    pub path: PathBuf,
    pub size: u64,
    /// True when the archive was already in the local store.
    pub cached: bool,
    /// Chunks delivered by each provider.
    pub served_by: Vec<(PeerId, u32)>,
    /// Chunks found in a partial download from an earlier, interrupted attempt.
    pub resumed_chunks: u32,
}

/// One package chosen by a resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPackage {
    pub name: PackageName,
    pub version: Version,
    pub record: RecordId,
    pub archive: ContentId,
    pub publisher: PublisherKey,
    pub dependencies: Vec<Dependency>,
}

/// The in-memory view of the catalog (the truth is in redb).
struct Catalog {
    trust: Trust,
    /// Every record id, sorted: sync buckets are contiguous ranges.
    ids: BTreeSet<RecordId>,
    /// Records refused for good, not to be fetched or checked again.
    refusals: Refusals,
    /// Each bucket's digest for the sync summary, kept until a record of the bucket is added:
    /// a summary recomputes only the buckets that changed, not the whole catalog.
    summary: Vec<Option<BucketDigest>>,
}

impl Catalog {
    /// The state of a name, or `NotFound` naming how many packages there are.
    fn state(&self, name: &PackageName) -> Result<&trust::NameState, RegistryError> {
        self.trust
            .name(name)
            .ok_or_else(|| RegistryError::NotFound {
                name: name.clone(),
                catalog: self.trust.name_count(),
            })
    }
}

pub struct Registry {
    net: NetworkHandle,
    db: Arc<Db>,
    pub blobs: BlobStore,
    index: SearchIndex,
    catalog: Mutex<Catalog>,
    reputation: Mutex<Reputation>,
    /// Serialises publishes and yanks so that a name's chain is extended one at a time.
    authoring: tokio::sync::Mutex<()>,
    /// Peers a sync is running with (one at a time per peer).
    syncing: Mutex<HashSet<PeerId>>,
    /// Bucket differences that held nothing for this node (see [`sync::Settled`]).
    settled: Mutex<sync::Settled>,
    /// Archives being fetched, each with the gate that lets one fetch of it run at a time.
    fetching: Mutex<HashMap<ContentId, Arc<tokio::sync::Mutex<()>>>>,
    pub stats: RegistryStats,
    pub startup: StartupReport,
    /// DHT values to put back in the local store once the network runs (see `restore_dht`).
    to_restore: Mutex<Vec<libp2p::kad::Record>>,
    sync_interval: Duration,
}

/// What opening the store found.
#[derive(Clone, Debug, Default)]
pub struct StartupReport {
    pub records: usize,
    pub blobs: BlobCheck,
    pub index_rebuilt: bool,
    /// Names re-indexed on top of the saved index (the catalog grew after its seal).
    pub index_caught_up: usize,
    pub millis: u128,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A turn to fetch one archive (see `Registry::fetch_turn`).
struct FetchTurn<'a> {
    registry: &'a Registry,
    id: ContentId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for FetchTurn<'_> {
    fn drop(&mut self) {
        let mut fetching = lock(&self.registry.fetching);
        drop(self.guard.take());
        // Nobody waits on the gate if the map holds its only handle.
        if fetching
            .get(&self.id)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            fetching.remove(&self.id);
        }
    }
}

/// Checks the stored owner and highest-version pins against the replayed catalog (they are
/// written with the records, in the same transactions, so any difference is a corrupt store)
/// and returns how many names have an installable release. Two threads check half the names
/// each while a third opens the search index, which is returned too.
fn check_pins_and_open_index(
    db: &Db,
    trust: &Trust,
    index_dir: &Path,
    seal: Option<Seal>,
) -> Result<((SearchIndex, bool), u64), RegistryError> {
    // The names come out of their hash map in hash order: a sample's middle name splits the
    // sorted pin tables near their middle ("" when there are none: all in the upper half).
    let mut sample: Vec<&str> = trust.names().take(255).map(|(n, _)| n.as_str()).collect();
    sample.sort_unstable();
    let middle = sample.get(sample.len() / 2).copied().unwrap_or_default();
    let (index, upper, lower) = std::thread::scope(|scope| {
        let index = scope.spawn(|| SearchIndex::open(index_dir, seal));
        let upper =
            scope.spawn(|| check_pin_range(db, trust, (Bound::Included(middle), Bound::Unbounded)));
        let lower = check_pin_range(db, trust, (Bound::Unbounded, Bound::Excluded(middle)));
        (joined(index.join()), joined(upper.join()), lower)
    });
    let (lower, upper) = (lower?, upper?);
    let installable = pins_agree(
        trust,
        PinCount {
            pins: lower.pins + upper.pins,
            installable: lower.installable + upper.installable,
        },
    )?;
    Ok((index?, installable))
}

/// Checks that the log had each of the `wanted` newest releases read from it.
fn all_newest_found(found: usize, wanted: usize) -> Result<(), StoreError> {
    if found == wanted {
        return Ok(());
    }
    Err(StoreError::Corrupt(format!(
        "{} of {wanted} newest releases are missing from the catalog log",
        wanted - found
    )))
}

/// A thread's result, or its panic passed on.
fn joined<T>(result: std::thread::Result<T>) -> T {
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// What a range of the pin tables held.
struct PinCount {
    pins: u64,
    installable: u64,
}

/// Checks that every name had its owner pin; returns how many names have an installable
/// release.
fn pins_agree(trust: &Trust, count: PinCount) -> Result<u64, StoreError> {
    let names = trust.name_count() as u64;
    if count.pins != names {
        return Err(StoreError::Corrupt(format!(
            "the catalog has {names} names but {} owner pins",
            count.pins
        )));
    }
    Ok(count.installable)
}

/// Checks the pins of the names in a range against the replayed catalog.
fn check_pin_range(
    db: &Db,
    trust: &Trust,
    names: (Bound<&str>, Bound<&str>),
) -> Result<PinCount, StoreError> {
    let mut installable = 0;
    let pins = db.each_pin(names, |name, owner, highest| {
        let state = trust.name(name).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "owner pin for '{name}', which the catalog does not have"
            ))
        })?;
        if state.owner.as_bytes() != owner {
            return Err(StoreError::Corrupt(format!(
                "owner pin of '{name}' is {} but the catalog says {}",
                hex::encode(owner),
                state.owner
            )));
        }
        let pinned = highest
            .map(|v| {
                Version::parse(v).map_err(|e| {
                    StoreError::Corrupt(format!("highest version pinned for '{name}': {e}"))
                })
            })
            .transpose()?;
        if pinned != state.highest {
            return Err(StoreError::Corrupt(format!(
                "highest version pinned for '{name}' is {} but the catalog says {}",
                shown(pinned.as_ref()),
                shown(state.highest.as_ref())
            )));
        }
        if state.latest().is_some() {
            installable += 1;
        }
        Ok(())
    })?;
    Ok(PinCount { pins, installable })
}

/// A version, or "none".
fn shown(version: Option<&Version>) -> String {
    version.map_or_else(|| "none".to_owned(), Version::to_string)
}

/// Runs disk work on a blocking thread.
async fn blocking<T, F>(f: F) -> Result<T, RegistryError>
where
    F: FnOnce() -> Result<T, RegistryError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::Internal(format!("blocking task failed: {e}")))?
}

impl Registry {
    /// Opens the store under `config.data_dir`, replays the catalog, checks the index and the
    /// blobs. Blocking: call before the node starts serving.
    pub fn open(config: &RegistryConfig, net: NetworkHandle) -> Result<Arc<Self>, RegistryError> {
        let started = Instant::now();
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(crate::store::io_err(dir))?;
        let db = Arc::new(Db::open(&dir.join("catalog.redb"))?);
        let (blobs, blob_check) = BlobStore::open(dir, db.clone(), config.cache_quota)?;
        // Sized for the stored records up front: growing the maps during the replay was 7 %
        // of start-up.
        let (stored, names) = db.counts()?;
        let (stored, names) = (stored as usize, names as usize);
        let mut catalog = Catalog {
            trust: Trust::with_capacity(config.trust.clone(), stored, names),
            ids: BTreeSet::new(),
            refusals: Refusals::load(
                refusals::MAX_REFUSALS,
                db.refusals(&config.trust.fingerprint())?,
            ),
            summary: vec![None; SYNC_BUCKETS],
        };
        // What this node put on the DHT itself (its heads and the releases it published),
        // collected during the replay so the log is read once.
        let mut restore: Vec<libp2p::kad::Record> = Vec::new();
        let published = blobs.published();
        let index_dir = dir.join("index");
        let mut catch_up = SearchIndex::saved_seal(&index_dir).map(CatchUp::new);
        let snapshot = db.load_catalog(|id, record| {
            if let Some(c) = &mut catch_up {
                c.record(&id, record.name());
            }
            if let Err(e) = catalog.trust.admit(&record, id) {
                // The log only holds admitted records, in order: this is a corrupt store.
                return Err(StoreError::Corrupt(format!("replaying record {id}: {e}")));
            }
            catalog.ids.insert(id);
            if let CatalogRecord::Release(r) = record
                && published.contains(&r.body.archive.id)
            {
                let value = DhtValue::Release(r);
                restore.push(libp2p::kad::Record::new(
                    value.key().to_bytes(),
                    value.encode(),
                ));
            }
            Ok(())
        })?;
        let load_ms = started.elapsed().as_millis();
        let records = snapshot.records as usize;
        let catch_up = catch_up.and_then(CatchUp::finish);
        let ((index, mut index_kept), installable) = check_pins_and_open_index(
            &db,
            &catalog.trust,
            &index_dir,
            catch_up.as_ref().map(|(seal, _)| *seal),
        )?;
        let checks_ms = started.elapsed().as_millis() - load_ms;
        for (head, bytes) in snapshot.heads {
            match catalog.trust.admit_head(&head) {
                // Served as stored: the stored bytes are the head's DHT value.
                Ok(_) => restore.push(libp2p::kad::Record::new(
                    DhtKey::Head(head.body.name).to_bytes(),
                    bytes,
                )),
                Err(e) => {
                    warn!(name = %head.body.name, error = %e, "dropping a stored package head")
                }
            }
        }

        let registry = Self {
            net,
            db,
            blobs,
            index,
            catalog: Mutex::new(catalog),
            reputation: Mutex::new(Reputation::default()),
            authoring: tokio::sync::Mutex::new(()),
            syncing: Mutex::new(HashSet::new()),
            settled: Mutex::new(sync::Settled::default()),
            fetching: Mutex::new(HashMap::new()),
            stats: RegistryStats::default(),
            startup: StartupReport::default(),
            to_restore: Mutex::new(restore),
            sync_interval: config.sync_interval,
        };
        let rep: Vec<(PeerId, PeerRecord)> = registry
            .db
            .load_reputation()?
            .into_iter()
            .filter_map(|(peer, entry)| {
                Some((
                    PeerId::from_bytes(&peer).ok()?,
                    crate::store::decode_meta(&entry).ok()?,
                ))
            })
            .collect();
        *registry.reputation_lock() = Reputation::from_records(rep);

        // The saved index reflects the log's first records: the names of those after them are
        // re-indexed on top of it, unless so many that a rebuild costs less.
        let mut index_caught_up = 0;
        if let Some((_, names)) = catch_up.filter(|_| index_kept)
            && !names.is_empty()
        {
            if names.len() as u64 <= (installable / CATCH_UP_FRACTION).max(OVERLAY_MAX as u64) {
                let (docs, removed) = registry.index_docs(&names)?;
                registry.index.update(&docs, &removed)?;
                index_caught_up = names.len();
            } else {
                index_kept = false;
            }
        }
        let mut index_rebuilt = false;
        // One document per name that has an installable release.
        if !index_kept && installable > 0 || registry.index.num_docs() != installable {
            info!(
                indexed = registry.index.num_docs(),
                names = installable,
                sealed = index_kept,
                "search index is out of date or was not closed cleanly; rebuilding it while the node serves"
            );
            // Searches wait from now until `rebuild_index` (which the node starts) ends.
            registry.index.begin_rebuild();
            index_rebuilt = true;
        }
        let mut registry = registry;
        registry.startup = StartupReport {
            records,
            blobs: blob_check,
            index_rebuilt,
            index_caught_up,
            millis: started.elapsed().as_millis(),
        };
        info!(
            records = registry.startup.records,
            ms = registry.startup.millis,
            load_ms,
            checks_ms,
            index_caught_up,
            index_rebuilt,
            "catalog loaded"
        );
        Ok(Arc::new(registry))
    }

    /// Rebuilds the search index from the catalog, when [`Registry::open`] found it must
    /// (`startup.index_rebuilt`); the node runs it beside everything else it serves, and
    /// searches wait for it. A second thread reads the newest release of each name from the
    /// log, in log order, and sends their documents a chunk at a time while this one feeds
    /// them to the index writer (whose own threads index them). A failure is logged, and
    /// searches are refused with it until the next start.
    pub fn rebuild_index(&self) {
        let started = Instant::now();
        let rebuilt = self.index.rebuild_with(|add| {
            // Taken under the index's lock: what changes after it is marked and applied by
            // the first flush after the rebuild.
            let wanted = self
                .catalog_lock()
                .trust
                .names()
                .filter_map(|(_, s)| s.latest().map(|v| s.releases[v]))
                .collect();
            self.feed_newest(wanted, add)
        });
        match rebuilt {
            Ok(()) => info!(
                indexed = self.index.num_docs(),
                ms = started.elapsed().as_millis(),
                "search index rebuilt"
            ),
            Err(e) => {
                error!(error = %e, "could not rebuild the search index; searches are refused until agorad restarts")
            }
        }
    }

    /// Reads the releases `wanted` from the log and gives `add` their documents.
    fn feed_newest(
        &self,
        mut wanted: Vec<RecordId>,
        add: &mut dyn FnMut(IndexDoc) -> Result<(), IndexError>,
    ) -> Result<(), RegistryError> {
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(REBUILD_CHUNKS_AHEAD);
            let reader = scope.spawn(move || {
                let mut docs = Vec::with_capacity(REBUILD_CHUNK);
                let read = self.db.scan_records(&mut wanted, |record| {
                    if let CatalogRecord::Release(r) = record {
                        docs.push(index_doc(r.body));
                    }
                    if docs.len() < REBUILD_CHUNK {
                        return ControlFlow::Continue(());
                    }
                    let full = std::mem::replace(&mut docs, Vec::with_capacity(REBUILD_CHUNK));
                    match tx.send(Ok(full)) {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(_) => ControlFlow::Break(()), // the index gave up
                    }
                });
                let last = read
                    .and_then(|found| all_newest_found(found, wanted.len()))
                    .map(|()| docs)
                    .map_err(RegistryError::from);
                let _ = tx.send(last);
            });
            // Ends the reader early if the index fails: it stops at its next send.
            let fed = rx.into_iter().try_for_each(|docs| {
                docs?
                    .into_iter()
                    .try_for_each(&mut *add)
                    .map_err(RegistryError::from)
            });
            joined(reader.join());
            fed
        })
    }

    fn catalog_lock(&self) -> MutexGuard<'_, Catalog> {
        lock(&self.catalog)
    }

    fn reputation_lock(&self) -> MutexGuard<'_, Reputation> {
        lock(&self.reputation)
    }

    pub fn network(&self) -> &NetworkHandle {
        &self.net
    }

    pub fn catalog_len(&self) -> usize {
        self.catalog_lock().ids.len()
    }

    /// Packages the search index holds (what `search` can find).
    pub fn indexed_count(&self) -> u64 {
        self.index.num_docs()
    }

    /// Whether searches are answered now (or wait for a rebuild, or are refused after one
    /// failed).
    pub fn index_state(&self) -> IndexState {
        self.index.state()
    }

    /// Number of package names in the catalog.
    pub fn package_count(&self) -> usize {
        self.catalog_lock().trust.name_count()
    }

    pub fn has_record(&self, id: &RecordId) -> bool {
        self.catalog_lock().ids.contains(id)
    }

    /// How often the node syncs with a random peer.
    pub fn sync_interval(&self) -> Duration {
        self.sync_interval
    }

    /// Whether this node has decided on `id` already: it holds it, or refused it for good.
    pub fn knows(&self, id: &RecordId) -> bool {
        let cat = self.catalog_lock();
        cat.ids.contains(id) || cat.refusals.contains(id)
    }

    /// How many records this node remembers refusing.
    pub fn refusals_remembered(&self) -> usize {
        self.catalog_lock().refusals.len()
    }

    /// Admits records (verifying their signatures unless `verified`), in the order the trust
    /// rules accept, durably, and returns once they are searchable too. Blocking.
    pub fn ingest(
        &self,
        records: Vec<CatalogRecord>,
        verified: bool,
    ) -> Result<Vec<(RecordId, Ingested)>, RegistryError> {
        let (out, ticket) = self.ingest_durable(records, verified, |_| {})?;
        self.flush_index(ticket)?;
        Ok(out)
    }

    /// [`ingest`](Self::ingest) up to the durable write: returns the ticket that
    /// [`flush_index`](Self::flush_index) turns into searchability. `decided` hears what the
    /// trust rules made of each batch before it is written (a gossip verdict needs no more).
    pub fn ingest_durable(
        &self,
        mut records: Vec<CatalogRecord>,
        verified: bool,
        mut decided: impl FnMut(&[(RecordId, Ingested)]),
    ) -> Result<(Vec<(RecordId, Ingested)>, Ticket), RegistryError> {
        if records.len() > 1 {
            records.sort_by_cached_key(trust::replay_order);
        }
        let mut out = Vec::with_capacity(records.len());
        let mut ticket = self.index.last_ticket();
        for batch in records.chunks(INGEST_BATCH) {
            let (decisions, t) = self.ingest_batch(batch, verified, &mut decided)?;
            out.extend(decisions);
            ticket = ticket.max(t);
        }
        // A record refused before what makes it acceptable came later in the batch (a new
        // owner's release sorted before its rotation by the times their signers claim) is
        // decided again, as the next sync would, while that takes more of them in.
        let mut refused: Vec<usize> = (0..out.len())
            .filter(|&i| matches!(out[i].1, Ingested::Refused(_)))
            .collect();
        for _ in 0..INGEST_RETRIES {
            if refused.is_empty() {
                break;
            }
            let again: Vec<CatalogRecord> = refused.iter().map(|&i| records[i].clone()).collect();
            let mut decisions = Vec::with_capacity(again.len());
            for batch in again.chunks(INGEST_BATCH) {
                // Their signatures held the first time.
                let (d, t) = self.ingest_batch(batch, true, &mut decided)?;
                decisions.extend(d);
                ticket = ticket.max(t);
            }
            let before = refused.len();
            let mut still = Vec::new();
            for (&i, decision) in refused.iter().zip(decisions) {
                match decision.1 {
                    Ingested::Added(_) => out[i] = decision,
                    Ingested::Refused(_) => {
                        out[i] = decision;
                        still.push(i);
                    }
                    // Refused again and remembered, for the same reason.
                    _ => still.push(i),
                }
            }
            refused = still;
            if refused.len() == before {
                break;
            }
        }
        Ok((out, ticket))
    }

    /// Returns once the index changes marked up to `ticket` are searchable. Blocking.
    pub fn flush_index(&self, ticket: Ticket) -> Result<(), RegistryError> {
        self.index.flush(ticket, |names| {
            let names: Vec<PackageName> = names.iter().filter_map(|n| n.parse().ok()).collect();
            self.index_docs(&names)
        })
    }

    fn ingest_batch(
        &self,
        records: &[CatalogRecord],
        verified: bool,
        decided: &mut impl FnMut(&[(RecordId, Ingested)]),
    ) -> Result<(Vec<(RecordId, Ingested)>, Ticket), RegistryError> {
        let ids: Vec<RecordId> = records.iter().map(CatalogRecord::id).collect();
        // Signatures are checked before the catalog's lock is taken (a sync's batch held it
        // through thousands of checks), and only those of records it does not hold: an id
        // hashes the record's whole encoding, signature included, so a held id is the same
        // bytes, checked when they were admitted (gossip relays what many nodes hold).
        let invalid: Vec<Option<RecordError>> = if verified {
            ids.iter().map(|_| None).collect()
        } else {
            let held: Vec<bool> = {
                let cat = self.catalog_lock();
                ids.iter()
                    .map(|id| cat.ids.contains(id) || cat.refusals.contains(id))
                    .collect()
            };
            records
                .iter()
                .zip(held)
                .map(|(r, held)| if held { None } else { r.verify().err() })
                .collect()
        };
        let mut out = Vec::with_capacity(records.len());
        let mut write = CatalogWrite::default();
        let mut touched: BTreeSet<PackageName> = BTreeSet::new();
        let mut refusals = RefusalChanges::default();
        let mut cat = self.catalog_lock();
        for ((record, id), invalid) in records.iter().zip(ids).zip(invalid) {
            if cat.ids.contains(&id) {
                out.push((id, Ingested::Duplicate));
                continue;
            }
            if cat.refusals.contains(&id) {
                out.push((id, Ingested::RefusedBefore));
                continue;
            }
            if let Some(e) = invalid {
                out.push((id, Ingested::Invalid(e)));
                continue;
            }
            let name = record.name().clone();
            let before = cat.trust.name(&name).map(|s| (s.owner, s.highest.clone()));
            match cat.trust.admit(record, id) {
                Ok(admission) => {
                    let state = cat.trust.name(&name).expect("just admitted");
                    if before.as_ref().map(|b| b.0) != Some(state.owner) {
                        write.owners.push((name.clone(), state.owner));
                    }
                    if before.as_ref().map(|b| &b.1) != Some(&state.highest)
                        && let Some(h) = &state.highest
                    {
                        write.highest.push((name.clone(), h.clone()));
                    }
                    if let Admission::Equivocation { version, .. } = &admission {
                        Self::count(&self.stats.equivocations);
                        warn!(%name, %version, "equivocation: two records for one version");
                        write.evidence.push((
                            name.clone(),
                            version.clone(),
                            state
                                .equivocation(version)
                                .expect("an equivocation was just recorded")
                                .to_vec(),
                        ));
                    }
                    // What the name now holds may make a refused record acceptable (history a
                    // release chains to, a new owner's): it is decided again when it comes.
                    cat.refusals.forget_name(&name, &mut refusals);
                    cat.ids.insert(id);
                    cat.summary[usize::from(id.as_bytes()[0])] = None;
                    write.records.push((id, record.clone()));
                    touched.insert(name);
                    out.push((id, Ingested::Added(admission)));
                }
                Err(e) => {
                    if matches!(
                        e,
                        TrustError::Rollback { .. } | TrustError::BrokenChain { .. }
                    ) {
                        Self::count(&self.stats.rollbacks_refused);
                    }
                    if !e.is_transient() {
                        cat.refusals.remember(id, &name, &mut refusals);
                    }
                    debug!(%name, error = %e, "record refused");
                    out.push((id, Ingested::Refused(e)));
                }
            }
        }
        write.refused = refusals.remembered;
        write.unrefused = refusals.forgotten;
        decided(&out);
        // Written under the lock so the log's order is the order of admission. If the write
        // fails, memory is ahead of disk until the next start (which replays the disk): the
        // caller gets the error, so nothing unwritten is ever acknowledged.
        self.db.write_catalog(&write)?;
        // Marked under the lock too: a seal taken under it covers every record written.
        let ticket = self.index.mark(touched.into_iter().map(|n| n.to_string()));
        drop(cat);
        Ok((out, ticket))
    }

    /// The index documents of these names (their newest installable release), and the names
    /// that have none.
    fn index_docs(
        &self,
        names: &[PackageName],
    ) -> Result<(Vec<IndexDoc>, Vec<String>), RegistryError> {
        let latest: Vec<(PackageName, Option<RecordId>)> = {
            let cat = self.catalog_lock();
            names
                .iter()
                .map(|n| {
                    let id = cat
                        .trust
                        .name(n)
                        .and_then(|s| s.latest().map(|v| s.releases[v]));
                    (n.clone(), id)
                })
                .collect()
        };
        let mut ids = Vec::with_capacity(latest.len());
        let mut removed = Vec::new();
        for (name, id) in latest {
            match id {
                Some(id) => ids.push(id),
                None => removed.push(name.to_string()),
            }
        }
        // One read transaction for all of them (a catch-up at start-up may ask for thousands).
        let records = self.db.records(&ids)?;
        all_newest_found(records.len(), ids.len())?;
        let docs = records
            .into_iter()
            .filter_map(|r| match r {
                CatalogRecord::Release(r) => Some(index_doc(r.body)),
                _ => None,
            })
            .collect();
        Ok((docs, removed))
    }

    /// Digest of each of the 256 id buckets of the catalog.
    pub fn summary(&self) -> Vec<BucketDigest> {
        let mut cat = self.catalog_lock();
        let cat = &mut *cat;
        for (b, slot) in cat.summary.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let mut lo = [0u8; 32];
            lo[0] = b as u8;
            let mut count = 0u32;
            let mut h = ContentHasher::new();
            for id in cat
                .ids
                .range(ContentId::from_bytes(lo)..)
                .take_while(|id| usize::from(id.as_bytes()[0]) == b)
            {
                count += 1;
                h.update(id.as_bytes());
            }
            *slot = Some(if count == 0 {
                BucketDigest::default()
            } else {
                BucketDigest {
                    count,
                    digest: *h.finish().as_bytes(),
                }
            });
        }
        cat.summary.iter().map(|d| d.unwrap_or_default()).collect()
    }

    /// Ids in the given buckets, at most `limit`.
    pub fn ids_in(&self, buckets: &[u8], limit: usize) -> Vec<RecordId> {
        let cat = self.catalog_lock();
        let mut out = Vec::new();
        let wanted: BTreeSet<u8> = buckets.iter().copied().collect();
        for b in wanted {
            let mut lo = [0u8; 32];
            lo[0] = b;
            let lo = ContentId::from_bytes(lo);
            for id in cat.ids.range(lo..) {
                if id.as_bytes()[0] != b || out.len() >= limit {
                    break;
                }
                out.push(*id);
            }
        }
        out
    }

    /// The records with these ids that we have.
    pub fn records(&self, ids: &[RecordId]) -> Result<Vec<CatalogRecord>, RegistryError> {
        Ok(self.db.records(ids)?)
    }

    /// The chunk a peer asks for, cut as it asks (the blob's bytes are checked against its
    /// id, so every cut of them is right), or why not. Blocking (reads the blob file).
    pub(crate) fn chunk(&self, request: &FetchRequest) -> Result<Vec<u8>, Refusal> {
        let id = &request.content;
        let size = self.blobs.meta(id).ok_or(Refusal::NotFound)?.size;
        let (start, len) = request.range(size).ok_or(Refusal::OutOfRange)?;
        let data = self
            .blobs
            .read_range(id, start, len)
            .map_err(|_| Refusal::NotFound)?;
        Self::count(&self.stats.chunks_served);
        self.stats
            .bytes_served
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }

    /// Stores `data` as the published blob `info` describes, and provides it on the DHT.
    pub async fn add_blob_with(
        self: &Arc<Self>,
        info: ArchiveInfo,
        data: Vec<u8>,
    ) -> Result<(), RegistryError> {
        let id = info.id;
        let reg = self.clone();
        blocking(move || {
            reg.blobs.insert(&data, Some(id), BlobKind::Published)?;
            Ok(())
        })
        .await?;
        self.net
            .start_providing(DhtKey::Content(id).to_bytes())
            .await
            .or_else(tolerate_lonely)?;
        Ok(())
    }

    /// Admits a verified release and announces it: DHT record and gossip.
    pub async fn announce(self: &Arc<Self>, record: ReleaseRecord) -> Result<(), RegistryError> {
        let reg = self.clone();
        let r = record.clone();
        let result = blocking(move || reg.ingest(vec![CatalogRecord::Release(r)], false)).await?;
        match &result[0].1 {
            Ingested::Added(_) | Ingested::Duplicate => {}
            Ingested::Invalid(e) => return Err(e.clone().into()),
            Ingested::Refused(e) => return Err(e.clone().into()),
            Ingested::RefusedBefore => return Err(RegistryError::RefusedBefore(result[0].0)),
        }
        self.put_dht(DhtValue::Release(record.clone())).await?;
        self.gossip(GossipMessage::Release(record)).await?;
        Ok(())
    }

    async fn put_dht(&self, value: DhtValue) -> Result<(), RegistryError> {
        self.net
            .put_record(value.key().to_bytes(), value.encode())
            .await
            .or_else(tolerate_lonely)?;
        Ok(())
    }

    /// Publishes on gossip; false when no peer is subscribed yet.
    async fn gossip(&self, msg: GossipMessage) -> Result<bool, RegistryError> {
        match self.net.publish(msg.to_wire()).await {
            Ok(()) => Ok(true),
            Err(NetworkError::NoGossipPeers) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Publishes the package in `dir`: validate its manifest, pack it deterministically, sign
    /// the release, store the archive and the record durably, index it, then gossip the
    /// release and, concurrently, put the release and head records on the DHT and provide the
    /// archive.
    #[tracing::instrument(
        name = "registry.publish",
        skip_all,
        fields(
            dir = %dir.display(),
            package = tracing::field::Empty,
            version = tracing::field::Empty,
            bytes = tracing::field::Empty,
            gossiped = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    )]
    pub async fn publish(
        self: &Arc<Self>,
        dir: PathBuf,
        secret: &PublisherSecret,
    ) -> Result<Published, RegistryError> {
        let started = Instant::now();
        let result = self.publish_inner(dir, secret).await;
        let span = tracing::Span::current();
        match &result {
            Ok(p) => {
                span.record("package", p.record.body.name.as_str());
                span.record("version", p.record.body.version.to_string());
                span.record("bytes", p.record.body.archive.size);
                span.record("gossiped", p.gossiped);
                span.record("outcome", "ok");
                Self::count(&self.stats.publishes);
                self.net.metrics().observe_publish(started.elapsed());
            }
            Err(e) => {
                span.record("outcome", e.to_string());
            }
        }
        result
    }

    async fn publish_inner(
        self: &Arc<Self>,
        dir: PathBuf,
        secret: &PublisherSecret,
    ) -> Result<Published, RegistryError> {
        let _authoring = self.authoring.lock().await;
        let reg = self.clone();
        let secret_bytes = secret.to_bytes();
        let (record, head, ticket) =
            blocking(move || reg.publish_local(&dir, &PublisherSecret::from_bytes(secret_bytes)))
                .await?;
        let id = record.body.archive.id;
        // The release is durable here. Gossip first: it reaches the connected peers at once,
        // while each DHT operation is an iterative query of several round trips. Then the
        // DHT puts and the provider record go out together, not one after another, while the
        // release becomes searchable here (the call returns once it is).
        let gossiped = self.gossip(GossipMessage::Release(record.clone())).await?;
        let reg = self.clone();
        let (r, h) = (record.clone(), head.clone());
        let mut dht = tokio::spawn(
            async move {
                let (release, head_put, provide) = tokio::join!(
                    reg.put_dht(DhtValue::Release(r)),
                    reg.put_dht(DhtValue::Head(h)),
                    reg.net.start_providing(DhtKey::Content(id).to_bytes()),
                );
                release?;
                head_put?;
                provide.or_else(tolerate_lonely)?;
                Ok::<(), RegistryError>(())
            }
            .in_current_span(),
        );
        let reg = self.clone();
        blocking(move || reg.flush_index(ticket)).await?;
        match tokio::time::timeout(PUBLISH_DHT_WAIT, &mut dht).await {
            Ok(joined) => {
                joined.map_err(|e| RegistryError::Internal(format!("DHT writes: {e}")))??
            }
            Err(_) => info!(
                name = %record.body.name,
                "DHT writes still running after {PUBLISH_DHT_WAIT:?}; they go on in the background"
            ),
        }
        info!(name = %record.body.name, version = %record.body.version, gossiped, "published");
        Ok(Published {
            record,
            head,
            gossiped,
        })
    }

    fn publish_local(
        &self,
        dir: &Path,
        secret: &PublisherSecret,
    ) -> Result<(ReleaseRecord, PackageHead, Ticket), RegistryError> {
        let manifest = archive::read_manifest(dir)?;
        let key = secret.public();
        let previous = {
            let cat = self.catalog_lock();
            match cat.trust.name(&manifest.name) {
                None => None,
                Some(state) => {
                    if state.owner != key {
                        return Err(TrustError::NotOwner {
                            name: manifest.name.clone(),
                            owner: state.owner,
                            signer: key,
                        }
                        .into());
                    }
                    if state.releases.contains_key(&manifest.version) {
                        return Err(RegistryError::AlreadyPublished {
                            name: manifest.name.clone(),
                            version: manifest.version.clone(),
                        });
                    }
                    if let Some(h) = &state.highest
                        && *h > manifest.version
                    {
                        return Err(RegistryError::NotNewer {
                            name: manifest.name.clone(),
                            version: manifest.version.clone(),
                            highest: h.clone(),
                        });
                    }
                    state.highest.as_ref().map(|h| state.releases[h])
                }
            }
        };
        let data = archive::pack(dir)?;
        let info = ArchiveInfo::describe(&data, DEFAULT_CHUNK_SIZE);
        let body = ReleaseBody {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            meta: manifest.meta.clone(),
            dependencies: manifest.dependencies.clone(),
            archive: info.clone(),
            published_at: now(),
            publisher: key,
            previous,
        };
        let record = Signed::sign(body, secret)?;
        // The archive first: a record whose archive cannot be served helps nobody.
        self.blobs
            .insert(&data, Some(info.id), BlobKind::Published)?;
        let (result, ticket) =
            self.ingest_durable(vec![CatalogRecord::Release(record.clone())], true, |_| {})?;
        match &result[0].1 {
            Ingested::Added(Admission::Release) => {}
            Ingested::Refused(e) => return Err(e.clone().into()),
            other => {
                return Err(RegistryError::Internal(format!(
                    "own release was not admitted: {other:?}"
                )));
            }
        }
        let head = self.sign_head(&manifest.name, secret)?;
        Ok((record, head, ticket))
    }

    /// Signs, admits and stores a new head for a name we own.
    fn sign_head(
        &self,
        name: &PackageName,
        secret: &PublisherSecret,
    ) -> Result<PackageHead, RegistryError> {
        let mut cat = self.catalog_lock();
        let state = cat.state(name)?;
        let versions: Vec<Version> = state
            .releases
            .keys()
            .rev()
            .take(MAX_HEAD_VERSIONS)
            .rev()
            .cloned()
            .collect();
        let body = HeadBody {
            name: name.clone(),
            owner: secret.public(),
            versions,
            seq: state.head.map_or(1, |(s, _)| s + 1),
            updated_at: now(),
        };
        let head = Signed::sign(body, secret)?;
        cat.trust.admit_head(&head)?;
        self.db.put_head(&head)?;
        Ok(head)
    }

    /// Admits a verified head from a peer and persists it; `Ok(false)` if we already had it.
    pub fn admit_head(&self, head: &PackageHead) -> Result<bool, RegistryError> {
        let mut cat = self.catalog_lock();
        let fresh = cat.trust.admit_head(head)?;
        if fresh {
            self.db.put_head(head)?;
        }
        Ok(fresh)
    }

    /// Yanks `name@version` with a record signed by the owner, and gossips it.
    pub async fn yank(
        self: &Arc<Self>,
        name: &PackageName,
        version: &Version,
        reason: String,
        secret: &PublisherSecret,
    ) -> Result<agora_protocol::Yank, RegistryError> {
        let _authoring = self.authoring.lock().await;
        {
            let cat = self.catalog_lock();
            let state = cat.state(name)?;
            if !state.releases.contains_key(version) {
                return Err(RegistryError::VersionNotFound {
                    name: name.clone(),
                    version: version.clone(),
                });
            }
        }
        let yank = Signed::sign(
            YankBody {
                name: name.clone(),
                version: version.clone(),
                publisher: secret.public(),
                yanked_at: now(),
                reason,
            },
            secret,
        )?;
        let reg = self.clone();
        let y = yank.clone();
        let result = blocking(move || reg.ingest(vec![CatalogRecord::Yank(y)], true)).await?;
        if let Ingested::Refused(e) = &result[0].1 {
            return Err(e.clone().into());
        }
        self.gossip(GossipMessage::Yank(yank.clone())).await?;
        Ok(yank)
    }

    /// Hands ownership of `name` to `to`, with a rotation record signed by the current owner,
    /// and gossips it.
    pub async fn rotate(
        self: &Arc<Self>,
        name: &PackageName,
        to: PublisherKey,
        secret: &PublisherSecret,
    ) -> Result<agora_protocol::KeyRotation, RegistryError> {
        let _authoring = self.authoring.lock().await;
        // What the new key inherits: the history up to the newest release, and the yanks.
        let (last, yanked) = {
            let cat = self.catalog_lock();
            let state = cat.state(name)?;
            let last = state
                .highest
                .as_ref()
                .map(|h| state.releases[h])
                .ok_or_else(|| TrustError::UnknownName { name: name.clone() })?;
            (last, state.yanked().cloned().collect())
        };
        let rotation = Signed::sign(
            RotationBody {
                name: name.clone(),
                from: secret.public(),
                to,
                last,
                yanked,
                rotated_at: now(),
            },
            secret,
        )?;
        let reg = self.clone();
        let r = rotation.clone();
        let result = blocking(move || reg.ingest(vec![CatalogRecord::Rotation(r)], true)).await?;
        if let Ingested::Refused(e) = &result[0].1 {
            return Err(e.clone().into());
        }
        self.gossip(GossipMessage::Rotation(rotation.clone()))
            .await?;
        Ok(rotation)
    }

    /// Whether the catalog knows this name.
    pub fn exists(&self, name: &PackageName) -> bool {
        self.catalog_lock().trust.name(name).is_some()
    }

    /// Every version of a name, oldest first.
    pub fn versions(&self, name: &PackageName) -> Result<Vec<VersionInfo>, RegistryError> {
        let cat = self.catalog_lock();
        let state = cat.state(name)?;
        Ok(state
            .releases
            .iter()
            .map(|(v, id)| VersionInfo {
                version: v.clone(),
                record: *id,
                yanked: state.is_yanked(v),
                equivocated: state.is_equivocated(v),
            })
            .collect())
    }

    /// The owner of a name on this node, and the record ids of any equivocation.
    pub fn owner(&self, name: &PackageName) -> Option<PublisherKey> {
        self.catalog_lock().trust.name(name).map(|s| s.owner)
    }

    /// Whether this node's policy lets `key` own a name it does not know yet.
    pub fn may_own(&self, key: &PublisherKey) -> bool {
        self.catalog_lock().trust.may_own(key)
    }

    /// Equivocation evidence: every version with more than one record, per name.
    pub fn equivocations(&self) -> BTreeMap<PackageName, BTreeMap<Version, Vec<RecordId>>> {
        self.catalog_lock()
            .trust
            .names()
            .filter_map(|(n, s)| Some((n.clone(), s.equivocations()?.clone())))
            .collect()
    }

    /// The newest installable release of `name` matching `req`.
    pub fn get(
        &self,
        name: &PackageName,
        req: &VersionReq,
    ) -> Result<ReleaseRecord, RegistryError> {
        let id = {
            let cat = self.catalog_lock();
            let state = cat.state(name)?;
            let pick = state
                .releases
                .iter()
                .rev()
                .find(|(v, _)| req.matches(v) && state.installable(v));
            match pick {
                Some((_, id)) => *id,
                None => {
                    return Err(RegistryError::NoMatchingVersion {
                        name: name.clone(),
                        req: req.clone(),
                        available: state
                            .releases
                            .keys()
                            .filter(|v| state.installable(v))
                            .cloned()
                            .collect(),
                    });
                }
            }
        };
        self.release_by_id(&id)
    }

    /// Exactly `name@version`, yanked or not (a lockfile may pin a yanked version); refused
    /// if the version is equivocated.
    pub fn release(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<ReleaseRecord, RegistryError> {
        let id = {
            let cat = self.catalog_lock();
            let state = cat.state(name)?;
            if state.is_equivocated(version) {
                return Err(RegistryError::Equivocated {
                    name: name.clone(),
                    version: version.clone(),
                });
            }
            *state
                .releases
                .get(version)
                .ok_or_else(|| RegistryError::VersionNotFound {
                    name: name.clone(),
                    version: version.clone(),
                })?
        };
        self.release_by_id(&id)
    }

    fn release_by_id(&self, id: &RecordId) -> Result<ReleaseRecord, RegistryError> {
        match self.db.record(id)? {
            Some(CatalogRecord::Release(r)) => Ok(r),
            _ => Err(StoreError::Corrupt(format!("release {id} is missing from the log")).into()),
        }
    }

    /// Searches the local catalog.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchResults, RegistryError> {
        let span = tracing::info_span!(
            "registry.search",
            query = %query.text,
            limit = query.limit,
            hits = tracing::field::Empty,
            total = tracing::field::Empty,
        )
        .entered();
        let started = Instant::now();
        Self::count(&self.stats.searches);
        let results = self.index.search(query)?;
        self.net.metrics().observe_search(started.elapsed());
        span.record("hits", results.hits.len());
        span.record("total", results.total);
        Ok(results)
    }

    /// Resolves `roots` and everything they depend on to exact releases.
    pub fn resolve(&self, roots: &[Dependency]) -> Result<Vec<ResolvedPackage>, RegistryError> {
        let mut records: HashMap<RecordId, ReleaseRecord> = HashMap::new();
        let mut failure: Option<RegistryError> = None;
        let chosen = resolve::resolve(roots, |name| {
            let ids: Vec<RecordId> = {
                let cat = self.catalog_lock();
                let state = cat.trust.name(name)?;
                state
                    .releases
                    .iter()
                    .filter(|(v, _)| state.installable(v))
                    .map(|(_, id)| *id)
                    .collect()
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let r = match records.get(&id) {
                    Some(r) => r.clone(),
                    None => match self.release_by_id(&id) {
                        Ok(r) => {
                            records.insert(id, r.clone());
                            r
                        }
                        Err(e) => {
                            failure = Some(e);
                            continue;
                        }
                    },
                };
                out.push(Candidate {
                    version: r.body.version.clone(),
                    dependencies: r.body.dependencies.clone(),
                });
            }
            Some(out)
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let chosen = chosen?;
        let by_version: HashMap<(PackageName, Version), &ReleaseRecord> = records
            .values()
            .map(|r| ((r.body.name.clone(), r.body.version.clone()), r))
            .collect();
        Ok(chosen
            .into_iter()
            .filter_map(|(name, c)| {
                let r = by_version.get(&(name.clone(), c.version.clone()))?;
                Some(ResolvedPackage {
                    name,
                    version: c.version,
                    record: r.id(),
                    archive: r.body.archive.id,
                    publisher: r.body.publisher,
                    dependencies: c.dependencies,
                })
            })
            .collect())
    }

    /// Makes the archive of `name@version` local: from the store if it is there, otherwise
    /// from the DHT's providers ranked by reputation, resuming any partial download. The
    /// archive's hash is checked before it enters the store; then this node provides it too.
    pub async fn fetch(
        self: &Arc<Self>,
        name: &PackageName,
        version: &Version,
    ) -> Result<FetchedBlob, RegistryError> {
        self.fetch_with_progress(name, version, None).await
    }

    /// [`fetch`](Self::fetch), reporting (bytes verified, archive size) as chunks arrive.
    #[tracing::instrument(
        name = "registry.fetch",
        skip_all,
        fields(
            package = %name,
            %version,
            bytes = tracing::field::Empty,
            cached = tracing::field::Empty,
            providers = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    )]
    pub async fn fetch_with_progress(
        self: &Arc<Self>,
        name: &PackageName,
        version: &Version,
        on_progress: Option<fetch::ProgressFn>,
    ) -> Result<FetchedBlob, RegistryError> {
        let started = Instant::now();
        let result = self.fetch_inner(name, version, on_progress).await;
        let span = tracing::Span::current();
        match &result {
            Ok(f) => {
                span.record("bytes", f.size);
                span.record("cached", f.cached);
                span.record("outcome", "ok");
                if f.cached {
                    Self::count(&self.stats.cache_hits);
                } else {
                    Self::count(&self.stats.fetches);
                    self.net.metrics().observe_fetch(started.elapsed(), f.size);
                }
            }
            Err(e) => {
                span.record("outcome", e.to_string());
            }
        }
        result
    }

    async fn fetch_inner(
        self: &Arc<Self>,
        name: &PackageName,
        version: &Version,
        on_progress: Option<fetch::ProgressFn>,
    ) -> Result<FetchedBlob, RegistryError> {
        let record = self.release(name, version)?;
        let info = record.body.archive.clone();
        if let Some(hit) = self.cached_blob(&info).await? {
            return Ok(hit);
        }
        // One fetch of an archive at a time: one that waited finds the archive in the cache,
        // and no two fetches ever write the same partial file.
        let _turn = self.fetch_turn(info.id).await;
        if let Some(hit) = self.cached_blob(&info).await? {
            return Ok(hit);
        }
        let providers = self.find_providers(&info.id).await?;
        Self::count(&self.stats.cache_misses);
        tracing::Span::current().record("providers", providers.known.len());
        let partial = self.blobs.partial_path(&info.id);
        let report = fetch::fetch_to_file(
            &self.net,
            &info,
            providers,
            fetch::DEFAULT_PARALLEL_CHUNKS,
            &partial,
            on_progress,
        )
        .await;
        let (report, hashed) = match report {
            Ok(r) => r,
            Err((e, outcomes)) => {
                self.record_outcomes(&outcomes).await?;
                return Err(e.into());
            }
        };
        self.record_outcomes(&report.outcomes).await?;
        self.stats
            .bytes_fetched
            .fetch_add(report.bytes_fetched, Ordering::Relaxed);
        let reg = self.clone();
        let id = info.id;
        let evicted =
            blocking(move || Ok(reg.blobs.adopt_partial(id, BlobKind::Fetched, hashed)?)).await?;
        self.stop_providing(&evicted).await?;
        // The archive is ours now; telling the DHT is a courtesy to others that may wait on
        // unreachable peers, so the caller does not wait for it.
        let net = self.net.clone();
        tokio::spawn(
            async move {
                if let Err(e) = net
                    .start_providing(DhtKey::Content(info.id).to_bytes())
                    .await
                    .or_else(tolerate_lonely)
                {
                    debug!(content = %info.id, error = %e, "could not announce a fetched archive");
                }
            }
            .in_current_span(),
        );
        Ok(FetchedBlob {
            content: info.id,
            path: self.blobs.blob_path(&info.id),
            size: info.size,
            cached: false,
            served_by: report.served_by,
            resumed_chunks: report.resumed_chunks,
        })
    }

    /// Providers of archive `id` for a fetch: the first the DHT search finds (with any that
    /// came in the same answer), best first, and the rest as the search goes on, so that the
    /// fetch starts at once instead of waiting on the search's slow or unreachable peers.
    /// This node and banned peers are left out.
    async fn find_providers(
        self: &Arc<Self>,
        id: &ContentId,
    ) -> Result<fetch::Providers, RegistryError> {
        let mut found = self
            .net
            .find_providers(DhtKey::Content(*id).to_bytes())
            .await?;
        let me = self.net.peer_id();
        let reg = self.clone();
        let mut found = futures::stream::poll_fn(move |cx| found.poll_recv(cx))
            .filter(move |peer| {
                let usable = *peer != me && !reg.reputation_lock().is_banned(peer, now());
                std::future::ready(usable)
            })
            .boxed();
        let mut known = Vec::new();
        if let Some(first) = found.next().await {
            known.push(first);
            while let Some(Some(peer)) = found.next().now_or_never() {
                known.push(peer);
            }
        }
        Ok(fetch::Providers {
            known: self.reputation_lock().rank(known, now()),
            later: Some(found),
        })
    }

    /// The archive as a cache hit, if the store has it (the read marks it used).
    async fn cached_blob(
        self: &Arc<Self>,
        info: &ArchiveInfo,
    ) -> Result<Option<FetchedBlob>, RegistryError> {
        if !self.blobs.has(&info.id) {
            return Ok(None);
        }
        let reg = self.clone();
        let id = info.id;
        // A use: moves it to the back of the eviction queue.
        blocking(move || Ok(reg.blobs.read_range(&id, 0, 0)?)).await?;
        Ok(Some(FetchedBlob {
            content: info.id,
            path: self.blobs.blob_path(&info.id),
            size: info.size,
            cached: true,
            served_by: Vec::new(),
            resumed_chunks: 0,
        }))
    }

    /// Waits until no other fetch of archive `id` runs; the turn lasts until it is dropped.
    async fn fetch_turn(&self, id: ContentId) -> FetchTurn<'_> {
        let gate = lock(&self.fetching).entry(id).or_default().clone();
        let guard = gate.lock_owned().await;
        FetchTurn {
            registry: self,
            id,
            guard: Some(guard),
        }
    }

    /// Withdraws provider records of evicted blobs.
    async fn stop_providing(&self, evicted: &[ContentId]) -> Result<(), RegistryError> {
        for id in evicted {
            debug!(%id, "evicted from the cache; no longer providing it");
            self.net
                .stop_providing(DhtKey::Content(*id).to_bytes())
                .await?;
        }
        Ok(())
    }

    /// Applies what a fetch learned about peers and persists it.
    async fn record_outcomes(
        self: &Arc<Self>,
        outcomes: &[PeerOutcome],
    ) -> Result<(), RegistryError> {
        let t = now();
        {
            let mut rep = self.reputation_lock();
            for o in outcomes {
                match *o {
                    PeerOutcome::Served {
                        peer,
                        bytes,
                        latency_ms,
                    } => rep.success(peer, bytes, latency_ms, t),
                    PeerOutcome::Failed { peer } => rep.failure(peer, t),
                    PeerOutcome::BadData { peer } => {
                        warn!(%peer, "peer served data that failed verification; banned");
                        Self::count(&self.stats.peers_banned);
                        rep.bad_data(peer, t)
                    }
                }
            }
        }
        self.persist_reputation().await
    }

    /// Writes changed reputation entries to disk, and deletes forgotten ones.
    pub async fn persist_reputation(self: &Arc<Self>) -> Result<(), RegistryError> {
        let (dirty, forgotten) = {
            let mut rep = self.reputation_lock();
            let dirty: Vec<(Vec<u8>, Vec<u8>)> = rep
                .take_dirty()
                .into_iter()
                .map(|(p, r)| (p.to_bytes(), crate::store::encode_meta(&r)))
                .collect();
            let forgotten: Vec<Vec<u8>> = rep
                .take_forgotten()
                .into_iter()
                .map(|p| p.to_bytes())
                .collect();
            (dirty, forgotten)
        };
        if dirty.is_empty() && forgotten.is_empty() {
            return Ok(());
        }
        let reg = self.clone();
        blocking(move || Ok(reg.db.save_reputation(&dirty, &forgotten)?)).await
    }

    /// A ping round trip, for reputation.
    pub fn observe_rtt(&self, peer: PeerId, rtt_ms: f64) {
        self.reputation_lock().rtt(peer, rtt_ms, now());
    }

    /// The reputation entry and score of a peer.
    pub fn reputation_of(&self, peer: &PeerId) -> (Option<PeerRecord>, f64) {
        let rep = self.reputation_lock();
        (rep.get(peer).cloned(), rep.score(peer, now()))
    }

    /// `peers` ranked best first, banned ones left out.
    pub fn rank_peers(&self, peers: Vec<PeerId>) -> Vec<PeerId> {
        self.reputation_lock().rank(peers, now())
    }

    /// Pins (or unpins) the archive of a release so eviction never removes it.
    pub async fn pin(
        self: &Arc<Self>,
        content: &ContentId,
        pinned: bool,
    ) -> Result<(), RegistryError> {
        let reg = self.clone();
        let id = *content;
        let evicted = blocking(move || Ok(reg.blobs.set_pinned(&id, pinned)?)).await?;
        self.stop_providing(&evicted).await
    }

    /// Saves what is only in memory (reputation, blob use times). Called on the maintenance
    /// tick and at shutdown.
    pub async fn persist(self: &Arc<Self>) -> Result<(), RegistryError> {
        self.persist_reputation().await?;
        let reg = self.clone();
        blocking(move || Ok(reg.blobs.flush()?)).await
    }

    /// At shutdown: persists what is only in memory, then makes the search index durable and
    /// seals it with the log records it reflects, so the next start need not rebuild it.
    pub async fn close(self: &Arc<Self>) -> Result<(), RegistryError> {
        self.persist().await?;
        let reg = self.clone();
        blocking(move || reg.save_index().map(drop)).await
    }

    /// Saves the search index if the copy on disk is far behind the catalog: after a crash the
    /// next start would re-index so many names that it rebuilds the whole index instead (a
    /// node that synced a large catalog and never stopped cleanly, or one whose index was
    /// just rebuilt). Called on the persist tick; returns whether it saved.
    pub async fn save_index_if_behind(self: &Arc<Self>) -> Result<bool, RegistryError> {
        let behind = (self.catalog_len() as u64).saturating_sub(self.index.saved_records());
        let due = (self.index.num_docs() / SAVE_BEHIND_FRACTION).max(OVERLAY_MAX as u64);
        if behind < due || self.index.state() != IndexState::Ready {
            return Ok(false);
        }
        let reg = self.clone();
        blocking(move || reg.save_index()).await
    }

    /// Flushes what the catalog holds into the search index and saves it, sealed with the log
    /// records it reflects. Blocking. Returns whether it saved.
    fn save_index(&self) -> Result<bool, RegistryError> {
        let started = Instant::now();
        let (records, ticket) = {
            let cat = self.catalog_lock();
            (cat.ids.len() as u64, self.index.last_ticket())
        };
        self.flush_index(ticket)?;
        match self.db.log_ids(records)? {
            Some(ids) => {
                let saved = self.index.seal(Seal::of_log(&ids))?;
                if saved {
                    debug!(
                        records,
                        ms = started.elapsed().as_millis(),
                        "search index saved"
                    );
                }
                Ok(saved)
            }
            // A write failed after memory took its records: the next start replays the log
            // and catches the last saved index up (or rebuilds it).
            None => {
                warn!(
                    records,
                    "the catalog log does not hold what memory does; the search index is not saved"
                );
                Ok(false)
            }
        }
    }

    /// Puts the heads we hold and the releases we publish back into the local DHT store (a
    /// restarted node serves them again before any peer re-publishes them).
    pub async fn restore_dht(self: &Arc<Self>) -> Result<(), RegistryError> {
        let mut records = std::mem::take(&mut *lock(&self.to_restore)).into_iter();
        loop {
            // Taken from the front one chunk at a time (splitting the rest off instead copied
            // what was left at every chunk: 0.8 GB for 100k heads).
            let chunk: Vec<libp2p::kad::Record> = records.by_ref().take(RESTORE_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            // A full local DHT store is not a reason to stay down: peers still have them.
            // (Each refusal names its record's key.)
            for (_, e) in self.net.store_records(chunk).await? {
                warn!(error = %e, "not re-serving a record");
            }
        }
        for id in self.blobs.ids() {
            self.net
                .start_providing(DhtKey::Content(id).to_bytes())
                .await
                .or_else(tolerate_lonely)?;
        }
        Ok(())
    }

    /// Marks the start of a sync with `peer`; false if one is already running.
    /// Registers a sync with `peer` unless one runs with it already (`Err(true)`) or `max`
    /// run with all peers (`Err(false)`).
    pub(crate) fn begin_sync(&self, peer: PeerId, max: usize) -> Result<(), bool> {
        let mut syncing = lock(&self.syncing);
        if syncing.contains(&peer) {
            return Err(true);
        }
        if syncing.len() >= max {
            return Err(false);
        }
        syncing.insert(peer);
        Ok(())
    }

    pub(crate) fn end_sync(&self, peer: &PeerId) {
        lock(&self.syncing).remove(peer);
    }

    /// Mark a count.
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn index_doc(b: ReleaseBody) -> IndexDoc {
    IndexDoc {
        name: b.name.to_string(),
        version: b.version.to_string(),
        meta: b.meta,
        published_at: b.published_at,
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
