//! The trust rules over gossip, the DHT and sync: a package only on the DHT, rollbacks, a foreign key, equivocation.

use super::*;

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
