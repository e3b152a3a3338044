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
//! Node counts from `AGORA_BENCH_NODES` (default `20,50`).
//!
//! Then the cost of the DHT's replication, which puts every stored record again to the
//! peers closest to its key once a period (`NetworkConfig::dht_replication`): 20 nodes each
//! hold the same `AGORA_BENCH_REPLICATED` records (default 200), as every node of a network
//! of 20 or fewer holds a head for every name, with a period of `AGORA_BENCH_REPLICATE_SECS`
//! (default 20 s), first the same on every node, then each node's own ([`jittered`], as
//! nodes get by default). Over 6 periods: the records received per period, as a fraction of
//! every holder putting every record to the 19 others, and the CPU of all nodes per period
//! beyond what the same network uses idle (measured over a period before the records are
//! stored). `AGORA_BENCH_REPLICATED=0` skips it.
//!
//! Run: `cargo bench --bench dht`.

/// The allocator agorad runs with, so the numbers are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use agora_daemon::network::RecordQuorum;
use agora_daemon::network::settings::jittered;
use agora_protocol::ContentId;
use agora_protocol::dht::DhtValue;
use agora_protocol::messages::{FetchRequest, FetchResponse};
use agora_protocol::records::CatalogRecord;
use support::{cpu_time, env_list, summary, synthetic_releases};

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
            chunk_size: agora_protocol::limits::MIN_CHUNK_SIZE,
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

/// The DHT's periodic replication: `nodes` nodes each hold the same `records` records and
/// put them again every `period` (each node exactly `period`, or its own [`jittered`]
/// period); the network runs for `periods` periods and reports what arrived per period.
async fn replication(nodes: usize, records: usize, period: Duration, periods: u32, jitter: bool) {
    let net = common::testnet_with(nodes, |c| {
        c.network.dht_replication = if jitter { jittered(period) } else { period }
    })
    .await;
    let held: Vec<libp2p::kad::Record> = synthetic_releases(0..records, &common::publisher(8))
        .into_iter()
        .map(|r| match r {
            CatalogRecord::Release(r) => {
                let v = DhtValue::Release(r);
                libp2p::kad::Record::new(v.key().to_bytes(), v.encode())
            }
            _ => unreachable!("synthetic releases are releases"),
        })
        .collect();
    let counts = || {
        let (mut received, mut unchanged) = (0, 0);
        for (n, _) in &net {
            let m = &n.metrics;
            received += m.dht_records_received.get();
            unchanged += m.dht_records_unchanged.get();
        }
        (received, unchanged)
    };
    // What the network costs over a period with nothing to replicate, to take away below.
    let (idle_wall, idle_cpu) = (Instant::now(), cpu_time());
    tokio::time::sleep(period).await;
    let idle_rate = (cpu_time() - idle_cpu).as_secs_f64() / idle_wall.elapsed().as_secs_f64();
    for (n, _) in &net {
        let refused = n.network.store_records(held.clone()).await.unwrap();
        assert!(refused.is_empty(), "every record is stored: {refused:?}");
    }
    let (started, cpu0, (received0, unchanged0)) = (Instant::now(), cpu_time(), counts());
    tokio::time::sleep(period * periods).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64() - idle_rate * wall;
    let (received, unchanged) = counts();
    let (received, unchanged) = (received - received0, unchanged - unchanged0);
    // Every holder putting every record to the 19 others.
    let all = (nodes * records * (nodes - 1)) as f64;
    let per_period = received as f64 / f64::from(periods);
    println!(
        "dht replication, {nodes} nodes each holding {records} records, {} every {period:?}, \
         {periods} periods: {per_period:.0} records received a period = {:.2} of every holder \
         putting every record ({unchanged} of {received} identical to the stored copy); \
         CPU beyond idle ({:.0} ms/s idle) {:.2} s a period, {:.1} µs a record received",
        if jitter {
            "each node its own period"
        } else {
            "all nodes"
        },
        per_period / all,
        idle_rate * 1e3,
        cpu / f64::from(periods),
        cpu * 1e6 / received.max(1) as f64,
    );
    for (n, _) in net {
        n.shutdown().await;
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for nodes in env_list("AGORA_BENCH_NODES", &[20, 50]) {
        rt.block_on(run(nodes));
    }
    let records = env_list("AGORA_BENCH_REPLICATED", &[200])[0];
    let period = Duration::from_secs(env_list("AGORA_BENCH_REPLICATE_SECS", &[20])[0] as u64);
    if records > 0 {
        for jitter in [false, true] {
            rt.block_on(replication(20, records, period, 6, jitter));
        }
    }
}
