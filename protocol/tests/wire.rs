//! Round-trip property tests for every wire type, and hostile inputs for each decoder.

use agora_protocol::codec::{self, DecodeError, WIRE_VERSION, Wire};
use agora_protocol::dht::{self, DhtError, DhtKey, DhtValue};
use agora_protocol::ipc::{
    self, ClientMessage, FrameError, IpcError, Request, Response, ServerMessage, StatusInfo,
};
use agora_protocol::keys::KeyError;
use agora_protocol::limits::*;
use agora_protocol::messages::*;
use agora_protocol::records::*;
use agora_protocol::*;
use proptest::prelude::*;

fn secret(seed: u8) -> PublisherSecret {
    PublisherSecret::from_bytes([seed; 32])
}

fn arb_name() -> impl Strategy<Value = PackageName> {
    "[a-z0-9][a-z0-9._-]{0,20}".prop_map(|s| PackageName::new(s).unwrap())
}

fn arb_version() -> impl Strategy<Value = Version> {
    (0u64..1000, 0u64..1000, 0u64..u64::MAX).prop_map(|(a, b, c)| Version::new(a, b, c))
}

fn arb_meta() -> impl Strategy<Value = PackageMeta> {
    (
        "[ -~]{0,200}",
        proptest::option::of("[a-z]{1,20}"),
        proptest::option::of("[ -~]{1,40}"),
        proptest::collection::vec("[a-z0-9-]{1,32}", 0..MAX_TAGS),
        proptest::collection::vec("[a-z0-9]{1,32}", 0..MAX_TAGS),
    )
        .prop_map(
            |(description, category, author, tags, keywords)| PackageMeta {
                description,
                category,
                author,
                license: Some("MIT".into()),
                repository: None,
                tags,
                keywords,
            },
        )
}

fn arb_release() -> impl Strategy<Value = ReleaseRecord> {
    (
        arb_name(),
        arb_version(),
        arb_meta(),
        proptest::collection::vec(1u8..=255, 1..(3 * MIN_CHUNK_SIZE as usize)),
        any::<u64>(),
        proptest::option::of(any::<[u8; 32]>()),
        any::<u8>(),
    )
        .prop_map(
            |(name, version, meta, data, published_at, previous, seed)| {
                let key = secret(seed);
                let dependencies = vec![Dependency {
                    name: PackageName::new("zz-dep").unwrap(),
                    req: "^1.2".parse().unwrap(),
                }]
                .into_iter()
                .filter(|d| d.name != name)
                .collect();
                let body = ReleaseBody {
                    name,
                    version,
                    meta,
                    dependencies,
                    archive: ArchiveInfo::describe(&data, MIN_CHUNK_SIZE),
                    published_at,
                    publisher: key.public(),
                    previous: previous.map(ContentId::from_bytes),
                };
                Signed::sign(body, &key).unwrap()
            },
        )
}

fn arb_head() -> impl Strategy<Value = PackageHead> {
    (
        arb_name(),
        proptest::collection::btree_set(arb_version(), 1..MAX_HEAD_VERSIONS),
        any::<u64>(),
        any::<u8>(),
    )
        .prop_map(|(name, versions, seq, seed)| {
            let key = secret(seed);
            let body = HeadBody {
                name,
                owner: key.public(),
                versions: versions.into_iter().collect(),
                seq,
                updated_at: seq / 2,
            };
            Signed::sign(body, &key).unwrap()
        })
}

fn arb_yank() -> impl Strategy<Value = Yank> {
    (arb_name(), arb_version(), "[ -~]{0,100}", any::<u8>()).prop_map(
        |(name, version, reason, seed)| {
            let key = secret(seed);
            Signed::sign(
                YankBody {
                    name,
                    version,
                    publisher: key.public(),
                    yanked_at: 1,
                    reason,
                },
                &key,
            )
            .unwrap()
        },
    )
}

fn arb_unyank() -> impl Strategy<Value = Unyank> {
    (arb_name(), arb_version(), any::<[u8; 32]>(), any::<u8>()).prop_map(
        |(name, version, undoes, seed)| {
            let key = secret(seed);
            let body = UnyankBody {
                name,
                version,
                publisher: key.public(),
                undoes: ContentId::from_bytes(undoes),
                unyanked_at: 2,
            };
            Signed::sign(body, &key).unwrap()
        },
    )
}

