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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::ContentId;
use agora_protocol::messages::{
    FetchRequest, FetchResponse, Have, HaveRequest, HaveResponse, Refusal,
};
use agora_protocol::records::ArchiveInfo;
use futures::stream::{BoxStream, FuturesUnordered, StreamExt};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, warn};

use crate::network::{NetworkError, NetworkHandle};
pub use crate::store::download::{
    ChunkSink, DownloadError, Downloaded, FileSink, MemorySink, ProgressFn,
};
use schedule::{Holds, Schedule};

/// Bytes a fetch asks for at once across all providers: keeps a fast link busy while
/// answers wait their turn for the serving node's upload slots.
const BYTES_IN_FLIGHT: u64 = 8 * 1024 * 1024;
/// Fewest and most chunk requests a fetch has out at once. The most is a serving node's
/// budget of open fetch requests per peer, so a fetch from one seed is never refused for
/// asking too much.
const PARALLEL_CHUNKS: (usize, usize) = (8, 16);

/// Chunk requests a fetch of an archive cut into `chunk_size` pieces has out at once.
pub fn parallel_for(chunk_size: u32) -> usize {
    let chunks = BYTES_IN_FLIGHT / u64::from(chunk_size.max(1));
    (chunks as usize).clamp(PARALLEL_CHUNKS.0, PARALLEL_CHUNKS.1)
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("no provider is known for {0}")]
    NoProviders(ContentId),
    #[error(
        "{} of {chunks} chunks could not be fetched ({}): every provider failed, sent bad data or lacks them",
        .missing.len(),
        list_chunks(.missing)
    )]
    ChunksUnavailable { missing: Vec<u32>, chunks: u32 },
    #[error("assembled archive hashes to {got}, the record says {expected}")]
    ArchiveMismatch { expected: ContentId, got: ContentId },
    #[error("writing the download: {0}")]
    Io(String),
}

