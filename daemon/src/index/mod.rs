//! The search index: tantivy over the newest installable release of every package, so search
//! is local and answers in well under a millisecond.
//!
//! It is derived data: the catalog in redb is the truth, and the index is rebuilt from it
//! whenever their counts disagree at start-up (a crash between the two commits, a new schema).
//! Text fields use tantivy's default tokenizer (split on non-alphanumerics, lowercase), so
//! `hello-world` is the terms `hello` and `world`; each query term also matches within edit
//! distance 1 (2 for terms of 8 bytes or more) and the last term as a prefix, which is how
//! `helo-wrld` finds `hello-world`. Never called from the event loop.

use std::path::Path;
use std::sync::Mutex;

use agora_protocol::PackageMeta;
use agora_protocol::search::{SearchHit, SearchQuery, SearchResults, SortOrder};
use tantivy::collector::{Count, FacetCollector, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, FacetOptions, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, Value,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Searcher, TantivyDocument,
    Term,
};

/// Memory the index writer may buffer before it flushes a segment (tantivy's minimum).
const WRITER_MEMORY: usize = 15_000_000;
/// Weight of a match in the package name against one in other text.
const NAME_BOOST: f32 = 4.0;
/// Weight of a fuzzy (typo-tolerant) match against an exact one.
const FUZZY_BOOST: f32 = 0.5;
/// Terms shorter than this are matched exactly (a typo in 3 letters is another word).
const FUZZY_MIN_LEN: usize = 4;
/// Terms at least this long tolerate two edits.
const FUZZY_TWO_EDITS_LEN: usize = 8;
/// Most categories reported in facet counts.
const MAX_FACETS: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(Box<tantivy::TantivyError>),
    #[error("search index directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("search index i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid search: {0}")]
    InvalidQuery(String),
}

impl From<tantivy::TantivyError> for IndexError {
    fn from(e: tantivy::TantivyError) -> Self {
        Self::Tantivy(Box::new(e))
    }
}

/// What the index holds for one package: its newest installable release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexDoc {
    pub name: String,
    pub version: String,
    pub meta: PackageMeta,
    pub published_at: u64,
}

struct Fields {
    /// The exact name: deletion key, sort key, stored.
    name_key: Field,
    /// The name as words.
    name: Field,
    version: Field,
    description: Field,
    /// Tags, keywords, category and author as words.
    terms: Field,
    category: Field,
    category_facet: Field,
    tag: Field,
    author: Field,
    license: Field,
    published_at: Field,
}

pub struct SearchIndex {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    f: Fields,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        name_key: b.add_text_field("name_key", STRING | STORED | FAST),
        name: b.add_text_field("name", TEXT),
        version: b.add_text_field("version", STORED),
        description: b.add_text_field("description", TEXT | STORED),
        terms: b.add_text_field("terms", TEXT),
        category: b.add_text_field("category", STRING | STORED),
        category_facet: b.add_facet_field("category_facet", FacetOptions::default()),
        tag: b.add_text_field("tag", STRING | STORED),
        author: b.add_text_field("author", STRING | STORED),
        license: b.add_text_field("license", STRING | STORED),
        published_at: b.add_u64_field("published_at", INDEXED | STORED | FAST),
    };
    (b.build(), f)
}

