//! `agora.lock`: exactly what a project installed, so that a later install is exact and
//! `agora verify` can tell if an installed file changed. TOML, written atomically (temp file,
//! fsync, rename, directory fsync).
//!
//! ```toml
//! version = 2
//! requested = ["hello-world@^1"]   # what the project asked for itself
//!
//! [[package]]
//! name = "hello-world"
//! version = "1.0.0"
//! sha256 = "…"            # the archive
//! publisher = "…"         # hex Ed25519 key
//! dependencies = ["lib@^1"]
//! files = { "package.toml" = "…", "templates/a.tmpl" = "…" }   # SHA-256 of each file
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use agora_protocol::manifest::line_col;
use agora_protocol::{Dependency, PackageName, Version};
use serde::{Deserialize, Serialize};

pub const LOCKFILE: &str = "agora.lock";
pub const LOCKFILE_VERSION: u32 = 2;
/// The oldest lockfile version read (1 did not record what was requested directly).
pub const OLDEST_LOCKFILE_VERSION: u32 = 1;
/// Largest lockfile read.
pub const MAX_LOCKFILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    pub version: u32,
    /// The requirements the project asked for itself (`name` or `name@REQ`); every other
    /// package is there because one of these needs it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested: Vec<String>,
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub publisher: String,
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// SHA-256 (hex) of every installed file, by path relative to the package directory.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}", path = .path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path} is lockfile version {found}; this agora reads versions {OLDEST_LOCKFILE_VERSION} to {LOCKFILE_VERSION}", path = .path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("{path} is {len} bytes; the limit is {MAX_LOCKFILE_BYTES}", path = .path.display())]
    TooLarge { path: PathBuf, len: u64 },
    #[error("{path}: package {index} ({name:?}): {message}", path = .path.display())]
    Invalid {
        path: PathBuf,
        /// 1-based position of the `[[package]]` entry.
        index: usize,
        name: String,
        message: String,
    },
}

impl Lockfile {
    pub fn new() -> Self {
        Self {
            version: LOCKFILE_VERSION,
            requested: Vec::new(),
            packages: Vec::new(),
        }
    }

    /// Reads `path`; `Ok(None)` if there is no lockfile.
    pub fn read(path: &Path) -> Result<Option<Self>, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let len = match fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if len > MAX_LOCKFILE_BYTES {
            return Err(LockError::TooLarge {
                path: path.to_owned(),
                len,
            });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let lock: Lockfile = toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(&text, s.start));
            LockError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        if !(OLDEST_LOCKFILE_VERSION..=LOCKFILE_VERSION).contains(&lock.version) {
            return Err(LockError::Version {
                path: path.to_owned(),
                found: lock.version,
            });
        }
        for r in &lock.requested {
            r.parse::<Dependency>().map_err(|e| LockError::Invalid {
                path: path.to_owned(),
                index: 0,
                name: r.clone(),
                message: format!("requested {r:?}: {e}"),
            })?;
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in lock.packages.iter().enumerate() {
            let invalid = |message: String| LockError::Invalid {
                path: path.to_owned(),
                index: i + 1,
                name: p.name.clone(),
                message,
            };
            p.check().map_err(invalid)?;
            if !seen.insert(p.name.as_str()) {
                return Err(invalid("the package is listed twice".into()));
            }
        }
        Ok(Some(lock))
    }

    /// Writes the lockfile atomically.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| LockError::Io { path: p, source }
        };
        let mut sorted = self.clone();
        sorted.version = LOCKFILE_VERSION;
        sorted.packages.sort_by(|a, b| a.name.cmp(&b.name));
        let text = format!(
            "# Generated by agora. Do not edit: 'agora install' keeps it up to date.\n{}",
            toml::to_string(&sorted).expect("a lockfile always serialises")
        );
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{LOCKFILE}.tmp"));
        // Whatever is at the temporary path goes first (a link itself, never what it points
        // to), and the file is created new (O_CREAT | O_EXCL, which does not follow a link): a
        // link planted there cannot make this write land outside the project.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
            _ => {}
        }
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    }

    pub fn get(&self, name: &str) -> Option<&LockedPackage> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// Adds or replaces the entry for `package.name`.
    pub fn upsert(&mut self, package: LockedPackage) {
        self.packages.retain(|p| p.name != package.name);
        self.packages.push(package);
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.packages.len();
        self.packages.retain(|p| p.name != name);
        self.packages.len() != before
    }

    /// What the project asked for itself. A version 1 lockfile did not record it: there, the
    /// packages no other package needs are taken as asked for, each at a caret of its version.
    pub fn roots(&self) -> Vec<Dependency> {
        if !self.requested.is_empty() || self.version > 1 {
            return self
                .requested
                .iter()
                .filter_map(|r| r.parse().ok())
                .collect();
        }
        self.packages
            .iter()
            .filter(|p| self.dependents(&p.name).is_empty())
            .filter_map(|p| format!("{}@^{}", p.name, p.version).parse().ok())
            .collect()
    }

    /// Each installed version as `name@version`, but those of the names `moving` says may
    /// move.
    pub fn pins_except(&self, moving: impl Fn(&str) -> bool) -> Vec<String> {
        self.packages
            .iter()
            .filter(|p| !moving(&p.name))
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect()
    }

    /// The installed packages that depend on `name`, each with its requirement on it.
    pub fn dependents(&self, name: &str) -> Vec<(&LockedPackage, Dependency)> {
        self.packages
            .iter()
            .flat_map(|p| {
                p.dependencies
                    .iter()
                    .filter_map(|d| d.parse::<Dependency>().ok())
                    .filter(|d| d.name.as_str() == name)
                    .map(move |d| (p, d))
            })
            .collect()
    }
}

