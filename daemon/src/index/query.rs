//! How a [`SearchQuery`] becomes a tantivy query: every word (exact, typo-tolerant, and the
//! last one as a prefix) in the name, description and terms, plus exact filters.

use agora_protocol::search::SearchQuery;
use tantivy::Term;
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;

use super::schema::{Fields, Filter};

/// Weight of a match in the package name against one in other text.
const NAME_BOOST: f32 = 4.0;
/// Weight of a fuzzy (typo-tolerant) match against an exact one.
const FUZZY_BOOST: f32 = 0.5;
/// Terms shorter than this are matched exactly (a typo in 3 letters is another word).
const FUZZY_MIN_LEN: usize = 4;
/// Terms at least this long tolerate two edits.
const FUZZY_TWO_EDITS_LEN: usize = 8;

impl Fields {
    pub fn query(&self, q: &SearchQuery) -> Box<dyn Query> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let words = tokens(&q.text);
        if !words.is_empty() {
            let last = words.len() - 1;
            let per_word: Vec<(Occur, Box<dyn Query>)> = words
                .iter()
                .enumerate()
                .map(|(i, w)| (Occur::Should, self.word_query(w, i == last)))
                .collect();
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(per_word))));
        }
        for (filter, value) in [
            (Filter::Category, &q.category),
            (Filter::Tag, &q.tag),
            (Filter::Author, &q.author),
            (Filter::License, &q.license),
        ] {
            if let Some(v) = value {
                clauses.push((
                    Occur::Must,
                    Box::new(TermQuery::new(
                        self.filter_term(filter, v),
                        IndexRecordOption::Basic,
                    )),
                ));
            }
        }
        if clauses.is_empty() {
            Box::new(AllQuery)
        } else {
            Box::new(BooleanQuery::new(clauses))
        }
    }

    /// One query word: exact in every text field (the name weighs most), within a small edit
    /// distance in the name and terms, and as a prefix of any of them if it is the last word
    /// typed.
    fn word_query(&self, word: &str, last: bool) -> Box<dyn Query> {
        let mut alts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (field, boost) in [
            (self.name, NAME_BOOST),
            (self.description, 1.0),
            (self.terms, 1.5),
        ] {
            let term = Term::from_field_text(field, word);
            alts.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                    boost,
                )),
            ));
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
            let term = Term::from_field_text(field, word);
            if distance > 0 && field != self.description {
                alts.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(
                        Box::new(FuzzyTermQuery::new(term.clone(), distance, true)),
                        boost * FUZZY_BOOST,
                    )),
                ));
            }
            if last {
                alts.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(
                        Box::new(FuzzyTermQuery::new_prefix(term, 0, true)),
                        boost * FUZZY_BOOST,
                    )),
                ));
            }
        }
        Box::new(BooleanQuery::new(alts))
    }
}

/// Lowercase alphanumeric runs, as tantivy's default tokenizer makes them.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}
