//! An `agorad` on a lab host, for the lab command and the benches (the tests have their own
//! helper, with their assertions): started with `agora node start` inside the host's network
//! namespace, driven from outside through its socket, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::net::Host;

/// One node: its home directory (its socket lives there) and the daemon's pid.
pub struct Node {
    pub name: String,
    pub home: tempfile::TempDir,
    pub pid: i32,
}

impl Node {
    /// Starts agorad on `host` with `args` and extra environment `env`.
    pub fn start(host: &Host, name: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        let home = tempfile::Builder::new()
            .prefix(&format!("agora-lab-{name}-"))
            .tempdir()
            .expect("a home directory under the temporary directory");
        let agora = binary("agora");
        let mut start = Command::new("ip");
        start
            .args(["netns", "exec", &host.ns])
            .arg(&agora)
            .args(["--json", "node", "start", "--"])
            .args(args)
            .env("AGORA_HOME", home.path())
            .env_remove("AGORA_SOCKET")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied());
        let out = start.output().expect("ip netns exec agora node start");
        assert!(
            out.status.success(),
            "starting {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("node start's JSON");
        let pid = v["started"]["pid"].as_i64().expect("the daemon's pid") as i32;
        Self {
            name: name.to_string(),
            home,
            pid,
        }
    }

    /// `agora ARGS` against this node, from outside its namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary("agora"));
        c.env("AGORA_HOME", self.home.path())
            .env_remove("AGORA_SOCKET")
            .env("NO_COLOR", "1")
            .args(args);
        c
    }

    pub fn agora(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running agora")
    }

    /// `agora --json ARGS`, which must succeed, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.agora(&all);
        assert!(
            out.status.success(),
            "{}: agora {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        serde_json::from_slice(&out.stdout).expect("agora's JSON")
    }

    /// The node's first listen address with its peer id, as others bootstrap from it.
    pub fn address(&self) -> String {
        let status = self.json(&["status"]);
        let peer = status["peer_id"].as_str().expect("peer_id").to_string();
        let addr = status["listen_addrs"][0]
            .as_str()
            .expect("a listen address")
            .to_string();
        format!("{addr}/p2p/{peer}")
    }
}

/// The sum of the samples of metric `name` (every label set) that the node on `host`
/// exports on its gateway's `/metrics` (started with `--http 127.0.0.1:4180`).
pub fn metric(host: &Host, name: &str) -> f64 {
    use std::io::{Read, Write};
    let text = crate::net::inside(host, || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:4180").expect("the node's gateway");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("a request to the gateway");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("the gateway's answer");
        out
    });
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Drop for Node {
    fn drop(&mut self) {
        let stopped = self.agora(&["node", "stop"]).status.success();
        if !stopped {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(self.pid).expect("a pid"),
                rustix::process::Signal::KILL,
            );
        }
    }
}

/// The workspace's `name` binary: beside the running program (target/<profile>/), one level
/// up from it (a test or bench in target/<profile>/deps/), or on PATH.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running program's path");
    let dirs = [exe.parent(), exe.parent().and_then(Path::parent)];
    dirs.into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}
