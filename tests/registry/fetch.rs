//! Fetching archives: three providers with a corrupt one, QUIC alone, the cache quota with pinned blobs, a provider lost in the middle of a fetch.

use super::*;

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
    assert_eq!(big.body.archive.chunks.len(), 81);
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
    assert_eq!(got.served_by.iter().map(|(_, n)| n).sum::<u32>(), 81);
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
        81 - 9
    );
    assert_eq!(std::fs::read(&resumed.path).unwrap(), archive);
    assert!(!resumer.blobs.partial_path(&big.body.archive.id).exists());

    shutdown(nodes).await;
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
    assert_eq!(chunks, 81);
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
    let parallel = agora_daemon::ops::fetch::parallel_for(big.body.archive.chunk_size) as u32;
    let mut crashed_at = None;
    let on_progress = Box::new(move |d: agora_daemon::ops::fetch::Downloaded<'_>| {
        if crashed_at.is_none() && d.done >= 20 * chunk {
            crash.abort();
            crashed_at = Some(d.done);
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
    assert!(served(lost_id) <= 20 + parallel, "{:?}", got.served_by);
    assert!(
        served(kept_id) >= chunks - 20 - parallel,
        "{:?}",
        got.served_by
    );
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
