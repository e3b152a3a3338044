//! The search index: tantivy over the newest installable release of every package, so search
//! is local and answers in well under a millisecond.
//!
//! It is derived data: the catalog in redb is the truth. Writers mark the names whose
//! document changed ([`SearchIndex::mark`]); [`SearchIndex::flush`] makes them searchable,
//! one flush serving every writer waiting behind it. A change goes into the overlay (see
//! [`view`]) instead of a commit of the base index (several milliseconds whatever it holds:
//! tantivy sizes a writer's term table from its 15 MB minimum budget); the overlay is folded
//! into the base once it holds [`OVERLAY_MAX`] packages. The overlay is not a tantivy
//! segment but a small in-memory index (see [`tier`]) scored as tantivy scores: a segment
//! has a fixed cost to build whatever it holds, paid on every node for every release. It is
//! built by the first search after a change, not by the change: most nodes ingest every
//! release the network publishes while few of them are searched between two. Everything is
//! in memory (see [`snapshot`]): at a clean shutdown [`SearchIndex::seal`] writes it to disk
//! with a [`Seal`] naming the catalog log records it reflects, and so does a running node
//! whose saved copy fell far behind its catalog. The next start loads it if the log still
//! begins with those records, and re-indexes the names of the records logged after them (a
//! node that crashed logged records its saved index never saw); otherwise, or if those names
//! are many, the registry rebuilds it while the node serves (searches wait for it).
//!
//! Text fields use tantivy's default tokenizer (split on non-alphanumerics, lowercase), so
//! `hello-world` is the terms `hello` and `world`; each query term also matches within edit
//! distance 1 (2 for terms of 8 bytes or more) and the last term as a prefix, which is how
//! `helo-wrld` finds `hello-world`. Never called from the event loop.

mod query;
mod schema;
mod snapshot;
mod tier;
mod view;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use agora_protocol::ipc::IndexState;
use agora_protocol::records::RecordId;
use agora_protocol::search::{SearchQuery, SearchResults};
use agora_protocol::{ContentHasher, ContentId, PackageMeta, PackageName};
use tantivy::directory::RamDirectory;
use tantivy::index::SegmentId;
use tantivy::indexer::IndexWriterOptions;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy};

use crate::lock;
use schema::Fields;
use view::{BaseCounts, Overlay, View};

/// Memory the base index writer may buffer before it flushes a segment (tantivy's minimum).
const WRITER_MEMORY: usize = 15_000_000;
/// Indexing threads of a rebuild, which the start-up waits for (the feeding thread and the
/// log's reader run beside them): two finish sooner than one on two cores, for a second
/// writer arena's memory. They leave twice the segments, which the merges after it bring
/// down.
const REBUILD_WORKERS: usize = 2;
/// Background merge threads per index: merges of small segments are short, and a machine
/// may run dozens of nodes (tantivy's default of 4 each adds up).
const MERGE_THREADS: usize = 1;
/// Packages the overlay holds before it is folded into the base: the first search after a
/// change indexes the whole overlay again (about a millisecond when it is this full), and
/// every search reads all of it.
pub const OVERLAY_MAX: usize = 256;
/// Version of the schema and of how documents are built: an index sealed under another is
/// rebuilt.
const FORMAT: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(Box<tantivy::TantivyError>),
    #[error("search index i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid search: {0}")]
    InvalidQuery(String),
    #[error("the search index could not be rebuilt ({0}); restart agorad to rebuild it")]
    RebuildFailed(String),
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

/// A place in the queue of index changes: [`SearchIndex::flush`] returns once everything
/// marked up to it is searchable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Names whose document must be recomputed, and the newest ticket handed out.
#[derive(Default)]
struct Queue {
    names: BTreeSet<String>,
    last: u64,
}

/// The base's writer and the overlay: changed together, under one lock.
struct Tiers {
    index: Index,
    /// Made when the base changes, retired after its commit: a tantivy writer holds a
    /// 10,000-document queue (2.5 MB), a lock and threads whose multi-megabyte term tables
    /// stay resident while they sit idle (mimalloc purges a thread's freed pages only when
    /// it runs again), so a quiet node keeps none of that.
    writer: Option<IndexWriter>,
    /// The last writer, finishing its merges on a thread of its own; joined before the
    /// next writer is made (it holds the index's lock until it ends).
    retiring: Option<std::thread::JoinHandle<()>>,
    /// [`SearchIndex::merged`], set by the retiring writer's thread.
    merged: Arc<AtomicBool>,
    overlay: Overlay,
    /// The current base's browse counts (replaced at every base commit).
    base_counts: BaseCounts,
}

