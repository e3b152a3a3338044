//! A private team network on a LAN: members hold one network key, an outsider does not.

use crate::node_on;
use crate::process::{package, wait_until};
use agora_lab::Lab;

/// Three members and one outsider on one LAN, all finding each other by mDNS: the members
/// connect, sync and install from each other as usual; the outsider gets no connection (not
/// even one it dials itself), and so no catalog and no archive.
#[test]
fn a_private_network_serves_its_members_and_nobody_else() {
    let Some(mut lab) = Lab::for_test(agora_lab::test_name!()) else {
        return;
    };
    let mut lan = lab.network("lan", [192, 168, 9]);
    let hosts: Vec<_> = ["m1", "m2", "m3", "out"]
        .iter()
        .map(|h| lab.host(h, &mut lan))
        .collect();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("team.key");
    let key = key.to_str().unwrap();
    let (made, _, code) = run_plain(&["keygen", "--network", "--out", key]);
    assert_eq!(code, Some(0));
    assert!(
        made.starts_with(&format!("wrote a new network key to {key}")),
        "{made}"
    );
    let (_, err, code) = run_plain(&["keygen", "--network", "--out", key]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!("error: {key} already exists")),
        "{err}"
    );

    let members: Vec<_> = hosts[..3]
        .iter()
        .map(|h| node_on(h, &["--network-key", key]))
        .collect();
    let outsider = node_on(&hosts[3], &[]);
    let fingerprints: Vec<_> = members
        .iter()
        .map(|m| m.json(&["status"])["private_network"].clone())
        .collect();
    assert!(fingerprints[0].is_string(), "{fingerprints:?}");
    assert!(fingerprints.iter().all(|f| *f == fingerprints[0]));
    assert!(outsider.json(&["status"])["private_network"].is_null());
    // TCP only: a private network has no QUIC address.
    let listen = members[0].json(&["status"])["listen_addrs"].to_string();
    assert!(!listen.contains("quic"), "{listen}");

    members[0].json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    package(src.path(), "team-kit", "1.0.0", "", "for the team");
    members[0].json(&["publish", src.path().to_str().unwrap()]);
    for member in &members[1..] {
        wait_until("the release reaches every member", || {
            match member.json(&["search", "team-kit"])["total"].as_u64() {
                Some(1) => Ok(()),
                n => Err(format!("{n:?} hits")),
            }
        });
    }
    let project = tempfile::tempdir().unwrap();
    let dir = project.path().to_str().unwrap();
    let installed = members[2].json(&["install", "team-kit", "--dir", dir]);
    assert_eq!(installed["installed"][0]["version"], "1.0.0");

    // The outsider found the members by mDNS as they found each other, and dialled them; and
    // dialled by hand, it is refused too.
    let member = members[0].address();
    let out = outsider.agora(&["connect", &member]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let status = outsider.json(&["status"]);
    assert_eq!(
        (&status["peers"], &status["catalog_size"]),
        (&0.into(), &0.into())
    );
    assert_eq!(outsider.json(&["search", "team-kit"])["total"], 0);
    let outsider_id = status["peer_id"].clone();
    for m in &members {
        wait_until("each member connects to the two others", || {
            match m.json(&["peers"]).as_array().map(Vec::len) {
                Some(2) => Ok(()),
                n => Err(format!("{n:?} peers")),
            }
        });
        let peers = m.json(&["peers"]);
        assert!(
            peers
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["peer_id"] != outsider_id),
            "{peers}"
        );
    }
}

/// `agora ARGS` run with no daemon: stdout, stderr, exit code.
fn run_plain(args: &[&str]) -> (String, String, Option<i32>) {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::process::bin("agora"))
        .env("AGORA_HOME", home.path())
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}
