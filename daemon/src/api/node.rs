//! Requests about the node itself: its status, its peers, its log filter.

use agora_protocol::ipc::{IpcError, PeerInfo, Response, StatusInfo};
use std::sync::atomic::Ordering;

use super::{Context, bad, network};
use crate::obs::telemetry::LogControl;

/// `status`: what the node is and holds, and how it is doing.
pub(super) async fn status(ctx: &Context) -> Result<Response, IpcError> {
    let registry = &ctx.registry;
    let net = &ctx.network;
    let info = net.info().await.map_err(network)?;
    let usage = registry.blobs.usage();
    let stats = &registry.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    Ok(Response::Status(StatusInfo {
        peer_id: info.peer_id.to_string(),
        listen_addrs: info.listen_addrs.iter().map(ToString::to_string).collect(),
        external_addrs: info
            .external_addrs
            .iter()
            .map(ToString::to_string)
            .collect(),
        peers: info.connected_peers.len() as u32,
        routing_table: info.routing_table_size as u32,
        catalog_size: registry.view().record_count() as u64,
        packages: registry.view().package_count() as u64,
        indexed: registry.view().indexed_count(),
        search_index: registry.view().index_state(),
        cache_bytes: usage.cached_bytes,
        cache_quota: usage.quota,
        store_bytes: usage.cached_bytes + usage.kept_bytes,
        cache_hits: load(&stats.cache_hits),
        cache_misses: load(&stats.cache_misses),
        uptime_secs: ctx.started.elapsed().as_secs(),
        version: env!("CARGO_PKG_VERSION").into(),
        log_level: ctx
            .log
            .as_ref()
            .map(LogControl::current)
            .unwrap_or_default(),
        http: ctx.http.map(|a| a.to_string()),
        publisher: ctx.publisher(),
        data_dir: ctx.paths.data_dir.display().to_string(),
        repair: registry.repair(),
        store_check: registry.store_check(),
        private_network: ctx.private_network.clone(),
        reachability: info.reachability.as_str().into(),
    }))
}

/// `peers`: the connected peers and their reputation.
pub(super) async fn peers(ctx: &Context) -> Result<Response, IpcError> {
    let registry = &ctx.registry;
    let net = &ctx.network;
    let info = net.info().await.map_err(network)?;
    Ok(Response::Peers(
        info.connected_peers
            .iter()
            .copied()
            .map(|p| {
                let score = registry.reputation_of(&p).1;
                PeerInfo {
                    peer_id: p.to_string(),
                    score: score.is_finite().then_some(score),
                    relayed: info.only_relayed(&p),
                    addresses: info
                        .peer_addrs
                        .get(&p)
                        .into_iter()
                        .flatten()
                        .map(|a| a.to_string())
                        .collect(),
                }
            })
            .collect(),
    ))
}

/// `connect ADDR`: dials a peer.
pub(super) async fn connect(ctx: &Context, addr: String) -> Result<Response, IpcError> {
    let net = &ctx.network;
    let addr: libp2p::Multiaddr = addr
        .parse()
        .map_err(|e| bad(format!("invalid multiaddr {addr:?}: {e}")))?;
    // A peer this node is connected to already is what was asked for.
    if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last()
        && net.peers().await.map_err(network)?.contains(&peer)
    {
        return Ok(Response::Connected {
            peer_id: peer.to_string(),
        });
    }
    let peer = net.dial(addr).await.map_err(|e| {
        network(e).hinted(
            "check the address: the peer's 'agora status' lists where it listens, and this \
             machine must reach it (a firewall or a NAT may not let it)",
        )
    })?;
    Ok(Response::Connected {
        peer_id: peer.to_string(),
    })
}

/// `node log-level FILTER`: changes the running daemon's log filter.
pub(super) fn set_log_level(ctx: &Context, filter: String) -> Result<Response, IpcError> {
    let log = ctx.log.as_ref().ok_or_else(|| {
        IpcError::Refused("this daemon's logger cannot be changed at run time".into())
    })?;
    log.set(&filter).map_err(bad)?;
    tracing::info!(%filter, "log filter changed");
    Ok(Response::LogLevel { filter })
}
