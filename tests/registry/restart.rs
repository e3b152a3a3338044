//! Restarts: what a node keeps, a store whose pins disagree with its log, the search index lost, rebuilt, saved and caught up.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_has_its_catalog_pins_reputation_and_blobs_and_searches_offline() {
    init_tracing();
    let seed_dir = data_dir();
    let dir = data_dir();
    let (seed, seed_addr) = start_with(node_config(&seed_dir)).await;
    let config = node_config(&dir);
    let (node, _) = start_with(config.clone()).await;
    join(&node, &seed_addr).await;
    let key = publisher(6);
    let own = publish(&node, &package_dir("mine", "1.0.0", &[], 5000, 11), &key).await;
    let theirs = publish(
        &seed,
        &package_dir("theirs", "2.1.0", &[], 300_000, 12),
        &publisher(7),
    )
    .await;
    converge("the seed's release arrives", DEADLINE, || async {
        if node.registry.view().has_record(&theirs.id()) {
            Ok(())
        } else {
            Err("missing".into())
        }
    })
    .await;
    let fetched = node
        .registry
        .fetch(&theirs.body.name, &theirs.body.version)
        .await
        .unwrap();
    node.registry.pin(&fetched.content, true).await.unwrap();
    let seed_peer = seed.network.peer_id();
    let rep_before = node.registry.reputation_of(&seed_peer).0.unwrap();
    // One success for each chunk it served: 300,000 bytes are two of 256 KiB.
    assert_eq!(theirs.body.archive.chunks.len(), 2);
    assert_eq!(rep_before.successes, 2);
    let catalog_before = node.registry.view().record_count();
    node.shutdown().await;
    seed.shutdown().await;

    // Same data directory, same identity, nobody to talk to.
    let node = Node::start(config).await.unwrap();
    assert_eq!(node.registry.view().record_count(), catalog_before);
    assert_eq!(node.registry.startup.records, 2);
    assert!(!node.registry.startup.index_rebuilt);
    assert_eq!(names(&node.registry, "theirs"), ["theirs"]);
    assert_eq!(names(&node.registry, "mine"), ["mine"]);
    assert_eq!(
        node.registry.view().owner(&"mine".parse().unwrap()),
        Some(key.public())
    );
    let meta = node.registry.blobs.meta(&fetched.content).unwrap();
    assert!(meta.pinned);
    assert!(node.registry.blobs.has(&own.body.archive.id));
    let again = node
        .registry
        .fetch(&theirs.body.name, &theirs.body.version)
        .await
        .unwrap();
    assert!(again.cached);
    assert_eq!(
        node.registry.reputation_of(&seed_peer).0.unwrap().successes,
        rep_before.successes
    );
    // Its own head and release are back in its DHT store (put back while it serves), served
    // before anyone republishes.
    for key in [
        agora_protocol::dht::DhtKey::Head("mine".parse().unwrap()),
        agora_protocol::dht::DhtKey::Release("mine".parse().unwrap(), Version::new(1, 0, 0)),
    ] {
        converge("the record is back in the DHT store", DEADLINE, || async {
            let found = node
                .network
                .get_record(key.to_bytes(), agora_daemon::network::RecordQuorum::First)
                .await
                .map_err(|e| e.to_string())?;
            if found.len() == 1 {
                Ok(())
            } else {
                Err(format!("{key}: {} records", found.len()))
            }
        })
        .await;
    }
    // Publishing 1.0.0 again is refused: the store remembers.
    let err = node
        .registry
        .publish(package_dir("mine", "1.0.0", &[], 5000, 13), &key)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "mine@1.0.0 is already published (release record {})",
            own.id()
        )
    );
    node.shutdown().await;
}

