//! The catalog: every record this node admitted and what the trust rules make of them (owners,
//! versions, yanks, evidence, heads), the log they are kept in, and the search index they
//! feed. It takes records and returns verdicts; it has no network, no clock (a caller passes
//! the time of what it signs) and spawns nothing. Every method that reads or writes the disk is
//! blocking and says so: [`Registry`](crate::ops::Registry)'s async workflows run them on blocking
//! threads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use agora_protocol::dht::{DhtKey, DhtValue};
use agora_protocol::limits::{MAX_HEAD_VERSIONS, SYNC_BUCKETS};
use agora_protocol::messages::BucketDigest;
use agora_protocol::records::{
    ArchiveInfo, CatalogRecord, HeadBody, PackageHead, RecordError, RecordId, ReleaseBody,
    ReleaseRecord, Signed,
};
use agora_protocol::search::{SearchQuery, SearchResults};
use agora_protocol::{
    ContentId, Dependency, PackageName, PublisherKey, PublisherSecret, Version, VersionReq,
};
use tracing::{debug, error, info, warn};

#[cfg(test)]
mod convergence;
pub mod events;
mod pins;
pub mod publishers;
mod rdf;
mod refusals;
pub mod resolve;
pub mod trust;
mod view;

pub use view::CatalogView;

use crate::graph::{CatalogGraph, GraphError};
use crate::index::{
    CatchUp, IndexDoc, IndexError, OVERLAY_MAX, SavedIndex, Seal, SearchIndex, Ticket,
};
use crate::lock;
use crate::obs::RegistryStats;
use crate::store::{CatalogWrite, Db, StoreError};
use pins::{all_newest_found, check_pins_and_open_index, joined};
use refusals::{RefusalChanges, Refusals};
use resolve::{Candidate, ResolveError};
use trust::{Admission, Trust, TrustError, TrustPolicy};

/// Records admitted per durable transaction when a big batch (a sync) comes in.
const INGEST_BATCH: usize = 2048;

/// Times a batch's refused records are decided again once the rest of it is in.
const INGEST_RETRIES: usize = 4;

/// Documents sent to the index writer at a time while the search index is rebuilt.
const REBUILD_CHUNK: usize = 4096;

/// Chunks of documents that may wait for the index writer.
const REBUILD_CHUNKS_AHEAD: usize = 2;

/// A saved search index is caught up at start-up while the names to re-index are at most
/// this fraction of the indexed names (1/4) or an overlay's worth; with more, a rebuild is
/// cheaper.
const CATCH_UP_FRACTION: u64 = 4;

/// A running node saves its search index once the catalog has grown by this fraction of the
/// indexed names (1/8, half what a catch-up takes) or an overlay's worth since the copy on
/// disk: so a crash leaves a copy the next start catches up instead of rebuilding.
const SAVE_BEHIND_FRACTION: u64 = 8;

/// Why the catalog refused a query or a write. Each variant is something the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("package '{name}' not found in the catalog ({catalog} packages)")]
    NotFound { name: PackageName, catalog: usize },
    #[error("no installable version of '{name}' matches {req}; available: {}{}", resolve::fmt_versions(.available), why_not(.yanked, .prereleases))]
    NoMatchingVersion {
        name: PackageName,
        req: VersionReq,
        available: Vec<Version>,
        /// Versions that match but were yanked.
        yanked: Vec<Version>,
        /// Pre-releases the requirement would take if it named their version.
        prereleases: Vec<Version>,
    },
    #[error("'{name}' has no version {version}")]
    VersionNotFound { name: PackageName, version: Version },
    #[error(
        "{name}@{version} has two different signed records (equivocation); it cannot be installed"
    )]
    Equivocated { name: PackageName, version: Version },
    #[error("{name}@{version} is already published (release record {record})")]
    AlreadyPublished {
        name: PackageName,
        version: Version,
        record: RecordId,
    },
    #[error("{name}@{version} is not newer than {highest}, the highest version published")]
    NotNewer {
        name: PackageName,
        version: Version,
        highest: Version,
    },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why versions that look like a match are not: yanked, or pre-releases a requirement takes
