//! Issue 2, the foundation: `mcp-shim` → `mcpd` → shared stdio upstreams, with tools routed
//! end to end. Each test is one behaviour of the real binaries, mostly against the Rust fixture
//! server (`mcpd-fixture`); the few named `peer_*` also run server-everything under node.

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use mcpd_proto::ServerState;
use mcpd_tests::fixture::{self, BIG_STRUCTURED, FIXED_TOOLS};
use mcpd_tests::process::{ProcessId, cmdline, descendants_of, descendants_with_cmdline};
use mcpd_tests::{ShimClient, TIMEOUT, TestDaemon, bin, peers, wait_until};
use serde_json::{Value, json};

/// A daemon serving the fixture as `fx` (with `flags`), ready.
fn daemon_with_fixture(flags: &[&str]) -> TestDaemon {
    let daemon = TestDaemon::start(fixture::config(&[("fx", flags)]));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon
}

/// A shim attached to `daemon`'s default profile, past the MCP handshake.
fn client(daemon: &TestDaemon) -> ShimClient {
    let mut shim = ShimClient::spawn(daemon, None);
    shim.initialize();
    shim
}

fn text_of(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Two sessions each send `count` echo calls without waiting, then read every answer: each
/// answer carries the message of the request with its id, never the other session's.
fn interleaved_echo_calls(daemon: &TestDaemon, tool: &str, expected: impl Fn(&str) -> String) {
    const COUNT: usize = 100;
    let mut a = client(daemon);
    let mut b = client(daemon);
    let mut sent = Vec::new();
    for i in 0..COUNT {
        for (who, shim) in [("a", &mut a), ("b", &mut b)] {
            let message = format!("{who}-{i}");
            let id = shim.send_request(
                "tools/call",
                Some(json!({"name": tool, "arguments": {"message": message}})),
            );
            sent.push((who, id, message));
        }
    }
    for (who, id, message) in sent {
        let shim = if who == "a" { &mut a } else { &mut b };
        let answer = parse(&shim.response_line(&json!(id)));
        assert_eq!(answer["id"], json!(id), "{answer}");
        assert_eq!(
            text_of(&answer["result"]),
            expected(&message),
            "session {who}, request {id}: {answer}"
        );
    }
}

#[test]
fn interleaved_calls_from_two_sessions_each_get_their_own_answer() {
    let daemon = daemon_with_fixture(&[]);
    interleaved_echo_calls(&daemon, "fx__echo", str::to_owned);
}

#[test]
fn peer_interleaved_everything_echo_calls_from_two_sessions_each_get_their_own_answer() {
    let daemon =
        TestDaemon::start(json!({"mcpServers": {"everything": peers().everything_server()}}));
    daemon.wait_server_state("everything", ServerState::Ready);
    interleaved_echo_calls(&daemon, "everything__echo", |m| format!("Echo: {m}"));
}

#[test]
fn a_malformed_line_gets_a_parse_error_with_a_null_id_and_the_session_continues() {
    let daemon = daemon_with_fixture(&[]);
    let mut shim = client(&daemon);

    shim.send_raw(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"#);
    let answer = parse(&shim.response_line(&Value::Null));
    assert_eq!(answer["id"], Value::Null, "{answer}");
    assert_eq!(answer["error"]["code"], -32700, "{answer}");

    let echoed = shim.call_tool("fx__echo", json!({"message": "still here"}));
    assert_eq!(text_of(&echoed), "still here");
}

#[test]
fn an_oversized_line_is_refused_with_a_clear_error_and_the_session_continues() {
    let daemon = daemon_with_fixture(&[]);
    let mut shim = client(&daemon);

    let limit = mcpd_proto::line::MAX_MESSAGE_LINE;
    assert_eq!(limit, 16 * 1024 * 1024, "the documented limit is 16 MiB");
    let message = "x".repeat(limit + 1024);
    let huge = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                      "params": {"name": "fx__echo", "arguments": {"message": message}}});
    shim.send_raw(&huge.to_string());
    let answer = parse(&shim.response_line(&Value::Null));
    let error_message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(answer["error"]["code"].is_i64(), "{answer}");
    assert!(
        error_message.contains("over the limit") && error_message.contains(&limit.to_string()),
        "the error does not say what was wrong: {answer}"
    );

    let echoed = shim.call_tool("fx__echo", json!({"message": "after"}));
    assert_eq!(text_of(&echoed), "after");
}

