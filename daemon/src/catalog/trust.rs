//! Trust decisions on verified catalog records: who owns a name (trust on first use, then key
//! rotations), how a name's releases chain, and equivocation (two records for one version).
//! Pure state: no I/O, no clock, no signatures (callers verify first). Fed the same records in
//! the same order it always reaches the same state, which is how the store rebuilds it at
//! start-up; and once a name's first release is known, every order of the rest of its records
//! (with refused ones offered again, as sync does) reaches the same state too, whatever times
//! the signers claim: no verdict depends on a claimed time.
//!
//! A name's releases form a tree along their `previous` links: a release whose predecessor is
//! known must have a higher version than it, and one whose predecessor is not known yet is
//! taken (history, or a DHT lookup of only the newest release) and waits for it. A rotation
//! names the newest release its old key vouches for (`last`): from then on the old key's
//! releases count only if `last` chains to them, and what else the old key signed, whenever it
//! arrived, drops out of the name (retracted) with every equivocation and yank of its time.
use std::collections::{BTreeMap, HashMap, HashSet};

use agora_protocol::records::{
    CatalogRecord, KeyRotation, PackageHead, RecordId, ReleaseRecord, Unyank, Yank,
};
use agora_protocol::{PackageName, PublisherKey, Version, VersionReq};
use litemap::LiteMap;

/// Who may own a name.
#[derive(Clone, Debug, Default)]
pub enum TrustPolicy {
    /// The first valid key seen for a name owns it on this node.
    #[default]
    FirstUse,
    /// Only these keys may own names (first use among them still decides).
    Allowlist(HashSet<PublisherKey>),
}

impl TrustPolicy {
    /// Bytes that differ between two policies that could decide differently: what the store
    /// keeps beside the refusals it decided under this one.
    pub fn fingerprint(&self) -> Vec<u8> {
        match self {
            Self::FirstUse => b"first-use".to_vec(),
            Self::Allowlist(keys) => {
                let mut keys: Vec<&PublisherKey> = keys.iter().collect();
                keys.sort();
                let mut out = b"allowlist:".to_vec();
                for k in keys {
                    out.extend_from_slice(k.as_bytes());
                }
                agora_protocol::ContentId::of(&out).as_bytes().to_vec()
            }
        }
    }
}

/// Why a verified record was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("'{name}' is owned by {owner}, not {signer}")]
    NotOwner {
        name: PackageName,
        owner: PublisherKey,
        signer: PublisherKey,
    },
    #[error("publisher {signer} is not on this node's allowlist")]
    NotAllowed { signer: PublisherKey },
    /// A head that hides versions newer than it lists.
    #[error(
        "the head of '{name}' lists {version} as its newest, but {highest} is the highest version seen"
    )]
    Rollback {
        name: PackageName,
        version: Version,
        highest: Version,
    },
    #[error(
        "{name}@{version} names as its previous release version {previous_version}, which is not older"
    )]
    BrokenChain {
        name: PackageName,
        version: Version,
        previous_version: Version,
    },
    #[error(
        "{name}@{version} builds on a release that the rotation of its old key left out of the name"
    )]
    OffChain { name: PackageName, version: Version },
    #[error(
        "the rotation of '{name}' names as its newest release {last}, which is not part of the name's history"
    )]
    BadAnchor { name: PackageName, last: RecordId },
    #[error("head for '{name}' has seq {seq}; seq {known} is already known")]
    StaleHead {
        name: PackageName,
        seq: u64,
        known: u64,
    },
    #[error("'{name}' is not in the catalog yet")]
    UnknownName { name: PackageName },
    #[error("{name}@{version} is not in the catalog yet")]
    UnknownVersion { name: PackageName, version: Version },
    /// An unyank of a yank not (or no longer) standing: it may come later, or have been undone
    /// already, or a rotation may have dropped it.
    #[error("the yank {yank} of {name}@{version} that this unyank undoes is not standing")]
    UnknownYank {
        name: PackageName,
        version: Version,
        yank: RecordId,
    },
    #[error(
        "release {id} of '{name}', which a rotation names as its newest, is not in the catalog yet"
    )]
    UnknownRelease { name: PackageName, id: RecordId },
}

