//! Modern-era (MCP 2026-07-28) clients through `mcp-shim` and `mcpd`: `server/discover`,
//! stateless requests carrying `_meta` without `initialize`, `-32022` for versions mcpd does
//! not speak, and the result fields modern clients require. Upstreams stay legacy.
//!
//! Tests that start the Python SDK 2.x are named `peer_*`.

use mcpd_proto::ServerState;
use mcpd_tests::fixture::{self, BIG_STRUCTURED};
use mcpd_tests::peers::run_py_modern_client;
use mcpd_tests::process::{descendants_of, signal};
use mcpd_tests::{ShimClient, TIMEOUT, TestDaemon, peers, wait_until};
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";

fn meta(version: &str) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-modern", "version": "0.1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// `params` with modern `_meta` added.
fn modern(mut params: Value) -> Value {
    params["_meta"] = meta(MODERN);
    params
}

fn daemon_with_fixture() -> TestDaemon {
    let daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon
}

#[test]
fn discover_is_answered_at_once_while_servers_start_and_a_killed_probe_leaves_nothing() {
    // The server takes far longer to start than any client would wait for a probe.
    let daemon = TestDaemon::start(fixture::config(&[("slow", &["--delay-init-ms", "600000"])]));
    daemon.wait_server_state("slow", ServerState::Starting);
    assert!(
        wait_until(TIMEOUT, || descendants_of(daemon.pid()).len() == 1),
        "the server's process did not start"
    );
    let before = descendants_of(daemon.pid());

    let mut probe = ShimClient::spawn(&daemon, None);
    let answer = probe.request("server/discover", Some(modern(json!({}))));
    let result = &answer["result"];
    assert_eq!(result["resultType"], "complete", "{answer}");
    let versions = result["supportedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for version in [
        MODERN,
        "2025-11-25",
        "2025-06-18",
        "2025-03-26",
        "2024-11-05",
    ] {
        assert!(
            versions.contains(&json!(version)),
            "{version} missing: {answer}"
        );
    }
    assert_eq!(versions[0], MODERN, "newest first: {answer}");
    // A server still starting for the first time is counted as offering tools.
    assert!(result["capabilities"]["tools"].is_object(), "{answer}");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcpd"
    );
    assert_eq!(result["cacheScope"], "private");
    assert!(result["ttlMs"].is_u64(), "{answer}");
    // Answered without waiting on the upstream: it is still starting.
    assert_eq!(daemon.server("slow").state, ServerState::Starting);

    // The client kills the probe at once: its session goes, and nothing was started for it.
    signal(probe.pid(), libc::SIGKILL);
    assert!(probe.wait_exit(TIMEOUT).is_some(), "the shim did not die");
    daemon.wait_status(TIMEOUT, "the probe's session to be gone", |s| {
        s.sessions.is_empty()
    });
    assert_eq!(
        descendants_of(daemon.pid()),
        before,
        "the probe left processes behind"
    );
}

#[test]
fn a_discover_without_meta_is_answered_and_initialize_still_works_after_it() {
    let daemon = daemon_with_fixture();
    let mut shim = ShimClient::spawn(&daemon, None);
    let answer = shim.request("server/discover", Some(json!({})));
    assert_eq!(answer["result"]["supportedVersions"][0], MODERN, "{answer}");
    assert!(
        answer["result"]["capabilities"]["tools"].is_object(),
        "{answer}"
    );
    // A legacy client on the same connection gets the handshake and legacy results.
    shim.initialize();
    let list = shim.result("tools/list", None);
    assert!(
        list.get("resultType").is_none(),
        "legacy results stay as they were: {list}"
    );
    assert!(list.get("ttlMs").is_none(), "{list}");
}

