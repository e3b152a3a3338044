//! The trust rules as a state machine, tested the way rust-libp2p tests its query iterators:
//! generated histories of several names, each with one chain of keys (releases, rotations,
//! yanks and their undoing, the owner's equivocations, and what rotated-away keys sign
//! afterwards), every record with a claimed time drawn at random, delivered to catalogs in random orders and batches.
//! Every catalog must end in the same state, and the invariants must hold on the way.
//!
//! Which key first claims a name is trust on first use, so by definition decided by arrival:
//! each catalog gets each name's first release before anything else of it (as a node that
//! knew the name from its start), and every order of everything else is fair game. A record
//! refused on the way is offered again until nothing more is admitted, as catalog sync does
//! (a refusal is forgotten whenever its name changes).

use std::collections::{BTreeMap, HashSet};

use agora_protocol::records::{
    ArchiveInfo, CatalogRecord, ReleaseBody, RotationBody, Signed, UnyankBody, YankBody,
};
use agora_protocol::{PublisherKey, PublisherSecret, RecordId, Version};
use proptest::prelude::*;

use super::trust::{Admission, Trust, TrustPolicy, replay_order};

#[derive(Clone, Debug)]
enum Op {
    /// The owner releases the next version on top of the newest.
    Release,
    /// The owner signs a second record for a version of the chain.
    Equivocate(u8),
    Yank(u8),
    /// The owner takes back a standing yank of one of the yanked versions.
    Unyank(u8),
    /// The owner hands the name to the next key of the chain.
    Rotate,
    /// A rotated-away key signs a release: a new highest version, or another record for a
    /// version of the chain.
    Forge {
        higher: bool,
        pick: u8,
        signer: u8,
    },
    /// A rotated-away key yanks a version.
    ForgeYank {
        pick: u8,
        signer: u8,
    },
}

fn op() -> impl Strategy<Value = (Op, u32)> {
    let op = prop_oneof![
        4 => Just(Op::Release),
        1 => any::<u8>().prop_map(Op::Equivocate),
        1 => any::<u8>().prop_map(Op::Yank),
        1 => any::<u8>().prop_map(Op::Unyank),
        2 => Just(Op::Rotate),
        3 => (any::<bool>(), any::<u8>(), any::<u8>())
            .prop_map(|(higher, pick, signer)| Op::Forge { higher, pick, signer }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(pick, signer)| Op::ForgeYank { pick, signer }),
    ];
    // The claimed time: back-dated and future times alike.
    (op, any::<u32>())
}

const KEYS_PER_NAME: u8 = 3;

/// One record of a generated history.
#[derive(Clone, Debug)]
struct Made {
    record: CatalogRecord,
    id: RecordId,
    /// Signed by a key after it was rotated away.
    forged: bool,
}

/// What one name's history holds once generated.
struct History {
    records: Vec<Made>,
    keys: Vec<PublisherKey>,
    /// How many rotations it has.
    epoch: usize,
    /// The owners' chain of releases, oldest first.
    chain: Vec<RecordId>,
    /// What the owners yanked (each rotation hands it on).
    yanked: Vec<Version>,
}

