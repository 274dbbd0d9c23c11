//! Issue 3, the whole MCP surface through mcpd: resources, prompts, completions, logging,
//! progress, cancellation, server-to-client requests, pagination, the catalog cache and the
//! capability union.
//!
//! Tests named `peer_*` run server-everything (node) upstream and the official Python and
//! TypeScript SDK clients through `mcp-shim`; the others use the Rust fixture server, whose
//! `--record` file shows exactly what reached the upstream.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use mcpd_proto::ServerState;
use mcpd_tests::fixture;
use mcpd_tests::{
    PEER_TIMEOUT, Sdk, SdkClient, ShimClient, TIMEOUT, TestDaemon, eventually, peers,
};
use serde_json::{Value, json};
use tempfile::TempDir;

// ---- helpers ------------------------------------------------------------------------------

/// A daemon whose only upstream is server-everything on stdio, named `everything`, ready, and
/// past the `roots/list` it sends 350 ms after its handshake (which no client can answer yet),
/// so that this request never lands on a test's client.
fn daemon_with_everything() -> TestDaemon {
    let daemon =
        TestDaemon::start(json!({"mcpServers": {"everything": peers().everything_server()}}));
    daemon.wait_server_state("everything", ServerState::Ready);
    daemon.wait_log("Failed to request roots from client", PEER_TIMEOUT);
    daemon
}

/// A shim attached to `daemon`'s default profile, past the MCP handshake.
fn client(daemon: &TestDaemon) -> ShimClient {
    let mut shim = ShimClient::spawn(daemon, None);
    shim.initialize();
    shim
}

fn text_of(result: &Value) -> String {
    result["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn op<'a>(lines: &'a [Value], op: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["op"] == op)
        .unwrap_or_else(|| panic!("no {op:?} line in {lines:#?}"))
}

fn ops<'a>(lines: &'a [Value], op: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["op"] == op).collect()
}

/// What a fixture server received (`--record`), one JSON message a line.
struct Record {
    _dir: TempDir,
    path: PathBuf,
}

impl Record {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("received");
        Self { _dir: dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }

    fn messages(&self) -> Vec<Value> {
        fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn with_method(&self, method: &str) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| m["method"] == method)
            .collect()
    }

    /// Waits for a message with `method` for which `pred` holds, and returns it.
    fn wait_for(&self, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(
            TIMEOUT,
            &format!("the upstream to receive {method}"),
            || self.with_method(method).into_iter().find(|m| pred(m)),
        )
    }

    /// The upstream's id of the `tools/call` of fixture tool `name` whose `arguments.ms` is `ms`.
    fn call_id(&self, name: &str, ms: u64) -> Value {
        self.wait_for("tools/call", |m| {
            m["params"]["name"] == name && m["params"]["arguments"]["ms"] == ms
        })["id"]
            .clone()
    }
}

/// A fixture `mcpServers` entry with `flags` and extra entry settings.
fn fixture_server(flags: &[&str], settings: Value) -> Value {
    let mut server = fixture::server(flags);
    if let (Some(s), Some(extra)) = (server.as_object_mut(), settings.as_object()) {
        s.extend(extra.clone());
    }
    server
}

// ---- server-everything with the SDK clients ----------------------------------------------

const ARCHITECTURE: &str = "demo://resource/static/document/architecture.md";
const FEATURES: &str = "demo://resource/static/document/features.md";

