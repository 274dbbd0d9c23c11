//! Modern-era (MCP 2026-07-28) clients, the rest of the downstream side: the TypeScript SDK v2
//! client (`@modelcontextprotocol/client`) pinned and in `auto` mode through `mcp-shim`,
//! `subscriptions/listen`, per-request log levels and request-scoped notifications, and
//! `tasks/*` routed to the owning server. Upstreams stay legacy (server-everything, the fixture).
//!
//! Tests that start node or Python peers are named `peer_*`.

use mcpd_proto::ServerState;
use mcpd_tests::fixture;
use mcpd_tests::peers::{Sdk, SdkClient};
use mcpd_tests::process::descendants_of;
use mcpd_tests::{PEER_TIMEOUT, TIMEOUT, TestDaemon, peers, wait_until};
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";

fn everything_daemon() -> TestDaemon {
    let daemon = TestDaemon::start(json!({
        "mcpServers": {"everything": peers().everything_server()}
    }));
    daemon.wait_server_state("everything", ServerState::Ready);
    daemon
}

fn per_client(mut server: Value) -> Value {
    server["share"] = json!("per-client");
    server
}

/// Runs the TypeScript SDK v2 client in `mode` with `steps` to completion; its step lines, the
/// `connect` line first.
fn ts_v2(daemon: &TestDaemon, mode: &str, steps: &Value) -> Vec<Value> {
    SdkClient::spawn_with(Sdk::TypeScriptV2, daemon, steps, &["--mode", mode]).finish(PEER_TIMEOUT)
}

fn op<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["op"] == name)
        .unwrap_or_else(|| panic!("no {name} line in {lines:#?}"))
}

fn ts_v2_lists_and_calls(mode: &str) {
    let daemon = everything_daemon();
    let lines = ts_v2(
        &daemon,
        mode,
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "everything__echo", "arguments": {"message": "hi"}},
        ]),
    );
    let connect = op(&lines, "connect");
    assert_eq!(connect["era"], "modern", "{connect}");
    assert_eq!(connect["protocolVersion"], MODERN, "{connect}");
    assert_eq!(connect["serverInfo"]["name"], "mcpd", "{connect}");
    let tools = op(&lines, "list_tools");
    assert!(
        tools["tools"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("everything__echo"))),
        "{tools}"
    );
    let call = op(&lines, "call_tool");
    assert_eq!(call["isError"], false, "{call}");
    assert_eq!(call["content"][0]["text"], "Echo: hi", "{call}");
}

#[test]
fn peer_ts_sdk2_pinned_to_2026_07_28_lists_and_calls_everything() {
    ts_v2_lists_and_calls(MODERN);
}

#[test]
fn peer_ts_sdk2_in_auto_mode_probes_on_a_second_shim_and_stays_modern() {
    ts_v2_lists_and_calls("auto");
}

#[test]
fn peer_ts_sdk2_auto_probe_session_leaves_nothing_behind() {
    // A per-client server gets an instance per session that uses it; the probe's throw-away
    // shim must not start one, and its session must go when the SDK kills it.
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "everything": peers().everything_server(),
        "own": per_client(fixture::server(&[])),
    }}));
    daemon.wait_server_state("everything", ServerState::Ready);
    let mut client = SdkClient::spawn_with(
        Sdk::TypeScriptV2,
        &daemon,
        &json!([
            {"op": "call_tool", "name": "own__echo", "arguments": {"message": "mine"}},
            {"op": "wait_stdin"},
        ]),
        &["--mode", "auto"],
    );
    let connect = client.next_line(PEER_TIMEOUT);
    assert_eq!(connect["era"], "modern", "{connect}");
    let call = client.next_line(PEER_TIMEOUT);
    assert_eq!(call["content"][0]["text"], "mine", "{call}");
    client.wait_for_op("wait_stdin", PEER_TIMEOUT);
    // One session (the probe's is gone), and processes: server-everything and this session's
    // own instance only.
    daemon.wait_status(TIMEOUT, "only the real session left", |s| {
        s.sessions.len() == 1
    });
    assert!(
        wait_until(TIMEOUT, || descendants_of(daemon.pid()).len() == 2),
        "the probe left processes behind: {:?}",
        descendants_of(daemon.pid())
    );
    client.release();
    client.finish(PEER_TIMEOUT);
}
