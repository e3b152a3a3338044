use super::*;
use agora_protocol::search::SortOrder;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A seal for `records` records (the log digest made up: only equality matters here).
fn seal(records: u64) -> Seal {
    Seal {
        records,
        log: ContentId::of(&records.to_le_bytes()),
    }
}

#[test]
fn a_seal_reads_back_only_as_written_in_this_format() {
    let s = seal(100_000);
    assert_eq!(Seal::parse(&s.text()), Some(s));
    assert_eq!(
        s.text(),
        format!("format={FORMAT} records=100000 log={}\n", s.log)
    );
    for text in [
        "format=2 records=7\n".to_owned(), // before the log digest
        s.text().replace(&format!("format={FORMAT}"), "format=99"),
        s.text().replace("records=100000", "records=-1"),
        s.text().replace(" log=", " log=00"),
        s.text().trim_end().to_owned(),
        s.text().replace('\n', " more\n"),
    ] {
        assert_eq!(Seal::parse(&text), None, "{text:?}");
    }
}

#[test]
fn a_catch_up_holds_only_for_the_sealed_first_records_and_names_those_after() {
    let ids: Vec<RecordId> = (0u8..5).map(|i| ContentId::of(&[i])).collect();
    let names: Vec<PackageName> = ["alpha", "beta", "gamma", "beta", "delta"]
        .map(|n| n.parse().unwrap())
        .into();
    let replay = |seal: Seal, upto: usize| {
        let mut c = CatchUp::new(seal);
        for (id, name) in ids.iter().zip(&names).take(upto) {
            c.record(id, name);
        }
        c.finish()
    };
    let sealed_at_2 = Seal::of_log(&ids[..2]);
    let tail: Vec<PackageName> = ["beta", "delta", "gamma"]
        .map(|n| n.parse().unwrap())
        .into();
    assert_eq!(replay(sealed_at_2, 5), Some((sealed_at_2, tail)));
    assert_eq!(replay(sealed_at_2, 2), Some((sealed_at_2, vec![])));
    assert_eq!(
        replay(sealed_at_2, 1),
        None,
        "the log is shorter than the seal"
    );
    let other_order = Seal::of_log([&ids[1], &ids[0]]);
    assert_eq!(
        replay(other_order, 5),
        None,
        "another log with the same records"
    );
    let empty = Seal::of_log([]);
    assert_eq!(replay(empty, 1), Some((empty, vec![names[0].clone()])));
}

fn doc(name: &str, desc: &str, category: &str, published_at: u64) -> IndexDoc {
    IndexDoc {
        name: name.into(),
        version: "1.0.0".into(),
        meta: PackageMeta {
            description: desc.into(),
            category: Some(category.into()),
            author: Some("ada".into()),
            license: Some("MIT".into()),
            tags: vec![category.into()],
            ..PackageMeta::default()
        },
        published_at,
    }
}

fn names(r: &SearchResults) -> Vec<&str> {
    r.hits.iter().map(|h| h.name.as_str()).collect()
}

fn sample() -> SearchIndex {
    let index = SearchIndex::in_memory().unwrap();
    index
        .update(
            &[
                doc("hello-world", "a greeting template", "starter", 3),
                doc("rust-web", "axum service skeleton", "web", 1),
                doc("react-app", "a web front end, hello included", "web", 2),
            ],
            &[],
        )
        .unwrap();
    index
}

#[test]
fn typos_find_the_package_and_names_rank_first() {
    let index = sample();
    let r = index.search(&SearchQuery::text("helo-wrld")).unwrap();
    assert_eq!(names(&r), ["hello-world"]);
    // "hello" in a name beats "hello" in a description.
    let r = index.search(&SearchQuery::text("hello")).unwrap();
    assert_eq!(names(&r), ["hello-world", "react-app"]);
    // A prefix of the last word.
    let r = index.search(&SearchQuery::text("ske")).unwrap();
    assert_eq!(names(&r), ["rust-web"]);
}

