//! One LAN, no bootstrap: nodes find each other by mDNS.

use crate::node_on;
use crate::process::{package, wait_until};
use agora_lab::Lab;

/// Two hosts on one bridge with the default configuration and nothing to bootstrap from: a
/// package published on one is found and installed on the other.
#[test]
fn a_package_published_on_a_lan_installs_on_another_host_found_by_mdns() {
    let Some(mut lab) = Lab::for_test(agora_lab::test_name!()) else {
        return;
    };
    let mut lan = lab.network("lan", [192, 168, 7]);
    let (a, b) = (lab.host("a", &mut lan), lab.host("b", &mut lan));
    let author = node_on(&a, &[]);
    let user = node_on(&b, &[]);
    author.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    package(src.path(), "lan-kit", "1.0.0", "", "from the lan");
    author.json(&["publish", src.path().to_str().unwrap()]);
    wait_until("the other host finds the package", || {
        match user.json(&["search", "lan-kit"])["total"].as_u64() {
            Some(1) => Ok(()),
            n => Err(format!("{n:?} hits")),
        }
    });
    let peers = user.json(&["peers"]);
    let author_id = author.json(&["status"])["peer_id"].clone();
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == author_id),
        "{peers}"
    );
    let project = tempfile::tempdir().unwrap();
    let installed = user.json(&[
        "install",
        "lan-kit",
        "--dir",
        project.path().to_str().unwrap(),
    ]);
    assert_eq!(installed["installed"][0]["version"], "1.0.0");
    let body = std::fs::read_to_string(
        project
            .path()
            .join(".agora/packages/lan-kit/templates/main.tmpl"),
    );
    assert_eq!(body.unwrap(), "from the lan");
    // Both nodes are where the lab put them: each listens on its own LAN address.
    let listen = author.json(&["status"])["listen_addrs"].to_string();
    assert!(listen.contains(&a.ip.to_string()), "{listen}");
}