impl Tiers {
    fn writer(&mut self) -> Result<&mut IndexWriter, IndexError> {
        self.writer_with(1)
    }

    /// The writer, made with `workers` indexing threads if there is none yet.
    fn writer_with(&mut self, workers: usize) -> Result<&mut IndexWriter, IndexError> {
        if self.writer.is_none() {
            self.settle();
            self.writer = Some(
                self.index.writer_with_options(
                    IndexWriterOptions::builder()
                        .num_worker_threads(workers)
                        .num_merge_threads(MERGE_THREADS)
                        .memory_budget_per_thread(WRITER_MEMORY)
                        .build(),
                )?,
            );
        }
        Ok(self.writer.as_mut().expect("made just above"))
    }

    /// Lets the writer finish its merges and end, in the background.
    fn retire(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let finish = |writer: IndexWriter, merged: &AtomicBool| match writer.wait_merging_threads()
        {
            Ok(()) => merged.store(true, Ordering::Release),
            Err(e) => {
                tracing::warn!(error = %e, "search index merge failed; the segments stay as they are")
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let merged = self.merged.clone();
        let spawned = std::thread::Builder::new()
            .name("index-retire".into())
            .spawn(move || {
                if let Ok(writer) = rx.recv() {
                    finish(writer, &merged);
                }
            });
        match spawned {
            Ok(handle) => {
                let _ = tx.send(writer);
                self.retiring = Some(handle);
            }
            Err(_) => finish(writer, &self.merged),
        }
    }

    /// Waits for the retiring writer, if any, to end.
    fn settle(&mut self) {
        if let Some(handle) = self.retiring.take() {
            let _ = handle.join();
        }
    }
}

pub struct SearchIndex {
    f: Fields,
    /// The base index's reader (reloaded only under the `tiers` lock).
    reader: IndexReader,
    tiers: Mutex<Tiers>,
    /// What searches read; replaced whole by the first search after a change.
    view: RwLock<Arc<View>>,
    /// The overlay changed since `view` was built. Set and cleared under the `tiers` lock.
    stale: AtomicBool,
    /// A retired writer's merges have ended since the reader last loaded: the base's
    /// segments are fewer now (a rebuild on two threads leaves many, and searches are
    /// slower over them), so the next search reloads it.
    merged: Arc<AtomicBool>,
    /// Packages a search can find, kept by every change (`view` may not be built yet).
    num_docs: AtomicU64,
    queue: Mutex<Queue>,
    /// Every ticket up to this one is searchable.
    committed: AtomicU64,
    /// The base index's files.
    ram: RamDirectory,
    /// Where it is saved at shutdown (`None`: never saved).
    dir: Option<PathBuf>,
    /// While the saved copy holds exactly this index: its seal (a seal then has nothing to
    /// write). Locked after `tiers`, never before.
    saved: Mutex<Option<Seal>>,
    /// Catalog records the saved copy reflects (0: none saved), changes since or not.
    saved_records: AtomicU64,
    /// Whether searches are answered (see [`SearchIndex::begin_rebuild`]); locked after
    /// `tiers`, never before.
    state: Mutex<IndexState>,
    /// Notified when `state` leaves `Rebuilding`.
    state_changed: Condvar,
    /// Searches waiting for a rebuild (tests await it).
    #[cfg(test)]
    waiting: std::sync::atomic::AtomicUsize,
}

/// What a saved index reflects: the first `records` records of the catalog log, whose ids
/// in log order hash to `log`. The log only grows, so a node that stopped without sealing
/// (a crash) finds its last seal still true of the log's first records and re-indexes only
/// the names the records after them touch; a different catalog does not pass for it.
/// A saved copy of the index read into memory, and the seal it was saved with.
pub struct SavedIndex {
    pub seal: Seal,
    ram: RamDirectory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seal {
    pub records: u64,
    pub log: ContentId,
}

impl Seal {
    /// The seal file's content.
    fn text(&self) -> String {
        format!(
            "format={FORMAT} records={} log={}\n",
            self.records, self.log
        )
    }

    /// Reads a seal file's content; `None` if it is not one of this format.
    fn parse(text: &str) -> Option<Self> {
        let mut fields = text.strip_suffix('\n')?.split(' ');
        let mut field = |key: &str| fields.next()?.strip_prefix(key)?.strip_prefix('=');
        if field("format")? != FORMAT.to_string() {
            return None;
        }
        let records = field("records")?.parse().ok()?;
        let log = field("log")?.parse().ok()?;
        fields.next().is_none().then_some(Self { records, log })
    }

    /// The seal of an index reflecting the records with these ids, in log order.
    pub fn of_log<'a>(ids: impl IntoIterator<Item = &'a RecordId>) -> Self {
        let mut log = LogHasher::default();
        ids.into_iter().for_each(|id| log.add(id));
        log.seal()
    }
}

/// Hashes record ids in log order, as a seal names them.
#[derive(Default)]
struct LogHasher {
    hasher: ContentHasher,
    records: u64,
}

impl LogHasher {
    fn add(&mut self, id: &RecordId) {
        self.hasher.update(id.as_bytes());
        self.records += 1;
    }

    fn seal(self) -> Seal {
        Seal {
            records: self.records,
            log: self.hasher.finish(),
        }
    }
}

/// Follows the catalog log as it is replayed at start-up: tells whether a saved index's seal
/// holds for the log's first records and collects the names of the records after them.
pub struct CatchUp {
    seal: Seal,
    log: LogHasher,
    names: BTreeSet<PackageName>,
}

impl CatchUp {
    pub fn new(seal: Seal) -> Self {
        Self {
            seal,
            log: LogHasher::default(),
            names: BTreeSet::new(),
        }
    }

    /// The next record of the log.
    pub fn record(&mut self, id: &RecordId, name: &PackageName) {
        if self.log.records < self.seal.records {
            self.log.add(id);
        } else {
            self.names.insert(name.clone());
        }
    }

    /// If the seal holds, the seal and the names to re-index on top of the saved index.
    pub fn finish(self) -> Option<(Seal, Vec<PackageName>)> {
        (self.log.seal() == self.seal).then(|| (self.seal, self.names.into_iter().collect()))
    }
}

impl SearchIndex {
    /// The index saved in `dir` with its seal, read into memory and checked, if there is a
    /// whole one of this format (a damaged one is left for a rebuild).
    pub fn load_saved(dir: &Path) -> Option<SavedIndex> {
        let loaded = snapshot::recover(dir)
            .and_then(|()| snapshot::read_seal(dir))
            .map(|text| text.as_deref().and_then(Seal::parse))
            .and_then(|seal| match seal {
                Some(seal) => {
                    Ok(snapshot::load(dir, &seal.text())?.map(|ram| SavedIndex { seal, ram }))
                }
                None => Ok(None),
            });
        match loaded {
            Ok(saved) => saved,
            Err(e) => {
                tracing::warn!(error = %e, "saved search index unreadable; rebuilding it");
                None
            }
        }
    }

    /// Loads the index saved in `dir` if it was sealed with `seal`; otherwise starts empty.
    /// Returns whether it was loaded (if not, the caller rebuilds it).
    pub fn open(dir: &Path, seal: Option<Seal>) -> Result<(Self, bool), IndexError> {
        let saved = seal.and_then(|seal| Self::load_saved(dir).filter(|s| s.seal == seal));
        Self::open_saved(dir, saved)
    }

    /// The index `saved` holds (read from `dir`), or an empty one; saved in `dir` from then
    /// on. Returns whether `saved` was used (if not, the caller rebuilds the index).
    pub fn open_saved(dir: &Path, saved: Option<SavedIndex>) -> Result<(Self, bool), IndexError> {
        let (schema, _) = schema::schema();
        let builder = || {
            Index::builder()
                .schema(schema.clone())
                .settings(schema::settings())
        };
        let seal = saved.as_ref().map(|s| s.seal);
        let saved = saved.and_then(|s| match builder().open_or_create(s.ram.clone()) {
            Ok(index) => Some((index, s.ram)),
            Err(e) => {
                tracing::warn!(error = %e, "saved search index unusable; rebuilding it");
                None
            }
        });
        let loaded = saved.is_some();
        let (index, ram) = match saved {
            Some(saved) => saved,
            None => {
                let ram = RamDirectory::create();
                (builder().open_or_create(ram.clone())?, ram)
            }
        };
        let index = Self::with_index(index, ram, Some(dir.to_path_buf()))?;
        if loaded {
            *lock(&index.saved) = seal;
            index
                .saved_records
                .store(seal.map_or(0, |s| s.records), Ordering::Release);
        }
        Ok((index, loaded))
    }

    /// An index in memory that is never saved (benchmarks and tests).
    pub fn in_memory() -> Result<Self, IndexError> {
        let (schema, _) = schema::schema();
        let ram = RamDirectory::create();
        let index = Index::builder()
            .schema(schema)
            .settings(schema::settings())
            .open_or_create(ram.clone())?;
        Self::with_index(index, ram, None)
    }

    fn with_index(
        index: Index,
        ram: RamDirectory,
        dir: Option<PathBuf>,
    ) -> Result<Self, IndexError> {
        let (_, f) = schema::schema();
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let overlay = Overlay::default();
        let base_counts = BaseCounts::default();
        let merged = Arc::<AtomicBool>::default();
        let view = View::new(reader.searcher(), base_counts.clone(), &overlay, &f)?;
        let num_docs = AtomicU64::new(overlay.num_docs(&reader.searcher()));
        Ok(Self {
            f,
            reader,
            tiers: Mutex::new(Tiers {
                index,
                writer: None,
                retiring: None,
                merged: merged.clone(),
                overlay,
                base_counts,
            }),
            view: RwLock::new(Arc::new(view)),
            stale: AtomicBool::new(false),
            merged,
            num_docs,
            queue: Mutex::new(Queue::default()),
            committed: AtomicU64::new(0),
            ram,
            dir,
            saved: Mutex::new(None),
            saved_records: AtomicU64::new(0),
            state: Mutex::new(IndexState::Ready),
            state_changed: Condvar::new(),
            #[cfg(test)]
            waiting: Default::default(),
        })
    }

    /// Whether searches are answered now.
    pub fn state(&self) -> IndexState {
        lock(&self.state).clone()
    }

    /// Marks the index as about to be rebuilt: from now until [`rebuild_with`](Self::rebuild_with)
    /// ends, searches wait for it instead of reading what the index holds before (nothing, or
    /// part of the catalog) and the index is not saved. The node serves everything else
    /// meanwhile.
    pub fn begin_rebuild(&self) {
        *lock(&self.state) = IndexState::Rebuilding;
    }

    /// Returns once no rebuild is under way; an error if the last one failed.
    fn wait_ready(&self) -> Result<(), IndexError> {
        let mut state = lock(&self.state);
        #[cfg(test)]
        self.waiting.fetch_add(1, Ordering::AcqRel);
        while *state == IndexState::Rebuilding {
            state = self
                .state_changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        #[cfg(test)]
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match &*state {
            IndexState::Failed(why) => Err(IndexError::RebuildFailed(why.clone())),
            _ => Ok(()),
        }
    }

    /// Packages a search can find.
    pub fn num_docs(&self) -> u64 {
        self.num_docs.load(Ordering::Acquire)
    }

    /// The view searches read, built first if the overlay changed since the last one or
    /// the base's segments were merged since it was loaded.
    fn current(&self) -> Result<Arc<View>, IndexError> {
        if self.stale.load(Ordering::Acquire) || self.merged.load(Ordering::Acquire) {
            let tiers = lock(&self.tiers);
            // Whoever waited for the lock behind a build finds it done.
            let merged =
                self.merged.swap(false, Ordering::AcqRel) && self.segments_changed(&tiers)?;
            if merged {
                // The same documents in fewer segments: the base's counts still hold.
                self.reader.reload()?;
            }
            if merged || self.stale.load(Ordering::Acquire) {
                self.publish(&tiers)?;
            }
        }
        Ok(self.built())
    }

    /// Whether the base's segments as committed (merges included) differ from those the
    /// reader holds. Called under the `tiers` lock, so no commit is under way.
    fn segments_changed(&self, tiers: &Tiers) -> Result<bool, IndexError> {
        let committed: HashSet<SegmentId> =
            tiers.index.searchable_segment_ids()?.into_iter().collect();
        let read: HashSet<SegmentId> = self
            .reader
            .searcher()
            .segment_readers()
            .iter()
            .map(|r| r.segment_id())
            .collect();
        Ok(committed != read)
    }

    /// The last view built (stale if a change came after it).
    fn built(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notes that the documents of `names` must be recomputed. Cheap: call it where the
    /// change is made (under the catalog's lock), then [`flush`](Self::flush) outside it.
    /// Marking no names changes nothing and returns the newest ticket.
    pub fn mark(&self, names: impl IntoIterator<Item = String>) -> Ticket {
        let mut q = lock(&self.queue);
        let before = q.names.len();
        q.names.extend(names);
        if q.names.len() > before {
            q.last += 1;
        }
        Ticket(q.last)
    }

    /// The newest ticket handed out: flushing it makes every change marked so far visible.
    pub fn last_ticket(&self) -> Ticket {
        Ticket(lock(&self.queue).last)
    }

    /// Returns once everything marked up to `ticket` is searchable. Whoever gets the writer
    /// first applies every name marked so far, asking `docs_for` for their current documents
    /// (and the names that have none); those waiting behind it usually find their work done.
    pub fn flush<E: From<IndexError>>(
        &self,
        ticket: Ticket,
        docs_for: impl FnOnce(&[String]) -> Result<(Vec<IndexDoc>, Vec<String>), E>,
    ) -> Result<(), E> {
        let mut tiers = lock(&self.tiers);
        if self.committed.load(Ordering::Acquire) >= ticket.0 {
            return Ok(());
        }
        let (names, upto) = {
            let mut q = lock(&self.queue);
            (std::mem::take(&mut q.names), q.last)
        };
        if !names.is_empty() {
            let names: Vec<String> = names.into_iter().collect();
            let applied = docs_for(&names)
                .and_then(|(docs, removed)| Ok(self.change(&mut tiers, docs, removed, false)?));
            if let Err(e) = applied {
                // Whoever flushes next tries these names again.
                lock(&self.queue).names.extend(names);
                return Err(e);
            }
        }
        self.committed.store(upto, Ordering::Release);
        Ok(())
    }

    /// Replaces the documents of these packages and removes those of `removed`, committing
    /// them to the base at once.
    pub fn update(&self, docs: &[IndexDoc], removed: &[String]) -> Result<(), IndexError> {
        let mut tiers = lock(&self.tiers);
        self.change(&mut tiers, docs.to_vec(), removed.to_vec(), true)
    }

    /// Puts changes in the overlay and publishes a new view; folds the overlay into the base
    /// first if it is full or `fold` asks for it.
    fn change(
        &self,
        tiers: &mut Tiers,
        docs: Vec<IndexDoc>,
        removed: Vec<String>,
        fold: bool,
    ) -> Result<(), IndexError> {
        *lock(&self.saved) = None;
        let base = self.reader.searcher();
        for doc in docs {
            tiers
                .overlay
                .set(doc.name.clone(), Some(doc), &base, &self.f)?;
        }
        for name in removed {
            tiers.overlay.set(name, None, &base, &self.f)?;
        }
        if fold || tiers.overlay.len() > OVERLAY_MAX {
            self.fold(tiers)
        } else {
            // Searchable from now on: the next search builds the view.
            self.recount(tiers);
            self.stale.store(true, Ordering::Release);
            Ok(())
        }
    }

    /// Commits the overlay's changes to the base and empties it.
    fn fold(&self, tiers: &mut Tiers) -> Result<(), IndexError> {
        if !tiers.overlay.is_empty() {
            tiers.writer()?;
            let Tiers {
                writer, overlay, ..
            } = &mut *tiers;
            let writer = writer.as_mut().expect("made just above");
            for (name, doc) in overlay.changes() {
                writer.delete_term(self.f.name_term(name));
                if let Some(doc) = doc {
                    writer.add_document(self.f.document(doc))?;
                }
            }
            self.commit(tiers)?;
            tiers.overlay.clear();
        }
        self.publish(tiers)
    }

    /// Commits the base writer and reads the new base from then on.
    fn commit(&self, tiers: &mut Tiers) -> Result<(), IndexError> {
        tiers.writer()?.commit()?;
        tiers.retire();
        self.reader.reload()?;
        tiers.base_counts = BaseCounts::default();
        Ok(())
    }

    /// Counts what a search finds in the base and overlay as they are.
    fn recount(&self, tiers: &Tiers) {
        let docs = tiers.overlay.num_docs(&self.reader.searcher());
        self.num_docs.store(docs, Ordering::Release);
    }

    /// Builds the view of the base and overlay as they are and has searches read it.
    fn publish(&self, tiers: &Tiers) -> Result<(), IndexError> {
        let view = View::new(
            self.reader.searcher(),
            tiers.base_counts.clone(),
            &tiers.overlay,
            &self.f,
        )?;
        self.recount(tiers);
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
        self.stale.store(false, Ordering::Release);
        Ok(())
    }

    /// Drops everything and indexes `docs`.
    pub fn rebuild(&self, docs: impl IntoIterator<Item = IndexDoc>) -> Result<(), IndexError> {
        self.rebuild_with(|add| docs.into_iter().try_for_each(add))
    }

    /// Drops everything and indexes the documents `feed` gives the function it is called with.
    /// `feed` runs under the index's lock, so no change is applied while it takes its
    /// snapshot: a change marked after it is applied by the next flush, after the rebuild.
    /// Ends any rebuild [`begun`](Self::begin_rebuild): searches are answered from then on,
    /// or refused with the reason if it failed (what it had indexed is dropped).
    pub fn rebuild_with<E>(
        &self,
        feed: impl FnOnce(&mut dyn FnMut(IndexDoc) -> Result<(), IndexError>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<IndexError> + std::fmt::Display,
    {
        let mut tiers = lock(&self.tiers);
        let rebuilt = self.rebuild_locked(&mut tiers, feed);
        let mut state = lock(&self.state);
        *state = match &rebuilt {
            Ok(()) => IndexState::Ready,
            Err(e) => {
                // What it had indexed is never committed.
                tiers.writer = None;
                IndexState::Failed(e.to_string())
            }
        };
        self.state_changed.notify_all();
        rebuilt
    }

    fn rebuild_locked<E: From<IndexError>>(
        &self,
        tiers: &mut Tiers,
        feed: impl FnOnce(&mut dyn FnMut(IndexDoc) -> Result<(), IndexError>) -> Result<(), E>,
    ) -> Result<(), E> {
        *lock(&self.saved) = None;
        tiers.overlay.clear();
        tiers.retire();
        let writer = tiers.writer_with(REBUILD_WORKERS)?;
        writer.delete_all_documents().map_err(IndexError::from)?;
        feed(&mut |doc| {
            writer.add_document(self.f.document(&doc))?;
            Ok(())
        })?;
        self.commit(tiers)?;
        Ok(self.publish(tiers)?)
    }

    /// Saves the index as it is, durably, with `seal` (what it reflects), so the next start
    /// loads it instead of rebuilding it; returns whether the copy on disk now holds it (not
    /// for an index never saved, nor one whose rebuild has not ended well). Call after
    /// flushing what the catalog holds: at shutdown, and while the node runs once the saved
    /// copy is far behind. The copy is taken under the in-memory directory's lock, so it
    /// is consistent even while a merge runs (tantivy publishes a segment in `meta.json` only
    /// once its files are complete, and deletes old ones only after).
    pub fn seal(&self, seal: Seal) -> Result<bool, IndexError> {
        let Some(dir) = &self.dir else {
            return Ok(false);
        };
        let mut tiers = lock(&self.tiers);
        if *lock(&self.state) != IndexState::Ready {
            return Ok(false); // the next start rebuilds it
        }
        let mut saved = lock(&self.saved);
        if *saved == Some(seal) {
            return Ok(true); // loaded from that copy and unchanged since
        }
        self.fold(&mut tiers)?;
        snapshot::save(&self.ram, dir, &seal.text())?;
        *saved = Some(seal);
        self.saved_records.store(seal.records, Ordering::Release);
        Ok(true)
    }

    /// Catalog records the copy saved on disk reflects (0 if none was saved or loaded).
    pub fn saved_records(&self) -> u64 {
        self.saved_records.load(Ordering::Acquire)
    }

    /// Runs a search.
    pub fn search(&self, q: &SearchQuery) -> Result<SearchResults, IndexError> {
        q.check().map_err(IndexError::InvalidQuery)?;
        self.wait_ready()?;
        self.current()?.search(&self.f, q)
    }
}

#[cfg(test)]
mod tests;
