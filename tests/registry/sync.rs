//! Catalog sync and gossip: a node joining a big network, networks that meet or heal after a partition, the cost of a sync between nearly equal catalogs, the summary per bucket, history arriving newest first, gossip of a record already held.

use super::*;

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