fn uses_resources_prompts_completions_and_logging(sdk: Sdk) {
    let daemon = daemon_with_everything();
    let lines = SdkClient::spawn(
        sdk,
        &daemon,
        &json!([
            {"op": "list_resources"},
            {"op": "list_resource_templates"},
            {"op": "read_resource", "uri": ARCHITECTURE},
            {"op": "read_resource", "uri": "demo://resource/dynamic/text/7"},
            {"op": "subscribe", "uri": ARCHITECTURE},
            {"op": "unsubscribe", "uri": ARCHITECTURE},
            {"op": "list_prompts"},
            {"op": "get_prompt", "name": "everything__simple-prompt"},
            {"op": "get_prompt", "name": "everything__args-prompt", "arguments": {"city": "Lyon"}},
            {"op": "complete", "ref": {"type": "ref/prompt", "name": "everything__completable-prompt"},
             "argument": {"name": "department", "value": "Eng"}},
            {"op": "complete", "ref": {"type": "ref/prompt", "name": "everything__completable-prompt"},
             "argument": {"name": "name", "value": ""}, "context": {"department": "Sales"}},
            {"op": "complete", "ref": {"type": "ref/resource", "uri": "demo://resource/dynamic/text/{resourceId}"},
             "argument": {"name": "resourceId", "value": "12"}},
            {"op": "set_level", "level": "warning"},
        ]),
    )
    .finish(PEER_TIMEOUT);

    let init = op(&lines, "initialize");
    assert_eq!(
        init["capabilities"]["resources"]["subscribe"], true,
        "{init}"
    );
    assert!(init["capabilities"]["logging"].is_object(), "{init}");

    let resources = &op(&lines, "list_resources")["resources"];
    for uri in [ARCHITECTURE, FEATURES] {
        assert!(
            resources
                .as_array()
                .is_some_and(|r| r.contains(&json!(uri))),
            "{uri} missing: {resources}"
        );
    }
    let templates = &op(&lines, "list_resource_templates")["templates"];
    assert_eq!(
        templates,
        &json!([
            "demo://resource/dynamic/text/{resourceId}",
            "demo://resource/dynamic/blob/{resourceId}"
        ])
    );
    let reads = ops(&lines, "read_resource");
    let doc = reads[0]["contents"][0]["text"].as_str().unwrap_or_default();
    assert!(doc.contains("Architecture"), "{doc}");
    let dynamic = reads[1]["contents"][0]["text"].as_str().unwrap_or_default();
    assert!(
        dynamic.starts_with("Resource 7: This is a plaintext resource"),
        "{dynamic}"
    );

    let prompts = &op(&lines, "list_prompts")["prompts"];
    assert_eq!(
        prompts,
        &json!([
            "everything__simple-prompt",
            "everything__args-prompt",
            "everything__completable-prompt",
            "everything__resource-prompt"
        ])
    );
    let got = ops(&lines, "get_prompt");
    assert_eq!(
        got[0]["messages"][0]["content"]["text"],
        "This is a simple prompt without arguments."
    );
    assert_eq!(
        got[1]["messages"][0]["content"]["text"],
        "What's weather in Lyon?"
    );

    let completions = ops(&lines, "complete");
    assert_eq!(completions[0]["values"], json!(["Engineering"]));
    assert_eq!(completions[1]["values"], json!(["David", "Eve", "Frank"]));
    assert_eq!(completions[2]["values"], json!(["12"]));
    assert!(lines.iter().any(|l| l["op"] == "set_level"));
}

#[test]
fn peer_python_client_uses_resources_prompts_completions_and_logging() {
    uses_resources_prompts_completions_and_logging(Sdk::Python);
}

#[test]
fn peer_typescript_client_uses_resources_prompts_completions_and_logging() {
    uses_resources_prompts_completions_and_logging(Sdk::TypeScript);
}

