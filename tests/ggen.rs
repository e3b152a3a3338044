//! ggen's own packages, unchanged: manifests copied from ggen's public marketplace
//! (tests/fixtures/ggen) publish through the `agora` binary as their authors wrote them, and
//! their dependency chain installs.

mod common;
mod process;

use std::collections::BTreeMap;
use std::path::Path;

use agora_protocol::ContentId;
use process::Daemon;
use process::ggen::{FIXTURES, publish_fixtures};
use serde_json::{Map, Value};

#[test]
fn ggen_packages_publish_unchanged_and_their_dependencies_install() {
    let node = Daemon::start(None);
    let work = tempfile::tempdir().unwrap();
    publish_fixtures(&node, work.path());

    // `id` is the identity, `name` its title; tags written as ggen's tables are tags.
    let crud = node.json(&["info", "io.ggen.nextjs.ontology-crud"]);
    assert_eq!(crud["name"], "io.ggen.nextjs.ontology-crud");
    assert_eq!(crud["tags"][0], "nextjs");
    let copilot = node.json(&["info", "agent-memory-forge"]);
    assert!(!copilot["tags"].as_array().unwrap().is_empty(), "{copilot}");

    let project = work.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let dir = project.to_str().unwrap();
    node.json(&[
        "install",
        "agent-reasoning-mcp",
        "io.ggen.nextjs.ontology-crud",
        "--dir",
        dir,
    ]);
    let listed = node.json(&["list", "--dir", dir]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "agent-context-crafter",
            "agent-memory-forge",
            "agent-reasoning-mcp",
            "io.ggen.nextjs.ontology-crud"
        ]
    );
    // Installed, each manifest is the one its author wrote.
    for name in ["agent-reasoning-mcp", "io.ggen.nextjs.ontology-crud"] {
        assert_eq!(
            std::fs::read(
                project
                    .join(".agora/packages")
                    .join(name)
                    .join("package.toml")
            )
            .unwrap(),
            std::fs::read(Path::new(FIXTURES).join(name).join("package.toml")).unwrap(),
            "{name}"
        );
    }
    let verified = node.json(&["verify", "--dir", dir]);
    assert_eq!(verified["ok"], true);
}

/// The JSON type of `v`, as the index format is checked.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field of ggen's own index is in `ours` with the same JSON type (where ggen's is
/// null, any: ggen writes null for an author it lacks).
fn same_shape(ggen: &Map<String, Value>, ours: &Map<String, Value>, what: &str) {
    for (field, value) in ggen {
        let Some(mine) = ours.get(field) else {
            panic!("{what}: no field {field:?}");
        };
        if !value.is_null() && !mine.is_null() {
            assert_eq!(kind(mine), kind(value), "{what}: field {field:?}");
        }
    }
}

