//! Helpers shared by the multi-node tests: start in-process nodes on loopback TCP, wait for
//! conditions with a deadline, and build signed test records.
#![allow(dead_code)]

pub mod hostile;
mod noise;

#[allow(
    unused_imports,
    reason = "as with dead_code above: not every binary that includes this uses it"
)]
pub use noise::noise;

use std::future::Future;
use std::time::{Duration, Instant};

use agora_daemon::RegistryConfig;
use agora_daemon::network::NetworkConfig;
use agora_daemon::{Node, NodeConfig};
use agora_protocol::records::{
    ArchiveInfo, CatalogRecord, HeadBody, PackageHead, ReleaseBody, ReleaseRecord, Signed,
};
use agora_protocol::{PackageMeta, PublisherSecret, Version};
use libp2p::{Multiaddr, identity};

/// How often `converge` re-checks its condition.
const POLL: Duration = Duration::from_millis(50);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A node's configuration for tests: a fresh identity and its data in `dir`.
pub fn node_config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        network: NetworkConfig::for_local_testnet(identity::Keypair::generate_ed25519()),
        registry: RegistryConfig::new(dir),
    }
}

/// Every provider of `key` a DHT search from `node` finds, sorted: the search runs to its end.
pub async fn all_providers(node: &Node, key: Vec<u8>) -> Vec<libp2p::PeerId> {
    let mut found = node.network.find_providers(key).await.unwrap();
    let mut all = Vec::new();
    while let Some(peer) = found.recv().await {
        all.push(peer);
    }
    all.sort();
    all
}

/// Starts a node with `config`, listening on an ephemeral loopback TCP port.
pub async fn start_with(config: NodeConfig) -> (Node, Multiaddr) {
    Node::start_listening(config, "/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .expect("node starts")
}

/// A fresh data directory under cargo's scratch directory for integration tests
/// (`target/tmp/run-<pid>/`), kept after the test so a failure can be inspected. The first
/// call in a test process removes the directories of earlier runs whose process has exited,
/// so scratch data never outlives the next run.
pub fn data_dir() -> std::path::PathBuf {
    static RUN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let gone = name
                    .strip_prefix("run-")
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
                // Also the unsorted directories earlier versions of this helper left.
                let legacy = name.starts_with(".tmp");
                if gone || legacy {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let run = root.join(format!("run-{}", std::process::id()));
        std::fs::create_dir_all(&run).expect("scratch directory");
        run
    });
    tempfile::tempdir_in(run).expect("temp dir").keep()
}

/// Starts one node listening on an ephemeral loopback TCP port, with a fresh data directory.
pub async fn start_node() -> (Node, Multiaddr) {
    start_with(node_config(&data_dir())).await
}

/// Dials `seed` and bootstraps the DHT through it.
pub async fn join(node: &Node, seed: &Multiaddr) {
    node.network.dial(seed.clone()).await.expect("dial seed");
    node.network.bootstrap().await.expect("bootstrap");
}

/// `Ok` once `node`'s routing table holds exactly `want` peers; otherwise how many it holds.
pub async fn routing_table_holds(node: &Node, want: usize) -> Result<(), String> {
    let size = node
        .network
        .info()
        .await
        .map_err(|e| e.to_string())?
        .routing_table_size;
    if size == want {
        Ok(())
    } else {
        Err(format!("{size} peers in its routing table, wants {want}"))
    }
}

/// Starts `n` nodes; every node but the first dials the first (the seed) and bootstraps.
pub async fn testnet(n: usize) -> Vec<(Node, Multiaddr)> {
    testnet_with(n, |_| {}).await
}

/// [`testnet`], each node's configuration changed by `configure` first.
pub async fn testnet_with(n: usize, configure: impl Fn(&mut NodeConfig)) -> Vec<(Node, Multiaddr)> {
    let config = || {
        let mut c = node_config(&data_dir());
        configure(&mut c);
        c
    };
    let mut nodes = vec![start_with(config()).await];
    let seed = nodes[0].1.clone();
    for _ in 1..n {
        let (node, addr) = start_with(config()).await;
        join(&node, &seed).await;
        nodes.push((node, addr));
    }
    nodes
}

