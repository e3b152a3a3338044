//! Transitive dependency resolution with semver, by PubGrub (the `pubgrub` crate, the solver
//! uv and Dart's pub are built on). Pure: the catalog is a lookup function, so this runs the
//! same on a live node and in a unit test.
//!
//! The solver is complete: if some choice of one version per name satisfies every
//! requirement, it finds one, going back on earlier choices where it must; if none does, its
//! failure is a chain of "because … and …, … is forbidden" reasons, which is the error a user
//! sees. Each name gets the version the caller prefers (a lockfile's pin) when it fits, else
//! the highest installable one that fits. Only installable versions are offered (the lookup
//! leaves yanked and equivocated ones out). Cycles are allowed: every package of a cycle is
//! installed, in no particular order.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;

use agora_protocol::{Dependency, PackageName, Version, VersionReq};
use pubgrub::{
    DefaultStringReporter, Dependencies, DependencyConstraints, DependencyProvider, DerivationTree,
    External, PackageResolutionStatistics, PubGrubError, Ranges, Reporter,
};
use semver::{Comparator, Op, Prerelease};

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
    /// No choice of versions satisfies every requirement. `missing` are the names the catalog
    /// does not have at all; `unmatched` the requirements no installable version it has
    /// meets (a lookup on the DHT may find either).
    #[error("{explanation}")]
    NoSolution {
        explanation: String,
        missing: Vec<PackageName>,
        unmatched: Vec<Dependency>,
    },
    #[error("resolution needs more than {MAX_RESOLVED} packages")]
    TooLarge,
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

/// A package in the solver: the request itself, or a name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Pkg {
    Request,
    Name(PackageName),
}

/// How the request is written in a report before [`explain`] rewrites it.
const REQUEST_MARK: &str = "⟨request⟩";

impl fmt::Display for Pkg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request => f.write_str(REQUEST_MARK),
            Self::Name(n) => f.write_str(n.as_str()),
        }
    }
}

/// The version the request has (it has one, and only its dependencies matter).
fn request_version() -> Version {
    Version::new(0, 0, 0)
}

/// Resolves `roots` transitively. `lookup(name)` returns the installable versions of a name
/// (any order), or `None` if the catalog has no such name; `prefer` names the version to keep
/// for a name when it still fits (a lockfile's pin).
pub fn resolve<F>(
    roots: &[Dependency],
    prefer: &BTreeMap<PackageName, Version>,
    lookup: F,
) -> Result<BTreeMap<PackageName, Candidate>, ResolveError>
where
    F: FnMut(&PackageName) -> Option<Vec<Candidate>>,
{
    let provider = Provider {
        roots,
        prefer,
        lookup: RefCell::new(lookup),
        known: RefCell::new(BTreeMap::new()),
    };
    match pubgrub::resolve(&provider, Pkg::Request, request_version()) {
        Ok(solution) => {
            let known = provider.known.borrow();
            let mut out = BTreeMap::new();
            for (pkg, version) in solution {
                let Pkg::Name(name) = pkg else { continue };
                let candidate = known
                    .get(&name)
                    .and_then(Option::as_ref)
                    .and_then(|cs| cs.iter().find(|c| c.version == version))
                    .cloned()
                    .expect("a chosen version is one the lookup offered");
                out.insert(name, candidate);
            }
            Ok(out)
        }
        Err(PubGrubError::NoSolution(tree)) => Err(provider.no_solution(&tree)),
        Err(PubGrubError::ErrorChoosingVersion { source, .. })
        | Err(PubGrubError::ErrorRetrievingDependencies { source, .. })
        | Err(PubGrubError::ErrorInShouldCancel(source)) => match source {},
    }
}

struct Provider<'a, F> {
    roots: &'a [Dependency],
    prefer: &'a BTreeMap<PackageName, Version>,
    lookup: RefCell<F>,
    /// Each name's installable versions, highest first (`None`: not in the catalog).
    known: RefCell<BTreeMap<PackageName, Option<Vec<Candidate>>>>,
}

