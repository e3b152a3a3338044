//! Trust decisions on verified catalog records: who owns a name (trust on first use, then key
//! rotations), whether a release moves the name forward (no rollback), and equivocation (two
//! records for one version). Pure state: no I/O, no clock, no signatures (callers verify
//! first). Fed the same records in the same order it always reaches the same state, which is
//! how the store rebuilds it at start-up.
//!
//! Versions of a name must increase along its publisher's hash chain (`ReleaseBody::previous`).
//! A release below the highest version seen is history and is admitted only if a known release
//! points to it through that chain; anything else below the highest is a rollback. A consequence
//! worth knowing: a publisher cannot release 1.0.1 after 2.0.0 of the same name.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use agora_protocol::records::{
    CatalogRecord, KeyRotation, PackageHead, RecordId, ReleaseRecord, Yank,
};
use agora_protocol::{PackageName, PublisherKey, Version};
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
    #[error(
        "{name}@{version} is older than {highest}, the highest version seen, and no known release chains to it"
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
}

impl TrustError {
    /// Whether the record may be accepted once more of the catalog is known (it came before
    /// what it refers to): such a refusal is not remembered.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::UnknownName { .. } | Self::UnknownVersion { .. })
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
    /// Ownership moved to another key.
    Rotation { to: PublisherKey },
}

/// Everything known about one name. A node holds one per name of the catalog, so what most
/// names never have (a past owner, a missing predecessor, a yank, an equivocation) is kept
/// apart, boxed, only by the names that have it: 152 bytes a name instead of 264.
#[derive(Clone, Debug)]
pub struct NameState {
    pub owner: PublisherKey,
    /// The first record seen for each version (a sorted vector: most names have a few
    /// versions, and a tree's node would be 800 bytes for one).
    pub releases: LiteMap<Version, RecordId>,
    /// The highest version ever admitted; it never goes down.
    pub highest: Option<Version>,
    /// Sequence number and id of the newest head admitted.
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
    yanked: BTreeSet<Version>,
    /// Versions with more than one record, and every record id seen for them.
    equivocations: BTreeMap<Version, Vec<RecordId>>,
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

    pub fn is_yanked(&self, version: &Version) -> bool {
        self.history
            .as_ref()
            .is_some_and(|h| h.yanked.contains(version))
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
}

/// The trust state of the whole catalog.
#[derive(Debug, Default)]
pub struct Trust {
    policy: TrustPolicy,
    names: HashMap<PackageName, NameState>,
    /// Version of every admitted release, by record id (to check chains).
    versions: HashMap<RecordId, Version>,
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
            versions: HashMap::with_capacity(records),
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
            CatalogRecord::Yank(y) => self.admit_yank(y),
            CatalogRecord::Rotation(r) => self.admit_rotation(r),
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
            self.versions.insert(id, b.version.clone());
            return Ok(Admission::Release);
        };
        let is_owner = b.publisher == state.owner;
        let was_owner = state.past_owners().contains(&b.publisher);
        if !is_owner && !was_owner {
            return Err(TrustError::NotOwner {
                name: b.name.clone(),
                owner: state.owner,
                signer: b.publisher,
            });
        }
        if let Some(&first) = state.releases.get(&b.version) {
            if !is_owner {
                // A key rotated away has no say over the name any more: a second record from
                // it for a version it once published would make that version uninstallable
                // (lockfile pins included) for whoever holds the key now, lost or stolen.
                return Err(TrustError::NotOwner {
                    name: b.name.clone(),
                    owner: state.owner,
                    signer: b.publisher,
                });
            }
            let state = self.names.get_mut(&b.name).expect("looked up above");
            let ids = state
                .history_mut()
                .equivocations
                .entry(b.version.clone())
                .or_insert_with(|| vec![first]);
            ids.push(id);
            return Ok(Admission::Equivocation {
                version: b.version.clone(),
                first,
            });
        }
        if let Some(prev) = b.previous
            && let Some(prev_version) = self.versions.get(&prev)
            && *prev_version >= b.version
        {
            return Err(TrustError::BrokenChain {
                name: b.name.clone(),
                version: b.version.clone(),
                previous_version: prev_version.clone(),
            });
        }
        let forward = state.highest.as_ref().is_none_or(|h| b.version > *h);
        if forward && !is_owner {
            // A past owner may fill in history, never move the name forward.
            return Err(TrustError::NotOwner {
                name: b.name.clone(),
                owner: state.owner,
                signer: b.publisher,
            });
        }
        if !forward && !state.is_expected(&id) {
            return Err(TrustError::Rollback {
                name: b.name.clone(),
                version: b.version.clone(),
                highest: state
                    .highest
                    .clone()
                    .expect("not forward, so there is a highest"),
            });
        }
        let state = self.names.get_mut(&b.name).expect("looked up above");
        Self::extend(state, r, id);
        self.versions.insert(id, b.version.clone());
        Ok(Admission::Release)
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

