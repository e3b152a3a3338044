//! SPARQL over the catalog's graph (docs/RDF.md), on a node holding `AGORA_BENCH_RELEASES`
//! (default 100,000) signed releases: a quarter as many packages, four versions each, with
//! varied categories and tags. It reports:
//!
//! - the graph's build (at the first query), the bytes it holds (counted by the allocator:
//!   RSS also moves with what the allocator keeps of memory freed before) and the RSS;
//! - ggen's search, packages by category and tag with their newest version, answered as
//!   SPARQL JSON results (the whole query path but the socket), p50 and p99 over every
//!   (category, tag) pair: the synthetic data gives from 0 to about 2,000 rows;
//! - what keeping the graph in step costs: a new release admitted, then the refresh that every
//!   query runs first (the one name's triples brought up to date), p50 and p99.
//!
//! Run: `cargo bench --bench sparql`.

/// The allocator agorad runs with, so the numbers are the daemon's, counting the bytes the
/// graph holds.
#[global_allocator]
static GLOBAL: support::Counting = support::Counting(mimalloc::MiMalloc);

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::Instant;

use agora_daemon::catalog::Catalog;
use agora_daemon::graph::CancellationToken;
use agora_protocol::records::{ArchiveInfo, CatalogRecord, RecordId, ReleaseBody, Signed};
use agora_protocol::sparql::{ResultsFormat, TriplesFormat};
use agora_protocol::{PackageMeta, PublisherSecret, Version};
use support::{CATEGORIES, NOUNS, WORDS, env_list, mb, pct, proc_status_bytes};

/// Versions of each package.
const VERSIONS: usize = 4;
/// Runs of every (category, tag) query.
const ROUNDS: usize = 5;
/// Releases admitted one at a time for the update figures.
const UPDATES: usize = 500;

fn package_name(i: usize) -> String {
    format!("{}-{}-{i}", WORDS[i % 16], NOUNS[(i / 16) % 16])
}

fn release(
    i: usize,
    minor: usize,
    previous: Option<RecordId>,
    key: &PublisherSecret,
) -> CatalogRecord {
    let name = package_name(i);
    let body = ReleaseBody {
        name: name.parse().unwrap(),
        version: Version::new(1, minor as u64, 0),
        meta: PackageMeta {
            description: format!(
                "A {} {} generated as package number {i}",
                WORDS[i % 16],
                NOUNS[(i / 16) % 16]
            ),
            category: Some(CATEGORIES[i % 8].to_string()),
            author: Some(format!("author{}", i % 97)),
            license: Some("MIT".into()),
            repository: Some(format!("https://example.org/{name}")),
            tags: vec![NOUNS[i % 16].to_string(), NOUNS[(i / 3) % 16].to_string()],
            keywords: vec![WORDS[(i / 5) % 16].to_string()],
        },
        dependencies: if i > 0 && i.is_multiple_of(3) {
            vec![package_name(i - 1).parse().unwrap()]
        } else {
            vec![]
        },
        archive: ArchiveInfo::describe(format!("{name}@{minor}").as_bytes(), 1 << 20),
        published_at: 1_700_000_000 + (i * VERSIONS + minor) as u64,
        publisher: key.public(),
        previous,
    };
    CatalogRecord::Release(Signed::sign(body, key).unwrap())
}

/// `packages` packages of `VERSIONS` versions each, every release chained to the one before.
fn catalog(packages: usize, key: &PublisherSecret) -> (Vec<CatalogRecord>, Vec<RecordId>) {
    let mut records = Vec::with_capacity(packages * VERSIONS);
    let mut tips = Vec::with_capacity(packages);
    for i in 0..packages {
        let mut previous = None;
        for minor in 0..VERSIONS {
            let r = release(i, minor, previous, key);
            previous = Some(r.id());
            records.push(r);
        }
        tips.push(previous.unwrap());
    }
    (records, tips)
}

