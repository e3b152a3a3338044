//! The catalog as RDF (docs/RDF.md), in memory ([`triples`]), and SPARQL over it (Oxigraph's
//! parser and evaluator, spargebra and spareval).
//!
//! It is derived data, like the search index: the catalog in redb is the truth. A package's
//! triples (see [`vocab`]) are computed whole from what the catalog says of the name, and the
//! graph is brought to them (what is no longer true removed, what is new added), so it never
//! drifts from the catalog: writers only mark the names that changed
//! ([`CatalogGraph::mark`]), and [`CatalogGraph::refresh`], which every query runs first,
//! brings their triples up to date. The graph is built at the first query or export, not at
//! start: a node nobody asks in SPARQL keeps no copy of its catalog as triples. A query holds
//! the graph for reading while it runs (its time limit bounds that), so changes wait for it.
//! Never called from the event loop.

pub mod triples;
pub mod vocab;

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::sync::{Mutex, RwLock};

use agora_protocol::PackageName;
use agora_protocol::limits::{MAX_SPARQL_ANSWER_BYTES, MAX_SPARQL_QUERY_BYTES, MAX_SPARQL_ROWS};
use agora_protocol::sparql::{ResultsFormat, TriplesFormat};
use oxrdf::TermRef;
use oxrdfio::{JsonLdProfileSet, RdfFormat, RdfSerializer};
use sparesults::{QueryResultsFormat, QueryResultsSerializer};
use spareval::{QueryEvaluationError, QueryEvaluator, QueryResults};
use spargebra::SparqlParser;

pub use spareval::CancellationToken;
pub use vocab::{PackageFacts, ReleaseFacts};

use crate::lock;
use triples::{Ids, Triples};

/// Packages whose facts are read from the catalog at a time (one read of the log each).
const FACTS_CHUNK: usize = 1024;
/// Bytes of an export handed on at a time.
const EXPORT_PIECE: usize = 1024 * 1024;
/// Triples an export reads from the graph at a time, holding it for reading meanwhile.
const EXPORT_PAGE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("the query is {len} bytes; the limit is {MAX_SPARQL_QUERY_BYTES}")]
    TooLong { len: usize },
    #[error("malformed query: {0}")]
    Syntax(String),
    #[error("the query ran past its time limit of {0} s and was stopped")]
    TimedOut(u64),
    #[error(
        "the answer is over {MAX_SPARQL_ROWS} rows or {} MiB; narrow the query, page it with LIMIT and OFFSET, or use 'agora export' for the whole graph",
        MAX_SPARQL_ANSWER_BYTES >> 20
    )]
    TooLarge,
    #[error("the query could not be answered: {0}")]
    Evaluation(String),
}

/// A written SPARQL answer.
#[derive(Debug)]
pub struct Answer {
    pub media_type: &'static str,
    pub body: Vec<u8>,
}

/// The catalog's graph.
pub struct CatalogGraph {
    triples: RwLock<Triples>,
    /// Names whose triples must be brought up to date; `None` until the graph is first built
    /// (there is nothing to keep in step before).
    dirty: Mutex<Option<BTreeSet<PackageName>>>,
    /// Held by the one caller bringing names up to date, so that two never write one name's
    /// triples from states in the wrong order.
    writing: Mutex<()>,
}

impl Default for CatalogGraph {
    fn default() -> Self {
        Self {
            triples: RwLock::new(Triples::default()),
            dirty: Mutex::new(None),
            writing: Mutex::new(()),
        }
    }
}

impl CatalogGraph {
    /// Notes that what the catalog says of `names` changed. Cheap: it runs under the
    /// catalog's lock, after the change, so a refresh that reads the catalog after taking the
    /// names sees it.
    pub fn mark(&self, names: impl IntoIterator<Item = PackageName>) {
        if let Some(dirty) = lock(&self.dirty).as_mut() {
            dirty.extend(names);
        }
    }

    /// Whether the graph has been built.
    pub fn is_built(&self) -> bool {
        lock(&self.dirty).is_some()
    }

    /// Triples in the graph.
    pub fn triple_count(&self) -> usize {
        read(&self.triples).len()
    }

