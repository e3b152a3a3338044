//! Project commands that resolve: install and update (remove, list and verify are in
//! `manage.rs`). A project is a directory with
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
use agora_client::ipc::{Progress, ReleaseInfo};
use agora_client::lockfile::{LOCKFILE, LockedPackage, Lockfile};
use agora_client::project::{Project, UnsafePath};
use agora_client::unpack::{self, FileHashes};
use agora_protocol::{ContentId, Dependency, Manifest, PackageName};
use serde_json::json;

use crate::output::Output;
use crate::{Failure, explain, growing, on_progress, spinner};

/// A path the project's links make unsafe: nothing was written or deleted through it.
pub(crate) fn unsafe_path(e: UnsafePath) -> Failure {
    Failure::new(
        1,
        e.to_string(),
        "remove the link (nothing was changed), or use another project directory",
    )
}

/// A package name from the daemon or the command line.
pub(crate) fn package_name(name: &str) -> Result<PackageName, Failure> {
    PackageName::new(name).map_err(|e| {
        Failure::new(
            2,
            format!("{name:?} is not a package name: {e}"),
            "see 'agora search' for the names in the catalog",
        )
    })
}

pub(crate) fn read_lock(project: &Project) -> Result<Option<Lockfile>, Failure> {
    Lockfile::read(&project.lockfile().map_err(unsafe_path)?).map_err(|e| {
        Failure::new(
            1,
            e.to_string(),
            "fix or delete agora.lock and install again",
        )
    })
}

pub(crate) fn write_lock(project: &Project, lock: &Lockfile) -> Result<(), Failure> {
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
    /// Its archive came through a relay.
    relayed: bool,
}

