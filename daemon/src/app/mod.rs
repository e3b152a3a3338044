//! Building a node and running it: the config file and flags ([`config`]), the tokio runtime
//! ([`runtime`]), a [`node::Node`] (the network and the registry with their duties and timers)
//! and a [`daemon::Daemon`] (a node with its IPC socket and HTTP gateway, as `agorad` runs it).

pub mod config;
pub mod daemon;
pub mod node;
pub mod runtime;
