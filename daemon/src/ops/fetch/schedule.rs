//! Which provider is asked for which chunk: plain state, tested without a network.

use std::collections::{HashMap, HashSet};

use libp2p::PeerId;

/// Which provider is asked for which chunk. Providers are taken round-robin, best first,
/// never twice for one chunk, and none again in this fetch once it has sent bad data,
/// refused or failed a request. A provider not known to be reachable (not connected when the
/// fetch started and no chunk served yet) is asked for one chunk at a time, so that a
/// departed peer whose provider record outlives it holds up one chunk rather than a share of
/// them; once nothing else is left to ask, a chunk held only by such a provider is also asked
/// of one that has served, and whichever answers first is kept.
pub(super) struct Schedule {
    providers: Vec<PeerId>,
    /// Connected when the fetch started, or served a chunk in it.
    proven: HashSet<PeerId>,
    dropped: HashSet<PeerId>,
    /// Providers ever asked for each chunk.
    tried: Vec<HashSet<PeerId>>,
    /// Providers being asked for a chunk now.
    asking: HashMap<u32, Vec<PeerId>>,
    done: Vec<bool>,
    remaining: usize,
    next: usize,
}

/// Whom to ask for a chunk.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pick {
    Ask(PeerId),
    /// Only providers that are busy proving themselves are left: ask once one answers.
    Wait,
    /// Every provider known has been asked for it or dropped.
    NoneLeft,
}

impl Schedule {
    pub(super) fn new(providers: Vec<PeerId>, connected: &[PeerId], done: Vec<bool>) -> Self {
        let proven = providers
            .iter()
            .filter(|p| connected.contains(p))
            .copied()
            .collect();
        Self {
            providers,
            proven,
            dropped: HashSet::new(),
            tried: vec![HashSet::new(); done.len()],
            asking: HashMap::new(),
            remaining: done.iter().filter(|d| !**d).count(),
            done,
            next: 0,
        }
    }

    pub(super) fn add_provider(&mut self, peer: PeerId) -> bool {
        let new = !self.providers.contains(&peer);
        if new {
            self.providers.push(peer);
        }
        new
    }

    /// Whether `peer` may be asked for another chunk now.
    pub(super) fn ready(&self, peer: &PeerId) -> bool {
        self.proven.contains(peer) || !self.asking.values().any(|asked| asked.contains(peer))
    }

    pub(super) fn pick(&mut self, index: u32) -> Pick {
        let tried = &self.tried[index as usize];
        let eligible: Vec<PeerId> = self
            .providers
            .iter()
            .filter(|p| !self.dropped.contains(p) && !tried.contains(p))
            .copied()
            .collect();
        let ready: Vec<PeerId> = eligible.iter().filter(|p| self.ready(p)).copied().collect();
        if ready.is_empty() {
            return if eligible.is_empty() {
                Pick::NoneLeft
            } else {
                Pick::Wait
            };
        }
        let peer = ready[self.next % ready.len()];
        self.next = self.next.wrapping_add(1);
        Pick::Ask(peer)
    }

    pub(super) fn sent(&mut self, index: u32, peer: PeerId) {
        self.tried[index as usize].insert(peer);
        self.asking.entry(index).or_default().push(peer);
    }

    /// A request ended, however it went.
    pub(super) fn returned(&mut self, index: u32, peer: PeerId) {
        if let Some(asked) = self.asking.get_mut(&index) {
            asked.retain(|p| *p != peer);
            if asked.is_empty() {
                self.asking.remove(&index);
            }
        }
    }

    /// `peer` served chunk `index` (first, or after another provider did).
    pub(super) fn served(&mut self, index: u32, peer: PeerId) {
        self.proven.insert(peer);
        if !std::mem::replace(&mut self.done[index as usize], true) {
            self.remaining -= 1;
        }
    }

    /// `peer` sent a good copy of a chunk another provider's copy is stored from: it is
    /// proven, and the chunk is done when that other arrival is counted (it is in flight:
    /// its copy won the race to the sink), so the report credits the provider stored from.
    pub(super) fn duplicate(&mut self, peer: PeerId) {
        self.proven.insert(peer);
    }

    pub(super) fn drop_provider(&mut self, peer: PeerId) {
        self.dropped.insert(peer);
    }

    /// Chunks not in yet.
    pub(super) fn remaining(&self) -> usize {
        self.remaining
    }

