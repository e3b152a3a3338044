//! The local IPC server: a Unix socket the `agora` CLI talks to.
//!
//! The socket's directory is 0700 and the socket 0600; every connection's peer uid is checked
//! with `SO_PEERCRED` and must be ours. Binding refuses a symlink at the socket path and a
//! socket a live daemon answers on, and replaces a stale one. Each connection starts with a
//! version handshake, then carries length-prefixed frames (bounded by
//! [`MAX_IPC_FRAME_BYTES`](agora_protocol::limits::MAX_IPC_FRAME_BYTES)): requests in, progress
//! and one response per request out. Connections are served concurrently; a bad frame ends
//! its connection with a typed error and touches nothing else.

pub use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use agora_protocol::codec::{DecodeError, Wire};
use agora_protocol::ipc::{
    self, ClientMessage, FRAME_HEADER_LEN, IPC_PROTOCOL_VERSION, IpcError, Response, ServerMessage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

pub use crate::api::Context;

/// Frames queued to one client before the handler waits for the client to read.
const OUTBOX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another agorad is running on {}", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("{} is a symlink; refusing to use it as the socket", .0.display())]
    Symlink(PathBuf),
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the socket's directory: {0}")]
    Dir(crate::store::key_files::KeyFileError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BindError + '_ {
    move |source| BindError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A bound socket, accepting connections.
pub struct IpcListener {
    listener: UnixListener,
}

/// The socket's path on the file system, removed when this is dropped: the daemon drops it
/// last, after everything else has shut down, so that a client waiting for the socket to go
/// away knows the daemon has finished.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl IpcListener {
    /// Claims the socket path. Must run inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<(Self, SocketFile), BindError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::store::key_files::ensure_private_dir(dir).map_err(BindError::Dir)?;
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(BindError::Symlink(path.to_owned()));
            }
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(BindError::NotASocket(path.to_owned()));
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(BindError::AlreadyRunning(path.to_owned())),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    info!(socket = %path.display(), "replacing a stale socket");
                    fs::remove_file(path).map_err(io(path))?;
                }
                Err(e) => return Err(io(path)(e)),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(path)(e)),
        }
        let listener = UnixListener::bind(path).map_err(io(path))?;
        let file = SocketFile(path.to_owned());
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io(path))?;
        Ok((Self { listener }, file))
    }

    /// Accepts and serves connections until the task is dropped or aborted (which closes the
    /// listening socket: new clients are refused from then on).
    pub async fn serve(self, ctx: Arc<Context>) {
        let me = rustix::process::geteuid().as_raw();
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "accepting an IPC connection failed");
                    continue;
                }
            };
            match stream.peer_cred().map(|cred| check_peer(me, cred.uid())) {
                Ok(Ok(())) => {}
                Ok(Err((uid, refused))) => {
                    warn!(uid, "refusing an IPC connection from another user");
                    refuse_stranger(stream, refused);
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the IPC peer's credentials; refusing it");
                    continue;
                }
            }
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_connection(stream, ctx).await {
                    debug!(error = %e, "IPC connection ended");
                }
            });
        }
    }
}

/// Reads one frame's payload.
pub async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<Vec<u8>, ConnError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    r.read_exact(&mut header).await?;
    let len = ipc::frame_len(header).map_err(|e| ConnError::Frame(e.to_string()))?;
    let mut payload = vec![0; len];
    r.read_exact(&mut payload).await?;
    Ok(payload)
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(String),
}

/// Daemon-wide request numbers, so each request's span is told apart across connections.
static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

