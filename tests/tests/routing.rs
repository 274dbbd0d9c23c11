//! Issue 10 §3, routing that a server cannot abuse: resource URIs belong to the server that
//! lists them, tool and prompt names never collide silently, JSON-RPC ids are strings or
//! integers, an upstream answer over the line limit fails its request at once, and a server
//! that hangs in `initialize` counts as failing as it starts.

use std::time::Duration;

use mcpd_proto::ServerState;
use mcpd_tests::{ShimClient, TIMEOUT, TestDaemon, fixture};
use serde_json::{Value, json};

fn client(daemon: &TestDaemon) -> ShimClient {
    let mut shim = ShimClient::spawn(daemon, None);
    shim.initialize();
    shim
}

fn with(args: &[&str], extra: Value) -> Value {
    let mut server = fixture::server(args);
    if let (Some(s), Some(e)) = (server.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    server
}

/// The server that answered a `resources/read` (the fixture puts its name in `_meta`), or the
/// error code.
fn reader_of(shim: &mut ShimClient, uri: &str) -> Result<String, i64> {
    let answer = shim.request("resources/read", Some(json!({"uri": uri})));
    match answer.get("result") {
        Some(r) => Ok(r["contents"][0]["_meta"]["server"]
            .as_str()
            .unwrap_or_default()
            .to_owned()),
        None => Err(answer["error"]["code"].as_i64().unwrap_or_default()),
    }
}

// ---- resource URIs ---------------------------------------------------------------------------

/// `aaa` sorts first and offers a catch-all template; `zzz` lists `note://zzz/secret0` and has a
/// template of its own under `note://zzz/files/`.
fn aaa_and_zzz() -> TestDaemon {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "aaa": fixture::server(&["--name", "aaa", "--resources", "1", "--uri-prefix", "note://aaa/", "--template", "{uri}"]),
        "zzz": fixture::server(&["--name", "zzz", "--resources", "1", "--uri-prefix", "note://zzz/secret", "--template", "note://zzz/files/{name}"]),
    }}));
    daemon.wait_server_state("aaa", ServerState::Ready);
    daemon.wait_server_state("zzz", ServerState::Ready);
    daemon
}

#[test]
fn a_uri_a_server_lists_is_read_from_that_server_never_through_another_ones_template() {
    let daemon = aaa_and_zzz();
    let mut shim = client(&daemon);
    assert_eq!(reader_of(&mut shim, "note://zzz/secret0"), Ok("zzz".into()));
    assert_eq!(reader_of(&mut shim, "note://aaa/0"), Ok("aaa".into()));
}

#[test]
fn between_templates_the_one_with_the_longest_literal_prefix_wins() {
    let daemon = aaa_and_zzz();
    let mut shim = client(&daemon);
    // Both `{uri}` (aaa) and `note://zzz/files/{name}` (zzz) match.
    assert_eq!(
        reader_of(&mut shim, "note://zzz/files/plan.txt"),
        Ok("zzz".into())
    );
}

#[test]
fn a_catch_all_template_never_takes_a_uri_under_another_servers_authority() {
    let daemon = aaa_and_zzz();
    let mut shim = client(&daemon);
    // zzz lists under `note://zzz`: a URI there that nobody lists or templates is not found,
    // rather than handed to aaa's catch-all.
    assert_eq!(reader_of(&mut shim, "note://zzz/other"), Err(-32002));
    // Where nobody else claims anything, the catch-all is aaa's to use.
    assert_eq!(
        reader_of(&mut shim, "note://aaa/anything"),
        Ok("aaa".into())
    );
    assert_eq!(reader_of(&mut shim, "other://x/y"), Ok("aaa".into()));
}

#[test]
fn overlapping_templates_are_logged_and_shown_in_status() {
    let daemon = aaa_and_zzz();
    let overlap = "`aaa`'s template `{uri}` also matches `zzz`'s resources";
    daemon.wait_log(overlap, TIMEOUT);
    let out = daemon.mcpctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("overlap: {overlap}")), "{text}");
    let status = daemon.status();
    assert!(
        status.routing_overlaps.iter().any(|o| o.contains(overlap)),
        "{status:?}"
    );
}

// ---- tool and prompt names -------------------------------------------------------------------

fn colliding_servers(slow: &str) -> TestDaemon {
    let delay = |name: &str| -> Vec<&str> {
        if name == slow {
            vec!["--delay-init-ms", "1500"]
        } else {
            vec![]
        }
    };
    let mut a = vec!["--name", "a", "--extra-tool", "b__echo"];
    a.extend(delay("a"));
    let mut ab = vec!["--name", "a__b"];
    ab.extend(delay("a__b"));
    TestDaemon::start(json!({"mcpServers": {
        "a": fixture::server(&a),
        "a__b": fixture::server(&ab),
    }}))
}