impl LockedPackage {
    /// What the project relies on, as agora wrote it: the name is a package name (it becomes
    /// a directory name), the version a version, the hashes and key 64 hex digits, the
    /// dependencies `name@req`, and every file a relative path that stays inside its package.
    pub fn check(&self) -> Result<(), String> {
        PackageName::new(self.name.as_str()).map_err(|e| format!("name: {e}"))?;
        Version::parse(&self.version).map_err(|e| format!("version {:?}: {e}", self.version))?;
        let hex = |what: &str, v: &str| {
            if v.len() == 64
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                Ok(())
            } else {
                Err(format!("{what} {v:?} is not 64 lowercase hex digits"))
            }
        };
        hex("sha256", &self.sha256)?;
        hex("publisher", &self.publisher)?;
        for d in &self.dependencies {
            d.parse::<Dependency>()
                .map_err(|e| format!("dependency {d:?}: {e}"))?;
        }
        for (file, hash) in &self.files {
            let inside = !file.is_empty()
                && Path::new(file)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                return Err(format!("file {file:?} is not a path inside the package"));
            }
            hex(&format!("hash of {file}"), hash)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_errors_with_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCKFILE);
        assert_eq!(Lockfile::read(&path).unwrap(), None);
        let mut lock = Lockfile::new();
        lock.upsert(LockedPackage {
            name: "b".into(),
            version: "1.0.0".into(),
            sha256: "00".repeat(32),
            publisher: "11".repeat(32),
            dependencies: vec!["a@^1".into()],
            files: BTreeMap::from([("package.toml".into(), "22".repeat(32))]),
        });
        lock.write(&path).unwrap();
        assert_eq!(Lockfile::read(&path).unwrap(), Some(lock));

        fs::write(&path, "version = 1\n[[package]]\nname = 3\n").unwrap();
        let err = Lockfile::read(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:3:8:", path.display())),
            "{err}"
        );
        fs::write(&path, "version = 3\n").unwrap();
        assert!(matches!(
            Lockfile::read(&path),
            Err(LockError::Version { found: 3, .. })
        ));
        let entry = |name: &str, file: &str| {
            format!(
                "version = 1\n[[package]]\nname = {name:?}\nversion = \"1.0.0\"\nsha256 = \"{}\"\n\
                 publisher = \"{}\"\nfiles = {{ {file:?} = \"{}\" }}\n",
                "00".repeat(32),
                "11".repeat(32),
                "22".repeat(32)
            )
        };
        for (name, file, why) in [
            (
                "../../home",
                "a",
                "name: package name must start with a lowercase letter or a digit, not '.'"
                    .to_string(),
            ),
            (
                "ok",
                "../escape",
                "file \"../escape\" is not a path inside the package".into(),
            ),
            (
                "ok",
                "/etc/passwd",
                "file \"/etc/passwd\" is not a path inside the package".into(),
            ),
        ] {
            fs::write(&path, entry(name, file)).unwrap();
            assert_eq!(
                Lockfile::read(&path).unwrap_err().to_string(),
                format!("{}: package 1 ({name:?}): {why}", path.display())
            );
        }
    }

    #[test]
    fn a_version_1_lockfile_takes_what_nothing_needs_as_requested_at_a_caret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCKFILE);
        let entry = |name: &str, version: &str, deps: &str| {
            format!(
                "[[package]]\nname = {name:?}\nversion = {version:?}\nsha256 = \"{}\"\n\
                 publisher = \"{}\"\ndependencies = [{deps}]\n",
                "00".repeat(32),
                "11".repeat(32),
            )
        };
        let text = format!(
            "version = 1\n{}{}",
            entry("app", "1.2.0", "\"lib@^1\""),
            entry("lib", "1.0.0", "")
        );
        fs::write(&path, text).unwrap();
        let lock = Lockfile::read(&path).unwrap().unwrap();
        let roots: Vec<String> = lock.roots().iter().map(ToString::to_string).collect();
        assert_eq!(roots, ["app@^1.2.0"]);
        assert_eq!(lock.dependents("lib")[0].0.name, "app");
        // Written back, it is version 2, and what it records is what was asked for.
        let mut lock = lock;
        lock.requested = roots;
        lock.write(&path).unwrap();
        let again = Lockfile::read(&path).unwrap().unwrap();
        assert_eq!(
            (again.version, again.requested.clone()),
            (2, vec!["app@^1.2.0".to_string()])
        );
        assert_eq!(again.roots().len(), 1);
    }

    #[test]
    fn a_link_planted_at_the_temporary_path_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(format!(".{LOCKFILE}.tmp"))).unwrap();
        let path = dir.path().join(LOCKFILE);
        Lockfile::new().write(&path).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(Lockfile::read(&path).unwrap(), Some(Lockfile::new()));
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// The CI smoke of the `lockfile` fuzz target: any bytes are read or refused, and
        /// what is read writes back to the same lockfile (in this version's format).
        #[test]
        fn arbitrary_bytes_are_read_or_refused(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            tail in "[a-z0-9_=\\[\\]\"{}., \n-]{0,200}",
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(LOCKFILE);
            for input in [bytes, format!("version = 1\n{tail}").into_bytes()] {
                std::fs::write(&path, &input).unwrap();
                if let Ok(Some(lock)) = Lockfile::read(&path) {
                    lock.write(&path).unwrap();
                    let written = Lockfile {
                        version: LOCKFILE_VERSION,
                        ..lock
                    };
                    proptest::prop_assert_eq!(Lockfile::read(&path).unwrap(), Some(written));
                }
            }
        }
    }
}
