//! A damaged store, tried with real `agorad` processes: a byte flipped in a page the database
//! uses, the database cut short, the database gone. The node finds it, sets it aside, takes
//! back its own releases from its journal and its archives from their files, and gets the
//! rest of the catalog back from a peer; or, with `repair = "off"`, refuses to start and says
//! which file, why, and what repairs it.

mod process;

use std::collections::BTreeMap;
use std::path::Path;

use process::{Daemon, package, wait_until};
use serde_json::Value;

/// Publishes `name@1.0.0` from `daemon`; its description is `"{name} templates"`.
fn publish(daemon: &Daemon, src: &Path, name: &str) {
    let dir = src.join(name);
    package(&dir, name, "1.0.0", "", &format!("the body of {name}"));
    let out = daemon.json(&["publish", dir.to_str().unwrap()]);
    assert_eq!(out["published"], true, "{out}");
}

/// What a node's catalog holds of `names`: each name's newest release as `info` shows it.
fn catalog(daemon: &Daemon, names: &[&str]) -> BTreeMap<String, Value> {
    names
        .iter()
        .map(|n| (n.to_string(), daemon.json(&["info", n])))
        .collect()
}

fn status(daemon: &Daemon) -> Value {
    daemon.json(&["status"])
}

fn wait_for_records(daemon: &Daemon, want: u64, what: &str) {
    wait_until(what, || {
        let held = status(daemon)["catalog_size"].as_u64().unwrap();
        (held == want)
            .then_some(())
            .ok_or(format!("{held} records"))
    });
}

/// Ways a disk damages a database.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// One byte flipped in the page that holds `marker` (in each copy of it in the file: the
    /// page in use is among them).
    Flip(&'static str),
    /// The file cut to half its length.
    Truncate,
    /// The file gone.
    Delete,
}

fn damage(db: &Path, how: Damage) {
    let mut bytes = std::fs::read(db).unwrap();
    match how {
        Damage::Flip(marker) => {
            let marker = marker.as_bytes();
            let found: Vec<usize> = bytes
                .windows(marker.len())
                .enumerate()
                .filter(|(_, w)| *w == marker)
                .map(|(at, _)| at)
                .collect();
            assert!(!found.is_empty(), "the marker is in the database");
            for at in found {
                bytes[at] ^= 0x20;
            }
            std::fs::write(db, bytes).unwrap();
        }
        Damage::Truncate => std::fs::write(db, &bytes[..bytes.len() / 2]).unwrap(),
        Damage::Delete => std::fs::remove_file(db).unwrap(),
    }
}

/// agorad's flags for a restart that joins `node` (its address changes with each start).
fn joining(node: &Daemon) -> Vec<String> {
    [
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-mdns",
        "--bootstrap",
    ]
    .map(String::from)
    .into_iter()
    .chain([node.address()])
    .collect()
}

/// Installs `name` into a new project through `daemon`, checking what was installed.
fn install(daemon: &Daemon, name: &str) {
    let project = tempfile::tempdir().unwrap();
    let out = daemon.json(&["install", name, "--dir", project.path().to_str().unwrap()]);
    assert_eq!(out["installed"][0]["name"], name, "{out}");
    let verified = daemon.json(&["verify", "--dir", project.path().to_str().unwrap()]);
    assert_eq!(verified["ok"], true, "{verified}");
}

#[test]
fn a_damaged_database_is_rebuilt_from_the_journal_the_archives_and_a_peer() {
    let src = tempfile::tempdir().unwrap();
    let mut mine = Daemon::start(None);
    mine.json(&["keygen"]);
    publish(&mine, src.path(), "repair-own-a");
    publish(&mine, src.path(), "repair-own-b");
    let peer = Daemon::start(Some(&mine.address()));
    peer.json(&["keygen"]);
    publish(&peer, src.path(), "repair-theirs");
    wait_for_records(&mine, 3, "the peer's release reaches the node");
    let names = ["repair-own-a", "repair-own-b", "repair-theirs"];
    let before = catalog(&mine, &names);
    let peer_id = status(&peer)["peer_id"].as_str().unwrap().to_owned();
    mine.args.extend(["--bootstrap".into(), peer.address()]);

    for how in [
        Damage::Flip("repair-own-b templates"),
        Damage::Truncate,
        Damage::Delete,
    ] {
        mine.stop();
        damage(&mine.data_dir().join("catalog.redb"), how);
        mine.launch();
        wait_for_records(&mine, 3, &format!("{how:?}: the catalog is whole again"));
        // The check runs once, on what the store held as the node started: the two records
        // of the journal, and the peer's too if its sync came first.
        wait_until(&format!("{how:?}: every stored record checked"), || {
            let check = &status(&mine)["store_check"];
            match check["sound"]["records"].as_u64() {
                Some(2 | 3) => Ok(()),
                _ => Err(check.to_string()),
            }
        });
        assert_eq!(catalog(&mine, &names), before, "{how:?}");
        let s = status(&mine);
        let repair = &s["repair"];
        assert_eq!(repair["from_journal"], 2, "{how:?}: {repair}");
        assert_eq!(repair["blobs_dropped"], 0, "{how:?}: {repair}");
        // The node's two archives, and the peer's once it installed it (after the first round).
        let archives = if matches!(how, Damage::Flip(_)) { 2 } else { 3 };
        assert_eq!(repair["blobs_kept"], archives, "{how:?}: {repair}");
        assert_eq!(
            repair["from_peers"],
            serde_json::json!([[peer_id, 1]]),
            "{how:?}"
        );
        let cause = repair["cause"].as_str().unwrap();
        let db = mine.data_dir().join("catalog.redb");
        assert!(
            cause.starts_with(&format!("{} is damaged: ", db.display())),
            "{how:?}: {cause}"
        );
        match how {
            Damage::Delete => assert_eq!(repair["set_aside"], Value::Null),
            _ => {
                let aside = repair["set_aside"].as_str().unwrap();
                assert!(
                    aside.starts_with(&format!("{}.damaged-", db.display())),
                    "{aside}"
                );
                assert!(Path::new(aside).is_file(), "{aside} is kept");
            }
        }
        // Searchable, installable here (its own from its archives, the peer's fetched), and
        // its archives served to the peer.
        let found = mine.json(&["search", "repair"]);
        assert_eq!(found["total"], 3, "{how:?}: {found}");
        install(&mine, "repair-own-a");
        install(&mine, "repair-theirs");
    }
    install(&peer, "repair-own-b");
}

