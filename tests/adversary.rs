//! The adversary's suite: each finding of the audit in issue 32, tried as an attacker would
//! against real nodes, with what the node must do instead. docs/SECURITY.md maps each threat
//! to its defense and to the test here.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_daemon::Node;
use agora_daemon::catalog::trust::TrustPolicy;
use agora_protocol::codec::Wire;
use agora_protocol::dht::DhtValue;
use agora_protocol::limits::{
    MAX_CHUNKS, MAX_DEPENDENCIES, MAX_DESCRIPTION_LEN, MAX_NAME_LEN, MAX_RECORD_BYTES,
    MAX_SHORT_FIELD_LEN, MAX_TAG_LEN, MAX_TAGS, MAX_URL_LEN, MAX_VERSION_LEN, MIN_CHUNK_SIZE,
};
use agora_protocol::messages::GossipMessage;
use agora_protocol::records::{
    ArchiveInfo, CatalogRecord, HeadBody, PackageHead, ReleaseBody, ReleaseRecord, Signed,
};
use agora_protocol::search::SearchQuery;
use agora_protocol::{ContentId, Dependency, PackageMeta, PublisherSecret, Version, VersionReq};
use common::hostile::Hostile;
use common::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// A string of exactly `len` bytes that starts with `prefix`.
fn padded(prefix: &str, len: usize) -> String {
    let mut s = prefix.to_owned();
    while s.len() < len {
        s.push('x');
    }
    s.truncate(len);
    s
}

/// The largest release a record may be: every field at its limit (64 dependencies with the
/// longest names and requirements, full metadata, 512 chunks of 16 KiB), then the description
/// cut until the record's encoding is at most [`MAX_RECORD_BYTES`].
fn largest_release(name: &str, key: &PublisherSecret) -> ReleaseRecord {
    let dependencies = (0..MAX_DEPENDENCIES)
        .map(|i| {
            // `>=1.0.0-aaa…`: semver prints it back as written, so its length is what we chose.
            let req = padded(&format!(">={i}.0.0-a"), MAX_VERSION_LEN).replace('x', "a");
            Dependency {
                name: padded(&format!("dep-{i:02}-"), MAX_NAME_LEN)
                    .parse()
                    .unwrap(),
                req: req.parse().unwrap(),
            }
        })
        .collect();
    let short = |what: &str| Some(padded(what, MAX_SHORT_FIELD_LEN));
    let meta = PackageMeta {
        description: padded("the largest release ", MAX_DESCRIPTION_LEN),
        category: short("category"),
        author: short("author"),
        license: short("license"),
        repository: Some(padded("https://example.com/", MAX_URL_LEN)),
        tags: (0..MAX_TAGS)
            .map(|i| padded(&format!("tag{i}"), MAX_TAG_LEN))
            .collect(),
        keywords: (0..MAX_TAGS)
            .map(|i| padded(&format!("kw{i}"), MAX_TAG_LEN))
            .collect(),
    };
    let archive = ArchiveInfo {
        id: ContentId::of(b"an archive nobody fetches here"),
        size: MAX_CHUNKS as u64 * u64::from(MIN_CHUNK_SIZE),
        chunk_size: MIN_CHUNK_SIZE,
        chunks: (0..MAX_CHUNKS as u32)
            .map(|i| ContentId::of(&i.to_le_bytes()))
            .collect(),
    };
    let mut body = ReleaseBody {
        name: name.parse().unwrap(),
        version: Version::parse(&padded("1.0.0-", MAX_VERSION_LEN)).unwrap(),
        meta,
        dependencies,
        archive,
        published_at: u64::MAX,
        publisher: key.public(),
        previous: Some(ContentId::of(b"a predecessor")),
    };
    loop {
        let record = Signed::sign(body.clone(), key).expect("every field within its limit");
        if record.encode().len() <= MAX_RECORD_BYTES {
            return record;
        }
        body.meta.description.pop();
    }
}

fn names(node: &Node, q: &str) -> Vec<String> {
    match node
        .registry
        .blocking_catalog()
        .search(&SearchQuery::text(q))
    {
        Ok(results) => results.hits.into_iter().map(|h| h.name).collect(),
        Err(e) => vec![format!("search failed: {e}")],
    }
}

