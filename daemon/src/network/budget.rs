//! What a node spends on each peer's requests and messages. Plain state, no I/O and no clock
//! of its own: the event loop asks and tells.
//!
//! - [`OpenRequests`]: how many of peers' requests of one protocol a node works on at once,
//!   per peer and in all. A request is open from its arrival until its response is written or
//!   fails; beyond either bound it is answered `Busy` at once, before any work, so that a peer
//!   who sends many large requests and never reads the answers holds at most its share of the
//!   node's memory.
//! - [`UploadSlots`]: how many chunk answers a node writes at once; the rest wait their turn.
//! - [`GossipBudget`]: how many gossip messages each peer may send, a [`RateLimiter`]; a
//!   message over it is dropped before it is decoded.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
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

    /// The peer whose open request `id` is.
    pub fn peer_of(&self, id: &Id) -> Option<PeerId> {
        self.by_id.get(id).map(|(peer, _)| *peer)
    }

    /// Open requests of `peer`.
    pub fn of(&self, peer: &PeerId) -> usize {
        self.by_peer.get(peer).copied().unwrap_or(0)
    }
}

/// Answers being written, at most `slots`, and those waiting for a slot. A node that writes
/// all its chunk answers at once sends each at a share of its link, so that in a crowd none
/// arrives for seconds and nobody has a chunk to pass on; a few at a time, each at the link's
/// full rate, the first are in (and served onwards) in a fraction of that. A freed slot goes
/// to the oldest answer of the peer with the fewest being written: a crowd's fetchers each
/// get a first chunk before any gets a second. An answer written for `stall` or longer no
/// longer holds its slot: a peer that reads slowly, or never, cannot stop the upload (at
/// worst the node writes as many at once as peers ask for, as it would without slots).
#[derive(Debug)]
pub struct UploadSlots<Id, T> {
    slots: usize,
    stall: Duration,
    /// Each answer being written, its peer, and since when.
    writing: Vec<(Id, PeerId, Instant)>,
    waiting: VecDeque<(Id, PeerId, T)>,
}

impl<Id: Eq + Copy, T> UploadSlots<Id, T> {
    pub fn new(slots: usize, stall: Duration) -> Self {
        Self {
            slots: slots.max(1),
            stall,
            writing: Vec::new(),
            waiting: VecDeque::new(),
        }
    }

    /// Slots held at `now`: answers being written for less than `stall`.
    fn held(&self, now: Instant) -> usize {
        self.writing
            .iter()
            .filter(|(_, _, since)| now.duration_since(*since) < self.stall)
            .count()
    }

    /// The answer `item` to `peer`'s request `id`, at `now`: returned to be written now if a
    /// slot is free (the slot is the request's until [`UploadSlots::ended`], or for `stall`),
    /// otherwise kept waiting.
    pub fn admit(&mut self, id: Id, peer: PeerId, item: T, now: Instant) -> Option<T> {
        if self.held(now) < self.slots {
            self.writing.push((id, peer, now));
            Some(item)
        } else {
            self.waiting.push_back((id, peer, item));
            None
        }
    }

    /// Request `id`'s answer is written, or the request failed (ids never admitted are
    /// ignored): its slot, or its place in the wait, is freed. Returns the answers that take
    /// the free slots, to be written now.
    pub fn ended(&mut self, id: Id, now: Instant) -> Vec<(Id, T)> {
        if let Some(pos) = self.waiting.iter().position(|(w, _, _)| *w == id) {
            self.waiting.remove(pos);
            return Vec::new();
        }
        let Some(pos) = self.writing.iter().position(|(w, _, _)| *w == id) else {
            return Vec::new();
        };
        self.writing.swap_remove(pos);
        self.start(now)
    }

    /// The waiting answers that take the slots free at `now` (stalled answers free theirs),
    /// to be written now.
    pub fn start(&mut self, now: Instant) -> Vec<(Id, T)> {
        let mut started = Vec::new();
        while self.held(now) < self.slots {
            let writing = |peer: &PeerId| self.writing.iter().filter(|(_, p, _)| p == peer).count();
            let Some(next) =
                (0..self.waiting.len()).min_by_key(|i| (writing(&self.waiting[*i].1), *i))
            else {
                break;
            };
            let Some((id, peer, item)) = self.waiting.remove(next) else {
                break;
            };
            self.writing.push((id, peer, now));
            started.push((id, item));
        }
        started
    }

    /// Answers being written and answers waiting.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.writing.len(), self.waiting.len())
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

    #[test]
    fn answers_beyond_the_slots_wait_and_a_freed_slot_goes_to_the_peer_with_fewest_written() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let t = Instant::now();
        let mut slots = UploadSlots::new(2, Duration::from_secs(2));
        assert_eq!(slots.admit(1, a, "a1", t), Some("a1"));
        assert_eq!(slots.admit(2, a, "a2", t), Some("a2"));
        assert_eq!(slots.admit(3, a, "a3", t), None);
        assert_eq!(slots.admit(4, b, "b1", t), None);
        assert_eq!(slots.admit(5, c, "c1", t), None);
        assert_eq!(slots.admit(6, b, "b2", t), None);
        assert_eq!(slots.len(), (2, 4));
        assert_eq!(slots.ended(9, t), vec![], "never admitted");
        // a still has one answer being written: b's, older than c's, goes first.
        assert_eq!(slots.ended(1, t), vec![(4, "b1")]);
        // A request that fails while it waits gives up its place, not a slot.
        assert_eq!(slots.ended(6, t), vec![]);
        assert_eq!(slots.len(), (2, 2));
        // Written: a2 and b1. b's ends; a still has one, c none: c1 before a3, which is older.
        assert_eq!(slots.ended(4, t), vec![(5, "c1")]);
        assert_eq!(slots.ended(2, t), vec![(3, "a3")]);
        assert_eq!(slots.ended(5, t), vec![]);
        assert_eq!(slots.len(), (1, 0));
        assert_eq!(slots.admit(7, b, "b3", t), Some("b3"));
        assert_eq!(slots.admit(8, b, "b4", t), None);
    }

    #[test]
    fn answers_a_peer_never_reads_give_up_their_slots_once_stalled() {
        let (hostile, honest) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        let stall = Duration::from_secs(2);
        let mut slots = UploadSlots::new(2, stall);
        assert_eq!(slots.admit(1, hostile, 1, t), Some(1));
        assert_eq!(slots.admit(2, hostile, 2, t), Some(2));
        assert_eq!(slots.admit(3, hostile, 3, t), None);
        assert_eq!(slots.admit(4, honest, 4, t), None);
        assert_eq!(slots.start(t + stall / 2), vec![]);
        // Neither of the hostile peer's answers ends; once stalled, their slots go to the
        // waiting answers, the honest peer's (none being written) first.
        let later = t + stall;
        assert_eq!(slots.start(later), vec![(4, 4), (3, 3)]);
        assert_eq!(slots.len(), (4, 0));
        assert_eq!(
            slots.admit(5, honest, 5, later),
            None,
            "two held since `later`"
        );
        assert_eq!(slots.ended(4, later), vec![(5, 5)]);
    }
}