impl TrustError {
    /// Whether the record may be accepted once more of the catalog is known (it came before
    /// what it refers to): such a refusal is not remembered.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::UnknownName { .. }
                | Self::UnknownVersion { .. }
                | Self::UnknownRelease { .. }
                | Self::UnknownYank { .. }
        )
    }
}

/// What admitting a record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A new release that is now part of the name's history.
    Release,
    /// A second, different record for a version we already have: kept as evidence, and the
    /// version is no longer installable.
    Equivocation { version: Version, first: RecordId },
    /// A yank by the owner.
    Yank,
    /// The owner took back a yank; `yanked` is whether other yanks of the version still stand.
    Unyank { yanked: bool },
    /// Ownership moved to another key; `retracted` are the releases of the name that its
    /// `last` does not chain to, which no longer count.
    Rotation {
        to: PublisherKey,
        retracted: Vec<RecordId>,
    },
}

/// Everything known about one name. A node holds one per name of the catalog, so what most
/// names never have (a past owner, a missing predecessor, a yank, an equivocation) is kept
/// apart, boxed, only by the names that have it: the common state stays small.
#[derive(Clone, Debug)]
pub struct NameState {
    pub owner: PublisherKey,
    /// The first record seen for each version (a sorted vector: most names have a few
    /// versions, and a tree's node would be 800 bytes for one).
    pub releases: LiteMap<Version, RecordId>,
    /// The highest version of the name's releases. It never goes down, but at a rotation that
    /// retracts what the old key released outside the history it vouched for.
    pub highest: Option<Version>,
    /// Sequence number and id of the newest head of the current owner.
    pub head: Option<(u64, RecordId)>,
    /// `None` while all of it is empty.
    history: Option<Box<NameHistory>>,
}

/// The parts of a name's state that few names have.
#[derive(Clone, Debug, Default)]
struct NameHistory {
    /// Keys that owned the name before, oldest first.
    past_owners: Vec<PublisherKey>,
    /// Ids that admitted releases name as their predecessor but that we have not seen.
    expected: HashSet<RecordId>,
    /// The yanks that stand, per version (a version is yanked while it has one).
    yanks: BTreeMap<Version, Vec<YankMark>>,
    /// Versions with more than one record, and every record id seen for them.
    equivocations: BTreeMap<Version, Vec<RecordId>>,
    /// Releases held in the log that a rotation left out of the name.
    retracted: HashSet<RecordId>,
    /// The newest release the last rotation vouched for.
    vouched: Option<RecordId>,
    /// Releases from before the last rotation not yet known to be on the chain it vouched
    /// for, nor to be off it: they count until then.
    undecided: HashSet<RecordId>,
}

/// One standing yank of a version: a yank record, or the rotation that carried the version's
/// yank over to a new key (what an unyank names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YankMark {
    pub id: RecordId,
    /// The yank's reason (empty when its signer gave none, or when a rotation carried it).
    pub reason: String,
}

impl NameState {
    fn new(owner: PublisherKey) -> Self {
        Self {
            owner,
            releases: LiteMap::with_capacity(1),
            highest: None,
            head: None,
            history: None,
        }
    }

    fn history_mut(&mut self) -> &mut NameHistory {
        self.history.get_or_insert_default()
    }

    /// Keys that owned the name before, oldest first.
    pub fn past_owners(&self) -> &[PublisherKey] {
        self.history.as_ref().map_or(&[], |h| &h.past_owners)
    }

    fn is_expected(&self, id: &RecordId) -> bool {
        self.history
            .as_ref()
            .is_some_and(|h| h.expected.contains(id))
    }

    /// Whether a rotation left the release `id` out of the name.
    pub fn is_retracted(&self, id: &RecordId) -> bool {
        self.history
            .as_ref()
            .is_some_and(|h| h.retracted.contains(id))
    }

    pub fn is_yanked(&self, version: &Version) -> bool {
        self.history
            .as_ref()
            .is_some_and(|h| h.yanks.contains_key(version))
    }

