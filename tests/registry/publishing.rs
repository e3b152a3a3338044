//! Publishing across nodes: a release found by a typo search elsewhere, dependencies resolved on another node with yanks and a rotated key, a bad package refused.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_published_on_node_a_is_found_by_a_typo_search_on_node_e() {
    init_tracing();
    let nodes = testnet(5).await;
    let key = publisher(1);
    let dir = package_dir("hello-world", "1.0.0", &[], 10_000, 1);
    let record = publish(&nodes[0].0, &dir, &key).await;
    assert_eq!(record.body.name.as_str(), "hello-world");
    // The ggen table we do not interpret is not lost: the archive holds package.toml as is.
    assert_eq!(record.body.meta.category.as_deref(), Some("starter"));

    let e = &nodes[4].0;
    converge("search on node E", DEADLINE, || async {
        let found = names(&e.registry, "helo-wrld");
        if found == ["hello-world"] {
            Ok(())
        } else {
            Err(format!("search returned {found:?}"))
        }
    })
    .await;
    let hit = &e
        .registry
        .search(SearchQuery::text("hello"))
        .await
        .unwrap()
        .hits[0];
    assert_eq!(
        (
            hit.version.as_str(),
            hit.author.as_deref(),
            hit.tags.clone()
        ),
        ("1.0.0", Some("Ada"), vec!["demo".to_string()])
    );
    let got = e
        .registry
        .blocking_catalog()
        .get(&"hello-world".parse().unwrap(), &VersionReq::STAR)
        .unwrap();
    assert_eq!(got, record);
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_resolve_on_another_node_yanks_are_honoured_and_a_rotated_key_publishes() {
    init_tracing();
    let nodes = testnet(3).await;
    let (a, b) = (&nodes[0].0, &nodes[2].0);
    let (owner, heir) = (publisher(11), publisher(12));
    publish(a, &package_dir("lib", "1.0.0", &[], 100, 40), &owner).await;
    let lib11 = publish(a, &package_dir("lib", "1.1.0", &[], 100, 41), &owner).await;
    publish(a, &package_dir("lib", "2.0.0", &[], 100, 42), &owner).await;
    let app = publish(
        a,
        &package_dir("app", "1.0.0", &["lib@^1"], 100, 43),
        &owner,
    )
    .await;
    assert_eq!(app.body.dependencies[0].to_string(), "lib@^1");
    await_catalog(b, 4, "all four releases on node B").await;
    let resolved = |reg: &Registry| -> Vec<String> {
        reg.blocking_catalog()
            .resolve(&["app".parse().unwrap()], &Default::default())
            .unwrap()
            .into_iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect()
    };
    assert_eq!(resolved(&b.registry), ["app@1.0.0", "lib@1.1.0"]);
    let err = b
        .registry
        .blocking_catalog()
        .resolve(
            &["app".parse().unwrap(), "lib@^3".parse().unwrap()],
            &Default::default(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Because there is no version of lib in >=3.0.0, <4.0.0 and the request needs lib \
         >=3.0.0, <4.0.0, the request cannot be met.\nNo installable version of 'lib' matches \
         ^3 (available: 1.0.0, 1.1.0, 2.0.0)."
    );

    // The owner yanks lib 1.1.0: new resolutions on B pick 1.0.0; a lockfile can still get 1.1.0.
    a.registry
        .yank(
            &"lib".parse().unwrap(),
            &Version::new(1, 1, 0),
            "broken build".into(),
            &owner,
        )
        .await
        .unwrap();
    converge("node B honours the yank", DEADLINE, || async {
        let v = b.registry.view().versions(&"lib".parse().unwrap()).unwrap();
        if v.iter().any(|v| v.yanked) {
            Ok(())
        } else {
            Err("no yank yet".into())
        }
    })
    .await;
    let yanked: Vec<(String, bool)> = b
        .registry
        .view()
        .versions(&"lib".parse().unwrap())
        .unwrap()
        .into_iter()
        .map(|v| (v.version.to_string(), v.yanked))
        .collect();
    assert_eq!(
        yanked,
        [
            ("1.0.0".to_string(), false),
            ("1.1.0".to_string(), true),
            ("2.0.0".to_string(), false)
        ]
    );
    assert_eq!(resolved(&b.registry), ["app@1.0.0", "lib@1.0.0"]);
    assert_eq!(
        b.registry
            .blocking_catalog()
            .release(&"lib".parse().unwrap(), &Version::new(1, 1, 0))
            .unwrap(),
        lib11
    );

    // The owner hands the name to another key, which then publishes 3.0.0.
    a.registry
        .rotate(&"lib".parse().unwrap(), heir.public(), &owner)
        .await
        .unwrap();
    converge("node B knows the new owner", DEADLINE, || async {
        if b.registry.view().owner(&"lib".parse().unwrap()) == Some(heir.public()) {
            Ok(())
        } else {
            Err("old owner still".into())
        }
    })
    .await;
    let v3 = publish(a, &package_dir("lib", "3.0.0", &[], 100, 44), &heir).await;
    converge("the heir's release reaches node B", DEADLINE, || async {
        if b.registry.view().has_record(&v3.id()) {
            Ok(())
        } else {
            Err("missing".into())
        }
    })
    .await;
    // The old key can no longer publish the name.
    assert!(matches!(
        a.registry
            .publish(package_dir("lib", "4.0.0", &[], 100, 45), &owner)
            .await,
        Err(RegistryError::Trust(TrustError::NotOwner { .. }))
    ));
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_package_is_refused_with_a_precise_error_and_changes_nothing() {
    init_tracing();
    let (node, _) = start_node().await;
    let key = publisher(13);
    publish(&node, &package_dir("fine", "1.0.0", &[], 100, 50), &key).await;
    let before = (
        node.registry.view().record_count(),
        node.registry.blobs.usage(),
        node.registry.blobs.persisted_count().unwrap(),
    );

    let bad = package_dir("broken", "1.0.0", &[], 100, 51);
    std::fs::write(
        bad.join("package.toml"),
        "[package]\nname = \"broken\"\nversion = \"one\"\ndescription = \"x\"\n",
    )
    .unwrap();
    let err = node.registry.publish(bad.clone(), &key).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}:3:", bad.join("package.toml").display())),
        "{msg}"
    );

    let linked = package_dir("linked", "1.0.0", &[], 100, 52);
    std::os::unix::fs::symlink("/etc/hostname", linked.join("templates/link")).unwrap();
    let err = node
        .registry
        .publish(linked.clone(), &key)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is a symlink; packages may contain only regular files and directories",
            linked.join("templates/link").display()
        )
    );

    let older = node
        .registry
        .publish(package_dir("fine", "0.9.0", &[], 100, 53), &key)
        .await
        .unwrap_err();
    assert_eq!(
        older.to_string(),
        "fine@0.9.0 is not newer than 1.0.0, the highest version published"
    );

    let after = (
        node.registry.view().record_count(),
        node.registry.blobs.usage(),
        node.registry.blobs.persisted_count().unwrap(),
    );
    assert_eq!(before, after);
    assert!(!node.registry.view().exists(&"broken".parse().unwrap()));
    node.shutdown().await;
}
