//! The relay's pipes (issue 18, docs/SHIM.md "The relay's pipes"): a relaying `mcp-shim` hands
//! the daemon one end of each of two pipes at the attach, and the session's data goes over them
//! instead of the socket; the shim still copies every line, so every resume guarantee of the
//! relay holds. A shim that does not offer them (an older one, or `MCP_SHIM_PIPES=0`) relays
//! over the socket as before.

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use mcpd_proto::ServerState;
use mcpd_tests::fixture;
use mcpd_tests::process::run_with_timeout;
use mcpd_tests::{ShimClient, TIMEOUT, TestDaemon, bin, wait_until};
use serde_json::{Value, json};

/// A daemon serving the fixture as `fx` (with its `blob` tool), ready.
fn daemon_with_fixture() -> TestDaemon {
    let daemon = TestDaemon::start(fixture::config(&[("fx", &["--blob"])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon
}

fn text_of(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

/// The pipes process `pid` (a shim this test started) holds that the test does not: not its
/// stdio (the test holds the other ends), not one both inherited. Its relay pipes, if any.
fn own_pipes(pid: u32) -> BTreeSet<String> {
    let ours = pipes_of(std::process::id());
    pipes_of(pid).difference(&ours).cloned().collect()
}

/// Every pipe process `pid` holds.
fn pipes_of(pid: u32) -> BTreeSet<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .filter(|t| t.starts_with("pipe:"))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the daemon holds the other end of both of the shim's relay pipes; returns them.
fn assert_relayed_over_pipes(daemon: &TestDaemon, shim: &ShimClient) -> BTreeSet<String> {
    let mut relay = BTreeSet::new();
    let shared = wait_until(TIMEOUT, || {
        relay = own_pipes(shim.pid());
        relay.len() == 2 && relay.is_subset(&pipes_of(daemon.pid()))
    });
    assert!(
        shared,
        "the daemon does not hold the shim's relay pipes: the shim has {relay:?}, the daemon {:?}",
        pipes_of(daemon.pid())
    );
    relay
}

#[test]
fn a_relayed_sessions_data_goes_over_a_pipe_pair_the_daemon_holds_and_it_is_still_a_relay() {
    let daemon = daemon_with_fixture();
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    daemon.wait_log("relay: serving the shim's pipes", TIMEOUT);
    let relay = assert_relayed_over_pipes(&daemon, &shim);

    // Bytes exact both ways: a 30-digit id, 1.50, a 300 KB line each way.
    let id = "123456789012345678901234567890";
    shim.send_raw(&format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"fx__echo","arguments":{{"message":"n","price":1.50}}}}}}"#
    ));
    let answer = loop {
        let line = shim.recv_line_timeout(TIMEOUT).expect("an answer");
        if line.contains(r#""result""#) {
            break line;
        }
    };
    assert!(answer.contains(&format!(r#""id":{id}"#)), "{answer}");
    let big = "x".repeat(300_000);
    let echoed = shim.call_tool("fx__echo", json!({"message": big}));
    assert_eq!(text_of(&echoed).len(), 300_000);
    let blob = shim.call_tool("fx__blob", json!({"bytes": 300_000}));
    assert_eq!(text_of(&blob), big);

    // The shim still copies every line: to the operator it is a relay.
    let status = daemon.status();
    assert_eq!(status.sessions.len(), 1);
    assert!(!status.sessions[0].direct, "{:?}", status.sessions[0]);
    let out = daemon.mcpctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(char::is_numeric) && l.ends_with(" relay")),
        "{text}"
    );

    // Closing stdin ends the session, and the daemon lets go of the pipes.
    let status = shim.close();
    assert!(status.success(), "the shim exited with {status}");
    assert!(
        wait_until(TIMEOUT, || daemon.status().sessions.is_empty()
            && pipes_of(daemon.pid()).is_disjoint(&relay)),
        "the daemon kept the session or its pipes: {:?}",
        pipes_of(daemon.pid())
    );
}

#[test]
fn a_shim_that_offers_no_pipes_is_relayed_over_the_socket_as_before() {
    // What an mcp-shim older than the pipes sends: a hello without `pipes`.
    let daemon = daemon_with_fixture();
    let mut cmd = ShimClient::command(&daemon);
    cmd.env("MCP_SHIM_PIPES", "0");
    let mut shim = ShimClient::from_command(cmd);
    shim.initialize();
    assert_eq!(
        text_of(&shim.call_tool("fx__echo", json!({"message": "over the socket"}))),
        "over the socket"
    );
    assert!(
        own_pipes(shim.pid()).is_empty(),
        "the shim made pipes: {:?}",
        own_pipes(shim.pid())
    );
    assert!(!daemon.log().contains("serving the shim's pipes"));
    assert!(shim.close().success());
}

