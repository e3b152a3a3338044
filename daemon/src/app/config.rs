//! `agorad`'s configuration: `config.toml`, then `AGORA_*` environment variables, then
//! command-line flags, each layer overriding the one before. A missing config file means the
//! embedded defaults; a malformed one is an error naming the file, line and column.
//!
//! ```toml
//! listen = ["/ip4/0.0.0.0/tcp/4101", "/ip4/0.0.0.0/udp/4101/quic-v1"]
//! bootstrap = ["/ip4/192.0.2.7/tcp/4101/p2p/12D3KooW..."]
//! external = ["/ip4/192.0.2.7/tcp/4101"]  # where peers reach this node, if it is public
//! mdns = true
//! cache_quota = 1073741824      # bytes of fetched archives kept
//! relay_circuit_bytes = 67108864  # what one connection relayed for others may carry; 0: relay none
//! log_level = "info"
//! http = "127.0.0.1:4180"       # the HTTP gateway (off when absent)
//! http_hosts = ["agora.lan"]    # host names it answers for besides localhost and IP addresses
//! otlp_endpoint = "http://127.0.0.1:4318"  # OpenTelemetry export (off when absent)
//! repair = "auto"               # a damaged store found at start: "auto" repairs it, "off" refuses to start
//! network_key = "/etc/agora/team.key"  # a private network: only nodes with this key connect (TCP only)
//! sparql_time_limit = "10s"     # a SPARQL query running longer is stopped (1s to 10m)
//!
//! [trust]
//! allowlist = []                # publisher keys (hex); empty = trust on first use
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_protocol::PublisherKey;
use agora_protocol::manifest::line_col;
use agora_protocol::paths::{NoHome, PathEnv, Paths};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::PreSharedKey;
use serde::Deserialize;
use toml::Spanned;

use crate::catalog::trust::TrustPolicy;
use crate::network::settings::DEFAULT_RELAY_CIRCUIT_BYTES;
use crate::ops::DEFAULT_CACHE_QUOTA;
use crate::ops::repair::RepairMode;

/// Default TCP and QUIC port for Agora nodes.
pub const DEFAULT_PORT: u16 = 4101;
/// Largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}:{line}:{column}: {message}", path = .path.display())]
    File {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read {path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {len} bytes; it may be at most {max}", path = .path.display())]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{flag}: {message}")]
    Flag { flag: String, message: String },
    #[error("network key {path}: {message}", path = .path.display())]
    NetworkKey { path: PathBuf, message: String },
    /// A private network runs on TCP only (libp2p's pnet protects TCP streams).
    #[error(
        "{addr}: a private network (network_key) runs on TCP only; remove the QUIC address from `{setting}`"
    )]
    PrivateQuic {
        addr: Multiaddr,
        setting: &'static str,
    },
    #[error(transparent)]
    NoHome(#[from] NoHome),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<Spanned<String>>>,
    bootstrap: Option<Vec<Spanned<String>>>,
    external: Option<Vec<Spanned<String>>>,
    mdns: Option<bool>,
    cache_quota: Option<u64>,
    relay_circuit_bytes: Option<u64>,
    log_level: Option<String>,
    http: Option<Spanned<String>>,
    http_hosts: Option<Vec<Spanned<String>>>,
    otlp_endpoint: Option<Spanned<String>>,
    repair: Option<Spanned<String>>,
    network_key: Option<Spanned<String>>,
    sparql_time_limit: Option<Spanned<String>>,
    trust: Option<TrustSection>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TrustSection {
    allowlist: Vec<Spanned<String>>,
}

/// What the command line set (flags win over everything).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub config_file: Option<PathBuf>,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub external: Vec<Multiaddr>,
    pub no_mdns: bool,
    pub cache_quota: Option<u64>,
    pub log_level: Option<String>,
    pub http: Option<SocketAddr>,
    pub otlp_endpoint: Option<String>,
    pub network_key: Option<PathBuf>,
}