#[test]
fn filters_sorts_paging_and_facets() {
    let index = sample();
    let q = SearchQuery {
        category: Some("web".into()),
        sort: SortOrder::Name,
        ..SearchQuery::default()
    };
    let r = index.search(&q).unwrap();
    assert_eq!(names(&r), ["react-app", "rust-web"]);
    assert_eq!(r.total, 2);
    assert_eq!(r.categories, vec![("web".to_string(), 2)]);

    let q = SearchQuery {
        sort: SortOrder::Newest,
        limit: 1,
        offset: 1,
        ..SearchQuery::default()
    };
    let r = index.search(&q).unwrap();
    assert_eq!(names(&r), ["react-app"]);
    assert_eq!(r.total, 3);
    assert_eq!(
        r.categories,
        vec![("web".to_string(), 2), ("starter".to_string(), 1)]
    );

    let q = SearchQuery {
        tag: Some("starter".into()),
        author: Some("ada".into()),
        license: Some("MIT".into()),
        ..SearchQuery::default()
    };
    assert_eq!(names(&index.search(&q).unwrap()), ["hello-world"]);
    let q = SearchQuery {
        text: "hello".into(),
        author: Some("bob".into()),
        ..SearchQuery::default()
    };
    assert_eq!(index.search(&q).unwrap().total, 0);

    // Replacing a package's document keeps one document per name.
    index
        .update(
            &[doc("rust-web", "now with tower", "web", 9)],
            &["react-app".into()],
        )
        .unwrap();
    assert_eq!(index.num_docs(), 2);
    let r = index.search(&SearchQuery::text("tower")).unwrap();
    assert_eq!(names(&r), ["rust-web"]);
}

#[test]
fn one_flush_commits_every_name_marked_before_it() {
    let index = SearchIndex::in_memory().unwrap();
    let first = index.mark(["rust-web".to_string()]);
    let second = index.mark(["hello-world".to_string(), "rust-web".to_string()]);
    let mut asked = Vec::new();
    index
        .flush(second, |names| {
            asked.push(names.to_vec());
            Ok::<_, IndexError>((
                vec![
                    doc("hello-world", "greeting", "starter", 1),
                    doc("rust-web", "axum", "web", 2),
                ],
                vec![],
            ))
        })
        .unwrap();
    assert_eq!(asked, [["hello-world", "rust-web"]]);
    assert_eq!(index.num_docs(), 2);
    // The earlier ticket is already covered: nothing is asked, nothing committed.
    index
        .flush(first, |_| -> Result<_, IndexError> {
            panic!("nothing is left to commit")
        })
        .unwrap();
    // A name whose package has no installable release any more leaves the index.
    let third = index.mark(["rust-web".to_string()]);
    index
        .flush(third, |names| Ok::<_, IndexError>((vec![], names.to_vec())))
        .unwrap();
    assert_eq!(
        names(&index.search(&SearchQuery::default()).unwrap()),
        ["hello-world"]
    );
}

#[test]
fn a_failed_flush_leaves_its_names_for_the_next() {
    let index = SearchIndex::in_memory().unwrap();
    let t = index.mark(["hello-world".to_string()]);
    let failed = index.flush(t, |_| {
        Err::<(Vec<IndexDoc>, Vec<String>), _>(IndexError::InvalidQuery("disk".into()))
    });
    assert!(matches!(failed, Err(IndexError::InvalidQuery(m)) if m == "disk"));
    let mut asked = Vec::new();
    index
        .flush(t, |names| {
            asked = names.to_vec();
            Ok::<_, IndexError>((vec![doc("hello-world", "hi", "starter", 1)], vec![]))
        })
        .unwrap();
    assert_eq!(asked, ["hello-world"]);
    assert_eq!(index.num_docs(), 1);
}

