//! The content-addressed blob store: `blobs/<first 2 hex>/<sha256>`.
//!
//! A blob is written to `tmp/`, hashed while written, fsynced, renamed into place and the
//! directory fsynced; only then is its metadata committed, so a blob the store reports exists
//! is whole on disk. Blobs fetched from peers live under a size quota with least-recently-used
//! eviction; published and pinned blobs are never evicted. Partial downloads live in
//! `partial/<sha256>` so a fetch can resume. Start-up removes temp files, drops metadata whose
//! file is gone or has the wrong size, and deletes files no metadata owns.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use agora_protocol::records::ArchiveInfo;
use agora_protocol::{ContentHasher, ContentId};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::{BLOBS, Db, StoreError, decode_meta, encode_meta, io_err};

/// Why a blob is on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobKind {
    /// Published from this node: never evicted.
    Published,
    /// Fetched from peers: evictable unless pinned.
    Fetched,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    pub size: u64,
    pub kind: BlobKind,
    pub pinned: bool,
    /// Logical time of the last use (a counter, so order is exact across restarts).
    pub last_used: u64,
}

impl BlobMeta {
    fn evictable(&self) -> bool {
        self.kind == BlobKind::Fetched && !self.pinned
    }
}

/// Disk use of the blob store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobUsage {
    pub blobs: usize,
    /// Bytes of evictable (fetched, unpinned) blobs: the quota applies to these.
    pub cached_bytes: u64,
    /// Bytes of published or pinned blobs.
    pub kept_bytes: u64,
    pub quota: u64,
}

/// What start-up found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobCheck {
    pub temp_files_removed: usize,
    pub orphan_files_removed: usize,
    pub missing_blobs_forgotten: usize,
    /// Cached blobs evicted because they no longer fit the (possibly lowered) quota.
    pub evicted: usize,
    /// Partial downloads removed: older than [`PARTIAL_MAX_AGE`], not named by a content id,
    /// or beyond the quota together with the cache.
    pub partials_removed: usize,
}

/// A partial download left this long by a fetch that never resumed is removed at start-up.
pub const PARTIAL_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 60 * 60);

struct State {
    metas: HashMap<ContentId, BlobMeta>,
    clock: u64,
    /// Metadata whose `last_used` changed since the last flush.
    touched: HashSet<ContentId>,
}

pub struct BlobStore {
    root: PathBuf,
    db: Arc<Db>,
    quota: u64,
    state: Mutex<State>,
    /// The description of each blob held, from its signed release as far as this node knows
    /// it: what each chunk must hash to. A blob is never served without it.
    described: Mutex<HashMap<ContentId, Arc<ArchiveInfo>>>,
    #[cfg(feature = "fault-injection")]
    unchecked: std::sync::atomic::AtomicBool,
}

