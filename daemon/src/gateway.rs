//! The optional HTTP gateway (axum): health and readiness probes, Prometheus metrics, and a
//! read-only JSON view of the catalog with archive downloads, for tools without libp2p.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the network event loop answers, else 503 |
//! | `GET /readyz` | 200 when the IPC socket is up, the node listens and (if bootstrap peers are configured) its routing table is not empty; else 503. JSON either way |
//! | `GET /metrics` | OpenMetrics text: Agora's metrics and libp2p's |
//! | `GET /v1/packages?q=&category=&tag=&author=&license=&sort=&limit=&offset=` | search results, as `agora search --json` |
//! | `GET /v1/packages/{name}` | newest installable release, as `agora info NAME --json` |
//! | `GET /v1/packages/{name}/versions` | as `agora versions NAME --json` |
//! | `GET /v1/packages/{name}/{version}` | that release, as `agora info NAME@=VERSION --json` |
//! | `GET /v1/packages/{name}/{version}/archive` | the verified archive (fetched first if needed), with `Content-Length`, `X-Agora-Sha256` and `ETag` |
//! | `GET /ggen/registry/index.json` | every package's newest installable release in ggen's registry index format ([`ggen`]) |
//! | `GET /graphql` (GraphiQL), `POST /graphql`, `/graphql/ws` (subscriptions) | GraphQL over the same API ([`graphql`], docs/schema.graphql) |
//! | `GET /sparql?query=`, `POST /sparql` | a SPARQL query over the catalog's graph (docs/RDF.md), answered in the format `Accept` asks for ([`sparql`]) |
//!
//! Requests go through the same handler as IPC requests, so the gateway answers exactly what
//! the CLI is told. Only reads are exposed; errors are JSON `{"error": KIND, "message": ...}`.
//!
//! A web page the user visits can make the browser send requests to loopback, and through a
//! name it controls that it points at 127.0.0.1 (DNS rebinding) it can read the answers too. So
//! every request passes [`HostPolicy`] first: the `Host` must be one the gateway answers for,
//! and a request a browser sends for another site is refused before it does anything.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agora_protocol::ipc::{IpcError, Request, Response as IpcResponse};
use agora_protocol::search::{SearchQuery, SortOrder};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request as HttpRequest, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::api::{self, Context};

pub mod ggen;
mod graphql;
mod sparql;

/// How long a probe waits for the network event loop.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Read size when streaming an archive.
const STREAM_CHUNK: usize = 256 * 1024;
/// Requests answered at once; beyond it the gateway answers 503 at once. Work that blocks
/// waits for the runtime's bounded blocking pool anyway, so more in flight would only queue.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 256;

/// What the gateway reads.
pub struct Gateway {
    pub ctx: Arc<Context>,
    /// Set once the IPC socket accepts connections.
    pub socket_up: AtomicBool,
    /// Bootstrap peers are configured, so readiness waits for the routing table.
    pub needs_bootstrap: bool,
    pub hosts: HostPolicy,
    /// Permits for requests in flight ([`MAX_REQUESTS_IN_FLIGHT`]).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// What ggen's registry index was last made from.
    pub ggen: ggen::Releases,
}

/// Which requests the gateway answers: those whose `Host` is `localhost`, an IP address (no
/// page can point an IP address elsewhere) or a configured name (`http_hosts`), and that a
/// browser did not send on behalf of another site: an `Origin` must be the gateway's own, and
/// `Sec-Fetch-Site` (which browsers send even where they send no `Origin`, as for an `<img>`)
/// must be `same-origin` or `none` (typed by the user).
#[derive(Clone, Debug, Default)]
pub struct HostPolicy {
    /// Lowercase host names, without ports.
    names: Vec<String>,
}

/// Why a request was refused before it reached a route.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostRefusal {
    #[error("the request has no Host header")]
    NoHost,
    #[error(
        "this gateway does not answer for host {0:?}: it answers for localhost, IP addresses and the names in http_hosts (config.toml)"
    )]
    Host(String),
    #[error(
        "requests from the web page at {0:?} are refused: only the gateway's own pages may call it"
    )]
    Origin(String),
    #[error(
        "a request the browser marks Sec-Fetch-Site: {0} is refused: only the gateway's own pages may call it"
    )]
    Site(String),
}

