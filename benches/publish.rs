//! Publish until visible on every node: N real in-process nodes on loopback TCP (the testnet
//! settings: 100 ms gossip heartbeat), joined to the first; node 0 publishes a package
//! directory again and again (new name each time) and the clock runs from the call until the
//! release is in the catalog of every node. Also reported: how long `publish` itself takes
//! (pack, sign, store durably, index, DHT puts, provide, gossip), and the time until the first
//! other node has it. Sizes from `AGORA_BENCH_NODES` (default `10,20,50`), publishes per size
//! from `AGORA_BENCH_PUBLISHES` (default 40).
//!
//! Run: `cargo bench --bench publish`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_daemon::registry::Registry;
use agora_protocol::records::RecordId;

/// How often the nodes' catalogs are checked while waiting.
const POLL: Duration = Duration::from_micros(200);
/// Longest wait for one release to reach every node.
const DEADLINE: Duration = Duration::from_secs(60);

fn env_list(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn write_package(dir: &std::path::Path, name: &str) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"bench\"\n\
             category = \"bench\"\nlicense = \"MIT\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("templates/a.tmpl"), name).unwrap();
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(label: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "{label} p50 {:.1?} p99 {:.1?} max {:.1?}",
        pct(&v, 0.5),
        pct(&v, 0.99),
        v[v.len() - 1]
    )
}

async fn wait_visible(
    registries: &[Arc<Registry>],
    id: &RecordId,
    started: Instant,
) -> (Duration, Duration) {
    let mut first: Option<Duration> = None;
    loop {
        let have = registries.iter().filter(|r| r.has_record(id)).count();
        if have > 1 && first.is_none() {
            first = Some(started.elapsed());
        }
        if have == registries.len() {
            let all = started.elapsed();
            return (first.unwrap_or(all), all);
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{have}/{} nodes after {DEADLINE:?}",
            registries.len()
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn run(nodes: usize, publishes: usize) {
    let net = common::testnet(nodes).await;
    let registries: Vec<Arc<Registry>> = net.iter().map(|(n, _)| n.registry.clone()).collect();
    // Let the gossip mesh form before measuring (heartbeats every 100 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let key = common::publisher(7);
    let src = tempfile::tempdir().unwrap();
    let (mut call, mut first, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..publishes {
        let dir = src.path().join(format!("p{i}"));
        write_package(&dir, &format!("bench-{nodes}-{i}"));
        let started = Instant::now();
        let published = registries[0].publish(dir, &key).await.unwrap();
        call.push(started.elapsed());
        let (f, a) = wait_visible(&registries, &published.record.id(), started).await;
        first.push(f);
        all.push(a);
    }
    println!(
        "publish, {nodes} nodes, {publishes} releases: {}; {}; {}",
        summary("publish call", call),
        summary("first other node", first),
        summary("visible on all", all),
    );
    for (n, _) in net {
        n.shutdown().await;
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let publishes = env_list("AGORA_BENCH_PUBLISHES", &[40])[0];
    for nodes in env_list("AGORA_BENCH_NODES", &[10, 20, 50]) {
        rt.block_on(run(nodes, publishes));
    }
}