/// Finding 1: a release at the size limit, gossiped by a stranger, is admitted by every node,
/// indexed, kept across a restart and found by search; before, the node's store could not
/// read back what gossip had accepted, and the node no longer started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_valid_record_gossiped_survives_a_restart_and_is_found() {
    init_tracing();
    let key = publisher(41);
    let big = largest_release("biggest", &key);
    let len = big.encode().len();
    assert!(
        len > MAX_RECORD_BYTES - 1024 && len <= MAX_RECORD_BYTES,
        "the record is within 1 KiB of the limit: {len} bytes"
    );
    let wire = GossipMessage::Release(big.clone()).to_wire();
    assert_eq!(
        wire.len(),
        len + 1,
        "a gossip message is the record and its tag"
    );

    let dirs = [data_dir(), data_dir()];
    let configs: Vec<_> = dirs.iter().map(|d| node_config(d)).collect();
    let (a, a_addr) = start_with(configs[0].clone()).await;
    let (b, _) = start_with(configs[1].clone()).await;
    join(&b, &a_addr).await;
    let mut hostile = Hostile::new();
    hostile.connect(std::slice::from_ref(&a_addr)).await;
    hostile.publish_raw(wire).await;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = hostile.drive(stopped);

    let nodes = [(a, a_addr.clone()), (b, a_addr)];
    converge_nodes(
        "both nodes admit and index the record",
        DEADLINE,
        &nodes,
        |_, node| async move {
            match names(node, "biggest").as_slice() {
                [one] if one == "biggest" => Ok(()),
                other => Err(format!("search gives {other:?}")),
            }
        },
    )
    .await;
    let _ = stop.send(());
    driver.await.unwrap();
    for (node, _) in nodes {
        node.shutdown().await;
    }

    for config in configs {
        let node = Node::start(config).await.expect("the node starts again");
        assert_eq!(node.registry.view().record_count(), 1);
        assert!(node.registry.view().has_record(&big.id()));
        assert_eq!(names(&node, "biggest"), ["biggest"]);
        node.shutdown().await;
    }
}

/// Finding 6: a valid record that a node's own policy refuses (here a key not on its
/// allowlist) is ignored, not rejected. Rejecting it cost the honest first-use neighbour that
/// relayed it gossip score, and after a few such messages the allowlist node graylisted it and
/// stopped hearing the releases it does want. The releases come from a third peer through the
/// open node, by gossip alone (no DHT put reaches the strict node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlist_node_keeps_hearing_its_relay_after_twenty_releases_it_does_not_take() {
    init_tracing();
    let (trusted, stranger) = (publisher(60), publisher(61));
    let (open, open_addr) = start_node().await;
    let mut config = node_config(&data_dir());
    config.registry.trust = TrustPolicy::Allowlist(HashSet::from([trusted.public()]));
    let (strict, _) = start_with(config).await;
    join(&strict, &open_addr).await;
    let mut source = Hostile::new();
    source.connect(std::slice::from_ref(&open_addr)).await;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = source.drive(stopped);
    converge("the open node meshes with both", DEADLINE, || async {
        let (o, s) = (open.network.info().await, strict.network.info().await);
        match (
            o.map(|i| i.gossip_mesh_peers),
            s.map(|i| i.gossip_mesh_peers),
        ) {
            (Ok(2), Ok(1)) => Ok(()),
            other => Err(format!("mesh sizes {other:?}")),
        }
    })
    .await;
    let _ = stop.send(());
    let mut source = driver.await.unwrap();

    for i in 0..20u64 {
        let r = release(
            &format!("unlisted-{i}"),
            Version::new(1, 0, 0),
            &noise(100, i),
            16 * 1024,
            &stranger,
        );
        source
            .publish_raw(GossipMessage::Release(r).to_wire())
            .await;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = source.drive(stopped);
    let stats = &strict.registry.stats;
    converge("the strict node decides on all 20", DEADLINE, || async {
        let decided = stats.gossip_ignored.load(Ordering::Relaxed)
            + stats.gossip_rejected.load(Ordering::Relaxed);
        if decided == 20 {
            Ok(())
        } else {
            Err(format!("{decided} decided"))
        }
    })
    .await;
    assert_eq!(open.registry.view().record_count(), 20);
    assert_eq!(stats.gossip_ignored.load(Ordering::Relaxed), 20);
    assert_eq!(stats.gossip_rejected.load(Ordering::Relaxed), 0);
    assert_eq!(strict.registry.view().record_count(), 0);
    let open_peer = open.network.peer_id();
    let score = strict.network.gossip_score(open_peer).await.unwrap();
    assert!(
        score.is_some_and(|s| s >= 0.0),
        "the relay's score at the strict node is {score:?}"
    );
    let _ = stop.send(());
    let mut source = driver.await.unwrap();

    // Well before the next periodic sync (30 s), only gossip can bring it this fast.
    let wanted = release(
        "listed",
        Version::new(1, 0, 0),
        &noise(100, 99),
        16 * 1024,
        &trusted,
    );
    source
        .publish_raw(GossipMessage::Release(wanted.clone()).to_wire())
        .await;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = source.drive(stopped);
    converge(
        "the allowlisted release reaches the strict node",
        Duration::from_secs(5),
        || async {
            if strict.registry.view().has_record(&wanted.id()) {
                Ok(())
            } else {
                Err("not there".into())
            }
        },
    )
    .await;
    assert_eq!(stats.gossip_accepted.load(Ordering::Relaxed), 1);
    let _ = stop.send(());
    driver.await.unwrap();
    strict.shutdown().await;
    open.shutdown().await;
}