impl HostPolicy {
    /// Answers for `localhost`, IP addresses and `names` (lowercase host names).
    pub fn new(names: Vec<String>) -> Self {
        Self { names }
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<(), HostRefusal> {
        let host = headers
            .get(header::HOST)
            .ok_or(HostRefusal::NoHost)?
            .to_str()
            .map_err(|_| HostRefusal::Host("(not text)".into()))?;
        let authority: Authority = host
            .parse()
            .map_err(|_| HostRefusal::Host(host.to_owned()))?;
        if !self.answers_for(authority.host()) {
            return Err(HostRefusal::Host(host.to_owned()));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("(not text)");
            let own = origin
                .strip_prefix("http://")
                .is_some_and(|o| o.eq_ignore_ascii_case(host));
            if !own {
                return Err(HostRefusal::Origin(origin.to_owned()));
            }
        }
        if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.to_str().unwrap_or("(not text)");
            if !matches!(site, "same-origin" | "none") {
                return Err(HostRefusal::Site(site.to_owned()));
            }
        }
        Ok(())
    }

    fn answers_for(&self, host: &str) -> bool {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        bare.parse::<IpAddr>().is_ok()
            || host.eq_ignore_ascii_case("localhost")
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }
}

/// Refuses what [`HostPolicy`] refuses, before the route runs.
async fn guard(State(g): State<Arc<Gateway>>, request: HttpRequest, next: Next) -> Response {
    match g.hosts.check(request.headers()) {
        Ok(()) => match g.in_flight.clone().try_acquire_owned() {
            // Held until the response's head is made: a download streams on without it.
            Ok(_permit) => next.run(request).await,
            Err(_) => {
                let body = serde_json::json!({
                    "error": "busy",
                    "message": format!("{MAX_REQUESTS_IN_FLIGHT} requests are being answered; try again"),
                });
                (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
            }
        },
        Err(refusal) => {
            let (status, kind) = match refusal {
                HostRefusal::NoHost => (StatusCode::BAD_REQUEST, "bad_request"),
                HostRefusal::Host(_) => (StatusCode::MISDIRECTED_REQUEST, "misdirected"),
                HostRefusal::Origin(_) | HostRefusal::Site(_) => {
                    (StatusCode::FORBIDDEN, "forbidden")
                }
            };
            let body = serde_json::json!({ "error": kind, "message": refusal.to_string() });
            (status, axum::Json(body)).into_response()
        }
    }
}

/// Binds `addr` (refusing nothing: the caller chose it; loopback is the default).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
) -> std::io::Result<()> {
    axum::serve(listener, router(gateway)).await
}

pub fn router(gateway: Arc<Gateway>) -> Router {
    let schema = graphql::schema(Some(gateway.clone()));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/packages", get(search))
        .route("/v1/packages/{name}", get(newest))
        .route("/v1/packages/{name}/versions", get(versions))
        .route("/v1/packages/{name}/{version}", get(release))
        .route("/v1/packages/{name}/{version}/archive", get(archive))
        .route("/ggen/registry/index.json", get(ggen_index))
        .route("/sparql", get(sparql::get).post(sparql::post))
        .route(
            "/graphql",
            get(graphql::graphiql).post({
                let schema = schema.clone();
                move |request: HttpRequest| graphql::post(schema, request)
            }),
        )
        .route_service(
            "/graphql/ws",
            async_graphql_axum::GraphQLSubscription::new(schema),
        )
        .fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(gateway.clone(), guard))
        .with_state(gateway)
}

