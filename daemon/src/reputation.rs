//! Peer reputation: what each peer did for us (chunks served, failures, bad data, latency) and
//! the score that ranks providers. Plain state with injected time (seconds since the epoch);
//! the registry persists it.

use std::collections::{HashMap, HashSet};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

/// How long a peer that served bad data gets no requests from us.
pub const BAN_SECS: u64 = 10 * 60;
/// Weight of the newest latency sample in the moving average.
pub const LATENCY_ALPHA: f64 = 0.2;
/// Failures one bad chunk counts as: corrupt data is worse than a timeout.
pub const BAD_DATA_PENALTY: u64 = 10;
/// Prior successes and failures every peer starts with (a Laplace prior): a new peer scores
/// 0.5, below a proven one and above a failing one.
const PRIOR_OUTCOMES: f64 = 1.0;

/// What we know about one peer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub successes: u64,
    pub failures: u64,
    pub bad_data: u64,
    pub bytes_served: u64,
    /// Exponentially weighted moving average round trip, in milliseconds.
    pub latency_ms: Option<f64>,
    pub last_seen: u64,
    /// Until when (seconds since the epoch) the peer is banned; 0 if never.
    pub banned_until: u64,
}

impl PeerRecord {
    pub fn banned(&self, now: u64) -> bool {
        self.banned_until > now
    }

    /// Higher is better: the success rate (with a prior of one success and one failure, so a
    /// new peer starts at 0.5), less a little for latency; banned peers rank below everything.
    pub fn score(&self, now: u64) -> f64 {
        if self.banned(now) {
            return f64::NEG_INFINITY;
        }
        let rate = (self.successes as f64 + PRIOR_OUTCOMES)
            / ((self.successes + self.failures) as f64 + 2.0 * PRIOR_OUTCOMES);
        let latency = self.latency_ms.unwrap_or(50.0);
        rate - latency.min(1000.0) / 10_000.0
    }

    fn observe_latency(&mut self, ms: f64) {
        self.latency_ms = Some(match self.latency_ms {
            Some(avg) => avg + LATENCY_ALPHA * (ms - avg),
            None => ms,
        });
    }
}

/// Reputation of every peer we dealt with.
#[derive(Debug, Default)]
pub struct Reputation {
    peers: HashMap<PeerId, PeerRecord>,
    dirty: HashSet<PeerId>,
}

impl Reputation {
    pub fn from_records(records: impl IntoIterator<Item = (PeerId, PeerRecord)>) -> Self {
        Self {
            peers: records.into_iter().collect(),
            dirty: HashSet::new(),
        }
    }

    pub fn get(&self, peer: &PeerId) -> Option<&PeerRecord> {
        self.peers.get(peer)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn entry(&mut self, peer: PeerId, now: u64) -> &mut PeerRecord {
        self.dirty.insert(peer);
        let record = self.peers.entry(peer).or_default();
        record.last_seen = now;
        record
    }

    /// A chunk (or other request) served correctly.
    pub fn success(&mut self, peer: PeerId, bytes: u64, latency_ms: f64, now: u64) {
        let r = self.entry(peer, now);
        r.successes += 1;
        r.bytes_served += bytes;
        r.observe_latency(latency_ms);
    }

    /// A request that timed out, was refused or failed in transport.
    pub fn failure(&mut self, peer: PeerId, now: u64) {
        self.entry(peer, now).failures += 1;
    }

    /// Data that failed verification: heavily penalised and banned for [`BAN_SECS`].
    pub fn bad_data(&mut self, peer: PeerId, now: u64) {
        let r = self.entry(peer, now);
        r.bad_data += 1;
        r.failures += BAD_DATA_PENALTY;
        r.banned_until = now + BAN_SECS;
    }

    /// A ping round trip.
    pub fn rtt(&mut self, peer: PeerId, rtt_ms: f64, now: u64) {
        self.entry(peer, now).observe_latency(rtt_ms);
    }

    pub fn score(&self, peer: &PeerId, now: u64) -> f64 {
        self.peers
            .get(peer)
            .map_or_else(|| PeerRecord::default().score(now), |r| r.score(now))
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &PeerId, now: u64) -> bool {
        self.peers.get(peer).is_some_and(|r| r.banned(now))
    }

    /// `peers` best first, banned peers left out. Ties keep a stable, deterministic order.
    pub fn rank(&self, peers: impl IntoIterator<Item = PeerId>, now: u64) -> Vec<PeerId> {
        let mut scored: Vec<(f64, PeerId)> = peers
            .into_iter()
            .map(|p| (self.score(&p, now), p))
            .filter(|(s, _)| s.is_finite())
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        scored.into_iter().map(|(_, p)| p).collect()
    }

    /// Peers changed since the last call, with their records (to persist).
    pub fn take_dirty(&mut self) -> Vec<(PeerId, PeerRecord)> {
        let mut dirty: Vec<PeerId> = std::mem::take(&mut self.dirty).into_iter().collect();
        dirty.sort();
        dirty
            .into_iter()
            .filter_map(|p| self.peers.get(&p).map(|r| (p, r.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_data_sinks_a_peer_below_everyone_and_bans_it_for_a_while() {
        let (good, new, bad) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut rep = Reputation::default();
        for _ in 0..5 {
            rep.success(good, 1024, 10.0, 100);
            rep.success(bad, 1024, 1.0, 100);
        }
        assert_eq!(rep.rank([new, bad, good], 100)[..2], [bad, good]);
        rep.bad_data(bad, 100);
        assert_eq!(rep.rank([new, bad, good], 100), vec![good, new]);
        assert!(rep.get(&bad).unwrap().banned(100 + BAN_SECS - 1));
        // After the ban it is back, but far below the others.
        assert_eq!(
            rep.rank([bad, new, good], 100 + BAN_SECS),
            vec![good, new, bad]
        );
        assert_eq!(rep.take_dirty().len(), 2);
        assert!(rep.take_dirty().is_empty());
    }

    #[test]
    fn latency_is_a_moving_average() {
        let p = PeerId::random();
        let mut rep = Reputation::default();
        rep.rtt(p, 100.0, 1);
        rep.rtt(p, 200.0, 2);
        assert_eq!(rep.get(&p).unwrap().latency_ms, Some(120.0));
        assert_eq!(rep.get(&p).unwrap().last_seen, 2);
    }
}