    fn admit_yank(&mut self, y: &Yank) -> Result<Admission, TrustError> {
        let b = &y.body;
        let state = self.owned_by(&b.name, &b.publisher)?;
        // A yank of a version nobody published would be kept forever for nothing.
        if !state.releases.contains_key(&b.version) {
            return Err(TrustError::UnknownVersion {
                name: b.name.clone(),
                version: b.version.clone(),
            });
        }
        state.history_mut().yanked.insert(b.version.clone());
        Ok(Admission::Yank)
    }

    fn admit_rotation(&mut self, r: &KeyRotation) -> Result<Admission, TrustError> {
        let b = &r.body;
        self.allowed(&b.to)?;
        match self.names.get_mut(&b.name) {
            // Before any release: taking it would make the releases of the key it rotates
            // from (which arrive later) a past owner's, refused; it comes again by sync.
            None => {
                return Err(TrustError::UnknownName {
                    name: b.name.clone(),
                });
            }
            Some(state) if state.owner == b.from => {
                state.history_mut().past_owners.push(b.from);
                state.owner = b.to;
            }
            Some(state) => {
                return Err(TrustError::NotOwner {
                    name: b.name.clone(),
                    owner: state.owner,
                    signer: b.from,
                });
            }
        }
        Ok(Admission::Rotation { to: b.to })
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
/// the time the signer claims, with rotations before releases of the same instant and yanks
/// last. Honest history replays cleanly in this order whatever order it arrived in.
pub fn replay_order(record: &CatalogRecord) -> (PackageName, u64, u8, Option<Version>) {
    let (kind, version) = match record {
        CatalogRecord::Rotation(_) => (0, None),
        CatalogRecord::Release(r) => (1, Some(r.body.version.clone())),
        CatalogRecord::Yank(_) => (2, None),
    };
    (record.name().clone(), record.made_at(), kind, version)
}

#[cfg(test)]
mod tests {
    use agora_protocol::PublisherSecret;
    use agora_protocol::records::{ArchiveInfo, HeadBody, ReleaseBody, RotationBody, Signed};

    use super::*;

    fn key(seed: u8) -> PublisherSecret {
        PublisherSecret::from_bytes([seed; 32])
    }

    fn release(
        name: &str,
        version: &str,
        previous: Option<RecordId>,
        secret: &PublisherSecret,
        salt: u8,
    ) -> (CatalogRecord, RecordId) {
        let body = ReleaseBody {
            name: name.parse().unwrap(),
            version: version.parse().unwrap(),
            meta: Default::default(),
            dependencies: vec![],
            archive: ArchiveInfo::describe(&[salt; 100], 16 * 1024),
            published_at: 1,
            publisher: secret.public(),
            previous,
        };
        let r = CatalogRecord::Release(Signed::sign(body, secret).unwrap());
        let id = r.id();
        (r, id)
    }

    /// A rotation of `name` from `from` to `to`, with its id.
    fn rotation(
        name: &str,
        from: &PublisherSecret,
        to: &PublisherSecret,
    ) -> (CatalogRecord, RecordId) {
        let r = CatalogRecord::Rotation(
            Signed::sign(
                RotationBody {
                    name: name.parse().unwrap(),
                    from: from.public(),
                    to: to.public(),
                    rotated_at: 2,
                },
                from,
            )
            .unwrap(),
        );
        let id = r.id();
        (r, id)
    }

    fn admit(t: &mut Trust, r: &(CatalogRecord, RecordId)) -> Result<Admission, TrustError> {
        t.admit(&r.0, r.1)
    }

    #[test]
    fn first_key_owns_a_name_until_it_rotates_it_away() {
        let (a, b) = (key(1), key(2));
        let mut t = Trust::default();
        let a1 = release("pkg", "1.0.0", None, &a, 0);
        assert_eq!(admit(&mut t, &a1), Ok(Admission::Release));
        let b2 = release("pkg", "2.0.0", Some(a1.1), &b, 0);
        assert_eq!(
            admit(&mut t, &b2),
            Err(TrustError::NotOwner {
                name: "pkg".parse().unwrap(),
                owner: a.public(),
                signer: b.public(),
            })
        );
        let (rotation, rid) = rotation("pkg", &a, &b);
        assert_eq!(
            t.admit(&rotation, rid),
            Ok(Admission::Rotation { to: b.public() })
        );
        assert_eq!(admit(&mut t, &b2), Ok(Admission::Release));
        // The old owner can no longer move the name forward.
        let a3 = release("pkg", "3.0.0", Some(b2.1), &a, 0);
        assert!(matches!(
            admit(&mut t, &a3),
            Err(TrustError::NotOwner { .. })
        ));
        assert_eq!(t.name("pkg").unwrap().owner, b.public());
    }

    #[test]
    fn an_unchained_older_version_is_a_rollback_but_chained_history_is_welcome() {
        let a = key(1);
        let v1 = release("pkg", "1.0.0", None, &a, 0);
        let v2 = release("pkg", "2.0.0", Some(v1.1), &a, 0);
        let fork = release("pkg", "1.5.0", Some(v1.1), &a, 0);

        // History arriving newest first is accepted through the chain.
        let mut t = Trust::default();
        assert_eq!(admit(&mut t, &v2), Ok(Admission::Release));
        assert_eq!(admit(&mut t, &v1), Ok(Admission::Release));
        let err = admit(&mut t, &fork).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pkg@1.5.0 is older than 2.0.0, the highest version seen, and no known release chains to it"
        );
        let state = t.name("pkg").unwrap();
        assert_eq!(state.releases.len(), 2);
        assert_eq!(state.highest, Some("2.0.0".parse().unwrap()));

        // A release naming a newer one as its predecessor breaks the chain.
        let back = release("pkg", "3.0.0", Some(v2.1), &a, 0);
        assert_eq!(admit(&mut t, &back), Ok(Admission::Release));
        let bad = release("pkg", "2.5.0", Some(back.1), &a, 0);
        assert!(matches!(
            admit(&mut t, &bad),
            Err(TrustError::BrokenChain { .. })
        ));
    }

    #[test]
    fn two_records_for_one_version_are_equivocation_and_not_installable() {
        let a = key(1);
        let mut t = Trust::default();
        let first = release("pkg", "1.0.0", None, &a, 1);
        let second = release("pkg", "1.0.0", None, &a, 2);
        admit(&mut t, &first).unwrap();
        assert_eq!(
            admit(&mut t, &second),
            Ok(Admission::Equivocation {
                version: "1.0.0".parse().unwrap(),
                first: first.1
            })
        );
        let state = t.name("pkg").unwrap();
        let v: Version = "1.0.0".parse().unwrap();
        assert!(!state.installable(&v));
        assert_eq!(state.equivocation(&v), Some(&[first.1, second.1][..]));
        assert_eq!(state.latest(), None);
    }

    #[test]
    fn a_key_rotated_away_can_neither_move_the_name_nor_dispute_its_versions() {
        let (a, b) = (key(1), key(2));
        let mut t = Trust::default();
        let a1 = release("pkg", "1.0.0", None, &a, 0);
        let a2 = release("pkg", "2.0.0", Some(a1.1), &a, 0);
        admit(&mut t, &a1).unwrap();
        admit(&mut t, &a2).unwrap();
        let (rotation, rid) = rotation("pkg", &a, &b);
        t.admit(&rotation, rid).unwrap();
        let b3 = release("pkg", "3.0.0", Some(a2.1), &b, 0);
        assert_eq!(admit(&mut t, &b3), Ok(Admission::Release));
        let not_owner = Err(TrustError::NotOwner {
            name: "pkg".parse().unwrap(),
            owner: b.public(),
            signer: a.public(),
        });
        // Another 3.0 and another 1.0 by the old key, and a newer version by it.
        for forged in [
            release("pkg", "3.0.0", Some(a2.1), &a, 9),
            release("pkg", "1.0.0", None, &a, 9),
            release("pkg", "4.0.0", Some(a2.1), &a, 9),
        ] {
            assert_eq!(admit(&mut t, &forged), not_owner);
        }
        let state = t.name("pkg").unwrap();
        assert_eq!(state.equivocations(), None);
        assert_eq!(state.latest(), Some(&"3.0.0".parse().unwrap()));
        assert!(state.installable(&"1.0.0".parse().unwrap()));
    }

    #[test]
    fn a_yank_of_an_unknown_version_and_a_rotation_of_an_unknown_name_wait_for_their_release() {
        let (a, b) = (key(1), key(2));
        let mut t = Trust::default();
        let (rotation, rid) = rotation("pkg", &a, &b);
        let unknown_name = TrustError::UnknownName {
            name: "pkg".parse().unwrap(),
        };
        assert!(unknown_name.is_transient());
        assert_eq!(t.admit(&rotation, rid), Err(unknown_name));
        assert!(t.name("pkg").is_none(), "nothing pinned");

        let a1 = release("pkg", "1.0.0", None, &a, 0);
        admit(&mut t, &a1).unwrap();
        let yank = |version: &str| {
            CatalogRecord::Yank(
                Signed::sign(
                    agora_protocol::records::YankBody {
                        name: "pkg".parse().unwrap(),
                        version: version.parse().unwrap(),
                        publisher: a.public(),
                        yanked_at: 3,
                        reason: String::new(),
                    },
                    &a,
                )
                .unwrap(),
            )
        };
        let y9 = yank("9.0.0");
        let err = t.admit(&y9, y9.id()).unwrap_err();
        assert_eq!(err.to_string(), "pkg@9.0.0 is not in the catalog yet");
        assert!(err.is_transient());
        let y1 = yank("1.0.0");
        assert_eq!(t.admit(&y1, y1.id()), Ok(Admission::Yank));
        // The rotation, now that the name is known, is taken.
        assert_eq!(
            t.admit(&rotation, rid),
            Ok(Admission::Rotation { to: b.public() })
        );
        assert_eq!(t.name("pkg").unwrap().past_owners(), [a.public()]);
    }

    #[test]
    fn heads_move_forward_only() {
        let a = key(1);
        let mut t = Trust::default();
        let v1 = release("pkg", "1.0.0", None, &a, 0);
        let v2 = release("pkg", "2.0.0", Some(v1.1), &a, 0);
        admit(&mut t, &v1).unwrap();
        admit(&mut t, &v2).unwrap();
        let head = |seq: u64, versions: &[&str]| {
            Signed::sign(
                HeadBody {
                    name: "pkg".parse().unwrap(),
                    owner: a.public(),
                    versions: versions.iter().map(|v| v.parse().unwrap()).collect(),
                    seq,
                    updated_at: seq,
                },
                &a,
            )
            .unwrap()
        };
        let h2 = head(2, &["1.0.0", "2.0.0"]);
        assert_eq!(t.admit_head(&h2), Ok(true));
        assert_eq!(t.admit_head(&h2), Ok(false), "a republish is not news");
        assert!(matches!(
            t.admit_head(&head(1, &["1.0.0"])),
            Err(TrustError::StaleHead {
                seq: 1,
                known: 2,
                ..
            })
        ));
        assert!(matches!(
            t.admit_head(&head(3, &["1.0.0"])),
            Err(TrustError::Rollback { .. })
        ));
    }
}
