//! Nodes behind NATs: two developer machines, each behind its own home router, both
//! bootstrapped from one public node.

use crate::node_on;
use crate::noise::noise;
use crate::process::{package, wait_until};
use agora_lab::{Host, Lab, Nat};

/// Bytes the node on `host` has sent and received on all its connections, from its metrics.
fn traffic(host: &Host) -> f64 {
    agora_lab::metric(host, "libp2p_bandwidth_bytes_total")
}

/// What the nodes log: their NAT traversal in detail, printed if a test fails.
const LOG: &str = "info,agora_daemon::network=debug,libp2p_autonat=debug";

/// What a case of two NATs leaves for its test to check: the public node's traffic during the
/// install, what the install said, the archive's size, and how the user reaches the author.
struct Crossed {
    carried: f64,
    /// What the install said beside its changes, or its exit code and stderr.
    installed: Result<Vec<String>, (Option<i32>, String)>,
    size: u64,
    /// Whether the user's every connection to the author goes through the relay (`None`: the
    /// user is not connected to it).
    author_relayed: Option<bool>,
    /// The remote address of each of the user's connections to the author.
    author_addresses: Vec<String>,
}

/// What the nodes behind the NATs listen on.
#[derive(Clone, Copy, PartialEq)]
enum Listen {
    /// The defaults: TCP and QUIC.
    Default,
    /// QUIC alone, so that a hole can only be punched over QUIC (UDP).
    QuicOnly,
    /// TCP alone (simultaneous open).
    TcpOnly,
}

