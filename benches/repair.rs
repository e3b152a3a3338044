//! Repair of a damaged store from one peer: node A holds `AGORA_BENCH_RELEASES` (default
//! 100,000) signed releases; node B held them too, plus `OWN` releases it announced itself (in
//! its own-records journal), when its database was cut to half its length. The clock runs
//! from B's start (the damage found, the database set aside, a new one made, the journal taken
//! back) until B's catalog and search index hold every record again (the sync on connect).
//! The baseline, in the same run: the same sync to a node with a new, empty store.
//!
//! Run: `cargo bench --bench repair`.

/// The allocator agorad runs with, so the numbers are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use agora_daemon::Node;
use agora_protocol::records::CatalogRecord;
use support::{cpu_time, env_list, synthetic_releases};

/// Repairs (and baseline syncs) per size.
const RUNS: usize = 3;
/// Releases B announced itself.
const OWN: usize = 10;
/// How often B's catalog is checked.
const POLL: Duration = Duration::from_millis(1);
/// Longest a catch-up may take.
const DEADLINE: Duration = Duration::from_secs(600);

/// Waits until `node` holds and indexes `n` records; returns the time since `started`.
async fn caught_up(node: &Node, n: usize, started: Instant) -> Duration {
    while node.registry.view().record_count() < n || node.registry.view().indexed_count() < n as u64
    {
        assert!(
            started.elapsed() < DEADLINE,
            "{} of {n} after {DEADLINE:?}",
            node.registry.view().record_count()
        );
        tokio::time::sleep(POLL).await;
    }
    started.elapsed()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

async fn run(n: usize) {
    let records = synthetic_releases(0..n, &common::publisher(42));
    let own = synthetic_releases(n..n + OWN, &common::publisher(43));
    let (a, a_addr) = common::start_node().await;
    let reg = a.registry.clone();
    tokio::task::spawn_blocking(move || reg.blocking_catalog().ingest(records, false).unwrap())
        .await
        .unwrap();
    let total = n + OWN;

    // B: announces its own releases, syncs the rest, stops cleanly; its directory is kept.
    let pristine = common::data_dir();
    let config = common::node_config(&pristine);
    let b = Node::start(config.clone()).await.unwrap();
    for record in own {
        let CatalogRecord::Release(r) = record else {
            unreachable!()
        };
        b.registry.announce(r).await.unwrap();
    }
    b.network.dial(a_addr.clone()).await.unwrap();
    caught_up(&b, total, Instant::now()).await;
    b.shutdown().await;
    let db_len = std::fs::metadata(pristine.join("catalog.redb"))
        .unwrap()
        .len();

    let (mut repaired, mut started_in, mut fresh) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let dir = common::data_dir();
        copy_dir(&pristine, &dir);
        let db = dir.join("catalog.redb");
        let bytes = std::fs::read(&db).unwrap();
        std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();
        let mut config = config.clone();
        config.registry.data_dir = dir;
        let (started, cpu0) = (Instant::now(), cpu_time());
        let b = Node::start(config).await.unwrap();
        started_in.push(started.elapsed());
        let report = b.registry.repair().expect("repaired");
        assert_eq!(report.from_journal, OWN as u64);
        b.network.dial(a_addr.clone()).await.unwrap();
        let took = caught_up(&b, total, started).await;
        repaired.push((took, cpu_time() - cpu0));
        b.shutdown().await;

        // The baseline: the same catalog synced to a new node.
        let (c, _) = common::start_node().await;
        let (started, cpu0) = (Instant::now(), cpu_time());
        c.network.dial(a_addr.clone()).await.unwrap();
        let took = caught_up(&c, n, started).await;
        fresh.push((took, cpu_time() - cpu0));
        c.shutdown().await;
    }
    repaired.sort();
    started_in.sort();
    fresh.sort();
    let (r, s, f) = (repaired[RUNS / 2], started_in[RUNS / 2], fresh[RUNS / 2]);
    println!(
        "{total} releases ({OWN} its own), database of {:.1} MB cut in half, median of {RUNS}: \
         repaired and caught up from one peer in {:.2?} ({:.0} releases/s, CPU {:.2?}; the \
         start with the repair {:.2?}); a new node's sync of the peer's {n} {:.2?} (CPU \
         {:.2?}); repair / new {:.2}x",
        db_len as f64 / 1e6,
        r.0,
        total as f64 / r.0.as_secs_f64(),
        r.1,
        s,
        f.0,
        f.1,
        r.0.as_secs_f64() / f.0.as_secs_f64()
    );
    a.shutdown().await;
}

fn main() {
    common::init_tracing();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for n in env_list("AGORA_BENCH_RELEASES", &[100_000]) {
        rt.block_on(run(n));
    }
}
