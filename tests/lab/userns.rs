//! The lab without root: a test run by an unprivileged user runs again in a user namespace of
//! its own, and passes there.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// `nobody` and `nogroup` on Debian.
const NOBODY: u32 = 65534;

#[test]
fn an_unprivileged_user_runs_the_lab_in_a_user_namespace() {
    let test = "nat::nat_routers_map_what_goes_out_and_drop_what_comes_unasked";
    let mut run = Command::new(std::env::current_exe().unwrap());
    run.args([test, "--exact"]).current_dir("/");
    // Run as root (CI), the test drops to `nobody`; run as a user, it is that user already.
    if rustix::process::geteuid().is_root() {
        run.uid(NOBODY).gid(NOBODY).env_remove("HOME");
    }
    let out = run.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} as an unprivileged user: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
