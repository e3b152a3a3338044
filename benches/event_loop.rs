//! The network event loop's throughput, against a bare actor in the same run.
//!
//! - Commands per second: tasks call `NetworkHandle::peers()` (a command with a oneshot reply
//!   that the event loop answers from the swarm) back to back, 1 and 8 at a time. The
//!   baseline is the same shape with nothing else in it: a task that owns a peer list and
//!   answers `(command, oneshot)` pairs from an mpsc channel of the same capacity.
//! - Swarm events per second: node B sends catalog-sync summary requests to node A (real
//!   nodes on loopback TCP), `IN_FLIGHT` at a time; both event loops count the swarm events
//!   they handle (`agora_event_loop_swarm_events_total`), and the bench reports events and
//!   requests per second and the CPU each request costs (both nodes, this process).
//!
//! Run: `cargo bench --bench event_loop` (`AGORA_BENCH_PARTS=commands` or `swarm` for one).

/// The allocator agorad runs with, so the numbers are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use agora_daemon::Node;
use agora_daemon::network::{NetworkConfig, NetworkHandle};
use agora_protocol::messages::{SyncRequest, SyncResponse};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use support::cpu_time;
use tokio::sync::{mpsc, oneshot};

/// Commands per concurrency level.
const COMMANDS: usize = 200_000;
/// Sync summary requests in the swarm pass.
const REQUESTS: usize = 20_000;
/// Requests B keeps outstanding.
const IN_FLIGHT: usize = 32;

/// A command of the bare actor: asks for the peer list.
type Ask = oneshot::Sender<Vec<PeerId>>;

fn bare_actor(capacity: usize, peers: Vec<PeerId>) -> mpsc::Sender<Ask> {
    let (tx, mut rx) = mpsc::channel::<Ask>(capacity);
    tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let _ = reply.send(peers.clone());
        }
    });
    tx
}

/// Runs `total` calls of `call` spread over `tasks` tasks; returns calls per second.
async fn rate<F, Fut>(tasks: usize, total: usize, call: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = usize> + Send,
{
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                for _ in 0..total / tasks {
                    assert_eq!(call().await, 1, "one peer in every answer");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    (total / tasks * tasks) as f64 / started.elapsed().as_secs_f64()
}

async fn commands(a: &NetworkHandle, b_peer: PeerId) {
    let buffer = NetworkConfig::for_local_testnet(libp2p::identity::Keypair::generate_ed25519())
        .command_buffer;
    let actor = bare_actor(buffer, vec![b_peer]);
    for tasks in [1, 8] {
        let net = a.clone();
        let agora = rate(tasks, COMMANDS, move || {
            let net = net.clone();
            async move { net.peers().await.unwrap().len() }
        })
        .await;
        let tx = actor.clone();
        let bare = rate(tasks, COMMANDS, move || {
            let tx = tx.clone();
            async move {
                let (reply, rx) = oneshot::channel();
                tx.send(reply).await.unwrap();
                rx.await.unwrap().len()
            }
        })
        .await;
        println!(
            "commands, {tasks} task(s): event loop {agora:.0}/s, bare actor {bare:.0}/s, \
             ratio {:.0}%",
            agora / bare * 100.0
        );
    }
}

async fn swarm_events(a: &Node, b: &Node) {
    let a_peer = a.network.peer_id();
    let events = || a.metrics.swarm_events.get() + b.metrics.swarm_events.get();
    let (events0, cpu0, started) = (events(), cpu_time(), Instant::now());
    let mut pending = FuturesUnordered::new();
    let (mut sent, mut answered) = (0, 0);
    while answered < REQUESTS {
        while sent < REQUESTS && pending.len() < IN_FLIGHT {
            let b = b.network.clone();
            pending.push(async move { b.send_sync(a_peer, SyncRequest::Summary).await });
            sent += 1;
        }
        match pending.next().await.unwrap() {
            Ok(SyncResponse::Summary { .. }) => answered += 1,
            other => panic!("a summary request got {other:?}"),
        }
    }
    let took = started.elapsed();
    let (events, cpu) = (events() - events0, cpu_time() - cpu0);
    println!(
        "swarm events, {REQUESTS} sync summaries {IN_FLIGHT} in flight: {:.0} requests/s, \
         {:.0} swarm events/s over both nodes ({:.1} events a request), CPU {:.1?} a request",
        REQUESTS as f64 / took.as_secs_f64(),
        events as f64 / took.as_secs_f64(),
        events as f64 / REQUESTS as f64,
        cpu / REQUESTS as u32
    );
}

fn main() {
    common::init_tracing();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (a, a_addr) = common::start_node().await;
        let (b, _) = common::start_node().await;
        common::join(&b, &a_addr).await;
        // Let the connection's own traffic (identify, the sync on connect) settle first.
        common::converge("A sees B", Duration::from_secs(10), || {
            let net = a.network.clone();
            async move {
                match net.peers().await {
                    Ok(p) if p.len() == 1 => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;
        let parts = std::env::var("AGORA_BENCH_PARTS").unwrap_or_default();
        let run = |part: &str| parts.is_empty() || parts.split(',').any(|p| p == part);
        if run("commands") {
            commands(&a.network, b.network.peer_id()).await;
        }
        if run("swarm") {
            swarm_events(&a, &b).await;
        }
    });
}
