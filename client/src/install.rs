//! Project commands: install, update, remove, list, verify. A project is a directory with
//! `agora.lock` and `.agora/packages/<name>/`. Install resolves through the daemon, has it
//! fetch and verify every archive, unpacks each into a temporary directory (refusing anything
//! unsafe) and checks the unpacked `package.toml` is the release it claims to be; only when
//! every package is staged (the daemon is not needed after that) does it swap each into place
//! with a rename and write the lockfile atomically. Every path it writes or deletes comes from
//! [`Project`], which refuses links planted in the project; names come from the lockfile
//! (validated as it is read) or the daemon, and are parsed as package names before use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agora_client::Client;
use agora_client::ipc::ReleaseInfo;
use agora_client::lockfile::{LOCKFILE, LockedPackage, Lockfile};
use agora_client::project::{Project, UnsafePath};
use agora_client::unpack::{self, FileHashes};
use agora_protocol::{ContentId, Manifest, PackageName};
use serde_json::json;

use crate::output::Output;
use crate::{Failure, explain, on_progress};

/// A path the project's links make unsafe: nothing was written or deleted through it.
fn unsafe_path(e: UnsafePath) -> Failure {
    Failure::new(
        1,
        e.to_string(),
        "remove the link (nothing was changed), or use another project directory",
    )
}

/// A package name from the daemon or the command line.
fn package_name(name: &str) -> Result<PackageName, Failure> {
    PackageName::new(name).map_err(|e| {
        Failure::new(
            2,
            format!("{name:?} is not a package name: {e}"),
            "see 'agora search' for the names in the catalog",
        )
    })
}

fn read_lock(project: &Project) -> Result<Option<Lockfile>, Failure> {
    Lockfile::read(&project.lockfile().map_err(unsafe_path)?).map_err(|e| {
        Failure::new(
            1,
            e.to_string(),
            "fix or delete agora.lock and install again",
        )
    })
}

fn write_lock(project: &Project, lock: &Lockfile) -> Result<(), Failure> {
    lock.write(&project.lockfile().map_err(unsafe_path)?)
        .map_err(|e| {
            Failure::new(
                1,
                e.to_string(),
                "check the project directory's permissions",
            )
        })
}

/// A release fetched, verified and unpacked beside its place, not yet swapped in.
struct Staged<'a> {
    release: &'a ReleaseInfo,
    dir: PathBuf,
    files: FileHashes,
}

/// Fetches, verifies and unpacks one release into `.agora/packages/.new-NAME`.
fn stage<'a>(
    client: &mut Client,
    project: &Project,
    r: &'a ReleaseInfo,
    json: bool,
) -> Result<Staged<'a>, Failure> {
    let staging = project
        .staging(&package_name(&r.name)?)
        .map_err(unsafe_path)?;
    let fetched = client
        .fetch(&r.name, &r.version, on_progress(json))
        .map_err(crate::explain)?;
    if fetched.sha256 != r.sha256 {
        return Err(Failure::new(
            6,
            format!(
                "{}@{}: the archive is {} but the release says {}",
                r.name, r.version, fetched.sha256, r.sha256
            ),
            "the daemon's store may be damaged; see 'agora node logs'",
        ));
    }
    let data = std::fs::read(&fetched.path)
        .map_err(|e| Failure::new(1, format!("{}: {e}", fetched.path), "see 'agora node logs'"))?;
    // The daemon verified it; checking again here costs little and trusts no file system.
    if ContentId::of(&data).to_hex() != r.sha256 {
        return Err(Failure::new(
            6,
            format!("{} does not hash to {}", fetched.path, r.sha256),
            "the daemon's store may be damaged; see 'agora node logs'",
        ));
    }
    let _ = std::fs::remove_dir_all(&staging);
    let files = unpack::unpack(data.as_slice(), &staging).map_err(|e| {
        Failure::new(
            6,
            format!("{}@{}: {e}", r.name, r.version),
            "the archive was refused and nothing was installed; report the package",
        )
    })?;
    if let Err(f) = check_manifest(&staging, r) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(f);
    }
    Ok(Staged {
        release: r,
        dir: staging,
        files,
    })
}

