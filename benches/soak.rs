//! Soak (not in CI): 20 nodes under a steady mixed load for ten minutes, the way people use
//! them: every operation through a node's IPC socket, installs by the real `agora` binary.
//!
//! The nodes are whole daemons (node, registry, IPC server) in this process, joined to the
//! first as `agora-testnet` joins them. Over `AGORA_SOAK_SECS` (default 600) it spreads
//! evenly: `AGORA_SOAK_PUBLISHES` publishes (default 1,000; one in five after the first 100
//! is a new version of an earlier package), `AGORA_SOAK_SEARCHES` searches (10,000) and
//! `AGORA_SOAK_INSTALLS` installs (200, each of a package published at least 5 s before,
//! into a fresh project), each on a node picked in turn. Every failure is counted and its
//! first few printed. The process's resident memory is sampled every 10 s. At the end every
//! node must hold every release. Needs release binaries:
//! `cargo build --release --workspace && cargo bench --bench soak`.

/// The allocator agorad runs with, so the memory figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_client::Client;
use agora_daemon::config::Config;
use agora_daemon::keys;
use agora_daemon::network::NetworkConfig;
use agora_daemon::service::Service;
use agora_protocol::search::SearchQuery;
use support::{mb, proc_status_bytes, summary};

const NODES: usize = 20;
/// How often resident memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Installs pick packages at least this old, so they have reached every node.
const INSTALL_AGE: Duration = Duration::from_secs(5);
/// How long the network may take to hold every release after the load stops.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `target/release/NAME`, which `cargo build --release` makes.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        path.exists(),
        "{} is not built; run 'cargo build --release --workspace' first",
        path.display()
    );
    path
}

/// Failures by kind, with the first few messages kept.
#[derive(Default)]
struct Errors {
    count: AtomicUsize,
    first: Mutex<Vec<String>>,
}

impl Errors {
    fn record(&self, what: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap();
        if first.len() < 10 {
            eprintln!("soak error: {what}");
            first.push(what);
        }
    }
}

/// What the publisher has done: when each package's first version was acknowledged.
#[derive(Default)]
struct Published {
    at: Mutex<Vec<(String, Instant)>>,
}

fn write_package(dir: &Path, name: &str, version: &str, i: u64) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"{version}\"\n\
             description = \"soak package {i}: templates for service number {i}\"\n\
             category = \"{}\"\nlicense = \"MIT\"\ntags = [\"soak\"]\n",
            ["web", "cli", "data", "infra"][i as usize % 4]
        ),
    )
    .unwrap();
    // 2-6 KB of text that does not repeat between packages.
    let body: String = (0..(2000 + i % 4000))
        .map(|k| char::from(b'a' + ((k * 7 + i * 13) % 26) as u8))
        .collect();
    std::fs::write(dir.join("templates/main.tmpl"), body).unwrap();
}

