//! Unpacking a package archive safely.
//!
//! Only regular files and directories with normal path components are accepted: `..`,
//! absolute paths, symlinks, hard links, device files, FIFOs, duplicate paths, more than
//! [`MAX_ENTRIES`] entries or more than [`MAX_UNPACKED_BYTES`] bytes (which also stops a gzip
//! bomb) are each refused with their own error. The tar headers that extend the next entry (a
//! GNU long name, a PAX header) are read here, not by the tar crate, which would read each
//! whole into memory whatever size it declares: a long name is at most [`MAX_PATH_BYTES`] and
//! a PAX header at most [`MAX_PAX_BYTES`], checked before a byte of either is read. Everything is written into a fresh temporary
//! directory next to the destination and renamed into place only when the whole archive was
//! read; on any error the temporary directory is removed and the destination is untouched.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use agora_protocol::{ContentHasher, ContentId};

/// Bytes of one file written after which they are synced while the unpack goes on.
const SYNC_EVERY: u64 = 8 * 1024 * 1024;
/// Most entries in one package archive.
pub const MAX_ENTRIES: usize = 10_000;
/// Most bytes unpacked from one archive (files' contents).
pub const MAX_UNPACKED_BYTES: u64 = 1024 * 1024 * 1024;
/// Longest path of an entry (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: u64 = 4096;
/// Largest PAX extended header: a path and a few short keys.
pub const MAX_PAX_BYTES: u64 = 8192;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the archive is corrupt: {0}")]
    Corrupt(String),
    #[error("archive entry {0:?} escapes the package directory")]
    UnsafePath(String),
    #[error("archive entry {0:?} is a link; packages may contain only files and directories")]
    Link(String),
    #[error("archive entry {path:?} is a {kind}; packages may contain only files and directories")]
    Special { path: String, kind: String },
    #[error("archive entry {0:?} appears twice")]
    Duplicate(String),
    #[error("the archive has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("the archive unpacks to more than {MAX_UNPACKED_BYTES} bytes")]
    TooLarge,
    #[error("{0} already exists")]
    Exists(PathBuf),
    #[error("the archive has a {kind} of {size} bytes; the limit is {limit}")]
    HeaderTooLarge {
        kind: &'static str,
        size: u64,
        limit: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What was unpacked: every file's relative path and SHA-256.
pub type FileHashes = BTreeMap<String, ContentId>;

/// The relative path of an entry, if every component is a normal name.
fn safe_path(raw: &str) -> Result<PathBuf, UnpackError> {
    let path = Path::new(raw);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(UnpackError::UnsafePath(raw.to_owned())),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(UnpackError::UnsafePath(raw.to_owned()));
    }
    Ok(out)
}