fn history(n: u8, ops: &[(Op, u32)]) -> History {
    let name: agora_protocol::PackageName = format!("pkg-{n}").parse().unwrap();
    let keys: Vec<PublisherSecret> = (0..KEYS_PER_NAME)
        .map(|k| PublisherSecret::from_bytes([n * KEYS_PER_NAME + k + 1; 32]))
        .collect();
    let mut out: Vec<Made> = Vec::new();
    let mut chain: Vec<(Version, RecordId, Option<RecordId>)> = Vec::new();
    let (mut epoch, mut next, mut salt) = (0usize, 1u64, 0u8);
    // The yanks that stand, per version, and every yank id made (a yank signed twice alike
    // is one record).
    let mut yanks: BTreeMap<Version, Vec<RecordId>> = BTreeMap::new();
    let mut yank_ids: HashSet<RecordId> = HashSet::new();
    let push = |out: &mut Vec<Made>, record: CatalogRecord, forged: bool| -> RecordId {
        let id = record.id();
        out.push(Made { record, id, forged });
        id
    };
    let release = |version: Version,
                   previous: Option<RecordId>,
                   key: &PublisherSecret,
                   at: u32,
                   salt: &mut u8| {
        *salt = salt.wrapping_add(1);
        let body = ReleaseBody {
            name: name.clone(),
            version,
            meta: Default::default(),
            dependencies: vec![],
            archive: ArchiveInfo::describe(&[*salt, n], 16 * 1024),
            published_at: u64::from(at),
            publisher: key.public(),
            previous,
        };
        CatalogRecord::Release(Signed::sign(body, key).unwrap())
    };
    let yank = |version: Version, key: &PublisherSecret, at: u32| {
        CatalogRecord::Yank(
            Signed::sign(
                YankBody {
                    name: name.clone(),
                    version,
                    publisher: key.public(),
                    yanked_at: u64::from(at),
                    reason: String::new(),
                },
                key,
            )
            .unwrap(),
        )
    };
    let first = std::iter::once(&(Op::Release, 0));
    for (op, at) in first.chain(ops) {
        let at = *at;
        let pick = |i: u8| chain[usize::from(i) % chain.len()].clone();
        match op {
            Op::Release => {
                let version = Version::new(next, 0, 0);
                next += 1;
                let previous = chain.last().map(|c| c.1);
                let r = release(version.clone(), previous, &keys[epoch], at, &mut salt);
                let id = push(&mut out, r, false);
                chain.push((version, id, previous));
            }
            Op::Equivocate(i) => {
                let (version, _, previous) = pick(*i);
                let r = release(version, previous, &keys[epoch], at, &mut salt);
                push(&mut out, r, false);
            }
            Op::Yank(i) => {
                let (version, _, _) = pick(*i);
                let id = push(&mut out, yank(version.clone(), &keys[epoch], at), false);
                if yank_ids.insert(id) {
                    yanks.entry(version).or_default().push(id);
                }
            }
            Op::Unyank(i) if !yanks.is_empty() => {
                let version = yanks
                    .keys()
                    .nth(usize::from(*i) % yanks.len())
                    .unwrap()
                    .clone();
                let marks = yanks.get_mut(&version).unwrap();
                let undoes = marks.remove(0);
                if marks.is_empty() {
                    yanks.remove(&version);
                }
                let body = UnyankBody {
                    name: name.clone(),
                    version,
                    publisher: keys[epoch].public(),
                    undoes,
                    unyanked_at: u64::from(at),
                };
                let r = CatalogRecord::Unyank(Signed::sign(body, &keys[epoch]).unwrap());
                push(&mut out, r, false);
            }
            Op::Unyank(_) => {}
            Op::Rotate if epoch + 1 < keys.len() => {
                let body = RotationBody {
                    name: name.clone(),
                    from: keys[epoch].public(),
                    to: keys[epoch + 1].public(),
                    last: chain.last().expect("the first op is a release").1,
                    yanked: yanks.keys().cloned().collect(),
                    rotated_at: u64::from(at),
                };
                let r = CatalogRecord::Rotation(Signed::sign(body, &keys[epoch]).unwrap());
                let id = push(&mut out, r, false);
                for marks in yanks.values_mut() {
                    *marks = vec![id];
                }
                epoch += 1;
            }
            Op::Rotate => {}
            Op::Forge {
                higher,
                pick: i,
                signer,
            } if epoch > 0 => {
                let key = &keys[usize::from(*signer) % epoch];
                let (version, previous) = if *higher {
                    next += 1;
                    (Version::new(next - 1, 0, 0), Some(pick(*i).1))
                } else {
                    let (version, _, previous) = pick(*i);
                    (version, previous)
                };
                let r = release(version, previous, key, at, &mut salt);
                push(&mut out, r, true);
            }
            Op::ForgeYank { pick: i, signer } if epoch > 0 => {
                let key = &keys[usize::from(*signer) % epoch];
                push(&mut out, yank(pick(*i).0, key, at), true);
            }
            Op::Forge { .. } | Op::ForgeYank { .. } => {}
        }
    }
    History {
        records: out,
        keys: keys.iter().map(PublisherSecret::public).collect(),
        epoch,
        chain: chain.into_iter().map(|c| c.1).collect(),
        yanked: yanks.into_keys().collect(),
    }
}

/// A catalog fed as the registry feeds it: each batch in replay order, refusals offered again.
#[derive(Default)]
struct Catalog {
    trust: Trust,
    /// Admitted records in the order admitted (the store's log).
    log: Vec<(CatalogRecord, RecordId)>,
    held: HashSet<RecordId>,
    refused: Vec<(CatalogRecord, RecordId)>,
}