fn arb_rotation() -> impl Strategy<Value = KeyRotation> {
    (arb_name(), 0u8..128).prop_map(|(name, seed)| {
        let from = secret(seed);
        let body = RotationBody {
            name,
            from: from.public(),
            to: secret(seed + 128).public(),
            last: ContentId::of(&[seed]),
            yanked: vec!["1.0.0".parse().unwrap(), "1.2.0-rc.1".parse().unwrap()],
            rotated_at: 7,
        };
        Signed::sign(body, &from).unwrap()
    })
}

fn round_trip<T: Wire + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = value.to_wire();
    assert_eq!(&T::from_wire(&bytes).unwrap(), value);
    assert_eq!(&T::from_wire_owned(bytes.clone().into()).unwrap(), value);
    let (head, payload) = value.to_wire_parts();
    assert_eq!(
        [head, payload.to_vec()].concat(),
        bytes,
        "the parts are the encoding"
    );
    // Any strict prefix is refused, never accepted or panicking.
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(T::from_wire(&bytes[..cut]).is_err());
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(T::from_wire(&trailing).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn release_records_round_trip_and_verify(r in arb_release()) {
        r.verify().unwrap();
        let bytes = r.encode();
        prop_assert_eq!(ReleaseRecord::decode(&bytes).unwrap(), r.clone());
        prop_assert_eq!(ContentId::of(&bytes[1..]), r.id());
        let key = DhtKey::Release(r.body.name.clone(), r.body.version.clone());
        prop_assert_eq!(dht::validate(&key.to_bytes(), &bytes).unwrap(), DhtValue::Release(r.clone()));
        round_trip(&GossipMessage::Release(r.clone()));
        let stored = CatalogRecord::Release(r.clone());
        let id = r.id();
        prop_assert_eq!(CatalogRecord::decode_stored(&codec::encode(&stored)).unwrap(), (stored, id));
        round_trip(&SyncResponse::Records { records: vec![CatalogRecord::Release(r)] });
    }

    #[test]
    fn heads_yanks_rotations_round_trip(
        h in arb_head(),
        y in arb_yank(),
        k in arb_rotation(),
        u in arb_unyank(),
    ) {
        prop_assert_eq!(PackageHead::decode(&h.encode()).unwrap(), h.clone());
        prop_assert_eq!(Unyank::decode(&u.encode()).unwrap(), u.clone());
        prop_assert_eq!(Yank::decode(&y.encode()).unwrap(), y.clone());
        prop_assert_eq!(KeyRotation::decode(&k.encode()).unwrap(), k.clone());
        let key = DhtKey::Head(h.body.name.clone());
        prop_assert_eq!(dht::validate(&key.to_bytes(), &h.encode()).unwrap(), DhtValue::Head(h.clone()));
        for m in [
            GossipMessage::Head(h),
            GossipMessage::Yank(y.clone()),
            GossipMessage::Rotation(k.clone()),
            GossipMessage::Unyank(u.clone()),
        ] {
            round_trip(&m);
            prop_assert_eq!(GossipMessage::decode_verified(&m.to_wire()).unwrap(), m);
        }
        for (record, id) in [
            (CatalogRecord::Yank(y.clone()), y.id()),
            (CatalogRecord::Rotation(k.clone()), k.id()),
            (CatalogRecord::Unyank(u.clone()), u.id()),
        ] {
            prop_assert_eq!(CatalogRecord::decode_stored(&codec::encode(&record)).unwrap(), (record, id));
        }
        round_trip(&SyncResponse::Records {
            records: vec![CatalogRecord::Yank(y), CatalogRecord::Rotation(k), CatalogRecord::Unyank(u)],
        });
    }

    #[test]
    fn sync_and_fetch_messages_round_trip(
        ids in proptest::collection::vec(any::<[u8; 32]>(), 0..50),
        buckets in proptest::collection::vec(any::<u8>(), 0..SYNC_BUCKETS),
        counts in proptest::collection::vec((any::<u32>(), any::<[u8; 32]>()), SYNC_BUCKETS..=SYNC_BUCKETS),
        chunk in proptest::collection::vec(any::<u8>(), 1..4096),
        index in 0u32..MAX_CHUNKS as u32,
        chunk_size in MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE,
    ) {
        let ids: Vec<RecordId> = ids.into_iter().map(ContentId::from_bytes).collect();
        round_trip(&SyncRequest::Summary);
        round_trip(&SyncRequest::Buckets { buckets });
        round_trip(&SyncRequest::Records { ids: ids.clone() });
        round_trip(&SyncResponse::Ids { ids });
        round_trip(&SyncResponse::Summary {
            buckets: counts.into_iter().map(|(count, digest)| BucketDigest { count, digest }).collect(),
        });
        round_trip(&SyncResponse::Refused(Refusal::Busy));
        round_trip(&FetchRequest { content: ContentId::of(&chunk), chunk_size, index });
        round_trip(&FetchResponse::Chunk(chunk.into()));
        round_trip(&FetchResponse::Refused(Refusal::OutOfRange));
    }

    #[test]
    fn ipc_messages_round_trip(id in any::<u64>(), addr in "[ -~]{0,200}", peers in 0u32..1000) {
        round_trip(&ClientMessage::Hello { protocol: ipc::IPC_PROTOCOL_VERSION, client: "agora".into() });
        round_trip(&ClientMessage::Request { id, request: Request::Connect { addr: addr.clone() } });
        round_trip(&ClientMessage::Request { id, request: Request::Status });
        let status = StatusInfo {
            peer_id: "p".into(), listen_addrs: vec![addr.clone()], external_addrs: vec![], peers,
            routing_table: peers / 2, catalog_size: 3, packages: 2, indexed: 2,
            search_index: ipc::IndexState::Failed(addr.clone()), cache_bytes: 10, cache_quota: 100,
            store_bytes: 20, cache_hits: 1, cache_misses: 2, uptime_secs: 7, version: "0.1.0".into(),
            log_level: "info".into(), http: Some("127.0.0.1:4180".into()),
            publisher: Some("ab".repeat(32)), data_dir: addr.clone(),
            repair: Some(ipc::RepairInfo {
                at: id, cause: addr.clone(), set_aside: Some(addr.clone()), from_journal: 3,
                blobs_kept: 2, blobs_dropped: 1, from_peers: vec![(addr.clone(), id)],
            }),
            store_check: ipc::StoreCheck::Damaged(addr.clone()),
            private_network: Some(addr.clone()),
            reachability: "private".into(),
        };
        round_trip(&ClientMessage::Request { id, request: Request::SetLogLevel { filter: addr.clone() } });
        round_trip(&ServerMessage::Response { id, result: Ok(Response::LogLevel { filter: addr.clone() }) });
        round_trip(&ClientMessage::Request { id, request: Request::Publish { dir: addr.clone(), dry_run: true, allow_missing_dependencies: false } });
        round_trip(&ClientMessage::Request { id, request: Request::Search(agora_protocol::search::SearchQuery::text(&addr[..addr.len().min(200)])) });
        round_trip(&ClientMessage::Request { id, request: Request::Resolve { roots: vec![addr.clone()], prefer: vec![addr.clone()] } });
        round_trip(&ServerMessage::Response { id, result: Ok(Response::Status(status)) });
        round_trip(&ServerMessage::Response { id, result: Err(IpcError::NotFound(addr.clone())) });
        round_trip(&ServerMessage::Response { id, result: Err(IpcError::Refused(addr)) });
        let framed = ipc::frame(&ClientMessage::Request { id, request: Request::Peers }.to_wire()).unwrap();
        let len = ipc::frame_len(framed[..4].try_into().unwrap()).unwrap();
        prop_assert_eq!(len, framed.len() - 4);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = GossipMessage::decode_verified(&bytes);
        let _ = SyncRequest::from_wire(&bytes);
        let _ = SyncResponse::from_wire(&bytes);
        let _ = FetchRequest::from_wire(&bytes);
        let _ = FetchResponse::from_wire(&bytes);
        let _ = ClientMessage::from_wire(&bytes);
        let _ = ServerMessage::from_wire(&bytes);
        let _ = dht::validate(b"agora/pkg/x", &bytes);
        let _ = dht::validate(&bytes, &bytes);
    }

    /// The CI smoke of the `package_toml` fuzz target: any text, and text that starts as a
    /// manifest, is parsed or refused with an error that says where.
    #[test]
    fn arbitrary_text_is_parsed_or_refused_with_a_place(
        text in "\\PC{0,300}",
        tail in "[a-z_=\\[\\]\"{}. 0-9,\n-]{0,200}",
    ) {
        let shaped = format!("[package]\nname = \"x\"\nversion = \"1.0.0\"\n{tail}");
        for input in [&text, &shaped] {
            if let Err(e) = Manifest::parse(input) {
                // A place inside the text (a 1-based line and column; one past the end of the
                // last line for "missing" errors).
                let lines: Vec<&str> = input.split('\n').collect();
                prop_assert!(e.line >= 1 && e.line <= lines.len(), "{e} in {input:?}");
                prop_assert!(e.column >= 1 && e.column <= lines[e.line - 1].chars().count() + 1, "{e} in {input:?}");
                prop_assert!(!e.message.is_empty());
            }
        }
    }
}

