//! What a search reads: the base index (large, committed rarely) and the overlay (packages
//! changed since the base's last commit, as a small in-memory [`Tier`] built by the first
//! search after a change), swapped together as one [`View`]. A package in the overlay is
//! hidden in the base, where its document is older or was removed. Both tiers are scored
//! with the statistics of both, so their BM25 scores compare and the two result lists merge
//! into one page.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use agora_protocol::search::{SearchQuery, SearchResults, SortOrder};
use tantivy::collector::{Collector, Count, FacetCollector, FacetCounts, TopDocs};
use tantivy::index::SegmentId;
use tantivy::query::{
    AllQuery, Bm25StatisticsProvider, BooleanQuery, ConstScorer, EmptyScorer, EnableScoring,
    Explanation, Occur, Query, Scorer, TermQuery, Weight,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocAddress, DocId, DocSet, Order, Score, Searcher, SegmentReader, TERMINATED, Term};

use super::query::Plan;
use super::schema::{CATEGORY_FACET, Fields, NAME_KEY, PUBLISHED_AT};
use super::tier::Tier;
use super::{IndexDoc, IndexError};
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

    /// Packages a search finds over `base` with this overlay on top: the base's documents
    /// less those the overlay hides, plus the overlay's.
    pub fn num_docs(&self, base: &Searcher) -> u64 {
        let shadowed = self.entries.values().filter(|e| e.in_base).count() as u64;
        let docs = self.entries.values().filter(|e| e.doc.is_some()).count() as u64;
        base.num_docs() - shadowed + docs
    }
}

/// How many packages there are and how many in each category.
type Counts = (u64, BTreeMap<String, u64>);

/// The base's counts over all its documents, computed by the first browse after a base
/// commit and shared by every view over that base.
pub(super) type BaseCounts = Arc<OnceLock<Counts>>;

/// One consistent state of the index for searches.
pub(super) struct View {
    base: Searcher,
    base_counts: BaseCounts,
    overlay: Option<Tier>,
    /// The base's documents of the names the overlay holds, found once for every search of
    /// this view.
    hidden_docs: HiddenDocs,
}

impl View {
    /// The view of `base` with `overlay` on top (indexing the overlay's documents).
    /// `base_counts` must belong to this base (a fresh one after every base commit).
    pub fn new(
        base: Searcher,
        base_counts: BaseCounts,
        overlay: &Overlay,
        f: &Fields,
    ) -> Result<Self, IndexError> {
        let mut docs = overlay
            .entries
            .values()
            .filter_map(|e| e.doc.as_ref())
            .peekable();
        let tier = match docs.peek() {
            None => None,
            Some(_) => Some(Tier::new(docs, base.index(), f)?),
        };
        let hidden_docs = HiddenDocs::find(&base, overlay, f)?;
        Ok(Self {
            base,
            base_counts,
            overlay: tier,
            hidden_docs,
        })
    }

    /// Whether an overlay is searched besides the base.
    #[cfg(test)]
    pub fn has_overlay(&self) -> bool {
        self.overlay.is_some()
    }