/// The owner and highest-version pins are written with the records, in the same transactions:
/// a store where they disagree with the log is damaged. With repair off the node refuses to
/// start on it, naming the file and the pin; with repair on, it sets it aside and starts anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_pins_disagree_with_its_log_is_refused_at_start() {
    init_tracing();
    let dir = data_dir();
    let mut config = node_config(&dir);
    let key = publisher(8);
    let records = many_releases(4, &key);
    store_and_stop(&config, records[..3].to_vec()).await;

    let db_path = dir.join("catalog.redb");
    let pristine = dir.join("catalog.redb.pristine");
    std::fs::copy(&db_path, &pristine).unwrap();
    let name = |s: &str| s.parse::<PackageName>().unwrap();
    let stranger = publisher(9).public();
    let unpinned = records[3].clone();
    let cases = [
        (
            CatalogWrite {
                owners: vec![(name("synthetic-00001"), stranger)],
                ..Default::default()
            },
            format!(
                "owner pin of 'synthetic-00001' is {stranger} but the catalog says {}",
                key.public()
            ),
        ),
        (
            CatalogWrite {
                highest: vec![(name("synthetic-00002"), Version::new(9, 9, 9))],
                ..Default::default()
            },
            "highest version pinned for 'synthetic-00002' is 9.9.9 but the catalog says 1.0.0"
                .to_owned(),
        ),
        (
            CatalogWrite {
                owners: vec![(name("not-in-the-catalog"), key.public())],
                ..Default::default()
            },
            "owner pin for 'not-in-the-catalog', which the catalog does not have".to_owned(),
        ),
        (
            CatalogWrite {
                highest: vec![(name("a-first-name"), Version::new(1, 0, 0))],
                ..Default::default()
            },
            "highest version pinned for 'a-first-name', which has no owner pin".to_owned(),
        ),
        (
            CatalogWrite {
                highest: vec![(name("zz-last-name"), Version::new(1, 0, 0))],
                ..Default::default()
            },
            "highest version pinned for 'zz-last-name', which has no owner pin".to_owned(),
        ),
        (
            CatalogWrite {
                records: vec![(unpinned.id(), unpinned)],
                ..Default::default()
            },
            "the catalog has 4 names but 3 owner pins".to_owned(),
        ),
    ];
    for (write, expected) in cases {
        Db::open(&db_path).unwrap().write_catalog(&write).unwrap();
        // Refused the same way twice: the refusal repaired or dropped nothing.
        config.registry.repair = RepairMode::Off;
        for _ in 0..2 {
            let err = Node::start(config.clone()).await.err().expect("refused");
            assert_eq!(
                err.to_string(),
                format!("{} is damaged: {expected}", db_path.display())
            );
        }
        config.registry.repair = RepairMode::Auto;
        let node = Node::start(config.clone()).await.unwrap();
        let repair = node.registry.repair().expect("repaired");
        assert_eq!(
            repair.cause,
            format!("{} is damaged: {expected}", db_path.display())
        );
        // Nothing of it was this node's own: the catalog comes back from peers.
        assert_eq!((repair.from_journal, node.registry.startup.records), (0, 0));
        node.shutdown().await;
        std::fs::remove_file(repair.set_aside.unwrap()).unwrap();
        std::fs::copy(&pristine, &db_path).unwrap();
    }

    let node = Node::start(config).await.unwrap();
    assert_eq!(node.registry.startup.records, 3);
    assert!(!node.registry.startup.index_rebuilt);
    assert_eq!(
        names(&node.registry, "synthetic"),
        ["synthetic-00000", "synthetic-00001", "synthetic-00002"]
    );
    node.shutdown().await;
}

/// A node whose search index is gone (a crash before it was sealed) rebuilds it from the
/// catalog at start, every name of several chunks of names searchable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_search_index_is_rebuilt_from_the_catalog_at_start() {
    init_tracing();
    let dir = data_dir();
    let config = node_config(&dir);
    const N: usize = 2 * 4096 + 5;
    store_and_stop(&config, many_releases(N, &publisher(10))).await;
    std::fs::remove_dir_all(dir.join("index")).unwrap();

    let node = Node::start(config).await.unwrap();
    assert!(node.registry.startup.index_rebuilt);
    // The node serves while it rebuilds; the first search waits for the whole index.
    let all = node
        .registry
        .search(SearchQuery::text("synthetic"))
        .await
        .unwrap();
    assert_eq!(all.total, N as u64);
    assert_eq!(node.registry.view().index_state(), IndexState::Ready);
    assert_eq!(node.registry.view().indexed_count(), N as u64);
    let per_category = |i: usize| (0..N).filter(|k| k % 3 == i).count() as u64;
    let mut categories = all.categories;
    categories.sort();
    assert_eq!(
        categories,
        [
            ("cli".to_owned(), per_category(1)),
            ("data".to_owned(), per_category(2)),
            ("web".to_owned(), per_category(0)),
        ]
    );
    for i in [0, 4095, 4096, 8191, 8192, N - 1] {
        let name = format!("synthetic-{i:05}");
        assert_eq!(names(&node.registry, &name).first(), Some(&name));
    }
    node.shutdown().await;
}

