//! The daemon's API: one function per request, one dispatch, used by the IPC socket and by
//! the HTTP gateway alike. It turns every failure into an [`IpcError`] whose kind tells the
//! client what to suggest.

mod graph;
mod node;
mod packages;
mod publishing;

pub use packages::newest_releases;

pub use crate::catalog::events::{Admitted, EventKind};

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use agora_protocol::ipc::{IpcError, Progress, ReleaseInfo, Request, Response, ServerMessage};
use agora_protocol::paths::Paths;
use agora_protocol::records::{ReleaseBody, ReleaseRecord};
use agora_protocol::search::SearchQuery;
use agora_protocol::{PackageName, Version, VersionReq};
use tokio::sync::{Notify, mpsc};

use crate::catalog::CatalogError;
use crate::catalog::resolve::ResolveError;
use crate::catalog::trust::TrustError;
use crate::graph::GraphError;
use crate::index::IndexError;
use crate::network::NetworkHandle;
use crate::obs::Metrics;
use crate::obs::telemetry::LogControl;
use crate::ops::{Registry, RegistryError};
use crate::store::key_files::{self as keys, KeyFileError};

/// Answers one request (`id` tags the progress messages sent to `out` meanwhile).
pub async fn dispatch(
    ctx: &Context,
    id: u64,
    request: Request,
    out: &Outbox,
) -> Result<Response, IpcError> {
    match request {
        Request::Status => node::status(ctx).await,
        Request::Peers => node::peers(ctx).await,
        Request::Connect { addr } => node::connect(ctx, addr).await,
        // The connection notifies `ctx.shutdown` once this answer is written, so the client
        // always hears it before the daemon goes away.
        Request::Shutdown => Ok(Response::ShuttingDown),
        Request::Keygen => publishing::keygen(ctx).await,
        Request::Publish {
            dir,
            dry_run,
            allow_missing_dependencies,
        } => publishing::publish(ctx, id, out, dir, dry_run, allow_missing_dependencies).await,
        Request::Search(query) => Ok(Response::Search(ctx.registry.search(query).await?)),
        Request::Info { name, req } => packages::info(ctx, name, req).await,
        Request::Versions { name } => packages::versions(ctx, name).await,
        Request::Resolve { roots, prefer } => packages::resolve(ctx, roots, prefer).await,
        Request::Fetch { name, version } => packages::fetch(ctx, id, out, name, version).await,
        Request::Yank {
            name,
            version,
            reason,
            undo: false,
        } => publishing::yank(ctx, name, version, reason).await,
        Request::Yank {
            name,
            version,
            undo: true,
            ..
        } => publishing::unyank(ctx, name, version).await,
        Request::SetLogLevel { filter } => node::set_log_level(ctx, filter),
        Request::Query {
            sparql,
            results,
            triples,
        } => graph::query(ctx, sparql, results, triples).await,
        Request::Export { format } => graph::export(ctx, id, out, format).await,
    }
}

/// Every record the node admits from now on (the GraphQL subscription's source).
pub fn catalog_events(ctx: &Context) -> tokio::sync::broadcast::Receiver<Admitted> {
    ctx.registry.subscribe()
}

/// What request handlers can reach.
pub struct Context {
    pub registry: Arc<Registry>,
    pub network: NetworkHandle,
    pub metrics: Arc<Metrics>,
    pub paths: Paths,
    /// Notified when a client asks the daemon to stop.
    pub shutdown: Arc<Notify>,
    /// Changes the log filter; `None` when this process did not install the logger.
    pub log: Option<LogControl>,
    pub started: Instant,
    /// The HTTP gateway's address, when it is on.
    pub http: Option<SocketAddr>,
    /// The fingerprint of the private network's key, when the node is in one.
    pub private_network: Option<String>,
    /// This node's publisher key (hex) once it is known: read from its file at most until it
    /// exists, instead of on every `status`.
    pub(crate) publisher: OnceLock<String>,
}

impl Context {
    pub fn new(
        registry: Arc<Registry>,
        network: NetworkHandle,
        metrics: Arc<Metrics>,
        paths: Paths,
    ) -> Self {
        Self {
            registry,
            network,
            metrics,
            paths,
            shutdown: Arc::new(Notify::new()),
            log: None,
            started: Instant::now(),
            http: None,
            private_network: None,
            publisher: OnceLock::new(),
        }
    }

    /// The publisher key, if this node has one.
    pub(crate) fn publisher(&self) -> Option<String> {
        if let Some(k) = self.publisher.get() {
            return Some(k.clone());
        }
        let key = keys::publisher_key(&self.paths.keys_dir)
            .ok()?
            .public()
            .to_hex();
        Some(self.publisher.get_or_init(|| key).clone())
    }
}