/// Runs the case of two NATs of `kind`: a package published behind one is installed behind
/// the other, and the node behind it learns it is behind a NAT. `relay_bytes` sets the public
/// node's `relay_circuit_bytes`, `listen` what the NATed nodes listen on.
fn across_two_nats(lab: &mut Lab, kind: Nat, relay_bytes: Option<u64>, listen: Listen) -> Crossed {
    let agora_lab::BehindNats {
        public: public_host,
        hosts,
    } = lab.behind_nats(kind, 2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let declared = match listen {
        Listen::Default | Listen::TcpOnly => format!("/ip4/{}/tcp/4101", public_host.ip),
        Listen::QuicOnly => format!("/ip4/{}/udp/4101/quic-v1", public_host.ip),
    };
    let budget = relay_bytes.map(|b| b.to_string());
    let env: Vec<(&str, &str)> = budget
        .iter()
        .map(|b| ("AGORA_RELAY_CIRCUIT_BYTES", b.as_str()))
        .collect();
    let public = crate::node_with_env_on(
        &public_host,
        &env,
        &[
            "--http",
            "127.0.0.1:4180",
            "--external-address",
            &declared,
            "--log-level",
            LOG,
        ],
    );
    let seed = format!(
        "{declared}/p2p/{}",
        public.json(&["status"])["peer_id"].as_str().unwrap()
    );
    let mut args = vec!["--bootstrap", &seed, "--log-level", LOG];
    match listen {
        Listen::Default => {}
        Listen::QuicOnly => args.extend(["--listen", "/ip4/0.0.0.0/udp/4101/quic-v1"]),
        Listen::TcpOnly => args.extend(["--listen", "/ip4/0.0.0.0/tcp/4101"]),
    }
    let author = node_on(h1, &args);
    let user = node_on(h2, &args);
    let logs = crate::LogsOnPanic(vec![
        ("public", &public),
        ("author", &author),
        ("user", &user),
    ]);

    author.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    package(src.path(), "far-kit", "1.0.0", "", "across two NATs");
    // Incompressible, and far over what a relay lets through by libp2p's defaults.
    let data = noise(2_000_000, 36);
    std::fs::write(src.path().join("templates/data.bin"), &data).unwrap();
    let published = author.json(&["publish", src.path().to_str().unwrap()]);
    let size = published["release"]["size"].as_u64().unwrap();
    wait_until("the release reaches the other NATed node", || {
        match user.json(&["search", "far-kit"])["total"].as_u64() {
            Some(1) => Ok(()),
            n => Err(format!("{n:?} hits")),
        }
    });
    // The author has a slot on the relay (what a fetcher reaching it needs) once it lists
    // a relayed address; a relay that relays nothing grants none.
    if relay_bytes != Some(0) {
        wait_until("the author holds a slot on the relay", || {
            let listen = author.json(&["status"])["listen_addrs"].to_string();
            if listen.contains("p2p-circuit") {
                Ok(())
            } else {
                Err(listen)
            }
        });
    }
    let before = traffic(&public_host);
    let project = tempfile::tempdir().unwrap();
    let out = user.agora(&[
        "--json",
        "install",
        "far-kit",
        "--dir",
        project.path().to_str().unwrap(),
    ]);
    let carried = traffic(&public_host) - before;
    let installed = if out.status.success() {
        let unpacked = project
            .path()
            .join(".agora/packages/far-kit/templates/data.bin");
        assert!(
            std::fs::read(unpacked).unwrap() == data,
            "the archive arrived whole"
        );
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Ok(answer["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect())
    } else {
        Err((
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    // AutoNAT: the public node tried to dial the user's observed address back, and its
    // router dropped the attempt.
    wait_until("the user learns it is behind a NAT", || {
        match user.json(&["status"])["reachability"].as_str() {
            Some("private") => Ok(()),
            r => Err(format!("{r:?}")),
        }
    });
    // Both NATed nodes learn it, turn DHT clients and say so: the public node keeps neither
    // in its routing table, where lookups would reach them only through its relay.
    wait_until("the author learns it is behind a NAT", || {
        match author.json(&["status"])["reachability"].as_str() {
            Some("private") => Ok(()),
            r => Err(format!("{r:?}")),
        }
    });
    wait_until(
        "the public node keeps no NATed node in its routing table",
        || match public.json(&["status"])["routing_table"].as_u64() {
            Some(0) => Ok(()),
            n => Err(format!("{n:?} entries")),
        },
    );
    let author_id = author.json(&["status"])["peer_id"].clone();
    let peers = user.json(&["peers"]);
    let to_author = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == author_id);
    let author_relayed = to_author.map(|p| p["relayed"].as_bool().unwrap());
    let author_addresses = to_author
        .map(|p| p["addresses"].as_array().unwrap().clone())
        .unwrap_or_default()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    drop(logs);
    Crossed {
        carried,
        installed,
        size,
        author_relayed,
        author_addresses,
    }
}

/// Behind two cone NATs the nodes punch a hole: the archive goes over a direct connection,
/// and the public node, which relayed the first exchange, carries almost none of it.
#[test]
fn behind_two_cone_nats_the_archive_goes_over_a_punched_hole() {
    let Some(mut lab) = Lab::for_test(agora_lab::test_name!()) else {
        return;
    };
    let crossed = across_two_nats(&mut lab, Nat::Cone, None, Listen::Default);
    let (carried, size) = (crossed.carried, crossed.size);
    assert_eq!(crossed.author_relayed, Some(false), "connected directly");
    assert_eq!(crossed.installed, Ok(vec![]));
    assert!(
        carried < size as f64 / 4.0,
        "the public node carried {carried} bytes of a {size}-byte archive"
    );
}

/// The same over QUIC alone: DCUtR punches a UDP hole, and the user's connection to the
/// author is a direct QUIC one, to the address the author's router maps for it.
#[test]
fn behind_two_cone_nats_quic_alone_punches_a_hole() {
    let Some(mut lab) = Lab::for_test(agora_lab::test_name!()) else {
        return;
    };
    punched_alone(&mut lab, Listen::QuicOnly, "/udp/4101/quic-v1");
}

/// The same over TCP alone: a TCP simultaneous open through both routers.
#[test]
fn behind_two_cone_nats_tcp_alone_punches_a_hole() {
    let Some(mut lab) = Lab::for_test(agora_lab::test_name!()) else {
        return;
    };
    punched_alone(&mut lab, Listen::TcpOnly, "/tcp/4101");
}

/// Two cone NATs, nodes listening on one transport: the archive goes over direct connections
/// on it, to the author's router (`/ip4/ROUTER` then `transport`).
fn punched_alone(lab: &mut Lab, listen: Listen, transport: &str) {
    let crossed = across_two_nats(lab, Nat::Cone, None, listen);
    let (carried, size) = (crossed.carried, crossed.size);
    assert_eq!(crossed.author_relayed, Some(false), "connected directly");
    assert_eq!(crossed.installed, Ok(vec![]));
    // The routers take .2 and .3 on the internet in the order they were made: r1, the
    // author's, is .2, and a cone NAT keeps the port the author listens on. Each side may
    // have dialed, so there may be two connections.
    let expected = format!("/ip4/198.51.100.2{transport}");
    let addresses = &crossed.author_addresses;
    assert!(
        !addresses.is_empty() && addresses.iter().all(|a| *a == expected),
        "direct connections to {expected}: {addresses:?}"
    );
    assert!(
        carried < size as f64 / 4.0,
        "the public node carried {carried} bytes of a {size}-byte archive"
    );
}

/// Behind two symmetric NATs no hole can be punched: the install completes through the
/// relay, which carries the whole archive.
#[test]
fn behind_two_symmetric_nats_the_archive_comes_through_the_relay() {
    let Some(mut lab) = Lab::for_test(agora_lab::test_name!()) else {
        return;
    };
    let crossed = across_two_nats(&mut lab, Nat::Symmetric, None, Listen::Default);
    let (carried, size) = (crossed.carried, crossed.size);
    assert_eq!(crossed.author_relayed, Some(true), "through the relay");
    assert_eq!(
        crossed.installed.unwrap(),
        [
            "note: far-kit@1.0.0 came through a relay: no direct connection to its providers could \
          be made (both sides behind NATs that allow none)"
        ]
    );
    assert!(
        carried > 2.0 * size as f64,
        "the public node carried {carried} bytes of a {size}-byte archive, in and out"
    );
}

/// A public node with `relay_circuit_bytes = 0` relays nothing: behind two symmetric NATs
/// the nodes find each other's packages (sync passes through the public node) but cannot
/// fetch from each other, and the install says so and changes nothing.
#[test]
fn a_node_that_relays_nothing_leaves_two_symmetric_nats_apart() {
    let Some(mut lab) = Lab::for_test(agora_lab::test_name!()) else {
        return;
    };
    let crossed = across_two_nats(&mut lab, Nat::Symmetric, Some(0), Listen::Default);
    assert_eq!(crossed.author_relayed, None, "not connected at all");
    let (code, stderr) = crossed.installed.unwrap_err();
    assert_eq!(code, Some(7), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with("error: no provider is known for "),
        "{stderr}"
    );
    assert_eq!(
        lines[1],
        "hint: this node holds no slot on a relay, so if it is behind a NAT it reaches no \
         provider behind another one; bootstrap from a public node that relays \
         (docs/OPERATING.md, Behind a NAT)"
    );
    assert!(
        crossed.carried < crossed.size as f64 / 4.0,
        "the public node carried {} bytes of a {}-byte archive",
        crossed.carried,
        crossed.size
    );
}
