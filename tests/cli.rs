//! Real processes: three `agorad` daemons on loopback, each with its own `AGORA_HOME`, joined
//! by `--bootstrap`, started and driven only through the `agora` binary.
//!
//! The binaries are the workspace's own (`target/<profile>/agora` and `agorad`), built by
//! `cargo test --workspace` because their packages have process tests of their own.

mod common;
mod process;

use agora_client::ipc::Progress;
use process::{Daemon, package, wait_until};

#[test]
fn three_daemons_publish_search_install_verify_survive_a_lost_node_and_a_restart() {
    let mut n1 = Daemon::start(None);
    let seed = n1.address();
    let n2 = Daemon::start(Some(&seed));
    let mut n3 = Daemon::start(Some(&seed));

    let key = n1.json(&["keygen"]);
    assert_eq!(key["publisher"].as_str().unwrap().len(), 64);
    let src = tempfile::tempdir().unwrap();
    package(
        &src.path().join("lib"),
        "greet-lib",
        "1.0.0",
        "",
        "hello {{name}}",
    );
    package(
        &src.path().join("app"),
        "greet-app",
        "1.0.0",
        "\"greet-lib@^1\"",
        "app uses lib",
    );
    let dry = n1.json(&[
        "publish",
        "--dry-run",
        src.path().join("lib").to_str().unwrap(),
    ]);
    assert_eq!(dry["published"], false);
    let mut records = Vec::new();
    for p in ["lib", "app"] {
        let v = n1.json(&["publish", src.path().join(p).to_str().unwrap()]);
        assert_eq!(v["published"], true);
        records.push(v["release"]["record_id"].as_str().unwrap().to_string());
    }
    // A second publish of the same version is refused with exit code 5, naming the release.
    let again = n1.agora(&["publish", src.path().join("app").to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(5));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr)
            .lines()
            .next()
            .unwrap(),
        format!(
            "error: greet-app@1.0.0 is already published (release record {})",
            records[1]
        )
    );

    for node in [&n2, &n3] {
        wait_until("the packages reach every node", || {
            let r = node.json(&["search", "greet"]);
            match r["total"].as_u64() {
                Some(2) => Ok(()),
                other => Err(format!("{other:?} hits")),
            }
        });
    }
    // Typo tolerance, end to end.
    let r = n3.json(&["search", "gret-ap"]);
    assert_eq!(r["hits"][0]["name"], "greet-app");
    // A page past the result window is a usage error (exit 2), not an allocation.
    let deep = n3.agora(&["search", "greet", "--offset", "4000000000"]);
    assert_eq!(deep.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&deep.stderr)
            .lines()
            .next()
            .unwrap(),
        "error: offset 4000000000 and limit 20 reach past result 10000, the deepest a search \
         pages"
    );

    // Node 2 fetches through the typed client, which streams progress: a step, then bytes.
    let lib_info = n2.json(&["info", "greet-lib"]);
    let size = lib_info["size"].as_u64().unwrap();
    let mut events = Vec::new();
    let fetched = n2
        .client()
        .fetch("greet-lib", "1.0.0", |p| events.push(p.clone()))
        .unwrap();
    assert_eq!(fetched.sha256, lib_info["sha256"].as_str().unwrap());
    assert!(!fetched.cached);
    assert_eq!(events.first(), Some(&Progress::Step("fetching".into())));
    let sha = lib_info["sha256"].as_str().unwrap();
    let Some(Progress::Download {
        done,
        total,
        readable,
        path,
    }) = events.last()
    else {
        panic!("the last progress is the download's: {events:?}");
    };
    assert_eq!((*done, *total, *readable), (size, size, size));
    // The partial file, beside the store the finished archive is adopted into.
    let path = std::path::Path::new(path);
    assert_eq!(path.file_name().unwrap().to_str(), Some(sha));
    assert_eq!(path.parent().unwrap().file_name().unwrap(), "partial");

    // Many clients at once: 8 threads, 25 requests each, every answer right.
    let peer_id = n2.json(&["status"])["peer_id"].clone();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let mut c = n2.client();
                for _ in 0..25 {
                    assert_eq!(c.status().unwrap().peer_id, peer_id.as_str().unwrap());
                }
            });
        }
    });

    // Node 2 installs (and so fetches and provides) before node 1 goes away.
    let q = tempfile::tempdir().unwrap();
    n2.json(&["install", "greet-app", "--dir", q.path().to_str().unwrap()]);
    n1.stop();

    // A fresh project on node 3 installs from node 2, the only provider left.
    let p = tempfile::tempdir().unwrap();
    let dir = p.path().to_str().unwrap();
    let out = n3.json(&["install", "greet-app", "--dir", dir]);
    let installed: Vec<&str> = out["installed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(installed, ["greet-app", "greet-lib"]);
    let app_file = p
        .path()
        .join(".agora/packages/greet-app/templates/main.tmpl");
    assert_eq!(std::fs::read_to_string(&app_file).unwrap(), "app uses lib");
    assert_eq!(
        std::fs::read_to_string(
            p.path()
                .join(".agora/packages/greet-lib/templates/main.tmpl")
        )
        .unwrap(),
        "hello {{name}}"
    );
    let lock: toml::Table =
        toml::from_str(&std::fs::read_to_string(p.path().join("agora.lock")).unwrap()).unwrap();
    let locked = lock["package"].as_array().unwrap();
    assert_eq!(locked.len(), 2);
    assert_eq!(locked[0]["name"].as_str(), Some("greet-app"));
    assert_eq!(locked[0]["version"].as_str(), Some("1.0.0"));
    assert_eq!(
        locked[0]["publisher"].as_str(),
        key["publisher"].as_str(),
        "the lockfile names the publisher"
    );
    let listed = n3.json(&["list", "--dir", dir]);
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // verify passes, then fails once a file is changed.
    assert_eq!(n3.json(&["verify", "--dir", dir])["ok"], true);
    std::fs::write(&app_file, "tampered").unwrap();
    let bad = n3.agora(&["verify", "--dir", dir]);
    assert_eq!(bad.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("greet-app: templates/main.tmpl was modified"),
        "{stderr}"
    );

    // Restart node 3: the catalog is still there, and an exact reinstall from the lockfile
    // works from its store.
    let before = n3.json(&["status"]);
    n3.stop();
    n3.launch();
    let after = n3.json(&["status"]);
    assert_eq!(after["peer_id"], before["peer_id"], "identity persists");
    assert_eq!(after["catalog_size"], before["catalog_size"]);
    assert_eq!(
        n3.json(&["search", "greet-lib"])["hits"][0]["name"],
        "greet-lib"
    );
    std::fs::remove_dir_all(p.path().join(".agora")).unwrap();
    n3.json(&["install", "--dir", dir]);
    assert_eq!(std::fs::read_to_string(&app_file).unwrap(), "app uses lib");
    assert_eq!(n3.json(&["verify", "--dir", dir])["ok"], true);
    drop(n2);
}

