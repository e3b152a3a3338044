//! Publish until visible in search on every node: N real in-process nodes on loopback TCP
//! (the testnet settings: 100 ms gossip heartbeat), joined to the first; node 0 publishes a
//! package directory again and again (a new name each time) and the clock runs from the call
//! until a search on every node finds the new package (one poller per node). Also reported:
//! how long `publish` itself takes (pack, sign, store durably, index, gossip, DHT puts,
//! provide), and the time until the first other node can find it. Sizes from
//! `AGORA_BENCH_NODES` (default `10,20,50`), publishes per size from `AGORA_BENCH_PUBLISHES`
//! (default 40).
//!
//! The disk's baseline in the same run: a thread writes 4 KiB and `fdatasync`s it every
//! 10 ms next to the nodes' data, for as long as the publishes run; its latencies are
//! reported, and, for the slowest publish, the slowest of those syncs that overlapped it (a
//! publish is gossiped only once it is durable, so a disk that stalls holds it up).
//!
//! Run: `cargo bench --bench publish`.

/// The allocator agorad runs with, so the numbers are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agora_daemon::ops::Registry;
use agora_protocol::PackageName;
use agora_protocol::search::SearchQuery;
use support::{cpu_time, env_list, summary};

/// How often the nodes' catalogs are checked while waiting.
const POLL: Duration = Duration::from_micros(200);
/// Longest wait for one release to reach every node.
const DEADLINE: Duration = Duration::from_secs(60);

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

/// Waits until a search on every node finds the package `name` just published, one poller
/// per node (as users on different machines would search): a node is polled cheaply until its
/// index counts `packages` documents, then searched for the name (that search builds the
/// node's new view, so its cost is in the time measured). Returns when the first node other
/// than the publisher found it, and when all did.
async fn wait_visible(
    registries: &[Arc<Registry>],
    name: &str,
    packages: u64,
    started: Instant,
) -> (Duration, Duration) {
    let pollers: Vec<_> = registries
        .iter()
        .map(|r| {
            let (r, name) = (r.clone(), name.to_owned());
            tokio::spawn(async move {
                loop {
                    if r.view().indexed_count() >= packages {
                        let (r, name) = (r.clone(), name.clone());
                        let found = tokio::task::spawn_blocking(move || {
                            let hits = r
                                .blocking_catalog()
                                .search(&SearchQuery::text(&name))
                                .unwrap()
                                .hits;
                            hits.first().is_some_and(|h| h.name == name)
                        })
                        .await
                        .unwrap();
                        if found {
                            return started.elapsed();
                        }
                    }
                    assert!(
                        started.elapsed() < DEADLINE,
                        "{name} not found after {DEADLINE:?}"
                    );
                    tokio::time::sleep(POLL).await;
                }
            })
        })
        .collect();
    let mut times = Vec::with_capacity(pollers.len());
    for p in pollers {
        times.push(p.await.unwrap());
    }
    let first = times[1..].iter().copied().min().unwrap_or(times[0]);
    let all = times.into_iter().max().expect("at least one node");
    (first, all)
}

/// Syncs 4 KiB to a file in `dir` every 10 ms until `stop`; returns when each sync started
/// and how long it took.
fn probe_disk(dir: std::path::PathBuf, stop: Arc<AtomicBool>) -> Vec<(Instant, Duration)> {
    let mut file = tempfile::tempfile_in(dir).unwrap();
    let page = [7u8; 4096];
    let mut syncs = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        file.write_all(&page).unwrap();
        file.sync_data().unwrap();
        syncs.push((started, started.elapsed()));
        std::thread::sleep(Duration::from_millis(10));
    }
    syncs
}

async fn run(nodes: usize, publishes: usize) {
    let net = common::testnet(nodes).await;
    let registries: Vec<Arc<Registry>> = net.iter().map(|(n, _)| n.registry.clone()).collect();
    // Measure once every node has a gossip mesh (it forms over a few 100 ms heartbeats).
    let started = Instant::now();
    for (n, _) in &net {
        while n.network.info().await.unwrap().gossip_mesh_peers == 0 {
            assert!(
                started.elapsed() < DEADLINE,
                "no gossip mesh after {DEADLINE:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
    let key = common::publisher(7);
    let src = tempfile::tempdir().unwrap();
    let (mut call, mut first, mut all) = (Vec::new(), Vec::new(), Vec::new());
    let mut windows = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (dir, stop) = (common::data_dir(), stop.clone());
        std::thread::spawn(move || probe_disk(dir, stop))
    };
    let cpu_before = cpu_time();
    for i in 0..publishes {
        let dir = src.path().join(format!("p{i}"));
        let name = format!("bench-{nodes}-{i}");
        write_package(&dir, &name);
        let name: PackageName = name.parse().unwrap();
        // Watched while the call runs: gossip goes out before the call returns.
        let started = Instant::now();
        let publisher = registries[0].clone();
        let k = key.clone();
        let task = tokio::spawn(async move {
            let r = publisher.publish(dir, &k).await.unwrap();
            (r.record.body.name, started.elapsed())
        });
        let (f, a) = wait_visible(&registries, name.as_str(), i as u64 + 1, started).await;
        let (published, took) = task.await.unwrap();
        assert_eq!(published, name);
        call.push(took);
        first.push(f);
        all.push(a);
        windows.push((started, a));
    }
    let cpu = (cpu_time() - cpu_before) / publishes as u32;
    stop.store(true, Ordering::Relaxed);
    let syncs = probe.join().unwrap();
    let (slow_start, slowest) = *windows.iter().max_by_key(|w| w.1).unwrap();
    let during = syncs
        .iter()
        .filter(|(at, took)| *at < slow_start + slowest && *at + *took > slow_start)
        .map(|s| s.1)
        .max()
        .unwrap_or_default();
    println!(
        "publish, {nodes} nodes, {publishes} releases: {}; {}; {}; CPU per publish (all nodes) {cpu:.1?}; \
         disk {} ({} syncs), slowest during the slowest publish {during:.1?}",
        summary("publish call", call),
        summary("first other node", first),
        summary("visible on all", all),
        summary("4 KiB fdatasync", syncs.iter().map(|s| s.1).collect()),
        syncs.len(),
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
