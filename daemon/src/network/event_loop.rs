//! The event loop: the one task that owns the libp2p `Swarm`.
//!
//! It runs a single `tokio::select!` over swarm events, commands from `NetworkHandle`s and a
//! maintenance tick. It must never block or wait on slow work: no disk I/O, no awaiting a
//! full channel (inbound events are offered with `try_send`, and load is shed when the
//! registry falls behind). Replies to commands go through oneshot channels kept in maps
//! keyed by the ids libp2p returns; ids we never created (republish, periodic bootstrap)
//! are normal and only logged. Nothing that came from the network is unwrapped here.
//!
//! This file is the loop itself and its upkeep (maintenance, keeping peers, gauges);
//! `commands.rs` answers commands and `events.rs` handles what the swarm reports.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use agora_protocol::codec::Wire;
use agora_protocol::dht::{self, DhtKey};
use agora_protocol::limits::MAX_DHT_VALUE_BYTES;
use agora_protocol::messages::{FetchResponse, HaveResponse, KAD_PROTOCOL, Refusal, SyncResponse};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::kad::{self, GetProvidersOk, GetRecordOk, QueryId, QueryResult};
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, mdns, ping};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{Span, debug, info, info_span, trace, warn};

use super::behaviour::{Behaviour, BehaviourEvent, topic};
use super::budget::{Budget, GossipBudget, MAX_GOSSIP_PEERS, OpenRequests, UploadSlots};
use super::codec::WireCodec;
use super::command::{Command, Envelope, NetworkError, NetworkEvent, NetworkInfo, Reply};
use super::query::{self, ProviderCap, RecordLookup};
use super::settings::NetworkConfig;
use crate::obs::metrics::Metrics;
use rand::seq::SliceRandom;

mod commands;
mod events;
mod nat;

pub use nat::Reachability;

/// Most commands handled between two polls of the swarm.
const COMMAND_BATCH: usize = 64;
/// How long a peer's chunk request must have been open to count as queued: far longer than
/// an answer takes to leave over a fast link, far shorter than a megabyte over a slow one.
const QUEUED: Duration = Duration::from_millis(100);
/// Chunk answers written at once (see [`UploadSlots`]). With fewer, a peer that reads slowly
/// (its own link shared by many senders) holds back the whole upload; with more, each answer
/// gets so small a share of the link that chunks spread through a crowd slowly.
const UPLOAD_SLOTS: usize = 4;

/// How long an answer holds its upload slot at most (see [`UploadSlots`]): four 1 MiB
/// answers over a 20 Mbit/s link take about that long.
const UPLOAD_STALL: Duration = Duration::from_secs(2);

/// A chunk answer waiting for an upload slot.
type Upload = (ResponseChannel<FetchResponse>, FetchResponse);

struct PendingGet {
    lookup: RecordLookup,
    reply: Reply<Vec<Vec<u8>>>,
}

/// A running provider search: the providers it has sent, and where it sends them.
struct ProviderSearch {
    sent: ProviderCap,
    to: mpsc::Sender<PeerId>,
}

