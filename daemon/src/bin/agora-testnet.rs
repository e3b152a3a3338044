//! `agora-testnet`: a local Agora network in one process. Starts N complete daemons on
//! loopback (each with its own home, IPC socket and optional HTTP gateway), joins them to the
//! first, optionally publishes M synthetic releases from node 0 and waits until every node
//! has them, prints how to reach each node, and runs until Ctrl-C (or SIGTERM), when it stops
//! every node and removes the network's directory (unless `--keep` or `--dir` was given).
//!
//! ```sh
//! cargo run --release -p agora-daemon --bin agora-testnet -- --nodes 5 --seed 100
//! AGORA_SOCKET=/tmp/agora-testnet-…/node-2/agorad.sock agora search starter
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use libp2p::Multiaddr;
use tracing_subscriber::EnvFilter;

use agora_daemon::app::config::Config;
use agora_daemon::app::daemon::{Daemon, StopSignals};
use agora_daemon::network::NetworkConfig;
use agora_daemon::store::key_files as keys;
use agora_protocol::search::SearchQuery;

/// How long seeding waits for every node to hold every release.
const SEED_DEADLINE: Duration = Duration::from_secs(600);

/// mimalloc keeps freed pages for reuse: each search-index commit allocates a multi-megabyte
/// term table, and with the system allocator half of a commit's time went to page faults.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "agora-testnet",
    version,
    about = "Run a local Agora network of N nodes in one process"
)]
struct Args {
    /// Number of nodes.
    #[arg(long, short = 'n', default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=500))]
    nodes: u16,
    /// Synthetic releases to publish from node 0 before reporting ready.
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Directory for the nodes' homes (kept at exit). Default: a new temporary directory,
    /// removed at exit.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the temporary directory at exit.
    #[arg(long)]
    keep: bool,
    /// Serve each node's HTTP gateway on a loopback port.
    #[arg(long)]
    http: bool,
    /// Print the nodes as one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Log filter for all nodes.
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    log_level: String,
}