fn sample_release() -> ReleaseRecord {
    let key = secret(1);
    let data = vec![42u8; 40_000];
    let body = ReleaseBody {
        name: "hello-world".parse().unwrap(),
        version: Version::new(1, 0, 0),
        meta: PackageMeta {
            description: "hi".into(),
            ..Default::default()
        },
        dependencies: vec![],
        archive: ArchiveInfo::describe(&data, MIN_CHUNK_SIZE),
        published_at: 1_700_000_000,
        publisher: key.public(),
        previous: None,
    };
    Signed::sign(body, &key).unwrap()
}

#[test]
fn hostile_records_each_get_a_specific_error() {
    let good = sample_release();
    let bytes = good.encode();

    assert_eq!(
        ReleaseRecord::decode(&bytes[..bytes.len() - 3]),
        Err(RecordError::Decode(DecodeError::Truncated))
    );
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"xx");
    assert_eq!(
        ReleaseRecord::decode(&trailing),
        Err(RecordError::Decode(DecodeError::TrailingBytes {
            trailing: 2
        }))
    );
    let mut version = bytes.clone();
    version[0] = WIRE_VERSION + 1;
    assert_eq!(
        ReleaseRecord::decode(&version),
        Err(RecordError::Decode(DecodeError::UnsupportedVersion {
            found: WIRE_VERSION + 1
        }))
    );
    let huge = vec![WIRE_VERSION; MAX_RECORD_BYTES + 1];
    assert_eq!(
        ReleaseRecord::decode(&huge),
        Err(RecordError::Decode(DecodeError::TooLarge {
            len: MAX_RECORD_BYTES + 1,
            limit: MAX_RECORD_BYTES
        }))
    );

    // Wrong signature: the last byte of the signature flipped.
    let mut bad_sig = bytes.clone();
    *bad_sig.last_mut().unwrap() ^= 1;
    assert_eq!(
        ReleaseRecord::decode(&bad_sig),
        Err(RecordError::Signature(KeyError::BadSignature))
    );

    // Signed by another key than the one it names.
    let mut forged = good.clone();
    forged.signature = secret(2).sign(ReleaseBody::DOMAIN, &codec::encode_body(&good.body));
    assert_eq!(
        forged.verify(),
        Err(RecordError::Signature(KeyError::BadSignature))
    );

    // Right key, wrong domain: a signature made for a yank replayed on a release.
    let mut wrong_domain = good.clone();
    wrong_domain.signature = secret(1).sign(YankBody::DOMAIN, &codec::encode_body(&good.body));
    assert_eq!(
        wrong_domain.verify(),
        Err(RecordError::Signature(KeyError::BadSignature))
    );

    // A body edited after signing.
    let mut edited = good.clone();
    edited.body.version = Version::new(0, 9, 0);
    assert_eq!(
        ReleaseRecord::decode(&edited.encode()),
        Err(RecordError::Signature(KeyError::BadSignature))
    );

    // Inconsistent chunk list is refused before the signature is even checked.
    let mut chunks = good.clone();
    chunks.body.archive.chunks.pop();
    assert!(matches!(chunks.verify(), Err(RecordError::Inconsistent(_))));
}

