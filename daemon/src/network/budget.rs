//! What a node spends on each peer's requests and messages. Plain state, no I/O and no clock
//! of its own: the event loop asks and tells.
//!
//! - [`OpenRequests`]: how many of peers' requests of one protocol a node works on at once,
//!   per peer and in all. A request is open from its arrival until its response is written or
//!   fails; beyond either bound it is answered `Busy` at once, before any work, so that a peer
//!   who sends many large requests and never reads the answers holds at most its share of the
//!   node's memory.
//! - [`GossipBudget`]: how many gossip messages each peer may send, as a token bucket; what is
//!   over it is dropped before it is decoded.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use libp2p::PeerId;

/// The bounds of one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Open requests one peer may have.
    pub per_peer: usize,
    /// Open requests of all peers together.
    pub total: usize,
}

/// Peers' open requests of one protocol, by request id (libp2p's `InboundRequestId`).
#[derive(Debug)]
pub struct OpenRequests<Id> {
    budget: Budget,
    by_peer: HashMap<PeerId, usize>,
    by_id: HashMap<Id, PeerId>,
}

impl<Id: Hash + Eq> OpenRequests<Id> {
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            by_peer: HashMap::new(),
            by_id: HashMap::new(),
        }
    }

    /// Opens request `id` of `peer` if both bounds allow it; false means answer `Busy`.
    pub fn open(&mut self, peer: PeerId, id: Id) -> bool {
        if self.by_id.len() >= self.budget.total {
            return false;
        }
        let count = self.by_peer.entry(peer).or_default();
        if *count >= self.budget.per_peer {
            return false;
        }
        *count += 1;
        self.by_id.insert(id, peer);
        true
    }

    /// Request `id` is answered or failed (an id never opened is ignored).
    pub fn close(&mut self, id: Id) {
        let Some(peer) = self.by_id.remove(&id) else {
            return;
        };
        if let Entry::Occupied(mut e) = self.by_peer.entry(peer) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// Open requests of all peers.
    pub fn total(&self) -> usize {
        self.by_id.len()
    }

    /// Open requests of `peer`.
    pub fn of(&self, peer: &PeerId) -> usize {
        self.by_peer.get(peer).copied().unwrap_or(0)
    }
}

/// How many gossip messages one peer may send us: a bucket of `burst` that refills at `rate`
/// a second. Valid records cost their author nothing to make, and each one admitted costs
/// every node a signature check, a durable write and an index update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GossipRate {
    pub rate: f64,
    pub burst: f64,
}

/// Most peers a [`GossipBudget`] keeps a bucket for; past it, the one heard from longest ago
/// is dropped (it starts again with a full bucket, as a new peer would).
const MAX_GOSSIP_PEERS: usize = 4096;

/// Each peer's bucket of gossip messages, by the time given (no clock of its own).
#[derive(Debug)]
pub struct GossipBudget {
    rate: GossipRate,
    buckets: HashMap<PeerId, (f64, std::time::Instant)>,
}

impl GossipBudget {
    pub fn new(rate: GossipRate) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Takes one message from `peer`'s bucket at `now`; false if it is empty.
    pub fn take(&mut self, peer: PeerId, now: std::time::Instant) -> bool {
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= MAX_GOSSIP_PEERS {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(p, _)| *p);
            if let Some(p) = oldest {
                self.buckets.remove(&p);
            }
        }
        let GossipRate { rate, burst } = self.rate;
        let (tokens, at) = self.buckets.entry(peer).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets `peer` (it disconnected).
    pub fn forget(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_refuses_beyond_itself_and_a_close_frees_one_place() {
        let mut open = OpenRequests::new(Budget {
            per_peer: 2,
            total: 3,
        });
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        assert!(open.open(a, 1));
        assert!(open.open(a, 2));
        assert!(!open.open(a, 3), "a's own bound");
        assert!(open.open(b, 4));
        assert!(!open.open(c, 5), "the total bound");
        assert_eq!(
            (open.total(), open.of(&a), open.of(&b), open.of(&c)),
            (3, 2, 1, 0)
        );
        open.close(1);
        open.close(1);
        open.close(3);
        assert_eq!((open.total(), open.of(&a)), (2, 1));
        assert!(open.open(c, 6));
        assert!(!open.open(a, 7), "full again");
    }

    #[test]
    fn a_peer_gets_its_burst_then_its_rate() {
        let start = std::time::Instant::now();
        let mut budget = GossipBudget::new(GossipRate {
            rate: 10.0,
            burst: 5.0,
        });
        let (a, b) = (PeerId::random(), PeerId::random());
        let taken = (0..8).filter(|_| budget.take(a, start)).count();
        assert_eq!(taken, 5, "the burst");
        assert!(budget.take(b, start), "another peer has its own bucket");
        let later = start + std::time::Duration::from_millis(350);
        let taken = (0..8).filter(|_| budget.take(a, later)).count();
        assert_eq!(taken, 3, "0.35 s at 10 a second");
        let much_later = start + std::time::Duration::from_secs(60);
        let taken = (0..8).filter(|_| budget.take(a, much_later)).count();
        assert_eq!(taken, 5, "refilled to the burst, no further");
        budget.forget(&a);
        let taken = (0..8).filter(|_| budget.take(a, much_later)).count();
        assert_eq!(taken, 5, "forgotten: a new bucket");
    }
}