/// A search during a rebuild waits for the whole index: it never answers from the part
/// indexed so far (nor from the empty index before it).
#[test]
fn a_search_during_a_rebuild_waits_for_all_of_it() {
    let index = SearchIndex::in_memory().unwrap();
    index.begin_rebuild();
    assert_eq!(index.state(), IndexState::Rebuilding);
    let (feed, fed) = std::sync::mpsc::channel::<IndexDoc>();
    let (first_added, added) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(|| {
            index
                .rebuild_with(|add| {
                    for doc in fed {
                        add(doc)?;
                        let _ = first_added.send(());
                    }
                    Ok::<_, IndexError>(())
                })
                .unwrap()
        });
        feed.send(doc("hello-world", "a greeting", "starter", 1))
            .unwrap();
        added.recv().unwrap();
        let (answer, answered) = std::sync::mpsc::channel();
        let index = &index;
        s.spawn(move || answer.send(index.search(&SearchQuery::default())).unwrap());
        // Waiting, with one document of two indexed.
        while index.waiting.load(Ordering::Acquire) == 0 {
            if let Ok(early) = answered.try_recv() {
                panic!("answered during the rebuild: {early:?}");
            }
            std::thread::yield_now();
        }
        feed.send(doc("rust-web", "axum service", "web", 2))
            .unwrap();
        drop(feed);
        let found = answered.recv().unwrap().unwrap();
        assert_eq!(names(&found), ["hello-world", "rust-web"]);
    });
    assert_eq!(index.state(), IndexState::Ready);
    assert_eq!(index.num_docs(), 2);
}

/// A rebuild that fails leaves searches refused with its reason (not answered from an
/// empty index), commits nothing of what it had indexed, and is never saved.
#[test]
fn a_failed_rebuild_refuses_searches_and_is_not_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("index");
    let (index, _) = SearchIndex::open(&dir, None).unwrap();
    index.begin_rebuild();
    let failed = index.rebuild_with(|add| {
        add(doc("hello-world", "a greeting", "starter", 1))?;
        Err(IndexError::Io(std::io::Error::other("log unreadable")))
    });
    assert_eq!(
        failed.unwrap_err().to_string(),
        "search index i/o: log unreadable"
    );
    assert_eq!(
        index.state(),
        IndexState::Failed("search index i/o: log unreadable".into())
    );
    assert_eq!(
        index
            .search(&SearchQuery::default())
            .unwrap_err()
            .to_string(),
        "the search index could not be rebuilt (search index i/o: log unreadable); \
         restart agorad to rebuild it"
    );
    // A later change does not commit the failed rebuild's documents.
    index
        .update(&[doc("rust-web", "axum", "web", 2)], &[])
        .unwrap();
    assert_eq!(index.num_docs(), 1);
    index.seal(seal(1)).unwrap();
    assert!(!dir.exists(), "nothing saved");
}

/// A byte flipped in any file of the saved copy, or a file cut short or gone: the copy is
/// not used (the caller rebuilds the index from the catalog) and nothing fails.
#[test]
fn a_damaged_saved_copy_is_never_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("index");
    let (index, _) = SearchIndex::open(&dir, None).unwrap();
    let docs: Vec<IndexDoc> = (0..50)
        .map(|i| doc(&format!("pkg-{i}"), "templates for a web app", "web", i))
        .collect();
    index.update(&docs, &[]).unwrap();
    index.seal(seal(50)).unwrap();
    drop(index);
    let saved = tmp.path().join("saved");
    std::fs::rename(&dir, &saved).unwrap();
    let files: Vec<String> = std::fs::read_dir(&saved)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != snapshot::SEAL_FILE)
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    let copy = || {
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&saved).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    };
    copy();
    let (index, kept) = SearchIndex::open(&dir, Some(seal(50))).unwrap();
    assert!(kept && index.num_docs() == 50, "the sound copy is used");
    drop(index);
    for file in &files {
        let bytes = std::fs::read(saved.join(file)).unwrap();
        let damages: [(&str, Option<Vec<u8>>); 3] = [
            ("a flipped byte", {
                let mut b = bytes.clone();
                if !b.is_empty() {
                    let middle = b.len() / 2;
                    b[middle] ^= 0x10;
                }
                Some(b)
            }),
            ("cut short", Some(bytes[..bytes.len() / 2].to_vec())),
            ("gone", None),
        ];
        for (how, damaged) in damages {
            std::fs::remove_dir_all(&dir).unwrap();
            copy();
            match damaged {
                Some(b) => std::fs::write(dir.join(file), b).unwrap(),
                None => std::fs::remove_file(dir.join(file)).unwrap(),
            }
            let (index, kept) = SearchIndex::open(&dir, Some(seal(50)))
                .unwrap_or_else(|e| panic!("{file} {how}: {e}"));
            assert!(!kept, "{file} {how}: the damaged copy was used");
            assert_eq!(index.num_docs(), 0, "{file} {how}");
        }
    }
}

