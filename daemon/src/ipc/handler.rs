//! Answers IPC requests from the registry and the network, and turns every failure into an
//! [`IpcError`] whose kind tells the CLI what to suggest.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use agora_protocol::ipc::{
    FetchedInfo, IpcError, PeerInfo, Progress, PublishedInfo, ReleaseInfo, Request, Response,
    ServerMessage, StatusInfo, VersionEntry,
};
use agora_protocol::paths::Paths;
use agora_protocol::records::{ReleaseBody, ReleaseRecord};
use agora_protocol::{ContentId, Dependency, PackageName, Version, VersionReq};
use std::sync::atomic::Ordering;
use tokio::sync::{Notify, mpsc};

use crate::index::IndexError;
use crate::keys::{self, KeyFileError};
use crate::registry::resolve::ResolveError;
use crate::registry::{Registry, RegistryError};
use crate::telemetry::LogControl;

/// What request handlers can reach.
pub struct Context {
    pub registry: Arc<Registry>,
    pub paths: Paths,
    /// Notified when a client asks the daemon to stop.
    pub shutdown: Arc<Notify>,
    /// Changes the log filter; `None` when this process did not install the logger.
    pub log: Option<LogControl>,
    pub started: Instant,
    /// The HTTP gateway's address, when it is on.
    pub http: Option<SocketAddr>,
    /// This node's publisher key (hex) once it is known: read from its file at most until it
    /// exists, instead of on every `status`.
    publisher: OnceLock<String>,
}

impl Context {
    pub fn new(registry: Arc<Registry>, paths: Paths) -> Self {
        Self {
            registry,
            paths,
            shutdown: Arc::new(Notify::new()),
            log: None,
            started: Instant::now(),
            http: None,
            publisher: OnceLock::new(),
        }
    }

    /// The publisher key, if this node has one.
    fn publisher(&self) -> Option<String> {
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

type Outbox = mpsc::Sender<ServerMessage>;

async fn progress(out: &Outbox, id: u64, step: &str) {
    let _ = out
        .send(ServerMessage::Progress {
            id,
            progress: Progress::Step(step.into()),
        })
        .await;
}

fn bad(e: impl std::fmt::Display) -> IpcError {
    IpcError::BadRequest(e.to_string())
}

fn name(s: &str) -> Result<PackageName, IpcError> {
    s.parse().map_err(bad)
}

fn version(s: &str) -> Result<Version, IpcError> {
    s.parse()
        .map_err(|e| bad(format!("invalid version {s:?}: {e}")))
}

impl From<RegistryError> for IpcError {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::NotFound { .. }
            | RegistryError::VersionNotFound { .. }
            | RegistryError::NoMatchingVersion { .. }
            | RegistryError::Resolve(ResolveError::Missing { .. }) => Self::NotFound(msg),
            RegistryError::Equivocated { .. }
            | RegistryError::AlreadyPublished { .. }
            | RegistryError::NotNewer { .. }
            | RegistryError::DisputedName { .. }
            | RegistryError::RefusedBefore(_)
            | RegistryError::Trust(_)
            | RegistryError::Resolve(_) => Self::Refused(msg),
            RegistryError::Pack(_) => Self::Package(msg),
            RegistryError::Index(IndexError::InvalidQuery(_)) => Self::BadRequest(msg),
            RegistryError::Network(_) | RegistryError::Fetch(_) => Self::Network(msg),
            RegistryError::Record(_)
            | RegistryError::Store(_)
            | RegistryError::Index(_)
            | RegistryError::Internal(_) => Self::Internal(msg),
        }
    }
}

/// Most names one resolution looks up on the DHT (each lookup is two DHT queries).
const MAX_LOOKUPS_PER_RESOLVE: usize = 64;

/// Runs `local`; if the catalog lacks the package or version it needs, looks `name` up on the
/// DHT and, if that brought something, runs it again.
async fn with_lookup<T, F>(
    registry: &Arc<Registry>,
    name: &PackageName,
    req: &VersionReq,
    local: impl Fn() -> F,
) -> Result<T, RegistryError>
where
    F: std::future::Future<Output = Result<T, RegistryError>>,
{
    match local().await {
        Err(
            e @ (RegistryError::NotFound { .. }
            | RegistryError::VersionNotFound { .. }
            | RegistryError::NoMatchingVersion { .. }),
        ) => {
            if registry.look_up(name, req).await? {
                local().await
            } else {
                Err(e)
            }
        }
        other => other,
    }
}

fn key_error(e: KeyFileError) -> IpcError {
    match e {
        KeyFileError::NoPublisherKey { .. } => IpcError::NoKey(e.to_string()),
        KeyFileError::Exists { .. } => IpcError::Refused(e.to_string()),
        other => IpcError::Internal(other.to_string()),
    }
}

