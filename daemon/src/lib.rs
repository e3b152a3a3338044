//! The Agora node: the actor-owned libp2p swarm ([`network`]), the registry that decides on
//! what the network brings in ([`registry`]), and [`node::Node`] which runs both.

pub mod network;
pub mod node;
pub mod registry;
