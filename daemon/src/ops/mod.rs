//! The workflows: [`Registry`] runs the node's package work over the layers below it. The
//! [`catalog`](crate::catalog) decides on records and answers queries with no network, no clock
//! and no tasks of its own; the registry around it publishes, yanks and rotates (signing with the time), takes in what the network brings
//! ([`inbound`], [`sync`], [`lookup`]), fetches archives from the best peers ([`fetch`]) and
//! keeps peer reputation.
//!
//! Disk work (redb, blobs, tantivy) runs on blocking threads, never on the event loop and
//! never while holding up an async worker. A write is acknowledged only after it committed.

mod archive;
mod damaged;
pub mod fetch;
pub(crate) mod inbound;
mod lookup;
mod publish;
pub mod repair;
mod reputation;
mod sparql;
pub use sparql::TIME_LIMIT as SPARQL_TIME_LIMIT;
pub(crate) mod swarm;
pub mod sync;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_protocol::codec::Wire;
use agora_protocol::dht::{DhtKey, DhtValue};
use agora_protocol::ipc::RepairInfo;
use agora_protocol::messages::GossipMessage;
use agora_protocol::records::{
    ArchiveInfo, CatalogRecord, PackageHead, RecordError, RecordId, ReleaseBody, ReleaseRecord,
    RotationBody, Signed, UnyankBody, YankBody,
};
use agora_protocol::search::{SearchQuery, SearchResults};
use agora_protocol::{ContentId, PackageName, PublisherKey, PublisherSecret, Version};
use futures::{FutureExt, StreamExt};
use libp2p::PeerId;
use tracing::{Instrument, debug, info, warn};

use crate::catalog::publishers::{PublisherBudget, PublisherRates};
use crate::catalog::trust::{Admission, TrustError, TrustPolicy};
use crate::catalog::{Catalog, CatalogError, CatalogView, Ingested};
use crate::index::{IndexError, Ticket};
use crate::lock;
use crate::network::{NetworkError, NetworkHandle};
use crate::obs::{Metrics, RegistryStats};
use crate::ops::reputation::{PeerRecord, Reputation};
use crate::store::journal::Journal;
use crate::store::{BlobKind, BlobStore, Db, StoreError, blobs::BlobCheck};
use archive::PackError;
use fetch::{FetchError, PeerOutcome};

/// Default size of the cache of fetched archives: enough for thousands of template packs.
pub const DEFAULT_CACHE_QUOTA: u64 = 1024 * 1024 * 1024;
/// Longest a publish waits for its DHT writes once the release is durable, gossiped and
/// searchable here. A DHT write ends when the closest peers have answered, and on a network
/// with departed peers that can take until the query timeout; it goes on in the background.
const PUBLISH_DHT_WAIT: Duration = Duration::from_secs(3);

/// Records put back into the local DHT store per event-loop command at start: about a
/// millisecond of the loop's time each.
const RESTORE_CHUNK: usize = 1024;
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
    /// What each publishing key may have admitted from gossip.
    pub publisher_rates: PublisherRates,
    /// What to do with a store found damaged at start.
    pub repair: repair::RepairMode,
    /// How long a SPARQL query may run before it is stopped.
    pub sparql_time_limit: Duration,
}

impl RegistryConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            cache_quota: DEFAULT_CACHE_QUOTA,
            trust: TrustPolicy::FirstUse,
            sync_interval: sync::SYNC_INTERVAL,
            publisher_rates: PublisherRates::default(),
            repair: repair::RepairMode::Auto,
            sparql_time_limit: SPARQL_TIME_LIMIT,
        }
    }
}

/// Why a registry operation failed. Each variant is something the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Catalog(CatalogError),
    #[error("dependency {dependency}: {why}, so this release could not be installed")]
    MissingDependency {
        dependency: agora_protocol::Dependency,
        why: String,
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
    #[error("{name}@{version} is not yanked")]
    NotYanked { name: PackageName, version: Version },
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
    #[error("internal error: {0}")]
    Internal(String),
}

/// The catalog's failures of the store, the index and the record rules are the registry's own:
/// one variant each, whichever layer met them.
impl From<CatalogError> for RegistryError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Trust(e) => Self::Trust(e),
            CatalogError::Record(e) => Self::Record(e),
            CatalogError::Store(e) => Self::Store(e),
            CatalogError::Index(e) => Self::Index(e),
            CatalogError::Internal(e) => Self::Internal(e),
            other => Self::Catalog(other),
        }
    }
}

