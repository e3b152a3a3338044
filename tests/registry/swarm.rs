//! Swarming fetch: a node fetching an archive serves the chunks it has verified, and
//! fetchers that lose their seed finish from each other, or fail naming what nobody holds.

use super::*;
use agora_daemon::network::budget::Budget;
use agora_daemon::ops::FetchedBlob;
use agora_daemon::ops::fetch::FetchError;
use agora_protocol::dht::DhtKey;
use agora_protocol::messages::{
    FetchRequest, FetchResponse, Have, HaveRequest, HaveResponse, Refusal,
};

/// A seed that answers every chunk request `Busy` (it is there, and serves nothing), then
/// `n` nodes joined through it.
async fn busy_seed_and(n: usize) -> Vec<(Node, Multiaddr)> {
    let mut config = node_config(&data_dir());
    config.network.fetch_budget = Budget {
        per_peer: 0,
        total: 0,
    };
    let mut nodes = vec![start_with(config).await];
    for _ in 0..n {
        let (node, addr) = start_node().await;
        join(&node, &nodes[0].1).await;
        nodes.push((node, addr));
    }
    nodes
}

/// Publishes a 6 MiB package on the seed and waits until every other node has its release;
/// returns the release and the archive's bytes.
async fn crowd_package(nodes: &[(Node, Multiaddr)], name: &str) -> (ReleaseRecord, Vec<u8>) {
    let key = publisher(37);
    let record = publish(
        &nodes[0].0,
        &package_dir(name, "1.0.0", &[], 6 * 1024 * 1024, 37),
        &key,
    )
    .await;
    let archive =
        std::fs::read(nodes[0].0.registry.blobs.blob_path(&record.body.archive.id)).unwrap();
    let pkg: PackageName = name.parse().unwrap();
    converge_nodes("the release arrives", DEADLINE, &nodes[1..], |_, node| {
        let known = node.registry.view().exists(&pkg);
        async move {
            if known {
                Ok(())
            } else {
                Err("no release".to_owned())
            }
        }
    })
    .await;
    (record, archive)
}

/// Leaves a partial download of `archive` on `registry` holding the chunks `keep` says (the
/// others zeros), as an earlier, interrupted fetch would have.
fn partial(registry: &Registry, info: &ArchiveInfo, archive: &[u8], keep: impl Fn(u32) -> bool) {
    let mut bytes = vec![0u8; archive.len()];
    for index in (0..info.chunks.len() as u32).filter(|i| keep(*i)) {
        let (start, size) = info.chunk_range(index).unwrap();
        let range = start as usize..start as usize + size;
        bytes[range.clone()].copy_from_slice(&archive[range]);
    }
    std::fs::write(registry.blobs.partial_path(&info.id), bytes).unwrap();
}

fn have_request(info: &ArchiveInfo) -> HaveRequest {
    HaveRequest {
        content: info.id,
        chunk_size: info.chunk_size,
        chunks: info.chunks.len() as u32,
        have: Have::of(&vec![false; info.chunks.len()]),
    }
}

