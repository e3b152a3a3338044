//! Network settings, each with the reason for its default.

use std::time::Duration;

use libp2p::identity::Keypair;

use super::budget::{Budget, GossipRate};

/// Bytes one relayed connection may carry: a whole archive of the usual size, for peers that
/// can reach each other no other way.
pub const DEFAULT_RELAY_CIRCUIT_BYTES: u64 = 64 * 1024 * 1024;

/// How the swarm is built and paced.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The node's libp2p identity (separate from any publisher key).
    pub keypair: Keypair,
    /// Discover peers on the LAN with mDNS.
    pub enable_mdns: bool,
    /// Addresses the operator says peers reach this node at (taken as confirmed).
    pub external_addrs: Vec<libp2p::Multiaddr>,
    /// A private network's pre-shared key: every connection is TCP, protected with it (pnet)
    /// under Noise, so a node without the key cannot connect at all. `None`: the open network
    /// (TCP and QUIC).
    pub psk: Option<libp2p::pnet::PreSharedKey>,
    /// Most bytes one relayed connection through this node may carry (both ways), and for
    /// how long: a peer behind a symmetric NAT fetches whole archives through its relay.
    pub relay_circuit_bytes: u64,
    pub relay_circuit_duration: Duration,
    /// Connections idle for this long are closed. libp2p's 10 s default closes connections
    /// between request-response exchanges; a minute keeps catalog peers connected.
    pub idle_connection_timeout: Duration,
    /// Gossipsub heartbeat: mesh maintenance and gossip emission. 1 s is libp2p's default;
    /// tests lower it so meshes form quickly.
    pub gossip_heartbeat: Duration,
    /// Kademlia query timeout.
    pub query_timeout: Duration,
    /// How long a record lookup that collects several answers (a package's heads) keeps
    /// collecting after its first answer before it answers. The rest of a round usually
    /// arrives within one round trip, while the whole query may wait on unreachable peers
    /// until `query_timeout`. (A provider search needs none: it hands over each provider as
    /// it is found.)
    pub query_grace: Duration,
    /// Periodic Kademlia bootstrap (refreshes the routing table); `None` turns it off.
    pub periodic_bootstrap: Option<Duration>,
    /// How often every DHT record this node stores is put again to the peers closest to its
    /// key, so records outlive the nodes that held them. The default is libp2p's hour plus a
    /// random part of up to a quarter of it, drawn per node ([`jittered`]). Each round puts
    /// every stored record, and a node in a network of 20 or fewer stores a head for every
    /// name; Kademlia leaves out of a round each record a peer put to the node since its last
    /// round (that peer's round already reached the closest nodes), so about one holder per
    /// record does the work, but only while rounds do not start together, which, with one
    /// period, they would forever on nodes started together. The copies peers receive are
    /// byte-identical to theirs, and their event loops drop those before any validation.
    pub dht_replication: Duration,
    /// Timeout of one sync or fetch request.
    pub request_timeout: Duration,
    /// Upper bound on any handle call: no caller ever waits longer for the event loop.
    pub command_timeout: Duration,
    /// Capacity of the command channel (handle → event loop).
    pub command_buffer: usize,
    /// Capacity of the inbound event channel (event loop → registry). When it is full the
    /// event loop sheds load instead of waiting: gossip is ignored, requests get `Busy`.
    pub event_buffer: usize,
    /// Connection limits.
    pub max_established_per_peer: u32,
    pub max_established_incoming: u32,
    pub max_established_total: u32,
    pub max_pending_incoming: u32,
    /// Concurrent inbound and outbound request streams per connection and protocol.
    pub max_concurrent_streams: usize,
    /// Peers' sync requests worked on or being answered at once. One sync at a time is what
    /// an honest peer asks; a response is up to 4 MiB, so the total bounds what a node holds
    /// for peers who ask and never read at 64 MiB.
    pub sync_budget: Budget,
    /// Gossip messages one peer may send: a burst for a node that relays what a sync brought
    /// (up to 256 records at once), then a steady rate far above what honest publishing on a
    /// network sends. What is over it is neither checked nor forwarded, and a peer over it
    /// with messages of its own (not relayed) loses gossip score.
    pub gossip_rate: GossipRate,
    /// Peers' chunk requests worked on or being answered at once. An honest fetcher has 8 in
    /// flight across all its providers; a chunk is up to 1 MiB, so one peer holds at most
    /// 16 MiB of the node and all of them 64 MiB.
    pub fetch_budget: Budget,
    /// Peers' have requests worked on or being answered at once: a fetcher asks each
    /// provider about once every half second, and an answer is a few dozen bytes.
    pub have_budget: Budget,
    /// With fewer connections than this, the node dials peers from its routing table (at
    /// most the shortfall at each maintenance tick) until it has them again: how it finds
    /// its way back after a partition heals or its peers restart.
    pub target_peers: usize,
    /// How often the event loop does its housekeeping and tops up its connections.
    pub maintenance_interval: Duration,
}

impl NetworkConfig {
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            enable_mdns: false,
            external_addrs: Vec::new(),
            psk: None,
            relay_circuit_bytes: DEFAULT_RELAY_CIRCUIT_BYTES,
            relay_circuit_duration: Duration::from_secs(10 * 60),
            idle_connection_timeout: Duration::from_secs(120),
            gossip_heartbeat: Duration::from_secs(1),
            query_timeout: Duration::from_secs(30),
            query_grace: Duration::from_millis(500),
            periodic_bootstrap: Some(Duration::from_secs(300)),
            dht_replication: jittered(Duration::from_secs(60 * 60)),
            request_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(60),
            command_buffer: 1024,
            event_buffer: 1024,
            max_established_per_peer: 2,
            max_established_incoming: 256,
            max_established_total: 512,
            max_pending_incoming: 64,
            max_concurrent_streams: 64,
            gossip_rate: GossipRate {
                rate: 50.0,
                burst: 512.0,
            },
            sync_budget: Budget {
                per_peer: 2,
                total: 16,
            },
            fetch_budget: Budget {
                per_peer: 16,
                total: 64,
            },
            have_budget: Budget {
                per_peer: 4,
                total: 256,
            },
            target_peers: 8,
            maintenance_interval: Duration::from_secs(5),
        }
    }

    /// Settings for many nodes in one process on loopback: fast heartbeats, short timeouts.
    pub fn for_local_testnet(keypair: Keypair) -> Self {
        Self {
            gossip_heartbeat: Duration::from_millis(100),
            query_timeout: Duration::from_secs(10),
            query_grace: Duration::from_millis(100),
            request_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(20),
            maintenance_interval: Duration::from_millis(500),
            ..Self::new(keypair)
        }
    }
}

/// `period` stretched by a random part of up to a quarter of it: a node's own period, so
/// that the periodic rounds of nodes started together drift apart.
pub fn jittered(period: Duration) -> Duration {
    period + period.mul_f64(rand::random::<f64>() / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_replicates_on_its_own_period_within_a_quarter_over_the_hour() {
        let hour = Duration::from_secs(60 * 60);
        let periods: Vec<Duration> = (0..64)
            .map(|_| NetworkConfig::new(Keypair::generate_ed25519()).dht_replication)
            .collect();
        for p in &periods {
            assert!(*p >= hour && *p <= hour + hour / 4, "{p:?}");
        }
        let mut distinct = periods.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), periods.len(), "drawn per node");
    }
}
