//! Publishing safely, through the `agora` binary against a real `agorad` (a publish cannot be
//! taken back): dotfiles stay out unless listed, `.agoraignore` and `exclude` leave files out,
//! a dry run needs no key and lists what it would pack, a misspelt key is pointed out, and a
//! dependency no catalog has is refused. A yank's reason reaches other nodes and a yank can be
//! taken back.

mod common;
mod process;

use std::path::Path;

use process::{Daemon, package, wait_until};
use serde_json::Value;

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `agora ARGS` with its stdout, stderr and exit code.
fn run(node: &Daemon, args: &[&str]) -> (String, String, Option<i32>) {
    let out = node.agora(args);
    (
        String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
        String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        out.status.code(),
    )
}

fn paths(published: &Value) -> Vec<&str> {
    published["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect()
}

#[test]
fn what_is_packed_is_what_the_author_meant_and_a_dry_run_shows_it() {
    let node = Daemon::start(None);
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("site");
    let manifest = "[package]\nname = \"site\"\nversion = \"1.0.0\"\ndescription = \"A site\"\n\
                    licence = \"MIT\"\nexclude = [\"drafts/\"]\n";
    write(&dir, "package.toml", manifest);
    write(&dir, "templates/page.tmpl", "<html>{{title}}</html>");
    write(&dir, ".env", "API_TOKEN=secret");
    write(&dir, ".github/workflows/ci.yml", "on: push");
    write(&dir, "templates/page.tmpl.bak", "old");
    write(&dir, "drafts/next.tmpl", "soon");
    write(&dir, ".agoraignore", "*.bak\n");
    let site = dir.to_str().unwrap();

    // No key yet: a dry run still packs, lists and checks.
    let dry = node.json(&["publish", "--dry-run", site]);
    assert_eq!(dry["published"], false);
    assert_eq!(paths(&dry), ["package.toml", "templates/page.tmpl"]);
    assert_eq!(dry["files"][1]["size"], 22);
    assert_eq!(dry["release"]["publisher"], "");
    assert_eq!(
        dry["warnings"],
        serde_json::json!([
            "[package] key `licence` is not one Agora reads (it is kept as written); did you mean `license`?",
            "this node has no publisher key yet: 'agora keygen' makes the one that would sign it"
        ])
    );
    let (text, err, code) = run(&node, &["publish", "--dry-run", site]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("checked (dry run) site@1.0.0 (2 files, "),
        "{text}"
    );
    let manifest_size = manifest.len().to_string();
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["package.toml", manifest_size.as_str(), "B"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["templates/page.tmpl", "22", "B"]
    );
    assert!(text.contains("warning: [package] key `licence`"), "{text}");

    // The publish packs exactly that; a second one names the release it would repeat.
    let key = node.json(&["keygen"]);
    let published = node.json(&["publish", site]);
    assert_eq!(paths(&published), ["package.toml", "templates/page.tmpl"]);
    assert_eq!(published["release"]["publisher"], key["publisher"]);
    let (_, err, code) = run(&node, &["publish", site]);
    assert_eq!(code, Some(5));
    assert_eq!(
        err.lines().next().unwrap(),
        format!(
            "error: site@1.0.0 is already published (release record {})",
            published["release"]["record_id"].as_str().unwrap()
        )
    );

    // Listed, a dotfile goes in.
    write(
        &dir,
        "package.toml",
        &manifest.replace("1.0.0", "1.1.0").replace(
            "exclude",
            "include = [\"templates/\", \".github/\"]\nexclude",
        ),
    );
    let listed = node.json(&["publish", "--dry-run", site]);
    assert_eq!(
        paths(&listed),
        [
            ".github/workflows/ci.yml",
            "package.toml",
            "templates/page.tmpl"
        ]
    );
}

#[test]
fn a_dependency_no_catalog_has_is_refused_unless_allowed() {
    let node = Daemon::start(None);
    node.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("app");
    write(
        &dir,
        "package.toml",
        "[package]\nname = \"app\"\nversion = \"1.0.0\"\ndescription = \"An app\"\n\
         dependencies = [\"ghost@^1\"]\n",
    );
    write(&dir, "templates/app.tmpl", "app");
    let app = dir.to_str().unwrap();
    for args in [&["publish", "--dry-run", app][..], &["publish", app]] {
        let (_, err, code) = run(&node, args);
        assert_eq!(code, Some(4), "{err}");
        assert_eq!(
            err.lines().next().unwrap(),
            "error: dependency ghost@^1: 'ghost' is in no catalog this node reaches, so this \
             release could not be installed"
        );
    }
    let published = node.json(&["publish", "--allow-missing-dependencies", app]);
    assert_eq!(published["published"], true);
}

/// `yank --reason` is shown by `info` and `versions` on another node, and `yank --undo` (a
/// signed record, gossiped) makes the version installable there again; undoing a version that
/// is not yanked is refused and names it.
#[test]
fn a_yank_shows_its_reason_everywhere_and_can_be_taken_back() {
    let author = Daemon::start(None);
    let other = Daemon::start(Some(&author.address()));
    author.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    for v in ["1.0.0", "1.1.0"] {
        let dir = src.path().join(v);
        package(&dir, "base", v, "", v);
        author.json(&["publish", dir.to_str().unwrap()]);
    }
    let (_, err, code) = run(&author, &["yank", "base@1.1.0", "--reason", "two\nlines"]);
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("error: a yank's reason is one line of text, without control characters"),
        "{err}"
    );
    let yanked = author.json(&["yank", "base@1.1.0", "--reason", "corrupts the cache"]);
    assert_eq!(yanked["yanked"]["version"], "1.1.0");
    wait_until("the yank reaches the other node", || {
        match other
            .json(&["versions", "base"])
            .as_array()
            .map(|v| v.len())
        {
            Some(2) if other.json(&["info", "base"])["version"] == "1.0.0" => Ok(()),
            n => Err(format!("{n:?} versions, or 1.1.0 still chosen")),
        }
    });
    let (text, _, code) = run(&other, &["versions", "base"]);
    assert_eq!(code, Some(0));
    assert_eq!(text, "1.0.0\n1.1.0  (yanked: corrupts the cache)");
    let info = other.json(&["info", "base@=1.1.0"]);
    assert_eq!(info["yanked"], true);
    assert_eq!(info["yank_reason"], "corrupts the cache");
    let (text, _, _) = run(&other, &["info", "base@=1.1.0"]);
    assert_eq!(
        text.lines().next(),
        Some("base@1.1.0 (yanked: corrupts the cache)")
    );

    let (text, _, code) = run(&author, &["yank", "--undo", "base@1.1.0"]);
    assert_eq!(
        (text.as_str(), code),
        ("base@1.1.0 is no longer yanked", Some(0))
    );
    wait_until("the unyank reaches the other node", || {
        match other.json(&["info", "base"])["version"].as_str() {
            Some("1.1.0") => Ok(()),
            v => Err(format!("{v:?} chosen")),
        }
    });
    let info = other.json(&["info", "base@=1.1.0"]);
    assert_eq!(
        (&info["yanked"], &info["yank_reason"]),
        (&Value::Bool(false), &Value::Null)
    );
    assert_eq!(run(&other, &["versions", "base"]).0, "1.0.0\n1.1.0");

    let (_, err, code) = run(&author, &["yank", "--undo", "base@1.1.0"]);
    assert_eq!(code, Some(5));
    assert_eq!(
        err,
        "error: base@1.1.0 is not yanked\nhint: 'agora versions base' marks the versions that are yanked"
    );
    // A yank again is a new record, and stands.
    author.json(&["yank", "base@1.1.0"]);
    assert_eq!(
        run(&author, &["versions", "base"]).0,
        "1.0.0\n1.1.0  (yanked)"
    );
}
