//! What a node spends on each peer's requests and messages. Plain state, no I/O and no clock
//! of its own: the event loop asks and tells.
//!
//! - [`OpenRequests`]: how many of peers' requests of one protocol a node works on at once,
//!   per peer and in all. A request is open from its arrival until its response is written or
//!   fails; beyond either bound it is answered `Busy` at once, before any work, so that a peer
//!   who sends many large requests and never reads the answers holds at most its share of the
//!   node's memory.
//! - [`RateLimiter`]: how many messages each sender may send, as a token bucket: each peer's
//!   gossip ([`GossipBudget`]), dropped over it before it is decoded; and the records each
//!   publishing key may have admitted from gossip, ignored over it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

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

/// How many messages one sender may send: a bucket of `burst` that refills at `rate` a second.
/// Valid records cost their author nothing to make, and each one admitted costs every node a
/// signature check, a durable write and an index update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GossipRate {
    pub rate: f64,
    pub burst: f64,
}

/// Most peers a [`GossipBudget`] keeps a bucket for.
pub const MAX_GOSSIP_PEERS: usize = 4096;

/// Each sender's bucket, by the time given (no clock of its own). It keeps at most `max`
/// senders; past that, the one heard from longest ago is dropped (it starts again with a full
/// bucket, as a new sender would).
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: GossipRate,
    max: usize,
    buckets: HashMap<K, (f64, Instant)>,
    /// The same senders by when they were last heard from, to find the oldest at once.
    by_time: BTreeSet<(Instant, K)>,
}

/// Each peer's gossip messages.
pub type GossipBudget = RateLimiter<PeerId>;

impl<K: Hash + Ord + Copy> RateLimiter<K> {
    pub fn new(rate: GossipRate, max: usize) -> Self {
        Self {
            rate,
            max,
            buckets: HashMap::new(),
            by_time: BTreeSet::new(),
        }
    }

    /// Takes one from `key`'s bucket at `now`; false if it is empty.
    pub fn take(&mut self, key: K, now: Instant) -> bool {
        let GossipRate { rate, burst } = self.rate;
        let (tokens, at) = match self.buckets.get_mut(&key) {
            Some(entry) => entry,
            None => {
                if self.buckets.len() >= self.max
                    && let Some((_, oldest)) = self.by_time.pop_first()
                {
                    self.buckets.remove(&oldest);
                }
                self.by_time.insert((now, key));
                self.buckets.entry(key).or_insert((burst, now))
            }
        };
        self.by_time.remove(&(*at, key));
        self.by_time.insert((now, key));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets `key` (a peer disconnected).
    pub fn forget(&mut self, key: &K) {
        if let Some((_, at)) = self.buckets.remove(key) {
            self.by_time.remove(&(at, *key));
        }
    }

    /// Senders it keeps a bucket for.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
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
        let mut budget = GossipBudget::new(
            GossipRate {
                rate: 10.0,
                burst: 5.0,
            },
            MAX_GOSSIP_PEERS,
        );
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

    #[test]
    fn past_its_bound_the_sender_heard_from_longest_ago_is_dropped() {
        let start = std::time::Instant::now();
        let at = |ms: u64| start + std::time::Duration::from_millis(ms);
        let rate = GossipRate {
            rate: 0.0,
            burst: 2.0,
        };
        let mut budget = RateLimiter::new(rate, 3);
        for (key, ms) in [(1u8, 0), (2, 1), (3, 2)] {
            assert!(budget.take(key, at(ms)));
        }
        assert!(
            budget.take(1, at(3)),
            "1 heard from again: 2 is now the oldest"
        );
        assert!(!budget.take(1, at(4)), "1 spent its burst");
        assert!(budget.take(4, at(5)), "a fourth sender drops 2");
        assert_eq!(budget.len(), 3);
        assert!(!budget.take(1, at(6)), "1 was kept, still spent");
        assert!(
            budget.take(2, at(7)) && budget.take(2, at(7)),
            "2 starts again in full"
        );
        assert!(budget.take(4, at(8)), "4 was kept, one left");
        assert!(!budget.take(4, at(8)));
    }
}
