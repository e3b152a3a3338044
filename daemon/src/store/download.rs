//! Where a fetch puts the chunks it has verified: a [`FileSink`] writes them at their offsets
//! in a partial download file (resumable: the chunks already in it are found by their hashes),
//! hashes the whole archive as they come in, in order, and syncs the file behind the writes;
//! a [`MemorySink`] keeps them in memory. The fetch (in `ops::fetch`) decides what to ask whom;
//! this is only the disk side.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, TryLockError};

use agora_protocol::records::ArchiveInfo;
use agora_protocol::{ContentHasher, ContentId};
use bytes::Bytes;
use tracing::debug;

use super::blobs::open_partial;
use crate::lock;

/// A download could not be written, read back or synced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("writing the download: {0}")]
pub struct DownloadError(pub String);

/// Where verified chunks go. `put` runs on the blocking pool, for several chunks at once.
pub trait ChunkSink: Send + Sync + 'static {
    /// Whether chunk `index` was already there (verified) when the fetch started.
    fn has(&self, index: u32) -> bool;
    /// Stores a verified chunk; `false` if it was stored already (a second provider's copy of
    /// it, which is dropped).
    fn put(&self, index: u32, offset: u64, data: Bytes) -> Result<bool, DownloadError>;
    /// Which chunks are stored (one flag each): what this node may serve of the archive.
    fn held(&self) -> Vec<bool>;
}

/// Chunks kept in memory.
pub struct MemorySink {
    chunks: Mutex<Vec<Option<Bytes>>>,
}

impl MemorySink {
    pub fn new(count: usize) -> Self {
        Self {
            chunks: Mutex::new(vec![None; count]),
        }
    }

    /// Takes the chunks received, in order (`None` where one is missing).
    pub fn take_chunks(&self) -> Vec<Option<Bytes>> {
        std::mem::take(&mut *lock(&self.chunks))
    }
}

impl ChunkSink for MemorySink {
    fn has(&self, _index: u32) -> bool {
        false
    }
    fn held(&self) -> Vec<bool> {
        lock(&self.chunks).iter().map(Option::is_some).collect()
    }
    fn put(&self, index: u32, _offset: u64, data: Bytes) -> Result<bool, DownloadError> {
        let mut chunks = lock(&self.chunks);
        let slot = &mut chunks[index as usize];
        if slot.is_some() {
            return Ok(false);
        }
        *slot = Some(data);
        Ok(true)
    }
}

/// How far a download to a file has come, reported as its chunks arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downloaded<'a> {
    /// Bytes verified and written, in any order.
    pub done: u64,
    /// The archive's size.
    pub total: u64,
    /// The archive's bytes before this offset are all verified and written: a reader of
    /// `path` may use them before the download ends.
    pub readable: u64,
    /// The partial file, renamed into the store once the download is done.
    pub path: &'a Path,
}

