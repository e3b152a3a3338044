//! Catalog sync to a new node: node A holds `AGORA_BENCH_RELEASES` (default 10,000) signed
//! releases; a fresh node B dials it, and the clock runs until B's catalog and search index
//! hold every one (the sync on connect: summaries, differing buckets, ids, records in
//! batches, each verified, admitted durably and indexed). The baseline, in the same run: a
//! fresh node ingesting the same records handed to it directly (verification, durable
//! admission and indexing without the network).
//!
//! Run: `cargo bench --bench sync`.

/// The allocator agorad runs with, so the numbers are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{cpu_time, env_list, synthetic_releases};

/// Fresh nodes synced (and baselines ingested) per size.
const RUNS: usize = 3;
/// How often B's catalog is checked.
const POLL: Duration = Duration::from_millis(1);
/// Longest a sync may take.
const DEADLINE: Duration = Duration::from_secs(300);

async fn run(n: usize) {
    let key = common::publisher(42);
    let records = synthetic_releases(0..n, &key);
    let (a, a_addr) = common::start_node().await;
    let reg = a.registry.clone();
    let all = records.clone();
    tokio::task::spawn_blocking(move || reg.blocking_catalog().ingest(all, false).unwrap())
        .await
        .unwrap();
    assert_eq!(a.registry.view().indexed_count(), n as u64);

    let (mut synced, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (b, _) = common::start_node().await;
        let (started, cpu0) = (Instant::now(), cpu_time());
        b.network.dial(a_addr.clone()).await.unwrap();
        while b.registry.view().record_count() < n || b.registry.view().indexed_count() < n as u64 {
            assert!(
                started.elapsed() < DEADLINE,
                "{} of {n} after {DEADLINE:?}",
                b.registry.view().record_count()
            );
            tokio::time::sleep(POLL).await;
        }
        synced.push((started.elapsed(), cpu_time() - cpu0));
        assert_eq!(b.registry.view().record_count(), n);
        b.shutdown().await;

        let (c, _) = common::start_node().await;
        let (started, cpu0) = (Instant::now(), cpu_time());
        let reg = c.registry.clone();
        let all = records.clone();
        tokio::task::spawn_blocking(move || reg.blocking_catalog().ingest(all, false).unwrap())
            .await
            .unwrap();
        direct.push((started.elapsed(), cpu_time() - cpu0));
        assert_eq!(c.registry.view().indexed_count(), n as u64);
        c.shutdown().await;
    }
    synced.sort();
    direct.sort();
    let (s, d) = (synced[RUNS / 2], direct[RUNS / 2]);
    println!(
        "{n} releases, median of {RUNS}: sync to a new node {:.2?} ({:.0} releases/s, CPU \
         {:.2?}); the same records ingested directly {:.2?} (CPU {:.2?}); sync / direct \
         {:.2}x",
        s.0,
        n as f64 / s.0.as_secs_f64(),
        s.1,
        d.0,
        d.1,
        s.0.as_secs_f64() / d.0.as_secs_f64()
    );
    a.shutdown().await;
}

fn main() {
    common::init_tracing();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for n in env_list("AGORA_BENCH_RELEASES", &[10_000]) {
        rt.block_on(run(n));
    }
}
