//! The local IPC protocol between `agora` and `agorad` over a Unix socket.
//!
//! A frame is a 4-byte big-endian payload length followed by the payload, a versioned wire
//! message ([`crate::codec`]). The first frame each way is a `Hello` carrying
//! [`IPC_PROTOCOL_VERSION`]; a mismatch ends the connection with a typed error. After that
//! the client sends `Request`s with ids it chooses; the server answers each with exactly one
//! `Response` of the same id, possibly preceded by `Progress` frames.

use serde::{Deserialize, Serialize};

use crate::impl_wire;
use crate::limits::MAX_SPARQL_QUERY_BYTES;
use crate::limits::{MAX_IPC_FRAME_BYTES, MAX_IPC_LIST_LEN, MAX_IPC_STRING_LEN};
use crate::search::{SearchQuery, SearchResults};
use crate::sparql::{ResultsFormat, TriplesFormat};

/// Version of the request/response vocabulary below.
pub const IPC_PROTOCOL_VERSION: u32 = 9;
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
#[allow(clippy::large_enum_variant)] // One message at a time on a local socket; boxing buys nothing.
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
    /// Create this node's publisher key (refused if one exists).
    Keygen,
    /// Pack, sign and publish the package in `dir` (an absolute path). With `dry_run`, only
    /// check and pack it.
    Publish {
        dir: String,
        dry_run: bool,
        /// Publish even if a dependency is in no catalog this node can reach.
        allow_missing_dependencies: bool,
    },
    Search(SearchQuery),
    /// The newest installable release of `name` matching `req` (any version if `None`), or an
    /// exact version when `req` is `=x.y.z`.
    Info {
        name: String,
        req: Option<String>,
    },
    Versions {
        name: String,
    },
    /// Resolve `name` / `name@req` roots and their dependencies to exact releases, keeping
    /// the `name@version` pins of `prefer` (a lockfile's) wherever they still fit.
    Resolve {
        roots: Vec<String>,
        prefer: Vec<String>,
    },
    /// Make the archive of exactly `name@version` local; answers with its path.
    Fetch {
        name: String,
        version: String,
    },
    /// Yanks `name@version`, or with `undo` takes back every yank of it that stands.
    Yank {
        name: String,
        version: String,
        reason: String,
        undo: bool,
    },
    /// Replace the daemon's log filter (`info`, `debug`, `agora_daemon=trace,libp2p=warn`...).
    SetLogLevel {
        filter: String,
    },
    /// Answer a SPARQL query over the catalog's graph (docs/RDF.md): solutions and booleans
    /// in `results`, triples in `triples`.
    Query {
        sparql: String,
        results: ResultsFormat,
        triples: TriplesFormat,
    },
    /// The whole catalog's graph, sent as [`Progress::Data`] pieces before the response.
    Export {
        format: TriplesFormat,
    },
}

impl Request {
    /// The request's name, for logs, traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Peers => "peers",
            Self::Connect { .. } => "connect",
            Self::Shutdown => "shutdown",
            Self::Keygen => "keygen",
            Self::Publish { .. } => "publish",
            Self::Search(_) => "search",
            Self::Info { .. } => "info",
            Self::Versions { .. } => "versions",
            Self::Resolve { .. } => "resolve",
            Self::Fetch { .. } => "fetch",
            Self::Yank { .. } => "yank",
            Self::SetLogLevel { .. } => "set_log_level",
            Self::Query { .. } => "query",
            Self::Export { .. } => "export",
        }
    }
}

/// The daemon's answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Status(StatusInfo),
    Peers(Vec<PeerInfo>),
    Connected {
        peer_id: String,
    },
    ShuttingDown,
    Key {
        publisher: String,
    },
    Published(PublishedInfo),
    Search(SearchResults),
    Release(ReleaseInfo),
    Versions(Vec<VersionEntry>),
    Resolved(Vec<ReleaseInfo>),
    Fetched(FetchedInfo),
    Yanked,
    /// `undone` standing yanks of the version were taken back.
    Unyanked {
        undone: usize,
    },
    /// The log filter now in force.
    LogLevel {
        filter: String,
    },
    /// A SPARQL answer, written in the format its media type names.
    Answer {
        media_type: String,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// An export ended: `triples` were sent, in `bytes` of [`Progress::Data`].
    Exported {
        triples: u64,
        bytes: u64,
    },
}

