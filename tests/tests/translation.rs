//! Prompts and resources across the protocol eras (issue 12): a modern (2026-07-28) client gets
//! a legacy server's prompts and resources, and a legacy client a modern-only server's, each
//! through mcpd's translation, with the SDKs' own clients (which check what they get: the
//! TypeScript SDK v2 client wants `resultType`, the Python SDK 1.x client a 2025-11-25 result).

use mcpd_proto::ServerState;
use mcpd_tests::peers::{Sdk, SdkClient, run_sdk_client};
use mcpd_tests::{PEER_TIMEOUT, TestDaemon, peers};
use serde_json::{Value, json};

fn op<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["op"] == name)
        .unwrap_or_else(|| panic!("no {name} line in {lines:#?}"))
}

fn text_of(messages: &Value) -> String {
    messages[0]["content"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn peer_a_modern_client_gets_prompts_and_reads_resources_of_server_everything() {
    let daemon =
        TestDaemon::start(json!({"mcpServers": {"everything": peers().everything_server()}}));
    daemon.wait_server_state("everything", ServerState::Ready);
    let lines = SdkClient::spawn_with(
        Sdk::TypeScriptV2,
        &daemon,
        &json!([
            {"op": "get_prompt", "name": "everything__args-prompt", "arguments": {"city": "Lyon"}},
            {"op": "read_resource", "uri": "demo://resource/static/document/architecture.md"},
        ]),
        &["--mode", "2026-07-28"],
    )
    .finish(PEER_TIMEOUT);
    assert_eq!(op(&lines, "connect")["protocolVersion"], "2026-07-28");
    let prompt = &op(&lines, "get_prompt")["messages"];
    assert!(text_of(prompt).contains("Lyon"), "{prompt}");
    let contents = &op(&lines, "read_resource")["contents"];
    assert_eq!(
        contents[0]["uri"], "demo://resource/static/document/architecture.md",
        "{contents}"
    );
    assert!(
        contents[0]["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{contents}"
    );
}

#[test]
fn peer_a_legacy_client_gets_prompts_and_reads_resources_of_a_modern_only_server() {
    let daemon = TestDaemon::start(json!({"mcpServers": {"m": peers().modern_server()}}));
    daemon.wait_server_state("m", ServerState::Ready);
    for sdk in [Sdk::Python, Sdk::TypeScript] {
        let lines = run_sdk_client(
            sdk,
            &daemon,
            &json!([
                {"op": "list_prompts"},
                {"op": "get_prompt", "name": "m__greet", "arguments": {"name": "Ada"}},
                {"op": "read_resource", "uri": "modern://note"},
            ]),
        );
        let prompt = &op(&lines, "get_prompt")["messages"];
        assert_eq!(
            text_of(prompt),
            "Please greet Ada warmly.",
            "{sdk:?}: {prompt}"
        );
        let contents = &op(&lines, "read_resource")["contents"];
        assert_eq!(contents[0]["text"], "a note", "{sdk:?}: {contents}");
    }
}

/// A modern request's params with the envelope (sampling declared) and `meta` members.
fn modern_params(mut params: Value, meta: Value) -> Value {
    let mut envelope = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"sampling": {}},
    });
    if let (Some(e), Some(m)) = (envelope.as_object_mut(), meta.as_object()) {
        e.extend(m.clone());
    }
    params["_meta"] = envelope;
    params
}

#[test]
fn peer_a_parked_calls_later_progress_goes_under_the_retrys_token() {
    let daemon = TestDaemon::start(json!({"mcpServers": {"p": peers().legacy_python_server()}}));
    daemon.wait_server_state("p", ServerState::Ready);
    let mut shim = mcpd_tests::ShimClient::spawn(&daemon, None);
    let call = json!({"name": "p__sample_slowly", "arguments": {"prompt": "hi", "steps": 3}});
    // The legacy upstream asks for sampling during the call: the client gets an
    // InputRequiredResult and the call waits upstream.
    let first = shim.result(
        "tools/call",
        Some(modern_params(
            call.clone(),
            json!({"progressToken": "first"}),
        )),
    );
    assert_eq!(first["resultType"], "input_required", "{first}");
    let key = first["inputRequests"]
        .as_object()
        .and_then(|r| r.keys().next().cloned())
        .unwrap_or_default();
    let mut retry = modern_params(call, json!({"progressToken": "retry"}));
    retry["requestState"] = first["requestState"].clone();
    retry["inputResponses"] = json!({ key: {"role": "assistant",
        "content": {"type": "text", "text": "model says hi"}, "model": "m"} });
    let done = shim.result("tools/call", Some(retry));
    assert_eq!(
        done["content"][0]["text"], "sampled slowly: model says hi",
        "{done}"
    );

    let tokens: Vec<(String, f64)> = shim
        .notifications()
        .iter()
        .filter(|n| n["method"] == "notifications/progress")
        .map(|n| {
            (
                n["params"]["progressToken"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned(),
                n["params"]["progress"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    // Before the upstream asked: the first request's; after the retry: the retry's, each step.
    assert_eq!(
        tokens,
        [
            ("first".to_owned(), 0.0),
            ("retry".to_owned(), 1.0),
            ("retry".to_owned(), 2.0),
            ("retry".to_owned(), 3.0)
        ],
        "{:?}",
        shim.notifications()
    );
}
