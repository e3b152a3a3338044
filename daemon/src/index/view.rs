//! What a search reads: the base index (large, committed rarely) and the overlay (packages
//! changed since the base's last commit, as one small segment rebuilt on every change),
//! swapped together as one [`View`]. A package in the overlay is hidden in the base, where
//! its document is older or was removed. Both tiers are scored with the statistics of both,
//! so their BM25 scores compare and the two result lists merge into one page.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use agora_protocol::search::{SearchQuery, SearchResults, SortOrder};
use tantivy::collector::{Count, FacetCollector, FacetCounts, TopDocs};
use tantivy::directory::RamDirectory;
use tantivy::query::{Bm25StatisticsProvider, BooleanQuery, Occur, Query, TermQuery, TermSetQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema};
use tantivy::{DocAddress, Index, Order, ReloadPolicy, Searcher, Term};

use super::schema::{CATEGORY_FACET, Fields, NAME_KEY, PUBLISHED_AT, settings};
use super::{IndexDoc, IndexError};

/// Memory budget for building an overlay segment. tantivy sizes the term table from it (a
/// third of it, here 4,096 slots, grown when needed): a full overlay has a few thousand
/// distinct terms, and a bigger table is memory to clear on every rebuild.
const OVERLAY_MEMORY: usize = 100_000;
/// Most categories reported in facet counts.
const MAX_FACETS: usize = 50;

/// The packages changed since the base's last commit: their new document, or `None` for a
/// package that no longer has one. Lives under the index's writer lock.
#[derive(Default)]
pub(super) struct Overlay {
    entries: BTreeMap<String, Entry>,
}

struct Entry {
    doc: Option<IndexDoc>,
    /// The base holds a document for this name (which the overlay hides).
    in_base: bool,
}

impl Overlay {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records the current document of `name` (`None`: it has none).
    pub fn set(
        &mut self,
        name: String,
        doc: Option<IndexDoc>,
        base: &Searcher,
        f: &Fields,
    ) -> Result<(), IndexError> {
        let in_base = match self.entries.get(&name) {
            Some(e) => e.in_base,
            None => {
                let q = TermQuery::new(f.name_term(&name), IndexRecordOption::Basic);
                base.search(&q, &Count)? > 0
            }
        };
        self.entries.insert(name, Entry { doc, in_base });
        Ok(())
    }

    /// Every entry, for folding into the base.
    pub fn changes(&self) -> impl Iterator<Item = (&str, Option<&IndexDoc>)> {
        self.entries
            .iter()
            .map(|(n, e)| (n.as_str(), e.doc.as_ref()))
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// One consistent state of the index for searches.
pub(super) struct View {
    base: Searcher,
    overlay: Option<Searcher>,
    /// The names the overlay holds: hidden in the base.
    hidden: Vec<Term>,
    num_docs: u64,
}

impl View {
    /// The view of `base` with `overlay` on top (building the overlay's segment).
    pub fn new(
        base: Searcher,
        overlay: &Overlay,
        schema: &Schema,
        f: &Fields,
    ) -> Result<Self, IndexError> {
        let docs: Vec<&IndexDoc> = overlay
            .entries
            .values()
            .filter_map(|e| e.doc.as_ref())
            .collect();
        let shadowed = overlay.entries.values().filter(|e| e.in_base).count() as u64;
        let num_docs = base.num_docs() - shadowed + docs.len() as u64;
        let segment = if docs.is_empty() {
            None
        } else {
            let mut writer = Index::builder()
                .schema(schema.clone())
                .settings(settings())
                .single_segment_index_writer(RamDirectory::create(), OVERLAY_MEMORY)?;
            for doc in docs {
                writer.add_document(f.document(doc))?;
            }
            let reader = writer
                .finalize()?
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .num_warming_threads(0)
                .try_into()?;
            Some(reader.searcher())
        };
        Ok(Self {
            base,
            overlay: segment,
            hidden: overlay.entries.keys().map(|n| f.name_term(n)).collect(),
            num_docs,
        })
    }

    pub fn num_docs(&self) -> u64 {
        self.num_docs
    }

    /// Whether an overlay segment is searched besides the base.
    #[cfg(test)]
    pub fn has_overlay(&self) -> bool {
        self.overlay.is_some()
    }

    /// Runs a checked query over both tiers and merges their results into one page.
    pub fn search(&self, f: &Fields, q: &SearchQuery) -> Result<SearchResults, IndexError> {
        let query = f.query(q);
        let sort = match q.sort {
            SortOrder::Relevance if q.text.trim().is_empty() => SortOrder::Name,
            other => other,
        };
        let wanted = (q.offset + q.limit) as usize;
        let stats = Statistics {
            base: &self.base,
            overlay: self.overlay.as_ref(),
        };
        let base_query: Box<dyn Query> = if self.hidden.is_empty() {
            query.box_clone()
        } else {
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, query.box_clone()),
                (
                    Occur::MustNot,
                    Box::new(TermSetQuery::new(self.hidden.iter().cloned())),
                ),
            ]))
        };
        let mut tiers: Vec<(&Searcher, &dyn Query)> = vec![(&self.base, &*base_query)];
        if let Some(overlay) = &self.overlay {
            tiers.push((overlay, &*query));
        }

        let mut found: Vec<(Key, usize, DocAddress)> = Vec::new();
        let mut total = 0;
        let mut categories: BTreeMap<String, u64> = BTreeMap::new();
        for (tier, (searcher, query)) in tiers.iter().enumerate() {
            let (docs, count, facets) = collect(searcher, *query, &stats, sort, wanted)?;
            found.extend(docs.into_iter().map(|(k, a)| (k, tier, a)));
            total += count as u64;
            for (facet, n) in facets.get("/") {
                *categories.entry(facet.to_path().join("/")).or_default() += n;
            }
        }
        found.sort_by(|a, b| {
            a.0.order(&b.0)
                .then(a.1.cmp(&b.1))
                .then_with(|| a.2.cmp(&b.2))
        });
        let hits = found
            .into_iter()
            .skip(q.offset as usize)
            .take(q.limit as usize)
            .map(|(_, tier, addr)| f.hit(tiers[tier].0, addr))
            .collect::<Result<_, _>>()?;
        let mut categories: Vec<(String, u64)> = categories.into_iter().collect();
        categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        categories.truncate(MAX_FACETS);
        Ok(SearchResults {
            total,
            hits,
            categories,
        })
    }
}

