//! Serving an archive to a crowd. A node fetching an archive answers have requests with the
//! chunks it has verified and serves those chunks, read back and checked again; a chunk it
//! lacks is refused at once (`NotFound`), never waited for. A peer that asks what it holds
//! says what it holds itself: it fetches the archive too, and joins this node's fetch as a
//! provider. A node that holds an archive whole offers a crowd of fetchers what it lacks
//! most ([`Seeding`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_protocol::ContentId;
use agora_protocol::messages::{FetchRequest, Have, HaveRequest, HaveResponse, Refusal};
use libp2p::PeerId;
use rand::RngExt;
use tokio::sync::mpsc;
use tracing::debug;

use crate::lock;
use crate::ops::fetch::{ChunkSink, FileSink};

/// Fetchers' news a running fetch has not taken in yet; more is dropped (the next have
/// exchange brings it again).
const NEWS_BUFFER: usize = 64;

/// What a peer that fetches the same archive told this node: who, and the chunks it holds.
pub type FetcherNews = (PeerId, Vec<bool>);

/// The downloads under way, by archive.
#[derive(Default)]
pub(crate) struct Downloads {
    running: Mutex<HashMap<ContentId, Arc<Download>>>,
}

struct Download {
    sink: Arc<FileSink>,
    news: mpsc::Sender<FetcherNews>,
}

/// A download's place among those served from; it is taken away when this is dropped.
pub(crate) struct Serving<'a> {
    downloads: &'a Downloads,
    id: ContentId,
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        lock(&self.downloads.running).remove(&self.id);
    }
}

impl Downloads {
    /// Serves the verified chunks of `sink`'s download from now until the guard is dropped;
    /// the receiver gets what fetchers that ask tell.
    pub(crate) fn serve(&self, sink: Arc<FileSink>) -> (Serving<'_>, mpsc::Receiver<FetcherNews>) {
        let (news, rx) = mpsc::channel(NEWS_BUFFER);
        let id = sink.info().id;
        lock(&self.running).insert(id, Arc::new(Download { sink, news }));
        (
            Serving {
                downloads: self,
                id,
            },
            rx,
        )
    }

    fn get(&self, id: &ContentId) -> Option<Arc<Download>> {
        lock(&self.running).get(id).cloned()
    }

    /// The chunk a peer asks of a download under way, or why not. Blocking (reads the file).
    pub(crate) fn chunk(&self, request: &FetchRequest) -> Result<Vec<u8>, Refusal> {
        let download = self.get(&request.content).ok_or(Refusal::NotFound)?;
        let info = download.sink.info();
        // Cut another way, the chunk asked for is not one this node verified whole.
        if request.chunk_size != info.chunk_size {
            return Err(Refusal::NotFound);
        }
        if request.index as usize >= info.chunks.len() {
            return Err(Refusal::OutOfRange);
        }
        download
            .sink
            .read_chunk(request.index)
            .ok_or(Refusal::NotFound)
    }

    /// The answer to `peer`'s have request about a download under way; what the peer holds
    /// goes to the fetch. `None` if no download of the archive runs.
    pub(crate) fn have(&self, peer: PeerId, request: &HaveRequest) -> Option<HaveResponse> {
        let download = self.get(&request.content)?;
        let info = download.sink.info();
        if request.chunk_size != info.chunk_size || request.chunks as usize != info.chunks.len() {
            return Some(HaveResponse::Refused(Refusal::NotFound));
        }
        let held = match request.have.held(info.chunks.len()) {
            Ok(held) => held,
            Err(error) => {
                debug!(%peer, %error, "a have request's map does not fit the archive");
                return Some(HaveResponse::Refused(Refusal::OutOfRange));
            }
        };
        if download.news.try_send((peer, held)).is_err() {
            debug!(%peer, "a fetcher's news dropped; the fetch is behind");
        }
        Some(HaveResponse::Have(Have::of(&download.sink.held())))
    }
}

/// Answers queued in this node's upload (`NetworkHandle::uploads_queued`) from which a crowd
/// is super-seeded: over a fast link answers leave at once, and every fetcher may take what
/// it likes.
pub(crate) const BUSY_UPLOAD: usize = 2;
/// How long a fetcher's have request counts it among an archive's crowd.
const CROWD_WINDOW: Duration = Duration::from_secs(5);
/// How long a chunk sent to a fetcher is taken to be on its way there.
const ON_THE_WAY: Duration = Duration::from_secs(10);
/// Empty offers after which a fetcher is offered what the crowd holds too: it may not reach
/// the fetchers that hold it.
const PATIENCE: u32 = 30;
/// Most fetchers of one archive a seed keeps track of, and most archives.
const MAX_CROWD: usize = 256;
const MAX_SEEDED: usize = 1024;

