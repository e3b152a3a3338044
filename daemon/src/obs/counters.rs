//! The registry's counters: what it decided, for tests, `agora status` and metrics. Each layer
//! that decides something (the catalog, the workflows) increments its own; they are declared
//! once here so that every one is exported.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares the registry's counters once: each is a field of [`RegistryStats`] and an
/// exported metric named after it, its doc line the metric's help, so none can be left out.
macro_rules! counters {
    ($($(#[doc = $help:literal])+ $name:ident,)*) => {
        /// Counters of what the registry decided, for tests, status and metrics.
        #[derive(Debug, Default)]
        pub struct RegistryStats {
            $($(#[doc = $help])+ pub $name: AtomicU64,)*
        }

        impl RegistryStats {
            /// Every counter: (name, help, value).
            pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((
                    stringify!($name),
                    concat!($($help),+).trim_ascii(),
                    self.$name.load(Ordering::Relaxed),
                ),)*]
            }
        }
    };
}

counters! {
    /// Gossip messages accepted
    gossip_accepted,
    /// Gossip messages rejected as invalid
    gossip_rejected,
    /// Gossip messages ignored (duplicates, valid records this node's rules refuse)
    gossip_ignored,
    /// Records admitted from the DHT
    records_stored,
    /// Records refused from the DHT
    records_refused,
    /// Records refused as rollbacks (a head hiding newer versions)
    rollbacks_refused,
    /// Second records seen for one version (kept as evidence)
    equivocations,
    /// Gossiped records and heads ignored because their key was over its budget
    publisher_over_budget,
    /// Archive chunks served to peers
    chunks_served,
    /// Archive bytes served to peers
    bytes_served,
    /// Archive bytes fetched from peers
    bytes_fetched,
    /// Catalog syncs completed
    syncs_completed,
    /// Record ids peers listed in syncs (what reconciliation cost)
    sync_ids_listed,
    /// Records admitted through sync
    records_synced,
    /// Catalog searches
    searches,
    /// Releases published by this node
    publishes,
    /// Archives fetched from the network (cache misses that succeeded)
    fetches,
    /// Archive requests answered from the local store
    cache_hits,
    /// Archive requests that needed the network
    cache_misses,
    /// Peers banned for serving bad data
    peers_banned,
    /// Archives whose files the disk damaged, dropped and fetched again if kept here
    blobs_damaged,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Each counter is exported under its field's name with its doc line as help, and reads
    /// the field.
    #[test]
    fn every_counter_is_exported_with_its_name_and_help() {
        let stats = RegistryStats::default();
        stats.blobs_damaged.store(7, Ordering::Relaxed);
        let counters = stats.counters();
        assert_eq!(counters.len(), 21);
        assert_eq!(
            counters[0],
            ("gossip_accepted", "Gossip messages accepted", 0)
        );
        assert_eq!(
            counters.last().unwrap(),
            &(
                "blobs_damaged",
                "Archives whose files the disk damaged, dropped and fetched again if kept here",
                7
            )
        );
        let names: HashSet<&str> = counters.iter().map(|c| c.0).collect();
        assert_eq!(names.len(), counters.len(), "each name once");
    }
}