fn main() {
    let args = Args::parse();
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|e| {
        eprintln!("error: invalid log filter {:?}: {e}", args.log_level);
        std::process::exit(2);
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = agora_daemon::app::runtime::build().unwrap_or_else(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        std::process::exit(1);
    });
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The directory the network lives in; a temporary one is removed when dropped.
enum Home {
    Kept(PathBuf),
    Temporary(tempfile::TempDir),
}

impl Home {
    fn path(&self) -> &Path {
        match self {
            Self::Kept(p) => p,
            Self::Temporary(t) => t.path(),
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Caught from here on: a Ctrl-C while the nodes start is acted on once they have started,
    // so it stops them cleanly and removes the directory.
    let mut signals = StopSignals::install().context("installing the signal handlers")?;
    let home = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            Home::Kept(d.clone())
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("agora-testnet-")
                .tempdir()
                .context("creating a temporary directory")?;
            if args.keep {
                Home::Kept(t.keep())
            } else {
                Home::Temporary(t)
            }
        }
    };
    let started = Instant::now();
    let mut nodes: Vec<Daemon> = Vec::with_capacity(args.nodes as usize);
    let mut seed_addr: Option<Multiaddr> = None;
    for i in 0..args.nodes {
        let node_home = home.path().join(format!("node-{i}"));
        let config = node_config(&node_home, seed_addr.clone(), args.http)?;
        let keypair = keys::node_identity(&config.paths.keys_dir)
            .with_context(|| format!("node {i}: loading its identity"))?;
        let service = Daemon::start(&config, NetworkConfig::for_local_testnet(keypair), None)
            .await
            .with_context(|| format!("node {i}"))?;
        if seed_addr.is_none() {
            seed_addr = service.addresses.first().cloned();
        }
        nodes.push(service);
    }
    let started_in = started.elapsed();

    let seeded_in = if args.seed > 0 {
        Some(seed(&nodes, home.path(), args.seed).await?)
    } else {
        None
    };
    print(&nodes, home.path(), &args, started_in, seeded_in);

    signals.wait().await;
    eprintln!("stopping {} nodes", nodes.len());
    for n in nodes {
        n.stop().await;
    }
    if let Home::Kept(p) = &home {
        eprintln!("kept {}", p.display());
    }
    Ok(())
}

fn node_config(home: &Path, bootstrap: Option<Multiaddr>, http: bool) -> anyhow::Result<Config> {
    let mut config = Config::local(home)?;
    std::fs::create_dir_all(&config.paths.data_dir)
        .with_context(|| format!("creating {}", config.paths.data_dir.display()))?;
    config.bootstrap = bootstrap.into_iter().collect();
    config.http = http.then(|| "127.0.0.1:0".parse()).transpose()?;
    Ok(config)
}

/// Publishes `count` synthetic releases from node 0 and waits until every node has them all.
async fn seed(nodes: &[Daemon], home: &Path, count: u32) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let first = &nodes[0];
    let secret = match keys::publisher_key(&first.ctx.paths.keys_dir) {
        Ok(s) => s,
        Err(_) => keys::generate_publisher_key(&first.ctx.paths.keys_dir)
            .context("creating node 0's publisher key")?,
    };
    let src = home.join("seed");
    for i in 0..count {
        let dir = src.join(format!("pkg-{i}"));
        write_package(&dir, i).with_context(|| format!("writing {}", dir.display()))?;
        first
            .node
            .registry
            .publish(dir, &secret)
            .await
            .with_context(|| format!("publishing synthetic release {i}"))?;
        if (i + 1) % 1000 == 0 {
            eprintln!("published {}/{count}", i + 1);
        }
    }
    let target = count as u64;
    // Every release in the catalog and in the search index (a package head can name a
    // package before its release record arrives, so the name count is not enough).
    let listing = SearchQuery {
        limit: 1,
        ..SearchQuery::default()
    };
    loop {
        let mut behind = 0;
        for n in nodes {
            let registry = &n.node.registry;
            let held = registry.view().record_count() as u64 >= target;
            let found = registry.search(listing.clone()).await;
            if !(held && found.is_ok_and(|r| r.total >= target)) {
                behind += 1;
            }
        }
        if behind == 0 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < SEED_DEADLINE,
            "{behind} nodes still lack releases after {SEED_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const WORDS: [&str; 16] = [
    "quick", "lazy", "bright", "silent", "rapid", "modern", "classic", "tiny", "secure", "async",
    "simple", "robust", "minimal", "fancy", "solid", "clever",
];
const KINDS: [&str; 8] = [
    "service", "template", "starter", "widget", "parser", "server", "client", "cache",
];
const CATEGORIES: [&str; 4] = ["web", "cli", "data", "starter"];

/// A small valid package: `seed-<word>-<kind>-<i>`.
fn write_package(dir: &Path, i: u32) -> std::io::Result<()> {
    let i = i as usize;
    let name = format!("seed-{}-{}-{i}", WORDS[i % 16], KINDS[(i / 16) % 8]);
    std::fs::create_dir_all(dir.join("templates"))?;
    std::fs::write(
        dir.join("package.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\n\
             description = \"A {} {} for the local testnet\"\ncategory = \"{}\"\n\
             license = \"MIT\"\ntags = [\"testnet\"]\n",
            WORDS[i % 16],
            KINDS[(i / 16) % 8],
            CATEGORIES[i % 4]
        ),
    )?;
    std::fs::write(
        dir.join("templates/main.tmpl"),
        format!("{name}: {{{{ value }}}}\n"),
    )
}

fn print(
    nodes: &[Daemon],
    home: &Path,
    args: &Args,
    started_in: Duration,
    seeded_in: Option<Duration>,
) {
    if args.json {
        let list: Vec<serde_json::Value> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                serde_json::json!({
                    "index": i,
                    "peer_id": n.node.network.peer_id().to_string(),
                    "socket": n.ctx.paths.socket,
                    "addresses": n.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "http": n.ctx.http.map(|a| a.to_string()),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "dir": home,
                "nodes": list,
                "started_ms": started_in.as_millis() as u64,
                "seeded": args.seed,
                "seeded_ms": seeded_in.map(|d| d.as_millis() as u64),
            })
        );
        return;
    }
    println!(
        "agora-testnet: {} nodes in {} (started in {started_in:.2?})",
        nodes.len(),
        home.display()
    );
    if let Some(d) = seeded_in {
        println!(
            "seeded {} releases from node 0; every node had them after {d:.2?}",
            args.seed
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        println!(
            "node {i:<3} {}  {}{}",
            n.addresses
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
            n.ctx.paths.socket.display(),
            n.ctx
                .http
                .map(|a| format!("  http://{a}"))
                .unwrap_or_default()
        );
    }
    println!(
        "use a node: AGORA_SOCKET={} agora status",
        nodes[0].ctx.paths.socket.display()
    );
    println!("Ctrl-C stops the network");
}
