//! `agorad`: runs an Agora node in the foreground until SIGINT, SIGTERM or `agora node stop`.
//!
//! Start-up: configuration (file, environment, flags), logs (stderr and a daily-rotated file
//! in the data directory), the IPC socket (refused if a live daemon holds it), the node with
//! its persistent identity, listening, bootstrap. Shutdown: stop accepting IPC, remove the
//! node and persist what is only in memory, then remove the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, multiaddr::Protocol};
use tracing::{debug, info, warn};

use agora_daemon::config::{Config, Flags};
use agora_daemon::gateway::{self, Gateway};
use agora_daemon::ipc::{Context, IpcListener};
use agora_daemon::network::{NetworkConfig, NetworkHandle};
use agora_daemon::node::{Node, NodeConfig};
use agora_daemon::registry::RegistryConfig;
use agora_daemon::telemetry::Telemetry;
use agora_protocol::paths::PathEnv;

/// Default address of the HTTP gateway when `--http` is given without one.
const DEFAULT_HTTP: &str = "127.0.0.1:4180";
/// Longest wait between attempts to reach unreachable bootstrap peers.
const MAX_REDIAL_INTERVAL: Duration = Duration::from_secs(30);

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
    /// Serve the HTTP gateway (health, metrics, read-only JSON API) on IP:PORT.
    #[arg(long, value_name = "IP:PORT", num_args = 0..=1, default_missing_value = DEFAULT_HTTP)]
    http: Option<SocketAddr>,
    /// Export traces and metrics over OTLP/HTTP to this collector (http://HOST:PORT).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
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
        http: args.http,
        otlp_endpoint: args.otlp_endpoint,
    };
    let config = match Config::load(&PathEnv::from_process(), |k| std::env::var(k).ok(), flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("hint: fix the configuration, or run 'agorad --help' for the flags");
            std::process::exit(2);
        }
    };
    // The identity first: once the socket exists, everything it names exists too.
    let prepared = std::fs::create_dir_all(&config.paths.data_dir)
        .with_context(|| format!("while creating {}", config.paths.data_dir.display()))
        .and_then(|()| {
            agora_daemon::keys::node_identity(&config.paths.keys_dir)
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
    let runtime = tokio::runtime::Runtime::new()
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
    std::process::exit(1);
}

async fn run(config: Config, keypair: Keypair, telemetry: &Telemetry) -> anyhow::Result<()> {
    let paths = config.paths.clone();
    let (listener, socket_file) = IpcListener::bind(&paths.socket).with_context(|| {
        format!(
            "while claiming the socket {} (is another agorad using this AGORA_HOME?)",
            paths.socket.display()
        )
    })?;
    let http_listener = match config.http {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                warn!(%addr, "the HTTP gateway listens beyond loopback: anyone who reaches it can read the catalog and download archives");
            }
            Some(
                gateway::bind(addr)
                    .await
                    .with_context(|| format!("while binding the HTTP gateway to {addr}"))?,
            )
        }
        None => None,
    };
    let mut network = NetworkConfig::new(keypair);
    network.enable_mdns = config.mdns;
    let mut registry = RegistryConfig::new(&paths.data_dir);
    registry.cache_quota = config.cache_quota;
    registry.trust = config.trust.clone();
    let node = Node::start(NodeConfig { network, registry })
        .await
        .with_context(|| format!("while starting the node in {}", paths.data_dir.display()))?;
    if let Some(meter) = telemetry.meter() {
        node.network.metrics().export_to(&meter, &node.registry);
    }

    for addr in &config.listen {
        let bound = node
            .network
            .listen(addr.clone())
            .await
            .with_context(|| format!("while listening on {addr}"))?;
        info!(address = %bound.with(Protocol::P2p(node.network.peer_id())), "listening");
    }
    let joined = config.bootstrap.is_empty() || join(&node.network, &config.bootstrap).await;
    let bootstrapper = (!joined).then(|| {
        warn!("no bootstrap peer reachable; trying again in the background");
        tokio::spawn(rejoin(node.network.clone(), config.bootstrap.clone()))
    });

    let mut ctx = Context::new(node.registry.clone(), paths.clone());
    ctx.log = Some(telemetry.log.clone());
    ctx.http = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    let shutdown = ctx.shutdown.clone();
    let ctx = Arc::new(ctx);
    let gateway_state = Arc::new(Gateway {
        ctx: ctx.clone(),
        socket_up: false.into(),
        needs_bootstrap: !config.bootstrap.is_empty(),
    });
    let http_server = http_listener.map(|l| {
        info!(address = %ctx.http.map(|a| a.to_string()).unwrap_or_default(), "HTTP gateway listening");
        tokio::spawn(gateway::serve(l, gateway_state.clone()))
    });
    let server = tokio::spawn(listener.serve(ctx.clone()));
    gateway_state.socket_up.store(true, Ordering::SeqCst);
    info!(
        peer_id = %node.network.peer_id(),
        socket = %paths.socket.display(),
        data_dir = %paths.data_dir.display(),
        records = node.registry.catalog_len(),
        version = env!("CARGO_PKG_VERSION"),
        "agorad ready"
    );

    tokio::select! {
        r = wait_for_signal() => r?,
        _ = shutdown.notified() => info!("stop requested over IPC"),
    }
    info!("shutting down");
    // Stop accepting, stop the node (durable writes finish, in-memory state is persisted),
    // and only then remove the socket: its disappearance tells `agora node stop` we are done.
    gateway_state.socket_up.store(false, Ordering::SeqCst);
    if let Some(b) = bootstrapper {
        b.abort();
    }
    if let Some(h) = http_server {
        h.abort();
        let _ = h.await;
    }
    server.abort();
    let _ = server.await;
    node.shutdown().await;
    drop(socket_file);
    info!("stopped");
    Ok(())
}

/// Dials the bootstrap peers; if one answers, joins the DHT through it. True if one did.
async fn join(net: &NetworkHandle, peers: &[Multiaddr]) -> bool {
    let mut reached = 0;
    for addr in peers {
        match net.dial(addr.clone()).await {
            Ok(peer) => {
                info!(%peer, %addr, "connected to bootstrap peer");
                reached += 1;
            }
            Err(e) => warn!(%addr, error = %e, "bootstrap peer unreachable"),
        }
    }
    if reached > 0 {
        match net.bootstrap().await {
            Ok(()) => info!("joined the DHT"),
            Err(e) => warn!(error = %e, "DHT bootstrap did not complete"),
        }
    }
    reached > 0
}

/// While no peer is connected, tries the bootstrap peers again with a growing interval, so a
/// node started before its bootstrap peers joins them once they are up.
async fn rejoin(net: NetworkHandle, peers: Vec<Multiaddr>) {
    let mut interval = Duration::from_secs(1);
    loop {
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(MAX_REDIAL_INTERVAL);
        match net.peers().await {
            Ok(p) if !p.is_empty() => {
                debug!(
                    peers = p.len(),
                    "peers found another way; bootstrapping through them"
                );
                if let Err(e) = net.bootstrap().await {
                    warn!(error = %e, "DHT bootstrap did not complete");
                }
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
        if join(&net, &peers).await {
            return;
        }
    }
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
