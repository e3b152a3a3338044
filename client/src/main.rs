//! `agora`: the command line of an Agora node. Every command talks to the local `agorad`
//! over its Unix socket (found the same way the daemon finds it: `AGORA_SOCKET`, else
//! `AGORA_HOME`, else the XDG runtime or data directory). `--json` prints machine-readable
//! output on every command. Errors are one line of cause and one line of hint, with the exit
//! codes listed in `agora --help`.

mod graph;
mod growing;
mod import;
mod install;
mod manage;
mod node;
mod output;
mod show;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agora_client::ipc::{IpcError, Progress};
use agora_client::{Client, ClientError};
use agora_protocol::paths::{PathEnv, Paths};
use agora_protocol::search::{SearchQuery, SortOrder};
use clap::{Parser, Subcommand, ValueEnum};
use output::Output;
use serde_json::json;

const EXIT_CODES: &str = "Environment: AGORA_HOME (the node's home: config.toml, data/, keys/ \
and the socket), AGORA_SOCKET (the daemon's socket), XDG_RUNTIME_DIR (where the socket is \
without either). --home and --socket come first.

Exit codes: 0 success · 1 other error · 2 bad usage · 3 no daemon running · 4 not found · \
5 refused (trust rules or catalog state) · 6 verification failed · 7 network error";

