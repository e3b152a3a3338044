//! Decides on inbound network events: verifies gossip before it is forwarded, stores only
//! valid DHT records, and answers sync and fetch requests. Runs in its own task so that the
//! event loop never waits on it.

use std::sync::Arc;

use agora_protocol::codec::encode_body;
use agora_protocol::dht;
use agora_protocol::limits::{MAX_SYNC_LISTED_IDS, MAX_SYNC_RECORDS, MAX_SYNC_RESPONSE_BYTES};
use agora_protocol::messages::{FetchResponse, GossipMessage, SyncRequest, SyncResponse};
use agora_protocol::records::CatalogRecord;
use libp2p::gossipsub::MessageAcceptance;
use tokio::sync::mpsc;
use tracing::debug;

use super::Registry;
use crate::network::NetworkEvent;

/// Handles events until the network's event channel closes.
pub async fn run(registry: Arc<Registry>, mut events: mpsc::Receiver<NetworkEvent>) {
    while let Some(event) = events.recv().await {
        if let Err(e) = handle(&registry, event).await {
            debug!(error = %e, "network is gone; inbound handler stops");
            break;
        }
    }
}

async fn handle(
    registry: &Registry,
    event: NetworkEvent,
) -> Result<(), crate::network::NetworkError> {
    let net = registry.network();
    let stats = &registry.stats;
    match event {
        NetworkEvent::Gossip { source, id, data } => {
            let verdict = match GossipMessage::decode_verified(&data) {
                Ok(msg) => {
                    let fresh = match msg {
                        GossipMessage::Release(r) => registry.insert(CatalogRecord::Release(r)),
                        GossipMessage::Yank(r) => registry.insert(CatalogRecord::Yank(r)),
                        GossipMessage::Rotation(r) => registry.insert(CatalogRecord::Rotation(r)),
                        // Heads are DHT state, not catalog entries; a valid one is passed on.
                        GossipMessage::Head(_) => true,
                    };
                    if fresh {
                        MessageAcceptance::Accept
                    } else {
                        MessageAcceptance::Ignore
                    }
                }
                Err(e) => {
                    debug!(%source, error = %e, "rejecting gossip");
                    MessageAcceptance::Reject
                }
            };
            Registry::count(match verdict {
                MessageAcceptance::Accept => &stats.gossip_accepted,
                MessageAcceptance::Reject => &stats.gossip_rejected,
                MessageAcceptance::Ignore => &stats.gossip_ignored,
            });
            net.report_validation(id, source, verdict).await
        }
        NetworkEvent::InboundRecord { source, record } => {
            match dht::validate(record.key.as_ref(), &record.value) {
                Ok(_) => {
                    Registry::count(&stats.records_stored);
                    net.store_record(record).await
                }
                Err(e) => {
                    debug!(%source, error = %e, "refusing an inbound DHT record");
                    Registry::count(&stats.records_refused);
                    Ok(())
                }
            }
        }
        NetworkEvent::FetchRequest { id, request, .. } => {
            let response = match registry.chunk(&request.content, request.index) {
                Ok(data) => {
                    Registry::count(&stats.chunks_served);
                    FetchResponse::Chunk(serde_bytes::ByteBuf::from(data))
                }
                Err(why) => FetchResponse::Refused(why),
            };
            net.respond_fetch(id, response).await
        }
        NetworkEvent::SyncRequest { id, request, .. } => {
            let response = match request {
                SyncRequest::Summary => SyncResponse::Summary {
                    buckets: registry.summary(),
                },
                SyncRequest::Buckets { buckets } => {
                    let mut ids = registry.ids_in(&buckets);
                    ids.truncate(MAX_SYNC_LISTED_IDS);
                    SyncResponse::Ids { ids }
                }
                SyncRequest::Records { ids } => {
                    // Stay under the response limit (with room for the framing bytes).
                    let mut budget = MAX_SYNC_RESPONSE_BYTES - 64;
                    let records: Vec<CatalogRecord> = registry
                        .records(&ids)
                        .into_iter()
                        .take(MAX_SYNC_RECORDS)
                        .take_while(|r| {
                            let len = encode_body(r).len();
                            budget = budget.saturating_sub(len);
                            budget > 0
                        })
                        .collect();
                    SyncResponse::Records { records }
                }
            };
            net.respond_sync(id, response).await
        }
        NetworkEvent::PeerConnected { .. }
        | NetworkEvent::PeerDisconnected { .. }
        | NetworkEvent::PingRtt { .. } => Ok(()),
    }
}
