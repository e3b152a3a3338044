//! Search queries and results, as the CLI sends them and the daemon answers.

use serde::{Deserialize, Serialize};

use crate::limits::{
    MAX_SEARCH_LIMIT, MAX_SEARCH_QUERY_LEN, MAX_SEARCH_WINDOW, MAX_SHORT_FIELD_LEN,
};

/// How results are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// Best BM25 match first (names count most); with no query text, by name.
    #[default]
    Relevance,
    /// By package name, A to Z.
    Name,
    /// Most recently published first.
    Newest,
}

/// A catalog search.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Free text; empty lists everything that passes the filters.
    pub text: String,
    pub category: Option<String>,
    pub tag: Option<String>,
    pub author: Option<String>,
    pub license: Option<String>,
    pub sort: SortOrder,
    pub limit: u32,
    pub offset: u32,
}

impl Default for SearchQuery {
    fn default() -> Self {
        Self {
            text: String::new(),
            category: None,
            tag: None,
            author: None,
            license: None,
            sort: SortOrder::Relevance,
            limit: 20,
            offset: 0,
        }
    }
}

impl SearchQuery {
    /// A free-text query with default filters and paging.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// Checks the limits a query from outside must respect.
    pub fn check(&self) -> Result<(), String> {
        if self.text.len() > MAX_SEARCH_QUERY_LEN {
            return Err(format!(
                "query is {} bytes; the limit is {MAX_SEARCH_QUERY_LEN}",
                self.text.len()
            ));
        }
        for (what, v) in [
            ("category", &self.category),
            ("tag", &self.tag),
            ("author", &self.author),
            ("license", &self.license),
        ] {
            if let Some(v) = v
                && v.len() > MAX_SHORT_FIELD_LEN
            {
                return Err(format!(
                    "{what} filter is {} bytes; the limit is {MAX_SHORT_FIELD_LEN}",
                    v.len()
                ));
            }
        }
        if self.limit == 0 || self.limit > MAX_SEARCH_LIMIT {
            return Err(format!(
                "a search returns 1 to {MAX_SEARCH_LIMIT} results at a time, not {}",
                self.limit
            ));
        }
        if u64::from(self.offset) + u64::from(self.limit) > u64::from(MAX_SEARCH_WINDOW) {
            return Err(format!(
                "offset {} and limit {} reach past result {MAX_SEARCH_WINDOW}, the deepest a search pages",
                self.offset, self.limit
            ));
        }
        Ok(())
    }
}

/// One package in a result page: its newest installable release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    pub name: String,
    pub version: String,
    pub description: String,
    pub category: Option<String>,
    pub author: Option<String>,
    pub license: Option<String>,
    pub tags: Vec<String>,
    pub published_at: u64,
}

/// A page of results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResults {
    /// Packages matching the query and filters (all pages).
    pub total: u64,
    pub hits: Vec<SearchHit>,
    /// Packages per category among all matches, most first.
    pub categories: Vec<(String, u64)>,
}
