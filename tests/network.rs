//! The node core on real swarms: in-process nodes on loopback TCP, no mocks.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_daemon::network::{NetworkError, RecordQuorum};
use agora_daemon::ops::fetch::{FetchError, PeerOutcome, Providers, fetch_archive};
use agora_protocol::Version;
use agora_protocol::codec::Wire;
use agora_protocol::dht::{DhtKey, DhtValue};
use agora_protocol::messages::{FetchRequest, FetchResponse, GossipMessage};
use agora_protocol::records::ReleaseRecord;
use common::hostile::{ConnectionFlood, Hostile};
use common::*;
use futures::StreamExt;
use libp2p::PeerId;

const DEADLINE: Duration = Duration::from_secs(30);

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
    };
    let refused = fetch_archive(&fetcher.network, &info, refusing, 4).await;
    assert!(
        matches!(refused, Err(FetchError::ChunkUnavailable { .. })),
        "{refused:?}"
    );
    let nobody = Providers {
        known: Vec::new(),
        later: Some(futures::stream::empty().boxed()),
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

/// The address of a "peer" that accepts TCP connections and never speaks (every dial to it
/// hangs in the handshake), and the task holding its connections open.
async fn silent_listener() -> (libp2p::Multiaddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!(
        "/ip4/127.0.0.1/tcp/{}",
        listener.local_addr().unwrap().port()
    )
    .parse()
    .unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            open.push(conn);
        }
    });
    (addr, held)
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

/// A new peer id farther than `than` from each of `keys` in Kademlia's XOR metric.
fn farther_peer(keys: &[Vec<u8>], than: PeerId) -> PeerId {
    use libp2p::kad::{KBucketKey, RecordKey};
    let targets: Vec<_> = keys
        .iter()
        .map(|k| KBucketKey::new(RecordKey::new(k)))
        .collect();
    let farther = |peer: PeerId| {
        targets
            .iter()
            .all(|t| KBucketKey::from(peer).distance(t) > KBucketKey::from(than).distance(t))
    };
    (0..1_000_000)
        .map(|_| {
            libp2p::identity::Keypair::generate_ed25519()
                .public()
                .to_peer_id()
        })
        .find(|p| farther(*p))
        .expect("a million random peer ids, none farther than the holder from both keys")
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
