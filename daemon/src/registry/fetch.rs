//! Chunked, verified fetch of an archive from several providers.
//!
//! Chunks are requested several at a time, spread round-robin over the providers in the order
//! given (best first). Each chunk is checked against its SHA-256 from the signed release record
//! the moment it arrives; a bad chunk is blamed on the peer that sent it, that peer gets no
//! more requests in this fetch, and the chunk is asked of another provider. Chunks go to a
//! [`ChunkSink`]: memory, or a partial file on disk so that an interrupted fetch resumes with
//! the chunks it already has. What each peer did is reported for reputation.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use agora_protocol::ContentId;
use agora_protocol::messages::{FetchRequest, FetchResponse};
use agora_protocol::records::ArchiveInfo;
use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::PeerId;
use tracing::{Instrument, debug, warn};

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

/// Where verified chunks go.
pub trait ChunkSink {
    /// Whether chunk `index` is already there (verified).
    fn has(&self, index: u32) -> bool;
    fn put(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), FetchError>;
}

/// Chunks kept in memory.
pub struct MemorySink {
    pub chunks: Vec<Option<Vec<u8>>>,
}

impl ChunkSink for MemorySink {
    fn has(&self, index: u32) -> bool {
        self.chunks[index as usize].is_some()
    }
    fn put(&mut self, index: u32, _offset: u64, data: &[u8]) -> Result<(), FetchError> {
        self.chunks[index as usize] = Some(data.to_vec());
        Ok(())
    }
}

/// Called with (bytes verified so far, archive size) as chunks arrive.
pub type ProgressFn = Box<dyn FnMut(u64, u64) + Send>;

/// Chunks written at their offsets in a partial file; chunks already in it (from an earlier,
/// interrupted attempt) are found by checking their hashes.
pub struct FileSink {
    file: File,
    have: Vec<bool>,
    done: u64,
    total: u64,
    on_progress: Option<ProgressFn>,
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
        let mut have = vec![false; info.chunks.len()];
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
                have[index] = true;
                done += size as u64;
            }
        }
        let mut sink = Self {
            file,
            have,
            done,
            total: info.size,
            on_progress,
        };
        sink.report();
        Ok(sink)
    }

    fn report(&mut self) {
        if let Some(f) = &mut self.on_progress {
            f(self.done, self.total);
        }
    }

    pub fn finish(self) -> Result<(), FetchError> {
        self.file
            .sync_all()
            .map_err(|e| FetchError::Io(e.to_string()))
    }
}

impl ChunkSink for FileSink {
    fn has(&self, index: u32) -> bool {
        self.have[index as usize]
    }
    fn put(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), FetchError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| FetchError::Io(e.to_string()))?;
        self.have[index as usize] = true;
        self.done += data.len() as u64;
        self.report();
        Ok(())
    }
}

