//! Errors that help, through the `agora` binary against a real `agorad`: each cause has its own
//! hint, the same cause has the same exit code in every command, and what a user sees is in
//! the user's words.

mod common;
mod process;

use process::{Daemon, package};

/// `agora ARGS`: the error line, the hint line and the exit code.
fn fails(node: &Daemon, args: &[&str]) -> (String, String, Option<i32>) {
    let out = node.agora(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let line = |prefix: &str| {
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {stderr:?}"))
            .to_string()
    };
    (line("error: "), line("hint: "), out.status.code())
}

#[test]
fn each_cause_has_its_own_hint_and_one_exit_code() {
    let node = Daemon::start(None);
    node.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    package(&src.path().join("base"), "base", "1.0.0", "", "base");
    node.json(&["publish", src.path().join("base").to_str().unwrap()]);
    let project = tempfile::tempdir().unwrap();
    let dir = project.path().to_str().unwrap();

    let (_, hint, code) = fails(&node, &["keygen"]);
    assert_eq!(code, Some(5));
    assert!(
        hint.starts_with("this node has its publisher key already"),
        "{hint}"
    );

    // A version nothing meets: 4 in info and in install, pointing at the versions.
    let (error, hint, code) = fails(&node, &["info", "base@^9"]);
    assert_eq!(
        (error.as_str(), code),
        (
            "no installable version of 'base' matches ^9; available: 1.0.0",
            Some(4)
        )
    );
    assert_eq!(
        hint,
        "the name is right; see 'agora versions base' for the versions there are"
    );
    let (_, hint, code) = fails(&node, &["install", "base@^9", "--dir", dir]);
    assert_eq!(code, Some(4));
    assert_eq!(hint, "see 'agora versions base' for the versions there are");

    // A name nothing has, and one a letter off a name there is.
    let (_, hint, code) = fails(&node, &["info", "nothing-here"]);
    assert_eq!(code, Some(4));
    assert_eq!(hint, "look for the name with 'agora search nothing-here'");
    for args in [&["info", "bsae"][..], &["install", "bsae", "--dir", dir]] {
        let (_, hint, code) = fails(&node, args);
        assert_eq!(
            (hint.as_str(), code),
            ("did you mean 'base'? ('agora info base')", Some(4)),
            "{args:?}"
        );
    }

    // Publishing the same version again, and an older one.
    let (_, hint, code) = fails(
        &node,
        &["publish", src.path().join("base").to_str().unwrap()],
    );
    assert_eq!(code, Some(5));
    assert!(
        hint.starts_with("a published version never changes"),
        "{hint}"
    );

    // A bad manifest is a usage error (2), pointing at the line.
    std::fs::write(
        src.path().join("base/package.toml"),
        "[package]\nname = 3\n",
    )
    .unwrap();
    let (error, _, code) = fails(
        &node,
        &["publish", src.path().join("base").to_str().unwrap()],
    );
    assert_eq!(code, Some(2));
    assert!(error.contains("package.toml:2:8"), "{error}");

    // A limit out of range is refused by the command line, in its words.
    let out = node.agora(&["search", "base", "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 is not in 1..=1000"), "{stderr}");
}

/// `--json` errors are JSON on stdout; `--home` and `--socket` come before the environment.
#[test]
fn json_errors_and_the_home_and_socket_flags() {
    let node = Daemon::start(None);
    let out = node.agora(&["--json", "info", "nothing-here"]);
    assert_eq!(out.status.code(), Some(4));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({ "error": {
            "code": 4,
            "message": "package 'nothing-here' not found in the catalog (0 packages)",
            "hint": "look for the name with 'agora search nothing-here'",
        }})
    );

    let elsewhere = tempfile::tempdir().unwrap();
    let status = |args: &[&str]| {
        std::process::Command::new(process::bin("agora"))
            .env("AGORA_HOME", elsewhere.path())
            .env_remove("AGORA_SOCKET")
            .args(args)
            .output()
            .unwrap()
    };
    let home = node.home.path().to_str().unwrap();
    let socket = node.home.path().join("agorad.sock");
    let lost = status(&["--json", "status"]);
    assert_eq!(lost.status.code(), Some(3), "no daemon in AGORA_HOME");
    for args in [
        vec!["--json", "--home", home, "status"],
        vec!["--json", "--socket", socket.to_str().unwrap(), "status"],
    ] {
        let found = status(&args);
        assert_eq!(found.status.code(), Some(0), "{args:?}");
        let s: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
        assert_eq!(s["data_dir"], node.data_dir().to_str().unwrap());
    }
}

/// A second agorad on a port the first holds is refused at start, naming the address; the
/// first keeps its port to itself.
#[test]
fn a_listen_port_in_use_is_refused_at_start() {
    let first = Daemon::start(None);
    let address = first.address();
    let listen = address.split("/p2p/").next().unwrap();
    let mut second = Daemon::prepare(&[], &["--listen", listen, "--no-mdns"]);
    let out = second.try_launch();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut lines = stderr.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "error: agorad could not start: cannot listen on {listen}: the address is in use \
             (by another agorad, or another program)"
        )
    );
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("hint: stop what listens there, or choose another port"),
        "{stderr}"
    );
    assert_eq!(
        first.address(),
        address,
        "the first still answers, on its port"
    );
}

