//! `agora-client`: the typed client of the `agorad` Unix socket, the safe archive unpacker and
//! the lockfile, used by the `agora` CLI (and by anything else that wants to drive a node).
//!
//! The socket protocol (frames, handshake, requests and responses) is defined in
//! [`agora_protocol::ipc`]. The client is blocking: one request at a time per connection, so a
//! CLI needs no async runtime.

pub mod lockfile;
pub mod project;
pub mod unpack;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use agora_protocol::codec::Wire;
pub use agora_protocol::ipc;
use agora_protocol::ipc::{
    ClientMessage, FRAME_HEADER_LEN, FetchedInfo, IPC_PROTOCOL_VERSION, IpcError, PeerInfo,
    Progress, PublishedInfo, ReleaseInfo, Request, Response, ServerMessage, StatusInfo,
    VersionEntry,
};
use agora_protocol::search::{SearchQuery, SearchResults};
use agora_protocol::sparql::{ResultsFormat, TriplesFormat};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no agorad is running on {}", .path.display())]
    NoDaemon { path: PathBuf },
    #[error("talking to agorad: {0}")]
    Io(#[from] std::io::Error),
    #[error("agorad sent something this client does not understand: {0}")]
    Protocol(String),
    #[error("{0}")]
    Daemon(IpcError),
}

/// A connection to a running daemon.
pub struct Client {
    stream: UnixStream,
    next_id: u64,
    /// The daemon's version, from the handshake.
    pub daemon_version: String,
    /// Hears, after each request, its kind, whether it succeeded and how long it took.
    trace: Option<fn(&str, bool, std::time::Duration)>,
}