#[test]
fn a_daemon_killed_with_a_call_in_flight_over_the_pipes_gets_it_answered_and_the_session_resumes() {
    let mut daemon = daemon_with_fixture();
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    let first = assert_relayed_over_pipes(&daemon, &shim);
    let id = fixture::sleep_held_in_flight(&daemon, &mut shim);
    daemon.kill();

    // The end of the pipe is the crash, seen at once: the call gets `-32012` from the shim
    // while no daemon runs.
    let answer: Value = serde_json::from_str(&shim.response_line(&json!(id))).expect("JSON");
    assert_eq!(answer["error"]["code"], json!(-32012), "{answer}");

    // A new daemon: the same shim resumes (no new `initialize`) over new pipes.
    daemon.start_again();
    daemon.wait_server_state("fx", ServerState::Ready);
    assert_eq!(
        text_of(&shim.call_tool("fx__echo", json!({"message": "after"}))),
        "after",
        "{}",
        shim.stderr()
    );
    let second = assert_relayed_over_pipes(&daemon, &shim);
    assert!(first.is_disjoint(&second), "{first:?} {second:?}");
    let said = shim.stderr();
    assert!(shim.close().success(), "{said}");
}

/// `mcpd-socket-peer pipes` as `uid` (`None`: as ourselves): its output lines.
fn pipes_peer(daemon: &TestDaemon, uid: Option<u32>) -> String {
    let mut cmd = match uid {
        Some(uid) => {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
            ])
            .arg(bin("mcpd-socket-peer"));
            cmd
        }
        None => Command::new(bin("mcpd-socket-peer")),
    };
    cmd.arg("pipes").arg(daemon.socket()).env_clear();
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_hello_offering_pipes_is_welcomed_with_pipes_and_served_over_them() {
    let daemon = daemon_with_fixture();
    let said = pipes_peer(&daemon, None);
    let welcome = said.lines().next().unwrap_or_default();
    assert!(
        welcome.contains(r#""op":"welcome""#) && welcome.contains(r#""pipes":true"#),
        "{said}"
    );
    // The `initialize` written into the pipe was answered out of the other one.
    assert!(
        said.lines()
            .any(|l| l.strip_prefix("answered ").is_some_and(|n| n != "0")),
        "{said}"
    );
}

#[test]
fn another_user_cannot_hand_relay_pipes_to_the_daemon() {
    let daemon = daemon_with_fixture();
    daemon.open_socket_to_other_users();

    let said = pipes_peer(&daemon, Some(65534));
    let reply = said.lines().next().unwrap_or_default();
    assert!(
        reply.contains(r#""op":"error""#) && reply.contains("uid"),
        "the daemon did not refuse another uid: {said}"
    );
    assert!(
        said.lines().any(|l| l == "answered 0"),
        "the daemon served the intruder's pipes: {said}"
    );
    daemon.wait_log("refused a connection from another user", TIMEOUT);
    assert!(!daemon.log().contains("serving the shim's pipes"));
    assert!(daemon.status().sessions.is_empty());
}

#[test]
fn pipes_that_fail_the_checks_are_refused_and_the_shim_is_told_why() {
    let daemon = daemon_with_fixture();
    let mut cmd = Command::new(bin("mcpd-socket-peer"));
    cmd.arg("pipes-file").arg(daemon.socket());
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    let said = String::from_utf8_lossy(&out.stdout);
    let mut lines = said.lines();
    assert!(
        lines.next().is_some_and(|l| l.contains(r#""pipes":true"#)),
        "{said}"
    );
    let end: Value = serde_json::from_str(lines.next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no end line ({e}): {said}"));
    assert_eq!(end["op"], json!("end"), "{end}");
    assert_eq!(end["ok"], json!(false), "{end}");
    let reason = end["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("mcpd refused the relay's pipes: stdin is a regular file"),
        "{reason}"
    );
    daemon.wait_log("relayed session's pipes refused", TIMEOUT);
    assert!(
        wait_until(TIMEOUT, || daemon.status().sessions.is_empty()),
        "the refused session stayed"
    );
}
