//! The Agora node, in layers that each import only the layers below them:
//!
//! | layer | owns |
//! |---|---|
//! | [`app`] | building a node ([`Node`]) and a whole daemon ([`Daemon`]): config, keys, runtime, duties |
//! | `ipc`, `gateway` | the Unix socket and the HTTP gateway, both answered by `api` |
//! | `api` | one function per request kind and the dispatch that picks it |
//! | [`ops`] | the workflows: publish, ingest, sync, lookup, fetch, repair ([`Registry`]) |
//! | [`catalog`] | what was admitted and the trust rules that decide it; dependency resolution |
//! | [`network`] | the libp2p swarm in its own task, and the handle that sends it commands |
//! | [`index`], [`graph`], [`store`] | the search index; the catalog as RDF; the database, the archive files, the journal |
//! | [`obs`] | metrics, tracing and counters (imports nothing of the daemon) |
//!
//! docs/ARCHITECTURE.md draws them and follows a publish, an install and a sync through them.

mod api;
pub mod app;
pub mod catalog;
mod gateway;
pub mod graph;
pub mod index;
mod ipc;
pub mod network;
pub mod obs;
pub mod ops;
mod rate;
pub mod store;

pub use app::config::Config;
pub use app::daemon::Daemon;
pub use app::node::{Node, NodeConfig};
pub use network::NetworkConfig;
pub use ops::{Registry, RegistryConfig};

use std::sync::{Mutex, MutexGuard};

/// Locks `m`; a lock poisoned by a panicking holder is taken as it is (every structure behind
/// these locks stays consistent between statements that could panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
