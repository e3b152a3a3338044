//! `agora import DIR`: publishes every package directory under DIR (a ggen marketplace tree,
//! categories nested in directories included), each dependency before its dependents.
//!
//! A directory with a `package.toml` is a package and is not searched further; hidden
//! directories and links are not followed (a link could loop or leave the tree). The tree
//! is bounded ([`MAX_DEPTH`], [`MAX_PACKAGES`]) and every manifest is read with the
//! protocol's own parser, so a package the daemon would refuse for its manifest is reported
//! here with the same error. A package the daemon refuses whose version the catalog holds is
//! reported as already published; one whose dependency in the tree was refused is refused
//! too, naming it, without asking the daemon.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use agora_client::Client;
use agora_protocol::Manifest;
use serde::Serialize;
use serde_json::json;

use crate::output::Output;
use crate::{Bar, Failure, explain, progress_bar};

/// Directories below DIR searched for packages.
pub const MAX_DEPTH: usize = 8;
/// Most packages one import takes.
pub const MAX_PACKAGES: usize = 10_000;

/// One package directory found, its manifest read.
struct Found {
    dir: PathBuf,
    manifest: Manifest,
}

#[derive(Serialize)]
struct Entry {
    name: String,
    version: String,
    dir: String,
}

#[derive(Serialize)]
struct Refused {
    /// The package's name, if its manifest could be read.
    name: Option<String>,
    dir: String,
    reason: String,
}

#[derive(Default, Serialize)]
struct Summary {
    dry_run: bool,
    published: Vec<Entry>,
    already_published: Vec<Entry>,
    refused: Vec<Refused>,
}

/// Every package directory under `root`, and the directories whose manifest was refused.
fn find(root: &Path) -> Result<(Vec<Found>, Vec<Refused>), Failure> {
    let mut found = Vec::new();
    let mut refused = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let manifest = dir.join("package.toml");
        if manifest.is_file() {
            if found.len() + refused.len() >= MAX_PACKAGES {
                return Err(Failure::new(
                    1,
                    format!("{} holds more than {MAX_PACKAGES} packages", root.display()),
                    "import the tree in parts, one directory at a time",
                ));
            }
            match read_manifest(&manifest) {
                Ok(m) => found.push(Found { dir, manifest: m }),
                Err(reason) => refused.push(Refused {
                    name: None,
                    dir: dir.display().to_string(),
                    reason,
                }),
            }
            continue;
        }
        if depth == MAX_DEPTH {
            continue;
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            Failure::new(
                1,
                format!("{}: {e}", dir.display()),
                "check the directory's permissions",
            )
        })?;
        let mut subdirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        // Popped last first: the tree is walked in name order.
        subdirs.sort_unstable_by(|a, b| b.cmp(a));
        dirs.extend(subdirs.into_iter().map(|d| (d, depth + 1)));
    }
    Ok((found, refused))
}

fn read_manifest(path: &Path) -> Result<Manifest, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("package.toml: {e}"))?;
    Manifest::parse(&text).map_err(|e| format!("package.toml:{e}"))
}

/// `found` in an order where each package's dependencies in the tree come before it, by
/// name otherwise; the packages in a dependency cycle (or depending on one) are refused.
fn ordered(found: Vec<Found>) -> (Vec<Found>, Vec<Refused>) {
    let mut by_name: BTreeMap<String, Found> = BTreeMap::new();
    let mut refused = Vec::new();
    for f in found {
        let name = f.manifest.name.to_string();
        if let Some(other) = by_name.get(&name) {
            refused.push(Refused {
                name: Some(name.clone()),
                dir: f.dir.display().to_string(),
                reason: format!("{name} is also the package in {}", other.dir.display()),
            });
            continue;
        }
        by_name.insert(name, f);
    }
    // Depth-first, each package after the ones it depends on; a package met again while
    // its own dependencies are being placed is in a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Placing,
        Placed,
    }
    let mut marks: HashMap<String, Mark> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut cyclic: Vec<(String, String)> = Vec::new();
    fn visit(
        name: &str,
        by_name: &BTreeMap<String, Found>,
        marks: &mut HashMap<String, Mark>,
        order: &mut Vec<String>,
        cyclic: &mut Vec<(String, String)>,
        path: &mut Vec<String>,
    ) {
        match marks.get(name) {
            Some(Mark::Placed) => return,
            Some(Mark::Placing) => {
                let start = path.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(name.to_string());
                let described = cycle.join(" → ");
                for n in &path[start..] {
                    cyclic.push((n.clone(), described.clone()));
                }
                return;
            }
            None => {}
        }
        marks.insert(name.to_string(), Mark::Placing);
        path.push(name.to_string());
        for dep in &by_name[name].manifest.dependencies {
            let dep = dep.name.to_string();
            if by_name.contains_key(&dep) {
                visit(&dep, by_name, marks, order, cyclic, path);
            }
        }
        path.pop();
        marks.insert(name.to_string(), Mark::Placed);
        order.push(name.to_string());
    }
    for name in by_name.keys() {
        visit(
            name,
            &by_name,
            &mut marks,
            &mut order,
            &mut cyclic,
            &mut Vec::new(),
        );
    }
    let mut in_cycle: HashMap<String, String> = HashMap::new();
    for (name, cycle) in cyclic {
        in_cycle.entry(name).or_insert(cycle);
    }
    let mut out = Vec::new();
    for name in order {
        let f = by_name.remove(&name).expect("each name placed once");
        match in_cycle.get(&name) {
            Some(cycle) => refused.push(Refused {
                name: Some(name),
                dir: f.dir.display().to_string(),
                reason: format!("dependency cycle: {cycle}"),
            }),
            None => out.push(f),
        }
    }
    (out, refused)
}

