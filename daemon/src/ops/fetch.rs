//! Chunked, verified fetch of an archive from several providers.
//!
//! Chunks are requested several at a time, spread round-robin over the providers in the order
//! given (best first); see `Schedule` for who is asked what. Each chunk is checked against
//! its SHA-256 from the signed release record the moment it arrives; a bad chunk is blamed on
//! the peer that sent it, that peer gets no more requests in this fetch, and the chunk is asked
//! of another provider. Chunks go to a
//! [`ChunkSink`]: memory, or a partial file on disk so that an interrupted fetch resumes with
//! the chunks it already has. What each peer did is reported for reputation.
//!
//! Checking and writing a chunk happen on the blocking pool, several chunks at once, while the
//! network goes on receiving; the file sink also hashes the whole archive as chunks come in,
//! in order, so adopting it needs no second read of the file, and syncs the file every few
//! MiB, so the disk writes overlap the transfer instead of all waiting for the final sync.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, TryLockError};
use std::time::Instant;

use agora_protocol::messages::{FetchRequest, FetchResponse, Refusal};
use agora_protocol::records::ArchiveInfo;
use agora_protocol::{ContentHasher, ContentId};
use bytes::Bytes;
use futures::stream::{BoxStream, FuturesUnordered, StreamExt};
use libp2p::PeerId;
use tracing::{Instrument, debug, warn};

use crate::lock;
use crate::network::NetworkHandle;
use crate::store::blobs::open_partial;

/// Chunk requests in flight at once across all providers.
pub const DEFAULT_PARALLEL_CHUNKS: usize = 8;

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("no provider is known for {0}")]
    NoProviders(ContentId),
    #[error("chunk {index} could not be fetched: every provider failed or sent bad data")]
    ChunkUnavailable { index: u32 },
    #[error("assembled archive hashes to {got}, the record says {expected}")]
    ArchiveMismatch { expected: ContentId, got: ContentId },
    #[error("writing the download: {0}")]
    Io(String),
}

/// What one request to one peer came to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PeerOutcome {
    Served {
        peer: PeerId,
        bytes: u64,
        latency_ms: f64,
    },
    /// Refused, timed out or failed in transport.
    Failed { peer: PeerId },
    /// Sent bytes that do not match the chunk's hash.
    BadData { peer: PeerId },
}

/// A finished fetch.
#[derive(Debug, Default)]
pub struct FetchReport {
    /// Chunks received from each provider that delivered any.
    pub served_by: Vec<(PeerId, u32)>,
    pub outcomes: Vec<PeerOutcome>,
    /// Chunks that were already there when the fetch started (a resume).
    pub resumed_chunks: u32,
    pub bytes_fetched: u64,
}

