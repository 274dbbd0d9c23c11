//! Upstreams of both protocol eras, and the translation between the eras (issue 12, upstream
//! half): the per-server `protocol` key and its probe, modern-only servers reached by legacy and
//! modern clients, and the matrix modern/legacy client × modern/legacy upstream for a plain call
//! and for sampling, elicitation (form and URL) and roots, each answered by the client's own
//! callback.
//!
//! Upstreams: `tests/peers/py_modern_server.py` (Python SDK 2.x, accepts only 2026-07-28) and
//! `tests/peers/py_http_server.py --stdio` (Python SDK 1.x, legacy only). Tests that start them
//! or an SDK client are named `peer_*`.

use mcpd_proto::ServerState;
use mcpd_tests::fixture;
use mcpd_tests::http_peer::HttpPeer;
use mcpd_tests::peers::{Sdk, SdkClient, run_py_modern_client};
use mcpd_tests::{PEER_TIMEOUT, TestDaemon, bin, peers};
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// The callbacks each client installs: sampling, elicitation (accepting with an answer) and
/// roots, each marked so a test can tell that this client's own callback produced the answer.
fn callbacks() -> Value {
    json!({
        "sampling": {"text": "from the client's model"},
        "elicitation": {"action": "accept", "content": {"answer": "from the client's user"}},
        "roots": [{"uri": "file:///client-root", "name": "root"}],
    })
}

/// The calls of the matrix against server `s`, and what each must answer.
fn matrix_calls(s: &str) -> Vec<(String, Value, &'static str)> {
    vec![
        (format!("{s}__echo"), json!({"message": "hi"}), "Echo: hi"),
        (
            format!("{s}__sample"),
            json!({"prompt": "say something"}),
            "sampled: from the client's model",
        ),
        (
            format!("{s}__ask"),
            json!({"question": "what?"}),
            "elicited: from the client's user",
        ),
        (
            format!("{s}__ask_url"),
            json!({"url": "https://example.com/consent"}),
            "url elicitation: accept",
        ),
        (
            format!("{s}__roots"),
            json!({}),
            "roots: file:///client-root",
        ),
    ]
}

/// Runs the Python SDK 2.x client pinned to 2026-07-28 with `calls` and the callbacks;
/// returns its report line.
fn modern_client(daemon: &TestDaemon, callbacks: &Value, calls: &[(String, Value)]) -> Value {
    let calls: Vec<Value> = calls.iter().map(|(t, a)| json!([t, a])).collect();
    let (callbacks, calls) = (callbacks.to_string(), Value::Array(calls).to_string());
    run_py_modern_client(
        daemon,
        MODERN,
        &["--callbacks", &callbacks, "--calls", &calls],
    )
}

/// Runs a legacy SDK client (`sdk`) with `calls` and the callbacks; returns the call lines and
/// the requests its callbacks saw (Python only).
fn legacy_client(
    sdk: Sdk,
    daemon: &TestDaemon,
    callbacks: &Value,
    calls: &[(String, Value)],
) -> Vec<Value> {
    let mut steps: Vec<Value> = calls
        .iter()
        .map(|(name, arguments)| json!({"op": "call_tool", "name": name, "arguments": arguments}))
        .collect();
    if sdk == Sdk::Python {
        steps.push(json!({"op": "received"}));
    }
    let cb = callbacks.to_string();
    SdkClient::spawn_with(sdk, daemon, &Value::Array(steps), &["--callbacks", &cb])
        .finish(PEER_TIMEOUT)
}