#[test]
fn the_gateway_serves_the_catalog_as_ggens_registry_index() {
    let node = Daemon::with_args(&["--http", "127.0.0.1:0"]);
    let work = tempfile::tempdir().unwrap();
    publish_fixtures(&node, work.path());
    let http = node.json(&["status"])["http"].as_str().unwrap().to_string();
    let base = format!("http://{http}");
    let index = || -> Value {
        let got = reqwest::blocking::get(format!("{base}/ggen/registry/index.json")).unwrap();
        assert_eq!(got.status(), 200);
        serde_json::from_slice(&got.bytes().unwrap()).unwrap()
    };
    assert_eq!(index()["package_count"], 6);
    // A yanked release is not installable: it leaves the index.
    node.json(&["yank", "workflow-engine-cli@1.0.0", "--reason", "broken"]);
    let index = index();

    let ggen: Value =
        serde_json::from_slice(&std::fs::read(Path::new(FIXTURES).join("index.json")).unwrap())
            .unwrap();
    same_shape(
        ggen.as_object().unwrap(),
        index.as_object().unwrap(),
        "index",
    );
    let packages = index["packages"].as_array().unwrap();
    for (theirs, ours) in ggen["packages"].as_array().unwrap().iter().zip(packages) {
        same_shape(
            theirs.as_object().unwrap(),
            ours.as_object().unwrap(),
            "package",
        );
    }

    assert_eq!(index["version"], "1.0.0");
    assert_eq!(index["registry_url"], format!("{base}/"));
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "advanced-rust-project",
            "agent-context-crafter",
            "agent-memory-forge",
            "agent-reasoning-mcp",
            "io.ggen.nextjs.ontology-crud",
        ]
    );
    assert_eq!(index["package_count"], 5);
    let categories: BTreeMap<String, u64> =
        serde_json::from_value(index["categories"].clone()).unwrap();
    let mut counted = BTreeMap::new();
    for p in packages {
        *counted
            .entry(p["category"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(categories, counted);
    assert_eq!(categories["ai-agents"], 3);

    let mcp = &packages[3];
    assert_eq!(mcp["version"], "1.0.0");
    assert_eq!(mcp["category"], "ai-agents");
    assert_eq!(mcp["author"], "ggen-team");
    assert_eq!(mcp["license"], "MIT");
    assert_eq!(
        mcp["dependencies"],
        serde_json::json!(["agent-memory-forge", "agent-context-crafter"])
    );
    assert_eq!(mcp["path"], "v1/packages/agent-reasoning-mcp/1.0.0");
    // ggen's search index: tags, keywords, category and the words of a name find it.
    assert!(
        index["search_index"]["reasoning"]
            .as_array()
            .unwrap()
            .contains(&Value::from("agent-reasoning-mcp")),
        "{}",
        index["search_index"]
    );
    assert_eq!(
        index["search_index"]["ai-agents"],
        serde_json::json!([
            "agent-context-crafter",
            "agent-memory-forge",
            "agent-reasoning-mcp"
        ])
    );

    // Every download_url serves the bytes its checksum names, the release's archive.
    for p in packages {
        let name = p["name"].as_str().unwrap();
        let info = node.json(&["info", name]);
        assert_eq!(p["checksum"], info["sha256"], "{name}");
        assert_eq!(p["description"], info["description"], "{name}");
        assert_eq!(p["tags"], info["tags"], "{name}");
        assert_eq!(p["keywords"], info["keywords"], "{name}");
        let url = p["download_url"].as_str().unwrap();
        assert_eq!(
            url,
            format!("{base}/{}/archive", p["path"].as_str().unwrap())
        );
        let bytes = reqwest::blocking::get(url).unwrap().bytes().unwrap();
        let sha = ContentId::of(&bytes).to_hex();
        assert_eq!(p["checksum"].as_str(), Some(sha.as_str()), "{name}");
    }
}

/// Copies the fixtures into `root` as a ggen marketplace tree with nested categories.
fn marketplace_tree(root: &Path) {
    for (category, name) in [
        ("ai/agents", "agent-reasoning-mcp"),
        ("ai/agents", "agent-context-crafter"),
        ("ai", "agent-memory-forge"),
        ("web", "io.ggen.nextjs.ontology-crud"),
        ("showcase", "advanced-rust-project"),
        ("", "workflow-engine-cli"),
    ] {
        let dir = root.join(category).join(name);
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        let manifest = std::fs::read(Path::new(FIXTURES).join(name).join("package.toml")).unwrap();
        std::fs::write(dir.join("package.toml"), manifest).unwrap();
        std::fs::write(dir.join("templates/main.tmpl"), name).unwrap();
    }
}

fn names_of(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect()
}

#[test]
fn import_publishes_a_marketplace_tree_dependencies_first_and_says_what_it_refused() {
    let node = Daemon::start(None);
    node.json(&["keygen"]);
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("packages");
    marketplace_tree(&tree);
    let tree = tree.to_str().unwrap();

    let dry = node.json(&["import", tree, "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(names_of(&dry["published"]).len(), 6);
    assert_eq!(
        node.json(&["search"])["total"],
        0,
        "a dry run publishes nothing"
    );

    let first = node.json(&["import", tree]);
    let order = names_of(&first["published"]);
    assert_eq!(
        order,
        [
            "advanced-rust-project",
            "agent-memory-forge",
            "agent-context-crafter",
            "agent-reasoning-mcp",
            "io.ggen.nextjs.ontology-crud",
            "workflow-engine-cli",
        ],
        "each dependency before its dependents, by name otherwise"
    );
    assert_eq!(first["already_published"], serde_json::json!([]));
    assert_eq!(first["refused"], serde_json::json!([]));
    assert_eq!(node.json(&["search"])["total"], 6);

    // Again, with three packages the node must refuse: a manifest it cannot read, a
    // dependency in no catalog, and a package that depends on that one.
    let broken = work.path().join("packages/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("package.toml"),
        "[package]\nname = \"broken\"\n",
    )
    .unwrap();
    for (name, dep) in [
        ("needs-missing", "nowhere-at-all"),
        ("needs-needs", "needs-missing"),
    ] {
        let dir = work.path().join("packages/extra").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("package.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"x\"\n\
                 dependencies = [\"{dep}\"]\n"
            ),
        )
        .unwrap();
    }
    let again = node.agora(&["--json", "import", tree]);
    assert_eq!(again.status.code(), Some(5), "{again:?}");
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["published"], serde_json::json!([]));
    assert_eq!(names_of(&again["already_published"]).len(), 6);
    let refused = again["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused[0]["dir"].as_str().unwrap().ends_with("broken"));
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("package.toml:"),
        "{}",
        refused[0]
    );
    assert_eq!(refused[1]["name"], "needs-missing");
    assert!(
        refused[1]["reason"]
            .as_str()
            .unwrap()
            .contains("nowhere-at-all"),
        "{}",
        refused[1]
    );
    assert_eq!(refused[2]["name"], "needs-needs");
    assert_eq!(
        refused[2]["reason"],
        "it depends on needs-missing, which was refused"
    );
    assert_eq!(again["error"]["code"], 5);
    assert_eq!(
        node.json(&["search"])["total"],
        6,
        "nothing refused was published"
    );

    // A second directory of a name is refused; the packages that depend on the name do not
    // pay for it.
    let copy = work.path().join("packages/zz-copies/agent-memory-forge");
    std::fs::create_dir_all(copy.join("templates")).unwrap();
    std::fs::copy(
        Path::new(FIXTURES).join("agent-memory-forge/package.toml"),
        copy.join("package.toml"),
    )
    .unwrap();
    let third = node.agora(&["--json", "import", tree]);
    let third: Value = serde_json::from_slice(&third.stdout).unwrap();
    assert_eq!(names_of(&third["already_published"]).len(), 6, "{third}");
    let refused: Vec<Option<&str>> = third["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        refused,
        [
            None,
            Some("agent-memory-forge"),
            Some("needs-missing"),
            Some("needs-needs")
        ],
        "{third}"
    );
}
