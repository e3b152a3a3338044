//! The DHT on real swarms: records put and got, a forged one stored by nobody, local batches, replication, copies dropped before validation, lookups that do not wait on an unreachable peer.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_put_on_one_node_is_read_on_another_and_a_forged_one_is_stored_by_nobody() {
    init_tracing();
    let nodes = testnet(5).await;
    let key = publisher(1);
    let record = release(
        "hello-world",
        Version::new(1, 0, 0),
        &noise(100_000, 1),
        64 * 1024,
        &key,
    );
    let value = DhtValue::Release(record.clone());
    nodes[0]
        .0
        .network
        .put_record(value.key().to_bytes(), value.encode())
        .await
        .unwrap();

    let found = nodes[4]
        .0
        .network
        .get_record(value.key().to_bytes(), RecordQuorum::First)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(ReleaseRecord::decode(&found[0]).unwrap(), record);

    // A peer offers a record whose signature does not verify, straight to every node.
    let evil_key = DhtKey::Release("evil".parse().unwrap(), Version::new(1, 0, 0));
    let mut forged = release(
        "evil",
        Version::new(1, 0, 0),
        &noise(1000, 2),
        16 * 1024,
        &key,
    )
    .encode();
    *forged.last_mut().unwrap() ^= 0x01;
    let mut hostile = Hostile::new();
    hostile
        .connect(&nodes.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>())
        .await;
    let targets = nodes.iter().map(|(n, _)| n.network.peer_id()).collect();
    hostile.put_raw(evil_key.to_bytes(), forged, targets).await;

    converge_nodes(
        "every node refuses the forged record",
        DEADLINE,
        &nodes,
        |_, node| async move {
            let refused = node.registry.stats.records_refused.load(Ordering::Relaxed);
            if refused == 1 {
                Ok(())
            } else {
                Err(format!("refused {refused} records, expected 1"))
            }
        },
    )
    .await;
    for (i, (node, _)) in nodes.iter().enumerate() {
        assert_eq!(
            node.network
                .get_record(evil_key.to_bytes(), RecordQuorum::All)
                .await,
            Err(NetworkError::NotFound),
            "node {i} can find the forged record"
        );
    }
    // Our own node refuses to put a forged value at all.
    let mut bad = record.encode();
    *bad.last_mut().unwrap() ^= 0x01;
    assert!(matches!(
        nodes[0]
            .0
            .network
            .put_record(value.key().to_bytes(), bad)
            .await,
        Err(NetworkError::Store(_))
    ));
    for (node, _) in nodes {
        node.shutdown().await;
    }
}

/// Records stored in one batch into the local DHT store (as a node restores what it holds at
/// start): each valid one is served, and each refused one is named by its position with the
/// reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stored_locally_is_served_and_names_each_record_it_refuses() {
    init_tracing();
    let (node, _) = start_node().await;
    let key = publisher(3);
    let values: Vec<DhtValue> = ["first", "second"]
        .iter()
        .map(|name| DhtValue::Release(release(name, Version::new(1, 0, 0), b"x", 16 * 1024, &key)))
        .collect();
    let record = |v: &DhtValue| libp2p::kad::Record::new(v.key().to_bytes(), v.encode());
    let bad_key = b"not an agora key".to_vec();
    let refused = node
        .network
        .store_records(vec![
            record(&values[0]),
            libp2p::kad::Record::new(bad_key.clone(), values[1].encode()),
            record(&values[1]),
        ])
        .await
        .unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, 1);
    assert!(
        matches!(refused[0].1, NetworkError::Store(_)),
        "{refused:?}"
    );
    for v in &values {
        let found = node
            .network
            .get_record(v.key().to_bytes(), RecordQuorum::First)
            .await
            .unwrap();
        assert_eq!(found, [v.encode()], "{}", v.key());
    }
    node.shutdown().await;
}

/// A record only one node holds reaches its peers at that node's next replication round,
/// and is validated and stored there like any record a peer puts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_one_node_holds_reaches_its_peers_by_replication() {
    init_tracing();
    let nodes = testnet_with(2, |c| c.network.dht_replication = Duration::from_secs(1)).await;
    let (a, b) = (&nodes[0].0, &nodes[1].0);
    let v = DhtValue::Release(release(
        "kept",
        Version::new(1, 0, 0),
        b"k",
        16 * 1024,
        &publisher(5),
    ));
    let record = libp2p::kad::Record::new(v.key().to_bytes(), v.encode());
    assert_eq!(a.network.store_records(vec![record]).await.unwrap(), []);
    converge("b stores the replicated record", DEADLINE, || async {
        let m = &b.metrics;
        match (
            b.registry.stats.records_stored.load(Ordering::Relaxed),
            m.dht_records.get(),
        ) {
            (1, 1) => Ok(()),
            other => Err(format!(
                "stored by the registry, in the DHT store: {other:?}"
            )),
        }
    })
    .await;
    assert_eq!(b.metrics.dht_records_unchanged.get(), 0);
    for (n, _) in nodes {
        n.shutdown().await;
    }
}

