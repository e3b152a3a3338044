use proptest::prelude::*;

use super::*;

fn dep(s: &str) -> Dependency {
    s.parse().unwrap()
}

type Catalog = BTreeMap<PackageName, Vec<Candidate>>;

fn catalog(entries: &[(&str, &str, &[&str])]) -> Catalog {
    let mut map: Catalog = BTreeMap::new();
    for (name, version, deps) in entries {
        map.entry(name.parse().unwrap())
            .or_default()
            .push(Candidate {
                version: version.parse().unwrap(),
                dependencies: deps.iter().map(|d| dep(d)).collect(),
            });
    }
    map
}

fn solve(
    roots: &[&str],
    cat: &Catalog,
    prefer: &[(&str, &str)],
) -> Result<BTreeMap<PackageName, Candidate>, ResolveError> {
    let roots: Vec<Dependency> = roots.iter().map(|d| dep(d)).collect();
    let prefer = prefer
        .iter()
        .map(|(n, v)| (n.parse().unwrap(), v.parse().unwrap()))
        .collect();
    resolve(&roots, &prefer, |name| cat.get(name).cloned())
}

fn versions(r: &BTreeMap<PackageName, Candidate>) -> Vec<String> {
    r.iter()
        .map(|(n, c)| format!("{n}@{}", c.version))
        .collect()
}

#[test]
fn picks_the_highest_version_every_requirement_allows() {
    let cat = catalog(&[
        ("app", "1.0.0", &["lib@^1", "util"]),
        ("lib", "1.0.0", &[]),
        ("lib", "1.4.0", &[]),
        ("lib", "2.0.0", &[]),
        ("util", "1.0.0", &["lib@<1.3"]),
    ]);
    let r = solve(&["app"], &cat, &[]).unwrap();
    assert_eq!(versions(&r), ["app@1.0.0", "lib@1.0.0", "util@1.0.0"]);
}

/// The case the hand-written resolver could not solve: it chose mid 1.1.0 for being highest
/// and never went back on it.
#[test]
fn an_earlier_choice_is_undone_when_only_an_older_version_fits_everything() {
    let cat = catalog(&[
        ("base", "1.0.0", &[]),
        ("base", "2.0.0", &[]),
        ("mid", "1.0.0", &["base@^1"]),
        ("mid", "1.1.0", &["base@^2"]),
        ("app", "1.0.0", &["mid@^1", "base@^1"]),
    ]);
    let r = solve(&["app"], &cat, &[]).unwrap();
    assert_eq!(versions(&r), ["app@1.0.0", "base@1.0.0", "mid@1.0.0"]);
}

#[test]
fn a_pinned_version_is_kept_while_it_fits_and_dropped_when_it_does_not() {
    let cat = catalog(&[
        ("lib", "1.0.0", &[]),
        ("lib", "1.2.0", &[]),
        ("lib", "2.0.0", &[]),
    ]);
    let kept = solve(&["lib@^1"], &cat, &[("lib", "1.0.0")]).unwrap();
    assert_eq!(versions(&kept), ["lib@1.0.0"]);
    let moved = solve(&["lib@^2"], &cat, &[("lib", "1.0.0")]).unwrap();
    assert_eq!(versions(&moved), ["lib@2.0.0"]);
}

#[test]
fn a_failure_explains_itself_and_names_what_the_catalog_lacks() {
    let missing = solve(&["app"], &catalog(&[("app", "1.0.0", &["ghost@^1"])]), &[]);
    assert_eq!(
        missing,
        Err(ResolveError::NoSolution {
            explanation: "Because app depends on ghost >=1.0.0, <2.0.0 and the request needs \
                          app, the request cannot be met.\n'ghost' is not in the catalog."
                .into(),
            missing: vec!["ghost".parse().unwrap()],
            unmatched: vec![],
        })
    );

    let cat = catalog(&[("app", "1.0.0", &["lib@^2"]), ("lib", "1.5.0", &[])]);
    let Err(ResolveError::NoSolution {
        explanation,
        missing,
        unmatched,
    }) = solve(&["app"], &cat, &[])
    else {
        panic!("lib 1.5.0 does not satisfy ^2");
    };
    assert_eq!(
        explanation,
        "Because app depends on lib >=2.0.0, <3.0.0 and the request needs app, the request \
         cannot be met.\nNo installable version of 'lib' matches ^2 (available: 1.5.0)."
    );
    assert_eq!(missing, Vec::<PackageName>::new());
    assert_eq!(unmatched, vec![dep("lib@^2")]);

    // Two requirements that exclude each other, each met by a version of its own.
    let cat = catalog(&[
        ("base", "1.0.0", &[]),
        ("base", "2.0.0", &[]),
        ("a", "1.0.0", &["base@^1"]),
        ("b", "1.0.0", &["base@^2"]),
    ]);
    let Err(ResolveError::NoSolution {
        explanation,
        missing,
        unmatched,
    }) = solve(&["a", "b"], &cat, &[])
    else {
        panic!("a and b need different majors of base");
    };
    assert!(
        explanation.contains("depends on base >=1.0.0, <2.0.0"),
        "{explanation}"
    );
    assert!(
        explanation.contains("depends on base >=2.0.0, <3.0.0"),
        "{explanation}"
    );
    assert_eq!((missing, unmatched), (vec![], vec![]), "nothing to look up");
}

