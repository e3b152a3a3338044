//! Helpers for tests that run the real `agorad` and `agora` binaries.
//!
//! The binaries are the workspace's own (`target/<profile>/agora` and `agorad`), built by
//! `cargo test --workspace` because their packages have process tests of their own.
#![allow(dead_code)]

pub mod ggen;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use agora_client::Client;
use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with 'cargo test --workspace'",
        path.display()
    );
    path
}

/// One node: its home directory, and the daemon's pid while it runs.
pub struct Daemon {
    pub home: tempfile::TempDir,
    pid: Option<i32>,
    /// agorad's flags (kept for a restart).
    pub args: Vec<String>,
    /// Extra environment for agorad.
    env: Vec<(String, String)>,
    /// The network namespace agorad runs in (the network lab's hosts); `None`: this one.
    pub netns: Option<String>,
}

impl Daemon {
    /// Starts a daemon with `agora node start -- --listen … [--bootstrap …]`.
    pub fn start(bootstrap: Option<&str>) -> Self {
        let mut extra = Vec::new();
        if let Some(b) = bootstrap {
            extra.extend(["--bootstrap", b]);
        }
        Self::with_args(&extra)
    }

    /// Starts a daemon on a loopback port without mDNS, with `extra` agorad flags.
    pub fn with_args(extra: &[&str]) -> Self {
        let mut args = vec!["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"];
        args.extend_from_slice(extra);
        Self::with_env_and_args(&[], &args)
    }

    /// Starts a daemon with exactly these agorad flags and extra environment.
    pub fn with_env_and_args(env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut d = Self::prepare(env, args);
        d.launch();
        d
    }

    /// A daemon's home, flags and environment, not started yet.
    pub fn prepare(env: &[(&str, &str)], args: &[&str]) -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
            pid: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            netns: None,
        }
    }

    /// Starts (or restarts) agorad with the kept flags.
    pub fn launch(&mut self) {
        let out = self.try_launch();
        assert!(
            out.status.success(),
            "agora node start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `agora node start` with the kept flags; on success, the daemon runs.
    pub fn try_launch(&mut self) -> Output {
        let mut cmd = vec!["--json", "node", "start", "--"];
        cmd.extend(self.args.iter().map(String::as_str));
        let mut start = self.command(&cmd);
        if let Some(ns) = &self.netns {
            // `agora node start` in the namespace starts agorad there; the socket it answers
            // on is a file, reached from anywhere.
            let agora = start.get_program().to_owned();
            let mut wrapped = Command::new("ip");
            wrapped
                .args(["netns", "exec", ns])
                .arg(agora)
                .args(start.get_args());
            for (k, v) in start.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            start = wrapped;
        }
        let out = start.envs(self.env.clone()).output().unwrap();
        if !out.status.success() {
            return out;
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        self.pid = Some(v["started"]["pid"].as_i64().unwrap() as i32);
        out
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("agora"));
        c.env("AGORA_HOME", self.home.path())
            .env_remove("AGORA_SOCKET")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("NO_COLOR", "1")
            .args(args);
        c
    }

    pub fn agora(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `agora --json ARGS`, expecting success, and parses its output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.agora(&all);
        assert!(
            out.status.success(),
            "agora {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.home.path().join("agorad.sock")).unwrap()
    }

    pub fn address(&self) -> String {
        let s = self.json(&["status"]);
        format!(
            "{}/p2p/{}",
            s["listen_addrs"][0].as_str().unwrap(),
            s["peer_id"].as_str().unwrap()
        )
    }

    /// Starts `agora ARGS` against this daemon without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The daemon's process id while it runs.
    pub fn pid(&self) -> i32 {
        self.pid.expect("the daemon is running")
    }

    /// The daemon's data directory (catalog, blobs, temp files).
    pub fn data_dir(&self) -> PathBuf {
        self.home.path().join("data")
    }

    /// Kills agorad with SIGKILL (no shutdown of any kind) and waits until its socket
    /// refuses connections, which the kernel does once the process is gone.
    pub fn kill(&mut self) {
        let pid = self.pid.take().expect("the daemon is running");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let socket = self.home.path().join("agorad.sock");
        wait_until("the killed daemon's socket refuses connections", || {
            match std::os::unix::net::UnixStream::connect(&socket) {
                Err(_) => Ok(()),
                Ok(_) => Err("it still accepts".into()),
            }
        });
    }

    pub fn stop(&mut self) {
        self.json(&["node", "stop"]);
        self.pid = None;
    }
}

impl Drop for Daemon {
    /// Stops a daemon still running with SIGTERM and waits until it has exited (SIGKILL
    /// after [`DEADLINE`]): its shutdown writes into its home (the sealed search index), and
    /// the home is removed right after this, so a daemon still shutting down would create
    /// it again and leave it behind.
    fn drop(&mut self) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        use rustix::process::{Pid, PidfdFlags, Signal, kill_process, pidfd_open};
        let Some(pid) = self.pid.take().and_then(Pid::from_raw) else {
            return;
        };
        // Opened before the signal: it names this process even if its pid is reused later,
        // and becomes readable when the process exits (the daemon is not our child: `agora
        // node start` started it and exited, so there is nothing to `wait` for).
        let Ok(exit) = pidfd_open(pid, PidfdFlags::empty()) else {
            return; // already gone
        };
        let _ = kill_process(pid, Signal::TERM);
        let timeout = Timespec {
            tv_sec: DEADLINE.as_secs() as i64,
            tv_nsec: 0,
        };
        let exited = loop {
            match poll(&mut [PollFd::new(&exit, PollFlags::IN)], Some(&timeout)) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break matches!(other, Ok(n) if n > 0),
            }
        };
        if !exited {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

pub fn wait_until(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if started.elapsed() > DEADLINE => {
                panic!("{what}: not after {DEADLINE:?}: {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub fn package(dir: &Path, name: &str, version: &str, deps: &str, body: &str) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"{version}\"\ndescription = \"{name} templates\"\n\
             category = \"starter\"\nlicense = \"MIT\"\ndependencies = [{deps}]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("templates/main.tmpl"), body).unwrap();
}