/// Chunk numbers for a message: the first 16, and how many more.
fn list_chunks(missing: &[u32]) -> String {
    let shown: Vec<String> = missing.iter().take(16).map(u32::to_string).collect();
    match missing.len().saturating_sub(16) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
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
        data.extend_from_slice(&chunk.ok_or_else(|| FetchError::ChunksUnavailable {
            missing: vec![index as u32],
            chunks: info.chunks.len() as u32,
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

/// Fetches into `sink`, a partial file (resuming what is in it), and closes it. Returns the
/// report and the whole-archive hash of what the file now holds, if it could be computed on
/// the way (the caller checks it, or hashes the file, when it adopts the file). On failure
/// the outcomes so far are returned too, so that reputation still learns from them.
pub async fn fetch_to_file(
    net: &NetworkHandle,
    info: &ArchiveInfo,
    providers: Providers,
    parallel: usize,
    sink: Arc<FileSink>,
) -> Result<(FetchReport, Option<ContentId>), (FetchError, Vec<PeerOutcome>)> {
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

/// The providers a fetch asks: those known when it starts, best first, those a search that
/// is still running finds later, and fetchers of the same archive that make themselves known.
pub struct Providers {
    pub known: Vec<PeerId>,
    /// Providers found later, each once, ending when the search does.
    pub later: Option<BoxStream<'static, PeerId>>,
    /// Peers that asked this node which chunks it holds, with those they hold: they fetch
    /// the archive too, and serve what they have verified.
    pub fetchers: Option<mpsc::Receiver<(PeerId, Vec<bool>)>>,
}

impl Providers {
    /// Just these providers, best first.
    pub fn fixed(known: Vec<PeerId>) -> Self {
        Self {
            known,
            later: None,
            fetchers: None,
        }
    }
}

/// How often the fetch loop looks at the time: have maps to ask again, busy providers to ask
/// again, a stall to give up on.
const TICK: Duration = Duration::from_millis(100);
/// How often a provider that is fetching the archive itself is asked again what it holds.
const HAVE_REFRESH: Duration = Duration::from_millis(500);
/// How long chunks that no provider holds are waited for while other fetchers may still get
/// them (the seed lost mid-crowd), before the fetch fails naming them.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

/// The fetch loop shared by every sink, asking providers as [`Schedule`] says. Each provider
/// is first asked which chunks it holds (telling it which this node holds); a provider found
/// later, or a fetcher that asks us, joins. A chunk no provider holds waits for one found
/// later or for a fetcher to get it (up to [`STALL_LIMIT`]), and is unavailable once neither
/// can happen. The fetch ends when every chunk is in, without waiting for requests still out
/// to providers that never answered.
pub async fn fetch_chunks<S: ChunkSink>(
    net: &NetworkHandle,
    info: &ArchiveInfo,
    providers: Providers,
    parallel: usize,
    sink: Arc<S>,
) -> Result<FetchReport, (FetchError, Vec<PeerOutcome>)> {
    let Providers {
        known,
        mut later,
        mut fetchers,
    } = providers;
    let had: Vec<bool> = (0..info.chunks.len() as u32).map(|i| sink.has(i)).collect();
    if had.iter().all(|h| *h) {
        return Ok(Run::resumed(&had));
    }
    let mut run = Run::new(Schedule::new(had.clone()), &had);
    let mut chunks_out = FuturesUnordered::new();
    let mut haves_out = FuturesUnordered::new();
    let ask = |(index, peer, span): Ask| {
        let sink = sink.clone();
        async move {
            let (arrival, elapsed) = request_chunk(net, info, peer, index, sink).await;
            (index, peer, arrival, elapsed)
        }
        .instrument(span)
    };
    let ask_have = |peer: PeerId| {
        let request = HaveRequest {
            content: info.id,
            chunk_size: info.chunk_size,
            chunks: info.chunks.len() as u32,
            have: Have::of(&sink.held()),
        };
        async move { (peer, net.send_have(peer, request).await) }
    };
    for peer in known {
        if run.schedule.add_provider(peer) {
            run.have_asked.insert(peer, Instant::now());
            haves_out.push(ask_have(peer));
        }
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = Instant::now();
        let room = parallel.max(1).saturating_sub(chunks_out.len());
        let asks = run.next_requests(room, parallel.max(1), now);
        chunks_out.extend(asks.into_iter().map(ask));
        if run.schedule.remaining() == 0 {
            break;
        }
        if let Err(e) = run.check_stuck(later.is_some(), info, now) {
            return Err(run.fail(e));
        }
        tokio::select! {
            Some((index, peer, arrival, elapsed)) = chunks_out.next(), if !chunks_out.is_empty() => {
                if let Err(e) = run.arrived(index, peer, arrival, elapsed) {
                    return Err(run.fail(e));
                }
            }
            Some((peer, answer)) = haves_out.next(), if !haves_out.is_empty() => {
                run.have_answered(peer, answer, info.chunks.len());
            }
            found = next_found(&mut later), if later.is_some() => match found {
                Some(peer) if run.schedule.add_provider(peer) => {
                    debug!(%peer, "another provider found");
                    run.have_asked.insert(peer, Instant::now());
                    haves_out.push(ask_have(peer));
                }
                Some(_) => {}
                None => later = None,
            },
            news = next_fetcher(&mut fetchers), if fetchers.is_some() => match news {
                Some((peer, held)) => run.fetcher(peer, held),
                None => fetchers = None,
            },
            _ = tick.tick() => {
                for peer in run.haves_due(Instant::now()) {
                    haves_out.push(ask_have(peer));
                }
            }
        }
    }
    Ok(run.finish())
}

async fn next_found(later: &mut Option<BoxStream<'static, PeerId>>) -> Option<PeerId> {
    match later {
        Some(stream) => stream.next().await,
        None => None,
    }
}

async fn next_fetcher(
    fetchers: &mut Option<mpsc::Receiver<(PeerId, Vec<bool>)>>,
) -> Option<(PeerId, Vec<bool>)> {
    match fetchers {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// A chunk to ask of a provider, in that provider's trace span.
type Ask = (u32, PeerId, tracing::Span);

/// One fetch's bookkeeping: the schedule, have requests, what each provider did (for the
/// report, reputation and traces).
struct Run {
    schedule: Schedule,
    /// When each provider's have request was sent, while it is out.
    have_asked: HashMap<PeerId, Instant>,
    /// When each fetcher among the providers was last told to us.
    have_heard: HashMap<PeerId, Instant>,
    /// Since when chunks have been waiting for a fetcher to get them.
    stalled_since: Option<Instant>,
    report: FetchReport,
    traces: HashMap<PeerId, ProviderTrace>,
}

impl Run {
    fn new(schedule: Schedule, had: &[bool]) -> Self {
        Self {
            schedule,
            have_asked: HashMap::new(),
            have_heard: HashMap::new(),
            stalled_since: None,
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

    /// Up to `room` requests to send now, and the endgame's.
    fn next_requests(&mut self, room: usize, parallel: usize, now: Instant) -> Vec<Ask> {
        self.schedule
            .next(room, parallel, now)
            .into_iter()
            .map(|(index, peer)| {
                debug!(%peer, index, "asking for a chunk");
                let span = ProviderTrace::of(&mut self.traces, peer).span.clone();
                (index, peer, span)
            })
            .collect()
    }

    /// Fails when chunks no provider holds can no longer come. While other fetchers are
    /// among the providers, they may still get them: that is waited for up to
    /// [`STALL_LIMIT`], whatever else is awaited. Otherwise only a provider the search
    /// (`searching`) may find or one whose have answer has not come can bring them.
    fn check_stuck(
        &mut self,
        searching: bool,
        info: &ArchiveInfo,
        now: Instant,
    ) -> Result<(), FetchError> {
        let stuck = self.schedule.stuck();
        let fetchers = self.schedule.partial_holders().next().is_some();
        let waiting = searching || self.schedule.unanswered().next().is_some();
        if stuck.is_empty() || (waiting && !fetchers) {
            self.stalled_since = None;
            return Ok(());
        }
        if !self.schedule.has_providers() {
            return Err(FetchError::NoProviders(info.id));
        }
        let unavailable = || FetchError::ChunksUnavailable {
            missing: stuck.clone(),
            chunks: info.chunks.len() as u32,
        };
        if !fetchers {
            return Err(unavailable());
        }
        let since = *self.stalled_since.get_or_insert(now);
        if now.duration_since(since) >= STALL_LIMIT {
            warn!(missing = ?stuck, "no provider left holds these chunks, and no fetcher got them");
            return Err(unavailable());
        }
        Ok(())
    }

    /// A provider answered which chunks it holds (or could not).
    fn have_answered(
        &mut self,
        peer: PeerId,
        answer: Result<HaveResponse, NetworkError>,
        chunks: usize,
    ) {
        self.have_asked.remove(&peer);
        let holds = match answer {
            Ok(HaveResponse::Have(Have::All)) => Ok(Holds::All),
            Ok(HaveResponse::Have(have @ Have::Offer(_))) => have.held(chunks).map(Holds::Offer),
            Ok(HaveResponse::Have(have)) => have.held(chunks).map(Holds::Some),
            // A node from before have maps serves only what it holds whole.
            Err(NetworkError::Unsupported { .. }) => Ok(Holds::All),
            Ok(HaveResponse::Refused(Refusal::Busy)) => {
                self.have_heard.insert(peer, Instant::now());
                return;
            }
            Ok(HaveResponse::Refused(why)) => Err(format!("refused: {why:?}")),
            Err(e) => Err(e.to_string()),
        };
        match holds {
            Ok(holds) => {
                self.have_heard.insert(peer, Instant::now());
                self.schedule.learned(peer, holds);
            }
            Err(error) => {
                debug!(%peer, %error, "provider could not say what it holds");
                ProviderTrace::of(&mut self.traces, peer).failures += 1;
                self.report.outcomes.push(PeerOutcome::Failed { peer });
                self.schedule.drop_provider(peer);
            }
        }
    }

    /// A peer that fetches the archive too told us what it holds.
    fn fetcher(&mut self, peer: PeerId, held: Vec<bool>) {
        self.schedule.fetcher_seen();
        if matches!(
            self.schedule.holds_of(&peer),
            Some(Holds::All | Holds::Offer(_))
        ) {
            return;
        }
        self.have_heard.insert(peer, Instant::now());
        self.schedule.learned(peer, Holds::Some(held));
    }

    /// Fetchers among the providers to ask again what they hold (at once when nothing they
    /// said they hold is left to ask of them), seeds too in a crowd, and busy ones.
    fn haves_due(&mut self, now: Instant) -> Vec<PeerId> {
        let due: Vec<PeerId> = self
            .have_heard
            .iter()
            .filter(|(peer, heard)| {
                let wait = match self.schedule.has_work(peer) {
                    true => HAVE_REFRESH,
                    false => TICK,
                };
                now.duration_since(**heard) >= wait && !self.have_asked.contains_key(peer)
            })
            .map(|(peer, _)| *peer)
            // A seed is asked again in a crowd: it offers each fetcher what the crowd lacks.
            .filter(|peer| {
                let again = match self.schedule.holds_of(peer) {
                    Some(Holds::Some(_) | Holds::Offer(_) | Holds::Unknown) => true,
                    Some(Holds::All) => self.schedule.in_crowd(),
                    None => false,
                };
                again && !self.schedule.is_dropped(peer)
            })
            .collect();
        for peer in &due {
            self.have_heard.remove(peer);
            self.have_asked.insert(*peer, now);
        }
        due
    }

    /// A request ended: the chunk is in, or will be asked again (of someone else unless its
    /// provider was only busy), and a provider that failed is charged for it. Fails only when
    /// the sink could not store a good chunk.
    fn arrived(
        &mut self,
        index: u32,
        peer: PeerId,
        arrival: Arrival,
        elapsed: std::time::Duration,
    ) -> Result<(), FetchError> {
        let now = Instant::now();
        self.schedule.returned(index, peer, now);
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
                debug!(%peer, index, ms = elapsed.as_millis() as u64, "chunk in");
                let size = size as u64;
                self.schedule.served(index, peer, size);
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
                self.schedule.duplicate(peer, size as u64);
                served(report, size as u64);
                return Ok(());
            }
            Arrival::SinkFailed(e) => return Err(e),
            Arrival::Refused(Refusal::Busy) => {
                debug!(%peer, index, "provider busy; asking it again later");
                self.schedule.busy(index, peer, now);
                return Ok(());
            }
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
        Ok(())
    }

    /// The error a fetch ends with, and what each provider did until then.
    fn fail(self, error: FetchError) -> (FetchError, Vec<PeerOutcome>) {
        (error, self.report.outcomes)
    }

    /// The report of a fetch whose every chunk is in. A provider still asked that served
    /// nothing in this fetch, or that never said what it holds, never answered (its chunks
    /// came from others): a failure, so that the next fetch ranks it lower. Not a ban: it
    /// may only be slow.
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
            .chain(self.schedule.unanswered())
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
