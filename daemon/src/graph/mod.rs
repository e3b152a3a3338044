//! The catalog as RDF (docs/RDF.md), in an in-memory Oxigraph store, and SPARQL over it.
//!
//! It is derived data, like the search index: the catalog in redb is the truth. Each package
//! is one named graph (see [`vocab`]), written whole from what the catalog says of the name,
//! so a change is never applied as a patch that could drift: writers only mark the names that
//! changed ([`CatalogGraph::mark`]), and [`CatalogGraph::refresh`], which every query runs
//! first, writes their graphs again. The store is built at the first query or export, not at
//! start: a node nobody asks in SPARQL keeps no copy of its catalog as triples. Queries see
//! the union of the packages' graphs as their default graph. Never called from the event loop.

pub mod vocab;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Mutex;

use agora_protocol::PackageName;
use agora_protocol::limits::{MAX_SPARQL_ANSWER_BYTES, MAX_SPARQL_QUERY_BYTES, MAX_SPARQL_ROWS};
use agora_protocol::sparql::{ResultsFormat, TriplesFormat};
use oxigraph::io::{JsonLdProfileSet, RdfFormat, RdfSerializer};
use oxigraph::model::{GraphNameRef, NamedOrBlankNodeRef};
use oxigraph::sparql::results::{QueryResultsFormat, QueryResultsSerializer};
use oxigraph::sparql::{QueryEvaluationError, QueryResults, SparqlEvaluator};
use oxigraph::store::{StorageError, Store};

pub use oxigraph::sparql::CancellationToken;
pub use vocab::{PackageFacts, ReleaseFacts};

use crate::lock;

/// Packages written in one transaction of a build: each transaction's quads are held in
/// memory until it commits.
const BUILD_CHUNK: usize = 1024;
/// Bytes of an export handed on at a time.
const EXPORT_PIECE: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("the query is {len} bytes; the limit is {MAX_SPARQL_QUERY_BYTES}")]
    TooLong { len: usize },
    #[error("malformed query: {0}")]
    Syntax(String),
    #[error("the query ran past its time limit of {0} s and was stopped")]
    TimedOut(u64),
    #[error(
        "the answer is over {MAX_SPARQL_ROWS} rows or {} MiB; narrow the query, page it with LIMIT and OFFSET, or use `agora export` for the whole graph",
        MAX_SPARQL_ANSWER_BYTES >> 20
    )]
    TooLarge,
    #[error("the query could not be answered: {0}")]
    Evaluation(String),
    #[error("RDF store: {0}")]
    Store(String),
}

impl From<StorageError> for GraphError {
    fn from(e: StorageError) -> Self {
        Self::Store(e.to_string())
    }
}

/// A written SPARQL answer.
#[derive(Debug)]
pub struct Answer {
    pub media_type: &'static str,
    pub body: Vec<u8>,
}

/// The catalog's graph.
pub struct CatalogGraph {
    store: Store,
    /// Names whose graph must be written again; `None` until the store is first built (there
    /// is nothing to keep in step before).
    dirty: Mutex<Option<BTreeSet<PackageName>>>,
    /// Held by the one caller writing graphs, so that two never write one name's graph from
    /// states in the wrong order.
    writing: Mutex<()>,
}

impl CatalogGraph {
    pub fn new() -> Result<Self, GraphError> {
        Ok(Self {
            store: Store::new()?,
            dirty: Mutex::new(None),
            writing: Mutex::new(()),
        })
    }

    /// Notes that what the catalog says of `names` changed. Cheap: it runs under the
    /// catalog's lock, after the change, so a refresh that reads the catalog after taking the
    /// names sees it.
    pub fn mark(&self, names: impl IntoIterator<Item = PackageName>) {
        if let Some(dirty) = lock(&self.dirty).as_mut() {
            dirty.extend(names);
        }
    }

    /// Whether the store has been built.
    pub fn is_built(&self) -> bool {
        lock(&self.dirty).is_some()
    }