/// Finding 2: archive info was kept per content id, and the last release admitted that named
/// an archive decided how its chunks were cut when served. A throwaway key that releases
/// `junk@1.0.0` over a popular archive's bytes cut another way (its chunk hashes right for
/// that cut) made every holder serve the popular package's chunks wrong, and the fetchers
/// banned honest providers. A chunk is now asked for with the cut the asker verifies against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_release_cutting_a_popular_archive_another_way_poisons_nothing() {
    init_tracing();
    let nodes = testnet(3).await;
    let (owner, throwaway) = (publisher(70), publisher(71));
    let data = noise(200_000, 70);
    let popular = release("popular", Version::new(1, 0, 0), &data, 64 * 1024, &owner);
    let junk = release("junk", Version::new(1, 0, 0), &data, 16 * 1024, &throwaway);
    assert_eq!(popular.body.archive.id, junk.body.archive.id);
    assert_eq!(
        (
            popular.body.archive.chunks.len(),
            junk.body.archive.chunks.len()
        ),
        (4, 13)
    );
    let holder = &nodes[0].0;
    holder
        .registry
        .add_blob_with(popular.body.archive.clone(), data.clone())
        .await
        .unwrap();
    holder.registry.announce(popular.clone()).await.unwrap();
    nodes[2].0.registry.announce(junk.clone()).await.unwrap();
    let ids = [popular.id(), junk.id()];
    converge_nodes(
        "both releases everywhere",
        DEADLINE,
        &nodes,
        |_, n| async move {
            match ids
                .iter()
                .filter(|id| n.registry.view().has_record(id))
                .count()
            {
                2 => Ok(()),
                k => Err(format!("{k} of 2")),
            }
        },
    )
    .await;

    let holder_peer = holder.network.peer_id();
    let fetched = nodes[1]
        .0
        .registry
        .fetch(&popular.body.name, &popular.body.version)
        .await
        .expect("the popular package fetches");
    assert_eq!(fetched.served_by, [(holder_peer, 4)]);
    // The junk release's cut is valid too, and is served as such.
    let fetched = nodes[2]
        .0
        .registry
        .fetch(&junk.body.name, &junk.body.version)
        .await
        .expect("the junk release fetches with its own cut");
    assert_eq!(fetched.served_by.iter().map(|(_, n)| n).sum::<u32>(), 13);
    for (i, (n, _)) in nodes.iter().enumerate() {
        assert_eq!(
            n.registry.stats.peers_banned.load(Ordering::Relaxed),
            0,
            "node {i} banned an honest provider"
        );
    }
    for (n, _) in nodes {
        n.shutdown().await;
    }
}

