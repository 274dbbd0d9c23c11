//! A planned stop (SIGTERM, as `systemctl --user stop/restart mcpd` sends it, or `mcpctl
//! shutdown`): the calls in flight on relayed sessions finish within the grace before the
//! servers get their stop sequence; a request that arrives during the grace is not started
//! (`-32012`, as for a call the stop cut short: try again); what outlasts the grace gets
//! `-32012` when it ends; the client then resumes on the next daemon. A daemon with nothing in
//! flight stops at once (docs/ARCHITECTURE.md "Shutdown").
//!
//! How long each stop took is printed (`stop:` lines; run with `--no-capture`), never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mcpd_proto::envelope::UPSTREAM_LOST;
use mcpd_tests::shim::CLIENT_PROTOCOL_VERSION;
use mcpd_tests::{ShimClient, TIMEOUT, TestDaemon, fixture};
use serde_json::{Value, json};

/// The daemon's grace for calls in flight.
const GRACE: Duration = mcpd::SHUTDOWN_GRACE;

fn config() -> Value {
    fixture::config(&[("fx", &[])])
}

/// A relaying `mcp-shim`: over the pair of pipes it hands the daemon (the default), or over
/// the socket itself.
fn shim(daemon: &TestDaemon, pipes: bool) -> ShimClient {
    shim_with(daemon, pipes, json!({}))
}

/// [`shim`], initialized with the client `capabilities`.
fn shim_with(daemon: &TestDaemon, pipes: bool, capabilities: Value) -> ShimClient {
    let mut cmd = ShimClient::command(daemon);
    if !pipes {
        cmd.env("MCP_SHIM_PIPES", "0");
    }
    let mut shim = ShimClient::from_command(cmd);
    // Long enough for an answer that comes at the grace's end.
    shim.set_timeout(GRACE + TIMEOUT);
    shim.initialize_with(CLIENT_PROTOCOL_VERSION, capabilities);
    shim
}

/// Sends the fixture's `sleep` of `ms` and waits until the daemon holds it in flight.
fn sleep_in_flight(daemon: &TestDaemon, shim: &mut ShimClient, ms: u64) -> u64 {
    let id = shim.send_request(
        "tools/call",
        Some(json!({"name": "fx__sleep", "arguments": {"ms": ms}})),
    );
    daemon.wait_status(TIMEOUT, "the sleep call to be in flight", |s| {
        s.sessions.iter().any(|x| x.in_flight > 0)
    });
    id
}

fn echo(shim: &mut ShimClient, message: &str) {
    let result = shim.call_tool("fx__echo", json!({"message": message}));
    assert_ne!(result["isError"], json!(true), "{result}");
    assert_eq!(result["content"][0]["text"], json!(message), "{result}");
}

fn answer(shim: &mut ShimClient, id: u64) -> Value {
    let line = shim.response_line(&json!(id));
    serde_json::from_str(&line).unwrap()
}

/// SIGTERM, then the exit status (a clean stop exits 0).
fn stop(daemon: &mut TestDaemon) -> Duration {
    let started = Instant::now();
    let status = daemon.terminate();
    assert!(status.success(), "mcpd exited with {status}");
    started.elapsed()
}

fn call_finishes_across_a_sigterm(pipes: bool) {
    let mut daemon = TestDaemon::start(config());
    let mut shim = shim(&daemon, pipes);
    echo(&mut shim, "before");
    let id = sleep_in_flight(&daemon, &mut shim, 1500);
    daemon.signal(libc::SIGTERM);
    let answer = answer(&mut shim, id);
    assert_eq!(
        answer["result"]["content"][0]["text"],
        json!("slept 1500 ms"),
        "the call in flight did not get its answer: {answer}\n{}",
        daemon.log()
    );
    let stopped = stop(&mut daemon);
    println!("stop: with a 1.5 s call in flight, mcpd stopped in {stopped:?}");
    assert!(
        daemon.log().contains("calls in flight"),
        "the daemon did not say it waited:\n{}",
        daemon.log()
    );

    // The session goes on on the next daemon, without a new initialize.
    daemon.start_again();
    echo(&mut shim, "after");
    assert_eq!(shim.stderr(), "");
    assert_eq!(shim.close().code(), Some(0));
}

#[test]
fn a_call_in_flight_gets_its_answer_across_a_sigterm_and_the_session_resumes_on_the_next_daemon() {
    call_finishes_across_a_sigterm(true);
}

#[test]
fn the_same_over_the_socket_relay() {
    call_finishes_across_a_sigterm(false);
}

#[test]
fn a_call_that_outlasts_the_grace_gets_32012_when_it_ends_and_the_session_resumes() {
    let mut daemon = TestDaemon::start(config());
    let mut shim = shim(&daemon, true);
    let id = sleep_in_flight(&daemon, &mut shim, 60_000);
    let started = Instant::now();
    daemon.signal(libc::SIGTERM);
    let answer = answer(&mut shim, id);
    let answered = started.elapsed();
    assert_eq!(answer["error"]["code"], json!(UPSTREAM_LOST), "{answer}");
    // Answered at the grace's end, while the fixture still sleeps: the daemon gave up on it.
    let stopped = stop(&mut daemon);
    println!(
        "stop: a 60 s call was answered {answered:?} after SIGTERM; mcpd stopped after {stopped:?} more"
    );
    let log = daemon.log();
    assert!(
        log.contains("the grace ended"),
        "the daemon did not say it gave up:\n{log}"
    );

    daemon.start_again();
    echo(&mut shim, "after");
    assert_eq!(shim.stderr(), "");
}

