//! The test harness against the real binaries, with the Rust fixture server only (no node or
//! Python): if these fail, every other integration test's failure is suspect.

use mcpd_proto::ServerState;
use mcpd_tests::fixture::{self, BIG_STRUCTURED};
use mcpd_tests::process::descendants_with_cmdline;
use mcpd_tests::{ShimClient, TIMEOUT, TestDaemon, process_alive, wait_until};
use serde_json::json;

#[test]
fn harness_daemon_serves_a_fixture_through_the_shim_and_stops_cleanly() {
    let mut daemon = TestDaemon::start(fixture::config(&[("fx", &["--tools", "2"])]));
    let socket = daemon.socket().display().to_string();
    assert!(
        socket.starts_with("/tmp/mcpd-") && socket.len() < 108,
        "{socket}"
    );

    let fx = daemon.wait_server_state("fx", ServerState::Ready);
    let pid = fx.pid.expect("a ready server has a pid");
    assert_eq!(
        descendants_with_cmdline(daemon.pid(), "mcpd-fixture"),
        [pid]
    );

    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    let names = shim.tool_names();
    assert!(names.contains(&"fx__tool_1".to_owned()), "{names:?}");
    let line = shim.request_line(
        "tools/call",
        Some(json!({"name": "fx__big", "arguments": {}})),
    );
    assert!(
        line.contains(&format!(r#""structuredContent":{BIG_STRUCTURED}"#)),
        "{line}"
    );
    assert!(shim.close().success());

    let status = daemon.terminate();
    assert!(status.success(), "mcpd exited with {status}");
    assert!(wait_until(TIMEOUT, || !process_alive(pid)));
}
