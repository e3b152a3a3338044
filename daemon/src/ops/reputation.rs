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
/// Most peers remembered. Every peer pinged gets an entry, and peer ids cost nothing to make;
/// past this the one seen longest ago is forgotten (a forgotten peer starts again at the
/// prior, and a ban ends early only for a peer gone longer than every other).
pub const MAX_PEERS: usize = 10_000;

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

/// Reputation of the peers we dealt with, at most `cap` of them.
#[derive(Debug)]
pub struct Reputation {
    cap: usize,
    peers: HashMap<PeerId, PeerRecord>,
    dirty: HashSet<PeerId>,
    /// Forgotten since the last [`take_forgotten`](Self::take_forgotten).
    forgotten: Vec<PeerId>,
}

impl Default for Reputation {
    fn default() -> Self {
        Self::with_cap(MAX_PEERS)
    }
}

impl Reputation {
    pub fn with_cap(cap: usize) -> Self {
        Self {
            cap,
            peers: HashMap::new(),
            dirty: HashSet::new(),
            forgotten: Vec::new(),
        }
    }

    /// Entries as stored; beyond the bound, those seen longest ago are forgotten at once.
    pub fn from_records(records: impl IntoIterator<Item = (PeerId, PeerRecord)>) -> Self {
        let mut r = Self {
            peers: records.into_iter().collect(),
            ..Self::default()
        };
        while r.peers.len() > r.cap {
            r.forget_oldest();
        }
        r
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .peers
            .iter()
            .min_by_key(|(p, r)| (r.last_seen, **p))
            .map(|(p, _)| *p);
        if let Some(p) = oldest {
            self.peers.remove(&p);
            self.dirty.remove(&p);
            self.forgotten.push(p);
        }
    }

    /// Peers forgotten since the last call (to delete from the store).
    pub fn take_forgotten(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.forgotten)
    }

    pub fn get(&self, peer: &PeerId) -> Option<&PeerRecord> {
        self.peers.get(peer)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    fn entry(&mut self, peer: PeerId, now: u64) -> &mut PeerRecord {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.cap {
            self.forget_oldest();
        }
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
    fn past_the_bound_the_peer_seen_longest_ago_is_forgotten() {
        let mut rep = Reputation::with_cap(3);
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for (t, p) in peers.iter().enumerate() {
            rep.rtt(*p, 10.0, 100 + t as u64);
        }
        rep.rtt(peers[0], 10.0, 200); // seen again: now the youngest
        assert!(rep.take_forgotten().is_empty());
        let extra = PeerId::random();
        rep.rtt(extra, 10.0, 300);
        assert_eq!(rep.len(), 3);
        assert_eq!(rep.take_forgotten(), [peers[1]]);
        let mut written: Vec<PeerId> = rep.take_dirty().into_iter().map(|(p, _)| p).collect();
        written.sort();
        let mut expected = vec![peers[0], peers[2], extra];
        expected.sort();
        assert_eq!(written, expected, "only the kept entries are written");
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
