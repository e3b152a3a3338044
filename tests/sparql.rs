//! The catalog as RDF (docs/RDF.md): the queries ggen runs over its marketplace graph answer
//! exactly over ggen's own packages published on a real `agorad`, through `agora query` and
//! the gateway's SPARQL endpoint; the graph follows yanks and restarts; hostile queries get a
//! clear 400 and change nothing; the exports parse as the RDF they claim to be.

mod process;

use std::path::Path;

use oxrdfio::{JsonLdProfileSet, RdfFormat, RdfParser};
use process::Daemon;
use process::ggen::publish_fixtures;
use serde_json::Value;

const PREFIXES: &str = "PREFIX agora: <https://agora.dev/ns#>\n\
                        PREFIX doap: <http://usefulinc.com/ns/doap#>\n";

/// ggen's search: packages of this category with this tag (as their newest release says).
fn by_category_and_tag(category: &str, tag: &str) -> String {
    format!(
        "{PREFIXES}SELECT ?name WHERE {{ ?p agora:category \"{category}\" ; \
         agora:tag \"{tag}\" ; doap:name ?name }} ORDER BY ?name"
    )
}

/// The same, read from the newest release.
fn by_newest_release(category: &str, tag: &str) -> String {
    format!(
        "{PREFIXES}SELECT ?name WHERE {{ ?p agora:latest ?r ; doap:name ?name . \
         ?r agora:category \"{category}\" ; agora:tag \"{tag}\" }} ORDER BY ?name"
    )
}

/// Everything `name` needs, directly or through its dependencies' newest releases.
fn transitive_dependencies(name: &str) -> String {
    format!(
        "{PREFIXES}SELECT DISTINCT ?name WHERE {{ <urn:agora:package:{name}> \
         (agora:latest/agora:dependsOn)+ ?d . ?d doap:name ?name }} ORDER BY ?name"
    )
}

/// Packages that depend on themselves through their dependencies.
const CYCLES: &str = "PREFIX agora: <https://agora.dev/ns#>\n\
                      PREFIX doap: <http://usefulinc.com/ns/doap#>\n\
                      SELECT ?name WHERE { ?p (agora:latest/agora:dependsOn)+ ?p ; \
                      doap:name ?name } ORDER BY ?name";

