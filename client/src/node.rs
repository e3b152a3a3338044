//! `agora node`: starting, stopping and repairing the local daemon, its log level and logs.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_client::Client;
use agora_protocol::paths::Paths;
use serde_json::json;

use crate::output::Output;
use crate::{Failure, NodeAction, client, explain, locate, paths, say};

/// How long `agora node start` waits for the daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `agora node stop` waits for the socket to go away.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// How often `node logs --follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The agorad binary: next to this one, else on PATH.
fn agorad_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("agorad")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("agorad"))
}

/// The newest daemon log file in `data_dir`.
fn newest_log(data_dir: &Path) -> Option<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("agorad") && n.ends_with(".log"))
        })
        .collect();
    logs.sort();
    logs.pop()
}

/// `agora node ACTION`.
pub fn run(action: NodeAction, json: bool) -> Result<Output, Failure> {
    let paths = paths()?;
    match action {
        NodeAction::Start { args } => start(&paths, &args),
        NodeAction::Stop => {
            Client::connect(&paths.socket)
                .and_then(|mut c| c.shutdown())
                .map_err(explain)?;
            let started = Instant::now();
            while paths.socket.exists() {
                if started.elapsed() > STOP_TIMEOUT {
                    return Err(Failure::new(
                        1,
                        format!("agorad did not stop within {STOP_TIMEOUT:?}"),
                        "see 'agora node logs'",
                    ));
                }
                std::thread::sleep(POLL);
            }
            Ok(Output::new(json!({ "stopped": true }), "agorad stopped"))
        }
        NodeAction::Repair { args } => repair(&paths, &args),
        NodeAction::LogLevel { filter } => {
            let now = client()?.set_log_level(&filter).map_err(explain)?;
            let text = format!("log level is now {now}");
            Ok(Output::new(json!({ "log_level": now }), text))
        }
        NodeAction::Logs { lines, follow } => {
            let Some(log) = newest_log(&paths.data_dir) else {
                return Err(Failure::new(
                    1,
                    format!("no log in {}", paths.data_dir.display()),
                    "start the daemon with 'agora node start'",
                ));
            };
            let text = std::fs::read_to_string(&log)
                .map_err(|e| Failure::new(1, format!("{}: {e}", log.display()), ""))?;
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            if follow {
                follow_log(&paths.data_dir, log, text.len() as u64, tail, json)
            }
            Ok(Output::new(
                json!({ "file": log, "lines": tail }),
                tail.join("\n"),
            ))
        }
    }
}

/// `node logs --follow`: prints `tail`, then every line written after `offset` of `log`, and
/// of the newer log file when the day turns, until the process is interrupted. With `--json`
/// each line is a JSON string of its own.
fn follow_log(data_dir: &Path, mut log: PathBuf, mut offset: u64, tail: &[&str], json: bool) -> ! {
    use std::io::{Read, Seek, SeekFrom};
    let show = |line: &str| {
        let text = if json {
            serde_json::to_string(line).expect("a string serialises")
        } else {
            line.to_string()
        };
        say(text, false);
    };
    tail.iter().for_each(|l| show(l));
    let mut pending = String::new();
    loop {
        let mut chunk = String::new();
        if let Ok(mut f) = std::fs::File::open(&log)
            && f.seek(SeekFrom::Start(offset)).is_ok()
        {
            offset += f.read_to_string(&mut chunk).unwrap_or(0) as u64;
        }
        pending.push_str(&chunk);
        while let Some(end) = pending.find('\n') {
            show(&pending[..end]);
            pending.drain(..=end);
        }
        if chunk.is_empty() {
            match newest_log(data_dir) {
                Some(newer) if newer != log => (log, offset) = (newer, 0),
                _ => std::thread::sleep(FOLLOW_POLL),
            }
        }
    }
}

