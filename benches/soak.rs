//! Soak (not in CI): 20 nodes under a steady mixed load for ten minutes, the way people use
//! them: every operation through a node's IPC socket, installs by the real `agora` binary.
//!
//! The nodes are whole daemons (node, registry, IPC server) in this process, joined to the
//! first as `agora-testnet` joins them. Over `AGORA_SOAK_SECS` (default 600) it spreads
//! evenly: `AGORA_SOAK_PUBLISHES` publishes (default 1,000; one in five after the first 100
//! is a new version of an earlier package), `AGORA_SOAK_SEARCHES` searches (10,000) and
//! `AGORA_SOAK_INSTALLS` installs (200, each of a package published at least 5 s before,
//! into a fresh project), each on a node picked in turn. Every failure is counted and its
//! first few printed. Once every node holds every release, a quiet phase
//! (`AGORA_SOAK_QUIET_SECS`, default 120) goes on searching and installing at the same rates
//! without publishing: with nothing new to hold, memory must stay flat. Resident memory and
//! the bytes live on the heap are sampled every 10 s. Needs release binaries:
//! `cargo build --release --workspace && cargo bench --bench soak`.

/// The allocator agorad runs with, so the memory figures are the daemon's; it counts the
/// bytes live on the heap, to tell data the nodes hold from memory the allocator keeps.
#[global_allocator]
static GLOBAL: support::Counting = support::Counting(mimalloc::MiMalloc);

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agora_client::Client;
use agora_daemon::Config;
use agora_daemon::Daemon;
use agora_daemon::network::NetworkConfig;
use agora_daemon::store::key_files as keys;
use agora_protocol::search::SearchQuery;
use support::{bin, mb, proc_status_bytes, summary};

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

/// What every phase of load shares.
struct Ctx {
    sockets: Vec<PathBuf>,
    src: PathBuf,
    agora: PathBuf,
    errors: Errors,
    published: Published,
    /// When the soak started: memory samples are timed from it.
    t0: Instant,
}

/// Resident memory and bytes live on the heap.
fn memory() -> (u64, u64) {
    (
        proc_status_bytes(std::process::id(), "VmRSS"),
        support::live_bytes() as u64,
    )
}

/// Latencies of one phase, and the versions it published.
struct PhaseTimes {
    publishes: Vec<Duration>,
    searches: Vec<Duration>,
    installs: Vec<Duration>,
    versions: u64,
}