#[test]
fn a_seal_writes_only_when_the_saved_copy_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("index");
    let (index, _) = SearchIndex::open(&dir, None).unwrap();
    index
        .update(&[doc("hello-world", "hi", "starter", 1)], &[])
        .unwrap();
    index.seal(seal(3)).unwrap();
    drop(index);
    let (index, kept) = SearchIndex::open(&dir, Some(seal(3))).unwrap();
    assert!(kept);
    // A file in the saved copy that the index in memory does not have: a save replaces
    // the whole directory, so the file tells whether one happened.
    let marker = dir.join("marker");
    std::fs::write(&marker, b"x").unwrap();
    index.seal(seal(3)).unwrap();
    assert!(marker.exists(), "loaded and unchanged: nothing written");
    index.seal(seal(4)).unwrap();
    assert!(!marker.exists(), "sealed for another catalog: written");
    std::fs::write(&marker, b"x").unwrap();
    index
        .update(&[doc("rust-web", "axum", "web", 2)], &[])
        .unwrap();
    index.seal(seal(4)).unwrap();
    assert!(!marker.exists(), "changed since: written");
    drop(index);
    let (index, kept) = SearchIndex::open(&dir, Some(seal(4))).unwrap();
    assert!(kept);
    assert_eq!(index.num_docs(), 2);
}

#[test]
fn only_an_index_sealed_for_the_same_catalog_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("index");
    let (index, kept) = SearchIndex::open(&dir, None).unwrap();
    assert!(!kept, "a new index has nothing to keep");
    index
        .update(&[doc("hello-world", "hi", "starter", 1)], &[])
        .unwrap();
    index.seal(seal(7)).unwrap();
    drop(index);

    // Sealed for 7 records: kept when the catalog has 7.
    let (index, kept) = SearchIndex::open(&dir, Some(seal(7))).unwrap();
    assert!(kept);
    assert_eq!(index.num_docs(), 1);
    // Changes after the start live in memory only: if the node stops without sealing
    // (a crash), the saved copy is what the next start finds, still sealed for 7.
    index
        .update(&[doc("rust-web", "axum", "web", 2)], &[])
        .unwrap();
    drop(index);
    let (index, kept) = SearchIndex::open(&dir, Some(seal(7))).unwrap();
    assert!(kept);
    assert_eq!(index.num_docs(), 1);
    drop(index);

    // A shutdown that stopped while writing the next copy: the old one stands.
    std::fs::create_dir_all(dir.with_extension("new")).unwrap();
    std::fs::write(dir.with_extension("new").join("junk"), b"half").unwrap();
    let (index, kept) = SearchIndex::open(&dir, Some(seal(7))).unwrap();
    assert!(kept);
    assert_eq!(index.num_docs(), 1);
    assert!(!dir.with_extension("new").exists());
    drop(index);

    // A save that stopped after sealing the next copy, while removing the old one (its
    // seal already gone): the next copy is whole, and taken.
    let next = dir.with_extension("new");
    std::fs::create_dir_all(&next).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), next.join(entry.file_name())).unwrap();
    }
    std::fs::write(next.join(snapshot::SEAL_FILE), seal(9).text()).unwrap();
    std::fs::remove_file(dir.join(snapshot::SEAL_FILE)).unwrap();
    assert_eq!(SearchIndex::load_saved(&dir).map(|s| s.seal), Some(seal(9)));
    assert!(!next.exists());
    let (index, kept) = SearchIndex::open(&dir, Some(seal(9))).unwrap();
    assert!(kept);
    assert_eq!(index.num_docs(), 1);
    drop(index);
    std::fs::write(dir.join(snapshot::SEAL_FILE), seal(7).text()).unwrap();

    // Sealed for another catalog (records were added while it was closed): discarded.
    let (index, kept) = SearchIndex::open(&dir, Some(seal(8))).unwrap();
    assert!(!kept);
    assert_eq!(index.num_docs(), 0);
}