/// The values of `?name` in the SPARQL JSON results `agora --json query` printed.
fn names(node: &Daemon, query: &str) -> Vec<String> {
    let results = node.json(&["query", query]);
    assert_eq!(
        results["head"]["vars"],
        serde_json::json!(["name"]),
        "{results}"
    );
    results["results"]["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["name"]["type"], "literal", "{b}");
            b["name"]["value"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Publishes `name` depending on `deps`, whether they exist yet or not.
fn publish(node: &Daemon, work: &Path, name: &str, deps: &str) {
    let dir = work.join(name);
    process::package(&dir, name, "1.0.0", deps, name);
    let out = node.json(&[
        "publish",
        dir.to_str().unwrap(),
        "--allow-missing-dependencies",
    ]);
    assert_eq!(out["published"], true, "{out}");
}

/// `text` as a URL query or form value: what is not unreserved, percent-encoded.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn count_triples(format: RdfFormat, bytes: &[u8]) -> usize {
    let mut count = 0;
    for quad in RdfParser::from_format(format).for_slice(bytes) {
        quad.unwrap();
        count += 1;
    }
    count
}

#[test]
fn sparql_answers_ggens_queries_over_the_catalog_and_follows_yanks_and_restarts() {
    let mut node = Daemon::prepare(
        &[],
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--http",
            "127.0.0.1:0",
        ],
    );
    std::fs::write(
        node.home.path().join("config.toml"),
        "sparql_time_limit = \"1s\"\n",
    )
    .unwrap();
    node.launch();
    let work = tempfile::tempdir().unwrap();
    publish_fixtures(&node, work.path());
    publish(&node, work.path(), "cycle-a", "\"cycle-b\"");
    publish(&node, work.path(), "cycle-b", "\"cycle-a\"");

    let ai_rdf = [
        "agent-context-crafter",
        "agent-memory-forge",
        "agent-reasoning-mcp",
    ];
    assert_eq!(
        names(&node, &by_category_and_tag("ai-agents", "rdf")),
        ai_rdf
    );
    assert_eq!(
        names(&node, &by_category_and_tag("ai-agents", "planning")),
        ["agent-reasoning-mcp"]
    );
    assert_eq!(
        names(&node, &by_category_and_tag("web", "rdf")),
        ["io.ggen.nextjs.ontology-crud"]
    );
    assert_eq!(
        names(&node, &transitive_dependencies("agent-reasoning-mcp")),
        ["agent-context-crafter", "agent-memory-forge"]
    );
    assert_eq!(
        names(&node, &transitive_dependencies("agent-context-crafter")),
        ["agent-memory-forge"]
    );
    assert!(names(&node, &transitive_dependencies("agent-memory-forge")).is_empty());
    assert_eq!(names(&node, CYCLES), ["cycle-a", "cycle-b"]);

    // In words: a table, one row per solution.
    let table = node.agora(&["query", &by_category_and_tag("ai-agents", "planning")]);
    assert!(table.status.success(), "{table:?}");
    assert_eq!(
        String::from_utf8(table.stdout).unwrap(),
        "?name\nagent-reasoning-mcp\n(1 row)\n"
    );

    // A yank is in the graph at once: the release says so, and the package has no newest
    // release left for ggen's search to find.
    node.json(&[
        "yank",
        "agent-memory-forge@1.0.0",
        "--reason",
        "leaks memory",
    ]);
    let yank = format!(
        "{PREFIXES}SELECT ?yanked ?reason WHERE {{ \
         <urn:agora:release:agent-memory-forge@1.0.0> agora:yanked ?yanked ; \
         agora:yankReason ?reason }}"
    );
    let answer = node.json(&["query", &yank]);
    let row = &answer["results"]["bindings"][0];
    assert_eq!(row["yanked"]["value"], "true", "{answer}");
    assert_eq!(
        row["yanked"]["datatype"],
        "http://www.w3.org/2001/XMLSchema#boolean"
    );
    assert_eq!(row["reason"]["value"], "leaks memory");
    let after_yank = ["agent-context-crafter", "agent-reasoning-mcp"];
    assert_eq!(
        names(&node, &by_category_and_tag("ai-agents", "rdf")),
        after_yank
    );
    assert_eq!(
        names(&node, &by_newest_release("ai-agents", "rdf")),
        after_yank
    );

    // The gateway: GET and POST, the format Accept asks for.
    let http = node.json(&["status"])["http"].as_str().unwrap().to_string();
    let endpoint = format!("http://{http}/sparql");
    let web = reqwest::blocking::Client::new();
    let got = web
        .get(format!(
            "{endpoint}?query={}",
            encode(&by_category_and_tag("ai-agents", "rdf"))
        ))
        .header("Accept", "text/csv")
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "text/csv");
    assert_eq!(
        got.text().unwrap(),
        "name\r\nagent-context-crafter\r\nagent-reasoning-mcp\r\n"
    );
    let got = web
        .post(&endpoint)
        .header("Content-Type", "application/sparql-query")
        .header("Accept", "text/tab-separated-values")
        .body(CYCLES)
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().unwrap(), "?name\n\"cycle-a\"\n\"cycle-b\"\n");
    let got = web
        .post(&endpoint)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "query={}",
            encode(&format!("{PREFIXES}ASK {{ ?p doap:name \"cycle-a\" }}"))
        ))
        .header("Accept", "application/sparql-results+xml")
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(
        got.text().unwrap().contains("<boolean>true</boolean>"),
        "an ASK answers true"
    );
    let construct = format!(
        "{PREFIXES}CONSTRUCT {{ ?p agora:dependsOn ?d }} WHERE {{ \
         <urn:agora:package:agent-reasoning-mcp> agora:latest ?r . ?r agora:dependsOn ?d . \
         BIND(<urn:agora:package:agent-reasoning-mcp> AS ?p) }}"
    );
    let got = web
        .get(format!("{endpoint}?query={}", encode(&construct)))
        .header("Accept", "application/n-triples")
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "application/n-triples");
    let mut lines: Vec<String> = got.text().unwrap().lines().map(String::from).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "<urn:agora:package:agent-reasoning-mcp> <https://agora.dev/ns#dependsOn> <urn:agora:package:agent-context-crafter> .",
            "<urn:agora:package:agent-reasoning-mcp> <https://agora.dev/ns#dependsOn> <urn:agora:package:agent-memory-forge> .",
        ]
    );

    // Hostile queries: a clear 400, and the graph is as it was.
    let refused = |response: reqwest::blocking::Response| -> String {
        assert_eq!(response.status(), 400);
        let body: Value = serde_json::from_slice(&response.bytes().unwrap()).unwrap();
        assert_eq!(body["error"], "bad_request", "{body}");
        body["message"].as_str().unwrap().to_string()
    };
    let ask = |query: &str| {
        web.post(&endpoint)
            .header("Content-Type", "application/sparql-query")
            .body(query.to_string())
            .send()
            .unwrap()
    };
    let why = refused(ask("SELECT ?s WHERE { ?s ?p"));
    assert!(why.starts_with("bad request: malformed query: "), "{why}");
    let why = refused(ask("INSERT DATA { <urn:x> <urn:y> <urn:z> }"));
    assert!(why.starts_with("bad request: malformed query: "), "{why}");
    let long = format!(
        "{PREFIXES}SELECT * WHERE {{ ?s ?p ?o }} # {}",
        "x".repeat(16 * 1024)
    );
    let why = refused(ask(&long));
    assert_eq!(
        why,
        format!(
            "bad request: the query is {} bytes; the limit is 16384",
            long.len()
        )
    );
    // A cross product of every triple with itself four times over is stopped at the limit.
    let endless = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }";
    let why = refused(ask(endless));
    assert_eq!(
        why,
        "bad request: the query ran past its time limit of 1 s and was stopped"
    );
    let unanswerable = node.agora(&["query", endless]);
    assert_eq!(unanswerable.status.code(), Some(2), "{unanswerable:?}");
    assert!(
        String::from_utf8_lossy(&unanswerable.stderr)
            .starts_with("error: the query ran past its time limit of 1 s and was stopped\n"),
        "{unanswerable:?}"
    );
    // The stopped queries' threads end at their next check of the cancellation, and give
    // their slots back: then the node answers again, and its graph is as it was.
    let query = by_category_and_tag("ai-agents", "rdf");
    process::wait_until("SPARQL answers again", || {
        let out = node.agora(&["--json", "query", &query]);
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    });
    assert_eq!(names(&node, &query), after_yank);

    // The exports: N-Triples, Turtle and JSON-LD hold the same triples.
    let nt = work.path().join("catalog.nt");
    let summary = node.json(&[
        "export",
        "--format",
        "ntriples",
        "--output",
        nt.to_str().unwrap(),
    ]);
    let triples = summary["triples"].as_u64().unwrap() as usize;
    let written = std::fs::read(&nt).unwrap();
    assert_eq!(summary["bytes"].as_u64().unwrap(), written.len() as u64);
    assert_eq!(count_triples(RdfFormat::NTriples, &written), triples);
    let text = String::from_utf8(written).unwrap();
    assert!(text.contains(
        "<urn:agora:package:agent-memory-forge> <http://usefulinc.com/ns/doap#name> \"agent-memory-forge\" .\n"
    ));
    let turtle = node.agora(&["export"]);
    assert!(turtle.status.success());
    assert_eq!(count_triples(RdfFormat::Turtle, &turtle.stdout), triples);
    let jsonld = node.agora(&["export", "--format", "jsonld"]);
    assert!(jsonld.status.success());
    let jsonld_format = RdfFormat::JsonLd {
        profile: JsonLdProfileSet::empty(),
    };
    assert_eq!(count_triples(jsonld_format, &jsonld.stdout), triples);

    // After a restart the graph is built again from the catalog, the same.
    node.stop();
    node.launch();
    assert_eq!(
        names(&node, &by_category_and_tag("ai-agents", "rdf")),
        after_yank
    );
    assert_eq!(names(&node, CYCLES), ["cycle-a", "cycle-b"]);
    let again = node.json(&[
        "export",
        "--format",
        "ntriples",
        "--output",
        nt.to_str().unwrap(),
    ]);
    assert_eq!(again["triples"].as_u64().unwrap() as usize, triples);
}
