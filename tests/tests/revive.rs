//! Living without systemd: a shim whose daemon was shut down (or crashed) starts it again, the
//! way a first start does; `mcpctl shutdown --stay-down` keeps it down.

use mcpd_proto::ServerState;
use mcpd_tests::daemon::TestDaemon;
use mcpd_tests::fixture;
use mcpd_tests::process::{process_alive, wait_until};
use mcpd_tests::shim::ShimClient;
use mcpd_tests::{PEER_TIMEOUT, TIMEOUT};
use serde_json::json;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A shim for `daemon` that may start the daemon itself (the harness turns that off).
fn autostarting_shim(daemon: &TestDaemon) -> ShimClient {
    let mut cmd = daemon.command("mcp-shim");
    cmd.env_remove("MCPD_NO_AUTOSTART");
    ShimClient::from_command(cmd)
}

#[test]
fn an_attached_shim_whose_daemon_was_shut_down_starts_it_again() {
    let mut daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut shim = autostarting_shim(&daemon);
    shim.initialize();
    shim.call_tool("fx__echo", json!({"message": "before"}));

    let out = daemon.mcpctl(&["shutdown"]);
    assert!(text(&out).contains("start it again"), "{}", text(&out));
    assert!(daemon.wait_exit(TIMEOUT).is_some(), "mcpd did not stop");

    // The next call is answered by a daemon the shim started (same directories and config).
    shim.set_timeout(PEER_TIMEOUT);
    let result = shim.call_tool("fx__echo", json!({"message": "after"}));
    assert!(result.to_string().contains("after"), "{result}");
    let revived = daemon.status().pid;
    assert_ne!(revived, daemon.pid(), "a new daemon answers");

    // Clean up the daemon the shim started (it is not this harness's child).
    let out = daemon.mcpctl(&["shutdown", "--stay-down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(TIMEOUT, || !process_alive(revived)),
        "the revived mcpd did not stop"
    );
}

#[test]
fn shutdown_stay_down_keeps_shims_from_starting_it() {
    let mut daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    let out = daemon.mcpctl(&["shutdown", "--stay-down"]);
    assert!(text(&out).contains("stays down"), "{}", text(&out));
    assert!(daemon.wait_exit(TIMEOUT).is_some(), "mcpd did not stop");

    // A client launched now is told why, instead of starting a daemon.
    let mut shim = autostarting_shim(&daemon);
    let status = shim.wait_exit(TIMEOUT).expect("the shim exits");
    assert!(!status.success());
    // Its stderr is read by a thread of the harness: the last line may land just after the exit.
    assert!(
        wait_until(TIMEOUT, || shim.stderr().contains("--stay-down")),
        "{}",
        shim.stderr()
    );

    // An explicit start ends it: the marker is gone.
    daemon.start_again();
    assert!(!mcpd_proto::stay_down::is_marked(daemon.socket()));
}