/// Runs `publishes`, `searches` and `installs` spread evenly over `duration`, each on a node
/// picked in turn, sampling memory into `samples` as it goes.
fn phase(
    ctx: &Ctx,
    duration: Duration,
    (publishes, searches, installs): (u64, u64, u64),
    samples: &mut Vec<(Duration, (u64, u64))>,
) -> PhaseTimes {
    let Ctx {
        sockets,
        src,
        agora,
        errors,
        published,
        ..
    } = ctx;
    let start = Instant::now();
    std::thread::scope(|s| {
        // Each worker says when it is done; memory is sampled while waiting for them.
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let publisher = s.spawn({
            let done = done.clone();
            move || {
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
                        .and_then(|mut c| c.publish(&dir, false, false, |_| {}))
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
                let _ = done.send(());
                (times, versions)
            }
        });
        let searcher = s.spawn({
            let done = done.clone();
            move || {
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
                let _ = done.send(());
                times
            }
        });
        let installer = s.spawn(move || {
            let mut times = Vec::new();
            for i in 0..installs {
                pace(start, duration * i as u32 / installs as u32);
                let node = i as usize % NODES;
                // The first installs wait for the first packages to be old enough.
                let name = loop {
                    let wait = {
                        let at = published.at.lock().unwrap();
                        let ripe: Vec<&String> = at
                            .iter()
                            .filter(|(_, t)| t.elapsed() >= INSTALL_AGE)
                            .map(|(n, _)| n)
                            .collect();
                        if !ripe.is_empty() {
                            break ripe[(i as usize * 7919) % ripe.len()].clone();
                        }
                        at.first().map_or(Duration::from_millis(100), |(_, t)| {
                            INSTALL_AGE.saturating_sub(t.elapsed())
                        })
                    };
                    std::thread::sleep(wait);
                };
                let project = tempfile::tempdir().unwrap();
                let t = Instant::now();
                let out = std::process::Command::new(agora)
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
            let _ = done.send(());
            times
        });
        let mut running = 3;
        while running > 0 {
            let next = samples.last().map_or(Duration::ZERO, |m| m.0) + SAMPLE_EVERY;
            match finished.recv_timeout(next.saturating_sub(ctx.t0.elapsed())) {
                Ok(()) => running -= 1,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    samples.push((ctx.t0.elapsed(), memory()))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let (publishes, versions) = publisher.join().unwrap();
        PhaseTimes {
            publishes,
            searches: searcher.join().unwrap(),
            installs: installer.join().unwrap(),
            versions,
        }
    })
}

fn main() {
    let secs = env_or("AGORA_SOAK_SECS", 600);
    let publishes = env_or("AGORA_SOAK_PUBLISHES", 1000);
    let searches = env_or("AGORA_SOAK_SEARCHES", 10_000);
    let installs = env_or("AGORA_SOAK_INSTALLS", 200);
    let quiet = env_or("AGORA_SOAK_QUIET_SECS", 120);
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
            .map(|s: &Daemon| s.addresses[0].clone())
            .into_iter()
            .collect();
        let keypair = keys::node_identity(&config.paths.keys_dir).unwrap();
        let service = rt
            .block_on(Daemon::start(
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

    let ctx = Ctx {
        sockets,
        src: home.path().join("src"),
        agora,
        errors: Errors::default(),
        published: Published::default(),
        t0: Instant::now(),
    };
    let mut samples = vec![(Duration::ZERO, memory())];
    let load = phase(
        &ctx,
        duration,
        (publishes, searches, installs),
        &mut samples,
    );
    let load_end = ctx.t0.elapsed();
    samples.push((load_end, memory()));

    // Every node holds every release.
    let versions = load.versions;
    let settle = Instant::now();
    loop {
        let behind: Vec<usize> = services
            .iter()
            .map(|s| s.node.registry.view().record_count())
            .filter(|n| *n as u64 != versions)
            .collect();
        if behind.is_empty() {
            break;
        }
        if settle.elapsed() > SETTLE_DEADLINE {
            ctx.errors.record(format!(
                "{} nodes do not hold all {versions} releases after {SETTLE_DEADLINE:?}: {behind:?}",
                behind.len()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled_in = settle.elapsed();

    // The same searches and installs with nothing new to hold: memory must stay flat.
    let quiet_start = ctx.t0.elapsed();
    samples.push((quiet_start, memory()));
    let quiet_counts = (0, searches * quiet / secs, installs * quiet / secs);
    let calm = phase(&ctx, Duration::from_secs(quiet), quiet_counts, &mut samples);
    samples.push((ctx.t0.elapsed(), memory()));

    println!(
        "soak: load ran {:.1?}; {} publishes ({versions} versions acknowledged), {} searches, \
         {} installs; then {quiet} s of {} searches and {} installs without publishing; \
         errors: {}",
        load_end,
        load.publishes.len(),
        load.searches.len(),
        load.installs.len(),
        calm.searches.len(),
        calm.installs.len(),
        ctx.errors.count.load(Ordering::Relaxed)
    );
    println!("{}", summary("publish (IPC, acknowledged)", load.publishes));
    println!("{}", summary("search (IPC)", load.searches));
    println!("{}", summary("install (agora process)", load.installs));
    println!("{}", summary("quiet phase: search (IPC)", calm.searches));
    println!("{}", summary("quiet phase: install", calm.installs));
    println!("every node held every release {settled_in:.1?} after the load stopped");

    let at = |t: Duration| samples.iter().find(|(s, _)| *s >= t).unwrap().1;
    let (start_mem, load_mem, quiet_mem, end_mem) = (
        samples[0].1,
        at(load_end),
        at(quiet_start),
        samples.last().unwrap().1,
    );
    let quiet_samples: Vec<(u64, u64)> = samples
        .iter()
        .filter(|(t, _)| *t >= quiet_start)
        .map(|(_, m)| *m)
        .collect();
    let held = versions * NODES as u64;
    println!(
        "live heap: {:.1} MB at the start, {:.1} MB when the load stopped ({:.1} KB more for \
         each of the {held} releases the nodes hold), {:.1} MB .. {:.1} MB over the quiet \
         phase (max {:.1} MB)",
        mb(start_mem.1),
        mb(load_mem.1),
        (load_mem.1 - start_mem.1) as f64 / held.max(1) as f64 / 1024.0,
        mb(quiet_mem.1),
        mb(end_mem.1),
        mb(quiet_samples.iter().map(|m| m.1).max().unwrap()),
    );
    println!(
        "resident memory: {:.1} MB at the start, {:.1} MB when the load stopped, {:.1} MB .. \
         {:.1} MB over the quiet phase (min {:.1} MB, max {:.1} MB)",
        mb(start_mem.0),
        mb(load_mem.0),
        mb(quiet_mem.0),
        mb(end_mem.0),
        mb(quiet_samples.iter().map(|m| m.0).min().unwrap()),
        mb(quiet_samples.iter().map(|m| m.0).max().unwrap()),
    );
    let mut line = String::from("samples (s: resident/live MB):");
    for (t, (rss, live)) in &samples {
        line.push_str(&format!(
            " {}:{:.0}/{:.0}",
            t.as_secs(),
            mb(*rss),
            mb(*live)
        ));
    }
    println!("{line}");
    for s in services {
        rt.block_on(s.stop());
    }
    let failed = ctx.errors.count.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "the soak had {failed} errors: {:?}",
        ctx.errors.first.lock().unwrap()
    );
}