/// A release as the CLI shows it.
pub fn release_info(r: &ReleaseRecord, yanked: bool) -> ReleaseInfo {
    body_info(&r.body, r.id().to_hex(), yanked)
}

/// A release body as the CLI shows it (`record_id` is empty for an unsigned dry run).
fn body_info(b: &ReleaseBody, record_id: String, yanked: bool) -> ReleaseInfo {
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
    }
}

fn yanked(registry: &Registry, r: &ReleaseRecord) -> bool {
    registry
        .catalog
        .versions(&r.body.name)
        .map(|vs| vs.iter().any(|v| v.version == r.body.version && v.yanked))
        .unwrap_or(false)
}

/// Answers one request.
pub async fn handle(
    ctx: &Context,
    id: u64,
    request: Request,
    out: &Outbox,
) -> Result<Response, IpcError> {
    let registry = &ctx.registry;
    let net = registry.network();
    let network = |e: crate::network::NetworkError| IpcError::Network(e.to_string());
    match request {
        Request::Status => {
            let info = net.info().await.map_err(network)?;
            let usage = registry.blobs.usage();
            let stats = &registry.stats;
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            Ok(Response::Status(StatusInfo {
                peer_id: info.peer_id.to_string(),
                listen_addrs: info.listen_addrs.iter().map(ToString::to_string).collect(),
                external_addrs: info
                    .external_addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                peers: info.connected_peers.len() as u32,
                routing_table: info.routing_table_size as u32,
                catalog_size: registry.catalog.record_count() as u64,
                packages: registry.catalog.package_count() as u64,
                indexed: registry.catalog.indexed_count(),
                search_index: registry.catalog.index_state(),
                cache_bytes: usage.cached_bytes,
                cache_quota: usage.quota,
                store_bytes: usage.cached_bytes + usage.kept_bytes,
                cache_hits: load(&stats.cache_hits),
                cache_misses: load(&stats.cache_misses),
                uptime_secs: ctx.started.elapsed().as_secs(),
                version: env!("CARGO_PKG_VERSION").into(),
                log_level: ctx
                    .log
                    .as_ref()
                    .map(LogControl::current)
                    .unwrap_or_default(),
                http: ctx.http.map(|a| a.to_string()),
                publisher: ctx.publisher(),
                data_dir: ctx.paths.data_dir.display().to_string(),
                repair: registry.repair(),
                store_check: registry.store_check(),
            }))
        }
        Request::Peers => {
            let peers = net.peers().await.map_err(network)?;
            Ok(Response::Peers(
                peers
                    .into_iter()
                    .map(|p| {
                        let score = registry.reputation_of(&p).1;
                        PeerInfo {
                            peer_id: p.to_string(),
                            score: score.is_finite().then_some(score),
                        }
                    })
                    .collect(),
            ))
        }
        Request::Connect { addr } => {
            let addr: libp2p::Multiaddr = addr
                .parse()
                .map_err(|e| bad(format!("invalid multiaddr {addr:?}: {e}")))?;
            let peer = net.dial(addr).await.map_err(network)?;
            Ok(Response::Connected {
                peer_id: peer.to_string(),
            })
        }
        // The connection notifies `ctx.shutdown` once this answer is written, so the client
        // always hears it before the daemon goes away.
        Request::Shutdown => Ok(Response::ShuttingDown),
        Request::Keygen => {
            let dir = ctx.paths.keys_dir.clone();
            let secret = tokio::task::spawn_blocking(move || keys::generate_publisher_key(&dir))
                .await
                .map_err(|e| IpcError::Internal(e.to_string()))?
                .map_err(key_error)?;
            let publisher = secret.public().to_hex();
            let _ = ctx.publisher.set(publisher.clone());
            Ok(Response::Key { publisher })
        }
        Request::Publish { dir, dry_run } => {
            let dir = PathBuf::from(dir);
            if !dir.is_absolute() {
                return Err(bad(format!("{} is not an absolute path", dir.display())));
            }
            let secret = keys::publisher_key(&ctx.paths.keys_dir).map_err(key_error)?;
            if dry_run {
                progress(out, id, "packing").await;
                let body = registry.dry_run(dir, secret.public()).await?;
                let release = body_info(&body, String::new(), false);
                return Ok(Response::Published(PublishedInfo {
                    release,
                    published: false,
                    gossiped: false,
                }));
            }
            progress(out, id, "packing, signing and storing").await;
            let published = registry.publish(dir, &secret).await?;
            Ok(Response::Published(PublishedInfo {
                release: release_info(&published.record, false),
                published: true,
                gossiped: published.gossiped,
            }))
        }
        Request::Search(query) => Ok(Response::Search(registry.search(query).await?)),
        Request::Info { name: n, req } => {
            let n = name(&n)?;
            let req = match req.as_deref() {
                None => VersionReq::STAR,
                Some(r) => agora_protocol::dependency::parse_req(r).map_err(bad)?,
            };
            // `=x.y.z` is a pin (a lockfile's): exactly that release, yanked or not.
            let exact = match req.comparators.as_slice() {
                [c] if c.op == semver::Op::Exact && c.minor.is_some() && c.patch.is_some() => {
                    Some(Version {
                        major: c.major,
                        minor: c.minor.unwrap_or(0),
                        patch: c.patch.unwrap_or(0),
                        pre: c.pre.clone(),
                        build: Default::default(),
                    })
                }
                _ => None,
            };
            let record = with_lookup(registry, &n, &req, || {
                let (n, req, exact) = (n.clone(), req.clone(), exact.clone());
                registry.read(move |c| match &exact {
                    Some(v) => c.release(&n, v),
                    None => c.get(&n, &req),
                })
            })
            .await?;
            let y = yanked(registry, &record);
            Ok(Response::Release(release_info(&record, y)))
        }
        Request::Versions { name: n } => {
            let n = name(&n)?;
            let versions = with_lookup(registry, &n, &VersionReq::STAR, || async {
                registry.catalog.versions(&n)
            })
            .await?;
            Ok(Response::Versions(
                versions
                    .into_iter()
                    .map(|v| VersionEntry {
                        version: v.version.to_string(),
                        yanked: v.yanked,
                        equivocated: v.equivocated,
                    })
                    .collect(),
            ))
        }
        Request::Resolve { roots } => {
            let roots: Vec<Dependency> = roots
                .iter()
                .map(|r| r.parse().map_err(bad))
                .collect::<Result<_, _>>()?;
            // Names the catalog lacks are looked up on the DHT, then resolution starts over.
            let mut lookups = 0;
            let resolved = loop {
                let r = roots.clone();
                let failed = match registry.read(move |c| c.resolve(&r)).await {
                    Ok(resolved) => break resolved,
                    Err(e) => e,
                };
                let (missing, req) = match &failed {
                    RegistryError::Resolve(ResolveError::Missing { name, .. }) => {
                        (name, VersionReq::STAR)
                    }
                    RegistryError::Resolve(ResolveError::Unsatisfiable {
                        name,
                        requirements,
                        ..
                    }) => (name, requirements[0].1.clone()),
                    _ => return Err(failed.into()),
                };
                // Nothing new found: the resolution would fail the same way again.
                if lookups == MAX_LOOKUPS_PER_RESOLVE || !registry.look_up(missing, &req).await? {
                    return Err(failed.into());
                }
                lookups += 1;
            };
            let records = registry
                .read(move |c| {
                    resolved
                        .iter()
                        .map(|p| c.release(&p.name, &p.version))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await?;
            Ok(Response::Resolved(
                records.iter().map(|r| release_info(r, false)).collect(),
            ))
        }
        Request::Fetch {
            name: n,
            version: v,
        } => {
            progress(out, id, "fetching").await;
            let sender = out.clone();
            // Progress is best effort: a client that reads slowly misses updates, not data.
            let on_bytes: crate::registry::fetch::ProgressFn = Box::new(move |done, total| {
                let _ = sender.try_send(ServerMessage::Progress {
                    id,
                    progress: Progress::Bytes { done, total },
                });
            });
            let (n, v) = (name(&n)?, version(&v)?);
            let pin = VersionReq::parse(&format!("={v}")).map_err(bad)?;
            with_lookup(registry, &n, &pin, || {
                let (n, v) = (n.clone(), v.clone());
                registry.read(move |c| c.release(&n, &v))
            })
            .await?;
            let fetched = registry.fetch_with_progress(&n, &v, Some(on_bytes)).await?;
            Ok(Response::Fetched(FetchedInfo {
                path: fetched.path.display().to_string(),
                sha256: ContentId::to_hex(&fetched.content),
                size: fetched.size,
                cached: fetched.cached,
                providers: fetched
                    .served_by
                    .iter()
                    .map(|(p, _)| p.to_string())
                    .collect(),
            }))
        }
        Request::Yank {
            name: n,
            version: v,
            reason,
        } => {
            let secret = keys::publisher_key(&ctx.paths.keys_dir).map_err(key_error)?;
            registry
                .yank(&name(&n)?, &version(&v)?, reason, &secret)
                .await?;
            Ok(Response::Yanked)
        }
        Request::SetLogLevel { filter } => {
            let log = ctx.log.as_ref().ok_or_else(|| {
                IpcError::Refused("this daemon's logger cannot be changed at run time".into())
            })?;
            log.set(&filter).map_err(bad)?;
            tracing::info!(%filter, "log filter changed");
            Ok(Response::LogLevel { filter })
        }
    }
}