/// Waits until `check` returns `Ok(())`, re-checking every 50 ms; panics with the last
/// reason it gave if `deadline` passes first.
pub async fn converge<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if started.elapsed() > deadline => {
                panic!("{what}: not converged after {deadline:?}: {why}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Waits until `check(i, node)` holds for every node at once; the panic names the first node
/// that did not converge and why.
pub async fn converge_nodes<'a, F, Fut>(
    what: &str,
    deadline: Duration,
    nodes: &'a [(Node, Multiaddr)],
    check: F,
) where
    F: Fn(usize, &'a Node) -> Fut,
    Fut: Future<Output = Result<(), String>> + 'a,
{
    converge(what, deadline, || async {
        for (i, (node, _)) in nodes.iter().enumerate() {
            check(i, node)
                .await
                .map_err(|why| format!("node {i}: {why}"))?;
        }
        Ok(())
    })
    .await
}

/// A deterministic publisher key for tests.
pub fn publisher(seed: u8) -> PublisherSecret {
    PublisherSecret::from_bytes([seed; 32])
}

/// A signed release of `name@version` whose archive is `data`, cut into `chunk_size` chunks.
pub fn release(
    name: &str,
    version: Version,
    data: &[u8],
    chunk_size: u32,
    key: &PublisherSecret,
) -> ReleaseRecord {
    let body = ReleaseBody {
        name: name.parse().unwrap(),
        version,
        meta: PackageMeta {
            description: format!("test package {name}"),
            ..Default::default()
        },
        dependencies: vec![],
        archive: ArchiveInfo::describe(data, chunk_size),
        published_at: 1_700_000_000,
        publisher: key.public(),
        previous: None,
    };
    Signed::sign(body, key).unwrap()
}

/// `n` signed releases of distinct names by one key.
pub fn many_releases(n: usize, key: &PublisherSecret) -> Vec<CatalogRecord> {
    (0..n)
        .map(|i| {
            let body = ReleaseBody {
                name: format!("synthetic-{i:05}").parse().unwrap(),
                version: Version::new(1, 0, 0),
                meta: PackageMeta {
                    description: format!("synthetic package number {i}"),
                    category: Some(["web", "cli", "data"][i % 3].into()),
                    ..Default::default()
                },
                dependencies: vec![],
                archive: ArchiveInfo::describe(&(i as u64).to_le_bytes(), 16 * 1024),
                published_at: 1_700_000_000 + i as u64,
                publisher: key.public(),
                previous: None,
            };
            CatalogRecord::Release(Signed::sign(body, key).unwrap())
        })
        .collect()
}

/// `n` gossip messages, each a valid release of its own name signed by its own throwaway key:
/// what a flood of valid records looks like.
pub fn throwaway_flood(n: usize) -> Vec<Vec<u8>> {
    use agora_protocol::codec::Wire;
    (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            seed[8] = 0xF1;
            let key = PublisherSecret::from_bytes(seed);
            let r = release(
                &format!("flood-{i:06}"),
                Version::new(1, 0, 0),
                &(i as u64).to_le_bytes(),
                16 * 1024,
                &key,
            );
            agora_protocol::messages::GossipMessage::Release(r).to_wire()
        })
        .collect()
}

/// A signed head of `name` listing `versions`.
pub fn head(name: &str, versions: &[&str], seq: u64, key: &PublisherSecret) -> PackageHead {
    Signed::sign(
        HeadBody {
            name: name.parse().unwrap(),
            owner: key.public(),
            versions: versions.iter().map(|v| v.parse().unwrap()).collect(),
            seq,
            updated_at: 1_700_000_000,
        },
        key,
    )
    .unwrap()
}