fn text(call: &Value) -> String {
    call["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn daemon_with(name: &str, server: Value) -> TestDaemon {
    let daemon = TestDaemon::start(json!({"mcpServers": {name: server}}));
    daemon.wait_server_state(name, ServerState::Ready);
    daemon
}

// ---- the upstream half: protocol key, probe, modern upstreams ------------------------------

#[test]
fn peer_a_modern_only_server_is_probed_and_reached_by_legacy_and_modern_clients() {
    // `auto` (the default): the probe finds it modern; the SDK would refuse `initialize`.
    let daemon = daemon_with("m", peers().modern_server());
    daemon.wait_log(r#"server=m protocol="2026-07-28""#, PEER_TIMEOUT);
    let status = daemon.server("m");
    assert_eq!(status.server_info.as_deref(), Some("py-modern-peer 2.0"));
    let call = vec![("m__echo".to_owned(), json!({"message": "hi"}))];

    for sdk in [Sdk::Python, Sdk::TypeScript] {
        let lines = legacy_client(sdk, &daemon, &json!({}), &call);
        let answer = lines
            .iter()
            .find(|l| l["op"] == "call_tool")
            .expect("a call line");
        assert_eq!(text(answer), "Echo: hi", "{sdk:?}: {answer}");
    }
    let report = modern_client(&daemon, &json!({}), &call);
    assert_eq!(report["protocol"], MODERN, "{report}");
    assert_eq!(text(&report["calls"][0]), "Echo: hi", "{report}");

    // What the server saw: every call in its era, with mcpd's envelope.
    let stats = modern_client(&daemon, &json!({}), &[("m__stats".to_owned(), json!({}))]);
    let seen = parse(&text(&stats["calls"][0]));
    let calls = seen["calls"].as_array().cloned().unwrap_or_default();
    assert_eq!(calls.len(), 3, "{seen}");
    assert!(calls.iter().all(|c| c["protocol"] == MODERN), "{seen}");
}

#[test]
fn peer_a_modern_only_server_over_streamable_http_gets_method_and_name_headers_and_no_session() {
    let peer = HttpPeer::python_modern(&[]);
    let daemon = daemon_with("m", json!({"type": "http", "url": peer.url("/mcp")}));
    let call = vec![("m__echo".to_owned(), json!({"message": "over http"}))];
    let lines = legacy_client(Sdk::Python, &daemon, &json!({}), &call);
    let answer = lines.iter().find(|l| l["op"] == "call_tool").expect("call");
    assert_eq!(text(answer), "Echo: over http", "{answer}");

    let stats = modern_client(&daemon, &json!({}), &[("m__stats".to_owned(), json!({}))]);
    let seen = parse(&text(&stats["calls"][0]));
    let http = seen["http"].as_array().cloned().unwrap_or_default();
    let echo = http
        .iter()
        .find(|r| r["mcp-name"] == "echo")
        .unwrap_or_else(|| panic!("no request named echo: {seen}"));
    assert_eq!(echo["mcp-method"], "tools/call", "{echo}");
    assert_eq!(echo["protocol"], MODERN, "{echo}");
    // Stateless: no request carried a session id, none was refused for its version.
    assert!(http.iter().all(|r| r["session"].is_null()), "{seen}");
    assert!(http.iter().all(|r| r["protocol"] == MODERN), "{seen}");
    assert!(
        http.iter().any(|r| r["mcp-method"] == "server/discover"),
        "{seen}"
    );
}

#[test]
fn peer_a_server_pinned_to_2026_07_28_is_not_probed_and_a_legacy_one_pinned_so_fails_clearly() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "m": {"protocol": MODERN, "command": peers().python_modern(), "args": [peers().py_modern_server()]},
        "old": {"protocol": MODERN, "command": bin("mcpd-fixture"), "args": [], "restartDelayMs": 60000},
    }}));
    daemon.wait_server_state("m", ServerState::Ready);
    let status = daemon.wait_server_state("old", ServerState::Failed);
    let why = status.last_error.unwrap_or_default();
    assert!(
        why.contains("\"protocol\": \"2026-07-28\"") && why.contains("\"auto\""),
        "{why}"
    );
    assert!(!daemon.log().contains("not a 2026-07-28 server"));
}

#[test]
fn peer_a_modern_only_server_pinned_to_legacy_refuses_initialize() {
    let mut server = peers().modern_server();
    server["protocol"] = json!("legacy");
    server["restartDelayMs"] = json!(60000);
    let daemon = TestDaemon::start(json!({"mcpServers": {"m": server}}));
    let status = daemon.wait_server_state("m", ServerState::Failed);
    let why = status.last_error.unwrap_or_default();
    assert!(why.contains("refused initialize"), "{why}");
}

#[test]
fn a_legacy_server_is_probed_once_and_the_era_is_remembered_across_daemon_restarts() {
    let mut daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon.wait_log("not a 2026-07-28 server", PEER_TIMEOUT);
    let cache = daemon.root().join("cache/mcpd/catalog.json");
    assert!(
        mcpd_tests::wait_until(PEER_TIMEOUT, || std::fs::read_to_string(&cache)
            .is_ok_and(|t| t.contains("\"era\":\"legacy\""))),
        "the catalog cache does not remember the era"
    );
    daemon.terminate();
    let log = daemon.log_path().to_owned();
    std::fs::write(&log, "").expect("truncate the log");
    daemon.start_again();
    daemon.wait_server_state("fx", ServerState::Ready);
    assert!(
        !daemon.log().contains("not a 2026-07-28 server"),
        "probed again:\n{}",
        daemon.log()
    );
}