/// `agora node start`: runs agorad in the background (its own process group, its output in
/// `agorad.out`) and waits until it answers, or says why it stopped.
fn start(paths: &Paths, args: &[String]) -> Result<Output, Failure> {
    if let Ok(mut c) = Client::connect(&paths.socket) {
        let s = c.status().map_err(explain)?;
        return Err(Failure::new(
            1,
            format!("agorad is already running (peer id {})", s.peer_id),
            "stop it first with 'agora node stop'",
        ));
    }
    std::fs::create_dir_all(&paths.data_dir).map_err(|e| {
        Failure::new(
            1,
            format!("{}: {e}", paths.data_dir.display()),
            "check permissions",
        )
    })?;
    let out_path = paths.data_dir.join("agorad.out");
    let out = std::fs::File::create(&out_path).map_err(|e| {
        Failure::new(
            1,
            format!("{}: {e}", out_path.display()),
            "check permissions",
        )
    })?;
    let err = out
        .try_clone()
        .map_err(|e| Failure::new(1, e.to_string(), ""))?;
    let bin = agorad_binary();
    // Its own process group: a Ctrl-C meant for this terminal does not reach it.
    let mut agorad = std::process::Command::new(&bin);
    locate(&mut agorad);
    let mut child = agorad
        .args(args)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| {
            Failure::new(
                1,
                format!("cannot run {}: {e}", bin.display()),
                "install agorad next to agora or on PATH",
            )
        })?;
    let started = Instant::now();
    loop {
        if let Ok(mut c) = Client::connect(&paths.socket)
            && let Ok(s) = c.status()
        {
            let text = format!("agorad started (pid {}, peer id {})", child.id(), s.peer_id);
            return Ok(Output::new(
                json!({ "started": { "pid": child.id(), "peer_id": s.peer_id, "socket": paths.socket } }),
                text,
            ));
        }
        if let Ok(Some(status)) = child.try_wait() {
            // agorad says why on its last lines: an `error:` and maybe a `hint:`.
            let said = std::fs::read_to_string(&out_path).unwrap_or_default();
            let last = |prefix: &str| {
                said.lines()
                    .rev()
                    .find_map(|l| l.strip_prefix(prefix))
                    .map(str::to_owned)
            };
            let cause = match last("error: ") {
                Some(error) => format!("agorad could not start: {error}"),
                None => format!("agorad exited during start-up ({status})"),
            };
            let hint = last("hint: ").map_or_else(
                || format!("see {}", out_path.display()),
                |hint| format!("{hint} (agorad's output: {})", out_path.display()),
            );
            return Err(Failure::new(1, cause, hint));
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(Failure::new(
                1,
                format!("agorad did not answer within {START_TIMEOUT:?}"),
                format!("see {}", out_path.display()),
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// `agora node repair`: runs `agorad --repair` on the stopped node's store.
fn repair(paths: &Paths, args: &[String]) -> Result<Output, Failure> {
    if Client::connect(&paths.socket).is_ok_and(|mut c| c.status().is_ok()) {
        return Err(Failure::new(
            1,
            "agorad is running: it opened its store, and repairs a damaged one at start \
             unless repair = \"off\""
                .to_string(),
            "stop it first with 'agora node stop'",
        ));
    }
    let bin = agorad_binary();
    let mut agorad = std::process::Command::new(&bin);
    locate(&mut agorad);
    let out = agorad
        .arg("--repair")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Failure::new(
                1,
                format!("cannot run {}: {e}", bin.display()),
                "install agorad next to agora or on PATH",
            )
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let cause = err
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or("agorad --repair failed")
            .to_string();
        let hint = err
            .lines()
            .find_map(|l| l.strip_prefix("hint: "))
            .unwrap_or("")
            .to_string();
        return Err(Failure::new(1, cause, hint));
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Failure::new(1, format!("agorad --repair printed no report: {e}"), ""))?;
    Ok(Output::with(&report, |report, w| {
        let dir = report["data_dir"].as_str().unwrap_or_default();
        let r = &report["repaired"];
        if r.is_null() {
            w.line(format!("the store in {dir} is sound: nothing to repair"));
            return;
        }
        w.line(format!(
            "repaired: {}",
            r["cause"].as_str().unwrap_or_default()
        ));
        w.line(match r["set_aside"].as_str() {
            Some(aside) => format!("the damaged database is kept at {aside}"),
            None => "there was no database to keep".to_string(),
        });
        w.line(format!(
            "taken back: {} records from this node's journal, {} archives ({} removed: they no \
             longer matched their hash)",
            r["from_journal"], r["blobs_kept"], r["blobs_dropped"]
        ));
        w.line(
            "start the node ('agora node start') to sync the rest of the catalog from its peers",
        );
    }))
}

/// `keygen --network`: writes a new private network's key to `file` (the swarm.key format of
/// IPFS and libp2p, 32 random bytes in hex), readable by this user only, never over an
/// existing file (that would lock this node out of the network the old key made).
pub fn network_key(file: &Path) -> Result<Output, Failure> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |e: std::io::Error| {
        Failure::new(
            1,
            format!("{}: {e}", file.display()),
            "choose another file with --out FILE",
        )
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| Failure::new(1, format!("no randomness: {e}"), "try again"))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::new(
                    1,
                    format!("{} already exists", file.display()),
                    "a new key would make a new network: keep that file, or choose another \
                     with --out FILE",
                )
            } else {
                io(e)
            }
        })?;
    out.write_all(format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n").as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(io)?;
    let path = file.display().to_string();
    Ok(Output::new(
        json!({ "network_key": path }),
        format!(
            "wrote a new network key to {path}\ngive a copy to each member (privately) and start \
             each node with 'agora node start -- --network-key FILE' (or network_key = \"FILE\" \
             in config.toml)"
        ),
    ))
}