#[test]
fn dht_values_must_match_their_key() {
    let good = sample_release();
    let other = DhtKey::Release("hello-world".parse().unwrap(), Version::new(2, 0, 0));
    assert_eq!(
        dht::validate(&other.to_bytes(), &good.encode()),
        Err(DhtError::KeyMismatch {
            key: "agora/rel/hello-world/2.0.0".into(),
            found: "agora/rel/hello-world/1.0.0".into()
        })
    );
    assert!(matches!(
        dht::validate(b"other/thing", &good.encode()),
        Err(DhtError::BadKey(_))
    ));
    let head_key = DhtKey::Head("hello-world".parse().unwrap());
    // A release record offered under a head key does not decode as a head.
    assert!(matches!(
        dht::validate(&head_key.to_bytes(), &good.encode()),
        Err(DhtError::Record(RecordError::Decode(_)))
    ));
    let cid = DhtKey::Content(ContentId::of(b"x"));
    assert_eq!(cid.to_string().parse::<DhtKey>().unwrap(), cid);
    assert!(matches!(
        dht::validate(&cid.to_bytes(), &good.encode()),
        Err(DhtError::NotAValueKey(_))
    ));
}

#[test]
fn oversized_messages_and_frames_are_refused() {
    assert_eq!(
        ipc::frame_len((MAX_IPC_FRAME_BYTES as u32 + 1).to_be_bytes()),
        Err(FrameError::TooLarge {
            len: MAX_IPC_FRAME_BYTES + 1
        })
    );
    assert_eq!(
        ipc::frame_len(u32::MAX.to_be_bytes()),
        Err(FrameError::TooLarge {
            len: u32::MAX as usize
        })
    );
    assert_eq!(ipc::frame_len([0; 4]), Err(FrameError::Empty));
    let too_many = SyncRequest::Records {
        ids: vec![ContentId::of(b""); MAX_SYNC_IDS + 1],
    };
    assert_eq!(
        SyncRequest::from_wire(&too_many.to_wire()),
        Err(DecodeError::Invalid(format!(
            "{} records requested; the limit is {MAX_SYNC_IDS}",
            MAX_SYNC_IDS + 1
        )))
    );
    // One id asked for 1,024 times would be read and sent 1,024 times.
    let twice = ContentId::of(b"once");
    let repeated = SyncRequest::Records {
        ids: vec![twice; MAX_SYNC_IDS],
    };
    assert_eq!(
        SyncRequest::from_wire(&repeated.to_wire()),
        Err(DecodeError::Invalid(format!(
            "record {twice} is requested twice"
        )))
    );
    let big_chunk = FetchResponse::Chunk(vec![1u8; MAX_CHUNK_SIZE as usize + 1].into());
    assert_eq!(
        FetchResponse::from_wire(&big_chunk.to_wire()),
        Err(DecodeError::Invalid(format!(
            "chunk of {} bytes; the limit is {MAX_CHUNK_SIZE}",
            MAX_CHUNK_SIZE + 1
        )))
    );
    let bytes = vec![WIRE_VERSION; MAX_GOSSIP_BYTES + 1];
    assert_eq!(
        GossipMessage::from_wire(&bytes),
        Err(DecodeError::TooLarge {
            len: MAX_GOSSIP_BYTES + 1,
            limit: MAX_GOSSIP_BYTES
        })
    );
    // A gossip head whose name string claims 2^63 bytes: refused by the limit, not allocated.
    let mut evil = vec![WIRE_VERSION, 3, 253];
    evil.extend_from_slice(&(1u64 << 63).to_le_bytes());
    assert_eq!(
        GossipMessage::from_wire(&evil),
        Err(DecodeError::LimitExceeded {
            limit: codec::claims(MAX_GOSSIP_BYTES)
        })
    );
}