#[test]
fn modern_requests_without_initialize_list_call_and_read() {
    let daemon = TestDaemon::start(fixture::config(&[(
        "fx",
        &["--prompts", "1", "--resources", "1"],
    )]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut shim = ShimClient::spawn(&daemon, None);

    let tools = shim.result("tools/list", Some(modern(json!({}))));
    assert_eq!(tools["resultType"], "complete", "{tools}");
    assert_eq!(tools["ttlMs"], 0, "{tools}");
    assert_eq!(tools["cacheScope"], "private", "{tools}");
    assert!(
        tools["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "fx__echo")),
        "{tools}"
    );
    for list in ["prompts/list", "resources/list", "resources/templates/list"] {
        let result = shim.result(list, Some(modern(json!({}))));
        assert_eq!(result["resultType"], "complete", "{list}: {result}");
        assert_eq!(result["cacheScope"], "private", "{list}: {result}");
        assert!(result["ttlMs"].is_u64(), "{list}: {result}");
    }

    let call = shim.result(
        "tools/call",
        Some(modern(
            json!({"name": "fx__echo", "arguments": {"message": "hi"}}),
        )),
    );
    assert_eq!(call["resultType"], "complete", "{call}");
    assert!(
        call.get("ttlMs").is_none(),
        "a call result is not cacheable: {call}"
    );
    assert_eq!(call["content"][0]["text"], "hi", "{call}");

    let resources = shim.result("resources/list", Some(modern(json!({}))));
    let uri = resources["resources"][0]["uri"].clone();
    let read = shim.result("resources/read", Some(modern(json!({"uri": uri}))));
    assert_eq!(read["resultType"], "complete", "{read}");
    assert_eq!(read["cacheScope"], "private", "{read}");

    let prompts = shim.result("prompts/list", Some(modern(json!({}))));
    let name = prompts["prompts"][0]["name"].clone();
    let prompt = shim.result("prompts/get", Some(modern(json!({"name": name}))));
    assert_eq!(prompt["resultType"], "complete", "{prompt}");

    // The upstream's answer is spliced, never re-encoded (invariant 1).
    let line = shim.request_line(
        "tools/call",
        Some(modern(json!({"name": "fx__big", "arguments": {}}))),
    );
    assert!(
        line.contains(&format!(r#""structuredContent":{BIG_STRUCTURED}"#)),
        "the result was re-encoded: {line}"
    );
    assert!(
        line.contains(r#""result":{"resultType":"complete","#),
        "{line}"
    );

    // Methods 2026-07-28 removed are not served to a modern request.
    let ping = shim.request("ping", Some(modern(json!({}))));
    assert_eq!(ping["error"]["code"], -32601, "{ping}");
}

#[test]
fn an_unsupported_protocol_version_gets_minus_32022_with_the_supported_list() {
    let daemon = daemon_with_fixture();
    let mut shim = ShimClient::spawn(&daemon, None);
    for method in ["server/discover", "tools/list", "tools/call"] {
        let params =
            json!({"name": "fx__echo", "arguments": {"message": "x"}, "_meta": meta("1900-01-01")});
        let answer = shim.request(method, Some(params));
        let error = &answer["error"];
        assert_eq!(error["code"], -32022, "{method}: {answer}");
        assert_eq!(error["data"]["requested"], "1900-01-01", "{answer}");
        let supported = error["data"]["supported"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(supported.contains(&json!(MODERN)), "{answer}");
        assert!(supported.contains(&json!("2025-11-25")), "{answer}");
    }
    // Nothing reached the upstream for the refused call; a good one still works.
    let call = shim.result(
        "tools/call",
        Some(modern(
            json!({"name": "fx__echo", "arguments": {"message": "ok"}}),
        )),
    );
    assert_eq!(call["content"][0]["text"], "ok", "{call}");
}

/// The Python SDK 2.x client in `mode`, through the shim, listing and calling `echo` on
/// server-everything.
fn python_modern_client_lists_and_calls(mode: &str) {
    let daemon = TestDaemon::start(json!({
        "mcpServers": {"everything": peers().everything_server()}
    }));
    daemon.wait_server_state("everything", ServerState::Ready);
    let report = run_py_modern_client(
        &daemon,
        mode,
        &["--", "everything__echo", r#"{"message":"hi"}"#],
    );
    assert_eq!(report["protocol"], MODERN, "{report}");
    assert!(
        report["tools"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("everything__echo"))),
        "{report}"
    );
    assert_eq!(report["isError"], false, "{report}");
    assert_eq!(report["content"][0]["text"], "Echo: hi", "{report}");
    if mode == "auto" {
        // The probe found mcpd modern: the identity comes from its DiscoverResult.
        assert_eq!(report["server"], "mcpd", "{report}");
    }
}

#[test]
fn peer_python_sdk2_pinned_to_2026_07_28_lists_and_calls_everything() {
    python_modern_client_lists_and_calls(MODERN);
}

#[test]
fn peer_python_sdk2_in_auto_mode_probes_and_stays_modern() {
    python_modern_client_lists_and_calls("auto");
}
