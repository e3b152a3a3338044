//! The daemon as people run it: the real `agorad` and `agora` binaries.
//!
//! - start-up to ready (the first `status` answered on the socket) and resident memory, for
//!   an empty node and for one holding `AGORA_BENCH_RELEASES` (default 100,000) releases:
//!   with the search index sealed at the last clean shutdown; after `AGORA_BENCH_BEHIND`
//!   (default 1,000) more releases with the index saved before them (as a crash leaves it:
//!   caught up at start); and with the index's seal gone (rebuilt from the catalog at start,
//!   while the daemon already serves); and until the first search is answered (a search
//!   waits for a rebuild under way);
//! - the same with a package head for every name in the store (the node puts them back in
//!   its DHT store while it serves);
//! - resident memory once searchable, 3 s later and 15 s later (mimalloc hands back what a
//!   start freed some seconds after);
//! - `agora search` end to end (a process started, connected, answered, printed), against
//!   `agora --version` (the same process doing nothing) and the in-process client's search.
//!
//! The catalog is loaded by a node in this process (synthetic signed releases, ingested the
//! way a sync ingests them), which then shuts down cleanly, leaving the directory agorad
//! opens. Needs release binaries: `cargo build --release --workspace && cargo bench --bench daemon`.

/// The allocator agorad runs with, so the numbers are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/mod.rs"]
mod support;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_client::Client;
use agora_daemon::Config;
use agora_daemon::RegistryConfig;
use agora_daemon::network::NetworkConfig;
use agora_daemon::store::Db;
use agora_daemon::{Node, NodeConfig};
use agora_protocol::PublisherSecret;
use agora_protocol::records::{CatalogRecord, HeadBody, PackageHead, Signed};
use agora_protocol::search::SearchQuery;
use support::{bin, env_list, mb, pct, proc_status_bytes, synthetic_releases};

/// Longest a daemon may take to answer its first `status`.
const READY_DEADLINE: Duration = Duration::from_secs(120);
/// How long a daemon is left alone before its idle memory is read.
const SETTLE: Duration = Duration::from_secs(3);
/// A later look: mimalloc hands back the pages of what start-up freed some seconds after, so
/// the RSS at [`SETTLE`] still counts memory a start only used for a while.
const SETTLED: Duration = Duration::from_secs(15);
/// Runs of each command in the end-to-end pass.
const RUNS: usize = 40;

struct Running {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    ready_in: Duration,
    /// Until the first search was answered.
    searchable_in: Duration,
}