#[test]
fn a_chunk_is_sent_and_received_without_a_copy() {
    // Lengths where the varint of the length changes size, and the largest chunk.
    for len in [1, 250, 251, 65_535, 65_536, MAX_CHUNK_SIZE as usize] {
        let data = bytes::Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
        let response = FetchResponse::Chunk(data.clone());
        let (head, payload) = response.to_wire_parts();
        assert_eq!(
            payload.as_ptr(),
            data.as_ptr(),
            "{len}: the data itself is sent"
        );
        let encoding = response.to_wire();
        assert_eq!([&head[..], &payload[..]].concat(), encoding, "{len}");

        let buffer = bytes::Bytes::from(encoding);
        let FetchResponse::Chunk(got) = FetchResponse::from_wire_owned(buffer.clone()).unwrap()
        else {
            panic!("{len}: not a chunk");
        };
        assert_eq!(got, data, "{len}");
        assert_eq!(
            got.as_ptr(),
            buffer[head.len()..].as_ptr(),
            "{len}: a slice of the buffer"
        );
    }
    // The owned decoder refuses what the borrowed one does, with the same errors.
    let chunk = FetchResponse::Chunk(bytes::Bytes::from_static(b"abc")).to_wire();
    let mut long = chunk.clone();
    long.push(0);
    let mut lying = chunk.clone();
    lying[2] = 4;
    let empty = FetchResponse::Chunk(bytes::Bytes::new()).to_wire();
    for (bad, error) in [
        (long, DecodeError::TrailingBytes { trailing: 1 }),
        (lying, DecodeError::Truncated),
        (empty, DecodeError::Invalid("empty chunk".into())),
    ] {
        assert_eq!(FetchResponse::from_wire(&bad), Err(error.clone()));
        assert_eq!(FetchResponse::from_wire_owned(bad.into()), Err(error));
    }
}

