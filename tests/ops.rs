//! Operations, with real `agorad` processes: OTLP export to a receiver in the test (the real
//! OTLP/HTTP protobuf protocol), the Prometheus endpoint, health and readiness probes, the
//! read-only JSON API and archive downloads, `agora status` and `agora node log-level`.

mod process;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use process::{Daemon, package, wait_until};
use prost::Message;
use serde_json::Value;
use sha2::Digest;

/// What the OTLP receiver got.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    resources: Vec<Vec<KeyValue>>,
    /// Metric name → latest value of its (single) data point, for sums and gauges.
    metrics: HashMap<String, f64>,
    histograms: HashMap<String, u64>,
}

/// An OTLP/HTTP receiver (`/v1/traces`, `/v1/metrics`, protobuf bodies) on a loopback port.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Received>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Self {
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::routing::post;

        type Shared = Arc<Mutex<Received>>;
        async fn traces(State(got): State<Shared>, body: Bytes) -> Vec<u8> {
            let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
            let mut got = got.lock().unwrap();
            for rs in req.resource_spans {
                got.resources
                    .push(rs.resource.map(|r| r.attributes).unwrap_or_default());
                for ss in rs.scope_spans {
                    got.spans.extend(ss.spans);
                }
            }
            Vec::new() // an empty ExportTraceServiceResponse
        }
        async fn metrics(State(got): State<Shared>, body: Bytes) -> Vec<u8> {
            let req = ExportMetricsServiceRequest::decode(body).expect("an OTLP metrics export");
            let mut got = got.lock().unwrap();
            for rm in req.resource_metrics {
                for sm in rm.scope_metrics {
                    for m in sm.metrics {
                        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as V;
                        let number =
                            |p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint| match p
                                .value
                            {
                                Some(V::AsInt(i)) => i as f64,
                                Some(V::AsDouble(d)) => d,
                                None => f64::NAN,
                            };
                        match &m.data {
                            Some(metric::Data::Sum(s)) => {
                                if let Some(p) = s.data_points.first() {
                                    got.metrics.insert(m.name.clone(), number(p));
                                }
                            }
                            Some(metric::Data::Gauge(g)) => {
                                for p in &g.data_points {
                                    let label = p
                                        .attributes
                                        .iter()
                                        .find(|kv| kv.key == "name")
                                        .map(|kv| text(kv.value.as_ref()))
                                        .unwrap_or_default();
                                    got.metrics
                                        .insert(format!("{}{{{label}}}", m.name), number(p));
                                }
                            }
                            Some(metric::Data::Histogram(h)) => {
                                let count = h.data_points.iter().map(|p| p.count).sum();
                                got.histograms.insert(m.name.clone(), count);
                            }
                            _ => {}
                        }
                    }
                }
            }
            Vec::new()
        }

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let got: Shared = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .with_state(got.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            got,
            _runtime: runtime,
        }
    }
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

