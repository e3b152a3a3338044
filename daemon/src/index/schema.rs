//! The index's schema, and the two conversions across it: an [`IndexDoc`] into a tantivy
//! document, a stored document back into a [`SearchHit`].

use agora_protocol::search::SearchHit;
use tantivy::schema::{
    FAST, FacetOptions, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::{DocAddress, IndexSettings, Searcher, TantivyDocument, Term};

use super::{IndexDoc, IndexError};

/// The schema's fields. Both tiers of the index (base and overlay) are built from one
/// schema, so a `Field` or `Term` means the same in each.
///
/// Few fields are indexed, because every indexed field costs each new segment a term
/// dictionary builder (about a megabyte to set up, whatever the segment holds): the four
/// exact-match filters share one field, `filter`, as `category:web`, `tag:rust`, ...
pub(super) struct Fields {
    /// The exact name: deletion key, sort key, stored.
    pub name_key: Field,
    /// The name as words.
    pub name: Field,
    pub version: Field,
    pub description: Field,
    /// Tags, keywords, category and author as words.
    pub terms: Field,
    /// Exact values to filter on, one term per filter (see [`Filter`]).
    pub filter: Field,
    pub category_facet: Field,
    /// Stored only: shown in results.
    pub category: Field,
    pub tag: Field,
    pub author: Field,
    pub license: Field,
    /// Stored and sortable, not searched.
    pub published_at: Field,
}

/// The exact-match filters a search can apply.
#[derive(Clone, Copy, Debug)]
pub(super) enum Filter {
    Category,
    Tag,
    Author,
    License,
}

/// Name of the fast field results are sorted by for [`SortOrder::Name`](agora_protocol::search::SortOrder).
pub(super) const NAME_KEY: &str = "name_key";
/// Name of the fast field results are sorted by for [`SortOrder::Newest`](agora_protocol::search::SortOrder).
pub(super) const PUBLISHED_AT: &str = "published_at";
/// Name of the facet field category counts come from.
pub(super) const CATEGORY_FACET: &str = "category_facet";

/// Words, with their frequencies (for BM25) and no positions: no search matches a phrase,
/// and positions are most of what indexing a description costs.
fn words() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("default")
            .set_index_option(IndexRecordOption::WithFreqs),
    )
}

pub(super) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        name_key: b.add_text_field(NAME_KEY, STRING | STORED | FAST),
        name: b.add_text_field("name", words()),
        version: b.add_text_field("version", STORED),
        description: b.add_text_field("description", words() | STORED),
        terms: b.add_text_field("terms", words()),
        filter: b.add_text_field("filter", STRING),
        category_facet: b.add_facet_field(CATEGORY_FACET, FacetOptions::default()),
        category: b.add_text_field("category", STORED),
        tag: b.add_text_field("tag", STORED),
        author: b.add_text_field("author", STORED),
        license: b.add_text_field("license", STORED),
        published_at: b.add_u64_field(PUBLISHED_AT, STORED | FAST),
    };
    (b.build(), f)
}

pub(super) fn settings() -> IndexSettings {
    IndexSettings {
        // A thread per segment to compress a few stored documents costs more than it saves.
        docstore_compress_dedicated_thread: false,
        ..IndexSettings::default()
    }
}

impl Fields {
    /// The term that identifies a package's document.
    pub fn name_term(&self, name: &str) -> Term {
        Term::from_field_text(self.name_key, name)
    }

    /// The term a document with `value` for `filter` carries.
    pub fn filter_term(&self, filter: Filter, value: &str) -> Term {
        Term::from_field_text(self.filter, &filter_value(filter, value))
    }

    pub fn document(&self, d: &IndexDoc) -> TantivyDocument {
        let m = &d.meta;
        let mut doc = TantivyDocument::default();
        doc.add_text(self.name_key, &d.name);
        doc.add_text(self.name, &d.name);
        doc.add_text(self.version, &d.version);
        doc.add_text(self.description, &m.description);
        for t in m.tags.iter().chain(&m.keywords) {
            doc.add_text(self.terms, t);
        }
        for t in &m.tags {
            doc.add_text(self.tag, t);
            doc.add_text(self.filter, filter_value(Filter::Tag, t));
        }
        if let Some(c) = &m.category {
            doc.add_text(self.category, c);
            doc.add_text(self.filter, filter_value(Filter::Category, c));
            doc.add_text(self.terms, c);
            doc.add_facet(
                self.category_facet,
                tantivy::schema::Facet::from_path([c.as_str()]),
            );
        }
        if let Some(a) = &m.author {
            doc.add_text(self.author, a);
            doc.add_text(self.filter, filter_value(Filter::Author, a));
            doc.add_text(self.terms, a);
        }
        if let Some(l) = &m.license {
            doc.add_text(self.license, l);
            doc.add_text(self.filter, filter_value(Filter::License, l));
        }
        doc.add_u64(self.published_at, d.published_at);
        doc
    }

    pub fn hit(&self, searcher: &Searcher, addr: DocAddress) -> Result<SearchHit, IndexError> {
        let doc: TantivyDocument = searcher.doc(addr)?;
        Ok(self.hit_of(&doc))
    }

    /// The result a stored document shows.
    pub fn hit_of(&self, doc: &TantivyDocument) -> SearchHit {
        let text = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        SearchHit {
            name: text(self.name_key).unwrap_or_default(),
            version: text(self.version).unwrap_or_default(),
            description: text(self.description).unwrap_or_default(),
            category: text(self.category),
            author: text(self.author),
            license: text(self.license),
            tags: doc
                .get_all(self.tag)
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            published_at: doc
                .get_first(self.published_at)
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
        }
    }
}

/// A filter's value as the `filter` field holds it.
fn filter_value(filter: Filter, value: &str) -> String {
    let prefix = match filter {
        Filter::Category => "category",
        Filter::Tag => "tag",
        Filter::Author => "author",
        Filter::License => "license",
    };
    // Not format!: its machinery was a third of building a document (a rebuild builds one
    // per package, with up to 19 of these).
    let mut term = String::with_capacity(prefix.len() + 1 + value.len());
    term.push_str(prefix);
    term.push(':');
    term.push_str(value);
    term
}
