//! GraphQL (`/graphql`, async-graphql): the catalog's search, packages with their versions and
//! releases, releases with their dependencies resolved, peers and status, each answered through
//! the same API as the CLI and the JSON routes; a subscription (`/graphql/ws`, GraphQL over
//! WebSocket) to the releases, yanks, unyanks and key rotations the node admits; GraphiQL at
//! `GET /graphql`. Read-only, with depth and complexity limits; the schema is
//! `docs/schema.graphql`, which a test checks against this code.

use std::sync::Arc;

use agora_protocol::ipc::{
    IpcError, PeerInfo, ReleaseInfo, Request, Response as IpcResponse, StatusInfo, VersionEntry,
};
use agora_protocol::limits::MAX_DEPENDENCIES;
use agora_protocol::search::{SearchHit, SearchQuery, SortOrder};
use async_graphql::{
    ComplexObject, Context, EmptyMutation, Enum, Error, ErrorExtensions, Object, Result, Schema,
    SimpleObject, Subscription,
};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::{Gateway, ask, status_of};
use crate::api::{self, Admitted, EventKind as AdmittedKind};

/// Deepest selection a query may make: a release's dependencies' dependencies, five levels
/// down, fit; a query nesting further is refused before it runs.
pub const MAX_DEPTH: usize = 16;
/// Most work one query may ask for, counting each field once and a list by the most items it
/// can hold: a search page of 1,000 hits with a dozen fields each fits, the same page with
/// every hit's package resolved does not.
pub const MAX_COMPLEXITY: usize = 20_000;
/// The versions a package's `releases` is counted as holding, for the complexity limit: more
/// than most packages have (a package with more is still answered whole).
const MAX_RELEASES: usize = 64;

pub type AgoraSchema = Schema<QueryRoot, EmptyMutation, SubscriptionRoot>;

pub fn schema(gateway: Option<Arc<Gateway>>) -> AgoraSchema {
    let builder = Schema::build(QueryRoot, EmptyMutation, SubscriptionRoot)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY);
    match gateway {
        Some(g) => builder.data(g).finish(),
        None => builder.finish(),
    }
}

/// Largest GraphQL request body: a query with its variables is a few kilobytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A query POSTed as JSON (`{"query", "variables", "operationName"}`), its body bounded.
pub async fn post(
    schema: AgoraSchema,
    request: axum::extract::Request,
) -> axum::response::Response {
    let refuse = |status: StatusCode, message: String| {
        let body = serde_json::json!({ "error": "bad_request", "message": message });
        (status, axum::Json(body)).into_response()
    };
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a GraphQL request is at most {MAX_BODY_BYTES} bytes"),
            );
        }
    };
    match serde_json::from_slice::<async_graphql::Request>(&body) {
        Ok(query) => axum::Json(schema.execute(query).await).into_response(),
        Err(e) => refuse(
            StatusCode::BAD_REQUEST,
            format!("a GraphQL request is JSON with a \"query\": {e}"),
        ),
    }
}

/// The GraphiQL page: queries go to `/graphql`, subscriptions to `/graphql/ws`.
pub async fn graphiql() -> impl IntoResponse {
    Html(
        async_graphql::http::GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("Agora")
            .finish(),
    )
}

fn gateway<'a>(ctx: &Context<'a>) -> &'a Gateway {
    ctx.data_unchecked::<Arc<Gateway>>()
}

/// The answer to `request`, or the GraphQL error its failure is (with the kind the JSON
/// routes give it, as `extensions.kind`).
async fn call(ctx: &Context<'_>, request: Request) -> Result<IpcResponse> {
    ask(gateway(ctx), request).await.map_err(error)
}

/// `Ok(None)` for "not found": a nullable field, not an error.
async fn found(ctx: &Context<'_>, request: Request) -> Result<Option<IpcResponse>> {
    match ask(gateway(ctx), request).await {
        Ok(r) => Ok(Some(r)),
        Err(e) if matches!(e.kind(), IpcError::NotFound(_)) => Ok(None),
        Err(e) => Err(error(e)),
    }
}

fn error(e: IpcError) -> Error {
    let (_, kind) = status_of(&e);
    Error::new(e.to_string()).extend_with(|_, ext| ext.set("kind", kind))
}

fn unexpected(r: IpcResponse) -> Error {
    Error::new(format!("daemon error: unexpected answer {r:?}"))
}

pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// Searches the catalog: typo-tolerant words, filters, an order and a page, with the
    /// count of matches per category.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "2 + limit as usize * child_complexity")]
    async fn search(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] text: String,
        category: Option<String>,
        tag: Option<String>,
        author: Option<String>,
        license: Option<String>,
        #[graphql(default)] sort: Sort,
        #[graphql(default = 20)] limit: u32,
        #[graphql(default = 0)] offset: u32,
    ) -> Result<SearchResults> {
        let query = SearchQuery {
            text,
            category,
            tag,
            author,
            license,
            sort: sort.into(),
            limit,
            offset,
        };
        query.check().map_err(|e| error(IpcError::BadRequest(e)))?;
        match call(ctx, Request::Search(query)).await? {
            IpcResponse::Search(r) => Ok(SearchResults {
                total: r.total,
                hits: r.hits.into_iter().map(Hit).collect(),
                categories: r
                    .categories
                    .into_iter()
                    .map(|(category, packages)| CategoryCount { category, packages })
                    .collect(),
            }),
            other => Err(unexpected(other)),
        }
    }

    /// A package by name (`null` if the catalog has none).
    async fn package(&self, ctx: &Context<'_>, name: String) -> Result<Option<Package>> {
        match found(ctx, Request::Versions { name: name.clone() }).await? {
            Some(IpcResponse::Versions(versions)) => Ok(Some(Package { name, versions })),
            Some(other) => Err(unexpected(other)),
            None => Ok(None),
        }
    }

    /// Exactly `name@version`, yanked or not (`null` if there is no such release).
    async fn release(
        &self,
        ctx: &Context<'_>,
        name: String,
        version: String,
    ) -> Result<Option<Release>> {
        release(ctx, name, Some(format!("={version}"))).await
    }

    /// The peers this node is connected to.
    async fn peers(&self, ctx: &Context<'_>) -> Result<Vec<Peer>> {
        match call(ctx, Request::Peers).await? {
            IpcResponse::Peers(peers) => Ok(peers.into_iter().map(Peer::from).collect()),
            other => Err(unexpected(other)),
        }
    }

    /// This node.
    async fn status(&self, ctx: &Context<'_>) -> Result<Status> {
        match call(ctx, Request::Status).await? {
            IpcResponse::Status(s) => Ok(Status::from(s)),
            other => Err(unexpected(other)),
        }
    }
}

/// The newest installable release of `name` meeting `req` (any when `None`).
async fn release(ctx: &Context<'_>, name: String, req: Option<String>) -> Result<Option<Release>> {
    match found(ctx, Request::Info { name, req }).await? {
        Some(IpcResponse::Release(r)) => Ok(Some(Release::from(r))),
        Some(other) => Err(unexpected(other)),
        None => Ok(None),
    }
}

/// The order of search results.
#[derive(Enum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// Best match first.
    #[default]
    Relevance,
    /// By name.
    Name,
    /// Newest release first.
    Newest,
}

impl From<Sort> for SortOrder {
    fn from(s: Sort) -> Self {
        match s {
            Sort::Relevance => Self::Relevance,
            Sort::Name => Self::Name,
            Sort::Newest => Self::Newest,
        }
    }
}

/// A page of search results.
#[derive(SimpleObject)]
pub struct SearchResults {
    /// Packages matching the query and filters, on every page.
    total: u64,
    hits: Vec<Hit>,
    /// Packages per category among all matches, most first.
    categories: Vec<CategoryCount>,
}

#[derive(SimpleObject)]
pub struct CategoryCount {
    category: String,
    packages: u64,
}

/// A package a search found, with its newest installable release's metadata.
pub struct Hit(SearchHit);

