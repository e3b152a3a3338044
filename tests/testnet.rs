//! `agora-testnet`, run as a process: N nodes with M seeded releases, reachable with the
//! `agora` CLI through their sockets, stopped cleanly by SIGINT with their directory removed.

mod process;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use process::{DEADLINE, bin};
use serde_json::Value;

fn agora(socket: &str, args: &[&str]) -> Value {
    let out = Command::new(bin("agora"))
        .env("AGORA_SOCKET", socket)
        .env_remove("AGORA_HOME")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "agora {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_seeded_three_node_testnet_answers_the_cli_and_stops_on_ctrl_c() {
    let mut child = Command::new(bin("agora-testnet"))
        .args(["--nodes", "3", "--seed", "5", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(DEADLINE)
        .expect("agora-testnet reports its nodes");
    let net: Value = serde_json::from_str(&line).unwrap();
    let nodes = net["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(net["seeded"], 5);
    let dir = std::path::PathBuf::from(net["dir"].as_str().unwrap());
    assert!(dir.is_dir());

    // Seeding waits until every node has every release, so the last node answers at once.
    let last = nodes[2]["socket"].as_str().unwrap();
    let found = agora(last, &["search", "seed", "--limit", "100"]);
    assert_eq!(found["total"], 5);
    let status = agora(last, &["status"]);
    assert_eq!(status["catalog_size"], 5);
    assert_eq!(status["peer_id"], nodes[2]["peer_id"]);
    assert_eq!(status["peers"], 2);

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < DEADLINE, "agora-testnet did not stop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(!dir.exists(), "the temporary directory is removed");
}