/// A query's grace period: resolves to its id when the period is over.
type Grace = Pin<Box<dyn Future<Output = QueryId> + Send>>;

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    /// How long a query that collects several answers keeps collecting after its first one.
    query_grace: Duration,
    /// How often housekeeping runs (dead response channels, gauges, topping up peers).
    maintenance_interval: Duration,
    /// Connections the loop keeps up by dialing peers from the routing table.
    target_peers: usize,
    graces: FuturesUnordered<Grace>,
    commands: mpsc::Receiver<Envelope>,
    events: mpsc::Sender<NetworkEvent>,
    metrics: Arc<Metrics>,
    /// The span of each DHT query we started; it ends (and is exported) with the query.
    query_spans: HashMap<QueryId, Span>,
    pending_listen: HashMap<ListenerId, (Multiaddr, Reply<Multiaddr>)>,
    pending_dial: HashMap<ConnectionId, (Multiaddr, Reply<PeerId>)>,
    pending_query: HashMap<QueryId, Reply<()>>,
    pending_get: HashMap<QueryId, PendingGet>,
    pending_providers: HashMap<QueryId, ProviderSearch>,
    sync: Exchanges<SyncResponse>,
    fetch: Exchanges<FetchResponse>,
    /// `fetch`'s inbound requests open for [`QUEUED`] or longer, for the handle's
    /// `uploads_queued`.
    uploads: Arc<AtomicUsize>,
    upload_slots: UploadSlots<InboundRequestId, Upload>,
    have: Exchanges<HaveResponse>,
    gossip_budget: GossipBudget,
    /// Each open connection's endpoint (its remote address judges the addresses its peer lists,
    /// and whether this node dialed it).
    remotes: HashMap<ConnectionId, libp2p::core::ConnectedPoint>,
    /// Each connected peer's open connections.
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    nat: nat::Nat,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        config: &NetworkConfig,
        commands: mpsc::Receiver<Envelope>,
        events: mpsc::Sender<NetworkEvent>,
        metrics: Arc<Metrics>,
        uploads: Arc<AtomicUsize>,
    ) -> Self {
        let nat = nat::Nat::declared(&swarm);
        Self {
            swarm,
            query_grace: config.query_grace,
            maintenance_interval: config.maintenance_interval,
            target_peers: config.target_peers,
            graces: FuturesUnordered::new(),
            commands,
            events,
            metrics,
            query_spans: HashMap::new(),
            pending_listen: HashMap::new(),
            pending_dial: HashMap::new(),
            pending_query: HashMap::new(),
            pending_get: HashMap::new(),
            pending_providers: HashMap::new(),
            sync: Exchanges::new(config.sync_budget),
            fetch: Exchanges::new(config.fetch_budget),
            uploads,
            upload_slots: UploadSlots::new(UPLOAD_SLOTS, UPLOAD_STALL),
            have: Exchanges::new(config.have_budget),
            gossip_budget: GossipBudget::new(config.gossip_rate, MAX_GOSSIP_PEERS),
            remotes: HashMap::new(),
            connections: HashMap::new(),
            nat,
        }
    }

    /// Runs until a `Shutdown` command arrives or every handle is dropped.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.maintenance_interval);
        let mut stalls = tokio::time::interval(UPLOAD_STALL / 4);
        stalls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(COMMAND_BATCH);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                n = self.commands.recv_many(&mut batch, COMMAND_BATCH) => {
                    if n == 0 {
                        self.shutdown();
                        break;
                    }
                    if self.on_commands(&mut batch) {
                        break;
                    }
                }
                Some(id) = self.graces.next(), if !self.graces.is_empty() => self.grace_over(id),
                _ = tick.tick() => self.maintain(),
                _ = stalls.tick() => self.uploads_stalled(),
            }
        }
        info!(peer = %self.swarm.local_peer_id(), "network event loop stopped");
    }

    /// Handles the commands that were waiting (taken in one go, so a burst costs one swarm
    /// poll rather than one each); true once a `Shutdown` has been handled.
    fn on_commands(&mut self, batch: &mut Vec<Envelope>) -> bool {
        for Envelope { command, span } in batch.drain(..) {
            if let Command::Shutdown { reply } = command {
                self.shutdown();
                let _ = reply.send(Ok(()));
                return true;
            }
            self.on_command(command, &span);
        }
        false
    }

    fn shutdown(&mut self) {
        // Refuse new work; pending replies are dropped with the loop, which callers see as
        // `NetworkError::Shutdown`. Listeners close when the swarm is dropped.
        self.commands.close();
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn maintain(&mut self) {
        self.sync.inbound.retain(|_, ch| ch.is_open());
        self.fetch.inbound.retain(|_, ch| ch.is_open());
        self.have.inbound.retain(|_, ch| ch.is_open());
        let abandoned: Vec<QueryId> = self
            .pending_providers
            .iter()
            .filter(|(_, search)| search.to.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            self.end_provider_search(id);
        }
        self.update_gauges();
        self.keep_peers();
        trace!(
            peers = self.swarm.connected_peers().count(),
            queries =
                self.pending_query.len() + self.pending_get.len() + self.pending_providers.len(),
            "network maintenance"
        );
    }

    /// Below `target_peers` connections, dials routing-table peers it is not connected to
    /// (a random few, at most the shortfall). Dials of blocked or unreachable peers fail on
    /// their own; the next tick tries others.
    fn keep_peers(&mut self) {
        let connected = self.swarm.connected_peers().count();
        let Some(shortfall) = self.target_peers.checked_sub(connected).filter(|n| *n > 0) else {
            return;
        };
        let known: Vec<PeerId> = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .flat_map(|bucket| {
                bucket
                    .iter()
                    .map(|entry| *entry.node.key.preimage())
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut unconnected: Vec<PeerId> = known
            .into_iter()
            .filter(|p| !self.swarm.is_connected(p))
            .collect();
        if unconnected.is_empty() {
            return;
        }
        let picked: Vec<PeerId> = unconnected
            .partial_shuffle(&mut rand::rng(), shortfall)
            .0
            .to_vec();
        debug!(connected, dialing = picked.len(), "topping up connections");
        for peer in picked {
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                trace!(%peer, error = %e, "not dialing a routing-table peer");
            }
        }
    }

    /// Offers an event to the registry without waiting; false if the channel is full.
    fn offer(&self, event: NetworkEvent) -> bool {
        events::offer(&self.events, event)
    }

    fn update_gauges(&mut self) {
        let peers = self.swarm.connected_peers().count();
        let table: usize = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        self.metrics.peers.set(peers as i64);
        self.metrics.routing_table.set(table as i64);
        let records = self.swarm.behaviour_mut().kad.store_mut().len();
        self.metrics.dht_records.set(records as i64);
    }

    /// Opens the span of a DHT query, as a child of the span that asked for it.
    fn trace_query(&mut self, id: QueryId, kind: &'static str, key: &[u8], parent: &Span) {
        let span = info_span!(
            parent: parent,
            "dht.query",
            kind,
            query_id = ?id,
            key = %String::from_utf8_lossy(key),
            outcome = tracing::field::Empty,
            records = tracing::field::Empty,
        );
        self.query_spans.insert(id, span);
    }
}

/// The grace period of a query that has just had its first answer.
fn grace(period: Duration, id: QueryId) -> Grace {
    Box::pin(async move {
        tokio::time::sleep(period).await;
        id
    })
}

/// One request-response protocol's open exchanges: our requests awaiting a response, and
/// peers' requests awaiting the registry's answer.
struct Exchanges<Resp> {
    pending: HashMap<OutboundRequestId, Reply<Resp>>,
    inbound: HashMap<InboundRequestId, ResponseChannel<Resp>>,
    /// Peers' requests from arrival until their response is written or fails.
    open: OpenRequests<InboundRequestId>,
}

impl<Resp> Exchanges<Resp> {
    fn new(budget: Budget) -> Self {
        Self {
            pending: HashMap::new(),
            inbound: HashMap::new(),
            open: OpenRequests::new(budget),
        }
    }
}
