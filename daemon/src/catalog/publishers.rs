//! What each publishing key may have admitted from gossip: its records, and among them the
//! names new to this node, as token buckets. A key over its budget has its records ignored:
//! they are valid and not kept from the catalog for good (catalog sync brings them at its own
//! pace), and the peers that relayed them are not punished for it. A key that sends a thousand
//! heads or new names a second through many relays thus costs each node at most its budget.

use std::time::Instant;

use agora_protocol::PublisherKey;

use crate::rate::{GossipRate, RateLimiter};

/// Most publishing keys a node keeps a budget for (the one heard from longest ago goes first).
pub const MAX_PUBLISHERS: usize = 65_536;

/// The budgets of one publishing key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PublisherRates {
    /// Records and heads of the key admitted from gossip.
    pub records: GossipRate,
    /// Of those, the ones that name a package this node does not know.
    pub new_names: GossipRate,
}

impl Default for PublisherRates {
    /// A publisher releasing a few hundred packages at once passes; a key flooding the network
    /// gets four records a second, one of them a new name.
    fn default() -> Self {
        Self {
            records: GossipRate {
                rate: 4.0,
                burst: 1024.0,
            },
            new_names: GossipRate {
                rate: 1.0,
                burst: 256.0,
            },
        }
    }
}

/// Every publishing key's budgets, by the time given.
#[derive(Debug)]
pub struct PublisherBudget {
    records: RateLimiter<PublisherKey>,
    new_names: RateLimiter<PublisherKey>,
}

impl PublisherBudget {
    pub fn new(rates: PublisherRates) -> Self {
        Self {
            records: RateLimiter::new(rates.records, MAX_PUBLISHERS),
            new_names: RateLimiter::new(rates.new_names, MAX_PUBLISHERS),
        }
    }

    /// Takes one record of `key` (one naming a package new to this node if `new_name`) at
    /// `now`; false if it is over either budget.
    pub fn take(&mut self, key: PublisherKey, new_name: bool, now: Instant) -> bool {
        (!new_name || self.new_names.take(key, now)) && self.records.take(key, now)
    }
}

#[cfg(test)]
mod tests {
    use agora_protocol::PublisherSecret;

    use super::*;

    #[test]
    fn new_names_and_records_each_have_their_budget_per_key() {
        let now = Instant::now();
        let mut budget = PublisherBudget::new(PublisherRates {
            records: GossipRate {
                rate: 0.0,
                burst: 4.0,
            },
            new_names: GossipRate {
                rate: 0.0,
                burst: 2.0,
            },
        });
        let (a, b) = (
            PublisherSecret::from_bytes([1; 32]).public(),
            PublisherSecret::from_bytes([2; 32]).public(),
        );
        let names: Vec<bool> = (0..3).map(|_| budget.take(a, true, now)).collect();
        assert_eq!(names, [true, true, false], "two new names");
        let records: Vec<bool> = (0..3).map(|_| budget.take(a, false, now)).collect();
        assert_eq!(records, [true, true, false], "four records in all");
        assert!(budget.take(b, true, now), "another key has its own budgets");
    }
}
