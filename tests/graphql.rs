//! GraphQL on the gateway (docs/schema.graphql), with real clients against a real `agorad`
//! holding ggen's packages: queries answer what the JSON routes and the CLI answer; limits
//! refuse what is too deep or too large before it runs; the gateway's Host and Origin rules
//! hold; a subscription over WebSocket (graphql-transport-ws) hears a yank and a release as
//! the node admits them.

mod process;

use std::net::TcpStream;

use process::Daemon;
use process::ggen::publish_fixtures;
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

struct Gateway {
    base: String,
    web: reqwest::blocking::Client,
}

impl Gateway {
    fn of(node: &Daemon) -> Self {
        let http = node.json(&["status"])["http"].as_str().unwrap().to_string();
        Self {
            base: format!("http://{http}"),
            web: reqwest::blocking::Client::new(),
        }
    }

    /// POSTs `query` to /graphql; the whole response.
    fn graphql(&self, query: &str) -> Value {
        let got = self
            .web
            .post(format!("{}/graphql", self.base))
            .header("Content-Type", "application/json")
            .body(json!({ "query": query }).to_string())
            .send()
            .unwrap();
        assert_eq!(got.status(), 200);
        serde_json::from_slice(&got.bytes().unwrap()).unwrap()
    }

    /// The `data` of a query that must succeed.
    fn data(&self, query: &str) -> Value {
        let answer = self.graphql(query);
        assert!(answer.get("errors").is_none(), "{answer}");
        answer["data"].clone()
    }

    /// The one error of a query that must fail.
    fn error(&self, query: &str) -> Value {
        let answer = self.graphql(query);
        let errors = answer["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"));
        assert_eq!(errors.len(), 1, "{answer}");
        errors[0].clone()
    }

    fn json(&self, path: &str) -> Value {
        let got = self.web.get(format!("{}{path}", self.base)).send().unwrap();
        assert_eq!(got.status(), 200);
        serde_json::from_slice(&got.bytes().unwrap()).unwrap()
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect()
}