/// A release admitted while the node rebuilds its search index is searchable once the rebuild
/// ends, and a node stopped while it rebuilds waits for the rebuild and saves the whole index:
/// the next start loads it instead of rebuilding again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_arrives_during_an_index_rebuild_is_indexed_and_the_index_is_saved_at_stop() {
    init_tracing();
    let dir = data_dir();
    let config = node_config(&dir);
    let key = publisher(13);
    const N: usize = 2 * 4096;
    store_and_stop(&config, many_releases(N, &key)).await;
    std::fs::remove_dir_all(dir.join("index")).unwrap();

    let node = Node::start(config.clone()).await.unwrap();
    assert!(node.registry.startup.index_rebuilt);
    let late = CatalogRecord::Release(release(
        "late-arrival",
        Version::new(1, 0, 0),
        b"late",
        16 * 1024,
        &key,
    ));
    ingest(&node.registry, vec![late]).await;
    assert_eq!(names(&node.registry, "late-arrival"), ["late-arrival"]);
    assert_eq!(node.registry.view().indexed_count(), N as u64 + 1);
    node.shutdown().await;

    // Stopped at once after a start that rebuilds: the stop waits for the rebuild.
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let node = Node::start(config.clone()).await.unwrap();
    assert!(node.registry.startup.index_rebuilt);
    node.shutdown().await;

    let node = Node::start(config).await.unwrap();
    let startup = &node.registry.startup;
    assert_eq!((startup.index_caught_up, startup.index_rebuilt), (0, false));
    assert_eq!(node.registry.view().index_state(), IndexState::Ready);
    assert_eq!(node.registry.view().indexed_count(), N as u64 + 1);
    let all = node
        .registry
        .search(SearchQuery::text("synthetic"))
        .await
        .unwrap();
    assert_eq!(all.total, N as u64);
    assert_eq!(names(&node.registry, "late-arrival"), ["late-arrival"]);
    node.shutdown().await;
}

/// A running node saves its search index once the copy on disk is an overlay's worth of
/// records (256) or an eighth of the index behind its catalog, not before: a crash after that
/// leaves a copy the next start catches up instead of rebuilding the whole index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_saves_its_search_index_once_the_saved_copy_is_far_behind() {
    init_tracing();
    let dir = data_dir();
    let config = node_config(&dir);
    let key = publisher(14);
    let seal_file = dir.join("index").join("agora-sealed");
    let mut records = many_releases(300, &key);
    records.extend((0..10).map(|i| {
        let name = format!("later-{i}");
        CatalogRecord::Release(release(&name, Version::new(1, 0, 0), b"l", 16 * 1024, &key))
    }));
    let node = Node::start(config.clone()).await.unwrap();

    ingest(&node.registry, records[..255].to_vec()).await;
    assert!(!node.registry.save_index_if_behind().await.unwrap());
    assert!(!seal_file.exists());
    ingest(&node.registry, records[255..300].to_vec()).await;
    assert!(node.registry.save_index_if_behind().await.unwrap());
    let sealed = std::fs::read_to_string(&seal_file).unwrap();
    assert!(sealed.contains(" records=300 "), "{sealed}");
    assert!(!node.registry.save_index_if_behind().await.unwrap());
    ingest(&node.registry, records[300..].to_vec()).await;
    assert!(!node.registry.save_index_if_behind().await.unwrap());
    assert_eq!(std::fs::read_to_string(&seal_file).unwrap(), sealed);

    // A crash now leaves the copy saved at 300 records: the next start re-indexes the 10
    // names logged after it.
    let saved = dir.join("index-saved");
    copy_dir(&dir.join("index"), &saved);
    node.shutdown().await;
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    copy_dir(&saved, &dir.join("index"));
    let node = Node::start(config).await.unwrap();
    let startup = &node.registry.startup;
    assert_eq!(
        (startup.index_caught_up, startup.index_rebuilt),
        (10, false)
    );
    assert_eq!(node.registry.view().indexed_count(), 310);
    assert_eq!(
        names(&node.registry, "later-9").first().map(String::as_str),
        Some("later-9")
    );
    node.shutdown().await;
}

