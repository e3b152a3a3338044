//! The swarm actor. [`spawn`] builds the swarm, starts the [`event_loop::EventLoop`] task that
//! owns it, and returns a [`NetworkHandle`] for commands plus a bounded receiver of
//! [`NetworkEvent`]s that need the registry's decision.

mod behaviour;
pub mod budget;
pub mod codec;
mod command;
mod event_loop;
mod handle;
mod query;
mod record_store;
pub mod settings;

pub use command::{NetworkError, NetworkEvent, NetworkInfo, RecordQuorum};
pub use event_loop::Reachability;
pub use handle::NetworkHandle;
pub use settings::NetworkConfig;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::{SwarmBuilder, noise, tcp, yamux};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::obs::metrics::Metrics;

/// Why the swarm could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the libp2p swarm: {0}")]
pub struct BuildError(String);

/// A running network: the handle, the inbound events and the event loop task.
pub struct Network {
    pub handle: NetworkHandle,
    pub events: mpsc::Receiver<NetworkEvent>,
    pub task: JoinHandle<()>,
}

/// Whether an address goes through a relay.
pub fn is_relayed(addr: &libp2p::Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
}

/// How long a TCP connection may take to open and upgrade (Noise, Yamux) before the dial
/// fails. The system's own limit is two minutes of SYN retries into a router that drops them;
/// AutoNAT servers answer within 10 s, so a dial back to an unreachable address must fail
/// before that for the node asking to learn that it is behind a NAT.
const TCP_DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Builds the swarm (TCP + Noise + Yamux, QUIC, DNS, circuit relay; in a private network TCP +
/// pnet + Noise + Yamux, DNS and relay) and spawns its event loop on the current tokio
/// runtime. The swarm's and the event loop's metrics go to `metrics`.
pub fn spawn(config: NetworkConfig, metrics: Arc<Metrics>) -> Result<Network, BuildError> {
    let err = |e: &dyn std::fmt::Display| BuildError(e.to_string());
    let idle = config.idle_connection_timeout;
    let psk = config.psk;
    let swarm = metrics.with_registry(|prom| -> Result<_, BuildError> {
        let builder = SwarmBuilder::with_existing_identity(config.keypair.clone()).with_tokio();
        let behaviour = |key: &libp2p::identity::Keypair, relay, prom: &mut _| {
            behaviour::Behaviour::new(key, relay, &config, prom)
        };
        Ok(builder
            .with_other_transport(|key| transports(key, psk))
            .map_err(|e| err(&e))?
            .with_dns()
            .map_err(|e| err(&e))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| err(&e))?
            .with_bandwidth_metrics(prom)
            .with_behaviour(|key, relay| behaviour(key, relay, prom).map_err(|e| e.into()))
            .map_err(|e| err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build())
    })?;
    let mut swarm = swarm;
    for addr in &config.external_addrs {
        swarm.add_external_address(addr.clone());
    }
    let peer_id = *swarm.local_peer_id();
    let (command_tx, command_rx) = mpsc::channel(config.command_buffer);
    let (event_tx, event_rx) = mpsc::channel(config.event_buffer);
    let uploads = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(
        event_loop::EventLoop::new(
            swarm,
            &config,
            command_rx,
            event_tx,
            metrics,
            uploads.clone(),
        )
        .run(),
    );
    Ok(Network {
        handle: NetworkHandle::new(command_tx, peer_id, config.command_timeout, uploads),
        events: event_rx,
        task,
    })
}

/// TCP and QUIC on the open network; TCP alone in a private one (pnet protects TCP streams
/// only).
fn transports(
    key: &libp2p::identity::Keypair,
    psk: Option<libp2p::pnet::PreSharedKey>,
) -> Result<Boxed<(libp2p::PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    use futures::future::Either;
    use libp2p::Transport;
    let tcp = tcp_transport(key, psk)?;
    if psk.is_some() {
        return Ok(tcp);
    }
    let quic = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key));
    Ok(tcp
        .or_transport(quic)
        .map(|either, _| match either {
            Either::Left(tcp) => tcp,
            Either::Right((peer, quic)) => (peer, StreamMuxerBox::new(quic)),
        })
        .boxed())
}

/// TCP, authenticated with Noise and multiplexed with Yamux, each connection given
/// [`TCP_DIAL_TIMEOUT`] to open. In a private network every stream is first protected with
/// its key (pnet's XSalsa20 with a nonce each way): a peer without the key fails before
/// Noise, having learnt nothing.
fn tcp_transport(
    key: &libp2p::identity::Keypair,
    psk: Option<libp2p::pnet::PreSharedKey>,
) -> Result<Boxed<(libp2p::PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    use either::Either;
    use libp2p::Transport;
    use libp2p::core::upgrade::Version;
    use libp2p::pnet::PnetConfig;
    let noise = noise::Config::new(key)?;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let protected = match psk {
        Some(psk) => {
            Either::Left(tcp.and_then(move |socket, _| PnetConfig::new(psk).handshake(socket)))
        }
        None => Either::Right(tcp),
    };
    Ok(protected
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(TCP_DIAL_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    const AES_FIRST: [&str; 3] = [
        "TLS13_AES_128_GCM_SHA256",
        "TLS13_AES_256_GCM_SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256",
    ];

    /// QUIC's TLS comes from the patched libp2p-tls (vendor/README.md): both sides list
    /// AES-128-GCM first, so two Agora nodes encrypt QUIC with it. A libp2p upgrade that
    /// leaves the patch unused fails here.
    #[test]
    fn quic_prefers_aes_gcm() {
        let key = Keypair::generate_ed25519();
        let client = libp2p_tls::make_client_config(&key, None).unwrap();
        let server = libp2p_tls::make_server_config(&key).unwrap();
        for provider in [client.crypto_provider(), server.crypto_provider()] {
            let suites: Vec<String> = (provider.cipher_suites.iter())
                .map(|s| format!("{:?}", s.suite()))
                .collect();
            assert_eq!(suites, AES_FIRST);
        }
    }
}