#[test]
fn without_peers_the_node_serves_its_own_and_catches_up_or_refuses_when_repair_is_off() {
    let src = tempfile::tempdir().unwrap();
    let mut mine = Daemon::start(None);
    mine.json(&["keygen"]);
    publish(&mine, src.path(), "alone-own");
    let mut peer = Daemon::start(Some(&mine.address()));
    peer.json(&["keygen"]);
    publish(&peer, src.path(), "alone-theirs");
    wait_for_records(&mine, 2, "the peer's release reaches the node");
    peer.stop();
    mine.stop();
    let db = mine.data_dir().join("catalog.redb");
    damage(&db, Damage::Flip("alone-own templates"));

    // Repair off: the start is refused, naming the file, the damage and the command.
    std::fs::write(mine.home.path().join("config.toml"), "repair = \"off\"\n").unwrap();
    let out = mine.try_launch();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: agorad could not start: while starting the node in {}: {} is damaged: ",
            mine.data_dir().display(),
            db.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "hint: run 'agora node repair' to set {} aside",
            db.display()
        )),
        "{stderr}"
    );

    // `agora node repair`, then a start with no peer: the node serves what is its own.
    let repaired = mine.json(&["node", "repair"]);
    let report = &repaired["repaired"];
    assert_eq!(
        (&report["from_journal"], &report["blobs_kept"]),
        (&Value::from(1), &Value::from(1)),
        "{repaired}"
    );
    assert_eq!(
        mine.json(&["node", "repair"])["repaired"],
        Value::Null,
        "a repaired store is sound"
    );
    mine.launch();
    assert_eq!(status(&mine)["catalog_size"], 1);
    assert_eq!(mine.json(&["search", "alone"])["total"], 1);
    install(&mine, "alone-own");

    // A peer appears: the rest comes back.
    peer.args = joining(&mine);
    peer.launch();
    wait_for_records(&mine, 2, "the catalog catches up from the peer");
    install(&mine, "alone-theirs");
}

/// A byte of a published archive changed on disk: a peer's request for it is refused (no bad
/// bytes are sent, and the node is not banned for them), the file is dropped, and the node
/// fetches the archive again from a peer that holds it once one is online.
#[test]
fn a_damaged_archive_is_never_served_and_is_fetched_again_from_a_peer() {
    let src = tempfile::tempdir().unwrap();
    let mine = Daemon::start(None);
    mine.json(&["keygen"]);
    publish(&mine, src.path(), "rot-pkg");
    let sha = mine.json(&["info", "rot-pkg"])["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = mine.data_dir().join("blobs").join(&sha[..2]).join(&sha);
    let mut holder = Daemon::start(Some(&mine.address()));
    install(&holder, "rot-pkg");
    holder.stop();

    let mut bytes = std::fs::read(&blob).unwrap();
    let sound = bytes.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&blob, bytes).unwrap();

    let asker = Daemon::start(Some(&mine.address()));
    let project = tempfile::tempdir().unwrap();
    let out = asker.agora(&[
        "install",
        "rot-pkg",
        "--dir",
        project.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "installed from a damaged archive");
    assert!(!blob.exists(), "the damaged file is dropped");
    let mine_id = status(&mine)["peer_id"].clone();
    let peers = asker.json(&["peers"]);
    let seen = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == mine_id)
        .unwrap_or_else(|| panic!("not connected to the node: {peers}"));
    assert!(seen["score"].is_number(), "the node was banned: {seen}");
    assert_eq!(
        mine.json(&["status"])["repair"],
        Value::Null,
        "the store itself was sound"
    );

    holder.args = joining(&mine);
    holder.launch();
    wait_until(
        "the node fetches its archive again",
        || match std::fs::read(&blob) {
            Ok(now) if now == sound => Ok(()),
            Ok(_) => Err("the file differs".into()),
            Err(e) => Err(e.to_string()),
        },
    );
    install(&asker, "rot-pkg");
}
