//! ggen's own packages (tests/fixtures/ggen), published as their authors wrote them.

use std::path::Path;

use super::Daemon;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ggen");

/// Every fixture, in an order that publishes each dependency before its dependents.
pub const PACKAGES: [&str; 6] = [
    "advanced-rust-project",
    "io.ggen.nextjs.ontology-crud",
    "workflow-engine-cli",
    "agent-memory-forge",
    "agent-context-crafter",
    "agent-reasoning-mcp",
];

/// Publishes every fixture on `node`, each as ggen's manifest byte for byte and one template.
pub fn publish_fixtures(node: &Daemon, work: &Path) {
    node.json(&["keygen"]);
    for name in PACKAGES {
        let dir = work.join(name);
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        let manifest = std::fs::read(Path::new(FIXTURES).join(name).join("package.toml")).unwrap();
        std::fs::write(dir.join("package.toml"), &manifest).unwrap();
        std::fs::write(dir.join("templates/main.tmpl"), name).unwrap();
        let published = node.json(&["publish", dir.to_str().unwrap()]);
        assert_eq!(published["published"], true, "{name}: {published}");
    }
}
