//! SPARQL over the catalog's graph and its export, on blocking threads, each query with its
//! time limit.

use std::sync::Arc;
use std::time::Duration;

use agora_protocol::sparql::{ResultsFormat, TriplesFormat};

use super::{Registry, RegistryError, blocking};
use crate::catalog::CatalogError;
use crate::graph::{Answer, CancellationToken, GraphError};

/// How long a SPARQL query may run by default: the queries of docs/RDF.md answer in
/// milliseconds over 100,000 releases; one that runs for seconds is a cross product, and it
/// holds a blocking thread and a core while it runs.
pub const TIME_LIMIT: Duration = Duration::from_secs(10);
/// SPARQL queries evaluated at once. The evaluator looks at the cancellation only when it
/// reads the graph, so a query stopped at its limit in a product of sets it has already read
/// runs on (seconds, for a product of four) until it reads again: one slot keeps that to one
/// core, and the node's other work has the rest. Queries of docs/RDF.md take milliseconds;
/// others wait for the slot within their own time limit.
pub const SLOTS: usize = 1;

impl Registry {
    /// Answers a SPARQL query, stopping it at the registry's time limit. The answer comes at
    /// the limit even if the evaluation is in a stretch of work that does not look at the
    /// cancellation (a product of sets already read); the thread then ends at the next place
    /// that does, holding one of the [`SLOTS`] until it has.
    pub async fn sparql(
        self: &Arc<Self>,
        query: String,
        results: ResultsFormat,
        triples: TriplesFormat,
    ) -> Result<Answer, RegistryError> {
        let limit = self.sparql_time_limit;
        let secs = limit.as_secs().max(1);
        let timed_out = || RegistryError::from(CatalogError::from(GraphError::TimedOut(secs)));
        let deadline = tokio::time::Instant::now() + limit;
        // The limit counts from here: waiting for a slot and bringing the graph up to date
        // are inside it too.
        let slot = tokio::time::timeout_at(deadline, self.sparql_slots.clone().acquire_owned())
            .await
            .map_err(|_| timed_out())?
            .expect("the slots are never closed");
        let cancel = CancellationToken::new();
        let reg = self.clone();
        let token = cancel.clone();
        let running = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            reg.catalog
                .sparql(&query, results, triples, token, secs)
                .map_err(RegistryError::from)
        });
        match tokio::time::timeout_at(deadline, running).await {
            Ok(done) => done
                .map_err(|e| RegistryError::Internal(format!("the query's thread failed: {e}")))?,
            Err(_) => {
                cancel.cancel();
                Err(timed_out())
            }
        }
    }

    /// Writes the whole graph in `format`, giving `piece` about a megabyte at a time (from a
    /// blocking thread). Returns the triples and bytes written.
    pub async fn export_graph(
        self: &Arc<Self>,
        format: TriplesFormat,
        mut piece: impl FnMut(Vec<u8>) -> Result<(), CatalogError> + Send + 'static,
    ) -> Result<(u64, u64), RegistryError> {
        let reg = self.clone();
        blocking(move || Ok(reg.catalog.export_graph(format, &mut piece)?)).await
    }
}
