//! The network lab's runs (not in CI): real agorad processes on hosts of their own.
//!
//! - `holepunch`: a public node and two hosts, each behind its own NAT of one kind. The
//!   author keeps a slot on the public node's relay; `AGORA_BENCH_ATTEMPTS` times (default
//!   50) a fresh user node (a new identity and new ports, so no mapping is left from the last)
//!   dials the author through the relay, and the attempt succeeds if a direct connection
//!   replaces the relayed one within 10 s. Reports successes and the time from the dial to
//!   the direct connection.
//! - `throughput`: the same topologies; a 32 MB incompressible archive installed by a fresh
//!   user, three times per NAT kind: over a punched hole (cone) and through the relay
//!   (symmetric).
//! - `shaped`: 20 nodes on 20 Mbit/s links, bootstrapped from the first; 20 publishes, each
//!   from the next node, timed from the call until every other node knows the release (one
//!   poller per node on its socket); then a 10 MB archive installed by 3 nodes in turn
//!   (`AGORA_BENCH_INSTALLS`), against the 4.0 s the link needs to carry it: each finds one
//!   more provider than the one before.
//! - `crowd`: a publisher, a lone downloader and a crowd of `AGORA_BENCH_CROWD` (default 16)
//!   downloaders, every host on a 40 Mbit/s link; an archive of `AGORA_BENCH_CROWD_MIB` MiB
//!   (default 64) installed by the lone downloader, then by the whole crowd at once: the
//!   slowest against the lone install, and what the publisher uploaded. Then a second
//!   archive and the crowd again, the publisher killed once it has uploaded
//!   `AGORA_BENCH_KILL_AT` copies (default 1.1; issue 37 names 1.2, but a crowd's publisher
//!   uploads 1.1-1.2 copies in all, so at 1.2 it is seldom killed): the survivors' times
//!   against the crowd's without the loss (a crowd that finishes first is reported so, the
//!   publisher alive).
//!
//! Run as root, or as a user where user namespaces are allowed (the bench then runs in one):
//! `cargo build --release --workspace && cargo bench --bench lab [-- holepunch|throughput|shaped|crowd]`.

#[path = "../tests/common/noise.rs"]
mod noise;
#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agora_client::Client;
use agora_lab::{Host, Lab, Nat, Node};
use support::summary;

const ATTEMPT_DEADLINE: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_secs(120);

fn main() {
    agora_lab::enter();
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if run("holepunch") {
        let attempts = support::env_list("AGORA_BENCH_ATTEMPTS", &[50])[0];
        for kind in [Nat::Cone, Nat::Symmetric] {
            holepunch(kind, attempts);
        }
    }
    if run("throughput") {
        for kind in [Nat::Cone, Nat::Symmetric] {
            throughput(kind);
        }
    }
    if run("shaped") {
        shaped();
    }
    if run("crowd") {
        let downloaders = support::env_list("AGORA_BENCH_CROWD", &[16])[0].max(2);
        let mib = support::env_list("AGORA_BENCH_CROWD_MIB", &[64])[0].max(1);
        let kill_at = std::env::var("AGORA_BENCH_KILL_AT")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(1.1);
        crowd(downloaders, mib, kill_at);
    }
}

/// A public node and two NATed hosts (the author's and the user's).
struct TwoNats {
    lab: Lab,
    public_host: Host,
    h1: Host,
    h2: Host,
}

fn two_nats(kind: Nat) -> TwoNats {
    let mut lab = Lab::new();
    let agora_lab::BehindNats { public, hosts } = lab.behind_nats(kind, 2);
    let [h1, h2]: [Host; 2] = hosts.try_into().ok().expect("two hosts");
    TwoNats {
        lab,
        public_host: public,
        h1,
        h2,
    }
}

/// The public node (its address declared) and its address to bootstrap from.
fn public_node(host: &Host) -> (Node, String) {
    let declared = format!("/ip4/{}/tcp/4101", host.ip);
    let node = Node::start(host, "public", &[], &["--external-address", &declared]);
    let seed = format!("{declared}/p2p/{}", peer_id(&node));
    (node, seed)
}

fn peer_id(node: &Node) -> String {
    node.json(&["status"])["peer_id"]
        .as_str()
        .expect("peer_id")
        .to_string()
}

/// A NATed node on `host` bootstrapped from `seed`, on ports of its own.
fn natted(host: &Host, name: &str, seed: &str) -> Node {
    Node::start(
        host,
        name,
        &[],
        &[
            "--bootstrap",
            seed,
            "--listen",
            "/ip4/0.0.0.0/tcp/0",
            "--listen",
            "/ip4/0.0.0.0/udp/0/quic-v1",
        ],
    )
}