/// A failure of the network, as the client sees it.
pub(crate) fn network(e: crate::network::NetworkError) -> IpcError {
    IpcError::Network(e.to_string())
}

pub(crate) type Outbox = mpsc::Sender<ServerMessage>;

pub(crate) async fn progress(out: &Outbox, id: u64, step: &str) {
    let _ = out
        .send(ServerMessage::Progress {
            id,
            progress: Progress::Step(step.into()),
        })
        .await;
}

pub(crate) fn bad(e: impl std::fmt::Display) -> IpcError {
    IpcError::BadRequest(e.to_string())
}

pub(crate) fn name(s: &str) -> Result<PackageName, IpcError> {
    s.parse().map_err(bad)
}

pub(crate) fn version(s: &str) -> Result<Version, IpcError> {
    s.parse()
        .map_err(|e| bad(format!("invalid version {s:?}: {e}")))
}

impl From<RegistryError> for IpcError {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        let kind = kind_of(&e, msg);
        match hint_for(&e) {
            Some(hint) => kind.hinted(hint),
            None => kind,
        }
    }
}

/// The kind of error a registry failure is for the client (and so its exit code).
fn kind_of(e: &RegistryError, msg: String) -> IpcError {
    match e {
        RegistryError::Catalog(
            CatalogError::NotFound { .. }
            | CatalogError::VersionNotFound { .. }
            | CatalogError::NoMatchingVersion { .. },
        )
        | RegistryError::MissingDependency { .. } => IpcError::NotFound(msg),
        // Nothing that meets a requirement is "not found" wherever it is met (info or
        // install); requirements that exclude each other are refused.
        RegistryError::Catalog(CatalogError::Resolve(ResolveError::NoSolution {
            missing,
            unmatched,
            ..
        })) if !missing.is_empty() || !unmatched.is_empty() => IpcError::NotFound(msg),
        RegistryError::Catalog(
            CatalogError::Equivocated { .. }
            | CatalogError::AlreadyPublished { .. }
            | CatalogError::NotNewer { .. }
            | CatalogError::Resolve(_)
            | CatalogError::Trust(_),
        )
        | RegistryError::DisputedName { .. }
        | RegistryError::NotYanked { .. }
        | RegistryError::RefusedBefore(_)
        | RegistryError::Trust(_) => IpcError::Refused(msg),
        RegistryError::Pack(_) => IpcError::Package(msg),
        RegistryError::Index(IndexError::InvalidQuery(_))
        | RegistryError::Catalog(CatalogError::Graph(
            GraphError::TooLong { .. }
            | GraphError::Syntax(_)
            | GraphError::TimedOut(_)
            | GraphError::TooLarge
            | GraphError::Evaluation(_),
        )) => IpcError::BadRequest(msg),
        RegistryError::Network(_) | RegistryError::Fetch(_) => IpcError::Network(msg),
        RegistryError::Catalog(
            CatalogError::Record(_)
            | CatalogError::Store(_)
            | CatalogError::Index(_)
            | CatalogError::Internal(_),
        )
        | RegistryError::Record(_)
        | RegistryError::Store(_)
        | RegistryError::Index(_)
        | RegistryError::Internal(_) => IpcError::Internal(msg),
    }
}

/// What to do about a registry failure, where the daemon can say better than its kind.
fn hint_for(e: &RegistryError) -> Option<String> {
    let trust = |t: &TrustError| match t {
        TrustError::NotOwner { name, .. } => Some(format!(
            "'{name}' belongs to another key: only its owner can publish or yank it; publish \
             under another name"
        )),
        TrustError::NotAllowed { .. } => {
            Some("this node's [trust] allowlist in config.toml does not list the key".into())
        }
        _ => None,
    };
    match e {
        RegistryError::NotYanked { name, .. } => Some(format!(
            "'agora versions {name}' marks the versions that are yanked"
        )),
        RegistryError::Catalog(c) => match c {
            CatalogError::NotFound { name, .. } => {
                Some(format!("look for the name with 'agora search {name}'"))
            }
            CatalogError::VersionNotFound { name, .. }
            | CatalogError::NoMatchingVersion { name, .. } => Some(format!(
                "the name is right; see 'agora versions {name}' for the versions there are"
            )),
            CatalogError::Equivocated { name, .. } => Some(format!(
                "its owner signed two different releases of that version; choose another \
                 ('agora versions {name}')"
            )),
            CatalogError::AlreadyPublished { .. } => Some(
                "a published version never changes: raise `version` in package.toml and \
                 publish again"
                    .into(),
            ),
            CatalogError::NotNewer { highest, .. } => Some(format!(
                "versions of a name only increase: use a version above {highest} in \
                 package.toml"
            )),
            CatalogError::Resolve(ResolveError::NoSolution {
                missing, unmatched, ..
            }) => Some(match (missing.first(), unmatched.first()) {
                (Some(name), _) => format!("look for the name with 'agora search {name}'"),
                (None, Some(d)) => {
                    format!("see 'agora versions {}' for the versions there are", d.name)
                }
                (None, None) => "the lines above say which requirements exclude each other: \
                                 change one (agora install NAME@REQ)"
                    .into(),
            }),
            CatalogError::Trust(t) => trust(t),
            CatalogError::Graph(GraphError::TimedOut(_)) => Some(
                "bind more of the patterns (a name, a category), or raise sparql_time_limit in \
                 config.toml"
                    .into(),
            ),
            CatalogError::Graph(GraphError::Syntax(_)) => {
                Some("docs/RDF.md describes the graph and shows queries over it".into())
            }
            _ => None,
        },
        RegistryError::Trust(t) => trust(t),
        RegistryError::DisputedName { name, .. } => Some(format!(
            "several keys claim '{name}' on the DHT; wait for a peer that holds it to sync, or \
             add its owner to [trust] allowlist"
        )),
        _ => None,
    }
}

