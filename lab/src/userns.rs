//! The lab without root: a user namespace where this process is root (`unshare -rnm`), with a
//! network namespace and a mount namespace of its own. Its network namespaces, veth links,
//! nftables rules and token buckets then belong to that user namespace, and a tmpfs over /run
//! (in its own mount namespace only) gives `ip netns` a place for their names. Nothing outside
//! sees any of it, and it all goes when the last process in it ends. Unix sockets are files,
//! so the `agora` CLI still reaches every node from outside.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

/// Set in a process this module started inside a user namespace.
const INSIDE: &str = "AGORA_LAB_USERNS";

/// Whether this process runs in a user namespace the lab made for it.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Whether this kernel lets this user make a user namespace with a network and a mount
/// namespace (some distributions switch it off); the reason if not.
pub fn available() -> Result<(), String> {
    let out = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--net",
            "--mount",
            "unshare",
            "--version",
        ])
        .output()
        .map_err(|e| format!("unshare (util-linux): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "unshare -rnm: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Inside the lab's user namespace, mounts the tmpfs over /run once per process tree.
pub(crate) fn prepare() {
    static DONE: OnceLock<()> = OnceLock::new();
    if !inside() {
        return;
    }
    DONE.get_or_init(|| {
        // A process started by one already prepared (a bench's child) shares its mounts.
        let mounted = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
            m.lines()
                .any(|l| l.contains(" /run ") && l.contains(" agoralab"))
        });
        if !mounted {
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "agoralab", "/run"])
                .output()
                .expect("mount");
            assert!(
                out.status.success(),
                "mounting a tmpfs over /run in the lab's mount namespace: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    });
}

/// For a program (the lab command, a bench): returns where this process can build a lab (as
/// root, or already in its user namespace); otherwise replaces this process with itself run in
/// a user namespace of its own, with the same arguments. Exits saying why if neither can be.
pub fn enter() {
    if rustix::process::geteuid().is_root() {
        prepare();
        return;
    }
    if let Err(why) = available() {
        eprintln!(
            "error: the network lab needs root, or a user namespace of its own ({why})\n\
             hint: run it as root"
        );
        std::process::exit(1);
    }
    let exe = std::env::current_exe().expect("the running program's path");
    let err = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--mount", "--"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(INSIDE, "1")
        .exec();
    eprintln!("error: unshare: {err}");
    std::process::exit(1);
}

/// Runs the test `name` of this test binary again, alone, in a user namespace of its own, and
/// panics with its output unless it ran and passed.
pub(crate) fn rerun_test(name: &str) {
    if let Err(why) = available() {
        panic!(
            "the network lab needs root, or a user namespace of its own, and none can be made \
             here ({why}): run the tests as root, as CI does"
        );
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--mount", "--"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A name that matched nothing also exits 0: the test must have run.
    let passed = out.status.success() && stdout.contains("test result: ok. 1 passed");
    assert!(
        passed,
        "{name}, run in a user namespace, did not pass ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The path of the function it is used in, without the crate's name: the name libtest gives a
/// test written in it.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn f() {}
        let path = ::std::any::type_name_of_val(&f);
        let path = path.strip_suffix("::f").unwrap_or(path);
        path.split_once("::").map_or(path, |(_, rest)| rest)
    }};
}