    /// Runs a checked query over both tiers and merges their results into one page.
    pub fn search(&self, f: &Fields, q: &SearchQuery) -> Result<SearchResults, IndexError> {
        let sort = match q.sort {
            SortOrder::Relevance if q.text.trim().is_empty() => SortOrder::Name,
            other => other,
        };
        let wanted = (q.offset + q.limit) as usize;
        // Browsing (no text, no filter) answers from what does not depend on the query.
        let browse = q.text.trim().is_empty()
            && q.category.is_none()
            && q.tag.is_none()
            && q.author.is_none()
            && q.license.is_none();
        let (found, (total, categories)) = match (browse, sort) {
            (true, SortOrder::Name) => (self.first_by_name(f, wanted)?, self.browse_counts()?),
            (true, _) => (
                self.best(&Plan::default(), sort, wanted, false)?.0,
                self.browse_counts()?,
            ),
            (false, _) => {
                let (found, counts) = self.best(&f.plan(q), sort, wanted, true)?;
                (found, counts.unwrap_or_default())
            }
        };
        let hits = found
            .into_iter()
            .skip(q.offset as usize)
            .take(q.limit as usize)
            .map(|(_, tier, addr)| match (tier, &self.overlay) {
                (BASE, _) => f.hit(&self.base, addr),
                (_, Some(overlay)) => Ok(overlay.hit(f, addr.doc_id)),
                (_, None) => unreachable!("a result from an overlay that does not exist"),
            })
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

    /// The `wanted` best matches of `plan` over both tiers, best first, and if `count`, how
    /// many matched in all and per category.
    fn best(
        &self,
        plan: &Plan,
        sort: SortOrder,
        wanted: usize,
        count: bool,
    ) -> Result<(Vec<Found>, Option<Counts>), IndexError> {
        let stats = Statistics {
            base: &self.base,
            overlay: self.overlay.as_ref(),
        };
        let query = plan.query();
        let base_query: Box<dyn Query> = if self.hidden_docs.is_empty() {
            query
        } else {
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, query),
                (Occur::MustNot, Box::new(self.hidden_docs.clone())),
            ]))
        };
        let (docs, base_counts) = collect(&self.base, &*base_query, &stats, sort, wanted, count)?;
        let mut found: Vec<Found> = docs.into_iter().map(|(k, a)| (k, BASE, a)).collect();
        let mut counts = Counts::default();
        if let Some((n, facets)) = base_counts {
            add_counts(&mut counts, n as u64, &facets, 1);
        }
        if let Some(overlay) = &self.overlay {
            let matches = overlay.matches(plan, &stats)?;
            if count {
                add_overlay_counts(&mut counts, overlay, matches.iter().map(|&(doc, _)| doc));
            }
            let mut keyed: Vec<Found> = matches
                .into_iter()
                .map(|(doc, score)| {
                    let key = match sort {
                        SortOrder::Relevance => Key::Score(score),
                        SortOrder::Name => Key::Name(Some(overlay.name(doc).to_owned())),
                        SortOrder::Newest => Key::Newest(Some(overlay.published_at(doc))),
                    };
                    (key, OVERLAY, DocAddress::new(0, doc))
                })
                .collect();
            sort_found(&mut keyed);
            keyed.truncate(wanted);
            found.extend(keyed);
        }
        sort_found(&mut found);
        Ok((found, count.then_some(counts)))
    }

    /// The first `wanted` packages by name, merged from the name term dictionaries of every
    /// base segment (each kept sorted by tantivy) and the overlay's names (in order too): a
    /// browse reads about a page's worth of terms, not every document.
    fn first_by_name(&self, f: &Fields, wanted: usize) -> Result<Vec<Found>, IndexError> {
        let mut segments = Vec::new();
        for (ord, segment) in self.base.segment_readers().iter().enumerate() {
            let index = segment.inverted_index(f.name_key)?;
            segments.push((ord as u32, segment, index));
        }
        let mut cursors = Vec::new();
        for (i, (.., index)) in segments.iter().enumerate() {
            let mut terms = index.terms().stream()?;
            if terms.advance() {
                cursors.push((i, terms));
            }
        }
        let mut found: Vec<Found> = Vec::new();
        while found.len() < wanted {
            // Segments are few (tantivy merges them): a linear pick of the smallest is enough.
            let Some(next) = (0..cursors.len()).min_by(|&a, &b| {
                cursors[a]
                    .1
                    .key()
                    .cmp(cursors[b].1.key())
                    .then(cursors[a].0.cmp(&cursors[b].0))
            }) else {
                break;
            };
            let (i, terms) = &mut cursors[next];
            let (ord, segment, index) = &segments[*i];
            if let Ok(name) = std::str::from_utf8(terms.key()) {
                let mut postings =
                    index.read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)?;
                let mut doc = postings.doc();
                // Deleted documents keep their terms until a merge: take the live one, unless
                // the overlay hides it (the base's document of a name the overlay holds).
                while doc != TERMINATED {
                    if segment.alive_bitset().is_none_or(|a| a.is_alive(doc)) {
                        if !self.hidden_docs.contains(segment, doc) {
                            let addr = DocAddress::new(*ord, doc);
                            found.push((Key::Name(Some(name.to_owned())), BASE, addr));
                        }
                        break;
                    }
                    doc = postings.advance();
                }
            }
            if !terms.advance() {
                cursors.swap_remove(next);
            }
        }
        if let Some(overlay) = &self.overlay {
            let names = (0..overlay.num_docs() as DocId).take(wanted).map(|doc| {
                let key = Key::Name(Some(overlay.name(doc).to_owned()));
                (key, OVERLAY, DocAddress::new(0, doc))
            });
            found.extend(names);
            sort_found(&mut found);
            found.truncate(wanted);
        }
        Ok(found)
    }

    /// Packages and packages per category over everything: the base's counts (once per
    /// base), less its hidden documents, plus the overlay's.
    fn browse_counts(&self) -> Result<Counts, IndexError> {
        let base = match self.base_counts.get() {
            Some(c) => c,
            None => {
                let (n, facets) = self.base.search(&AllQuery, &(Count, facet_collector()))?;
                let mut counts = Counts::default();
                add_counts(&mut counts, n as u64, &facets, 1);
                let _ = self.base_counts.set(counts);
                self.base_counts.get().expect("just set")
            }
        };
        let mut counts = base.clone();
        if !self.hidden_docs.is_empty() {
            let (n, facets) = self
                .base
                .search(&self.hidden_docs, &(Count, facet_collector()))?;
            add_counts(&mut counts, n as u64, &facets, -1);
        }
        if let Some(overlay) = &self.overlay {
            add_overlay_counts(&mut counts, overlay, 0..overlay.num_docs() as DocId);
        }
        counts.1.retain(|_, n| *n > 0);
        Ok(counts)
    }
}

