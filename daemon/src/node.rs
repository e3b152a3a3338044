//! `Node`: a running network plus the registry that answers it. The daemon binary and the
//! multi-node tests both start nodes through here.

use std::sync::Arc;

use libp2p::Multiaddr;
use tokio::task::JoinHandle;

use crate::network::{self, BuildError, NetworkConfig, NetworkError, NetworkHandle};
use crate::registry::{Registry, inbound};

pub struct Node {
    pub network: NetworkHandle,
    pub registry: Arc<Registry>,
    network_task: JoinHandle<()>,
    inbound_task: JoinHandle<()>,
}

impl Node {
    /// Builds the swarm and starts the event loop and the inbound handler.
    pub fn start(config: NetworkConfig) -> Result<Self, BuildError> {
        let net = network::spawn(config)?;
        let registry = Registry::new(net.handle.clone());
        let inbound_task = tokio::spawn(inbound::run(registry.clone(), net.events));
        Ok(Self {
            network: net.handle,
            registry,
            network_task: net.task,
            inbound_task,
        })
    }

    /// Starts a node and listens on `addr`; returns the node and its concrete address
    /// (with `/p2p/<peer id>` appended, ready to be dialled).
    pub async fn start_listening(
        config: NetworkConfig,
        addr: Multiaddr,
    ) -> Result<(Self, Multiaddr), StartError> {
        let node = Self::start(config)?;
        let listen = node.network.listen(addr).await?;
        let full = listen.with(libp2p::multiaddr::Protocol::P2p(node.network.peer_id()));
        Ok((node, full))
    }

    /// Stops the event loop and waits for both tasks to end.
    pub async fn shutdown(self) {
        let _ = self.network.shutdown().await;
        let _ = self.network_task.await;
        let _ = self.inbound_task.await;
    }
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Network(#[from] NetworkError),
}