#[test]
fn a_client_of_another_uid_is_refused_by_its_peer_credentials() {
    let daemon = daemon_with_fixture(&[]);
    // Let uid 65534 reach the socket, so that only the SO_PEERCRED check can refuse it.
    daemon.open_socket_to_other_users();

    // mcp-shim itself would refuse a daemon of another uid before sending anything (see
    // tests/tests/trust.rs): a raw client that sends a hello regardless plays the intruder.
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("mcpd-socket-peer"))
        .arg("hello")
        .arg(daemon.socket())
        .env_clear();
    let out = mcpd_tests::process::run_with_timeout(&mut cmd, TIMEOUT);
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("error") && answer.contains("uid"),
        "the daemon did not refuse another uid: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.wait_log("refused a connection from another user", TIMEOUT);

    // The daemon's own user is still served.
    let mut own = client(&daemon);
    assert_eq!(
        text_of(&own.call_tool("fx__echo", json!({"message": "mine"}))),
        "mine"
    );
}

#[test]
fn reload_after_adding_a_server_lists_its_tools_and_tells_initialized_sessions() {
    let daemon = daemon_with_fixture(&[]);
    let mut shim = client(&daemon);
    assert!(!shim.tool_names().iter().any(|t| t.starts_with("fx2__")));

    daemon.write_config(&fixture::config(&[
        ("fx", &[]),
        ("fx2", &["--name", "second"]),
    ]));
    let out = daemon.mcpctl(&["reload"]);
    assert!(out.status.success(), "mcpctl reload failed: {out:?}");

    shim.wait_notification("notifications/tools/list_changed");
    let names = shim.tool_names();
    for tool in FIXED_TOOLS {
        assert!(
            names.contains(&format!("fx2__{tool}")),
            "fx2__{tool} missing: {names:?}"
        );
        assert!(
            names.contains(&format!("fx__{tool}")),
            "fx__{tool} missing: {names:?}"
        );
    }
    assert_eq!(
        text_of(&shim.call_tool("fx2__echo", json!({"message": "new"}))),
        "new"
    );
}

