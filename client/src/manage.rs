//! Project commands that need no daemon: remove, list, verify. Like install, every path they
//! delete or read comes from [`Project`] and every name from the validated lockfile.

use std::collections::BTreeSet;
use std::path::Path;

use agora_client::lockfile::{LOCKFILE, Lockfile};
use agora_client::project::Project;
use agora_client::unpack;
use agora_protocol::{Dependency, Version};
use serde_json::json;

use crate::Failure;
use crate::install::{hex_files, package_name, read_lock, remove_dir, unsafe_path, write_lock};
use crate::output::Output;

/// The names the project's requirements reach through the lockfile's dependencies.
fn needed(lock: &Lockfile, roots: &[Dependency]) -> BTreeSet<String> {
    let mut needed = BTreeSet::new();
    let mut queue: Vec<String> = roots.iter().map(|d| d.name.to_string()).collect();
    while let Some(name) = queue.pop() {
        if !needed.insert(name.clone()) {
            continue;
        }
        if let Some(p) = lock.get(&name) {
            for d in p
                .dependencies
                .iter()
                .filter_map(|d| d.parse::<Dependency>().ok())
            {
                queue.push(d.name.to_string());
            }
        }
    }
    needed
}

/// `remove NAME`: refused while another installed package needs it, unless its dependents go
/// too (`--with-dependents`); whatever is then needed by nothing the project asked for goes
/// as well.
pub fn remove(project: &Path, name: &str, with_dependents: bool) -> Result<Output, Failure> {
    let project = &Project::new(project);
    project.package(&package_name(name)?).map_err(unsafe_path)?;
    let mut lock = read_lock(project)?.unwrap_or_else(Lockfile::new);
    if lock.get(name).is_none() {
        return Err(Failure::new(
            4,
            format!("'{name}' is not installed"),
            "see 'agora list'",
        ));
    }
    // Everything that needs `name`, directly or through another.
    let mut going = BTreeSet::from([name.to_string()]);
    let mut queue = vec![name.to_string()];
    while let Some(n) = queue.pop() {
        for (p, d) in lock.dependents(&n) {
            if !with_dependents {
                return Err(Failure::new(
                    5,
                    format!(
                        "{}@{} needs {n} ({d}); removing {name} would break it",
                        p.name, p.version
                    ),
                    format!(
                        "remove {} first, or remove both with 'agora remove {name} \
                         --with-dependents'",
                        p.name
                    ),
                ));
            }
            if going.insert(p.name.clone()) {
                queue.push(p.name.clone());
            }
        }
    }
    let roots: Vec<Dependency> = lock
        .roots()
        .into_iter()
        .filter(|d| !going.contains(d.name.as_str()))
        .collect();
    let still = needed(&lock, &roots);
    let gone: Vec<(String, String)> = lock
        .packages
        .iter()
        .filter(|p| !still.contains(&p.name))
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    for (n, _) in &gone {
        remove_dir(project, n)?;
        lock.remove(n);
    }
    lock.requested = roots.iter().map(ToString::to_string).collect();
    write_lock(project, &lock)?;
    let text: Vec<String> = gone
        .iter()
        .map(|(n, v)| {
            if n == name || going.contains(n) {
                format!("removed {n}@{v}")
            } else {
                format!("removed {n}@{v} (no longer needed)")
            }
        })
        .collect();
    Ok(Output::new(
        json!({ "removed": gone.iter().map(|(n, v)| json!({"name": n, "version": v})).collect::<Vec<_>>() }),
        text.join("\n"),
    ))
}

