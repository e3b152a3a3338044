//! Decides on inbound network events: admits gossip before it is forwarded, stores only valid
//! DHT records that pass the trust rules, answers sync and fetch requests, starts a catalog
//! sync with every new peer, and feeds ping times to reputation. Runs in its own task so that
//! the event loop never waits on it; disk work goes to blocking threads, and requests are
//! answered from their own tasks so one slow read does not hold up the rest.

use std::sync::Arc;

use agora_protocol::codec::{Wire, encode_body};
use agora_protocol::dht::{self, DhtValue};
use agora_protocol::limits::{MAX_SYNC_LISTED_IDS, MAX_SYNC_RECORDS, MAX_SYNC_RESPONSE_BYTES};
use agora_protocol::messages::{FetchResponse, GossipMessage, Refusal, SyncRequest, SyncResponse};
use agora_protocol::records::{CatalogRecord, PackageHead};
use libp2p::PeerId;
use libp2p::gossipsub::MessageAcceptance;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info_span, warn};

use super::trust::TrustError;
use super::{Ingested, Registry, RegistryError};
use crate::network::{NetworkError, NetworkEvent};

/// Handles events until the network's event channel closes.
pub async fn run(registry: Arc<Registry>, mut events: mpsc::Receiver<NetworkEvent>) {
    while let Some(event) = events.recv().await {
        if let Err(e) = handle(&registry, event).await {
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
            Ok(Err(e)) => Err(e),
            Err(e) => Err(RegistryError::Internal(format!("ingest task: {e}"))),
        },
    }
}

/// Admits a head on a blocking thread (it is persisted when accepted), checking its signature
/// there first unless `verified`.
async fn admit_head(
    registry: &Arc<Registry>,
    head: PackageHead,
    verified: bool,
) -> Result<bool, RegistryError> {
    let reg = registry.clone();
    tokio::task::spawn_blocking(move || {
        if !verified {
            head.verify()?;
        }
        reg.catalog.admit_head(&head)
    })
    .await
    .map_err(|e| RegistryError::Internal(format!("head task: {e}")))?
}

/// Decides on one gossip message: admit what is new and valid; reject what is invalid (it
/// does not decode, breaks a limit or is not signed by its signer), which costs the sender
/// gossip score; ignore the rest. A valid record this node's rules refuse (another owner as
/// this node sees the name, a key not on its allowlist, a version below what it holds) may
/// be accepted by the honest peer that relayed it: punishing the relay would cut this node off
/// from its neighbours for its own policy.
async fn gossip_verdict(
    registry: &Arc<Registry>,
    source: PeerId,
    data: &[u8],
) -> MessageAcceptance {
    let msg = match GossipMessage::from_wire(data) {
        Ok(m) => m,
        Err(e) => return reject(source, &e),
    };
    tracing::Span::current().record("package", msg.name().as_str());
    let record = match msg {
        GossipMessage::Head(head) => return head_verdict(registry, source, head).await,
        GossipMessage::Release(r) => CatalogRecord::Release(r),
        GossipMessage::Yank(r) => CatalogRecord::Yank(r),
        GossipMessage::Rotation(r) => CatalogRecord::Rotation(r),
    };
    match admit(registry, record, false).await {
        Ok(Ingested::Added(_)) => MessageAcceptance::Accept,
        Ok(Ingested::Duplicate | Ingested::RefusedBefore) => MessageAcceptance::Ignore,
        Ok(Ingested::Refused(e)) => ignore(source, &e),
        Ok(Ingested::Invalid(e)) => reject(source, &e),
        Err(e) => {
            warn!(error = %e, "cannot admit gossip");
            MessageAcceptance::Ignore
        }
    }
}

/// Decides on one gossiped package head.
async fn head_verdict(
    registry: &Arc<Registry>,
    source: PeerId,
    head: PackageHead,
) -> MessageAcceptance {
    match admit_head(registry, head, false).await {
        Ok(true) => MessageAcceptance::Accept,
        Err(RegistryError::Record(e)) => reject(source, &e),
        Ok(false) => MessageAcceptance::Ignore,
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
            let span = info_span!(
                "gossip.validate",
                %source,
                bytes = data.len(),
                package = tracing::field::Empty,
                outcome = tracing::field::Empty,
            );
            let verdict = gossip_verdict(registry, source, &data)
                .instrument(span.clone())
                .await;
            span.record("outcome", format!("{verdict:?}").to_lowercase());
            Registry::count(match verdict {
                MessageAcceptance::Accept => &stats.gossip_accepted,
                MessageAcceptance::Reject => &stats.gossip_rejected,
                MessageAcceptance::Ignore => &stats.gossip_ignored,
            });
            net.report_validation(id, source, verdict).await
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
                Ok(DhtValue::Head(h)) => admit_head(registry, h, true)
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
        NetworkEvent::FetchRequest { id, request, .. } => {
            let reg = registry.clone();
            tokio::spawn(async move {
                let r = reg.clone();
                let response = tokio::task::spawn_blocking(move || r.chunk(&request))
                    .await
                    .map_or(FetchResponse::Refused(Refusal::Busy), |res| match res {
                        Ok(data) => FetchResponse::Chunk(data.into()),
                        Err(why) => FetchResponse::Refused(why),
                    });
                let _ = reg.network().respond_fetch(id, response).await;
            });
            Ok(())
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
            buckets: registry.catalog.summary(),
        },
        SyncRequest::Buckets { buckets } => SyncResponse::Ids {
            ids: registry.catalog.ids_in(&buckets, MAX_SYNC_LISTED_IDS),
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