/// The resolved configuration of one daemon.
#[derive(Clone, Debug)]
pub struct Config {
    pub paths: Paths,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses peers reach this node at, declared by its operator (a public server): taken
    /// as confirmed, so the node serves as a relay and is known to be reachable at once.
    pub external: Vec<Multiaddr>,
    pub mdns: bool,
    pub cache_quota: u64,
    /// Bytes one connection this node relays for others may carry (0: it relays none).
    pub relay_circuit_bytes: u64,
    pub log_level: String,
    /// Where the HTTP gateway listens; `None` keeps it off.
    pub http: Option<SocketAddr>,
    /// Host names the gateway answers for besides `localhost` and IP addresses (lowercase).
    /// Any other `Host` is refused, so that a web page cannot reach the gateway through a
    /// name it controls (DNS rebinding).
    pub http_hosts: Vec<String>,
    /// OTLP/HTTP collector base URL (`/v1/traces` and `/v1/metrics` are appended); `None`
    /// exports nothing.
    pub otlp_endpoint: Option<String>,
    pub trust: TrustPolicy,
    /// What to do with a store found damaged at start.
    pub repair: RepairMode,
    /// The pre-shared key of a private network: only nodes that hold it can connect.
    pub network_key: Option<NetworkKey>,
    /// How long a SPARQL query may run before it is stopped.
    pub sparql_time_limit: Duration,
}

/// A private network's pre-shared key (libp2p pnet), read from its file. (The key's own
/// `Debug` shows only its fingerprint.)
#[derive(Clone, Debug)]
pub struct NetworkKey {
    pub path: PathBuf,
    pub psk: PreSharedKey,
}

/// Largest network key file read (the format's key is 95 bytes).
const MAX_NETWORK_KEY_BYTES: u64 = 1024;

impl NetworkKey {
    /// Reads and parses the key file at `path` (the swarm.key format of IPFS and libp2p:
    /// `/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits), refusing one that other users can
    /// read (the key is what keeps the network private).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let bad = |message: String| ConfigError::NetworkKey {
            path: path.to_owned(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad(format!(
                "other users can read it (mode {:o}); make it private with chmod 600",
                meta.permissions().mode() & 0o777
            )));
        }
        let text = read_bounded(path, MAX_NETWORK_KEY_BYTES)?;
        let psk = text.parse::<PreSharedKey>().map_err(|e| {
            bad(format!(
                "not a network key ({e}); make one with 'agora keygen --network'"
            ))
        })?;
        Ok(Self {
            path: path.to_owned(),
            psk,
        })
    }
}

