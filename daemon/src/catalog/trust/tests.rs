use agora_protocol::PublisherSecret;
use agora_protocol::records::{
    ArchiveInfo, HeadBody, ReleaseBody, RotationBody, Signed, UnyankBody, YankBody,
};

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

/// A rotation of `name` from `from` to `to` that vouches for `last`, with its id.
fn rotation(
    name: &str,
    from: &PublisherSecret,
    to: &PublisherSecret,
    last: RecordId,
) -> (CatalogRecord, RecordId) {
    let r = CatalogRecord::Rotation(
        Signed::sign(
            RotationBody {
                name: name.parse().unwrap(),
                from: from.public(),
                to: to.public(),
                last,
                yanked: vec![],
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
    let (rotation, rid) = rotation("pkg", &a, &b, a1.1);
    assert_eq!(
        t.admit(&rotation, rid),
        Ok(Admission::Rotation {
            to: b.public(),
            retracted: vec![]
        })
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
fn history_is_taken_in_any_order_and_a_chain_must_go_up() {
    let a = key(1);
    let v1 = release("pkg", "1.0.0", None, &a, 0);
    let v2 = release("pkg", "2.0.0", Some(v1.1), &a, 0);
    let backport = release("pkg", "1.5.0", Some(v1.1), &a, 0);

    // History arriving newest first waits for nothing; a backport is a branch.
    let mut t = Trust::default();
    assert_eq!(admit(&mut t, &v2), Ok(Admission::Release));
    assert_eq!(admit(&mut t, &v1), Ok(Admission::Release));
    assert_eq!(admit(&mut t, &backport), Ok(Admission::Release));
    let state = t.name("pkg").unwrap();
    assert_eq!(state.releases.len(), 3);
    assert_eq!(state.highest, Some("2.0.0".parse().unwrap()));
    assert_eq!(state.latest(), Some(&"2.0.0".parse().unwrap()));

    // A release naming a newer one as its predecessor breaks the chain.
    let v3 = release("pkg", "3.0.0", Some(v2.1), &a, 0);
    assert_eq!(admit(&mut t, &v3), Ok(Admission::Release));
    let bad = release("pkg", "2.5.0", Some(v3.1), &a, 0);
    assert_eq!(
        admit(&mut t, &bad).unwrap_err().to_string(),
        "pkg@2.5.0 names as its previous release version 3.0.0, which is not older"
    );
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
    let (rotation, rid) = rotation("pkg", &a, &b, a2.1);
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
    let a1 = release("pkg", "1.0.0", None, &a, 0);
    let (rotation, rid) = rotation("pkg", &a, &b, a1.1);
    let unknown_name = TrustError::UnknownName {
        name: "pkg".parse().unwrap(),
    };
    assert!(unknown_name.is_transient());
    assert_eq!(t.admit(&rotation, rid), Err(unknown_name));
    assert!(t.name("pkg").is_none(), "nothing pinned");

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
    assert!(
        !t.name("pkg")
            .unwrap()
            .installable(&"1.0.0".parse().unwrap())
    );
    // The rotation, now that the name is known, is taken; it lists no yanks, so the old
    // key's yank no longer counts.
    assert_eq!(
        t.admit(&rotation, rid),
        Ok(Admission::Rotation {
            to: b.public(),
            retracted: vec![]
        })
    );
    let state = t.name("pkg").unwrap();
    assert_eq!(state.past_owners(), [a.public()]);
    assert!(state.installable(&"1.0.0".parse().unwrap()));
}

/// Finding 3 of the adversary's audit: what a rotated-away key signs outside the history
/// its rotation vouched for never counts, whether it came before the rotation or after,
/// and whatever time it claims.
#[test]
fn a_rotation_retracts_what_the_old_key_signed_outside_the_history_it_vouched_for() {
    let (a, b) = (key(1), key(2));
    let a1 = release("pkg", "1.0.0", None, &a, 0);
    let a2 = release("pkg", "2.0.0", Some(a1.1), &a, 0);
    let forged_4 = release("pkg", "4.0.0", Some(a2.1), &a, 9);
    let forged_1 = release("pkg", "1.0.0", None, &a, 9);
    let rotation = {
        let r = CatalogRecord::Rotation(
            Signed::sign(
                RotationBody {
                    name: "pkg".parse().unwrap(),
                    from: a.public(),
                    to: b.public(),
                    last: a2.1,
                    yanked: vec!["1.0.0".parse().unwrap()],
                    rotated_at: 2,
                },
                &a,
            )
            .unwrap(),
        );
        let id = r.id();
        (r, id)
    };
    let b3 = release("pkg", "3.0.0", Some(a2.1), &b, 0);
    let on_forged = release("pkg", "5.0.0", Some(forged_4.1), &b, 0);

    // The forgeries first: the old key still owned the name here.
    let mut before = Trust::default();
    for r in [&a1, &a2, &forged_4] {
        assert_eq!(admit(&mut before, r), Ok(Admission::Release));
    }
    assert!(matches!(
        admit(&mut before, &forged_1),
        Ok(Admission::Equivocation { .. })
    ));
    let mut retracted = vec![forged_4.1, forged_1.1];
    retracted.sort_unstable();
    assert_eq!(
        admit(&mut before, &rotation),
        Ok(Admission::Rotation {
            to: b.public(),
            retracted
        })
    );
    assert_eq!(admit(&mut before, &b3), Ok(Admission::Release));
    assert_eq!(
        admit(&mut before, &on_forged).unwrap_err().to_string(),
        "pkg@5.0.0 builds on a release that the rotation of its old key left out of the name"
    );

    // The forgeries after the rotation are refused.
    let mut after = Trust::default();
    for r in [&a1, &a2, &rotation, &b3] {
        admit(&mut after, r).unwrap();
    }
    for forged in [&forged_4, &forged_1] {
        assert!(matches!(
            admit(&mut after, forged),
            Err(TrustError::NotOwner { .. })
        ));
    }

    for t in [&before, &after] {
        let state = t.name("pkg").unwrap();
        assert_eq!(state.owner, b.public());
        assert_eq!(state.highest, Some("3.0.0".parse().unwrap()));
        assert_eq!(state.equivocations(), None);
        let versions: Vec<(String, RecordId)> = state
            .releases
            .iter()
            .map(|(v, id)| (v.to_string(), *id))
            .collect();
        assert_eq!(
            versions,
            [
                ("1.0.0".to_owned(), a1.1),
                ("2.0.0".to_owned(), a2.1),
                ("3.0.0".to_owned(), b3.1)
            ]
        );
        assert!(
            !state.installable(&"1.0.0".parse().unwrap()),
            "yank carried over"
        );
        assert_eq!(state.latest(), Some(&"3.0.0".parse().unwrap()));
    }
}

#[test]
fn after_a_rotation_only_the_new_keys_heads_count() {
    let (a, b) = (key(1), key(2));
    let mut t = Trust::default();
    let v1 = release("pkg", "1.0.0", None, &a, 0);
    admit(&mut t, &v1).unwrap();
    let head = |secret: &PublisherSecret, seq: u64| {
        Signed::sign(
            HeadBody {
                name: "pkg".parse().unwrap(),
                owner: secret.public(),
                versions: vec!["1.0.0".parse().unwrap()],
                seq,
                updated_at: seq,
            },
            secret,
        )
        .unwrap()
    };
    assert_eq!(t.admit_head(&head(&a, 5)), Ok(true));
    let (rotation, rid) = rotation("pkg", &a, &b, v1.1);
    t.admit(&rotation, rid).unwrap();
    assert_eq!(
        t.name("pkg").unwrap().head,
        None,
        "the old key's head is dropped"
    );
    assert!(matches!(
        t.admit_head(&head(&a, 6)),
        Err(TrustError::NotOwner { .. })
    ));
    assert_eq!(
        t.admit_head(&head(&b, 1)),
        Ok(true),
        "the new key starts afresh"
    );
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

fn yank(
    name: &str,
    version: &str,
    secret: &PublisherSecret,
    reason: &str,
) -> (CatalogRecord, RecordId) {
    let r = CatalogRecord::Yank(
        Signed::sign(
            YankBody {
                name: name.parse().unwrap(),
                version: version.parse().unwrap(),
                publisher: secret.public(),
                yanked_at: 3,
                reason: reason.into(),
            },
            secret,
        )
        .unwrap(),
    );
    let id = r.id();
    (r, id)
}

fn unyank(
    name: &str,
    version: &str,
    secret: &PublisherSecret,
    undoes: RecordId,
) -> (CatalogRecord, RecordId) {
    let r = CatalogRecord::Unyank(
        Signed::sign(
            UnyankBody {
                name: name.parse().unwrap(),
                version: version.parse().unwrap(),
                publisher: secret.public(),
                undoes,
                unyanked_at: 4,
            },
            secret,
        )
        .unwrap(),
    );
    let id = r.id();
    (r, id)
}

/// An unyank takes back exactly the yank it names: a version yanked twice stays yanked until
/// both are undone, an unyank that comes before its yank waits for it, and only the owner's
/// unyank counts.
#[test]
fn an_unyank_takes_back_the_yank_it_names() {
    let (a, b) = (key(1), key(2));
    let v: Version = "1.0.0".parse().unwrap();
    let mut t = Trust::default();
    admit(&mut t, &release("pkg", "1.0.0", None, &a, 0)).unwrap();
    let first = yank("pkg", "1.0.0", &a, "broken build");
    let second = yank("pkg", "1.0.0", &a, "");
    let undo_first = unyank("pkg", "1.0.0", &a, first.1);
    assert_eq!(
        admit(&mut t, &undo_first),
        Err(TrustError::UnknownYank {
            name: "pkg".parse().unwrap(),
            version: v.clone(),
            yank: first.1,
        })
    );
    assert!(admit(&mut t, &undo_first).unwrap_err().is_transient());
    assert_eq!(admit(&mut t, &first), Ok(Admission::Yank));
    assert_eq!(admit(&mut t, &second), Ok(Admission::Yank));
    let pkg = |t: &Trust| t.name("pkg").unwrap().clone();
    assert_eq!(
        pkg(&t)
            .yanks(&v)
            .iter()
            .map(|m| m.reason.as_str())
            .collect::<Vec<_>>(),
        ["broken build", ""]
    );
    let forged = unyank("pkg", "1.0.0", &b, first.1);
    assert!(matches!(
        admit(&mut t, &forged),
        Err(TrustError::NotOwner { .. })
    ));
    assert_eq!(
        admit(&mut t, &undo_first),
        Ok(Admission::Unyank { yanked: true })
    );
    assert!(!pkg(&t).installable(&v));
    assert_eq!(
        admit(&mut t, &unyank("pkg", "1.0.0", &a, second.1)),
        Ok(Admission::Unyank { yanked: false })
    );
    assert!(pkg(&t).installable(&v));
    assert_eq!(pkg(&t).yanks(&v), []);
}

/// A yank a rotation carries over stands under the rotation's id, which the new owner's unyank
/// names; the old key can no longer take it back.
#[test]
fn the_new_owner_can_take_back_a_yank_its_rotation_carried() {
    let (a, b) = (key(1), key(2));
    let v: Version = "1.0.0".parse().unwrap();
    let mut t = Trust::default();
    let r1 = release("pkg", "1.0.0", None, &a, 0);
    admit(&mut t, &r1).unwrap();
    let y = yank("pkg", "1.0.0", &a, "bad");
    admit(&mut t, &y).unwrap();
    let rot = CatalogRecord::Rotation(
        Signed::sign(
            RotationBody {
                name: "pkg".parse().unwrap(),
                from: a.public(),
                to: b.public(),
                last: r1.1,
                yanked: vec![v.clone()],
                rotated_at: 5,
            },
            &a,
        )
        .unwrap(),
    );
    let rid = rot.id();
    t.admit(&rot, rid).unwrap();
    let carried = t.name("pkg").unwrap().yanks(&v).to_vec();
    assert_eq!(
        carried,
        [YankMark {
            id: rid,
            reason: String::new()
        }]
    );
    assert!(matches!(
        admit(&mut t, &unyank("pkg", "1.0.0", &a, y.1)),
        Err(TrustError::NotOwner { .. })
    ));
    assert!(matches!(
        admit(&mut t, &unyank("pkg", "1.0.0", &b, y.1)),
        Err(TrustError::UnknownYank { .. })
    ));
    assert_eq!(
        admit(&mut t, &unyank("pkg", "1.0.0", &b, rid)),
        Ok(Admission::Unyank { yanked: false })
    );
    assert!(t.name("pkg").unwrap().installable(&v));
}