fn category_and_tag(category: &str, tag: &str) -> String {
    format!(
        "PREFIX agora: <https://agora.dev/ns#>\nPREFIX doap: <http://usefulinc.com/ns/doap#>\n\
         SELECT ?name ?version WHERE {{ ?p agora:category \"{category}\" ; agora:tag \"{tag}\" ; \
         doap:name ?name ; agora:latest ?r . ?r doap:revision ?version }}"
    )
}

fn rss() -> u64 {
    proc_status_bytes(std::process::id(), "VmRSS")
}

fn ask(catalog: &Catalog, query: &str) -> Vec<u8> {
    catalog
        .sparql(
            query,
            ResultsFormat::Json,
            TriplesFormat::Turtle,
            CancellationToken::new(),
            10,
        )
        .unwrap()
        .body
}

fn run(releases: usize) {
    let key = common::publisher(7);
    let packages = releases / VERSIONS;
    let (records, tips) = catalog(packages, &key);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (node, _) = runtime.block_on(common::start_node());
    let catalog = node.registry.blocking_catalog();
    let ingested = catalog.ingest(records, false).unwrap();
    assert!(
        ingested
            .iter()
            .all(|(_, i)| matches!(i, agora_daemon::catalog::Ingested::Added(_)))
    );

    // The build, at the first query.
    let before = rss();
    let live_before = support::live_bytes();
    let started = Instant::now();
    catalog.refresh_graph().unwrap();
    let built = started.elapsed();
    let held = support::live_bytes().saturating_sub(live_before);
    let quads = catalog.graph_len().unwrap();
    let after_build = rss();

    // ggen's search, every (category, tag) pair.
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..ROUNDS {
        for category in CATEGORIES {
            for tag in NOUNS {
                let query = category_and_tag(category, tag);
                let started = Instant::now();
                let body = ask(catalog, &query);
                times.push(started.elapsed());
                rows += serde_json::from_slice::<serde_json::Value>(&body).unwrap()["results"]
                    ["bindings"]
                    .as_array()
                    .unwrap()
                    .len();
            }
        }
    }
    times.sort();
    let queries = times.len();
    let after = rss();

    // Keeping in step: a new version of a package admitted, then the refresh.
    let mut refresh = Vec::new();
    let mut admit = Vec::new();
    for n in 0..UPDATES {
        let i = n * (packages / UPDATES);
        let r = release(i, VERSIONS, Some(tips[i]), &key);
        let started = Instant::now();
        catalog.ingest(vec![r], true).unwrap();
        admit.push(started.elapsed());
        let started = Instant::now();
        catalog.refresh_graph().unwrap();
        refresh.push(started.elapsed());
    }
    refresh.sort();
    admit.sort();
    let answer = ask(catalog, &category_and_tag("web", NOUNS[0]));
    assert!(!answer.is_empty());

    println!(
        "sparql {releases} releases ({packages} packages): graph of {quads} triples built in {:.2?}, holding {:.1} MB; \
         RSS {:.0} MB before, {:.0} MB after the build (+{:.0} MB), {:.0} MB after the queries (+{:.0} MB)",
        built,
        mb(held as u64),
        mb(before),
        mb(after_build),
        mb(after_build.saturating_sub(before)),
        mb(after),
        mb(after.saturating_sub(before)),
    );
    println!(
        "  category-and-tag SELECT ({queries} queries, {:.0} rows each on average): p50 {:.2?} p99 {:.2?} max {:.2?}",
        rows as f64 / queries as f64,
        pct(&times, 0.5),
        pct(&times, 0.99),
        times[queries - 1]
    );
    println!(
        "  graph update after one admission ({UPDATES}): p50 {:.0?} p99 {:.0?} max {:.0?} (the admission itself: p50 {:.0?} p99 {:.0?})",
        pct(&refresh, 0.5),
        pct(&refresh, 0.99),
        refresh[UPDATES - 1],
        pct(&admit, 0.5),
        pct(&admit, 0.99),
    );
    runtime.block_on(node.shutdown());
}

fn main() {
    for releases in env_list("AGORA_BENCH_RELEASES", &[100_000]) {
        run(releases);
    }
}
