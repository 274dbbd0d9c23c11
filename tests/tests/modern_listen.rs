//! Change notifications of modern (2026-07-28) upstreams (issue 12): mcpd opens
//! `subscriptions/listen` towards each modern upstream, over stdio and streamable HTTP, and what
//! comes on it (a list change, an update of a resource some client subscribed to) reaches
//! legacy clients (`notifications/tools/list_changed`, `resources/updated` after
//! `resources/subscribe`) and modern ones (on their own listens) as a legacy upstream's would.
//!
//! Upstream: `tests/peers/py_modern_server.py` (Python SDK 2.x, accepts only 2026-07-28), whose
//! `grow` tool adds a tool and announces it, and whose `touch` tool announces a resource update,
//! both only on its listens.

use mcpd_proto::ServerState;
use mcpd_tests::http_peer::HttpPeer;
use mcpd_tests::peers::{Sdk, SdkClient, run_sdk_client};
use mcpd_tests::process::wait_until;
use mcpd_tests::{PEER_TIMEOUT, ShimClient, TestDaemon, peers};
use serde_json::{Value, json};

const NOTE: &str = "modern://note";
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

fn op<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["op"] == name)
        .unwrap_or_else(|| panic!("no {name} line in {lines:#?}"))
}

fn ops<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["op"] == name).collect()
}