#[test]
fn a_cycle_is_a_solution() {
    let cat = catalog(&[
        ("a", "1.0.0", &["b"]),
        ("b", "1.0.0", &["c"]),
        ("c", "1.0.0", &["a"]),
    ]);
    let r = solve(&["a"], &cat, &[]).unwrap();
    assert_eq!(versions(&r), ["a@1.0.0", "b@1.0.0", "c@1.0.0"]);
}

#[test]
fn pre_releases_follow_semvers_rules() {
    let cat = catalog(&[
        ("lib", "1.0.0", &[]),
        ("lib", "1.1.0-beta.1", &[]),
        ("lib", "2.0.0-rc.1", &[]),
    ]);
    // A pre-release is taken only when the requirement names one of its version.
    let r = solve(&["lib@^1"], &cat, &[]).unwrap();
    assert_eq!(versions(&r), ["lib@1.0.0"]);
    let r = solve(&["lib@>=1.1.0-beta.1"], &cat, &[]).unwrap();
    assert_eq!(versions(&r), ["lib@1.1.0-beta.1"]);
    let r = solve(&["lib@=2.0.0-rc.1"], &cat, &[]).unwrap();
    assert_eq!(versions(&r), ["lib@2.0.0-rc.1"]);
}

#[test]
fn every_operator_becomes_the_range_semver_matches() {
    let all: Vec<Version> = [
        "0.0.1", "0.0.2", "0.1.0", "0.1.5", "0.2.0", "1.0.0", "1.2.0", "1.2.3", "1.2.4", "1.3.0",
        "2.0.0", "3.1.4",
    ]
    .iter()
    .map(|v| v.parse().unwrap())
    .collect();
    for req in [
        "=1.2.3",
        "=1.2",
        "=1",
        ">1.2.3",
        ">1.2",
        ">1",
        ">=1.2.3",
        ">=1.2",
        ">=1",
        "<1.2.3",
        "<1.2",
        "<1",
        "<=1.2.3",
        "<=1.2",
        "<=1",
        "~1.2.3",
        "~1.2",
        "~1",
        "^1.2.3",
        "^1.2",
        "^1",
        "^0.1.5",
        "^0.1",
        "^0.0.1",
        "^0.0",
        "^0",
        "1.*",
        "1.2.*",
        "*",
        ">=1.2, <2",
    ] {
        let parsed: VersionReq = req.parse().unwrap();
        let set = req_ranges(&parsed);
        for v in &all {
            assert_eq!(set.contains(v), parsed.matches(v), "{req} and {v}");
        }
    }
}

/// Every choice of at most one version per name (or none), for the brute-force solver.
fn assignments(cat: &Catalog) -> Vec<BTreeMap<PackageName, Candidate>> {
    let mut out = vec![BTreeMap::new()];
    for (name, versions) in cat {
        let mut next = Vec::new();
        for partial in &out {
            next.push(partial.clone());
            for c in versions {
                let mut with = partial.clone();
                with.insert(name.clone(), c.clone());
                next.push(with);
            }
        }
        out = next;
    }
    out
}

/// Whether `chosen` meets `roots` and every dependency of every chosen version.
fn satisfies(roots: &[Dependency], chosen: &BTreeMap<PackageName, Candidate>) -> bool {
    let met = |d: &Dependency| {
        chosen
            .get(&d.name)
            .is_some_and(|c| d.req.matches(&c.version))
    };
    roots.iter().all(met) && chosen.values().all(|c| c.dependencies.iter().all(met))
}

fn small_catalog() -> impl Strategy<Value = (Catalog, Vec<Dependency>)> {
    let names = ["a", "b", "c", "d"];
    let versions = ["1.0.0", "1.1.0", "2.0.0"];
    let reqs = ["*", "^1", "^2", "=1.0.0", ">=1.1.0", "<2"];
    let dependency = (0..names.len(), 0..reqs.len())
        .prop_map(move |(n, r)| dep(&format!("{}@{}", names[n], reqs[r])));
    let release = (
        0..names.len(),
        0..versions.len(),
        prop::collection::vec(dependency.clone(), 0..3),
    );
    (
        prop::collection::vec(release, 0..8),
        prop::collection::vec(dependency, 1..3),
    )
        .prop_map(move |(releases, roots)| {
            let mut cat: Catalog = BTreeMap::new();
            for (n, v, deps) in releases {
                let entry = cat.entry(names[n].parse().unwrap()).or_default();
                let version: Version = versions[v].parse().unwrap();
                if entry.iter().all(|c| c.version != version) {
                    entry.push(Candidate {
                        version,
                        dependencies: deps
                            .into_iter()
                            .filter(|d| d.name.as_str() != names[n])
                            .collect(),
                    });
                }
            }
            (cat, roots)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// On small random catalogs the solver finds an answer exactly when one exists (every
    /// choice of versions tried by brute force), and what it finds meets every requirement.
    #[test]
    fn the_solver_agrees_with_brute_force((cat, roots) in small_catalog()) {
        let found = resolve(&roots, &BTreeMap::new(), |name| cat.get(name).cloned());
        let exists = assignments(&cat).iter().any(|a| satisfies(&roots, a));
        match found {
            Ok(chosen) => {
                prop_assert!(exists, "the solver found a solution brute force did not");
                prop_assert!(satisfies(&roots, &chosen), "{:?}", versions(&chosen));
            }
            Err(ResolveError::NoSolution { .. }) => prop_assert!(!exists, "a solution exists"),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}