/// Unpacks the gzip-compressed tar `archive` into `dest`, which must not exist yet.
pub fn unpack(archive: impl Read, dest: &Path) -> Result<FileHashes, UnpackError> {
    if dest.exists() {
        return Err(UnpackError::Exists(dest.to_owned()));
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(format!(".unpack-{:016x}", rand_u64()));
    fs::create_dir(&tmp).map_err(io(&tmp))?;
    let result = unpack_into(archive, &tmp).and_then(|files| {
        fs::rename(&tmp, dest).map_err(io(dest))?;
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(parent))?;
        Ok(files)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

fn unpack_into(archive: impl Read, root: &Path) -> Result<FileHashes, UnpackError> {
    // The decompressed stream is capped: a gzip bomb stops at the limit.
    let decoder = flate2::read::GzDecoder::new(archive).take(MAX_UNPACKED_BYTES + 1024 * 1024);
    let mut tar = tar::Archive::new(decoder);
    let mut files = FileHashes::new();
    let mut seen = std::collections::HashSet::new();
    let mut total: u64 = 0;
    let corrupt = |e: std::io::Error| UnpackError::Corrupt(e.to_string());
    // The path the next entry is given by a GNU long name or a PAX header before it.
    let mut next_path: Option<Vec<u8>> = None;
    for (count, entry) in tar.entries().map_err(corrupt)?.raw(true).enumerate() {
        if count >= MAX_ENTRIES {
            return Err(UnpackError::TooManyEntries);
        }
        let mut entry = entry.map_err(corrupt)?;
        let kind = entry.header().entry_type();
        if kind.is_gnu_longname() || kind.is_pax_local_extensions() {
            let (what, limit) = if kind.is_gnu_longname() {
                ("GNU long name", MAX_PATH_BYTES)
            } else {
                ("PAX header", MAX_PAX_BYTES)
            };
            let size = entry.header().size().map_err(corrupt)?;
            if size > limit {
                return Err(UnpackError::HeaderTooLarge {
                    kind: what,
                    size,
                    limit,
                });
            }
            if next_path.is_some() {
                return Err(UnpackError::Corrupt(
                    "two headers extend the same entry".into(),
                ));
            }
            let mut data = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(size)
                .read_to_end(&mut data)
                .map_err(corrupt)?;
            next_path = Some(if kind.is_gnu_longname() {
                while data.last() == Some(&0) {
                    data.pop();
                }
                data
            } else {
                pax_path(&data)?
            });
            continue;
        }
        let raw = String::from_utf8_lossy(
            &next_path
                .take()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| entry.header().path_bytes().into_owned()),
        )
        .into_owned();
        if kind.is_symlink() || kind.is_hard_link() || kind.is_gnu_longlink() {
            return Err(UnpackError::Link(raw));
        }
        let rel = safe_path(&raw)?;
        let key = rel.to_string_lossy().into_owned();
        if !seen.insert(key.clone()) {
            return Err(UnpackError::Duplicate(raw));
        }
        let path = root.join(&rel);
        if kind.is_dir() {
            fs::create_dir_all(&path).map_err(io(&path))?;
            continue;
        }
        if !kind.is_file() {
            return Err(UnpackError::Special {
                path: raw,
                kind: format!("{kind:?}").to_lowercase(),
            });
        }
        let size = entry.header().size().map_err(corrupt)?;
        total = total.saturating_add(size);
        if total > MAX_UNPACKED_BYTES {
            return Err(UnpackError::TooLarge);
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let executable = entry.header().mode().map_err(corrupt)? & 0o111 != 0;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if executable { 0o755 } else { 0o644 })
            .open(&path)
            .map_err(io(&path))?;
        let mut hasher = ContentHasher::new();
        let mut buf = [0u8; 64 * 1024];
        let mut written: u64 = 0;
        loop {
            let n = entry.read(&mut buf).map_err(corrupt)?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > size {
                return Err(UnpackError::Corrupt(format!(
                    "{raw} is longer than its header says"
                )));
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io(&path))?;
            // A large file is synced as it is written, so that the sync making it durable
            // waits for its last bytes only; while the archive is still arriving, the
            // syncs take time the unpack would spend waiting for it.
            if written % SYNC_EVERY < n as u64 {
                out.sync_data().map_err(io(&path))?;
            }
        }
        out.sync_all().map_err(io(&path))?;
        files.insert(key, hasher.finish());
    }
    Ok(files)
}

/// The path a PAX header gives the next entry (empty if it gives none). Any key that would
/// change how the entry is read (its size, sparse maps) is refused: our archives never carry
/// one, and the raw reading here follows the entry's own header.
fn pax_path(data: &[u8]) -> Result<Vec<u8>, UnpackError> {
    let mut path = Vec::new();
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.map_err(|e| UnpackError::Corrupt(format!("PAX header: {e}")))?;
        match ext.key_bytes() {
            b"path" => path = ext.value_bytes().to_vec(),
            b"size" => {
                return Err(UnpackError::Corrupt(
                    "a PAX header sets an entry's size".into(),
                ));
            }
            key if key.starts_with(b"GNU.sparse") => {
                return Err(UnpackError::Corrupt(
                    "a PAX header describes a sparse file".into(),
                ));
            }
            _ => {}
        }
    }
    Ok(path)
}

/// SHA-256 of every file under `dir` (relative paths), to compare with a lockfile. Symlinks
/// and special files are reported as errors: an install never creates them.
pub fn hash_tree(dir: &Path) -> Result<FileHashes, UnpackError> {
    let mut out = FileHashes::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io(&d))? {
            let entry = entry.map_err(io(&d))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(io(&path))?;
            let rel = path
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .into_owned();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let data = fs::read(&path).map_err(io(&path))?;
                out.insert(rel, ContentId::of(&data));
            } else if ft.is_symlink() {
                return Err(UnpackError::Link(rel));
            } else {
                return Err(UnpackError::Special {
                    path: rel,
                    kind: "special file".into(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive entry: path, type, contents.
    type Entry<'a> = (&'a str, tar::EntryType, &'a [u8]);

    /// Builds a tar.gz from raw headers, so hostile entries can be made.
    fn archive(entries: &[Entry]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_link_name("/etc/passwd").unwrap();
            }
            // Write the name bytes directly: the builder would refuse `..` itself.
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn refused(entries: &[Entry]) -> UnpackError {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("pkg");
        let err = unpack(archive(entries).as_slice(), &dest).unwrap_err();
        assert!(!dest.exists());
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "temp dir left behind: {left:?}");
        err
    }

    use tar::EntryType as T;

    #[test]
    fn a_normal_archive_unpacks_with_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("pkg");
        let files = unpack(
            archive(&[
                ("package.toml", T::Regular, b"x"),
                ("t/", T::Directory, b""),
                ("t/a", T::Regular, b"a"),
            ])
            .as_slice(),
            &dest,
        )
        .unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files["t/a"], ContentId::of(b"a"));
        assert_eq!(fs::read(dest.join("t/a")).unwrap(), b"a");
        assert_eq!(hash_tree(&dest).unwrap(), files);
    }

    #[test]
    fn each_hostile_entry_is_refused_precisely_and_nothing_is_left() {
        let cases: Vec<(&[Entry], &str)> = vec![
            (
                &[("../evil", T::Regular, b"x")],
                "archive entry \"../evil\" escapes the package directory",
            ),
            (
                &[("/etc/evil", T::Regular, b"x")],
                "archive entry \"/etc/evil\" escapes the package directory",
            ),
            (
                &[("link", T::Symlink, b"")],
                "archive entry \"link\" is a link; packages may contain only files and directories",
            ),
            (
                &[("hard", T::Link, b"")],
                "archive entry \"hard\" is a link; packages may contain only files and directories",
            ),
            (
                &[("dev", T::Char, b"")],
                "archive entry \"dev\" is a char; packages may contain only files and directories",
            ),
            (
                &[("fifo", T::Fifo, b"")],
                "archive entry \"fifo\" is a fifo; packages may contain only files and directories",
            ),
            (
                &[("a", T::Regular, b"1"), ("a", T::Regular, b"2")],
                "archive entry \"a\" appears twice",
            ),
        ];
        for (entries, message) in cases {
            assert_eq!(refused(entries).to_string(), message);
        }
    }

    /// An archive of one extension header (`kind`, declaring `declared` bytes, holding
    /// `data`) and the file it extends.
    fn extended(kind: T, declared: u64, data: &[u8]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(declared);
        h.set_path("././@LongLink").unwrap();
        h.set_cksum();
        let padded: Vec<u8> = data
            .iter()
            .copied()
            .chain(std::iter::repeat(0))
            .take(declared.min(1 << 20) as usize)
            .collect();
        b.append(&h, padded.as_slice()).unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_entry_type(T::Regular);
        f.set_size(1);
        f.set_mode(0o644);
        f.set_path("short").unwrap();
        f.set_cksum();
        b.append(&f, &b"x"[..]).unwrap();
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn long_names_are_taken_within_their_bound_and_refused_past_it() {
        // A long path written by the builder (a GNU long name before the entry), as the
        // publisher's packer writes one.
        let long = format!(
            "templates/{}file.tmpl",
            format!("{}/", "d".repeat(60)).repeat(5)
        );
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"ok"[..]).unwrap();
        let bytes = b.into_inner().unwrap().finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = unpack(bytes.as_slice(), &dir.path().join("pkg")).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), [&long]);

        // The same through a PAX header.
        let pax = format!("{} path={long}\n", long.len() + 7 + 3);
        let dir = tempfile::tempdir().unwrap();
        let files = unpack(
            extended(T::XHeader, pax.len() as u64, pax.as_bytes()).as_slice(),
            &dir.path().join("pkg"),
        )
        .unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), [&long]);

        // Declared past the bounds: refused before a byte is read (a 1 GiB long name would
        // otherwise be read whole into memory).
        for (kind, declared, what, limit) in [
            (T::GNULongName, 1 << 30, "GNU long name", MAX_PATH_BYTES),
            (T::XHeader, MAX_PAX_BYTES + 1, "PAX header", MAX_PAX_BYTES),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let err = unpack(
                extended(kind, declared, b"x").as_slice(),
                &dir.path().join("pkg"),
            )
            .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("the archive has a {what} of {declared} bytes; the limit is {limit}")
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(
            extended(T::XHeader, 12, b"12 size=100\n").as_slice(),
            &dir.path().join("pkg"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the archive is corrupt: a PAX header sets an entry's size"
        );
    }

    #[test]
    fn too_many_entries_and_a_gzip_bomb_are_refused() {
        let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("f{i}")).collect();
        let entries: Vec<Entry> = names
            .iter()
            .map(|n| (n.as_str(), T::Directory, &b""[..]))
            .collect();
        assert!(matches!(refused(&entries), UnpackError::TooManyEntries));

        // A header claiming more than the limit is refused before anything is read.
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(T::Regular);
        h.set_size(MAX_UNPACKED_BYTES + 1);
        h.set_path("bomb").unwrap();
        h.set_cksum();
        b.append(&h, std::io::repeat(0).take(0)).ok();
        let bytes = b.into_inner().unwrap().finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(bytes.as_slice(), &dir.path().join("pkg")).unwrap_err();
        assert!(matches!(err, UnpackError::TooLarge), "{err}");
    }

    /// Unpacks `bytes` beside nothing else: whatever they are, the result is the destination
    /// whole (and every file in it hashed) or nothing at all.
    fn contained(bytes: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("pkg");
        let result = unpack(bytes, &dest);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        match result {
            Ok(files) => {
                proptest::prop_assert_eq!(left, vec![std::ffi::OsString::from("pkg")]);
                proptest::prop_assert_eq!(hash_tree(&dest).unwrap(), files);
            }
            Err(_) => proptest::prop_assert!(left.is_empty(), "left behind: {:?}", left),
        }
        Ok(())
    }

    fn arb_entry() -> impl proptest::strategy::Strategy<Value = (String, T, Vec<u8>)> {
        use proptest::prelude::*;
        let segment = prop_oneof![
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just(String::new()),
            "[a-c]{1,3}",
        ];
        let path = (any::<bool>(), proptest::collection::vec(segment, 1..4))
            .prop_map(|(absolute, segs)| {
                let p = segs.join("/");
                if absolute { format!("/{p}") } else { p }
            })
            .prop_filter("fits the old tar name field", |p| {
                !p.is_empty() && p.len() < 100
            });
        let kind = prop_oneof![
            4 => Just(T::Regular),
            2 => Just(T::Directory),
            1 => Just(T::Symlink),
            1 => Just(T::Link),
            1 => Just(T::Char),
            1 => Just(T::Fifo),
        ];
        (path, kind, proptest::collection::vec(any::<u8>(), 0..64))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// The CI smoke of the `archive_unpack` fuzz target: random bytes.
        #[test]
        fn arbitrary_bytes_unpack_whole_or_not_at_all(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)
        ) {
            contained(&bytes)?;
        }

        /// Random well-formed archives of hostile and ordinary entries.
        #[test]
        fn arbitrary_entries_unpack_whole_or_not_at_all(
            entries in proptest::collection::vec(arb_entry(), 0..6)
        ) {
            let entries: Vec<Entry> = entries
                .iter()
                .map(|(p, k, d)| (p.as_str(), *k, d.as_slice()))
                .collect();
            contained(&archive(&entries))?;
        }
    }
}
