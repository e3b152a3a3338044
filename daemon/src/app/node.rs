//! `Node`: a running network plus the registry that answers it, and the node's background
//! duties (periodic catalog sync with a random peer, persisting reputation and cache use).
//! The daemon binary and the multi-node tests both start nodes through here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libp2p::Multiaddr;
use rand::seq::IndexedRandom;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::network::{self, BuildError, NetworkConfig, NetworkError, NetworkHandle};
use crate::obs::metrics::{Metrics, Source};
use crate::ops::{Registry, RegistryConfig, RegistryError, inbound, sync};

/// How often in-memory state (reputation, blob use times) is written to disk, and the search
/// index too if its copy on disk is far behind the catalog.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(30);

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub network: NetworkConfig,
    pub registry: RegistryConfig,
}

pub struct Node {
    pub network: NetworkHandle,
    pub registry: Arc<Registry>,
    /// The node's metrics: the swarm's, the event loop's and the registry's.
    pub metrics: Arc<Metrics>,
    network_task: JoinHandle<()>,
    inbound_task: JoinHandle<()>,
    duties_task: JoinHandle<()>,
    /// Putting the stored DHT records back into the DHT store after a start.
    restore_task: JoinHandle<()>,
    /// The search index's rebuild, when the start found one needed.
    rebuild_task: Option<JoinHandle<()>>,
    /// The check of every stored record after the start, and what stops it early.
    scrub_task: JoinHandle<()>,
    scrub_stop: Arc<AtomicBool>,
}

impl Node {
    /// Opens the store, builds the swarm and starts the event loop, the inbound handler and
    /// the periodic duties.
    pub async fn start(config: NodeConfig) -> Result<Self, StartError> {
        let metrics = Metrics::new();
        let net = network::spawn(config.network, metrics.clone())?;
        let handle = net.handle.clone();
        let registry_config = config.registry.clone();
        let m = metrics.clone();
        let registry =
            tokio::task::spawn_blocking(move || Registry::open(&registry_config, handle, m))
                .await
                .map_err(|e| StartError::Registry(RegistryError::Internal(e.to_string())))??;
        // The node serves while the index is rebuilt; searches wait for it.
        let rebuild_task = registry
            .startup
            .index_rebuilt
            .then(|| registry.spawn_index_rebuild());
        // The DHT store is refilled while the node serves (a head per name is too many to
        // wait for): a record a peer puts meanwhile replaces a restored one only if it is
        // better, and the catalog answers for every name it holds either way.
        let restore_task = tokio::spawn({
            let registry = registry.clone();
            async move {
                if let Err(e) = registry.restore_dht().await {
                    warn!(error = %e, "could not put the stored DHT records back");
                }
            }
        });
        let source: std::sync::Weak<dyn Source> = Arc::downgrade(&registry) as _;
        metrics.collect(source);
        let scrub_stop = Arc::new(AtomicBool::new(false));
        let scrub_task = tokio::task::spawn_blocking({
            let (registry, stop) = (registry.clone(), scrub_stop.clone());
            move || {
                registry.scrub(|| !stop.load(Ordering::Relaxed));
            }
        });
        let inbound_task = tokio::spawn(inbound::run(registry.clone(), net.events));
        let duties_task = tokio::spawn(duties(registry.clone()));
        Ok(Self {
            network: net.handle,
            metrics,
            registry,
            network_task: net.task,
            inbound_task,
            duties_task,
            restore_task,
            rebuild_task,
            scrub_task,
            scrub_stop,
        })
    }

    /// Starts a node and listens on `addr`; returns the node and its concrete address
    /// (with `/p2p/<peer id>` appended, ready to be dialled).
    pub async fn start_listening(
        config: NodeConfig,
        addr: Multiaddr,
    ) -> Result<(Self, Multiaddr), StartError> {
        let node = Self::start(config).await?;
        let listen = node.network.listen(addr).await?;
        let full = listen.with(libp2p::multiaddr::Protocol::P2p(node.network.peer_id()));
        Ok((node, full))
    }

    /// A handle that stops the event loop at once, as a crash would: every connection drops
    /// and nothing is persisted. For tests that lose a node at an exact moment.
    pub fn crash_handle(&self) -> tokio::task::AbortHandle {
        self.network_task.abort_handle()
    }

    /// Stops the duties and the event loop, waits for the tasks (an index rebuild under way
    /// included), persists what is only in memory and seals the search index.
    pub async fn shutdown(self) {
        self.duties_task.abort();
        let _ = self.duties_task.await;
        self.restore_task.abort();
        let _ = self.restore_task.await;
        self.scrub_stop.store(true, Ordering::Relaxed);
        let _ = self.scrub_task.await;
        let _ = self.network.shutdown().await;
        let _ = self.network_task.await;
        let _ = self.inbound_task.await;
        if let Some(rebuild) = self.rebuild_task {
            let _ = rebuild.await;
        }
        if let Err(e) = self.registry.close().await {
            warn!(error = %e, "could not persist state at shutdown");
        }
    }
}

/// Periodic sync with a random peer, and persisting in-memory state (the search index too,
/// once its copy on disk is far behind).
async fn duties(registry: Arc<Registry>) {
    let mut sync_tick = tokio::time::interval(registry.sync_interval());
    let mut persist_tick = tokio::time::interval(PERSIST_INTERVAL);
    sync_tick.tick().await;
    persist_tick.tick().await;
    loop {
        tokio::select! {
            _ = sync_tick.tick() => {
                let Ok(peers) = registry.network().peers().await else { return };
                let Some(peer) = peers.choose(&mut rand::rng()).copied() else { continue };
                // On its own task: a slow peer's sync must not hold up persisting.
                let registry = registry.clone();
                tokio::spawn(async move {
                    if let Err(e) = sync::sync_with(&registry, peer).await {
                        debug!(%peer, error = %e, "periodic sync failed");
                    }
                });
            }
            _ = persist_tick.tick() => {
                if let Err(e) = registry.persist().await {
                    warn!(error = %e, "could not persist reputation and cache state");
                }
                if let Err(e) = registry.save_index_if_behind().await {
                    warn!(error = %e, "could not save the search index");
                }
            }
        }
    }
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}
