//! Records this node refused for good, remembered by id: a sync with a peer that holds them
//! then neither lists, fetches nor verifies them again, and a copy from gossip or the DHT
//! costs no signature check. Two nodes that disagree (one name, two owners) would otherwise
//! redo that work at every sync, forever.
//!
//! Remembered: valid records the trust rules refuse for good with this node's state and
//! policy (a foreign key, a key off the allowlist, a rollback, a broken chain). Not
//! remembered: what may be accepted later (a yank or rotation of a name or version not known
//! yet), and what is invalid (its sender is told so again: gossip rejects it, which costs the
//! sender score). Whatever is admitted for a name forgets that name's refusals: a rotation
//! makes its new owner's records (refused as foreign) acceptable, and a release may chain to a
//! version refused as a rollback before it arrived, which is then history. The store forgets
//! them
//! all when the trust policy changes. Bounded: past [`MAX_REFUSALS`] the oldest is forgotten
//! (forgetting costs one more check, never a wrong decision). Plain state, no I/O.

use std::collections::{BTreeMap, HashMap, HashSet};

use agora_protocol::PackageName;
use agora_protocol::records::RecordId;

/// Most refusals remembered: 64k ids are about 8 MB with their names, and two catalogs
/// rarely disagree on more.
pub const MAX_REFUSALS: usize = 65_536;

/// The refused ids, with their names and the order they were refused in.
#[derive(Debug)]
pub struct Refusals {
    cap: usize,
    by_id: HashMap<RecordId, (PackageName, u64)>,
    by_age: BTreeMap<u64, RecordId>,
    by_name: HashMap<PackageName, HashSet<RecordId>>,
    next: u64,
}

/// What remembering or forgetting changed, for the store.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RefusalChanges {
    pub remembered: Vec<(RecordId, PackageName, u64)>,
    pub forgotten: Vec<RecordId>,
}

impl Refusals {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            by_id: HashMap::new(),
            by_age: BTreeMap::new(),
            by_name: HashMap::new(),
            next: 0,
        }
    }

    /// Refusals as stored: each id with its name and its age (a larger age is younger).
    pub fn load(
        cap: usize,
        stored: impl IntoIterator<Item = (RecordId, PackageName, u64)>,
    ) -> Self {
        let mut r = Self::new(cap);
        for (id, name, age) in stored {
            r.by_age.insert(age, id);
            r.by_name.entry(name.clone()).or_default().insert(id);
            r.by_id.insert(id, (name, age));
            r.next = r.next.max(age + 1);
        }
        r
    }

    pub fn contains(&self, id: &RecordId) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Remembers that `id` (a record of `name`) was refused, forgetting the oldest beyond the
    /// bound.
    pub fn remember(&mut self, id: RecordId, name: &PackageName, changes: &mut RefusalChanges) {
        if self.by_id.contains_key(&id) {
            return;
        }
        let age = self.next;
        self.next += 1;
        self.by_id.insert(id, (name.clone(), age));
        self.by_age.insert(age, id);
        self.by_name.entry(name.clone()).or_default().insert(id);
        changes.remembered.push((id, name.clone(), age));
        while self.by_id.len() > self.cap {
            let (_, oldest) = self.by_age.pop_first().expect("more than cap entries");
            if let Some((name, _)) = self.by_id.remove(&oldest) {
                self.unindex(&name, &oldest);
            }
            changes.remembered.retain(|(id, _, _)| *id != oldest);
            changes.forgotten.push(oldest);
        }
    }

    fn unindex(&mut self, name: &PackageName, id: &RecordId) {
        if let Some(ids) = self.by_name.get_mut(name) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_name.remove(name);
            }
        }
    }

    /// Forgets every refusal of `name` (in time proportional to their number).
    pub fn forget_name(&mut self, name: &PackageName, changes: &mut RefusalChanges) {
        let Some(ids) = self.by_name.remove(name) else {
            return;
        };
        for id in ids {
            if let Some((_, age)) = self.by_id.remove(&id) {
                self.by_age.remove(&age);
            }
            changes.remembered.retain(|(r, _, _)| *r != id);
            changes.forgotten.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_protocol::ContentId;

    use super::*;

    fn id(n: u8) -> RecordId {
        ContentId::of(&[n])
    }

    #[test]
    fn the_oldest_is_forgotten_past_the_bound_and_a_name_forgets_its_own() {
        let (a, b): (PackageName, PackageName) = ("a".parse().unwrap(), "b".parse().unwrap());
        let mut r = Refusals::new(3);
        let mut changes = RefusalChanges::default();
        for (n, name) in [(1, &a), (2, &b), (3, &a)] {
            r.remember(id(n), name, &mut changes);
        }
        r.remember(id(3), &a, &mut changes);
        assert_eq!(r.len(), 3);
        r.remember(id(4), &b, &mut changes);
        assert!(!r.contains(&id(1)) && r.contains(&id(4)));
        assert_eq!(
            changes,
            RefusalChanges {
                remembered: vec![
                    (id(2), b.clone(), 1),
                    (id(3), a.clone(), 2),
                    (id(4), b.clone(), 3)
                ],
                forgotten: vec![id(1)],
            }
        );

        let mut changes = RefusalChanges::default();
        r.forget_name(&b, &mut changes);
        changes.forgotten.sort();
        let mut expected = vec![id(2), id(4)];
        expected.sort();
        assert_eq!(changes.forgotten, expected);
        assert!(r.contains(&id(3)) && !r.contains(&id(2)) && r.len() == 1);

        // Loaded back as stored, the ages go on from the youngest.
        let again = Refusals::load(3, [(id(3), a.clone(), 2)]);
        let mut changes = RefusalChanges::default();
        let mut again = again;
        again.remember(id(5), &a, &mut changes);
        assert_eq!(changes.remembered, vec![(id(5), a, 3)]);
    }
}
