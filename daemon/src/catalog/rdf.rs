//! What the catalog tells its RDF graph ([`crate::graph`]): the facts of each name, read
//! from the trust rules' state and the release records, and the queries and exports that
//! bring the graph up to date first.

use agora_protocol::PackageName;
use agora_protocol::records::CatalogRecord;
use agora_protocol::sparql::{ResultsFormat, TriplesFormat};

use super::{Catalog, CatalogError};
use crate::graph::{Answer, CancellationToken, PackageFacts, ReleaseFacts};
use crate::store::StoreError;

impl Catalog {
    /// Answers a SPARQL query over the catalog's graph, brought up to date first (built, the
    /// first time). Blocking; `cancel` stops it.
    pub fn sparql(
        &self,
        query: &str,
        results: ResultsFormat,
        triples: TriplesFormat,
        cancel: CancellationToken,
        limit_secs: u64,
    ) -> Result<Answer, CatalogError> {
        self.refresh_graph()?;
        Ok(self
            .graph
            .query(query, results, triples, cancel, limit_secs)?)
    }

    /// Writes the whole graph, brought up to date first, in `format`, a piece at a time.
    /// Returns the triples and bytes written. Blocking.
    pub fn export_graph(
        &self,
        format: TriplesFormat,
        piece: impl FnMut(Vec<u8>) -> Result<(), CatalogError>,
    ) -> Result<(u64, u64), CatalogError> {
        self.refresh_graph()?;
        self.graph.export(format, piece)
    }

    /// Triples in the graph (`None`: not built yet).
    pub fn graph_len(&self) -> Option<usize> {
        self.graph.is_built().then(|| self.graph.triple_count())
    }

    /// Writes the graphs of the names that changed since the last refresh (of every name,
    /// the first time).
    pub fn refresh_graph(&self) -> Result<(), CatalogError> {
        self.graph.refresh(
            || self.lock().trust.names().map(|(n, _)| n.clone()).collect(),
            |names| self.graph_facts(names),
        )
    }

    /// What the catalog holds of `names`; a name it does not know is left out.
    fn graph_facts(&self, names: &[PackageName]) -> Result<Vec<PackageFacts>, CatalogError> {
        let mut facts = Vec::with_capacity(names.len());
        let mut ids = Vec::new();
        // Under the lock: the names' states; after it, one read of all their records.
        let mut flags = Vec::new();
        {
            let cat = self.lock();
            for name in names {
                let Some(state) = cat.trust.name(name) else {
                    continue;
                };
                for (version, id) in state.releases.iter() {
                    ids.push(*id);
                    let yanks = state.is_yanked(version).then(|| {
                        state
                            .yanks(version)
                            .iter()
                            .map(|y| y.reason.clone())
                            .collect()
                    });
                    flags.push((facts.len(), yanks, state.is_equivocated(version)));
                }
                facts.push(PackageFacts {
                    name: name.clone(),
                    owner: state.owner,
                    latest: state.latest().cloned(),
                    releases: Vec::with_capacity(state.releases.len()),
                });
            }
        }
        let records = self.db.records(&ids)?;
        if records.len() != ids.len() {
            return Err(StoreError::Corrupt(format!(
                "{} of {} releases of the catalog are missing from the log",
                ids.len() - records.len(),
                ids.len()
            ))
            .into());
        }
        for (record, (package, yanks, equivocated)) in records.into_iter().zip(flags) {
            let CatalogRecord::Release(r) = record else {
                return Err(StoreError::Corrupt(
                    "a release id of the catalog names another kind of record".into(),
                )
                .into());
            };
            facts[package].releases.push(ReleaseFacts {
                body: r.body,
                yanks,
                equivocated,
            });
        }
        Ok(facts)
    }
}
