//! ggen's registry index (`GET /ggen/registry/index.json`): the catalog in the format ggen's
//! marketplace keeps in `marketplace/registry/index.json`, so that ggen can take a local node
//! for its registry. One entry per package, its newest installable release; the fields ggen
//! writes, with the values its own generator gives what Agora does not know (no downloads or
//! stars are counted, nothing is marked production-ready), and three it reads to fetch a
//! package: `path` (the release's route on this gateway, relative to `registry_url`),
//! `download_url` (its archive route) and `checksum` (the archive's SHA-256, which the
//! archive route checks before it sends a byte).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use agora_protocol::ipc::IpcError;
use agora_protocol::records::ReleaseBody;
use serde::Serialize;

use crate::api::{self, Context};

/// The releases the index was last made from, with the catalog's record count then: they
/// are read again only once the catalog has changed (every release, yank and rotation is a
/// record), by one request at a time.
#[derive(Default)]
pub struct Releases(tokio::sync::Mutex<Option<(usize, Arc<Vec<ReleaseBody>>)>>);

impl Releases {
    /// Every package's newest installable release, by name.
    pub(super) async fn get(&self, ctx: &Context) -> Result<Arc<Vec<ReleaseBody>>, IpcError> {
        let mut last = self.0.lock().await;
        let count = ctx.registry.view().record_count();
        if let Some((at, releases)) = &*last
            && *at == count
        {
            return Ok(releases.clone());
        }
        let releases = Arc::new(api::newest_releases(ctx).await?);
        *last = Some((count, releases.clone()));
        Ok(releases)
    }
}

/// The index format's version, as ggen writes it.
const FORMAT_VERSION: &str = "1.0.0";
/// The category ggen gives a package that names none.
const UNCATEGORIZED: &str = "uncategorized";
/// Shortest word of a name that ggen's search index keys on.
const MIN_NAME_WORD: usize = 3;

#[derive(Serialize)]
pub(super) struct Index {
    version: &'static str,
    registry_url: String,
    updated_at: String,
    package_count: usize,
    categories: BTreeMap<String, usize>,
    packages: Vec<Package>,
    /// Lowercase tag, keyword, category or word of a name → the packages it finds.
    search_index: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize)]
struct Package {
    name: String,
    version: String,
    category: String,
    description: String,
    tags: Vec<String>,
    keywords: Vec<String>,
    author: Option<String>,
    license: Option<String>,
    downloads: u64,
    stars: u64,
    production_ready: bool,
    /// The names of the packages it depends on.
    dependencies: Vec<String>,
    path: String,
    download_url: String,
    checksum: String,
}

/// The index of `releases` (one per package) as served from `base` (`http://host:port`),
/// made at `now`.
pub(super) fn index(releases: &[ReleaseBody], base: &str, now: SystemTime) -> Index {
    let mut packages: Vec<Package> = releases
        .iter()
        .map(|r| {
            let path = format!("v1/packages/{}/{}", r.name, r.version);
            Package {
                name: r.name.to_string(),
                version: r.version.to_string(),
                category: r
                    .meta
                    .category
                    .clone()
                    .unwrap_or_else(|| UNCATEGORIZED.into()),
                description: r.meta.description.clone(),
                tags: r.meta.tags.clone(),
                keywords: r.meta.keywords.clone(),
                author: r.meta.author.clone(),
                license: r.meta.license.clone(),
                downloads: 0,
                stars: 0,
                production_ready: false,
                dependencies: r.dependencies.iter().map(|d| d.name.to_string()).collect(),
                download_url: format!("{base}/{path}/archive"),
                path,
                checksum: r.archive.id.to_hex(),
            }
        })
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    let mut categories = BTreeMap::new();
    let mut search_index: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &packages {
        *categories.entry(p.category.clone()).or_insert(0) += 1;
        let words = p.name.split('-').filter(|w| w.len() >= MIN_NAME_WORD);
        let terms = p
            .tags
            .iter()
            .chain(&p.keywords)
            .map(String::as_str)
            .chain(std::iter::once(p.category.as_str()))
            .chain(words);
        for term in terms {
            let found = search_index.entry(term.to_lowercase()).or_default();
            if found.last() != Some(&p.name) {
                found.push(p.name.clone());
            }
        }
    }
    Index {
        version: FORMAT_VERSION,
        registry_url: format!("{base}/"),
        updated_at: humantime::format_rfc3339_seconds(now).to_string(),
        package_count: packages.len(),
        categories,
        packages,
        search_index,
    }
}