#[test]
fn a_new_release_record_paired_with_an_old_archive_is_refused_at_install_and_changes_nothing() {
    // A publisher's node signs twin@1.1.0 over the very archive of twin@1.0.0 (whose
    // package.toml says 1.0.0): the record verifies and its archive hashes right, only the
    // archive's own manifest can tell.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("twin");
    package(&dir, "twin", "1.0.0", "", "twin body");
    let (node, addr) = rt.block_on(async {
        let (node, addr) = common::start_node().await;
        let key = common::publisher(42);
        let old = node.registry.publish(dir, &key).await.unwrap().record;
        let mut body = old.body.clone();
        body.version = agora_protocol::Version::new(1, 1, 0);
        body.previous = Some(old.id());
        body.published_at += 1;
        let forged = agora_protocol::records::Signed::sign(body, &key).unwrap();
        let reg = node.registry.clone();
        let result = tokio::task::spawn_blocking(move || {
            reg.blocking_catalog().ingest(
                vec![agora_protocol::records::CatalogRecord::Release(forged)],
                false,
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert!(
            matches!(result[0].1, agora_daemon::catalog::Ingested::Added(_)),
            "the record itself is valid"
        );
        (node, addr)
    });
    let daemon = Daemon::start(Some(&addr.to_string()));
    wait_until("both versions synced", || {
        let v = daemon.json(&["versions", "twin"]);
        match v.as_array().map(Vec::len) {
            Some(2) => Ok(()),
            other => Err(format!("{other:?} versions")),
        }
    });

    let project = tempfile::tempdir().unwrap();
    let dir = project.path().to_str().unwrap();
    let out = daemon.agora(&["install", "twin@1.1.0", "--dir", dir]);
    assert_eq!(out.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("twin@1.1.0: the archive holds twin@1.0.0"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(project.path()).unwrap().collect();
    assert!(left.is_empty(), "the project was changed: {left:?}");
    // The honest release installs from the same archive.
    let ok = daemon.json(&["install", "twin@=1.0.0", "--dir", dir]);
    assert_eq!(ok["installed"][0]["version"], "1.0.0");
    drop(daemon);
    rt.block_on(node.shutdown());
}

/// Every file and directory under `dir`, with the contents of the files: what a test compares
/// to show nothing there was touched.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
                out.push((path, None));
            } else {
                out.push((path.clone(), Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    out.sort();
    out
}

/// Finding 8 of the audit: a project checkout is untrusted. Links planted in it, to a file or
/// to a directory outside the project, made install write there (through `.agora`,
/// `.agora/packages` or `.agora.lock.tmp`) and remove delete there; a lockfile name like
/// `../../x` did too. Each is refused, and nothing outside the project changes.
#[test]
fn links_planted_in_a_project_are_refused_and_nothing_outside_is_touched() {
    use std::os::unix::fs::symlink;
    let node = Daemon::start(None);
    node.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    package(src.path(), "linked", "1.0.0", "", "body");
    node.json(&["publish", src.path().to_str().unwrap()]);

    let refused = |args: &[&str], code: i32, what: &str| {
        let out = node.agora(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
        stderr
    };
    // Planted before any install: a link to a directory, and links to files.
    for (link, to_dir) in [
        (".agora", true),
        (".agora/packages", true),
        (".agora.lock.tmp", false),
        ("agora.lock", false),
    ] {
        let project = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = if to_dir {
            outside.path().to_owned()
        } else {
            let f = outside.path().join("precious");
            std::fs::write(&f, "precious").unwrap();
            f
        };
        let at = project.path().join(link);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        symlink(&target, &at).unwrap();
        let before = snapshot(outside.path());
        let dir = project.path().to_str().unwrap();
        let out = node.agora(&["install", "linked", "--dir", dir]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if link == ".agora.lock.tmp" {
            // The temporary file is made anew beside the link, never through it.
            assert!(out.status.success(), "{link}: {stderr}");
            assert!(
                project
                    .path()
                    .join(".agora/packages/linked/package.toml")
                    .is_file()
            );
        } else {
            assert_eq!(out.status.code(), Some(1), "{link}: {stderr}");
            assert_eq!(
                stderr.lines().next().unwrap(),
                format!(
                    "error: {} is a symbolic link (to {}); agora does not write or delete \
                     through links in a project",
                    at.display(),
                    target.display()
                ),
                "{link}"
            );
        }
        assert_eq!(snapshot(outside.path()), before, "{link}: outside changed");
    }

    // Planted after an install: the installed packages moved outside and linked back.
    let project = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let dir = project.path().to_str().unwrap();
    node.json(&["install", "linked", "--dir", dir]);
    let packages = project.path().join(".agora/packages");
    std::fs::rename(&packages, outside.path().join("packages")).unwrap();
    symlink(outside.path().join("packages"), &packages).unwrap();
    let before = snapshot(outside.path());
    for (args, code) in [
        (vec!["remove", "linked", "--dir", dir], 1),
        (vec!["update", "linked", "--dir", dir], 1),
    ] {
        let stderr = refused(&args, code, args[0]);
        assert!(
            stderr.contains("is a symbolic link"),
            "{}: {stderr}",
            args[0]
        );
        assert_eq!(
            snapshot(outside.path()),
            before,
            "{}: outside changed",
            args[0]
        );
    }
    let stderr = refused(&["verify", "--dir", dir], 6, "verify");
    assert!(
        stderr.starts_with(&format!(
            "linked: {} is a symbolic link (to {})",
            packages.display(),
            outside.path().join("packages").display()
        )),
        "{stderr}"
    );

    // A lockfile entry whose name climbs out of the project.
    let project = tempfile::tempdir().unwrap();
    let victim = project.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("keep"), "keep").unwrap();
    let inner = project.path().join("inner");
    std::fs::create_dir_all(inner.join(".agora/packages")).unwrap();
    std::fs::write(
        inner.join("agora.lock"),
        format!(
            "version = 1\n[[package]]\nname = \"../../../victim\"\nversion = \"1.0.0\"\n\
             sha256 = \"{}\"\npublisher = \"{}\"\n",
            "00".repeat(32),
            "11".repeat(32)
        ),
    )
    .unwrap();
    let inner_dir = inner.to_str().unwrap();
    let stderr = refused(
        &["remove", "../../../victim", "--dir", inner_dir],
        2,
        "remove",
    );
    assert!(stderr.contains("is not a package name"), "{stderr}");
    let stderr = refused(&["verify", "--dir", inner_dir], 1, "verify");
    assert!(
        stderr.contains("package 1 (\"../../../victim\"): name: package name must start"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("keep")).unwrap(),
        "keep"
    );
}

/// `agora search '' | head -1`: a reader that goes away ends the output quietly, with no
/// panic and no error.
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let node = Daemon::start(None);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = node.command(&["status"]).stdout(writer).output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(0), "")
    );
}

/// A search's table fits the terminal: columns as wide as what they hold, the description cut
/// (not wrapped) to the columns left; through a pipe, nothing is cut.
#[test]
fn a_search_table_fits_the_terminal() {
    let node = Daemon::start(None);
    node.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("wide");
    std::fs::create_dir_all(&dir).unwrap();
    let description = "Templates for a site with a description far longer than a narrow terminal";
    std::fs::write(
        dir.join("package.toml"),
        format!(
            "[package]\nname = \"wide\"\nversion = \"1.0.0\"\ndescription = \"{description}\"\n"
        ),
    )
    .unwrap();
    node.json(&["publish", dir.to_str().unwrap()]);
    let table = |columns: Option<&str>| {
        let mut c = node.command(&["search", "wide"]);
        match columns {
            Some(n) => c.env("COLUMNS", n),
            None => c.env_remove("COLUMNS"),
        };
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    let narrow = table(Some("40"));
    let lines: Vec<&str> = narrow.lines().collect();
    assert_eq!(lines[0], "NAME  VERSION  DESCRIPTION");
    assert_eq!(lines[1], "wide  1.0.0    Templates for a site wit…");
    assert!(lines.iter().all(|l| l.chars().count() <= 40), "{narrow}");
    assert_eq!(lines[2], "(1 of 1 package)");
    let piped = table(None);
    assert_eq!(
        piped.lines().nth(1).unwrap(),
        format!("wide  1.0.0    {description}")
    );
}

/// Runs `agora ARGS` against `node` with its stderr on a pseudo-terminal (as a user's would
/// be), and returns the exit code and everything written to the terminal.
fn on_a_terminal(node: &Daemon, args: &[&str]) -> (Option<i32>, String) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    use std::io::Read;
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let path = ptsname(&master, Vec::new()).unwrap();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path.to_str().unwrap())
        .unwrap();
    let mut child = node
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(terminal)
        .spawn()
        .unwrap();
    // The command's end closes the terminal's last writer, and then reading it fails (EIO):
    // that is the end of what was written.
    let mut screen = Vec::new();
    let _ = std::fs::File::from(master).read_to_end(&mut screen);
    let code = child.wait().unwrap().code();
    (code, String::from_utf8_lossy(&screen).into_owned())
}

/// On a terminal, an install's progress line names the package it is at and shows the unpacking;
/// with `--json` nothing but the answer is written.
#[test]
fn the_progress_line_names_the_package_and_shows_unpacking() {
    let node = Daemon::start(None);
    node.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    package(&src.path().join("tool"), "tool-kit", "1.2.0", "", "tool");
    node.json(&["publish", src.path().join("tool").to_str().unwrap()]);
    let project = tempfile::tempdir().unwrap();
    let dir = project.path().to_str().unwrap();
    let (code, screen) = on_a_terminal(&node, &["install", "tool-kit", "--dir", dir]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("tool-kit@1.2.0: unpacking"), "{screen:?}");
    let (code, screen) = on_a_terminal(&node, &["--json", "update", "--dir", dir]);
    assert_eq!((code, screen.as_str()), (Some(0), ""));
}