#[test]
fn a_second_sigterm_cuts_the_grace_short() {
    let mut daemon = TestDaemon::start(config());
    let mut shim = shim(&daemon, true);
    let id = sleep_in_flight(&daemon, &mut shim, 60_000);
    daemon.signal(libc::SIGTERM);
    daemon.wait_log("calls in flight", TIMEOUT);
    daemon.signal(libc::SIGTERM);
    let answer = answer(&mut shim, id);
    assert_eq!(answer["error"]["code"], json!(UPSTREAM_LOST), "{answer}");
    stop(&mut daemon);
    let log = daemon.log();
    assert!(log.contains("the grace was cut short"), "{log}");
    assert!(!log.contains("the grace ended"), "{log}");
    daemon.start_again();
    echo(&mut shim, "after");
}

#[test]
fn a_call_sent_during_the_grace_is_not_started_and_the_call_in_flight_still_finishes() {
    let mut daemon = TestDaemon::start(config());
    let mut shim = shim(&daemon, true);
    let slow = sleep_in_flight(&daemon, &mut shim, 4000);
    daemon.signal(libc::SIGTERM);
    daemon.wait_log("calls in flight", TIMEOUT);
    // A new call during the grace: not started (so not run twice once the client tries again),
    // answered at once with the code that says "try again".
    let late = shim.send_request(
        "tools/call",
        Some(json!({"name": "fx__echo", "arguments": {"message": "late"}})),
    );
    let late = answer(&mut shim, late);
    assert_eq!(late["error"]["code"], json!(UPSTREAM_LOST), "{late}");
    assert!(
        late["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stopping")),
        "{late}"
    );
    // What the daemon answers itself, without a server, is still answered.
    let list = shim.request("tools/list", None);
    assert!(list["result"]["tools"].is_array(), "{list}");
    let slow = answer(&mut shim, slow);
    assert_eq!(
        slow["result"]["content"][0]["text"],
        json!("slept 4000 ms"),
        "{slow}"
    );
    stop(&mut daemon);
    daemon.start_again();
    echo(&mut shim, "after");
}

#[test]
fn a_call_that_asks_the_client_during_the_grace_gets_its_answer() {
    let mut daemon = TestDaemon::start(config());
    let mut shim = shim_with(&daemon, true, json!({"roots": {}}));
    // The fixture's `ask` sends the client a request and answers with its result: the client's
    // answer, read during the grace, must still reach the server.
    let id = shim.send_request(
        "tools/call",
        Some(json!({"name": "fx__ask", "arguments": {"method": "roots/list", "params": {}}})),
    );
    let asked = shim.wait_server_request("roots/list");
    daemon.signal(libc::SIGTERM);
    daemon.wait_log("calls in flight", TIMEOUT);
    shim.respond(&asked["id"], json!({"roots": [{"uri": "file:///grace"}]}));
    let answer = answer(&mut shim, id);
    assert!(
        answer["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("file:///grace")),
        "{answer}\n{}",
        daemon.log()
    );
    stop(&mut daemon);
}

#[test]
fn an_idle_daemon_stops_at_once() {
    let mut daemon = TestDaemon::start(config());
    // Attached and initialized, nothing in flight.
    let mut shim = shim(&daemon, true);
    echo(&mut shim, "idle");
    let stopped = stop(&mut daemon);
    println!("stop: an idle mcpd with one attached session stopped in {stopped:?}");
    let log = daemon.log();
    assert!(
        !log.contains("calls in flight"),
        "an idle daemon waited for calls:\n{log}"
    );
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn mcpctl_shutdown_waits_for_the_calls_in_flight_too() {
    let mut daemon = TestDaemon::start(config());
    let mut shim = shim(&daemon, true);
    let id = sleep_in_flight(&daemon, &mut shim, 1500);
    let out = daemon.mcpctl(&["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let answer = answer(&mut shim, id);
    assert_eq!(
        answer["result"]["content"][0]["text"],
        json!("slept 1500 ms"),
        "{answer}"
    );
    let status = daemon
        .wait_exit(GRACE + TIMEOUT)
        .expect("mcpd did not exit after mcpctl shutdown");
    assert!(status.success(), "{status}");
}

/// A second `mcpd` started by hand on the first one's socket, config and directories.
/// Killed when dropped.
struct Second(std::process::Child);

impl Drop for Second {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_daemon_started_during_the_grace_leaves_the_stopping_one_its_servers_and_its_socket_is_kept() {
    let mut first = TestDaemon::start(config());
    let mut shim = shim(&first, true);
    let id = sleep_in_flight(&first, &mut shim, 3000);
    first.signal(libc::SIGTERM);
    first.wait_log("calls in flight", TIMEOUT);
    // The first daemon's listener is closed: its socket is stale to a daemon that starts now
    // (as a shim's autostart starts one), which replaces it. Its start sweeps the child records
    // of dead daemons, and must leave the first one's server, busy with the call, alone.
    let log = std::fs::File::create(first.root().join("mcpd-2.log")).unwrap();
    let second = Second(
        first
            .command("mcpd")
            .current_dir(first.root())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    assert!(
        mcpd_tests::wait_until(TIMEOUT, || first.try_control_connection().is_ok()),
        "the second mcpd did not answer"
    );
    let answer = answer(&mut shim, id);
    assert_eq!(
        answer["result"]["content"][0]["text"],
        json!("slept 3000 ms"),
        "the stopping daemon's server was killed: {answer}"
    );
    stop(&mut first);
    // The first daemon left the second one's socket in place: the session resumes on it.
    assert!(first.socket().exists(), "{}", first.log());
    echo(&mut shim, "on the second daemon");
    drop(second);
}