    /// Whether any provider is known.
    pub(super) fn has_providers(&self) -> bool {
        !self.providers.is_empty()
    }

    /// The providers being asked for a chunk now, once per chunk.
    pub(super) fn asked(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.asking.values().flatten().copied()
    }

    pub(super) fn is_done(&self, index: u32) -> bool {
        self.done[index as usize]
    }

    pub(super) fn is_asked(&self, index: u32) -> bool {
        self.asking.contains_key(&index)
    }

    /// Chunks asked only of providers not yet proven, each with a proven provider to ask as
    /// well.
    pub(super) fn endgame(&mut self) -> Vec<(u32, PeerId)> {
        let mut also = Vec::new();
        for (index, asked) in &self.asking {
            if asked.iter().any(|p| self.proven.contains(p)) {
                continue;
            }
            let tried = &self.tried[*index as usize];
            if let Some(peer) = self.providers.iter().find(|p| {
                self.proven.contains(p) && !self.dropped.contains(p) && !tried.contains(p)
            }) {
                also.push((*index, *peer));
            }
        }
        also.sort_unstable();
        also
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn a_provider_not_known_to_be_reachable_is_asked_one_chunk_at_a_time() {
        let [far, near] = peers(2)[..] else {
            unreachable!()
        };
        let mut schedule = Schedule::new(vec![far, near], &[near], vec![false; 6]);
        let ask = |s: &mut Schedule, index| {
            let pick = s.pick(index);
            if let Pick::Ask(peer) = pick {
                s.sent(index, peer);
            }
            pick
        };
        assert_eq!(ask(&mut schedule, 0), Pick::Ask(far));
        assert_eq!(ask(&mut schedule, 1), Pick::Ask(near));
        assert_eq!(ask(&mut schedule, 2), Pick::Ask(near));
        // The connected provider fails chunk 1: it is asked nothing more, and the other is
        // still proving itself.
        schedule.returned(1, near);
        schedule.drop_provider(near);
        assert_eq!(schedule.pick(1), Pick::Wait);
        assert_eq!(schedule.pick(3), Pick::Wait);
        // Chunk 0 comes: the far provider is proven and takes as many as it is given.
        schedule.returned(0, far);
        schedule.served(0, far);
        assert_eq!(ask(&mut schedule, 1), Pick::Ask(far));
        assert_eq!(ask(&mut schedule, 3), Pick::Ask(far));
        assert_eq!(ask(&mut schedule, 4), Pick::Ask(far));
        // Chunk 2 is still out at the dropped provider; no one else is left for it.
        assert_eq!(schedule.pick(2), Pick::Ask(far));
        schedule.sent(2, far);
        schedule.returned(2, far);
        schedule.drop_provider(far);
        assert_eq!(schedule.pick(2), Pick::NoneLeft);
        assert!(
            schedule.is_asked(2),
            "the dropped provider still has chunk 2 in hand"
        );
        assert_eq!(schedule.remaining, 5);
    }

    #[test]
    fn at_the_end_a_chunk_only_unproven_providers_hold_is_asked_of_a_proven_one() {
        let [far, near, other] = peers(3)[..] else {
            unreachable!()
        };
        let mut schedule = Schedule::new(vec![far, near, other], &[near], vec![false; 4]);
        for (index, peer) in [(0, far), (1, near), (2, near), (3, other)] {
            schedule.sent(index, peer);
        }
        assert_eq!(schedule.endgame(), vec![(0, near), (3, near)]);
        schedule.sent(0, near);
        schedule.sent(3, near);
        assert_eq!(
            schedule.endgame(),
            vec![],
            "each is asked of a proven provider once"
        );
        // Both copies of chunk 0 come, the duplicate's arrival first: the chunk is done
        // when the stored copy's arrival is counted, and once.
        schedule.returned(0, far);
        schedule.duplicate(far);
        assert_eq!(schedule.remaining, 4, "done only with the stored copy");
        schedule.returned(0, near);
        schedule.served(0, near);
        assert_eq!(schedule.remaining, 3);
        assert!(!schedule.is_asked(0));
        // A proven provider already tried for a chunk is not asked again.
        let mut tried = Schedule::new(vec![far, near], &[near], vec![false; 1]);
        tried.sent(0, near);
        tried.returned(0, near);
        tried.sent(0, far);
        assert_eq!(tried.endgame(), vec![]);
    }
}