/// The base's documents hidden by a view's overlay, by base segment, each list sorted; as a
/// query it matches them. Looked up once when the view is built: a query over the names (a
/// `TermSetQuery` builds an FST of them; a union of term queries looks each up) cost every
/// search about half a millisecond at 100k packages with 200 names in the overlay.
#[derive(Clone, Debug, Default)]
struct HiddenDocs(Arc<HashMap<SegmentId, Arc<[DocId]>>>);

impl HiddenDocs {
    fn find(base: &Searcher, overlay: &Overlay, f: &Fields) -> Result<Self, IndexError> {
        let mut docs: HashMap<SegmentId, Vec<DocId>> = HashMap::new();
        let names = overlay.entries.iter().filter(|(_, e)| e.in_base);
        for (name, _) in names {
            let term = f.name_term(name);
            for segment in base.segment_readers() {
                let index = segment.inverted_index(f.name_key)?;
                let Some(mut postings) = index.read_postings(&term, IndexRecordOption::Basic)?
                else {
                    continue;
                };
                let found = docs.entry(segment.segment_id()).or_default();
                while postings.doc() != TERMINATED {
                    found.push(postings.doc());
                    postings.advance();
                }
            }
        }
        let docs = docs
            .into_iter()
            .map(|(segment, mut found)| {
                found.sort_unstable();
                found.dedup();
                (segment, found.into())
            })
            .collect();
        Ok(Self(Arc::new(docs)))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether document `doc` of base segment `segment` is hidden.
    fn contains(&self, segment: &SegmentReader, doc: DocId) -> bool {
        self.0
            .get(&segment.segment_id())
            .is_some_and(|docs| docs.binary_search(&doc).is_ok())
    }
}

/// Sorted documents as a [`DocSet`], positioned on the first.
struct DocList {
    docs: Arc<[DocId]>,
    at: usize,
}

impl DocList {
    fn new(docs: Arc<[DocId]>) -> Self {
        Self { docs, at: 0 }
    }
}

impl DocSet for DocList {
    fn advance(&mut self) -> DocId {
        self.at = (self.at + 1).min(self.docs.len());
        self.doc()
    }

    fn doc(&self) -> DocId {
        self.docs.get(self.at).copied().unwrap_or(TERMINATED)
    }

    fn size_hint(&self) -> u32 {
        self.docs.len() as u32
    }
}

impl Query for HiddenDocs {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for HiddenDocs {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(match self.0.get(&reader.segment_id()) {
            Some(docs) => Box::new(ConstScorer::new(DocList::new(docs.clone()), boost)),
            None => Box::new(EmptyScorer),
        })
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        if self.contains(reader, doc) {
            Ok(Explanation::new("hidden by the overlay", 1.0))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} is not hidden"
            )))
        }
    }
}