/// Starts `node`'s fetch of `record` and waits until `asker` finds it under way.
async fn start_fetch(
    node: &Node,
    asker: &Node,
    record: &ReleaseRecord,
) -> tokio::task::JoinHandle<Result<FetchedBlob, RegistryError>> {
    let registry = node.registry.clone();
    let (name, version) = (record.body.name.clone(), record.body.version.clone());
    let fetching = tokio::spawn(async move { registry.fetch(&name, &version).await });
    let request = have_request(&record.body.archive);
    let peer = node.network.peer_id();
    converge("the fetch is under way", DEADLINE, || async {
        match asker.network.send_have(peer, request.clone()).await {
            Ok(HaveResponse::Have(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    fetching
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetching_node_serves_the_chunks_it_verified_and_refuses_the_rest_at_once() {
    init_tracing();
    let nodes = busy_seed_and(2).await;
    let (record, archive) = crowd_package(&nodes, "partly").await;
    let info = record.body.archive.clone();
    let n = info.chunks.len();
    assert_eq!(n, 25);
    let (holder, asker) = (&nodes[1].0, &nodes[2].0);
    // Chunks 0-2 from an earlier try, chunk 2 rotten on disk since.
    partial(&holder.registry, &info, &archive, |i| i < 3);
    let path = holder.registry.blobs.partial_path(&info.id);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2 * info.chunk_size as usize + 100] ^= 1;
    std::fs::write(&path, bytes).unwrap();

    let fetching = start_fetch(holder, asker, &record).await;
    let peer = holder.network.peer_id();
    let mut held = vec![false; n];
    held[..2].iter_mut().for_each(|h| *h = true);
    assert_eq!(
        asker
            .network
            .send_have(peer, have_request(&info))
            .await
            .unwrap(),
        HaveResponse::Have(Have::of(&held)),
        "only the chunks it verified"
    );
    let ask = |index: u32, chunk_size: u32| {
        asker.network.send_fetch(
            peer,
            FetchRequest {
                content: info.id,
                chunk_size,
                index,
            },
        )
    };
    for index in 0..2 {
        let (start, size) = info.chunk_range(index).unwrap();
        assert_eq!(
            ask(index, info.chunk_size).await.unwrap(),
            FetchResponse::Chunk(
                archive[start as usize..start as usize + size]
                    .to_vec()
                    .into()
            )
        );
    }
    let refused = FetchResponse::Refused(Refusal::NotFound);
    assert_eq!(ask(2, info.chunk_size).await.unwrap(), refused, "rotten");
    assert_eq!(ask(3, info.chunk_size).await.unwrap(), refused, "not yet");
    assert_eq!(
        ask(0, info.chunk_size / 2).await.unwrap(),
        refused,
        "another cut"
    );
    assert_eq!(
        ask(n as u32, info.chunk_size).await.unwrap(),
        FetchResponse::Refused(Refusal::OutOfRange)
    );
    assert_eq!(
        holder.registry.stats.chunks_served.load(Ordering::Relaxed),
        2
    );
    // Asked about an archive it neither holds nor fetches, it says so.
    let mut other = have_request(&info);
    other.content = agora_protocol::ContentId::of(b"another");
    assert_eq!(
        asker.network.send_have(peer, other).await.unwrap(),
        HaveResponse::Refused(Refusal::NotFound)
    );
    fetching.abort();
    shutdown(nodes).await;
}

/// Two fetchers hold complementary halves of an archive (odd and even chunks) from earlier
/// tries; their seed serves nothing and then goes away.
async fn fetchers_losing_their_seed(
    name: &str,
    nobody_holds: Option<u32>,
) -> (
    Result<FetchedBlob, RegistryError>,
    Result<FetchedBlob, RegistryError>,
    ReleaseRecord,
    Vec<u8>,
    [libp2p::PeerId; 2],
) {
    init_tracing();
    let mut nodes = busy_seed_and(2).await;
    let (record, archive) = crowd_package(&nodes, name).await;
    let info = record.body.archive.clone();
    let (b, c) = (&nodes[1].0, &nodes[2].0);
    let missing = |i: u32| Some(i) == nobody_holds;
    partial(&b.registry, &info, &archive, |i| i % 2 == 0 && !missing(i));
    partial(&c.registry, &info, &archive, |i| i % 2 == 1 && !missing(i));
    let b_fetch = start_fetch(b, c, &record).await;
    // c finds b where fetchers look for providers.
    let key = DhtKey::Content(info.id).to_bytes();
    let b_peer = b.network.peer_id();
    converge("b is announced", DEADLINE, || async {
        if all_providers(c, key.clone()).await.contains(&b_peer) {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    let c_fetch = start_fetch(c, b, &record).await;
    let peers = [b_peer, c.network.peer_id()];
    nodes.remove(0).0.shutdown().await;
    let (b_got, c_got) = tokio::time::timeout(Duration::from_secs(60), async {
        (b_fetch.await.unwrap(), c_fetch.await.unwrap())
    })
    .await
    .expect("both fetches end");
    shutdown(nodes).await;
    (b_got, c_got, record, archive, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchers_that_lose_their_seed_finish_from_each_other() {
    let (b_got, c_got, record, archive, [b, c]) = fetchers_losing_their_seed("halves", None).await;
    let n = record.body.archive.chunks.len() as u32;
    let (b_got, c_got) = (b_got.unwrap(), c_got.unwrap());
    assert_eq!(std::fs::read(&b_got.path).unwrap(), archive);
    assert_eq!(std::fs::read(&c_got.path).unwrap(), archive);
    let evens = n.div_ceil(2);
    assert_eq!(b_got.resumed_chunks, evens);
    assert_eq!(b_got.served_by, vec![(c, n - evens)]);
    assert_eq!(c_got.resumed_chunks, n - evens);
    assert_eq!(c_got.served_by, vec![(b, evens)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchers_that_lose_their_seed_fail_naming_the_chunk_nobody_holds() {
    let (b_got, c_got, record, _, _) = fetchers_losing_their_seed("gap", Some(5)).await;
    let chunks = record.body.archive.chunks.len() as u32;
    for got in [b_got, c_got] {
        match got {
            Err(RegistryError::Fetch(e)) => assert_eq!(
                e,
                FetchError::ChunksUnavailable {
                    missing: vec![5],
                    chunks
                }
            ),
            other => panic!("{other:?}"),
        }
    }
}