    /// The yanks of `version` that stand, oldest admitted first (none: not yanked).
    pub fn yanks(&self, version: &Version) -> &[YankMark] {
        self.history
            .as_ref()
            .and_then(|h| h.yanks.get(version))
            .map_or(&[], Vec::as_slice)
    }

    /// Whether `version` has more than one record.
    pub fn is_equivocated(&self, version: &Version) -> bool {
        self.history
            .as_ref()
            .is_some_and(|h| h.equivocations.contains_key(version))
    }

    /// Every record id seen for `version`, if it has more than one.
    pub fn equivocation(&self, version: &Version) -> Option<&[RecordId]> {
        self.history
            .as_ref()?
            .equivocations
            .get(version)
            .map(Vec::as_slice)
    }

    /// Versions with more than one record, and every record id seen for them (`None`: none).
    pub fn equivocations(&self) -> Option<&BTreeMap<Version, Vec<RecordId>>> {
        self.history
            .as_ref()
            .map(|h| &h.equivocations)
            .filter(|e| !e.is_empty())
    }

    /// Versions yanked, in increasing order.
    pub fn yanked(&self) -> impl Iterator<Item = &Version> {
        self.history.iter().flat_map(|h| h.yanks.keys())
    }

    /// Whether `version` may be chosen by a new resolution.
    pub fn installable(&self, version: &Version) -> bool {
        self.releases.contains_key(version)
            && !self.is_yanked(version)
            && !self.is_equivocated(version)
    }

    /// Whether `version` can be fetched at all (a lockfile may name a yanked version).
    pub fn fetchable(&self, version: &Version) -> bool {
        self.releases.contains_key(version) && !self.is_equivocated(version)
    }

    /// The newest installable version.
    pub fn latest(&self) -> Option<&Version> {
        self.releases.keys().rev().find(|v| self.installable(v))
    }

    /// The newest installable release matching `req`.
    pub fn newest_matching(&self, req: &VersionReq) -> Option<(&Version, &RecordId)> {
        self.releases
            .iter()
            .rev()
            .find(|(v, _)| req.matches(v) && self.installable(v))
    }

    /// The release of the highest version: what a new release or a rotation chains to.
    pub fn tip(&self) -> Option<RecordId> {
        self.highest.as_ref().map(|h| self.releases[h])
    }

    /// Every release id the name holds: one per version, and every record of an equivocated
    /// one.
    fn held(&self) -> HashSet<RecordId> {
        let mut held: HashSet<RecordId> = self.releases.values().copied().collect();
        if let Some(e) = self.equivocations() {
            held.extend(e.values().flatten().copied());
        }
        held
    }
}

/// What the trust rules keep of an admitted release to follow chains.
#[derive(Clone, Debug)]
struct Link {
    version: Version,
    previous: Option<RecordId>,
}

/// The trust state of the whole catalog.
#[derive(Debug, Default)]
pub struct Trust {
    policy: TrustPolicy,
    names: HashMap<PackageName, NameState>,
    /// Version and predecessor of every release that counts, by record id.
    links: HashMap<RecordId, Link>,
}