/// `agora node start` says agorad's own reason when it cannot start: here, the line and column
/// of a bad value in config.toml.
#[test]
fn node_start_says_why_agorad_could_not_start() {
    let mut node = Daemon::prepare(&[], &["--no-mdns"]);
    std::fs::write(
        node.home.path().join("config.toml"),
        "listen = []\nmdns = maybe\n",
    )
    .unwrap();
    let out = node.try_launch();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap();
    assert!(
        first.starts_with("error: agorad could not start: ") && first.contains("config.toml:2:8:"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("hint: fix the configuration"),
        "{stderr}"
    );
}

/// `agora connect` to a peer already connected succeeds; a dial that fails is one readable
/// line, with a hint about dialing.
#[test]
fn connect_is_kind_to_a_known_peer_and_clear_about_a_failed_dial() {
    let a = Daemon::start(None);
    let b = Daemon::start(Some(&a.address()));
    let again = b.json(&["connect", &a.address()]);
    let a_id = a.json(&["status"])["peer_id"].clone();
    assert_eq!(again["connected"], a_id);

    let nobody = "/ip4/127.0.0.1/tcp/1";
    let (error, hint, code) = fails(&b, &["connect", nobody]);
    assert_eq!(code, Some(7));
    assert_eq!(
        error,
        format!("cannot dial {nobody}: Connection refused (os error 111)")
    );
    assert!(hint.starts_with("check the address"), "{hint}");
}

/// When nothing meets a requirement because what would is yanked or a pre-release, the error
/// says so.
#[test]
fn yanked_and_pre_release_versions_are_named_when_they_are_why_nothing_matches() {
    let node = Daemon::start(None);
    node.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    for v in ["1.0.0", "1.1.0", "2.0.0-rc.1"] {
        let dir = src.path().join(v);
        package(&dir, "base", v, "", v);
        node.json(&["publish", dir.to_str().unwrap()]);
    }
    node.json(&["yank", "base@1.1.0", "--reason", "broken"]);
    let (error, _, code) = fails(&node, &["info", "base@>=1.1, <2"]);
    assert_eq!(code, Some(4));
    assert_eq!(
        error,
        "no installable version of 'base' matches >=1.1, <2; available: 1.0.0, 2.0.0-rc.1; \
         1.1.0 was yanked"
    );
    let (error, _, _) = fails(&node, &["info", "base@^2"]);
    assert_eq!(
        error,
        "no installable version of 'base' matches ^2; available: 1.0.0, 2.0.0-rc.1; 2.0.0-rc.1 \
         would match but a pre-release is taken only when asked for by its version (@=2.0.0-rc.1)"
    );
    assert_eq!(
        node.json(&["info", "base@=2.0.0-rc.1"])["version"],
        "2.0.0-rc.1"
    );
}

/// `node logs --follow` prints the daemon's lines as it writes them; `-q` prints nothing but
/// errors.
#[test]
fn logs_can_be_followed_and_quiet_is_quiet() {
    use std::io::{BufRead, BufReader};
    let node = Daemon::start(None);
    let mut follower = node
        .command(&["node", "logs", "-n", "1", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Lines come through a thread, so that a line that never comes fails the test in time
    // instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The tail first, then what the daemon writes next: a change of its log filter says so.
    rx.recv_timeout(process::DEADLINE).expect("the tail");
    node.json(&["node", "log-level", "info,agora_daemon=debug"]);
    let started = std::time::Instant::now();
    let mut seen = false;
    while !seen && started.elapsed() < process::DEADLINE {
        match rx.recv_timeout(process::DEADLINE - started.elapsed()) {
            Ok(line) => seen = line.contains("log filter changed"),
            Err(_) => break,
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(seen, "the new line came through");

    let quiet = node.agora(&["-q", "status"]);
    assert_eq!((quiet.status.code(), quiet.stdout.len()), (Some(0), 0));
    let quiet = node.agora(&["-q", "info", "nothing-here"]);
    assert_eq!((quiet.status.code(), quiet.stdout.len()), (Some(4), 0));
    assert!(String::from_utf8_lossy(&quiet.stderr).starts_with("error: "));
}

/// `-v` says on stderr which socket and daemon the CLI talks to and each request with its time,
/// and leaves the answer on stdout as it is; it cannot be asked for with `-q`.
#[test]
fn verbose_says_where_it_connects_and_what_it_asks() {
    let node = Daemon::start(None);
    let socket = node.data_dir().parent().unwrap().join("agorad.sock");
    let plain = node.agora(&["--json", "versions", "nothing-here"]);
    let out = node.agora(&["-v", "--json", "versions", "nothing-here"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(out.stdout, plain.stdout, "stdout is the same as without -v");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines[0], format!("agora: socket {}", socket.display()));
    assert_eq!(
        lines[1],
        format!("agora: daemon agorad {}", env!("CARGO_PKG_VERSION"))
    );
    let took = lines[2]
        .strip_prefix("agora: versions failed in ")
        .and_then(|rest| rest.strip_suffix(" ms"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(took.parse::<u64>().is_ok(), "{took}");
    assert!(lines[3].starts_with("error: "), "{stderr}");

    let out = node.agora(&["-v", "status"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .nth(2)
            .is_some_and(|l| l.starts_with("agora: status answered in ")),
        "{stderr}"
    );
    assert_eq!(node.agora(&["-v", "-q", "status"]).status.code(), Some(2));
}