#[test]
fn peer_resource_updates_reach_only_the_sessions_subscribed_to_them() {
    let daemon = daemon_with_everything();
    let mut a = SdkClient::spawn(
        Sdk::Python,
        &daemon,
        &json!([
            {"op": "subscribe", "uri": ARCHITECTURE},
            {"op": "wait_stdin"},
            {"op": "call_tool", "name": "everything__toggle-subscriber-updates"},
            {"op": "wait_notification", "method": "notifications/resources/updated"},
            {"op": "received"},
        ]),
    );
    let mut b = SdkClient::spawn(
        Sdk::TypeScript,
        &daemon,
        &json!([
            {"op": "wait_stdin"},
            {"op": "subscribe", "uri": FEATURES},
            {"op": "wait_stdin"},
            {"op": "wait_notification", "method": "notifications/resources/updated"},
            {"op": "received"},
        ]),
    );
    // A subscribes first, so the server sends A's update before B's in each round: had mcpd
    // sent A's to B as well, B would have it first.
    a.wait_for_op("wait_stdin", PEER_TIMEOUT);
    b.wait_for_op("wait_stdin", PEER_TIMEOUT);
    b.release();
    b.wait_for_op("wait_stdin", PEER_TIMEOUT);
    b.release();
    a.release();

    for (client, uri) in [(a, ARCHITECTURE), (b, FEATURES)] {
        let lines = client.finish(PEER_TIMEOUT);
        let first = &op(&lines, "wait_notification")["notification"];
        assert_eq!(first["params"]["uri"], uri, "{first}");
        let updated: Vec<&Value> = op(&lines, "received")["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["method"] == "notifications/resources/updated")
            .collect();
        assert!(!updated.is_empty());
        assert!(
            updated.iter().all(|n| n["params"]["uri"] == uri),
            "{updated:?}"
        );
    }
}

#[test]
fn peer_log_messages_reach_the_sessions_whose_level_admits_them() {
    let daemon = daemon_with_everything();
    // server-everything logs "Received Subscribe Resource request" at level info, before it
    // answers the subscribe: a session at level error must not get it, one at info must.
    let mut quiet = SdkClient::spawn(
        Sdk::Python,
        &daemon,
        &json!([
            {"op": "set_level", "level": "error"},
            {"op": "wait_stdin"},
            {"op": "subscribe", "uri": ARCHITECTURE},
            {"op": "received"},
        ]),
    );
    quiet.wait_for_op("wait_stdin", PEER_TIMEOUT);
    let chatty = SdkClient::spawn(
        Sdk::TypeScript,
        &daemon,
        &json!([
            {"op": "set_level", "level": "info"},
            {"op": "wait_stdin"},
            {"op": "wait_notification", "method": "notifications/message"},
        ]),
    );
    let mut chatty = chatty;
    chatty.wait_for_op("wait_stdin", PEER_TIMEOUT);
    chatty.release();
    quiet.release();

    let quiet_lines = quiet.finish(PEER_TIMEOUT);
    let chatty_lines = chatty.finish(PEER_TIMEOUT);
    let message = &op(&chatty_lines, "wait_notification")["notification"];
    assert_eq!(message["params"]["level"], "info", "{message}");
    assert!(
        message["params"]["data"]
            .as_str()
            .unwrap_or_default()
            .contains("Received Subscribe Resource request"),
        "{message}"
    );
    let logs: Vec<&Value> = op(&quiet_lines, "received")["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["method"] == "notifications/message")
        .collect();
    assert!(logs.is_empty(), "a session at level error got {logs:?}");
}

#[test]
fn peer_progress_of_a_long_running_operation_reaches_only_the_calling_client() {
    let daemon = daemon_with_everything();
    // Both SDKs use the request id as the progress token: both clients' tokens are 1, and
    // mcpd must keep them apart.
    let call = |duration: f64, steps: u64| {
        json!([
            {"op": "wait_stdin"},
            {"op": "call_tool", "name": "everything__trigger-long-running-operation",
             "arguments": {"duration": duration, "steps": steps}, "progress": true},
        ])
    };
    let mut a = SdkClient::spawn(Sdk::Python, &daemon, &call(1.0, 2));
    let mut b = SdkClient::spawn(Sdk::TypeScript, &daemon, &call(1.5, 3));
    a.wait_for_op("wait_stdin", PEER_TIMEOUT);
    b.wait_for_op("wait_stdin", PEER_TIMEOUT);
    a.release();
    b.release();

    for (client, steps) in [(a, 2u64), (b, 3)] {
        let lines = client.finish(PEER_TIMEOUT);
        let result = op(&lines, "call_tool");
        assert_eq!(result["isError"], false, "{result}");
        // Python reports numbers as floats, TypeScript as integers.
        let got: Vec<(f64, f64)> = result["progress"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["progress"].as_f64().unwrap_or(-1.0),
                    p["total"].as_f64().unwrap_or(-1.0),
                )
            })
            .collect();
        // The TypeScript SDK sometimes drops the last notification, which arrives just before
        // the result (it does so talking to server-everything directly, too): what arrived is
        // this call's own progress, in order, from the first step on.
        let expected: Vec<(f64, f64)> = (1..=steps).map(|i| (i as f64, steps as f64)).collect();
        assert!(
            !got.is_empty() && got.len() + 1 >= expected.len() && expected.starts_with(&got),
            "expected {expected:?}, got {got:?}: {result}"
        );
    }
}

/// Two SDK clients with the same callback kind, A Python and B TypeScript, each answering
/// with its own marker; A calls `tool` first, then B. Each call must be answered by its own
/// caller's callback, and each client must have been asked exactly once.
fn server_request_reaches_its_caller(
    tool: &str,
    callbacks: impl Fn(&str) -> Value,
    arguments: Value,
) {
    let daemon = daemon_with_everything();
    let steps = |first: bool| {
        let call = json!({"op": "call_tool", "name": tool, "arguments": arguments});
        if first {
            json!([call, {"op": "wait_stdin"}, {"op": "received"}])
        } else {
            json!([{"op": "wait_stdin"}, call, {"op": "received"}])
        }
    };
    let cb_a = callbacks("from-client-a").to_string();
    let cb_b = callbacks("from-client-b").to_string();
    let mut b = SdkClient::spawn_with(
        Sdk::TypeScript,
        &daemon,
        &steps(false),
        &["--callbacks", &cb_b],
    );
    b.wait_for_op("wait_stdin", PEER_TIMEOUT);
    let mut a = SdkClient::spawn_with(Sdk::Python, &daemon, &steps(true), &["--callbacks", &cb_a]);
    let a_call = a.wait_for_op("call_tool", PEER_TIMEOUT);
    assert_eq!(a_call["isError"], false, "{a_call}");
    assert!(
        text_of(&a_call).contains("from-client-a"),
        "A's call was answered by: {a_call}"
    );
    b.release();
    let b_call = b.wait_for_op("call_tool", PEER_TIMEOUT);
    assert_eq!(b_call["isError"], false, "{b_call}");
    assert!(
        text_of(&b_call).contains("from-client-b"),
        "B's call was answered by: {b_call}"
    );
    a.release();
    for client in [a, b] {
        let lines = client.finish(PEER_TIMEOUT);
        let asked = &op(&lines, "received")["requests"];
        assert_eq!(asked.as_array().map(Vec::len), Some(1), "{asked}");
    }
}