impl FetchReport {
    /// Peers that sent bad data.
    pub fn blamed(&self) -> Vec<PeerId> {
        let mut out: Vec<PeerId> = self
            .outcomes
            .iter()
            .filter_map(|o| match o {
                PeerOutcome::BadData { peer } => Some(*peer),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Where verified chunks go. `put` runs on the blocking pool, for several chunks at once.
pub trait ChunkSink: Send + Sync + 'static {
    /// Whether chunk `index` was already there (verified) when the fetch started.
    fn has(&self, index: u32) -> bool;
    /// Stores a verified chunk; `false` if it was stored already (a second provider's copy of
    /// it, which is dropped).
    fn put(&self, index: u32, offset: u64, data: Bytes) -> Result<bool, FetchError>;
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
    fn put(&self, index: u32, _offset: u64, data: Bytes) -> Result<bool, FetchError> {
        let mut chunks = lock(&self.chunks);
        let slot = &mut chunks[index as usize];
        if slot.is_some() {
            return Ok(false);
        }
        *slot = Some(data);
        Ok(true)
    }
}

/// Called with (bytes verified so far, archive size) as chunks arrive.
pub type ProgressFn = Box<dyn FnMut(u64, u64) + Send>;

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
    info: ArchiveInfo,
    /// Chunks found in the file when it was opened.
    had: Vec<bool>,
    /// Chunks in the file or being written: each is written once.
    stored: Vec<AtomicBool>,
    progress: Mutex<(u64, Option<ProgressFn>)>,
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
    ) -> Result<Self, FetchError> {
        let file = open_partial(path).map_err(|e| FetchError::Io(e.to_string()))?;
        let len = file
            .metadata()
            .map_err(|e| FetchError::Io(e.to_string()))?
            .len();
        if len > info.size {
            file.set_len(0).map_err(|e| FetchError::Io(e.to_string()))?;
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
            info: info.clone(),
            stored: had.iter().map(|h| AtomicBool::new(*h)).collect(),
            had,
            progress: Mutex::new((done, on_progress)),
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

    /// Adds `bytes` to the progress and reports it.
    fn advance(&self, bytes: u64) {
        let mut progress = lock(&self.progress);
        progress.0 += bytes;
        let done = progress.0;
        if let Some(f) = &mut progress.1 {
            f(done, self.info.size);
        }
    }

    /// Hashes the chunks whose turn has come. With `wait` false it leaves the work to whoever
    /// is hashing already; [`close`](Self::close) waits, so nothing is left behind.
    fn hash_in_order(&self, wait: bool) -> Result<(), FetchError> {
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
                let (start, size) = self
                    .info
                    .chunk_range(index)
                    .ok_or(FetchError::ChunkUnavailable { index })?;
                let mut buf = vec![0; size];
                self.file
                    .read_exact_at(&mut buf, start)
                    .map_err(|e| FetchError::Io(e.to_string()))?;
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
    fn sync_behind(&self, written: usize) -> Result<(), FetchError> {
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
        synced.map_err(|e| FetchError::Io(format!("syncing the download: {e}")))
    }

    /// Stops all writing to the file. Returns the whole-archive hash if every chunk was hashed
    /// as it came in, `None` if the file must be hashed again. The file is not synced here:
    /// a partial download needs no durability (a resume checks every chunk it finds), and
    /// adopting it syncs it before it enters the store (most of it already synced behind the
    /// writes, so that sync is short).
    pub fn close(&self) -> Result<Option<ContentId>, FetchError> {
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

    fn put(&self, index: u32, offset: u64, data: Bytes) -> Result<bool, FetchError> {
        if self.stored[index as usize].swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        {
            let closed = self.closed.read().unwrap_or_else(|e| e.into_inner());
            if *closed {
                return Err(FetchError::Io("the download was closed".into()));
            }
            self.file
                .write_all_at(&data, offset)
                .map_err(|e| FetchError::Io(e.to_string()))?;
        }
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

/// Fetches into memory and checks the whole-archive hash; returns the bytes.
pub async fn fetch_archive(
    net: &NetworkHandle,
    info: &ArchiveInfo,
    providers: Providers,
    parallel: usize,
) -> Result<(Vec<u8>, FetchReport), FetchError> {
    let sink = Arc::new(MemorySink::new(info.chunks.len()));
    let report = fetch_chunks(net, info, providers, parallel, sink.clone())
        .await
        .map_err(|(e, _)| e)?;
    let mut data = Vec::with_capacity(info.size as usize);
    for (index, chunk) in sink.take_chunks().into_iter().enumerate() {
        data.extend_from_slice(&chunk.ok_or(FetchError::ChunkUnavailable {
            index: index as u32,
        })?);
    }
    let got = ContentId::of(&data);
    if got != info.id {
        return Err(FetchError::ArchiveMismatch {
            expected: info.id,
            got,
        });
    }
    Ok((data, report))
}

/// Fetches into the partial file at `path`, resuming what is there. Returns the report and
/// the whole-archive hash of what the file now holds, if it could be computed on the way (the
/// caller checks it, or hashes the file, when it adopts the file). On failure the outcomes so
/// far are returned too, so that reputation still learns from them.
pub async fn fetch_to_file(
    net: &NetworkHandle,
    info: &ArchiveInfo,
    providers: Providers,
    parallel: usize,
    path: &Path,
    on_progress: Option<ProgressFn>,
) -> Result<(FetchReport, Option<ContentId>), (FetchError, Vec<PeerOutcome>)> {
    let sink = Arc::new(FileSink::open(path, info, on_progress).map_err(|e| (e, Vec::new()))?);
    let result = fetch_chunks(net, info, providers, parallel, sink.clone()).await;
    let closing = sink.clone();
    let closed = tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|e| FetchError::Io(format!("closing the download: {e}")));
    let report = result?;
    match closed {
        Ok(Ok(hash)) => Ok((report, hash)),
        Ok(Err(e)) | Err(e) => Err((e, report.outcomes)),
    }
}

/// How a chunk request ended, once its data (if any) was checked and stored.
enum Arrival {
    Stored(usize),
    /// Good, but the chunk was already in (another provider's copy came first).
    Duplicate(usize),
    BadData,
    Refused(Refusal),
    Failed(String),
    /// The sink could not store a good chunk: the fetch stops.
    SinkFailed(FetchError),
}

/// Asks `peer` for chunk `index`; a chunk that comes is checked against its hash and handed to
/// the sink on the blocking pool. Returns how it ended and the network round trip.
async fn request_chunk<S: ChunkSink>(
    net: &NetworkHandle,
    info: &ArchiveInfo,
    peer: PeerId,
    index: u32,
    sink: Arc<S>,
) -> (Arrival, std::time::Duration) {
    let started = Instant::now();
    let request = FetchRequest {
        content: info.id,
        chunk_size: info.chunk_size,
        index,
    };
    let result = net.send_fetch(peer, request).await;
    let elapsed = started.elapsed();
    let data = match result {
        Ok(FetchResponse::Chunk(data)) => data,
        Ok(FetchResponse::Refused(why)) => return (Arrival::Refused(why), elapsed),
        Err(e) => return (Arrival::Failed(e.to_string()), elapsed),
    };
    let (Some((offset, size)), Some(expected)) = (
        info.chunk_range(index),
        info.chunks.get(index as usize).copied(),
    ) else {
        return (Arrival::BadData, elapsed);
    };
    let checked = tokio::task::spawn_blocking(move || {
        if data.len() != size || ContentId::of(&data) != expected {
            return Arrival::BadData;
        }
        match sink.put(index, offset, data) {
            Ok(true) => Arrival::Stored(size),
            Ok(false) => Arrival::Duplicate(size),
            Err(e) => Arrival::SinkFailed(e),
        }
    })
    .await;
    let arrival = checked.unwrap_or_else(|e| {
        Arrival::SinkFailed(FetchError::Io(format!("checking chunk {index}: {e}")))
    });
    (arrival, elapsed)
}

/// The providers a fetch asks: those known when it starts, best first, and those a search
/// that is still running finds later.
pub struct Providers {
    pub known: Vec<PeerId>,
    /// Providers found later, each once, ending when the search does.
    pub later: Option<BoxStream<'static, PeerId>>,
}

impl Providers {
    /// Just these providers, best first.
    pub fn fixed(known: Vec<PeerId>) -> Self {
        Self { known, later: None }
    }
}

/// What the fetch loop waits for.
enum Next<T> {
    Arrived(T),
    /// A provider found by the search, or `None` when it has ended.
    Found(Option<PeerId>),
}

/// Which provider is asked for which chunk. Providers are taken round-robin, best first,
/// never twice for one chunk, and none again in this fetch once it has sent bad data,
/// refused or failed a request. A provider not known to be reachable (not connected when the
/// fetch started and no chunk served yet) is asked for one chunk at a time, so that a
/// departed peer whose provider record outlives it holds up one chunk rather than a share of
/// them; once nothing else is left to ask, a chunk held only by such a provider is also asked
/// of one that has served, and whichever answers first is kept.
struct Schedule {
    providers: Vec<PeerId>,
    /// Connected when the fetch started, or served a chunk in it.
    proven: HashSet<PeerId>,
    dropped: HashSet<PeerId>,
    /// Providers ever asked for each chunk.
    tried: Vec<HashSet<PeerId>>,
    /// Providers being asked for a chunk now.
    asking: HashMap<u32, Vec<PeerId>>,
    done: Vec<bool>,
    remaining: usize,
    next: usize,
}

/// Whom to ask for a chunk.
#[derive(Debug, PartialEq, Eq)]
enum Pick {
    Ask(PeerId),
    /// Only providers that are busy proving themselves are left: ask once one answers.
    Wait,
    /// Every provider known has been asked for it or dropped.
    NoneLeft,
}

impl Schedule {
    fn new(providers: Vec<PeerId>, connected: &[PeerId], done: Vec<bool>) -> Self {
        let proven = providers
            .iter()
            .filter(|p| connected.contains(p))
            .copied()
            .collect();
        Self {
            providers,
            proven,
            dropped: HashSet::new(),
            tried: vec![HashSet::new(); done.len()],
            asking: HashMap::new(),
            remaining: done.iter().filter(|d| !**d).count(),
            done,
            next: 0,
        }
    }

    fn add_provider(&mut self, peer: PeerId) -> bool {
        let new = !self.providers.contains(&peer);
        if new {
            self.providers.push(peer);
        }
        new
    }

    /// Whether `peer` may be asked for another chunk now.
    fn ready(&self, peer: &PeerId) -> bool {
        self.proven.contains(peer) || !self.asking.values().any(|asked| asked.contains(peer))
    }

    fn pick(&mut self, index: u32) -> Pick {
        let tried = &self.tried[index as usize];
        let eligible: Vec<PeerId> = self
            .providers
            .iter()
            .filter(|p| !self.dropped.contains(p) && !tried.contains(p))
            .copied()
            .collect();
        let ready: Vec<PeerId> = eligible.iter().filter(|p| self.ready(p)).copied().collect();
        if ready.is_empty() {
            return if eligible.is_empty() {
                Pick::NoneLeft
            } else {
                Pick::Wait
            };
        }
        let peer = ready[self.next % ready.len()];
        self.next = self.next.wrapping_add(1);
        Pick::Ask(peer)
    }

    fn sent(&mut self, index: u32, peer: PeerId) {
        self.tried[index as usize].insert(peer);
        self.asking.entry(index).or_default().push(peer);
    }

    /// A request ended, however it went.
    fn returned(&mut self, index: u32, peer: PeerId) {
        if let Some(asked) = self.asking.get_mut(&index) {
            asked.retain(|p| *p != peer);
            if asked.is_empty() {
                self.asking.remove(&index);
            }
        }
    }

    /// `peer` served chunk `index` (first, or after another provider did).
    fn served(&mut self, index: u32, peer: PeerId) {
        self.proven.insert(peer);
        if !std::mem::replace(&mut self.done[index as usize], true) {
            self.remaining -= 1;
        }
    }

    /// `peer` sent a good copy of a chunk another provider's copy is stored from: it is
    /// proven, and the chunk is done when that other arrival is counted (it is in flight:
    /// its copy won the race to the sink), so the report credits the provider stored from.
    fn duplicate(&mut self, peer: PeerId) {
        self.proven.insert(peer);
    }

    fn drop_provider(&mut self, peer: PeerId) {
        self.dropped.insert(peer);
    }

    fn is_done(&self, index: u32) -> bool {
        self.done[index as usize]
    }

    fn is_asked(&self, index: u32) -> bool {
        self.asking.contains_key(&index)
    }

    /// Chunks asked only of providers not yet proven, each with a proven provider to ask as
    /// well.
    fn endgame(&mut self) -> Vec<(u32, PeerId)> {
        let mut also = Vec::new();
        for (index, asked) in &self.asking {
            if asked.iter().any(|p| self.proven.contains(p)) {
                continue;
            }
            let tried = &self.tried[*index as usize];
            if let Some(peer) = self.providers.iter().find(|p| {
                self.proven.contains(p) && !self.dropped.contains(p) && !tried.contains(p)
            }) {
                also.push((*index, *peer));
            }
        }
        also.sort_unstable();
        also
    }
}

/// The fetch loop shared by every sink, asking providers as `Schedule` says; a provider
/// found later joins the rotation. A chunk every known provider has failed waits for one
/// found later, and is unavailable once the search has ended. The fetch ends when every chunk
/// is in, without waiting for requests still out to providers that never answered.
pub async fn fetch_chunks<S: ChunkSink>(
    net: &NetworkHandle,
    info: &ArchiveInfo,
    providers: Providers,
    parallel: usize,
    sink: Arc<S>,
) -> Result<FetchReport, (FetchError, Vec<PeerOutcome>)> {
    let count = info.chunks.len() as u32;
    let mut report = FetchReport::default();
    let mut queue: VecDeque<u32> = VecDeque::new();
    let mut had = Vec::with_capacity(count as usize);
    for index in 0..count {
        let has = sink.has(index);
        if has {
            report.resumed_chunks += 1;
        } else {
            queue.push_back(index);
        }
        had.push(has);
    }
    if queue.is_empty() {
        return Ok(report);
    }
    let Providers { known, mut later } = providers;
    // Without the list, every provider proves itself with its first chunk.
    let connected = net.peers().await.unwrap_or_default();
    let mut schedule = Schedule::new(known, &connected, had);
    let mut traces: HashMap<PeerId, ProviderTrace> = HashMap::new();
    let mut in_flight = FuturesUnordered::new();
    // Chunks waiting for a provider that has not failed them.
    let mut parked: Vec<u32> = Vec::new();
    let ask = |index: u32, peer: PeerId, span: tracing::Span| {
        let sink = sink.clone();
        async move {
            let (arrival, elapsed) = request_chunk(net, info, peer, index, sink).await;
            (index, peer, arrival, elapsed)
        }
        .instrument(span)
    };

    loop {
        while in_flight.len() < parallel.max(1) {
            let Some(index) = queue.pop_front() else {
                break;
            };
            if schedule.is_done(index) {
                continue;
            }
            match schedule.pick(index) {
                Pick::Ask(peer) => {
                    schedule.sent(index, peer);
                    in_flight.push(ask(
                        index,
                        peer,
                        ProviderTrace::of(&mut traces, peer).span.clone(),
                    ));
                }
                Pick::Wait => {
                    queue.push_front(index);
                    break;
                }
                // Another provider still has it in hand: its answer decides.
                Pick::NoneLeft if schedule.is_asked(index) => {}
                Pick::NoneLeft if later.is_some() => parked.push(index),
                Pick::NoneLeft => {
                    let error = if schedule.providers.is_empty() {
                        FetchError::NoProviders(info.id)
                    } else {
                        FetchError::ChunkUnavailable { index }
                    };
                    return Err((error, report.outcomes));
                }
            }
        }
        if queue.is_empty() && parked.is_empty() {
            for (index, peer) in schedule.endgame() {
                debug!(%peer, index, "asking a provider that has served for a chunk still out");
                schedule.sent(index, peer);
                in_flight.push(ask(
                    index,
                    peer,
                    ProviderTrace::of(&mut traces, peer).span.clone(),
                ));
            }
        }
        if schedule.remaining == 0 {
            break;
        }
        // Every chunk not in is queued, parked or asked for: with nothing asked, either the
        // queue was just refilled from a provider found later, or the search still runs.
        let next = match later.as_mut() {
            None => Next::Arrived(in_flight.next().await),
            Some(found) if in_flight.is_empty() => Next::Found(found.next().await),
            Some(found) => tokio::select! {
                arrived = in_flight.next() => Next::Arrived(arrived),
                found = found.next() => Next::Found(found),
            },
        };
        let (index, peer, arrival, elapsed) = match next {
            Next::Arrived(Some(arrived)) => arrived,
            Next::Arrived(None) => unreachable!("a request was in flight"),
            Next::Found(found) => {
                match found {
                    Some(peer) if schedule.add_provider(peer) => {
                        debug!(%peer, "another provider found");
                    }
                    Some(_) => continue,
                    None => later = None,
                }
                queue.extend(parked.drain(..));
                continue;
            }
        };
        schedule.returned(index, peer);
        let trace = ProviderTrace::of(&mut traces, peer);
        let served = |report: &mut FetchReport, size: u64| {
            report.outcomes.push(PeerOutcome::Served {
                peer,
                bytes: size,
                latency_ms: elapsed.as_secs_f64() * 1000.0,
            });
        };
        match arrival {
            Arrival::Stored(size) => {
                let size = size as u64;
                schedule.served(index, peer);
                report.bytes_fetched += size;
                trace.chunks += 1;
                trace.bytes += size;
                served(&mut report, size);
                match report.served_by.iter_mut().find(|(p, _)| *p == peer) {
                    Some((_, n)) => *n += 1,
                    None => report.served_by.push((peer, 1)),
                }
            }
            // Another provider's copy got there first.
            Arrival::Duplicate(size) => {
                schedule.duplicate(peer);
                served(&mut report, size as u64);
            }
            Arrival::SinkFailed(e) => return Err((e, report.outcomes)),
            Arrival::BadData => {
                warn!(%peer, index, "chunk failed verification; blaming the sender");
                schedule.drop_provider(peer);
                trace.bad_data = true;
                report.outcomes.push(PeerOutcome::BadData { peer });
                queue.push_back(index);
            }
            Arrival::Refused(why) => {
                debug!(%peer, index, ?why, "provider refused a chunk");
                schedule.drop_provider(peer);
                trace.failures += 1;
                report.outcomes.push(PeerOutcome::Failed { peer });
                queue.push_back(index);
            }
            Arrival::Failed(error) => {
                debug!(%peer, index, %error, "chunk request failed");
                schedule.drop_provider(peer);
                trace.failures += 1;
                report.outcomes.push(PeerOutcome::Failed { peer });
                queue.push_back(index);
            }
        }
    }
    // A provider still asked when the last chunk came in that served nothing in this fetch
    // never answered (its chunk came from another): a failure, so that the next fetch ranks
    // it lower. Not a ban: it may only be slow.
    let answered: HashSet<PeerId> = report
        .outcomes
        .iter()
        .filter_map(|o| match o {
            PeerOutcome::Served { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect();
    let unanswered: BTreeSet<PeerId> = schedule
        .asking
        .values()
        .flatten()
        .filter(|p| !answered.contains(p))
        .copied()
        .collect();
    for peer in unanswered {
        debug!(%peer, "provider never answered before the fetch ended");
        ProviderTrace::of(&mut traces, peer).failures += 1;
        report.outcomes.push(PeerOutcome::Failed { peer });
    }
    Ok(report)
}

/// The span of one provider's part in a fetch; its totals are recorded when the fetch ends.
struct ProviderTrace {
    span: tracing::Span,
    chunks: u64,
    bytes: u64,
    failures: u64,
    bad_data: bool,
}

impl ProviderTrace {
    /// `peer`'s trace in `traces`, started if need be.
    fn of(traces: &mut HashMap<PeerId, ProviderTrace>, peer: PeerId) -> &mut ProviderTrace {
        traces.entry(peer).or_insert_with(|| Self::new(peer))
    }

    fn new(peer: PeerId) -> Self {
        Self {
            span: tracing::info_span!(
                "fetch.provider",
                %peer,
                chunks = tracing::field::Empty,
                bytes = tracing::field::Empty,
                failures = tracing::field::Empty,
                outcome = tracing::field::Empty,
            ),
            chunks: 0,
            bytes: 0,
            failures: 0,
            bad_data: false,
        }
    }
}

impl Drop for ProviderTrace {
    fn drop(&mut self) {
        self.span.record("chunks", self.chunks);
        self.span.record("bytes", self.bytes);
        self.span.record("failures", self.failures);
        let outcome = match (self.bad_data, self.chunks) {
            (true, _) => "bad_data",
            (false, 0) => "failed",
            (false, _) => "served",
        };
        self.span.record("outcome", outcome);
    }
}

#[cfg(test)]
mod tests;