/// Any other path: a JSON 404 like every other error here, naming the routes there are.
async fn unknown_route(uri: axum::http::Uri) -> Response {
    let body = serde_json::json!({
        "error": "not_found",
        "message": format!(
            "no route {}; the routes are /healthz, /readyz, /metrics, /v1/packages, \
             /v1/packages/NAME, /v1/packages/NAME/versions, /v1/packages/NAME/VERSION, \
             /v1/packages/NAME/VERSION/archive, /ggen/registry/index.json, /sparql, /graphql \
             and /graphql/ws",
            uri.path()
        ),
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn healthz(State(g): State<Arc<Gateway>>) -> Response {
    match tokio::time::timeout(PROBE_TIMEOUT, g.ctx.network.info()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "network event loop not answering\n",
        )
            .into_response(),
    }
}

async fn readyz(State(g): State<Arc<Gateway>>) -> Response {
    let info = tokio::time::timeout(PROBE_TIMEOUT, g.ctx.network.info()).await;
    let (listening, peers, table) = match &info {
        Ok(Ok(i)) => (
            !i.listen_addrs.is_empty(),
            i.connected_peers.len(),
            i.routing_table_size,
        ),
        _ => (false, 0, 0),
    };
    let socket = g.socket_up.load(Ordering::SeqCst);
    let bootstrapped = !g.needs_bootstrap || table > 0;
    let ready = socket && listening && bootstrapped;
    let body = serde_json::json!({
        "ready": ready,
        "socket": socket,
        "listening": listening,
        "bootstrapped": bootstrapped,
        "peers": peers,
        "routing_table": table,
        // Not part of `ready`: the node serves while its index is rebuilt, and a search
        // waits for it.
        "search_index": g.ctx.registry.view().index_state(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(g): State<Arc<Gateway>>) -> Response {
    let text = g.ctx.metrics.encode();
    (
        [(header::CONTENT_TYPE, crate::obs::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    q: Option<String>,
    category: Option<String>,
    tag: Option<String>,
    author: Option<String>,
    license: Option<String>,
    sort: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

async fn search(State(g): State<Arc<Gateway>>, Query(p): Query<SearchParams>) -> Response {
    let sort = match p.sort.as_deref() {
        None | Some("relevance") => SortOrder::Relevance,
        Some("name") => SortOrder::Name,
        Some("newest") => SortOrder::Newest,
        Some(other) => {
            return error(IpcError::BadRequest(format!(
                "sort must be relevance, name or newest, not {other:?}"
            )));
        }
    };
    let defaults = SearchQuery::default();
    let query = SearchQuery {
        text: p.q.unwrap_or_default(),
        category: p.category,
        tag: p.tag,
        author: p.author,
        license: p.license,
        sort,
        limit: p.limit.unwrap_or(defaults.limit),
        offset: p.offset.unwrap_or(defaults.offset),
    };
    if let Err(e) = query.check() {
        return error(IpcError::BadRequest(e));
    }
    json(ask(&g, Request::Search(query)).await)
}

async fn newest(State(g): State<Arc<Gateway>>, Path(name): Path<String>) -> Response {
    json(ask(&g, Request::Info { name, req: None }).await)
}

async fn versions(State(g): State<Arc<Gateway>>, Path(name): Path<String>) -> Response {
    json(ask(&g, Request::Versions { name }).await)
}

async fn release(
    State(g): State<Arc<Gateway>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let req = Some(format!("={version}"));
    json(ask(&g, Request::Info { name, req }).await)
}

async fn archive(
    State(g): State<Arc<Gateway>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let fetched = match ask(&g, Request::Fetch { name, version }).await {
        Ok(IpcResponse::Fetched(f)) => f,
        Ok(other) => return unexpected(&other),
        Err(e) => return error(e),
    };
    // Opened at once: an eviction after this point cannot take the bytes away.
    let file = match tokio::fs::File::open(&fetched.path).await {
        Ok(f) => f,
        Err(e) => {
            return error(IpcError::Internal(format!(
                "archive {} vanished before it could be read: {e}",
                fetched.sha256
            )));
        }
    };
    // Exactly the release's size: a file that ended early breaks the response instead of
    // passing for a complete archive.
    let stream = futures::stream::unfold((fetched.size, file), |(left, mut f)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; STREAM_CHUNK.min(left as usize)];
        match f.read_exact(&mut buf).await {
            Ok(_) => {
                let rest = left - buf.len() as u64;
                Some((Ok::<_, std::io::Error>(buf), (rest, f)))
            }
            Err(e) => Some((Err(e), (0, f))),
        }
    });
    let etag = format!("\"{}\"", fetched.sha256);
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(fetched.size));
    for (name, value) in [("x-agora-sha256", fetched.sha256.clone()), ("etag", etag)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    response
}

async fn ggen_index(State(g): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    // The guard let the request through only for a Host the gateway answers for.
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return error(IpcError::BadRequest(
            "the request has no Host header".into(),
        ));
    };
    let base = format!("http://{host}");
    match g.ggen.get(&g.ctx).await {
        Ok(releases) => {
            axum::Json(ggen::index(&releases, &base, std::time::SystemTime::now())).into_response()
        }
        Err(e) => error(e),
    }
}

/// Runs a read-only request through the IPC handler (progress events are dropped).
async fn ask(g: &Gateway, request: Request) -> Result<IpcResponse, IpcError> {
    let (out, _progress) = mpsc::channel(1);
    api::dispatch(&g.ctx, 0, request, &out).await
}

fn json(result: Result<IpcResponse, IpcError>) -> Response {
    let value = match result {
        Ok(IpcResponse::Search(r)) => serde_json::to_value(r),
        Ok(IpcResponse::Release(r)) => serde_json::to_value(r),
        Ok(IpcResponse::Versions(v)) => serde_json::to_value(v),
        Ok(other) => return unexpected(&other),
        Err(e) => return error(e),
    };
    match value {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error(IpcError::Internal(e.to_string())),
    }
}

fn unexpected(r: &IpcResponse) -> Response {
    error(IpcError::Internal(format!("unexpected answer {r:?}")))
}

fn error(e: IpcError) -> Response {
    let (status, kind) = status_of(&e);
    let body = serde_json::json!({ "error": kind, "message": e.to_string() });
    (status, axum::Json(body)).into_response()
}

/// The HTTP status of a failure, and the kind the JSON routes and GraphQL name it by.
fn status_of(e: &IpcError) -> (StatusCode, &'static str) {
    match e.kind() {
        IpcError::BadRequest(_) | IpcError::VersionMismatch { .. } => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        IpcError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        IpcError::Refused(_) | IpcError::Package(_) | IpcError::NoKey(_) => {
            (StatusCode::CONFLICT, "refused")
        }
        IpcError::Network(_) => (StatusCode::BAD_GATEWAY, "network"),
        IpcError::Internal(_) | IpcError::Hinted { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_its_own_hosts_and_pages_are_answered() {
        let policy = HostPolicy::new(vec!["agora.lan".into()]);
        for host in [
            "localhost:4180",
            "LOCALHOST",
            "127.0.0.1:4180",
            "[::1]:4180",
            "192.0.2.7:80",
            "agora.lan:4180",
            "Agora.Lan",
        ] {
            assert_eq!(policy.check(&headers(&[("host", host)])), Ok(()), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:4180",
            "localhost.evil.example",
            "127.0.0.1.nip.io:4180",
        ] {
            assert_eq!(
                policy.check(&headers(&[("host", host)])),
                Err(HostRefusal::Host(host.into())),
                "{host}"
            );
        }
        assert_eq!(policy.check(&HeaderMap::new()), Err(HostRefusal::NoHost));

        let own = [
            ("host", "127.0.0.1:4180"),
            ("origin", "http://127.0.0.1:4180"),
        ];
        assert_eq!(policy.check(&headers(&own)), Ok(()));
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:4181",
            "https://127.0.0.1:4180",
            "null",
        ] {
            assert_eq!(
                policy.check(&headers(&[("host", "127.0.0.1:4180"), ("origin", origin)])),
                Err(HostRefusal::Origin(origin.into())),
                "{origin}"
            );
        }
        for (site, ok) in [
            ("same-origin", true),
            ("none", true),
            ("same-site", false),
            ("cross-site", false),
        ] {
            let got = policy.check(&headers(&[
                ("host", "localhost:4180"),
                ("sec-fetch-site", site),
            ]));
            let want = if ok {
                Ok(())
            } else {
                Err(HostRefusal::Site(site.into()))
            };
            assert_eq!(got, want, "{site}");
        }
    }
}