impl Catalog {
    fn offer(&mut self, mut batch: Vec<(CatalogRecord, RecordId)>) {
        batch.sort_by_cached_key(|(r, _)| replay_order(r));
        for (record, id) in batch {
            if self.held.contains(&id) {
                continue;
            }
            let before = self.trust.name(record.name()).map(|s| s.highest.clone());
            match self.trust.admit(&record, id) {
                Ok(admission) => {
                    let state = self.trust.name(record.name()).unwrap();
                    if let Admission::Equivocation { version, .. } = &admission {
                        assert!(state.is_equivocated(version), "{admission:?} of {record:?}");
                    }
                    let after = state.highest.clone();
                    // No rollback: the highest version goes down only when a rotation
                    // retracts what its old key released outside the history it vouched for.
                    if !matches!(admission, Admission::Rotation { .. })
                        && let Some(before) = before
                    {
                        assert!(after >= before, "{before:?} -> {after:?} by {record:?}");
                    }
                    self.held.insert(id);
                    self.log.push((record, id));
                }
                Err(_) => self.refused.push((record, id)),
            }
        }
    }

    /// Offers the refused records again until none is taken.
    fn settle(&mut self) {
        loop {
            let held = self.held.len();
            let again = std::mem::take(&mut self.refused);
            self.offer(again);
            if self.held.len() == held {
                return;
            }
        }
    }
}

/// A name's state as the rules define it: owner, past owners, highest version, each version's
/// record ids (one, or every record of an equivocation), yanked and installable versions.
type NameView = (
    PublisherKey,
    Vec<PublisherKey>,
    Option<Version>,
    BTreeMap<Version, Vec<RecordId>>,
    Vec<Version>,
    Vec<Version>,
);

fn view(t: &Trust) -> BTreeMap<String, NameView> {
    t.names()
        .map(|(name, s)| {
            let versions = s
                .releases
                .iter()
                .map(|(v, id)| {
                    let mut ids = s.equivocation(v).map_or_else(|| vec![*id], <[_]>::to_vec);
                    ids.sort_unstable();
                    (v.clone(), ids)
                })
                .collect();
            let installable = s.releases.keys().filter(|v| s.installable(v)).cloned();
            (
                name.to_string(),
                (
                    s.owner,
                    s.past_owners().to_vec(),
                    s.highest.clone(),
                    versions,
                    s.yanked().cloned().collect(),
                    installable.collect(),
                ),
            )
        })
        .collect()
}

/// A deterministic shuffle and batching of `records` from `seed` (xorshift: the orders only
/// need to differ, not to be good random numbers).
fn delivery(
    records: &[(CatalogRecord, RecordId)],
    seed: u64,
) -> Vec<Vec<(CatalogRecord, RecordId)>> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut order = records.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let mut batches = Vec::new();
    while !order.is_empty() {
        let size = (1 + next() % 8) as usize;
        let rest = order.split_off(size.min(order.len()));
        batches.push(std::mem::replace(&mut order, rest));
    }
    batches
}

fn fed(
    firsts: &[(CatalogRecord, RecordId)],
    batches: Vec<Vec<(CatalogRecord, RecordId)>>,
) -> Catalog {
    let mut c = Catalog {
        trust: Trust::new(TrustPolicy::FirstUse),
        ..Catalog::default()
    };
    c.offer(firsts.to_vec());
    for batch in batches {
        c.offer(batch);
    }
    c.settle();
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_order_and_batching_of_a_catalog_reaches_the_same_state(
        names in prop::collection::vec(prop::collection::vec(op(), 0..16), 1..4),
        seeds in prop::collection::vec(any::<u64>(), 2..4),
    ) {
        let histories: Vec<History> = names
            .iter()
            .enumerate()
            .map(|(n, ops)| history(n as u8, ops))
            .collect();
        let pair = |m: &Made| (m.record.clone(), m.id);
        let firsts: Vec<_> = histories.iter().map(|h| pair(&h.records[0])).collect();
        let rest: Vec<_> = histories
            .iter()
            .flat_map(|h| h.records[1..].iter().map(pair))
            .collect();
        // One catalog fed everything at once in replay order, the others in random batches.
        let reference = fed(&firsts, vec![rest.clone()]);
        let expected = view(&reference.trust);
        for seed in seeds {
            let c = fed(&firsts, delivery(&rest, seed));
            prop_assert_eq!(&view(&c.trust), &expected, "delivery seed {}", seed);
            // A restart replays the log in its order and reaches the same state.
            let mut replayed = Trust::new(TrustPolicy::FirstUse);
            for (record, id) in &c.log {
                prop_assert!(replayed.admit(record, *id).is_ok(), "replay refused {:?}", record);
            }
            prop_assert_eq!(&view(&replayed), &expected);
        }

        for h in &histories {
            let (owner, past, _, versions, yanked, _) =
                &expected[h.records[0].record.name().as_str()];
            // Only the owners' yanks count, a rotated-away key's never.
            prop_assert_eq!(yanked, &h.yanked);
            // After its rotations only the last key acts for the name.
            prop_assert_eq!(*owner, h.keys[h.epoch]);
            prop_assert_eq!(past.as_slice(), &h.keys[..h.epoch]);
            let effective: HashSet<RecordId> = versions.values().flatten().copied().collect();
            // Nothing a rotated-away key signed afterwards counts, not even as evidence.
            for m in h.records.iter().filter(|m| m.forged) {
                prop_assert!(!effective.contains(&m.id), "forged {:?} counts", m.record);
            }
            // The owners' chain is whole.
            for id in &h.chain {
                prop_assert!(effective.contains(id));
            }
        }
    }
}