/// Why checked bytes of a blob could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckedReadError {
    #[error("no description known for blob {0}: its chunks cannot be checked")]
    Undescribed(ContentId),
    #[error("chunk {chunk} of blob {id} does not match its hash: the file is damaged")]
    Damaged { id: ContentId, chunk: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BlobStore {
    /// Opens the store under `root`, cleaning up after any crash.
    pub fn open(root: &Path, db: Arc<Db>, quota: u64) -> Result<(Self, BlobCheck), StoreError> {
        let mut check = BlobCheck::default();
        for dir in ["blobs", "tmp", "partial"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let path = entry.map_err(io_err(&tmp))?.path();
            fs::remove_file(&path).map_err(io_err(&path))?;
            check.temp_files_removed += 1;
        }

        let mut metas = HashMap::new();
        {
            let txn = db.raw().begin_read()?;
            let table = txn.open_table(BLOBS)?;
            for entry in table.iter()? {
                let (k, v) = entry?;
                metas.insert(ContentId::from_bytes(*k.value()), decode_meta(v.value())?);
            }
        }
        let store = Self {
            root: root.to_owned(),
            db,
            quota,
            described: Mutex::new(HashMap::new()),
            #[cfg(feature = "fault-injection")]
            unchecked: Default::default(),
            state: Mutex::new(State {
                clock: metas
                    .values()
                    .map(|m: &BlobMeta| m.last_used)
                    .max()
                    .unwrap_or(0),
                metas,
                touched: HashSet::new(),
            }),
        };

        // Metadata whose file is missing or wrong: forget it.
        let missing: Vec<ContentId> = {
            let state = store.lock();
            state
                .metas
                .iter()
                .filter(|(id, meta)| {
                    fs::metadata(store.blob_path(id)).map_or(true, |m| m.len() != meta.size)
                })
                .map(|(id, _)| *id)
                .collect()
        };
        for id in &missing {
            store.forget(id)?;
        }
        check.missing_blobs_forgotten = missing.len();

        // Files no metadata owns (a crash between the rename and the commit): delete them.
        let blobs = root.join("blobs");
        for shard in fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let shard = shard.map_err(io_err(&blobs))?.path();
            for entry in fs::read_dir(&shard).map_err(io_err(&shard))? {
                let path = entry.map_err(io_err(&shard))?.path();
                let owned = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<ContentId>().ok())
                    .is_some_and(|id| store.lock().metas.contains_key(&id));
                if !owned {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    check.orphan_files_removed += 1;
                }
            }
        }
        check.partials_removed = store.clean_partials()?;
        check.evicted = store.evict()?.len();
        Ok((store, check))
    }

    /// Takes back the blob files under `root` into a new database `db` (one whose metadata was
    /// lost with a damaged one), before the store is opened (which would delete them as
    /// files no metadata owns): each file is hashed, and kept as a fetched blob if it matches
    /// its name, removed if not. Returns how many were kept and how many removed.
    pub fn readopt(root: &Path, db: &Db) -> Result<(u64, u64), StoreError> {
        let (mut kept, mut dropped) = (Vec::new(), 0);
        let blobs = root.join("blobs");
        if !blobs.exists() {
            return Ok((0, 0));
        }
        for shard in fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let shard = shard.map_err(io_err(&blobs))?.path();
            if !shard.is_dir() {
                continue; // not the store's: start-up leaves it alone, so does this
            }
            for entry in fs::read_dir(&shard).map_err(io_err(&shard))? {
                let path = entry.map_err(io_err(&shard))?.path();
                let named = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<ContentId>().ok());
                let size = fs::metadata(&path).map_err(io_err(&path))?.len();
                match named {
                    Some(id) if path.is_file() && hash_file(&path)? == id => kept.push((id, size)),
                    _ => {
                        remove_any(&path)?;
                        dropped += 1;
                    }
                }
            }
        }
        let txn = db.raw().begin_write()?;
        {
            let mut table = txn.open_table(BLOBS)?;
            for (id, size) in &kept {
                let meta = BlobMeta {
                    size: *size,
                    kind: BlobKind::Fetched,
                    pinned: false,
                    last_used: 0,
                };
                table.insert(id.as_bytes(), encode_meta(&meta).as_slice())?;
            }
        }
        txn.commit()?;
        Ok((kept.len() as u64, dropped))
    }

    /// Records the description of a blob (held now or soon) from its signed release: its
    /// chunks are checked against it before they are served.
    pub fn describe(&self, info: &ArchiveInfo) {
        crate::lock(&self.described)
            .entry(info.id)
            .or_insert_with(|| Arc::new(info.clone()));
    }

    /// The description recorded for blob `id`.
    pub fn description(&self, id: &ContentId) -> Option<Arc<ArchiveInfo>> {
        crate::lock(&self.described).get(id).cloned()
    }

    /// Reads `len` bytes at `offset` of blob `id`, after checking every chunk they fall in
    /// against the hash its description gives (the disk may have changed the file since it
    /// was checked whole).
    pub fn read_checked(
        &self,
        id: &ContentId,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, CheckedReadError> {
        let size = self.meta(id).ok_or(StoreError::MissingBlob(*id))?.size;
        let end = offset.saturating_add(len as u64).min(size);
        if end <= offset {
            return Ok(Vec::new());
        }
        #[cfg(feature = "fault-injection")]
        if self.unchecked.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(self.read_range(id, offset, (end - offset) as usize)?);
        }
        for _ in 0..2 {
            let info = self
                .description(id)
                .ok_or(CheckedReadError::Undescribed(*id))?;
            let chunk = u64::from(info.chunk_size.max(1));
            let (first, last) = (offset / chunk, (end - 1) / chunk);
            let from = first * chunk;
            let bytes =
                self.read_range(id, from, (((last + 1) * chunk).min(size) - from) as usize)?;
            let wrong = bytes
                .chunks(chunk as usize)
                .zip(first..)
                .find(|(piece, k)| {
                    info.size != size || info.chunks.get(*k as usize) != Some(&ContentId::of(piece))
                })
                .map(|(_, k)| k as u32);
            let Some(wrong) = wrong else {
                let start = (offset - from) as usize;
                return Ok(bytes[start..start + (end - offset) as usize].to_vec());
            };
            // A signed release may describe an archive wrongly (its id is the hash of the
            // whole; its chunk hashes cannot be checked without the bytes): the whole file
            // decides whether the file or the description is wrong.
            if !self.redescribe(id, info.chunk_size)? {
                return Err(CheckedReadError::Damaged {
                    id: *id,
                    chunk: wrong,
                });
            }
        }
        Err(CheckedReadError::Damaged { id: *id, chunk: 0 })
    }

    /// From now on, serves blobs as their files are, unchecked: this node becomes a provider
    /// that sends bad data when its disk changed a file (tests of the peers that get it).
    #[cfg(feature = "fault-injection")]
    pub fn serve_unchecked(&self) {
        self.unchecked
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Describes blob `id` from its file, cut in `chunk_size` pieces, and keeps that
    /// description, if the file still hashes to `id`; whether it did.
    fn redescribe(&self, id: &ContentId, chunk_size: u32) -> Result<bool, StoreError> {
        let path = self.blob_path(id);
        let mut file = File::open(&path).map_err(io_err(&path))?;
        let (mut whole, mut chunks, mut size) = (ContentHasher::new(), Vec::new(), 0u64);
        let mut piece = vec![0; chunk_size.max(1) as usize];
        loop {
            let mut filled = 0;
            while filled < piece.len() {
                match file.read(&mut piece[filled..]).map_err(io_err(&path))? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                break;
            }
            whole.update(&piece[..filled]);
            chunks.push(ContentId::of(&piece[..filled]));
            size += filled as u64;
        }
        if whole.finish() != *id {
            return Ok(false);
        }
        let info = ArchiveInfo {
            id: *id,
            size,
            chunk_size,
            chunks,
        };
        crate::lock(&self.described).insert(*id, Arc::new(info));
        Ok(true)
    }

    /// Whether blob `id`'s file still hashes to `id` (read whole).
    pub fn is_sound(&self, id: &ContentId) -> Result<bool, StoreError> {
        Ok(hash_file(&self.blob_path(id))? == *id)
    }

    /// Removes blob `id` (its file and its metadata); returns its metadata if it was held.
    pub fn discard(&self, id: &ContentId) -> Result<Option<BlobMeta>, StoreError> {
        let Some(meta) = self.meta(id) else {
            return Ok(None);
        };
        self.forget(id)?;
        let path = self.blob_path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        Ok(Some(meta))
    }

    /// Makes a blob held here one that is never evicted, as published from this node.
    pub fn keep_as_published(&self, id: &ContentId) -> Result<(), StoreError> {
        let Some(meta) = self.meta(id) else {
            return Ok(());
        };
        if meta.kind != BlobKind::Published {
            self.record(*id, meta.size, BlobKind::Published)?;
        }
        Ok(())
    }

    /// Removes partial downloads a fetch will not resume (no fetch runs at start-up): those
    /// older than [`PARTIAL_MAX_AGE`] or not named by a content id, then the oldest while
    /// they and the cached blobs are over the quota together. Returns how many went.
    fn clean_partials(&self) -> Result<usize, StoreError> {
        let dir = self.root.join("partial");
        let now = std::time::SystemTime::now();
        let mut kept: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let modified = meta.modified().map_err(io_err(&path))?;
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<ContentId>().is_ok());
            let stale = now
                .duration_since(modified)
                .is_ok_and(|age| age > PARTIAL_MAX_AGE);
            if !named || stale || !meta.is_file() {
                remove_any(&path)?;
                removed += 1;
            } else {
                kept.push((modified, meta.len(), path));
            }
        }
        let cached = self.usage().cached_bytes;
        let mut total = cached + kept.iter().map(|(_, len, _)| len).sum::<u64>();
        kept.sort();
        for (_, len, path) in kept {
            if total <= self.quota {
                break;
            }
            remove_any(&path)?;
            total -= len;
            removed += 1;
        }
        Ok(removed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn blob_path(&self, id: &ContentId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join("blobs").join(&hex[..2]).join(hex)
    }

    /// Where a partial download of `id` is kept between attempts.
    pub fn partial_path(&self, id: &ContentId) -> PathBuf {
        self.root.join("partial").join(id.to_hex())
    }

    pub fn has(&self, id: &ContentId) -> bool {
        self.lock().metas.contains_key(id)
    }

    /// The blobs published from this node.
    pub fn published(&self) -> HashSet<ContentId> {
        self.lock()
            .metas
            .iter()
            .filter(|(_, m)| m.kind == BlobKind::Published)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn meta(&self, id: &ContentId) -> Option<BlobMeta> {
        self.lock().metas.get(id).cloned()
    }

    /// Stores `data`; if `expected` is given, refuses data that hashes to anything else
    /// (nothing is written then). Returns the blob's id and the blobs evicted to stay under
    /// the quota.
    pub fn insert(
        &self,
        data: &[u8],
        expected: Option<ContentId>,
        kind: BlobKind,
    ) -> Result<(ContentId, Vec<ContentId>), StoreError> {
        let id = ContentId::of(data);
        if let Some(expected) = expected
            && expected != id
        {
            return Err(StoreError::HashMismatch { expected, got: id });
        }
        if !self.has(&id) {
            let tmp = self.temp_path();
            let result = (|| {
                let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
                f.write_all(data).map_err(io_err(&tmp))?;
                f.sync_all().map_err(io_err(&tmp))
            })();
            if let Err(e) = result {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            self.place(&tmp, &id)?;
        }
        let evicted = self.record(id, data.len() as u64, kind)?;
        Ok((id, evicted))
    }

    /// Moves a finished partial download into the store after checking its hash: `hashed`,
    /// the hash of exactly what was written to the file (computed as it was written, by the
    /// only writer the file had), or, if that is `None`, the file's hash read again.
    pub fn adopt_partial(
        &self,
        expected: ContentId,
        kind: BlobKind,
        hashed: Option<ContentId>,
    ) -> Result<Vec<ContentId>, StoreError> {
        let partial = self.partial_path(&expected);
        let got = match hashed {
            Some(got) => got,
            None => hash_file(&partial)?,
        };
        if got != expected {
            let _ = fs::remove_file(&partial);
            return Err(StoreError::HashMismatch { expected, got });
        }
        let size = fs::metadata(&partial).map_err(io_err(&partial))?.len();
        File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&partial))?;
        self.place(&partial, &expected)?;
        self.record(expected, size, kind)
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{:016x}", rand::random::<u64>()))
    }

    /// Renames a synced file into its place and syncs the directory.
    fn place(&self, from: &Path, id: &ContentId) -> Result<(), StoreError> {
        let dest = self.blob_path(id);
        let dir = dest.parent().expect("blob paths have a shard directory");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::rename(from, &dest).map_err(io_err(&dest))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    }

    /// Commits metadata for a blob now on disk, then evicts to stay under the quota.
    fn record(
        &self,
        id: ContentId,
        size: u64,
        kind: BlobKind,
    ) -> Result<Vec<ContentId>, StoreError> {
        let meta = {
            let mut state = self.lock();
            state.clock += 1;
            let clock = state.clock;
            let meta = match state.metas.get(&id) {
                // Publishing something we had fetched makes it ours to keep.
                Some(old) => BlobMeta {
                    kind: if kind == BlobKind::Published {
                        kind
                    } else {
                        old.kind
                    },
                    last_used: clock,
                    ..old.clone()
                },
                None => BlobMeta {
                    size,
                    kind,
                    pinned: false,
                    last_used: clock,
                },
            };
            state.metas.insert(id, meta.clone());
            meta
        };
        self.persist(&[(id, meta)])?;
        self.evict()
    }

    fn persist(&self, metas: &[(ContentId, BlobMeta)]) -> Result<(), StoreError> {
        let txn = self.db.raw().begin_write()?;
        {
            let mut table = txn.open_table(BLOBS)?;
            for (id, meta) in metas {
                table.insert(id.as_bytes(), encode_meta(meta).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn forget(&self, id: &ContentId) -> Result<(), StoreError> {
        let txn = self.db.raw().begin_write()?;
        txn.open_table(BLOBS)?.remove(id.as_bytes())?;
        txn.commit()?;
        self.lock().metas.remove(id);
        Ok(())
    }

    /// Removes least-recently-used evictable blobs until they and the downloads under way
    /// fit the quota.
    pub fn evict(&self) -> Result<Vec<ContentId>, StoreError> {
        let partial = self.partial_bytes();
        let victims: Vec<ContentId> = {
            let state = self.lock();
            let mut cached: Vec<(&ContentId, &BlobMeta)> =
                state.metas.iter().filter(|(_, m)| m.evictable()).collect();
            let mut total: u64 = partial + cached.iter().map(|(_, m)| m.size).sum::<u64>();
            cached.sort_by_key(|(_, m)| m.last_used);
            let mut victims = Vec::new();
            for (id, meta) in cached {
                if total <= self.quota {
                    break;
                }
                total -= meta.size;
                victims.push(*id);
            }
            victims
        };
        for id in &victims {
            self.forget(id)?;
            let path = self.blob_path(id);
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        Ok(victims)
    }

    /// Pins or unpins a blob; a pinned blob is never evicted. Returns what unpinning evicted.
    pub fn set_pinned(&self, id: &ContentId, pinned: bool) -> Result<Vec<ContentId>, StoreError> {
        let meta = {
            let mut state = self.lock();
            let meta = state
                .metas
                .get_mut(id)
                .ok_or(StoreError::MissingBlob(*id))?;
            meta.pinned = pinned;
            meta.clone()
        };
        self.persist(&[(*id, meta)])?;
        if pinned { Ok(Vec::new()) } else { self.evict() }
    }

    fn touch(&self, id: &ContentId) {
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        if let Some(meta) = state.metas.get_mut(id) {
            meta.last_used = clock;
            state.touched.insert(*id);
        }
    }

    /// Persists the use times changed since the last flush (on the maintenance tick and at
    /// shutdown: a lost use time only makes eviction order slightly less exact).
    pub fn flush(&self) -> Result<(), StoreError> {
        let metas: Vec<(ContentId, BlobMeta)> = {
            let mut state = self.lock();
            let touched = std::mem::take(&mut state.touched);
            touched
                .into_iter()
                .filter_map(|id| state.metas.get(&id).map(|m| (id, m.clone())))
                .collect()
        };
        self.persist(&metas)
    }

    /// The whole blob.
    pub fn read(&self, id: &ContentId) -> Result<Vec<u8>, StoreError> {
        if !self.has(id) {
            return Err(StoreError::MissingBlob(*id));
        }
        self.touch(id);
        let path = self.blob_path(id);
        fs::read(&path).map_err(io_err(&path))
    }

    /// `len` bytes at `offset` (one chunk to serve).
    pub fn read_range(
        &self,
        id: &ContentId,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, StoreError> {
        if !self.has(id) {
            return Err(StoreError::MissingBlob(*id));
        }
        self.touch(id);
        let path = self.blob_path(id);
        let file = File::open(&path).map_err(io_err(&path))?;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset)
            .map_err(io_err(&path))?;
        Ok(buf)
    }

    pub fn usage(&self) -> BlobUsage {
        let state = self.lock();
        let mut usage = BlobUsage {
            blobs: state.metas.len(),
            quota: self.quota,
            ..BlobUsage::default()
        };

        for meta in state.metas.values() {
            if meta.evictable() {
                usage.cached_bytes += meta.size;
            } else {
                usage.kept_bytes += meta.size;
            }
        }
        usage
    }

    /// Bytes of partial downloads (counted with the cache against the quota).
    /// Reads the directory: not for the metrics' every scrape.
    pub fn partial_bytes(&self) -> u64 {
        let partial = self.root.join("partial");
        fs::read_dir(&partial)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Ids of every stored blob.
    pub fn ids(&self) -> Vec<ContentId> {
        self.lock().metas.keys().copied().collect()
    }

    /// Number of blob entries in the database (for consistency checks in tests).
    pub fn persisted_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.raw().begin_read()?;
        Ok(txn.open_table(BLOBS)?.len()?)
    }
}

/// Opens (creating if needed) the partial-download file for writing chunks at their offsets.
pub fn open_partial(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(path))
}

fn hash_file(path: &Path) -> Result<ContentId, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    ContentId::of_reader(file).map_err(io_err(path))
}

/// Removes a file, or a directory with what is in it (a partial download is a file; anything
/// else found there is removed whole).
fn remove_any(path: &Path) -> Result<(), StoreError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        _ => fs::remove_file(path),
    };
    result.map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, quota: u64) -> (BlobStore, BlobCheck) {
        let db = Arc::new(Db::open(&dir.join("catalog.redb")).unwrap());
        BlobStore::open(dir, db, quota).unwrap()
    }

    fn files_under(dir: &Path) -> usize {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .filter(|e| e.as_ref().unwrap().file_type().is_file())
            .count()
    }

    #[test]
    fn chunks_are_read_only_after_the_chunks_they_fall_in_match_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let info = ArchiveInfo::describe(&data, 4096);
        let (id, _) = store.insert(&data, None, BlobKind::Published).unwrap();
        assert!(matches!(
            store.read_checked(&id, 0, 10),
            Err(CheckedReadError::Undescribed(u)) if u == id
        ));
        store.describe(&info);
        // Whole chunks, a cut across two, the short last one.
        for (offset, len) in [(0, 4096), (4090, 20), (8192, 1808), (9999, 1)] {
            let read = store.read_checked(&id, offset, len).unwrap();
            assert!(
                read == data[offset as usize..offset as usize + len],
                "{offset}+{len}"
            );
        }
        assert!(store.is_sound(&id).unwrap());

        // A byte of the middle chunk changed on disk.
        let path = store.blob_path(&id);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[5000] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(store.read_checked(&id, 0, 4096).unwrap(), &data[..4096]);
        assert_eq!(
            store.read_checked(&id, 8192, 100).unwrap(),
            &data[8192..8292]
        );
        for (offset, len) in [(4096, 4096), (4000, 200), (8000, 300)] {
            assert!(
                matches!(
                    store.read_checked(&id, offset, len),
                    Err(CheckedReadError::Damaged { chunk: 1, .. })
                ),
                "{offset}+{len}"
            );
        }
        assert!(!store.is_sound(&id).unwrap());
        assert_eq!(
            store.discard(&id).unwrap().map(|m| m.kind),
            Some(BlobKind::Published)
        );
        assert!(!path.exists() && !store.has(&id));
        assert_eq!(store.persisted_count().unwrap(), 0);
    }

    /// A release may describe an archive's chunks wrongly: the whole file's hash decides, and
    /// a sound file is served (and described from itself) instead of dropped.
    #[test]
    fn a_wrong_description_of_a_sound_blob_is_replaced_not_believed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let (id, _) = store.insert(&data, None, BlobKind::Fetched).unwrap();
        let mut bogus = ArchiveInfo::describe(&data, 4096);
        bogus.chunks[1] = ContentId::of(b"not this chunk");
        bogus.size += 1;
        store.describe(&bogus);
        assert_eq!(
            store.read_checked(&id, 4096, 100).unwrap(),
            &data[4096..4196]
        );
        assert_eq!(
            *store.description(&id).unwrap(),
            ArchiveInfo::describe(&data, 4096)
        );
        assert!(store.has(&id));
    }

    #[test]
    fn data_that_does_not_hash_to_the_expected_id_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let expected = ContentId::of(b"the real archive");
        let err = store
            .insert(b"something else", Some(expected), BlobKind::Fetched)
            .unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { expected: e, .. } if e == expected));
        assert_eq!(store.usage().blobs, 0);
        assert_eq!(files_under(&dir.path().join("blobs")), 0);
        assert_eq!(files_under(&dir.path().join("tmp")), 0);
        assert_eq!(store.persisted_count().unwrap(), 0);
    }

    #[test]
    fn start_up_removes_temp_files_and_orphans_and_forgets_missing_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, lost) = {
            let (store, check) = open(dir.path(), 1 << 20);
            assert_eq!(check, BlobCheck::default());
            let (kept, _) = store.insert(b"kept", None, BlobKind::Published).unwrap();
            let (lost, _) = store.insert(b"lost", None, BlobKind::Fetched).unwrap();
            std::fs::remove_file(store.blob_path(&lost)).unwrap();
            std::fs::write(dir.path().join("tmp/0123"), b"half a write").unwrap();
            let orphan = ContentId::of(b"orphan");
            let path = store.blob_path(&orphan);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"orphan").unwrap();
            (kept, lost)
        };
        let (store, check) = open(dir.path(), 1 << 20);
        assert_eq!(
            check,
            BlobCheck {
                temp_files_removed: 1,
                orphan_files_removed: 1,
                missing_blobs_forgotten: 1,
                evicted: 0,
                partials_removed: 0,
            }
        );
        assert!(store.has(&kept));
        assert!(!store.has(&lost));
        assert_eq!(store.read(&kept).unwrap(), b"kept");
        assert_eq!(store.persisted_count().unwrap(), 1);
        assert_eq!(files_under(dir.path().join("blobs").as_path()), 1);
    }

    #[test]
    fn start_up_removes_stale_strange_and_over_quota_partial_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("partial");
        let old =
            std::time::SystemTime::now() - PARTIAL_MAX_AGE - std::time::Duration::from_secs(60);
        let write = |name: String, len: usize, modified: std::time::SystemTime| {
            let path = partial.join(name);
            fs::write(&path, vec![1u8; len]).unwrap();
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(modified)
                .unwrap();
            path
        };
        {
            let (_store, check) = open(dir.path(), 250);
            assert_eq!(check.partials_removed, 0);
        }
        let now = std::time::SystemTime::now();
        let id = |b: u8| ContentId::of(&[b]).to_hex();
        let stale = write(id(1), 10, old);
        let strange = write("not-a-content-id".into(), 10, now);
        let oldest = write(id(2), 100, now - std::time::Duration::from_secs(30));
        let newer = write(id(3), 100, now - std::time::Duration::from_secs(20));
        let newest = write(id(4), 100, now - std::time::Duration::from_secs(10));
        let (store, check) = open(dir.path(), 250);
        // Stale and strange go; of the 300 bytes left over a quota of 250, the oldest goes.
        assert_eq!(check.partials_removed, 3);
        for gone in [&stale, &strange, &oldest] {
            assert!(!gone.exists(), "{}", gone.display());
        }
        assert!(newer.exists() && newest.exists());
        assert_eq!(store.partial_bytes(), 200);
    }

    #[test]
    fn eviction_takes_the_least_recently_used_fetched_blob_and_spares_pins_and_published() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 250);
        let blob = |b: u8| vec![b; 100];
        let (published, _) = store.insert(&[9; 200], None, BlobKind::Published).unwrap();
        let (pinned, _) = store.insert(&blob(1), None, BlobKind::Fetched).unwrap();
        store.set_pinned(&pinned, true).unwrap();
        let (b, _) = store.insert(&blob(2), None, BlobKind::Fetched).unwrap();
        let (c, _) = store.insert(&blob(3), None, BlobKind::Fetched).unwrap();
        // Reading b makes c the least recently used.
        store.read_range(&b, 0, 10).unwrap();
        let (d, evicted) = store.insert(&blob(4), None, BlobKind::Fetched).unwrap();
        assert_eq!(evicted, vec![c]);
        for (id, present) in [
            (published, true),
            (pinned, true),
            (b, true),
            (c, false),
            (d, true),
        ] {
            assert_eq!(store.has(&id), present, "{id}");
        }
        let usage = store.usage();
        assert_eq!((usage.cached_bytes, usage.kept_bytes), (200, 300));
        // Order survives a restart: use times are flushed and reloaded.
        store.read_range(&d, 0, 1).unwrap();
        store.flush().unwrap();
        drop(store);
        let (store, check) = open(dir.path(), 150);
        assert_eq!(check.evicted, 1);
        assert!(!store.has(&b));
        assert!(store.has(&d));
        // A download under way counts too: beside 100 bytes of it, d no longer fits.
        std::fs::write(store.partial_path(&ContentId::of(b"coming")), [0u8; 100]).unwrap();
        assert_eq!(store.evict().unwrap(), vec![d]);
        assert!(!store.has(&d));
    }
}