#[test]
fn graphql_answers_what_the_json_routes_answer_and_refuses_what_is_too_deep_or_too_large() {
    let node = Daemon::with_args(&["--http", "127.0.0.1:0"]);
    let work = tempfile::tempdir().unwrap();
    publish_fixtures(&node, work.path());
    let gw = Gateway::of(&node);

    // Search: every filter, the order, the page, the facets, as the JSON route gives them.
    let data = gw.data(
        r#"{ search(text: "agent", tag: "rdf", sort: NAME, limit: 2, offset: 1) {
               total hits { name version category tags publishedAt }
               categories { category packages } } }"#,
    );
    let route = gw.json("/v1/packages?q=agent&tag=rdf&sort=name&limit=2&offset=1");
    let search = &data["search"];
    assert_eq!(search["total"], route["total"]);
    assert_eq!(names(&search["hits"]), names(&route["hits"]));
    assert_eq!(
        names(&search["hits"]),
        ["agent-memory-forge", "agent-reasoning-mcp"]
    );
    assert_eq!(search["hits"][0]["category"], "ai-agents");
    assert_eq!(
        search["hits"][0]["publishedAt"],
        route["hits"][0]["published_at"]
    );
    assert_eq!(search["total"], 3);
    assert_eq!(
        search["categories"],
        json!([{ "category": "ai-agents", "packages": 3 }])
    );
    let data =
        gw.data(r#"{ search(category: "web", license: "MIT", author: "nobody") { total } }"#);
    assert_eq!(data["search"]["total"], 0);

    // A package with its versions, its newest release, and that release's dependencies
    // resolved to the releases an install would take.
    let data = gw.data(
        r#"{ package(name: "agent-reasoning-mcp") {
               name versions { version yanked yankReason equivocated }
               releases { version sha256 }
               latest { version category sha256 size
                        dependencies { name requirement release { name version } } } } }"#,
    );
    let package = &data["package"];
    assert_eq!(
        package["versions"],
        json!([{ "version": "1.0.0", "yanked": false, "yankReason": null, "equivocated": false }])
    );
    let info = node.json(&["info", "agent-reasoning-mcp"]);
    assert_eq!(
        package["releases"],
        json!([{ "version": "1.0.0", "sha256": info["sha256"] }])
    );
    assert_eq!(package["latest"]["sha256"], info["sha256"]);
    assert_eq!(package["latest"]["size"], info["size"]);
    assert_eq!(
        package["latest"]["dependencies"],
        json!([
            { "name": "agent-memory-forge", "requirement": "*",
              "release": { "name": "agent-memory-forge", "version": "1.0.0" } },
            { "name": "agent-context-crafter", "requirement": "*",
              "release": { "name": "agent-context-crafter", "version": "1.0.0" } },
        ])
    );
    let data = gw.data(
        r#"{ package(name: "no-such-package") { name }
             release(name: "agent-memory-forge", version: "9.9.9") { version }
             exact: release(name: "agent-memory-forge", version: "1.0.0") { version yanked } }"#,
    );
    assert_eq!(data["package"], Value::Null);
    assert_eq!(data["release"], Value::Null);
    assert_eq!(
        data["exact"],
        json!({ "version": "1.0.0", "yanked": false })
    );

    let data = gw.data("{ status { packages catalogSize version } peers { peerId } }");
    let status = node.json(&["status"]);
    assert_eq!(data["status"]["packages"], 6);
    assert_eq!(data["status"]["catalogSize"], status["catalog_size"]);
    assert_eq!(data["status"]["version"], status["version"]);
    assert_eq!(data["peers"], json!([]));

    // Refused before anything runs: a bad argument, too deep, too much.
    let e = gw.error("{ search(limit: 5000) { total } }");
    assert_eq!(e["extensions"]["kind"], "bad_request");
    assert_eq!(
        e["message"],
        "bad request: a search returns 1 to 1000 results at a time, not 5000"
    );
    // Deep but cheap: the schema's own description, type within type.
    let mut deep = String::from("name");
    for _ in 0..16 {
        deep = format!("ofType {{ {deep} }}");
    }
    let e = gw.error(&format!("{{ __schema {{ types {{ {deep} }} }} }}"));
    assert_eq!(e["message"], "Query is nested too deep.");
    let mut fits = String::from("name");
    for _ in 0..13 {
        fits = format!("ofType {{ {fits} }}");
    }
    gw.data(&format!("{{ __schema {{ types {{ {fits} }} }} }}"));
    let e = gw.error(
        "{ search(limit: 1000) { hits { release { dependencies { release { name } } } } } }",
    );
    assert_eq!(e["message"], "Query is too complex.");
    // Read-only: there is no mutation to run.
    let answer = gw.graphql("mutation { yank }");
    assert_eq!(answer["data"], Value::Null);
    let errors = answer["errors"].as_array().unwrap();
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e["message"] == "Schema is not configured for mutations."),
        "{answer}"
    );

    // GraphiQL, and the gateway's rules for pages of other sites.
    let page = gw.web.get(format!("{}/graphql", gw.base)).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("graphiql"));
    let foreign = gw
        .web
        .post(format!("{}/graphql", gw.base))
        .header("Content-Type", "application/json")
        .header("Origin", "http://evil.example")
        .body(json!({ "query": "{ status { packages } }" }).to_string())
        .send()
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let huge = gw
        .web
        .post(format!("{}/graphql", gw.base))
        .header("Content-Type", "application/json")
        .body(
            json!({ "query": format!("{{ status {{ packages }} }} #{}", "x".repeat(70_000)) })
                .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(huge.status(), 413);
    let garbled = gw
        .web
        .post(format!("{}/graphql", gw.base))
        .header("Content-Type", "application/json")
        .body("{ status }")
        .send()
        .unwrap();
    assert_eq!(garbled.status(), 400);
}

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// The next message of the subscription (pings answered on the way, and the releases of probe
/// packages that a wait for the subscription to listen published, left out).
fn next(socket: &mut Socket) -> Value {
    loop {
        match socket.read().unwrap() {
            Message::Text(text) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                let name = &message["payload"]["data"]["catalog"]["name"];
                if !name.as_str().is_some_and(|n| n.starts_with("probe-")) {
                    return message;
                }
            }
            Message::Ping(p) => socket.send(Message::Pong(p)).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_subscription_hears_yanks_and_releases_as_the_node_admits_them() {
    let node = Daemon::with_args(&["--http", "127.0.0.1:0"]);
    let work = tempfile::tempdir().unwrap();
    publish_fixtures(&node, work.path());
    let gw = Gateway::of(&node);

    let url = format!("{}/graphql/ws", gw.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    // A page of another site may not subscribe through the visitor's browser.
    let mut foreign = request.clone();
    foreign
        .headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    match tungstenite::connect(foreign) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("a foreign page's subscription was not refused: {other:?}"),
    }
    let (mut socket, response) = tungstenite::connect(request).unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    socket
        .send(Message::text(
            json!({ "type": "connection_init" }).to_string(),
        ))
        .unwrap();
    assert_eq!(next(&mut socket)["type"], "connection_ack");
    socket
        .send(Message::text(
            json!({ "id": "1", "type": "subscribe", "payload": {
                "query": "subscription { catalog { kind name version signer to } }" } })
            .to_string(),
        ))
        .unwrap();
    // The subscription starts listening when the server first polls it, which the protocol
    // does not acknowledge: releases of probe packages are published until one is heard.
    let MaybeTlsStream::Plain(tcp) = socket.get_mut() else {
        unreachable!("ws:// is plain TCP")
    };
    tcp.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let mut probes = 0;
    process::wait_until("the subscription hears a release", || {
        probes += 1;
        let dir = work.path().join(format!("probe-{probes}"));
        process::package(&dir, &format!("probe-{probes}"), "0.1.0", "", "probe");
        node.json(&["publish", dir.to_str().unwrap()]);
        match socket.read() {
            Ok(Message::Text(text)) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    event["payload"]["data"]["catalog"]["kind"], "RELEASE",
                    "{event}"
                );
                Ok(())
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e.to_string()),
        }
    });
    let MaybeTlsStream::Plain(tcp) = socket.get_mut() else {
        unreachable!("ws:// is plain TCP")
    };
    tcp.set_read_timeout(None).unwrap();

    node.json(&["yank", "agent-memory-forge@1.0.0", "--reason", "leaks"]);
    let publisher = node.json(&["status"])["publisher"]
        .as_str()
        .unwrap()
        .to_string();
    let event = next(&mut socket);
    assert_eq!(event["type"], "next", "{event}");
    assert_eq!(event["id"], "1");
    assert_eq!(
        event["payload"]["data"]["catalog"],
        json!({ "kind": "YANK", "name": "agent-memory-forge", "version": "1.0.0",
                "signer": publisher, "to": null })
    );
    let dir = work.path().join("fresh");
    process::package(&dir, "fresh-package", "0.1.0", "", "hello");
    node.json(&["publish", dir.to_str().unwrap()]);
    let event = next(&mut socket);
    assert_eq!(
        event["payload"]["data"]["catalog"],
        json!({ "kind": "RELEASE", "name": "fresh-package", "version": "0.1.0",
                "signer": publisher, "to": null })
    );
    socket
        .send(Message::text(
            json!({ "id": "1", "type": "complete" }).to_string(),
        ))
        .unwrap();
    socket.close(None).unwrap();
}