/// A node that stopped without saving its search index (a crash) after its catalog grew
/// finds the copy saved at its last clean shutdown, re-indexes only the names of the records
/// logged after it, and searches as a rebuilt index would. A copy saved for another catalog
/// is not taken for it, and when the names to re-index are too many, the index is rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_search_index_is_caught_up_with_the_records_logged_after_it() {
    init_tracing();
    let dir = data_dir();
    let config = node_config(&dir);
    let key = publisher(11);
    const N: usize = 300;
    store_and_stop(&config, many_releases(N, &key)).await;
    let saved = dir.join("index-saved");
    copy_dir(&dir.join("index"), &saved);

    // After that clean shutdown: a new name, a newer version of one name, a yank of another.
    let mut newer = release(
        "synthetic-00007",
        Version::new(2, 0, 0),
        b"v2",
        16 * 1024,
        &key,
    );
    newer.body.meta.description = "rewritten from scratch".into();
    newer = Signed::sign(newer.body, &key).unwrap();
    let yank = Signed::sign(
        YankBody {
            name: "synthetic-00009".parse().unwrap(),
            version: Version::new(1, 0, 0),
            publisher: key.public(),
            yanked_at: 1_700_000_500,
            reason: "broken".into(),
        },
        &key,
    )
    .unwrap();
    let later = vec![
        CatalogRecord::Release(release(
            "later-pkg",
            Version::new(1, 0, 0),
            b"x",
            16 * 1024,
            &key,
        )),
        CatalogRecord::Release(newer),
        CatalogRecord::Yank(yank),
    ];
    store_and_stop(&config, later).await;
    // The crash: the index on disk is the copy saved before those three records.
    let restore_saved = || {
        std::fs::remove_dir_all(dir.join("index")).unwrap();
        copy_dir(&saved, &dir.join("index"));
    };
    restore_saved();

    let node = Node::start(config.clone()).await.unwrap();
    let startup = &node.registry.startup;
    assert_eq!((startup.index_caught_up, startup.index_rebuilt), (3, false));
    let all = node
        .registry
        .search(SearchQuery::text("synthetic"))
        .await
        .unwrap();
    assert_eq!(all.total, N as u64 - 1, "the yanked one is gone");
    assert!(!names(&node.registry, "synthetic-00009").contains(&"synthetic-00009".to_owned()));
    assert_eq!(names(&node.registry, "later-pkg"), ["later-pkg"]);
    let rewritten = node
        .registry
        .search(SearchQuery::text("rewritten scratch"))
        .await
        .unwrap();
    assert_eq!(
        rewritten
            .hits
            .iter()
            .map(|h| (h.name.as_str(), h.version.as_str()))
            .collect::<Vec<_>>(),
        [("synthetic-00007", "2.0.0")]
    );
    node.shutdown().await;

    // Another catalog with more records than the saved copy reflects: rebuilt, not caught up.
    let other_dir = data_dir();
    let other = node_config(&other_dir);
    store_and_stop(&other, many_releases(N + 1, &publisher(12))).await;
    std::fs::remove_dir_all(other_dir.join("index")).unwrap();
    copy_dir(&saved, &other_dir.join("index"));
    let node = Node::start(other).await.unwrap();
    let startup = &node.registry.startup;
    assert_eq!((startup.index_caught_up, startup.index_rebuilt), (0, true));
    let all = node
        .registry
        .search(SearchQuery::text("synthetic"))
        .await
        .unwrap();
    assert_eq!(all.total, N as u64 + 1);
    node.shutdown().await;

    // More names after the saved copy than a catch-up takes (an overlay's worth, 256):
    // rebuilt.
    let more: Vec<CatalogRecord> = (0..257)
        .map(|i| {
            let name = format!("more-{i:03}");
            CatalogRecord::Release(release(&name, Version::new(1, 0, 0), b"m", 16 * 1024, &key))
        })
        .collect();
    store_and_stop(&config, more).await;
    restore_saved();
    let node = Node::start(config).await.unwrap();
    let startup = &node.registry.startup;
    assert_eq!((startup.index_caught_up, startup.index_rebuilt), (0, true));
    let all = node
        .registry
        .search(SearchQuery::text("more"))
        .await
        .unwrap();
    assert_eq!(all.total, 257);
    node.shutdown().await;
}