#[test]
fn head_order_is_deterministic() {
    let key = secret(3);
    let make = |seq| {
        let body = HeadBody {
            name: "a".parse().unwrap(),
            owner: key.public(),
            versions: vec![Version::new(1, 0, 0)],
            seq,
            updated_at: 0,
        };
        Signed::sign(body, &key).unwrap()
    };
    let (a, b) = (make(1), make(2));
    assert_eq!(dht::compare_heads(&a, &b), std::cmp::Ordering::Less);
    assert_eq!(dht::compare_heads(&b, &a), std::cmp::Ordering::Greater);
    assert_eq!(dht::compare_heads(&a, &a), std::cmp::Ordering::Equal);
}

/// The byte layouts that docs/PROTOCOL.md spells out.
#[test]
fn documented_layouts_hold() {
    let c = ContentId::of(b"chunk");
    let mut expected = vec![WIRE_VERSION];
    expected.extend_from_slice(c.as_bytes());
    // 16,384 as a varint: the u16 marker 251, then little-endian.
    expected.extend_from_slice(&[251, 0x00, 0x40]);
    expected.push(3);
    assert_eq!(
        FetchRequest {
            content: c,
            chunk_size: 16 * 1024,
            index: 3
        }
        .to_wire(),
        expected
    );
    let framed = ipc::frame(&expected).unwrap();
    assert_eq!(&framed[..4], &[0, 0, 0, 0x25]);

    // Signature: length 64 as one varint byte, then the bytes; keys and ids: 32 raw bytes.
    let sig = secret(1).sign(b"d", b"m");
    let enc = codec::encode_body(&sig);
    assert_eq!((enc.len(), enc[0]), (65, 0x40));
    assert_eq!(
        codec::encode_body(&secret(1).public()),
        secret(1).public().as_bytes().to_vec()
    );

    // A yank: name, version, publisher, yanked_at, reason, then the signature.
    let key = secret(4);
    let yank = Signed::sign(
        YankBody {
            name: "ab".parse().unwrap(),
            version: Version::new(1, 2, 3),
            publisher: key.public(),
            yanked_at: 300,
            reason: String::new(),
        },
        &key,
    )
    .unwrap();
    let body = codec::encode_body(&yank);
    let mut want = vec![2, b'a', b'b', 5];
    want.extend_from_slice(b"1.2.3");
    want.extend_from_slice(key.public().as_bytes());
    want.extend_from_slice(&[0xFB, 0x2C, 0x01, 0x00, 0x40]);
    want.extend_from_slice(yank.signature.as_bytes());
    assert_eq!(body, want);

    // Enum variants are numbered in declaration order.
    assert_eq!(SyncRequest::Summary.to_wire(), vec![WIRE_VERSION, 0]);
    assert_eq!(
        FetchResponse::Refused(Refusal::OutOfRange).to_wire(),
        vec![WIRE_VERSION, 1, 2]
    );
    assert_eq!(
        DhtKey::Content(c).to_string(),
        format!("agora/cid/{}", c.to_hex())
    );
}

