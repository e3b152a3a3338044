//! The daemon's folders are layers (docs/ARCHITECTURE.md), and each may use only the layers
//! below it. This reads every source file of the daemon and checks each `crate::` path its
//! code names (comments are not code) against the table, so that a layer pointing upwards
//! fails here rather than in a newcomer's head.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each layer (a folder, or a file at the top of `src/`) and the layers it may use. Items of
/// `lib.rs` itself (the `lock` helper) are open to all.
const LAYERS: &[(&str, &[&str])] = &[
    ("obs", &[]),
    ("rate", &[]),
    ("store", &[]),
    ("index", &[]),
    ("graph", &[]),
    ("network", &["obs", "rate"]),
    ("catalog", &["graph", "index", "obs", "rate", "store"]),
    (
        "ops",
        &["catalog", "graph", "index", "network", "obs", "store"],
    ),
    (
        "api",
        &[
            "catalog", "graph", "index", "network", "obs", "ops", "store",
        ],
    ),
    ("ipc", &["api", "obs", "store"]),
    ("gateway", &["api", "obs"]),
    (
        "app",
        &[
            "api", "catalog", "gateway", "graph", "index", "ipc", "network", "obs", "ops", "store",
        ],
    ),
];

/// Items of `lib.rs` every layer may use.
const ROOT_ITEMS: &[&str] = &["lock"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level names after `crate::` in the code of `text` (comments left out).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut checked = BTreeSet::new();
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str();
        let layer = top.to_str().unwrap().trim_end_matches(".rs");
        if ["lib", "main", "bin"].contains(&layer) {
            continue;
        }
        let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| *name == layer) else {
            violations.push(format!("{}: not in the layer table", relative.display()));
            continue;
        };
        checked.insert(layer);
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_paths(&text) {
            if used != layer
                && !allowed.contains(&used.as_str())
                && !ROOT_ITEMS.contains(&used.as_str())
            {
                violations.push(format!("{}: uses crate::{used}", relative.display()));
            }
        }
    }
    assert_eq!(
        violations,
        Vec::<String>::new(),
        "layers pointing the wrong way"
    );
    let every: BTreeSet<&str> = LAYERS.iter().map(|(name, _)| *name).collect();
    assert_eq!(checked, every, "every layer in the table has code");
}

#[test]
fn the_check_sees_a_use_of_a_layer_above_and_not_one_in_a_comment() {
    let text = "use crate::ops::Registry;\n// see crate::app::Daemon\nlet x = crate::lock(&m);\n";
    assert_eq!(
        crate_paths(text),
        BTreeSet::from(["lock".to_string(), "ops".to_string()])
    );
}
