//! The overlay's packages as a small in-memory index, searched without a tantivy segment.
//!
//! tantivy pays a fixed cost for every new segment, whatever it holds: a term dictionary
//! builder per indexed field (an FST registry of 20,000 cells each), megabyte arenas and the
//! fast-field writers. Every node would pay it at the first search after each change, as
//! each release spreads across the network. The overlay holds at most
//! [`OVERLAY_MAX`](super::OVERLAY_MAX) packages, so here each indexed field is a map from
//! term to postings, built with the index's own tokenizers from the very document the base
//! would hold, and a [`Plan`] is scored with tantivy's own pieces: [`Bm25Weight`] with the
//! statistics of both tiers for exact terms, the automaton of tantivy's [`FuzzyTermQuery`]
//! for typos and prefixes (a constant score, as tantivy gives it). A package therefore
//! scores the same here as in a segment of its own, up to the order floating-point sums are
//! taken in.

use std::collections::{BTreeMap, HashMap};

use agora_protocol::search::SearchHit;
use tantivy::fieldnorm::FieldNormReader;
use tantivy::query::{Bm25StatisticsProvider, Bm25Weight};
use tantivy::schema::{Facet, Field, Value};
use tantivy::tokenizer::MAX_TOKEN_LEN;
use tantivy::{DocId, Index, Score, Term};
use tantivy_fst::Automaton;

use super::query::{Alternative, Plan};
use super::schema::Fields;
use super::{IndexDoc, IndexError};

/// The overlay's documents, searchable. A document's id is its place in name order.
pub(super) struct Tier {
    docs: Vec<IndexDoc>,
    /// Each document's category as the base's facet counts name it (from the facet the
    /// base's document holds, so the two agree).
    categories: Vec<Option<String>>,
    /// The fields a [`Plan`] reads (the text fields and the filters).
    fields: HashMap<Field, Postings>,
}

/// One indexed field.
#[derive(Default)]
struct Postings {
    /// Every term, with the documents holding it (ascending) and how often.
    terms: BTreeMap<String, Vec<(DocId, u32)>>,
    /// Each document's field norm, as tantivy encodes it.
    norms: Vec<u8>,
    /// Tokens in all documents, for the average field length.
    tokens: u64,
}