/// `prefix`, padded with `fill` to exactly `len` bytes.
fn padded(prefix: &str, fill: char, len: usize) -> String {
    let mut s = prefix.to_owned();
    while s.len() < len {
        s.push(fill);
    }
    s
}

/// A release with every field at its limit: 64 dependencies with the longest names and
/// requirements, every metadata field full, the longest version, 512 chunks.
fn release_at_every_limit(key: &PublisherSecret) -> ReleaseRecord {
    let short = |what: &str| Some(padded(what, 'x', MAX_SHORT_FIELD_LEN));
    let body = ReleaseBody {
        name: padded("biggest-", 'x', MAX_NAME_LEN).parse().unwrap(),
        version: padded("1.0.0-", 'x', MAX_VERSION_LEN).parse().unwrap(),
        meta: PackageMeta {
            description: padded("d", 'x', MAX_DESCRIPTION_LEN),
            category: short("c"),
            author: short("a"),
            license: short("l"),
            repository: Some(padded("https://example.com/", 'x', MAX_URL_LEN)),
            tags: (0..MAX_TAGS)
                .map(|i| padded(&format!("t{i}"), 'x', MAX_TAG_LEN))
                .collect(),
            keywords: (0..MAX_TAGS)
                .map(|i| padded(&format!("k{i}"), 'x', MAX_TAG_LEN))
                .collect(),
        },
        dependencies: (0..MAX_DEPENDENCIES)
            .map(|i| Dependency {
                name: padded(&format!("dep-{i:02}-"), 'x', MAX_NAME_LEN)
                    .parse()
                    .unwrap(),
                req: padded(&format!(">={i}.0.0-a"), 'a', MAX_VERSION_LEN)
                    .parse()
                    .unwrap(),
            })
            .collect(),
        archive: ArchiveInfo {
            id: ContentId::of(b"archive"),
            size: MAX_CHUNKS as u64 * u64::from(MIN_CHUNK_SIZE),
            chunk_size: MIN_CHUNK_SIZE,
            chunks: (0..MAX_CHUNKS as u32)
                .map(|i| ContentId::of(&i.to_le_bytes()))
                .collect(),
        },
        published_at: u64::MAX,
        publisher: key.public(),
        previous: Some(ContentId::of(b"previous")),
    };
    for d in &body.dependencies {
        assert_eq!(d.req.to_string().len(), MAX_VERSION_LEN, "{}", d.req);
    }
    Signed::sign(body, key).expect("a release within every field's limit is within the size")
}

/// One size rule: a record that fills every field's limit fits [`MAX_RECORD_BYTES`], and is
/// taken alike as a DHT value, in a gossip message, in a sync response and from the node's own
/// log (before, bincode's limit counted decoded sizes, and the log's decode refused it).
#[test]
fn the_largest_record_decodes_wherever_a_record_arrives_or_is_kept() {
    let key = PublisherSecret::from_bytes([9; 32]);
    let big = release_at_every_limit(&key);
    let value = big.encode();
    assert!(value.len() <= MAX_RECORD_BYTES, "{} bytes", value.len());
    assert!(
        value.len() > MAX_RECORD_BYTES - 1024,
        "{} bytes",
        value.len()
    );

    assert_eq!(ReleaseRecord::decode(&value).as_ref(), Ok(&big));
    let key_bytes = DhtKey::Release(big.body.name.clone(), big.body.version.clone()).to_bytes();
    assert_eq!(
        dht::validate(&key_bytes, &value),
        Ok(DhtValue::Release(big.clone()))
    );
    let gossip = GossipMessage::Release(big.clone()).to_wire();
    assert_eq!(gossip.len(), value.len() + 1);
    assert_eq!(
        GossipMessage::decode_verified(&gossip),
        Ok(GossipMessage::Release(big.clone()))
    );
    let record = CatalogRecord::Release(big.clone());
    assert_eq!(
        CatalogRecord::decode_stored(&codec::encode(&record)),
        Ok((record.clone(), big.id()))
    );
    let response = SyncResponse::Records {
        records: vec![record.clone(); MAX_SYNC_RESPONSE_BYTES / value.len()],
    };
    assert_eq!(SyncResponse::from_wire(&response.to_wire()), Ok(response));
}

