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
use mcpd_tests::{PEER_TIMEOUT, ShimClient, TIMEOUT, TestDaemon, peers, wait_until};
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

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-modern", "version": "0.1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// `params` with modern `_meta` (and `extra` merged into it).
fn modern(mut params: Value, extra: Value) -> Value {
    let mut m = meta();
    if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(extra.clone());
    }
    params["_meta"] = m;
    params
}

/// The arguments of the fixture's `notify` tool sending a log message.
fn log_message(level: &str, data: &str) -> Value {
    json!({"name": "fx__notify", "arguments": {
        "method": "notifications/message",
        "params": {"level": level, "data": data},
    }})
}

fn notify_daemon(extra: &[&str]) -> TestDaemon {
    let mut args = vec!["--notify-tool", "--logging"];
    args.extend_from_slice(extra);
    let daemon = TestDaemon::start(fixture::config(&[("fx", &args)]));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon
}

fn messages(shim: &ShimClient) -> Vec<String> {
    shim.notifications()
        .iter()
        .filter(|n| n["method"] == "notifications/message")
        .map(|n| n["params"]["data"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn modern_requests_get_only_their_own_log_messages_at_their_level_and_legacy_clients_all() {
    let daemon = notify_daemon(&[]);
    let mut legacy = ShimClient::spawn(&daemon, None);
    legacy.initialize();
    let mut client = ShimClient::spawn(&daemon, None);

    // The fixture sends the message before it answers, so whatever mcpd delivers for the call
    // arrives before the answer (same stream, in order).
    let warning = json!({"io.modelcontextprotocol/logLevel": "warning"});
    client.result(
        "tools/call",
        Some(modern(log_message("error", "asked-error"), warning.clone())),
    );
    client.result(
        "tools/call",
        Some(modern(log_message("info", "asked-info"), warning)),
    );
    client.result(
        "tools/call",
        Some(modern(log_message("error", "not-asked"), json!({}))),
    );
    assert_eq!(
        messages(&client),
        ["asked-error"],
        "only the message at or above the level of the request that asked"
    );
    // The legacy client, which set no level, gets every message, as before.
    let got = legacy.wait_notification_count("notifications/message", 3);
    let data: Vec<&str> = got
        .iter()
        .filter_map(|n| n["params"]["data"].as_str())
        .collect();
    assert_eq!(data, ["asked-error", "asked-info", "not-asked"]);

    // An unknown level is refused before anything reaches the upstream.
    let bad = client.request(
        "tools/call",
        Some(modern(
            log_message("error", "never"),
            json!({"io.modelcontextprotocol/logLevel": "loud"}),
        )),
    );
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    // Nothing is delivered outside a request: the legacy client sees a later message, the
    // modern one does not.
    legacy.call_tool(
        "fx__notify",
        log_message("error", "outside")["arguments"].clone(),
    );
    legacy.wait_notification_count("notifications/message", 4);
    client.result(
        "tools/call",
        Some(modern(
            json!({"name": "fx__echo", "arguments": {"message": "x"}}),
            json!({}),
        )),
    );
    assert_eq!(messages(&client), ["asked-error"]);
}

#[test]
fn modern_progress_goes_only_to_the_request_that_asked() {
    let daemon = notify_daemon(&[]);
    let mut other = ShimClient::spawn(&daemon, None);
    let mut client = ShimClient::spawn(&daemon, None);
    let params = modern(
        json!({"name": "fx__sleep", "arguments": {"ms": 1}}),
        json!({"progressToken": "p-1"}),
    );
    client.result("tools/call", Some(params));
    let progress = client.wait_notification("notifications/progress");
    assert_eq!(progress["params"]["progressToken"], "p-1", "{progress}");
    other.result(
        "tools/call",
        Some(modern(
            json!({"name": "fx__echo", "arguments": {"message": "x"}}),
            json!({}),
        )),
    );
    assert!(
        other.notifications().is_empty(),
        "{:?}",
        other.notifications()
    );
}

#[test]
fn listen_acknowledges_and_tags_list_changes_and_resource_updates_then_unsubscribes_on_cancel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("fx.log");
    let record_arg = record.display().to_string();
    let daemon = notify_daemon(&["--resources", "1", "--record", &record_arg]);
    let mut client = ShimClient::spawn(&daemon, None);
    // Not part of 2026-07-28: resources/subscribe is replaced by the listen.
    let old = client.request(
        "resources/subscribe",
        Some(modern(json!({"uri": "fixture://r/0"}), json!({}))),
    );
    assert_eq!(old["error"]["code"], -32601, "{old}");

    let filter = json!({"notifications": {
        "toolsListChanged": true,
        "resourceSubscriptions": ["fixture://r/0", "nobody://x"],
    }});
    client.send_raw(
        &json!({"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
        "params": modern(filter, json!({}))})
        .to_string(),
    );
    let ack = client.wait_notification("notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "listen-1",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"]["toolsListChanged"], true,
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"]["resourceSubscriptions"],
        json!(["fixture://r/0"]),
        "a URI no server owns is not honoured: {ack}"
    );
    assert!(
        ack["params"]["notifications"]
            .get("promptsListChanged")
            .is_none(),
        "{ack}"
    );
    assert!(
        wait_until(TIMEOUT, || std::fs::read_to_string(&record)
            .is_ok_and(|r| r.contains("resources/subscribe"))),
        "the upstream was not subscribed"
    );

    // The legacy upstream's update and list change arrive tagged with the listen's id.
    let update = json!({"name": "fx__notify", "arguments": {
        "method": "notifications/resources/updated", "params": {"uri": "fixture://r/0"}}});
    client.result("tools/call", Some(modern(update, json!({}))));
    let updated = client.wait_notification("notifications/resources/updated");
    assert_eq!(updated["params"]["uri"], "fixture://r/0", "{updated}");
    assert_eq!(
        updated["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-1"
    );
    let change = json!({"name": "fx__notify", "arguments": {
        "method": "notifications/tools/list_changed", "params": {}}});
    client.result("tools/call", Some(modern(change, json!({}))));
    let changed = client.wait_notification("notifications/tools/list_changed");
    assert_eq!(
        changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-1"
    );
    let tools = client.result("tools/list", Some(modern(json!({}), json!({}))));
    assert!(
        tools["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "fx__late")),
        "{tools}"
    );

    // Cancelling ends it without an answer and releases the upstream subscription.
    client.notify(
        "notifications/cancelled",
        Some(json!({"requestId": "listen-1"})),
    );
    assert!(
        wait_until(TIMEOUT, || std::fs::read_to_string(&record)
            .is_ok_and(|r| r.contains("resources/unsubscribe"))),
        "the upstream was not unsubscribed"
    );
    let status = daemon.status();
    assert_eq!(status.sessions.len(), 1, "{status:?}");
}

#[test]
fn a_listen_ends_gracefully_when_the_daemon_shuts_down() {
    let daemon = notify_daemon(&[]);
    let mut client = ShimClient::spawn(&daemon, None);
    client.send_raw(
        &json!({"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen",
        "params": modern(json!({"notifications": {"toolsListChanged": true}}), json!({}))})
        .to_string(),
    );
    client.wait_notification("notifications/subscriptions/acknowledged");
    daemon.signal(libc::SIGTERM);
    let end: Value = serde_json::from_str(&client.response_line(&json!(9))).expect("json");
    assert_eq!(end["result"]["resultType"], "complete", "{end}");
    assert_eq!(
        end["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 9,
        "{end}"
    );
}

#[test]
fn peer_ts_sdk2_listens_for_list_changes_and_resource_updates_of_a_legacy_upstream() {
    let daemon = notify_daemon(&["--resources", "1"]);
    let lines = ts_v2(
        &daemon,
        MODERN,
        &json!([
            {"op": "listen", "filter": {"toolsListChanged": true, "resourceSubscriptions": ["fixture://r/0"]}},
            {"op": "call_tool", "name": "fx__notify", "arguments": {
                "method": "notifications/resources/updated", "params": {"uri": "fixture://r/0"}}},
            {"op": "wait_notification", "method": "notifications/resources/updated", "uri": "fixture://r/0"},
            {"op": "call_tool", "name": "fx__notify", "arguments": {
                "method": "notifications/tools/list_changed", "params": {}}},
            {"op": "wait_notification", "method": "notifications/tools/list_changed"},
            {"op": "close_listen"},
            {"op": "call_tool", "name": "fx__notify", "log_level": "debug", "arguments": {
                "method": "notifications/message", "params": {"level": "info", "data": "mine"}}},
        ]),
    );
    let listen = op(&lines, "listen");
    assert_eq!(listen["honored"]["toolsListChanged"], true, "{listen}");
    assert_eq!(
        listen["honored"]["resourceSubscriptions"],
        json!(["fixture://r/0"]),
        "{listen}"
    );
    let calls: Vec<&Value> = lines.iter().filter(|l| l["op"] == "call_tool").collect();
    let last = calls.last().expect("calls");
    let logs: Vec<&Value> = last["during"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["method"] == "notifications/message")
        .collect();
    assert_eq!(logs.len(), 1, "{last}");
    assert_eq!(logs[0]["params"]["data"], "mine", "{last}");
}

const RESEARCH: &str = "simulate-research-query";

fn two_everythings() -> TestDaemon {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "everything": peers().everything_server(),
        "other": peers().everything_server(),
    }}));
    daemon.wait_server_state("everything", ServerState::Ready);
    daemon.wait_server_state("other", ServerState::Ready);
    daemon
}

