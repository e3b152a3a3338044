//! The registry on real swarms: publish and search across nodes, catalog sync, multi-provider
//! fetch with a corrupt provider, the trust rules over gossip, the DHT and sync, restarts,
//! and the cache quota. In-process nodes on loopback TCP, each with its own data directory.

#[path = "../common/mod.rs"]
mod common;

mod fetch;
mod publishing;
mod restart;
mod swarm;
mod sync;
mod trust;

use agora_daemon::catalog::trust::{Admission, TrustError};
use agora_daemon::catalog::{CatalogError, Ingested};
use agora_daemon::ops::repair::RepairMode;
use agora_daemon::ops::{Registry, RegistryError};
use agora_daemon::store::{CatalogWrite, Db};
use agora_daemon::{Node, NodeConfig};
use agora_protocol::codec::Wire;
use agora_protocol::dht::DhtValue;
use agora_protocol::ipc::IndexState;
use agora_protocol::messages::GossipMessage;
use agora_protocol::records::{
    ArchiveInfo, CatalogRecord, ReleaseBody, ReleaseRecord, Signed, YankBody,
};
use agora_protocol::search::SearchQuery;
use agora_protocol::{PackageMeta, PackageName, PublisherSecret, RecordId, Version, VersionReq};
use common::hostile::Hostile;
use common::*;
use libp2p::Multiaddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
const DEADLINE: Duration = Duration::from_secs(30);

/// Writes a package directory: a `package.toml` and a payload file of `payload` noise bytes.
fn package_dir(name: &str, version: &str, deps: &[&str], payload: usize, seed: u64) -> PathBuf {
    let dir = data_dir();
    let deps = deps
        .iter()
        .map(|d| format!("{d:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        dir.join("package.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"{version}\"\n\
             description = \"The {name} template pack\"\ncategory = \"starter\"\n\
             author = \"Ada\"\nlicense = \"MIT\"\ntags = [\"demo\"]\n\
             dependencies = [{deps}]\n\n[install]\nhint = \"kept verbatim\"\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/payload.bin"), noise(payload, seed)).unwrap();
    dir
}

async fn publish(node: &Node, dir: &Path, key: &PublisherSecret) -> ReleaseRecord {
    node.registry
        .publish(dir.to_owned(), key)
        .await
        .expect("publish")
        .record
}

fn names(registry: &Registry, q: &str) -> Vec<String> {
    registry
        .blocking_catalog()
        .search(&SearchQuery::text(q))
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.name)
        .collect()
}

/// Waits until `node`'s catalog holds exactly `want` records.
async fn await_catalog(node: &Node, want: usize, what: &str) {
    converge(what, DEADLINE, || async {
        match node.registry.view().record_count() {
            n if n == want => Ok(()),
            n => Err(format!("{n} records")),
        }
    })
    .await;
}

async fn shutdown(nodes: Vec<(Node, Multiaddr)>) {
    for (node, _) in nodes {
        node.shutdown().await;
    }
}

/// A release signed by `key` with an arbitrary archive, chained on `previous`.
fn forged(
    name: &str,
    version: &str,
    previous: Option<agora_protocol::RecordId>,
    key: &PublisherSecret,
    salt: u64,
) -> ReleaseRecord {
    Signed::sign(
        ReleaseBody {
            name: name.parse().unwrap(),
            version: version.parse().unwrap(),
            meta: PackageMeta {
                description: "not what the owner published".into(),
                ..Default::default()
            },
            dependencies: vec![],
            archive: ArchiveInfo::describe(&noise(1000, salt), 16 * 1024),
            published_at: 1_700_000_000,
            publisher: key.public(),
            previous,
        },
        key,
    )
    .unwrap()
}

/// Has `registry` admit `records` (signatures checked), on a blocking thread as the node
/// does; returns what it decided for each.
async fn ingest(
    registry: &Arc<Registry>,
    records: Vec<CatalogRecord>,
) -> Vec<(RecordId, Ingested)> {
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || registry.blocking_catalog().ingest(records, false))
        .await
        .unwrap()
        .unwrap()
}

/// Starts a node on `config`, admits `records` and stops it cleanly (its index sealed).
async fn store_and_stop(config: &NodeConfig, records: Vec<CatalogRecord>) {
    let node = Node::start(config.clone()).await.unwrap();
    ingest(&node.registry, records).await;
    node.shutdown().await;
}

/// Copies the directory `from` (files only, as a saved search index is) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
