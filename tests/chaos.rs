//! Crashes: `agorad` killed with SIGKILL at random points while it publishes, installs and
//! syncs, then restarted and checked. After every restart the store opens (its own integrity
//! checks run at start-up: the log against its id index, owner pins against the replayed
//! catalog, blob files against their metadata), every acknowledged publish and install is
//! there, no package is half installed, and no temp file is left.
//!
//! `AGORA_CHAOS_ROUNDS` rounds (default 60: a third of each kind); `AGORA_CHAOS_SEED=N`
//! repeats a run's kill points (the seed is printed, and named in every failure).
//!
//! The provider every killed node talks to is an in-process node on loopback TCP that is
//! never killed; the nodes killed are real `agorad` processes.

mod common;
mod process;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use agora_daemon::Node;
use agora_protocol::PublisherSecret;
use process::{DEADLINE, Daemon, package, wait_until};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

const DEFAULT_ROUNDS: usize = 60;
/// Synthetic releases on the provider: enough that a sync takes a while to kill into.
const SYNC_RECORDS: usize = 3000;
/// Bytes of the payload of a published package.
const PAYLOAD: usize = 384 * 1024;
/// Bytes of the payload of the second package of each install: its fetch, after the first
/// package is staged, is where a kill finds a half-done install if there is one to find.
const SECOND_PAYLOAD: usize = 2 * 1024 * 1024;

fn rounds() -> usize {
    std::env::var("AGORA_CHAOS_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("AGORA_CHAOS_ROUNDS is a number"))
        .unwrap_or(DEFAULT_ROUNDS)
}

fn seed() -> u64 {
    std::env::var("AGORA_CHAOS_SEED")
        .ok()
        .map(|v| v.parse().expect("AGORA_CHAOS_SEED is a number"))
        .unwrap_or_else(rand::random)
}

/// A random point in `0..=window`.
fn kill_point(rng: &mut StdRng, window: Duration) -> Duration {
    Duration::from_micros(rng.random_range(0..=window.as_micros() as u64))
}

/// Waits for an `agora` command whose daemon was killed under it: it must end, with an
/// answer or an error, not hang. Its output is drained while it runs (a thread waits), so a
/// full pipe cannot pass for a hang.
fn finish(child: Child, what: &str) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| {
            panic!("{what}: agora still runs {DEADLINE:?} after its daemon was killed")
        })
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Files in the data directory's `tmp/` (start-up removes what a crash left there).
fn temp_files(daemon: &Daemon) -> Vec<String> {
    std::fs::read_dir(daemon.data_dir().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn catalog_size(daemon: &Daemon) -> u64 {
    daemon.json(&["status"])["catalog_size"].as_u64().unwrap()
}

/// Waits until `daemon` holds `want` records.
fn wait_for_catalog(daemon: &Daemon, want: u64, what: &str) {
    wait_until(what, || match catalog_size(daemon) {
        n if n == want => Ok(()),
        n => Err(format!("{n} of {want} records")),
    });
}

/// Entries of a project's package directory, and the names its lockfile lists.
fn project_state(project: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let dir = project.join(".agora/packages");
    let entries = std::fs::read_dir(&dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let locked = agora_client::lockfile::Lockfile::read(&project.join("agora.lock"))
        .unwrap()
        .map(|lock| lock.packages.into_iter().map(|p| p.name).collect())
        .unwrap_or_default();
    (entries, locked)
}

/// A package directory with a payload of `PAYLOAD` noise bytes.
fn payload_package(root: &Path, name: &str, version: &str, seed: u64) -> std::path::PathBuf {
    sized_package(root, name, version, seed, PAYLOAD)
}

fn sized_package(
    root: &Path,
    name: &str,
    version: &str,
    seed: u64,
    size: usize,
) -> std::path::PathBuf {
    let dir = root.join(format!("{name}-{version}"));
    package(&dir, name, version, "", &format!("{name} {version}"));
    std::fs::write(dir.join("templates/payload.bin"), common::noise(size, seed)).unwrap();
    dir
}

struct Provider {
    rt: tokio::runtime::Runtime,
    node: Option<Node>,
    addr: String,
}

impl Provider {
    /// An in-process node holding `SYNC_RECORDS` synthetic releases and `libs` installable
    /// packages named `chaos-lib-N`.
    fn start(libs: usize, src: &Path) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (node, addr) = rt.block_on(async {
            let (node, addr) = common::start_node().await;
            let key = common::publisher(40);
            let records = common::many_releases(SYNC_RECORDS, &key);
            let reg = node.registry.clone();
            tokio::task::spawn_blocking(move || {
                reg.blocking_catalog().ingest(records, false).unwrap()
            })
            .await
            .unwrap();
            let key = PublisherSecret::from_bytes([41; 32]);
            for i in 0..libs {
                let size = if i % 2 == 1 { SECOND_PAYLOAD } else { PAYLOAD };
                let name = format!("chaos-lib-{i}");
                let dir = sized_package(src, &name, "1.0.0", i as u64 + 1, size);
                node.registry.publish(dir, &key).await.expect("publish");
            }
            (node, addr)
        });
        Self {
            rt,
            node: Some(node),
            addr: addr.to_string(),
        }
    }

    fn catalog_len(&self) -> u64 {
        self.node.as_ref().unwrap().registry.view().record_count() as u64
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            self.rt.block_on(node.shutdown());
        }
    }
}

/// Publish rounds: a standalone node publishes `chaos-app@1.0.R`; killed at a random point.
struct PublishChaos {
    daemon: Daemon,
    src: tempfile::TempDir,
    attempted: BTreeSet<String>,
    acknowledged: BTreeSet<String>,
    window: Duration,
}

impl PublishChaos {
    fn new() -> Self {
        let daemon = Daemon::with_args(&[]);
        daemon.json(&["keygen"]);
        let mut me = Self {
            daemon,
            src: tempfile::tempdir().unwrap(),
            attempted: BTreeSet::new(),
            acknowledged: BTreeSet::new(),
            window: Duration::ZERO,
        };
        // One clean publish, timed: the kill points fall within one and a half of it.
        let started = Instant::now();
        let child = me.spawn_publish("0.0.1", 7);
        let out = finish(child, "publish");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        me.acknowledged.insert("0.0.1".into());
        me.window = started.elapsed() * 3 / 2;
        me
    }

    /// Starts `agora publish` of `chaos-app@VERSION`.
    fn spawn_publish(&mut self, version: &str, seed: u64) -> Child {
        let dir = payload_package(self.src.path(), "chaos-app", version, seed);
        self.attempted.insert(version.into());
        self.daemon
            .spawn(&["--json", "publish", dir.to_str().unwrap()])
    }

    fn round(&mut self, round: usize, rng: &mut StdRng, ctx: &str) {
        let version = format!("1.0.{round}");
        let child = self.spawn_publish(&version, round as u64);
        std::thread::sleep(kill_point(rng, self.window));
        self.daemon.kill();
        let out = finish(child, ctx);
        if out.status.success() {
            assert_eq!(json(&out)["published"], true, "{ctx}");
            self.acknowledged.insert(version);
        }
        self.daemon.launch();
        self.check(ctx);
    }

    fn check(&self, ctx: &str) {
        assert_eq!(temp_files(&self.daemon), Vec::<String>::new(), "{ctx}");
        let listed: BTreeSet<String> = self
            .daemon
            .json(&["versions", "chaos-app"])
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap().to_owned())
            .collect();
        let lost: Vec<_> = self.acknowledged.difference(&listed).collect();
        assert!(
            lost.is_empty(),
            "{ctx}: acknowledged publishes lost: {lost:?}"
        );
        let invented: Vec<_> = listed.difference(&self.attempted).collect();
        assert!(
            invented.is_empty(),
            "{ctx}: versions never published: {invented:?}"
        );
        // One record per version, and each one's archive whole in the store.
        assert_eq!(catalog_size(&self.daemon), listed.len() as u64, "{ctx}");
        let mut client = self.daemon.client();
        for v in &listed {
            let fetched = client.fetch("chaos-app", v, |_| {}).unwrap();
            let data = std::fs::read(&fetched.path).unwrap();
            assert_eq!(
                agora_protocol::ContentId::of(&data).to_hex(),
                fetched.sha256,
                "{ctx}: the archive of chaos-app@{v}"
            );
        }
    }
}