#[Object(name = "SearchHit")]
impl Hit {
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn version(&self) -> &str {
        &self.0.version
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn category(&self) -> Option<&str> {
        self.0.category.as_deref()
    }
    async fn author(&self) -> Option<&str> {
        self.0.author.as_deref()
    }
    async fn license(&self) -> Option<&str> {
        self.0.license.as_deref()
    }
    async fn tags(&self) -> &[String] {
        &self.0.tags
    }
    /// Seconds since the Unix epoch, as its publisher claims.
    async fn published_at(&self) -> u64 {
        self.0.published_at
    }
    /// The release found, whole.
    async fn release(&self, ctx: &Context<'_>) -> Result<Option<Release>> {
        release(
            ctx,
            self.0.name.clone(),
            Some(format!("={}", self.0.version)),
        )
        .await
    }
}

/// A package: its versions and releases.
pub struct Package {
    name: String,
    versions: Vec<VersionEntry>,
}

#[Object]
impl Package {
    async fn name(&self) -> &str {
        &self.name
    }
    /// Every version, oldest first, yanked and equivocated ones marked.
    async fn versions(&self) -> Vec<PackageVersion> {
        self.versions
            .iter()
            .cloned()
            .map(PackageVersion::from)
            .collect()
    }
    /// Every release, oldest first, yanked ones too (an equivocated version has none: its
    /// publisher signed two).
    #[graphql(complexity = "1 + MAX_RELEASES * child_complexity")]
    async fn releases(&self, ctx: &Context<'_>) -> Result<Vec<Release>> {
        let mut out = Vec::with_capacity(self.versions.len());
        for v in self.versions.iter().filter(|v| !v.equivocated) {
            if let Some(r) =
                release(ctx, self.name.clone(), Some(format!("={}", v.version))).await?
            {
                out.push(r);
            }
        }
        Ok(out)
    }
    /// The newest installable release (`null` when every version is yanked, equivocated or a
    /// pre-release).
    async fn latest(&self, ctx: &Context<'_>) -> Result<Option<Release>> {
        release(ctx, self.name.clone(), None).await
    }
    /// The newest installable release meeting `requirement` (`^1.2`, `>=2, <3`, `=1.0.0`).
    async fn release(&self, ctx: &Context<'_>, requirement: String) -> Result<Option<Release>> {
        release(ctx, self.name.clone(), Some(requirement)).await
    }
}

/// One version of a package.
#[derive(SimpleObject)]
pub struct PackageVersion {
    version: String,
    yanked: bool,
    /// Why it was yanked, as its owner said.
    yank_reason: Option<String>,
    /// Its publisher signed two different releases of it: it cannot be installed.
    equivocated: bool,
}

impl From<VersionEntry> for PackageVersion {
    fn from(v: VersionEntry) -> Self {
        Self {
            version: v.version,
            yanked: v.yanked,
            yank_reason: v.yank_reason,
            equivocated: v.equivocated,
        }
    }
}

/// One release, as `agora info` shows it.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Release {
    name: String,
    version: String,
    description: String,
    category: Option<String>,
    author: Option<String>,
    license: Option<String>,
    repository: Option<String>,
    tags: Vec<String>,
    keywords: Vec<String>,
    /// The archive's SHA-256, in hex.
    sha256: String,
    /// The archive's size in bytes.
    size: u64,
    /// The key that signed it, in hex.
    publisher: String,
    /// Seconds since the Unix epoch, as its publisher claims.
    published_at: u64,
    record_id: String,
    yanked: bool,
    yank_reason: Option<String>,
    #[graphql(skip)]
    requires: Vec<String>,
}

impl From<ReleaseInfo> for Release {
    fn from(r: ReleaseInfo) -> Self {
        Self {
            name: r.name,
            version: r.version,
            description: r.description,
            category: r.category,
            author: r.author,
            license: r.license,
            repository: r.repository,
            tags: r.tags,
            keywords: r.keywords,
            sha256: r.sha256,
            size: r.size,
            publisher: r.publisher,
            published_at: r.published_at,
            record_id: r.record_id,
            yanked: r.yanked,
            yank_reason: r.yank_reason,
            requires: r.dependencies,
        }
    }
}

#[ComplexObject]
impl Release {
    /// What it depends on, each with the release an install would take now.
    #[graphql(complexity = "1 + MAX_DEPENDENCIES * child_complexity")]
    async fn dependencies(&self) -> Vec<Dependency> {
        self.requires
            .iter()
            .map(|d| match d.split_once('@') {
                Some((name, req)) => Dependency {
                    name: name.into(),
                    requirement: req.into(),
                },
                None => Dependency {
                    name: d.clone(),
                    requirement: "*".into(),
                },
            })
            .collect()
    }
}

/// A dependency of a release.
pub struct Dependency {
    name: String,
    requirement: String,
}

#[Object]
impl Dependency {
    async fn name(&self) -> &str {
        &self.name
    }
    /// The versions it accepts (`*`: any).
    async fn requirement(&self) -> &str {
        &self.requirement
    }
    /// The newest installable release meeting the requirement (`null`: none in the catalog).
    async fn release(&self, ctx: &Context<'_>) -> Result<Option<Release>> {
        release(ctx, self.name.clone(), Some(self.requirement.clone())).await
    }
}