#[test]
fn peer_sampling_request_reaches_the_client_whose_call_caused_it() {
    server_request_reaches_its_caller(
        "everything__trigger-sampling-request",
        |marker| json!({"sampling": {"text": marker}}),
        json!({"prompt": "hello", "maxTokens": 5}),
    );
}

#[test]
fn peer_elicitation_request_reaches_the_client_whose_call_caused_it() {
    server_request_reaches_its_caller(
        "everything__trigger-elicitation-request",
        |marker| json!({"elicitation": {"action": "accept", "content": {"name": marker}}}),
        json!({}),
    );
}

#[test]
fn peer_elicitation_is_never_sent_to_a_client_that_did_not_cause_it() {
    let daemon = daemon_with_everything();
    // B can answer elicitations but is idle; A cannot and calls the tool: A's call fails, and
    // B is never asked.
    let mut b = SdkClient::spawn_with(
        Sdk::TypeScript,
        &daemon,
        &json!([{"op": "wait_stdin"}, {"op": "received"}]),
        &[
            "--callbacks",
            r#"{"elicitation":{"action":"accept","content":{"name":"b"}}}"#,
        ],
    );
    b.wait_for_op("wait_stdin", PEER_TIMEOUT);
    let lines = SdkClient::spawn(
        Sdk::Python,
        &daemon,
        &json!([{"op": "call_tool", "name": "everything__trigger-elicitation-request"}]),
    )
    .finish(PEER_TIMEOUT);
    let call = op(&lines, "call_tool");
    assert_eq!(call["isError"], true, "{call}");
    assert!(text_of(call).contains("elicitation/create"), "{call}");
    b.release();
    let b_lines = b.finish(PEER_TIMEOUT);
    assert_eq!(op(&b_lines, "received")["requests"], json!([]));
}

#[test]
fn peer_roots_list_reaches_the_sdk_client_whose_call_caused_it() {
    let daemon = daemon_with_everything();
    let mut a = SdkClient::spawn_with(
        Sdk::Python,
        &daemon,
        &json!([{"op": "wait_stdin"}, {"op": "received"}]),
        &[
            "--callbacks",
            r#"{"roots":[{"uri":"file:///root-of-a","name":"a"}]}"#,
        ],
    );
    a.wait_for_op("wait_stdin", PEER_TIMEOUT);
    let lines = SdkClient::spawn_with(
        Sdk::TypeScript,
        &daemon,
        &json!([{"op": "call_tool", "name": "everything__get-roots-list"}, {"op": "received"}]),
        &[
            "--callbacks",
            r#"{"roots":[{"uri":"file:///root-of-b","name":"b"}]}"#,
        ],
    )
    .finish(PEER_TIMEOUT);
    let call = op(&lines, "call_tool");
    assert!(text_of(call).contains("file:///root-of-b"), "{call}");
    assert_eq!(
        op(&lines, "received")["requests"],
        json!([{"method": "roots/list"}])
    );
    a.release();
    assert_eq!(
        op(&a.finish(PEER_TIMEOUT), "received")["requests"],
        json!([])
    );
}

#[test]
fn peer_roots_list_with_no_request_in_flight_goes_to_the_session_that_last_changed_its_roots() {
    let daemon = daemon_with_everything();
    let roots = json!({"roots": {"listChanged": true}});
    let mut a = ShimClient::spawn(&daemon, None);
    a.initialize_with("2025-11-25", roots.clone());
    let mut b = ShimClient::spawn(&daemon, None);
    b.initialize_with("2025-11-25", roots);
    a.set_timeout(PEER_TIMEOUT);
    b.set_timeout(PEER_TIMEOUT);

    // B's call makes the server ask for roots: B answers.
    let call = b.send_request(
        "tools/call",
        Some(json!({"name": "everything__get-roots-list", "arguments": {}})),
    );
    let asked = b.wait_server_request("roots/list");
    b.respond(
        &asked["id"],
        json!({"roots": [{"uri": "file:///root-of-b"}]}),
    );
    let answer: Value = serde_json::from_str(&b.response_line(&json!(call))).expect("JSON");
    assert!(
        text_of(&answer["result"]).contains("file:///root-of-b"),
        "{answer}"
    );

    // A says its roots changed: the server asks again with nothing in flight, and A answers.
    a.notify("notifications/roots/list_changed", None);
    let asked = a.wait_server_request("roots/list");
    a.respond(
        &asked["id"],
        json!({"roots": [{"uri": "file:///root-of-a"}]}),
    );
    // The server keeps what A answered and then says so in a log message to every session
    // (B got one for its own answer before), and serves it to B's next call.
    b.wait_notification_count("notifications/message", 2);
    let again = b.call_tool("everything__get-roots-list", json!({}));
    assert!(text_of(&again).contains("file:///root-of-a"), "{again}");
    assert_eq!(b.server_requests().len(), 1, "{:?}", b.server_requests());
    assert_eq!(a.server_requests().len(), 1, "{:?}", a.server_requests());
}