impl Running {
    fn start(home: &Path) -> Self {
        let socket = Config::local(home).unwrap().paths.socket;
        // The daemon's log, kept beside its home so a failed stop can say why.
        let log = home.with_extension("agorad.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let started = Instant::now();
        let child = Command::new(bin("agorad"))
            .env("AGORA_HOME", home)
            .env_remove("AGORA_SOCKET")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // Polled: the daemon binds its socket before it opens the catalog, so "ready" is the
        // first answered request, not the socket's existence.
        let (ready_in, mut client) = loop {
            if let Ok(mut c) = Client::connect(&socket)
                && c.status().is_ok()
            {
                break (started.elapsed(), c);
            }
            assert!(started.elapsed() < READY_DEADLINE, "agorad never answered");
            std::thread::sleep(Duration::from_millis(1));
        };
        // A search waits for an index being rebuilt: this is when the whole catalog is
        // searchable (the same as ready otherwise, but for the search itself).
        client.search(SearchQuery::text("quick")).unwrap();
        let searchable_in = started.elapsed();
        Self {
            child,
            socket,
            log,
            ready_in,
            searchable_in,
        }
    }

    fn rss(&self) -> (u64, u64) {
        let pid = self.child.id();
        (
            proc_status_bytes(pid, "VmRSS"),
            proc_status_bytes(pid, "VmHWM"),
        )
    }

    /// Stops the daemon with SIGTERM and waits for its clean exit.
    fn stop(mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        assert!(
            status.success(),
            "agorad did not exit cleanly ({status}); the end of its log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A home whose node holds `n` releases, left by a clean shutdown (index sealed).
fn loaded_home(rt: &tokio::runtime::Runtime, n: usize) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    add_releases(rt, home.path(), 0..n);
    home
}

/// Has a node in `home` ingest the synthetic releases numbered `numbers` (verified and
/// ingested the way a sync ingests them) and shut down cleanly.
fn add_releases(rt: &tokio::runtime::Runtime, home: &Path, numbers: Range<usize>) {
    let config = Config::local(home).unwrap();
    let key = publisher();
    let started = Instant::now();
    let records = synthetic_releases(numbers.clone(), &key);
    let signed = started.elapsed();
    rt.block_on(async {
        let node =
            Node::start(NodeConfig {
                network: NetworkConfig::for_local_testnet(
                    libp2p::identity::Keypair::generate_ed25519(),
                ),
                registry: RegistryConfig::new(&config.paths.data_dir),
            })
            .await
            .unwrap();
        let reg = node.registry.clone();
        tokio::task::spawn_blocking(move || reg.blocking_catalog().ingest(records, false).unwrap())
            .await
            .unwrap();
        assert_eq!(node.registry.view().indexed_count(), numbers.end as u64);
        node.shutdown().await;
    });
    println!(
        "setup: {} releases signed in {signed:.1?}, verified and ingested in {:.1?}",
        numbers.len(),
        started.elapsed() - signed
    );
}

/// The key the synthetic releases are signed with.
fn publisher() -> PublisherSecret {
    PublisherSecret::from_bytes([7; 32])
}

/// Stores a signed package head for each of the synthetic releases numbered `0..n` in the
/// (stopped) node's store, as a node holds those peers put on the DHT.
fn add_heads(home: &Path, n: usize) {
    let key = publisher();
    let heads: Vec<PackageHead> = synthetic_releases(0..n, &key)
        .into_iter()
        .map(|record| {
            let CatalogRecord::Release(r) = record else {
                unreachable!("synthetic records are releases")
            };
            let body = HeadBody {
                name: r.body.name,
                owner: key.public(),
                versions: vec![r.body.version],
                seq: 1,
                updated_at: r.body.published_at,
            };
            Signed::sign(body, &key).unwrap()
        })
        .collect();
    let data = Config::local(home).unwrap().paths.data_dir;
    Db::open(&data.join("catalog.redb"))
        .unwrap()
        .put_heads(&heads)
        .unwrap();
}

/// The saved search index under `home`.
fn index_dir(home: &Path) -> PathBuf {
    Config::local(home).unwrap().paths.data_dir.join("index")
}

/// Replaces the directory `to` by a copy of `from` (files only, as a saved index is).
fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Removes the sealed search index under `dir`, as a crash that changed the catalog would
/// leave it useless: the next start rebuilds it from the catalog.
fn unseal(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            unseal(&path);
        } else if entry.file_name() == "agora-sealed" {
            std::fs::remove_file(&path).unwrap();
            return;
        }
    }
}

/// Starts a daemon on `home` `times` times; prints the start-up times and the memory of the
/// last start, and returns that daemon, running.
fn starts(label: &str, home: &Path, times: usize, before_each: impl Fn()) -> Running {
    let (mut ready, mut searchable) = (Vec::new(), Vec::new());
    let mut last = None;
    for i in 0..times {
        before_each();
        let d = Running::start(home);
        ready.push(d.ready_in);
        searchable.push(d.searchable_in);
        if i + 1 < times {
            d.stop();
        } else {
            last = Some(d);
        }
    }
    let d = last.unwrap();
    let (rss_searchable, _) = d.rss();
    // What the start did with the catalog and the index, as the daemon logged it.
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    if let Some(loaded) = log.lines().find_map(|l| l.split_once("catalog loaded")) {
        println!("{label}: catalog loaded{}", loaded.1);
    }
    std::thread::sleep(SETTLE);
    let (rss, _) = d.rss();
    std::thread::sleep(SETTLED - SETTLE);
    let (rss_settled, peak) = d.rss();
    ready.sort();
    searchable.sort();
    println!(
        "{label}: ready in p50 {:.1?} (min {:.1?}, max {:.1?}, {times} starts), searchable in \
         p50 {:.1?} (min {:.1?}, max {:.1?}); RSS {:.1} MB once searchable, {:.1} MB after \
         {SETTLE:?} idle, {:.1} MB after {SETTLED:?}, peak {:.1} MB",
        pct(&ready, 0.5),
        ready[0],
        ready[times - 1],
        pct(&searchable, 0.5),
        searchable[0],
        searchable[times - 1],
        mb(rss_searchable),
        mb(rss),
        mb(rss_settled),
        mb(peak)
    );
    d
}

/// Wall time of `agora ARGS` against `socket`, `RUNS` times.
fn cli(socket: &Path, args: &[&str]) -> Vec<Duration> {
    (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            let out = Command::new(bin("agora"))
                .env("AGORA_SOCKET", socket)
                .env("NO_COLOR", "1")
                .args(args)
                .output()
                .unwrap();
            let took = started.elapsed();
            assert!(
                out.status.success(),
                "agora {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            took
        })
        .collect()
}

fn end_to_end(d: &Running) {
    let search = cli(&d.socket, &["--json", "search", "quick"]);
    let version = cli(&d.socket, &["--version"]);
    let mut client = Client::connect(&d.socket).unwrap();
    let inproc: Vec<Duration> = (0..RUNS * 10)
        .map(|_| {
            let started = Instant::now();
            let r = client.search(SearchQuery::text("quick")).unwrap();
            assert!(r.total > 0);
            started.elapsed()
        })
        .collect();
    let (s, v, c) = (sorted(search), sorted(version), sorted(inproc));
    println!(
        "`agora --json search quick`: p50 {:.2?} p99 {:.2?}; `agora --version` p50 {:.2?}; \
         client search (no process) p50 {:.0?}; the search adds {:.2?} to starting the CLI",
        pct(&s, 0.5),
        pct(&s, 0.99),
        pct(&v, 0.5),
        pct(&c, 0.5),
        pct(&s, 0.5).saturating_sub(pct(&v, 0.5))
    );
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let empty = tempfile::tempdir().unwrap();
    starts("empty node", empty.path(), 5, || {}).stop();
    for n in env_list("AGORA_BENCH_RELEASES", &[100_000]) {
        let home = loaded_home(&rt, n);
        let sealed = starts(
            &format!("{n} releases, sealed index"),
            home.path(),
            3,
            || {},
        );
        end_to_end(&sealed);
        sealed.stop();
        // A crash after `behind` more releases: the saved index is the one sealed before them.
        let behind = env_list("AGORA_BENCH_BEHIND", &[1_000])
            .into_iter()
            .next()
            .unwrap_or(1_000);
        let before = home.path().join("index-before");
        copy_dir(&index_dir(home.path()), &before);
        add_releases(&rt, home.path(), n..n + behind);
        let total = n + behind;
        starts(
            &format!("{total} releases, saved index {behind} releases behind (a crash)"),
            home.path(),
            3,
            || copy_dir(&before, &index_dir(home.path())),
        )
        .stop();
        starts(
            &format!("{total} releases, index rebuilt"),
            home.path(),
            3,
            || unseal(home.path()),
        )
        .stop();
        // A node among the closest peers of every name (any node of a network of 20 or
        // fewer) holds a head for each, and serves them again from its start.
        add_heads(home.path(), total);
        starts(
            &format!("{total} releases and {total} package heads, sealed index"),
            home.path(),
            3,
            || {},
        )
        .stop();
        if std::env::var_os("AGORA_BENCH_KEEP").is_some() {
            println!("kept {}", home.keep().display());
        }
    }
}
