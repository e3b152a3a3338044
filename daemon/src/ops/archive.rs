//! Packing a package directory into its archive: a deterministic tar + gzip. Entries are
//! sorted by path, with fixed mtimes, owners and modes (0644, or 0755 for files with an
//! execute bit), so the same directory always packs to the same bytes and the same content id.
//! Symlinks and special files are refused rather than silently skipped; `.git` and `.agora`
//! directories are left out.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use agora_protocol::limits::{MAX_ARCHIVE_BYTES, MAX_MANIFEST_BYTES};
use agora_protocol::{Manifest, manifest::ManifestError};
use flate2::{Compression, GzBuilder};

/// Most entries (files and directories) in one package.
pub const MAX_ENTRIES: usize = 10_000;
/// Largest total of uncompressed file bytes in one package: 4x the archive limit, a generous
/// bound for text that compresses.
pub const MAX_UNPACKED_BYTES: u64 = 4 * MAX_ARCHIVE_BYTES;
/// Directories never packed.
const SKIPPED_DIRS: [&str; 2] = [".git", ".agora"];
/// The manifest's file name.
pub const MANIFEST_FILE: &str = "package.toml";

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

/// Packs `dir` into a deterministic tar.gz.
pub fn pack(dir: &Path) -> Result<Vec<u8>, PackError> {
    let mut entries = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !(e.file_type().is_dir() && SKIPPED_DIRS.iter().any(|s| e.file_name() == *s))
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
        let rel = path
            .strip_prefix(dir)
            .expect("walkdir yields paths under its root")
            .to_str()
            .ok_or_else(|| PackError::NonUtf8Path(path.clone()))?
            .to_owned();
        let ft = entry.file_type();
        if ft.is_symlink() {
            return Err(PackError::Symlink(path));
        }
        if !ft.is_dir() && !ft.is_file() {
            return Err(PackError::SpecialFile(path));
        }
        if ft.is_file() {
            total += entry
                .metadata()
                .map_err(|e| PackError::Io {
                    path: path.clone(),
                    source: e.into(),
                })?
                .len();
            if total > MAX_UNPACKED_BYTES {
                return Err(PackError::TooLarge);
            }
        }
        entries.push((rel, path, ft.is_dir()));
        if entries.len() > MAX_ENTRIES {
            return Err(PackError::TooManyEntries);
        }
    }
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
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn packing_is_deterministic_and_skips_git() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        // Same content, created in a different order.
        write(a.path(), "package.toml", "x");
        write(a.path(), "templates/b.tmpl", "b");
        write(a.path(), "templates/a.tmpl", "a");
        write(b.path(), "templates/a.tmpl", "a");
        write(b.path(), "templates/b.tmpl", "b");
        write(b.path(), "package.toml", "x");
        write(b.path(), ".git/HEAD", "ref");
        let (pa, pb) = (pack(a.path()).unwrap(), pack(b.path()).unwrap());
        assert_eq!(pa, pb);

        let mut names = Vec::new();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(pa.as_slice()));
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 0);
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(
            names,
            [
                "package.toml",
                "templates/",
                "templates/a.tmpl",
                "templates/b.tmpl"
            ]
        );
    }

    #[test]
    fn a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "package.toml", "x");
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        assert!(matches!(pack(d.path()), Err(PackError::Symlink(p)) if p == d.path().join("link")));
    }
}