/// Flushes `names` as the registry does: their documents come from `catalog`.
fn flush_from(index: &SearchIndex, catalog: &BTreeMap<String, IndexDoc>, names: &[&str]) {
    let t = index.mark(names.iter().map(|n| n.to_string()));
    index
        .flush(t, |names| {
            let mut docs = Vec::new();
            let mut removed = Vec::new();
            for n in names {
                match catalog.get(n) {
                    Some(d) => docs.push(d.clone()),
                    None => removed.push(n.clone()),
                }
            }
            Ok::<_, IndexError>((docs, removed))
        })
        .unwrap();
}

#[test]
fn the_overlay_hides_what_it_replaces_and_merges_into_one_page() {
    let index = sample(); // hello-world (starter), rust-web (web), react-app (web): base
    let mut catalog: BTreeMap<String, IndexDoc> = BTreeMap::new();
    catalog.insert(
        "rust-web".into(),
        doc("rust-web", "now with tower", "web", 9),
    );
    catalog.insert(
        "zig-cli".into(),
        doc("zig-cli", "a tower of flags", "cli", 5),
    );
    // react-app has no installable release any more.
    flush_from(&index, &catalog, &["rust-web", "zig-cli", "react-app"]);
    assert!(
        index.current().unwrap().has_overlay(),
        "changes went to the overlay"
    );
    assert_eq!(index.num_docs(), 3);

    let all = index.search(&SearchQuery::default()).unwrap();
    assert_eq!(names(&all), ["hello-world", "rust-web", "zig-cli"]);
    assert_eq!(all.total, 3);
    assert_eq!(
        all.categories,
        vec![
            ("cli".to_string(), 1),
            ("starter".to_string(), 1),
            ("web".to_string(), 1)
        ]
    );
    // The replaced document is found by its new text only.
    assert_eq!(
        names(&index.search(&SearchQuery::text("axum")).unwrap()),
        Vec::<&str>::new()
    );
    let r = index.search(&SearchQuery::text("tower")).unwrap();
    assert_eq!(r.total, 2);
    let mut found = names(&r);
    found.sort();
    assert_eq!(found, ["rust-web", "zig-cli"]);
    assert_eq!(
        r.hits
            .iter()
            .find(|h| h.name == "rust-web")
            .unwrap()
            .description,
        "now with tower"
    );
    // Paging runs over the merged list.
    let q = SearchQuery {
        sort: SortOrder::Newest,
        limit: 2,
        offset: 1,
        ..SearchQuery::default()
    };
    assert_eq!(
        names(&index.search(&q).unwrap()),
        ["zig-cli", "hello-world"]
    );

    // A full overlay is folded into the base: same answers, no overlay left.
    let more: Vec<String> = (0..OVERLAY_MAX).map(|i| format!("pkg-{i:03}")).collect();
    for n in &more {
        catalog.insert(n.clone(), doc(n, "filler", "data", 1));
    }
    let refs: Vec<&str> = more.iter().map(String::as_str).collect();
    flush_from(&index, &catalog, &refs);
    assert!(!index.current().unwrap().has_overlay());
    assert_eq!(index.num_docs(), 3 + OVERLAY_MAX as u64);
    let r = index.search(&SearchQuery::text("tower")).unwrap();
    assert_eq!(r.total, 2);
    assert_eq!(index.search(&SearchQuery::text("axum")).unwrap().total, 0);
}

