//! ggen's own packages, unchanged: manifests copied from ggen's public marketplace
//! (tests/fixtures/ggen) publish through the `agora` binary as their authors wrote them, and
//! their dependency chain installs.

mod common;
mod process;

use std::path::Path;

use process::Daemon;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ggen");

/// Every fixture, in an order that publishes each dependency before its dependents.
const PACKAGES: [&str; 6] = [
    "advanced-rust-project",
    "io.ggen.nextjs.ontology-crud",
    "workflow-engine-cli",
    "agent-memory-forge",
    "agent-context-crafter",
    "agent-reasoning-mcp",
];

#[test]
fn ggen_packages_publish_unchanged_and_their_dependencies_install() {
    let node = Daemon::start(None);
    node.json(&["keygen"]);
    let work = tempfile::tempdir().unwrap();
    for name in PACKAGES {
        // Each package directory: ggen's manifest, byte for byte, and one template.
        let dir = work.path().join(name);
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        let manifest = std::fs::read(Path::new(FIXTURES).join(name).join("package.toml")).unwrap();
        std::fs::write(dir.join("package.toml"), &manifest).unwrap();
        std::fs::write(dir.join("templates/main.tmpl"), name).unwrap();
        let published = node.json(&["publish", dir.to_str().unwrap()]);
        assert_eq!(published["published"], true, "{name}: {published}");
    }

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