/// Whether the daemon's search index answers searches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexState {
    Ready,
    /// Being rebuilt from the catalog (its saved copy was missing or out of date): the daemon
    /// serves everything else meanwhile, and searches wait for it.
    Rebuilding,
    /// The rebuild failed, for this reason: searches are refused until the daemon restarts.
    Failed(String),
}

/// Whether the check of every stored record that runs after each start (decoded, named by the
/// id index, signature verified) found the store sound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreCheck {
    Running,
    /// Every record checked.
    Sound {
        records: u64,
    },
    /// A record failed: the next start repairs the store (or refuses, with `repair = "off"`).
    Damaged(String),
    /// The check could not run to its end, for this reason.
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    /// Addresses other peers confirmed they reach us on.
    pub external_addrs: Vec<String>,
    pub peers: u32,
    /// Peers in the Kademlia routing table.
    pub routing_table: u32,
    pub catalog_size: u64,
    pub packages: u64,
    /// Packages a search can find.
    pub indexed: u64,
    pub search_index: IndexState,
    /// Bytes of fetched archives kept (the quota applies to these).
    pub cache_bytes: u64,
    pub cache_quota: u64,
    /// Bytes of every archive kept (published and pinned ones too).
    pub store_bytes: u64,
    /// Archive requests answered locally and from the network since start.
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub uptime_secs: u64,
    pub version: String,
    /// The log filter in force.
    pub log_level: String,
    /// The HTTP gateway's address, when it is on.
    pub http: Option<String>,
    /// The publisher key of this node, if one was created.
    pub publisher: Option<String>,
    pub data_dir: String,
    /// The repair of a damaged store this start made, if it made one.
    pub repair: Option<RepairInfo>,
    pub store_check: StoreCheck,
    /// The fingerprint of the private network's key this node is in (`None`: the open
    /// network).
    pub private_network: Option<String>,
    /// Whether peers can dial this node: `public`, `private` (behind a NAT or firewall:
    /// reached through relays) or `unknown` (not tested yet).
    pub reachability: String,
}

/// What a repair of a damaged store found and recovered, and from where.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairInfo {
    /// When it ran (seconds since the Unix epoch).
    pub at: u64,
    /// What was damaged, as the check found it.
    pub cause: String,
    /// Where the damaged database was set aside (none when it was missing).
    pub set_aside: Option<String>,
    /// Records taken back from this node's own-records journal.
    pub from_journal: u64,
    /// Archive files that matched their hash and were kept.
    pub blobs_kept: u64,
    /// Archive files that did not, and were removed.
    pub blobs_dropped: u64,
    /// Records each peer (by peer id) has sent back by sync since.
    pub from_peers: Vec<(String, u64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    /// Reputation score (higher is better; banned peers have none).
    pub score: Option<f64>,
    /// Every connection to it goes through a relay (no direct one could be made yet).
    pub relayed: bool,
    /// The remote address of each connection to it (over which transport, through which
    /// relay).
    pub addresses: Vec<String>,
}

