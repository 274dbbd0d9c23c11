//! Issue 16: what clients see and what runs. Tool filters (per server and per profile), name
//! prefixes (`""` for MCP Apps), `_meta` passing through, instructions under 2 KB with the full
//! text as a resource, lazy servers, and search mode (`search_tools`, `describe_tools`,
//! `call_tool`), each through the real binaries against the fixture server; the search mode also
//! with the official Python and TypeScript SDK clients.

use std::fs;
use std::path::{Path, PathBuf};

use mcpd_proto::ServerState;
use mcpd_tests::fixture::{self, FIXED_TOOLS};
use mcpd_tests::{
    PEER_TIMEOUT, Sdk, ShimClient, TIMEOUT, TestDaemon, eventually, process_alive, run_sdk_client,
};
use serde_json::{Value, json};

fn client(daemon: &TestDaemon, profile: Option<&str>) -> ShimClient {
    let mut shim = ShimClient::spawn(daemon, profile);
    shim.set_timeout(PEER_TIMEOUT);
    shim.initialize();
    shim
}

fn text_of(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

fn error_of(shim: &mut ShimClient, name: &str) -> Value {
    shim.error("tools/call", Some(json!({"name": name, "arguments": {}})))
}

// ---- tool filters ------------------------------------------------------------------------

#[test]
fn a_server_filter_hides_denied_tools_and_refuses_their_calls_with_a_clear_error() {
    let mut config = fixture::config(&[("fx", &["--tools", "2"])]);
    config["mcpServers"]["fx"]["tools"] = json!({"allow": ["tool_*", "e*", "a*"], "deny": ["ask"]});
    let daemon = TestDaemon::start(config);
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut shim = client(&daemon, None);

    assert_eq!(
        shim.tool_names(),
        ["fx__tool_0", "fx__tool_1", "fx__echo", "fx__add"]
    );
    for denied in ["fx__ask", "fx__sleep", "fx__crash"] {
        let e = error_of(&mut shim, denied);
        assert_eq!(e["code"], -32602, "{e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(denied) && message.contains("mcpServers.fx.tools"),
            "{message}"
        );
    }
    assert_eq!(
        text_of(&shim.call_tool("fx__echo", json!({"message": "allowed"}))),
        "allowed"
    );
    // The server still runs: a denied `crash` never reached it.
    assert_eq!(daemon.server("fx").state, ServerState::Ready);
}

#[test]
fn a_profile_filter_applies_to_its_sessions_only() {
    let mut config = fixture::config(&[("fx", &[]), ("other", &[])]);
    config["profiles"] = json!({
        "safe": {"servers": ["fx", "other"], "tools": {"deny": ["crash", "ask"]}},
        "all": {"servers": ["fx", "other"]},
    });
    let daemon = TestDaemon::start(config);
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon.wait_server_state("other", ServerState::Ready);

    let mut safe = client(&daemon, Some("safe"));
    let names = safe.tool_names();
    assert!(names.contains(&"fx__echo".to_owned()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("__crash") || n.ends_with("__ask")),
        "{names:?}"
    );
    let e = error_of(&mut safe, "other__crash");
    assert_eq!(e["code"], -32602);
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("profiles.safe.tools")),
        "{e}"
    );

    let mut all = client(&daemon, Some("all"));
    assert!(all.tool_names().contains(&"fx__crash".to_owned()));
}

#[test]
fn changing_only_a_filter_on_reload_keeps_the_process_and_tells_sessions() {
    let daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    let pid = daemon.wait_server_state("fx", ServerState::Ready).pid;
    let mut shim = client(&daemon, None);
    assert_eq!(shim.tool_names().len(), FIXED_TOOLS.len());

    let mut config = fixture::config(&[("fx", &[])]);
    config["mcpServers"]["fx"]["tools"] = json!({"deny": ["crash"]});
    daemon.write_config(&config);
    let report = daemon.reload().expect("reload");
    assert_eq!(report.unchanged, ["fx"], "{report:?}");

    shim.wait_notification("notifications/tools/list_changed");
    let names = shim.tool_names();
    assert_eq!(names.len(), FIXED_TOOLS.len() - 1);
    assert!(!names.contains(&"fx__crash".to_owned()));
    assert_eq!(daemon.server("fx").pid, pid, "the server was not restarted");
}

// ---- names ---------------------------------------------------------------------------------

