//! Real `agorad` processes on emulated networks: each node in a network namespace of its own
//! (its own address and stack), on LANs, behind NAT routers, on shaped links (the agora-lab crate, `lab/`).
//! The `agora` CLI drives every node from outside, through its socket. These tests need root,
//! or a kernel that lets a user make a user namespace (each test then runs again inside one,
//! `agora_lab::userns`); they fail, saying so, where the lab cannot be built.

#[path = "../common/noise.rs"]
mod noise;
#[path = "../process/mod.rs"]
mod process;

mod crowd;
mod lan;
mod nat;
mod private;
mod shaped;
mod traversal;
mod userns;

use agora_lab::Host;
use process::Daemon;

/// Starts agorad inside `host`'s namespace with its default configuration and `args`.
fn node_on(host: &Host, args: &[&str]) -> Daemon {
    node_with_env_on(host, &[], args)
}

/// [`node_on`] with extra environment for agorad.
fn node_with_env_on(host: &Host, env: &[(&str, &str)], args: &[&str]) -> Daemon {
    let mut node = Daemon::prepare(env, args);
    node.netns = Some(host.ns.clone());
    node.launch();
    node
}

/// Prints the last lines of each node's log if the test panics while it is alive: what
/// happened on hosts of their own is otherwise lost with their homes.
struct LogsOnPanic<'a>(Vec<(&'static str, &'a Daemon)>);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (name, node) in &self.0 {
            let out = node.agora(&["node", "logs", "-n", "150"]);
            eprintln!(
                "---- log of {name}\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}
