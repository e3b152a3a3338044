//! The node core on real swarms: in-process nodes on loopback TCP, no mocks.

#[path = "../common/mod.rs"]
mod common;

mod dht;
mod fetch;
mod gossip;
mod peers;
mod swarm;

use agora_daemon::network::{NetworkError, RecordQuorum};
use agora_daemon::ops::fetch::{FetchError, PeerOutcome, Providers, fetch_archive};
use agora_protocol::Version;
use agora_protocol::codec::Wire;
use agora_protocol::dht::{DhtKey, DhtValue};
use agora_protocol::messages::{FetchRequest, FetchResponse, GossipMessage};
use agora_protocol::records::ReleaseRecord;
use common::hostile::{ConnectionFlood, Hostile};
use common::*;
use futures::StreamExt;
use libp2p::PeerId;
use std::sync::atomic::Ordering;
use std::time::Duration;
const DEADLINE: Duration = Duration::from_secs(30);

/// The address of a "peer" that accepts TCP connections and never speaks (every dial to it
/// hangs in the handshake), and the task holding its connections open.
async fn silent_listener() -> (libp2p::Multiaddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!(
        "/ip4/127.0.0.1/tcp/{}",
        listener.local_addr().unwrap().port()
    )
    .parse()
    .unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            open.push(conn);
        }
    });
    (addr, held)
}

/// A new peer id farther than `than` from each of `keys` in Kademlia's XOR metric.
fn farther_peer(keys: &[Vec<u8>], than: PeerId) -> PeerId {
    use libp2p::kad::{KBucketKey, RecordKey};
    let targets: Vec<_> = keys
        .iter()
        .map(|k| KBucketKey::new(RecordKey::new(k)))
        .collect();
    let farther = |peer: PeerId| {
        targets
            .iter()
            .all(|t| KBucketKey::from(peer).distance(t) > KBucketKey::from(than).distance(t))
    };
    (0..1_000_000)
        .map(|_| {
            libp2p::identity::Keypair::generate_ed25519()
                .public()
                .to_peer_id()
        })
        .find(|p| farther(*p))
        .expect("a million random peer ids, none farther than the holder from both keys")
}
