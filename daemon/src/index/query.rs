//! How a [`SearchQuery`] becomes a [`Plan`]: every word (exact, typo-tolerant, and the last
//! one as a prefix) in the name, description and terms, plus exact filters.

use agora_protocol::search::SearchQuery;
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{Score, Term};

use super::schema::{Fields, Filter};

/// Weight of a match in the package name against one in other text.
const NAME_BOOST: Score = 4.0;
/// Weight of a fuzzy (typo-tolerant) match against an exact one.
const FUZZY_BOOST: Score = 0.5;
/// Terms shorter than this are matched exactly (a typo in 3 letters is another word).
const FUZZY_MIN_LEN: usize = 4;
/// Terms at least this long tolerate two edits.
const FUZZY_TWO_EDITS_LEN: usize = 8;

/// How one alternative of a query word matches a term of the index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum How {
    /// The term itself, scored by BM25.
    Exact,
    /// Any term within this edit distance (a transposition counts as one), scored as a
    /// constant.
    Fuzzy(u8),
    /// Any term the word begins, scored as a constant.
    Prefix,
}

/// One way a query word can match a document, and what the match weighs.
#[derive(Clone, Debug)]
pub(super) struct Alternative {
    pub term: Term,
    pub how: How,
    pub boost: Score,
}

/// A checked search as the index evaluates it: a document matches if it matches at least one
/// alternative of at least one word (when there are words) and every filter. Its score is the
/// sum of the scores of what it matches. Both tiers evaluate the same plan: the base as a
/// tantivy query ([`Plan::query`]), the overlay by hand with tantivy's scoring.
#[derive(Clone, Debug, Default)]
pub(super) struct Plan {
    pub words: Vec<Vec<Alternative>>,
    /// Exact terms of the `filter` field, each scored by BM25 with a frequency of one.
    pub filters: Vec<Term>,
}

impl Plan {
    /// Whether it matches every document (browsing).
    pub fn matches_all(&self) -> bool {
        self.words.is_empty() && self.filters.is_empty()
    }

    pub fn query(&self) -> Box<dyn Query> {
        if self.matches_all() {
            return Box::new(AllQuery);
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !self.words.is_empty() {
            let per_word = self
                .words
                .iter()
                .map(|alts| {
                    let alts = alts.iter().map(|a| (Occur::Should, a.query())).collect();
                    (
                        Occur::Should,
                        Box::new(BooleanQuery::new(alts)) as Box<dyn Query>,
                    )
                })
                .collect();
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(per_word))));
        }
        for term in &self.filters {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(term.clone(), IndexRecordOption::Basic)),
            ));
        }
        Box::new(BooleanQuery::new(clauses))
    }
}

impl Alternative {
    fn query(&self) -> Box<dyn Query> {
        let inner: Box<dyn Query> = match self.automaton_query() {
            Some(q) => Box::new(q),
            None => Box::new(TermQuery::new(
                self.term.clone(),
                IndexRecordOption::WithFreqs,
            )),
        };
        Box::new(BoostQuery::new(inner, self.boost))
    }

    /// The automaton query of a fuzzy or prefix alternative; `None` for an exact one.
    pub fn automaton_query(&self) -> Option<FuzzyTermQuery> {
        match self.how {
            How::Exact => None,
            How::Fuzzy(distance) => Some(FuzzyTermQuery::new(self.term.clone(), distance, true)),
            How::Prefix => Some(FuzzyTermQuery::new_prefix(self.term.clone(), 0, true)),
        }
    }
}

impl Fields {
    pub fn plan(&self, q: &SearchQuery) -> Plan {
        let words = tokens(&q.text);
        let last = words.len().saturating_sub(1);
        let words = words
            .iter()
            .enumerate()
            .map(|(i, w)| self.alternatives(w, i == last))
            .collect();
        let filters = [
            (Filter::Category, &q.category),
            (Filter::Tag, &q.tag),
            (Filter::Author, &q.author),
            (Filter::License, &q.license),
        ]
        .into_iter()
        .filter_map(|(filter, value)| Some(self.filter_term(filter, value.as_ref()?)))
        .collect();
        Plan { words, filters }
    }

    /// One query word: exact in every text field (the name weighs most), within a small edit
    /// distance in the name and terms, and as a prefix of any of them if it is the last word
    /// typed.
    fn alternatives(&self, word: &str, last: bool) -> Vec<Alternative> {
        let alt = |field, how, boost| Alternative {
            term: Term::from_field_text(field, word),
            how,
            boost,
        };
        let mut alts = Vec::new();
        for (field, boost) in [
            (self.name, NAME_BOOST),
            (self.description, 1.0),
            (self.terms, 1.5),
        ] {
            alts.push(alt(field, How::Exact, boost));
        }
        let distance = match word.len() {
            n if n >= FUZZY_TWO_EDITS_LEN => 2,
            n if n >= FUZZY_MIN_LEN => 1,
            _ => 0,
        };
        for (field, boost) in [
            (self.name, NAME_BOOST),
            (self.terms, 1.0),
            (self.description, 0.5),
        ] {
            if distance > 0 && field != self.description {
                alts.push(alt(field, How::Fuzzy(distance), boost * FUZZY_BOOST));
            }
            if last {
                alts.push(alt(field, How::Prefix, boost * FUZZY_BOOST));
            }
        }
        alts
    }
}

/// Lowercase alphanumeric runs, as tantivy's default tokenizer makes them.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}