/// `list`: every installed package, and whether the project asked for it or which package
/// needs it.
pub fn list(project: &Path) -> Result<Output, Failure> {
    let lock = read_lock(&Project::new(project))?.unwrap_or_else(Lockfile::new);
    let roots = lock.roots();
    let mut rows = Vec::new();
    let mut text = Vec::new();
    for p in &lock.packages {
        let requested = roots.iter().find(|d| d.name.as_str() == p.name);
        let needed_by: Vec<String> = lock
            .dependents(&p.name)
            .iter()
            .map(|(by, _)| by.name.clone())
            .collect();
        let why = match requested {
            Some(d) => format!("requested as {d}"),
            None => format!("needed by {}", needed_by.join(", ")),
        };
        text.push(format!("{}@{}  ({why})", p.name, p.version));
        rows.push(json!({
            "name": p.name,
            "version": p.version,
            "sha256": p.sha256,
            "dependencies": p.dependencies,
            "requested": requested.map(ToString::to_string),
            "needed_by": needed_by,
        }));
    }
    if text.is_empty() {
        text.push("no packages installed".into());
    }
    Ok(Output::new(rows, text.join("\n")))
}

/// The lockfile's dependency graph: each requirement, of the project or of a package, met by
/// an installed version.
fn graph_problems(lock: &Lockfile) -> Vec<String> {
    let mut problems = Vec::new();
    let unmet = |d: &Dependency| -> Option<String> {
        match lock.get(d.name.as_str()) {
            None => Some(format!("needs {d}, which is not installed")),
            Some(p) => match p.version.parse::<Version>() {
                Ok(v) if d.req.matches(&v) => None,
                _ => Some(format!(
                    "needs {d}, but {} {} is installed",
                    p.name, p.version
                )),
            },
        }
    };
    for d in lock.roots() {
        if let Some(why) = unmet(&d) {
            problems.push(format!("the project {why}"));
        }
    }
    for p in &lock.packages {
        for d in p
            .dependencies
            .iter()
            .filter_map(|d| d.parse::<Dependency>().ok())
        {
            if let Some(why) = unmet(&d) {
                problems.push(format!("{}@{} {why}", p.name, p.version));
            }
        }
    }
    problems
}

/// `verify`: every installed file against the lockfile, and the dependency graph.
pub fn verify(project: &Path) -> Result<Output, Failure> {
    let project = &Project::new(project);
    let Some(lock) = read_lock(project)? else {
        return Err(Failure::new(
            2,
            format!("no {} in {}", LOCKFILE, project.root().display()),
            "install packages first",
        ));
    };
    let mut problems: Vec<String> = Vec::new();
    for p in &lock.packages {
        // The lockfile was validated as it was read: its names are package names.
        let dir = match project.package(&package_name(&p.name)?) {
            Ok(dir) => dir,
            Err(e) => {
                problems.push(format!("{}: {e}", p.name));
                continue;
            }
        };
        if !dir.is_dir() {
            problems.push(format!("{}: not installed", p.name));
            continue;
        }
        let actual = match unpack::hash_tree(&dir) {
            Ok(files) => hex_files(&files),
            Err(e) => {
                problems.push(format!("{}: {e}", p.name));
                continue;
            }
        };
        for (path, hash) in &p.files {
            match actual.get(path) {
                None => problems.push(format!("{}: {path} is missing", p.name)),
                Some(h) if h != hash => problems.push(format!("{}: {path} was modified", p.name)),
                Some(_) => {}
            }
        }
        for path in actual.keys().filter(|k| !p.files.contains_key(*k)) {
            problems.push(format!("{}: {path} was added", p.name));
        }
    }
    let files = problems.len();
    problems.extend(graph_problems(&lock));
    let n = lock.packages.len();
    let value = json!({ "ok": problems.is_empty(), "packages": n, "problems": problems });
    if problems.is_empty() {
        let text = format!("{n} package{} verified", if n == 1 { "" } else { "s" });
        return Ok(Output::new(value, text));
    }
    let cause = match (files, problems.len() - files) {
        (f, 0) => format!("{f} installed file(s) differ from {LOCKFILE}"),
        (0, g) => format!("{g} requirement(s) of {LOCKFILE} are not met"),
        (f, g) => format!(
            "{f} installed file(s) differ from {LOCKFILE} and {g} requirement(s) are not met"
        ),
    };
    let found = Output::new(value, problems.join("\n"));
    Err(Failure::new(
        6,
        cause,
        "reinstall exactly what the lockfile says with 'agora install', or resolve again with \
         'agora update'",
    )
    .with_found(found))
}