/// `agora import DIR`.
pub fn import(
    client: &mut Client,
    root: &Path,
    dry_run: bool,
    json: bool,
) -> Result<Output, Failure> {
    if !root.is_dir() {
        return Err(Failure::new(
            1,
            format!("{} is not a directory", root.display()),
            "pass the directory that holds the packages (a ggen marketplace's packages/)",
        ));
    }
    let (found, mut refused) = find(root)?;
    let (order, cyclic) = ordered(found);
    refused.extend(cyclic);
    let mut summary = Summary {
        dry_run,
        ..Summary::default()
    };
    let bar = progress_bar(json, order.len() as u64);
    let in_tree: HashSet<String> = order.iter().map(|f| f.manifest.name.to_string()).collect();
    // Names refused here: their dependents are refused without asking. A name refused for a
    // second directory is not among them: its first is published.
    let mut failed: HashSet<String> = refused
        .iter()
        .filter_map(|r| r.name.clone())
        .filter(|n| !in_tree.contains(n))
        .collect();
    for f in order {
        let name = f.manifest.name.to_string();
        let version = f.manifest.version.to_string();
        let dir = f.dir.display().to_string();
        if let Some(Bar(bar)) = &bar {
            bar.set_message(format!("{name}@{version}"));
        }
        let entry = Entry {
            name: name.clone(),
            version: version.clone(),
            dir: dir.clone(),
        };
        // A dry run publishes nothing, so a dependency in the tree is in no catalog yet: its
        // dependents are checked with missing dependencies allowed, those outside the tree
        // having been looked for first.
        let allow =
            dry_run && (f.manifest.dependencies.iter()).any(|d| in_tree.contains(d.name.as_str()));
        if let Some(dep) = f
            .manifest
            .dependencies
            .iter()
            .map(|d| d.name.to_string())
            .find(|d| failed.contains(d))
        {
            refused.push(Refused {
                name: Some(name.clone()),
                dir,
                reason: format!("it depends on {dep}, which was refused"),
            });
            failed.insert(name);
        } else if let Some(reason) = allow
            .then(|| outside_missing(client, &f.manifest, &in_tree))
            .flatten()
        {
            refused.push(Refused {
                name: Some(name.clone()),
                dir,
                reason,
            });
            failed.insert(name);
        } else {
            match client.publish(&f.dir, dry_run, allow, |_| {}) {
                Ok(_) => summary.published.push(entry),
                // Refused, but that version is in the catalog: published before.
                Err(_) if client.info(&name, Some(&format!("={version}"))).is_ok() => {
                    summary.already_published.push(entry);
                }
                Err(e) => {
                    refused.push(Refused {
                        name: Some(name.clone()),
                        dir,
                        reason: explain(e).cause,
                    });
                    failed.insert(name);
                }
            }
        }
        if let Some(Bar(bar)) = &bar {
            bar.inc(1);
        }
    }
    drop(bar);
    summary.refused = refused;
    let text = words(&summary);
    let refusals = summary.refused.len();
    let out = Output::new(json!(summary), text);
    if refusals == 0 {
        return Ok(out);
    }
    Err(Failure::new(
        5,
        format!(
            "{refusals} of the packages under {} were refused",
            root.display()
        ),
        "each refusal above names its reason; fix those packages and import again (what \
         was published stays published)",
    )
    .with_found(out))
}

