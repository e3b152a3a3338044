//! What a node spends on each peer's requests and messages. Plain state, no I/O and no clock
//! of its own: the event loop asks and tells.
//!
//! - [`OpenRequests`]: how many of peers' requests of one protocol a node works on at once,
//!   per peer and in all. A request is open from its arrival until its response is written or
//!   fails; beyond either bound it is answered `Busy` at once, before any work, so that a peer
//!   who sends many large requests and never reads the answers holds at most its share of the
//!   node's memory.
//! - [`GossipBudget`]: how many gossip messages each peer may send, a [`RateLimiter`]; a
//!   message over it is dropped before it is decoded.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::time::{Duration, Instant};

use libp2p::PeerId;

pub use crate::rate::{GossipRate, RateLimiter};

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
    /// Each open request's peer, and when it arrived.
    by_id: HashMap<Id, (PeerId, Instant)>,
}

impl<Id: Hash + Eq> OpenRequests<Id> {
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            by_peer: HashMap::new(),
            by_id: HashMap::new(),
        }
    }

    /// Opens request `id` of `peer`, arrived `now`, if both bounds allow it; false means
    /// answer `Busy`.
    pub fn open(&mut self, peer: PeerId, id: Id, now: Instant) -> bool {
        if self.by_id.len() >= self.budget.total {
            return false;
        }
        let count = self.by_peer.entry(peer).or_default();
        if *count >= self.budget.per_peer {
            return false;
        }
        *count += 1;
        self.by_id.insert(id, (peer, now));
        true
    }

    /// Request `id` is answered or failed (an id never opened is ignored).
    pub fn close(&mut self, id: Id) {
        let Some((peer, _)) = self.by_id.remove(&id) else {
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

    /// Open requests that arrived at least `age` before `now`: requests that queue, because
    /// the answers take long to send.
    pub fn older_than(&self, age: Duration, now: Instant) -> usize {
        self.by_id
            .values()
            .filter(|(_, t)| now.duration_since(*t) >= age)
            .count()
    }

    /// Open requests of `peer`.
    pub fn of(&self, peer: &PeerId) -> usize {
        self.by_peer.get(peer).copied().unwrap_or(0)
    }
}

/// Most peers a [`GossipBudget`] keeps a bucket for.
pub const MAX_GOSSIP_PEERS: usize = 4096;

/// Each peer's gossip messages.
pub type GossipBudget = RateLimiter<PeerId>;

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
        let t = Instant::now();
        let later = t + Duration::from_millis(300);
        assert!(open.open(a, 1, t));
        assert!(open.open(a, 2, t));
        assert!(!open.open(a, 3, t), "a's own bound");
        assert!(open.open(b, 4, later));
        assert!(!open.open(c, 5, later), "the total bound");
        assert_eq!(open.older_than(Duration::from_millis(250), later), 2);
        assert_eq!(
            (open.total(), open.of(&a), open.of(&b), open.of(&c)),
            (3, 2, 1, 0)
        );
        open.close(1);
        open.close(1);
        open.close(3);
        assert_eq!((open.total(), open.of(&a)), (2, 1));
        assert!(open.open(c, 6, later));
        assert!(!open.open(a, 7, later), "full again");
        assert_eq!(open.older_than(Duration::from_millis(250), later), 1);
    }
}
