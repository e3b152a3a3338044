//! DHT get of a record the asking node does not hold: N in-process nodes on loopback TCP
//! (testnet settings), node 0 puts `KEYS` release records on the DHT, then a node that joins
//! afterwards (its DHT store empty, so every get crosses the network) gets each of them:
//!
//! - `get_record`, first valid record (what a release lookup waits for);
//! - `get_record`, every record until the query ends (what a head lookup waits for);
//! - baseline in the same run: one request-response round trip from that node to a
//!   connected peer through the same stack (a fetch request for unknown content, which the
//!   peer refuses): the floor of any exchange over Agora's transport.
//!
//! Node counts from `AGORA_BENCH_NODES` (default `20,50`). Run: `cargo bench --bench dht`.

/// The allocator agorad runs with, so the numbers are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use agora_daemon::network::RecordQuorum;
use agora_protocol::ContentId;
use agora_protocol::dht::DhtValue;
use agora_protocol::messages::{FetchRequest, FetchResponse};
use agora_protocol::records::CatalogRecord;
use support::{env_list, summary, synthetic_releases};

/// Records put on the DHT and got back, per network size.
const KEYS: usize = 100;
/// Round trips in the baseline pass.
const ROUND_TRIPS: usize = 200;

async fn run(nodes: usize) {
    let net = common::testnet(nodes).await;
    let seed = net[0].1.clone();
    let keys: Vec<(Vec<u8>, Vec<u8>)> = synthetic_releases(0..KEYS, &common::publisher(9))
        .into_iter()
        .map(|r| match r {
            CatalogRecord::Release(r) => {
                let v = DhtValue::Release(r);
                (v.key().to_bytes(), v.encode())
            }
            _ => unreachable!("synthetic releases are releases"),
        })
        .collect();
    let started = Instant::now();
    for (key, value) in &keys {
        net[0]
            .0
            .network
            .put_record(key.clone(), value.clone())
            .await
            .unwrap();
    }
    let put_each = started.elapsed() / KEYS as u32;

    let (asker, _) = common::start_node().await;
    asker.network.dial(seed.clone()).await.expect("dial seed");
    let t = Instant::now();
    if let Err(e) = asker.network.bootstrap().await {
        // Reported, not fatal: what the bootstrap found so far is in the routing table.
        eprintln!("the asker's bootstrap: {e} after {:.1?}", t.elapsed());
    }
    let table = asker.network.info().await.unwrap().routing_table_size;

    let (mut first, mut all) = (Vec::new(), Vec::new());
    for (key, value) in &keys {
        for (quorum, times) in [
            (RecordQuorum::First, &mut first),
            (RecordQuorum::All, &mut all),
        ] {
            let t = Instant::now();
            let got = asker.network.get_record(key.clone(), quorum).await.unwrap();
            times.push(t.elapsed());
            assert_eq!(
                &got,
                std::slice::from_ref(value),
                "the record put is the record got ({quorum:?})"
            );
        }
    }

    let peer = net[0].0.network.peer_id();
    let mut rtt = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS {
        let request = FetchRequest {
            content: ContentId::from_bytes([i as u8; 32]),
            index: 0,
        };
        let t = Instant::now();
        let response = asker.network.send_fetch(peer, request).await.unwrap();
        rtt.push(t.elapsed());
        assert!(matches!(response, FetchResponse::Refused(_)));
    }
    let p50 = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        support::pct(&v, 0.5)
    };
    println!(
        "dht get, {nodes} nodes + 1 asker (routing table {table}), {KEYS} keys: {}; {}; \
         baseline {}; first / round trip at p50 = {:.1}x; put {put_each:.1?} each",
        summary("get (first record)", first.clone()),
        summary("get (all records)", all),
        summary("request-response round trip", rtt.clone()),
        p50(&first).as_secs_f64() / p50(&rtt).as_secs_f64(),
    );
    asker.shutdown().await;
    for (n, _) in net {
        n.shutdown().await;
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for nodes in env_list("AGORA_BENCH_NODES", &[20, 50]) {
        rt.block_on(run(nodes));
    }
}