/// Finding 5: each request a peer sent was worked on, however many it had open, and answers it
/// never read were held until they timed out. A peer sends 128 requests for 1 MiB chunks at
/// once and never reads one: the node works on its budget of 16 (16 MiB held for it) and
/// answers the rest `Busy` before reading anything, and an honest peer's fetch completes
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_128_large_requests_it_never_reads_gets_its_budget_and_no_more() {
    use agora_protocol::limits::MAX_CHUNK_SIZE;
    use agora_protocol::messages::FetchRequest;
    init_tracing();
    let mut config = node_config(&data_dir());
    // Longer than the test: what the node holds is held until the peer reads or leaves.
    config.network.request_timeout = Duration::from_secs(120);
    let (server, server_addr) = start_with(config).await;
    let (honest, _) = start_node().await;
    join(&honest, &server_addr).await;

    let big = noise(2 * MAX_CHUNK_SIZE as usize, 80);
    let big_info = ArchiveInfo::describe(&big, MAX_CHUNK_SIZE);
    server
        .registry
        .add_blob_with(big_info.clone(), big)
        .await
        .unwrap();
    let key = publisher(80);
    let data = noise(40_000, 81);
    let wanted = release("wanted", Version::new(1, 0, 0), &data, 16 * 1024, &key);
    server
        .registry
        .add_blob_with(wanted.body.archive.clone(), data)
        .await
        .unwrap();
    server.registry.announce(wanted.clone()).await.unwrap();
    let wanted_id = wanted.id();
    converge("the honest node has the release", DEADLINE, || async {
        if honest.registry.view().has_record(&wanted_id) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;

    let requests = (0..128)
        .map(|i| FetchRequest {
            content: big_info.id,
            chunk_size: MAX_CHUNK_SIZE,
            index: i % 2,
        })
        .collect();
    let (tally, stop, task) = common::hostile::never_reads(&server_addr, requests).await;
    let stats = &server.registry.stats;
    // The held requests' chunks are read (and checked against their hashes) on blocking
    // threads while the refusals go out: both are awaited.
    converge("every request but the held ones ends", DEADLINE, || async {
        let t = *tally.lock().unwrap();
        let served = stats.chunks_served.load(Ordering::Relaxed);
        match (t.refused_busy + t.refused_other + t.failed, served) {
            (112, 16) => Ok(()),
            (n, served) => Err(format!("{n} ended, {served} served: {t:?}")),
        }
    })
    .await;
    let t = *tally.lock().unwrap();
    assert_eq!(t.refused_other, 0, "{t:?}");
    assert!(t.refused_busy > 0, "{t:?}");
    assert_eq!(stats.chunks_served.load(Ordering::Relaxed), 16);
    assert_eq!(
        server.network.info().await.unwrap().inbound_fetches_open,
        16
    );

    let fetched = honest
        .registry
        .fetch(&wanted.body.name, &wanted.body.version)
        .await
        .expect("the honest fetch completes while the peer holds its budget");
    assert_eq!(fetched.served_by, [(server.network.peer_id(), 3)]);
    assert_eq!(stats.chunks_served.load(Ordering::Relaxed), 19);
    let _ = stop.send(());
    task.await.unwrap();
    honest.shutdown().await;
    server.shutdown().await;
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

/// A bare Kademlia peer holding `values`, driven in the background; its address and stop.
async fn holder(
    values: &[DhtValue],
) -> (
    libp2p::Multiaddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Hostile>,
) {
    let mut h = Hostile::new();
    let addr = h.listen().await;
    for v in values {
        h.hold(v.key().to_bytes(), v.encode());
    }
    let (stop, stopped) = tokio::sync::oneshot::channel();
    (addr, stop, h.drive(stopped))
}

/// Finding 11: looking up a name the catalog does not know took the head with the highest
/// sequence number among every key's, so a peer near the key holding a head with
/// seq = u64::MAX made the node pin its key as the name's owner. With heads from two keys the
/// lookup now admits nothing and says why; an allowlist that names one of them settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_of_an_unknown_name_does_not_follow_the_largest_sequence_number() {
    init_tracing();
    let (owner, sybil) = (publisher(90), publisher(91));
    let honest = release(
        "contested",
        Version::new(1, 0, 0),
        &noise(100, 90),
        16 * 1024,
        &owner,
    );
    let forged = release(
        "contested",
        Version::new(6, 6, 6),
        &noise(100, 91),
        16 * 1024,
        &sybil,
    );
    let (a1, stop1, task1) = holder(&[
        DhtValue::Head(head("contested", &["1.0.0"], 1, &owner)),
        DhtValue::Release(honest.clone()),
    ])
    .await;
    let (a2, stop2, task2) = holder(&[
        DhtValue::Head(head("contested", &["6.6.6"], u64::MAX, &sybil)),
        DhtValue::Release(forged),
    ])
    .await;
    let name: agora_protocol::PackageName = "contested".parse().unwrap();

    let (open, _) = start_node().await;
    for a in [&a1, &a2] {
        open.network.dial(a.clone()).await.unwrap();
    }
    let err = open
        .registry
        .look_up(&name, &VersionReq::STAR)
        .await
        .expect_err("two keys' heads: no owner can be told");
    let mut keys = [owner.public(), sybil.public()];
    keys.sort();
    assert_eq!(
        err.to_string(),
        format!(
            "the DHT holds heads of 'contested' from 2 keys ({}, {}), and this node has no \
             record of it to tell which owns it",
            keys[0], keys[1]
        )
    );
    assert_eq!(open.registry.view().record_count(), 0);
    assert_eq!(open.registry.view().owner(&name), None);

    // A node whose allowlist names the owner counts only the owner's head.
    let mut config = node_config(&data_dir());
    config.registry.trust = TrustPolicy::Allowlist(HashSet::from([owner.public()]));
    let (strict, _) = start_with(config).await;
    for a in [&a1, &a2] {
        strict.network.dial(a.clone()).await.unwrap();
    }
    assert!(
        strict
            .registry
            .look_up(&name, &VersionReq::STAR)
            .await
            .unwrap()
    );
    assert_eq!(strict.registry.view().owner(&name), Some(owner.public()));
    assert_eq!(
        strict
            .registry
            .blocking_catalog()
            .get(&name, &VersionReq::STAR)
            .unwrap(),
        honest
    );
    for (stop, task) in [(stop1, task1), (stop2, task2)] {
        let _ = stop.send(());
        task.await.unwrap();
    }
    open.shutdown().await;
    strict.shutdown().await;
}

/// Finding 10: two nodes that own one name under different keys refused each other's release
/// at every sync and listed, fetched and verified it again at the next, forever. Refusals are
/// remembered and a bucket whose listing held nothing new is not listed again: over five
/// periodic syncs neither node lists a single id more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_disagree_on_an_owner_stop_listing_after_their_first_syncs() {
    init_tracing();
    let config = || {
        let mut c = node_config(&data_dir());
        c.registry.sync_interval = Duration::from_millis(200);
        c
    };
    let mut x_config = config();
    let (x, x_addr) = start_with(x_config.clone()).await;
    let (y, _) = start_with(config()).await;
    let mine = release(
        "split",
        Version::new(1, 0, 0),
        &noise(100, 1),
        16 * 1024,
        &publisher(100),
    );
    let theirs = release(
        "split",
        Version::new(1, 0, 0),
        &noise(100, 2),
        16 * 1024,
        &publisher(101),
    );
    x.registry.announce(mine.clone()).await.unwrap();
    y.registry.announce(theirs.clone()).await.unwrap();
    join(&y, &x_addr).await;

    let nodes = [(x, x_addr.clone()), (y, x_addr)];
    let syncs = |n: &Node| n.registry.stats.syncs_completed.load(Ordering::SeqCst);
    let listed = |n: &Node| n.registry.stats.sync_ids_listed.load(Ordering::SeqCst);
    converge_nodes("three syncs each", DEADLINE, &nodes, |_, n| async move {
        match syncs(n) {
            k if k >= 3 => Ok(()),
            k => Err(format!("{k} syncs")),
        }
    })
    .await;
    let before: Vec<(u64, u64)> = nodes.iter().map(|(n, _)| (syncs(n), listed(n))).collect();
    converge_nodes("five syncs more each", DEADLINE, &nodes, |i, n| {
        let start = before[i].0;
        async move {
            match syncs(n) {
                k if k >= start + 5 => Ok(()),
                k => Err(format!("{} syncs since", k - start)),
            }
        }
    })
    .await;
    for (i, (n, _)) in nodes.iter().enumerate() {
        assert_eq!(listed(n), before[i].1, "node {i} listed ids again");
        assert_eq!(n.registry.view().refusals_remembered(), 1, "node {i}");
        assert_eq!(n.registry.view().record_count(), 1, "node {i}");
    }
    assert_eq!(
        nodes[0].0.registry.view().owner(&mine.body.name),
        Some(publisher(100).public())
    );
    assert_eq!(
        nodes[1].0.registry.view().owner(&mine.body.name),
        Some(publisher(101).public())
    );
    for (n, _) in nodes {
        n.shutdown().await;
    }
    // Remembered across a restart; forgotten when the trust policy changes.
    let again = Node::start(x_config.clone()).await.unwrap();
    assert_eq!(again.registry.view().refusals_remembered(), 1);
    again.shutdown().await;
    x_config.registry.trust = TrustPolicy::Allowlist(HashSet::from([publisher(100).public()]));
    let again = Node::start(x_config).await.unwrap();
    assert_eq!(again.registry.view().refusals_remembered(), 0);
    again.shutdown().await;
}

/// A release of `name@version` chained to `previous`, claimed made at `at`.
fn chained(
    name: &str,
    version: &str,
    previous: Option<agora_protocol::records::RecordId>,
    at: u64,
    key: &PublisherSecret,
    salt: u64,
) -> ReleaseRecord {
    let mut body = release(
        name,
        version.parse().unwrap(),
        &noise(100, salt),
        16 * 1024,
        key,
    )
    .body;
    body.previous = previous;
    body.published_at = at;
    Signed::sign(body, key).unwrap()
}

/// Finding 3 (through gossip, to nodes that hold the rotation): a key rotated away still
/// passed the owner check for records of versions it had published, and its second record for
/// a version was taken as equivocation, making that version uninstallable for the new owner.
/// A publishes 1.0 and 2.0, rotates to B, B publishes 3.0; A then signs another 3.0 and a
/// back-dated 4.0: both are refused as not the owner, and 3.0 stays installable. A node that
/// gets all of it in one batch, the back-dated 4.0 sorted before the rotation, ends the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_away_can_neither_dispute_nor_move_its_old_name() {
    init_tracing();
    let nodes = testnet(2).await;
    let (a, b) = (publisher(110), publisher(111));
    let t = 1_700_000_000;
    let a1 = chained("moved", "1.0.0", None, t, &a, 1);
    let a2 = chained("moved", "2.0.0", Some(a1.id()), t + 10, &a, 2);
    let reg = &nodes[0].0.registry;
    reg.announce(a1.clone()).await.unwrap();
    reg.announce(a2.clone()).await.unwrap();
    reg.rotate(&a1.body.name, b.public(), &a).await.unwrap();
    let b3 = chained("moved", "3.0.0", Some(a2.id()), t + 30, &b, 3);
    reg.announce(b3.clone()).await.unwrap();
    let id3 = b3.id();
    converge_nodes("3.0.0 everywhere", DEADLINE, &nodes, |_, n| async move {
        if n.registry.view().has_record(&id3) {
            Ok(())
        } else {
            Err("no 3.0.0".into())
        }
    })
    .await;

    let twin = chained("moved", "3.0.0", Some(a2.id()), t + 40, &a, 4);
    let backdated = chained("moved", "4.0.0", Some(a2.id()), t + 20, &a, 5);
    let mut hostile = Hostile::new();
    hostile.connect(std::slice::from_ref(&nodes[1].1)).await;
    for r in [&twin, &backdated] {
        hostile
            .publish_raw(GossipMessage::Release(r.clone()).to_wire())
            .await;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = hostile.drive(stopped);
    let node1 = &nodes[1].0.registry;
    converge("node 1 refuses both", DEADLINE, || async {
        match node1.view().refusals_remembered() {
            2 => Ok(()),
            n => Err(format!("{n} refused")),
        }
    })
    .await;
    for (i, (n, _)) in nodes.iter().enumerate() {
        assert!(n.registry.view().equivocations().is_empty(), "node {i}");
        assert_eq!(
            n.registry
                .blocking_catalog()
                .get(&b3.body.name, &VersionReq::STAR)
                .unwrap(),
            b3,
            "node {i}"
        );
        assert!(
            !n.registry.view().has_record(&twin.id())
                && !n.registry.view().has_record(&backdated.id())
        );
    }
    let _ = stop.send(());
    driver.await.unwrap();

    // A node that learns it all in one batch (as from a peer that took A's records before it
    // heard of the rotation) sorts the back-dated 4.0 before the rotation: it is taken, then
    // retracted by the rotation, which vouches for 2.0 as A's last. Same catalog either way.
    let rotation = reg
        .blocking_catalog()
        .records(
            &reg.view()
                .ids_in(&(0..=255).collect::<Vec<u8>>(), usize::MAX),
        )
        .unwrap()
        .into_iter()
        .find(|r| matches!(r, CatalogRecord::Rotation(_)))
        .expect("node 0 holds the rotation");
    let (late, _) = start_node().await;
    let batch: Vec<CatalogRecord> = [&a1, &a2, &b3, &twin, &backdated]
        .into_iter()
        .map(|r| CatalogRecord::Release(r.clone()))
        .chain([rotation])
        .collect();
    let reg_late = late.registry.clone();
    tokio::task::spawn_blocking(move || reg_late.blocking_catalog().ingest(batch, false))
        .await
        .unwrap()
        .unwrap();
    let versions: Vec<String> = late
        .registry
        .view()
        .versions(&b3.body.name)
        .unwrap()
        .into_iter()
        .map(|v| v.version.to_string())
        .collect();
    assert_eq!(versions, ["1.0.0", "2.0.0", "3.0.0"]);
    assert!(late.registry.view().equivocations().is_empty());
    assert_eq!(
        late.registry
            .blocking_catalog()
            .get(&b3.body.name, &VersionReq::STAR)
            .unwrap(),
        b3
    );
    late.shutdown().await;
    for (n, _) in nodes {
        n.shutdown().await;
    }
}

/// Finding 4: a syncing node kept every record of a sync (up to 200k ids over 4,096 rounds)
/// and verified none until the end, with no deadline and no limit on syncs at once. A peer
/// that answers every round with one maximal junk record (a release of 31.9 kB whose
/// signature does not hold) is now found out at its first answer: the sync stops with the
/// reason, having held that one response, and nothing is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_syncs_junk_is_stopped_at_its_first_answer() {
    use agora_daemon::ops::sync::{SyncError, sync_with};

    init_tracing();
    let key = publisher(120);
    let junk: Vec<CatalogRecord> = (0..64)
        .map(|i| {
            let mut r = largest_release(&format!("junk-{i:02}"), &key);
            r.body.meta.description.replace_range(0..1, "J"); // edited after signing
            CatalogRecord::Release(r)
        })
        .collect();
    let (addr, rounds, stop, task) = common::hostile::junk_syncer(junk).await;
    let (node, _) = start_node().await;
    let peer = node.network.dial(addr).await.unwrap();
    // The connection starts a sync of its own; the one asked for here runs once it is over.
    let outcome = std::sync::Mutex::new(None);
    converge("a sync of our own runs", DEADLINE, || async {
        match sync_with(&node.registry, peer).await {
            Err(SyncError::AlreadyRunning { .. }) => Err("the connection's sync runs".into()),
            other => {
                *outcome.lock().unwrap() = Some(other);
                Ok(())
            }
        }
    })
    .await;
    let err = outcome
        .into_inner()
        .unwrap()
        .unwrap()
        .expect_err("a sync of junk fails");
    match &err {
        SyncError::InvalidRecords { invalid: 1, first } => {
            assert!(
                first.ends_with(
                    "record signature: signature does not verify for this publisher key and \
                     record kind"
                ),
                "{first}"
            )
        }
        other => panic!("{other}"),
    }
    // One request for records in each sync begun (the connection's, if it ran, and this one).
    let syncs = rounds[0].load(Ordering::SeqCst);
    assert!((1..=2).contains(&syncs), "{syncs} syncs");
    assert_eq!(rounds[1].load(Ordering::SeqCst), syncs);
    assert_eq!(node.registry.view().record_count(), 0);
    let _ = stop.send(());
    task.await.unwrap();
    node.shutdown().await;
}

