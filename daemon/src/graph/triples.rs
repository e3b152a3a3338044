//! The graph's triples, compactly: every term once in a dictionary (its text in one arena),
//! every triple as three term ids in three orders (subject-predicate-object,
//! predicate-object-subject, object-subject-predicate), so that any pattern is one range of
//! one ordered set. SPARQL runs over it through spareval's [`QueryableDataset`]. All of it is
//! the default graph.
//!
//! Terms are never removed: ids stay valid while a query or an export runs on them, and what
//! is left unused is bounded by what the catalog ever held (a yank's `true`, an older newest
//! release). A general-purpose store keeps every removed triple with its history instead, and
//! costs several times the memory per triple.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use oxrdf::vocab::xsd;
use oxrdf::{Literal, NamedNode, NamedOrBlankNode, Term, TermRef, Triple};
use spareval::{InternalQuad, QueryableDataset};

/// A triple as the ids of its subject, predicate and object.
pub type Ids = [u32; 3];

/// The kinds of term the catalog's graph holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
enum Kind {
    Iri,
    String,
    Boolean,
    Integer,
    DateTime,
}

impl Kind {
    fn of(term: TermRef<'_>) -> Option<(Self, &str)> {
        match term {
            TermRef::NamedNode(n) => Some((Self::Iri, n.as_str())),
            TermRef::Literal(l) if l.language().is_some() => None,
            TermRef::Literal(l) => {
                let kind = match l.datatype() {
                    d if d == xsd::STRING => Self::String,
                    d if d == xsd::BOOLEAN => Self::Boolean,
                    d if d == xsd::INTEGER => Self::Integer,
                    d if d == xsd::DATE_TIME => Self::DateTime,
                    _ => return None,
                };
                Some((kind, l.value()))
            }
            _ => None,
        }
    }

    fn term(self, text: &str) -> Term {
        let typed = |datatype| Literal::new_typed_literal(text, datatype).into();
        match self {
            Self::Iri => NamedNode::new_unchecked(text).into(),
            Self::String => Literal::new_simple_literal(text).into(),
            Self::Boolean => typed(xsd::BOOLEAN),
            Self::Integer => typed(xsd::INTEGER),
            Self::DateTime => typed(xsd::DATE_TIME),
        }
    }
}

/// Every term, once: its text in `text`, found by its hash in `index`.
#[derive(Default)]
struct Terms {
    text: String,
    /// Where each term's text starts and ends in `text`, and its kind.
    spans: Vec<(u32, u32, Kind)>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Terms {
    fn get(&self, id: u32) -> (Kind, &str) {
        let (start, end, kind) = self.spans[id as usize];
        (kind, &self.text[start as usize..end as usize])
    }

    fn find(&self, kind: Kind, text: &str) -> Option<u32> {
        let hash = self.hasher.hash_one((kind, text));
        self.index
            .find(hash, |&id| self.get(id) == (kind, text))
            .copied()
    }

    fn intern(&mut self, kind: Kind, text: &str) -> u32 {
        if let Some(id) = self.find(kind, text) {
            return id;
        }
        let Self {
            text: arena,
            spans,
            index,
            hasher,
        } = self;
        let id = u32::try_from(spans.len()).expect("fewer than 2^32 terms");
        let start = u32::try_from(arena.len()).expect("under 4 GiB of term text");
        arena.push_str(text);
        let end = u32::try_from(arena.len()).expect("under 4 GiB of term text");
        spans.push((start, end, kind));
        let hash = hasher.hash_one((kind, text));
        index.insert_unique(hash, id, |&other| {
            let (s, e, k) = spans[other as usize];
            hasher.hash_one((k, &arena[s as usize..e as usize]))
        });
        id
    }
}

/// A term of a query: one the graph holds, by id, or one it does not (a constant of the query
/// or a value it computed), which matches nothing in the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Internal {
    Id(u32),
    Other(Box<Term>),
}

/// The graph.
#[derive(Default)]
pub struct Triples {
    terms: Terms,
    spo: BTreeSet<Ids>,
    pos: BTreeSet<Ids>,
    osp: BTreeSet<Ids>,
}

impl Triples {
    /// A graph of exactly `triples`, built in bulk (full tree nodes).
    pub fn build(triples: impl IntoIterator<Item = Triple>) -> Self {
        let mut graph = Self::default();
        let ids = triples.into_iter().map(|t| graph.intern(&t)).collect();
        graph.fill(ids);
        graph
    }

    /// Makes `ids` (of terms interned here) the graph's triples, in bulk: a tree built from
    /// sorted keys has full nodes, a third smaller than one grown a key at a time.
    pub fn fill(&mut self, mut ids: Vec<Ids>) {
        ids.sort_unstable();
        ids.dedup();
        self.pos = ids.iter().map(|&[s, p, o]| [p, o, s]).collect();
        self.osp = ids.iter().map(|&[s, p, o]| [o, s, p]).collect();
        self.spo = ids.into_iter().collect();
    }

    pub fn len(&self) -> usize {
        self.spo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spo.is_empty()
    }

