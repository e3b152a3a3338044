//! Search latency over a synthetic catalog, on the index the daemon uses (in memory).
//!
//! Criterion reports the mean per query kind; after it, a percentile pass runs every query
//! `PERCENTILE_ROUNDS` times and prints p50 / p99 over all of them (criterion does not report
//! tail latency); a second percentile pass runs after `CHANGED` packages were updated, so
//! that they sit in the overlay and hide their older documents in the base, as on a running
//! node. Catalog sizes come from `AGORA_BENCH_SIZES` (default `1000,10000`).
//!
//! Run: `cargo bench --bench search` (add `AGORA_BENCH_SIZES=1000,10000,100000` for 100k).

#[path = "support/mod.rs"]
mod support;

/// The allocator agorad runs with, so the numbers are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use agora_daemon::index::{IndexDoc, IndexError, SearchIndex};
use agora_protocol::PackageMeta;
use agora_protocol::search::{SearchQuery, SortOrder};
use criterion::{BenchmarkId, Criterion, criterion_group};
use support::{CATEGORIES, NOUNS, WORDS};

const TAGS: [&str; 12] = [
    "rust",
    "python",
    "typescript",
    "go",
    "docker",
    "k8s",
    "graphql",
    "rest",
    "sql",
    "react",
    "axum",
    "tokio",
];
/// Packages changed after the base was built, for the second percentile pass.
const CHANGED: usize = 200;
/// Runs of every query in the percentile pass.
const PERCENTILE_ROUNDS: usize = 400;

fn synthetic(i: usize) -> IndexDoc {
    let adj = WORDS[i % 16];
    let noun = NOUNS[(i / 16) % 16];
    IndexDoc {
        name: format!("{adj}-{noun}-{i}"),
        version: format!("1.{}.0", i % 10),
        meta: PackageMeta {
            description: format!(
                "A {adj} {noun} for {} projects, generated as package number {i}",
                TAGS[i % 12]
            ),
            category: Some(CATEGORIES[i % 8].to_string()),
            author: Some(format!("author{}", i % 97)),
            license: Some(
                if i.is_multiple_of(3) {
                    "MIT"
                } else {
                    "Apache-2.0"
                }
                .to_string(),
            ),
            repository: None,
            tags: vec![TAGS[i % 12].to_string(), TAGS[(i / 12) % 12].to_string()],
            keywords: vec![noun.to_string()],
        },
        published_at: 1_700_000_000 + i as u64,
    }
}

fn queries() -> Vec<(&'static str, SearchQuery)> {
    vec![
        ("word", SearchQuery::text("parser")),
        ("two-words", SearchQuery::text("secure gateway")),
        ("typo", SearchQuery::text("qiuck-servce")),
        ("prefix", SearchQuery::text("dashb")),
        (
            "filtered-newest",
            SearchQuery {
                text: "rust".into(),
                category: Some("web".into()),
                sort: SortOrder::Newest,
                ..SearchQuery::default()
            },
        ),
        (
            "list-by-name",
            SearchQuery {
                sort: SortOrder::Name,
                offset: 100,
                ..SearchQuery::default()
            },
        ),
    ]
}

fn sizes() -> Vec<usize> {
    std::env::var("AGORA_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("AGORA_BENCH_SIZES is a list of numbers")
        })
        .collect()
}

fn build(n: usize) -> (tempfile::TempDir, SearchIndex) {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = SearchIndex::open(dir.path(), None).unwrap();
    index.rebuild((0..n).map(synthetic)).unwrap();
    assert_eq!(index.num_docs(), n as u64);
    (dir, index)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn bench_search(c: &mut Criterion) {
    for n in sizes() {
        let (_dir, index) = build(n);
        let mut group = c.benchmark_group(format!("search/{n}"));
        for (label, q) in queries() {
            let hits = index.search(&q).unwrap();
            assert!(hits.total > 0, "{label} finds nothing in {n} packages");
            group.bench_with_input(BenchmarkId::from_parameter(label), &q, |b, q| {
                b.iter(|| index.search(q).unwrap())
            });
        }
        group.finish();

        percentiles(&index, &format!("{n} packages"));
        // A running node's index also holds the packages changed since its base's last
        // commit (the overlay, up to `OVERLAY_MAX`), which hide their older documents.
        let changed: Vec<IndexDoc> = (0..CHANGED)
            .map(|k| {
                let mut doc = synthetic(k * n / CHANGED);
                doc.meta.description.push_str(", updated");
                doc
            })
            .collect();
        let ticket = index.mark(changed.iter().map(|d| d.name.clone()));
        index
            .flush::<IndexError>(ticket, |_| Ok((changed, Vec::new())))
            .unwrap();
        assert_eq!(index.num_docs(), n as u64);
        percentiles(
            &index,
            &format!("{n} packages, {CHANGED} of them changed since the last commit"),
        );
    }
}

/// Runs every query `PERCENTILE_ROUNDS` times and prints the percentiles.
fn percentiles(index: &SearchIndex, what: &str) {
    let mut samples = Vec::with_capacity(PERCENTILE_ROUNDS * queries().len());
    for _ in 0..PERCENTILE_ROUNDS {
        for (_, q) in queries() {
            let started = Instant::now();
            let r = index.search(&q).unwrap();
            samples.push(started.elapsed());
            std::hint::black_box(r);
        }
    }
    samples.sort();
    println!(
        "search percentiles over {what}, {} queries: p50 {:?}  p99 {:?}  max {:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_search
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