/// A finished publish.
#[derive(Clone, Debug)]
pub struct Published {
    pub record: ReleaseRecord,
    pub head: PackageHead,
    /// False when no peer was subscribed yet: peers get the release by sync instead.
    pub gossiped: bool,
    /// Each packed file's path and size.
    pub files: archive::Files,
}

/// What a publish would sign, from a dry run.
#[derive(Clone, Debug)]
pub struct DryRun {
    pub body: ReleaseBody,
    /// Each packed file's path and size.
    pub files: archive::Files,
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

pub struct Registry {
    net: NetworkHandle,
    /// Where the workflows' latencies are observed.
    metrics: Arc<Metrics>,
    db: Arc<Db>,
    pub blobs: BlobStore,
    /// Async code reaches the catalog's disk through [`read`](Self::read) and its memory
    /// through [`view`](Self::view); only the workflows here touch it directly, on blocking
    /// threads where they read or write.
    catalog: Catalog,
    /// The records this node signed or announced, written ahead of the catalog.
    journal: Journal,
    reputation: Mutex<Reputation>,
    /// Serialises publishes and yanks so that a name's chain is extended one at a time.
    authoring: tokio::sync::Mutex<()>,
    /// What each publishing key may still have admitted from gossip.
    pub(crate) publishers: Mutex<PublisherBudget>,
    /// Peers a sync is running with (one at a time per peer).
    syncing: Mutex<HashSet<PeerId>>,
    /// Bucket differences that held nothing for this node (see [`sync::Settled`]).
    settled: Mutex<sync::Settled>,
    /// Archives being fetched, each with the gate that lets one fetch of it run at a time.
    fetching: Mutex<HashMap<ContentId, Arc<tokio::sync::Mutex<()>>>>,
    /// Downloads under way, whose verified chunks are served to peers.
    downloads: swarm::Downloads,
    /// The crowds fetching archives this node holds whole.
    seeding: swarm::Seeding,
    pub stats: Arc<RegistryStats>,
    pub startup: StartupReport,
    /// The repair this start made, with what peers have sent back since.
    repair: Mutex<Option<RepairInfo>>,
    /// What the check of every stored record after the start found.
    store_check: Mutex<agora_protocol::ipc::StoreCheck>,
    /// The data directory.
    dir: PathBuf,
    /// DHT values to put back in the local store once the network runs (see `restore_dht`).
    to_restore: Mutex<Vec<libp2p::kad::Record>>,
    sync_interval: Duration,
    sparql_time_limit: Duration,
    /// Permits for SPARQL queries being evaluated ([`sparql::SLOTS`]).
    sparql_slots: Arc<tokio::sync::Semaphore>,
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

impl crate::obs::metrics::Source for Registry {
    fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.stats.counters()
    }

    fn gauges(&self) -> Vec<(&'static str, &'static str, i64)> {
        let usage = self.blobs.usage();
        let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        vec![
            (
                "catalog_records",
                "Records in the catalog",
                n(self.catalog.view().record_count() as u64),
            ),
            (
                "packages",
                "Packages with an installable release",
                n(self.catalog.view().package_count() as u64),
            ),
            (
                "cache_bytes",
                "Bytes of fetched archives kept",
                n(usage.cached_bytes),
            ),
            (
                "cache_quota_bytes",
                "Quota for fetched archives",
                n(usage.quota),
            ),
            (
                "store_bytes",
                "Bytes of all archives kept (published, pinned, fetched)",
                n(usage.cached_bytes + usage.kept_bytes),
            ),
        ]
    }
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
    pub fn open(
        config: &RegistryConfig,
        net: NetworkHandle,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, RegistryError> {
        let started = Instant::now();
        let (store, repaired) = repair::open(config)?;
        let restore = store
            .opened
            .restore
            .into_iter()
            .map(|(key, value)| libp2p::kad::Record::new(key, value))
            .collect();
        let registry = Self {
            net,
            metrics,
            db: store.db,
            blobs: store.blobs,
            catalog: store.catalog,
            journal: store.journal,
            reputation: Mutex::new(Reputation::default()),
            authoring: tokio::sync::Mutex::new(()),
            publishers: Mutex::new(PublisherBudget::new(config.publisher_rates)),
            syncing: Mutex::new(HashSet::new()),
            settled: Mutex::new(sync::Settled::default()),
            fetching: Mutex::new(HashMap::new()),
            downloads: swarm::Downloads::default(),
            seeding: swarm::Seeding::default(),
            stats: store.stats,
            startup: StartupReport {
                records: store.opened.records,
                blobs: store.blob_check,
                index_rebuilt: store.opened.index_rebuilt,
                index_caught_up: store.opened.index_caught_up,
                millis: 0,
            },
            repair: Mutex::new(repaired),
            store_check: Mutex::new(agora_protocol::ipc::StoreCheck::Running),
            dir: config.data_dir.clone(),
            to_restore: Mutex::new(restore),
            sync_interval: config.sync_interval,
            sparql_time_limit: config.sparql_time_limit,
            sparql_slots: Arc::new(tokio::sync::Semaphore::new(sparql::SLOTS)),
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

        let mut registry = registry;
        registry.startup.millis = started.elapsed().as_millis();
        info!(
            records = registry.startup.records,
            ms = registry.startup.millis,
            "registry open"
        );
        Ok(Arc::new(registry))
    }

    /// The repair of a damaged store this start made, with the records each peer has sent
    /// back by sync since.
    pub fn repair(&self) -> Option<RepairInfo> {
        lock(&self.repair).clone()
    }

    /// Counts records a sync with `peer` added, in the repair report if this start repaired.
    pub(crate) fn note_synced(&self, peer: PeerId, added: usize) {
        let mut repair = lock(&self.repair);
        let Some(report) = repair.as_mut().filter(|_| added > 0) else {
            return;
        };
        let peer = peer.to_string();
        match report.from_peers.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, n)) => *n += added as u64,
            None => report.from_peers.push((peer, added as u64)),
        }
    }

