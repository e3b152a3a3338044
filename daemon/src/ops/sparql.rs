//! SPARQL over the catalog's graph and its export, on blocking threads, each query with its
//! time limit.

use std::sync::Arc;
use std::time::Duration;

use agora_protocol::sparql::{ResultsFormat, TriplesFormat};

use super::{Registry, RegistryError, blocking};
use crate::catalog::CatalogError;
use crate::graph::{Answer, CancellationToken};

/// How long a SPARQL query may run by default: the queries of docs/RDF.md answer in
/// milliseconds over 100,000 releases; one that runs for seconds is a cross product, and it
/// holds a blocking thread and a core while it runs.
pub const TIME_LIMIT: Duration = Duration::from_secs(10);

impl Registry {
    /// Answers a SPARQL query, stopping it at the registry's time limit.
    pub async fn sparql(
        self: &Arc<Self>,
        query: String,
        results: ResultsFormat,
        triples: TriplesFormat,
    ) -> Result<Answer, RegistryError> {
        let cancel = CancellationToken::new();
        let limit = self.sparql_time_limit;
        let timer = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                tokio::time::sleep(limit).await;
                cancel.cancel();
            }
        });
        // The limit counts from here: the graph is brought up to date inside it too.
        let secs = limit.as_secs().max(1);
        let answer = self
            .read(move |c| c.sparql(&query, results, triples, cancel, secs))
            .await;
        timer.abort();
        answer
    }

    /// Writes the whole graph in `format`, giving `piece` about a megabyte at a time (from a
    /// blocking thread). Returns the triples written.
    pub async fn export_graph(
        self: &Arc<Self>,
        format: TriplesFormat,
        mut piece: impl FnMut(Vec<u8>) -> Result<(), CatalogError> + Send + 'static,
    ) -> Result<u64, RegistryError> {
        let reg = self.clone();
        blocking(move || Ok(reg.catalog.export_graph(format, &mut piece)?)).await
    }
}