#[test]
fn reload_of_a_config_with_a_syntax_error_names_its_path_and_line_and_keeps_serving() {
    let daemon = daemon_with_fixture(&[]);
    let mut shim = client(&daemon);
    let pid_before = daemon.server("fx").pid;

    fs::write(daemon.config_path(), "{\n  \"mcpServers\": {,\n}\n").expect("write the config");
    let out = daemon.mcpctl(&["reload"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "mcpctl reload: {said}");
    let at = format!("{}:2:", daemon.config_path().display());
    assert!(said.contains(&at), "the error does not name {at}: {said}");

    assert_eq!(
        text_of(&shim.call_tool("fx__echo", json!({"message": "kept"}))),
        "kept"
    );
    let fx = daemon.server("fx");
    assert_eq!((fx.state, fx.pid), (ServerState::Ready, pid_before));
}

#[test]
fn sighup_reloads_the_configuration() {
    let daemon = daemon_with_fixture(&[]);
    let mut shim = client(&daemon);

    daemon.write_config(&fixture::config(&[("fx", &[]), ("fx2", &[])]));
    daemon.signal(libc::SIGHUP);

    daemon.wait_server_state_timeout("fx2", ServerState::Ready, TIMEOUT);
    shim.wait_notification("notifications/tools/list_changed");
    assert_eq!(
        text_of(&shim.call_tool("fx2__echo", json!({"message": "hup"}))),
        "hup"
    );
}

#[test]
fn peer_after_sigterm_no_process_the_daemon_started_is_left_running() {
    let stubborn = ["--fork-grandchildren", "--ignore-sigterm", "--linger"];
    let mut stubborn_server = fixture::server(&stubborn);
    stubborn_server["stopTimeoutMs"] = json!(200);
    stubborn_server["killTimeoutMs"] = json!(200);
    let mut daemon = TestDaemon::start(json!({"mcpServers": {
        "stubborn": stubborn_server,
        "everything": peers().everything_server(),
    }}));
    daemon.wait_server_state("stubborn", ServerState::Ready);
    daemon.wait_server_state("everything", ServerState::Ready);
    let everything_js = peers().everything_js().display().to_string();
    // Everything it started: both servers, and the fixture's two `sleep 600` grandchildren.
    let started = mcpd_tests::eventually(TIMEOUT, "the servers and two grandchildren", || {
        let below = descendants_of(daemon.pid());
        let sleepers = below
            .iter()
            .filter(|&&p| cmdline(p).is_some_and(|c| c == "sleep 600"))
            .count();
        let node = descendants_with_cmdline(daemon.pid(), &everything_js).len();
        (sleepers == 2 && node == 1).then_some(below)
    });
    let started: Vec<ProcessId> = started.into_iter().filter_map(ProcessId::of).collect();
    assert!(started.len() >= 4, "{started:?}");

    let status = daemon.terminate();
    assert!(status.success(), "mcpd exited with {status}");
    let gone = wait_until(TIMEOUT, || started.iter().all(|p| !p.alive()));
    let left: Vec<String> = started
        .iter()
        .filter(|p| p.alive())
        .map(|p| format!("{} {:?}", p.pid, cmdline(p.pid)))
        .collect();
    assert!(gone, "left running after mcpd stopped: {left:?}");
}

#[test]
fn tools_list_pages_through_daemon_cursors_and_lists_every_tool_exactly_once() {
    let mut config = fixture::config(&[("fx", &["--tools", "250", "--page-size", "7"])]);
    config["mcpd"] = json!({"pageSize": 50});
    let daemon = TestDaemon::start(config);
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut shim = client(&daemon);

    let mut names = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<Value> = None;
    loop {
        let page = shim.result("tools/list", cursor.take().map(|c| json!({"cursor": c})));
        pages += 1;
        let tools = page["tools"].as_array().expect("a tools array");
        assert!(
            tools.len() <= 50,
            "a page of {} tools is over pageSize",
            tools.len()
        );
        names.extend(
            tools
                .iter()
                .map(|t| t["name"].as_str().unwrap_or_default().to_owned()),
        );
        match page.get("nextCursor") {
            Some(c) if !c.is_null() => cursor = Some(c.clone()),
            _ => break,
        }
        assert!(pages < 100, "the cursors never end");
    }
    let mut expected: Vec<String> = (0..250).map(|i| format!("fx__tool_{i}")).collect();
    expected.extend(FIXED_TOOLS.iter().map(|t| format!("fx__{t}")));
    assert_eq!(names, expected, "every tool, once, in the server's order");
    assert_eq!(pages, expected.len().div_ceil(50));
}

#[test]
fn forwarded_messages_keep_numbers_byte_for_byte_both_ways() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let record = dir.path().join("received");
    let daemon = daemon_with_fixture(&["--record", record.to_str().expect("UTF-8 path")]);
    let mut shim = client(&daemon);

    let line = shim.request_line(
        "tools/call",
        Some(json!({"name": "fx__big", "arguments": {}})),
    );
    assert!(
        line.contains(&format!(r#""structuredContent":{BIG_STRUCTURED}"#)),
        "the result was re-encoded: {line}"
    );

    let id = 4242;
    shim.send_raw(&format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"fx__echo","arguments":{{"message":"n","price":1.50,"big":123456789012345678901234567890}}}}}}"#
    ));
    shim.response_line(&json!(id));
    let received = fs::read_to_string(&record).expect("the fixture's record");
    assert!(
        received.contains(
            r#""arguments":{"message":"n","price":1.50,"big":123456789012345678901234567890}"#
        ),
        "the request was re-encoded on its way upstream:\n{received}"
    );
}

#[test]
fn server_discover_is_answered_and_initialize_still_works_after_it() {
    let daemon = daemon_with_fixture(&[]);
    let mut shim = ShimClient::spawn(&daemon, None);
    let answer = shim.request("server/discover", Some(json!({})));
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    // A client may still choose the handshake on the same connection (tests/tests/modern.rs
    // covers the modern era).
    shim.initialize();
    assert_eq!(
        text_of(&shim.call_tool("fx__echo", json!({"message": "ok"}))),
        "ok"
    );
}

#[test]
fn an_unknown_method_gets_method_not_found_with_its_id() {
    let daemon = daemon_with_fixture(&[]);
    let mut shim = client(&daemon);
    shim.send_raw(r#"{"jsonrpc":"2.0","id":"odd-id","method":"no/such/method","params":{}}"#);
    let answer = parse(&shim.response_line(&json!("odd-id")));
    assert_eq!(answer["id"], "odd-id");
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no/such/method"),
        "{answer}"
    );
}

