//! A whole daemon inside a process: the node, its IPC socket, the optional HTTP gateway and
//! the bootstrap duty. `agorad` runs one; `agora-testnet` runs many side by side.
//!
//! Start-up order: claim the socket (refused if a live daemon holds it), bind the gateway,
//! start the node, listen, dial the bootstrap peers (retrying in the background while none
//! answers), then serve IPC. [`Daemon::stop`] undoes it in reverse and removes the socket
//! last, so a socket that is gone means a daemon that is done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::app::config::Config;
use crate::app::node::{Node, NodeConfig, StartError};
use crate::gateway::{self, Gateway};
use crate::ipc::{BindError, Context, IpcListener, SocketFile};
use crate::network::{NetworkConfig, NetworkError, NetworkHandle};
use crate::obs::telemetry::LogControl;
use crate::ops::RegistryConfig;

/// Longest wait between attempts to reach unreachable bootstrap peers.
const MAX_REDIAL_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("while claiming the socket (is another agorad using this AGORA_HOME?): {0}")]
    Socket(#[from] BindError),
    #[error("while binding the HTTP gateway to {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("while starting the node in {dir}: {source}")]
    Start { dir: String, source: StartError },
    #[error("while listening on {addr}: {source}")]
    Listen {
        addr: Multiaddr,
        source: NetworkError,
    },
    #[error(
        "cannot listen on {addr}: the address is in use (by another agorad, or another program)"
    )]
    InUse { addr: Multiaddr },
}

