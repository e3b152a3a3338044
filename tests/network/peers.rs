//! Peers and the handle: discovery from one seed, many tasks on one handle, calls after shutdown, keeping peers from the routing table, a connection flood.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_bootstrapped_from_one_seed_discover_each_other() {
    init_tracing();
    let nodes = testnet(5).await;
    converge_nodes("routing tables", DEADLINE, &nodes, |_, node| async move {
        routing_table_holds(node, 4).await
    })
    .await;
    for (node, _) in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_tasks_share_one_handle_and_every_reply_arrives() {
    init_tracing();
    // 50 of the tasks ask node b for a chunk at once: room for all of them in b's budget of
    // one peer's requests (an honest fetch has 8 in flight).
    let nodes = testnet_with(2, |c| {
        c.network.fetch_budget = agora_daemon::network::budget::Budget {
            per_peer: 64,
            total: 64,
        }
    })
    .await;
    let (a, _) = &nodes[0];
    let (b, _) = &nodes[1];
    let data = noise(64 * 1024, 6);
    let key = publisher(6);
    let record = release("shared", Version::new(1, 0, 0), &data, 16 * 1024, &key);
    b.registry
        .add_blob_with(record.body.archive.clone(), data.clone())
        .await
        .unwrap();
    b.registry.announce(record.clone()).await.unwrap();
    let rel_key = DhtKey::Release("shared".parse().unwrap(), Version::new(1, 0, 0)).to_bytes();
    let b_id = b.network.peer_id();

    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let handle = a.network.clone();
        let rel_key = rel_key.clone();
        let record = record.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                0 => {
                    let info = handle.info().await.unwrap();
                    assert_eq!(info.connected_peers, vec![b_id]);
                }
                1 => {
                    let found = handle
                        .get_record(rel_key, RecordQuorum::First)
                        .await
                        .unwrap();
                    assert_eq!(ReleaseRecord::decode(&found[0]).unwrap(), record);
                }
                2 => {
                    let index = i % 4;
                    let req = FetchRequest {
                        content: record.body.archive.id,
                        chunk_size: record.body.archive.chunk_size,
                        index,
                    };
                    let FetchResponse::Chunk(chunk) = handle.send_fetch(b_id, req).await.unwrap()
                    else {
                        panic!("chunk {index} refused")
                    };
                    let start = index as usize * 16 * 1024;
                    assert_eq!(&chunk[..], &data[start..start + 16 * 1024]);
                }
                _ => {
                    let mut providers = handle
                        .find_providers(DhtKey::Content(record.body.archive.id).to_bytes())
                        .await
                        .unwrap();
                    assert_eq!(providers.recv().await, Some(b_id));
                }
            }
            i
        }));
    }
    let all = tokio::time::timeout(DEADLINE, futures::future::join_all(tasks))
        .await
        .expect("no deadlock");
    let mut done: Vec<u32> = all
        .into_iter()
        .map(|r| r.expect("task succeeded"))
        .collect();
    done.sort();
    assert_eq!(done, (0..200).collect::<Vec<_>>());
    for (node, _) in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_every_handle_call_returns_a_clear_error() {
    init_tracing();
    let (node, addr) = start_node().await;
    let handle = node.network.clone();
    node.shutdown().await;
    let calls = async {
        assert_eq!(handle.info().await, Err(NetworkError::Shutdown));
        assert_eq!(handle.dial(addr.clone()).await, Err(NetworkError::Shutdown));
        assert_eq!(handle.bootstrap().await, Err(NetworkError::Shutdown));
        assert_eq!(handle.publish(vec![1]).await, Err(NetworkError::Shutdown));
        assert_eq!(
            handle
                .get_record(b"agora/pkg/x".to_vec(), RecordQuorum::All)
                .await,
            Err(NetworkError::Shutdown)
        );
        assert_eq!(
            handle.find_providers(b"k".to_vec()).await.err(),
            Some(NetworkError::Shutdown)
        );
        assert_eq!(
            handle.listen("/ip4/127.0.0.1/tcp/0".parse().unwrap()).await,
            Err(NetworkError::Shutdown)
        );
        // Shutting down twice is not an error.
        assert_eq!(handle.shutdown().await, Ok(()));
    };
    tokio::time::timeout(Duration::from_secs(5), calls)
        .await
        .expect("calls after shutdown return at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_connects_to_the_peers_its_routing_table_knows_and_again_after_losing_one() {
    init_tracing();
    // B and C want no connections of their own: they never top up, so they never dial A.
    let wants_none = || {
        let mut config = node_config(&data_dir());
        config.network.target_peers = 0;
        config
    };
    let (b, b_addr) = start_with(wants_none()).await;
    let (c, c_addr) = start_with(wants_none()).await;
    let mut config = node_config(&data_dir());
    config.network.target_peers = 2;
    let (a, _) = start_with(config).await;
    // A only learns where B and C are. Its routing table now knows them and it has fewer
    // connections than it wants: it dials them (the DHT's own bootstrap on a new
    // routing-table entry does too here).
    for (node, addr) in [(&b, &b_addr), (&c, &c_addr)] {
        let mut plain = addr.clone();
        plain.pop();
        a.network
            .add_address(node.network.peer_id(), plain)
            .await
            .unwrap();
    }
    let wanted = [b.network.peer_id(), c.network.peer_id()];
    converge("A connects to B and C", DEADLINE, || async {
        let peers = a.network.peers().await.map_err(|e| e.to_string())?;
        if wanted.iter().all(|p| peers.contains(p)) {
            Ok(())
        } else {
            Err(format!("connected to {peers:?}"))
        }
    })
    .await;
    // The DHT bootstraps by itself 500 ms after a new peer enters the routing table, and B's
    // and C's bootstraps would dial A. Once every table holds the other two, a bootstrap run
    // now cancels that (and finds nobody new), so from here only A's top-up dials anyone.
    // B and C learn of each other from A when they look themselves up (a bootstrap); the one
    // Kademlia runs by itself may have run before A knew both, so they are asked to again.
    for node in [&a, &b, &c] {
        converge(
            "every routing table holds the other two",
            DEADLINE,
            || async {
                let held = routing_table_holds(node, 2).await;
                if held.is_err() && node.network.peer_id() != a.network.peer_id() {
                    let _ = node.network.bootstrap().await;
                }
                held
            },
        )
        .await;
    }
    for node in [&b, &c] {
        node.network.bootstrap().await.unwrap();
    }
    // Cut off and let back in, B is dialed again.
    a.network.block_peer(wanted[0]).await.unwrap();
    converge("A's connection to B is closed", DEADLINE, || async {
        let peers = a.network.peers().await.map_err(|e| e.to_string())?;
        match peers.as_slice() {
            [only] if *only == wanted[1] => Ok(()),
            other => Err(format!("connected to {other:?}")),
        }
    })
    .await;
    a.network.unblock_peer(wanted[0]).await.unwrap();
    converge("A reconnects to B", DEADLINE, || async {
        let peers = a.network.peers().await.map_err(|e| e.to_string())?;
        if peers.contains(&wanted[0]) {
            Ok(())
        } else {
            Err(format!("connected to {peers:?}"))
        }
    })
    .await;
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_held_to_the_limits_and_the_node_keeps_serving() {
    init_tracing();
    let (honest, honest_addr) = start_node().await;
    let mut config = node_config(&data_dir());
    // The defaults (2 per peer, 256 incoming) with fewer incoming, so the flood is quick.
    const INCOMING: u32 = 16;
    config.network.max_established_incoming = INCOMING;
    let (victim, victim_addr) = start_with(config).await;
    join(&victim, &honest_addr).await;

    // 40 identities open 3 connections each: 120 attempts against room for 16.
    const IDENTITIES: usize = 40;
    const EACH: usize = 3;
    let flood = ConnectionFlood::start(&victim_addr, IDENTITIES, EACH);
    converge("every flood dial has ended", DEADLINE, || async {
        let dials = flood.dials();
        let resolved: usize = dials.iter().map(|d| d.resolved).sum();
        let live: usize = dials.iter().map(|d| d.live).sum();
        let incoming = victim
            .network
            .info()
            .await
            .map_err(|e| e.to_string())?
            .incoming_connections;
        // Settled: every dial ended and the flood holds what the victim kept.
        if resolved == IDENTITIES * EACH && live == incoming as usize {
            Ok(())
        } else {
            Err(format!(
                "{resolved} dials ended, {live} open, victim has {incoming}"
            ))
        }
    })
    .await;
    let dials = flood.dials();
    let live: usize = dials.iter().map(|d| d.live).sum();
    assert_eq!(
        live, INCOMING as usize,
        "the incoming limit holds: {dials:?}"
    );
    assert!(
        dials.iter().all(|d| d.live <= 2),
        "two connections per peer at most: {dials:?}"
    );
    let info = victim.network.info().await.unwrap();
    assert_eq!(info.incoming_connections, INCOMING);
    assert!(info.connected_peers.contains(&honest.network.peer_id()));

    // The node keeps serving: a release published on the honest node reaches it, and a
    // newcomer it dials itself (outgoing connections are not the flood's) syncs from it.
    let record = release(
        "still-served",
        Version::new(1, 0, 0),
        &noise(1000, 9),
        16 * 1024,
        &publisher(9),
    );
    honest.registry.announce(record.clone()).await.unwrap();
    converge("the release reaches the flooded node", DEADLINE, || async {
        victim
            .registry
            .view()
            .has_record(&record.id())
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let (newcomer, newcomer_addr) = start_node().await;
    victim.network.dial(newcomer_addr).await.unwrap();
    converge(
        "the newcomer syncs from the flooded node",
        DEADLINE,
        || async {
            newcomer
                .registry
                .view()
                .has_record(&record.id())
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;

    flood.stop().await;
    for node in [victim, honest, newcomer] {
        node.shutdown().await;
    }
}