/// A connected peer.
#[derive(SimpleObject)]
pub struct Peer {
    peer_id: String,
    /// Its reputation (higher is better; none when banned).
    score: Option<f64>,
    /// Every connection to it goes through a relay.
    relayed: bool,
    /// The remote address of each connection to it.
    addresses: Vec<String>,
}

impl From<PeerInfo> for Peer {
    fn from(p: PeerInfo) -> Self {
        Self {
            peer_id: p.peer_id,
            score: p.score,
            relayed: p.relayed,
            addresses: p.addresses,
        }
    }
}

/// This node, as `agora status` shows it.
#[derive(SimpleObject)]
pub struct Status {
    peer_id: String,
    listen_addrs: Vec<String>,
    /// Addresses other peers confirmed they reach this node on.
    external_addrs: Vec<String>,
    peers: u32,
    routing_table: u32,
    /// Records in the catalog.
    catalog_size: u64,
    packages: u64,
    /// Packages a search can find.
    indexed: u64,
    cache_bytes: u64,
    cache_quota: u64,
    store_bytes: u64,
    uptime_secs: u64,
    version: String,
    /// This node's publisher key, if it has one.
    publisher: Option<String>,
    /// The fingerprint of the private network's key, when the node is in one.
    private_network: Option<String>,
    /// `public`, `private` or `unknown`.
    reachability: String,
}

impl From<StatusInfo> for Status {
    fn from(s: StatusInfo) -> Self {
        Self {
            peer_id: s.peer_id,
            listen_addrs: s.listen_addrs,
            external_addrs: s.external_addrs,
            peers: s.peers,
            routing_table: s.routing_table,
            catalog_size: s.catalog_size,
            packages: s.packages,
            indexed: s.indexed,
            cache_bytes: s.cache_bytes,
            cache_quota: s.cache_quota,
            store_bytes: s.store_bytes,
            uptime_secs: s.uptime_secs,
            version: s.version,
            publisher: s.publisher,
            private_network: s.private_network,
            reachability: s.reachability,
        }
    }
}

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The releases, yanks, unyanks and key rotations this node admits from now on, once
    /// they are durable, in the order it admits them. A client too slow to keep up is told
    /// how many it missed (an error), and the stream goes on.
    async fn catalog(&self, ctx: &Context<'_>) -> impl Stream<Item = Result<CatalogEvent>> {
        let events = api::catalog_events(&gateway(ctx).ctx);
        futures::stream::unfold(events, |mut events| async move {
            let next = match events.recv().await {
                Ok(a) => Ok(CatalogEvent::from(a)),
                Err(RecvError::Lagged(missed)) => Err(Error::new(format!(
                    "this subscription fell behind and missed {missed} events; the catalog \
                     (search, package) has them"
                ))),
                Err(RecvError::Closed) => return None,
            };
            Some((next, events))
        })
    }
}

/// What a catalog event is.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Release,
    Yank,
    Unyank,
    /// The name moved to another key.
    Rotation,
}

/// A record the node admitted.
#[derive(SimpleObject)]
pub struct CatalogEvent {
    kind: EventKind,
    name: String,
    /// The version released, yanked or unyanked (`null` for a rotation).
    version: Option<String>,
    record_id: String,
    /// The key that signed it, in hex (a rotation's: the key the name moved from).
    signer: String,
    /// A rotation's new owner, in hex.
    to: Option<String>,
}

impl From<Admitted> for CatalogEvent {
    fn from(a: Admitted) -> Self {
        Self {
            kind: match a.kind {
                AdmittedKind::Release => EventKind::Release,
                AdmittedKind::Yank => EventKind::Yank,
                AdmittedKind::Unyank => EventKind::Unyank,
                AdmittedKind::Rotation => EventKind::Rotation,
            },
            name: a.name.to_string(),
            version: a.version.map(|v| v.to_string()),
            record_id: a.record.to_string(),
            signer: a.signer.to_hex(),
            to: a.to.map(|k| k.to_hex()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/schema.graphql is the schema this code serves. `AGORA_WRITE_SCHEMA=1 cargo test
    /// -p agora-daemon schema_file` writes it after a change.
    #[test]
    fn the_schema_file_is_the_served_schema() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema.graphql");
        let served = schema(None).sdl();
        if std::env::var_os("AGORA_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &served).unwrap();
        }
        let file = std::fs::read_to_string(&path).unwrap();
        assert!(
            file == served,
            "docs/schema.graphql differs from the served schema; write it again with \
             AGORA_WRITE_SCHEMA=1 cargo test -p agora-daemon schema_file"
        );
    }
}