async fn serve_connection(stream: UnixStream, ctx: Arc<Context>) -> Result<(), ConnError> {
    let (mut reader, mut writer) = stream.into_split();
    let (out, mut outbox) = mpsc::channel::<ServerMessage>(OUTBOX);
    let writer_task = tokio::spawn(async move {
        while let Some(msg) = outbox.recv().await {
            let Ok(bytes) = ipc::frame(&msg.to_wire()) else {
                warn!("an IPC response exceeds the frame limit; dropping it");
                continue;
            };
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });

    let result = async {
        let hello = ClientMessage::from_wire(&read_frame(&mut reader).await?);
        match hello {
            Ok(ClientMessage::Hello { protocol, .. }) if protocol == IPC_PROTOCOL_VERSION => {
                let _ = out
                    .send(ServerMessage::Hello {
                        protocol: IPC_PROTOCOL_VERSION,
                        daemon: env!("CARGO_PKG_VERSION").into(),
                    })
                    .await;
            }
            Ok(ClientMessage::Hello { protocol, .. }) => {
                let _ = out
                    .send(refusal(IpcError::VersionMismatch {
                        client: protocol,
                        daemon: IPC_PROTOCOL_VERSION,
                    }))
                    .await;
                return Ok(false);
            }
            Ok(ClientMessage::Request { .. }) => {
                let _ = out
                    .send(refusal(IpcError::BadRequest(
                        "the first message must be Hello".into(),
                    )))
                    .await;
                return Ok(false);
            }
            Err(e) => {
                let _ = out.send(refusal(bad_message(&e))).await;
                return Ok(false);
            }
        }
        loop {
            let payload = match read_frame(&mut reader).await {
                Ok(p) => p,
                Err(ConnError::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
                Err(ConnError::Frame(e)) => {
                    let _ = out.send(refusal(IpcError::BadRequest(e.clone()))).await;
                    return Err(ConnError::Frame(e));
                }
                Err(e) => return Err(e),
            };
            match ClientMessage::from_wire(&payload) {
                Ok(ClientMessage::Request { id, request }) => {
                    let kind = request.kind();
                    let span = info_span!(
                        "ipc.request",
                        request_id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed),
                        client_request = id,
                        request = kind,
                        outcome = tracing::field::Empty,
                    );
                    let started = Instant::now();
                    let result = crate::api::dispatch(&ctx, id, request, &out)
                        .instrument(span.clone())
                        .await;
                    span.record(
                        "outcome",
                        match &result {
                            Ok(_) => "ok".to_owned(),
                            Err(e) => e.to_string(),
                        },
                    );
                    ctx.metrics
                        .observe_request(kind, result.is_ok(), started.elapsed());
                    let stop = matches!(result, Ok(Response::ShuttingDown));
                    if out
                        .send(ServerMessage::Response { id, result })
                        .await
                        .is_err()
                    {
                        return Ok(false);
                    }
                    if stop {
                        return Ok(true);
                    }
                }
                Ok(ClientMessage::Hello { .. }) => {
                    let _ = out
                        .send(refusal(IpcError::BadRequest("a second Hello".into())))
                        .await;
                    return Ok(false);
                }
                Err(e) => {
                    let _ = out.send(refusal(bad_message(&e))).await;
                    return Err(ConnError::Frame(e.to_string()));
                }
            }
        }
    }
    .await;
    drop(out);
    let _ = writer_task.await;
    // A stop is requested only after its answer has been written.
    if let Ok(true) = result {
        ctx.shutdown.notify_one();
    }
    result.map(drop)
}

/// Only the daemon's own user may use its socket (root included: a root client of another
/// user's daemon is refused too). On refusal, the peer's uid and the error to tell it.
fn check_peer(me: u32, peer: u32) -> Result<(), (u32, IpcError)> {
    if peer == me {
        return Ok(());
    }
    Err((
        peer,
        IpcError::Refused(format!(
            "this agorad belongs to uid {me}; connections from uid {peer} are refused"
        )),
    ))
}

/// Tells a client of another user why it is refused, and closes. One small frame on a fresh
/// socket fits its send buffer, so it is written at once without waiting: a stranger cannot
/// hold the accept loop. (The write goes straight to the socket: tokio's `try_write` would
/// refuse until the reactor has seen the socket writable.)
fn refuse_stranger(stream: UnixStream, refused: IpcError) {
    let msg = refusal(refused);
    if let (Ok(bytes), Ok(stream)) = (ipc::frame(&msg.to_wire()), stream.into_std()) {
        let _ = std::io::Write::write(&mut &stream, &bytes);
    }
}

/// A message that could not be taken: a rule it breaks is said as the rule (what the user
/// asked for was wrong), anything else as what was wrong with the bytes.
fn bad_message(e: &DecodeError) -> IpcError {
    match e {
        DecodeError::Invalid(rule) => IpcError::BadRequest(rule.clone()),
        other => IpcError::BadRequest(other.to_string()),
    }
}

/// An error answer that ends a connection (id 0: it answers no particular request).
fn refusal(e: IpcError) -> ServerMessage {
    ServerMessage::Response {
        id: 0,
        result: Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_daemons_own_uid_is_let_in() {
        assert_eq!(check_peer(1000, 1000), Ok(()));
        assert_eq!(check_peer(0, 0), Ok(()));
        assert_eq!(
            check_peer(1000, 1001),
            Err((
                1001,
                IpcError::Refused(
                    "this agorad belongs to uid 1000; connections from uid 1001 are refused".into()
                )
            ))
        );
        // Root is another user too.
        assert_eq!(
            check_peer(1000, 0),
            Err((
                0,
                IpcError::Refused(
                    "this agorad belongs to uid 1000; connections from uid 0 are refused".into()
                )
            ))
        );
    }
}
