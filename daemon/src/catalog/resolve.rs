//! Transitive dependency resolution with semver. Pure: the catalog is a lookup function, so
//! this runs the same on a live node and in a unit test.
//!
//! Each name gets one version: the highest installable one that satisfies every requirement
//! on it seen so far. When a later requirement rules the current choice out, the name is
//! re-chosen and resolution starts over with what it learned (bounded by
//! [`MAX_RESOLVE_ROUNDS`]). A cycle, a missing package and an unsatisfiable set of
//! requirements each get their own error naming what caused it.

use std::collections::{BTreeMap, BTreeSet};

use agora_protocol::{Dependency, PackageName, Version, VersionReq};

/// Restarts allowed before giving up (each one follows a requirement that narrowed a choice).
pub const MAX_RESOLVE_ROUNDS: usize = 64;
/// Most packages in one resolution.
pub const MAX_RESOLVED: usize = 4096;

/// One version of a package as resolution sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub version: Version,
    pub dependencies: Vec<Dependency>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("package '{name}' (required by {required_by}) is not in the catalog")]
    Missing {
        name: PackageName,
        required_by: String,
    },
    #[error("no installable version of '{name}' satisfies {}; available: {}", fmt_reqs(.requirements), fmt_versions(.available))]
    Unsatisfiable {
        name: PackageName,
        requirements: Vec<(String, VersionReq)>,
        available: Vec<Version>,
    },
    #[error("dependency cycle: {}", .0.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" -> "))]
    Cycle(Vec<PackageName>),
    #[error("resolution did not settle after {MAX_RESOLVE_ROUNDS} rounds")]
    TooManyRounds,
    #[error("resolution needs more than {MAX_RESOLVED} packages")]
    TooLarge,
}

