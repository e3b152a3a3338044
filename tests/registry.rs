//! The registry on real swarms: publish and search across nodes, catalog sync, multi-provider
//! fetch with a corrupt provider, the trust rules over gossip, the DHT and sync, restarts,
//! and the cache quota. In-process nodes on loopback TCP, each with its own data directory.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
    ArchiveInfo, CatalogRecord, HeadBody, PackageHead, ReleaseBody, ReleaseRecord, Signed, YankBody,
};
use agora_protocol::search::SearchQuery;
use agora_protocol::{PackageMeta, PackageName, PublisherSecret, RecordId, Version, VersionReq};
use common::hostile::Hostile;
use common::*;
use libp2p::Multiaddr;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_published_on_node_a_is_found_by_a_typo_search_on_node_e() {
    init_tracing();
    let nodes = testnet(5).await;
    let key = publisher(1);
    let dir = package_dir("hello-world", "1.0.0", &[], 10_000, 1);
    let record = publish(&nodes[0].0, &dir, &key).await;
    assert_eq!(record.body.name.as_str(), "hello-world");
    // The ggen table we do not interpret is not lost: the archive holds package.toml as is.
    assert_eq!(record.body.meta.category.as_deref(), Some("starter"));

    let e = &nodes[4].0;
    converge("search on node E", DEADLINE, || async {
        let found = names(&e.registry, "helo-wrld");
        if found == ["hello-world"] {
            Ok(())
        } else {
            Err(format!("search returned {found:?}"))
        }
    })
    .await;
    let hit = &e
        .registry
        .search(SearchQuery::text("hello"))
        .await
        .unwrap()
        .hits[0];
    assert_eq!(
        (
            hit.version.as_str(),
            hit.author.as_deref(),
            hit.tags.clone()
        ),
        ("1.0.0", Some("Ada"), vec!["demo".to_string()])
    );
    let got = e
        .registry
        .blocking_catalog()
        .get(&"hello-world".parse().unwrap(), &VersionReq::STAR)
        .unwrap();
    assert_eq!(got, record);
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_a_network_with_a_thousand_releases_gets_all_of_them_by_sync() {
    init_tracing();
    let (seed, seed_addr) = start_node().await;
    let records = many_releases(1000, &publisher(2));
    let admitted = ingest(&seed.registry, records).await;
    assert_eq!(admitted.len(), 1000);
    let mut nodes = vec![(seed, seed_addr.clone())];
    for _ in 0..2 {
        let (node, addr) = start_node().await;
        join(&node, &seed_addr).await;
        nodes.push((node, addr));
    }
    converge_nodes(
        "every node can search the whole catalog",
        DEADLINE,
        &nodes,
        |_, n| async move {
            match n
                .registry
                .search(SearchQuery::default())
                .await
                .unwrap()
                .total
            {
                1000 => Ok(()),
                t => Err(format!("{t} packages searchable")),
            }
        },
    )
    .await;
    // A late joiner dials node 2 only.
    let (late, _) = start_node().await;
    join(&late, &nodes[2].1).await;
    converge(
        "the late joiner has the whole catalog",
        DEADLINE,
        || async {
            // Searchable, and counted as synced (the count is taken after the index update).
            let searchable = late
                .registry
                .search(SearchQuery::default())
                .await
                .unwrap()
                .total;
            let synced = late.registry.stats.records_synced.load(Ordering::Relaxed);
            match (searchable, synced) {
                (1000, 1000) => Ok(()),
                t => Err(format!("(searchable, synced) = {t:?}")),
            }
        },
    )
    .await;
    // Every record came by sync, verified, and was indexed.
    assert_eq!(late.registry.view().record_count(), 1000);
    let all = late.registry.search(SearchQuery::default()).await.unwrap();
    assert_eq!(
        all.categories,
        vec![
            ("web".to_string(), 334),
            ("cli".to_string(), 333),
            ("data".to_string(), 333)
        ]
    );
    late.shutdown().await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_mib_package_from_three_providers_survives_a_corrupt_one_which_is_then_avoided() {
    init_tracing();
    let nodes = testnet(5).await;
    let key = publisher(3);
    let big = publish(
        &nodes[0].0,
        &package_dir("big", "1.0.0", &[], 20 * 1024 * 1024, 3),
        &key,
    )
    .await;
    let small = publish(
        &nodes[0].0,
        &package_dir("small", "1.0.0", &[], 3 * 1024 * 1024, 4),
        &key,
    )
    .await;
    assert_eq!(big.body.archive.chunks.len(), 21);
    // Nodes 1 and 2 fetch both packages and become providers.
    for i in [1, 2] {
        converge("release records arrive", DEADLINE, || async {
            if nodes[i].0.registry.view().exists(&"small".parse().unwrap()) {
                Ok(())
            } else {
                Err(format!("node {i} lacks them"))
            }
        })
        .await;
        for r in [&big, &small] {
            let f = nodes[i]
                .0
                .registry
                .fetch(&r.body.name, &r.body.version)
                .await
                .unwrap();
            assert!(!f.cached);
        }
    }
    // Node 2's copy of the big archive rots on disk, and node 2 serves it unchecked: a
    // provider that sends corrupt chunks (an honest node checks each chunk before it sends it).
    nodes[2].0.registry.blobs.serve_unchecked();
    let corrupt = nodes[2].0.registry.blobs.blob_path(&big.body.archive.id);
    let mut bytes = std::fs::read(&corrupt).unwrap();
    for b in bytes.iter_mut().step_by(4096) {
        *b ^= 0xff;
    }
    std::fs::write(&corrupt, bytes).unwrap();

    let fetcher = &nodes[4].0;
    let bad_peer = nodes[2].0.network.peer_id();
    let providers: Vec<_> = (0..3).map(|i| nodes[i].0.network.peer_id()).collect();
    converge("three providers are known", DEADLINE, || async {
        let p = all_providers(
            fetcher,
            agora_protocol::dht::DhtKey::Content(big.body.archive.id).to_bytes(),
        )
        .await;
        if providers.iter().all(|x| p.contains(x)) {
            Ok(())
        } else {
            Err(format!("{} providers", p.len()))
        }
    })
    .await;
    let before = fetcher.registry.reputation_of(&bad_peer).1;
    let got = fetcher
        .registry
        .fetch(&big.body.name, &big.body.version)
        .await
        .expect("the fetch succeeds despite the corrupt provider");
    let data = std::fs::read(&got.path).unwrap();
    assert_eq!(agora_protocol::ContentId::of(&data), big.body.archive.id);
    assert_eq!(got.served_by.iter().map(|(_, n)| n).sum::<u32>(), 21);
    assert!(got.served_by.iter().all(|(p, _)| *p != bad_peer));
    let (record, after) = fetcher.registry.reputation_of(&bad_peer);
    let record = record.unwrap();
    assert!(record.bad_data >= 1, "bad chunks counted: {record:?}");
    assert!(
        before.is_finite() && after == f64::NEG_INFINITY,
        "score {before} -> {after}"
    );
    assert_eq!(
        fetcher.registry.rank_peers(providers.clone()).len(),
        2,
        "the corrupt peer is left out of the ranking while banned"
    );
    // The next fetch (whose archive node 2 holds intact) does not ask node 2 at all. Two
    // fetches of it at once: one goes to the network, the other waits for it and finds the
    // archive in the cache.
    let fetches_before = fetcher.registry.stats.fetches.load(Ordering::Relaxed);
    let (next, twin) = tokio::join!(
        fetcher
            .registry
            .fetch(&small.body.name, &small.body.version),
        fetcher
            .registry
            .fetch(&small.body.name, &small.body.version)
    );
    let (next, twin) = (next.unwrap(), twin.unwrap());
    let (next, twin) = if next.cached {
        (twin, next)
    } else {
        (next, twin)
    };
    assert!(
        !next.cached && twin.cached,
        "exactly one fetch went to the network"
    );
    assert_eq!(twin.path, next.path);
    assert_eq!(
        fetcher.registry.stats.fetches.load(Ordering::Relaxed),
        fetches_before + 1
    );
    assert_eq!(
        next.served_by
            .iter()
            .map(|(_, n)| *n as usize)
            .sum::<usize>(),
        small.body.archive.chunks.len()
    );
    assert!(next.served_by.iter().all(|(p, _)| *p != bad_peer));

    // An interrupted download resumes: node 3 holds the first 10 chunks from an earlier try,
    // one of them damaged (it is fetched again).
    let archive = std::fs::read(nodes[0].0.registry.blobs.blob_path(&big.body.archive.id)).unwrap();
    let chunk = big.body.archive.chunk_size as usize;
    let mut partial = archive[..10 * chunk].to_vec();
    partial[5 * chunk] ^= 1;
    let resumer = &nodes[3].0.registry;
    std::fs::write(resumer.blobs.partial_path(&big.body.archive.id), partial).unwrap();
    let resumed = resumer
        .fetch(&big.body.name, &big.body.version)
        .await
        .unwrap();
    assert_eq!(resumed.resumed_chunks, 9);
    assert_eq!(
        resumed.served_by.iter().map(|(_, n)| n).sum::<u32>(),
        21 - 9
    );
    assert_eq!(std::fs::read(&resumed.path).unwrap(), archive);
    assert!(!resumer.blobs.partial_path(&big.body.archive.id).exists());

    shutdown(nodes).await;
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

/// A signed head of `name` listing `versions`.
fn head(name: &str, versions: &[&str], seq: u64, key: &PublisherSecret) -> PackageHead {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_only_on_the_dht_is_looked_up_and_a_stranger_head_is_ignored() {
    init_tracing();
    // The only holder of these records is a bare Kademlia peer: no gossip, no sync, so the
    // node's catalog has them only if it looks them up.
    let owner = publisher(21);
    let stranger = publisher(22);
    let v1 = forged("dht-only", "1.0.0", None, &owner, 1);
    let v2 = forged("dht-only", "1.1.0", Some(v1.id()), &owner, 2);
    let mut holder = Hostile::new();
    let holder_addr = holder.listen().await;
    for value in [
        DhtValue::Head(head("dht-only", &["1.0.0", "1.1.0"], 2, &owner)),
        DhtValue::Release(v1.clone()),
        DhtValue::Release(v2.clone()),
        // A head for a name the node already owns through someone else: to be ignored.
        DhtValue::Head(head("local-pkg", &["9.0.0"], 99, &stranger)),
        DhtValue::Release(forged("local-pkg", "9.0.0", None, &stranger, 3)),
    ] {
        holder.hold(value.key().to_bytes(), value.encode());
    }
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let holder = holder.drive(stopped);

    let (node, _) = start_node().await;
    let local = publish(
        &node,
        &package_dir("local-pkg", "1.0.0", &[], 100, 4),
        &publisher(23),
    )
    .await;
    node.network.dial(holder_addr).await.unwrap();
    let reg = &node.registry;
    let dht_only = "dht-only".parse().unwrap();
    assert!(matches!(
        reg.blocking_catalog().get(&dht_only, &VersionReq::STAR),
        Err(CatalogError::NotFound { .. })
    ));

    // Missing: looked up, the newest listed release admitted with its owner.
    assert!(reg.look_up(&dht_only, &VersionReq::STAR).await.unwrap());
    assert_eq!(
        reg.blocking_catalog()
            .get(&dht_only, &VersionReq::STAR)
            .unwrap(),
        v2
    );
    assert_eq!(reg.view().owner(&dht_only), Some(owner.public()));
    assert_eq!(names(reg, "dht-only"), ["dht-only"]);
    // An older version asked for by requirement: looked up too, and it fills in the chain.
    let old: VersionReq = "=1.0.0".parse().unwrap();
    assert!(reg.look_up(&dht_only, &old).await.unwrap());
    assert_eq!(reg.blocking_catalog().get(&dht_only, &old).unwrap(), v1);
    // Present now: no query at all.
    assert!(!reg.look_up(&dht_only, &VersionReq::STAR).await.unwrap());

    // A known name keeps its owner: the stranger's newer head is not followed.
    let local_name = "local-pkg".parse().unwrap();
    let newer: VersionReq = ">=9".parse().unwrap();
    assert!(!reg.look_up(&local_name, &newer).await.unwrap());
    assert_eq!(
        reg.blocking_catalog()
            .get(&local_name, &VersionReq::STAR)
            .unwrap(),
        local
    );
    // Nothing anywhere: not found, nothing changed.
    let ghost = "ghost".parse().unwrap();
    assert!(!reg.look_up(&ghost, &VersionReq::STAR).await.unwrap());
    assert_eq!(reg.view().record_count(), 3);

    let _ = stop.send(());
    holder.await.unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_by_gossip_dht_and_sync_a_foreign_key_and_equivocation_are_all_caught() {
    init_tracing();
    let nodes = testnet(3).await;
    let (owner, stranger) = (publisher(4), publisher(5));
    let v1 = publish(
        &nodes[0].0,
        &package_dir("pkg", "1.0.0", &[], 1000, 5),
        &owner,
    )
    .await;
    let v2 = publish(
        &nodes[0].0,
        &package_dir("pkg", "2.0.0", &[], 1000, 6),
        &owner,
    )
    .await;
    assert_eq!(v2.body.previous, Some(v1.id()));
    converge_nodes(
        "both versions everywhere",
        DEADLINE,
        &nodes,
        |_, n| async move {
            match n.registry.view().versions(&"pkg".parse().unwrap()) {
                Ok(v) if v.len() == 2 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let node0 = &nodes[0].0;
    let stats = &node0.registry.stats;

    // A release that goes back along its chain, properly signed by the owner's key.
    let fork = forged("pkg", "1.5.0", Some(v2.id()), &owner, 7);
    let mut hostile = Hostile::new();
    hostile.connect(std::slice::from_ref(&nodes[0].1)).await;

    // 1. Through gossip.
    hostile
        .publish_raw(GossipMessage::Release(fork.clone()).to_wire())
        .await;
    // 2. Through a DHT put to node 0.
    let value = DhtValue::Release(fork.clone());
    hostile
        .put_raw(
            value.key().to_bytes(),
            value.encode(),
            vec![node0.network.peer_id()],
        )
        .await;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = hostile.drive(stopped);
    converge("gossip and DHT rollbacks refused", DEADLINE, || async {
        let counts = (
            stats.rollbacks_refused.load(Ordering::Relaxed),
            stats.gossip_ignored.load(Ordering::Relaxed),
            stats.gossip_rejected.load(Ordering::Relaxed),
            stats.records_refused.load(Ordering::Relaxed),
        );
        // One rollback decided, whichever copy came first; the other is known as refused.
        // The gossip message is ignored (valid, refused by this node's view of the name, so
        // not its relay's fault) and the DHT put not stored.
        if counts == (1, 1, 0, 1) {
            Ok(())
        } else {
            Err(format!(
                "(rollbacks, gossip ignored, gossip rejected, DHT refused) = {counts:?}"
            ))
        }
    })
    .await;
    let _ = stop.send(());
    let mut hostile = driver.await.unwrap();

    // 3. Through sync: a node that was offline accepted the fork (it never saw 2.0.0).
    let (offline, _) = start_node().await;
    let reg = offline.registry.clone();
    let (r1, rf) = (v1.clone(), fork.clone());
    let admitted = tokio::task::spawn_blocking(move || {
        reg.blocking_catalog().ingest(
            vec![CatalogRecord::Release(r1), CatalogRecord::Release(rf)],
            false,
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(admitted.len(), 2);
    assert!(offline.registry.view().has_record(&fork.id()));
    let synced_before = stats.syncs_completed.load(Ordering::SeqCst);
    join(&offline, &nodes[0].1).await;
    converge(
        "the offline node catches up with 2.0.0",
        DEADLINE,
        || async {
            if offline.registry.view().has_record(&v2.id()) {
                Ok(())
            } else {
                Err("no 2.0.0 yet".into())
            }
        },
    )
    .await;
    converge("node 0 syncs with the offline node", DEADLINE, || async {
        match stats.syncs_completed.load(Ordering::SeqCst) {
            n if n > synced_before => Ok(()),
            _ => Err("no sync yet".into()),
        }
    })
    .await;
    // It knows the fork as refused: not fetched again, not admitted.
    assert_eq!(stats.rollbacks_refused.load(Ordering::Relaxed), 1);
    assert_eq!(node0.registry.view().refusals_remembered(), 1);
    for (i, (n, _)) in nodes.iter().enumerate() {
        assert!(
            !n.registry.view().has_record(&fork.id()),
            "node {i} took the fork"
        );
        assert_eq!(
            n.registry
                .blocking_catalog()
                .get(&"pkg".parse().unwrap(), &VersionReq::STAR)
                .unwrap(),
            v2,
            "node {i} resolves to the newest release"
        );
    }

    // A second key publishing an owned name: refused locally and on the network.
    let err = node0
        .registry
        .publish(package_dir("pkg", "3.0.0", &[], 1000, 8), &stranger)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::Trust(TrustError::NotOwner { owner: pinned, signer, .. })
                if *pinned == owner.public() && *signer == stranger.public()
        ),
        "{err}"
    );
    hostile
        .publish_raw(
            GossipMessage::Release(forged("pkg", "3.0.0", Some(v2.id()), &stranger, 9)).to_wire(),
        )
        .await;
    // Equivocation: the owner's key signs a second, different 2.0.0.
    let twin = forged("pkg", "2.0.0", Some(v1.id()), &owner, 10);
    hostile
        .publish_raw(GossipMessage::Release(twin.clone()).to_wire())
        .await;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = hostile.drive(stopped);
    converge_nodes(
        "equivocation is flagged everywhere",
        DEADLINE,
        &nodes,
        |_, n| {
            let (v2, twin) = (v2.id(), twin.id());
            async move {
                let ev = n.registry.view().equivocations();
                match ev.get("pkg") {
                    Some(versions) if versions[&Version::new(2, 0, 0)] == vec![v2, twin] => Ok(()),
                    other => Err(format!("evidence {other:?}")),
                }
            }
        },
    )
    .await;
    // The rollback and the stranger's release are valid records node 0's rules refuse:
    // ignored, and nothing was invalid.
    assert_eq!(stats.gossip_ignored.load(Ordering::Relaxed), 2);
    assert_eq!(stats.gossip_rejected.load(Ordering::Relaxed), 0);
    assert_eq!(stats.equivocations.load(Ordering::Relaxed), 1);
    for (n, _) in &nodes {
        assert!(matches!(
            n.registry
                .blocking_catalog()
                .release(&"pkg".parse().unwrap(), &Version::new(2, 0, 0)),
            Err(CatalogError::Equivocated { .. })
        ));
        // New resolutions fall back to the newest version that is not in dispute.
        assert_eq!(
            n.registry
                .blocking_catalog()
                .get(&"pkg".parse().unwrap(), &VersionReq::STAR)
                .unwrap(),
            v1
        );
        assert_eq!(
            n.registry.view().owner(&"pkg".parse().unwrap()),
            Some(owner.public())
        );
    }
    let _ = stop.send(());
    driver.await.unwrap();
    offline.shutdown().await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_has_its_catalog_pins_reputation_and_blobs_and_searches_offline() {
    init_tracing();
    let seed_dir = data_dir();
    let dir = data_dir();
    let (seed, seed_addr) = start_with(node_config(&seed_dir)).await;
    let config = node_config(&dir);
    let (node, _) = start_with(config.clone()).await;
    join(&node, &seed_addr).await;
    let key = publisher(6);
    let own = publish(&node, &package_dir("mine", "1.0.0", &[], 5000, 11), &key).await;
    let theirs = publish(
        &seed,
        &package_dir("theirs", "2.1.0", &[], 300_000, 12),
        &publisher(7),
    )
    .await;
    converge("the seed's release arrives", DEADLINE, || async {
        if node.registry.view().has_record(&theirs.id()) {
            Ok(())
        } else {
            Err("missing".into())
        }
    })
    .await;
    let fetched = node
        .registry
        .fetch(&theirs.body.name, &theirs.body.version)
        .await
        .unwrap();
    node.registry.pin(&fetched.content, true).await.unwrap();
    let seed_peer = seed.network.peer_id();
    let rep_before = node.registry.reputation_of(&seed_peer).0.unwrap();
    assert_eq!(rep_before.successes, 1);
    let catalog_before = node.registry.view().record_count();
    node.shutdown().await;
    seed.shutdown().await;

    // Same data directory, same identity, nobody to talk to.
    let node = Node::start(config).await.unwrap();
    assert_eq!(node.registry.view().record_count(), catalog_before);
    assert_eq!(node.registry.startup.records, 2);
    assert!(!node.registry.startup.index_rebuilt);
    assert_eq!(names(&node.registry, "theirs"), ["theirs"]);
    assert_eq!(names(&node.registry, "mine"), ["mine"]);
    assert_eq!(
        node.registry.view().owner(&"mine".parse().unwrap()),
        Some(key.public())
    );
    let meta = node.registry.blobs.meta(&fetched.content).unwrap();
    assert!(meta.pinned);
    assert!(node.registry.blobs.has(&own.body.archive.id));
    let again = node
        .registry
        .fetch(&theirs.body.name, &theirs.body.version)
        .await
        .unwrap();
    assert!(again.cached);
    assert_eq!(
        node.registry.reputation_of(&seed_peer).0.unwrap().successes,
        rep_before.successes
    );
    // Its own head and release are back in its DHT store (put back while it serves), served
    // before anyone republishes.
    for key in [
        agora_protocol::dht::DhtKey::Head("mine".parse().unwrap()),
        agora_protocol::dht::DhtKey::Release("mine".parse().unwrap(), Version::new(1, 0, 0)),
    ] {
        converge("the record is back in the DHT store", DEADLINE, || async {
            let found = node
                .network
                .get_record(key.to_bytes(), agora_daemon::network::RecordQuorum::First)
                .await
                .map_err(|e| e.to_string())?;
            if found.len() == 1 {
                Ok(())
            } else {
                Err(format!("{key}: {} records", found.len()))
            }
        })
        .await;
    }
    // Publishing 1.0.0 again is refused: the store remembers.
    let err = node
        .registry
        .publish(package_dir("mine", "1.0.0", &[], 5000, 13), &key)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "mine@1.0.0 is already published");
    node.shutdown().await;
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

/// The owner and highest-version pins are written with the records, in the same transactions:
/// a store where they disagree with the log is damaged. With repair off the node refuses to
/// start on it, naming the file and the pin; with repair on, it sets it aside and starts anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_pins_disagree_with_its_log_is_refused_at_start() {
    init_tracing();
    let dir = data_dir();
    let mut config = node_config(&dir);
    let key = publisher(8);
    let records = many_releases(4, &key);
    store_and_stop(&config, records[..3].to_vec()).await;

    let db_path = dir.join("catalog.redb");
    let pristine = dir.join("catalog.redb.pristine");
    std::fs::copy(&db_path, &pristine).unwrap();
    let name = |s: &str| s.parse::<PackageName>().unwrap();
    let stranger = publisher(9).public();
    let unpinned = records[3].clone();
    let cases = [
        (
            CatalogWrite {
                owners: vec![(name("synthetic-00001"), stranger)],
                ..Default::default()
            },
            format!(
                "owner pin of 'synthetic-00001' is {stranger} but the catalog says {}",
                key.public()
            ),
        ),
        (
            CatalogWrite {
                highest: vec![(name("synthetic-00002"), Version::new(9, 9, 9))],
                ..Default::default()
            },
            "highest version pinned for 'synthetic-00002' is 9.9.9 but the catalog says 1.0.0"
                .to_owned(),
        ),
        (
            CatalogWrite {
                owners: vec![(name("not-in-the-catalog"), key.public())],
                ..Default::default()
            },
            "owner pin for 'not-in-the-catalog', which the catalog does not have".to_owned(),
        ),
        (
            CatalogWrite {
                highest: vec![(name("a-first-name"), Version::new(1, 0, 0))],
                ..Default::default()
            },
            "highest version pinned for 'a-first-name', which has no owner pin".to_owned(),
        ),
        (
            CatalogWrite {
                highest: vec![(name("zz-last-name"), Version::new(1, 0, 0))],
                ..Default::default()
            },
            "highest version pinned for 'zz-last-name', which has no owner pin".to_owned(),
        ),
        (
            CatalogWrite {
                records: vec![(unpinned.id(), unpinned)],
                ..Default::default()
            },
            "the catalog has 4 names but 3 owner pins".to_owned(),
        ),
    ];
    for (write, expected) in cases {
        Db::open(&db_path).unwrap().write_catalog(&write).unwrap();
        // Refused the same way twice: the refusal repaired or dropped nothing.
        config.registry.repair = RepairMode::Off;
        for _ in 0..2 {
            let err = Node::start(config.clone()).await.err().expect("refused");
            assert_eq!(
                err.to_string(),
                format!("{} is damaged: {expected}", db_path.display())
            );
        }
        config.registry.repair = RepairMode::Auto;
        let node = Node::start(config.clone()).await.unwrap();
        let repair = node.registry.repair().expect("repaired");
        assert_eq!(
            repair.cause,
            format!("{} is damaged: {expected}", db_path.display())
        );
        // Nothing of it was this node's own: the catalog comes back from peers.
        assert_eq!((repair.from_journal, node.registry.startup.records), (0, 0));
        node.shutdown().await;
        std::fs::remove_file(repair.set_aside.unwrap()).unwrap();
        std::fs::copy(&pristine, &db_path).unwrap();
    }

    let node = Node::start(config).await.unwrap();
    assert_eq!(node.registry.startup.records, 3);
    assert!(!node.registry.startup.index_rebuilt);
    assert_eq!(
        names(&node.registry, "synthetic"),
        ["synthetic-00000", "synthetic-00001", "synthetic-00002"]
    );
    node.shutdown().await;
}

/// A node whose search index is gone (a crash before it was sealed) rebuilds it from the
/// catalog at start, every name of several chunks of names searchable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_search_index_is_rebuilt_from_the_catalog_at_start() {
    init_tracing();
    let dir = data_dir();
    let config = node_config(&dir);
    const N: usize = 2 * 4096 + 5;
    store_and_stop(&config, many_releases(N, &publisher(10))).await;
    std::fs::remove_dir_all(dir.join("index")).unwrap();

    let node = Node::start(config).await.unwrap();
    assert!(node.registry.startup.index_rebuilt);
    // The node serves while it rebuilds; the first search waits for the whole index.
    let all = node
        .registry
        .search(SearchQuery::text("synthetic"))
        .await
        .unwrap();
    assert_eq!(all.total, N as u64);
    assert_eq!(node.registry.view().index_state(), IndexState::Ready);
    assert_eq!(node.registry.view().indexed_count(), N as u64);
    let per_category = |i: usize| (0..N).filter(|k| k % 3 == i).count() as u64;
    let mut categories = all.categories;
    categories.sort();
    assert_eq!(
        categories,
        [
            ("cli".to_owned(), per_category(1)),
            ("data".to_owned(), per_category(2)),
            ("web".to_owned(), per_category(0)),
        ]
    );
    for i in [0, 4095, 4096, 8191, 8192, N - 1] {
        let name = format!("synthetic-{i:05}");
        assert_eq!(names(&node.registry, &name).first(), Some(&name));
    }
    node.shutdown().await;
}

/// A release admitted while the node rebuilds its search index is searchable once the rebuild
/// ends, and a node stopped while it rebuilds waits for the rebuild and saves the whole index:
/// the next start loads it instead of rebuilding again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_arrives_during_an_index_rebuild_is_indexed_and_the_index_is_saved_at_stop() {
    init_tracing();
    let dir = data_dir();
    let config = node_config(&dir);
    let key = publisher(13);
    const N: usize = 2 * 4096;
    store_and_stop(&config, many_releases(N, &key)).await;
    std::fs::remove_dir_all(dir.join("index")).unwrap();

    let node = Node::start(config.clone()).await.unwrap();
    assert!(node.registry.startup.index_rebuilt);
    let late = CatalogRecord::Release(release(
        "late-arrival",
        Version::new(1, 0, 0),
        b"late",
        16 * 1024,
        &key,
    ));
    ingest(&node.registry, vec![late]).await;
    assert_eq!(names(&node.registry, "late-arrival"), ["late-arrival"]);
    assert_eq!(node.registry.view().indexed_count(), N as u64 + 1);
    node.shutdown().await;

    // Stopped at once after a start that rebuilds: the stop waits for the rebuild.
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let node = Node::start(config.clone()).await.unwrap();
    assert!(node.registry.startup.index_rebuilt);
    node.shutdown().await;

    let node = Node::start(config).await.unwrap();
    let startup = &node.registry.startup;
    assert_eq!((startup.index_caught_up, startup.index_rebuilt), (0, false));
    assert_eq!(node.registry.view().index_state(), IndexState::Ready);
    assert_eq!(node.registry.view().indexed_count(), N as u64 + 1);
    let all = node
        .registry
        .search(SearchQuery::text("synthetic"))
        .await
        .unwrap();
    assert_eq!(all.total, N as u64);
    assert_eq!(names(&node.registry, "late-arrival"), ["late-arrival"]);
    node.shutdown().await;
}

/// A running node saves its search index once the copy on disk is an overlay's worth of
/// records (256) or an eighth of the index behind its catalog, not before: a crash after that
/// leaves a copy the next start catches up instead of rebuilding the whole index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_saves_its_search_index_once_the_saved_copy_is_far_behind() {
    init_tracing();
    let dir = data_dir();
    let config = node_config(&dir);
    let key = publisher(14);
    let seal_file = dir.join("index").join("agora-sealed");
    let mut records = many_releases(300, &key);
    records.extend((0..10).map(|i| {
        let name = format!("later-{i}");
        CatalogRecord::Release(release(&name, Version::new(1, 0, 0), b"l", 16 * 1024, &key))
    }));
    let node = Node::start(config.clone()).await.unwrap();

    ingest(&node.registry, records[..255].to_vec()).await;
    assert!(!node.registry.save_index_if_behind().await.unwrap());
    assert!(!seal_file.exists());
    ingest(&node.registry, records[255..300].to_vec()).await;
    assert!(node.registry.save_index_if_behind().await.unwrap());
    let sealed = std::fs::read_to_string(&seal_file).unwrap();
    assert!(sealed.contains(" records=300 "), "{sealed}");
    assert!(!node.registry.save_index_if_behind().await.unwrap());
    ingest(&node.registry, records[300..].to_vec()).await;
    assert!(!node.registry.save_index_if_behind().await.unwrap());
    assert_eq!(std::fs::read_to_string(&seal_file).unwrap(), sealed);

    // A crash now leaves the copy saved at 300 records: the next start re-indexes the 10
    // names logged after it.
    let saved = dir.join("index-saved");
    copy_dir(&dir.join("index"), &saved);
    node.shutdown().await;
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    copy_dir(&saved, &dir.join("index"));
    let node = Node::start(config).await.unwrap();
    let startup = &node.registry.startup;
    assert_eq!(
        (startup.index_caught_up, startup.index_rebuilt),
        (10, false)
    );
    assert_eq!(node.registry.view().indexed_count(), 310);
    assert_eq!(
        names(&node.registry, "later-9").first().map(String::as_str),
        Some("later-9")
    );
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

/// A node that stopped without saving its search index (a crash) after its catalog grew
/// finds the copy saved at its last clean shutdown, re-indexes only the names of the records
/// logged after it, and searches as a rebuilt index would. A copy saved for another catalog
/// is not taken for it, and when the names to re-index are too many, the index is rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_search_index_is_caught_up_with_the_records_logged_after_it() {
    init_tracing();
    let dir = data_dir();
    let config = node_config(&dir);
    let key = publisher(11);
    const N: usize = 300;
    store_and_stop(&config, many_releases(N, &key)).await;
    let saved = dir.join("index-saved");
    copy_dir(&dir.join("index"), &saved);

    // After that clean shutdown: a new name, a newer version of one name, a yank of another.
    let mut newer = release(
        "synthetic-00007",
        Version::new(2, 0, 0),
        b"v2",
        16 * 1024,
        &key,
    );
    newer.body.meta.description = "rewritten from scratch".into();
    newer = Signed::sign(newer.body, &key).unwrap();
    let yank = Signed::sign(
        YankBody {
            name: "synthetic-00009".parse().unwrap(),
            version: Version::new(1, 0, 0),
            publisher: key.public(),
            yanked_at: 1_700_000_500,
            reason: "broken".into(),
        },
        &key,
    )
    .unwrap();
    let later = vec![
        CatalogRecord::Release(release(
            "later-pkg",
            Version::new(1, 0, 0),
            b"x",
            16 * 1024,
            &key,
        )),
        CatalogRecord::Release(newer),
        CatalogRecord::Yank(yank),
    ];
    store_and_stop(&config, later).await;
    // The crash: the index on disk is the copy saved before those three records.
    let restore_saved = || {
        std::fs::remove_dir_all(dir.join("index")).unwrap();
        copy_dir(&saved, &dir.join("index"));
    };
    restore_saved();

    let node = Node::start(config.clone()).await.unwrap();
    let startup = &node.registry.startup;
    assert_eq!((startup.index_caught_up, startup.index_rebuilt), (3, false));
    let all = node
        .registry
        .search(SearchQuery::text("synthetic"))
        .await
        .unwrap();
    assert_eq!(all.total, N as u64 - 1, "the yanked one is gone");
    assert!(!names(&node.registry, "synthetic-00009").contains(&"synthetic-00009".to_owned()));
    assert_eq!(names(&node.registry, "later-pkg"), ["later-pkg"]);
    let rewritten = node
        .registry
        .search(SearchQuery::text("rewritten scratch"))
        .await
        .unwrap();
    assert_eq!(
        rewritten
            .hits
            .iter()
            .map(|h| (h.name.as_str(), h.version.as_str()))
            .collect::<Vec<_>>(),
        [("synthetic-00007", "2.0.0")]
    );
    node.shutdown().await;

    // Another catalog with more records than the saved copy reflects: rebuilt, not caught up.
    let other_dir = data_dir();
    let other = node_config(&other_dir);
    store_and_stop(&other, many_releases(N + 1, &publisher(12))).await;
    std::fs::remove_dir_all(other_dir.join("index")).unwrap();
    copy_dir(&saved, &other_dir.join("index"));
    let node = Node::start(other).await.unwrap();
    let startup = &node.registry.startup;
    assert_eq!((startup.index_caught_up, startup.index_rebuilt), (0, true));
    let all = node
        .registry
        .search(SearchQuery::text("synthetic"))
        .await
        .unwrap();
    assert_eq!(all.total, N as u64 + 1);
    node.shutdown().await;

    // More names after the saved copy than a catch-up takes (an overlay's worth, 256):
    // rebuilt.
    let more: Vec<CatalogRecord> = (0..257)
        .map(|i| {
            let name = format!("more-{i:03}");
            CatalogRecord::Release(release(&name, Version::new(1, 0, 0), b"m", 16 * 1024, &key))
        })
        .collect();
    store_and_stop(&config, more).await;
    restore_saved();
    let node = Node::start(config).await.unwrap();
    let startup = &node.registry.startup;
    assert_eq!((startup.index_caught_up, startup.index_rebuilt), (0, true));
    let all = node
        .registry
        .search(SearchQuery::text("more"))
        .await
        .unwrap();
    assert_eq!(all.total, 257);
    node.shutdown().await;
}

/// Two nodes that listen on QUIC alone: the record reaches the fetcher and the archive comes
/// over QUIC, whole and verified (the transport's TLS is the patched libp2p-tls,
/// vendor/README.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_is_fetched_over_quic_alone() {
    init_tracing();
    let quic: Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap();
    let (provider, provider_addr) = Node::start_listening(node_config(&data_dir()), quic.clone())
        .await
        .unwrap();
    let (fetcher, _) = Node::start_listening(node_config(&data_dir()), quic)
        .await
        .unwrap();
    assert!(
        provider_addr
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1)),
        "{provider_addr}"
    );
    join(&fetcher, &provider_addr).await;
    let dir = package_dir("over-quic", "1.0.0", &[], 2_500_000, 41);
    let r = publish(&provider, &dir, &publisher(41)).await;
    await_catalog(&fetcher, 1, "the release reaches the fetcher").await;
    let f = fetcher
        .registry
        .fetch(&r.body.name, &r.body.version)
        .await
        .unwrap();
    let archive = &r.body.archive;
    assert_eq!(
        (f.content, f.size, f.cached),
        (archive.id, archive.size, false)
    );
    assert_eq!(
        f.served_by,
        [(provider.network.peer_id(), archive.chunks.len() as u32)]
    );
    assert_eq!(std::fs::metadata(&f.path).unwrap().len(), archive.size);
    fetcher.shutdown().await;
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_quota_holds_and_pinned_blobs_survive_eviction() {
    init_tracing();
    let (provider, provider_addr) = start_node().await;
    let mut config = node_config(&data_dir());
    config.registry.cache_quota = 3 * 1024 * 1024;
    let (fetcher, _) = start_with(config).await;
    join(&fetcher, &provider_addr).await;
    let key = publisher(8);
    let mut releases = Vec::new();
    for i in 0..4u64 {
        let dir = package_dir(&format!("cached-{i}"), "1.0.0", &[], 1_200_000, 20 + i);
        releases.push(publish(&provider, &dir, &key).await);
    }
    await_catalog(&fetcher, 4, "all four releases arrive").await;
    let mut ids = Vec::new();
    for (i, r) in releases.iter().enumerate() {
        let f = fetcher
            .registry
            .fetch(&r.body.name, &r.body.version)
            .await
            .unwrap();
        ids.push(f.content);
        if i == 0 {
            fetcher.registry.pin(&f.content, true).await.unwrap();
        }
    }
    let usage = fetcher.registry.blobs.usage();
    assert!(
        usage.cached_bytes <= usage.quota,
        "{} cached bytes over a quota of {}",
        usage.cached_bytes,
        usage.quota
    );
    let kept: Vec<bool> = ids
        .iter()
        .map(|id| fetcher.registry.blobs.has(id))
        .collect();
    // The pinned first one stays; the least recently used unpinned one went.
    assert_eq!(kept, [true, false, true, true]);
    assert!(!fetcher.registry.blobs.blob_path(&ids[1]).exists());
    assert_eq!(fetcher.registry.blobs.persisted_count().unwrap(), 3);
    fetcher.shutdown().await;
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_separate_networks_converge_when_they_connect() {
    init_tracing();
    let left = testnet(2).await;
    let right = testnet(2).await;
    let l = publish(
        &left[0].0,
        &package_dir("left-pkg", "1.0.0", &[], 100, 30),
        &publisher(9),
    )
    .await;
    let r = publish(
        &right[0].0,
        &package_dir("right-pkg", "1.0.0", &[], 100, 31),
        &publisher(10),
    )
    .await;
    join(&left[1].0, &right[1].1).await;
    let all: Vec<(Node, Multiaddr)> = left.into_iter().chain(right).collect();
    converge_nodes("both releases on all four nodes", DEADLINE, &all, |_, n| {
        let (l, r) = (l.id(), r.id());
        async move {
            if n.registry.view().has_record(&l) && n.registry.view().has_record(&r) {
                Ok(())
            } else {
                Err(format!("catalog of {}", n.registry.view().record_count()))
            }
        }
    })
    .await;
    shutdown(all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_cut_in_two_publish_on_both_sides_and_converge_once_healed() {
    init_tracing();
    let nodes = testnet(10).await;
    let (left, right) = nodes.split_at(5);
    let ids = |half: &[(Node, Multiaddr)]| -> Vec<libp2p::PeerId> {
        half.iter().map(|(n, _)| n.network.peer_id()).collect()
    };
    let (left_ids, right_ids) = (ids(left), ids(right));
    let shared_key = publisher(20);
    let shared = publish(
        &left[0].0,
        &package_dir("shared", "1.0.0", &[], 100, 50),
        &shared_key,
    )
    .await;
    converge_nodes("shared@1.0.0 everywhere", DEADLINE, &nodes, |_, n| {
        let id = shared.id();
        async move {
            n.registry
                .view()
                .has_record(&id)
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        }
    })
    .await;

    // The cut: every node blocks every node of the other half, either way.
    let cut = |blocked: bool| {
        let (left_ids, right_ids) = (&left_ids, &right_ids);
        async move {
            for (half, others) in [(left, right_ids), (right, left_ids)] {
                for (node, _) in half {
                    for peer in others {
                        let net = &node.network;
                        let done = if blocked {
                            net.block_peer(*peer).await
                        } else {
                            net.unblock_peer(*peer).await
                        };
                        done.unwrap();
                    }
                }
            }
        }
    };
    cut(true).await;
    converge_nodes("no connection crosses the cut", DEADLINE, &nodes, |i, n| {
        let others = if i < 5 { &right_ids } else { &left_ids };
        async move {
            let peers = n.network.peers().await.map_err(|e| e.to_string())?;
            match peers.iter().filter(|p| others.contains(p)).count() {
                0 if !peers.is_empty() => Ok(()),
                0 => Err("no peer on its own side yet".into()),
                n => Err(format!("{n} peers across the cut")),
            }
        }
    })
    .await;

    // Each side publishes while apart; the right side also updates the shared package.
    let (left_key, right_key) = (publisher(21), publisher(22));
    let mut left_records = Vec::new();
    let mut right_records = Vec::new();
    for i in 0..3 {
        let (l, r) = (&left[1 + i].0, &right[1 + i].0);
        let name = format!("left-{i}");
        left_records.push(
            publish(
                l,
                &package_dir(&name, "1.0.0", &[], 100, 60 + i as u64),
                &left_key,
            )
            .await,
        );
        let name = format!("right-{i}");
        right_records.push(
            publish(
                r,
                &package_dir(&name, "1.0.0", &[], 100, 70 + i as u64),
                &right_key,
            )
            .await,
        );
    }
    let update = publish(
        &right[4].0,
        &package_dir("shared", "1.1.0", &[], 100, 51),
        &shared_key,
    )
    .await;
    right_records.push(update.clone());
    let has_all = |n: &Node, records: &[ReleaseRecord]| {
        records
            .iter()
            .all(|r| n.registry.view().has_record(&r.id()))
    };
    converge_nodes(
        "each side has its own releases",
        DEADLINE,
        &nodes,
        |i, n| {
            let own = if i < 5 { &left_records } else { &right_records };
            async move {
                has_all(n, own)
                    .then_some(())
                    .ok_or_else(|| format!("catalog of {}", n.registry.view().record_count()))
            }
        },
    )
    .await;
    // Nothing crossed the cut.
    for (i, (n, _)) in nodes.iter().enumerate() {
        let other = if i < 5 { &right_records } else { &left_records };
        for r in other {
            assert!(
                !n.registry.view().has_record(&r.id()),
                "node {i} has {}",
                r.body.name
            );
        }
        assert_eq!(
            n.registry.view().record_count(),
            1 + 4 - usize::from(i < 5),
            "node {i}"
        );
    }

    // Healed: every node learns the other side's releases by itself (connections topped up
    // from the routing table, catalog sync on connect, news relayed on gossip).
    let healed = std::time::Instant::now();
    cut(false).await;
    let all: Vec<ReleaseRecord> = left_records.iter().chain(&right_records).cloned().collect();
    converge_nodes(
        "all releases on all ten nodes, searchable",
        DEADLINE,
        &nodes,
        |_, n| {
            let all = &all;
            async move {
                if !has_all(n, all) {
                    return Err(format!("catalog of {}", n.registry.view().record_count()));
                }
                for r in all {
                    let hits = names(&n.registry, r.body.name.as_str());
                    if hits.first().map(String::as_str) != Some(r.body.name.as_str()) {
                        return Err(format!("search for {} finds {hits:?}", r.body.name));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    let took = healed.elapsed();
    for (i, (n, _)) in nodes.iter().enumerate() {
        assert_eq!(n.registry.view().record_count(), 8, "node {i}");
        let shared_now = n
            .registry
            .blocking_catalog()
            .get(&"shared".parse().unwrap(), &VersionReq::STAR)
            .unwrap();
        assert_eq!(shared_now, update, "node {i}");
    }
    eprintln!("converged {took:?} after the cut was healed");
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_resolve_on_another_node_yanks_are_honoured_and_a_rotated_key_publishes() {
    init_tracing();
    let nodes = testnet(3).await;
    let (a, b) = (&nodes[0].0, &nodes[2].0);
    let (owner, heir) = (publisher(11), publisher(12));
    publish(a, &package_dir("lib", "1.0.0", &[], 100, 40), &owner).await;
    let lib11 = publish(a, &package_dir("lib", "1.1.0", &[], 100, 41), &owner).await;
    publish(a, &package_dir("lib", "2.0.0", &[], 100, 42), &owner).await;
    let app = publish(
        a,
        &package_dir("app", "1.0.0", &["lib@^1"], 100, 43),
        &owner,
    )
    .await;
    assert_eq!(app.body.dependencies[0].to_string(), "lib@^1");
    await_catalog(b, 4, "all four releases on node B").await;
    let resolved = |reg: &Registry| -> Vec<String> {
        reg.blocking_catalog()
            .resolve(&["app".parse().unwrap()])
            .unwrap()
            .into_iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect()
    };
    assert_eq!(resolved(&b.registry), ["app@1.0.0", "lib@1.1.0"]);
    let err = b
        .registry
        .blocking_catalog()
        .resolve(&["app".parse().unwrap(), "lib@^3".parse().unwrap()])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no installable version of 'lib' satisfies ^3 (from the request); available: 1.0.0, 1.1.0, 2.0.0"
    );

    // The owner yanks lib 1.1.0: new resolutions on B pick 1.0.0; a lockfile can still get 1.1.0.
    a.registry
        .yank(
            &"lib".parse().unwrap(),
            &Version::new(1, 1, 0),
            "broken build".into(),
            &owner,
        )
        .await
        .unwrap();
    converge("node B honours the yank", DEADLINE, || async {
        let v = b.registry.view().versions(&"lib".parse().unwrap()).unwrap();
        if v.iter().any(|v| v.yanked) {
            Ok(())
        } else {
            Err("no yank yet".into())
        }
    })
    .await;
    let yanked: Vec<(String, bool)> = b
        .registry
        .view()
        .versions(&"lib".parse().unwrap())
        .unwrap()
        .into_iter()
        .map(|v| (v.version.to_string(), v.yanked))
        .collect();
    assert_eq!(
        yanked,
        [
            ("1.0.0".to_string(), false),
            ("1.1.0".to_string(), true),
            ("2.0.0".to_string(), false)
        ]
    );
    assert_eq!(resolved(&b.registry), ["app@1.0.0", "lib@1.0.0"]);
    assert_eq!(
        b.registry
            .blocking_catalog()
            .release(&"lib".parse().unwrap(), &Version::new(1, 1, 0))
            .unwrap(),
        lib11
    );

    // The owner hands the name to another key, which then publishes 3.0.0.
    a.registry
        .rotate(&"lib".parse().unwrap(), heir.public(), &owner)
        .await
        .unwrap();
    converge("node B knows the new owner", DEADLINE, || async {
        if b.registry.view().owner(&"lib".parse().unwrap()) == Some(heir.public()) {
            Ok(())
        } else {
            Err("old owner still".into())
        }
    })
    .await;
    let v3 = publish(a, &package_dir("lib", "3.0.0", &[], 100, 44), &heir).await;
    converge("the heir's release reaches node B", DEADLINE, || async {
        if b.registry.view().has_record(&v3.id()) {
            Ok(())
        } else {
            Err("missing".into())
        }
    })
    .await;
    // The old key can no longer publish the name.
    assert!(matches!(
        a.registry
            .publish(package_dir("lib", "4.0.0", &[], 100, 45), &owner)
            .await,
        Err(RegistryError::Trust(TrustError::NotOwner { .. }))
    ));
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_package_is_refused_with_a_precise_error_and_changes_nothing() {
    init_tracing();
    let (node, _) = start_node().await;
    let key = publisher(13);
    publish(&node, &package_dir("fine", "1.0.0", &[], 100, 50), &key).await;
    let before = (
        node.registry.view().record_count(),
        node.registry.blobs.usage(),
        node.registry.blobs.persisted_count().unwrap(),
    );

    let bad = package_dir("broken", "1.0.0", &[], 100, 51);
    std::fs::write(
        bad.join("package.toml"),
        "[package]\nname = \"broken\"\nversion = \"one\"\ndescription = \"x\"\n",
    )
    .unwrap();
    let err = node.registry.publish(bad.clone(), &key).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}:3:", bad.join("package.toml").display())),
        "{msg}"
    );

    let linked = package_dir("linked", "1.0.0", &[], 100, 52);
    std::os::unix::fs::symlink("/etc/hostname", linked.join("templates/link")).unwrap();
    let err = node
        .registry
        .publish(linked.clone(), &key)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is a symlink; packages may contain only regular files and directories",
            linked.join("templates/link").display()
        )
    );

    let older = node
        .registry
        .publish(package_dir("fine", "0.9.0", &[], 100, 53), &key)
        .await
        .unwrap_err();
    assert_eq!(
        older.to_string(),
        "fine@0.9.0 is not newer than 1.0.0, the highest version published"
    );

    let after = (
        node.registry.view().record_count(),
        node.registry.blobs.usage(),
        node.registry.blobs.persisted_count().unwrap(),
    );
    assert_eq!(before, after);
    assert!(!node.registry.view().exists(&"broken".parse().unwrap()));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_lost_in_the_middle_of_a_fetch_is_replaced_by_another() {
    init_tracing();
    let nodes = testnet(3).await;
    let key = publisher(15);
    let big = publish(
        &nodes[0].0,
        &package_dir("big", "1.0.0", &[], 20 * 1024 * 1024, 5),
        &key,
    )
    .await;
    let chunks = big.body.archive.chunks.len() as u32;
    assert_eq!(chunks, 21);
    // Node 1 fetches the archive and becomes the second provider.
    let (lost, kept) = (&nodes[0].0, &nodes[1].0);
    converge("node 1 has the record", DEADLINE, || async {
        if kept.registry.view().exists(&big.body.name) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    kept.registry
        .fetch(&big.body.name, &big.body.version)
        .await
        .unwrap();
    let fetcher = &nodes[2].0;
    let (lost_id, kept_id) = (lost.network.peer_id(), kept.network.peer_id());
    converge("the fetcher knows both providers", DEADLINE, || async {
        let p = all_providers(
            fetcher,
            agora_protocol::dht::DhtKey::Content(big.body.archive.id).to_bytes(),
        )
        .await;
        if p.contains(&lost_id) && p.contains(&kept_id) {
            Ok(())
        } else {
            Err(format!("{} providers", p.len()))
        }
    })
    .await;

    // Node 0 crashes the moment a quarter of the archive has arrived: its connections drop
    // with requests in flight and chunks still to ask for.
    let crash = lost.crash_handle();
    let chunk = u64::from(big.body.archive.chunk_size);
    let mut crashed_at = None;
    let on_progress = Box::new(move |done: u64, _total: u64| {
        if crashed_at.is_none() && done >= 5 * chunk {
            crash.abort();
            crashed_at = Some(done);
        }
    });
    let got = fetcher
        .registry
        .fetch_with_progress(&big.body.name, &big.body.version, Some(on_progress))
        .await
        .expect("the fetch finishes from the provider left");
    assert!(!got.cached);
    assert_eq!(got.resumed_chunks, 0);
    let data = std::fs::read(&got.path).unwrap();
    assert_eq!(agora_protocol::ContentId::of(&data), big.body.archive.id);
    let served = |peer| {
        got.served_by
            .iter()
            .find(|(p, _)| *p == peer)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(served(lost_id) + served(kept_id), chunks);
    // At most the chunks received or in flight when it crashed came from node 0.
    assert!(served(lost_id) <= 5 + 8, "{:?}", got.served_by);
    assert!(served(kept_id) >= chunks - 5 - 8, "{:?}", got.served_by);
    // Its failed requests count against node 0, and not as bad data.
    let (record, _) = fetcher.registry.reputation_of(&lost_id);
    let record = record.expect("node 0 has a reputation record");
    assert!(record.failures >= 1, "{record:?}");
    assert_eq!(record.bad_data, 0);
    assert!(
        !fetcher
            .registry
            .blobs
            .partial_path(&big.body.archive.id)
            .exists()
    );
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_between_nearly_equal_catalogs_costs_one_bucket_not_the_catalog() {
    init_tracing();
    let (a, a_addr) = start_node().await;
    let (b, _) = start_node().await;
    let key = publisher(14);
    let shared = many_releases(1001, &key);
    let extra = shared[1000].clone();
    for (node, records) in [(&a, shared.clone()), (&b, shared[..1000].to_vec())] {
        let reg = node.registry.clone();
        tokio::task::spawn_blocking(move || reg.blocking_catalog().ingest(records, false))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        (
            a.registry.view().record_count(),
            b.registry.view().record_count()
        ),
        (1001, 1000)
    );
    join(&b, &a_addr).await;
    converge("b gets the one record it lacks", DEADLINE, || async {
        if b.registry.view().has_record(&extra.id()) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    converge("both syncs finish", DEADLINE, || async {
        let done = (
            a.registry.stats.syncs_completed.load(Ordering::Relaxed),
            b.registry.stats.syncs_completed.load(Ordering::Relaxed),
        );
        if done.0 >= 1 && done.1 >= 1 {
            Ok(())
        } else {
            Err(format!("syncs completed: {done:?}"))
        }
    })
    .await;
    // B listed only the ids of the one bucket that differed and fetched the one record; A,
    // already ahead, listed that bucket from B too and fetched nothing. What A listed depends
    // on when B caught up: before A compared summaries (nothing to list), after A listed
    // (the bucket without the extra record) or between the two (the whole bucket).
    let bucket = agora_protocol::messages::bucket_of(&extra.id()) as usize;
    let bucket_size = u64::from(a.registry.view().summary()[bucket].count);
    assert_eq!(
        b.registry.stats.sync_ids_listed.load(Ordering::Relaxed),
        bucket_size
    );
    assert_eq!(b.registry.stats.records_synced.load(Ordering::Relaxed), 1);
    let a_listed = a.registry.stats.sync_ids_listed.load(Ordering::Relaxed);
    assert!(
        [0, bucket_size - 1, bucket_size].contains(&a_listed),
        "A listed {a_listed} ids; the differing bucket has {bucket_size}"
    );
    assert_eq!(a.registry.stats.records_synced.load(Ordering::Relaxed), 0);
    a.shutdown().await;
    b.shutdown().await;
}

/// Gossip of a record the node already holds is ignored (not checked again: its id hashes
/// the checked bytes, signature included); the same release under a signature that is not
/// its own has another id, and is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_of_a_held_record_is_ignored_and_a_copy_with_another_signature_rejected() {
    init_tracing();
    let (node, addr) = start_node().await;
    let owner = publisher(23);
    let held = forged("held", "1.0.0", None, &owner, 1);
    ingest(&node.registry, vec![CatalogRecord::Release(held.clone())]).await;
    let resigned = Signed {
        body: held.body.clone(),
        signature: forged("held", "1.0.0", None, &owner, 2).signature,
    };
    assert_ne!(resigned.id(), held.id());

    let mut hostile = Hostile::new();
    hostile.connect(std::slice::from_ref(&addr)).await;
    hostile
        .publish_raw(GossipMessage::Release(held.clone()).to_wire())
        .await;
    hostile
        .publish_raw(GossipMessage::Release(resigned).to_wire())
        .await;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = hostile.drive(stopped);
    let stats = &node.registry.stats;
    converge("one gossip ignored, one rejected", DEADLINE, || async {
        let counts = (
            stats.gossip_accepted.load(Ordering::Relaxed),
            stats.gossip_ignored.load(Ordering::Relaxed),
            stats.gossip_rejected.load(Ordering::Relaxed),
        );
        if counts == (0, 1, 1) {
            Ok(())
        } else {
            Err(format!("(accepted, ignored, rejected) = {counts:?}"))
        }
    })
    .await;
    let _ = stop.send(());
    driver.await.unwrap();
    assert_eq!(node.registry.view().record_count(), 1);
    node.shutdown().await;
}

/// The sync summary is kept per bucket and recomputed only where records were added: after
/// each of three batches it equals the summary computed from scratch (each bucket's count and
/// the SHA-256 of its ids in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_kept_per_bucket_matches_one_computed_from_scratch() {
    init_tracing();
    let (node, _) = start_node().await;
    let all = many_releases(600, &publisher(140));
    for batch in all.chunks(200) {
        ingest(&node.registry, batch.to_vec()).await;
        let summary = node.registry.view().summary();
        for (b, digest) in summary.iter().enumerate() {
            let ids = node.registry.view().ids_in(&[b as u8], usize::MAX);
            let mut h = agora_protocol::ContentHasher::new();
            for id in &ids {
                h.update(id.as_bytes());
            }
            let expected = if ids.is_empty() {
                agora_protocol::messages::BucketDigest::default()
            } else {
                agora_protocol::messages::BucketDigest {
                    count: ids.len() as u32,
                    digest: *h.finish().as_bytes(),
                }
            };
            assert_eq!(*digest, expected, "bucket {b}");
        }
        assert_eq!(
            summary.iter().map(|d| d.count as usize).sum::<usize>(),
            node.registry.view().record_count()
        );
    }
    node.shutdown().await;
}

/// History that arrives out of order within one batch, with claimed times that put the newest
/// first: each release waits for nothing, its predecessor is taken as history when it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_arriving_newest_first_is_taken_in_one_batch() {
    init_tracing();
    let (node, _) = start_node().await;
    let key = publisher(150);
    let with_time = |r: ReleaseRecord, at: u64| {
        let mut body = r.body;
        body.published_at = at;
        Signed::sign(body, &key).unwrap()
    };
    let v1 = with_time(forged("ordered", "1.0.0", None, &key, 1), 300);
    let v2 = with_time(forged("ordered", "2.0.0", Some(v1.id()), &key, 2), 400);
    let v3 = with_time(forged("ordered", "3.0.0", Some(v2.id()), &key, 3), 100);
    let batch: Vec<CatalogRecord> = [&v1, &v2, &v3]
        .into_iter()
        .map(|r| CatalogRecord::Release(r.clone()))
        .collect();
    let results = ingest(&node.registry, batch).await;
    assert_eq!(results.len(), 3);
    for (id, outcome) in &results {
        assert_eq!(*outcome, Ingested::Added(Admission::Release), "{id}");
    }
    assert_eq!(node.registry.view().refusals_remembered(), 0);
    assert_eq!(
        node.registry.view().versions(&v1.body.name).unwrap().len(),
        3
    );
    node.shutdown().await;
}
