//! Key files: the node's libp2p identity (`keys/node.key`, so a node keeps its peer id across
//! restarts) and the publisher key (`keys/publisher.key`, 64 hex characters). The directory
//! is created 0700 and files 0600, written to a temp file, fsynced and renamed; a key file
//! that other users can read is refused, like ssh does.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agora_protocol::PublisherSecret;
use libp2p::identity::Keypair;

pub const NODE_KEY_FILE: &str = "node.key";
pub const PUBLISHER_KEY_FILE: &str = "publisher.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} has mode {mode:o}; key files must not be readable by others (chmod 600)", path = .path.display())]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path} belongs to user {owner}, not to this user ({me}); refusing to use it", path = .path.display())]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error("{path} is a symbolic link; a private directory must be a directory of its own", path = .path.display())]
    Link { path: PathBuf },
    #[error("{path} is not a valid key file: {message}", path = .path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{path} already exists; refusing to overwrite a key", path = .path.display())]
    Exists { path: PathBuf },
    #[error("no publisher key in {dir}; create one with 'agora keygen'", dir = .dir.display())]
    NoPublisherKey { dir: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` if it does not exist and makes it private (mode 0700). Refused if it is a
/// symbolic link (the mode change would follow it to whatever it names, and what is put in
/// the directory would land there) or belongs to another user (who could replace what is
/// put in it, the socket included).
pub fn ensure_private_dir(dir: &Path) -> Result<(), KeyFileError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let meta = fs::symlink_metadata(dir).map_err(io(dir))?;
    if meta.file_type().is_symlink() {
        return Err(KeyFileError::Link {
            path: dir.to_owned(),
        });
    }
    owned_by_me(dir, &meta)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Refuses a file or directory another user owns.
fn owned_by_me(path: &Path, meta: &fs::Metadata) -> Result<(), KeyFileError> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(KeyFileError::NotOwned {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

/// Reads a key file after checking it is this user's and no one else can read it.
fn read_private(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    owned_by_me(path, &meta)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > 4096 {
        return Err(KeyFileError::Invalid {
            path: path.to_owned(),
            message: format!("{} bytes is too long for a key", meta.len()),
        });
    }
    fs::read(path).map_err(io(path))
}

/// Writes a new key file (0600), durably; never replaces an existing one.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    if path.exists() {
        return Err(KeyFileError::Exists {
            path: path.to_owned(),
        });
    }
    let dir = path.parent().expect("key files live in the keys directory");
    ensure_private_dir(dir)?;
    let tmp = dir.join(format!(".{}.tmp", rand::random::<u64>()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::Exists {
                    path: path.to_owned(),
                }
            } else {
                io(path)(e)
            }
        })?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// The node identity in `keys_dir`, created on first use.
pub fn node_identity(keys_dir: &Path) -> Result<Keypair, KeyFileError> {
    let path = keys_dir.join(NODE_KEY_FILE);
    if !path.exists() {
        let key = Keypair::generate_ed25519();
        let bytes = key
            .to_protobuf_encoding()
            .expect("ed25519 keys always encode");
        match write_private(&path, &bytes) {
            Ok(()) | Err(KeyFileError::Exists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let bytes = read_private(&path)?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| KeyFileError::Invalid {
        path,
        message: e.to_string(),
    })
}

/// Creates the publisher key; refuses if one exists.
pub fn generate_publisher_key(keys_dir: &Path) -> Result<PublisherSecret, KeyFileError> {
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let secret = PublisherSecret::from_bytes(seed);
    let path = keys_dir.join(PUBLISHER_KEY_FILE);
    write_private(&path, format!("{}\n", hex::encode(seed)).as_bytes())?;
    Ok(secret)
}

/// The publisher key, if one was created.
pub fn publisher_key(keys_dir: &Path) -> Result<PublisherSecret, KeyFileError> {
    let path = keys_dir.join(PUBLISHER_KEY_FILE);
    if !path.exists() {
        return Err(KeyFileError::NoPublisherKey {
            dir: keys_dir.to_owned(),
        });
    }
    let bytes = read_private(&path)?;
    let invalid = |message: String| KeyFileError::Invalid {
        path: path.clone(),
        message,
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| invalid(e.to_string()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .map_err(|e| invalid(e.to_string()))?
        .try_into()
        .map_err(|v: Vec<u8>| invalid(format!("{} bytes, expected 32", v.len())))?;
    Ok(PublisherSecret::from_bytes(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_stable_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let a = node_identity(&keys).unwrap();
        let b = node_identity(&keys).unwrap();
        assert_eq!(a.public(), b.public());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys), 0o700);
        assert_eq!(mode(&keys.join(NODE_KEY_FILE)), 0o600);

        assert!(matches!(
            publisher_key(&keys),
            Err(KeyFileError::NoPublisherKey { .. })
        ));
        let secret = generate_publisher_key(&keys).unwrap();
        assert_eq!(publisher_key(&keys).unwrap().public(), secret.public());
        assert!(matches!(
            generate_publisher_key(&keys),
            Err(KeyFileError::Exists { .. })
        ));
        assert_eq!(publisher_key(&keys).unwrap().public(), secret.public());

        let path = keys.join(PUBLISHER_KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            publisher_key(&keys).unwrap_err().to_string(),
            format!(
                "{} has mode 644; key files must not be readable by others (chmod 600)",
                path.display()
            )
        );
    }

    /// Another user's key file, and a private directory that is a link or another user's,
    /// are refused. Handing a file to another user needs root, which CI has.
    #[test]
    fn another_users_key_or_directory_and_a_linked_directory_are_refused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        generate_publisher_key(&keys).unwrap();
        let me = rustix::process::geteuid().as_raw();
        let path = keys.join(PUBLISHER_KEY_FILE);
        std::os::unix::fs::chown(&path, Some(65534), None)
            .expect("handing a file to another user needs root, which CI has");
        assert_eq!(
            publisher_key(&keys).unwrap_err().to_string(),
            format!(
                "{} belongs to user 65534, not to this user ({me}); refusing to use it",
                path.display()
            )
        );

        let theirs = dir.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        assert!(matches!(
            ensure_private_dir(&theirs),
            Err(KeyFileError::NotOwned { owner: 65534, .. })
        ));
        let elsewhere = tempfile::tempdir().unwrap();
        fs::set_permissions(elsewhere.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        assert_eq!(
            ensure_private_dir(&link).unwrap_err().to_string(),
            format!(
                "{} is a symbolic link; a private directory must be a directory of its own",
                link.display()
            )
        );
        // The mode of what the link names is left alone.
        let mode = fs::metadata(elsewhere.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }
}