impl Trust {
    pub fn new(policy: TrustPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Room for `records` releases of `names` names without growing either map (what each
    /// name holds grows as found: how many versions a name has is not known before the replay).
    pub fn with_capacity(policy: TrustPolicy, records: usize, names: usize) -> Self {
        Self {
            policy,
            names: HashMap::with_capacity(names),
            links: HashMap::with_capacity(records),
        }
    }

    pub fn name<Q>(&self, name: &Q) -> Option<&NameState>
    where
        PackageName: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.names.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = (&PackageName, &NameState)> {
        self.names.iter()
    }

    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Decides on a verified record with id `id` that is not yet in the catalog, and applies it
    /// if admitted. A refusal changes nothing.
    pub fn admit(&mut self, record: &CatalogRecord, id: RecordId) -> Result<Admission, TrustError> {
        match record {
            CatalogRecord::Release(r) => self.admit_release(r, id),
            CatalogRecord::Yank(y) => self.admit_yank(y, id),
            CatalogRecord::Rotation(r) => self.admit_rotation(r, id),
            CatalogRecord::Unyank(u) => self.admit_unyank(u),
        }
    }

    /// Whether this node's policy lets `key` own a name it does not know yet.
    pub fn may_own(&self, key: &PublisherKey) -> bool {
        self.allowed(key).is_ok()
    }

    fn allowed(&self, key: &PublisherKey) -> Result<(), TrustError> {
        match &self.policy {
            TrustPolicy::FirstUse => Ok(()),
            TrustPolicy::Allowlist(keys) if keys.contains(key) => Ok(()),
            TrustPolicy::Allowlist(_) => Err(TrustError::NotAllowed { signer: *key }),
        }
    }

    fn admit_release(&mut self, r: &ReleaseRecord, id: RecordId) -> Result<Admission, TrustError> {
        let b = &r.body;
        let Some(state) = self.names.get(&b.name) else {
            self.allowed(&b.publisher)?;
            let mut state = NameState::new(b.publisher);
            Self::extend(&mut state, r, id);
            self.names.insert(b.name.clone(), state);
            self.links.insert(id, Self::link(r));
            return Ok(Admission::Release);
        };
        let not_owner = || TrustError::NotOwner {
            name: b.name.clone(),
            owner: state.owner,
            signer: b.publisher,
        };
        let is_owner = b.publisher == state.owner;
        // A key rotated away speaks for the name only through the history its rotation
        // vouched for (what the name's releases chain back to); anything else it signs, before
        // or after the rotation whatever time it claims, is not the name's.
        let vouched_history = state.past_owners().contains(&b.publisher) && state.is_expected(&id);
        if !(is_owner || vouched_history) {
            return Err(not_owner());
        }
        if let Some(prev) = &b.previous {
            if state.is_retracted(prev) {
                return Err(TrustError::OffChain {
                    name: b.name.clone(),
                    version: b.version.clone(),
                });
            }
            if let Some(link) = self.links.get(prev)
                && link.version >= b.version
            {
                return Err(TrustError::BrokenChain {
                    name: b.name.clone(),
                    version: b.version.clone(),
                    previous_version: link.version.clone(),
                });
            }
        }
        // A second record for a version: from the owner, or on the chain a rotation vouched
        // for (the first one seen may be the new owner's).
        if let Some(&first) = state.releases.get(&b.version) {
            let state = self.names.get_mut(&b.name).expect("looked up above");
            let ids = state
                .history_mut()
                .equivocations
                .entry(b.version.clone())
                .or_insert_with(|| vec![first]);
            ids.push(id);
            if let Some(h) = &mut state.history {
                h.expected.remove(&id);
            }
            self.links.insert(id, Self::link(r));
            self.settle_chain(&b.name);
            // Settling may have retracted the other record (an old key's, off the chain).
            if !self.names[&b.name].is_equivocated(&b.version) {
                return Ok(Admission::Release);
            }
            return Ok(Admission::Equivocation {
                version: b.version.clone(),
                first,
            });
        }
        let state = self.names.get_mut(&b.name).expect("looked up above");
        Self::extend(state, r, id);
        self.links.insert(id, Self::link(r));
        self.settle_chain(&b.name);
        Ok(Admission::Release)
    }

    fn link(r: &ReleaseRecord) -> Link {
        Link {
            version: r.body.version.clone(),
            previous: r.body.previous,
        }
    }

    fn extend(state: &mut NameState, r: &ReleaseRecord, id: RecordId) {
        let b = &r.body;
        if let Some(h) = &mut state.history {
            h.expected.remove(&id);
        }
        if let Some(prev) = b.previous
            && !state.releases.values().any(|known| *known == prev)
        {
            state.history_mut().expected.insert(prev);
        }
        state.releases.insert(b.version.clone(), id);
        if state.highest.as_ref().is_none_or(|h| b.version > *h) {
            state.highest = Some(b.version.clone());
        }
    }

    /// The state of a known name whose current owner is `signer`.
    fn owned_by(
        &mut self,
        name: &PackageName,
        signer: &PublisherKey,
    ) -> Result<&mut NameState, TrustError> {
        let state = self
            .names
            .get_mut(name)
            .ok_or_else(|| TrustError::UnknownName { name: name.clone() })?;
        if *signer != state.owner {
            return Err(TrustError::NotOwner {
                name: name.clone(),
                owner: state.owner,
                signer: *signer,
            });
        }
        Ok(state)
    }

    fn admit_yank(&mut self, y: &Yank, id: RecordId) -> Result<Admission, TrustError> {
        let b = &y.body;
        let state = self.owned_by(&b.name, &b.publisher)?;
        // A yank of a version nobody published would be kept forever for nothing.
        if !state.releases.contains_key(&b.version) {
            return Err(TrustError::UnknownVersion {
                name: b.name.clone(),
                version: b.version.clone(),
            });
        }
        state
            .history_mut()
            .yanks
            .entry(b.version.clone())
            .or_default()
            .push(YankMark {
                id,
                reason: b.reason.clone(),
            });
        Ok(Admission::Yank)
    }

    fn admit_unyank(&mut self, u: &Unyank) -> Result<Admission, TrustError> {
        let b = &u.body;
        let state = self.owned_by(&b.name, &b.publisher)?;
        let unknown = || TrustError::UnknownYank {
            name: b.name.clone(),
            version: b.version.clone(),
            yank: b.undoes,
        };
        let h = state.history.as_deref_mut().ok_or_else(unknown)?;
        let marks = h.yanks.get_mut(&b.version).ok_or_else(unknown)?;
        let at = marks
            .iter()
            .position(|m| m.id == b.undoes)
            .ok_or_else(unknown)?;
        marks.remove(at);
        let yanked = !marks.is_empty();
        if !yanked {
            h.yanks.remove(&b.version);
        }
        Ok(Admission::Unyank { yanked })
    }

    fn admit_rotation(&mut self, r: &KeyRotation, id: RecordId) -> Result<Admission, TrustError> {
        let b = &r.body;
        self.allowed(&b.to)?;
        // Before any release: taking it would make the releases of the key it rotates from
        // (which arrive later) a past owner's, refused; it comes again by sync.
        let state = self
            .names
            .get(&b.name)
            .ok_or_else(|| TrustError::UnknownName {
                name: b.name.clone(),
            })?;
        if state.owner != b.from {
            return Err(TrustError::NotOwner {
                name: b.name.clone(),
                owner: state.owner,
                signer: b.from,
            });
        }
        let held = state.held();
        if !held.contains(&b.last) {
            if state.is_retracted(&b.last) || self.links.contains_key(&b.last) {
                return Err(TrustError::BadAnchor {
                    name: b.name.clone(),
                    last: b.last,
                });
            }
            return Err(TrustError::UnknownRelease {
                name: b.name.clone(),
                id: b.last,
            });
        }
        let state = self.names.get_mut(&b.name).expect("looked up above");
        state.head = None;
        state.owner = b.to;
        let h = state.history_mut();
        h.past_owners.push(b.from);
        h.yanks = b
            .yanked
            .iter()
            .map(|v| {
                let carried = YankMark {
                    id,
                    reason: String::new(),
                };
                (v.clone(), vec![carried])
            })
            .collect();
        // Until the chain from `last` is known to its start, what it reaches is undecided.
        h.vouched = Some(b.last);
        h.undecided = held;
        h.expected.clear();
        let retracted = self.settle_chain(&b.name);
        Ok(Admission::Rotation {
            to: b.to,
            retracted,
        })
    }

    /// Decides what it can of the history the last rotation vouched for, walking down the
    /// chain from its `last`: an undecided release on the chain counts for good; one that
    /// cannot be on it (the chain is known to its start, or only lower versions remain below
    /// what is known) is retracted. Returns the releases retracted, in id order.
    fn settle_chain(&mut self, name: &PackageName) -> Vec<RecordId> {
        let Some(state) = self.names.get_mut(name) else {
            return Vec::new();
        };
        let Some(h) = state.history.as_deref_mut() else {
            return Vec::new();
        };
        let Some(vouched) = h.vouched.filter(|_| !h.undecided.is_empty()) else {
            return Vec::new();
        };
        let mut held: HashSet<RecordId> = state.releases.values().copied().collect();
        held.extend(h.equivocations.values().flatten().copied());
        let mut on_chain = HashSet::new();
        let mut lowest: Option<&Version> = None;
        let mut at = Some(vouched);
        let complete = loop {
            match at {
                None => break true,
                Some(id) if held.contains(&id) => {
                    let link = &self.links[&id];
                    on_chain.insert(id);
                    lowest = Some(&link.version);
                    at = link.previous;
                }
                Some(gap) => {
                    h.expected.insert(gap);
                    break false;
                }
            }
        };
        let mut retracted = Vec::new();
        h.undecided.retain(|id| {
            if on_chain.contains(id) {
                return false;
            }
            let off = complete || lowest.is_some_and(|low| self.links[id].version >= *low);
            if off {
                retracted.push(*id);
            }
            !off
        });
        if retracted.is_empty() {
            return retracted;
        }
        retracted.sort_unstable();
        h.retracted.extend(retracted.iter().copied());
        // What the name holds now, one id per version (the chain's where there is one) and
        // every id of a version that still has several.
        let mut by_version: BTreeMap<Version, Vec<RecordId>> = BTreeMap::new();
        for id in held.iter().filter(|id| !h.retracted.contains(id)) {
            by_version
                .entry(self.links[id].version.clone())
                .or_default()
                .push(*id);
        }
        h.equivocations.clear();
        let mut releases = LiteMap::with_capacity(by_version.len());
        for (version, mut ids) in by_version {
            ids.sort_unstable();
            let first = ids
                .iter()
                .find(|id| on_chain.contains(id))
                .unwrap_or(&ids[0]);
            releases.insert(version.clone(), *first);
            if ids.len() > 1 {
                h.equivocations.insert(version, ids);
            }
        }
        state.releases = releases;
        state.highest = state.releases.last().map(|(v, _)| v.clone());
        for id in &retracted {
            self.links.remove(id);
        }
        retracted
    }

    /// Decides on a verified package head: it must come from the owner, move `seq` forward and
    /// not hide versions newer than it lists. Applies it if accepted; `Ok(false)` means it is
    /// the head we already have (a DHT republish).
    pub fn admit_head(&mut self, head: &PackageHead) -> Result<bool, TrustError> {
        let b = &head.body;
        let id = head.id();
        let state = self.owned_by(&b.name, &b.owner)?;
        if let Some((known, known_id)) = state.head {
            if known_id == id {
                return Ok(false);
            }
            if b.seq <= known {
                return Err(TrustError::StaleHead {
                    name: b.name.clone(),
                    seq: b.seq,
                    known,
                });
            }
        }
        let newest = b.versions.last().expect("a checked head lists a version");
        if let Some(highest) = &state.highest
            && newest < highest
        {
            return Err(TrustError::Rollback {
                name: b.name.clone(),
                version: newest.clone(),
                highest: highest.clone(),
            });
        }
        state.head = Some((b.seq, id));
        Ok(true)
    }
}

/// Sort key that puts a batch of records in an order the trust rules accept: by name, then by
/// the time the signer claims, with rotations before releases of the same instant, then yanks,
/// then unyanks. Honest history replays cleanly in this order whatever order it arrived in.
pub fn replay_order(record: &CatalogRecord) -> (PackageName, u64, u8, Option<Version>) {
    let (kind, version) = match record {
        CatalogRecord::Rotation(_) => (0, None),
        CatalogRecord::Release(r) => (1, Some(r.body.version.clone())),
        CatalogRecord::Yank(_) => (2, None),
        CatalogRecord::Unyank(_) => (3, None),
    };
    (record.name().clone(), record.made_at(), kind, version)
}

#[cfg(test)]
mod tests;
