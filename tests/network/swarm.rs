//! A fetcher that lies about the chunks it holds.

use super::*;
use common::hostile::LyingHolder;

/// A "fetcher" says it holds every chunk and sends noise: each bad chunk is blamed on it,
/// it is asked nothing more, and every chunk comes from the seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_from_a_partial_holder_is_blamed_on_it_and_fetched_elsewhere() {
    init_tracing();
    let nodes = testnet(2).await;
    let data = noise(5 * 1024 * 1024, 37);
    let record = release(
        "lied",
        Version::new(1, 0, 0),
        &data,
        256 * 1024,
        &publisher(37),
    );
    let info = record.body.archive.clone();
    let (seed, fetcher) = (&nodes[0].0, &nodes[1].0);
    seed.registry
        .add_blob_with(info.clone(), data.clone())
        .await
        .unwrap();
    let liar = LyingHolder::start(info.clone()).await;
    fetcher
        .network
        .dial(liar.addr.clone().with_p2p(liar.peer).unwrap())
        .await
        .unwrap();
    let (fetched, report) = fetch_archive(
        &fetcher.network,
        &info,
        Providers::fixed(vec![liar.peer, seed.network.peer_id()]),
        4,
    )
    .await
    .unwrap();
    assert!(fetched == data, "fetched bytes differ from the archive");
    assert_eq!(report.blamed(), vec![liar.peer]);
    assert_eq!(report.served_by, vec![(seed.network.peer_id(), 20)]);
    liar.stop();
    for (node, _) in nodes {
        node.shutdown().await;
    }
}
