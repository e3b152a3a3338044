//! What flows between the event loop and the rest of the daemon: commands in (each with a
//! oneshot reply), inbound events out, and the typed errors a handle call can return.

use std::time::Duration;

use agora_protocol::messages::{
    FetchRequest, FetchResponse, HaveRequest, HaveResponse, SyncRequest, SyncResponse,
};
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::request_response::InboundRequestId;
use libp2p::{Multiaddr, PeerId, kad};
use tokio::sync::{mpsc, oneshot};

/// A failure of a network operation. Each variant is something a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("the network event loop has shut down")]
    Shutdown,
    #[error("no answer from the network within {0:?}")]
    Timeout(Duration),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("cannot dial {addr}: {reason}")]
    Dial { addr: String, reason: String },
    #[error("no known peers: connect to a bootstrap peer first")]
    NoKnownPeers,
    #[error("DHT query failed: {0}")]
    Query(String),
    #[error("no valid record found in the DHT")]
    NotFound,
    #[error("no peer is subscribed to the release topic yet")]
    NoGossipPeers,
    #[error("gossip publish failed: {0}")]
    Publish(String),
    #[error("request to {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    #[error("{peer} does not speak the protocol asked for")]
    Unsupported { peer: PeerId },
    #[error("local DHT store refused the record: {0}")]
    Store(String),
}

/// How many valid records a `get_record` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordQuorum {
    /// Answer with the first valid record and stop the query (immutable records).
    First,
    /// Collect every valid record until the query ends (mutable records: pick the best).
    All,
}

/// A snapshot of the swarm's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    pub peer_id: PeerId,
    /// Whether peers can dial this node (else it is reached through its relays).
    pub reachability: super::Reachability,
    /// The remote address of each connection, by peer.
    pub peer_addrs: std::collections::HashMap<PeerId, Vec<Multiaddr>>,
    pub listen_addrs: Vec<Multiaddr>,
    pub external_addrs: Vec<Multiaddr>,
    pub connected_peers: Vec<PeerId>,
    /// Established connections others opened to us (bounded by `max_established_incoming`).
    pub incoming_connections: u32,
    pub routing_table_size: usize,
    pub gossip_mesh_peers: usize,
    pub gossip_topic_peers: usize,
    /// Peers' sync and fetch requests being worked on or answered now (see
    /// [`NetworkConfig::sync_budget`](super::NetworkConfig::sync_budget)).
    pub inbound_syncs_open: usize,
    pub inbound_fetches_open: usize,
}

impl NetworkInfo {
    /// Whether every open connection to `peer` goes through a relay (no direct one could be
    /// made yet).
    pub fn only_relayed(&self, peer: &PeerId) -> bool {
        self.peer_addrs
            .get(peer)
            .is_some_and(|addrs| !addrs.is_empty() && addrs.iter().all(super::is_relayed))
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, NetworkError>>;

/// A command with the span of the code that sent it, so work the event loop starts for it
/// (a DHT query) is traced as part of the caller's operation.
#[derive(Debug)]
pub struct Envelope {
    pub command: Command,
    pub span: tracing::Span,
}

/// A request to the event loop.
#[derive(Debug)]
pub enum Command {
    Listen {
        addr: Multiaddr,
        reply: Reply<Multiaddr>,
    },
    Dial {
        addr: Multiaddr,
        reply: Reply<PeerId>,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
        reply: Reply<()>,
    },
    Bootstrap {
        reply: Reply<()>,
    },
    PutRecord {
        key: Vec<u8>,
        value: Vec<u8>,
        reply: Reply<()>,
    },
    GetRecord {
        key: Vec<u8>,
        quorum: RecordQuorum,
        reply: Reply<Vec<Vec<u8>>>,
    },
    /// Put records into the local DHT store only (nothing is sent to peers); answers with
    /// the position in `records` and the reason of each one refused.
    StoreRecords {
        records: Vec<kad::Record>,
        reply: Reply<Vec<(usize, NetworkError)>>,
    },
    StartProviding {
        key: Vec<u8>,
        reply: Reply<()>,
    },
    /// Stop announcing ourselves as a provider of `key` (the blob was evicted).
    StopProviding {
        key: Vec<u8>,
        reply: Reply<()>,
    },
    /// Search the DHT for providers of `key`, sending each on `to` as it is found (at most
    /// `MAX_PROVIDERS_PER_GET`, the channel's capacity); `to` closes when the search ends.
    FindProviders {
        key: Vec<u8>,
        to: mpsc::Sender<PeerId>,
    },
    Publish {
        data: Vec<u8>,
        reply: Reply<()>,
    },
    ReportValidation {
        id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    },
    SendSync {
        peer: PeerId,
        request: SyncRequest,
        reply: Reply<SyncResponse>,
    },
    SendFetch {
        peer: PeerId,
        request: FetchRequest,
        reply: Reply<FetchResponse>,
    },
    SendHave {
        peer: PeerId,
        request: HaveRequest,
        reply: Reply<HaveResponse>,
    },
    RespondSync {
        id: InboundRequestId,
        response: SyncResponse,
    },
    RespondHave {
        id: InboundRequestId,
        response: HaveResponse,
    },
    RespondFetch {
        id: InboundRequestId,
        response: FetchResponse,
    },
    Info {
        reply: Reply<NetworkInfo>,
    },
    GossipScore {
        peer: PeerId,
        reply: Reply<Option<f64>>,
    },
    /// Blocks (closing its connections) or unblocks a peer.
    Block {
        peer: PeerId,
        blocked: bool,
        reply: Reply<()>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

/// Something from the network that the registry decides on or wants to know.
#[derive(Debug)]
pub enum NetworkEvent {
    /// A gossip message awaiting validation: answer with `report_validation`.
    Gossip {
        source: PeerId,
        id: MessageId,
        data: Vec<u8>,
    },
    /// A peer asked us to store a DHT record: answer with `store_record` if it is good.
    InboundRecord {
        source: PeerId,
        record: kad::Record,
    },
    /// A sync request: answer with `respond_sync`.
    SyncRequest {
        peer: PeerId,
        id: InboundRequestId,
        request: SyncRequest,
    },
    /// A fetch request: answer with `respond_fetch`.
    FetchRequest {
        peer: PeerId,
        id: InboundRequestId,
        request: FetchRequest,
    },
    /// A have request: answer with `respond_have`.
    HaveRequest {
        peer: PeerId,
        id: InboundRequestId,
        request: HaveRequest,
    },
    PeerConnected {
        peer: PeerId,
    },
    PeerDisconnected {
        peer: PeerId,
    },
    /// Round-trip time measured by ping.
    PingRtt {
        peer: PeerId,
        rtt: Duration,
    },
}