// ---- the fixture: pagination, subscriptions, timeouts, cancellation ----------------------

#[test]
fn prompts_resources_and_templates_page_through_daemon_cursors_completely() {
    let flags = ["--prompts", "120", "--resources", "130", "--page-size", "7"];
    let mut config = fixture::config(&[("fx", &flags)]);
    config["mcpd"] = json!({"pageSize": 50});
    let daemon = TestDaemon::start(config);
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut shim = client(&daemon);

    let mut all = |method: &str, field: &str, key: &str| {
        let mut items = Vec::new();
        let mut cursor: Option<Value> = None;
        let mut pages = 0;
        loop {
            let page = shim.result(method, cursor.take().map(|c| json!({"cursor": c})));
            pages += 1;
            let list = page[field].as_array().expect("a list");
            assert!(list.len() <= 50, "{method}: a page of {}", list.len());
            items.extend(
                list.iter()
                    .map(|i| i[key].as_str().unwrap_or_default().to_owned()),
            );
            match page.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => return (items, pages),
            }
        }
    };
    let (prompts, pages) = all("prompts/list", "prompts", "name");
    assert_eq!(
        prompts,
        (0..120)
            .map(|i| format!("fx__prompt_{i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(pages, 3);
    let (resources, pages) = all("resources/list", "resources", "uri");
    assert_eq!(
        resources,
        (0..130)
            .map(|i| format!("fixture://r/{i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(pages, 3);
    let (templates, _) = all(
        "resources/templates/list",
        "resourceTemplates",
        "uriTemplate",
    );
    assert_eq!(templates, ["fixture://t/{id}"]);

    let prompt = shim.result("prompts/get", Some(json!({"name": "fx__prompt_119"})));
    assert_eq!(
        prompt["messages"][0]["content"]["text"],
        "prompt prompt_119"
    );
    let read = shim.result("resources/read", Some(json!({"uri": "fixture://r/129"})));
    assert_eq!(read["contents"][0]["text"], "contents of fixture://r/129");
    let templated = shim.result("resources/read", Some(json!({"uri": "fixture://t/abc"})));
    assert_eq!(
        templated["contents"][0]["text"],
        "contents of fixture://t/abc"
    );
}

#[test]
fn a_uri_listed_by_two_servers_belongs_to_the_first_in_name_order() {
    let (rec_a, rec_b) = (Record::new(), Record::new());
    let same = ["--resources", "2", "--uri-prefix", "same://r/", "--record"];
    let flags_a: Vec<&str> = same.iter().copied().chain([rec_a.path()]).collect();
    let flags_b: Vec<&str> = same.iter().copied().chain([rec_b.path()]).collect();
    // Defined in the opposite order, to show that the name order decides.
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "b": fixture::server(&flags_b),
        "a": fixture::server(&flags_a),
    }}));
    daemon.wait_server_state("a", ServerState::Ready);
    daemon.wait_server_state("b", ServerState::Ready);
    let mut shim = client(&daemon);

    let listed = shim.result("resources/list", None);
    let uris: Vec<&str> = listed["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert_eq!(uris, ["same://r/0", "same://r/1"], "each URI once");
    shim.result("resources/read", Some(json!({"uri": "same://r/1"})));
    assert_eq!(rec_a.with_method("resources/read").len(), 1);
    assert!(rec_b.with_method("resources/read").is_empty());
}

#[test]
fn subscriptions_are_counted_across_sessions_and_released_by_the_last_one() {
    let record = Record::new();
    let daemon = TestDaemon::start(fixture::config(&[(
        "fx",
        &["--resources", "3", "--record", record.path()],
    )]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let uri = json!({"uri": "fixture://r/1"});
    let mut a = client(&daemon);
    let mut b = client(&daemon);
    a.result("resources/subscribe", Some(uri.clone()));
    b.result("resources/subscribe", Some(uri.clone()));
    assert_eq!(
        record.with_method("resources/subscribe").len(),
        1,
        "one upstream subscription"
    );

    // A leaves: B still holds the subscription. (Anything the daemon sent upstream when A
    // left is recorded before B's next call.)
    a.close();
    daemon.wait_status(TIMEOUT, "one session left", |s| s.sessions.len() == 1);
    b.call_tool("fx__echo", json!({"message": "after a left"}));
    assert!(
        record.with_method("resources/unsubscribe").is_empty(),
        "unsubscribed while B holds it"
    );

    // B leaves too: now the upstream is unsubscribed.
    b.close();
    let unsubscribed = record.wait_for("resources/unsubscribe", |_| true);
    assert_eq!(unsubscribed["params"], uri);
}

#[test]
fn an_explicit_unsubscribe_is_forwarded_only_by_the_last_subscriber() {
    let record = Record::new();
    let daemon = TestDaemon::start(fixture::config(&[(
        "fx",
        &["--resources", "3", "--record", record.path()],
    )]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let uri = json!({"uri": "fixture://r/2"});
    let mut a = client(&daemon);
    let mut b = client(&daemon);
    a.result("resources/subscribe", Some(uri.clone()));
    b.result("resources/subscribe", Some(uri.clone()));
    a.result("resources/unsubscribe", Some(uri.clone()));
    assert!(record.with_method("resources/unsubscribe").is_empty());
    b.result("resources/unsubscribe", Some(uri.clone()));
    assert_eq!(record.with_method("resources/unsubscribe").len(), 1);
}

#[test]
fn a_subscription_the_upstream_refuses_is_not_counted() {
    let record = Record::new();
    let daemon = TestDaemon::start(fixture::config(&[(
        "fx",
        &["--resources", "1", "--record", record.path()],
    )]));
    daemon.wait_server_state("fx", ServerState::Ready);
    // Only the template matches this URI, and the fixture refuses to subscribe to it.
    let uri = json!({"uri": "fixture://t/refuse"});
    let mut a = client(&daemon);
    let mut b = client(&daemon);
    let refused = a.error("resources/subscribe", Some(uri.clone()));
    assert_eq!(refused["code"], -32602, "{refused}");
    // Had A's refused subscription been counted, B would be told it is subscribed without the
    // upstream being asked.
    let refused = b.error("resources/subscribe", Some(uri.clone()));
    assert_eq!(refused["code"], -32602, "{refused}");
    assert_eq!(record.with_method("resources/subscribe").len(), 2);
    // Nothing is held, so A leaving unsubscribes nothing.
    a.close();
    daemon.wait_status(TIMEOUT, "one session left", |s| s.sessions.len() == 1);
    b.call_tool("fx__echo", json!({"message": "after a left"}));
    assert!(record.with_method("resources/unsubscribe").is_empty());
}

#[test]
fn logging_set_level_asks_upstreams_for_the_most_verbose_level_any_session_wants() {
    let record = Record::new();
    let daemon = TestDaemon::start(fixture::config(&[(
        "fx",
        &["--logging", "--record", record.path()],
    )]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut a = client(&daemon);
    let mut b = client(&daemon);
    a.result("logging/setLevel", Some(json!({"level": "error"})));
    record.wait_for("logging/setLevel", |m| m["params"]["level"] == "error");
    b.result("logging/setLevel", Some(json!({"level": "info"})));
    record.wait_for("logging/setLevel", |m| m["params"]["level"] == "info");
    let bad = a.error("logging/setLevel", Some(json!({"level": "loud"})));
    assert_eq!(bad["code"], -32602, "{bad}");
}

#[test]
fn completions_are_routed_by_prompt_name_and_by_resource_template() {
    let record = Record::new();
    let daemon = TestDaemon::start(fixture::config(&[(
        "fx",
        &[
            "--prompts",
            "2",
            "--resources",
            "1",
            "--completions",
            "--record",
            record.path(),
        ],
    )]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut shim = client(&daemon);
    let by_prompt = shim.result(
        "completion/complete",
        Some(json!({"ref": {"type": "ref/prompt", "name": "fx__prompt_1"}, "argument": {"name": "arg", "value": "ab"}})),
    );
    assert_eq!(by_prompt["completion"]["values"], json!(["ab-done"]));
    // The upstream got its own prompt name back.
    let asked = record.wait_for("completion/complete", |_| true);
    assert_eq!(asked["params"]["ref"]["name"], "prompt_1");
    let by_template = shim.result(
        "completion/complete",
        Some(json!({"ref": {"type": "ref/resource", "uri": "fixture://t/{id}"}, "argument": {"name": "id", "value": "4"}})),
    );
    assert_eq!(by_template["completion"]["values"], json!(["4-done"]));
}

#[test]
fn a_request_that_times_out_gets_an_error_and_is_cancelled_upstream() {
    let record = Record::new();
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "fx": fixture_server(&["--record", record.path()], json!({"requestTimeoutMs": 300})),
    }}));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut shim = client(&daemon);

    let error = shim.error(
        "tools/call",
        Some(json!({"name": "fx__sleep", "arguments": {"ms": 30000}})),
    );
    assert!(error["code"].is_i64(), "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("did not answer"),
        "{error}"
    );
    let upstream_id = record.call_id("sleep", 30000);
    record.wait_for("notifications/cancelled", |m| {
        m["params"]["requestId"] == upstream_id
    });
    // The session goes on.
    assert_eq!(
        text_of(&shim.call_tool("fx__echo", json!({"message": "next"}))),
        "next"
    );
}

#[test]
fn a_client_cancellation_reaches_the_upstream_with_the_upstream_id() {
    let record = Record::new();
    let daemon = TestDaemon::start(fixture::config(&[("fx", &["--record", record.path()])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut shim = client(&daemon);

    shim.send_raw(r#"{"jsonrpc":"2.0","id":"mine-1","method":"tools/call","params":{"name":"fx__sleep","arguments":{"ms":30001}}}"#);
    let upstream_id = record.call_id("sleep", 30001);
    assert_ne!(upstream_id, json!("mine-1"), "the upstream sees its own id");
    shim.notify(
        "notifications/cancelled",
        Some(json!({"requestId": "mine-1", "reason": "changed my mind"})),
    );
    record.wait_for("notifications/cancelled", |m| {
        m["params"]["requestId"] == upstream_id
    });
}

#[test]
fn a_disconnecting_session_cancels_its_requests_in_flight() {
    let record = Record::new();
    let daemon = TestDaemon::start(fixture::config(&[("fx", &["--record", record.path()])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut shim = client(&daemon);
    shim.send_request(
        "tools/call",
        Some(json!({"name": "fx__sleep", "arguments": {"ms": 30002}})),
    );
    let upstream_id = record.call_id("sleep", 30002);
    shim.close();
    record.wait_for("notifications/cancelled", |m| {
        m["params"]["requestId"] == upstream_id
    });
}

// ---- catalog cache and startup -----------------------------------------------------------

fn cache_file(cache_home: &Path) -> PathBuf {
    cache_home.join("mcpd").join("catalog.json")
}

#[test]
fn a_warm_cache_answers_at_once_while_a_server_starts_and_list_changed_follows() {
    let cache = tempfile::tempdir().expect("a temp dir");
    let cache_home = cache.path().to_str().expect("UTF-8").to_owned();
    let flags_dir = tempfile::tempdir().expect("a temp dir");
    let flags = flags_dir.path().join("flags");
    let flags_arg = flags.to_str().expect("UTF-8").to_owned();
    // The same definition both times (the cache is keyed by it); the flags file differs.
    let config = fixture::config(&[("fx", &["--flags-file", &flags_arg])]);

    fs::write(&flags, "--tools 3").expect("write flags");
    let mut first = TestDaemon::builder()
        .env("XDG_CACHE_HOME", &cache_home)
        .start(config.clone());
    first.wait_server_state("fx", ServerState::Ready);
    eventually(TIMEOUT, "the catalog cache to hold fx__tool_2", || {
        fs::read_to_string(cache_file(cache.path()))
            .ok()
            .filter(|c| c.contains("tool_2"))
    });
    assert!(first.terminate().success());

    // Now the server is slow to start (8 s: room for a loaded machine to list from the cache
    // first) and has a fourth tool.
    fs::write(&flags, "--tools 4 --delay-init-ms 8000").expect("write flags");
    let second = TestDaemon::builder()
        .env("XDG_CACHE_HOME", &cache_home)
        .start(config);
    let mut shim = client(&second);
    let cached = shim.tool_names();
    let mut expected: Vec<String> = (0..3).map(|i| format!("fx__tool_{i}")).collect();
    expected.extend(fixture::FIXED_TOOLS.iter().map(|t| format!("fx__{t}")));
    assert_eq!(
        cached, expected,
        "the cached catalog, complete, before the server is up"
    );

    shim.set_timeout(PEER_TIMEOUT);
    shim.wait_notification("notifications/tools/list_changed");
    let live = shim.tool_names();
    assert!(live.contains(&"fx__tool_3".to_owned()), "{live:?}");
    assert_eq!(live.len(), expected.len() + 1);
}

#[test]
fn with_no_cache_tools_list_waits_for_a_starting_server() {
    let mut config = fixture::config(&[("fast", &[]), ("slow", &["--delay-init-ms", "1500"])]);
    config["mcpd"] = json!({"listWaitMs": 30000});
    let daemon = TestDaemon::start(config);
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.set_timeout(PEER_TIMEOUT);
    shim.initialize();
    let names = shim.tool_names();
    for server in ["fast", "slow"] {
        assert!(
            names.contains(&format!("{server}__echo")),
            "{server} missing from {names:?}"
        );
    }
}

#[test]
fn a_partial_tool_list_is_always_followed_by_list_changed() {
    // The wait is shorter than the slow server's start: whatever the first answer holds, a
    // client that got less than everything is told that the list changed.
    let mut config = fixture::config(&[("fast", &[]), ("slow", &["--delay-init-ms", "2000"])]);
    config["mcpd"] = json!({"listWaitMs": 100});
    let daemon = TestDaemon::start(config);
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.set_timeout(PEER_TIMEOUT);
    shim.initialize();
    let first = shim.tool_names();
    assert!(first.contains(&"fast__echo".to_owned()), "{first:?}");
    if !first.contains(&"slow__echo".to_owned()) {
        shim.wait_notification("notifications/tools/list_changed");
        let names = shim.tool_names();
        assert!(names.contains(&"slow__echo".to_owned()), "{names:?}");
    }
}

// ---- initialize: capabilities and instructions --------------------------------------------

fn capability_keys(result: &Value) -> BTreeSet<String> {
    result["capabilities"]
        .as_object()
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn initialize_advertises_exactly_the_union_of_upstream_capabilities() {
    let daemon = TestDaemon::start(fixture::config(&[
        ("tools_only", &[]),
        ("with_prompts", &["--prompts", "1"]),
    ]));
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.set_timeout(PEER_TIMEOUT);
    let result = shim.initialize();
    assert_eq!(
        capability_keys(&result),
        BTreeSet::from(["tools".to_owned(), "prompts".to_owned()])
    );

    let daemon = TestDaemon::start(fixture::config(&[
        ("plain", &[]),
        ("rich", &["--resources", "1", "--logging", "--completions"]),
    ]));
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.set_timeout(PEER_TIMEOUT);
    let result = shim.initialize();
    let keys: BTreeSet<String> = ["tools", "resources", "logging", "completions"]
        .map(str::to_owned)
        .into();
    assert_eq!(capability_keys(&result), keys, "{result}");
    assert_eq!(
        result["capabilities"]["resources"]["subscribe"], true,
        "{result}"
    );
}

#[test]
fn instructions_of_upstreams_are_combined_under_each_server_name() {
    let daemon = TestDaemon::start(fixture::config(&[
        ("alpha", &["--instructions", "Use alpha for A things."]),
        ("beta", &["--instructions", "Use beta for B things."]),
        ("silent", &[]),
    ]));
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.set_timeout(PEER_TIMEOUT);
    let result = shim.initialize();
    let text = result["instructions"].as_str().unwrap_or_default();
    assert_eq!(
        text,
        "## alpha\nUse alpha for A things.\n\n## beta\nUse beta for B things."
    );
}

#[test]
fn peer_url_elicitation_goes_only_to_a_client_that_declared_url_mode() {
    let daemon = daemon_with_everything();
    let mut form_only = ShimClient::spawn(&daemon, None);
    form_only.initialize_with("2025-11-25", json!({"elicitation": {"form": {}}}));
    let mut url_able = ShimClient::spawn(&daemon, None);
    url_able.initialize_with(
        "2025-11-25",
        json!({"elicitation": {"form": {}, "url": {}}}),
    );
    form_only.set_timeout(PEER_TIMEOUT);
    url_able.set_timeout(PEER_TIMEOUT);
    let args = json!({"url": "https://example.com/consent", "elicitationId": "e-1"});

    // The form-only client's call cannot be answered by it, and is not given to the other.
    let refused = form_only.call_tool("everything__trigger-url-elicitation", args.clone());
    assert_eq!(refused["isError"], true, "{refused}");
    assert!(form_only.server_requests().is_empty());

    let call = url_able.send_request(
        "tools/call",
        Some(json!({"name": "everything__trigger-url-elicitation", "arguments": args})),
    );
    let asked = url_able.wait_server_request("elicitation/create");
    assert_eq!(asked["params"]["mode"], "url", "{asked}");
    assert_eq!(
        asked["params"]["url"], "https://example.com/consent",
        "{asked}"
    );
    url_able.respond(&asked["id"], json!({"action": "accept"}));
    let answer: Value = serde_json::from_str(&url_able.response_line(&json!(call))).expect("JSON");
    assert!(
        text_of(&answer["result"]).contains("completed the URL elicitation"),
        "{answer}"
    );
    assert!(form_only.server_requests().is_empty());
}
