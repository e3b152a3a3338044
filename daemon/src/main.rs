//! `agorad`: runs an Agora node in the foreground until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use libp2p::{Multiaddr, identity, multiaddr::Protocol};
use tracing::{info, warn};

use std::path::PathBuf;

use agora_daemon::network::NetworkConfig;
use agora_daemon::node::{Node, NodeConfig};
use agora_daemon::registry::RegistryConfig;

/// Default TCP and QUIC port for Agora nodes.
const DEFAULT_PORT: u16 = 4101;

#[derive(Parser, Debug)]
#[command(
    name = "agorad",
    version,
    about = "The Agora peer-to-peer package marketplace node"
)]
struct Args {
    /// Address to listen on (repeatable). Default: TCP and QUIC on port 4101, all interfaces.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Peer to join through, with /p2p/PEERID (repeatable).
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Do not discover peers on the local network with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Where the catalog, the search index and the archives live. Default: `$AGORA_HOME/data`
    /// if AGORA_HOME is set, else the platform data directory (~/.local/share/agora).
    #[arg(long, env = "AGORA_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Bytes of fetched archives to keep before evicting the least recently used.
    #[arg(long, value_name = "BYTES", default_value_t = agora_daemon::registry::DEFAULT_CACHE_QUOTA)]
    cache_quota: u64,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "AGORA_LOG", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .with_context(|| format!("while parsing --log-level {:?}", args.log_level))?,
        )
        .with_writer(std::io::stderr)
        .init();

    let mut network = NetworkConfig::new(identity::Keypair::generate_ed25519());
    network.enable_mdns = !args.no_mdns;
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    let mut registry = RegistryConfig::new(&data_dir);
    registry.cache_quota = args.cache_quota;
    let node = Node::start(NodeConfig { network, registry })
        .await
        .with_context(|| {
            format!(
                "while starting the node with data in {}",
                data_dir.display()
            )
        })?;
    info!(
        peer_id = %node.network.peer_id(),
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %data_dir.display(),
        records = node.registry.catalog_len(),
        "agorad starting"
    );

    let listen = if args.listen.is_empty() {
        vec![
            format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}").parse()?,
            format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1").parse()?,
        ]
    } else {
        args.listen
    };
    for addr in listen {
        let bound = node
            .network
            .listen(addr.clone())
            .await
            .with_context(|| format!("while listening on {addr}"))?;
        info!(address = %bound.with(Protocol::P2p(node.network.peer_id())), "listening");
    }
    for addr in &args.bootstrap {
        match node.network.dial(addr.clone()).await {
            Ok(peer) => info!(%peer, %addr, "connected to bootstrap peer"),
            Err(e) => warn!(%addr, error = %e, "bootstrap peer unreachable"),
        }
    }
    if !args.bootstrap.is_empty()
        && let Err(e) = node.network.bootstrap().await
    {
        warn!(error = %e, "DHT bootstrap did not complete");
    }

    wait_for_signal().await?;
    info!("shutting down");
    node.shutdown().await;
    info!("stopped");
    Ok(())
}

/// `$AGORA_HOME/data`, or the platform's data directory for Agora.
fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("AGORA_HOME") {
        return Ok(PathBuf::from(home).join("data"));
    }
    directories::ProjectDirs::from("", "", "agora")
        .map(|d| d.data_dir().to_owned())
        .context("no home directory to keep data in; set AGORA_HOME or --data-dir")
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
