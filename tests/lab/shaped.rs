//! Many nodes on slow links: twenty hosts, each on a 20 Mbit/s link, bootstrapped from one.

use std::time::Instant;

use crate::node_on;
use crate::noise::noise;
use crate::process::{Daemon, package, wait_until};
use agora_lab::Lab;

const NODES: usize = 20;
const MBIT: u32 = 20;

/// A publish reaches every node's search, and a 10 MB archive installs across the shaped
/// links, whole and no faster than the links carry it (so the shaping holds). How fast, against
/// the goals, is `benches/lab.rs`'s to measure.
#[test]
fn twenty_nodes_on_20_mbit_links_see_a_publish_and_install_10_mb() {
    let Some(mut lab) = Lab::for_test(agora_lab::test_name!()) else {
        return;
    };
    let mut net = lab.network("net", [10, 20, 0]);
    let hosts = lab.shaped_hosts("h", NODES, &mut net, MBIT);
    let first = node_on(&hosts[0], &["--no-mdns"]);
    let seed = format!(
        "/ip4/{}/tcp/4101/p2p/{}",
        hosts[0].ip,
        first.json(&["status"])["peer_id"].as_str().unwrap()
    );
    let mut nodes = vec![first];
    nodes.extend(
        hosts[1..]
            .iter()
            .map(|h| node_on(h, &["--no-mdns", "--bootstrap", &seed])),
    );
    let logs = crate::LogsOnPanic(vec![("first", &nodes[0]), ("last", &nodes[NODES - 1])]);

    let author = &nodes[4];
    author.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    package(src.path(), "shaped-kit", "1.0.0", "", "over slow links");
    author.json(&["publish", src.path().to_str().unwrap()]);
    for (i, node) in nodes.iter().enumerate() {
        wait_until(&format!("node {} finds the package", i + 1), || {
            found(node, "shaped-kit")
        });
    }

    let big = &nodes[0];
    big.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    package(src.path(), "big-kit", "1.0.0", "", "ten megabytes");
    let data = noise(10_000_000, 20);
    std::fs::write(src.path().join("templates/data.bin"), &data).unwrap();
    let published = big.json(&["publish", src.path().to_str().unwrap()]);
    let size = published["release"]["size"].as_u64().unwrap();
    let user = &nodes[NODES - 1];
    wait_until("the last node finds the big package", || {
        found(user, "big-kit")
    });
    let project = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let installed = user.json(&[
        "install",
        "big-kit",
        "--dir",
        project.path().to_str().unwrap(),
    ]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(installed["installed"][0]["version"], "1.0.0");
    let unpacked = project
        .path()
        .join(".agora/packages/big-kit/templates/data.bin");
    assert!(
        std::fs::read(unpacked).unwrap() == data,
        "the archive arrived whole"
    );
    // Every byte crossed the user's 20 Mbit/s link (its bucket lets 25 KB through at once).
    let link = size as f64 * 8.0 / (MBIT as f64 * 1e6);
    assert!(
        took >= 0.95 * link,
        "{size} bytes in {took:.2} s: faster than a {MBIT} Mbit/s link ({link:.2} s)"
    );
    drop(logs);
}

/// Whether `name` is among what a search for it finds on `node`.
fn found(node: &Daemon, name: &str) -> Result<(), String> {
    let hits = node.json(&["search", name]);
    let names: Vec<&str> = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    match names.contains(&name) {
        true => Ok(()),
        false => Err(format!("found {names:?}")),
    }
}
