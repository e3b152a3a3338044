//! The SPARQL 1.1 Protocol endpoint (`/sparql`): `GET ?query=`, and `POST` with the query as
//! an `application/sparql-query` body or a `query=` form field. Read-only: an update is not
//! a query and is refused as malformed. The answer's format follows `Accept` (docs/RDF.md):
//! JSON, XML, CSV or TSV for solutions and booleans, Turtle, N-Triples, JSON-LD or RDF/XML for
//! triples, JSON and Turtle when it names none of them.

use std::sync::Arc;

use agora_protocol::ipc::{IpcError, Request, Response as IpcResponse};
use agora_protocol::limits::MAX_SPARQL_QUERY_BYTES;
use agora_protocol::sparql::{ResultsFormat, TriplesFormat};
use axum::body::Body;
use axum::extract::{Query, Request as HttpRequest, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Gateway, ask, error, unexpected};

/// Bytes of a POST body read: a form encodes a query in up to three times its length.
const MAX_BODY_BYTES: usize = 3 * MAX_SPARQL_QUERY_BYTES + 64;

#[derive(Deserialize)]
pub(super) struct QueryParams {
    query: Option<String>,
}

pub(super) async fn get(
    State(g): State<Arc<Gateway>>,
    headers: HeaderMap,
    Query(p): Query<QueryParams>,
) -> Response {
    match p.query {
        Some(query) => answer(&g, &headers, query).await,
        None => error(IpcError::BadRequest(
            "no query: send it as ?query=, or POST it as application/sparql-query".into(),
        )),
    }
}

pub(super) async fn post(State(g): State<Arc<Gateway>>, request: HttpRequest) -> Response {
    let headers = request.headers().clone();
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return error(IpcError::BadRequest(format!(
                "the request body is over {MAX_BODY_BYTES} bytes; a query may be {MAX_SPARQL_QUERY_BYTES}"
            )));
        }
    };
    let query = match media_type.as_deref() {
        Some("application/sparql-query") => {
            String::from_utf8(body.to_vec()).map_err(|_| "the query is not UTF-8".to_owned())
        }
        Some("application/x-www-form-urlencoded") => {
            form_query(&body).ok_or_else(|| "the form has no query field".to_owned())
        }
        other => Err(format!(
            "a POSTed query is application/sparql-query or a form (application/x-www-form-urlencoded), not {}",
            other.unwrap_or("a body without Content-Type")
        )),
    };
    match query {
        Ok(query) => answer(&g, &headers, query).await,
        Err(why) => error(IpcError::BadRequest(why)),
    }
}

/// The `query` field of a form.
fn form_query(body: &[u8]) -> Option<String> {
    let Query(p) = Query::<QueryParams>::try_from_uri(
        &format!("/?{}", std::str::from_utf8(body).ok()?)
            .parse()
            .ok()?,
    )
    .ok()?;
    p.query
}

async fn answer(g: &Gateway, headers: &HeaderMap, sparql: String) -> Response {
    let Some((results, triples)) = negotiate(headers) else {
        let body = serde_json::json!({
            "error": "not_acceptable",
            "message": "Accept names no format this endpoint writes: application/sparql-results+json, application/sparql-results+xml, text/csv, text/tab-separated-values, text/turtle, application/n-triples, application/ld+json, application/rdf+xml",
        });
        return (StatusCode::NOT_ACCEPTABLE, axum::Json(body)).into_response();
    };
    match ask(
        g,
        Request::Query {
            sparql,
            results,
            triples,
        },
    )
    .await
    {
        Ok(IpcResponse::Answer { media_type, body }) => {
            ([(header::CONTENT_TYPE, media_type)], Body::from(body)).into_response()
        }
        Ok(other) => unexpected(&other),
        Err(e) => error(e),
    }
}

/// The formats `Accept` prefers (highest `q` first, then in the order given), each
/// defaulting where it names none of its kind; `None` if it names formats of neither kind and
/// no wildcard.
fn negotiate(headers: &HeaderMap) -> Option<(ResultsFormat, TriplesFormat)> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(Default::default());
    };
    let mut ranges: Vec<(f32, usize, &str)> = accept
        .split(',')
        .enumerate()
        .filter_map(|(i, range)| {
            let mut parts = range.split(';');
            let media_type = parts.next()?.trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (q > 0.0).then_some((q, i, media_type))
        })
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let results = ranges
        .iter()
        .find_map(|r| ResultsFormat::from_media_type(r.2));
    let triples = ranges
        .iter()
        .find_map(|r| TriplesFormat::from_media_type(r.2));
    let wildcard = ranges.iter().any(|r| r.2.ends_with("/*"));
    if results.is_none() && triples.is_none() && !wildcard {
        return None;
    }
    Some((results.unwrap_or_default(), triples.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(value: &str) -> Option<(ResultsFormat, TriplesFormat)> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        negotiate(&h)
    }

    #[test]
    fn accept_picks_the_preferred_format_of_each_kind() {
        assert_eq!(
            negotiate(&HeaderMap::new()),
            Some((ResultsFormat::Json, TriplesFormat::Turtle))
        );
        assert_eq!(
            accept("text/csv;q=0.5, application/sparql-results+xml, application/n-triples"),
            Some((ResultsFormat::Xml, TriplesFormat::NTriples))
        );
        assert_eq!(
            accept("text/tab-separated-values, text/csv"),
            Some((ResultsFormat::Tsv, TriplesFormat::Turtle))
        );
        assert_eq!(
            accept("application/rdf+xml;q=0, */*;q=0.1"),
            Some((ResultsFormat::Json, TriplesFormat::Turtle))
        );
        assert_eq!(accept("text/html"), None);
        assert_eq!(accept("text/turtle;q=0"), None);
    }
}
