//! Chunked, verified fetch of an archive from several providers.
//!
//! Chunks are requested several at a time, spread round-robin over the providers in the order
//! given (best first); see `Schedule` for who is asked what. Each chunk is checked against
//! its SHA-256 from the signed release record the moment it arrives; a bad chunk is blamed on
//! the peer that sent it, that peer gets no more requests in this fetch, and the chunk is asked
//! of another provider. Chunks go to a [`ChunkSink`] (`store::download`): memory, or a
//! partial file on disk so that an interrupted fetch resumes with the chunks it already has.
//! What each peer did is reported for reputation.
//!
//! Checking and writing a chunk happen on the blocking pool, several chunks at once, while the
//! network goes on receiving.

mod schedule;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use agora_protocol::ContentId;
use agora_protocol::messages::{FetchRequest, FetchResponse, Refusal};
use agora_protocol::records::ArchiveInfo;
use futures::stream::{BoxStream, FuturesUnordered, StreamExt};
use libp2p::PeerId;
use tracing::{Instrument, debug, warn};

use crate::network::NetworkHandle;
pub use crate::store::download::{ChunkSink, DownloadError, FileSink, MemorySink, ProgressFn};
use schedule::{Pick, Schedule};

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

impl From<DownloadError> for FetchError {
    fn from(DownloadError(e): DownloadError) -> Self {
        Self::Io(e)
    }
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
    let sink =
        Arc::new(FileSink::open(path, info, on_progress).map_err(|e| (e.into(), Vec::new()))?);
    let result = fetch_chunks(net, info, providers, parallel, sink.clone()).await;
    let closing = sink.clone();
    let closed = tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|e| FetchError::Io(format!("closing the download: {e}")))
        .and_then(|closed| closed.map_err(FetchError::from));
    let report = result?;
    match closed {
        Ok(hash) => Ok((report, hash)),
        Err(e) => Err((e, report.outcomes)),
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
            Err(e) => Arrival::SinkFailed(e.into()),
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

/// The fetch loop shared by every sink, asking providers as [`Schedule`] says; a provider
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
    let Providers { known, mut later } = providers;
    let had: Vec<bool> = (0..info.chunks.len() as u32).map(|i| sink.has(i)).collect();
    if had.iter().all(|h| *h) {
        return Ok(Run::resumed(&had));
    }
    // Without the list, every provider proves itself with its first chunk.
    let connected = net.peers().await.unwrap_or_default();
    let mut run = Run::new(Schedule::new(known, &connected, had.clone()), &had);
    let mut in_flight = FuturesUnordered::new();
    let ask = |(index, peer, span): Ask| {
        let sink = sink.clone();
        async move {
            let (arrival, elapsed) = request_chunk(net, info, peer, index, sink).await;
            (index, peer, arrival, elapsed)
        }
        .instrument(span)
    };
    loop {
        let room = parallel.max(1).saturating_sub(in_flight.len());
        match run.next_requests(room, later.is_some(), info.id) {
            Ok(asks) => in_flight.extend(asks.into_iter().map(ask)),
            Err(e) => return Err(run.fail(e)),
        }
        if run.schedule.remaining() == 0 {
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
        match next {
            Next::Arrived(Some((index, peer, arrival, elapsed))) => {
                if let Err(e) = run.arrived(index, peer, arrival, elapsed) {
                    return Err(run.fail(e));
                }
            }
            Next::Arrived(None) => unreachable!("a request was in flight"),
            Next::Found(found) => {
                if found.is_none() {
                    later = None;
                }
                run.found(found);
            }
        }
    }
    Ok(run.finish())
}

/// A chunk to ask of a provider, in that provider's trace span.
type Ask = (u32, PeerId, tracing::Span);

/// One fetch's bookkeeping: the schedule, the chunks waiting to be asked for, what each
/// provider did (for the report, reputation and traces).
struct Run {
    schedule: Schedule,
    /// Chunks to ask for, in order.
    queue: VecDeque<u32>,
    /// Chunks waiting for a provider that has not failed them.
    parked: Vec<u32>,
    report: FetchReport,
    traces: HashMap<PeerId, ProviderTrace>,
}

impl Run {
    fn new(schedule: Schedule, had: &[bool]) -> Self {
        Self {
            schedule,
            queue: (0..had.len() as u32)
                .filter(|i| !had[*i as usize])
                .collect(),
            parked: Vec::new(),
            report: Self::resumed(had),
            traces: HashMap::new(),
        }
    }

    /// The report of a fetch that found `had` in its sink before asking anyone.
    fn resumed(had: &[bool]) -> FetchReport {
        FetchReport {
            resumed_chunks: had.iter().filter(|h| **h).count() as u32,
            ..FetchReport::default()
        }
    }

    /// Up to `room` requests to send now, and, once nothing is left to queue, the endgame's.
    /// Fails when a chunk has no provider left and no search (`searching`) may find one.
    fn next_requests(
        &mut self,
        room: usize,
        searching: bool,
        content: ContentId,
    ) -> Result<Vec<Ask>, FetchError> {
        let mut asks = Vec::new();
        while asks.len() < room {
            let Some(index) = self.queue.pop_front() else {
                break;
            };
            if self.schedule.is_done(index) {
                continue;
            }
            match self.schedule.pick(index) {
                Pick::Ask(peer) => asks.push(self.ask(index, peer)),
                Pick::Wait => {
                    self.queue.push_front(index);
                    break;
                }
                // Another provider still has it in hand: its answer decides.
                Pick::NoneLeft if self.schedule.is_asked(index) => {}
                Pick::NoneLeft if searching => self.parked.push(index),
                Pick::NoneLeft if self.schedule.has_providers() => {
                    return Err(FetchError::ChunkUnavailable { index });
                }
                Pick::NoneLeft => return Err(FetchError::NoProviders(content)),
            }
        }
        if self.queue.is_empty() && self.parked.is_empty() {
            for (index, peer) in self.schedule.endgame() {
                debug!(%peer, index, "asking a provider that has served for a chunk still out");
                asks.push(self.ask(index, peer));
            }
        }
        Ok(asks)
    }

    fn ask(&mut self, index: u32, peer: PeerId) -> Ask {
        self.schedule.sent(index, peer);
        let span = ProviderTrace::of(&mut self.traces, peer).span.clone();
        (index, peer, span)
    }

    /// The provider search found `peer`, or ended (`None`): the parked chunks are queued again.
    fn found(&mut self, peer: Option<PeerId>) {
        match peer {
            Some(peer) if self.schedule.add_provider(peer) => {
                debug!(%peer, "another provider found");
            }
            Some(_) => return,
            None => {}
        }
        self.queue.extend(self.parked.drain(..));
    }

    /// A request ended: the chunk is in, or asked again of someone else and its sender is
    /// charged for it. Fails only when the sink could not store a good chunk.
    fn arrived(
        &mut self,
        index: u32,
        peer: PeerId,
        arrival: Arrival,
        elapsed: std::time::Duration,
    ) -> Result<(), FetchError> {
        self.schedule.returned(index, peer);
        let trace = ProviderTrace::of(&mut self.traces, peer);
        let report = &mut self.report;
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
                self.schedule.served(index, peer);
                report.bytes_fetched += size;
                trace.chunks += 1;
                trace.bytes += size;
                served(report, size);
                match report.served_by.iter_mut().find(|(p, _)| *p == peer) {
                    Some((_, n)) => *n += 1,
                    None => report.served_by.push((peer, 1)),
                }
                return Ok(());
            }
            // Another provider's copy got there first.
            Arrival::Duplicate(size) => {
                self.schedule.duplicate(peer);
                served(report, size as u64);
                return Ok(());
            }
            Arrival::SinkFailed(e) => return Err(e),
            Arrival::BadData => {
                warn!(%peer, index, "chunk failed verification; blaming the sender");
                trace.bad_data = true;
                report.outcomes.push(PeerOutcome::BadData { peer });
            }
            Arrival::Refused(why) => {
                debug!(%peer, index, ?why, "provider refused a chunk");
                trace.failures += 1;
                report.outcomes.push(PeerOutcome::Failed { peer });
            }
            Arrival::Failed(error) => {
                debug!(%peer, index, %error, "chunk request failed");
                trace.failures += 1;
                report.outcomes.push(PeerOutcome::Failed { peer });
            }
        }
        self.schedule.drop_provider(peer);
        self.queue.push_back(index);
        Ok(())
    }

    /// The error a fetch ends with, and what each provider did until then.
    fn fail(self, error: FetchError) -> (FetchError, Vec<PeerOutcome>) {
        (error, self.report.outcomes)
    }

    /// The report of a fetch whose every chunk is in. A provider still asked that served
    /// nothing in this fetch never answered (its chunk came from another): a failure, so that
    /// the next fetch ranks it lower. Not a ban: it may only be slow.
    fn finish(mut self) -> FetchReport {
        let answered: HashSet<PeerId> = self
            .report
            .outcomes
            .iter()
            .filter_map(|o| match o {
                PeerOutcome::Served { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect();
        let unanswered: BTreeSet<PeerId> = self
            .schedule
            .asked()
            .filter(|p| !answered.contains(p))
            .collect();
        for peer in unanswered {
            debug!(%peer, "provider never answered before the fetch ended");
            ProviderTrace::of(&mut self.traces, peer).failures += 1;
            self.report.outcomes.push(PeerOutcome::Failed { peer });
        }
        self.report
    }
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