/// Swaps a staged release into place; returns its lock entry.
fn swap_in(project: &Project, staged: Staged<'_>) -> Result<LockedPackage, Failure> {
    let r = staged.release;
    let name = package_name(&r.name)?;
    let target = project.package(&name).map_err(unsafe_path)?;
    let old = project.old(&name).map_err(unsafe_path)?;
    let _ = std::fs::remove_dir_all(&old);
    let swap = || -> std::io::Result<()> {
        if target.exists() {
            std::fs::rename(&target, &old)?;
        }
        std::fs::rename(&staged.dir, &target)?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    };
    swap()
        .map_err(|e| Failure::new(1, format!("{}: {e}", target.display()), "check permissions"))?;
    Ok(LockedPackage {
        name: r.name.clone(),
        version: r.version.clone(),
        sha256: r.sha256.clone(),
        publisher: r.publisher.clone(),
        dependencies: r.dependencies.clone(),
        files: hex_files(&staged.files),
    })
}

fn hex_files(files: &FileHashes) -> BTreeMap<String, String> {
    files.iter().map(|(p, h)| (p.clone(), h.to_hex())).collect()
}

/// The archive's own `package.toml` must name the release it was published as: a record
/// paired with another release's archive is refused.
fn check_manifest(dir: &Path, r: &ReleaseInfo) -> Result<(), Failure> {
    let refuse = |why: String| {
        Failure::new(
            6,
            format!("{}@{}: {why}", r.name, r.version),
            "the archive does not match its release record; report the package",
        )
    };
    let text = std::fs::read_to_string(dir.join("package.toml"))
        .map_err(|e| refuse(format!("the archive has no readable package.toml ({e})")))?;
    let m =
        Manifest::parse(&text).map_err(|e| refuse(format!("its package.toml is invalid: {e}")))?;
    if m.name.as_str() != r.name || m.version.to_string() != r.version {
        return Err(refuse(format!(
            "the archive holds {}@{}",
            m.name, m.version
        )));
    }
    Ok(())
}

fn report(installed: &[LockedPackage], project: &Project) -> Output {
    let text: Vec<String> = installed
        .iter()
        .map(|p| format!("installed {}@{}", p.name, p.version))
        .collect();
    Output::new(
        json!({
            "installed": installed.iter().map(|p| json!({"name": p.name, "version": p.version, "sha256": p.sha256})).collect::<Vec<_>>(),
            "lockfile": project.root().join(LOCKFILE),
        }),
        text.join("\n"),
    )
}

