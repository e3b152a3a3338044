//! Hostile records: the largest valid one, a stranger release cutting a popular archive another way, a lookup of an unknown name with heads from many keys, a key rotated away.

use super::*;

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