impl Tier {
    /// Indexes `docs`, given in name order.
    pub fn new<'a>(
        docs: impl IntoIterator<Item = &'a IndexDoc>,
        index: &Index,
        f: &Fields,
    ) -> Result<Self, IndexError> {
        let mut tier = Self {
            docs: Vec::new(),
            categories: Vec::new(),
            fields: HashMap::new(),
        };
        let mut analyzers = Vec::new();
        for field in [f.name, f.description, f.terms, f.filter] {
            let norms = index.schema().get_field_entry(field).has_fieldnorms();
            analyzers.push((field, index.tokenizer_for_field(field)?, norms));
            tier.fields.insert(field, Postings::default());
        }
        for (id, doc) in docs.into_iter().enumerate() {
            let id = id as DocId;
            let stored = f.document(doc);
            for (field, analyzer, has_norms) in &mut analyzers {
                let mut freqs: BTreeMap<String, u32> = BTreeMap::new();
                let mut tokens = 0u32;
                for text in stored.get_all(*field).filter_map(|v| v.as_str()) {
                    analyzer.token_stream(text).process(&mut |token| {
                        // tantivy drops tokens this long without counting them.
                        if token.text.len() <= MAX_TOKEN_LEN {
                            *freqs.entry(token.text.clone()).or_default() += 1;
                            tokens += 1;
                        }
                    });
                }
                let postings = tier.fields.get_mut(field).expect("inserted above");
                for (term, freq) in freqs {
                    postings.terms.entry(term).or_default().push((id, freq));
                }
                // A field without norms is scored as if one token long (as tantivy does).
                let norm = if *has_norms { tokens } else { 1 };
                postings.norms.push(FieldNormReader::fieldnorm_to_id(norm));
                postings.tokens += u64::from(tokens);
            }
            let category = stored
                .get_first(f.category_facet)
                .and_then(|v| v.as_facet())
                .and_then(|encoded| Facet::from_encoded(encoded.as_bytes().to_vec()).ok())
                .map(|facet| facet.to_path().join("/"));
            tier.categories.push(category);
            tier.docs.push(doc.clone());
        }
        Ok(tier)
    }

    pub fn num_docs(&self) -> u64 {
        self.docs.len() as u64
    }

    /// The name of document `doc`.
    pub fn name(&self, doc: DocId) -> &str {
        &self.docs[doc as usize].name
    }

    pub fn published_at(&self, doc: DocId) -> u64 {
        self.docs[doc as usize].published_at
    }

    /// The category of document `doc`, named as category counts name it.
    pub fn category(&self, doc: DocId) -> Option<&str> {
        self.categories[doc as usize].as_deref()
    }

    /// The result document `doc` shows: the one its stored form in the base would show.
    pub fn hit(&self, f: &Fields, doc: DocId) -> SearchHit {
        f.hit_of(&f.document(&self.docs[doc as usize]))
    }

    /// Tokens of `field` in all documents.
    pub fn total_num_tokens(&self, field: Field) -> u64 {
        self.fields.get(&field).map_or(0, |p| p.tokens)
    }

    /// Documents holding `term`.
    pub fn doc_freq(&self, term: &Term) -> u64 {
        self.postings(term).map_or(0, |list| list.len() as u64)
    }

    fn postings(&self, term: &Term) -> Option<&[(DocId, u32)]> {
        let value = term.value();
        let list = self.fields.get(&term.field())?.terms.get(value.as_str()?)?;
        Some(list)
    }

    /// The documents `plan` matches with their scores, by document id. `stats` are those of
    /// both tiers, as the base is scored with.
    pub fn matches(
        &self,
        plan: &Plan,
        stats: &dyn Bm25StatisticsProvider,
    ) -> Result<Vec<(DocId, Score)>, IndexError> {
        let n = self.docs.len();
        if plan.matches_all() {
            // tantivy's AllQuery scores every document 1.
            return Ok((0..n as DocId).map(|doc| (doc, 1.0)).collect());
        }
        // Each clause's score per document, `None` where it does not match.
        let mut clauses: Vec<Vec<Option<Score>>> = Vec::new();
        if !plan.words.is_empty() {
            let mut any_word = vec![None; n];
            for alternatives in &plan.words {
                let mut word = vec![None; n];
                for alternative in alternatives {
                    self.score(alternative, stats, &mut word)?;
                }
                add_all(&mut any_word, &word);
            }
            clauses.push(any_word);
        }
        for term in &plan.filters {
            let mut filter = vec![None; n];
            self.score_term(term, 1.0, false, stats, &mut filter)?;
            clauses.push(filter);
        }
        Ok((0..n)
            .filter_map(|doc| {
                let mut sum: Score = 0.0;
                for clause in &clauses {
                    sum += clause[doc]?;
                }
                Some((doc as DocId, sum))
            })
            .collect())
    }

    /// Adds what `alternative` scores to each document it matches.
    fn score(
        &self,
        alternative: &Alternative,
        stats: &dyn Bm25StatisticsProvider,
        scores: &mut [Option<Score>],
    ) -> Result<(), IndexError> {
        let Some(query) = alternative.automaton_query() else {
            let (term, boost) = (&alternative.term, alternative.boost);
            return self.score_term(term, boost, true, stats, scores);
        };
        let Some(postings) = self.fields.get(&alternative.term.field()) else {
            return Ok(());
        };
        let automaton = query.automaton()?;
        let mut matched = vec![false; scores.len()];
        for (term, list) in &postings.terms {
            if accepts(&automaton, term.as_bytes()) {
                for &(doc, _) in list {
                    matched[doc as usize] = true;
                }
            }
        }
        for (score, matched) in scores.iter_mut().zip(matched) {
            if matched {
                *score = Some(score.unwrap_or(0.0) + alternative.boost);
            }
        }
        Ok(())
    }

    /// Adds the BM25 score of an exact `term` (counting each occurrence if `freqs`, else
    /// one, as tantivy's postings without frequencies do) to each document holding it.
    fn score_term(
        &self,
        term: &Term,
        boost: Score,
        freqs: bool,
        stats: &dyn Bm25StatisticsProvider,
        scores: &mut [Option<Score>],
    ) -> Result<(), IndexError> {
        let Some(list) = self.postings(term) else {
            return Ok(());
        };
        let norms = &self.fields[&term.field()].norms;
        let weight = Bm25Weight::for_terms(stats, std::slice::from_ref(term))?.boost_by(boost);
        for &(doc, freq) in list {
            let freq = if freqs { freq } else { 1 };
            let score = weight.score(norms[doc as usize], freq);
            let slot = &mut scores[doc as usize];
            *slot = Some(slot.unwrap_or(0.0) + score);
        }
        Ok(())
    }
}

/// Adds `clause`'s scores into `sum` where it matches.
fn add_all(sum: &mut [Option<Score>], clause: &[Option<Score>]) {
    for (sum, score) in sum.iter_mut().zip(clause) {
        if let Some(score) = score {
            *sum = Some(sum.unwrap_or(0.0) + score);
        }
    }
}

