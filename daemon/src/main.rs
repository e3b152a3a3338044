//! `agorad`: runs an Agora node in the foreground until SIGINT, SIGTERM or `agora node stop`.
//!
//! Start-up: configuration (file, environment, flags), logs (stderr and a daily-rotated file
//! in the data directory), the IPC socket (refused if a live daemon holds it), the node with
//! its persistent identity, listening, bootstrap. Shutdown: stop accepting IPC, remove the
//! node and persist what is only in memory, then remove the socket.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use libp2p::{Multiaddr, multiaddr::Protocol};
use tokio::sync::Notify;
use tracing::{info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use agora_daemon::config::{Config, Flags};
use agora_daemon::ipc::{Context, IpcListener};
use agora_daemon::network::NetworkConfig;
use agora_daemon::node::{Node, NodeConfig};
use agora_daemon::registry::RegistryConfig;
use agora_protocol::paths::PathEnv;

/// Daily log files kept in the data directory.
const LOG_FILES_KEPT: usize = 7;

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
    /// Do not discover peers on the local network with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Bytes of fetched archives to keep before evicting the least recently used.
    #[arg(long, value_name = "BYTES")]
    cache_quota: Option<u64>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() {
    let args = Args::parse();
    let flags = Flags {
        config_file: args.config,
        listen: args.listen,
        bootstrap: args.bootstrap,
        no_mdns: args.no_mdns,
        cache_quota: args.cache_quota,
        log_level: args.log_level,
    };
    let config = match Config::load(&PathEnv::from_process(), |k| std::env::var(k).ok(), flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("hint: fix the configuration, or run 'agorad --help' for the flags");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(config)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let paths = config.paths.clone();
    std::fs::create_dir_all(&paths.data_dir)
        .with_context(|| format!("while creating {}", paths.data_dir.display()))?;
    let file_log = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("agorad")
        .filename_suffix("log")
        .max_log_files(LOG_FILES_KEPT)
        .build(&paths.data_dir)
        .context("while opening the log file")?;
    let filter = || {
        EnvFilter::try_new(&config.log_level)
            .with_context(|| format!("while parsing the log level {:?}", config.log_level))
    };
    tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter()?),
        )
        .with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(file_log)
                .with_filter(filter()?),
        )
        .init();

    // The identity first: once the socket exists, everything it names exists too.
    let keypair = agora_daemon::keys::node_identity(&paths.keys_dir)
        .context("while loading the node identity")?;
    let (listener, socket_file) = IpcListener::bind(&paths.socket).with_context(|| {
        format!(
            "while claiming the socket {} (is another agorad using this AGORA_HOME?)",
            paths.socket.display()
        )
    })?;
    let mut network = NetworkConfig::new(keypair);
    network.enable_mdns = config.mdns;
    let mut registry = RegistryConfig::new(&paths.data_dir);
    registry.cache_quota = config.cache_quota;
    registry.trust = config.trust.clone();
    let node = Node::start(NodeConfig { network, registry })
        .await
        .with_context(|| format!("while starting the node in {}", paths.data_dir.display()))?;

    for addr in &config.listen {
        let bound = node
            .network
            .listen(addr.clone())
            .await
            .with_context(|| format!("while listening on {addr}"))?;
        info!(address = %bound.with(Protocol::P2p(node.network.peer_id())), "listening");
    }
    for addr in &config.bootstrap {
        match node.network.dial(addr.clone()).await {
            Ok(peer) => info!(%peer, %addr, "connected to bootstrap peer"),
            Err(e) => warn!(%addr, error = %e, "bootstrap peer unreachable"),
        }
    }
    if !config.bootstrap.is_empty()
        && let Err(e) = node.network.bootstrap().await
    {
        warn!(error = %e, "DHT bootstrap did not complete");
    }

    let shutdown = Arc::new(Notify::new());
    let ctx = Arc::new(Context {
        registry: node.registry.clone(),
        paths: paths.clone(),
        shutdown: shutdown.clone(),
    });
    info!(
        peer_id = %node.network.peer_id(),
        socket = %paths.socket.display(),
        data_dir = %paths.data_dir.display(),
        records = node.registry.catalog_len(),
        version = env!("CARGO_PKG_VERSION"),
        "agorad ready"
    );
    let server = tokio::spawn(listener.serve(ctx));

    tokio::select! {
        r = wait_for_signal() => r?,
        _ = shutdown.notified() => info!("stop requested over IPC"),
    }
    info!("shutting down");
    // Stop accepting, stop the node (durable writes finish, in-memory state is persisted),
    // and only then remove the socket: its disappearance tells `agora node stop` we are done.
    server.abort();
    let _ = server.await;
    node.shutdown().await;
    drop(socket_file);
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).context("while installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("while waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
