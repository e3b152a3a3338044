//! GraphQL search against the JSON route for the same query, over HTTP on one gateway: a node
//! of `agora-testnet` seeded with `AGORA_BENCH_SEED` (default 2,000) releases, one keep-alive
//! connection, the two asked in turn (which goes first alternates), every field the JSON route
//! returns asked of GraphQL too. Prints p50 and p99 of each and their ratio.
//!
//! Run: `cargo build --release --workspace && cargo bench --bench graphql`.

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{bin, pct};

/// Runs of each query, each way.
const ROUNDS: usize = 200;
/// The searches, as words typed into `agora search`.
const QUERIES: [&str; 5] = ["quick", "service", "secure parser", "qiuck-servce", "templ"];
/// Results a page.
const LIMIT: u32 = 20;

fn main() {
    let seed = std::env::var("AGORA_BENCH_SEED").unwrap_or_else(|_| "2000".into());
    let mut testnet = Command::new(bin("agora-testnet"))
        .args(["--nodes", "1", "--seed", &seed, "--http", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(testnet.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let started: serde_json::Value = serde_json::from_str(&line).unwrap();
    let http = started["nodes"][0]["http"].as_str().unwrap().to_string();
    let web = reqwest::blocking::Client::new();

    let json_route = |q: &str| {
        let url = format!(
            "http://{http}/v1/packages?q={}&limit={LIMIT}",
            q.replace(' ', "+")
        );
        let got = web.get(url).send().unwrap();
        assert_eq!(got.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(&got.bytes().unwrap()).unwrap();
        body["hits"].as_array().unwrap().len()
    };
    let graphql = |q: &str| {
        let query = format!(
            "{{ search(text: \"{q}\", limit: {LIMIT}) {{ total categories {{ category packages }} \
             hits {{ name version description category author license tags publishedAt }} }} }}"
        );
        let got = web
            .post(format!("http://{http}/graphql"))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "query": query }).to_string())
            .send()
            .unwrap();
        assert_eq!(got.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(&got.bytes().unwrap()).unwrap();
        body["data"]["search"]["hits"].as_array().unwrap().len()
    };

    let (mut json_times, mut graphql_times) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for q in QUERIES {
            let timed = |f: &dyn Fn(&str) -> usize, into: &mut Vec<Duration>| {
                let started = Instant::now();
                let hits = f(q);
                into.push(started.elapsed());
                hits
            };
            let (a, b) = if round % 2 == 0 {
                let a = timed(&json_route, &mut json_times);
                (a, timed(&graphql, &mut graphql_times))
            } else {
                let b = timed(&graphql, &mut graphql_times);
                (timed(&json_route, &mut json_times), b)
            };
            assert_eq!(a, b, "the two answer {q:?} with as many hits");
        }
    }
    // SIGTERM: the testnet stops its node and removes its temporary home.
    let pid = rustix::process::Pid::from_child(&testnet);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(
        testnet.wait().unwrap().success(),
        "agora-testnet did not stop cleanly"
    );
    json_times.sort();
    graphql_times.sort();
    let (j50, g50) = (pct(&json_times, 0.5), pct(&graphql_times, 0.5));
    println!(
        "search over HTTP, {seed} releases, {} requests each: JSON route p50 {j50:.0?} p99 {:.0?}; \
         GraphQL p50 {g50:.0?} p99 {:.0?}; GraphQL / JSON p50 {:.2}x",
        json_times.len(),
        pct(&json_times, 0.99),
        pct(&graphql_times, 0.99),
        g50.as_secs_f64() / j50.as_secs_f64()
    );
}
