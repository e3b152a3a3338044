//! `agora-client`: the typed client of the `agorad` Unix socket and the `agora` CLI.
//!
//! The socket protocol (frames, handshake, requests and responses) is defined in
//! [`agora_protocol::ipc`]; the client that speaks it over a Unix socket lands with the
//! daemon's IPC server.

pub use agora_protocol::ipc;