#[test]
fn a_profile_sees_only_its_servers() {
    let mut config = fixture::config(&[("fx", &[]), ("fx2", &[])]);
    config["profiles"] = json!({"work": {"servers": ["fx2"]}});
    let daemon = TestDaemon::start(config);
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon.wait_server_state("fx2", ServerState::Ready);

    let mut work = ShimClient::spawn(&daemon, Some("work"));
    work.initialize();
    let servers: BTreeSet<String> = work
        .tool_names()
        .iter()
        .map(|t| t.split("__").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(servers, BTreeSet::from(["fx2".to_owned()]));
    let refused = work.error(
        "tools/call",
        Some(json!({"name": "fx__echo", "arguments": {"message": "x"}})),
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("fx__echo"),
        "{refused}"
    );

    let mut all = client(&daemon);
    let servers: BTreeSet<String> = all
        .tool_names()
        .iter()
        .map(|t| t.split("__").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(servers, BTreeSet::from(["fx".to_owned(), "fx2".to_owned()]));
}

#[test]
fn an_unknown_profile_is_refused_with_a_clear_message() {
    let daemon = daemon_with_fixture(&[]);
    let mut shim = ShimClient::spawn(&daemon, Some("nope"));
    let status = shim
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|| panic!("the shim kept running; stderr:\n{}", shim.stderr()));
    assert!(!status.success());
    let stderr = shim.stderr();
    assert!(
        stderr.contains("unknown profile") && stderr.contains("nope"),
        "the shim does not say why: {stderr}"
    );
}

#[test]
fn a_client_that_closes_its_stdin_still_gets_the_answers_it_asked_for() {
    use std::io::{Read, Write};
    let daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    daemon.wait_server_state("fx", mcpd_proto::ServerState::Ready);
    let mut shim = daemon
        .command("mcp-shim")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = shim.stdin.take().unwrap();
    // `printf '...' | mcp-shim`: the requests, then end of input at once. The first call is
    // answered within the grace after end of input; the second, too slow, gets an error from
    // the shim rather than silence (and the daemon cancels it upstream).
    stdin
        .write_all(
            concat!(
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"pipe","version":"1"}}}"#,
                "\n",
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                "\n",
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"fx__sleep","arguments":{"ms":100}}}"#,
                "\n",
                r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"fx__sleep","arguments":{"ms":30000}}}"#,
                "\n"
            )
            .as_bytes(),
        )
        .unwrap();
    drop(stdin);
    let mut out = String::new();
    shim.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = mcpd_tests::process::wait_timeout(&mut shim, TIMEOUT).expect("the shim exits");
    assert!(status.success(), "{status}");
    let answer = |id: &str| {
        out.lines()
            .find(|l| l.contains(&format!(r#""id":{id}"#)))
            .unwrap_or_else(|| panic!("no answer to id {id} in {out}"))
    };
    assert!(answer("2").contains("\"result\""), "{}", answer("2"));
    assert!(answer("3").contains("-32012"), "{}", answer("3"));
}

#[test]
fn a_call_during_the_reload_of_its_changed_server_waits_for_the_new_instance() {
    // The old instance takes a while to stop (it outlives its stdin and ignores SIGTERM).
    let slow_stop = |name: &str| {
        let mut s = fixture::server(&["--linger", "--ignore-sigterm", "--name", name]);
        s["stopTimeoutMs"] = json!(300);
        s["killTimeoutMs"] = json!(300);
        s
    };
    let daemon = TestDaemon::start(json!({"mcpServers": {"fx": slow_stop("old")}}));
    let old = daemon
        .wait_server_state("fx", ServerState::Ready)
        .pid
        .expect("pid");
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    daemon.write_config(&json!({"mcpServers": {"fx": slow_stop("new")}}));
    let reload = std::thread::spawn({
        let mut cmd = daemon.command("mcpctl");
        cmd.arg("reload");
        move || mcpd_tests::process::run_with_timeout(&mut cmd, TIMEOUT)
    });
    // The new instance has taken the old one's place and waits for it to stop.
    assert!(
        wait_until(TIMEOUT, || daemon.server("fx").pid.is_none()),
        "{:?}",
        daemon.server("fx")
    );
    assert!(
        mcpd_tests::process_alive(old),
        "the old instance stopped too soon for this test"
    );
    // The old instance is stopping: the call waits for the new one instead of failing.
    let answer = shim.call_tool("fx__echo", json!({"message": "across the reload"}));
    assert_eq!(
        answer["content"][0]["text"], "across the reload",
        "{answer}"
    );
    assert!(reload.join().unwrap().status.success());
    let fx = daemon.server("fx");
    assert_ne!(fx.pid, Some(old));
    assert!(fx.server_info.unwrap_or_default().contains("new"));
    assert!(!mcpd_tests::process_alive(old));
}