/// A legacy (Python SDK 1.x) and a modern (TypeScript SDK v2) client each follow the changes
/// of modern server `m` (`upstream`): one announced list change and one resource update.
fn changes_reach_both_eras(upstream: Value) {
    let daemon = TestDaemon::start(json!({"mcpServers": {"m": upstream}}));
    daemon.wait_server_state("m", ServerState::Ready);
    // mcpd listens on its own for the lists, before any client subscribed to anything.
    daemon.wait_log(r#""toolsListChanged":true"#, PEER_TIMEOUT);
    assert!(daemon.log().contains("listening for changes: {"));

    let after = json!([
        {"op": "wait_notification", "method": "notifications/tools/list_changed"},
        {"op": "list_tools"},
        {"op": "wait_notification", "method": "notifications/resources/updated"},
        {"op": "received"},
    ]);
    let mut legacy_steps = vec![
        json!({"op": "subscribe", "uri": NOTE}),
        json!({"op": "wait_stdin"}),
    ];
    legacy_steps.extend(after.as_array().cloned().unwrap_or_default());
    let mut legacy = SdkClient::spawn(Sdk::Python, &daemon, &Value::Array(legacy_steps));
    legacy.wait_for_op("wait_stdin", PEER_TIMEOUT);

    let mut modern_steps = vec![
        json!({"op": "listen", "filter": {"toolsListChanged": true, "resourceSubscriptions": [NOTE]}}),
        json!({"op": "wait_stdin"}),
    ];
    modern_steps.extend(after.as_array().cloned().unwrap_or_default());
    let mut modern = SdkClient::spawn_with(
        Sdk::TypeScriptV2,
        &daemon,
        &Value::Array(modern_steps),
        &["--mode", "2026-07-28"],
    );
    modern.wait_for_op("wait_stdin", PEER_TIMEOUT);

    // The clients' subscriptions made mcpd listen again upstream, now for the note too.
    daemon.wait_log(
        &format!(r#""resourceSubscriptions":["{NOTE}"]"#),
        PEER_TIMEOUT,
    );
    let calls = run_sdk_client(
        Sdk::Python,
        &daemon,
        &json!([
            {"op": "call_tool", "name": "m__grow", "arguments": {"name": "fresh"}},
            {"op": "call_tool", "name": "m__touch", "arguments": {"uri": NOTE}},
        ]),
    );
    assert_eq!(ops(&calls, "call_tool").len(), 2, "{calls:#?}");
    legacy.release();
    modern.release();
    let legacy = legacy.finish(PEER_TIMEOUT);
    let modern = modern.finish(PEER_TIMEOUT);

    for (era, lines) in [("legacy", &legacy), ("modern", &modern)] {
        let tools = &op(lines, "list_tools")["tools"];
        assert!(
            tools
                .as_array()
                .is_some_and(|t| t.contains(&json!("m__fresh"))),
            "{era} client: the grown tool is listed after the change: {tools}"
        );
    }
    let received = op(&legacy, "received");
    let updated: Vec<&Value> = received["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["method"] == "notifications/resources/updated")
        .collect();
    assert_eq!(updated.len(), 1, "{received}");
    assert_eq!(updated[0]["params"]["uri"], NOTE, "{received}");
    // The upstream's subscription id is mcpd's business, not the legacy client's.
    assert!(
        !updated[0].to_string().contains(SUBSCRIPTION_ID),
        "{received}"
    );

    let update = &op(&modern, "wait_notification")["notification"];
    assert_eq!(
        update["method"], "notifications/tools/list_changed",
        "{update}"
    );
    let received = op(&modern, "received");
    let updated: Vec<&Value> = received["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["method"] == "notifications/resources/updated")
        .collect();
    assert_eq!(updated.len(), 1, "{received}");
    assert_eq!(updated[0]["params"]["uri"], NOTE, "{received}");
    // Tagged with the client's own listen (the id its acknowledgment carried), not with
    // mcpd's listen upstream.
    let tag = &updated[0]["params"]["_meta"][SUBSCRIPTION_ID];
    assert!(!tag.is_null(), "{received}");
    if let Some(ack) = received["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["method"] == "notifications/subscriptions/acknowledged")
    {
        assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID], *tag, "{received}");
    }
}

#[test]
fn peer_a_modern_stdio_upstreams_changes_reach_legacy_and_modern_clients() {
    changes_reach_both_eras(peers().modern_server());
}

#[test]
fn peer_a_modern_http_upstreams_changes_reach_legacy_and_modern_clients() {
    let peer = HttpPeer::python_modern(&[]);
    changes_reach_both_eras(json!({"type": "http", "url": peer.url("/mcp")}));
}

/// A listen that the server ends is opened again, and the lists are fetched again (changes
/// in the gap were not seen).
#[test]
fn peer_a_listen_the_modern_upstream_ends_is_opened_again() {
    let daemon = TestDaemon::start(json!({"mcpServers": {"m": peers().modern_server()}}));
    daemon.wait_server_state("m", ServerState::Ready);
    let listening = "listening for changes: ";
    daemon.wait_log(listening, PEER_TIMEOUT);
    run_sdk_client(
        Sdk::Python,
        &daemon,
        &json!([{"op": "call_tool", "name": "m__end_listens", "arguments": {}}]),
    );
    daemon.wait_log("the server ended subscriptions/listen", PEER_TIMEOUT);
    assert!(
        wait_until(PEER_TIMEOUT, || daemon.log().matches(listening).count()
            >= 2),
        "the listen was not opened again:\n{}",
        daemon.log()
    );
    // Still followed: a change announced on the new listen reaches a client.
    let lines = run_sdk_client(
        Sdk::Python,
        &daemon,
        &json!([
            {"op": "call_tool", "name": "m__grow", "arguments": {"name": "later"}},
            {"op": "wait_notification", "method": "notifications/tools/list_changed"},
            {"op": "list_tools"},
        ]),
    );
    let tools = &op(&lines, "list_tools")["tools"];
    assert!(
        tools
            .as_array()
            .is_some_and(|t| t.contains(&json!("m__later"))),
        "{tools}"
    );
}

/// A modern request's log messages over streamable HTTP are its own: they come on its
/// response stream, and mcpd gives them to that request's client only, even while another
/// client's request to the same server logs (a scope by server and time would mix them).
#[test]
fn peer_log_messages_of_a_modern_http_upstream_reach_only_the_request_they_belong_to() {
    let peer = HttpPeer::python_modern(&[]);
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "m": {"type": "http", "url": peer.url("/mcp")}
    }}));
    daemon.wait_server_state("m", ServerState::Ready);
    let params = |name: &str, key: &str| {
        json!({"name": name, "arguments": {"key": key}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/logLevel": "info",
        }})
    };
    let logs = |shim: &ShimClient| -> Vec<String> {
        shim.notifications()
            .iter()
            .filter(|n| n["method"] == "notifications/message")
            .map(|n| n["params"]["data"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let mut a = ShimClient::spawn(&daemon, None);
    let waiting = a.send_request("tools/call", Some(params("m__wait_for", "k")));
    a.wait_notification("notifications/message");
    // While a's request is in flight (and logging), b's request to the same server logs.
    let mut b = ShimClient::spawn(&daemon, None);
    let released = b.result("tools/call", Some(params("m__release", "k")));
    assert_eq!(released["content"][0]["text"], "release: k", "{released}");
    let answer: Value = serde_json::from_str(&a.response_line(&json!(waiting))).expect("json");
    assert_eq!(
        answer["result"]["content"][0]["text"], "released: k",
        "{answer}"
    );
    assert_eq!(logs(&a), ["k: waiting", "k: released"]);
    assert_eq!(logs(&b), ["release k"]);
}