fn tools(shim: &mut ShimClient) -> Vec<String> {
    let mut names = shim.tool_names();
    names.sort();
    names
}

#[test]
fn names_that_would_spell_the_same_are_kept_apart_and_each_reaches_its_server() {
    let daemon = colliding_servers("");
    daemon.wait_server_state("a", ServerState::Ready);
    daemon.wait_server_state("a__b", ServerState::Ready);
    let mut shim = client(&daemon);
    let names = tools(&mut shim);
    let theirs: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("a__b__echo"))
        .collect();
    assert_eq!(theirs.len(), 2, "{names:?}");
    // `a__b`'s own `echo` keeps the plain name; `a`'s `b__echo` gets a hash suffix.
    let plain = shim.call_tool("a__b__echo", json!({"message": "from a__b"}));
    assert_eq!(plain["content"][0]["text"], "from a__b");
    let suffixed = theirs
        .iter()
        .find(|n| n.len() > "a__b__echo".len())
        .expect("a suffixed name");
    assert!(
        suffixed.starts_with("a__b__echo-") && suffixed.len() == "a__b__echo-".len() + 6,
        "{suffixed}"
    );
    let other = shim.call_tool(suffixed, json!({}));
    assert_eq!(other["content"][0]["text"], "b__echo of a");
    daemon.wait_log("would also read as a name of server `a__b`", TIMEOUT);
}

#[test]
fn the_names_do_not_depend_on_which_server_starts_first_or_on_restarts() {
    let first = {
        let daemon = colliding_servers("a__b");
        // While `a__b` is still starting, `a`'s tool already has the name it will keep.
        daemon.wait_server_state("a", ServerState::Ready);
        let mut shim = client(&daemon);
        let early = tools(&mut shim);
        daemon.wait_server_state("a__b", ServerState::Ready);
        let all = tools(&mut shim);
        for name in &early {
            assert!(all.contains(name), "{name} changed: {early:?} then {all:?}");
        }
        all
    };
    let second = {
        let daemon = colliding_servers("a");
        daemon.wait_server_state("a", ServerState::Ready);
        daemon.wait_server_state("a__b", ServerState::Ready);
        let mut shim = client(&daemon);
        tools(&mut shim)
    };
    assert_eq!(first, second);
}

// ---- JSON-RPC ids ----------------------------------------------------------------------------

#[test]
fn an_object_array_float_or_boolean_id_gets_invalid_request_and_the_session_goes_on() {
    let daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    let mut shim = client(&daemon);
    for id in [r#"{"a":1}"#, "[1]", "1.5", "true"] {
        shim.send_raw(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
        let line = shim
            .recv_line_timeout(TIMEOUT)
            .unwrap_or_else(|e| panic!("no answer to id {id}: {e:?}"));
        let answer: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(answer["error"]["code"], -32600, "id {id}: {line}");
        assert_eq!(answer["id"], Value::Null, "id {id}: {line}");
    }
    assert_eq!(shim.result("ping", None), json!({}));
    let answer = shim.call_tool("fx__echo", json!({"message": "still here"}));
    assert_eq!(answer["content"][0]["text"], "still here");
}

// ---- answers over the line limit -------------------------------------------------------------

#[test]
fn an_upstream_answer_over_the_line_limit_fails_its_request_at_once_naming_server_and_limit() {
    // A request timeout far beyond the test's patience: only an immediate error can pass.
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "fx": with(&["--blob"], json!({"requestTimeoutMs": 600_000})),
    }}));
    let mut shim = client(&daemon);
    shim.set_timeout(Duration::from_secs(30));
    let limit = mcpd_proto::line::MAX_MESSAGE_LINE;
    let error = shim.error(
        "tools/call",
        Some(json!({"name": "fx__blob", "arguments": {"bytes": limit + 1}})),
    );
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`fx`") && message.contains(&limit.to_string()),
        "{error}"
    );
    // The server is fine and its next answer gets through.
    let answer = shim.call_tool("fx__blob", json!({"bytes": 10}));
    assert_eq!(answer["content"][0]["text"], "xxxxxxxxxx");
}

// ---- initialize that hangs -------------------------------------------------------------------

#[test]
fn a_server_that_hangs_in_initialize_until_its_startup_timeout_counts_as_a_quick_failure() {
    // The startup timeout is longer than the 10 s a quick failure used to be measured by: the
    // server never finished its handshake, so it still failed as it started.
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "hang": with(&["--delay-init-ms", "600000"], json!({"startupTimeoutMs": 10_500, "crashLoopAfter": 1})),
    }}));
    let hang =
        daemon.wait_server_state_timeout("hang", ServerState::CrashLoop, Duration::from_secs(60));
    assert!(
        hang.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("did not answer initialize"),
        "{hang:?}"
    );
}