/// Called as chunks arrive.
pub type ProgressFn = Box<dyn FnMut(Downloaded<'_>) + Send>;

/// Chunks that may wait in memory for their turn to be hashed, in bytes. A fetch whose early
/// chunks are this far behind its later ones gives up hashing as it goes; the archive is then
/// hashed from the file when it is adopted.
pub const MAX_WAITING_BYTES: usize = 64 * 1024 * 1024;

/// Bytes written to a download after which they are synced to disk while the fetch goes on,
/// so that the sync making the finished archive durable has only the last of them to wait
/// for instead of the whole archive.
const SYNC_EVERY: u64 = 8 * 1024 * 1024;

/// Chunks written at their offsets in a partial file; chunks already in it (from an earlier,
/// interrupted attempt) are found by checking their hashes. The whole archive is hashed as the
/// chunks come in, in order.
///
/// Once [`close`](Self::close) has returned, nothing more is written to the file, even by a
/// chunk whose check was still running when its fetch failed.
pub struct FileSink {
    file: File,
    path: PathBuf,
    info: ArchiveInfo,
    /// Chunks found in the file when it was opened.
    had: Vec<bool>,
    /// Chunks in the file or being written: each is written once.
    stored: Vec<AtomicBool>,
    /// Chunks whose write is done: what may be read back and served to peers.
    written: Vec<AtomicBool>,
    progress: Mutex<Progress>,
    /// True once closed; `put` writes while holding it for reading.
    closed: RwLock<bool>,
    /// Bytes of chunks that may wait for their turn to be hashed.
    waiting_limit: usize,
    waiting: Mutex<Waiting>,
    hashing: Mutex<InOrder>,
    /// Bytes written after which they are synced while the fetch goes on.
    sync_every: u64,
    sync_behind: Mutex<SyncBehind>,
}

/// What a download reports as its chunks arrive.
struct Progress {
    done: u64,
    /// Chunks before this one are all written.
    readable: u32,
    report: Option<ProgressFn>,
}

/// Syncs of a download made while it is being written.
#[derive(Default)]
struct SyncBehind {
    /// Bytes written since the last sync started.
    unsynced: u64,
    running: bool,
    /// Syncs made so far.
    done: u32,
}

/// Verified chunks written but not yet hashed, because an earlier one is missing.
#[derive(Default)]
struct Waiting {
    chunks: BTreeMap<u32, Bytes>,
    bytes: usize,
    gave_up: bool,
}

/// The whole-archive hash over chunks `0..next`.
#[derive(Default)]
struct InOrder {
    hasher: ContentHasher,
    next: u32,
}

impl FileSink {
    pub fn open(
        path: &Path,
        info: &ArchiveInfo,
        on_progress: Option<ProgressFn>,
    ) -> Result<Self, DownloadError> {
        let file = open_partial(path).map_err(|e| DownloadError(e.to_string()))?;
        let len = file
            .metadata()
            .map_err(|e| DownloadError(e.to_string()))?
            .len();
        if len > info.size {
            file.set_len(0).map_err(|e| DownloadError(e.to_string()))?;
        }
        let mut had = vec![false; info.chunks.len()];
        let mut done = 0;
        let mut buf = Vec::new();
        for (index, expected) in info.chunks.iter().enumerate() {
            let Some((start, size)) = info.chunk_range(index as u32) else {
                continue;
            };
            if start + size as u64 > len.min(info.size) {
                continue;
            }
            buf.resize(size, 0);
            if file.read_exact_at(&mut buf, start).is_ok() && ContentId::of(&buf) == *expected {
                had[index] = true;
                done += size as u64;
            }
        }
        let sink = Self {
            file,
            path: path.to_owned(),
            info: info.clone(),
            stored: had.iter().map(|h| AtomicBool::new(*h)).collect(),
            written: had.iter().map(|h| AtomicBool::new(*h)).collect(),
            had,
            progress: Mutex::new(Progress {
                done,
                readable: 0,
                report: on_progress,
            }),
            closed: RwLock::new(false),
            waiting_limit: MAX_WAITING_BYTES,
            waiting: Mutex::default(),
            hashing: Mutex::default(),
            sync_every: SYNC_EVERY,
            sync_behind: Mutex::default(),
        };
        sink.advance(0);
        Ok(sink)
    }

    /// Adds `bytes` (written) to the progress and reports it.
    fn advance(&self, bytes: u64) {
        let mut progress = lock(&self.progress);
        progress.done += bytes;
        let chunks = self.info.chunks.len() as u32;
        while progress.readable < chunks
            && self.written[progress.readable as usize].load(Ordering::Acquire)
        {
            progress.readable += 1;
        }
        let readable = match progress.readable {
            0 => 0,
            n => self
                .info
                .chunk_range(n - 1)
                .map_or(0, |(start, size)| start + size as u64),
        };
        let done = progress.done;
        if let Some(report) = &mut progress.report {
            report(Downloaded {
                done,
                total: self.info.size,
                readable,
                path: &self.path,
            });
        }
    }

    /// Hashes the chunks whose turn has come. With `wait` false it leaves the work to whoever
    /// is hashing already; [`close`](Self::close) waits, so nothing is left behind.
    fn hash_in_order(&self, wait: bool) -> Result<(), DownloadError> {
        let mut state = if wait {
            lock(&self.hashing)
        } else {
            match self.hashing.try_lock() {
                Ok(state) => state,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => return Ok(()),
            }
        };
        while (state.next as usize) < self.info.chunks.len() {
            let index = state.next;
            if self.had[index as usize] {
                let (start, size) = self.info.chunk_range(index).ok_or_else(|| {
                    DownloadError(format!("chunk {index} is outside the archive"))
                })?;
                let mut buf = vec![0; size];
                self.file
                    .read_exact_at(&mut buf, start)
                    .map_err(|e| DownloadError(e.to_string()))?;
                state.hasher.update(&buf);
            } else {
                let data = {
                    let mut waiting = lock(&self.waiting);
                    let Some(data) = waiting.chunks.remove(&index) else {
                        return Ok(());
                    };
                    waiting.bytes -= data.len();
                    data
                };
                state.hasher.update(&data);
            }
            state.next += 1;
        }
        Ok(())
    }

    /// Syncs what was written so far once `sync_every` bytes are waiting, one sync at a
    /// time. A failure fails the chunk: after a failed sync the kernel may forget the error,
    /// so a later sync could succeed over lost pages.
    fn sync_behind(&self, written: usize) -> Result<(), DownloadError> {
        {
            let mut state = lock(&self.sync_behind);
            state.unsynced += written as u64;
            if state.running || state.unsynced < self.sync_every {
                return Ok(());
            }
            state.unsynced = 0;
            state.running = true;
        }
        let synced = self.file.sync_data();
        let mut state = lock(&self.sync_behind);
        state.running = false;
        state.done += 1;
        synced.map_err(|e| DownloadError(format!("syncing the download: {e}")))
    }

    /// The archive this download is of.
    pub fn info(&self) -> &ArchiveInfo {
        &self.info
    }

    /// Chunk `index` read back from the file and checked against its hash again, if it is
    /// written: a peer is served only bytes this node verified and still holds intact.
    pub fn read_chunk(&self, index: u32) -> Option<Vec<u8>> {
        if !self.written.get(index as usize)?.load(Ordering::Acquire) {
            return None;
        }
        let (start, size) = self.info.chunk_range(index)?;
        let mut buf = vec![0; size];
        self.file.read_exact_at(&mut buf, start).ok()?;
        (ContentId::of(&buf) == self.info.chunks[index as usize]).then_some(buf)
    }

    /// Stops all writing to the file. Returns the whole-archive hash if every chunk was hashed
    /// as it came in, `None` if the file must be hashed again. The file is not synced here:
    /// a partial download needs no durability (a resume checks every chunk it finds), and
    /// adopting it syncs it before it enters the store (most of it already synced behind the
    /// writes, so that sync is short).
    pub fn close(&self) -> Result<Option<ContentId>, DownloadError> {
        *self.closed.write().unwrap_or_else(|e| e.into_inner()) = true;
        debug!(
            early_syncs = lock(&self.sync_behind).done,
            "download closed"
        );
        self.hash_in_order(true)?;
        let state = std::mem::take(&mut *lock(&self.hashing));
        let whole = !lock(&self.waiting).gave_up && state.next as usize == self.info.chunks.len();
        Ok(whole.then(|| state.hasher.finish()))
    }
}

impl ChunkSink for FileSink {
    fn has(&self, index: u32) -> bool {
        self.had[index as usize]
    }

    fn held(&self) -> Vec<bool> {
        self.written
            .iter()
            .map(|w| w.load(Ordering::Acquire))
            .collect()
    }

    fn put(&self, index: u32, offset: u64, data: Bytes) -> Result<bool, DownloadError> {
        if self.stored[index as usize].swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        {
            let closed = self.closed.read().unwrap_or_else(|e| e.into_inner());
            if *closed {
                return Err(DownloadError("the download was closed".into()));
            }
            self.file
                .write_all_at(&data, offset)
                .map_err(|e| DownloadError(e.to_string()))?;
        }
        self.written[index as usize].store(true, Ordering::Release);
        let len = data.len();
        {
            let mut waiting = lock(&self.waiting);
            if !waiting.gave_up {
                waiting.bytes += len;
                waiting.chunks.insert(index, data);
                if waiting.bytes > self.waiting_limit {
                    debug!(
                        index,
                        "chunks far out of order; the archive will be hashed at the end"
                    );
                    waiting.gave_up = true;
                    waiting.chunks.clear();
                    waiting.bytes = 0;
                }
            }
        }
        self.hash_in_order(false)?;
        self.sync_behind(len)?;
        self.advance(len as u64);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// 10 chunks of 16 KiB and a short last one.
    fn archive() -> (Vec<u8>, ArchiveInfo) {
        let data: Vec<u8> = (0..10 * 16 * 1024 + 100u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let info = ArchiveInfo::describe(&data, 16 * 1024);
        assert_eq!(info.chunks.len(), 11);
        (data, info)
    }

    fn chunk(data: &[u8], info: &ArchiveInfo, index: u32) -> (u64, Bytes) {
        let (start, size) = info.chunk_range(index).unwrap();
        (
            start,
            Bytes::copy_from_slice(&data[start as usize..start as usize + size]),
        )
    }

    /// What an earlier, interrupted try left at `path`: chunks 0..4 of `data`, chunk 2
    /// damaged.
    fn earlier_try(path: &Path, data: &[u8]) {
        let mut earlier = data[..4 * 16 * 1024].to_vec();
        earlier[2 * 16 * 1024 + 7] ^= 1;
        std::fs::write(path, earlier).unwrap();
    }

    /// (done, total, readable) each time a sink reported progress.
    type Reported = Arc<Mutex<Vec<(u64, u64, u64)>>>;

    /// A sink at `path` and the progress it reports.
    fn recording(path: &Path, info: &ArchiveInfo) -> (FileSink, Reported) {
        let reported = Arc::new(Mutex::new(Vec::new()));
        let seen = reported.clone();
        let progress: ProgressFn =
            Box::new(move |d: Downloaded<'_>| lock(&seen).push((d.done, d.total, d.readable)));
        (
            FileSink::open(path, info, Some(progress)).unwrap(),
            reported,
        )
    }

    #[test]
    fn chunks_in_any_order_from_many_threads_give_the_whole_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let (data, info) = archive();
        let (sink, reported) = recording(&path, &info);
        let sink = Arc::new(sink);
        // Last chunk first, then the rest from four threads at once.
        let (offset, last) = chunk(&data, &info, 10);
        sink.put(10, offset, last).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let (sink, data, info) = (&sink, &data, &info);
                s.spawn(move || {
                    for index in (0..10).rev().filter(|i| i % 4 == t) {
                        let (offset, bytes) = chunk(data, info, index);
                        sink.put(index, offset, bytes).unwrap();
                    }
                });
            }
        });
        assert_eq!(sink.close().unwrap(), Some(info.id));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let reported = lock(&reported).clone();
        assert_eq!(reported.first(), Some(&(0, info.size, 0)));
        assert_eq!(reported.last(), Some(&(info.size, info.size, info.size)));
        assert_eq!(reported.len(), 12, "once at open, once per chunk");
        assert!(
            reported
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].2 <= w[1].2)
        );
        // The last chunk came first: nothing was readable until the first one was in.
        assert_eq!(reported[1], (100, info.size, 0));
    }

    #[test]
    fn only_chunks_written_from_the_start_on_are_reported_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let (data, info) = archive();
        earlier_try(&path, &data);
        let (sink, reported) = recording(&path, &info);
        const K: u64 = 16 * 1024;
        for index in [4, 2, 5] {
            let (offset, bytes) = chunk(&data, &info, index);
            sink.put(index, offset, bytes).unwrap();
        }
        let readable: Vec<u64> = lock(&reported).iter().map(|r| r.2).collect();
        assert_eq!(readable, [2 * K, 2 * K, 5 * K, 6 * K]);
        assert_eq!(
            &std::fs::read(&path).unwrap()[..6 * K as usize],
            &data[..6 * K as usize]
        );
    }

    #[test]
    fn a_chunk_sent_by_several_providers_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let (data, info) = archive();
        let (sink, reported) = recording(&path, &info);
        // Three threads put every chunk, each in its own order.
        let stored: Vec<Vec<u32>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..3u32)
                .map(|t| {
                    let (sink, data, info) = (&sink, &data, &info);
                    s.spawn(move || {
                        (0..11u32)
                            .map(|i| (i * 7 + t * 5) % 11)
                            .filter(|index| {
                                let (offset, bytes) = chunk(data, info, *index);
                                sink.put(*index, offset, bytes).unwrap()
                            })
                            .collect()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut all: Vec<u32> = stored.concat();
        all.sort_unstable();
        assert_eq!(all, (0..11).collect::<Vec<_>>(), "each chunk stored once");
        assert_eq!(sink.close().unwrap(), Some(info.id));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let reported = lock(&reported).clone();
        assert_eq!(reported.len(), 12, "once at open, once per chunk");
        assert_eq!(reported.last(), Some(&(info.size, info.size, info.size)));
    }

    #[test]
    fn chunks_resumed_from_the_file_are_hashed_in_their_turn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let (data, info) = archive();
        earlier_try(&path, &data);
        let sink = FileSink::open(&path, &info, None).unwrap();
        let had: Vec<u32> = (0..11).filter(|i| sink.has(*i)).collect();
        assert_eq!(had, [0, 1, 3]);
        let (offset, again) = chunk(&data, &info, 1);
        assert_eq!(sink.put(1, offset, again), Ok(false), "chunk 1 is there");
        for index in (0..11).filter(|i| !had.contains(i)) {
            let (offset, bytes) = chunk(&data, &info, index);
            sink.put(index, offset, bytes).unwrap();
        }
        assert_eq!(sink.close().unwrap(), Some(info.id));
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn too_many_chunks_waiting_leaves_the_hash_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let (data, info) = archive();
        let mut sink = FileSink::open(&path, &info, None).unwrap();
        sink.waiting_limit = 3 * 16 * 1024;
        // Chunk 0 comes last: chunks 1..=3 fit in the limit, chunk 4 does not.
        for index in (1..11).chain([0]) {
            let (offset, bytes) = chunk(&data, &info, index);
            sink.put(index, offset, bytes).unwrap();
        }
        assert_eq!(sink.close().unwrap(), None, "the file must be hashed again");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "every chunk was still written"
        );
    }

    #[test]
    fn the_download_is_synced_behind_the_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let (data, info) = archive();
        let mut sink = FileSink::open(&path, &info, None).unwrap();
        sink.sync_every = 3 * 16 * 1024;
        for index in 0..11 {
            let (offset, bytes) = chunk(&data, &info, index);
            sink.put(index, offset, bytes).unwrap();
        }
        // After chunks 2, 5 and 8; chunks 9 and 10 wait for the sync that adopts the file.
        assert_eq!(lock(&sink.sync_behind).done, 3);
        assert_eq!(lock(&sink.sync_behind).unsynced, 16 * 1024 + 100);
        assert_eq!(sink.close().unwrap(), Some(info.id));
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn nothing_is_written_once_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let (data, info) = archive();
        let sink = FileSink::open(&path, &info, None).unwrap();
        let (offset, bytes) = chunk(&data, &info, 0);
        sink.put(0, offset, bytes.clone()).unwrap();
        assert_eq!(sink.close().unwrap(), None, "ten chunks are missing");
        let (offset, late) = chunk(&data, &info, 1);
        assert_eq!(
            sink.put(1, offset, late),
            Err(DownloadError("the download was closed".into()))
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