/// A fetch request names the cut it checks the chunk against; the server cuts the blob so.
#[test]
fn a_fetch_request_names_its_cut_within_the_limits() {
    let c = ContentId::of(b"blob");
    let ask = |chunk_size, index| FetchRequest {
        content: c,
        chunk_size,
        index,
    };
    assert_eq!(ask(16_384, 0).range(40_000), Some((0, 16_384)));
    assert_eq!(ask(16_384, 2).range(40_000), Some((32_768, 7_232)));
    assert_eq!(ask(16_384, 3).range(40_000), None);
    assert_eq!(ask(65_536, 0).range(40_000), Some((0, 40_000)));
    for (size, why) in [
        (
            MIN_CHUNK_SIZE - 1,
            format!(
                "chunk size {} is outside 16384..=1048576",
                MIN_CHUNK_SIZE - 1
            ),
        ),
        (
            MAX_CHUNK_SIZE + 1,
            format!(
                "chunk size {} is outside 16384..=1048576",
                MAX_CHUNK_SIZE + 1
            ),
        ),
    ] {
        assert_eq!(
            FetchRequest::from_wire(&ask(size, 0).to_wire()),
            Err(DecodeError::Invalid(why))
        );
    }
    assert_eq!(
        FetchRequest::from_wire(&ask(MIN_CHUNK_SIZE, MAX_CHUNKS as u32).to_wire()),
        Err(DecodeError::Invalid(
            "chunk index 512 is past the 512-chunk limit".into()
        ))
    );
}

#[test]
fn a_have_map_must_fit_its_archive() {
    let held = [
        true, false, true, false, false, false, false, false, true, true,
    ];
    let have = Have::of(&held);
    assert_eq!(have, Have::Chunks(vec![0b0000_0101, 0b0000_0011]));
    assert_eq!(have.held(10), Ok(held.to_vec()));
    assert_eq!(Have::All.held(3), Ok(vec![true; 3]));
    assert_eq!(
        have.held(17),
        Err("a map of 2 bytes for 17 chunks; it takes 3".into())
    );
    assert_eq!(
        have.held(9),
        Err("the map names chunks past the last of 9".into())
    );
    let ask = |chunks: u32, have: Have| HaveRequest {
        content: ContentId::of(b"blob"),
        chunk_size: MIN_CHUNK_SIZE,
        chunks,
        have,
    };
    let fine = ask(10, have.clone());
    assert_eq!(HaveRequest::from_wire(&fine.to_wire()), Ok(fine));
    assert_eq!(
        HaveRequest::from_wire(&ask(9, have).to_wire()),
        Err(DecodeError::Invalid(
            "the map names chunks past the last of 9".into()
        ))
    );
    assert_eq!(
        HaveRequest::from_wire(&ask(0, Have::All).to_wire()),
        Err(DecodeError::Invalid(
            "0 chunks; an archive has 1..=512".into()
        ))
    );
    assert_eq!(
        HaveRequest::from_wire(&ask(10, Have::offer(&held)).to_wire()),
        Err(DecodeError::Invalid(
            "an asker says what it holds, not what it offers".into()
        ))
    );
    assert_eq!(Have::offer(&held).held(10), Ok(held.to_vec()));
    let full = ask(MAX_CHUNKS as u32, Have::of(&[true; MAX_CHUNKS]));
    assert!(full.to_wire().len() <= MAX_HAVE_BYTES);
    let long = HaveResponse::Have(Have::Chunks(vec![0xff; MAX_CHUNKS / 8 + 1]));
    assert_eq!(
        HaveResponse::from_wire(&long.to_wire()),
        Err(DecodeError::Invalid(
            "a map of 65 bytes; the limit is 64".into()
        ))
    );
}
