//! The `agorad` binary as a process: configuration errors and the socket it guards.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

fn agorad(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agorad"));
    c.env("AGORA_HOME", home)
        .env_remove("AGORA_SOCKET")
        .env("AGORA_LOG", "info")
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]);
    c
}

/// Waits until something answers on the socket.
fn wait_for_socket(socket: &Path, child: &mut Child) {
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("agorad exited early: {status}");
        }
        assert!(started.elapsed() < DEADLINE, "no socket after {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "agorad did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_malformed_config_file_stops_start_up_with_file_line_and_column() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");
    std::fs::write(&config, "mdns = true\ncache_quota = \"lots\"\n").unwrap();
    let out = agorad(home.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("error: {}:2:15: invalid type", config.display())),
        "{stderr}"
    );
    assert!(!home.path().join("agorad.sock").exists());
}

#[test]
fn the_socket_is_private_a_second_daemon_is_refused_and_sigterm_removes_the_socket() {
    let home = tempfile::tempdir().unwrap();
    let socket = home.path().join("agorad.sock");
    let mut first = agorad(home.path()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_socket(&socket, &mut first);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(home.path()), 0o700);
    assert_eq!(mode(&home.path().join("keys/node.key")), 0o600);

    let second = agorad(home.path()).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8(second.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "another agorad is running on {}",
            socket.display()
        )),
        "{stderr}"
    );
    // The refused start did not take the socket away from the running daemon.
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_ok());

    let status = stop(first);
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "the socket outlived the daemon");
}

#[test]
fn a_symlink_at_the_socket_path_stops_start_up_and_a_stale_socket_is_replaced() {
    let home = tempfile::tempdir().unwrap();
    let socket = home.path().join("agorad.sock");
    std::os::unix::fs::symlink("/etc/passwd", &socket).unwrap();
    let out = agorad(home.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "{} is a symlink; refusing to use it as the socket",
            socket.display()
        )),
        "{stderr}"
    );
    std::fs::remove_file(&socket).unwrap();

    // A socket nobody listens on (a crashed daemon's) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let mut child = agorad(home.path()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_socket(&socket, &mut child);
    assert!(stop(child).success());
}

#[test]
fn sigterm_the_moment_the_socket_answers_is_a_clean_shutdown() {
    // The socket is bound before the node starts: a stop sent the instant it accepts (as a
    // service manager may) must be caught, not left to the signal's default action.
    let home = tempfile::tempdir().unwrap();
    let socket = home.path().join("agorad.sock");
    for round in 0..5 {
        let mut child = agorad(home.path()).stderr(Stdio::null()).spawn().unwrap();
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("round {round}: agorad exited early: {status}");
            }
            assert!(started.elapsed() < DEADLINE, "no socket after {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
        let status = stop(child);
        assert!(status.success(), "round {round}: {status}");
        assert!(
            !socket.exists(),
            "round {round}: the socket outlived the daemon"
        );
    }
}