    fn reputation_lock(&self) -> MutexGuard<'_, Reputation> {
        lock(&self.reputation)
    }

    pub fn network(&self) -> &NetworkHandle {
        &self.net
    }

    /// How often the node syncs with a random peer.
    pub fn sync_interval(&self) -> Duration {
        self.sync_interval
    }

    /// Stores `data` as the published blob `info` describes, and provides it on the DHT.
    pub async fn add_blob_with(
        self: &Arc<Self>,
        info: ArchiveInfo,
        data: Vec<u8>,
    ) -> Result<(), RegistryError> {
        let id = info.id;
        self.blobs.describe(&info);
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

    /// Rebuilds the search index on a blocking thread, when the start found it must
    /// (`startup.index_rebuilt`); searches wait for it.
    pub fn spawn_index_rebuild(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::task::spawn_blocking(move || registry.catalog.rebuild_index())
    }

    /// The catalog with its methods that read and write the disk, for code on a thread that
    /// may block (a blocking-pool task, a test, a tool), as tokio names its `blocking_`
    /// methods; async code uses [`read`](Self::read) and [`view`](Self::view).
    pub fn blocking_catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// What the catalog answers from memory (counts, owners, versions): never blocks.
    pub fn view(&self) -> CatalogView<'_> {
        self.catalog.view()
    }

    /// Hears every record admitted from now on, once it is durable.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::catalog::events::Admitted> {
        self.catalog.subscribe()
    }

    /// Runs `read` on the catalog on a blocking thread: a read that may touch the disk (a
    /// record from the log, a resolution, a search, an ingest) never holds up an async worker.
    pub async fn read<T, E, F>(self: &Arc<Self>, read: F) -> Result<T, RegistryError>
    where
        F: FnOnce(&Catalog) -> Result<T, E> + Send + 'static,
        E: Into<RegistryError>,
        T: Send + 'static,
    {
        let reg = self.clone();
        blocking(move || read(&reg.catalog).map_err(Into::into)).await
    }

    /// Searches the local catalog (on a blocking thread: the index may be rebuilding).
    pub async fn search(
        self: &Arc<Self>,
        query: SearchQuery,
    ) -> Result<SearchResults, RegistryError> {
        let span = tracing::info_span!(
            "registry.search",
            query = %query.text,
            limit = query.limit,
            hits = tracing::field::Empty,
            total = tracing::field::Empty,
        );
        let started = Instant::now();
        let inner = span.clone();
        let results = self
            .read(move |catalog| inner.in_scope(|| catalog.search(&query)))
            .await?;
        self.metrics.observe_search(started.elapsed());
        span.record("hits", results.hits.len());
        span.record("total", results.total);
        Ok(results)
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
                    self.metrics.observe_fetch(started.elapsed(), f.size);
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
        let (n, v) = (name.clone(), version.clone());
        let record = self.read(move |c| c.release(&n, &v)).await?;
        self.blobs.describe(&record.body.archive);
        self.fetch_archive(record.body.archive, on_progress).await
    }

    /// Makes the archive `info` describes local: from the store if it is there and sound,
    /// otherwise from its providers.
    async fn fetch_archive(
        self: &Arc<Self>,
        info: ArchiveInfo,
        on_progress: Option<fetch::ProgressFn>,
    ) -> Result<FetchedBlob, RegistryError> {
        if let Some(hit) = self.cached_blob(&info).await? {
            return Ok(hit);
        }
        // One fetch of an archive at a time: one that waited finds the archive in the cache,
        // and no two fetches ever write the same partial file.
        let _turn = self.fetch_turn(info.id).await;
        if let Some(hit) = self.cached_blob(&info).await? {
            return Ok(hit);
        }
        let mut providers = self.find_providers(&info.id).await?;
        Self::count(&self.stats.cache_misses);
        tracing::Span::current().record("providers", providers.known.len());
        let partial = self.blobs.partial_path(&info.id);
        let sink = Arc::new(
            fetch::FileSink::open(&partial, &info, on_progress).map_err(fetch::FetchError::from)?,
        );
        // From now on this node serves what it has verified, and says so where fetchers look
        // for providers.
        let (serving, fetchers) = self.downloads.serve(sink.clone());
        providers.fetchers = Some(fetchers);
        let announced = self.announce_archive(info.id);
        let report = fetch::fetch_to_file(
            &self.net,
            &info,
            providers,
            fetch::parallel_for(info.chunk_size),
            sink,
        )
        .await;
        let (report, hashed) = match report {
            Ok(r) => r,
            Err((e, outcomes)) => {
                drop(serving);
                self.withdraw_archive(info.id, announced);
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
        let adopted =
            blocking(move || Ok(reg.blobs.adopt_partial(id, BlobKind::Fetched, hashed)?)).await;
        // Adopted, the archive is served whole; otherwise not at all.
        drop(serving);
        let evicted = match adopted {
            Ok(evicted) => evicted,
            Err(e) => {
                self.withdraw_archive(info.id, announced);
                return Err(e);
            }
        };
        self.stop_providing(&evicted).await?;
        Ok(FetchedBlob {
            content: info.id,
            path: self.blobs.blob_path(&info.id),
            size: info.size,
            cached: false,
            served_by: report.served_by,
            resumed_chunks: report.resumed_chunks,
        })
    }

    /// Tells the DHT this node provides archive `id` (while fetching it, the chunks it has
    /// verified). A courtesy to other fetchers, so nobody waits for it; the handle lets a
    /// withdrawal come after it.
    fn announce_archive(&self, id: ContentId) -> tokio::task::JoinHandle<()> {
        let net = self.net.clone();
        tokio::spawn(
            async move {
                if let Err(e) = net
                    .start_providing(DhtKey::Content(id).to_bytes())
                    .await
                    .or_else(tolerate_lonely)
                {
                    debug!(content = %id, error = %e, "could not announce an archive");
                }
            }
            .in_current_span(),
        )
    }

    /// Takes back the announcement of an archive whose fetch failed, once it is made.
    fn withdraw_archive(&self, id: ContentId, announced: tokio::task::JoinHandle<()>) {
        let net = self.net.clone();
        tokio::spawn(async move {
            let _ = announced.await;
            if let Err(e) = net.stop_providing(DhtKey::Content(id).to_bytes()).await {
                debug!(content = %id, error = %e, "could not withdraw an archive's announcement");
            }
        });
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
            fetchers: None,
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
        // A use: moves it to the back of the eviction queue. Checked whole: a file the disk
        // damaged is never handed out.
        let sound = blocking(move || {
            reg.blobs.read_range(&id, 0, 0)?;
            Ok(reg.blobs.is_sound(&id)?)
        })
        .await?;
        if !sound {
            self.blob_damaged(id, None);
            return Ok(None);
        }
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
        blocking(move || Ok(reg.catalog.save_index().map(drop)?)).await
    }

    /// Saves the search index if the copy on disk is far behind the catalog: after a crash the
    /// next start would re-index so many names that it rebuilds the whole index instead (a
    /// node that synced a large catalog and never stopped cleanly, or one whose index was
    /// just rebuilt). Called on the persist tick; returns whether it saved.
    pub async fn save_index_if_behind(self: &Arc<Self>) -> Result<bool, RegistryError> {
        if !self.catalog.view().index_far_behind() {
            return Ok(false);
        }
        let reg = self.clone();
        blocking(move || Ok(reg.catalog.save_index()?)).await
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

/// A DHT write that reached no other node still stored the value locally, and replication
/// will carry it on once peers appear: not an error for a publisher.
fn tolerate_lonely(e: NetworkError) -> Result<(), NetworkError> {
    match e {
        NetworkError::Query(_) => Ok(()),
        other => Err(other),
    }
}