    /// Brings the graph up to date: the first time, built from every name `all_names` gives;
    /// after that, with the names marked since. `facts` says what the catalog now holds of
    /// some names (a name it leaves out has no triples). If it fails, the names stay marked.
    pub fn refresh<E>(
        &self,
        all_names: impl FnOnce() -> Vec<PackageName>,
        mut facts: impl FnMut(&[PackageName]) -> Result<Vec<PackageFacts>, E>,
    ) -> Result<(), E> {
        let _writing = lock(&self.writing);
        let first = {
            let mut dirty = lock(&self.dirty);
            match dirty.as_mut() {
                Some(marked) => Err(std::mem::take(marked)),
                None => {
                    // Marks count from here; the names are read after, so none is missed.
                    *dirty = Some(BTreeSet::new());
                    Ok(())
                }
            }
        };
        match first {
            Ok(()) => {
                // Built apart and swapped in, so that queries never see half a graph.
                let names = all_names();
                let mut fresh = Triples::default();
                let mut ids = Vec::new();
                for chunk in names.chunks(FACTS_CHUNK) {
                    match facts(chunk) {
                        Ok(f) => {
                            for t in f.iter().flat_map(vocab::triples) {
                                ids.push(fresh.intern(&t));
                            }
                        }
                        Err(e) => {
                            *lock(&self.dirty) = None;
                            return Err(e);
                        }
                    }
                }
                fresh.fill(ids);
                *write(&self.triples) = fresh;
            }
            Err(marked) => {
                let names: Vec<PackageName> = marked.into_iter().collect();
                for (i, chunk) in names.chunks(FACTS_CHUNK).enumerate() {
                    match facts(chunk) {
                        Ok(f) => self.update(chunk, &f),
                        Err(e) => {
                            self.mark(names[i * FACTS_CHUNK..].iter().cloned());
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Brings the triples of `names` to those of `facts`: removes what is no longer true and
    /// adds what is new, leaving the rest as it is.
    fn update(&self, names: &[PackageName], facts: &[PackageFacts]) {
        let mut graph = write(&self.triples);
        let mut new: HashSet<Ids> = HashSet::new();
        for f in facts {
            for t in vocab::triples(f) {
                new.insert(graph.intern(&t));
            }
        }
        let mut old: HashSet<Ids> = HashSet::new();
        let is_version_of = vocab::is_version_of();
        let tie = graph.id(TermRef::NamedNode(is_version_of.as_ref()));
        for name in names {
            let package = vocab::package_iri(name.as_str());
            let Some(p) = graph.id(TermRef::NamedNode(package.as_ref())) else {
                continue;
            };
            old.extend(graph.with_subject(p));
            if let Some(tie) = tie {
                let releases: Vec<u32> = graph.subjects(tie, p).collect();
                for r in releases {
                    old.extend(graph.with_subject(r));
                }
            }
        }
        for gone in old.difference(&new) {
            graph.remove(*gone);
        }
        for added in new.difference(&old) {
            graph.insert(*added);
        }
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
        let query = SparqlParser::new()
            .parse_query(query)
            .map_err(|e| GraphError::Syntax(e.to_string()))?;
        let evaluator = QueryEvaluator::new().with_cancellation_token(cancel);
        let evaluated = |e: QueryEvaluationError| match e {
            QueryEvaluationError::Cancelled => GraphError::TimedOut(limit_secs),
            other => GraphError::Evaluation(other.to_string()),
        };
        let graph = read(&self.triples);
        let answer = evaluator
            .prepare(&query)
            .execute(&*graph)
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
    /// time. Returns the triples and the bytes written.
    pub fn export<E: From<GraphError>>(
        &self,
        format: TriplesFormat,
        piece: impl FnMut(Vec<u8>) -> Result<(), E>,
    ) -> Result<(u64, u64), E> {
        let mut pieces = Pieces {
            buf: Vec::with_capacity(EXPORT_PIECE),
            piece,
            failed: None,
            sent: 0,
        };
        let mut out = rdf_serializer(format).for_writer(&mut pieces);
        let mut count = 0;
        let mut after = None;
        // A page at a time, so that the graph is not held while the receiver is slow. Ids
        // stay valid between pages: terms are never removed.
        let written = (|| {
            loop {
                let page = read(&self.triples).page(after, EXPORT_PAGE);
                let Some((last, _)) = page.last() else {
                    break;
                };
                after = Some(*last);
                for (_, triple) in &page {
                    out.serialize_triple(triple).map_err(io)?;
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
            pieces.sent += pieces.buf.len() as u64;
            (pieces.piece)(std::mem::take(&mut pieces.buf))?;
        }
        Ok((count, pieces.sent))
    }
}

/// A writer that hands on what it is given a piece at a time, and keeps the first error its
/// receiver returned.
struct Pieces<F, E> {
    buf: Vec<u8>,
    piece: F,
    failed: Option<E>,
    /// Bytes handed on.
    sent: u64,
}

impl<F: FnMut(Vec<u8>) -> Result<(), E>, E> Write for Pieces<F, E> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.failed.is_some() {
            return Err(std::io::Error::other("the export's receiver failed"));
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= EXPORT_PIECE {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_PIECE));
            self.sent += full.len() as u64;
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

fn read(graph: &RwLock<Triples>) -> std::sync::RwLockReadGuard<'_, Triples> {
    graph.read().unwrap_or_else(|p| p.into_inner())
}

fn write(graph: &RwLock<Triples>) -> std::sync::RwLockWriteGuard<'_, Triples> {
    graph.write().unwrap_or_else(|p| p.into_inner())
}

fn io(e: std::io::Error) -> GraphError {
    if e.get_ref().is_some_and(|inner| inner.is::<TooLarge>()) {
        GraphError::TooLarge
    } else {
        GraphError::Evaluation(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxrdf::{Literal, NamedNode, Triple};

    fn ask(graph: &CatalogGraph, query: &str) -> Result<Answer, GraphError> {
        graph.query(
            query,
            ResultsFormat::Csv,
            TriplesFormat::NTriples,
            CancellationToken::new(),
            10,
        )
    }

    fn lines(body: &[u8]) -> usize {
        body.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    }

    #[test]
    fn an_answer_over_the_row_limit_is_refused_and_one_at_it_is_answered() {
        let graph = CatalogGraph::default();
        let p = NamedNode::new_unchecked("urn:p");
        *write(&graph.triples) = Triples::build((0..=MAX_SPARQL_ROWS).map(|i| {
            Triple::new(
                NamedNode::new_unchecked(format!("urn:s{i}")),
                p.clone(),
                Literal::from(i as i64),
            )
        }));
        for query in [
            "SELECT ?s WHERE { ?s ?p ?o }",
            "CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }",
        ] {
            assert!(
                matches!(ask(&graph, query), Err(GraphError::TooLarge)),
                "{query}"
            );
        }
        let answer = ask(
            &graph,
            &format!("SELECT ?s WHERE {{ ?s ?p ?o }} LIMIT {MAX_SPARQL_ROWS}"),
        )
        .unwrap();
        assert_eq!(answer.media_type, "text/csv");
        // The header line and one line a row.
        assert_eq!(lines(&answer.body), MAX_SPARQL_ROWS + 1);
        let answer = ask(&graph, "CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o } LIMIT 3").unwrap();
        assert_eq!(answer.media_type, "application/n-triples");
        assert_eq!(lines(&answer.body), 3);
    }

    #[test]
    fn an_update_and_a_query_over_the_length_limit_are_refused_before_they_run() {
        let graph = CatalogGraph::default();
        assert!(matches!(
            ask(&graph, "INSERT DATA { <urn:a> <urn:b> <urn:c> }"),
            Err(GraphError::Syntax(_))
        ));
        let long = format!("ASK {{}} #{}", "x".repeat(MAX_SPARQL_QUERY_BYTES));
        assert!(matches!(
            ask(&graph, &long),
            Err(GraphError::TooLong { len }) if len == long.len()
        ));
        assert_eq!(graph.triple_count(), 0);
    }
}