/// The key a result is ordered by.
enum Key {
    Score(f32),
    Name(Option<String>),
    Newest(Option<u64>),
}

impl Key {
    /// Best first: higher score, name A to Z, newest first; a missing value last.
    fn order(&self, other: &Self) -> Ordering {
        fn present_first<T>(
            a: &Option<T>,
            b: &Option<T>,
            by: impl Fn(&T, &T) -> Ordering,
        ) -> Ordering {
            match (a, b) {
                (Some(a), Some(b)) => by(a, b),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
        }
        match (self, other) {
            (Key::Score(a), Key::Score(b)) => b.total_cmp(a),
            (Key::Name(a), Key::Name(b)) => present_first(a, b, |a, b| a.cmp(b)),
            (Key::Newest(a), Key::Newest(b)) => present_first(a, b, |a, b| b.cmp(a)),
            _ => Ordering::Equal,
        }
    }
}

/// One tier's answer: its best matches with their keys, how many matched, and their
/// category counts.
type TierResult = (Vec<(Key, DocAddress)>, usize, FacetCounts);

/// The best `wanted` matches of `query` in one tier, with the number of matches and their
/// category counts.
fn collect(
    searcher: &Searcher,
    query: &dyn Query,
    stats: &dyn Bm25StatisticsProvider,
    sort: SortOrder,
    wanted: usize,
) -> Result<TierResult, IndexError> {
    let top = TopDocs::with_limit(wanted);
    let mut facets = FacetCollector::for_field(CATEGORY_FACET);
    facets.add_facet("/");
    Ok(match sort {
        SortOrder::Relevance => {
            let (docs, count, facets) = searcher.search_with_statistics_provider(
                query,
                &(top.order_by_score(), Count, facets),
                stats,
            )?;
            let docs = docs.into_iter().map(|(s, a)| (Key::Score(s), a)).collect();
            (docs, count, facets)
        }
        SortOrder::Name => {
            let (docs, count, facets) = searcher.search_with_statistics_provider(
                query,
                &(
                    top.order_by_string_fast_field(NAME_KEY, Order::Asc),
                    Count,
                    facets,
                ),
                stats,
            )?;
            let docs = docs.into_iter().map(|(n, a)| (Key::Name(n), a)).collect();
            (docs, count, facets)
        }
        SortOrder::Newest => {
            let (docs, count, facets) = searcher.search_with_statistics_provider(
                query,
                &(
                    top.order_by_fast_field::<u64>(PUBLISHED_AT, Order::Desc),
                    Count,
                    facets,
                ),
                stats,
            )?;
            let docs = docs.into_iter().map(|(t, a)| (Key::Newest(t), a)).collect();
            (docs, count, facets)
        }
    })
}

/// BM25 statistics of both tiers together, so a term's weight is the same in each.
struct Statistics<'a> {
    base: &'a Searcher,
    overlay: Option<&'a Searcher>,
}

impl Statistics<'_> {
    fn sum(&self, of: impl Fn(&Searcher) -> tantivy::Result<u64>) -> tantivy::Result<u64> {
        Ok(of(self.base)? + self.overlay.map(&of).transpose()?.unwrap_or(0))
    }
}

impl Bm25StatisticsProvider for Statistics<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        self.sum(|s| s.total_num_tokens(field))
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        self.sum(Bm25StatisticsProvider::total_num_docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        self.sum(|s| s.doc_freq(term))
    }
}
