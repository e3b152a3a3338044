//! The Agora node: the actor-owned libp2p swarm ([`network`]), the registry that owns the
//! catalog ([`registry`]) with its storage ([`store`]), search index ([`index`]) and peer
//! [`reputation`], and [`node::Node`] which runs them together.

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
pub mod service;
pub mod store;
pub mod telemetry;