/// Install rounds: a node joined to the provider installs two packages it has never fetched
/// into one project; killed at a random point, restarted, and the install retried.
struct InstallChaos {
    daemon: Daemon,
    project: tempfile::TempDir,
    next_lib: usize,
    installed: BTreeSet<String>,
    /// Installs the kill made fail.
    interrupted: usize,
    window: Duration,
}

impl InstallChaos {
    fn new(provider: &Provider) -> Self {
        let daemon = Daemon::start(Some(&provider.addr));
        wait_for_catalog(
            &daemon,
            provider.catalog_len(),
            "the installer has the provider's catalog",
        );
        let mut me = Self {
            daemon,
            project: tempfile::tempdir().unwrap(),
            next_lib: 0,
            installed: BTreeSet::new(),
            interrupted: 0,
            window: Duration::ZERO,
        };
        // A package nobody can provide after one that installs: refused as a whole, the
        // first one not left behind (staged, then removed).
        let libs = me.take_libs();
        let unavailable = ["synthetic-00000".to_owned(), libs[0].clone()];
        let out = me.install(&unavailable);
        assert_eq!(
            out.status.code(),
            Some(7),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        me.check("an install with an unavailable package");
        let started = Instant::now();
        let out = me.install(&libs);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        me.installed.extend(libs);
        me.window = started.elapsed() * 3 / 2;
        me
    }

    fn take_libs(&mut self) -> [String; 2] {
        let libs = [
            format!("chaos-lib-{}", self.next_lib),
            format!("chaos-lib-{}", self.next_lib + 1),
        ];
        self.next_lib += 2;
        libs
    }

    fn install_child(&self, libs: &[String; 2]) -> Child {
        let dir = self.project.path().to_str().unwrap();
        self.daemon
            .spawn(&["--json", "install", &libs[0], &libs[1], "--dir", dir])
    }

    fn install(&self, libs: &[String; 2]) -> Output {
        finish(self.install_child(libs), "install")
    }

    fn round(&mut self, rng: &mut StdRng, ctx: &str) {
        let libs = self.take_libs();
        let child = self.install_child(&libs);
        std::thread::sleep(kill_point(rng, self.window));
        self.daemon.kill();
        let out = finish(child, ctx);
        if out.status.success() {
            self.installed.extend(libs.iter().cloned());
        }
        self.daemon.launch();
        // Installed means both, verified and locked; not installed means the project is
        // exactly as it was.
        self.check(ctx);
        if !out.status.success() {
            self.interrupted += 1;
            let again = self.install(&libs);
            assert!(
                again.status.success(),
                "{ctx}: the retried install failed: {}",
                String::from_utf8_lossy(&again.stderr)
            );
            self.installed.extend(libs.iter().cloned());
            self.check(&format!("{ctx}, after the retry"));
        }
    }

    fn check(&self, ctx: &str) {
        assert_eq!(temp_files(&self.daemon), Vec::<String>::new(), "{ctx}");
        let (entries, locked) = project_state(self.project.path());
        assert_eq!(locked, self.installed, "{ctx}: the lockfile");
        assert_eq!(entries, self.installed, "{ctx}: the package directory");
        if self.installed.is_empty() {
            assert!(!self.project.path().join("agora.lock").exists(), "{ctx}");
            return;
        }
        let v = self
            .daemon
            .json(&["verify", "--dir", self.project.path().to_str().unwrap()]);
        assert_eq!(v["ok"], true, "{ctx}: {v}");
    }
}

/// Sync rounds: a new node joins the provider and is killed while it takes the catalog in;
/// restarted, it keeps what it stored and finishes.
struct SyncChaos {
    provider_addr: String,
    want: u64,
    window: Duration,
    /// Kills that left a node with part of the catalog.
    partial: usize,
}

impl SyncChaos {
    fn new(provider: &Provider) -> Self {
        let want = provider.catalog_len();
        let started = Instant::now();
        let daemon = Daemon::start(Some(&provider.addr));
        wait_for_catalog(&daemon, want, "a new node syncs the catalog");
        Self {
            provider_addr: provider.addr.clone(),
            want,
            window: started.elapsed() * 3 / 2,
            partial: 0,
        }
    }

