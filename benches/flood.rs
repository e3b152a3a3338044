//! A flood of valid records (issue 32, finding 7): ten in-process nodes on loopback, one peer
//! publishing `AGORA_BENCH_FLOOD` (default 10,000) valid releases from throwaway keys into
//! node 0 at `AGORA_BENCH_FLOOD_RATE` (default 1,000) a second, and an honest release
//! published from node 5 two seconds in. Prints how long the honest release took to be on all
//! ten nodes, how many flood records each node admitted, what node 0 dropped over the
//! flooder's gossip budget, and the resident memory of the process (all ten nodes) before
//! the flood, at its end and at its peak. With `AGORA_BENCH_FLOOD_BUDGET=off` the nodes have
//! no gossip budget to speak of (a burst and a rate of a billion): the baseline.
//!
//! Run: `cargo bench --bench flood`.

/// The allocator agorad runs with, so the numbers are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use agora_protocol::Version;
use common::hostile::Hostile;
use support::{env_list, mb, proc_status_bytes};

const NODES: usize = 10;
/// How often the honest release's arrival is checked.
const POLL: Duration = Duration::from_millis(5);
/// Longest the honest release may take.
const DEADLINE: Duration = Duration::from_secs(120);

async fn run(flood_len: usize, rate: u32, budget: bool) {
    let nodes = common::testnet_with(NODES, |c| {
        if !budget {
            c.network.gossip_rate = agora_daemon::network::budget::GossipRate {
                rate: 1e9,
                burst: 1e9,
            };
        }
    })
    .await;
    let flood = common::throwaway_flood(flood_len);
    let honest = common::release(
        "honest-during-flood",
        Version::new(1, 0, 0),
        &common::noise(1000, 7),
        16 * 1024,
        &common::publisher(7),
    );
    let pid = std::process::id();
    let rss_before = proc_status_bytes(pid, "VmRSS");
    let mut hostile = Hostile::new();
    hostile.connect(std::slice::from_ref(&nodes[0].1)).await;

    let registry = nodes[5].0.registry.clone();
    let r = honest.clone();
    let announcer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let published = Instant::now();
        registry.announce(r).await.unwrap();
        published
    });
    let watcher = {
        let registries: Vec<_> = nodes.iter().map(|(n, _)| n.registry.clone()).collect();
        let id = honest.id();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                if registries.iter().all(|r| r.view().has_record(&id)) {
                    return Instant::now();
                }
                assert!(
                    started.elapsed() < DEADLINE,
                    "the honest release did not arrive"
                );
                tokio::time::sleep(POLL).await;
            }
        })
    };
    let started = Instant::now();
    let sent = hostile.flood(flood, rate).await;
    let flood_time = started.elapsed();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = hostile.drive(stopped);
    let published = announcer.await.unwrap();
    let everywhere = watcher.await.unwrap();
    let rss_end = proc_status_bytes(pid, "VmRSS");
    let admitted: Vec<usize> = nodes
        .iter()
        .map(|(n, _)| n.registry.view().record_count().saturating_sub(1))
        .collect();
    let over = nodes[0].0.metrics.gossip_over_budget.get();
    println!(
        "budget {}: flood of {sent} valid releases at {rate}/s over {flood_time:.1?}: the \
         honest release on all {NODES} nodes {} ms after its publish; flood records admitted per node \
         {admitted:?}; node 0 dropped {over} over budget; RSS of the {NODES} nodes {:.0} MB \
         before, {:.0} MB at the end, peak {:.0} MB",
        if budget { "on" } else { "off" },
        everywhere.saturating_duration_since(published).as_millis(),
        mb(rss_before),
        mb(rss_end),
        mb(proc_status_bytes(pid, "VmHWM")),
    );
    let _ = stop.send(());
    driver.await.unwrap();
    for (n, _) in nodes {
        n.shutdown().await;
    }
}

fn main() {
    let flood = env_list("AGORA_BENCH_FLOOD", &[10_000])[0];
    let rate = env_list("AGORA_BENCH_FLOOD_RATE", &[1_000])[0] as u32;
    let budget = std::env::var("AGORA_BENCH_FLOOD_BUDGET").as_deref() != Ok("off");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(flood, rate, budget));
}
