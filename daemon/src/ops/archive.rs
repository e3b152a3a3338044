//! Packing a package directory into its archive: a deterministic tar + gzip. Entries are
//! sorted by path, with fixed mtimes, owners and modes (0644, or 0755 for files with an
//! execute bit), so the same directory always packs to the same bytes and the same content id.
//! Symlinks and special files are refused rather than silently skipped.
//!
//! What is packed (a publish cannot be taken back, so nothing is packed by accident):
//! `package.toml` always; `.git` and `.agora` never; of the rest, what `.agoraignore`
//! (gitignore syntax, at the package's root) and the manifest's `exclude` patterns do not
//! exclude, and, when the manifest lists `include` patterns, only what they name. A dotfile
//! or anything under a dot-directory (`.env`, `.github/`) is packed only when an `include`
//! pattern or a `!` line of `.agoraignore` names it.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use agora_protocol::limits::{MAX_ARCHIVE_BYTES, MAX_MANIFEST_BYTES};
use agora_protocol::{Manifest, manifest::ManifestError};
use flate2::{Compression, GzBuilder};
use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Most entries (files and directories) in one package.
pub const MAX_ENTRIES: usize = 10_000;
/// Largest total of uncompressed file bytes in one package: 4x the archive limit, a generous
/// bound for text that compresses.
pub const MAX_UNPACKED_BYTES: u64 = 4 * MAX_ARCHIVE_BYTES;
/// Directories never packed.
const SKIPPED_DIRS: [&str; 2] = [".git", ".agora"];
/// The manifest's file name.
pub const MANIFEST_FILE: &str = "package.toml";
/// Each packed file's path and size, in archive order.
pub type Files = Vec<(String, u64)>;
/// The ignore file at a package's root.
pub const IGNORE_FILE: &str = ".agoraignore";
/// Largest `.agoraignore` read.
const MAX_IGNORE_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} has no package.toml")]
    NoManifest(PathBuf),
    #[error("{path}:{line}:{column}: {message}", line = .error.line, column = .error.column, message = .error.message)]
    Manifest { path: PathBuf, error: ManifestError },
    #[error("{path} is {len} bytes; a package.toml may be at most {MAX_MANIFEST_BYTES}")]
    ManifestTooLarge { path: PathBuf, len: u64 },
    #[error("{0} is a symlink; packages may contain only regular files and directories")]
    Symlink(PathBuf),
    #[error("{0} is not a regular file or directory")]
    SpecialFile(PathBuf),
    #[error("{0} has a name that is not UTF-8")]
    NonUtf8Path(PathBuf),
    #[error("the package has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("the package holds more than {MAX_UNPACKED_BYTES} bytes")]
    TooLarge,
    #[error("the archive is {len} bytes; the limit is {MAX_ARCHIVE_BYTES}")]
    ArchiveTooLarge { len: u64 },
    #[error("{path}: {message}")]
    Pattern { path: String, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads and parses `dir/package.toml`.
pub fn read_manifest(dir: &Path) -> Result<Manifest, PackError> {
    let path = dir.join(MANIFEST_FILE);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PackError::NoManifest(dir.to_owned()));
        }
        Err(e) => return Err(io(&path)(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(PackError::Symlink(path));
    }
    if meta.len() > MAX_MANIFEST_BYTES as u64 {
        return Err(PackError::ManifestTooLarge {
            path,
            len: meta.len(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    Manifest::parse(&text).map_err(|error| PackError::Manifest { path, error })
}

/// What a set of gitignore patterns says of a path: it names it, names it with a `!` line
/// (taking it back), or says nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Named {
    Yes,
    Not,
    Silent,
}

impl Named {
    fn of<T>(m: Match<T>) -> Self {
        match m {
            Match::Ignore(_) => Self::Yes,
            Match::Whitelist(_) => Self::Not,
            Match::None => Self::Silent,
        }
    }
}

/// Which paths of a package directory are packed (see the module's documentation).
struct Selection {
    ignore_file: Gitignore,
    exclude: Gitignore,
    include: Option<Gitignore>,
}

impl Selection {
    fn new(dir: &Path, manifest: &Manifest) -> Result<Self, PackError> {
        let pattern = |path: &str, e: ignore::Error| PackError::Pattern {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let from = |patterns: &[String], what: &str| -> Result<Gitignore, PackError> {
            let mut b = GitignoreBuilder::new(dir);
            for p in patterns {
                b.add_line(None, p)
                    .map_err(|e| pattern(&format!("package.toml `{what}`"), e))?;
            }
            b.build()
                .map_err(|e| pattern(&format!("package.toml `{what}`"), e))
        };
        let ignore_path = dir.join(IGNORE_FILE);
        let ignore_file = match std::fs::symlink_metadata(&ignore_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Gitignore::empty(),
            Err(e) => return Err(io(&ignore_path)(e)),
            Ok(m) if !m.is_file() => return Err(PackError::SpecialFile(ignore_path)),
            Ok(m) if m.len() > MAX_IGNORE_BYTES => {
                return Err(PackError::Pattern {
                    path: IGNORE_FILE.into(),
                    message: format!("{} bytes; the limit is {MAX_IGNORE_BYTES}", m.len()),
                });
            }
            Ok(_) => {
                let text = std::fs::read_to_string(&ignore_path).map_err(io(&ignore_path))?;
                let mut b = GitignoreBuilder::new(dir);
                for line in text.lines() {
                    b.add_line(Some(ignore_path.clone()), line)
                        .map_err(|e| pattern(IGNORE_FILE, e))?;
                }
                b.build().map_err(|e| pattern(IGNORE_FILE, e))?
            }
        };
        let include = if manifest.include.is_empty() {
            None
        } else {
            Some(from(&manifest.include, "include")?)
        };
        Ok(Self {
            ignore_file,
            exclude: from(&manifest.exclude, "exclude")?,
            include,
        })
    }

    /// Whether the file at `rel` (relative to the package) is packed.
    fn packs(&self, rel: &Path) -> bool {
        if rel == Path::new(MANIFEST_FILE) {
            return true;
        }
        let named = |g: &Gitignore| Named::of(g.matched_path_or_any_parents(rel, false));
        let ignore_file = named(&self.ignore_file);
        let listed = self
            .include
            .as_ref()
            .is_some_and(|g| named(g) == Named::Yes)
            || ignore_file == Named::Not;
        let dotted = rel
            .components()
            .any(|c| c.as_os_str().to_str().is_some_and(|n| n.starts_with('.')));
        if (dotted && !listed) || ignore_file == Named::Yes || named(&self.exclude) == Named::Yes {
            return false;
        }
        self.include.is_none() || listed
    }

    /// Whether nothing under the directory at `rel` can be packed: it is excluded as a whole,
    /// or a dot-directory that nothing lists.
    fn skips_dir(&self, rel: &Path) -> bool {
        let whole = |g: &Gitignore| Named::of(g.matched_path_or_any_parents(rel, true));
        if whole(&self.ignore_file) == Named::Yes || whole(&self.exclude) == Named::Yes {
            return true;
        }
        let dotted = rel
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        dotted && self.include.is_none() && self.ignore_file.num_whitelists() == 0
    }
}

/// Packs the files of `dir` that `manifest` selects into a deterministic tar.gz; returns it
/// and each packed file's path and size.
pub fn pack(dir: &Path, manifest: &Manifest) -> Result<(Vec<u8>, Files), PackError> {
    let selection = Selection::new(dir, manifest)?;
    let mut entries: Vec<(String, PathBuf, u64)> = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
            e.depth() == 0
                || !(e.file_type().is_dir()
                    && (SKIPPED_DIRS.iter().any(|s| e.file_name() == *s)
                        || selection.skips_dir(rel)))
        });
    let mut total: u64 = 0;
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_owned)
                .unwrap_or_else(|| dir.to_owned());
            PackError::Io {
                path,
                source: e.into(),
            }
        })?;
        if entry.depth() == 0 {
            continue;
        }
        let path = entry.path().to_owned();
        let rel_path = path
            .strip_prefix(dir)
            .expect("walkdir yields paths under its root");
        let rel = rel_path
            .to_str()
            .ok_or_else(|| PackError::NonUtf8Path(path.clone()))?
            .to_owned();
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        if !selection.packs(rel_path) {
            continue;
        }
        if ft.is_symlink() {
            return Err(PackError::Symlink(path));
        }
        if !ft.is_file() {
            return Err(PackError::SpecialFile(path));
        }
        let len = entry
            .metadata()
            .map_err(|e| PackError::Io {
                path: path.clone(),
                source: e.into(),
            })?
            .len();
        total += len;
        if total > MAX_UNPACKED_BYTES {
            return Err(PackError::TooLarge);
        }
        entries.push((rel, path, len));
        if entries.len() > MAX_ENTRIES {
            return Err(PackError::TooManyEntries);
        }
    }
    let files: Vec<(String, u64)> = entries.iter().map(|(r, _, l)| (r.clone(), *l)).collect();
    // Each packed file's directories, as entries of their own.
    let mut dirs: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for (rel, _, _) in &entries {
        let mut parent = Path::new(rel).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_str().expect("a part of a UTF-8 path").to_owned());
            parent = p.parent();
        }
    }
    let mut entries: Vec<(String, PathBuf, bool)> = entries
        .into_iter()
        .map(|(rel, path, _)| (rel, path, false))
        .chain(dirs.into_iter().map(|d| (d, dir.to_owned(), true)))
        .collect();
    // walkdir sorts siblings; sorting whole paths makes the order independent of that.
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (rel, path, is_dir) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if is_dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, format!("{rel}/"), std::io::empty())
                .map_err(io(&path))?;
        } else {
            let mut file = File::open(&path).map_err(io(&path))?;
            let meta = file.metadata().map_err(io(&path))?;
            let executable = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            let mut data = Vec::with_capacity(meta.len() as usize);
            file.read_to_end(&mut data).map_err(io(&path))?;
            tar.append_data(&mut header, &rel, data.as_slice())
                .map_err(io(&path))?;
        }
    }
    let gz = tar.into_inner().map_err(io(dir))?;
    let bytes = gz.finish().map_err(io(dir))?;
    if bytes.len() as u64 > MAX_ARCHIVE_BYTES {
        return Err(PackError::ArchiveTooLarge {
            len: bytes.len() as u64,
        });
    }
    Ok((bytes, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const MANIFEST: &str = "[package]\nname = \"p\"\nversion = \"1.0.0\"\ndescription = \"d\"\n";

    /// The manifest with these lines added to `[package]`.
    fn manifest(extra: &str) -> Manifest {
        Manifest::parse(&format!("{MANIFEST}{extra}")).unwrap()
    }

    /// The entries of an archive, in order.
    fn names(archive: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 0);
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        names
    }

    #[test]
    fn packing_is_deterministic_and_skips_git() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        // Same content, created in a different order.
        write(a.path(), "package.toml", MANIFEST);
        write(a.path(), "templates/b.tmpl", "b");
        write(a.path(), "templates/a.tmpl", "a");
        write(b.path(), "templates/a.tmpl", "a");
        write(b.path(), "templates/b.tmpl", "b");
        write(b.path(), "package.toml", MANIFEST);
        write(b.path(), ".git/HEAD", "ref");
        let m = manifest("");
        let ((pa, files), (pb, _)) = (pack(a.path(), &m).unwrap(), pack(b.path(), &m).unwrap());
        assert_eq!(pa, pb);
        assert_eq!(
            names(&pa),
            [
                "package.toml",
                "templates/",
                "templates/a.tmpl",
                "templates/b.tmpl"
            ]
        );
        assert_eq!(
            files,
            [
                ("package.toml".to_string(), MANIFEST.len() as u64),
                ("templates/a.tmpl".to_string(), 1),
                ("templates/b.tmpl".to_string(), 1)
            ]
        );
    }

    #[test]
    fn dotfiles_are_packed_only_when_listed() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "package.toml", MANIFEST);
        write(d.path(), ".env", "SECRET=1");
        write(d.path(), ".github/workflows/ci.yml", "on: push");
        write(d.path(), "templates/.hidden", "h");
        write(d.path(), "templates/a.tmpl", "a");
        let packed = |m: &Manifest| names(&pack(d.path(), m).unwrap().0);
        assert_eq!(
            packed(&manifest("")),
            ["package.toml", "templates/", "templates/a.tmpl"]
        );
        // Listed by `include`: that one, and nothing else the patterns do not name.
        assert_eq!(
            packed(&manifest(
                "include = [\"templates/\", \".github/workflows/ci.yml\"]\n"
            )),
            [
                ".github/",
                ".github/workflows/",
                ".github/workflows/ci.yml",
                "package.toml",
                "templates/",
                "templates/.hidden",
                "templates/a.tmpl"
            ]
        );
        // Or taken back by a `!` line of .agoraignore.
        write(d.path(), ".agoraignore", "!.github/\n");
        assert_eq!(
            packed(&manifest("")),
            [
                ".github/",
                ".github/workflows/",
                ".github/workflows/ci.yml",
                "package.toml",
                "templates/",
                "templates/a.tmpl"
            ]
        );
    }

    #[test]
    fn agoraignore_and_exclude_leave_files_out_and_package_toml_always_goes() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "package.toml", MANIFEST);
        write(d.path(), "templates/a.tmpl", "a");
        write(d.path(), "templates/a.tmpl.bak", "old");
        write(d.path(), "node_modules/x/index.js", "x");
        write(d.path(), "notes/todo.md", "t");
        write(
            d.path(),
            ".agoraignore",
            "# editor leftovers\n*.bak\nnode_modules/\npackage.toml\n",
        );
        let m = manifest("exclude = [\"notes\"]\n");
        assert_eq!(
            names(&pack(d.path(), &m).unwrap().0),
            ["package.toml", "templates/", "templates/a.tmpl"]
        );
        let bad = manifest("exclude = [\"[z-a]\"]\n");
        let got = pack(d.path(), &bad).map(|(_, files)| files);
        assert_eq!(
            got.map_err(|e| e.to_string()),
            Err(
                "package.toml `exclude`: error parsing glob '[z-a]': invalid range; 'z' > 'a'"
                    .to_string()
            )
        );
    }

    #[test]
    fn a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "package.toml", MANIFEST);
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        assert!(
            matches!(pack(d.path(), &manifest("")), Err(PackError::Symlink(p)) if p == d.path().join("link"))
        );
    }
}
