//! The `agora` binary without a daemon: the error a user sees first.

use std::process::Command;

#[test]
fn with_no_daemon_every_command_exits_3_with_the_socket_it_tried_and_a_hint() {
    let home = tempfile::tempdir().unwrap();
    let socket = home.path().join("agorad.sock");
    for args in [
        &["status"][..],
        &["search", "x"],
        &["peers"],
        &["node", "stop"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_agora"))
            .env("AGORA_HOME", home.path())
            .env_remove("AGORA_SOCKET")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert_eq!(
            String::from_utf8(out.stderr).unwrap(),
            format!(
                "error: no agorad is running (tried the socket {})\nhint: start one with 'agora node start'\n",
                socket.display()
            ),
            "{args:?}"
        );
        assert!(out.stdout.is_empty());
    }
}