/// Finding 7: valid records cost nothing to make, and each admitted one costs every node a
/// signature check, a durable write and an index update. A peer flooding 4,000 valid
/// releases from throwaway keys at 1,000 a second got them all admitted by every node of the
/// network. Now each peer has a gossip budget (a burst of 512, then 50 a second): what is over
/// it is dropped unchecked by the node it reaches first, which holds it against the flooder's
/// gossip score, and an honest release published meanwhile reaches every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_valid_records_is_held_to_the_flooders_budget_and_honest_releases_pass() {
    use agora_daemon::network::budget::GossipRate;
    init_tracing();
    let rate = GossipRate {
        rate: 50.0,
        burst: 512.0,
    };
    let nodes = testnet_with(10, |c| c.network.gossip_rate = rate).await;
    const FLOOD: usize = 4000;
    let flood = common::throwaway_flood(FLOOD);
    let mut hostile = Hostile::new();
    let hostile_id = hostile.peer_id();
    hostile.connect(std::slice::from_ref(&nodes[0].1)).await;
    let honest = release(
        "honest-during-flood",
        Version::new(1, 0, 0),
        &noise(1000, 130),
        16 * 1024,
        &publisher(130),
    );
    // Published once the flood is under way: node 0 holds some of it.
    let announcer = {
        let (first, registry) = (nodes[0].0.registry.clone(), nodes[5].0.registry.clone());
        let honest = honest.clone();
        tokio::spawn(async move {
            converge("the flood reaches node 0", DEADLINE, || async {
                match first.view().record_count() {
                    0 => Err("nothing yet".into()),
                    _ => Ok(()),
                }
            })
            .await;
            registry.announce(honest).await.unwrap();
        })
    };
    let started = std::time::Instant::now();
    let sent = hostile.flood(flood, 1000).await;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = hostile.drive(stopped);
    announcer.await.unwrap();
    assert_eq!(sent, FLOOD, "the whole flood went out");

    let honest_id = honest.id();
    converge_nodes(
        "the honest release reaches every node",
        DEADLINE,
        &nodes,
        |_, n| async move {
            if n.registry.view().has_record(&honest_id) {
                Ok(())
            } else {
                Err("missing".into())
            }
        },
    )
    .await;
    // What the first node could take: its burst and its rate since the flood began, and the
    // honest release. Every other node holds no more than it forwarded.
    let bound = (rate.burst + rate.rate * started.elapsed().as_secs_f64()) as usize + 1;
    for (i, (n, _)) in nodes.iter().enumerate() {
        let held = n.registry.view().record_count();
        assert!(
            held <= bound,
            "node {i} admitted {held} records (bound {bound})"
        );
    }
    // Node 0's registry checked no more of the flood than the budget let through.
    let stats = &nodes[0].0.registry.stats;
    let checked = stats.gossip_accepted.load(Ordering::Relaxed)
        + stats.gossip_ignored.load(Ordering::Relaxed)
        + stats.gossip_rejected.load(Ordering::Relaxed);
    assert!(
        checked as usize <= bound + 10,
        "node 0 checked {checked} gossip messages (bound {bound})"
    );
    // Past its budget the flooder's own messages are rejected, and after a few of those
    // gossipsub graylists it: the rest of the flood is dropped before validation.
    let over = nodes[0].0.metrics.gossip_over_budget.get();
    assert!(over >= 1, "node 0 dropped {over} over budget");
    let score = nodes[0]
        .0
        .network
        .gossip_score(hostile_id)
        .await
        .unwrap()
        .expect("the flooder is scored");
    assert!(
        score < -80.0,
        "the flooder's score {score} is not below the graylist threshold"
    );
    let _ = stop.send(());
    driver.await.unwrap();
    for (n, _) in nodes {
        n.shutdown().await;
    }
}

