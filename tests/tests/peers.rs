//! Unmodified official SDK clients, through `mcp-shim` and `mcpd`, against the reference
//! server-everything: what users' MCP clients will do.
//!
//! Every test here is named `peer_*`: they start node and Python, and nextest runs at most two
//! of them at a time (`.config/nextest.toml`).

use std::time::Duration;

use mcpd_proto::ServerState;
use mcpd_tests::process::descendants_with_cmdline;
use mcpd_tests::{PEER_TIMEOUT, Sdk, SdkClient, TestDaemon, peers, run_sdk_client};
use serde_json::{Value, json};

/// A daemon whose only upstream is server-everything on stdio, named `everything`, ready.
fn daemon_with_everything() -> TestDaemon {
    let daemon = TestDaemon::start(json!({
        "mcpServers": {"everything": peers().everything_server()}
    }));
    daemon.wait_server_state("everything", ServerState::Ready);
    daemon
}

fn op<'a>(lines: &'a [Value], op: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["op"] == op)
        .unwrap_or_else(|| panic!("no {op:?} line in {lines:#?}"))
}

fn texts(call: &Value) -> Vec<&str> {
    call["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .collect()
}

fn lists_and_calls_everything_tools(sdk: Sdk) {
    let daemon = daemon_with_everything();
    let lines = run_sdk_client(
        sdk,
        &daemon,
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "everything__echo", "arguments": {"message": "hi"}},
            {"op": "call_tool", "name": "everything__get-sum", "arguments": {"a": 2, "b": 3}},
        ]),
    );

    assert_eq!(lines[0]["op"], "initialize");
    let tools = &op(&lines, "list_tools")["tools"];
    for name in ["everything__echo", "everything__get-sum"] {
        assert!(
            tools.as_array().is_some_and(|t| t.contains(&json!(name))),
            "{name} missing from {tools}"
        );
    }
    let calls: Vec<&Value> = lines.iter().filter(|l| l["op"] == "call_tool").collect();
    assert_eq!(calls.len(), 2, "{lines:#?}");
    assert_eq!(calls[0]["isError"], false);
    assert_eq!(texts(calls[0]), ["Echo: hi"]);
    assert_eq!(calls[1]["isError"], false);
    assert_eq!(texts(calls[1]), ["The sum of 2 and 3 is 5."]);
}

#[test]
fn peer_python_client_lists_and_calls_everything_tools() {
    lists_and_calls_everything_tools(Sdk::Python);
}

#[test]
fn peer_typescript_client_lists_and_calls_everything_tools() {
    lists_and_calls_everything_tools(Sdk::TypeScript);
}

#[test]
fn peer_two_clients_share_one_everything_process() {
    let daemon = daemon_with_everything();
    let everything_js = peers().everything_js().display().to_string();
    let hold = json!([
        {"op": "call_tool", "name": "everything__echo", "arguments": {"message": "held"}},
        {"op": "wait_stdin"},
        {"op": "call_tool", "name": "everything__echo", "arguments": {"message": "released"}},
    ]);

    let mut first = SdkClient::spawn(Sdk::Python, &daemon, &hold);
    let mut second = SdkClient::spawn(Sdk::Python, &daemon, &hold);
    first.wait_for_op("wait_stdin", PEER_TIMEOUT);
    second.wait_for_op("wait_stdin", PEER_TIMEOUT);

    // Both sessions are open and have used the server: the daemon still runs it once.
    let status = daemon.wait_status(Duration::from_secs(10), "two attached sessions", |s| {
        s.sessions.len() == 2
    });
    let servers = descendants_with_cmdline(daemon.pid(), &everything_js);
    assert_eq!(servers.len(), 1, "server-everything processes: {servers:?}");
    let everything = status
        .servers
        .iter()
        .find(|s| s.name == "everything")
        .expect("everything in status");
    assert_eq!(everything.pid, Some(servers[0]));

    first.release();
    second.release();
    for client in [first, second] {
        let lines = client.finish(PEER_TIMEOUT);
        let calls: Vec<&Value> = lines.iter().filter(|l| l["op"] == "call_tool").collect();
        assert_eq!(texts(calls[0]), ["Echo: held"]);
        assert_eq!(texts(calls[1]), ["Echo: released"]);
    }
    assert_eq!(
        descendants_with_cmdline(daemon.pid(), &everything_js).len(),
        1
    );
}
