//! The composed libp2p behaviour: Kademlia, Gossipsub, Identify, Ping, the sync and fetch
//! request-response protocols, connection limits, a list of blocked peers, optional mDNS, and
//! what crosses NATs: AutoNAT v2 (both sides), circuit relay v2 (serving, and reserving slots
//! as a client) and DCUtR (hole punching a relayed connection into a direct one).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use agora_protocol::limits::{MAX_DHT_VALUE_BYTES, MAX_GOSSIP_BYTES, MAX_KAD_PACKET_BYTES};
use agora_protocol::messages::{
    FETCH_PROTOCOL, FetchRequest, FetchResponse, GOSSIP_TOPIC, HAVE_PROTOCOL, HaveRequest,
    HaveResponse, KAD_PROTOCOL, SYNC_PROTOCOL, SyncRequest, SyncResponse,
};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify, kad,
    mdns, ping, relay, request_response,
};

use super::codec::WireCodec;
use super::record_store::DhtStore;
use super::settings::NetworkConfig;

/// Identify protocol version string; peers with another one are still talked to, but only
/// peers that speak our Kademlia protocol enter the routing table.
pub const IDENTIFY_PROTOCOL: &str = "/agora/id/1.0.0";
/// Most records the in-memory DHT store keeps (heads and releases of the whole catalog).
const MAX_DHT_RECORDS: usize = 1_000_000;
/// Most provider records per key; more than this many providers add nothing to a fetch.
const MAX_PROVIDERS_PER_KEY: usize = 32;
/// Most keys this node provides itself.
const MAX_PROVIDED_KEYS: usize = 1_000_000;
/// Room for gossipsub's own framing (signature, key, sequence number, topic) around our data.
const GOSSIP_FRAMING_BYTES: usize = 4096;

pub type SyncBehaviour = request_response::Behaviour<WireCodec<SyncRequest, SyncResponse>>;
pub type FetchBehaviour = request_response::Behaviour<WireCodec<FetchRequest, FetchResponse>>;
pub type HaveBehaviour = request_response::Behaviour<WireCodec<HaveRequest, HaveResponse>>;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Peers no connection is allowed with, either way (existing ones are closed).
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub limits: connection_limits::Behaviour,
    pub kad: kad::Behaviour<DhtStore>,
    pub gossipsub: gossipsub::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub sync: SyncBehaviour,
    pub fetch: FetchBehaviour,
    /// Which chunks of an archive a peer holds, while fetches are under way.
    pub have: HaveBehaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Serving as a relay for peers behind NATs (with the limits of [`relay_config`]).
    pub relay: relay::Behaviour,
    /// Reserving slots on relays, and dialing peers through them.
    pub relay_client: relay::client::Behaviour,
    pub dcutr: dcutr::Behaviour,
    /// Asking peers to dial our observed addresses back (are we reachable?).
    pub autonat: autonat::v2::client::Behaviour,
    /// Dialing back the addresses peers ask us to test.
    pub autonat_server: autonat::v2::server::Behaviour,
}

/// The gossip topic.
pub fn topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(GOSSIP_TOPIC)
}

impl Behaviour {
    pub fn new(
        key: &libp2p::identity::Keypair,
        relay_client: relay::client::Behaviour,
        cfg: &NetworkConfig,
        metrics: &mut prometheus_client::registry::Registry,
    ) -> Result<Self, String> {
        let peer_id = key.public().to_peer_id();

        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established_per_peer(Some(cfg.max_established_per_peer))
                .with_max_established_incoming(Some(cfg.max_established_incoming))
                .with_max_established(Some(cfg.max_established_total))
                .with_max_pending_incoming(Some(cfg.max_pending_incoming)),
        );

        let mut kad_cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_cfg
            .set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_max_packet_size(MAX_KAD_PACKET_BYTES)
            .set_query_timeout(cfg.query_timeout)
            .set_periodic_bootstrap_interval(cfg.periodic_bootstrap)
            .set_replication_interval(Some(cfg.dht_replication));
        let store_cfg = kad::store::MemoryStoreConfig {
            max_records: MAX_DHT_RECORDS,
            max_value_bytes: MAX_DHT_VALUE_BYTES,
            max_providers_per_key: MAX_PROVIDERS_PER_KEY,
            max_provided_keys: MAX_PROVIDED_KEYS,
        };
        let mut kad =
            kad::Behaviour::with_config(peer_id, DhtStore::new(peer_id, store_cfg), kad_cfg);
        // Daemons are reachable servers: answer DHT queries without waiting for an external
        // address to be confirmed (which never happens on loopback or a LAN). A node AutoNAT
        // finds behind a NAT becomes a client (`event_loop/nat.rs`).
        kad.set_mode(Some(kad::Mode::Server));

