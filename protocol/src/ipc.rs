//! The local IPC protocol between `agora` and `agorad` over a Unix socket.
//!
//! A frame is a 4-byte big-endian payload length followed by the payload, a versioned wire
//! message ([`crate::codec`]). The first frame each way is a `Hello` carrying
//! [`IPC_PROTOCOL_VERSION`]; a mismatch ends the connection with a typed error. After that
//! the client sends `Request`s with ids it chooses; the server answers each with exactly one
//! `Response` of the same id, possibly preceded by `Progress` frames.

use serde::{Deserialize, Serialize};

use crate::impl_wire;
use crate::limits::{MAX_IPC_FRAME_BYTES, MAX_IPC_STRING_LEN};

/// Version of the request/response vocabulary below.
pub const IPC_PROTOCOL_VERSION: u32 = 1;
/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 4;

/// Why a frame header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("IPC frame of {len} bytes exceeds the {MAX_IPC_FRAME_BYTES}-byte limit")]
    TooLarge { len: usize },
    #[error("empty IPC frame")]
    Empty,
}

/// Wraps a payload in a frame.
pub fn frame(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > MAX_IPC_FRAME_BYTES {
        return Err(FrameError::TooLarge { len: payload.len() });
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Reads a frame header: the payload length, refused before anything is allocated if it is
/// over the limit.
pub fn frame_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    match len {
        0 => Err(FrameError::Empty),
        l if l > MAX_IPC_FRAME_BYTES => Err(FrameError::TooLarge { len: l }),
        l => Ok(l),
    }
}

/// Client → daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    Hello { protocol: u32, client: String },
    Request { id: u64, request: Request },
}

/// Daemon → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerMessage {
    Hello {
        protocol: u32,
        daemon: String,
    },
    Progress {
        id: u64,
        progress: Progress,
    },
    Response {
        id: u64,
        result: Result<Response, IpcError>,
    },
}

/// What a client can ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Status,
    Peers,
    /// Dial a multiaddr (with `/p2p/<peer id>`).
    Connect {
        addr: String,
    },
    /// Stop the daemon gracefully.
    Shutdown,
}

/// The daemon's answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Status(StatusInfo),
    Peers(Vec<PeerInfo>),
    Connected { peer_id: String },
    ShuttingDown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub peers: u32,
    pub catalog_size: u64,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub addrs: Vec<String>,
}

/// Progress of a long operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Progress {
    Step(String),
    Bytes { done: u64, total: u64 },
}

/// A failure the CLI can explain: what went wrong, and the kind tells it what to suggest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum IpcError {
    #[error("protocol version mismatch: client speaks {client}, daemon speaks {daemon}")]
    VersionMismatch { client: u32, daemon: u32 },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("network error: {0}")]
    Network(String),
    #[error("daemon error: {0}")]
    Internal(String),
}

fn check_string(s: &str, what: &str) -> Result<(), String> {
    if s.len() > MAX_IPC_STRING_LEN {
        return Err(format!(
            "{what} is {} bytes; the limit is {MAX_IPC_STRING_LEN}",
            s.len()
        ));
    }
    Ok(())
}

impl_wire!(ClientMessage, MAX_IPC_FRAME_BYTES, |m| match m {
    ClientMessage::Hello { client, .. } => check_string(client, "client name"),
    ClientMessage::Request {
        request: Request::Connect { addr },
        ..
    } => check_string(addr, "address"),
    ClientMessage::Request { .. } => Ok(()),
});

impl_wire!(ServerMessage, MAX_IPC_FRAME_BYTES, |_m| Ok(()));
