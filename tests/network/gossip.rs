//! Gossip on real swarms: a release reaches ten nodes and an invalid one goes nowhere; a flood of invalid gossip graylists its sender.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_all_ten_nodes_and_an_invalid_release_is_rejected_and_not_forwarded() {
    init_tracing();
    let nodes = testnet(10).await;
    converge_nodes("gossip meshes", DEADLINE, &nodes, |_, node| async move {
        let mesh = node
            .network
            .info()
            .await
            .map_err(|e| e.to_string())?
            .gossip_mesh_peers;
        if mesh >= 2 {
            Ok(())
        } else {
            Err(format!("{mesh} mesh peers"))
        }
    })
    .await;

    let key = publisher(3);
    let good = release(
        "gossiped",
        Version::new(1, 0, 0),
        &noise(50_000, 3),
        16 * 1024,
        &key,
    );
    nodes[0].0.registry.announce(good.clone()).await.unwrap();
    let good_id = good.id();
    converge_nodes(
        "release reaches all 10 nodes",
        DEADLINE,
        &nodes,
        |_, node| async move {
            if node.registry.view().has_record(&good_id) {
                Ok(())
            } else {
                Err("does not have the release".into())
            }
        },
    )
    .await;

    // A hostile peer attached to node 0 only sends an invalid release, then a valid marker.
    let mut hostile = Hostile::new();
    let hostile_id = hostile.peer_id();
    hostile.connect(std::slice::from_ref(&nodes[0].1)).await;
    let mut invalid = good.clone();
    invalid.body.version = Version::new(9, 9, 9); // edited after signing
    hostile
        .publish_raw(GossipMessage::Release(invalid).to_wire())
        .await;
    let marker = release(
        "marker",
        Version::new(1, 0, 0),
        &noise(20_000, 4),
        16 * 1024,
        &key,
    );
    hostile
        .publish_raw(GossipMessage::Release(marker.clone()).to_wire())
        .await;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = hostile.drive(stopped);

    let marker_id = marker.id();
    converge_nodes(
        "the marker sent after the invalid release reaches all nodes",
        DEADLINE,
        &nodes,
        |_, node| async move {
            if node.registry.view().has_record(&marker_id) {
                Ok(())
            } else {
                Err("does not have the marker".into())
            }
        },
    )
    .await;
    for (i, (node, _)) in nodes.iter().enumerate() {
        let rejected = node.registry.stats.gossip_rejected.load(Ordering::Relaxed);
        let expected = if i == 0 { 1 } else { 0 };
        assert_eq!(
            rejected, expected,
            "node {i} rejected {rejected} gossip messages"
        );
        assert_eq!(node.registry.view().record_count(), 2, "node {i} catalog");
    }
    let score = nodes[0]
        .0
        .network
        .gossip_score(hostile_id)
        .await
        .unwrap()
        .expect("hostile peer is scored");
    assert!(
        score < 0.0,
        "the sender of an invalid release keeps a score of {score}"
    );

    let _ = stop.send(());
    driver.await.unwrap();
    for (node, _) in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invalid_gossip_graylists_its_sender_while_honest_releases_still_arrive() {
    init_tracing();
    let nodes = testnet(3).await;
    converge_nodes("gossip meshes", DEADLINE, &nodes, |_, node| async move {
        let info = node.network.info().await.map_err(|e| e.to_string())?;
        if info.gossip_mesh_peers >= 2 {
            Ok(())
        } else {
            Err(format!("{} mesh peers", info.gossip_mesh_peers))
        }
    })
    .await;
    const FLOOD: u32 = 2000;
    const RATE: u32 = 1000;
    const HONEST: u32 = 20;
    let key = publisher(7);
    // Every flood message is distinct (its own message id) and fails its signature check.
    let template = release(
        "flood",
        Version::new(1, 0, 0),
        &noise(2000, 7),
        16 * 1024,
        &key,
    );
    let flood: Vec<Vec<u8>> = (0..FLOOD)
        .map(|i| {
            let mut bad = template.clone();
            bad.body.version = Version::new(9, 9, u64::from(i)); // edited after signing
            GossipMessage::Release(bad).to_wire()
        })
        .collect();
    let mut hostile = Hostile::new();
    let hostile_id = hostile.peer_id();
    hostile.connect(std::slice::from_ref(&nodes[0].1)).await;

    // Node 1 publishes honest releases through the flood, one every 100 ms.
    let honest: Vec<_> = (0..HONEST)
        .map(|i| {
            release(
                &format!("honest-{i}"),
                Version::new(1, 0, 0),
                &noise(1000, 100 + u64::from(i)),
                16 * 1024,
                &key,
            )
        })
        .collect();
    let announcer = {
        let registry = nodes[1].0.registry.clone();
        let honest = honest.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for r in honest {
                tick.tick().await;
                registry.announce(r).await.unwrap();
            }
        })
    };
    let started = std::time::Instant::now();
    let sent = hostile.flood(flood, RATE).await;
    let flood_time = started.elapsed();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = hostile.drive(stopped);
    announcer.await.unwrap();

    converge_nodes(
        "every honest release on every node",
        DEADLINE,
        &nodes,
        |_, node| {
            let honest = &honest;
            async move {
                let missing = honest
                    .iter()
                    .filter(|r| !node.registry.view().has_record(&r.id()))
                    .count();
                if missing == 0 {
                    Ok(())
                } else {
                    Err(format!("{missing} missing"))
                }
            }
        },
    )
    .await;
    let score = nodes[0]
        .0
        .network
        .gossip_score(hostile_id)
        .await
        .unwrap()
        .expect("the flooder is scored");
    let rejected = nodes[0]
        .0
        .registry
        .stats
        .gossip_rejected
        .load(Ordering::Relaxed);
    eprintln!(
        "flood: {sent} of {FLOOD} sent in {flood_time:?}; node 0 validated and rejected \
         {rejected}; the flooder's score is {score}"
    );
    assert_eq!(sent, FLOOD as usize, "the whole flood went out");
    assert!(
        score < -80.0,
        "the flooder's score {score} is not below the graylist threshold"
    );
    // Graylisted, its messages are dropped before validation: only the first few cost a
    // signature check.
    assert!(
        (1..FLOOD as u64 / 20).contains(&rejected),
        "node 0 validated {rejected} of the flood's messages"
    );
    for (i, (node, _)) in nodes.iter().enumerate().skip(1) {
        let rejected = node.registry.stats.gossip_rejected.load(Ordering::Relaxed);
        assert_eq!(rejected, 0, "node {i}: nothing invalid was forwarded to it");
    }
    for (i, (node, _)) in nodes.iter().enumerate() {
        assert_eq!(
            node.registry.view().record_count(),
            HONEST as usize,
            "node {i}"
        );
    }

    let _ = stop.send(());
    driver.await.unwrap();
    for (node, _) in nodes {
        node.shutdown().await;
    }
}