/// Whether `automaton` accepts `bytes` (as tantivy walks its term dictionary with it).
fn accepts<A: Automaton>(automaton: &A, bytes: &[u8]) -> bool {
    let mut state = automaton.start();
    for &b in bytes {
        if !automaton.can_match(&state) {
            return false;
        }
        state = automaton.accept(&state, b);
    }
    automaton.is_match(&state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::schema::{schema, settings};
    use agora_protocol::PackageMeta;
    use agora_protocol::search::SearchQuery;
    use proptest::prelude::*;
    use tantivy::collector::TopDocs;
    use tantivy::{IndexWriter, Searcher};

    const WORDS: [&str; 8] = [
        "tower",
        "towers",
        "axum",
        "parser",
        "parsing",
        "hello",
        "widget",
        "widgets-kit",
    ];

    fn arb_doc() -> impl Strategy<Value = IndexDoc> {
        let word = prop::sample::select(WORDS.to_vec());
        let words = prop::collection::vec(word.clone(), 0..5);
        (
            word.clone(),
            words.clone(),
            words,
            prop::option::of(prop::sample::select(vec!["web", "cli", "Data Tools"])),
            prop::option::of(word),
            0u64..5,
        )
            .prop_map(
                |(name, description, tags, category, author, published_at)| IndexDoc {
                    name: name.to_owned(),
                    version: "1.0.0".into(),
                    meta: PackageMeta {
                        description: description.join(" "),
                        category: category.map(str::to_owned),
                        author: author.map(|a| format!("{a} smith")),
                        license: Some("MIT".into()),
                        tags: tags.into_iter().map(str::to_owned).collect(),
                        ..PackageMeta::default()
                    },
                    published_at,
                },
            )
    }

    fn arb_query() -> impl Strategy<Value = SearchQuery> {
        // Exact words, typos of them, prefixes, and words no document holds.
        let word = prop::sample::select(vec![
            "tower", "towr", "toewr", "tow", "axum", "parsre", "pars", "hello", "helo", "widget",
            "widgetz", "kit", "smith", "zebra", "w",
        ]);
        (
            prop::collection::vec(word, 0..3),
            prop::option::of(prop::sample::select(vec!["web", "Data Tools"])),
            prop::option::of(prop::sample::select(vec!["axum smith", "hello smith"])),
        )
            .prop_map(|(words, category, author)| SearchQuery {
                text: words.join(" "),
                category: category.map(str::to_owned),
                author: author.map(str::to_owned),
                ..SearchQuery::default()
            })
    }

    /// The documents as one tantivy segment, the reference the tier must agree with.
    fn segment(docs: &[IndexDoc], f: &Fields) -> (Index, Searcher) {
        let (schema, _) = schema();
        let index = Index::builder()
            .schema(schema)
            .settings(settings())
            .create_in_ram()
            .unwrap();
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for doc in docs {
            writer.add_document(f.document(doc)).unwrap();
        }
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        (index, searcher)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// For any documents and search, the tier matches exactly the documents a tantivy
        /// segment of them matches, with the same scores (to float rounding), the same
        /// statistics, and shows the same result for each.
        #[test]
        fn the_tier_scores_as_a_tantivy_segment_would(
            docs in prop::collection::btree_map("[a-z]{1,6}", arb_doc(), 1..12),
            queries in prop::collection::vec(arb_query(), 1..6),
        ) {
            let (_, f) = schema();
            let mut docs: Vec<IndexDoc> = docs
                .into_iter()
                .map(|(name, d)| IndexDoc { name: format!("{name}-{}", d.name), ..d })
                .collect();
            docs.sort_by(|a, b| a.name.cmp(&b.name));
            docs.dedup_by(|a, b| a.name == b.name);
            let (index, searcher) = segment(&docs, &f);
            let tier = Tier::new(&docs, &index, &f).unwrap();
            for field in [f.name, f.description, f.terms, f.filter] {
                let tokens = searcher.total_num_tokens(field).unwrap();
                prop_assert_eq!(tier.total_num_tokens(field), tokens);
            }
            for q in queries {
                let plan = f.plan(&q);
                let want: BTreeMap<String, Score> = searcher
                    .search(&*plan.query(), &TopDocs::with_limit(100).order_by_score())
                    .unwrap()
                    .into_iter()
                    .map(|(score, addr)| (f.hit(&searcher, addr).unwrap().name, score))
                    .collect();
                let got: BTreeMap<String, Score> = tier
                    .matches(&plan, &searcher)
                    .unwrap()
                    .into_iter()
                    .map(|(doc, score)| (tier.name(doc).to_owned(), score))
                    .collect();
                let names = |m: &BTreeMap<String, Score>| m.keys().cloned().collect::<Vec<_>>();
                prop_assert_eq!(names(&want), names(&got), "{:?}", q);
                for (name, score) in &want {
                    let diff = (score - got[name]).abs();
                    let close = diff <= score.abs() * 1e-5;
                    prop_assert!(close, "{q:?} {name}: {score} vs {}", got[name]);
                }
                for term in plan.words.iter().flatten().map(|a| &a.term).chain(&plan.filters) {
                    prop_assert_eq!(tier.doc_freq(term), searcher.doc_freq(term).unwrap());
                }
            }
            for (doc, d) in docs.iter().enumerate() {
                let addr = tantivy::DocAddress::new(0, doc as DocId);
                prop_assert_eq!(tier.name(doc as DocId), d.name.as_str());
                prop_assert_eq!(tier.hit(&f, doc as DocId), f.hit(&searcher, addr).unwrap());
            }
        }
    }
}