    /// Brings the store up to date: the first time, with every name `all_names` gives;
    /// after that, with the names marked since. `facts` says what the catalog now holds of
    /// some names (a name it leaves out has no graph). If it fails, the names stay marked.
    pub fn refresh<E: From<GraphError>>(
        &self,
        all_names: impl FnOnce() -> Vec<PackageName>,
        mut facts: impl FnMut(&[PackageName]) -> Result<Vec<PackageFacts>, E>,
    ) -> Result<(), E> {
        let _writing = lock(&self.writing);
        let names: Vec<PackageName> = {
            let mut dirty = lock(&self.dirty);
            match dirty.as_mut() {
                Some(marked) => std::mem::take(marked).into_iter().collect(),
                None => {
                    // Marks count from here; the names are read after, so none is missed.
                    *dirty = Some(BTreeSet::new());
                    drop(dirty);
                    all_names()
                }
            }
        };
        for (i, chunk) in names.chunks(BUILD_CHUNK).enumerate() {
            let written = facts(chunk).and_then(|f| Ok(self.write(chunk, &f)?));
            if let Err(e) = written {
                self.mark(names[i * BUILD_CHUNK..].iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Replaces the graphs of `names` with those of `facts`, in one transaction.
    fn write(&self, names: &[PackageName], facts: &[PackageFacts]) -> Result<(), GraphError> {
        let mut txn = self.store.start_transaction()?;
        for name in names {
            let graph = vocab::package_iri(name.as_str());
            txn.remove_named_graph(NamedOrBlankNodeRef::NamedNode(graph.as_ref()))?;
        }
        for f in facts {
            txn.extend(&vocab::quads(f));
        }
        txn.commit()?;
        Ok(())
    }

    /// Quads in the store (each triple of the catalog once).
    pub fn quad_count(&self) -> Result<usize, GraphError> {
        Ok(self.store.len()?)
    }

    /// Answers `query` (SPARQL 1.1, read-only) over the union of the packages' graphs:
    /// solutions and booleans written in `results`, triples in `triples`. `cancel` stops it
    /// (the caller's time limit, of `limit_secs`).
    pub fn query(
        &self,
        query: &str,
        results: ResultsFormat,
        triples: TriplesFormat,
        cancel: CancellationToken,
        limit_secs: u64,
    ) -> Result<Answer, GraphError> {
        if query.len() > MAX_SPARQL_QUERY_BYTES {
            return Err(GraphError::TooLong { len: query.len() });
        }
        let mut prepared = SparqlEvaluator::new()
            .with_cancellation_token(cancel)
            .parse_query(query)
            .map_err(|e| GraphError::Syntax(e.to_string()))?;
        prepared.dataset_mut().set_default_graph_as_union();
        let evaluated = |e: QueryEvaluationError| match e {
            QueryEvaluationError::Cancelled => GraphError::TimedOut(limit_secs),
            other => GraphError::Evaluation(other.to_string()),
        };
        let answer = prepared
            .on_store(&self.store)
            .execute()
            .map_err(evaluated)?;
        let mut body = Bounded::default();
        let media_type = match answer {
            QueryResults::Boolean(value) => {
                serializer(results)
                    .serialize_boolean_to_writer(&mut body, value)
                    .map_err(io)?;
                results.media_type()
            }
            QueryResults::Solutions(solutions) => {
                let variables = solutions.variables().to_vec();
                let mut out = serializer(results)
                    .serialize_solutions_to_writer(&mut body, variables)
                    .map_err(io)?;
                for (row, solution) in solutions.enumerate() {
                    if row == MAX_SPARQL_ROWS {
                        return Err(GraphError::TooLarge);
                    }
                    out.serialize(&solution.map_err(evaluated)?).map_err(io)?;
                }
                out.finish().map_err(io)?;
                results.media_type()
            }
            QueryResults::Graph(found) => {
                let mut out = rdf_serializer(triples).for_writer(&mut body);
                for (row, triple) in found.enumerate() {
                    if row == MAX_SPARQL_ROWS {
                        return Err(GraphError::TooLarge);
                    }
                    out.serialize_triple(&triple.map_err(evaluated)?)
                        .map_err(io)?;
                }
                out.finish().map_err(io)?;
                triples.media_type()
            }
        };
        Ok(Answer {
            media_type,
            body: body.0,
        })
    }

    /// Writes every triple of the graph in `format`, handing `piece` about a megabyte at a
    /// time. Returns the triples written.
    pub fn export<E: From<GraphError>>(
        &self,
        format: TriplesFormat,
        piece: impl FnMut(Vec<u8>) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut pieces = Pieces {
            buf: Vec::with_capacity(EXPORT_PIECE),
            piece,
            failed: None,
        };
        let mut out = rdf_serializer(format).for_writer(&mut pieces);
        let mut count = 0;
        // Package by package, so that a serializer that groups a subject's triples sees them
        // together.
        let written = (|| {
            for graph in self.store.named_graphs() {
                let graph = graph?;
                let name = GraphNameRef::from(graph.as_ref());
                for quad in self.store.quads_for_pattern(None, None, None, Some(name)) {
                    out.serialize_triple(quad?.as_ref()).map_err(io)?;
                    count += 1;
                }
            }
            out.finish().map_err(io)?;
            Ok::<_, GraphError>(())
        })();
        if let Some(e) = pieces.failed.take() {
            return Err(e);
        }
        written?;
        if !pieces.buf.is_empty() {
            (pieces.piece)(std::mem::take(&mut pieces.buf))?;
        }
        Ok(count)
    }
}

/// A writer that hands on what it is given a piece at a time, and keeps the first error its
/// receiver returned.
struct Pieces<F, E> {
    buf: Vec<u8>,
    piece: F,
    failed: Option<E>,
}

impl<F: FnMut(Vec<u8>) -> Result<(), E>, E> Write for Pieces<F, E> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.failed.is_some() {
            return Err(std::io::Error::other("the export's receiver failed"));
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= EXPORT_PIECE {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_PIECE));
            if let Err(e) = (self.piece)(full) {
                self.failed = Some(e);
                return Err(std::io::Error::other("the export's receiver failed"));
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn serializer(format: ResultsFormat) -> QueryResultsSerializer {
    QueryResultsSerializer::from_format(match format {
        ResultsFormat::Json => QueryResultsFormat::Json,
        ResultsFormat::Xml => QueryResultsFormat::Xml,
        ResultsFormat::Csv => QueryResultsFormat::Csv,
        ResultsFormat::Tsv => QueryResultsFormat::Tsv,
    })
}

fn rdf_serializer(format: TriplesFormat) -> RdfSerializer {
    let serializer = RdfSerializer::from_format(match format {
        TriplesFormat::Turtle => RdfFormat::Turtle,
        TriplesFormat::NTriples => RdfFormat::NTriples,
        TriplesFormat::JsonLd => RdfFormat::JsonLd {
            profile: JsonLdProfileSet::empty(),
        },
        TriplesFormat::RdfXml => RdfFormat::RdfXml,
    });
    vocab::PREFIXES.iter().fold(serializer, |s, (prefix, iri)| {
        s.with_prefix(*prefix, *iri)
            .expect("the vocabulary's prefixes are valid IRIs")
    })
}

/// An answer being written, refused once it is over [`MAX_SPARQL_ANSWER_BYTES`].
#[derive(Default)]
struct Bounded(Vec<u8>);

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_SPARQL_ANSWER_BYTES {
            return Err(std::io::Error::other(TooLarge));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What [`Bounded`] fails with.
#[derive(Debug, thiserror::Error)]
#[error("answer too large")]
struct TooLarge;

fn io(e: std::io::Error) -> GraphError {
    if e.get_ref().is_some_and(|inner| inner.is::<TooLarge>()) {
        GraphError::TooLarge
    } else {
        GraphError::Evaluation(e.to_string())
    }
}