/// The same property through the catalog itself, on disk: its log, its remembered refusals,
/// its search index, and a restart.
mod on_disk {
    use std::path::Path;
    use std::sync::Arc;

    use agora_protocol::PackageName;

    use super::*;
    use crate::catalog::Catalog;
    use crate::catalog::Ingested;
    use crate::index::SearchIndex;
    use crate::obs::RegistryStats;
    use crate::store::Db;

    fn open(dir: &Path) -> Catalog {
        let db = Arc::new(Db::open(&dir.join("catalog.redb")).unwrap());
        let stats = Arc::new(RegistryStats::default());
        Catalog::open(
            db,
            dir,
            &TrustPolicy::FirstUse,
            &HashSet::new(),
            &HashSet::new(),
            SearchIndex::load_saved(&dir.join("index")),
            stats,
        )
        .unwrap()
        .0
    }

    /// Offers `records` until the catalog takes no more of them, as repeated syncs would.
    fn offer_until_settled(c: &Catalog, records: &[CatalogRecord]) {
        loop {
            let held = c.view().record_count();
            c.ingest(records.to_vec(), false).unwrap();
            if c.view().record_count() == held {
                return;
            }
        }
    }

    /// What a catalog answers about each name: owner, every version (its record, unless two
    /// disagree), yanked, equivocated; and the evidence.
    type Answer = (
        Option<PublisherKey>,
        Vec<(Version, Option<RecordId>, bool, bool)>,
        BTreeMap<Version, Vec<RecordId>>,
    );

    fn answers(c: &Catalog, names: &[PackageName]) -> Vec<Answer> {
        let evidence = c.view().equivocations();
        names
            .iter()
            .map(|name| {
                let versions = c
                    .view()
                    .versions(name)
                    .unwrap()
                    .into_iter()
                    .map(|v| {
                        let record = (!v.equivocated).then_some(v.record);
                        (v.version, record, v.yanked, v.equivocated)
                    })
                    .collect();
                let mut evidence = evidence.get(name).cloned().unwrap_or_default();
                for ids in evidence.values_mut() {
                    ids.sort_unstable();
                }
                (c.view().owner(name), versions, evidence)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn catalogs_on_disk_agree_in_any_order_and_after_a_restart(
            names in prop::collection::vec(prop::collection::vec(op(), 0..12), 1..3),
            seed in any::<u64>(),
        ) {
            let histories: Vec<History> = names
                .iter()
                .enumerate()
                .map(|(n, ops)| history(n as u8, ops))
                .collect();
            let name_list: Vec<PackageName> =
                histories.iter().map(|h| h.records[0].record.name().clone()).collect();
            let firsts: Vec<CatalogRecord> =
                histories.iter().map(|h| h.records[0].record.clone()).collect();
            let rest: Vec<(CatalogRecord, RecordId)> = histories
                .iter()
                .flat_map(|h| h.records[1..].iter().map(|m| (m.record.clone(), m.id)))
                .collect();
            let all: Vec<CatalogRecord> = firsts
                .iter()
                .cloned()
                .chain(rest.iter().map(|(r, _)| r.clone()))
                .collect();

            let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let a = open(dir_a.path());
            a.ingest(firsts.clone(), false).unwrap();
            for batch in delivery(&rest, seed) {
                a.ingest(batch.into_iter().map(|(r, _)| r).collect(), false).unwrap();
            }
            offer_until_settled(&a, &all);
            let b = open(dir_b.path());
            b.ingest(firsts, false).unwrap();
            offer_until_settled(&b, &all);
            let expected = answers(&b, &name_list);
            prop_assert_eq!(&answers(&a, &name_list), &expected);

            // A restart reaches the same catalog, and what was refused is refused again.
            let (held, refused) = (a.view().record_count(), a.view().refusals_remembered());
            drop(a);
            let a = open(dir_a.path());
            prop_assert_eq!(&answers(&a, &name_list), &expected);
            prop_assert_eq!((a.view().record_count(), a.view().refusals_remembered()), (held, refused));
            let again = a.ingest(all, false).unwrap();
            prop_assert!(
                again.iter().all(|(_, o)| !matches!(o, Ingested::Added(_))),
                "{:?}",
                again
            );
        }
    }
}
