//! Chunked, verified fetch of an archive from several providers.
//!
//! Chunks are requested several at a time, spread round-robin over the providers. Each chunk
//! is checked against its SHA-256 from the signed release record the moment it arrives; a
//! bad or failed chunk is blamed on the peer that sent it, that peer gets no more requests in
//! this fetch, and the chunk is asked of another provider. The whole-archive hash is checked
//! before the bytes are returned.

use std::collections::{HashSet, VecDeque};

use agora_protocol::ContentId;
use agora_protocol::messages::{FetchRequest, FetchResponse};
use agora_protocol::records::ArchiveInfo;
use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::PeerId;
use tracing::{debug, warn};

use crate::network::NetworkHandle;

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
}

/// A finished fetch: the bytes, and the peers that misbehaved (for reputation).
#[derive(Debug)]
pub struct Fetched {
    pub data: Vec<u8>,
    pub blamed: Vec<PeerId>,
    /// Chunks received from each provider that delivered any.
    pub served_by: Vec<(PeerId, u32)>,
}

/// Fetches the archive `info` describes from `providers` (in order of preference).
pub async fn fetch_archive(
    net: &NetworkHandle,
    info: &ArchiveInfo,
    providers: &[PeerId],
    parallel: usize,
) -> Result<Fetched, FetchError> {
    if providers.is_empty() {
        return Err(FetchError::NoProviders(info.id));
    }
    let count = info.chunks.len() as u32;
    let mut chunks: Vec<Option<Vec<u8>>> = vec![None; count as usize];
    let mut queue: VecDeque<u32> = (0..count).collect();
    let mut tried: Vec<HashSet<PeerId>> = vec![HashSet::new(); count as usize];
    let mut blamed: HashSet<PeerId> = HashSet::new();
    let mut served: Vec<(PeerId, u32)> = Vec::new();
    let mut next_provider = 0usize;
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
                return Err(FetchError::ChunkUnavailable { index });
            }
            let peer = candidates[next_provider % candidates.len()];
            next_provider = next_provider.wrapping_add(1);
            tried[index as usize].insert(peer);
            let request = FetchRequest {
                content: info.id,
                index,
            };
            in_flight.push(async move { (index, peer, net.send_fetch(peer, request).await) });
        }
        let Some((index, peer, result)) = in_flight.next().await else {
            break;
        };
        let expected_len = info.chunk_range(index).map(|(_, len)| len);
        match result {
            Ok(FetchResponse::Chunk(data))
                if Some(data.len()) == expected_len
                    && ContentId::of(&data) == info.chunks[index as usize] =>
            {
                chunks[index as usize] = Some(data.into_vec());
                match served.iter_mut().find(|(p, _)| *p == peer) {
                    Some((_, n)) => *n += 1,
                    None => served.push((peer, 1)),
                }
            }
            Ok(FetchResponse::Chunk(_)) => {
                warn!(%peer, index, "chunk failed verification; blaming the sender");
                blamed.insert(peer);
                queue.push_back(index);
            }
            Ok(FetchResponse::Refused(why)) => {
                debug!(%peer, index, ?why, "provider refused a chunk");
                queue.push_back(index);
            }
            Err(e) => {
                debug!(%peer, index, error = %e, "chunk request failed");
                queue.push_back(index);
            }
        }
    }

    let mut data = Vec::with_capacity(info.size as usize);
    for (index, chunk) in chunks.into_iter().enumerate() {
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
    Ok(Fetched {
        data,
        blamed: blamed.into_iter().collect(),
        served_by: served,
    })
}
