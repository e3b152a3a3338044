//! Catalog sync, the initiating side (`/agora/sync/1`; the answering side is in `inbound`).
//!
//! 1. Ask the peer for its summary: a count and a digest of the sorted record ids in each of
//!    256 buckets (by the first byte of the id). That costs the same whatever the catalog size.
//! 2. For the buckets whose digest differs, ask for their ids, a few buckets per request so a
//!    listing stays under its cap.
//! 3. Ask for the records we lack, up to [`MAX_SYNC_IDS`] per request, and admit them all at
//!    once in an order the trust rules accept (so history arriving out of order still chains).
//!
//! Only differing buckets are listed and only missing records are fetched, so the cost grows
//! with the difference (a new node's difference is the whole catalog). Records this node
//! refused for good are not fetched again, and a bucket whose listing held nothing new is not
//! listed again while both sides' digests of it stay the same ([`Settled`]): two nodes that
//! disagree for good (one name, two owners) stop paying for it at every sync. Everything the
//! peer sends is checked: ids we did not ask for are dropped, every record is verified before
//! it is admitted, and the number of rounds is bounded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_protocol::codec::{self, Wire};
use agora_protocol::limits::{MAX_SYNC_IDS, MAX_SYNC_LISTED_IDS, SYNC_BUCKETS};
use agora_protocol::messages::{BucketDigest, GossipMessage, Refusal, SyncRequest, SyncResponse};
use agora_protocol::records::{CatalogRecord, RecordId};
use libp2p::PeerId;
use tracing::{debug, info};

use super::{Ingested, Registry, RegistryError};
use crate::network::NetworkError;

/// Most records taken from one peer in one sync; the rest come in the next round.
pub const MAX_RECORDS_PER_SYNC: usize = 200_000;
/// A sync that brought at most this many records made within [`RELAY_WINDOW_SECS`] relays
/// those it added on gossip, so that the rest of a healed partition learns them at once
/// instead of at its next periodic sync. More is a node catching up on what its neighbours
/// already have.
pub const MAX_RELAYED: usize = 256;
/// Of what a sync brought, only records made in this last while are relayed: older ones were
/// gossiped when they were made, so a node that learns them late (new, or back from being
/// offline) is catching up, and relaying them would have every node check a gossip message
/// for each (a 50-node testnet spent a second of both cores on 100 of them). A partition
/// that outlasts this heals by the periodic sync alone.
pub const RELAY_WINDOW_SECS: u64 = 3600;
/// Most record requests in one sync (each returns at least one record or the sync stops).
const MAX_RECORD_ROUNDS: usize = 4096;
/// Syncs running at once, with all peers together: each holds up to a response and a batch
/// waiting to be admitted, and a burst of new connections would otherwise start one each.
pub const MAX_CONCURRENT_SYNCS: usize = 4;
/// Longest one sync may take, however the peer paces its answers.
pub const SYNC_DEADLINE: Duration = Duration::from_secs(120);
/// Records received are verified and admitted once this many bytes of them wait, so that a
/// sync holds at most this much (and one response) whatever the difference.
const SYNC_ADMIT_BYTES: usize = 8 * 1024 * 1024;
/// Most bytes of records taken from one peer in one sync: a catalog of 100k releases is
/// about 100 MB; the rest comes at the next sync.
pub const MAX_SYNC_RECORD_BYTES: usize = 256 * 1024 * 1024;
/// How often a node reconciles its catalog with a random connected peer, on top of the sync
/// on every new connection: catches anything gossip missed within a minute.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Most settled bucket differences remembered: 256 buckets for each of 16 peers whose
/// catalogs differ from ours for good.
const MAX_SETTLED: usize = 4096;

/// Bucket differences that a full listing showed hold nothing for this node (every id listed
/// is held or refused for good), by bucket and both sides' digests of it. While neither
/// digest changes the listing would show the same, so the bucket is not listed again; any
/// record added on either side changes a digest. Bounded: the oldest is forgotten first.
#[derive(Debug, Default)]
pub struct Settled {
    set: HashSet<(u8, [u8; 32], [u8; 32])>,
    order: VecDeque<(u8, [u8; 32], [u8; 32])>,
}

impl Settled {
    fn contains(&self, bucket: u8, theirs: &[u8; 32], ours: &[u8; 32]) -> bool {
        self.set.contains(&(bucket, *theirs, *ours))
    }