impl DaemonError {
    /// What to do about it, where that is known.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::InUse { .. } => Some(
                "stop what listens there, or choose another port (--listen, or listen = [...] \
                 in config.toml)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// The first of `addrs` whose fixed port another socket holds. libp2p binds its listeners
/// with SO_REUSEPORT (so that dials can come from the listening port), which would let a
/// second daemon share a port with the first and take half its connections; a plain bind,
/// which any holder of the port refuses, tells before anything starts.
fn taken(addrs: &[Multiaddr]) -> Option<Multiaddr> {
    addrs.iter().find_map(|addr| {
        let mut parts = addr.iter();
        let ip: std::net::IpAddr = match parts.next()? {
            Protocol::Ip4(ip) => ip.into(),
            Protocol::Ip6(ip) => ip.into(),
            _ => return None,
        };
        let in_use = |r: std::io::Result<()>| {
            matches!(r, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
        };
        let busy = match parts.next()? {
            Protocol::Tcp(port) if port != 0 => {
                in_use(std::net::TcpListener::bind((ip, port)).map(drop))
            }
            Protocol::Udp(port) if port != 0 => {
                in_use(std::net::UdpSocket::bind((ip, port)).map(drop))
            }
            _ => false,
        };
        busy.then(|| addr.clone())
    })
}

/// A running daemon.
pub struct Daemon {
    pub node: Node,
    pub ctx: Arc<Context>,
    /// The concrete addresses it listens on, with `/p2p/<peer id>`.
    pub addresses: Vec<Multiaddr>,
    gateway: Arc<Gateway>,
    server: JoinHandle<()>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    bootstrapper: Option<JoinHandle<()>>,
    socket_file: SocketFile,
}

impl Daemon {
    /// Starts a daemon for `config` with these network settings (which carry the identity).
    pub async fn start(
        config: &Config,
        mut network: NetworkConfig,
        log: Option<LogControl>,
    ) -> Result<Self, DaemonError> {
        let paths = &config.paths;
        let (listener, socket_file) = IpcListener::bind(&paths.socket)?;
        let http_listener = match config.http {
            Some(addr) => {
                if !addr.ip().is_loopback() {
                    warn!(%addr, "the HTTP gateway listens beyond loopback: anyone who reaches it can read the catalog and download archives");
                }
                Some(
                    gateway::bind(addr)
                        .await
                        .map_err(|source| DaemonError::Http { addr, source })?,
                )
            }
            None => None,
        };
        network.enable_mdns = config.mdns;
        network.external_addrs = config.external.clone();
        network.relay_circuit_bytes = config.relay_circuit_bytes;
        if let Some(key) = &config.network_key {
            network.psk = Some(key.psk);
            info!(
                fingerprint = %key.psk.fingerprint(),
                file = %key.path.display(),
                "private network: only nodes with this key can connect, over TCP only"
            );
        }
        if let Some(addr) = taken(&config.listen) {
            return Err(DaemonError::InUse { addr });
        }
        let registry = registry_config(config);
        let node = Node::start(NodeConfig { network, registry })
            .await
            .map_err(|source| DaemonError::Start {
                dir: paths.data_dir.display().to_string(),
                source,
            })?;
        let mut addresses = Vec::new();
        for addr in &config.listen {
            let bound =
                node.network
                    .listen(addr.clone())
                    .await
                    .map_err(|source| DaemonError::Listen {
                        addr: addr.clone(),
                        source,
                    })?;
            let full = bound.with(Protocol::P2p(node.network.peer_id()));
            info!(address = %full, "listening");
            addresses.push(full);
        }
        let joined = config.bootstrap.is_empty() || join(&node.network, &config.bootstrap).await;
        let bootstrapper = (!joined).then(|| {
            warn!("no bootstrap peer reachable; trying again in the background");
            tokio::spawn(rejoin(node.network.clone(), config.bootstrap.clone()))
        });

        let mut ctx = Context::new(
            node.registry.clone(),
            node.network.clone(),
            node.metrics.clone(),
            paths.clone(),
        );
        ctx.log = log;
        ctx.http = http_listener.as_ref().and_then(|l| l.local_addr().ok());
        ctx.private_network =
            (config.network_key.as_ref()).map(|k| k.psk.fingerprint().to_string());
        let ctx = Arc::new(ctx);
        let gateway = Arc::new(Gateway {
            ctx: ctx.clone(),
            socket_up: false.into(),
            needs_bootstrap: !config.bootstrap.is_empty(),
            hosts: gateway::HostPolicy::new(config.http_hosts.clone()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(gateway::MAX_REQUESTS_IN_FLIGHT)),
            ggen: Default::default(),
        });
        let http = http_listener.map(|l| {
            if let Some(a) = ctx.http {
                info!(address = %a, "HTTP gateway listening");
            }
            tokio::spawn(gateway::serve(l, gateway.clone()))
        });
        let server = tokio::spawn(listener.serve(ctx.clone()));
        gateway.socket_up.store(true, Ordering::SeqCst);
        Ok(Self {
            node,
            ctx,
            addresses,
            gateway,
            server,
            http,
            bootstrapper,
            socket_file,
        })
    }

    /// Notified when a client asks the daemon to stop (`agora node stop`).
    pub fn stop_requested(&self) -> Arc<Notify> {
        self.ctx.shutdown.clone()
    }

    /// Stops accepting, stops the node (durable writes finish, in-memory state is persisted)
    /// and only then removes the socket.
    pub async fn stop(self) {
        self.gateway.socket_up.store(false, Ordering::SeqCst);
        if let Some(b) = self.bootstrapper {
            b.abort();
        }
        if let Some(h) = self.http {
            h.abort();
            let _ = h.await;
        }
        self.server.abort();
        let _ = self.server.await;
        self.node.shutdown().await;
        drop(self.socket_file);
    }
}

/// The registry settings of `config`.
pub fn registry_config(config: &Config) -> RegistryConfig {
    let mut registry = RegistryConfig::new(&config.paths.data_dir);
    registry.cache_quota = config.cache_quota;
    registry.trust = config.trust.clone();
    registry.repair = config.repair;
    registry.sparql_time_limit = config.sparql_time_limit;
    registry
}

impl DaemonError {
    /// The damaged file, if the store was found damaged (and not repaired).
    pub fn damaged_file(&self) -> Option<&std::path::Path> {
        match self {
            Self::Start {
                source:
                    StartError::Registry(crate::ops::RegistryError::Store(
                        crate::store::StoreError::Damaged { file, .. },
                    )),
                ..
            } => Some(file),
            _ => None,
        }
    }
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

/// SIGINT (Ctrl-C) and SIGTERM, caught from the moment this is made: how a daemon, or a
/// testnet of them, is told to stop. Made before the socket answers, so a stop sent as soon
/// as the daemon is ready is a clean shutdown, not the default action of the signal.
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers; needs a running tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for either signal (one already received since `install` counts).
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
