//! `agora`: the command line of an Agora node. Every command talks to the local `agorad`
//! over its Unix socket (found the same way the daemon finds it: `AGORA_SOCKET`, else
//! `AGORA_HOME`, else the XDG runtime or data directory). `--json` prints machine-readable
//! output on every command. Errors are one line of cause and one line of hint, with the exit
//! codes listed in `agora --help`.

mod install;

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora_client::ipc::{IpcError, Progress};
use agora_client::{Client, ClientError};
use agora_protocol::ipc::{IndexState, StoreCheck};
use agora_protocol::paths::{PathEnv, Paths};
use agora_protocol::search::{SearchQuery, SortOrder};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

/// How long `agora node start` waits for the daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `agora node stop` waits for the socket to go away.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

const EXIT_CODES: &str = "Exit codes: 0 success · 1 other error · 2 bad usage · 3 no daemon \
running · 4 not found · 5 refused (trust rules or catalog state) · 6 verification failed · \
7 network error";

#[derive(Parser)]
#[command(name = "agora", version, about = "Agora: a peer-to-peer package marketplace", after_help = EXIT_CODES)]
struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start, stop or inspect the background node.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Show this node's status.
    Status,
    /// Create this node's publisher key.
    Keygen,
    /// Publish the package in DIR (default: the current directory).
    Publish {
        dir: Option<PathBuf>,
        /// Check and pack the package without publishing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Search the catalog.
    Search {
        #[arg(default_value = "")]
        query: String,
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        author: Option<String>,
        #[arg(long)]
        license: Option<String>,
        #[arg(long, value_enum, default_value_t = Sort::Relevance)]
        sort: Sort,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Show a package (NAME or NAME@REQ).
    Info { package: String },
    /// List the versions of a package.
    Versions { name: String },
    /// Install packages and their dependencies; with no names, exactly what agora.lock says.
    Install {
        packages: Vec<String>,
        /// The project directory (default: the current directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Re-resolve installed packages (or one) to their newest allowed versions.
    Update {
        name: Option<String>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Remove an installed package.
    Remove {
        name: String,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List installed packages.
    List {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check installed files against agora.lock.
    Verify {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Withdraw a version (NAME@VERSION) from new resolutions.
    Yank {
        package: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List connected peers.
    Peers,
    /// Connect to a peer (a multiaddr with /p2p/PEERID).
    Connect { addr: String },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum NodeAction {
    /// Start agorad in the background and wait until it answers. Arguments after `--` go to
    /// agorad (e.g. `agora node start -- --bootstrap /ip4/…/p2p/…`).
    Start {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "AGORAD_ARGS"
        )]
        args: Vec<String>,
    },
    /// Stop the running agorad gracefully.
    Stop,
    /// Check the stopped node's store and repair it if it is damaged: the damaged database
    /// is set aside (never deleted), and the catalog rebuilt from this node's journal and
    /// archives; the next start syncs the rest from peers. Arguments after `--` go to agorad.
    Repair {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "AGORAD_ARGS"
        )]
        args: Vec<String>,
    },
    /// Print the last lines of the daemon's log.
    Logs {
        #[arg(short = 'n', default_value_t = 50)]
        lines: usize,
    },
    /// Change the running daemon's log filter (error, warn, info, debug, trace, or
    /// directives such as `agora_daemon=debug,libp2p=warn`).
    LogLevel { filter: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum Sort {
    Relevance,
    Name,
    Newest,
}

/// An error for the user: a cause, a hint, and an exit code.
pub struct Failure {
    pub cause: String,
    pub hint: String,
    pub code: u8,
}

impl Failure {
    pub fn new(code: u8, cause: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            hint: hint.into(),
            code,
        }
    }
}

/// Explains a client error.
pub fn explain(e: ClientError) -> Failure {
    match e {
        ClientError::NoDaemon { path } => Failure::new(
            3,
            format!("no agorad is running (tried the socket {})", path.display()),
            "start one with 'agora node start'",
        ),
        ClientError::Daemon(d) => match d {
            IpcError::NotFound(m) => Failure::new(4, m, "check the name with 'agora search'"),
            IpcError::Refused(m) => Failure::new(
                5,
                m,
                "see 'agora versions NAME'; versions must increase and names keep their owner",
            ),
            IpcError::Package(m) => {
                Failure::new(1, m, "fix the package directory and publish again")
            }
            IpcError::NoKey(m) => Failure::new(1, m, "create a key with 'agora keygen'"),
            IpcError::Network(m) => Failure::new(
                7,
                m,
                "check 'agora peers'; the package may have no reachable provider",
            ),
            IpcError::VersionMismatch { .. } => Failure::new(
                1,
                d.to_string(),
                "use an agora and agorad of the same version",
            ),
            IpcError::BadRequest(m) => Failure::new(2, m, "see 'agora --help'"),
            IpcError::Internal(m) => {
                Failure::new(1, m, "see the daemon log with 'agora node logs'")
            }
        },
        other => Failure::new(
            1,
            other.to_string(),
            "see the daemon log with 'agora node logs'",
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.cause);
            eprintln!("hint: {}", f.hint);
            ExitCode::from(f.code)
        }
    }
}

fn paths() -> Result<Paths, Failure> {
    Paths::resolve(&PathEnv::from_process())
        .map_err(|e| Failure::new(1, e.to_string(), "set AGORA_HOME to a directory"))
}

fn client() -> Result<Client, Failure> {
    Client::connect(&paths()?.socket).map_err(explain)
}

fn print_json(v: serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(&v).expect("JSON values serialise")
    );
}

fn project_dir(dir: Option<PathBuf>) -> Result<PathBuf, Failure> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::current_dir()
            .map_err(|e| Failure::new(1, format!("no current directory: {e}"), "pass --dir"))?,
    };
    std::path::absolute(&dir).map_err(|e| {
        Failure::new(
            1,
            format!("{}: {e}", dir.display()),
            "pass an existing --dir",
        )
    })
}

/// Shows progress on stderr when it is a terminal (and not with `--json`): a spinner with the
/// current step, and a byte bar while an archive downloads. Plain text only, no colours.
pub fn on_progress(json: bool) -> impl FnMut(&Progress) {
    /// Clears the bar when the command is done with it.
    struct Bar(indicatif::ProgressBar);
    impl Drop for Bar {
        fn drop(&mut self) {
            self.0.finish_and_clear();
        }
    }
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        Bar(bar)
    });
    move |p| {
        let Some(Bar(bar)) = &bar else { return };
        match p {
            Progress::Step(s) => bar.set_message(s.clone()),
            Progress::Bytes { done, total } => {
                if bar.length() != Some(*total) {
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .expect("a valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_length(*total);
                }
                bar.set_position(*done);
                if done >= total {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.json;
    match cli.command {
        Command::Node { action } => node(action, json),
        Command::Status => {
            let s = client()?.status().map_err(explain)?;
            if json {
                print_json(serde_json::to_value(&s).expect("serialisable"));
            } else {
                println!("peer id       {}", s.peer_id);
                for a in &s.listen_addrs {
                    println!("listening on  {a}");
                }
                for a in &s.external_addrs {
                    println!("external      {a}");
                }
                println!(
                    "peers         {} connected, {} in the routing table",
                    s.peers, s.routing_table
                );
                println!(
                    "catalog       {} records, {} packages",
                    s.catalog_size, s.packages
                );
                match &s.search_index {
                    IndexState::Ready => println!("search        {} packages indexed", s.indexed),
                    IndexState::Rebuilding => {
                        println!("search        index being rebuilt (searches wait for it)")
                    }
                    IndexState::Failed(why) => println!(
                        "search        refused: the index could not be rebuilt ({why}); restart agorad"
                    ),
                }
                println!(
                    "disk          {} cached of {} quota, {} stored in all",
                    human_bytes(s.cache_bytes),
                    human_bytes(s.cache_quota),
                    human_bytes(s.store_bytes)
                );
                let asked = s.cache_hits + s.cache_misses;
                if asked == 0 {
                    println!("cache hits    none asked yet");
                } else {
                    println!(
                        "cache hits    {:.1}% ({} of {asked})",
                        100.0 * s.cache_hits as f64 / asked as f64,
                        s.cache_hits
                    );
                }
                println!(
                    "publisher     {}",
                    s.publisher.as_deref().unwrap_or("none (agora keygen)")
                );
                println!("http          {}", s.http.as_deref().unwrap_or("off"));
                println!("log level     {}", s.log_level);
                println!("uptime        {}", human_duration(s.uptime_secs));
                println!("data          {}", s.data_dir);
                match &s.store_check {
                    StoreCheck::Running => println!("store check   running"),
                    StoreCheck::Sound { records } => {
                        println!("store check   sound ({records} records checked)")
                    }
                    StoreCheck::Damaged(why) => println!(
                        "store check   DAMAGED: {why}; the next start repairs it (or 'agora node repair')"
                    ),
                    StoreCheck::Failed(why) => println!("store check   could not run: {why}"),
                }
                if let Some(r) = &s.repair {
                    println!("repaired      at start: {}", r.cause);
                    if let Some(aside) = &r.set_aside {
                        println!("              the damaged database is kept at {aside}");
                    }
                    let peers: u64 = r.from_peers.iter().map(|(_, n)| n).sum();
                    println!(
                        "              taken back: {} records from the journal, {} archives \
                         ({} removed), {peers} records from {} peers so far",
                        r.from_journal,
                        r.blobs_kept,
                        r.blobs_dropped,
                        r.from_peers.len()
                    );
                }
                println!("version       {}", s.version);
            }
            Ok(())
        }
        Command::Keygen => {
            let key = client()?.keygen().map_err(explain)?;
            if json {
                print_json(json!({ "publisher": key }));
            } else {
                println!("created publisher key {key}");
            }
            Ok(())
        }
        Command::Publish { dir, dry_run } => {
            let dir = project_dir(dir)?;
            let p = client()?
                .publish(&dir, dry_run, on_progress(json))
                .map_err(explain)?;
            if json {
                print_json(serde_json::to_value(&p).expect("serialisable"));
            } else {
                let r = &p.release;
                let what = if p.published {
                    "published"
                } else {
                    "checked (dry run)"
                };
                println!(
                    "{what} {}@{} ({} bytes, sha256 {})",
                    r.name, r.version, r.size, r.sha256
                );
            }
            Ok(())
        }
        Command::Search {
            query,
            category,
            tag,
            author,
            license,
            sort,
            limit,
            offset,
        } => {
            let q = SearchQuery {
                text: query,
                category,
                tag,
                author,
                license,
                sort: match sort {
                    Sort::Relevance => SortOrder::Relevance,
                    Sort::Name => SortOrder::Name,
                    Sort::Newest => SortOrder::Newest,
                },
                limit,
                offset,
            };
            let r = client()?.search(q).map_err(explain)?;
            if json {
                print_json(serde_json::to_value(&r).expect("serialisable"));
            } else if r.hits.is_empty() {
                println!("no packages found");
            } else {
                let width = r
                    .hits
                    .iter()
                    .map(|h| h.name.len())
                    .max()
                    .unwrap_or(4)
                    .max(4);
                println!("{:width$}  {:10}  DESCRIPTION", "NAME", "VERSION");
                for h in &r.hits {
                    println!("{:width$}  {:10}  {}", h.name, h.version, h.description);
                }
                println!("({} of {} packages)", r.hits.len(), r.total);
            }
            Ok(())
        }
        Command::Info { package } => {
            let (name, req) = match package.split_once('@') {
                Some((n, r)) => (n.to_string(), Some(r.to_string())),
                None => (package.clone(), None),
            };
            let r = client()?.info(&name, req.as_deref()).map_err(explain)?;
            if json {
                print_json(serde_json::to_value(&r).expect("serialisable"));
            } else {
                println!(
                    "{}@{}{}",
                    r.name,
                    r.version,
                    if r.yanked { " (yanked)" } else { "" }
                );
                println!("  {}", r.description);
                for (k, v) in [
                    ("category", &r.category),
                    ("author", &r.author),
                    ("license", &r.license),
                    ("repository", &r.repository),
                ] {
                    if let Some(v) = v {
                        println!("  {k:12} {v}");
                    }
                }
                if !r.tags.is_empty() {
                    println!("  {:12} {}", "tags", r.tags.join(", "));
                }
                if !r.dependencies.is_empty() {
                    println!("  {:12} {}", "depends on", r.dependencies.join(", "));
                }
                println!("  {:12} {} bytes, sha256 {}", "archive", r.size, r.sha256);
                println!("  {:12} {}", "publisher", r.publisher);
            }
            Ok(())
        }
        Command::Versions { name } => {
            let v = client()?.versions(&name).map_err(explain)?;
            if json {
                print_json(serde_json::to_value(&v).expect("serialisable"));
            } else {
                for e in &v {
                    let flag = match (e.yanked, e.equivocated) {
                        (_, true) => "  (equivocated: two different records; not installable)",
                        (true, false) => "  (yanked)",
                        _ => "",
                    };
                    println!("{}{flag}", e.version);
                }
            }
            Ok(())
        }
        Command::Install { packages, dir } => {
            install::install(&mut client()?, &project_dir(dir)?, &packages, json)
        }
        Command::Update { name, dir } => {
            install::update(&mut client()?, &project_dir(dir)?, name.as_deref(), json)
        }
        Command::Remove { name, dir } => install::remove(&project_dir(dir)?, &name, json),
        Command::List { dir } => install::list(&project_dir(dir)?, json),
        Command::Verify { dir } => install::verify(&project_dir(dir)?, json),
        Command::Yank { package, reason } => {
            let Some((name, version)) = package.split_once('@') else {
                return Err(Failure::new(
                    2,
                    format!("'{package}' names no version"),
                    "yank one version: agora yank NAME@VERSION",
                ));
            };
            client()?.yank(name, version, &reason).map_err(explain)?;
            if json {
                print_json(json!({ "yanked": { "name": name, "version": version } }));
            } else {
                println!("yanked {name}@{version}");
            }
            Ok(())
        }
        Command::Peers => {
            let peers = client()?.peers().map_err(explain)?;
            if json {
                print_json(serde_json::to_value(&peers).expect("serialisable"));
            } else if peers.is_empty() {
                println!("no peers connected");
            } else {
                for p in &peers {
                    match p.score {
                        Some(s) => println!("{}  score {s:.3}", p.peer_id),
                        None => println!("{}  banned", p.peer_id),
                    }
                }
            }
            Ok(())
        }
        Command::Connect { addr } => {
            let peer = client()?.connect_peer(&addr).map_err(explain)?;
            if json {
                print_json(json!({ "connected": peer }));
            } else {
                println!("connected to {peer}");
            }
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "agora", &mut std::io::stdout());
            Ok(())
        }
    }
}

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

fn node(action: NodeAction, json: bool) -> Result<(), Failure> {
    let paths = paths()?;
    match action {
        NodeAction::Start { args } => {
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
            let mut child = std::process::Command::new(&bin)
                .args(&args)
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
                    if json {
                        print_json(
                            json!({ "started": { "pid": child.id(), "peer_id": s.peer_id, "socket": paths.socket } }),
                        );
                    } else {
                        println!("agorad started (pid {}, peer id {})", child.id(), s.peer_id);
                    }
                    return Ok(());
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
            if json {
                print_json(json!({ "stopped": true }));
            } else {
                println!("agorad stopped");
            }
            Ok(())
        }
        NodeAction::Repair { args } => repair(&paths, &args, json),
        NodeAction::LogLevel { filter } => {
            let now = client()?.set_log_level(&filter).map_err(explain)?;
            if json {
                print_json(json!({ "log_level": now }));
            } else {
                println!("log level is now {now}");
            }
            Ok(())
        }
        NodeAction::Logs { lines } => {
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
            if json {
                print_json(json!({ "file": log, "lines": tail }));
            } else {
                for l in tail {
                    println!("{l}");
                }
            }
            Ok(())
        }
    }
}

/// `agora node repair`: runs `agorad --repair` on the stopped node's store.
fn repair(paths: &Paths, args: &[String], json: bool) -> Result<(), Failure> {
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
    let out = std::process::Command::new(&bin)
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
    if json {
        print_json(report);
        return Ok(());
    }
    let dir = report["data_dir"].as_str().unwrap_or_default();
    let r = &report["repaired"];
    if r.is_null() {
        println!("the store in {dir} is sound: nothing to repair");
        return Ok(());
    }
    println!("repaired: {}", r["cause"].as_str().unwrap_or_default());
    match r["set_aside"].as_str() {
        Some(aside) => println!("the damaged database is kept at {aside}"),
        None => println!("there was no database to keep"),
    }
    println!(
        "taken back: {} records from this node's journal, {} archives ({} removed: they no \
         longer matched their hash)",
        r["from_journal"], r["blobs_kept"], r["blobs_dropped"]
    );
    println!("start the node ('agora node start') to sync the rest of the catalog from its peers");
    Ok(())
}

/// 1536 → "1.5 KiB".
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// 3725 → "1h 2m 5s".
fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m 5s");
        assert_eq!(human_duration(3725), "1h 2m 5s");
        assert_eq!(human_duration(90_061), "1d 1h 1m");
    }
}