/// A note for each staged release whose archive came through a relay.
fn relay_notes(staged: &[Staged<'_>]) -> Vec<String> {
    staged
        .iter()
        .filter(|s| s.relayed)
        .map(|s| {
            format!(
                "note: {}@{} came through a relay: no direct connection to its providers could \
                 be made (both sides behind NATs that allow none)",
                s.release.name, s.release.version
            )
        })
        .collect()
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
    let _ = std::fs::remove_dir_all(&staging);
    // The archive is unpacked into the staging directory, and hashed on a second thread, as
    // the daemon verifies its chunks: the install ends soon after the download does. The
    // daemon checked every chunk; the whole is checked again here, trusting no file system,
    // and nothing uses the staging directory until that check has passed.
    let download = growing::Download::default();
    let mut shown = on_progress(json, &format!("{}@{}", r.name, r.version));
    let (fetched, hashed, unpacked) = std::thread::scope(|s| {
        let hashing = s.spawn(|| ContentId::of_reader(download.reader()));
        let unpacking = s.spawn(|| unpack::unpack(download.reader(), &staging));
        let fetched = client.fetch(&r.name, &r.version, |p| {
            if let Progress::Download { readable, path, .. } = p {
                download.progressed(*readable, path);
            }
            shown(p);
        });
        match &fetched {
            Ok(f) => download.finished(&f.path, f.size),
            Err(_) => download.failed(),
        }
        let _unpacking = spinner(json, format!("{}@{}: unpacking", r.name, r.version));
        (fetched, hashing.join(), unpacking.join())
    });
    let discard = |failure: Failure| {
        let _ = std::fs::remove_dir_all(&staging);
        failure
    };
    let fetched = fetched.map_err(|e| discard(crate::explain(e)))?;
    if fetched.sha256 != r.sha256 {
        return Err(discard(Failure::new(
            6,
            format!(
                "{}@{}: the archive is {} but the release says {}",
                r.name, r.version, fetched.sha256, r.sha256
            ),
            "the daemon's store may be damaged; see 'agora node logs'",
        )));
    }
    // A panic in either thread counts as a failed check: nothing unchecked is installed.
    let hashed = hashed.unwrap_or_else(|_| Err(std::io::Error::other("hashing panicked")));
    match hashed {
        Ok(h) if h.to_hex() == r.sha256 => {}
        Ok(_) => {
            return Err(discard(Failure::new(
                6,
                format!("{} does not hash to {}", fetched.path, r.sha256),
                "the daemon's store may be damaged; see 'agora node logs'",
            )));
        }
        Err(e) => {
            return Err(discard(Failure::new(
                1,
                format!("{}: {e}", fetched.path),
                "see 'agora node logs'",
            )));
        }
    }
    let unpacked =
        unpacked.unwrap_or_else(|_| Err(unpack::UnpackError::Corrupt("unpacking panicked".into())));
    let files = unpacked.map_err(|e| {
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
        relayed: fetched.relayed,
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

pub(crate) fn hex_files(files: &FileHashes) -> BTreeMap<String, String> {
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

/// What an install or update changed in the project.
#[derive(Default)]
struct Changes {
    installed: Vec<LockedPackage>,
    updated: Vec<(String, String, String)>,
    removed: Vec<(String, String)>,
    /// Said beside the changes (a caret that picked a newer version).
    notes: Vec<String>,
}

impl Changes {
    fn output(&self, project: &Project) -> Output {
        let mut text: Vec<String> = Vec::new();
        text.extend(
            self.installed
                .iter()
                .map(|p| format!("installed {}@{}", p.name, p.version)),
        );
        text.extend(
            self.updated
                .iter()
                .map(|(n, from, to)| format!("updated {n} {from} → {to}")),
        );
        text.extend(
            self.removed
                .iter()
                .map(|(n, v)| format!("removed {n}@{v} (no longer needed)")),
        );
        if text.is_empty() {
            text.push("up to date".into());
        }
        text.extend(self.notes.iter().cloned());
        Output::new(
            json!({
                "installed": self.installed.iter().map(|p| json!({"name": p.name, "version": p.version, "sha256": p.sha256})).collect::<Vec<_>>(),
                "updated": self.updated.iter().map(|(n, from, to)| json!({"name": n, "from": from, "to": to})).collect::<Vec<_>>(),
                "removed": self.removed.iter().map(|(n, v)| json!({"name": n, "version": v})).collect::<Vec<_>>(),
                "notes": self.notes,
                "lockfile": project.root().join(LOCKFILE),
            }),
            text.join("\n"),
        )
    }
}

/// A requirement from the command line.
fn requirement(spec: &str) -> Result<Dependency, Failure> {
    spec.parse().map_err(|e| {
        Failure::new(
            2,
            format!("{spec:?} is not NAME or NAME@REQ: {e}"),
            "e.g. agora install hello-world or hello-world@^1.2",
        )
    })
}

/// `install NAME[@REQ]...`: the project's requirements with these added (or replacing the
/// ones on the same names) are resolved together, so nothing installed is broken by them;
/// with no names, exactly what the lockfile says is installed.
pub fn install(
    client: &mut Client,
    project: &Path,
    names: &[String],
    json: bool,
) -> Result<Output, Failure> {
    let project = &Project::new(project);
    // Every path the install will write, checked before anything is asked of the daemon.
    project.packages().map_err(unsafe_path)?;
    let lock = read_lock(project)?.unwrap_or_else(Lockfile::new);
    if names.is_empty() {
        return install_locked(client, project, lock, json);
    }
    let asked: Vec<Dependency> = names
        .iter()
        .map(|n| requirement(n))
        .collect::<Result<_, _>>()?;
    let mut roots = lock.roots();
    for d in &asked {
        roots.retain(|r| r.name != d.name);
        roots.push(d.clone());
    }
    // A name asked for again is resolved by its new requirement; the rest keep their pins.
    let prefer = lock.pins_except(|name| asked.iter().any(|d| d.name.as_str() == name));
    let (mut changes, lock) = apply(client, project, lock, &roots, &prefer, json)?;
    for (spec, d) in names.iter().zip(&asked) {
        let Some((_, req)) = spec.split_once('@') else {
            continue;
        };
        let Some(p) = lock.get(d.name.as_str()) else {
            continue;
        };
        if req.parse::<agora_protocol::Version>().is_ok() && req != p.version {
            changes.notes.push(format!(
                "note: {spec} means ^{req}, and {} {} is the newest that fits; ask for {}@={req} \
                 for exactly {req}",
                p.name, p.version, d.name
            ));
        }
    }
    Ok(changes.output(project))
}

/// `update [NAME]`: the project's requirements resolved again to the newest versions they
/// allow (for NAME only, keeping every other package where it is, when a name is given).
pub fn update(
    client: &mut Client,
    project: &Path,
    name: Option<&str>,
    json: bool,
) -> Result<Output, Failure> {
    let project = &Project::new(project);
    project.packages().map_err(unsafe_path)?;
    let lock = read_lock(project)?.unwrap_or_else(Lockfile::new);
    if let Some(n) = name
        && lock.get(n).is_none()
    {
        return Err(Failure::new(
            4,
            format!("'{n}' is not installed"),
            "see 'agora list'",
        ));
    }
    let roots = lock.roots();
    if roots.is_empty() {
        return Err(Failure::new(
            2,
            "nothing is installed",
            "install packages with 'agora install NAME'",
        ));
    }
    let prefer = match name {
        Some(n) => lock.pins_except(|p| p == n),
        None => Vec::new(),
    };
    let (changes, _) = apply(client, project, lock, &roots, &prefer, json)?;
    Ok(changes.output(project))
}

/// Resolves `roots` (keeping `prefer`'s pins where they fit), installs what is new or
/// changed, removes what is no longer needed and writes the lockfile, which it returns.
/// Nothing changes if the resolution fails or an archive is refused.
fn apply(
    client: &mut Client,
    project: &Project,
    mut lock: Lockfile,
    roots: &[Dependency],
    prefer: &[String],
    json: bool,
) -> Result<(Changes, Lockfile), Failure> {
    let root_specs: Vec<String> = roots.iter().map(ToString::to_string).collect();
    let releases = client.resolve(&root_specs, prefer).map_err(explain)?;
    let changed: Vec<ReleaseInfo> = releases
        .iter()
        .filter(|r| {
            lock.get(&r.name)
                .is_none_or(|p| p.version != r.version || p.sha256 != r.sha256)
        })
        .cloned()
        .collect();
    let staged = stage_all(client, project, &changed, json)?;
    let mut changes = Changes {
        notes: relay_notes(&staged),
        ..Changes::default()
    };
    swap_all(project, staged, &mut lock, |lock, entry| {
        match lock.get(&entry.name) {
            Some(old) => changes.updated.push((
                entry.name.clone(),
                old.version.clone(),
                entry.version.clone(),
            )),
            None => changes.installed.push(entry.clone()),
        }
    })?;
    let needed: Vec<&str> = releases.iter().map(|r| r.name.as_str()).collect();
    let unneeded: Vec<LockedPackage> = lock
        .packages
        .iter()
        .filter(|p| !needed.contains(&p.name.as_str()))
        .cloned()
        .collect();
    for p in unneeded {
        remove_dir(project, &p.name)?;
        lock.remove(&p.name);
        changes.removed.push((p.name, p.version));
    }
    lock.requested = root_specs;
    write_lock(project, &lock)?;
    Ok((changes, lock))
}

/// Installs exactly what the lockfile says: each version pinned, archives must match.
fn install_locked(
    client: &mut Client,
    project: &Project,
    mut lock: Lockfile,
    json: bool,
) -> Result<Output, Failure> {
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
    let mut releases = Vec::new();
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
        releases.push(r);
    }
    let staged = stage_all(client, project, &releases, json)?;
    let mut changes = Changes {
        notes: relay_notes(&staged),
        ..Changes::default()
    };
    swap_all(project, staged, &mut lock, |_, entry| {
        changes.installed.push(entry.clone())
    })?;
    if lock.requested.is_empty() {
        lock.requested = lock.roots().iter().map(ToString::to_string).collect();
    }
    write_lock(project, &lock)?;
    Ok(changes.output(project))
}

/// Swaps each staged release into place and locks it, telling `taken` of each (with the lock
/// as it was before). If one cannot be swapped in, the ones already in place stay locked, the
/// rest go, and the lockfile is written as it then is.
fn swap_all(
    project: &Project,
    staged: Vec<Staged<'_>>,
    lock: &mut Lockfile,
    mut taken: impl FnMut(&Lockfile, &LockedPackage),
) -> Result<(), Failure> {
    let mut staged = staged.into_iter();
    while let Some(s) = staged.next() {
        match swap_in(project, s) {
            Ok(entry) => {
                taken(lock, &entry);
                lock.upsert(entry);
            }
            Err(f) => {
                for s in staged {
                    let _ = std::fs::remove_dir_all(&s.dir);
                }
                write_lock(project, lock)?;
                return Err(f);
            }
        }
    }
    Ok(())
}

/// Stages every release: everything that needs the daemon first. If it stops (or an archive
/// is refused) part way, the staged directories go and the project is as it was.
fn stage_all<'a>(
    client: &mut Client,
    project: &Project,
    releases: &'a [ReleaseInfo],
    json: bool,
) -> Result<Vec<Staged<'a>>, Failure> {
    let fresh = !project.root().join(".agora").exists();
    let mut staged = Vec::with_capacity(releases.len());
    for r in releases {
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
    Ok(staged)
}

/// Deletes an installed package's directory (if it is there).
pub(crate) fn remove_dir(project: &Project, name: &str) -> Result<(), Failure> {
    let dir = project.package(&package_name(name)?).map_err(unsafe_path)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Failure::new(1, format!("{}: {e}", dir.display()), "check permissions"))?;
    }
    Ok(())
}