    fn insert(&mut self, bucket: u8, theirs: [u8; 32], ours: [u8; 32]) {
        if self.set.insert((bucket, theirs, ours)) {
            self.order.push_back((bucket, theirs, ours));
            if self.order.len() > MAX_SETTLED
                && let Some(oldest) = self.order.pop_front()
            {
                self.set.remove(&oldest);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync with {peer} is already running")]
    AlreadyRunning { peer: PeerId },
    #[error("{MAX_CONCURRENT_SYNCS} syncs are running already")]
    TooManySyncs,
    #[error("the sync took longer than {SYNC_DEADLINE:?}")]
    Deadline,
    #[error("the peer sent {invalid} invalid records (the first: {first}); the sync stopped")]
    InvalidRecords { invalid: usize, first: String },
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("peer refused the sync: {0:?}")]
    Refused(Refusal),
    #[error("peer answered {got} to a {asked} request")]
    Unexpected { asked: &'static str, got: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub differing_buckets: usize,
    pub ids_listed: usize,
    pub requested: usize,
    pub added: usize,
    pub refused: usize,
}

/// Reconciles our catalog with `peer`'s.
#[tracing::instrument(
    name = "sync",
    skip(registry),
    fields(
        %peer,
        buckets = tracing::field::Empty,
        ids_listed = tracing::field::Empty,
        added = tracing::field::Empty,
        refused = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
)]
pub async fn sync_with(registry: &Arc<Registry>, peer: PeerId) -> Result<SyncReport, SyncError> {
    let span = tracing::Span::current();
    match registry.begin_sync(peer, MAX_CONCURRENT_SYNCS) {
        Ok(()) => {}
        Err(true) => return Err(SyncError::AlreadyRunning { peer }),
        Err(false) => return Err(SyncError::TooManySyncs),
    }
    let result = tokio::time::timeout(SYNC_DEADLINE, run(registry, peer))
        .await
        .unwrap_or(Err(SyncError::Deadline));
    registry.end_sync(&peer);
    if let Ok(report) = &result {
        registry.note_synced(peer, report.added);
        let stats = &registry.stats;
        stats
            .records_synced
            .fetch_add(report.added as u64, Ordering::SeqCst);
        stats
            .sync_ids_listed
            .fetch_add(report.ids_listed as u64, Ordering::SeqCst);
        // Last, so whoever sees a sync completed also sees what it counted.
        stats.syncs_completed.fetch_add(1, Ordering::SeqCst);
        span.record("buckets", report.differing_buckets);
        span.record("ids_listed", report.ids_listed);
        span.record("added", report.added);
        span.record("refused", report.refused);
        span.record("outcome", "ok");
        if report.added > 0 || report.refused > 0 {
            info!(%peer, added = report.added, refused = report.refused, "catalog sync");
        }
    }
    if let Err(e) = &result {
        span.record("outcome", e.to_string());
    }
    result
}

async fn run(registry: &Arc<Registry>, peer: PeerId) -> Result<SyncReport, SyncError> {
    let net = registry.network();
    let mut report = SyncReport::default();
    let theirs = match net.send_sync(peer, SyncRequest::Summary).await? {
        SyncResponse::Summary { buckets } if buckets.len() == SYNC_BUCKETS => buckets,
        other => return Err(unexpected("summary", other)),
    };
    let ours = registry.catalog.view().summary();
    let differing: Vec<(u8, u32)> = {
        let settled = crate::lock(&registry.settled);
        (0..SYNC_BUCKETS)
            .filter(|&b| {
                theirs[b].count > 0
                    && theirs[b] != ours[b]
                    && !settled.contains(b as u8, &theirs[b].digest, &ours[b].digest)
            })
            .map(|b| (b as u8, theirs[b].count))
            .collect()
    };
    report.differing_buckets = differing.len();
    if differing.is_empty() {
        return Ok(report);
    }
    let buckets = Buckets {
        theirs: &theirs,
        ours: &ours,
    };
    let missing = list_missing(registry, peer, differing, buckets, &mut report).await?;
    report.requested = missing.len();
    take_records(registry, peer, &missing, &mut report).await?;
    Ok(report)
}

/// The two sides' bucket digests.
#[derive(Clone, Copy)]
struct Buckets<'a> {
    theirs: &'a [BucketDigest],
    ours: &'a [BucketDigest],
}

/// Groups of the `differing` buckets (with the peer's count of each), each group's ids under
/// the listing cap.
fn listing_groups(differing: Vec<(u8, u32)>) -> Vec<Vec<u8>> {
    let mut group: Vec<u8> = Vec::new();
    let mut group_count: u64 = 0;
    let mut groups = Vec::new();
    for (b, count) in differing {
        if !group.is_empty() && group_count + u64::from(count) > MAX_SYNC_LISTED_IDS as u64 {
            groups.push(std::mem::take(&mut group));
            group_count = 0;
        }
        group.push(b);
        group_count += u64::from(count);
    }
    groups.push(group);
    groups
}

/// Lists the ids of the differing buckets, a group at a time, and returns those this node has
/// not decided on (sorted, at most `MAX_RECORDS_PER_SYNC`). A bucket whose whole listing held
/// nothing new is remembered as settled while both digests stay.
async fn list_missing(
    registry: &Arc<Registry>,
    peer: PeerId,
    differing: Vec<(u8, u32)>,
    buckets: Buckets<'_>,
    report: &mut SyncReport,
) -> Result<Vec<RecordId>, SyncError> {
    let net = registry.network();
    let mut missing: Vec<RecordId> = Vec::new();
    for group in listing_groups(differing) {
        let asked: HashSet<u8> = group.iter().copied().collect();
        let ids = match net
            .send_sync(peer, SyncRequest::Buckets { buckets: group })
            .await?
        {
            SyncResponse::Ids { ids } => ids,
            other => return Err(unexpected("ids", other)),
        };
        report.ids_listed += ids.len();
        // Per bucket asked: ids listed, and whether any is news to this node.
        let mut listed: HashMap<u8, (u32, bool)> = HashMap::new();
        for id in ids {
            let bucket = id.as_bytes()[0];
            if !asked.contains(&bucket) {
                continue;
            }
            let new = !registry.catalog.view().knows(&id);
            let entry = listed.entry(bucket).or_default();
            entry.0 += 1;
            entry.1 |= new;
            if new {
                missing.push(id);
            }
        }
        let mut settled = crate::lock(&registry.settled);
        for (bucket, (count, news)) in listed {
            let b = bucket as usize;
            if !news && count == buckets.theirs[b].count {
                settled.insert(bucket, buckets.theirs[b].digest, buckets.ours[b].digest);
            }
        }
        drop(settled);
        if missing.len() >= MAX_RECORDS_PER_SYNC {
            missing.truncate(MAX_RECORDS_PER_SYNC);
            break;
        }
    }
    missing.sort();
    missing.dedup();
    Ok(missing)
}

/// Asks the peer for the `missing` records in rounds, verifies each round as it comes and
/// admits them in batches, within the sync's byte and round budgets.
async fn take_records(
    registry: &Arc<Registry>,
    peer: PeerId,
    missing: &[RecordId],
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let net = registry.network();
    let mut batch = Admit::default();
    let mut taken = 0usize;
    let mut pending: &[RecordId] = missing;
    let mut rounds = 0;
    while !pending.is_empty() && rounds < MAX_RECORD_ROUNDS && taken < MAX_SYNC_RECORD_BYTES {
        rounds += 1;
        let asking = &pending[..pending.len().min(MAX_SYNC_IDS)];
        let got = match net
            .send_sync(
                peer,
                SyncRequest::Records {
                    ids: asking.to_vec(),
                },
            )
            .await?
        {
            SyncResponse::Records { records } => records,
            other => return Err(unexpected("records", other)),
        };
        // The responder answers in the order asked, skipping ids it lacks and stopping at its
        // size budget: everything up to the last record it returned is settled.
        let asked: HashSet<&RecordId> = asking.iter().collect();
        let mut received: HashSet<RecordId> = HashSet::new();
        let got: Vec<CatalogRecord> = got
            .into_iter()
            .filter(|r| {
                let id = r.id();
                asked.contains(&id) && received.insert(id)
            })
            .collect();
        let Some(last) = asking.iter().rposition(|id| received.contains(id)) else {
            debug!(%peer, "peer returned none of the records asked for; stopping");
            break;
        };
        // Checked as they come: a peer that sends one invalid record is not asked for more.
        let got = verified(got).await?;
        for record in got {
            let len = codec::encoded_len(&record);
            taken += len;
            batch.push(record, len);
        }
        pending = &pending[last + 1..];
        if batch.bytes >= SYNC_ADMIT_BYTES {
            admit(registry, std::mem::take(&mut batch), report).await?;
        }
    }
    admit(registry, batch, report).await
}

/// `records` if every one of them is valid (checked on a blocking thread), else why not.
async fn verified(records: Vec<CatalogRecord>) -> Result<Vec<CatalogRecord>, SyncError> {
    tokio::task::spawn_blocking(move || {
        let mut invalid = records
            .iter()
            .filter_map(|r| r.verify().err().map(|e| format!("{}: {e}", r.id())));
        match invalid.next() {
            Some(first) => Err(SyncError::InvalidRecords {
                invalid: 1 + invalid.count(),
                first,
            }),
            None => Ok(records),
        }
    })
    .await
    .map_err(|e| RegistryError::Internal(format!("sync verify task: {e}")))?
}

/// Verified records of a sync waiting to be admitted, and their size.
#[derive(Default)]
struct Admit {
    records: Vec<CatalogRecord>,
    bytes: usize,
}

impl Admit {
    fn push(&mut self, record: CatalogRecord, len: usize) {
        self.records.push(record);
        self.bytes += len;
    }
}

/// Admits a batch of a sync's verified records (in an order the trust rules accept), and
/// relays the news among those added.
async fn admit(
    registry: &Arc<Registry>,
    batch: Admit,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    if batch.records.is_empty() {
        return Ok(());
    }
    // The news among them, relayed once admitted; more than MAX_RELAYED is a partition
    // catching up, which the periodic sync heals.
    let now = super::now();
    let news: Vec<&CatalogRecord> = batch
        .records
        .iter()
        .filter(|r| is_news(r.made_at(), now))
        .collect();
    let relayable: Vec<CatalogRecord> = if news.len() <= MAX_RELAYED {
        news.into_iter().cloned().collect()
    } else {
        Vec::new()
    };
    let reg = registry.clone();
    let records = batch.records;
    let results = tokio::task::spawn_blocking(move || reg.catalog.ingest(records, true))
        .await
        .map_err(|e| RegistryError::Internal(format!("sync ingest task: {e}")))?
        .map_err(RegistryError::from)?;
    let mut added = HashSet::new();
    for (id, outcome) in results {
        match outcome {
            Ingested::Added(_) => {
                added.insert(id);
            }
            Ingested::Duplicate => {}
            Ingested::Invalid(_) | Ingested::Refused(_) | Ingested::RefusedBefore => {
                report.refused += 1
            }
        }
    }
    report.added += added.len();
    relay(
        registry,
        relayable.into_iter().filter(|r| added.contains(&r.id())),
    )
    .await;
    Ok(())
}

/// Whether a record made at `made` (its publisher's clock) is news at `now`: made within
/// [`RELAY_WINDOW_SECS`] before it, or after it (a clock ahead of ours).
fn is_news(made: u64, now: u64) -> bool {
    made.saturating_add(RELAY_WINDOW_SECS) >= now
}

/// Publishes records learned by sync on gossip (best effort: sync remains the safety net).
async fn relay(registry: &Arc<Registry>, records: impl Iterator<Item = CatalogRecord>) {
    for record in records {
        let msg = match record {
            CatalogRecord::Release(r) => GossipMessage::Release(r),
            CatalogRecord::Yank(y) => GossipMessage::Yank(y),
            CatalogRecord::Rotation(r) => GossipMessage::Rotation(r),
            CatalogRecord::Unyank(u) => GossipMessage::Unyank(u),
        };
        if let Err(e) = registry.network().publish(msg.to_wire()).await {
            debug!(error = %e, "relaying a synced record failed");
            return;
        }
    }
}

fn unexpected(asked: &'static str, got: SyncResponse) -> SyncError {
    match got {
        SyncResponse::Refused(r) => SyncError::Refused(r),
        other => SyncError::Unexpected {
            asked,
            got: match other {
                SyncResponse::Summary { .. } => "a summary".into(),
                SyncResponse::Ids { .. } => "an id list".into(),
                SyncResponse::Records { .. } => "records".into(),
                SyncResponse::Refused(_) => unreachable!("handled above"),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_records_made_within_the_window_or_ahead_of_our_clock_are_news() {
        let now = 1_800_000_000;
        assert!(is_news(now, now));
        assert!(is_news(now - RELAY_WINDOW_SECS, now));
        assert!(!is_news(now - RELAY_WINDOW_SECS - 1, now));
        assert!(!is_news(0, now));
        assert!(is_news(now + 60, now));
        assert!(is_news(u64::MAX, now));
    }
}