#[test]
fn a_prefix_renames_tools_and_an_empty_one_keeps_bare_names_and_meta_byte_for_byte() {
    let mut config = fixture::config(&[("fx", &[]), ("app", &["--app"])]);
    config["mcpServers"]["fx"]["prefix"] = json!("f");
    config["mcpServers"]["app"]["prefix"] = json!("");
    config["mcpServers"]["app"]["tools"] = json!({"allow": ["show_app", "pid"]});
    let daemon = TestDaemon::start(config);
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon.wait_server_state("app", ServerState::Ready);
    let mut shim = client(&daemon, None);

    let names = shim.tool_names();
    assert!(names.contains(&"f__echo".to_owned()), "{names:?}");
    assert!(names.contains(&"show_app".to_owned()), "{names:?}");
    assert!(names.contains(&"pid".to_owned()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("fx__") || n.starts_with("app__"))
    );

    // The tool's `_meta` (the MCP App's `ui://` link) arrives as the server wrote it.
    let list = shim.request_line("tools/list", None);
    assert!(
        list.contains(r#""_meta":{"ui":{"resourceUri":"ui://fixture/app"}},"description":"Shows the fixture's app""#),
        "{list}"
    );
    // The App calls its tool by the bare name; the result's `_meta` passes through too.
    let line = shim.request_line(
        "tools/call",
        Some(json!({"name": "show_app", "arguments": {}})),
    );
    assert!(
        line.contains(r#""_meta":{"ui":{"resourceUri":"ui://fixture/app"},"n":1.50}"#),
        "{line}"
    );
    assert_eq!(
        text_of(&shim.call_tool("f__echo", json!({"message": "m"}))),
        "m"
    );
}

#[test]
fn prefixes_that_collide_are_a_config_error_naming_both_servers() {
    let daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut config = fixture::config(&[("fx", &[]), ("other", &[])]);
    config["mcpServers"]["other"]["prefix"] = json!("fx");
    daemon.write_config(&config);
    let e = daemon.reload().expect_err("a collision is refused");
    assert!(
        e.contains("mcpServers.other.prefix") && e.contains("`fx`") && e.contains("`other`"),
        "{e}"
    );
    // The running configuration stays.
    assert_eq!(daemon.server("fx").state, ServerState::Ready);
}

// ---- instructions --------------------------------------------------------------------------

#[test]
fn long_instructions_are_summarised_under_2_kb_and_served_in_full_as_a_resource() {
    let long = "Always read the file before you write it. ".repeat(80);
    let mut config = fixture::config(&[
        ("big", &["--instructions", &long]),
        ("small", &["--instructions", "Small server: be brief."]),
    ]);
    config["mcpd"] = json!({"listWaitMs": 30000});
    let daemon = TestDaemon::start(config);
    daemon.wait_server_state("big", ServerState::Ready);
    daemon.wait_server_state("small", ServerState::Ready);
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.set_timeout(PEER_TIMEOUT);
    let init = shim.initialize();
    let text = init["instructions"].as_str().expect("instructions");
    assert!(text.len() <= 2048, "{} bytes", text.len());
    assert!(text.contains("## small\nSmall server: be brief."), "{text}");
    assert!(text.contains("## big\nAlways read the file before you write it."));
    assert!(text.contains("mcpd://instructions/big"), "{text}");
    assert!(init["capabilities"].get("resources").is_some(), "{init}");

    let resources = shim.result("resources/list", None);
    let uris: Vec<&str> = resources["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert_eq!(uris, ["mcpd://instructions/big"]);
    let read = shim.result(
        "resources/read",
        Some(json!({"uri": "mcpd://instructions/big"})),
    );
    assert_eq!(read["contents"][0]["text"], long);
}

// ---- lazy servers --------------------------------------------------------------------------

fn cache_file(root: &Path) -> PathBuf {
    root.join("cache").join("mcpd").join("catalog.json")
}

#[test]
fn a_lazy_server_with_a_cached_catalog_starts_only_when_a_call_needs_it() {
    let mut config = fixture::config(&[("lazy", &["--tools", "2"]), ("eager", &[])]);
    config["mcpServers"]["lazy"]["start"] = json!("lazy");
    let mut daemon = TestDaemon::start(config);
    // No cache yet: it starts once to fill it.
    let first = daemon.wait_server_state("lazy", ServerState::Ready);
    assert!(first.pid.is_some());
    let cache_root = daemon.root().to_owned();
    eventually(TIMEOUT, "the catalog cache to hold lazy's tools", || {
        fs::read_to_string(cache_file(&cache_root))
            .ok()
            .filter(|c| c.contains("tool_1"))
    });
    assert!(daemon.terminate().success());

    daemon.start_again();
    daemon.wait_server_state("eager", ServerState::Ready);
    let idle = daemon.wait_server_state("lazy", ServerState::Idle);
    assert_eq!(idle.pid, None, "a lazy server is not started");
    let mut shim = client(&daemon, None);
    let names = shim.tool_names();
    assert!(names.contains(&"lazy__tool_1".to_owned()), "{names:?}");
    assert_eq!(
        daemon.server("lazy").state,
        ServerState::Idle,
        "listing does not start it"
    );

    // The first call starts it and gets its answer.
    let pid: u32 = text_of(&shim.call_tool("lazy__pid", json!({})))
        .parse()
        .expect("a pid");
    assert!(process_alive(pid));
    let running = daemon.wait_server_state("lazy", ServerState::Ready);
    assert_eq!(running.pid, Some(pid));
}

// ---- search mode ---------------------------------------------------------------------------

fn search_config(mode: &str) -> Value {
    let mut config = fixture::config(&[("fx", &["--tools", "3"]), ("app", &["--app"])]);
    config["mcpServers"]["app"]["tools"] = json!({"allow": ["show_app"]});
    config["profiles"] = json!({"default": {"servers": ["fx", "app"], "toolMode": mode}});
    config
}

#[test]
fn search_mode_shows_three_tools_that_find_describe_and_call_the_others() {
    let daemon = TestDaemon::start(search_config("search"));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon.wait_server_state("app", ServerState::Ready);
    let mut shim = client(&daemon, None);
    assert_eq!(
        shim.tool_names(),
        ["search_tools", "describe_tools", "call_tool"]
    );

    let found = shim.call_tool(
        "search_tools",
        json!({"query": "echo a message back", "limit": 3}),
    );
    let hits = found["structuredContent"]["tools"]
        .as_array()
        .expect("hits");
    assert!(hits.len() <= 3 && !hits.is_empty(), "{found}");
    assert!(
        hits.iter().take(2).any(|h| h["name"] == "fx__echo"),
        "{found}"
    );
    assert!(
        text_of(&found).contains("fx__echo — Echoes `message`"),
        "{found}"
    );

    let described = shim.request_line(
        "tools/call",
        Some(json!({"name": "describe_tools", "arguments": {"names": ["app__show_app"]}})),
    );
    // The definition as listed, `_meta` included, byte for byte.
    assert!(
        described.contains(r#""_meta":{"ui":{"resourceUri":"ui://fixture/app"}}"#),
        "{described}"
    );

    let object = shim.call_tool(
        "call_tool",
        json!({"name": "fx__add", "arguments": {"a": 2, "b": 3}}),
    );
    assert_eq!(object["structuredContent"]["sum"], 5.0);
    let string = shim.call_tool(
        "call_tool",
        json!({"name": "fx__echo", "arguments": "{\"message\": \"as a string\"}"}),
    );
    assert_eq!(text_of(&string), "as a string");
    // Results pass through unchanged: the raw numbers of `big` survive.
    let big = shim.request_line(
        "tools/call",
        Some(json!({"name": "call_tool", "arguments": {"name": "fx__big"}})),
    );
    assert!(
        big.contains(&format!(
            r#""structuredContent":{}"#,
            fixture::BIG_STRUCTURED
        )),
        "{big}"
    );
    let e = shim.error(
        "tools/call",
        Some(json!({"name": "call_tool", "arguments": {"name": "fx__nope", "arguments": {}}})),
    );
    assert_eq!(e["code"], -32602, "{e}");
}

#[test]
fn in_search_mode_list_changed_still_flows_and_new_tools_are_found() {
    let mut config = fixture::config(&[("fx", &["--list-changed-after-ms", "300"])]);
    config["profiles"] = json!({"default": {"servers": ["fx"], "toolMode": "search"}});
    let daemon = TestDaemon::start(config);
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut shim = client(&daemon, None);
    shim.wait_notification("notifications/tools/list_changed");
    let found = shim.call_tool(
        "search_tools",
        json!({"query": "added after initialization"}),
    );
    assert_eq!(
        found["structuredContent"]["tools"][0]["name"], "fx__late",
        "{found}"
    );
}

#[test]
fn auto_mode_searches_only_above_the_threshold() {
    let small = TestDaemon::start(search_config("auto"));
    small.wait_server_state("fx", ServerState::Ready);
    let mut shim = client(&small, None);
    assert!(shim.tool_names().contains(&"fx__echo".to_owned()));

    let mut config = fixture::config(&[("fx", &["--tools", "60"])]);
    config["profiles"] = json!({"default": {"servers": ["fx"], "toolMode": "auto"}});
    let big = TestDaemon::start(config);
    big.wait_server_state("fx", ServerState::Ready);
    let mut shim = client(&big, None);
    assert_eq!(
        shim.tool_names(),
        ["search_tools", "describe_tools", "call_tool"]
    );
}

fn sdk_client_uses_search_mode(sdk: Sdk) {
    let daemon = TestDaemon::start(search_config("search"));
    daemon.wait_server_state("fx", ServerState::Ready);
    let lines = run_sdk_client(
        sdk,
        &daemon,
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "search_tools", "arguments": {"query": "add two numbers"}},
            {"op": "call_tool", "name": "call_tool", "arguments": {"name": "fx__add", "arguments": {"a": 1, "b": 2}}},
            {"op": "call_tool", "name": "call_tool", "arguments": {"name": "fx__echo", "arguments": "{\"message\":\"hi\"}"}},
        ]),
    );
    assert_eq!(
        lines[1]["tools"],
        json!(["search_tools", "describe_tools", "call_tool"]),
        "{lines:#?}"
    );
    assert_eq!(
        lines[2]["structuredContent"]["tools"][0]["name"], "fx__add",
        "{lines:#?}"
    );
    assert_eq!(lines[3]["structuredContent"]["sum"], 3.0, "{lines:#?}");
    assert_eq!(lines[4]["content"][0]["text"], "hi", "{lines:#?}");
}

#[test]
fn peer_python_client_finds_and_calls_tools_in_search_mode() {
    sdk_client_uses_search_mode(Sdk::Python);
}

#[test]
fn peer_typescript_client_finds_and_calls_tools_in_search_mode() {
    sdk_client_uses_search_mode(Sdk::TypeScript);
}