/// Runs `local`; if the catalog lacks the package or version it needs, looks `name` up on the
/// DHT and, if that brought something, runs it again.
pub(crate) async fn with_lookup<T, F>(
    registry: &Arc<Registry>,
    name: &PackageName,
    req: &VersionReq,
    local: impl Fn() -> F,
) -> Result<T, IpcError>
where
    F: std::future::Future<Output = Result<T, RegistryError>>,
{
    let result = match local().await {
        Err(
            e @ RegistryError::Catalog(
                CatalogError::NotFound { .. }
                | CatalogError::VersionNotFound { .. }
                | CatalogError::NoMatchingVersion { .. },
            ),
        ) => {
            if registry.look_up(name, req).await? {
                local().await
            } else {
                Err(e)
            }
        }
        other => other,
    };
    match result {
        Err(e @ RegistryError::Catalog(CatalogError::NotFound { .. })) => {
            Err(with_suggestion(registry, name, e.into()).await)
        }
        other => other.map_err(IpcError::from),
    }
}

/// `error` about a name the catalog does not have, with the nearest name it has as the hint
/// ("did you mean"), found by the typo-tolerant search.
pub(crate) async fn with_suggestion(
    registry: &Arc<Registry>,
    name: &PackageName,
    error: IpcError,
) -> IpcError {
    let query = SearchQuery {
        limit: 5,
        ..SearchQuery::text(name.as_str())
    };
    let nearest = match registry.search(query).await {
        Ok(found) => found.hits.into_iter().find(|h| h.name != name.as_str()),
        Err(_) => None,
    };
    match nearest {
        Some(hit) => IpcError::Hinted {
            error: Box::new(error.kind().clone()),
            hint: format!("did you mean '{}'? ('agora info {}')", hit.name, hit.name),
        },
        None => error,
    }
}

pub(crate) fn key_error(e: KeyFileError) -> IpcError {
    match e {
        KeyFileError::NoPublisherKey { .. } => IpcError::NoKey(e.to_string()),
        KeyFileError::Exists { .. } => IpcError::Refused(e.to_string()).hinted(
            "this node has its publisher key already, and the names it owns stay with it; \
             'agora status' shows it",
        ),
        other => IpcError::Internal(other.to_string()),
    }
}

/// A release as the CLI shows it.
pub fn release_info(r: &ReleaseRecord, yanked: bool) -> ReleaseInfo {
    body_info(&r.body, r.id().to_hex(), yanked)
}

/// A release body as the CLI shows it (`record_id` is empty for an unsigned dry run).
pub(crate) fn body_info(b: &ReleaseBody, record_id: String, yanked: bool) -> ReleaseInfo {
    ReleaseInfo {
        name: b.name.to_string(),
        version: b.version.to_string(),
        description: b.meta.description.clone(),
        category: b.meta.category.clone(),
        author: b.meta.author.clone(),
        license: b.meta.license.clone(),
        repository: b.meta.repository.clone(),
        tags: b.meta.tags.clone(),
        keywords: b.meta.keywords.clone(),
        dependencies: b.dependencies.iter().map(ToString::to_string).collect(),
        sha256: b.archive.id.to_hex(),
        size: b.archive.size,
        publisher: b.publisher.to_hex(),
        published_at: b.published_at,
        record_id,
        yanked,
        yank_reason: None,
    }
}

/// Whether the release `r` is yanked, and the reason its yanks give.
pub(crate) fn yank_of(registry: &Registry, r: &ReleaseRecord) -> (bool, Option<String>) {
    registry
        .view()
        .versions(&r.body.name)
        .ok()
        .and_then(|vs| vs.into_iter().find(|v| v.version == r.body.version))
        .map_or((false, None), |v| (v.yanked, v.yank_reason))
}