/// Fetches into memory and checks the whole-archive hash; returns the bytes.
pub async fn fetch_archive(
    net: &NetworkHandle,
    info: &ArchiveInfo,
    providers: &[PeerId],
    parallel: usize,
) -> Result<(Vec<u8>, FetchReport), FetchError> {
    let mut sink = MemorySink {
        chunks: vec![None; info.chunks.len()],
    };
    let report = fetch_chunks(net, info, providers, parallel, &mut sink)
        .await
        .map_err(|(e, _)| e)?;
    let mut data = Vec::with_capacity(info.size as usize);
    for (index, chunk) in sink.chunks.into_iter().enumerate() {
        data.extend(chunk.ok_or(FetchError::ChunkUnavailable {
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

/// Fetches into the partial file at `path`, resuming what is there. The caller checks the
/// whole-archive hash when it adopts the file. On failure the outcomes so far are returned
/// too, so that reputation still learns from them.
pub async fn fetch_to_file(
    net: &NetworkHandle,
    info: &ArchiveInfo,
    providers: &[PeerId],
    parallel: usize,
    path: &Path,
    on_progress: Option<ProgressFn>,
) -> Result<FetchReport, (FetchError, Vec<PeerOutcome>)> {
    let mut sink = FileSink::open(path, info, on_progress).map_err(|e| (e, Vec::new()))?;
    let report = fetch_chunks(net, info, providers, parallel, &mut sink).await?;
    sink.finish().map_err(|e| (e, report.outcomes.clone()))?;
    Ok(report)
}

/// The fetch loop shared by every sink.
pub async fn fetch_chunks<S: ChunkSink>(
    net: &NetworkHandle,
    info: &ArchiveInfo,
    providers: &[PeerId],
    parallel: usize,
    sink: &mut S,
) -> Result<FetchReport, (FetchError, Vec<PeerOutcome>)> {
    let count = info.chunks.len() as u32;
    let mut report = FetchReport::default();
    let mut queue: VecDeque<u32> = VecDeque::new();
    for index in 0..count {
        if sink.has(index) {
            report.resumed_chunks += 1;
        } else {
            queue.push_back(index);
        }
    }
    if queue.is_empty() {
        return Ok(report);
    }
    if providers.is_empty() {
        return Err((FetchError::NoProviders(info.id), report.outcomes));
    }
    let mut tried: Vec<HashSet<PeerId>> = vec![HashSet::new(); count as usize];
    let mut blamed: HashSet<PeerId> = HashSet::new();
    let mut next_provider = 0usize;
    let mut traces: HashMap<PeerId, ProviderTrace> = HashMap::new();
    let mut in_flight = FuturesUnordered::new();

    loop {
        while in_flight.len() < parallel.max(1) {
            let Some(index) = queue.pop_front() else {
                break;
            };
            let candidates: Vec<PeerId> = providers
                .iter()
                .filter(|p| !blamed.contains(p) && !tried[index as usize].contains(p))
                .copied()
                .collect();
            if candidates.is_empty() {
                return Err((FetchError::ChunkUnavailable { index }, report.outcomes));
            }
            let peer = candidates[next_provider % candidates.len()];
            next_provider = next_provider.wrapping_add(1);
            tried[index as usize].insert(peer);
            let request = FetchRequest {
                content: info.id,
                index,
            };
            let span = traces
                .entry(peer)
                .or_insert_with(|| ProviderTrace::new(peer))
                .span
                .clone();
            in_flight.push(
                async move {
                    let started = Instant::now();
                    let result = net.send_fetch(peer, request).await;
                    (index, peer, result, started.elapsed())
                }
                .instrument(span),
            );
        }
        let Some((index, peer, result, elapsed)) = in_flight.next().await else {
            break;
        };
        let range = info.chunk_range(index);
        let trace = traces
            .entry(peer)
            .or_insert_with(|| ProviderTrace::new(peer));
        match result {
            Ok(FetchResponse::Chunk(data))
                if range.map(|r| r.1) == Some(data.len())
                    && ContentId::of(&data) == info.chunks[index as usize] =>
            {
                let offset = range.map_or(0, |r| r.0);
                if let Err(e) = sink.put(index, offset, &data) {
                    return Err((e, report.outcomes));
                }
                report.bytes_fetched += data.len() as u64;
                trace.chunks += 1;
                trace.bytes += data.len() as u64;
                report.outcomes.push(PeerOutcome::Served {
                    peer,
                    bytes: data.len() as u64,
                    latency_ms: elapsed.as_secs_f64() * 1000.0,
                });
                match report.served_by.iter_mut().find(|(p, _)| *p == peer) {
                    Some((_, n)) => *n += 1,
                    None => report.served_by.push((peer, 1)),
                }
            }
            Ok(FetchResponse::Chunk(_)) => {
                warn!(%peer, index, "chunk failed verification; blaming the sender");
                blamed.insert(peer);
                trace.bad_data = true;
                report.outcomes.push(PeerOutcome::BadData { peer });
                queue.push_back(index);
            }
            Ok(FetchResponse::Refused(why)) => {
                debug!(%peer, index, ?why, "provider refused a chunk");
                trace.failures += 1;
                report.outcomes.push(PeerOutcome::Failed { peer });
                queue.push_back(index);
            }
            Err(e) => {
                debug!(%peer, index, error = %e, "chunk request failed");
                trace.failures += 1;
                report.outcomes.push(PeerOutcome::Failed { peer });
                queue.push_back(index);
            }
        }
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