impl Config {
    /// Resolves paths from `env`, reads the config file, then applies `vars` (the process
    /// environment, injected for tests) and `flags`.
    pub fn load(
        env: &PathEnv,
        vars: impl Fn(&str) -> Option<String>,
        flags: Flags,
    ) -> Result<Self, ConfigError> {
        let paths = Paths::resolve(env)?;
        let explicit = flags.config_file.is_some();
        let file_path = flags
            .config_file
            .clone()
            .unwrap_or_else(|| paths.config_file.clone());
        let mut config = Self {
            paths,
            listen: default_listen(),
            bootstrap: Vec::new(),
            external: Vec::new(),
            mdns: true,
            cache_quota: DEFAULT_CACHE_QUOTA,
            relay_circuit_bytes: DEFAULT_RELAY_CIRCUIT_BYTES,
            log_level: "info".into(),
            http: None,
            http_hosts: Vec::new(),
            otlp_endpoint: None,
            trust: TrustPolicy::FirstUse,
            repair: RepairMode::Auto,
            sparql_time_limit: crate::ops::SPARQL_TIME_LIMIT,
            network_key: None,
        };
        let mut key_file = None;
        match read_bounded(&file_path, MAX_CONFIG_BYTES) {
            Ok(text) => key_file = config.apply_file(&file_path, &text)?,
            Err(ConfigError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && !explicit => {}
            Err(e) => return Err(e),
        }
        if let Some(key) = vars("AGORA_NETWORK_KEY") {
            key_file = Some(PathBuf::from(key));
        }
        config.apply_env(vars)?;
        if !flags.listen.is_empty() {
            config.listen = flags.listen;
        }
        if let Some(key) = flags.network_key {
            key_file = Some(key);
        }
        config.bootstrap.extend(flags.bootstrap);
        config.external.extend(flags.external);
        if flags.no_mdns {
            config.mdns = false;
        }
        if let Some(q) = flags.cache_quota {
            config.cache_quota = q;
        }
        if let Some(l) = flags.log_level {
            config.log_level = l;
        }
        if let Some(h) = flags.http {
            config.http = Some(h);
        }
        if let Some(e) = flags.otlp_endpoint {
            config.otlp_endpoint =
                Some(check_endpoint(&e).map_err(|message| ConfigError::Flag {
                    flag: "--otlp-endpoint".into(),
                    message,
                })?);
        }
        if let Some(path) = key_file {
            config.network_key = Some(NetworkKey::read(&path)?);
            config.private_transports()?;
        }
        Ok(config)
    }

    /// With a network key: listens on TCP only (the defaults lose their QUIC address) and
    /// refuses a QUIC address anyone configured, naming it.
    fn private_transports(&mut self) -> Result<(), ConfigError> {
        let quic = |a: &Multiaddr| {
            a.iter()
                .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic))
        };
        if self.listen == default_listen() {
            self.listen.retain(|a| !quic(a));
        }
        for (list, setting) in [(&self.listen, "listen"), (&self.bootstrap, "bootstrap")] {
            if let Some(addr) = list.iter().find(|a| quic(a)) {
                return Err(ConfigError::PrivateQuic {
                    addr: addr.clone(),
                    setting,
                });
            }
        }
        Ok(())
    }

    /// A node of a local network (testnets, benches): everything under `home`, one loopback
    /// TCP port chosen by the system, no mDNS, no gateway, the other settings at their
    /// defaults.
    pub fn local(home: &Path) -> Result<Self, ConfigError> {
        let paths = Paths::resolve(&PathEnv {
            agora_home: Some(home.to_owned()),
            ..PathEnv::default()
        })?;
        Ok(Self {
            paths,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr")],
            bootstrap: Vec::new(),
            external: Vec::new(),
            mdns: false,
            cache_quota: DEFAULT_CACHE_QUOTA,
            relay_circuit_bytes: DEFAULT_RELAY_CIRCUIT_BYTES,
            log_level: "warn".into(),
            http: None,
            http_hosts: Vec::new(),
            otlp_endpoint: None,
            trust: TrustPolicy::FirstUse,
            repair: RepairMode::Auto,
            sparql_time_limit: crate::ops::SPARQL_TIME_LIMIT,
            network_key: None,
        })
    }

    /// Applies the config file; returns the network key file it names (relative to the
    /// file's directory), read once every layer has had its say.
    fn apply_file(&mut self, path: &Path, text: &str) -> Result<Option<PathBuf>, ConfigError> {
        let at = |span: Option<Range<usize>>, message: String| {
            let (line, column) = span.map_or((1, 1), |s| line_col(text, s.start));
            ConfigError::File {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        };
        let file: FileConfig =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().to_owned()))?;
        let addrs = |list: Vec<Spanned<String>>| -> Result<Vec<Multiaddr>, ConfigError> {
            list.into_iter()
                .map(|s| {
                    s.get_ref()
                        .parse()
                        .map_err(|e| at(Some(s.span()), format!("invalid multiaddr: {e}")))
                })
                .collect()
        };
        if let Some(l) = file.listen {
            self.listen = addrs(l)?;
        }
        if let Some(b) = file.bootstrap {
            self.bootstrap = addrs(b)?;
        }
        if let Some(e) = file.external {
            self.external = addrs(e)?;
        }
        if let Some(m) = file.mdns {
            self.mdns = m;
        }
        if let Some(q) = file.cache_quota {
            self.cache_quota = q;
        }
        if let Some(b) = file.relay_circuit_bytes {
            self.relay_circuit_bytes = b;
        }
        if let Some(l) = file.log_level {
            self.log_level = l;
        }
        if let Some(h) = file.http {
            self.http = Some(h.get_ref().parse().map_err(|e| {
                at(
                    Some(h.span()),
                    format!("invalid socket address (IP:PORT): {e}"),
                )
            })?);
        }
        if let Some(hosts) = file.http_hosts {
            self.http_hosts = hosts
                .into_iter()
                .map(|h| check_host_name(h.get_ref()).map_err(|m| at(Some(h.span()), m)))
                .collect::<Result<_, _>>()?;
        }
        if let Some(e) = file.otlp_endpoint {
            self.otlp_endpoint =
                Some(check_endpoint(e.get_ref()).map_err(|m| at(Some(e.span()), m))?);
        }
        if let Some(r) = file.repair {
            self.repair = r.get_ref().parse().map_err(|m| at(Some(r.span()), m))?;
        }
        if let Some(t) = file.sparql_time_limit {
            self.sparql_time_limit =
                parse_time_limit(t.get_ref()).map_err(|m| at(Some(t.span()), m))?;
        }
        if let Some(t) = file.trust
            && !t.allowlist.is_empty()
        {
            let keys = t
                .allowlist
                .into_iter()
                .map(|k| {
                    k.get_ref()
                        .parse::<PublisherKey>()
                        .map_err(|e| at(Some(k.span()), format!("invalid publisher key: {e}")))
                })
                .collect::<Result<HashSet<_>, _>>()?;
            self.trust = TrustPolicy::Allowlist(keys);
        }
        Ok(file.network_key.map(|k| {
            let dir = path.parent().unwrap_or(Path::new("."));
            dir.join(k.get_ref())
        }))
    }

    fn apply_env(&mut self, vars: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let list = |var: &str| -> Result<Option<Vec<Multiaddr>>, ConfigError> {
            let Some(v) = vars(var) else { return Ok(None) };
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse().map_err(|e| ConfigError::Env {
                        var: var.into(),
                        message: format!("invalid multiaddr {s:?}: {e}"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        };
        if let Some(l) = list("AGORA_LISTEN")? {
            self.listen = l;
        }
        if let Some(b) = list("AGORA_BOOTSTRAP")? {
            self.bootstrap = b;
        }
        if let Some(e) = list("AGORA_EXTERNAL")? {
            self.external = e;
        }
        if let Some(v) = vars("AGORA_MDNS") {
            self.mdns = match v.as_str() {
                "1" | "true" | "on" => true,
                "0" | "false" | "off" => false,
                other => {
                    return Err(ConfigError::Env {
                        var: "AGORA_MDNS".into(),
                        message: format!("expected true or false, got {other:?}"),
                    });
                }
            };
        }
        if let Some(v) = vars("AGORA_RELAY_CIRCUIT_BYTES") {
            self.relay_circuit_bytes = v.parse().map_err(|e| ConfigError::Env {
                var: "AGORA_RELAY_CIRCUIT_BYTES".into(),
                message: format!("expected a number of bytes: {e}"),
            })?;
        }
        if let Some(v) = vars("AGORA_CACHE_QUOTA") {
            self.cache_quota = v.parse().map_err(|e| ConfigError::Env {
                var: "AGORA_CACHE_QUOTA".into(),
                message: format!("expected a number of bytes: {e}"),
            })?;
        }
        if let Some(v) = vars("AGORA_LOG") {
            self.log_level = v;
        }
        if let Some(v) = vars("AGORA_HTTP") {
            self.http = Some(v.parse().map_err(|e| ConfigError::Env {
                var: "AGORA_HTTP".into(),
                message: format!("expected IP:PORT: {e}"),
            })?);
        }
        if let Some(v) = vars("AGORA_HTTP_HOSTS") {
            self.http_hosts = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|h| {
                    check_host_name(h).map_err(|message| ConfigError::Env {
                        var: "AGORA_HTTP_HOSTS".into(),
                        message,
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = vars("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.is_empty()) {
            self.otlp_endpoint = Some(check_endpoint(&v).map_err(|message| ConfigError::Env {
                var: "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                message,
            })?);
        }
        Ok(())
    }
}

/// Longest DNS name (RFC 1035).
const MAX_HOST_NAME_LEN: usize = 253;

/// A host name for `http_hosts`, lowercased: letters, digits, dots and hyphens, no port.
fn check_host_name(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    let valid = !lower.is_empty()
        && lower.len() <= MAX_HOST_NAME_LEN
        && lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if valid {
        Ok(lower)
    } else {
        Err(format!(
            "{name:?} is not a host name (letters, digits, '.' and '-', at most {MAX_HOST_NAME_LEN} bytes, no port)"
        ))
    }
}

/// An OTLP/HTTP endpoint this build can reach: `http://HOST[:PORT][/PATH]`, without a
/// trailing slash.
/// Shortest and longest SPARQL time limit a config may set: under a second, the queries of
/// docs/RDF.md could be stopped on a busy machine; over ten minutes, one query holds a core
/// that long.
const SPARQL_TIME_LIMITS: Range<Duration> = Duration::from_secs(1)..Duration::from_secs(601);

fn parse_time_limit(text: &str) -> Result<Duration, String> {
    let limit = humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?} (like \"10s\" or \"2m\"): {e}"))?;
    if !SPARQL_TIME_LIMITS.contains(&limit) {
        return Err(format!(
            "sparql_time_limit must be from 1s to 10m, not {text}"
        ));
    }
    Ok(limit)
}

fn check_endpoint(url: &str) -> Result<String, String> {
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(format!(
            "{url}: TLS is not built in; send to a local collector over http:// (it can forward over TLS)"
        ));
    } else {
        return Err(format!("{url}: expected http://HOST:PORT"));
    };
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(format!("{url}: expected http://HOST:PORT"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn default_listen() -> Vec<Multiaddr> {
    vec![
        format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}")
            .parse()
            .expect("a valid multiaddr"),
        format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1")
            .parse()
            .expect("a valid multiaddr"),
    ]
}

fn read_bounded(path: &Path, max: u64) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > max {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            len,
            max,
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(dir: &Path) -> PathEnv {
        PathEnv {
            agora_home: Some(dir.to_owned()),
            ..PathEnv::default()
        }
    }

    #[test]
    fn file_then_environment_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "listen = [\"/ip4/127.0.0.1/tcp/5000\"]\nmdns = false\ncache_quota = 100\nlog_level = \"debug\"\n",
        )
        .unwrap();
        let c = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap();
        assert_eq!(c.listen, vec!["/ip4/127.0.0.1/tcp/5000".parse().unwrap()]);
        assert_eq!(
            (c.mdns, c.cache_quota, c.log_level.as_str()),
            (false, 100, "debug")
        );

        let vars = |k: &str| match k {
            "AGORA_CACHE_QUOTA" => Some("200".to_string()),
            "AGORA_LISTEN" => Some("/ip4/127.0.0.1/tcp/6000, /ip4/127.0.0.1/tcp/6001".into()),
            _ => None,
        };
        let c = Config::load(&home(dir.path()), vars, Flags::default()).unwrap();
        assert_eq!((c.cache_quota, c.listen.len()), (200, 2));
        assert_eq!(c.relay_circuit_bytes, DEFAULT_RELAY_CIRCUIT_BYTES);
        let relay = |k: &str| (k == "AGORA_RELAY_CIRCUIT_BYTES").then(|| "0".to_string());
        let c = Config::load(&home(dir.path()), relay, Flags::default()).unwrap();
        assert_eq!(c.relay_circuit_bytes, 0);

        let flags = Flags {
            cache_quota: Some(300),
            listen: vec!["/ip4/127.0.0.1/tcp/7000".parse().unwrap()],
            ..Flags::default()
        };
        let c = Config::load(&home(dir.path()), vars, flags).unwrap();
        assert_eq!(c.cache_quota, 300);
        assert_eq!(c.listen, vec!["/ip4/127.0.0.1/tcp/7000".parse().unwrap()]);
    }

    #[test]
    fn a_missing_file_means_defaults_but_a_bad_one_is_an_error_with_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap();
        assert_eq!(c.listen, default_listen());
        assert!(c.mdns);

        let path = dir.path().join("config.toml");
        std::fs::write(&path, "mdns = true\nbootstrap = [\"/ip4/1.2.3.4/tcp/x\"]\n").unwrap();
        let err = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2:14: invalid multiaddr: failed to parse: invalid digit found in string",
                path.display()
            )
        );
        std::fs::write(&path, "mdns = true\nlisten_on = []\n").unwrap();
        let err = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{}:2:1: unknown field `listen_on`",
                path.display()
            )),
            "{err}"
        );

        let flags = Flags {
            config_file: Some(dir.path().join("absent.toml")),
            ..Flags::default()
        };
        assert!(matches!(
            Config::load(&home(dir.path()), |_| None, flags),
            Err(ConfigError::Io { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        let err = Config::load(
            &home(dir.path()),
            |k| (k == "AGORA_MDNS").then(|| "maybe".into()),
            Flags::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable AGORA_MDNS: expected true or false, got \"maybe\""
        );
    }

    #[test]
    fn the_sparql_time_limit_is_a_duration_from_one_second_to_ten_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap();
        assert_eq!(c.sparql_time_limit, Duration::from_secs(10));
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "sparql_time_limit = \"2m\"\n").unwrap();
        let c = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap();
        assert_eq!(c.sparql_time_limit, Duration::from_secs(120));
        for (text, error) in [
            (
                "500ms",
                "sparql_time_limit must be from 1s to 10m, not 500ms",
            ),
            ("1h", "sparql_time_limit must be from 1s to 10m, not 1h"),
            (
                "soon",
                "invalid duration \"soon\" (like \"10s\" or \"2m\"): expected number at 0",
            ),
        ] {
            std::fs::write(&path, format!("sparql_time_limit = \"{text}\"\n")).unwrap();
            let err = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{}:1:21: {error}", path.display()),
                "{text}"
            );
        }
    }

    #[test]
    fn a_damaged_store_is_repaired_unless_the_file_says_off() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap();
        assert_eq!(c.repair, RepairMode::Auto);
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "repair = \"off\"\n").unwrap();
        let c = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap();
        assert_eq!(c.repair, RepairMode::Off);
        std::fs::write(&path, "repair = \"sometimes\"\n").unwrap();
        let err = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:1:10: 'sometimes' is not a repair mode: use \"auto\" or \"off\"",
                path.display()
            )
        );
    }

    #[test]
    fn gateway_and_telemetry_settings() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap();
        assert_eq!((c.http, c.otlp_endpoint), (None, None));

        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "http = \"127.0.0.1:4180\"\notlp_endpoint = \"http://collector:4318/\"\n",
        )
        .unwrap();
        let c = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap();
        assert_eq!(c.http, Some("127.0.0.1:4180".parse().unwrap()));
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://collector:4318"));

        let vars = |k: &str| match k {
            "AGORA_HTTP" => Some("127.0.0.1:9000".to_string()),
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:4318".to_string()),
            _ => None,
        };
        let c = Config::load(&home(dir.path()), vars, Flags::default()).unwrap();
        assert_eq!(c.http, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));

        std::fs::write(&path, "http = \"localhost\"\n").unwrap();
        let err = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:1:8: invalid socket address (IP:PORT): invalid socket address syntax",
                path.display()
            )
        );
        std::fs::write(&path, "http_hosts = [\"Agora.LAN\", \"node-1.example\"]\n").unwrap();
        let c = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap();
        assert_eq!(c.http_hosts, ["agora.lan", "node-1.example"]);
        let vars = |k: &str| (k == "AGORA_HTTP_HOSTS").then(|| "a.example, b.example".to_string());
        let c = Config::load(&home(dir.path()), vars, Flags::default()).unwrap();
        assert_eq!(c.http_hosts, ["a.example", "b.example"]);
        std::fs::write(&path, "http_hosts = [\"agora.lan:4180\"]\n").unwrap();
        let err = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:1:15: \"agora.lan:4180\" is not a host name (letters, digits, '.' and '-', at most 253 bytes, no port)",
                path.display()
            )
        );
        std::fs::write(&path, "otlp_endpoint = \"https://otel.example:4318\"\n").unwrap();
        let err = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{}:1:17: https://otel.example:4318: TLS is not built in",
                path.display()
            )),
            "{err}"
        );
    }

    /// A network key makes the node TCP only: the default listen addresses lose their QUIC
    /// one, and a QUIC address anyone configured is refused, named; a key file other users can
    /// read, or one that is not a key, is refused with the file's name.
    #[test]
    fn a_network_key_means_tcp_only_and_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("team.key");
        let hex = "ab".repeat(32);
        std::fs::write(&key, format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let with_key = |listen: Vec<Multiaddr>, bootstrap: Vec<Multiaddr>| Flags {
            network_key: Some(key.clone()),
            listen,
            bootstrap,
            ..Flags::default()
        };
        let c = Config::load(&home(dir.path()), |_| None, with_key(vec![], vec![])).unwrap();
        let expected: Multiaddr = format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}").parse().unwrap();
        assert_eq!(c.listen, vec![expected]);
        let file = format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}");
        assert_eq!(
            c.network_key.unwrap().psk,
            file.parse::<PreSharedKey>().unwrap()
        );

        let quic: Multiaddr = "/ip4/0.0.0.0/udp/4101/quic-v1".parse().unwrap();
        for (flags, setting) in [
            (with_key(vec![quic.clone()], vec![]), "listen"),
            (with_key(vec![], vec![quic.clone()]), "bootstrap"),
        ] {
            let err = Config::load(&home(dir.path()), |_| None, flags).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{quic}: a private network (network_key) runs on TCP only; remove the QUIC \
                     address from `{setting}`"
                )
            );
        }

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Config::load(&home(dir.path()), |_| None, with_key(vec![], vec![])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "network key {}: other users can read it (mode 644); make it private with chmod 600",
                key.display()
            )
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&key, "x".repeat(2000)).unwrap();
        let err = Config::load(&home(dir.path()), |_| None, with_key(vec![], vec![])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is 2000 bytes; it may be at most 1024", key.display())
        );
        std::fs::write(&key, "not a key").unwrap();
        let err = Config::load(&home(dir.path()), |_| None, with_key(vec![], vec![])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("network key {}: not a network key", key.display())),
            "{err}"
        );
        // From the config file, a relative path is the config directory's.
        std::fs::write(&key, format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")).unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "network_key = \"team.key\"\n",
        )
        .unwrap();
        let c = Config::load(&home(dir.path()), |_| None, Flags::default()).unwrap();
        assert_eq!(c.network_key.unwrap().path, dir.path().join("team.key"));
    }
}