#[test]
fn a_change_is_built_into_a_view_by_the_first_search_after_it() {
    let index = sample();
    let mut catalog: BTreeMap<String, IndexDoc> = BTreeMap::new();
    catalog.insert(
        "zig-cli".into(),
        doc("zig-cli", "a tower of flags", "cli", 5),
    );
    flush_from(&index, &catalog, &["zig-cli"]);
    // Flushed: counted at once, but the overlay is not indexed until a search needs it.
    assert_eq!(index.num_docs(), 4);
    assert!(!index.built().has_overlay(), "the flush indexed no overlay");

    let r = index.search(&SearchQuery::text("tower")).unwrap();
    assert_eq!(names(&r), ["zig-cli"]);
    let built = index.built();
    assert!(built.has_overlay(), "the search built the overlay");
    // Searches after it read that view; nothing is built again.
    index.search(&SearchQuery::text("flags")).unwrap();
    assert!(Arc::ptr_eq(&built, &index.built()));

    // A removal is also counted at once and seen by the next search.
    catalog.remove("zig-cli");
    flush_from(&index, &catalog, &["zig-cli"]);
    assert_eq!(index.num_docs(), 3);
    assert!(
        Arc::ptr_eq(&built, &index.built()),
        "not rebuilt by the flush"
    );
    assert_eq!(index.search(&SearchQuery::text("tower")).unwrap().total, 0);
}

#[test]
fn the_first_search_after_a_merge_reads_the_merged_segments() {
    let index = SearchIndex::in_memory().unwrap();
    let segments = || index.reader.searcher().segment_readers().len();
    // Three commits of three packages: three segments (too few for the merge policy).
    for commit in 0..3 {
        let docs: Vec<IndexDoc> = (0..3)
            .map(|i| doc(&format!("pkg-{commit}-{i}"), "a widget", "web", i))
            .collect();
        index.update(&docs, &[]).unwrap();
        index.fold(&mut lock(&index.tiers)).unwrap();
    }
    lock(&index.tiers).settle();
    let built = index.built();
    assert_eq!(segments(), 3);
    // The merge policy leaves three segments as they are: the first search after the
    // writers retired finds nothing merged and builds nothing new.
    index.search(&SearchQuery::text("widget")).unwrap();
    assert!(Arc::ptr_eq(&built, &index.built()), "nothing merged");

    // A writer merges them into one and retires; the reader has not seen it.
    {
        let mut tiers = lock(&index.tiers);
        let ids = tiers.index.searchable_segment_ids().unwrap();
        tiers.writer().unwrap().merge(&ids).wait().unwrap();
        tiers.retire();
        tiers.settle();
    }
    assert!(index.merged.load(Ordering::Acquire));
    assert_eq!(segments(), 3);

    let r = index.search(&SearchQuery::text("widget")).unwrap();
    assert_eq!(r.total, 9);
    assert_eq!(segments(), 1, "the search reloaded the merged base");
    assert!(!index.merged.load(Ordering::Acquire));
    let built = index.built();
    index.search(&SearchQuery::text("widget")).unwrap();
    assert!(Arc::ptr_eq(&built, &index.built()), "reloaded only once");
}