/// only when it names their version.
fn why_not(yanked: &[Version], prereleases: &[Version]) -> String {
    let mut out = String::new();
    if !yanked.is_empty() {
        let verb = if yanked.len() == 1 { "was" } else { "were" };
        out.push_str(&format!(
            "; {} {verb} yanked",
            resolve::fmt_versions(yanked)
        ));
    }
    if !prereleases.is_empty() {
        let (what, pin) = (resolve::fmt_versions(prereleases), &prereleases[0]);
        out.push_str(&format!(
            "; {what} would match but a pre-release is taken only when asked for by its \
             version (@={pin})"
        ));
    }
    out
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
    /// The reasons its standing yanks give, joined (`None`: not yanked, or no reason given).
    pub yank_reason: Option<String>,
    /// More than one record exists for this version: not installable.
    pub equivocated: bool,
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

/// The in-memory view of the catalog (the truth is in redb), under one lock.
struct Memory {
    trust: Trust,
    /// Every record id, sorted: sync buckets are contiguous ranges.
    ids: BTreeSet<RecordId>,
    /// Records refused for good, not to be fetched or checked again.
    refusals: Refusals,
    /// Each bucket's digest for the sync summary, kept until a record of the bucket is added:
    /// a summary recomputes only the buckets that changed, not the whole catalog.
    summary: Vec<Option<BucketDigest>>,
}

impl Memory {
    /// The state of a name, or `NotFound` naming how many packages there are.
    fn state(&self, name: &PackageName) -> Result<&trust::NameState, CatalogError> {
        self.trust.name(name).ok_or_else(|| CatalogError::NotFound {
            name: name.clone(),
            catalog: self.trust.name_count(),
        })
    }
}

/// The catalog of this node.
pub struct Catalog {
    db: Arc<Db>,
    index: SearchIndex,
    /// The catalog as RDF, for SPARQL: built at its first use.
    graph: CatalogGraph,
    /// What was admitted, for subscribers.
    events: events::Events,
    memory: Mutex<Memory>,
    stats: Arc<RegistryStats>,
}

/// What opening the catalog found.
pub struct Opened {
    pub records: usize,
    /// DHT values to serve again, as (key, value): this node's heads, and the releases whose
    /// archives `published` named.
    pub restore: Vec<(Vec<u8>, Vec<u8>)>,
    pub index_rebuilt: bool,
    /// Names re-indexed on top of the saved index (the catalog grew after its seal).
    pub index_caught_up: usize,
    /// The description of each archive `held` named, from its release in the catalog: what
    /// the archive's chunks must hash to.
    pub archives: Vec<ArchiveInfo>,
}

impl Catalog {
    /// What the catalog answers from memory, never blocking.
    pub fn view(&self) -> CatalogView<'_> {
        CatalogView(self)
    }

    /// Opens the catalog kept in `db` (its search index under `dir/index`): replays the log
    /// through the trust rules, checks the stored pins against it, and opens the index, caught
    /// up or marked for a rebuild ([`rebuild_index`](Self::rebuild_index)). Blocking.
    pub fn open(
        db: Arc<Db>,
        dir: &Path,
        policy: &TrustPolicy,
        published: &HashSet<ContentId>,
        held: &HashSet<ContentId>,
        saved_index: Option<SavedIndex>,
        stats: Arc<RegistryStats>,
    ) -> Result<(Self, Opened), CatalogError> {
        let started = Instant::now();
        // Sized for the stored records up front, so that the replay never grows the maps.
        let (stored, names) = db.counts()?;
        let (stored, names) = (stored as usize, names as usize);
        let mut memory = Memory {
            trust: Trust::with_capacity(policy.clone(), stored, names),
            ids: BTreeSet::new(),
            refusals: Refusals::load(refusals::MAX_REFUSALS, db.refusals(&policy.fingerprint())?),
            summary: vec![None; SYNC_BUCKETS],
        };
        // What this node put on the DHT itself (its heads and the releases it published),
        // collected during the replay so the log is read once.
        let mut restore: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut archives = Vec::new();
        let index_dir = dir.join("index");
        let mut catch_up = saved_index.as_ref().map(|s| CatchUp::new(s.seal));
        let snapshot = db.load_catalog(|id, record| {
            if let Some(c) = &mut catch_up {
                c.record(&id, record.name());
            }
            if let Err(e) = memory.trust.admit(&record, id) {
                // The log only holds admitted records, in order: this is a corrupt store.
                return Err(StoreError::Corrupt(format!("replaying record {id}: {e}")));
            }
            memory.ids.insert(id);
            if let CatalogRecord::Release(r) = record {
                if held.contains(&r.body.archive.id) {
                    archives.push(r.body.archive.clone());
                }
                if published.contains(&r.body.archive.id) {
                    let value = DhtValue::Release(r);
                    restore.push((value.key().to_bytes(), value.encode()));
                }
            }
            Ok(())
        })?;
        let load_ms = started.elapsed().as_millis();
        let records = snapshot.records as usize;
        let catch_up = catch_up.and_then(CatchUp::finish);
        // The saved copy reflects the log's first records, or it is not used.
        let saved_index = saved_index.filter(|_| catch_up.is_some());
        let ((index, mut index_kept), installable) =
            check_pins_and_open_index(&db, &memory.trust, &index_dir, saved_index)?;
        let checks_ms = started.elapsed().as_millis() - load_ms;
        for (head, bytes) in snapshot.heads {
            match memory.trust.admit_head(&head) {
                // Served as stored: the stored bytes are the head's DHT value.
                Ok(_) => restore.push((DhtKey::Head(head.body.name).to_bytes(), bytes)),
                Err(e) => {
                    warn!(name = %head.body.name, error = %e, "dropping a stored package head")
                }
            }
        }
        let catalog = Self {
            db,
            index,
            graph: CatalogGraph::default(),
            events: events::Events::default(),
            memory: Mutex::new(memory),
            stats,
        };

        // The saved index reflects the log's first records: the names of those after them are
        // re-indexed on top of it, unless so many that a rebuild costs less.
        let mut index_caught_up = 0;
        if let Some((_, names)) = catch_up.filter(|_| index_kept)
            && !names.is_empty()
        {
            if names.len() as u64 <= (installable / CATCH_UP_FRACTION).max(OVERLAY_MAX as u64) {
                let (docs, removed) = catalog.index_docs(&names)?;
                catalog.index.update(&docs, &removed)?;
                index_caught_up = names.len();
            } else {
                index_kept = false;
            }
        }
        let mut index_rebuilt = false;
        // One document per name that has an installable release.
        if !index_kept && installable > 0 || catalog.index.num_docs() != installable {
            info!(
                indexed = catalog.index.num_docs(),
                names = installable,
                sealed = index_kept,
                "search index is out of date or was not closed cleanly; rebuilding it while the node serves"
            );
            // Searches wait from now until `rebuild_index` (which the node starts) ends.
            catalog.index.begin_rebuild();
            index_rebuilt = true;
        }
        info!(
            records,
            load_ms, checks_ms, index_caught_up, index_rebuilt, "catalog loaded"
        );
        Ok((
            catalog,
            Opened {
                records,
                restore,
                index_rebuilt,
                index_caught_up,
                archives,
            },
        ))
    }

    /// Hears every record admitted from now on, once it is durable.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<events::Admitted> {
        self.events.subscribe()
    }

    /// Searches the catalog. Blocking (the index may wait for a rebuild).
    pub fn search(&self, query: &SearchQuery) -> Result<SearchResults, CatalogError> {
        count(&self.stats.searches);
        Ok(self.index.search(query)?)
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
                .lock()
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
    ) -> Result<(), CatalogError> {
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
                    .map_err(CatalogError::from);
                let _ = tx.send(last);
            });
            // Ends the reader early if the index fails: it stops at its next send.
            let fed = rx.into_iter().try_for_each(|docs| {
                docs?
                    .into_iter()
                    .try_for_each(&mut *add)
                    .map_err(CatalogError::from)
            });
            joined(reader.join());
            fed
        })
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        lock(&self.memory)
    }

    /// Admits records (verifying their signatures unless `verified`), in the order the trust
    /// rules accept, durably, and returns once they are searchable too. Blocking.
    pub fn ingest(
        &self,
        records: Vec<CatalogRecord>,
        verified: bool,
    ) -> Result<Vec<(RecordId, Ingested)>, CatalogError> {
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
    ) -> Result<(Vec<(RecordId, Ingested)>, Ticket), CatalogError> {
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
    pub fn flush_index(&self, ticket: Ticket) -> Result<(), CatalogError> {
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
    ) -> Result<(Vec<(RecordId, Ingested)>, Ticket), CatalogError> {
        let ids: Vec<RecordId> = records.iter().map(CatalogRecord::id).collect();
        // Signatures are checked before the catalog's lock is taken (a sync's batch held it
        // through thousands of checks), and only those of records it does not hold: an id
        // hashes the record's whole encoding, signature included, so a held id is the same
        // bytes, checked when they were admitted (gossip relays what many nodes hold).
        let invalid: Vec<Option<RecordError>> = if verified {
            ids.iter().map(|_| None).collect()
        } else {
            let held: Vec<bool> = {
                let cat = self.lock();
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
        let mut cat = self.lock();
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
                        count(&self.stats.equivocations);
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
                        count(&self.stats.rollbacks_refused);
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
        let ticket = self.index.mark(touched.iter().map(|n| n.to_string()));
        self.graph.mark(touched);
        // Under the lock as well, so that subscribers hear admissions in the log's order.
        self.events.send(
            write
                .records
                .iter()
                .map(|(id, record)| events::Admitted::of(record, *id)),
        );
        drop(cat);
        Ok((out, ticket))
    }

    /// The index documents of these names (their newest installable release), and the names
    /// that have none.
    fn index_docs(
        &self,
        names: &[PackageName],
    ) -> Result<(Vec<IndexDoc>, Vec<String>), CatalogError> {
        let latest: Vec<(PackageName, Option<RecordId>)> = {
            let cat = self.lock();
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

    /// The records with these ids that we have.
    pub fn records(&self, ids: &[RecordId]) -> Result<Vec<CatalogRecord>, CatalogError> {
        Ok(self.db.records(ids)?)
    }

    /// Signs, admits and stores a new head for a name we own.
    pub fn sign_head(
        &self,
        name: &PackageName,
        secret: &PublisherSecret,
        at: u64,
    ) -> Result<PackageHead, CatalogError> {
        let mut cat = self.lock();
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
            updated_at: at,
        };
        let head = Signed::sign(body, secret)?;
        cat.trust.admit_head(&head)?;
        self.db.put_head(&head)?;
        Ok(head)
    }

    /// Admits a verified head from a peer and persists it; `Ok(false)` if we already had it.
    pub fn admit_head(&self, head: &PackageHead) -> Result<bool, CatalogError> {
        let mut cat = self.lock();
        let fresh = cat.trust.admit_head(head)?;
        if fresh {
            self.db.put_head(head)?;
        }
        Ok(fresh)
    }

    /// The newest installable release of `name` matching `req`.
    pub fn get(&self, name: &PackageName, req: &VersionReq) -> Result<ReleaseRecord, CatalogError> {
        let id = {
            let cat = self.lock();
            let state = cat.state(name)?;
            match state.newest_matching(req) {
                Some((_, id)) => *id,
                None => {
                    let versions = state.releases.keys();
                    return Err(CatalogError::NoMatchingVersion {
                        name: name.clone(),
                        req: req.clone(),
                        available: versions
                            .clone()
                            .filter(|v| state.installable(v))
                            .cloned()
                            .collect(),
                        yanked: versions
                            .clone()
                            .filter(|v| req.matches(v) && state.is_yanked(v))
                            .cloned()
                            .collect(),
                        prereleases: versions
                            .filter(|v| !v.pre.is_empty() && !req.matches(v))
                            .filter(|v| {
                                let release = Version::new(v.major, v.minor, v.patch);
                                req.matches(&release)
                            })
                            .cloned()
                            .collect(),
                    });
                }
            }
        };
        self.release_by_id(&id)
    }

    /// Every package's newest installable release (not yanked, not equivocated, not a
    /// pre-release), by name.
    pub fn newest_releases(&self) -> Result<Vec<ReleaseRecord>, CatalogError> {
        let any = VersionReq::STAR;
        let mut ids: Vec<(PackageName, RecordId)> = {
            let cat = self.lock();
            cat.trust
                .names()
                .filter_map(|(name, state)| {
                    let (_, id) = state.newest_matching(&any)?;
                    Some((name.clone(), *id))
                })
                .collect()
        };
        ids.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        ids.iter().map(|(_, id)| self.release_by_id(id)).collect()
    }

    /// Exactly `name@version`, yanked or not (a lockfile may pin a yanked version); refused
    /// if the version is equivocated.
    pub fn release(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<ReleaseRecord, CatalogError> {
        let id = {
            let cat = self.lock();
            let state = cat.state(name)?;
            if state.is_equivocated(version) {
                return Err(CatalogError::Equivocated {
                    name: name.clone(),
                    version: version.clone(),
                });
            }
            *state
                .releases
                .get(version)
                .ok_or_else(|| CatalogError::VersionNotFound {
                    name: name.clone(),
                    version: version.clone(),
                })?
        };
        self.release_by_id(&id)
    }

    pub fn release_by_id(&self, id: &RecordId) -> Result<ReleaseRecord, CatalogError> {
        match self.db.record(id)? {
            Some(CatalogRecord::Release(r)) => Ok(r),
            _ => Err(StoreError::Corrupt(format!("release {id} is missing from the log")).into()),
        }
    }

    /// Resolves `roots` and everything they depend on to exact releases.
    pub fn resolve(
        &self,
        roots: &[Dependency],
        prefer: &BTreeMap<PackageName, Version>,
    ) -> Result<Vec<ResolvedPackage>, CatalogError> {
        let mut records: HashMap<RecordId, ReleaseRecord> = HashMap::new();
        let mut failure: Option<CatalogError> = None;
        let chosen = resolve::resolve(roots, prefer, |name| {
            let ids: Vec<RecordId> = {
                let cat = self.lock();
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

    /// Flushes what the catalog holds into the search index and saves it, sealed with the log
    /// records it reflects. Blocking. Returns whether it saved.
    pub fn save_index(&self) -> Result<bool, CatalogError> {
        let started = Instant::now();
        let (records, ticket) = {
            let cat = self.lock();
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
}

fn index_doc(b: ReleaseBody) -> IndexDoc {
    IndexDoc {
        name: b.name.to_string(),
        version: b.version.to_string(),
        meta: b.meta,
        published_at: b.published_at,
    }
}

/// Mark a count.
fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
