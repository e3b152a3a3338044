//! Decides on inbound network events: admits gossip before it is forwarded, stores only valid
//! DHT records that pass the trust rules, answers sync and fetch requests, starts a catalog
//! sync with every new peer, and feeds ping times to reputation. Runs in its own task so that
//! the event loop never waits on it; disk work goes to blocking threads, and requests are
//! answered from their own tasks so one slow read does not hold up the rest.

use std::collections::HashMap;
use std::sync::Arc;

use agora_protocol::codec::{Wire, encode_body};
use agora_protocol::dht::{self, DhtValue};
use agora_protocol::limits::{MAX_SYNC_LISTED_IDS, MAX_SYNC_RECORDS, MAX_SYNC_RESPONSE_BYTES};
use agora_protocol::messages::{FetchResponse, GossipMessage, Refusal, SyncRequest, SyncResponse};
use agora_protocol::records::{CatalogRecord, PackageHead, RecordId};
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info_span, warn};

use super::{Registry, RegistryError};
use crate::catalog::Ingested;
use crate::catalog::trust::TrustError;
use crate::lock;
use crate::network::{NetworkError, NetworkEvent};

/// Gossip messages decided together, with one durable write, when they wait together.
pub const GOSSIP_BATCH: usize = 64;

/// Handles events until the network's event channel closes. Gossip messages that are already
/// waiting are taken together (up to [`GOSSIP_BATCH`]): their records are admitted in one
/// durable write instead of one each.
pub async fn run(registry: Arc<Registry>, mut events: mpsc::Receiver<NetworkEvent>) {
    let mut next: Option<NetworkEvent> = None;
    loop {
        let event = match next.take() {
            Some(event) => event,
            None => match events.recv().await {
                Some(event) => event,
                None => break,
            },
        };
        let handled = match event {
            NetworkEvent::Gossip { source, id, data } => {
                let mut batch = vec![(source, id, data)];
                while batch.len() < GOSSIP_BATCH {
                    match events.try_recv() {
                        Ok(NetworkEvent::Gossip { source, id, data }) => {
                            batch.push((source, id, data))
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                gossip(&registry, batch).await
            }
            other => handle(&registry, other).await,
        };
        if let Err(e) = handled {
            debug!(error = %e, "network is gone; inbound handler stops");
            break;
        }
    }
}

/// Admits one record on a blocking thread, answering as soon as the trust rules have decided:
/// a gossip verdict (and so the message's forwarding) does not wait for the disk. The durable
/// write and the index update go on in that thread; a failure there is logged (the record is
/// not acknowledged to anyone, and sync brings it again). Unless `verified`, the record's
/// signature is checked there too (if the node does not hold it already).
async fn admit(
    registry: &Arc<Registry>,
    record: CatalogRecord,
    verified: bool,
) -> Result<Ingested, RegistryError> {
    let reg = registry.clone();
    let (tx, decision) = oneshot::channel();
    let task = tokio::task::spawn_blocking(move || {
        let mut tx = Some(tx);
        let result = reg
            .catalog
            .ingest_durable(vec![record], verified, |out| {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(out.first().map_or(Ingested::Duplicate, |(_, i)| i.clone()));
                }
            })
            .and_then(|(_, ticket)| reg.catalog.flush_index(ticket));
        match result {
            Err(e) if tx.is_none() => {
                warn!(error = %e, "an admitted record was not stored");
                Ok(())
            }
            other => other,
        }
    });
    match decision.await {
        Ok(ingested) => Ok(ingested),
        // Dropped undecided: the task failed before the trust rules ruled.
        Err(_) => match task.await {
            Ok(Ok(())) => Ok(Ingested::Duplicate),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(RegistryError::Internal(format!("ingest task: {e}"))),
        },
    }
}

/// Admits a head on a blocking thread (it is persisted when accepted), checking its signature
/// there first unless `verified`. A gossiped head (`charged`) is taken from its key's budget
/// once its signature holds; `Ok(None)` means the key was over it.
async fn admit_head(
    registry: &Arc<Registry>,
    head: PackageHead,
    verified: bool,
    charged: bool,
) -> Result<Option<bool>, RegistryError> {
    let reg = registry.clone();
    tokio::task::spawn_blocking(move || {
        if !verified {
            head.verify()?;
        }
        if charged && !lock(&reg.publishers).take(head.body.owner, false, std::time::Instant::now())
        {
            Registry::count(&reg.stats.publisher_over_budget);
            return Ok(None);
        }
        Ok(reg.catalog.admit_head(&head).map(Some)?)
    })
    .await
    .map_err(|e| RegistryError::Internal(format!("head task: {e}")))?
}

/// Decides on gossip messages and reports each verdict: admit what is new and valid; reject
/// what is invalid (it does not decode, breaks a limit or is not signed by its signer), which
/// costs the sender gossip score; ignore the rest. A valid record this node's rules refuse
/// (another owner as this node sees the name, a key not on its allowlist, a key over its
/// budget) may be accepted by the honest peer that relayed it: punishing the relay would cut
/// this node off from its neighbours for its own policy.
async fn gossip(
    registry: &Arc<Registry>,
    batch: Vec<(PeerId, MessageId, Vec<u8>)>,
) -> Result<(), NetworkError> {
    let spans: Vec<tracing::Span> = batch
        .iter()
        .map(|(source, _, data)| {
            info_span!(
                "gossip.validate",
                %source,
                bytes = data.len(),
                package = tracing::field::Empty,
                outcome = tracing::field::Empty,
            )
        })
        .collect();
    let mut verdicts: Vec<Option<MessageAcceptance>> = vec![None; batch.len()];
    let mut records = Vec::new();
    for (i, (source, _, data)) in batch.iter().enumerate() {
        let msg = match GossipMessage::from_wire(data) {
            Ok(m) => m,
            Err(e) => {
                verdicts[i] = Some(reject(*source, &e));
                continue;
            }
        };
        spans[i].record("package", msg.name().as_str());
        match msg {
            GossipMessage::Head(head) => {
                let verdict = head_verdict(registry, *source, head)
                    .instrument(spans[i].clone())
                    .await;
                verdicts[i] = Some(verdict);
            }
            GossipMessage::Release(r) => records.push((i, *source, CatalogRecord::Release(r))),
            GossipMessage::Yank(r) => records.push((i, *source, CatalogRecord::Yank(r))),
            GossipMessage::Rotation(r) => records.push((i, *source, CatalogRecord::Rotation(r))),
            GossipMessage::Unyank(r) => records.push((i, *source, CatalogRecord::Unyank(r))),
        }
    }
    if !records.is_empty() {
        for (i, verdict) in admit_gossip(registry, records).await {
            verdicts[i] = Some(verdict);
        }
    }
    let stats = &registry.stats;
    for (((source, id, _), verdict), span) in batch.into_iter().zip(verdicts).zip(spans) {
        let verdict = verdict.unwrap_or(MessageAcceptance::Ignore);
        span.record("outcome", format!("{verdict:?}").to_lowercase());
        Registry::count(match verdict {
            MessageAcceptance::Accept => &stats.gossip_accepted,
            MessageAcceptance::Reject => &stats.gossip_rejected,
            MessageAcceptance::Ignore => &stats.gossip_ignored,
        });
        registry
            .network()
            .report_validation(id, source, verdict)
            .await?;
    }
    Ok(())
}

/// Admits gossiped records (message index, source, record) on a blocking thread, in one
/// durable write, and returns each message's verdict as soon as the trust rules have decided:
/// forwarding does not wait for the disk. The write and the index update go on in that thread;
/// a failure there is logged (nothing is acknowledged to anyone, and sync brings the records
/// again). A record is charged to its key's budget only once its signature holds and only if
/// this node neither holds nor refused it (relays of what it has cost nothing).
async fn admit_gossip(
    registry: &Arc<Registry>,
    records: Vec<(usize, PeerId, CatalogRecord)>,
) -> Vec<(usize, MessageAcceptance)> {
    let reg = registry.clone();
    let (tx, decision) = oneshot::channel();
    let task = tokio::task::spawn_blocking(move || {
        let now = std::time::Instant::now();
        let mut verdicts = Vec::with_capacity(records.len());
        let mut taken: HashMap<RecordId, usize> = HashMap::new();
        let mut admit = Vec::new();
        for (i, source, record) in records {
            let id = record.id();
            if reg.catalog.view().knows(&id) || taken.contains_key(&id) {
                verdicts.push((i, MessageAcceptance::Ignore));
                continue;
            }
            if let Err(e) = record.verify() {
                verdicts.push((i, reject(source, &e)));
                continue;
            }
            let new_name = !reg.catalog.view().exists(record.name());
            if !lock(&reg.publishers).take(*record.signer(), new_name, now) {
                Registry::count(&reg.stats.publisher_over_budget);
                debug!(%source, signer = %record.signer(), "ignoring gossip: its key is over its budget");
                verdicts.push((i, MessageAcceptance::Ignore));
                continue;
            }
            taken.insert(id, i);
            admit.push((i, source, record));
        }
        let sources: HashMap<usize, PeerId> = admit.iter().map(|(i, s, _)| (*i, *s)).collect();
        let mut tx = Some((tx, verdicts));
        let result = reg
            .catalog
            .ingest_durable(
                admit.into_iter().map(|(_, _, r)| r).collect(),
                true,
                |out| {
                    let Some((tx, mut verdicts)) = tx.take() else {
                        return;
                    };
                    for (id, ingested) in out {
                        let i = taken[id];
                        let verdict = match ingested {
                            Ingested::Added(_) => MessageAcceptance::Accept,
                            Ingested::Duplicate | Ingested::RefusedBefore => {
                                MessageAcceptance::Ignore
                            }
                            Ingested::Refused(e) => ignore(sources[&i], e),
                            Ingested::Invalid(e) => reject(sources[&i], e),
                        };
                        verdicts.push((i, verdict));
                    }
                    let _ = tx.send(verdicts);
                },
            )
            .and_then(|(_, ticket)| reg.catalog.flush_index(ticket));
        // Nothing to admit: the callback never ran.
        if let Some((tx, verdicts)) = tx.take() {
            let _ = tx.send(verdicts);
        }
        if let Err(e) = result {
            warn!(error = %e, "gossiped records were not stored");
        }
    });
    match decision.await {
        Ok(verdicts) => verdicts,
        // Dropped undecided: the task failed before the trust rules ruled.
        Err(_) => {
            if let Err(e) = task.await {
                warn!(error = %e, "gossip admission task failed");
            }
            Vec::new()
        }
    }
}

/// Decides on one gossiped package head.
async fn head_verdict(
    registry: &Arc<Registry>,
    source: PeerId,
    head: PackageHead,
) -> MessageAcceptance {
    match admit_head(registry, head, false, true).await {
        Ok(Some(true)) => MessageAcceptance::Accept,
        Err(RegistryError::Record(e)) => reject(source, &e),
        Ok(Some(false)) => MessageAcceptance::Ignore,
        Ok(None) => {
            debug!(%source, "ignoring a gossiped head: its key is over its budget");
            MessageAcceptance::Ignore
        }
        Err(RegistryError::Trust(e)) => ignore(source, &e),
        Err(e) => {
            warn!(error = %e, "cannot admit a gossiped head");
            MessageAcceptance::Ignore
        }
    }
}

/// Rejects a gossip message (which costs its sender gossip score), saying why in the log.
fn reject(source: PeerId, why: &dyn std::fmt::Display) -> MessageAcceptance {
    debug!(%source, error = %why, "rejecting gossip");
    MessageAcceptance::Reject
}

/// Neither forwards nor punishes a valid gossip message this node does not take.
fn ignore(source: PeerId, why: &TrustError) -> MessageAcceptance {
    debug!(%source, reason = %why, "ignoring gossip");
    MessageAcceptance::Ignore
}

async fn handle(registry: &Arc<Registry>, event: NetworkEvent) -> Result<(), NetworkError> {
    let net = registry.network();
    let stats = &registry.stats;
    match event {
        NetworkEvent::Gossip { source, id, data } => {
            gossip(registry, vec![(source, id, data)]).await
        }
        NetworkEvent::InboundRecord { source, record } => {
            let accepted = match dht::validate(record.key.as_ref(), &record.value) {
                Ok(DhtValue::Release(r)) => {
                    match admit(registry, CatalogRecord::Release(r), true).await {
                        Ok(Ingested::Added(_) | Ingested::Duplicate) => Ok(()),
                        Ok(Ingested::Refused(e)) => Err(e.to_string()),
                        Ok(Ingested::Invalid(e)) => Err(e.to_string()),
                        Ok(Ingested::RefusedBefore) => Err("refused before".into()),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Ok(DhtValue::Head(h)) => admit_head(registry, h, true, false)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match accepted {
                Ok(()) => {
                    Registry::count(&stats.records_stored);
                    net.store_record(record).await
                }
                Err(why) => {
                    debug!(%source, error = %why, "refusing an inbound DHT record");
                    Registry::count(&stats.records_refused);
                    Ok(())
                }
            }
        }
        NetworkEvent::FetchRequest { peer, id, request } => {
            let reg = registry.clone();
            tokio::spawn(async move {
                let r = reg.clone();
                let response = tokio::task::spawn_blocking(move || r.chunk(peer, &request))
                    .await
                    .map_or(FetchResponse::Refused(Refusal::Busy), |res| match res {
                        Ok(data) => FetchResponse::Chunk(data.into()),
                        Err(why) => FetchResponse::Refused(why),
                    });
                let _ = reg.network().respond_fetch(id, response).await;
            });
            Ok(())
        }
        NetworkEvent::HaveRequest { peer, id, request } => {
            let response = registry.have(peer, &request);
            net.respond_have(id, response).await
        }
        NetworkEvent::SyncRequest { id, request, .. } => {
            let reg = registry.clone();
            tokio::spawn(async move {
                let r = reg.clone();
                let response = tokio::task::spawn_blocking(move || answer_sync(&r, request))
                    .await
                    .unwrap_or(SyncResponse::Refused(Refusal::Busy));
                let _ = reg.network().respond_sync(id, response).await;
            });
            Ok(())
        }
        NetworkEvent::PeerConnected { peer } => {
            let reg = registry.clone();
            tokio::spawn(async move {
                if let Err(e) = super::sync::sync_with(&reg, peer).await {
                    debug!(%peer, error = %e, "sync on connect failed");
                }
            });
            Ok(())
        }
        NetworkEvent::PingRtt { peer, rtt } => {
            registry.observe_rtt(peer, rtt.as_secs_f64() * 1000.0);
            Ok(())
        }
        NetworkEvent::PeerDisconnected { .. } => Ok(()),
    }
}

/// The answering side of catalog sync. Blocking (reads records from disk).
fn answer_sync(registry: &Registry, request: SyncRequest) -> SyncResponse {
    match request {
        SyncRequest::Summary => SyncResponse::Summary {
            buckets: registry.catalog.view().summary(),
        },
        SyncRequest::Buckets { buckets } => SyncResponse::Ids {
            ids: registry
                .catalog
                .view()
                .ids_in(&buckets, MAX_SYNC_LISTED_IDS),
        },
        SyncRequest::Records { ids } => {
            let Ok(found) = registry.catalog.records(&ids) else {
                return SyncResponse::Refused(Refusal::Busy);
            };
            // Stay under the response limit (with room for the framing bytes).
            let mut budget = MAX_SYNC_RESPONSE_BYTES - 64;
            let records: Vec<CatalogRecord> = found
                .into_iter()
                .take(MAX_SYNC_RECORDS)
                .take_while(|r| {
                    let len = encode_body(r).len();
                    let fits = len < budget;
                    budget = budget.saturating_sub(len);
                    fits
                })
                .collect();
            SyncResponse::Records { records }
        }
    }
}