impl Client {
    /// Connects to the socket at `path` and does the version handshake.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => ClientError::NoDaemon {
                path: path.to_owned(),
            },
            _ => ClientError::Io(e),
        })?;
        let mut client = Self {
            stream,
            next_id: 1,
            daemon_version: String::new(),
            trace: None,
        };
        if let Err(e) = client.send(&ClientMessage::Hello {
            protocol: IPC_PROTOCOL_VERSION,
            client: format!("agora {}", env!("CARGO_PKG_VERSION")),
        }) {
            // A daemon that refuses us (another user's) writes why and closes at once,
            // perhaps before our hello arrives: its reason is still there to read.
            let closed = matches!(&e, ClientError::Io(io)
                if matches!(io.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset));
            if closed
                && let Ok(ServerMessage::Response {
                    result: Err(why), ..
                }) = client.receive()
            {
                return Err(ClientError::Daemon(why));
            }
            return Err(e);
        }
        match client.receive()? {
            ServerMessage::Hello { protocol, daemon } if protocol == IPC_PROTOCOL_VERSION => {
                client.daemon_version = daemon;
                Ok(client)
            }
            ServerMessage::Response { result: Err(e), .. } => Err(ClientError::Daemon(e)),
            other => Err(ClientError::Protocol(format!(
                "expected a handshake, got {other:?}"
            ))),
        }
    }

    fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        let bytes = ipc::frame(&msg.to_wire()).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.stream.write_all(&bytes)?;
        Ok(())
    }

    fn receive(&mut self) -> Result<ServerMessage, ClientError> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        self.stream.read_exact(&mut header)?;
        let len = ipc::frame_len(header).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload)?;
        ServerMessage::from_wire(&payload).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends a request and waits for its response, passing progress events to `on_progress`.
    pub fn call_with_progress(
        &mut self,
        request: Request,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<Response, ClientError> {
        let (kind, started) = (request.kind(), std::time::Instant::now());
        let result = self.exchange(request, &mut on_progress);
        if let Some(trace) = self.trace {
            trace(kind, result.is_ok(), started.elapsed());
        }
        result
    }

    /// Calls `trace` after every request with its kind, whether it succeeded and its time
    /// (what `agora -v` prints).
    pub fn set_trace(&mut self, trace: fn(&str, bool, std::time::Duration)) {
        self.trace = Some(trace);
    }

    fn exchange(
        &mut self,
        request: Request,
        on_progress: &mut impl FnMut(&Progress),
    ) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&ClientMessage::Request { id, request })?;
        loop {
            match self.receive()? {
                ServerMessage::Progress { id: got, progress } if got == id => {
                    on_progress(&progress)
                }
                ServerMessage::Response { id: got, result } if got == id || got == 0 => {
                    return result.map_err(ClientError::Daemon);
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected message {other:?}"
                    )));
                }
            }
        }
    }

    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        self.call_with_progress(request, |_| {})
    }

    pub fn status(&mut self) -> Result<StatusInfo, ClientError> {
        match self.call(Request::Status)? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    pub fn peers(&mut self) -> Result<Vec<PeerInfo>, ClientError> {
        match self.call(Request::Peers)? {
            Response::Peers(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    pub fn connect_peer(&mut self, addr: &str) -> Result<String, ClientError> {
        match self.call(Request::Connect { addr: addr.into() })? {
            Response::Connected { peer_id } => Ok(peer_id),
            other => Err(unexpected(other)),
        }
    }

    /// Replaces the daemon's log filter; answers the filter now in force.
    pub fn set_log_level(&mut self, filter: &str) -> Result<String, ClientError> {
        match self.call(Request::SetLogLevel {
            filter: filter.into(),
        })? {
            Response::LogLevel { filter } => Ok(filter),
            other => Err(unexpected(other)),
        }
    }

    pub fn shutdown(&mut self) -> Result<(), ClientError> {
        match self.call(Request::Shutdown)? {
            Response::ShuttingDown => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub fn keygen(&mut self) -> Result<String, ClientError> {
        match self.call(Request::Keygen)? {
            Response::Key { publisher } => Ok(publisher),
            other => Err(unexpected(other)),
        }
    }

    /// Publishes the package in `dir` (or only checks and packs it, with `dry_run`); a
    /// dependency no catalog reachable meets is refused unless `allow_missing_dependencies`.
    pub fn publish(
        &mut self,
        dir: &Path,
        dry_run: bool,
        allow_missing_dependencies: bool,
        on_progress: impl FnMut(&Progress),
    ) -> Result<PublishedInfo, ClientError> {
        let request = Request::Publish {
            dir: dir.display().to_string(),
            dry_run,
            allow_missing_dependencies,
        };
        match self.call_with_progress(request, on_progress)? {
            Response::Published(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    pub fn search(&mut self, query: SearchQuery) -> Result<SearchResults, ClientError> {
        match self.call(Request::Search(query))? {
            Response::Search(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub fn info(&mut self, name: &str, req: Option<&str>) -> Result<ReleaseInfo, ClientError> {
        match self.call(Request::Info {
            name: name.into(),
            req: req.map(str::to_owned),
        })? {
            Response::Release(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub fn versions(&mut self, name: &str) -> Result<Vec<VersionEntry>, ClientError> {
        match self.call(Request::Versions { name: name.into() })? {
            Response::Versions(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Every release an install of `roots` needs, keeping the `name@version` pins of `prefer`
    /// wherever they still fit.
    pub fn resolve(
        &mut self,
        roots: &[String],
        prefer: &[String],
    ) -> Result<Vec<ReleaseInfo>, ClientError> {
        match self.call(Request::Resolve {
            roots: roots.to_vec(),
            prefer: prefer.to_vec(),
        })? {
            Response::Resolved(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub fn fetch(
        &mut self,
        name: &str,
        version: &str,
        on_progress: impl FnMut(&Progress),
    ) -> Result<FetchedInfo, ClientError> {
        let request = Request::Fetch {
            name: name.into(),
            version: version.into(),
        };
        match self.call_with_progress(request, on_progress)? {
            Response::Fetched(f) => Ok(f),
            other => Err(unexpected(other)),
        }
    }

    pub fn yank(&mut self, name: &str, version: &str, reason: &str) -> Result<(), ClientError> {
        match self.call(Request::Yank {
            name: name.into(),
            version: version.into(),
            reason: reason.into(),
            undo: false,
        })? {
            Response::Yanked => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Takes back every standing yank of `name@version`; returns how many there were.
    pub fn unyank(&mut self, name: &str, version: &str) -> Result<usize, ClientError> {
        match self.call(Request::Yank {
            name: name.into(),
            version: version.into(),
            reason: String::new(),
            undo: true,
        })? {
            Response::Unyanked { undone } => Ok(undone),
            other => Err(unexpected(other)),
        }
    }

    /// Answers a SPARQL query over the node's catalog: the answer's media type and bytes.
    pub fn query(
        &mut self,
        sparql: &str,
        results: ResultsFormat,
        triples: TriplesFormat,
    ) -> Result<(String, Vec<u8>), ClientError> {
        let request = Request::Query {
            sparql: sparql.to_owned(),
            results,
            triples,
        };
        match self.call(request)? {
            Response::Answer { media_type, body } => Ok((media_type, body)),
            other => Err(unexpected(other)),
        }
    }

    /// Exports the node's catalog graph in `format`, giving `piece` each part as it comes.
    /// Returns the triples and bytes the daemon sent.
    pub fn export(
        &mut self,
        format: TriplesFormat,
        mut piece: impl FnMut(&[u8]),
    ) -> Result<(u64, u64), ClientError> {
        let response = self.call_with_progress(Request::Export { format }, |p| {
            if let Progress::Data(bytes) = p {
                piece(bytes);
            }
        })?;
        match response {
            Response::Exported { triples, bytes } => Ok((triples, bytes)),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(r: Response) -> ClientError {
    ClientError::Protocol(format!("unexpected response {r:?}"))
}