/// Finding 7, per publishing key: a key that sends many records, new names or heads through
/// its relays gets only its budget admitted by each node; what is over it is ignored (the
/// relay is not punished for it) and not refused for good: sync brings it later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_budget_has_its_gossip_ignored_until_sync_brings_it() {
    use agora_daemon::catalog::publishers::PublisherRates;
    use agora_daemon::network::budget::GossipRate;
    init_tracing();
    let rates = PublisherRates {
        records: GossipRate {
            rate: 0.0,
            burst: 6.0,
        },
        new_names: GossipRate {
            rate: 0.0,
            burst: 3.0,
        },
    };
    let nodes = testnet_with(1, |c| c.registry.publisher_rates = rates).await;
    let node = &nodes[0].0;
    let (busy, calm) = (publisher(140), publisher(141));
    let busy_releases: Vec<ReleaseRecord> = (0..6)
        .map(|i| {
            let name = format!("busy-{i}");
            release(
                &name,
                Version::new(1, 0, 0),
                &noise(100, i),
                16 * 1024,
                &busy,
            )
        })
        .collect();
    let calm_releases: Vec<ReleaseRecord> = (0..2)
        .map(|i| {
            let name = format!("calm-{i}");
            release(
                &name,
                Version::new(1, 0, 0),
                &noise(100, 10 + i),
                16 * 1024,
                &calm,
            )
        })
        .collect();
    let stats = &node.registry.stats;
    let messages: Vec<Vec<u8>> = busy_releases
        .iter()
        .chain(&calm_releases)
        .map(|r| GossipMessage::Release(r.clone()).to_wire())
        .collect();
    assert_eq!(
        gossip_and_count(&nodes[0].1, messages, stats).await,
        (5, 3, 0, 3),
        "(accepted, ignored, rejected, over budget)"
    );
    assert_eq!(node.registry.view().record_count(), 5);
    assert_eq!(node.registry.view().refusals_remembered(), 0);

    // Heads count too: the busy key has 3 of its 6 records left (a name over its budget took
    // none), so of 4 heads for the names it got in, 3 are taken.
    let heads = [("busy-0", 1), ("busy-1", 1), ("busy-2", 1), ("busy-0", 2)]
        .into_iter()
        .map(|(name, seq)| GossipMessage::Head(head(name, &["1.0.0"], seq, &busy)).to_wire())
        .collect();
    assert_eq!(
        gossip_and_count(&nodes[0].1, heads, stats).await,
        (8, 4, 0, 4),
        "(accepted, ignored, rejected, over budget) after the heads"
    );

    // A node that holds the busy key's releases syncs them over.
    let (holder, _) = start_node().await;
    let records: Vec<CatalogRecord> = busy_releases
        .iter()
        .map(|r| CatalogRecord::Release(r.clone()))
        .collect();
    let reg = holder.registry.clone();
    tokio::task::spawn_blocking(move || reg.blocking_catalog().ingest(records, false))
        .await
        .unwrap()
        .unwrap();
    join(&holder, &nodes[0].1).await;
    converge("sync brings the rest", DEADLINE, || async {
        match node.registry.view().record_count() {
            8 => Ok(()),
            n => Err(format!("{n} held")),
        }
    })
    .await;
    holder.shutdown().await;
    for (n, _) in nodes {
        n.shutdown().await;
    }
}