#[test]
fn a_daemon_exports_the_spans_of_a_publish_and_a_search_and_its_metrics_over_otlp() {
    let receiver = Receiver::start();
    let endpoint = format!("http://{}", receiver.addr);
    let node = Daemon::with_env_and_args(
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--otlp-endpoint",
            &endpoint,
        ],
    );
    node.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    package(src.path(), "otel-demo", "1.2.3", "", "traced");
    node.json(&["publish", src.path().to_str().unwrap()]);
    let found = node.json(&["search", "otel-demo"]);
    assert_eq!(found["total"], 1);
    let peer_id = node.json(&["status"])["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let find = |got: &Received, name: &str| -> Option<Span> {
        got.spans.iter().find(|s| s.name == name).cloned()
    };
    // A parent ends after its children, so it may come in a later export: wait for all.
    wait_until("the publish and search spans reach the receiver", || {
        let got = receiver.got.lock().unwrap();
        let requests: Vec<String> = got
            .spans
            .iter()
            .filter(|s| s.name == "ipc.request")
            .map(|s| attrs(s)["request"].clone())
            .collect();
        let have = |r: &str| requests.iter().any(|x| x == r);
        match (
            find(&got, "registry.publish"),
            find(&got, "registry.search"),
        ) {
            (Some(_), Some(_)) if have("publish") && have("search") => Ok(()),
            _ => Err(format!(
                "spans so far: {:?}",
                got.spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )),
        }
    });
    let got = receiver.got.lock().unwrap();
    let publish = find(&got, "registry.publish").unwrap();
    let a = attrs(&publish);
    assert_eq!(a["package"], "otel-demo");
    assert_eq!(a["version"], "1.2.3");
    assert_eq!(a["outcome"], "ok");
    assert_eq!(a["gossiped"], "false");
    assert!(a["bytes"].parse::<u64>().unwrap() > 0, "{a:?}");

    let search = find(&got, "registry.search").unwrap();
    let a = attrs(&search);
    assert_eq!(a["query"], "otel-demo");
    assert_eq!((a["hits"].as_str(), a["total"].as_str()), ("1", "1"));

    // Each sits under the IPC request that asked for it, in the same trace.
    for (child, request) in [(&publish, "publish"), (&search, "search")] {
        let parent = got
            .spans
            .iter()
            .find(|s| s.span_id == child.parent_span_id)
            .unwrap_or_else(|| panic!("the parent of {} was exported", child.name));
        assert_eq!(parent.name, "ipc.request");
        assert_eq!(parent.trace_id, child.trace_id);
        let a = attrs(parent);
        assert_eq!(
            (a["request"].as_str(), a["outcome"].as_str()),
            (request, "ok")
        );
        assert!(a["request_id"].parse::<u64>().unwrap() >= 1);
    }
    // The publish's DHT put is a child of the publish.
    let put = got
        .spans
        .iter()
        .find(|s| s.name == "dht.query" && attrs(s)["kind"] == "put_record")
        .expect("a put_record query span");
    assert_eq!(put.parent_span_id, publish.span_id);
    assert!(attrs(put)["key"].contains("otel-demo"), "{:?}", attrs(put));

    let resource: HashMap<String, String> = got.resources[0]
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect();
    assert_eq!(resource["service.name"], "agorad");
    assert_eq!(resource["service.instance.id"], peer_id);
    drop(got);

    wait_until("the metrics reach the receiver", || {
        let got = receiver.got.lock().unwrap();
        let searches = got.metrics.get("agora.searches").copied();
        let publishes = got.metrics.get("agora.publishes").copied();
        let packages = got.metrics.get("agora.gauges{packages}").copied();
        let timed = got.histograms.get("agora.search.duration").copied();
        if (searches, publishes, packages, timed) == (Some(1.0), Some(1.0), Some(1.0), Some(1)) {
            Ok(())
        } else {
            Err(format!(
                "searches {searches:?}, publishes {publishes:?}, packages {packages:?}, search histogram {timed:?}"
            ))
        }
    });

    // A second node joins after the publish: the release reaches it by sync, and it fetches
    // the archive from the first node. Its own receiver tells its spans apart.
    let receiver2 = Receiver::start();
    let endpoint2 = format!("http://{}", receiver2.addr);
    let seed = node.address();
    let node2 = Daemon::with_env_and_args(
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--otlp-endpoint",
            &endpoint2,
            "--bootstrap",
            &seed,
        ],
    );
    wait_until("node 2 has the release", || {
        match node2.json(&["search", "otel-demo"])["total"].as_u64() {
            Some(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let fetched = node2
        .client()
        .fetch("otel-demo", "1.2.3", |_| {})
        .expect("node 2 fetches the archive");
    assert!(!fetched.cached);
    let size = fetched.size.to_string();
    wait_until("node 2's sync and fetch spans reach its receiver", || {
        let got = receiver2.got.lock().unwrap();
        let names: Vec<&str> = got.spans.iter().map(|s| s.name.as_str()).collect();
        let synced = got
            .spans
            .iter()
            .any(|s| s.name == "sync" && attrs(s)["added"] == "1");
        if synced && names.contains(&"registry.fetch") && names.contains(&"fetch.provider") {
            Ok(())
        } else {
            Err(format!("spans so far: {names:?}"))
        }
    });
    let got = receiver2.got.lock().unwrap();
    let sync = got
        .spans
        .iter()
        .find(|s| s.name == "sync" && attrs(s)["added"] == "1")
        .unwrap();
    let a = attrs(sync);
    assert_eq!(
        (
            a["peer"].as_str(),
            a["outcome"].as_str(),
            a["refused"].as_str()
        ),
        (peer_id.as_str(), "ok", "0")
    );
    let fetch = got
        .spans
        .iter()
        .find(|s| s.name == "registry.fetch")
        .unwrap();
    let a = attrs(fetch);
    assert_eq!(
        (
            a["package"].as_str(),
            a["version"].as_str(),
            a["cached"].as_str(),
            a["providers"].as_str(),
            a["bytes"].as_str(),
            a["outcome"].as_str()
        ),
        ("otel-demo", "1.2.3", "false", "1", size.as_str(), "ok")
    );
    let provider = got
        .spans
        .iter()
        .find(|s| s.name == "fetch.provider")
        .unwrap();
    assert_eq!(provider.parent_span_id, fetch.span_id);
    let a = attrs(provider);
    assert_eq!(
        (
            a["peer"].as_str(),
            a["bytes"].as_str(),
            a["failures"].as_str(),
            a["outcome"].as_str()
        ),
        (peer_id.as_str(), size.as_str(), "0", "served")
    );
    assert!(
        got.spans.iter().any(|s| s.name == "dht.query"
            && s.parent_span_id == fetch.span_id
            && attrs(s)["kind"] == "get_providers"),
        "the provider lookup is part of the fetch"
    );
}

fn get(url: &str) -> reqwest::blocking::Response {
    reqwest::blocking::get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn get_json(url: &str) -> (u16, Value) {
    let r = get(url);
    let status = r.status().as_u16();
    (status, serde_json::from_slice(&r.bytes().unwrap()).unwrap())
}

/// Scrapes `/metrics`, checks it parses as Prometheus text, and returns name{labels} → value.
fn scrape(base: &str) -> HashMap<String, f64> {
    let r = get(&format!("{base}/metrics"));
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    let body = r.text().unwrap();
    assert!(
        body.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => {
                    f64::NAN
                }
            };
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect()
}

fn http_base(node: &Daemon) -> String {
    let s = node.json(&["status"]);
    format!("http://{}", s["http"].as_str().expect("the gateway is on"))
}

/// Finding 9 of the audit: a web page could reach the gateway (its own `Host` by DNS
/// rebinding, or a cross-site request from the browser) and make the node look up and fetch
/// names, or read its JSON and metrics. Only the gateway's own hosts and pages are answered.
#[test]
fn the_gateway_answers_only_its_own_hosts_and_pages() {
    let node = Daemon::with_env_and_args(
        &[("AGORA_HTTP_HOSTS", "agora.lan")],
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--http",
            "127.0.0.1:0",
        ],
    );
    let base = http_base(&node);
    let port = base.rsplit(':').next().unwrap().to_owned();
    let client = reqwest::blocking::Client::new();
    let ask = |path: &str, headers: &[(&str, String)]| {
        let mut r = client.get(format!("{base}{path}"));
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        let body = r.text().unwrap();
        (status, body)
    };
    let error = |body: &str| -> (String, String) {
        let v: Value = serde_json::from_str(body).unwrap();
        (
            v["error"].as_str().unwrap().to_owned(),
            v["message"].as_str().unwrap().to_owned(),
        )
    };
    let lookup = "/v1/packages/nowhere-to-be-found/1.0.0/archive";

    let evil_host = [("host", format!("evil.example:{port}"))];
    for path in ["/metrics", "/v1/packages?q=x", lookup] {
        let (status, body) = ask(path, &evil_host);
        assert_eq!(status, 421, "{path}: {body}");
        assert_eq!(
            error(&body),
            (
                "misdirected".into(),
                format!(
                    "this gateway does not answer for host \"evil.example:{port}\": it answers \
                     for localhost, IP addresses and the names in http_hosts (config.toml)"
                )
            )
        );
    }
    let (status, body) = ask(lookup, &[("origin", "http://evil.example".into())]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        error(&body),
        (
            "forbidden".into(),
            "requests from the web page at \"http://evil.example\" are refused: only the \
             gateway's own pages may call it"
                .into()
        )
    );
    let (status, body) = ask(lookup, &[("sec-fetch-site", "cross-site".into())]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(error(&body).0, "forbidden");

    // What it does answer: its loopback address, localhost and a configured name, from its
    // own pages. The lookup runs and finds nothing (404, not a refusal).
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("agora.lan:{port}"),
    ] {
        let (status, body) = ask(
            lookup,
            &[("host", host.clone()), ("origin", format!("http://{host}"))],
        );
        assert_eq!(status, 404, "{host}: {body}");
        assert_eq!(error(&body).0, "not_found", "{host}");
    }
    let (status, _) = ask("/metrics", &[("sec-fetch-site", "same-origin".into())]);
    assert_eq!(status, 200);
}

/// Finding 13 of the audit: each search through the gateway started its own blocking task on
/// tokio's pool of up to 512 threads, so 64 clients searching at once took the daemon from 5
/// to over 130 threads (and its memory with them, kept after the load). The blocking pool is
/// bounded: the same load adds at most its bound of threads.
#[test]
fn a_burst_of_searches_adds_no_more_threads_than_the_blocking_pool_allows() {
    let node = Daemon::with_args(&["--http", "127.0.0.1:0"]);
    let base = http_base(&node);
    let threads = || {
        std::fs::read_dir(format!("/proc/{}/task", node.pid()))
            .unwrap()
            .count()
    };
    // Idle: the start-up's own blocking work done.
    let (status, _) = get_json(&format!("{base}/v1/packages?q=warm"));
    assert_eq!(status, 200);
    let idle = threads();
    std::thread::scope(|scope| {
        for c in 0..64 {
            let url = format!("{base}/v1/packages?q=burst{c}");
            scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                for _ in 0..20 {
                    let r = client.get(&url).send().unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                }
            });
        }
    });
    let bound = agora_daemon::app::runtime::max_blocking_threads();
    let after = threads();
    assert!(
        after <= idle + bound,
        "{idle} threads idle, {after} after 1,280 searches from 64 clients (bound {bound})"
    );
}

#[test]
fn gateway_probes_metrics_json_api_and_downloads_match_the_cli() {
    // Node A: the seed. Its address is fixed after the first start, so it can come back on it.
    let mut a = Daemon::with_args(&["--http", "127.0.0.1:0"]);
    let a_addr = a.address();
    let a_base = http_base(&a);
    let (status, ready) = get_json(&format!("{a_base}/readyz"));
    assert_eq!(
        status, 200,
        "a node without bootstrap peers is ready: {ready}"
    );
    assert_eq!(ready["bootstrapped"], true);
    assert_eq!(ready["search_index"], "ready");
    let listen = a_addr.split("/p2p/").next().unwrap().to_owned();
    a.stop();
    a.args = ["--listen", &listen, "--no-mdns", "--http", "127.0.0.1:0"]
        .map(String::from)
        .to_vec();

    // Node B starts while its bootstrap peer is down: alive, but not ready.
    let b = Daemon::with_args(&["--http", "127.0.0.1:0", "--bootstrap", &a_addr]);
    let b_base = http_base(&b);
    assert_eq!(get(&format!("{b_base}/healthz")).status().as_u16(), 200);
    let (status, ready) = get_json(&format!("{b_base}/readyz"));
    assert_eq!(status, 503);
    assert_eq!(
        (
            &ready["ready"],
            &ready["socket"],
            &ready["listening"],
            &ready["bootstrapped"]
        ),
        (
            &Value::Bool(false),
            &Value::Bool(true),
            &Value::Bool(true),
            &Value::Bool(false)
        )
    );
    // Log level: raise B's to debug at run time; its next connection is logged at debug.
    let before = b.json(&["node", "logs", "-n", "100000"]);
    assert!(
        !before["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("DEBUG")),
        "no debug lines at the info level"
    );
    let bad = b.agora(&["node", "log-level", "agora_daemon=loud"]);
    assert_eq!(bad.status.code(), Some(2), "a bad filter is a bad request");
    assert_eq!(b.json(&["status"])["log_level"], "info");
    assert_eq!(
        b.json(&["node", "log-level", "debug"])["log_level"],
        "debug"
    );
    assert_eq!(b.json(&["status"])["log_level"], "debug");

    // A comes back on its address; B keeps trying and gets ready.
    a.launch();
    wait_until("B is ready once its bootstrap peer is up", || {
        let (status, ready) = get_json(&format!("{b_base}/readyz"));
        if status == 200 && ready["ready"] == true && ready["routing_table"].as_u64() >= Some(1) {
            Ok(())
        } else {
            Err(format!("{status} {ready}"))
        }
    });
    let logs = b.json(&["node", "logs", "-n", "100000"]);
    assert!(
        logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("DEBUG")),
        "debug lines once the level is debug"
    );

    // Metrics move with a publish and a search.
    let a_base = http_base(&a);
    let m0 = scrape(&a_base);
    assert!(
        m0.keys().any(|k| k.starts_with("libp2p_")),
        "libp2p's own metrics are exposed"
    );
    let key = |name: &str| format!("{name}{{}}");
    assert_eq!(m0[&key("agora_publishes_total")], 0.0);
    let searches0 = m0[&key("agora_searches_total")];
    a.json(&["keygen"]);
    let src = tempfile::tempdir().unwrap();
    package(src.path(), "http-demo", "0.3.0", "", &"x".repeat(300_000));
    a.json(&["publish", src.path().to_str().unwrap()]);
    a.json(&["search", "http-demo"]);
    let m1 = scrape(&a_base);
    assert_eq!(m1[&key("agora_publishes_total")], 1.0);
    assert_eq!(m1[&key("agora_searches_total")], searches0 + 1.0);
    assert_eq!(m1[&key("agora_packages")], 1.0);
    assert!(m1[&key("agora_store_bytes")] > 0.0);
    assert_eq!(m1[&key("agora_peers")], 1.0);
    // B's connection and the publish went through A's event loop.
    assert!(m1[&key("agora_event_loop_swarm_events_total")] >= 1.0);
    assert!(m1[&key("agora_event_loop_commands_total")] >= 1.0);
    // Its DHT store holds the release and its head (counted at the event loop's next tick).
    wait_until("the DHT store's records are counted", || {
        match scrape(&a_base)[&key("agora_dht_records")] {
            2.0 => Ok(()),
            other => Err(format!("{other} records")),
        }
    });

    // The JSON API answers what the CLI answers, on the node that has to fetch (B).
    wait_until("the release reaches B", || {
        match b.json(&["search", "http-demo"])["total"].as_u64() {
            Some(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    for (path, cli) in [
        ("/v1/packages?q=http-demo", vec!["search", "http-demo"]),
        ("/v1/packages/http-demo", vec!["info", "http-demo"]),
        (
            "/v1/packages/http-demo/versions",
            vec!["versions", "http-demo"],
        ),
        (
            "/v1/packages/http-demo/0.3.0",
            vec!["info", "http-demo@=0.3.0"],
        ),
    ] {
        let (status, body) = get_json(&format!("{b_base}{path}"));
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body, b.json(&cli), "{path}");
    }
    let (status, body) = get_json(&format!("{b_base}/v1/packages/no-such-thing"));
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = get_json(&format!("{b_base}/v2/nothing"));
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("no route /v2/nothing; the routes are /healthz"),
        "{body}"
    );
    let (status, body) = get_json(&format!("{b_base}/v1/packages?q=x&sort=price"));
    assert_eq!(
        (status, body["message"].as_str()),
        (
            400,
            Some("bad request: sort must be relevance, name or newest, not \"price\"")
        )
    );

    // The download: B fetches it from A; the bytes are A's archive, with its length and hash.
    let info = b.json(&["info", "http-demo"]);
    let sha = info["sha256"].as_str().unwrap();
    let r = get(&format!("{b_base}/v1/packages/http-demo/0.3.0/archive"));
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-agora-sha256"], sha);
    assert_eq!(r.headers()["content-type"], "application/gzip");
    let length: u64 = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(Some(length), info["size"].as_u64());
    let bytes = r.bytes().unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sha);
    let on_a = std::fs::read(a.home.path().join("data/blobs").join(&sha[..2]).join(sha)).unwrap();
    assert_eq!(bytes.as_ref(), on_a.as_slice());

    // Status: what the issue lists, after one cache miss (the download) and one hit.
    b.client()
        .fetch("http-demo", "0.3.0", |_| {})
        .expect("a cached fetch");
    let s = b.json(&["status"]);
    assert_eq!(
        (s["cache_hits"].as_u64(), s["cache_misses"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(s["cache_bytes"].as_u64(), Some(length));
    assert_eq!(s["peers"], 1);
    assert!(s["routing_table"].as_u64() >= Some(1));
    assert_eq!(s["packages"], 1);
    assert_eq!(s["indexed"], 1);
    assert_eq!(s["search_index"], "ready");
    assert!(s["uptime_secs"].as_u64().is_some());
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    let human = b.agora(&["status"]);
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(text.contains("cache hits    50.0% (1 of 2)"), "{text}");
    assert!(text.contains("search        1 package indexed"), "{text}");
    assert!(text.contains(", 1 package\n"), "{text}");
    assert!(
        text.contains(&format!("http          {}", &b_base[7..])),
        "{text}"
    );
    let m = scrape(&b_base);
    assert_eq!(m[&key("agora_cache_hits_total")], 1.0);
    assert_eq!(m[&key("agora_fetches_total")], 1.0);
    assert_eq!(m[&key("agora_bytes_fetched_total")], length as f64);

    // Every series the Grafana dashboard plots is one this node exposes.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/grafana/dashboards/agora.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut wanted = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices(['a', 'l']) {
                let rest = &expr[i..];
                if (rest.starts_with("agora_") || rest.starts_with("libp2p_"))
                    && !expr[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                {
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    wanted.insert(rest[..end].to_owned());
                }
            }
        }
    }
    assert!(wanted.len() >= 20, "{wanted:?}");
    wait_until("every dashboard series is exposed", || {
        let text = get(&format!("{b_base}/metrics")).text().unwrap();
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|w| {
                !text
                    .lines()
                    .any(|l| l.starts_with(&format!("{w}{{")) || l.starts_with(&format!("{w} ")))
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}"))
        }
    });
}

#[test]
fn the_systemd_user_unit_passes_systemd_analyze_verify() {
    // The unit starts %h/.local/bin/agorad: give it a home where that is the built daemon.
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join(".local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(process::bin("agorad"), bin.join("agorad")).unwrap();
    let runtime = home.path().join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/agorad.service");
    let out = std::process::Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(&unit)
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, "", "verify warns about nothing");
}

#[test]
fn the_public_node_system_unit_passes_systemd_analyze_verify() {
    // The unit starts /usr/local/bin/agorad, which a test must not install: verify a copy that
    // starts the built daemon instead, and nothing else changed.
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/agora-relay.service"),
    )
    .unwrap();
    let exec = "ExecStart=/usr/local/bin/agorad\n";
    assert_eq!(
        unit.matches(exec).count(),
        1,
        "one ExecStart, of the installed agorad"
    );
    let built = format!("ExecStart={}\n", process::bin("agorad").display());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("agora-relay.service");
    std::fs::write(&copy, unit.replace(exec, &built)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, "", "verify warns about nothing");
}

#[test]
fn another_user_on_the_socket_is_refused_with_the_reason_and_the_daemon_keeps_serving() {
    // Acting as a second user needs root (this test's thread drops to `nobody`); the test
    // command (.ci/test) runs as root, as CI does.
    assert!(
        rustix::process::geteuid().is_root(),
        "this test acts as a second user and needs root: run the tests as root (sudo bash \
         .ci/test); the uid check alone is unit-tested by \
         ipc::tests::only_the_daemons_own_uid_is_let_in"
    );
    let node = Daemon::start(None);
    let socket = node.home.path().join("agorad.sock");
    // Open the way for the stranger: only the daemon's own uid check is left to refuse it.
    for (path, mode) in [(node.home.path(), 0o711), (socket.as_path(), 0o666)] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    const NOBODY: u32 = 65534;
    let stranger = {
        let socket = socket.clone();
        // Linux keeps credentials per thread; rustix changes only this thread's.
        std::thread::spawn(move || {
            rustix::thread::set_thread_gid(rustix::process::Gid::from_raw(NOBODY)).unwrap();
            rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(NOBODY)).unwrap();
            agora_client::Client::connect(&socket).map(|_| ())
        })
        .join()
        .unwrap()
    };
    match stranger {
        Err(agora_client::ClientError::Daemon(agora_client::ipc::IpcError::Refused(why))) => {
            assert_eq!(
                why,
                format!("this agorad belongs to uid 0; connections from uid {NOBODY} are refused")
            )
        }
        other => panic!("the stranger got {other:?}"),
    }
    // The refusal is logged with the uid, and the daemon goes on serving its own user.
    wait_until("the refusal is in the daemon's log", || {
        let log = logs(&node.data_dir());
        let line = log
            .lines()
            .find(|l| l.contains("refusing an IPC connection from another user"))
            .ok_or("not logged yet")?;
        assert!(line.contains(&format!("uid={NOBODY}")), "{line}");
        Ok(())
    });
    let status = node.json(&["status"]);
    assert_eq!(status["peer_id"].as_str().unwrap().len(), 52);
}

/// Everything the daemon has logged to files in `data_dir`.
fn logs(data_dir: &std::path::Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("agorad") && n.ends_with(".log"))
        {
            all.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    all
}