/// A result: its sort key, its tier ([`BASE`] or [`OVERLAY`]) and its address there (in the
/// overlay, its document id in segment 0).
type Found = (Key, usize, DocAddress);

const BASE: usize = 0;
const OVERLAY: usize = 1;

/// Best first; ties by tier, then address, so a page is the same every time.
fn sort_found(found: &mut [Found]) {
    found.sort_by(|a, b| {
        a.0.order(&b.0)
            .then(a.1.cmp(&b.1))
            .then_with(|| a.2.cmp(&b.2))
    });
}

fn facet_collector() -> FacetCollector {
    let mut facets = FacetCollector::for_field(CATEGORY_FACET);
    facets.add_facet("/");
    facets
}

/// Adds (`sign` 1) or takes away (`sign` -1) one tier's counts.
fn add_counts(counts: &mut Counts, n: u64, facets: &FacetCounts, sign: i8) {
    let apply = |total: &mut u64, by: u64| {
        *total = if sign < 0 {
            total.saturating_sub(by)
        } else {
            *total + by
        };
    };
    apply(&mut counts.0, n);
    for (facet, k) in facets.get("/") {
        apply(counts.1.entry(facet.to_path().join("/")).or_default(), k);
    }
}

/// Adds the overlay documents `docs` to the counts.
fn add_overlay_counts(counts: &mut Counts, overlay: &Tier, docs: impl Iterator<Item = DocId>) {
    for doc in docs {
        counts.0 += 1;
        if let Some(category) = overlay.category(doc) {
            *counts.1.entry(category.to_owned()).or_default() += 1;
        }
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

/// One tier's answer: its best matches with their keys, and if asked, how many matched and
/// their category counts.
type TierResult = (Vec<(Key, DocAddress)>, Option<(usize, FacetCounts)>);

/// The best `wanted` matches of `query` in one tier with their keys, and if `count`, how
/// many matched and their category counts.
fn collect(
    searcher: &Searcher,
    query: &dyn Query,
    stats: &dyn Bm25StatisticsProvider,
    sort: SortOrder,
    wanted: usize,
    count: bool,
) -> Result<TierResult, IndexError> {
    let top = TopDocs::with_limit(wanted);
    let counts = count.then(|| (Count, facet_collector()));
    /// Runs one sort's collector with the counts and keys its matches with `key`.
    fn keyed<T, C>(
        searcher: &Searcher,
        query: &dyn Query,
        stats: &dyn Bm25StatisticsProvider,
        top: C,
        counts: Option<(Count, FacetCollector)>,
        key: fn(T) -> Key,
    ) -> Result<TierResult, IndexError>
    where
        C: Collector<Fruit = Vec<(T, DocAddress)>>,
    {
        let (docs, counts) =
            searcher.search_with_statistics_provider(query, &(top, counts), stats)?;
        Ok((docs.into_iter().map(|(t, a)| (key(t), a)).collect(), counts))
    }
    match sort {
        SortOrder::Relevance => keyed(
            searcher,
            query,
            stats,
            top.order_by_score(),
            counts,
            Key::Score,
        ),
        SortOrder::Name => keyed(
            searcher,
            query,
            stats,
            top.order_by_string_fast_field(NAME_KEY, Order::Asc),
            counts,
            Key::Name,
        ),
        SortOrder::Newest => keyed(
            searcher,
            query,
            stats,
            top.order_by_fast_field::<u64>(PUBLISHED_AT, Order::Desc),
            counts,
            Key::Newest,
        ),
    }
}

/// BM25 statistics of both tiers together, so a term's weight is the same in each.
struct Statistics<'a> {
    base: &'a Searcher,
    overlay: Option<&'a Tier>,
}

impl Statistics<'_> {
    fn sum(&self, base: u64, overlay: impl Fn(&Tier) -> u64) -> u64 {
        base + self.overlay.map_or(0, overlay)
    }
}

impl Bm25StatisticsProvider for Statistics<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        let base = self.base.total_num_tokens(field)?;
        Ok(self.sum(base, |o| o.total_num_tokens(field)))
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        let base = Bm25StatisticsProvider::total_num_docs(self.base)?;
        Ok(self.sum(base, Tier::num_docs))
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let base = self.base.doc_freq(term)?;
        Ok(self.sum(base, |o| o.doc_freq(term)))
    }
}
