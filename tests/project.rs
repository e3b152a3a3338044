//! A project's integrity, driven through the `agora` binary against a real `agorad`: an
//! install or update is resolved against everything the project already has, a remove that
//! would break a package is refused, `verify` checks the dependency graph as well as the
//! files, and resolution goes back on a newer version when only an older one fits.

mod common;
mod process;

use std::path::Path;

use process::{Daemon, package};
use serde_json::Value;

/// Publishes `name@version` (its dependencies written as a TOML array's items).
fn publish(node: &Daemon, src: &Path, name: &str, version: &str, deps: &str) {
    let dir = src.join(format!("{name}-{version}"));
    package(&dir, name, version, deps, &format!("{name} {version}"));
    let out = node.json(&["publish", dir.to_str().unwrap()]);
    assert_eq!(out["published"], true, "{name}@{version}: {out}");
}

/// `agora ARGS --dir DIR` with its stdout, stderr and exit code.
fn run(node: &Daemon, dir: &Path, args: &[&str]) -> (String, String, Option<i32>) {
    let mut all = args.to_vec();
    all.extend(["--dir", dir.to_str().unwrap()]);
    let out = node.agora(&all);
    (
        String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
        String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        out.status.code(),
    )
}

/// `agora --json ARGS --dir DIR`, which must succeed.
fn json(node: &Daemon, dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (out, err, code) = run(node, dir, &all);
    assert_eq!(code, Some(0), "agora {args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

/// The installed `name@version`s, as `list` says them.
fn installed(node: &Daemon, dir: &Path) -> Vec<String> {
    json(node, dir, &["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}@{}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_project_is_resolved_as_a_whole_and_never_left_broken() {
    let node = Daemon::start(None);
    node.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    // Versions of a name only increase: 2.0.0 comes once the 1.x ones are all out.
    for v in ["1.0.0", "1.1.0"] {
        publish(&node, src.path(), "base-lib", v, "");
    }
    publish(&node, src.path(), "app", "1.0.0", "\"base-lib@^1\"");
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();

    // The install takes the newest base-lib app allows; list says who asked for what.
    let done = json(&node, dir, &["install", "app"]);
    assert_eq!(done["installed"].as_array().unwrap().len(), 2);
    assert_eq!(installed(&node, dir), ["app@1.0.0", "base-lib@1.1.0"]);
    let list = json(&node, dir, &["list"]);
    assert_eq!(list[0]["requested"], "app");
    assert_eq!(list[1]["requested"], Value::Null);
    assert_eq!(list[1]["needed_by"], serde_json::json!(["app"]));

    // update says what changed, or that nothing did.
    let (out, err, code) = run(&node, dir, &["update", "base-lib"]);
    assert_eq!((out.as_str(), code), ("up to date", Some(0)), "{err}");
    publish(&node, src.path(), "base-lib", "1.2.0", "");
    let (out, err, code) = run(&node, dir, &["update", "base-lib"]);
    assert_eq!(
        (out.as_str(), code),
        ("updated base-lib 1.1.0 → 1.2.0", Some(0)),
        "{err}"
    );
    publish(&node, src.path(), "base-lib", "2.0.0", "");

    // A requirement that would break app is refused, naming app and what it needs, and the
    // project is left as it was.
    let lock_before = std::fs::read(dir.join("agora.lock")).unwrap();
    let (_, err, code) = run(&node, dir, &["install", "base-lib@^2"]);
    assert_eq!(code, Some(5), "{err}");
    assert!(
        err.contains("app depends on base-lib >=1.0.0, <2.0.0"),
        "{err}"
    );
    assert!(err.contains("base-lib >=2.0.0, <3.0.0"), "{err}");
    assert_eq!(std::fs::read(dir.join("agora.lock")).unwrap(), lock_before);
    assert_eq!(installed(&node, dir), ["app@1.0.0", "base-lib@1.2.0"]);

    // A remove that would break app is refused; removing app takes what only it needed.
    let (_, err, code) = run(&node, dir, &["remove", "base-lib"]);
    assert_eq!(code, Some(5), "{err}");
    assert_eq!(
        err.lines().next().unwrap(),
        "error: app@1.0.0 needs base-lib (base-lib@^1); removing base-lib would break it"
    );
    assert!(dir.join(".agora/packages/base-lib").is_dir());
    let (out, err, code) = run(&node, dir, &["remove", "app"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "removed app@1.0.0\nremoved base-lib@1.2.0 (no longer needed)"
    );
    assert_eq!(installed(&node, dir), Vec::<String>::new());
    assert!(!dir.join(".agora/packages/base-lib").exists());

    // A bare version is a caret: said when it picked a newer one.
    let (out, err, code) = run(&node, dir, &["install", "base-lib@1.0.0"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "installed base-lib@1.2.0\nnote: base-lib@1.0.0 means ^1.0.0, and base-lib 1.2.0 is the \
         newest that fits; ask for base-lib@=1.0.0 for exactly 1.0.0"
    );

    // verify checks the graph: a lockfile that lost a dependency is a problem it names.
    json(&node, dir, &["install", "app"]);
    let lock_path = dir.join("agora.lock");
    let mut lock: toml::Table = std::fs::read_to_string(&lock_path)
        .unwrap()
        .parse()
        .unwrap();
    lock.insert("requested".into(), toml::Value::Array(vec!["app".into()]));
    let packages = lock["package"].as_array_mut().unwrap();
    packages.retain(|p| p["name"].as_str() != Some("base-lib"));
    std::fs::write(&lock_path, toml::to_string(&lock).unwrap()).unwrap();
    let (out, _, code) = run(&node, dir, &["--json", "verify"]);
    assert_eq!(code, Some(6));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["problems"],
        serde_json::json!(["app@1.0.0 needs base-lib@^1, which is not installed"])
    );
}

/// The resolution the hand-written resolver refused: mid 1.1.0 is the newest mid but needs
/// base 2, while top needs base 1; mid 1.0.0 with base 1.0.0 fits everything.
#[test]
fn an_install_goes_back_to_an_older_version_when_only_it_fits() {
    let node = Daemon::start(None);
    node.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    publish(&node, src.path(), "base", "1.0.0", "");
    publish(&node, src.path(), "base", "2.0.0", "");
    publish(&node, src.path(), "mid", "1.0.0", "\"base@^1\"");
    publish(&node, src.path(), "mid", "1.1.0", "\"base@^2\"");
    publish(&node, src.path(), "top", "1.0.0", "\"mid@^1\", \"base@^1\"");
    let project = tempfile::tempdir().unwrap();
    json(&node, project.path(), &["install", "top"]);
    assert_eq!(
        installed(&node, project.path()),
        ["base@1.0.0", "mid@1.0.0", "top@1.0.0"]
    );
    let (out, err, code) = run(&node, project.path(), &["verify"]);
    assert_eq!(
        (out.as_str(), code),
        ("3 packages verified", Some(0)),
        "{err}"
    );
}
