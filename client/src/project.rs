//! The paths of a project directory that `agora` writes or deletes: `agora.lock`, its temporary
//! file and `.agora/packages/<name>/` with its staging and old copies.
//!
//! A project is untrusted input: a checkout anyone may have written, links included. Every such
//! path is handed out only after checking that no part of it below the project's root is a
//! symbolic link, so that a planted link cannot make an install, update, remove or verify touch
//! anything outside the project. (The root itself is the user's choice and may be a link.)

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use agora_protocol::PackageName;

use crate::lockfile::LOCKFILE;

/// A path in the project that agora will not use.
#[derive(Debug, thiserror::Error)]
pub enum UnsafePath {
    #[error("{} is a symbolic link (to {}); agora does not write or delete through links in a project", .path.display(), .target.display())]
    Link { path: PathBuf, target: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A project directory.
#[derive(Clone, Debug)]
pub struct Project {
    root: PathBuf,
}

impl Project {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `agora.lock`.
    pub fn lockfile(&self) -> Result<PathBuf, UnsafePath> {
        self.checked(Path::new(LOCKFILE))
    }

    /// `.agora/packages`.
    pub fn packages(&self) -> Result<PathBuf, UnsafePath> {
        self.checked(&Path::new(".agora").join("packages"))
    }

    /// `.agora/packages/<name>`, where an installed package lives.
    pub fn package(&self, name: &PackageName) -> Result<PathBuf, UnsafePath> {
        self.in_packages(name.as_str())
    }

    /// `.agora/packages/.new-<name>`, where a package is unpacked before it is swapped in.
    pub fn staging(&self, name: &PackageName) -> Result<PathBuf, UnsafePath> {
        self.in_packages(&format!(".new-{name}"))
    }

    /// `.agora/packages/.old-<name>`, where the installed copy goes while the new one moves in.
    pub fn old(&self, name: &PackageName) -> Result<PathBuf, UnsafePath> {
        self.in_packages(&format!(".old-{name}"))
    }

    fn in_packages(&self, entry: &str) -> Result<PathBuf, UnsafePath> {
        self.checked(&Path::new(".agora").join("packages").join(entry))
    }

    /// `root/relative` once no existing part of `relative` is a symbolic link.
    fn checked(&self, relative: &Path) -> Result<PathBuf, UnsafePath> {
        let mut path = self.root.clone();
        for part in relative.components() {
            path.push(part);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = std::fs::read_link(&path).unwrap_or_default();
                    return Err(UnsafePath::Link { path, target });
                }
                Ok(_) => {}
                // Nothing below a missing part exists either.
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(source) => return Err(UnsafePath::Io { path, source }),
            }
        }
        Ok(self.root.join(relative))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn a_link_anywhere_below_the_root_is_refused_and_the_root_may_be_one() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let linked_root = dir.path().join("root-link");
        symlink(&real, &linked_root).unwrap();
        let name: PackageName = "pkg".parse().unwrap();

        // Nothing exists yet: every path is fine, the root's link included.
        let p = Project::new(&linked_root);
        assert_eq!(
            p.package(&name).unwrap(),
            linked_root.join(".agora/packages/pkg")
        );
        assert_eq!(p.lockfile().unwrap(), linked_root.join("agora.lock"));

        let cases: [(&str, &Path); 4] = [
            (".agora", outside.path()),
            (".agora/packages", outside.path()),
            (".agora/packages/pkg", outside.path()),
            ("agora.lock", &outside.path().join("file")),
        ];
        for (link, target) in cases {
            let _ = std::fs::remove_dir_all(real.join(".agora"));
            let _ = std::fs::remove_file(real.join("agora.lock"));
            let at = real.join(link);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            symlink(target, &at).unwrap();
            let got = if link == "agora.lock" {
                p.lockfile()
            } else {
                p.package(&name)
            };
            match got {
                Err(UnsafePath::Link { path, target: t }) => {
                    assert_eq!(
                        (path, t.as_path()),
                        (linked_root.join(link), target),
                        "{link}"
                    )
                }
                other => panic!("{link}: {other:?}"),
            }
        }
    }
}
