//! `agorad`: runs an Agora node in the foreground until SIGINT, SIGTERM or `agora node stop`.
//!
//! Start-up: configuration (file, environment, flags), logs (stderr and a daily-rotated file
//! in the data directory), the IPC socket (refused if a live daemon holds it), the node with
//! its persistent identity, listening, bootstrap. Shutdown: stop accepting IPC, remove the
//! node and persist what is only in memory, then remove the socket.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use tracing::info;

use agora_daemon::app::config::{Config, Flags};
use agora_daemon::app::daemon::{Daemon, DaemonError, StopSignals};
use agora_daemon::network::NetworkConfig;
use agora_daemon::obs::telemetry::Telemetry;
use agora_protocol::paths::PathEnv;

/// mimalloc keeps freed pages for reuse: each search-index commit allocates a multi-megabyte
/// term table, and with the system allocator half of a commit's time went to page faults.
/// Built without transparent huge pages (the `no_thp` feature): with them its first arena was
/// committed as 2 MiB pages and an idle daemon held 18 MB more than it used.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Default address of the HTTP gateway when `--http` is given without one.
const DEFAULT_HTTP: &str = "127.0.0.1:4180";

#[derive(Parser, Debug)]
#[command(
    name = "agorad",
    version,
    about = "The Agora peer-to-peer package marketplace node",
    after_help = "Files: AGORA_HOME=DIR keeps config.toml, data/, keys/ and agorad.sock of one \
                  node under DIR; AGORA_SOCKET overrides the socket path."
)]
struct Args {
    /// Config file (default: config.toml in the config directory).
    #[arg(long = "config", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Address to listen on (repeatable). Default: TCP and QUIC on port 4101, all interfaces.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Peer to join through, with /p2p/PEERID (repeatable).
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// An address peers reach this node at, when it is publicly reachable (a server):
    /// taken as confirmed, so it serves as a relay at once (repeatable).
    #[arg(long = "external-address", value_name = "MULTIADDR")]
    external: Vec<Multiaddr>,
    /// Do not discover peers on the local network with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Bytes of fetched archives to keep before evicting the least recently used.
    #[arg(long, value_name = "BYTES")]
    cache_quota: Option<u64>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Serve the HTTP gateway (health, metrics, read-only JSON API) on IP:PORT.
    #[arg(long, value_name = "IP:PORT", num_args = 0..=1, default_missing_value = DEFAULT_HTTP)]
    http: Option<SocketAddr>,
    /// Export traces and metrics over OTLP/HTTP to this collector (http://HOST:PORT).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Join the private network of this key file (made by 'agora keygen --network'): only
    /// nodes with the same key can connect, over TCP only.
    #[arg(long, value_name = "FILE")]
    network_key: Option<std::path::PathBuf>,
    /// Check the store and repair it if it is damaged, print what was done (JSON) and exit:
    /// the damaged database is set aside, never deleted (what `agora node repair` runs).
    #[arg(long)]
    repair: bool,
}

fn main() {
    let args = Args::parse();
    let flags = Flags {
        config_file: args.config,
        listen: args.listen,
        bootstrap: args.bootstrap,
        external: args.external,
        no_mdns: args.no_mdns,
        cache_quota: args.cache_quota,
        log_level: args.log_level,
        http: args.http,
        otlp_endpoint: args.otlp_endpoint,
        network_key: args.network_key,
    };
    let repair_only = args.repair;
    let config = match Config::load(&PathEnv::from_process(), |k| std::env::var(k).ok(), flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("hint: fix the configuration, or run 'agorad --help' for the flags");
            std::process::exit(2);
        }
    };
    if repair_only {
        repair(&config);
    }
    // The identity first: once the socket exists, everything it names exists too.
    // Private: the catalog, the logs and the archives are this user's alone.
    let prepared = agora_daemon::store::key_files::ensure_private_dir(&config.paths.data_dir)
        .with_context(|| format!("while creating {}", config.paths.data_dir.display()))
        .and_then(|()| {
            agora_daemon::store::key_files::node_identity(&config.paths.keys_dir)
                .context("while loading the node identity")
        });
    let keypair = prepared.unwrap_or_else(|e| fail(&e));
    // Before the runtime: the OTLP exporters' blocking HTTP clients live on their own threads.
    let telemetry = Telemetry::init(
        &config.log_level,
        &config.paths.data_dir,
        config.otlp_endpoint.as_deref(),
        &keypair.public().to_peer_id().to_string(),
    )
    .unwrap_or_else(|e| fail(&anyhow::Error::new(e)));
    let runtime = agora_daemon::app::runtime::build()
        .context("while starting the async runtime")
        .unwrap_or_else(|e| fail(&e));
    let result = runtime.block_on(run(config, keypair, &telemetry));
    drop(runtime);
    telemetry.shutdown();
    if let Err(e) = result {
        fail(&e);
    }
}

fn fail(e: &anyhow::Error) -> ! {
    eprintln!("error: {e:#}");
    if let Some(hint) = e.downcast_ref::<DaemonError>().and_then(DaemonError::hint) {
        eprintln!("hint: {hint}");
    }
    if let Some(file) = e
        .downcast_ref::<DaemonError>()
        .and_then(DaemonError::damaged_file)
    {
        eprintln!(
            "hint: run 'agora node repair' to set {} aside and rebuild the store from this \
             node's journal, its archives and its peers (or set repair = \"auto\" in \
             config.toml to repair at start)",
            file.display()
        );
    }
    std::process::exit(1);
}

/// `agorad --repair`: repairs the store if it is damaged, prints what was done and exits.
fn repair(config: &Config) -> ! {
    let registry = agora_daemon::app::daemon::registry_config(config);
    match agora_daemon::ops::repair::repair_offline(&registry) {
        Ok(repaired) => {
            let out = serde_json::json!({
                "data_dir": config.paths.data_dir,
                "repaired": repaired,
            });
            println!("{out}");
            std::process::exit(0);
        }
        Err(e) => fail(&anyhow::Error::new(e)),
    }
}

async fn run(config: Config, keypair: Keypair, telemetry: &Telemetry) -> anyhow::Result<()> {
    let mut signals = StopSignals::install().context("while installing the signal handlers")?;
    let service = Daemon::start(
        &config,
        NetworkConfig::new(keypair),
        Some(telemetry.log.clone()),
    )
    .await?;
    if let Some(meter) = telemetry.meter() {
        service.node.metrics.export_to(
            &meter,
            std::sync::Arc::downgrade(&service.node.registry) as _,
        );
    }
    let paths = &config.paths;
    info!(
        peer_id = %service.node.network.peer_id(),
        socket = %paths.socket.display(),
        data_dir = %paths.data_dir.display(),
        records = service.node.registry.view().record_count(),
        version = env!("CARGO_PKG_VERSION"),
        "agorad ready"
    );
    let stop = service.stop_requested();
    tokio::select! {
        () = signals.wait() => {}
        _ = stop.notified() => info!("stop requested over IPC"),
    }
    info!("shutting down");
    service.stop().await;
    info!("stopped");
    Ok(())
}
