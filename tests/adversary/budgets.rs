//! Budgets against floods and waste: an allowlist node and its relay, large requests never read, nodes that disagree, a peer that syncs junk, a flood of valid records, a key over its budget.

use super::*;

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
    // The rejections reach the score as node 0 works through what the flooder sent, which
    // on a loaded machine goes on after the honest release has spread.
    let network = nodes[0].0.network.clone();
    converge(
        "the flooder's score falls below the graylist threshold",
        DEADLINE,
        || {
            let network = network.clone();
            async move {
                let score = network.gossip_score(hostile_id).await.unwrap();
                match score {
                    Some(s) if s < -80.0 => Ok(()),
                    other => Err(format!("score {other:?}")),
                }
            }
        },
    )
    .await;
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