/// A DHT record a peer puts that is byte-identical to the copy a node stores (what every
/// replication round brings) is dropped by the event loop: the registry never sees it. A
/// record the node lacks, or another value under a key it holds, still goes to the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_stored_dht_record_is_dropped_before_validation() {
    init_tracing();
    let nodes = testnet(2).await;
    let (a, b) = (&nodes[0].0, &nodes[1].0);
    // A puts to the peers its routing table knows: B, once A has heard where B listens.
    converge("A's routing table holds B", DEADLINE, || {
        routing_table_holds(a, 1)
    })
    .await;
    let key = publisher(4);
    let value = |name: &str, archive: &[u8]| {
        DhtValue::Release(release(
            name,
            Version::new(1, 0, 0),
            archive,
            16 * 1024,
            &key,
        ))
    };
    let (held, other, conflicting) = (
        value("held", b"x"),
        value("other", b"y"),
        value("held", b"z"),
    );
    assert_eq!(held.key(), conflicting.key());
    let record = libp2p::kad::Record::new(held.key().to_bytes(), held.encode());
    for n in [a, b] {
        assert_eq!(
            n.network.store_records(vec![record.clone()]).await.unwrap(),
            []
        );
    }
    let seen = |n: &agora_daemon::Node| {
        let m = &n.metrics;
        let s = &n.registry.stats;
        (
            m.dht_records_received.get(),
            m.dht_records_unchanged.get(),
            s.records_stored.load(Ordering::Relaxed) + s.records_refused.load(Ordering::Relaxed),
        )
    };
    let received = |want: u64| {
        move || async move {
            let got = seen(b).0;
            if got == want {
                Ok(())
            } else {
                Err(format!("{got} records received"))
            }
        }
    };
    assert_eq!(seen(b), (0, 0, 0));

    a.network
        .put_record(held.key().to_bytes(), held.encode())
        .await
        .unwrap();
    converge("the copy arrives", DEADLINE, received(1)).await;
    assert_eq!(seen(b), (1, 1, 0), "dropped before the registry");

    for (n, v) in [(2, &other), (3, &conflicting)] {
        a.network
            .put_record(v.key().to_bytes(), v.encode())
            .await
            .unwrap();
        converge("the record arrives", DEADLINE, received(n)).await;
        converge("the registry decides", DEADLINE, || async {
            match seen(b) {
                (_, 1, decided) if decided == n - 1 => Ok(()),
                other => Err(format!("received, unchanged, decided: {other:?}")),
            }
        })
        .await;
    }
    for (n, _) in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dht_lookups_answer_without_waiting_on_an_unreachable_peer() {
    init_tracing();
    // Queries that may wait on a dead peer much longer than the test's patience.
    let patient = |dir: &std::path::Path| {
        let mut c = node_config(dir);
        c.network.query_timeout = Duration::from_secs(300);
        c.network.command_timeout = Duration::from_secs(300);
        c
    };
    let (holder, holder_addr) = start_with(patient(&data_dir())).await;
    let (asker, _) = start_with(patient(&data_dir())).await;
    join(&asker, &holder_addr).await;
    // The holder stores its record on the asker: it must know the asker first (it learns
    // it from the asker's identify, which can come after the asker's bootstrap ends).
    converge("the holder's routing table", DEADLINE, || {
        routing_table_holds(&holder, 1)
    })
    .await;

    let content = DhtKey::Content(agora_protocol::ContentId::of(b"archive")).to_bytes();
    holder
        .network
        .start_providing(content.clone())
        .await
        .unwrap();
    let record = release(
        "graceful",
        Version::new(1, 0, 0),
        b"x",
        64 * 1024,
        &publisher(5),
    );
    let value = DhtValue::Release(record);
    holder
        .network
        .put_record(value.key().to_bytes(), value.encode())
        .await
        .unwrap();

    // Ghosts farther than the holder from both keys: a lookup asks the closest peers it
    // knows first (three at a time), so the holder is always among the first asked and
    // answers while the ghosts hang, whether or not the holder's put has reached the asker's
    // own store yet (the asker stores it only once its registry has admitted it durably).
    let (sink_addr, held) = silent_listener().await;
    let keys = [content.clone(), value.key().to_bytes()];
    for _ in 0..3 {
        let ghost = farther_peer(&keys, holder.network.peer_id());
        asker
            .network
            .add_address(ghost, sink_addr.clone())
            .await
            .unwrap();
    }

    // The provider comes as soon as the search meets it, while the search still waits on
    // the ghosts; a record lookup with quorum All answers after its grace period.
    let patience = Duration::from_secs(8);
    let mut providers = asker.network.find_providers(content).await.unwrap();
    let first = tokio::time::timeout(patience, providers.recv())
        .await
        .expect("a provider came while the ghosts still hang");
    assert_eq!(first, Some(holder.network.peer_id()));
    assert_eq!(
        providers.try_recv(),
        Err(tokio::sync::mpsc::error::TryRecvError::Empty),
        "the search is still running"
    );
    drop(providers);
    let records = tokio::time::timeout(
        patience,
        asker
            .network
            .get_record(value.key().to_bytes(), RecordQuorum::All),
    )
    .await
    .expect("records answered while the ghosts still hang")
    .unwrap();
    assert_eq!(records, [value.encode()]);

    held.abort();
    asker.shutdown().await;
    holder.shutdown().await;
}