    fn round(&mut self, rng: &mut StdRng, ctx: &str) {
        let mut daemon = Daemon::start(Some(&self.provider_addr));
        std::thread::sleep(kill_point(rng, self.window));
        daemon.kill();
        daemon.launch();
        assert_eq!(temp_files(&daemon), Vec::<String>::new(), "{ctx}");
        let kept = catalog_size(&daemon);
        assert!(kept <= self.want, "{ctx}: {kept} records of {}", self.want);
        if kept < self.want {
            self.partial += 1;
        }
        wait_for_catalog(
            &daemon,
            self.want,
            &format!("{ctx}: the restarted node finishes the sync"),
        );
        // Everything it holds becomes searchable: the index was rebuilt or kept, not lost.
        wait_until(
            &format!("{ctx}: every synced release is searchable"),
            || match daemon.json(&["search", "synthetic"])["total"].as_u64() {
                Some(n) if n == SYNC_RECORDS as u64 => Ok(()),
                n => Err(format!("{n:?} of {SYNC_RECORDS} found")),
            },
        );
    }
}

#[test]
fn sigkill_during_publish_install_and_sync_loses_nothing_acknowledged() {
    let rounds = rounds();
    let seed = seed();
    eprintln!("chaos: {rounds} rounds, seed {seed} (AGORA_CHAOS_SEED={seed} repeats the run)");
    let mut rng = StdRng::seed_from_u64(seed);
    let src = tempfile::tempdir().unwrap();
    let install_rounds = rounds / 3 + 1;
    // Two packages per install round, and two for the timed install.
    let provider = Provider::start(2 * install_rounds + 2, src.path());
    let mut publish = PublishChaos::new();
    let mut install = InstallChaos::new(&provider);
    let mut sync = SyncChaos::new(&provider);
    eprintln!(
        "kill windows: publish {:?}, install {:?}, sync {:?}",
        publish.window, install.window, sync.window
    );
    let started = Instant::now();
    for round in 0..rounds {
        let ctx = format!("round {round} (seed {seed})");
        match round % 3 {
            0 => publish.round(round, &mut rng, &format!("{ctx}, publish")),
            1 => install.round(&mut rng, &format!("{ctx}, install")),
            _ => sync.round(&mut rng, &format!("{ctx}, sync")),
        }
    }
    eprintln!(
        "chaos: {rounds} rounds in {:.1?}; {} of {} publishes acknowledged; {} installs \
         interrupted and retried, {} packages installed; {} syncs cut short",
        started.elapsed(),
        publish.acknowledged.len(),
        publish.attempted.len(),
        install.interrupted,
        install.installed.len(),
        sync.partial
    );
}