impl<F> Provider<'_, F>
where
    F: FnMut(&PackageName) -> Option<Vec<Candidate>>,
{
    /// `name`'s installable versions, highest first, asked of the lookup once.
    fn candidates(&self, name: &PackageName) -> Option<Vec<Candidate>> {
        if let Some(known) = self.known.borrow().get(name) {
            return known.clone();
        }
        let mut found = (self.lookup.borrow_mut())(name);
        if let Some(cs) = &mut found {
            cs.sort_by(|a, b| b.version.cmp(&a.version));
            cs.dedup_by(|a, b| a.version == b.version);
        }
        self.known.borrow_mut().insert(name.clone(), found.clone());
        found
    }

    /// The set of `dep`'s versions its requirement allows, exact over the versions the
    /// catalog has (semver's rules for pre-releases included).
    fn allowed(&self, dep: &Dependency) -> Ranges<Version> {
        let mut set = req_ranges(&dep.req);
        for c in self.candidates(&dep.name).unwrap_or_default() {
            match (dep.req.matches(&c.version), set.contains(&c.version)) {
                (true, false) => set = set.union(&Ranges::singleton(c.version)),
                (false, true) => set = set.intersection(&Ranges::singleton(c.version).complement()),
                _ => {}
            }
        }
        set
    }

    fn constraints(&self, deps: &[Dependency]) -> DependencyConstraints<Pkg, Ranges<Version>> {
        let mut out = DependencyConstraints::default();
        for dep in deps {
            let set = self.allowed(dep);
            let pkg = Pkg::Name(dep.name.clone());
            // A name required twice by one package must meet both requirements.
            let both = match out.get(&pkg) {
                Some(existing) => set.intersection(existing),
                None => set,
            };
            out.insert(pkg, both);
        }
        out
    }

    /// The error for a failed resolution: the solver's explanation, and what the catalog
    /// lacks that a lookup might bring.
    fn no_solution(&self, tree: &DerivationTree<Pkg, Ranges<Version>, String>) -> ResolveError {
        let mut missing: Vec<PackageName> = Vec::new();
        let mut unmatched: Vec<Dependency> = Vec::new();
        collect_lacking(tree, &mut |external| {
            let External::FromDependencyOf(_, _, Pkg::Name(name), set) = external else {
                return;
            };
            match self.candidates(name) {
                None if !missing.contains(name) => missing.push(name.clone()),
                None => {}
                Some(cs) if !cs.iter().any(|c| set.contains(&c.version)) => {
                    for dep in self.requirements_on(name) {
                        if !unmatched.contains(&dep) {
                            unmatched.push(dep);
                        }
                    }
                }
                Some(_) => {}
            }
        });
        // Without the "no version of X in …" steps the report reads better, and the lines
        // below say what is lacking; unless those steps were all it had to say.
        let mut collapsed = tree.clone();
        collapsed.collapse_no_versions();
        let shown = match collapsed {
            DerivationTree::Derived(_) => &collapsed,
            DerivationTree::External(_) => tree,
        };
        let mut explanation = explain(&DefaultStringReporter::report(shown));
        for name in &missing {
            explanation.push_str(&format!("\n'{name}' is not in the catalog."));
        }
        for dep in &unmatched {
            let mut available: Vec<Version> = self
                .candidates(&dep.name)
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.version)
                .collect();
            available.sort();
            explanation.push_str(&format!(
                "\nNo installable version of '{}' matches {} (available: {}).",
                dep.name,
                dep.req,
                fmt_versions(&available)
            ));
        }
        ResolveError::NoSolution {
            explanation,
            missing,
            unmatched,
        }
    }

    /// Every requirement on `name` the solver was given (by the request or a version looked
    /// at) that no installable version meets.
    fn requirements_on(&self, name: &PackageName) -> Vec<Dependency> {
        let versions: Vec<Version> = self
            .candidates(name)
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.version)
            .collect();
        let known = self.known.borrow();
        let from_versions = known
            .values()
            .flatten()
            .flatten()
            .flat_map(|c| c.dependencies.iter());
        let mut out: Vec<Dependency> = Vec::new();
        for dep in self.roots.iter().chain(from_versions) {
            if dep.name == *name
                && !versions.iter().any(|v| dep.req.matches(v))
                && !out.contains(dep)
            {
                out.push(dep.clone());
            }
        }
        out
    }
}

/// Calls `f` with every external reason in the tree.
fn collect_lacking(
    tree: &DerivationTree<Pkg, Ranges<Version>, String>,
    f: &mut impl FnMut(&External<Pkg, Ranges<Version>, String>),
) {
    match tree {
        DerivationTree::External(external) => f(external),
        DerivationTree::Derived(derived) => {
            collect_lacking(&derived.cause1, f);
            collect_lacking(&derived.cause2, f);
        }
    }
}

/// The solver's report in the user's words: the request is "the request", not a package at
/// version 0.0.0.
fn explain(report: &str) -> String {
    let request = format!("{REQUEST_MARK} {}", request_version());
    report
        .replace(&format!("{request} depends on "), "the request needs ")
        .replace(
            &format!("{request} is forbidden"),
            "the request cannot be met",
        )
        .replace(&request, "the request")
        .replace(REQUEST_MARK, "the request")
}