impl SearchIndex {
    /// Opens the index in `dir`, recreating it if it was built with another schema.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir)?;
        let (schema, f) = schema();
        let index = match Index::open_or_create(MmapDirectory::open(dir)?, schema.clone()) {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!(error = %e, "search index unusable; rebuilding it");
                std::fs::remove_dir_all(dir)?;
                std::fs::create_dir_all(dir)?;
                Index::open_or_create(MmapDirectory::open(dir)?, schema)?
            }
        };
        Self::with_index(index, f)
    }

    /// An index in memory (benchmarks and tests).
    pub fn in_memory() -> Result<Self, IndexError> {
        let (schema, f) = schema();
        Self::with_index(Index::create_in_ram(schema), f)
    }

    fn with_index(index: Index, f: Fields) -> Result<Self, IndexError> {
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            reader,
            writer: Mutex::new(writer),
            f,
        })
    }

    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Replaces the documents of these packages and removes those of `removed`, then makes the
    /// change durable and visible.
    pub fn update(&self, docs: &[IndexDoc], removed: &[String]) -> Result<(), IndexError> {
        if docs.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        for name in removed {
            writer.delete_term(Term::from_field_text(self.f.name_key, name));
        }
        for doc in docs {
            writer.delete_term(Term::from_field_text(self.f.name_key, &doc.name));
            writer.add_document(self.to_document(doc))?;
        }
        writer.commit()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// Drops everything and indexes `docs`.
    pub fn rebuild(&self, docs: impl IntoIterator<Item = IndexDoc>) -> Result<(), IndexError> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer.delete_all_documents()?;
        for doc in docs {
            writer.add_document(self.to_document(&doc))?;
        }
        writer.commit()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    fn to_document(&self, d: &IndexDoc) -> TantivyDocument {
        let f = &self.f;
        let m = &d.meta;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.name_key, &d.name);
        doc.add_text(f.name, &d.name);
        doc.add_text(f.version, &d.version);
        doc.add_text(f.description, &m.description);
        for t in m.tags.iter().chain(&m.keywords) {
            doc.add_text(f.terms, t);
        }
        for t in &m.tags {
            doc.add_text(f.tag, t);
        }
        if let Some(c) = &m.category {
            doc.add_text(f.category, c);
            doc.add_text(f.terms, c);
            doc.add_facet(
                f.category_facet,
                tantivy::schema::Facet::from_path([c.as_str()]),
            );
        }
        if let Some(a) = &m.author {
            doc.add_text(f.author, a);
            doc.add_text(f.terms, a);
        }
        if let Some(l) = &m.license {
            doc.add_text(f.license, l);
        }
        doc.add_u64(f.published_at, d.published_at);
        doc
    }

    /// Runs a search.
    pub fn search(&self, q: &SearchQuery) -> Result<SearchResults, IndexError> {
        q.check().map_err(IndexError::InvalidQuery)?;
        let query = self.build_query(q);
        let searcher = self.reader.searcher();
        let top = TopDocs::with_limit(q.limit as usize).and_offset(q.offset as usize);
        let mut facets = FacetCollector::for_field("category_facet");
        facets.add_facet("/");
        let sort = match q.sort {
            SortOrder::Relevance if q.text.trim().is_empty() => SortOrder::Name,
            other => other,
        };
        let (addrs, total, facet_counts): (Vec<DocAddress>, usize, _) = match sort {
            SortOrder::Relevance => {
                let (docs, total, facets) =
                    searcher.search(&query, &(top.order_by_score(), Count, facets))?;
                (docs.into_iter().map(|(_, a)| a).collect(), total, facets)
            }
            SortOrder::Name => {
                let (docs, total, facets) = searcher.search(
                    &query,
                    &(
                        top.order_by_string_fast_field("name_key", Order::Asc),
                        Count,
                        facets,
                    ),
                )?;
                (docs.into_iter().map(|(_, a)| a).collect(), total, facets)
            }
            SortOrder::Newest => {
                let (docs, total, facets) = searcher.search(
                    &query,
                    &(
                        top.order_by_fast_field::<u64>("published_at", Order::Desc),
                        Count,
                        facets,
                    ),
                )?;
                (docs.into_iter().map(|(_, a)| a).collect(), total, facets)
            }
        };
        let hits = addrs
            .into_iter()
            .map(|a| self.hit(&searcher, a))
            .collect::<Result<_, _>>()?;
        let mut categories: Vec<(String, u64)> = facet_counts
            .top_k("/", MAX_FACETS)
            .into_iter()
            .map(|(facet, count)| (facet.to_path().join("/"), count))
            .collect();
        categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(SearchResults {
            total: total as u64,
            hits,
            categories,
        })
    }

    fn build_query(&self, q: &SearchQuery) -> Box<dyn Query> {
        let f = &self.f;
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
        for (field, value) in [
            (f.category, &q.category),
            (f.tag, &q.tag),
            (f.author, &q.author),
            (f.license, &q.license),
        ] {
            if let Some(v) = value {
                clauses.push((
                    Occur::Must,
                    Box::new(TermQuery::new(
                        Term::from_field_text(field, v),
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
        let f = &self.f;
        let mut alts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (field, boost) in [(f.name, NAME_BOOST), (f.description, 1.0), (f.terms, 1.5)] {
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
        for (field, boost) in [(f.name, NAME_BOOST), (f.terms, 1.0), (f.description, 0.5)] {
            let term = Term::from_field_text(field, word);
            if distance > 0 && field != f.description {
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

    fn hit(&self, searcher: &Searcher, addr: DocAddress) -> Result<SearchHit, IndexError> {
        let f = &self.f;
        let doc: TantivyDocument = searcher.doc(addr)?;
        let text = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Ok(SearchHit {
            name: text(f.name_key).unwrap_or_default(),
            version: text(f.version).unwrap_or_default(),
            description: text(f.description).unwrap_or_default(),
            category: text(f.category),
            author: text(f.author),
            license: text(f.license),
            tags: doc
                .get_all(f.tag)
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            published_at: doc
                .get_first(f.published_at)
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
        })
    }
}

/// Lowercase alphanumeric runs, as tantivy's default tokenizer makes them.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str, desc: &str, category: &str, published_at: u64) -> IndexDoc {
        IndexDoc {
            name: name.into(),
            version: "1.0.0".into(),
            meta: PackageMeta {
                description: desc.into(),
                category: Some(category.into()),
                author: Some("ada".into()),
                license: Some("MIT".into()),
                tags: vec![category.into()],
                ..PackageMeta::default()
            },
            published_at,
        }
    }

    fn names(r: &SearchResults) -> Vec<&str> {
        r.hits.iter().map(|h| h.name.as_str()).collect()
    }

    fn sample() -> SearchIndex {
        let index = SearchIndex::in_memory().unwrap();
        index
            .update(
                &[
                    doc("hello-world", "a greeting template", "starter", 3),
                    doc("rust-web", "axum service skeleton", "web", 1),
                    doc("react-app", "a web front end, hello included", "web", 2),
                ],
                &[],
            )
            .unwrap();
        index
    }

    #[test]
    fn typos_find_the_package_and_names_rank_first() {
        let index = sample();
        let r = index.search(&SearchQuery::text("helo-wrld")).unwrap();
        assert_eq!(names(&r), ["hello-world"]);
        // "hello" in a name beats "hello" in a description.
        let r = index.search(&SearchQuery::text("hello")).unwrap();
        assert_eq!(names(&r), ["hello-world", "react-app"]);
        // A prefix of the last word.
        let r = index.search(&SearchQuery::text("ske")).unwrap();
        assert_eq!(names(&r), ["rust-web"]);
    }

    #[test]
    fn filters_sorts_paging_and_facets() {
        let index = sample();
        let q = SearchQuery {
            category: Some("web".into()),
            sort: SortOrder::Name,
            ..SearchQuery::default()
        };
        let r = index.search(&q).unwrap();
        assert_eq!(names(&r), ["react-app", "rust-web"]);
        assert_eq!(r.total, 2);
        assert_eq!(r.categories, vec![("web".to_string(), 2)]);

        let q = SearchQuery {
            sort: SortOrder::Newest,
            limit: 1,
            offset: 1,
            ..SearchQuery::default()
        };
        let r = index.search(&q).unwrap();
        assert_eq!(names(&r), ["react-app"]);
        assert_eq!(r.total, 3);
        assert_eq!(
            r.categories,
            vec![("web".to_string(), 2), ("starter".to_string(), 1)]
        );

        let q = SearchQuery {
            tag: Some("starter".into()),
            author: Some("ada".into()),
            license: Some("MIT".into()),
            ..SearchQuery::default()
        };
        assert_eq!(names(&index.search(&q).unwrap()), ["hello-world"]);
        let q = SearchQuery {
            text: "hello".into(),
            author: Some("bob".into()),
            ..SearchQuery::default()
        };
        assert_eq!(index.search(&q).unwrap().total, 0);

        // Replacing a package's document keeps one document per name.
        index
            .update(
                &[doc("rust-web", "now with tower", "web", 9)],
                &["react-app".into()],
            )
            .unwrap();
        assert_eq!(index.num_docs(), 2);
        let r = index.search(&SearchQuery::text("tower")).unwrap();
        assert_eq!(names(&r), ["rust-web"]);
    }

    #[test]
    fn an_oversized_query_is_refused() {
        let index = sample();
        let q = SearchQuery::text("x".repeat(300));
        assert!(matches!(
            index.search(&q),
            Err(IndexError::InvalidQuery(m)) if m == "query is 300 bytes; the limit is 256"
        ));
    }
}