    /// The id of a term the graph holds.
    pub fn id(&self, term: TermRef<'_>) -> Option<u32> {
        let (kind, text) = Kind::of(term)?;
        self.terms.find(kind, text)
    }

    /// The ids of `triple`, adding its terms to the dictionary.
    pub fn intern(&mut self, triple: &Triple) -> Ids {
        intern(&mut self.terms, triple)
    }

    pub fn insert(&mut self, [s, p, o]: Ids) {
        if self.spo.insert([s, p, o]) {
            self.pos.insert([p, o, s]);
            self.osp.insert([o, s, p]);
        }
    }

    pub fn remove(&mut self, [s, p, o]: Ids) {
        if self.spo.remove(&[s, p, o]) {
            self.pos.remove(&[p, o, s]);
            self.osp.remove(&[o, s, p]);
        }
    }

    /// The triples whose subject is `s`.
    pub fn with_subject(&self, s: u32) -> impl Iterator<Item = Ids> + '_ {
        self.spo.range([s, 0, 0]..=[s, u32::MAX, u32::MAX]).copied()
    }

    /// The subjects of the triples with predicate `p` and object `o`.
    pub fn subjects(&self, p: u32, o: u32) -> impl Iterator<Item = u32> + '_ {
        self.pos
            .range([p, o, 0]..=[p, o, u32::MAX])
            .map(|&[_, _, s]| s)
    }

    /// Up to `max` triples after `after` (from the first when `None`), in subject order, with
    /// their terms: an export reads the graph a part at a time.
    pub fn page(&self, after: Option<Ids>, max: usize) -> Vec<(Ids, Triple)> {
        let from = match after {
            Some(last) => self
                .spo
                .range((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded)),
            None => self.spo.range::<Ids, _>(..),
        };
        from.take(max)
            .map(|&ids @ [s, p, o]| {
                let subject = match self.term(s) {
                    Term::NamedNode(n) => NamedOrBlankNode::NamedNode(n),
                    _ => unreachable!("subjects are IRIs"),
                };
                let predicate = match self.term(p) {
                    Term::NamedNode(n) => n,
                    _ => unreachable!("predicates are IRIs"),
                };
                (ids, Triple::new(subject, predicate, self.term(o)))
            })
            .collect()
    }

    fn term(&self, id: u32) -> Term {
        let (kind, text) = self.terms.get(id);
        kind.term(text)
    }
}

fn intern(terms: &mut Terms, t: &Triple) -> Ids {
    let mut one = |term: TermRef<'_>| {
        let (kind, text) = Kind::of(term).expect("the vocabulary writes only terms of these kinds");
        terms.intern(kind, text)
    };
    [
        one(t.subject.as_ref().into()),
        one(t.predicate.as_ref().into()),
        one(t.object.as_ref()),
    ]
}

fn quad([s, p, o]: Ids) -> Result<InternalQuad<Internal>, Infallible> {
    Ok(InternalQuad {
        subject: Internal::Id(s),
        predicate: Internal::Id(p),
        object: Internal::Id(o),
        graph_name: None,
    })
}