#[test]
fn a_server_that_ignores_the_probe_is_spoken_to_with_initialize_after_the_probe_timeout() {
    let daemon = TestDaemon::start(fixture::config(&[("quiet", &["--ignore-unknown"])]));
    daemon.wait_server_state("quiet", ServerState::Ready);
    daemon.wait_log("no answer to server/discover", PEER_TIMEOUT);
}

#[test]
fn an_unknown_protocol_value_names_the_field_and_the_choices_and_leaves_only_that_server_out() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "x": {"command": bin("mcpd-fixture"), "protocol": "2025-11-25"},
    }}));
    let status = daemon.wait_server_state("x", ServerState::ConfigError);
    let why = status.last_error.unwrap_or_default();
    assert!(
        why.contains("mcpServers.x.protocol")
            && why.contains("\"legacy\"")
            && why.contains("\"auto\"")
            && why.contains("\"2026-07-28\""),
        "{why}"
    );
    // It names the file too, in the status and in the log.
    let file = daemon.config_path().display().to_string();
    assert!(why.contains(&file), "{why}");
    daemon.wait_log(&format!("{file}: mcpServers.x.protocol"), PEER_TIMEOUT);
}

// ---- the matrix: modern/legacy client × modern/legacy upstream -----------------------------

/// Every call of [`matrix_calls`] through a client of the given era, against `upstream`, with
/// the client's own callbacks answering sampling, elicitation (form and URL) and roots.
fn matrix(modern: bool, upstream: Value) {
    let daemon = daemon_with("s", upstream);
    let expected = matrix_calls("s");
    let calls: Vec<(String, Value)> = expected
        .iter()
        .map(|(n, a, _)| (n.clone(), a.clone()))
        .collect();
    let (answers, invoked) = if modern {
        let report = modern_client(&daemon, &callbacks(), &calls);
        assert_eq!(report["protocol"], MODERN, "{report}");
        let answers = report["calls"].as_array().cloned().unwrap_or_default();
        let invoked: Vec<String> = report["callbacks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| c["method"].as_str().unwrap_or_default().to_owned())
            .collect();
        (answers, invoked)
    } else {
        let lines = legacy_client(Sdk::Python, &daemon, &callbacks(), &calls);
        let answers: Vec<Value> = lines
            .iter()
            .filter(|l| l["op"] == "call_tool")
            .cloned()
            .collect();
        let received = lines
            .iter()
            .find(|l| l["op"] == "received")
            .cloned()
            .unwrap_or_default();
        let invoked = received["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| r["method"].as_str().unwrap_or_default().to_owned())
            .collect();
        url_elicitation_completed(&received);
        (answers, invoked)
    };
    assert_eq!(answers.len(), expected.len(), "{answers:?}");
    for ((name, _, want), answer) in expected.iter().zip(&answers) {
        assert_eq!(text(answer), *want, "{name}: {answer}");
        assert_ne!(answer["isError"], true, "{name}: {answer}");
    }
    // Each answer came from this client's own callback: sampling, the form and the URL
    // elicitation, roots, in the order of the calls.
    assert_eq!(
        invoked,
        [
            "sampling/createMessage",
            "elicitation/create",
            "elicitation/create",
            "roots/list"
        ],
        "callbacks invoked"
    );
}

/// A legacy client that accepted a URL-mode elicitation is told it completed
/// (`notifications/elicitation/complete` with the `elicitationId` it got): passed on from a
/// legacy upstream, said by mcpd for a modern one (2026-07-28 tells by the retry's answer).
fn url_elicitation_completed(received: &Value) {
    let url = received["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["params"]["mode"] == "url")
        .unwrap_or_else(|| panic!("no URL-mode elicitation: {received}"));
    let id = &url["params"]["elicitationId"];
    assert!(id.is_string(), "{url}");
    let complete: Vec<&Value> = received["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["method"] == "notifications/elicitation/complete")
        .collect();
    assert_eq!(complete.len(), 1, "{received}");
    assert_eq!(complete[0]["params"]["elicitationId"], *id, "{received}");
}

#[test]
fn peer_matrix_legacy_client_legacy_upstream() {
    matrix(false, peers().legacy_python_server());
}

#[test]
fn peer_matrix_legacy_client_modern_upstream() {
    matrix(false, peers().modern_server());
}

#[test]
fn peer_matrix_modern_client_legacy_upstream() {
    matrix(true, peers().legacy_python_server());
}

#[test]
fn peer_matrix_modern_client_modern_upstream() {
    matrix(true, peers().modern_server());
}

// ---- requestState: what mcpd mints is signed, bound and used once --------------------------

/// A modern request's params, declaring `caps`.
fn modern_params(mut params: Value, caps: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-modern", "version": "0.1"},
        "io.modelcontextprotocol/clientCapabilities": caps,
    });
    params
}

/// How many times the modern server ran `tool` (its `stats`).
fn runs_of(shim: &mut mcpd_tests::ShimClient, tool: &str) -> usize {
    let stats = shim.result(
        "tools/call",
        Some(modern_params(
            json!({"name": "m__stats", "arguments": {}}),
            json!({}),
        )),
    );
    let seen = parse(&text(&stats));
    seen["calls"]
        .as_array()
        .map_or(0, |c| c.iter().filter(|c| c["tool"] == tool).count())
}

fn sample_call(state: Option<&str>, prompt: &str) -> Value {
    let mut params = json!({"name": "m__sample", "arguments": {"prompt": prompt}});
    if let Some(state) = state {
        params["requestState"] = json!(state);
        params["inputResponses"] = json!({"llm": {"role": "assistant", "content": {"type": "text", "text": "ok"}, "model": "m"}});
    }
    modern_params(params, json!({"sampling": {}}))
}

#[test]
fn peer_request_state_that_is_unsigned_tampered_replayed_or_misplaced_is_refused_and_reaches_no_upstream()
 {
    let daemon = daemon_with("m", peers().modern_server());
    let mut shim = mcpd_tests::ShimClient::spawn(&daemon, None);
    let first = shim.result("tools/call", Some(sample_call(None, "p")));
    assert_eq!(first["resultType"], "input_required", "{first}");
    let state = first["requestState"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        state.starts_with("mcpd1."),
        "the client sees mcpd's state: {state}"
    );
    assert_eq!(runs_of(&mut shim, "sample"), 1);

    let refused = |shim: &mut mcpd_tests::ShimClient, state: &str, prompt: &str, why: &str| {
        let error = shim.error("tools/call", Some(sample_call(Some(state), prompt)));
        assert_eq!(error["code"], -32602, "{error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{why}: {message}");
    };
    // Unsigned: not mcpd's (the upstream's own state would be this kind of thing).
    refused(&mut shim, "v1.abcdef", "p", "not issued by this mcpd");
    // Tampered: one character of the claims changed.
    let mut tampered = state.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ASCII");
    refused(&mut shim, &tampered, "p", "signature does not match");
    // Misplaced: another request (other arguments), another session.
    refused(&mut shim, &state, "other", "another request");
    let mut other = mcpd_tests::ShimClient::spawn(&daemon, None);
    refused(&mut other, &state, "p", "another session");
    // None of them reached the server.
    assert_eq!(runs_of(&mut shim, "sample"), 1);

    // The genuine retry goes through with the upstream's own state; used again, it is refused.
    let done = shim.result("tools/call", Some(sample_call(Some(&state), "p")));
    assert_eq!(text(&done), "sampled: ok", "{done}");
    assert_eq!(runs_of(&mut shim, "sample"), 2);
    refused(&mut shim, &state, "p", "already used");
    assert_eq!(runs_of(&mut shim, "sample"), 2);
}

#[test]
fn peer_a_legacy_client_that_did_not_declare_sampling_is_not_asked_for_it() {
    let daemon = daemon_with("s", peers().modern_server());
    let steps = json!([
        {"op": "call_tool", "name": "s__sample", "arguments": {"prompt": "x"}},
        {"op": "call_tool", "name": "s__sample_anyway", "arguments": {"prompt": "x"}, "expect_error": true},
        {"op": "received"},
    ]);
    let lines = SdkClient::spawn(Sdk::Python, &daemon, &steps).finish(PEER_TIMEOUT);
    let calls: Vec<&Value> = lines.iter().filter(|l| l["op"] == "call_tool").collect();
    // The server saw the capabilities of this client (none) and did not ask.
    assert_eq!(calls[0]["isError"], true, "{}", calls[0]);
    assert!(
        text(calls[0]).contains("did not declare sampling"),
        "{}",
        calls[0]
    );
    // A server that asks anyway: mcpd does not pass the request on, and says why.
    let error = &calls[1]["error"];
    assert_eq!(error["code"], -32021, "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("needs sampling") && message.contains("did not declare"),
        "{message}"
    );
    let received = lines
        .iter()
        .find(|l| l["op"] == "received")
        .expect("received");
    assert_eq!(received["requests"], json!([]), "{received}");
}

#[test]
fn peer_matrix_legacy_client_modern_http_upstream() {
    let peer = HttpPeer::python_modern(&[]);
    matrix(false, json!({"type": "http", "url": peer.url("/mcp")}));
}

#[test]
fn peer_matrix_modern_client_modern_http_upstream() {
    let peer = HttpPeer::python_modern(&["--json-response"]);
    matrix(true, json!({"type": "http", "url": peer.url("/mcp")}));
}

#[test]
fn peer_a_modern_client_that_did_not_declare_sampling_is_not_asked_by_a_legacy_upstream() {
    let daemon = daemon_with("s", peers().legacy_python_server());
    // It declares elicitation only: the legacy server's sampling request finds no call that
    // may be asked, and the server is told so.
    let only_elicitation = json!({"elicitation": {"action": "accept", "content": {"answer": "a"}}});
    let report = modern_client(
        &daemon,
        &only_elicitation,
        &[
            ("s__sample".to_owned(), json!({"prompt": "x"})),
            ("s__ask".to_owned(), json!({"question": "q"})),
        ],
    );
    let sample = &report["calls"][0];
    assert_eq!(sample["isError"], true, "{report}");
    assert!(text(sample).contains("sampling/createMessage"), "{report}");
    assert_eq!(text(&report["calls"][1]), "elicited: a", "{report}");
    assert_eq!(
        report["callbacks"],
        json!([{"method": "elicitation/create", "mode": "form"}])
    );
}

/// A modern-only streamable HTTP server scripted request by request: it answers
/// `server/discover` and `tools/list`, and breaks the response stream of the first `tools/call`
/// before its answer (an event stream that ends with only a comment); later calls are answered.
/// Returns its URL and the count of `tools/call` POSTs it got.
fn breaking_modern_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&calls);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let msg: Value = serde_json::from_slice(&body).unwrap_or_default();
            let id = msg["id"].clone();
            let result = match msg["method"].as_str().unwrap_or_default() {
                "server/discover" => {
                    json!({"resultType": "complete", "supportedVersions": [MODERN], "capabilities": {"tools": {}}})
                }
                "tools/list" => {
                    json!({"resultType": "complete", "tools": [{"name": "echo", "inputSchema": {"type": "object"}}]})
                }
                "tools/call" if seen.fetch_add(1, Ordering::SeqCst) == 0 => {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n: working\n\n");
                    continue;
                }
                "tools/call" => {
                    json!({"resultType": "complete", "content": [{"type": "text", "text": "answered again"}]})
                }
                _ => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    continue;
                }
            };
            let body = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, calls)
}

#[test]
fn a_modern_request_whose_response_stream_broke_is_sent_again() {
    let (url, calls) = breaking_modern_server();
    let daemon = daemon_with("s", json!({"type": "http", "url": url, "protocol": MODERN}));
    let mut shim = mcpd_tests::ShimClient::spawn(&daemon, None);
    shim.initialize();
    let answer = shim.call_tool("s__echo", json!({}));
    assert_eq!(text(&answer), "answered again", "{answer}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn a_modern_server_that_answers_the_probe_late_is_still_taken_for_modern() {
    // The probe times out (3 s) before the answer; the fallback `initialize` is refused with
    // -32022 meanwhile, and the late DiscoverResult decides.
    let daemon = TestDaemon::start(fixture::config(&[(
        "late",
        &["--modern", "--delay-init-ms", "4500"],
    )]));
    daemon.wait_server_state("late", ServerState::Ready);
    daemon.wait_log("answered server/discover late", PEER_TIMEOUT);
    let mut shim = mcpd_tests::ShimClient::spawn(&daemon, None);
    shim.initialize();
    let answer = shim.call_tool("late__echo", json!({"message": "hi"}));
    assert_eq!(text(&answer), "hi", "{answer}");
}