impl<F> DependencyProvider for Provider<'_, F>
where
    F: FnMut(&PackageName) -> Option<Vec<Candidate>>,
{
    type P = Pkg;
    type V = Version;
    type VS = Ranges<Version>;
    type M = String;
    type Err = Infallible;
    /// Names with fewer versions left to try go first: a conflict among them shows sooner.
    type Priority = (u32, Reverse<usize>);

    fn prioritize(
        &self,
        package: &Pkg,
        range: &Ranges<Version>,
        stats: &PackageResolutionStatistics,
    ) -> Self::Priority {
        let fitting = match package {
            Pkg::Request => 0,
            Pkg::Name(name) => self
                .candidates(name)
                .unwrap_or_default()
                .iter()
                .filter(|c| range.contains(&c.version))
                .count(),
        };
        (stats.conflict_count(), Reverse(fitting))
    }

    fn choose_version(
        &self,
        package: &Pkg,
        range: &Ranges<Version>,
    ) -> Result<Option<Version>, Infallible> {
        let name = match package {
            Pkg::Request => return Ok(Some(request_version())),
            Pkg::Name(name) => name,
        };
        let candidates = self.candidates(name).unwrap_or_default();
        let preferred = self
            .prefer
            .get(name)
            .filter(|v| range.contains(v) && candidates.iter().any(|c| &c.version == *v));
        Ok(preferred.cloned().or_else(|| {
            candidates
                .iter()
                .map(|c| &c.version)
                .find(|v| range.contains(v))
                .cloned()
        }))
    }

    fn get_dependencies(
        &self,
        package: &Pkg,
        version: &Version,
    ) -> Result<Dependencies<Pkg, Ranges<Version>, String>, Infallible> {
        let deps = match package {
            Pkg::Request => self.roots.to_vec(),
            Pkg::Name(name) => match self.candidates(name) {
                Some(cs) => match cs.into_iter().find(|c| &c.version == version) {
                    Some(c) => c.dependencies,
                    None => return Ok(Dependencies::Unavailable("is not in the catalog".into())),
                },
                None => return Ok(Dependencies::Unavailable("is not in the catalog".into())),
            },
        };
        if self.known.borrow().len() > MAX_RESOLVED {
            return Ok(Dependencies::Unavailable(format!(
                "needs more than {MAX_RESOLVED} packages"
            )));
        }
        Ok(Dependencies::Available(self.constraints(&deps)))
    }
}

/// The versions `req` allows, as ranges (semver's pre-release rule aside, which
/// [`Provider::allowed`] applies to the versions that exist).
fn req_ranges(req: &VersionReq) -> Ranges<Version> {
    req.comparators.iter().fold(Ranges::full(), |set, c| {
        set.intersection(&comparator_ranges(c))
    })
}

fn comparator_ranges(c: &Comparator) -> Ranges<Version> {
    let pre = |p: &Prerelease| p.clone();
    let exact = |c: &Comparator| Version {
        major: c.major,
        minor: c.minor.unwrap_or(0),
        patch: c.patch.unwrap_or(0),
        pre: pre(&c.pre),
        build: Default::default(),
    };
    let lowest = exact(c);
    // The first version past what `c` names at its own precision (1.2 → 1.3.0, 1 → 2.0.0).
    let next = |c: &Comparator| match (c.minor, c.patch) {
        (Some(minor), Some(patch)) => Version::new(c.major, minor, patch + 1),
        (Some(minor), None) => Version::new(c.major, minor + 1, 0),
        (None, _) => Version::new(c.major + 1, 0, 0),
    };
    match c.op {
        Op::Exact => match (c.minor, c.patch) {
            (Some(_), Some(_)) => Ranges::singleton(lowest),
            _ => Ranges::between(lowest, next(c)),
        },
        Op::Greater => match (c.minor, c.patch) {
            (Some(_), Some(_)) => Ranges::strictly_higher_than(lowest),
            _ => Ranges::higher_than(next(c)),
        },
        Op::GreaterEq => Ranges::higher_than(lowest),
        Op::Less => Ranges::strictly_lower_than(lowest),
        Op::LessEq => match (c.minor, c.patch) {
            (Some(_), Some(_)) => Ranges::lower_than(lowest),
            _ => Ranges::strictly_lower_than(next(c)),
        },
        Op::Tilde => {
            let upper = match c.minor {
                Some(minor) => Version::new(c.major, minor + 1, 0),
                None => Version::new(c.major + 1, 0, 0),
            };
            Ranges::between(lowest, upper)
        }
        Op::Caret => {
            let upper = match (c.major, c.minor, c.patch) {
                (0, Some(0), Some(patch)) => Version::new(0, 0, patch + 1),
                (0, Some(minor), _) if minor > 0 || c.patch.is_none() => {
                    Version::new(0, minor + 1, 0)
                }
                (0, None, _) => Version::new(1, 0, 0),
                (major, _, _) => Version::new(major + 1, 0, 0),
            };
            Ranges::between(lowest, upper)
        }
        Op::Wildcard => match c.minor {
            Some(minor) => Ranges::between(
                Version::new(c.major, minor, 0),
                Version::new(c.major, minor + 1, 0),
            ),
            None => Ranges::between(Version::new(c.major, 0, 0), Version::new(c.major + 1, 0, 0)),
        },
        // semver's `Op` is non-exhaustive: an operator it adds later is checked exactly
        // against the versions that exist.
        _ => Ranges::full(),
    }
}

#[cfg(test)]
mod tests;