pub fn install(
    client: &mut Client,
    project: &Path,
    names: &[String],
    json: bool,
) -> Result<Output, Failure> {
    let project = &Project::new(project);
    // Every path the install will write, checked before anything is asked of the daemon.
    project.packages().map_err(unsafe_path)?;
    let mut lock = read_lock(project)?.unwrap_or_else(Lockfile::new);
    let releases: Vec<ReleaseInfo> = if names.is_empty() {
        if lock.packages.is_empty() {
            return Err(Failure::new(
                2,
                format!(
                    "nothing to install: {} lists no packages",
                    project.root().join(LOCKFILE).display()
                ),
                "name packages: agora install NAME[@REQ]",
            ));
        }
        // Exactly what the lockfile says: each version pinned, archives must match.
        let mut out = Vec::new();
        for p in &lock.packages {
            // `=x.y.z` names exactly one release, yanked or not.
            let r = client
                .info(&p.name, Some(&format!("={}", p.version)))
                .map_err(explain)?;
            if r.sha256 != p.sha256 {
                return Err(Failure::new(
                    6,
                    format!(
                        "{}@{} is locked to archive {} but the catalog has {}",
                        p.name, p.version, p.sha256, r.sha256
                    ),
                    "someone changed the lockfile or the release; check before updating",
                ));
            }
            out.push(r);
        }
        out
    } else {
        client.resolve(names).map_err(explain)?
    };
    // Everything that needs the daemon first: if it stops (or an archive is refused) part
    // way, the staged directories go and the project is as it was.
    let fresh = !project.root().join(".agora").exists();
    let mut staged = Vec::with_capacity(releases.len());
    for r in &releases {
        match stage(client, project, r, json) {
            Ok(s) => staged.push(s),
            Err(f) => {
                for s in &staged {
                    let _ = std::fs::remove_dir_all(&s.dir);
                }
                if fresh {
                    // The directories staging made, if nothing else is in them.
                    let _ = std::fs::remove_dir(project.root().join(".agora/packages"));
                    let _ = std::fs::remove_dir(project.root().join(".agora"));
                }
                return Err(f);
            }
        }
    }
    let mut installed = Vec::new();
    let mut staged = staged.into_iter();
    while let Some(s) = staged.next() {
        match swap_in(project, s) {
            Ok(entry) => {
                lock.upsert(entry.clone());
                installed.push(entry);
            }
            Err(f) => {
                // The ones already in place are locked; the rest go.
                for s in staged {
                    let _ = std::fs::remove_dir_all(&s.dir);
                }
                write_lock(project, &lock)?;
                return Err(f);
            }
        }
    }
    write_lock(project, &lock)?;
    Ok(report(&installed, project))
}

pub fn update(
    client: &mut Client,
    project: &Path,
    name: Option<&str>,
    json: bool,
) -> Result<Output, Failure> {
    let lock = read_lock(&Project::new(project))?.unwrap_or_else(Lockfile::new);
    let roots: Vec<String> = match name {
        Some(n) => {
            if lock.get(n).is_none() {
                return Err(Failure::new(
                    4,
                    format!("'{n}' is not installed"),
                    "see 'agora list'",
                ));
            }
            vec![n.to_string()]
        }
        None => lock.packages.iter().map(|p| p.name.clone()).collect(),
    };
    if roots.is_empty() {
        return Err(Failure::new(
            2,
            "nothing is installed",
            "install packages with 'agora install NAME'",
        ));
    }
    install(client, project, &roots, json)
}

pub fn remove(project: &Path, name: &str) -> Result<Output, Failure> {
    let project = &Project::new(project);
    let dir = project.package(&package_name(name)?).map_err(unsafe_path)?;
    let mut lock = read_lock(project)?.unwrap_or_else(Lockfile::new);
    if !lock.remove(name) {
        return Err(Failure::new(
            4,
            format!("'{name}' is not installed"),
            "see 'agora list'",
        ));
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Failure::new(1, format!("{}: {e}", dir.display()), "check permissions"))?;
    }
    write_lock(project, &lock)?;
    Ok(Output::new(
        json!({ "removed": name }),
        format!("removed {name}"),
    ))
}

pub fn list(project: &Path) -> Result<Output, Failure> {
    let lock = read_lock(&Project::new(project))?.unwrap_or_else(Lockfile::new);
    let value = json!(lock.packages.iter().map(|p| json!({"name": p.name, "version": p.version, "sha256": p.sha256, "dependencies": p.dependencies})).collect::<Vec<_>>());
    let text = if lock.packages.is_empty() {
        "no packages installed".to_string()
    } else {
        let lines: Vec<String> = lock
            .packages
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect();
        lines.join("\n")
    };
    Ok(Output::new(value, text))
}

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
    let n = lock.packages.len();
    let value = json!({ "ok": problems.is_empty(), "packages": n, "problems": problems });
    if problems.is_empty() {
        let text = format!("{n} package{} verified", if n == 1 { "" } else { "s" });
        Ok(Output::new(value, text))
    } else {
        let found = Output::new(value, problems.join("\n"));
        Err(Failure::new(
            6,
            format!(
                "{} installed file(s) differ from {}",
                problems.len(),
                LOCKFILE
            ),
            "reinstall exactly what the lockfile says with 'agora install'",
        )
        .with_found(found))
    }
}