/// Polls `tasks/get` (with `params`) until the task is terminal; its last result.
fn poll_until_terminal(shim: &mut ShimClient, params: &Value) -> Value {
    let mut last = Value::Null;
    let done = wait_until(PEER_TIMEOUT, || {
        last = shim.result("tasks/get", Some(params.clone()));
        matches!(
            last["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
    });
    assert!(done, "the task did not finish: {last}");
    last
}

#[test]
fn peer_legacy_tasks_are_routed_to_their_server_with_ids_bound_to_the_session() {
    let daemon = two_everythings();
    let mut a = ShimClient::spawn(&daemon, None);
    let init = a.initialize();
    assert!(
        init["capabilities"]["tasks"]["requests"]["tools"]["call"].is_object(),
        "mcpd declares what server-everything offers: {init}"
    );
    let create = |shim: &mut ShimClient, server: &str| -> String {
        let created = shim.result(
            "tools/call",
            Some(json!({"name": format!("{server}__{RESEARCH}"),
                "arguments": {"topic": "mcpd"}, "task": {"ttl": 60000}})),
        );
        let id = created["task"]["taskId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            id.starts_with("mcpd-"),
            "the client sees mcpd's id: {created}"
        );
        id
    };
    let one = create(&mut a, "everything");
    let two = create(&mut a, "other");
    assert_ne!(one, two);

    // Another session can neither see nor reach them.
    let mut b = ShimClient::spawn(&daemon, None);
    b.initialize();
    let stolen = b.request("tasks/get", Some(json!({"taskId": one})));
    assert_eq!(stolen["error"]["code"], -32602, "{stolen}");
    let theirs = b.result("tasks/list", Some(json!({})));
    assert_eq!(theirs["tasks"], json!([]), "{theirs}");

    let mine = a.result("tasks/list", Some(json!({})));
    let ids: Vec<&str> = mine["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["taskId"].as_str())
        .collect();
    assert!(
        ids.contains(&one.as_str()) && ids.contains(&two.as_str()),
        "{mine}"
    );

    let cancelled = a.result("tasks/cancel", Some(json!({"taskId": two})));
    assert_eq!(cancelled["taskId"], two.as_str(), "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    let done = poll_until_terminal(&mut a, &json!({"taskId": one}));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["taskId"], one.as_str(), "{done}");
    let result = a.result("tasks/result", Some(json!({"taskId": one})));
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("mcpd"), "{result}");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        one.as_str(),
        "{result}"
    );
}

#[test]
fn peer_legacy_tasks_list_gathers_every_page_of_the_servers_list() {
    // server-everything's task store pages tasks/list by 10: 12 tasks take two pages.
    let daemon = TestDaemon::start(json!({
        "mcpServers": {"everything": peers().everything_server()}
    }));
    daemon.wait_server_state("everything", ServerState::Ready);
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    let mut created = Vec::new();
    for n in 0..12 {
        let task = shim.result(
            "tools/call",
            Some(json!({"name": format!("everything__{RESEARCH}"),
                "arguments": {"topic": format!("t{n}")}, "task": {"ttl": 60000}})),
        );
        created.push(
            task["task"]["taskId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let listed = shim.result("tasks/list", Some(json!({})));
    let mut ids: Vec<String> = listed["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["taskId"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    created.sort();
    assert_eq!(ids, created, "{listed}");
    assert!(listed["nextCursor"].is_null(), "{listed}");
}

#[test]
fn a_gathered_tasks_list_passes_each_tasks_fields_byte_for_byte() {
    // The fixture writes its tasks by hand: `1.50` and a 30-digit integer would come out as
    // `1.5` and `1.2345678901234568e29` from any re-encoding.
    let daemon = TestDaemon::start(fixture::config(&[("fx", &["--tasks"])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    let created = shim.result(
        "tools/call",
        Some(json!({"name": "fx__echo", "arguments": {"message": "hi"}, "task": {}})),
    );
    let mine = created["task"]["taskId"].as_str().unwrap_or_default();
    assert!(
        mine.starts_with("mcpd-"),
        "the client sees mcpd's id: {created}"
    );
    let line = shim.request_line("tasks/list", Some(json!({})));
    let listed: Value = serde_json::from_str(&line).expect("a JSON answer");
    assert_eq!(listed["result"]["tasks"][0]["taskId"], mine, "{line}");
    assert!(
        !line.contains("fx-task-1"),
        "the upstream's id stays hidden: {line}"
    );
    for raw in [
        r#""pollInterval":1.50"#,
        r#""x-fixture":{"big":123456789012345678901234567890,"tiny":1.0e-7}"#,
    ] {
        assert!(line.contains(raw), "{raw} byte for byte in {line}");
    }
}

#[test]
fn a_modern_clients_task_is_created_and_got_with_the_upstreams_numbers_byte_for_byte() {
    // The fixture's `task` tool requires a task, and its tasks carry `1.50`: the 2026-07-28
    // shape mcpd builds from them must not re-encode what it keeps.
    let daemon = TestDaemon::start(fixture::config(&[("fx", &["--tasks"])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut client = ShimClient::spawn(&daemon, None);
    let with_tasks = json!({"io.modelcontextprotocol/clientCapabilities":
        {"extensions": {"io.modelcontextprotocol/tasks": {}}}});
    let call = modern(
        json!({"name": "fx__task", "arguments": {}}),
        with_tasks.clone(),
    );
    let line = client.request_line("tools/call", Some(call));
    let created: Value = serde_json::from_str(&line).expect("a JSON answer");
    assert_eq!(created["result"]["resultType"], "task", "{line}");
    assert!(line.contains(r#""pollIntervalMs":1.50"#), "{line}");
    let id = created["result"]["taskId"].as_str().unwrap_or_default();
    assert!(id.starts_with("mcpd-"), "{line}");
    let line = client.request_line("tasks/get", Some(modern(json!({"taskId": id}), with_tasks)));
    let got: Value = serde_json::from_str(&line).expect("a JSON answer");
    assert_eq!(got["result"]["taskId"], id, "{line}");
    assert_eq!(got["result"]["status"], "working", "{line}");
    assert!(line.contains(r#""pollIntervalMs":1.50"#), "{line}");
    assert!(line.contains(r#""ttlMs":60000"#), "{line}");
    assert!(
        !line.contains("fx-task-"),
        "the upstream's id stays hidden: {line}"
    );
}

#[test]
fn peer_modern_clients_get_the_tasks_extension_form() {
    let daemon = two_everythings();
    let mut client = ShimClient::spawn(&daemon, None);
    let discover = client.result("server/discover", Some(modern(json!({}), json!({}))));
    assert!(
        discover["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"].is_object(),
        "{discover}"
    );
    let call = json!({"name": format!("everything__{RESEARCH}"), "arguments": {"topic": "mcpd"}});
    // Without the extension, a tool that runs only as a task is refused with what it needs.
    let refused = client.request("tools/call", Some(modern(call.clone(), json!({}))));
    assert_eq!(refused["error"]["code"], -32021, "{refused}");
    assert!(
        refused["error"]["data"]["requiredCapabilities"]["extensions"]["io.modelcontextprotocol/tasks"]
            .is_object(),
        "{refused}"
    );

    let with_tasks = json!({"io.modelcontextprotocol/clientCapabilities":
        {"extensions": {"io.modelcontextprotocol/tasks": {}}}});
    let created = client.result("tools/call", Some(modern(call, with_tasks.clone())));
    assert_eq!(created["resultType"], "task", "{created}");
    let id = created["taskId"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("mcpd-"), "{created}");
    assert!(created["ttlMs"].is_u64(), "{created}");
    assert!(created.get("ttl").is_none(), "{created}");

    let mut other = ShimClient::spawn(&daemon, None);
    let stolen = other.request(
        "tasks/get",
        Some(modern(json!({"taskId": id}), with_tasks.clone())),
    );
    assert_eq!(stolen["error"]["code"], -32602, "{stolen}");
    // tasks/* without the extension declared: -32021.
    let undeclared = client.request("tasks/get", Some(modern(json!({"taskId": id}), json!({}))));
    assert_eq!(undeclared["error"]["code"], -32021, "{undeclared}");
    let list = client.request("tasks/list", Some(modern(json!({}), with_tasks.clone())));
    assert_eq!(
        list["error"]["code"], -32601,
        "removed by the extension: {list}"
    );

    let done = poll_until_terminal(&mut client, &modern(json!({"taskId": id}), with_tasks));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["resultType"], "complete", "{done}");
    let text = done["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("mcpd"), "the result is inline: {done}");
}

/// Stops the daemon a shim autostarted (found over the control socket) and waits until it is gone.
fn stop_autostarted(daemon: &TestDaemon) {
    use mcpd_proto::{ControlRequest, ControlResponse};
    let Ok(ControlResponse::Status(s)) = daemon.try_control(&ControlRequest::Status) else {
        panic!("no autostarted mcpd answers");
    };
    mcpd_tests::process::signal(s.pid, libc::SIGTERM);
    assert!(
        wait_until(TIMEOUT, || !mcpd_tests::process_alive(s.pid)),
        "the autostarted mcpd did not stop"
    );
}

#[test]
fn peer_ts_sdk2_auto_is_modern_at_once_while_servers_start_and_when_its_probe_starts_the_daemon() {
    // A server that takes far longer to start than the client's probe timeout (60 s).
    let mut daemon =
        TestDaemon::start(fixture::config(&[("slow", &["--delay-init-ms", "600000"])]));
    daemon.wait_server_state("slow", ServerState::Starting);
    let lines = ts_v2(&daemon, "auto", &json!([]));
    let connect = op(&lines, "connect");
    assert_eq!(connect["era"], "modern", "{connect}");
    assert_eq!(daemon.server("slow").state, ServerState::Starting);

    // No daemon runs: the probe's throw-away shim starts one, which answers at once.
    daemon.terminate();
    let lines = {
        // The client passes MCPD_* through to the shims; autostart is on for this one.
        let mut cmd = std::process::Command::new(peers().node());
        cmd.arg(peers().ts_modern_client())
            .env_clear()
            .envs(daemon.env())
            .env("MCPD_NO_AUTOSTART", "0")
            .arg("--shim")
            .arg(mcpd_tests::bin("mcp-shim"))
            .args(["--mode", "auto", "--", "[]"])
            .current_dir(peers().dir());
        let output = mcpd_tests::process::run_with_timeout(&mut cmd, PEER_TIMEOUT);
        stop_autostarted(&daemon);
        assert!(
            output.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let connect: Value = serde_json::from_str(lines.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {lines}"));
    assert_eq!(connect["era"], "modern", "{connect}");
    assert_eq!(connect["serverInfo"]["name"], "mcpd", "{connect}");
}