/// Sleeps until `start + at`; the load is paced, not a burst.
fn pace(start: Instant, at: Duration) {
    if let Some(wait) = (start + at).checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

fn main() {
    let secs = env_or("AGORA_SOAK_SECS", 600);
    let publishes = env_or("AGORA_SOAK_PUBLISHES", 1000);
    let searches = env_or("AGORA_SOAK_SEARCHES", 10_000);
    let installs = env_or("AGORA_SOAK_INSTALLS", 200);
    let duration = Duration::from_secs(secs);
    let agora = bin("agora");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut services = Vec::with_capacity(NODES);
    let mut sockets = Vec::with_capacity(NODES);
    let started = Instant::now();
    for i in 0..NODES {
        let mut config = Config::local(&home.path().join(format!("node-{i}"))).unwrap();
        std::fs::create_dir_all(&config.paths.data_dir).unwrap();
        config.bootstrap = services
            .first()
            .map(|s: &Service| s.addresses[0].clone())
            .into_iter()
            .collect();
        let keypair = keys::node_identity(&config.paths.keys_dir).unwrap();
        let service = rt
            .block_on(Service::start(
                &config,
                NetworkConfig::for_local_testnet(keypair),
                None,
            ))
            .unwrap();
        sockets.push(config.paths.socket.clone());
        services.push(service);
    }
    for socket in &sockets {
        Client::connect(socket).unwrap().keygen().unwrap();
    }
    println!(
        "soak: {NODES} nodes up in {:?}; {secs} s of load: {publishes} publishes, \
         {searches} searches, {installs} installs",
        started.elapsed()
    );

    let errors = Arc::new(Errors::default());
    let published = Arc::new(Published::default());
    let src = home.path().join("src");
    let rss = || proc_status_bytes(std::process::id(), "VmRSS");
    let mut samples = vec![(Duration::ZERO, rss())];
    let start = Instant::now();
    let (pub_times, search_times, install_times, versions) = std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            let mut times = Vec::new();
            let mut versions = 0u64;
            for i in 0..publishes {
                pace(start, duration * i as u32 / publishes as u32);
                let node = i as usize % NODES;
                // After the first 100, one in five is 1.1.0 of the package published 100
                // before (by the same node, so the same key owns it).
                let bump = i >= 100 && i % 5 == 0;
                let (n, version) = if bump {
                    (i - 100, "1.1.0")
                } else {
                    (i, "1.0.0")
                };
                let name = format!("soak-{n}");
                let dir = src.join(format!("{name}-{version}"));
                write_package(&dir, &name, version, n);
                let t = Instant::now();
                match Client::connect(&sockets[node])
                    .and_then(|mut c| c.publish(&dir, false, |_| {}))
                {
                    Ok(_) => {
                        times.push(t.elapsed());
                        versions += 1;
                        if !bump {
                            published.at.lock().unwrap().push((name, Instant::now()));
                        }
                    }
                    Err(e) => {
                        errors.record(format!("publish {name}@{version} on node {node}: {e}"))
                    }
                }
            }
            (times, versions)
        });
        let searcher = s.spawn(|| {
            let mut times = Vec::new();
            let mut clients: Vec<Client> = sockets
                .iter()
                .map(|p| Client::connect(p).unwrap())
                .collect();
            for i in 0..searches {
                pace(start, duration * i as u32 / searches as u32);
                let node = i as usize % NODES;
                let text = match i % 4 {
                    0 => "soak".to_string(),
                    1 => format!("service number {}", i % 997),
                    2 => format!("soak-{}", i % 1000),
                    _ => "templats".to_string(),
                };
                let t = Instant::now();
                match clients[node].search(SearchQuery::text(&text)) {
                    Ok(_) => times.push(t.elapsed()),
                    Err(e) => errors.record(format!("search {text:?} on node {node}: {e}")),
                }
            }
            times
        });
        let installer = s.spawn(|| {
            let mut times = Vec::new();
            let mut skipped = 0;
            for i in 0..installs {
                pace(start, duration * i as u32 / installs as u32);
                let node = i as usize % NODES;
                let pick = {
                    let at = published.at.lock().unwrap();
                    let ripe: Vec<&String> = at
                        .iter()
                        .filter(|(_, t)| t.elapsed() >= INSTALL_AGE)
                        .map(|(n, _)| n)
                        .collect();
                    (!ripe.is_empty()).then(|| ripe[(i as usize * 7919) % ripe.len()].clone())
                };
                let Some(name) = pick else {
                    skipped += 1;
                    continue;
                };
                let project = tempfile::tempdir().unwrap();
                let t = Instant::now();
                let out = std::process::Command::new(&agora)
                    .env("AGORA_SOCKET", &sockets[node])
                    .env("NO_COLOR", "1")
                    .args(["install", &name, "--dir"])
                    .arg(project.path())
                    .output()
                    .unwrap();
                if out.status.success() && project.path().join("agora.lock").exists() {
                    times.push(t.elapsed());
                } else {
                    errors.record(format!(
                        "install {name} on node {node}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            (times, skipped)
        });
        while !(publisher.is_finished() && searcher.is_finished() && installer.is_finished()) {
            std::thread::sleep(Duration::from_millis(200));
            let now = start.elapsed();
            if now >= samples.last().unwrap().0 + SAMPLE_EVERY {
                samples.push((now, rss()));
            }
        }
        let (pub_times, versions) = publisher.join().unwrap();
        (
            pub_times,
            searcher.join().unwrap(),
            installer.join().unwrap(),
            versions,
        )
    });
    let load_time = start.elapsed();
    samples.push((load_time, rss()));

    // Every node holds every release.
    let settle = Instant::now();
    loop {
        let behind: Vec<usize> = services
            .iter()
            .map(|s| s.node.registry.catalog_len())
            .filter(|n| *n as u64 != versions)
            .collect();
        if behind.is_empty() {
            break;
        }
        if settle.elapsed() > SETTLE_DEADLINE {
            errors.record(format!(
                "{} nodes do not hold all {versions} releases after {SETTLE_DEADLINE:?}: {behind:?}",
                behind.len()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled_in = settle.elapsed();
    samples.push((start.elapsed(), rss()));

    let (install_times, skipped) = install_times;
    println!(
        "soak: load ran {load_time:.1?}; {} publishes ({versions} versions acknowledged), \
         {} searches, {} installs ({skipped} skipped: nothing published {INSTALL_AGE:?} \
         before yet); errors: {}",
        pub_times.len(),
        search_times.len(),
        install_times.len(),
        errors.count.load(Ordering::Relaxed)
    );
    println!("{}", summary("publish (IPC, acknowledged)", pub_times));
    println!("{}", summary("search (IPC)", search_times));
    println!("{}", summary("install (agora process)", install_times));
    println!("every node held every release {settled_in:.1?} after the load stopped");
    let first_minute: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t <= Duration::from_secs(60))
        .map(|(_, r)| *r)
        .collect();
    let last_minute: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t + Duration::from_secs(60) >= load_time)
        .map(|(_, r)| *r)
        .collect();
    let peak = samples.iter().map(|(_, r)| *r).max().unwrap();
    let avg = |v: &[u64]| mb(v.iter().sum::<u64>() / v.len().max(1) as u64);
    println!(
        "resident memory of the process (20 nodes): start {:.1} MB, first minute avg {:.1} MB, \
         last minute avg {:.1} MB, peak {:.1} MB",
        mb(samples[0].1),
        avg(&first_minute),
        avg(&last_minute),
        mb(peak)
    );
    let mut line = String::from("rss samples (s, MB):");
    for (t, r) in &samples {
        line.push_str(&format!(" {}:{:.0}", t.as_secs(), mb(*r)));
    }
    println!("{line}");
    for s in services {
        rt.block_on(s.stop());
    }
    let failed = errors.count.load(Ordering::Relaxed);
    assert_eq!(
        failed, 0,
        "the soak had {failed} errors: {:?}",
        errors.first
    );
}