/// What a node that holds an archive whole knows of the crowd fetching it: each fetcher's
/// chunks (from its have requests) and when it last sent each chunk. While two or more fetch
/// it at once and its upload is busy, it offers each fetcher one chunk that no fetcher holds and that is not on its
/// way to one, the one it sent least (super-seeding): its upload goes to chunks the crowd
/// lacks, once each, and the crowd copies the rest among itself. A fetcher offered nothing
/// [`PATIENCE`] times in a row is offered what the crowd holds too. A lone fetcher is offered
/// everything.
#[derive(Default)]
pub(crate) struct Seeding {
    archives: Mutex<HashMap<(ContentId, u32), Crowd>>,
}

#[derive(Default)]
struct Crowd {
    fetchers: HashMap<PeerId, Fetcher>,
    /// Each chunk: how often it was sent, and when last.
    sent: Vec<(u32, Option<Instant>)>,
}

struct Fetcher {
    heard: Instant,
    held: Vec<bool>,
    /// Offers with nothing in them, and chunk requests refused, in a row.
    empty_offers: u32,
}

impl Seeding {
    /// What to tell `peer`, which asks what this node (holding the archive whole) has.
    /// `busy`: answers are queued in this node's upload.
    pub(crate) fn offer(&self, peer: PeerId, request: &HaveRequest, busy: bool) -> Have {
        let chunks = request.chunks as usize;
        // A peer that holds it whole, or sends a map that does not fit, is no fetcher.
        let Ok(held) = request.have.held(chunks) else {
            return Have::All;
        };
        if held.iter().all(|h| *h) {
            return Have::All;
        }
        let now = Instant::now();
        let active = |f: &Fetcher| now.duration_since(f.heard) < CROWD_WINDOW;
        let mut archives = lock(&self.archives);
        let key = (request.content, request.chunk_size);
        if !archives.contains_key(&key) && archives.len() >= MAX_SEEDED {
            archives.retain(|_, c| c.fetchers.values().any(active));
            if archives.len() >= MAX_SEEDED {
                return Have::All;
            }
        }
        let crowd = archives.entry(key).or_default();
        if crowd.sent.len() != chunks {
            crowd.sent = vec![(0, None); chunks];
            crowd.fetchers.clear();
        }
        crowd.fetchers.retain(|_, f| active(f));
        let empty_offers = crowd.fetchers.get(&peer).map_or(0, |f| f.empty_offers);
        if crowd.fetchers.contains_key(&peer) || crowd.fetchers.len() < MAX_CROWD {
            crowd.fetchers.insert(
                peer,
                Fetcher {
                    heard: now,
                    held: held.clone(),
                    empty_offers,
                },
            );
        }
        if crowd.fetchers.len() < 2 || !busy {
            return Have::All;
        }
        let patient = empty_offers < PATIENCE;
        let mut rng = rand::rng();
        let mut lacking: Vec<(u32, u64, usize)> = (0..chunks)
            .filter(|c| !held[*c])
            .filter(|c| {
                let held_by_crowd = crowd.fetchers.values().any(|f| f.held[*c]);
                let on_the_way = crowd.sent[*c]
                    .1
                    .is_some_and(|t| now.duration_since(t) < ON_THE_WAY);
                !patient || !(held_by_crowd || on_the_way)
            })
            .map(|c| (crowd.sent[c].0, rng.random::<u64>(), c))
            .collect();
        lacking.sort_unstable();
        let mut offer = vec![false; chunks];
        if let Some((_, _, c)) = lacking.first() {
            offer[*c] = true;
        }
        if let Some(f) = crowd.fetchers.get_mut(&peer) {
            f.empty_offers = match lacking.is_empty() {
                true => f.empty_offers + 1,
                false => 0,
            };
        }
        Have::offer(&offer)
    }

    /// Whether to send `peer` the chunk it asks for, and if so counts it as sent. While a
    /// crowd is super-seeded (`busy`: answers are queued in this node's upload), a chunk the
    /// crowd holds or that is on its way to a fetcher is refused, unless `peer` has been
    /// offered nothing or refused [`PATIENCE`] times in a row.
    pub(crate) fn may_send(&self, peer: PeerId, request: &FetchRequest, busy: bool) -> bool {
        let key = (request.content, request.chunk_size);
        let mut archives = lock(&self.archives);
        let Some(crowd) = archives.get_mut(&key) else {
            return true;
        };
        let index = request.index as usize;
        let now = Instant::now();
        let active = crowd
            .fetchers
            .values()
            .filter(|f| now.duration_since(f.heard) < CROWD_WINDOW)
            .count();
        if busy && active >= 2 && index < crowd.sent.len() {
            let held_by_crowd = crowd
                .fetchers
                .iter()
                .any(|(p, f)| *p != peer && f.held.get(index) == Some(&true));
            let on_the_way = crowd.sent[index]
                .1
                .is_some_and(|t| now.duration_since(t) < ON_THE_WAY);
            if let Some(f) = crowd.fetchers.get_mut(&peer)
                && (held_by_crowd || on_the_way)
                && f.empty_offers < PATIENCE
            {
                f.empty_offers += 1;
                return false;
            }
        }
        if let Some(sent) = crowd.sent.get_mut(index) {
            *sent = (sent.0 + 1, Some(now));
        }
        true
    }
}
