//! SPARQL queries and exports of the catalog's graph (docs/RDF.md).

use agora_protocol::ipc::{IpcError, Progress, Response, ServerMessage};
use agora_protocol::sparql::{ResultsFormat, TriplesFormat};

use super::{Context, Outbox};
use crate::catalog::CatalogError;

pub(super) async fn query(
    ctx: &Context,
    sparql: String,
    results: ResultsFormat,
    triples: TriplesFormat,
) -> Result<Response, IpcError> {
    let answer = ctx.registry.sparql(sparql, results, triples).await?;
    Ok(Response::Answer {
        media_type: answer.media_type.into(),
        body: answer.body,
    })
}

/// Sends the graph as [`Progress::Data`] pieces, then the count.
pub(super) async fn export(
    ctx: &Context,
    id: u64,
    out: &Outbox,
    format: TriplesFormat,
) -> Result<Response, IpcError> {
    let out = out.clone();
    let (triples, bytes) = ctx
        .registry
        .export_graph(format, move |piece| {
            // On a blocking thread: waits while the client reads slower than the graph is
            // written, so that at most the channel's pieces are held.
            out.blocking_send(ServerMessage::Progress {
                id,
                progress: Progress::Data(piece),
            })
            .map_err(|_| CatalogError::Internal("the client went away during the export".into()))
        })
        .await?;
    Ok(Response::Exported { triples, bytes })
}
