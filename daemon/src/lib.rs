//! The Agora node: the actor-owned libp2p swarm ([`network`]), the registry that owns the
//! catalog ([`registry`]) with its storage ([`store`]), search index ([`index`]) and peer
//! [`reputation`], and [`node::Node`] which runs them together; [`api`] answers requests for
//! the IPC socket ([`ipc`]) and the HTTP [`gateway`].

pub mod api;
pub mod config;
pub mod gateway;
pub mod index;
pub mod ipc;
pub mod keys;
pub mod metrics;
pub mod network;
pub mod node;
pub mod registry;
pub mod reputation;
pub mod runtime;
pub mod service;
pub mod store;
pub mod telemetry;

use std::sync::{Mutex, MutexGuard};

/// Locks `m`; a lock poisoned by a panicking holder is taken as it is (every structure behind
/// these locks stays consistent between statements that could panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