fn arb_doc() -> impl Strategy<Value = IndexDoc> {
    let word = prop::sample::select(vec!["tower", "axum", "parser", "hello", "widget"]);
    (0u8..12, word.clone(), word, 0usize..3, 0u64..20).prop_map(|(n, w1, w2, c, t)| {
        doc(
            &format!("pkg-{n}"),
            &format!("{w1} {w2}"),
            ["web", "cli", "data"][c],
            t,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever mix of base and overlay the changes leave, a search answers exactly as
    /// an index holding only the final documents (relevance order aside: the tiers share
    /// statistics that still count hidden documents, so only the set is compared).
    #[test]
    fn two_tiers_answer_as_one(
        rounds in prop::collection::vec(
            (prop::collection::vec(arb_doc(), 0..6), prop::collection::vec(0u8..12, 0..3), 0u8..3),
            1..6,
        )
    ) {
        let index = SearchIndex::in_memory().unwrap();
        let mut catalog: BTreeMap<String, IndexDoc> = BTreeMap::new();
        // How each round's changes go in: 0 flushed into the overlay, 1 flushed and then
        // folded, 2 by `update` (committed to the base with whatever the overlay holds).
        for (docs, gone, how) in rounds {
            let mut touched: Vec<String> = docs.iter().map(|d| d.name.clone()).collect();
            for d in docs {
                catalog.insert(d.name.clone(), d);
            }
            for g in gone {
                let n = format!("pkg-{g}");
                catalog.remove(&n);
                touched.push(n);
            }
            if how == 2 {
                let (now, gone): (Vec<String>, Vec<String>) =
                    touched.into_iter().partition(|n| catalog.contains_key(n));
                let now: Vec<IndexDoc> = now.iter().map(|n| catalog[n].clone()).collect();
                index.update(&now, &gone).unwrap();
                continue;
            }
            let refs: Vec<&str> = touched.iter().map(String::as_str).collect();
            flush_from(&index, &catalog, &refs);
            if how == 1 {
                index.update(&[], &[]).unwrap();
            }
        }
        // Browsing, against the catalog itself: names in order, pages, counts.
        let names_in_order: Vec<&str> = catalog.keys().map(String::as_str).collect();
        let mut per_category: BTreeMap<String, u64> = BTreeMap::new();
        for d in catalog.values() {
            *per_category.entry(d.meta.category.clone().unwrap()).or_default() += 1;
        }
        let mut per_category: Vec<(String, u64)> = per_category.into_iter().collect();
        per_category.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (offset, limit) in [(0, 1000), (0, 1), (3, 4), (11, 5)] {
            let q = SearchQuery { offset, limit, ..SearchQuery::default() };
            let page = index.search(&q).unwrap();
            let want: Vec<&str> = names_in_order.iter().skip(offset as usize).take(limit as usize).copied().collect();
            prop_assert_eq!(names(&page), want);
            prop_assert_eq!(page.total, catalog.len() as u64);
            prop_assert_eq!(&page.categories, &per_category);
        }
        let reference = SearchIndex::in_memory().unwrap();
        reference.rebuild(catalog.values().cloned()).unwrap();
        prop_assert_eq!(index.num_docs(), catalog.len() as u64);
        for text in ["", "tower", "axum parser", "helo", "wid"] {
            for sort in [SortOrder::Relevance, SortOrder::Name, SortOrder::Newest] {
                let q = SearchQuery { text: text.into(), sort, limit: 1000, ..SearchQuery::default() };
                let got = index.search(&q).unwrap();
                let want = reference.search(&q).unwrap();
                prop_assert_eq!(got.total, want.total);
                prop_assert_eq!(&got.categories, &want.categories);
                if sort == SortOrder::Name || (sort == SortOrder::Relevance && text.is_empty()) {
                    prop_assert_eq!(got.hits, want.hits);
                } else if sort == SortOrder::Newest {
                    let key = |r: &SearchResults| r.hits.iter().map(|h| h.published_at).collect::<Vec<_>>();
                    prop_assert_eq!(key(&got), key(&want));
                } else {
                    let set = |r: &SearchResults| r.hits.iter().map(|h| h.name.clone()).collect::<BTreeSet<_>>();
                    prop_assert_eq!(set(&got), set(&want));
                }
            }
        }
    }
}

#[test]
fn an_oversized_query_is_refused() {
    let index = sample();
    let q = SearchQuery::text("x".repeat(300));
    assert!(matches!(
        index.search(&q),
        Err(IndexError::InvalidQuery(m)) if m == "query is 300 bytes; the limit is 256"
    ));
    // A page deep past the result window would make the index hold that many candidates.
    let deep = SearchQuery {
        offset: u32::MAX,
        ..SearchQuery::default()
    };
    assert!(matches!(
        index.search(&deep),
        Err(IndexError::InvalidQuery(m))
            if m == "offset 4294967295 and limit 20 reach past result 10000, the deepest a search pages"
    ));
    let last_page = SearchQuery {
        offset: 9_000,
        limit: 1_000,
        ..SearchQuery::default()
    };
    assert_eq!(index.search(&last_page).unwrap().total, 3);
}
