//! Where one node keeps its files, worked out the same way by `agorad` and `agora` so that
//! the CLI finds the daemon's socket without being told.
//!
//! With `AGORA_HOME=DIR` everything of one node is under DIR (several nodes side by side on
//! one machine, tests): `DIR/config.toml`, `DIR/data/`, `DIR/keys/`, `DIR/agorad.sock`.
//! Otherwise the XDG directories: `~/.config/agora/config.toml`, `~/.local/share/agora/` (data
//! and `keys/`), and the socket in `$XDG_RUNTIME_DIR/agora/agorad.sock`, or in the data
//! directory when there is no runtime directory (never in `/tmp`). `AGORA_SOCKET` overrides
//! the socket path either way.

use std::path::PathBuf;

/// The environment paths are derived from (read once, so resolution is a pure function).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathEnv {
    pub agora_home: Option<PathBuf>,
    pub agora_socket: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    /// The platform's config directory for Agora (e.g. `~/.config/agora`).
    pub config_dir: Option<PathBuf>,
    /// The platform's data directory for Agora (e.g. `~/.local/share/agora`).
    pub data_dir: Option<PathBuf>,
}

impl PathEnv {
    /// Reads `AGORA_HOME`, `AGORA_SOCKET`, `XDG_RUNTIME_DIR` and the platform directories.
    pub fn from_process() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let dirs = directories::ProjectDirs::from("", "", "agora");
        Self {
            agora_home: var("AGORA_HOME"),
            agora_socket: var("AGORA_SOCKET"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            config_dir: dirs.as_ref().map(|d| d.config_dir().to_owned()),
            data_dir: dirs.as_ref().map(|d| d.data_dir().to_owned()),
        }
    }
}

/// Every path of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub config_file: PathBuf,
    /// Catalog database, search index, blobs, logs.
    pub data_dir: PathBuf,
    /// Node identity and publisher keys (directory mode 0700, files 0600).
    pub keys_dir: PathBuf,
    pub socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot tell where to keep Agora's files: no home directory; set AGORA_HOME")]
pub struct NoHome;

/// Socket file name.
pub const SOCKET_NAME: &str = "agorad.sock";
/// The daemon's log file name, in the data directory.
pub const LOG_FILE: &str = "agorad.log";

impl Paths {
    pub fn resolve(env: &PathEnv) -> Result<Self, NoHome> {
        let mut paths = match &env.agora_home {
            Some(home) => Self {
                config_file: home.join("config.toml"),
                data_dir: home.join("data"),
                keys_dir: home.join("keys"),
                socket: home.join(SOCKET_NAME),
            },
            None => {
                let config = env.config_dir.clone().ok_or(NoHome)?;
                let data = env.data_dir.clone().ok_or(NoHome)?;
                let socket = match &env.xdg_runtime_dir {
                    Some(run) => run.join("agora").join(SOCKET_NAME),
                    None => data.join(SOCKET_NAME),
                };
                Self {
                    config_file: config.join("config.toml"),
                    keys_dir: data.join("keys"),
                    data_dir: data,
                    socket,
                }
            }
        };
        if let Some(socket) = &env.agora_socket {
            paths.socket = socket.clone();
        }
        Ok(paths)
    }

    /// The daemon's log file.
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agora_home_holds_everything_and_agora_socket_wins() {
        let env = PathEnv {
            agora_home: Some("/n1".into()),
            xdg_runtime_dir: Some("/run/user/1000".into()),
            config_dir: Some("/home/u/.config/agora".into()),
            data_dir: Some("/home/u/.local/share/agora".into()),
            ..PathEnv::default()
        };
        let p = Paths::resolve(&env).unwrap();
        assert_eq!(p.config_file, PathBuf::from("/n1/config.toml"));
        assert_eq!(p.data_dir, PathBuf::from("/n1/data"));
        assert_eq!(p.keys_dir, PathBuf::from("/n1/keys"));
        assert_eq!(p.socket, PathBuf::from("/n1/agorad.sock"));
        let p = Paths::resolve(&PathEnv {
            agora_socket: Some("/s/x.sock".into()),
            ..env
        })
        .unwrap();
        assert_eq!(p.socket, PathBuf::from("/s/x.sock"));
    }

    #[test]
    fn xdg_layout_and_no_tmp_fallback() {
        let env = PathEnv {
            config_dir: Some("/home/u/.config/agora".into()),
            data_dir: Some("/home/u/.local/share/agora".into()),
            ..PathEnv::default()
        };
        let p = Paths::resolve(&env).unwrap();
        assert_eq!(
            p.config_file,
            PathBuf::from("/home/u/.config/agora/config.toml")
        );
        assert_eq!(
            p.socket,
            PathBuf::from("/home/u/.local/share/agora/agorad.sock")
        );
        let p = Paths::resolve(&PathEnv {
            xdg_runtime_dir: Some("/run/user/1000".into()),
            ..env
        })
        .unwrap();
        assert_eq!(p.socket, PathBuf::from("/run/user/1000/agora/agorad.sock"));
        assert_eq!(Paths::resolve(&PathEnv::default()), Err(NoHome));
    }
}