/// Waits until `check` returns something, for at most `deadline`.
fn wait_for<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if let Some(t) = check() {
            return Some(t);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The author's relayed address, once it holds a slot.
fn relayed_address(author: &Node) -> String {
    wait_for(DEADLINE, || {
        let status = author.json(&["status"]);
        status["listen_addrs"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.contains("/p2p-circuit"))
            .map(str::to_string)
    })
    .expect("the author holds a slot on the relay")
}

fn client(node: &Node) -> Client {
    Client::connect(&node.home.path().join("agorad.sock")).expect("the node's socket")
}

fn holepunch(kind: Nat, attempts: usize) {
    let t = two_nats(kind);
    let (_public, seed) = public_node(&t.public_host);
    let author = natted(&t.h1, "author", &seed);
    let author_id = peer_id(&author);
    let via_relay = relayed_address(&author);
    let (mut direct, mut times, mut limited) = (0, Vec::new(), 0);
    for i in 0..attempts {
        let user = natted(&t.h2, &format!("user{i}"), &seed);
        let mut c = client(&user);
        // The relay limits circuits per source IP (libp2p's default: 60 a minute), and every
        // user here comes from the same router: a refused circuit waits and tries again.
        let started = loop {
            let started = Instant::now();
            match c.connect_peer(&via_relay) {
                Ok(_) => break started,
                Err(e) if e.to_string().contains("resource limit") && limited < 100 => {
                    limited += 1;
                    std::thread::sleep(Duration::from_secs(2));
                }
                Err(e) => panic!("attempt {i}: a connection through the relay: {e}"),
            }
        };
        let punched = wait_for(ATTEMPT_DEADLINE, || {
            let peers = c.peers().ok()?;
            let p = peers.iter().find(|p| p.peer_id == author_id)?;
            (!p.relayed).then(|| started.elapsed())
        });
        if let Some(took) = punched {
            direct += 1;
            times.push(took);
        }
    }
    println!(
        "holepunch {kind:?}: {direct}/{attempts} direct within {ATTEMPT_DEADLINE:?}{}; the \
         relay refused a circuit {limited} times (each tried again after 2 s)",
        match times.is_empty() {
            true => String::new(),
            false => format!("; {}", summary("time to direct", times)),
        }
    );
    drop(t.lab);
}

fn throughput(kind: Nat) {
    let t = two_nats(kind);
    let (_public, seed) = public_node(&t.public_host);
    let author = natted(&t.h1, "author", &seed);
    relayed_address(&author);
    author.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    let size = publish_noise(&author, src.path(), "far-data", 32_000_000);
    let mut rates = Vec::new();
    for i in 0..3 {
        let user = natted(&t.h2, &format!("user{i}"), &seed);
        wait_for(DEADLINE, || client(&user).info("far-data", None).ok())
            .expect("the release reaches the user");
        let project = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = user.json(&[
            "install",
            "far-data",
            "--dir",
            project.path().to_str().unwrap(),
        ]);
        let took = started.elapsed();
        assert_eq!(out["installed"][0]["name"], "far-data");
        let relayed = out["notes"].to_string().contains("came through a relay");
        println!(
            "throughput {kind:?}: {:.1} MB in {took:.2?} = {:.1} MB/s{}",
            size as f64 / 1e6,
            size as f64 / 1e6 / took.as_secs_f64(),
            if relayed { " (relayed)" } else { " (direct)" }
        );
        rates.push(size as f64 / 1e6 / took.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!("throughput {kind:?}: median {:.1} MB/s", rates[1]);
    drop(t.lab);
}

/// Publishes a package of `bytes` incompressible bytes from `node`; returns its archive size.
fn publish_noise(node: &Node, dir: &Path, name: &str, bytes: usize) -> u64 {
    publish_noise_seeded(node, dir, name, bytes, 9)
}

fn publish_noise_seeded(node: &Node, dir: &Path, name: &str, bytes: usize, seed: u64) -> u64 {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"data\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("templates/data.bin"), noise::noise(bytes, seed)).unwrap();
    let published = node.json(&["publish", dir.to_str().unwrap()]);
    published["release"]["size"].as_u64().expect("size")
}

fn shaped() {
    const NODES: usize = 20;
    const MBIT: u32 = 20;
    let mut lab = Lab::new();
    let mut net = lab.network("net", [10, 20, 0]);
    let hosts = lab.shaped_hosts("h", NODES, &mut net, MBIT);
    let first = Node::start(&hosts[0], "n1", &[], &["--no-mdns"]);
    let seed = format!("/ip4/{}/tcp/4101/p2p/{}", hosts[0].ip, peer_id(&first));
    let mut nodes = vec![first];
    for (i, h) in hosts.iter().enumerate().skip(1) {
        nodes.push(Node::start(
            h,
            &format!("n{}", i + 1),
            &[],
            &["--no-mdns", "--bootstrap", &seed],
        ));
    }
    let mut visible = Vec::new();
    for (i, author) in nodes.iter().enumerate() {
        author.json(&["keygen"]);
        let src = tempfile::tempdir().unwrap();
        let name = format!("shaped-{i}");
        std::fs::create_dir_all(src.path().join("templates")).unwrap();
        std::fs::write(
            src.path().join("package.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"x\"\n"),
        )
        .unwrap();
        std::fs::write(src.path().join("templates/a.tmpl"), "x").unwrap();
        let go = Arc::new(AtomicBool::new(false));
        let pollers: Vec<_> = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| {
                let (mut c, name, go) = (client(n), name.clone(), go.clone());
                std::thread::spawn(move || {
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    let started = Instant::now();
                    wait_for(DEADLINE, || {
                        c.info(&name, None).ok().map(|_| started.elapsed())
                    })
                    .expect("the release reaches every node")
                })
            })
            .collect();
        go.store(true, Ordering::Release);
        author.json(&["publish", src.path().to_str().unwrap()]);
        let last = pollers
            .into_iter()
            .map(|p| p.join().unwrap())
            .max()
            .unwrap();
        visible.push(last);
    }
    println!(
        "shaped {NODES} nodes at {MBIT} Mbit/s: {}",
        summary("publish visible on all", visible)
    );
    let big = &nodes[0];
    let src = tempfile::tempdir().unwrap();
    let size = publish_noise(big, src.path(), "shaped-big", 10_000_000);
    let link = Duration::from_secs_f64(size as f64 * 8.0 / (MBIT as f64 * 1e6));
    let installs = support::env_list("AGORA_BENCH_INSTALLS", &[3])[0].clamp(1, NODES - 1);
    for user in &nodes[NODES - installs..] {
        wait_for(DEADLINE, || client(user).info("shaped-big", None).ok())
            .expect("the big release reaches the user");
        let tcp_before = tcp_losses(&hosts);
        let project = tempfile::tempdir().unwrap();
        let started = Instant::now();
        user.json(&[
            "install",
            "shaped-big",
            "--dir",
            project.path().to_str().unwrap(),
        ]);
        let took = started.elapsed();
        let tcp_after = tcp_losses(&hosts);
        println!(
            "shaped install of {:.1} MB on {}: {took:.2?}, {:.2}x the link's {link:.2?}; TCP on \
             all hosts meanwhile: {} segments retransmitted, {} timeouts",
            size as f64 / 1e6,
            user.name,
            took.as_secs_f64() / link.as_secs_f64(),
            tcp_after.0 - tcp_before.0,
            tcp_after.1 - tcp_before.1,
        );
    }
    drop(nodes);
    drop(lab);
}

/// The TCP segments retransmitted and the retransmission timeouts so far in the stacks of
/// `hosts` (`nstat`, iproute2), senders and receivers alike: where an install's time goes on
/// shaped links. QUIC connections are not counted.
fn tcp_losses(hosts: &[Host]) -> (u64, u64) {
    let mut total = (0, 0);
    for host in hosts {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &host.ns, "nstat", "-asz"])
            .args(["TcpRetransSegs", "TcpExtTCPTimeouts"])
            .output()
            .expect("nstat");
        let text = String::from_utf8_lossy(&out.stdout);
        let counter = |name: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0)
        };
        total.0 += counter("TcpRetransSegs");
        total.1 += counter("TcpExtTCPTimeouts");
    }
    total
}

