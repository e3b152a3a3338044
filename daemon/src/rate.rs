//! Token buckets: how many messages each sender may send, a burst that refills at a rate. The
//! network charges each peer's gossip to one (dropped over it before it is decoded); the
//! catalog charges the records each publishing key may have admitted from gossip (ignored
//! over it). Plain state with the time given: no clock of its own.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// How many messages one sender may send: a bucket of `burst` that refills at `rate` a second.
/// Valid records cost their author nothing to make, and each one admitted costs every node a
/// signature check, a durable write and an index update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GossipRate {
    pub rate: f64,
    pub burst: f64,
}

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
    use libp2p::PeerId;

    use super::*;

    /// Most peers the test's limiter keeps.
    const MAX_GOSSIP_PEERS: usize = 4096;

    #[test]
    fn a_peer_gets_its_burst_then_its_rate() {
        let start = std::time::Instant::now();
        let mut budget = RateLimiter::<PeerId>::new(
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