/// Gossips `messages` from a new hostile peer into the node at `addr` and waits until the
/// node has decided on them all; returns its counts so far: (accepted, ignored, rejected,
/// over a key's budget).
async fn gossip_and_count(
    addr: &libp2p::Multiaddr,
    messages: Vec<Vec<u8>>,
    stats: &agora_daemon::obs::RegistryStats,
) -> (u64, u64, u64, u64) {
    let counts = || {
        (
            stats.gossip_accepted.load(Ordering::Relaxed),
            stats.gossip_ignored.load(Ordering::Relaxed),
            stats.gossip_rejected.load(Ordering::Relaxed),
            stats.publisher_over_budget.load(Ordering::Relaxed),
        )
    };
    let (a, i, r, _) = counts();
    let expected = a + i + r + messages.len() as u64;
    let mut hostile = Hostile::new();
    hostile.connect(std::slice::from_ref(addr)).await;
    for m in messages {
        hostile.publish_raw(m).await;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = hostile.drive(stopped);
    converge("every message decided", DEADLINE, || async {
        let (a, i, r, _) = counts();
        if a + i + r == expected {
            Ok(())
        } else {
            Err(format!("{} of {expected} decided", a + i + r))
        }
    })
    .await;
    let _ = stop.send(());
    driver.await.unwrap();
    counts()
}
