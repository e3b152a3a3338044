//! Fetching a provided archive in verified chunks, and a provider that never answers.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provided_five_mib_blob_is_found_and_fetched_in_verified_chunks() {
    init_tracing();
    let nodes = testnet(5).await;
    let data = noise(5 * 1024 * 1024, 5);
    let key = publisher(5);
    let record = release("big", Version::new(1, 0, 0), &data, 256 * 1024, &key);
    let (provider, _) = &nodes[0];
    provider
        .registry
        .add_blob_with(record.body.archive.clone(), data.clone())
        .await
        .unwrap();
    provider.registry.announce(record.clone()).await.unwrap();

    let (fetcher, _) = &nodes[4];
    let rel_key = DhtKey::Release("big".parse().unwrap(), Version::new(1, 0, 0));
    let values = fetcher
        .network
        .get_record(rel_key.to_bytes(), RecordQuorum::First)
        .await
        .unwrap();
    let info = ReleaseRecord::decode(&values[0]).unwrap().body.archive;
    assert_eq!(info.chunks.len(), 20);

    let providers = all_providers(fetcher, DhtKey::Content(info.id).to_bytes()).await;
    assert_eq!(providers, vec![provider.network.peer_id()]);
    let (fetched_data, fetched) = fetch_archive(
        &fetcher.network,
        &info,
        Providers::fixed(vec![provider.network.peer_id()]),
        4,
    )
    .await
    .unwrap();
    assert!(
        fetched_data == data,
        "fetched bytes differ from the published blob"
    );
    assert_eq!(fetched.served_by, vec![(provider.network.peer_id(), 20)]);
    assert!(fetched.blamed().is_empty());
    assert_eq!(
        provider
            .registry
            .stats
            .chunks_served
            .load(Ordering::Relaxed),
        20
    );

    // A chunk past the end and an unknown blob are refused precisely.
    let past = FetchRequest {
        content: info.id,
        chunk_size: info.chunk_size,
        index: 20,
    };
    assert_eq!(
        fetcher
            .network
            .send_fetch(provider.network.peer_id(), past)
            .await
            .unwrap(),
        FetchResponse::Refused(agora_protocol::messages::Refusal::OutOfRange)
    );
    let unknown = FetchRequest {
        content: agora_protocol::ContentId::of(b"nothing"),
        chunk_size: info.chunk_size,
        index: 0,
    };
    assert_eq!(
        fetcher
            .network
            .send_fetch(provider.network.peer_id(), unknown)
            .await
            .unwrap(),
        FetchResponse::Refused(agora_protocol::messages::Refusal::NotFound)
    );

    // A fetch that knows no provider yet waits for the search to find one.
    let found_later = futures::stream::iter([provider.network.peer_id()]).boxed();
    let waiting = Providers {
        known: Vec::new(),
        later: Some(found_later),
        fetchers: None,
    };
    let (late_data, late) = fetch_archive(&fetcher.network, &info, waiting, 4)
        .await
        .unwrap();
    assert!(
        late_data == data,
        "bytes fetched from a later provider differ"
    );
    assert_eq!(late.served_by, vec![(provider.network.peer_id(), 20)]);
    // Providers that refuse every chunk, and a search that ends finding no other.
    let (empty, _) = &nodes[1];
    let refusing = Providers {
        known: vec![empty.network.peer_id()],
        later: Some(futures::stream::empty().boxed()),
        fetchers: None,
    };
    let refused = fetch_archive(&fetcher.network, &info, refusing, 4).await;
    assert_eq!(
        refused.err(),
        Some(FetchError::ChunksUnavailable {
            missing: (0..20).collect(),
            chunks: 20
        })
    );
    let nobody = Providers {
        known: Vec::new(),
        later: Some(futures::stream::empty().boxed()),
        fetchers: None,
    };
    assert_eq!(
        fetch_archive(&fetcher.network, &info, nobody, 4)
            .await
            .err(),
        Some(FetchError::NoProviders(info.id))
    );
    for (node, _) in nodes {
        node.shutdown().await;
    }
}

/// A provider record outlives its node: the best-ranked provider is a peer whose address
/// accepts TCP and never speaks. It is asked for one chunk (not a share of them), and once
/// the connected provider has sent the rest, that chunk is asked of it too: the fetch ends
/// without waiting for the dial that hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_that_never_answers_holds_up_no_fetch() {
    init_tracing();
    let nodes = testnet(2).await;
    let (provider, _) = &nodes[0];
    let (fetcher, _) = &nodes[1];
    let data = noise(2 * 1024 * 1024, 9);
    let record = release(
        "ghosted",
        Version::new(1, 0, 0),
        &data,
        256 * 1024,
        &publisher(9),
    );
    let info = record.body.archive.clone();
    assert_eq!(info.chunks.len(), 8);
    provider
        .registry
        .add_blob_with(info.clone(), data.clone())
        .await
        .unwrap();

    let (silent_addr, held) = silent_listener().await;
    let ghost = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    fetcher
        .network
        .add_address(ghost, silent_addr)
        .await
        .unwrap();

    let live = provider.network.peer_id();
    let (fetched, report) = tokio::time::timeout(
        Duration::from_secs(8),
        fetch_archive(
            &fetcher.network,
            &info,
            Providers::fixed(vec![ghost, live]),
            4,
        ),
    )
    .await
    .expect("the fetch waited on the silent peer")
    .unwrap();
    assert!(fetched == data, "fetched bytes differ from the blob");
    assert_eq!(report.served_by, vec![(live, 8)]);
    // The silent peer's one request was still out when the fetch ended: a failure for it
    // (it ranks lower next time), after the live provider's 8 chunks.
    assert_eq!(report.outcomes.len(), 9, "{:?}", report.outcomes);
    assert!(
        report.outcomes[..8]
            .iter()
            .all(|o| matches!(o, PeerOutcome::Served { peer, .. } if *peer == live)),
        "{:?}",
        report.outcomes
    );
    assert_eq!(report.outcomes[8], PeerOutcome::Failed { peer: ghost });
    held.abort();
    for (node, _) in nodes {
        node.shutdown().await;
    }
}