/// Installs `name` on every node of `crowd` at once; returns each install's time.
fn install_together(crowd: &[Node], name: &str) -> Vec<Duration> {
    let go = Arc::new(AtomicBool::new(false));
    let installs: Vec<_> = crowd
        .iter()
        .map(|node| {
            let project = tempfile::tempdir().unwrap();
            let mut install = node.command(&[
                "--json",
                "install",
                name,
                "--dir",
                project.path().to_str().unwrap(),
            ]);
            let go = go.clone();
            std::thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                let started = Instant::now();
                let out = install.output().expect("agora install");
                assert!(
                    out.status.success(),
                    "install: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                drop(project);
                started.elapsed()
            })
        })
        .collect();
    go.store(true, Ordering::Release);
    installs.into_iter().map(|i| i.join().unwrap()).collect()
}

fn crowd(downloaders: usize, mib: usize, kill_at: f64) {
    const MBIT: u32 = 40;
    let mut lab = Lab::new();
    let mut net = lab.network("net", [10, 22, 0]);
    // The publisher, the lone downloader, then the crowd.
    let hosts = lab.shaped_hosts("h", downloaders + 2, &mut net, MBIT);
    let (publisher_host, lone_host, crowd_hosts) = (&hosts[0], &hosts[1], &hosts[2..]);
    let publisher = Node::start(
        publisher_host,
        "pub",
        &[],
        &["--no-mdns", "--http", "127.0.0.1:4180"],
    );
    let seed = format!(
        "/ip4/{}/tcp/4101/p2p/{}",
        publisher_host.ip,
        peer_id(&publisher)
    );
    let args = ["--no-mdns", "--bootstrap", seed.as_str()];
    let lone = Node::start(lone_host, "lone", &[], &args);
    let crowd: Vec<Node> = crowd_hosts
        .iter()
        .enumerate()
        .map(|(i, h)| Node::start(h, &format!("d{}", i + 1), &[], &args))
        .collect();
    publisher.json(&["keygen"]);
    let uploaded = || agora_lab::metric(publisher_host, "agora_bytes_served_total");
    let src = tempfile::tempdir().unwrap();
    let size = publish_noise_seeded(&publisher, src.path(), "crowd-a", mib << 20, 1) as f64;
    for node in crowd.iter().chain([&lone]) {
        wait_for(DEADLINE, || client(node).info("crowd-a", None).ok())
            .expect("the release reaches every node");
    }
    let link = Duration::from_secs_f64(size * 8.0 / (MBIT as f64 * 1e6));
    let before = uploaded();
    let alone = install_together(std::slice::from_ref(&lone), "crowd-a")[0];
    println!(
        "crowd: {:.1} MB archive, {MBIT} Mbit/s links ({link:.2?} to carry it): lone install          {alone:.2?}, publisher uploaded {:.2} copies",
        size / 1e6,
        (uploaded() - before) / size
    );
    drop(lone);
    let before = uploaded();
    let together = install_together(&crowd, "crowd-a");
    let slowest = *together.iter().max().unwrap();
    println!(
        "crowd of {downloaders}: {}; slowest {:.2}x the lone install; publisher uploaded {:.2} \
         copies",
        summary("install", together.clone()),
        slowest.as_secs_f64() / alone.as_secs_f64(),
        (uploaded() - before) / size
    );

    let src = tempfile::tempdir().unwrap();
    let size = publish_noise_seeded(&publisher, src.path(), "crowd-b", mib << 20, 2) as f64;
    for node in &crowd {
        wait_for(DEADLINE, || client(node).info("crowd-b", None).ok())
            .expect("the second release reaches every node");
    }
    let before = uploaded();
    let finished = AtomicBool::new(false);
    let (survived, killed) = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            let sent = wait_for(DEADLINE, || {
                let sent = uploaded() - before;
                (sent >= kill_at * size || finished.load(Ordering::Acquire)).then_some(sent)
            })
            .expect("the publisher uploads its share, or the crowd finishes");
            if sent < kill_at * size {
                return Err(sent);
            }
            rustix::process::kill_process(
                rustix::process::Pid::from_raw(publisher.pid).expect("a pid"),
                rustix::process::Signal::KILL,
            )
            .expect("killing the publisher");
            Ok(sent)
        });
        let survived = install_together(&crowd, "crowd-b");
        finished.store(true, Ordering::Release);
        (survived, killer.join().unwrap())
    });
    let slowest_lost = *survived.iter().max().unwrap();
    match killed {
        Ok(sent) => println!(
            "crowd of {downloaders}, publisher killed after {:.2} copies: {}; slowest {:.2}x the \
             slowest without the loss",
            sent / size,
            summary("install", survived),
            slowest_lost.as_secs_f64() / slowest.as_secs_f64()
        ),
        Err(sent) => println!(
            "crowd of {downloaders}: finished before the publisher uploaded {kill_at} copies \
             (it uploaded {:.2}), so it was not killed: {}",
            sent / size,
            summary("install", survived),
        ),
    }
    drop(crowd);
    drop(publisher);
    drop(lab);
}