        let gossip_cfg = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(cfg.gossip_heartbeat)
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(MAX_GOSSIP_BYTES + GOSSIP_FRAMING_BYTES)
            .message_id_fn(|m: &gossipsub::Message| {
                // Content-addressed ids: the same record published twice is one message.
                gossipsub::MessageId::from(
                    agora_protocol::ContentId::of(&m.data).as_bytes().to_vec(),
                )
            })
            .build()
            .map_err(|e| format!("gossipsub config: {e}"))?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_cfg,
        )
        .map_err(|e| format!("gossipsub: {e}"))?
        .with_metrics(
            metrics.sub_registry_with_prefix("libp2p_gossipsub"),
            gossipsub::MetricsConfig::default(),
        );
        let (params, thresholds) = score_params();
        gossipsub
            .with_peer_score(params, thresholds)
            .map_err(|e| format!("gossipsub scoring: {e}"))?;
        gossipsub
            .subscribe(&topic())
            .map_err(|e| format!("gossipsub subscribe: {e}"))?;

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                // A relayed address gained later reaches connected peers (the relay among
                // them, which answers provider lookups with it) without waiting.
                .with_push_listen_addr_updates(true)
                .with_agent_version(format!("agorad/{}", env!("CARGO_PKG_VERSION"))),
        );
        let ping = ping::Behaviour::new(ping::Config::new());

        let rr_cfg = request_response::Config::default()
            .with_request_timeout(cfg.request_timeout)
            .with_max_concurrent_streams(cfg.max_concurrent_streams);
        let full = request_response::ProtocolSupport::Full;
        let sync = request_response::Behaviour::with_codec(
            WireCodec::default(),
            [(StreamProtocol::new(SYNC_PROTOCOL), full.clone())],
            rr_cfg.clone(),
        );
        let fetch = request_response::Behaviour::with_codec(
            WireCodec::default(),
            [(StreamProtocol::new(FETCH_PROTOCOL), full.clone())],
            rr_cfg.clone(),
        );
        let have = request_response::Behaviour::with_codec(
            WireCodec::default(),
            [(StreamProtocol::new(HAVE_PROTOCOL), full)],
            rr_cfg,
        );
        let mdns = if cfg.enable_mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| format!("mdns: {e}"))?,
            )
        } else {
            None
        };
        Ok(Self {
            blocked: allow_block_list::Behaviour::default(),
            limits,
            kad,
            gossipsub,
            identify,
            ping,
            sync,
            fetch,
            have,
            mdns: mdns.into(),
            relay: relay::Behaviour::new(peer_id, relay_config(cfg)),
            relay_client,
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat: autonat::v2::client::Behaviour::default(),
            autonat_server: autonat::v2::server::Behaviour::default(),
        })
    }
}

/// What this node gives peers behind NATs as their relay. A circuit carries sync and small
/// fetches until the two ends punch a hole and go direct; where they cannot (symmetric NATs
/// on both sides) it carries the whole archive, up to `relay_circuit_bytes`. libp2p's own
/// defaults (128 KiB, 2 minutes) would end such a fetch after its first chunk.
/// A budget of 0 turns relaying for others off: no slot is granted, no circuit opened.
fn relay_config(cfg: &NetworkConfig) -> relay::Config {
    let off = cfg.relay_circuit_bytes == 0;
    let defaults = relay::Config::default();
    let per = |n: u32| NonZeroU32::new(n).expect("a positive limit");
    relay::Config {
        max_circuit_bytes: cfg.relay_circuit_bytes,
        max_circuit_duration: cfg.relay_circuit_duration,
        max_reservations: if off { 0 } else { defaults.max_reservations },
        max_circuits: if off { 0 } else { defaults.max_circuits },
        // libp2p's defaults let one IP address open a circuit a minute once a burst of 60 is
        // spent, and a circuit to a peer without a slot spends one too: the nodes of an office
        // behind one NAT, dialing peers through the relay, spent it in seconds in the lab and
        // were refused for the rest of the minute. Bursts stay as they were; tokens come back
        // every second (a peer: every 2 s).
        reservation_rate_limiters: Vec::new(),
        circuit_src_rate_limiters: Vec::new(),
        ..defaults
    }
    .reservation_rate_per_peer(per(30), Duration::from_secs(2 * 60))
    .reservation_rate_per_ip(per(60), Duration::from_secs(10))
    .circuit_src_per_peer(per(30), Duration::from_secs(2))
    .circuit_src_per_ip(per(60), Duration::from_secs(1))
}

/// Gossipsub peer scoring for the one Agora topic. An invalid message (a `Reject`) costs a
/// peer 10 points before the topic weight; a handful push it below the gossip threshold and a
/// flood below the graylist threshold, where its RPCs are ignored entirely.
fn score_params() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let mut params = gossipsub::PeerScoreParams::default();
    let topic_params = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_cap: 20.0,
        // Releases are rare: a quiet mesh must not be punished for not delivering.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    };
    params.topics.insert(topic().hash(), topic_params);
    // Many local nodes share loopback (testnets, several nodes on one machine): do not treat
    // them as a Sybil cluster. Remote peers can never appear from these addresses.
    params
        .ip_colocation_factor_whitelist
        .insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
    params
        .ip_colocation_factor_whitelist
        .insert(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    };
    (params, thresholds)
}