/// Why `manifest` cannot be published, if a dependency outside the tree is in no catalog
/// this node reaches.
fn outside_missing(
    client: &mut Client,
    manifest: &Manifest,
    in_tree: &HashSet<String>,
) -> Option<String> {
    let outside = manifest
        .dependencies
        .iter()
        .filter(|d| !in_tree.contains(d.name.as_str()));
    for d in outside {
        if client
            .info(d.name.as_str(), Some(&d.req.to_string()))
            .is_err()
        {
            return Some(format!(
                "dependency {}: no release of '{}' matching {} is in a catalog this node reaches",
                d.name, d.name, d.req
            ));
        }
    }
    None
}

/// The summary in words: the counts, then each refusal on a line.
fn words(s: &Summary) -> String {
    let verb = if s.dry_run {
        "would be published"
    } else {
        "published"
    };
    let mut text = format!(
        "{} {verb}, {} already published, {} refused",
        s.published.len(),
        s.already_published.len(),
        s.refused.len()
    );
    for r in &s.refused {
        let what = r.name.as_deref().unwrap_or(&r.dir);
        text.push_str(&format!("\n  refused {what}: {}", r.reason));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(root: &Path, dir: &str, name: &str, deps: &[&str]) {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let deps: Vec<String> = deps.iter().map(|d| format!("{d:?}")).collect();
        std::fs::write(
            dir.join("package.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"x\"\n\
                 dependencies = [{}]\n",
                deps.join(", ")
            ),
        )
        .unwrap();
    }

    fn names(found: &[Found]) -> Vec<String> {
        found.iter().map(|f| f.manifest.name.to_string()).collect()
    }

    #[test]
    fn packages_in_nested_categories_are_found_and_ordered_by_their_dependencies() {
        let root = tempfile::tempdir().unwrap();
        package(
            root.path(),
            "ai/agents/reasoning",
            "reasoning",
            &["context", "memory"],
        );
        package(root.path(), "ai/agents/context", "context", &["memory"]);
        package(root.path(), "ai/memory", "memory", &[]);
        package(root.path(), "web/app", "app", &["elsewhere"]);
        // Hidden directories and what is inside a package are not searched.
        package(root.path(), ".git/hidden", "hidden", &[]);
        package(root.path(), "web/app/examples/inner", "inner", &[]);
        std::fs::create_dir_all(root.path().join("broken")).unwrap();
        std::fs::write(root.path().join("broken/package.toml"), "[package]\n").unwrap();
        let (found, refused) = find(root.path()).unwrap_or_else(|f| panic!("{}", f.cause));
        assert_eq!(names(&found), ["context", "reasoning", "memory", "app"]);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].dir.ends_with("broken"), "{}", refused[0].dir);
        assert!(
            refused[0].reason.starts_with("package.toml:"),
            "{}",
            refused[0].reason
        );
        let (order, refused) = ordered(found);
        assert_eq!(names(&order), ["app", "memory", "context", "reasoning"]);
        assert!(refused.is_empty());
    }

    #[test]
    fn a_dependency_cycle_and_a_name_twice_are_refused() {
        let root = tempfile::tempdir().unwrap();
        package(root.path(), "a", "a", &["b"]);
        package(root.path(), "b", "b", &["c"]);
        package(root.path(), "c", "c", &["a"]);
        package(root.path(), "d", "d", &[]);
        package(root.path(), "e", "d", &[]);
        let (found, _) = find(root.path()).unwrap_or_else(|f| panic!("{}", f.cause));
        let (order, refused) = ordered(found);
        assert_eq!(names(&order), ["d"]);
        let reasons: Vec<(Option<String>, String)> =
            refused.into_iter().map(|r| (r.name, r.reason)).collect();
        let first = root.path().join("d").display().to_string();
        assert_eq!(
            reasons,
            [
                (
                    Some("d".into()),
                    format!("d is also the package in {first}")
                ),
                (Some("c".into()), "dependency cycle: a → b → c → a".into()),
                (Some("b".into()), "dependency cycle: a → b → c → a".into()),
                (Some("a".into()), "dependency cycle: a → b → c → a".into()),
            ]
        );
    }
}