impl<'a> QueryableDataset<'a> for &'a Triples {
    type InternalTerm = Internal;
    type Error = Infallible;

    fn internal_quads_for_pattern(
        &self,
        subject: Option<&Internal>,
        predicate: Option<&Internal>,
        object: Option<&Internal>,
        graph_name: Option<Option<&Internal>>,
    ) -> impl Iterator<Item = Result<InternalQuad<Internal>, Infallible>> + use<'a> {
        let triples: &'a Triples = self;
        let id = |t: Option<&Internal>| match t {
            None => Some(None),
            Some(Internal::Id(id)) => Some(Some(*id)),
            // A term the graph does not hold is in no triple.
            Some(Internal::Other(_)) => None,
        };
        // Everything is in the default graph: a named graph holds nothing.
        let (Some(s), Some(p), Some(o), Some(None)) =
            (id(subject), id(predicate), id(object), graph_name)
        else {
            return Box::new(std::iter::empty()) as Box<dyn Iterator<Item = _> + 'a>;
        };
        const MAX: u32 = u32::MAX;
        match (s, p, o) {
            (Some(s), Some(p), Some(o)) => Box::new(
                triples
                    .spo
                    .contains(&[s, p, o])
                    .then_some([s, p, o])
                    .into_iter()
                    .map(quad),
            ),
            (Some(s), Some(p), None) => Box::new(
                triples
                    .spo
                    .range([s, p, 0]..=[s, p, MAX])
                    .copied()
                    .map(quad),
            ),
            (Some(s), None, Some(o)) => Box::new(
                triples
                    .osp
                    .range([o, s, 0]..=[o, s, MAX])
                    .map(|&[o, s, p]| quad([s, p, o])),
            ),
            (Some(s), None, None) => Box::new(triples.with_subject(s).map(quad)),
            (None, Some(p), Some(o)) => Box::new(
                triples
                    .pos
                    .range([p, o, 0]..=[p, o, MAX])
                    .map(|&[p, o, s]| quad([s, p, o])),
            ),
            (None, Some(p), None) => Box::new(
                triples
                    .pos
                    .range([p, 0, 0]..=[p, MAX, MAX])
                    .map(|&[p, o, s]| quad([s, p, o])),
            ),
            (None, None, Some(o)) => Box::new(
                triples
                    .osp
                    .range([o, 0, 0]..=[o, MAX, MAX])
                    .map(|&[o, s, p]| quad([s, p, o])),
            ),
            (None, None, None) => Box::new(triples.spo.iter().copied().map(quad)),
        }
    }

    fn internal_named_graphs(
        &self,
    ) -> impl Iterator<Item = Result<Internal, Infallible>> + use<'a> {
        std::iter::empty()
    }

    fn contains_internal_graph_name(&self, _: &Internal) -> Result<bool, Infallible> {
        Ok(false)
    }

    fn internalize_term(&self, term: Term) -> Result<Internal, Infallible> {
        Ok(match self.id(term.as_ref()) {
            Some(id) => Internal::Id(id),
            None => Internal::Other(Box::new(term)),
        })
    }

    fn externalize_term(&self, term: Internal) -> Result<Term, Infallible> {
        Ok(match term {
            Internal::Id(id) => self.term(id),
            Internal::Other(term) => *term,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spareval::{QueryEvaluator, QueryResults};
    use spargebra::SparqlParser;

    fn triple(s: &str, p: &str, o: Term) -> Triple {
        Triple::new(NamedNode::new_unchecked(s), NamedNode::new_unchecked(p), o)
    }

    fn names(triples: &Triples, query: &str) -> Vec<String> {
        let query = SparqlParser::new().parse_query(query).unwrap();
        let evaluator = QueryEvaluator::new();
        let QueryResults::Solutions(solutions) =
            evaluator.prepare(&query).execute(triples).unwrap()
        else {
            panic!("not a SELECT")
        };
        solutions
            .map(|s| {
                s.unwrap()
                    .iter()
                    .map(|(_, t)| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn every_pattern_finds_what_it_matches_and_updates_keep_the_three_orders_in_step() {
        let text = |s: &str| Term::from(Literal::new_simple_literal(s));
        let built = [
            triple("urn:a", "urn:name", text("a")),
            triple("urn:a", "urn:dep", NamedNode::new_unchecked("urn:b").into()),
            triple("urn:b", "urn:name", text("b")),
            triple("urn:b", "urn:yanked", Literal::from(false).into()),
        ];
        let mut graph = Triples::build(built.clone());
        assert_eq!(graph.len(), 4);
        assert_eq!(
            names(&graph, "SELECT ?n WHERE { ?s <urn:name> ?n } ORDER BY ?n"),
            ["\"a\"", "\"b\""]
        );
        assert_eq!(
            names(
                &graph,
                "SELECT ?n WHERE { <urn:a> <urn:dep> ?d . ?d <urn:name> ?n }"
            ),
            ["\"b\""]
        );
        assert_eq!(
            names(&graph, "SELECT ?s WHERE { ?s ?p false }"),
            ["<urn:b>"]
        );
        assert_eq!(
            names(&graph, "SELECT ?p WHERE { <urn:a> ?p \"a\" }"),
            ["<urn:name>"]
        );
        // A constant the graph does not hold, and a named graph: nothing.
        assert!(names(&graph, "SELECT ?s WHERE { ?s ?p \"c\" }").is_empty());
        assert!(names(&graph, "SELECT ?s WHERE { GRAPH ?g { ?s ?p ?o } }").is_empty());
        // A computed value is returned as computed.
        assert_eq!(
            names(
                &graph,
                "SELECT (CONCAT(?n, \"!\") AS ?x) WHERE { <urn:a> <urn:name> ?n }"
            ),
            ["\"a!\""]
        );

        let yanked = triple("urn:b", "urn:yanked", Literal::from(true).into());
        let ids = graph.intern(&yanked);
        graph.insert(ids);
        let old = graph.intern(&built[3]);
        graph.remove(old);
        assert_eq!(graph.len(), 4);
        assert_eq!(names(&graph, "SELECT ?s WHERE { ?s ?p true }"), ["<urn:b>"]);
        assert!(names(&graph, "SELECT ?s WHERE { ?s ?p false }").is_empty());
        assert_eq!(
            names(&graph, "SELECT ?o WHERE { <urn:b> <urn:yanked> ?o }"),
            ["\"true\"^^<http://www.w3.org/2001/XMLSchema#boolean>"]
        );
        // Terms are kept: the id of `false` did not change.
        assert_eq!(graph.intern(&built[3]), old);

        let page = graph.page(None, 3);
        assert_eq!(page.len(), 3);
        let rest = graph.page(Some(page[2].0), 3);
        let mut all: Vec<Triple> = page.into_iter().chain(rest).map(|(_, t)| t).collect();
        all.sort_by_key(|t| t.to_string());
        let mut expected = vec![built[0].clone(), built[1].clone(), built[2].clone(), yanked];
        expected.sort_by_key(|t| t.to_string());
        assert_eq!(all, expected);
    }
}
