//! Leniency where real servers are sloppy (issue 12): a Draft-07 tool schema passes through
//! untouched to clients of both eras, an error whose code is a string, that has no message or
//! is not an object reaches the client as a readable JSON-RPC error (with a message saying
//! what the server did), and a modern server's result without `resultType` is read as
//! `complete`. The sloppiness comes from the fixture (`mcpd-fixture --sloppy`), since no real
//! SDK produces it; the TypeScript SDK v2 client checks the Draft-07 schema the way a real
//! client reads it.

use mcpd_proto::ServerState;
use mcpd_tests::peers::{Sdk, SdkClient};
use mcpd_tests::{PEER_TIMEOUT, ShimClient, TestDaemon, fixture};
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";

fn draft7() -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "definitions": {"count": {"type": "integer", "minimum": 0}},
        "properties": {"n": {"$ref": "#/definitions/count"}},
        "required": ["n"],
        "additionalProperties": false
    })
}

fn daemon() -> TestDaemon {
    let daemon = TestDaemon::start(fixture::config(&[
        ("l", &["--sloppy"]),
        ("m", &["--sloppy", "--modern"]),
    ]));
    daemon.wait_server_state("l", ServerState::Ready);
    daemon.wait_server_state("m", ServerState::Ready);
    daemon
}

fn modern(mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    params
}

/// `tools/list` and the sloppy calls through `shim`, in the era `era` (modern: per-request
/// `_meta`; legacy: after `initialize`).
fn check(shim: &mut ShimClient, era_modern: bool) {
    let wrap = |p: Value| if era_modern { modern(p) } else { p };
    let list = shim.result("tools/list", Some(wrap(json!({}))));
    for server in ["l", "m"] {
        let tool = list["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"] == format!("{server}__draft7"))
            .unwrap_or_else(|| panic!("no {server}__draft7: {list}"));
        assert_eq!(tool["inputSchema"], draft7(), "{tool}");
        let call = shim.result(
            "tools/call",
            Some(wrap(
                json!({"name": format!("{server}__draft7"), "arguments": {"n": 3}}),
            )),
        );
        assert_eq!(call["content"][0]["text"], "3", "{call}");
        if era_modern {
            // The fixture's results have no resultType: read as complete.
            assert_eq!(call["resultType"], "complete", "{call}");
        }

        let string_code = shim.error(
            "tools/call",
            Some(wrap(
                json!({"name": format!("{server}__string_code"), "arguments": {}}),
            )),
        );
        assert_eq!(string_code["code"], -32000, "{string_code}");
        assert_eq!(string_code["message"], "went wrong", "{string_code}");
        assert_eq!(string_code["data"]["why"], "a string code", "{string_code}");

        let no_message = shim.error(
            "tools/call",
            Some(wrap(
                json!({"name": format!("{server}__no_message"), "arguments": {}}),
            )),
        );
        assert_eq!(no_message["code"], -32000, "{no_message}");
        let text = no_message["message"].as_str().unwrap_or_default();
        assert!(
            text.contains(&format!("server `{server}`")) && text.contains("no message"),
            "{no_message}"
        );

        let bare = shim.error(
            "tools/call",
            Some(wrap(
                json!({"name": format!("{server}__bare_error"), "arguments": {}}),
            )),
        );
        assert_eq!(bare["code"], -32603, "{bare}");
        let text = bare["message"].as_str().unwrap_or_default();
        assert!(
            text.contains("malformed error") && text.contains("it broke"),
            "{bare}"
        );
    }
}

#[test]
fn sloppy_servers_answers_reach_legacy_and_modern_clients_readable_and_schemas_untouched() {
    let daemon = daemon();
    let mut legacy = ShimClient::spawn(&daemon, None);
    legacy.initialize();
    check(&mut legacy, false);
    let mut stateless = ShimClient::spawn(&daemon, None);
    check(&mut stateless, true);
}

#[test]
fn peer_the_ts_sdk2_client_takes_a_draft_07_tool_schema_and_calls_the_tool() {
    let daemon = daemon();
    let lines = SdkClient::spawn_with(
        Sdk::TypeScriptV2,
        &daemon,
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "m__draft7", "arguments": {"n": 4}},
            {"op": "call_tool", "name": "l__draft7", "arguments": {"n": 5}},
        ]),
        &["--mode", MODERN],
    )
    .finish(PEER_TIMEOUT);
    let tools = lines
        .iter()
        .find(|l| l["op"] == "list_tools")
        .expect("list");
    assert!(
        tools["tools"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("m__draft7"))),
        "{tools}"
    );
    let texts: Vec<&Value> = lines
        .iter()
        .filter(|l| l["op"] == "call_tool")
        .map(|l| &l["content"][0]["text"])
        .collect();
    assert_eq!(texts, [&json!("4"), &json!("5")], "{lines:?}");
}