fn fmt_reqs(reqs: &[(String, VersionReq)]) -> String {
    reqs.iter()
        .map(|(by, r)| format!("{r} (from {by})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1.0.0, 1.1.0`, or `none`.
pub(crate) fn fmt_versions(v: &[Version]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(Version::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The root of a resolution, as it appears in "required by".
pub const ROOT: &str = "the request";

/// Resolves `roots` transitively. `lookup(name)` returns the installable versions of a name
/// (any order), or `None` if the catalog has no such name.
pub fn resolve<F>(
    roots: &[Dependency],
    mut lookup: F,
) -> Result<BTreeMap<PackageName, Candidate>, ResolveError>
where
    F: FnMut(&PackageName) -> Option<Vec<Candidate>>,
{
    // Requirements learned in earlier rounds stay: they only ever narrow choices.
    let mut learned: BTreeMap<PackageName, Vec<(String, VersionReq)>> = BTreeMap::new();
    for _ in 0..MAX_RESOLVE_ROUNDS {
        match round(roots, &mut lookup, &mut learned)? {
            Some(chosen) => {
                check_cycles(&chosen)?;
                return Ok(chosen);
            }
            None => continue,
        }
    }
    Err(ResolveError::TooManyRounds)
}

/// One pass; `Ok(None)` means a choice had to change and the pass must restart.
fn round<F>(
    roots: &[Dependency],
    lookup: &mut F,
    learned: &mut BTreeMap<PackageName, Vec<(String, VersionReq)>>,
) -> Result<Option<BTreeMap<PackageName, Candidate>>, ResolveError>
where
    F: FnMut(&PackageName) -> Option<Vec<Candidate>>,
{
    let mut chosen: BTreeMap<PackageName, Candidate> = BTreeMap::new();
    let mut queue: Vec<(String, Dependency)> = roots
        .iter()
        .map(|d| (ROOT.to_string(), d.clone()))
        .collect();
    while let Some((by, dep)) = queue.pop() {
        let reqs = learned.entry(dep.name.clone()).or_default();
        if !reqs.iter().any(|(b, r)| *b == by && *r == dep.req) {
            reqs.push((by.clone(), dep.req.clone()));
        }
        if let Some(current) = chosen.get(&dep.name) {
            if dep.req.matches(&current.version) {
                continue;
            }
            // The new requirement rules out the current choice: start over knowing it.
            return Ok(None);
        }
        let mut candidates = lookup(&dep.name).ok_or_else(|| ResolveError::Missing {
            name: dep.name.clone(),
            required_by: by.clone(),
        })?;
        candidates.sort_by(|a, b| b.version.cmp(&a.version));
        let reqs = &learned[&dep.name];
        let Some(pick) = candidates
            .iter()
            .find(|c| reqs.iter().all(|(_, r)| r.matches(&c.version)))
        else {
            let mut available: Vec<Version> =
                candidates.iter().map(|c| c.version.clone()).collect();
            available.sort();
            return Err(ResolveError::Unsatisfiable {
                name: dep.name.clone(),
                requirements: reqs.clone(),
                available,
            });
        };
        let parent = format!("{}@{}", dep.name, pick.version);
        for d in &pick.dependencies {
            queue.push((parent.clone(), d.clone()));
        }
        chosen.insert(dep.name.clone(), pick.clone());
        if chosen.len() > MAX_RESOLVED {
            return Err(ResolveError::TooLarge);
        }
    }
    Ok(Some(chosen))
}

/// Depth-first search for a cycle among the chosen versions.
fn check_cycles(chosen: &BTreeMap<PackageName, Candidate>) -> Result<(), ResolveError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        name: &PackageName,
        chosen: &BTreeMap<PackageName, Candidate>,
        marks: &mut BTreeMap<PackageName, Mark>,
        path: &mut Vec<PackageName>,
    ) -> Result<(), ResolveError> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = path.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(name.clone());
                return Err(ResolveError::Cycle(cycle));
            }
            None => {}
        }
        marks.insert(name.clone(), Mark::Visiting);
        path.push(name.clone());
        if let Some(c) = chosen.get(name) {
            let deps: BTreeSet<&PackageName> = c.dependencies.iter().map(|d| &d.name).collect();
            for d in deps {
                visit(d, chosen, marks, path)?;
            }
        }
        path.pop();
        marks.insert(name.clone(), Mark::Done);
        Ok(())
    }
    let mut marks = BTreeMap::new();
    for name in chosen.keys() {
        visit(name, chosen, &mut marks, &mut Vec::new())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(s: &str) -> Dependency {
        s.parse().unwrap()
    }

    fn catalog(
        entries: &[(&str, &str, &[&str])],
    ) -> impl FnMut(&PackageName) -> Option<Vec<Candidate>> {
        let mut map: BTreeMap<PackageName, Vec<Candidate>> = BTreeMap::new();
        for (name, version, deps) in entries {
            map.entry(name.parse().unwrap())
                .or_default()
                .push(Candidate {
                    version: version.parse().unwrap(),
                    dependencies: deps.iter().map(|d| dep(d)).collect(),
                });
        }
        move |name| map.get(name).cloned()
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
        let r = resolve(&[dep("app")], cat).unwrap();
        assert_eq!(versions(&r), ["app@1.0.0", "lib@1.0.0", "util@1.0.0"]);
    }

    #[test]
    fn missing_unsatisfiable_and_cycle_each_say_what_went_wrong() {
        let err = resolve(&[dep("app")], catalog(&[("app", "1.0.0", &["ghost@^1"])])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "package 'ghost' (required by app@1.0.0) is not in the catalog"
        );

        let err = resolve(
            &[dep("app")],
            catalog(&[("app", "1.0.0", &["lib@^2"]), ("lib", "1.5.0", &[])]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no installable version of 'lib' satisfies ^2 (from app@1.0.0); available: 1.5.0"
        );

        let err = resolve(
            &[dep("a")],
            catalog(&[
                ("a", "1.0.0", &["b"]),
                ("b", "1.0.0", &["c"]),
                ("c", "1.0.0", &["a"]),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
    }
}