/// One release, as the CLI shows and locks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub category: Option<String>,
    pub author: Option<String>,
    pub license: Option<String>,
    pub repository: Option<String>,
    pub tags: Vec<String>,
    pub keywords: Vec<String>,
    /// `name` or `name@req`.
    pub dependencies: Vec<String>,
    /// SHA-256 of the archive, hex.
    pub sha256: String,
    pub size: u64,
    /// Publisher key, hex.
    pub publisher: String,
    pub published_at: u64,
    pub record_id: String,
    pub yanked: bool,
    /// Why it was yanked, as its owner said (`None`: not yanked, or no reason given).
    pub yank_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEntry {
    pub version: String,
    pub yanked: bool,
    /// Why it was yanked, as its owner said (`None`: not yanked, or no reason given).
    pub yank_reason: Option<String>,
    pub equivocated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedInfo {
    /// The release signed, or for a dry run the one that would be (its `publisher` is empty
    /// when this node has no publisher key yet).
    pub release: ReleaseInfo,
    /// False for a dry run.
    pub published: bool,
    /// False when no peer was subscribed yet (peers get it by sync).
    pub gossiped: bool,
    /// Every file in the archive, by path, with its size.
    pub files: Vec<PackedFile>,
    /// What the author may want to fix (a `[package]` key that looks like a misspelt one).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedFile {
    pub path: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedInfo {
    /// Absolute path of the verified archive in the daemon's store.
    pub path: String,
    pub sha256: String,
    pub size: u64,
    pub cached: bool,
    /// Providers that delivered chunks.
    pub providers: Vec<String>,
    /// Some of it came through a relay: no direct connection to those providers could be made.
    pub relayed: bool,
}

/// Progress of a long operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Progress {
    Step(String),
    /// An archive on its way: `done` of its `total` bytes are in, and those before
    /// `readable` are verified and written to `path`, the partial file the daemon's store
    /// adopts when the download ends: a client may read them before it does.
    Download {
        done: u64,
        total: u64,
        readable: u64,
        path: String,
    },
    /// The next piece of a stream the response ends (an export).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// A failure the CLI can explain: what went wrong, and the kind tells it what to suggest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum IpcError {
    #[error("protocol version mismatch: client speaks {client}, daemon speaks {daemon}")]
    VersionMismatch { client: u32, daemon: u32 },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the catalog's trust rules or its state (not the owner,
    /// already published, older than the newest version, equivocated).
    #[error("{0}")]
    Refused(String),
    /// The package directory or its manifest is wrong.
    #[error("{0}")]
    Package(String),
    /// This node has no publisher key yet.
    #[error("{0}")]
    NoKey(String),
    #[error("network error: {0}")]
    Network(String),
    #[error("daemon error: {0}")]
    Internal(String),
    /// An error with what to do about it, when the daemon knows better than its kind says.
    #[error("{error}")]
    Hinted { error: Box<IpcError>, hint: String },
}

impl IpcError {
    /// This error with `hint`.
    pub fn hinted(self, hint: impl Into<String>) -> Self {
        Self::Hinted {
            error: Box::new(self),
            hint: hint.into(),
        }
    }

    /// The error under any hint.
    pub fn kind(&self) -> &IpcError {
        match self {
            Self::Hinted { error, .. } => error.kind(),
            other => other,
        }
    }
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

fn check_request(r: &Request) -> Result<(), String> {
    match r {
        Request::Status | Request::Peers | Request::Shutdown | Request::Keygen => Ok(()),
        Request::SetLogLevel { filter } => check_string(filter, "log filter"),
        Request::Connect { addr } => check_string(addr, "address"),
        Request::Publish { dir, .. } => check_string(dir, "directory"),
        Request::Search(q) => q.check(),
        Request::Info { name, req } => {
            check_string(name, "name")?;
            req.as_deref()
                .map_or(Ok(()), |r| check_string(r, "requirement"))
        }
        Request::Versions { name } => check_string(name, "name"),
        Request::Resolve { roots, prefer } => {
            for (list, what) in [(roots, "root"), (prefer, "preferred version")] {
                if list.len() > MAX_IPC_LIST_LEN {
                    return Err(format!(
                        "{} {what}s; the limit is {MAX_IPC_LIST_LEN}",
                        list.len()
                    ));
                }
                list.iter().try_for_each(|r| check_string(r, what))?;
            }
            Ok(())
        }
        Request::Fetch { name, version } => {
            check_string(name, "name")?;
            check_string(version, "version")
        }
        Request::Yank {
            name,
            version,
            reason,
            ..
        } => {
            check_string(name, "name")?;
            check_string(version, "version")?;
            check_string(reason, "reason")
        }
        Request::Query { sparql, .. } => {
            if sparql.len() > MAX_SPARQL_QUERY_BYTES {
                return Err(format!(
                    "the query is {} bytes; the limit is {MAX_SPARQL_QUERY_BYTES}",
                    sparql.len()
                ));
            }
            Ok(())
        }
        Request::Export { .. } => Ok(()),
    }
}

impl_wire!(ClientMessage, MAX_IPC_FRAME_BYTES, |m| match m {
    ClientMessage::Hello { client, .. } => check_string(client, "client name"),
    ClientMessage::Request { request, .. } => check_request(request),
});

impl_wire!(ServerMessage, MAX_IPC_FRAME_BYTES, |_m| Ok(()));