/// `--quiet`: nothing but errors.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--verbose`: where the CLI connects and what it asks, on stderr.
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--home` and `--socket`, which come before the environment.
static LOCATION: std::sync::OnceLock<(Option<PathBuf>, Option<PathBuf>)> =
    std::sync::OnceLock::new();

#[derive(Parser)]
#[command(name = "agora", version, about = "Agora: a peer-to-peer package marketplace", after_help = EXIT_CODES)]
struct Cli {
    /// Print JSON instead of tables, errors included (on stdout, beside stderr's two lines).
    #[arg(long, global = true)]
    json: bool,
    /// The node's home: config, data, keys and socket (instead of AGORA_HOME).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// The daemon's socket (instead of AGORA_SOCKET).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print nothing but errors: no answer, no progress (the exit code says how it went).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Say on stderr which socket and daemon it talks to, and each request with its time.
    #[arg(short, long, global = true)]
    verbose: bool,
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
    /// Create this node's publisher key, or with --network a private network's key.
    Keygen {
        /// Make a new private network's key file instead (no daemon needed): give it to each
        /// member, which starts with 'agorad --network-key FILE'.
        #[arg(long)]
        network: bool,
        /// Where to write the network key (default: network.key in the node's keys directory).
        #[arg(long, value_name = "FILE", requires = "network")]
        out: Option<PathBuf>,
    },
    /// Publish the package in DIR (default: the current directory).
    Publish {
        /// The package directory (default: the current directory).
        dir: Option<PathBuf>,
        /// Check and pack the package without publishing it: lists every file, needs no key.
        #[arg(long)]
        dry_run: bool,
        /// Publish even if a dependency is in no catalog this node reaches.
        #[arg(long)]
        allow_missing_dependencies: bool,
    },
    /// Publish every package directory under DIR (nested categories too), dependencies first.
    Import {
        /// The tree of package directories (a ggen marketplace's packages/).
        dir: PathBuf,
        /// Check and pack each package without publishing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Search the catalog.
    Search {
        /// Words to look for (typo tolerant; empty lists everything).
        #[arg(default_value = "")]
        query: String,
        /// Only packages of this category.
        #[arg(long)]
        category: Option<String>,
        /// Only packages with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only packages by this author.
        #[arg(long)]
        author: Option<String>,
        /// Only packages under this license.
        #[arg(long)]
        license: Option<String>,
        /// The order of the results.
        #[arg(long, value_enum, default_value_t = Sort::Relevance)]
        sort: Sort,
        /// Results to show (1 to 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=i64::from(agora_protocol::limits::MAX_SEARCH_LIMIT)))]
        limit: u32,
        /// Results to skip (for the next page).
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Ask the catalog a SPARQL query (docs/RDF.md): solutions as a table, triples as
    /// Turtle; with --json, SPARQL's JSON results or JSON-LD.
    Query {
        /// The query (SELECT, ASK, CONSTRUCT or DESCRIBE); `-` reads it from stdin.
        sparql: String,
    },
    /// Write the whole catalog as RDF (docs/RDF.md).
    Export {
        /// turtle, ntriples, jsonld or rdfxml.
        #[arg(long, default_value = "turtle")]
        format: agora_protocol::sparql::TriplesFormat,
        /// Write to this file (complete or not at all) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Show a package (NAME or NAME@REQ).
    Info {
        /// NAME, or NAME@REQ for the newest version that meets REQ.
        package: String,
    },
    /// List the versions of a package.
    Versions {
        /// The package's name.
        name: String,
    },
    /// Install packages and their dependencies; with no names, exactly what agora.lock says.
    Install {
        /// NAME or NAME@REQ (a bare version is a caret: lib@1.0.0 means ^1.0.0).
        packages: Vec<String>,
        /// The project directory (default: the current directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Re-resolve installed packages (or one) to their newest allowed versions.
    Update {
        /// Update only this package (and what it needs).
        name: Option<String>,
        /// The project directory (default: the current directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Remove an installed package.
    Remove {
        /// The installed package to remove.
        name: String,
        /// Remove the installed packages that need it too.
        #[arg(long)]
        with_dependents: bool,
        /// The project directory (default: the current directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List installed packages.
    List {
        /// The project directory (default: the current directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check installed files against agora.lock.
    Verify {
        /// The project directory (default: the current directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Withdraw a version (NAME@VERSION) from new resolutions, or with --undo bring it back.
    Yank {
        /// NAME@VERSION.
        package: String,
        /// Why, for those who have it installed (shown by info and versions).
        #[arg(long, default_value = "", conflicts_with = "undo")]
        reason: String,
        /// Take the yank back: the version can be chosen again (a signed record, gossiped).
        #[arg(long)]
        undo: bool,
    },
    /// List connected peers.
    Peers,
    /// Connect to a peer (a multiaddr with /p2p/PEERID).
    Connect {
        /// The peer's multiaddr, ending in /p2p/PEERID.
        addr: String,
    },
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
pub enum NodeAction {
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
        /// How many lines.
        #[arg(short = 'n', default_value_t = 50)]
        lines: usize,
        /// Keep printing lines as the daemon writes them (until Ctrl-C).
        #[arg(short, long)]
        follow: bool,
    },
    /// Change the running daemon's log filter (error, warn, info, debug, trace, or
    /// directives such as `agora_daemon=debug,libp2p=warn`).
    LogLevel { filter: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum Sort {
    /// Best match first.
    Relevance,
    /// By name.
    Name,
    /// Newest release first.
    Newest,
}

/// An error for the user: a cause, a hint, and an exit code; and what the command found
/// before it failed, if that helps (printed before the error, on stderr in words).
pub struct Failure {
    pub cause: String,
    pub hint: String,
    pub code: u8,
    pub found: Option<Output>,
}

impl Failure {
    pub fn new(code: u8, cause: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            hint: hint.into(),
            code,
            found: None,
        }
    }

    /// This failure, with what the command found.
    pub fn with_found(self, found: Output) -> Self {
        Self {
            found: Some(found),
            ..self
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
            // The daemon's own hint knows the case; the kind still gives the exit code.
            IpcError::Hinted { error, hint } => Failure {
                hint,
                ..explain(ClientError::Daemon(*error))
            },
            IpcError::NotFound(m) => Failure::new(4, m, "check the name with 'agora search'"),
            IpcError::Refused(m) => Failure::new(
                5,
                m,
                "the catalog's rules refused it; see 'agora info NAME' for what it holds",
            ),
            IpcError::Package(m) => {
                Failure::new(2, m, "fix the package directory and publish again")
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
    let json = cli.json;
    let _ = LOCATION.set((cli.home.clone(), cli.socket.clone()));
    let quiet = cli.quiet;
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
    VERBOSE.store(cli.verbose, std::sync::atomic::Ordering::Relaxed);
    match run(cli) {
        Ok(out) => {
            if !quiet {
                say(out.render(json), false);
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            // With --json the error is one JSON document on stdout, with what the command
            // found before it failed; in words, that goes to stderr before the error.
            if json {
                let mut doc = f
                    .found
                    .as_ref()
                    .and_then(|o| o.value().cloned())
                    .filter(serde_json::Value::is_object)
                    .unwrap_or_else(|| json!({}));
                doc["error"] = json!({ "code": f.code, "message": f.cause, "hint": f.hint });
                say(Output::new(doc, "").render(true), false);
            } else if let Some(found) = &f.found {
                say(found.render(false), true);
            }
            say(format!("error: {}\nhint: {}", f.cause, f.hint), true);
            ExitCode::from(f.code)
        }
    }
}

/// Prints `text` as a line on stdout, or on stderr; nothing if it is empty. A reader that
/// has gone (`agora search | head -1`) ends the output quietly: what it did not read, it did
/// not want.
pub fn say(text: String, stderr: bool) {
    use std::io::Write;
    if text.is_empty() {
        return;
    }
    let written = if stderr {
        writeln!(std::io::stderr().lock(), "{text}")
    } else {
        writeln!(std::io::stdout().lock(), "{text}")
    };
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            // Nowhere left to say it but the exit code.
            std::process::exit(1);
        }
        _ => {}
    }
}

/// Gives an agorad this command starts the home and socket given to it.
pub fn locate(agorad: &mut std::process::Command) {
    if let Some((home, socket)) = LOCATION.get() {
        if let Some(home) = home {
            agorad.env("AGORA_HOME", home).env_remove("AGORA_SOCKET");
        }
        if let Some(socket) = socket {
            agorad.env("AGORA_SOCKET", socket);
        }
    }
}

/// The node's paths: from `--home` and `--socket`, else the environment.
fn paths() -> Result<Paths, Failure> {
    let mut env = PathEnv::from_process();
    if let Some((home, socket)) = LOCATION.get() {
        if let Some(home) = home {
            env.agora_home = Some(home.clone());
            // A home given here names its own socket, whatever AGORA_SOCKET says.
            env.agora_socket = None;
        }
        if let Some(socket) = socket {
            env.agora_socket = Some(socket.clone());
        }
    }
    Paths::resolve(&env).map_err(|e| {
        Failure::new(
            1,
            e.to_string(),
            "pass --home DIR or set AGORA_HOME to a directory",
        )
    })
}

fn client() -> Result<Client, Failure> {
    let paths = paths()?;
    let verbose = VERBOSE.load(std::sync::atomic::Ordering::Relaxed);
    if verbose {
        say(format!("agora: socket {}", paths.socket.display()), true);
    }
    let mut client = Client::connect(&paths.socket).map_err(explain)?;
    if verbose {
        say(
            format!("agora: daemon agorad {}", client.daemon_version),
            true,
        );
        client.set_trace(|kind, ok, took| {
            let outcome = if ok { "answered" } else { "failed" };
            say(
                format!("agora: {kind} {outcome} in {} ms", took.as_millis()),
                true,
            );
        });
    }
    Ok(client)
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

/// A progress line on stderr, cleared when dropped (none with `--json` or off a terminal).
pub struct Bar(indicatif::ProgressBar);

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Whether progress is shown: on a terminal, without `--json` or `--quiet`.
fn shows_progress(json: bool) -> bool {
    !json && !QUIET.load(std::sync::atomic::Ordering::Relaxed) && std::io::stderr().is_terminal()
}

/// A bar of `total` steps, its message set as it goes (none with `--json`, `--quiet` or off a
/// terminal).
pub fn progress_bar(json: bool, total: u64) -> Option<Bar> {
    shows_progress(json).then(|| {
        let bar = indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        Bar(bar)
    })
}

/// A spinner saying `what` until it is dropped.
pub fn spinner(json: bool, what: String) -> Option<Bar> {
    shows_progress(json).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message(what);
        Bar(bar)
    })
}

/// Shows a request's progress under `label` (the package it is for, or empty): a spinner with
/// the step the daemon is at, then a bar of the bytes as they arrive.
pub fn on_progress(json: bool, label: &str) -> impl FnMut(&Progress) + use<> {
    let bar = spinner(json, label.to_string());
    let label = label.to_string();
    let says = move |step: &str| {
        if label.is_empty() {
            step.to_string()
        } else {
            format!("{label}: {step}")
        }
    };
    move |p| {
        let Some(Bar(bar)) = &bar else { return };
        match p {
            Progress::Step(s) => bar.set_message(says(s)),
            Progress::Data(_) => {}
            Progress::Download { done, total, .. } => {
                if bar.length() != Some(*total) {
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .expect("a valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_message(says("fetching"));
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

fn run(cli: Cli) -> Result<Output, Failure> {
    let json = cli.json;
    match cli.command {
        Command::Node { action } => node::run(action, json),
        Command::Status => Ok(show::status(&client()?.status().map_err(explain)?)),
        Command::Keygen { network: true, out } => {
            let file = match out {
                Some(f) => f,
                None => paths()?.keys_dir.join("network.key"),
            };
            node::network_key(&file)
        }
        Command::Keygen { .. } => {
            let key = client()?.keygen().map_err(explain)?;
            let text = format!("created publisher key {key}");
            Ok(Output::new(json!({ "publisher": key }), text))
        }
        Command::Publish {
            dir,
            dry_run,
            allow_missing_dependencies,
        } => {
            let dir = project_dir(dir)?;
            let p = client()?.publish(
                &dir,
                dry_run,
                allow_missing_dependencies,
                on_progress(json, ""),
            );
            Ok(show::publish(&p.map_err(explain)?))
        }
        Command::Import { dir, dry_run } => {
            let dir = project_dir(Some(dir))?;
            import::import(&mut client()?, &dir, dry_run, json)
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
            Ok(show::search(&client()?.search(q).map_err(explain)?))
        }
        Command::Query { sparql } => graph::query(&mut client()?, &sparql, json),
        Command::Export { format, output } => {
            graph::export(&mut client()?, format, output.as_deref())
        }
        Command::Info { package } => {
            let (name, req) = match package.split_once('@') {
                Some((n, r)) => (n, Some(r)),
                None => (package.as_str(), None),
            };
            Ok(show::info(&client()?.info(name, req).map_err(explain)?))
        }
        Command::Versions { name } => {
            Ok(show::versions(&client()?.versions(&name).map_err(explain)?))
        }
        Command::Install { packages, dir } => {
            install::install(&mut client()?, &project_dir(dir)?, &packages, json)
        }
        Command::Update { name, dir } => {
            install::update(&mut client()?, &project_dir(dir)?, name.as_deref(), json)
        }
        Command::Remove {
            name,
            with_dependents,
            dir,
        } => manage::remove(&project_dir(dir)?, &name, with_dependents),
        Command::List { dir } => manage::list(&project_dir(dir)?),
        Command::Verify { dir } => manage::verify(&project_dir(dir)?),
        Command::Yank {
            package,
            reason,
            undo,
        } => {
            let Some((name, version)) = package.split_once('@') else {
                return Err(Failure::new(
                    2,
                    format!("'{package}' names no version"),
                    "yank one version: agora yank NAME@VERSION",
                ));
            };
            if undo {
                client()?.unyank(name, version).map_err(explain)?;
                return Ok(Output::new(
                    json!({ "unyanked": { "name": name, "version": version } }),
                    format!("{name}@{version} is no longer yanked"),
                ));
            }
            client()?.yank(name, version, &reason).map_err(explain)?;
            Ok(Output::new(
                json!({ "yanked": { "name": name, "version": version } }),
                format!("yanked {name}@{version}"),
            ))
        }
        Command::Peers => Ok(show::peers(&client()?.peers().map_err(explain)?)),
        Command::Connect { addr } => {
            let peer = client()?.connect_peer(&addr).map_err(explain)?;
            let text = format!("connected to {peer}");
            Ok(Output::new(json!({ "connected": peer }), text))
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "agora", &mut script);
            Ok(Output::raw(String::from_utf8_lossy(&script)))
        }
    }
}
