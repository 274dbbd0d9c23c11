//! `mcpctl top` (issue 14): servers by memory (or CPU) with their request rates, one frame with
//! `--once` for scripts and pipes.

use mcpd_proto::ServerState;
use mcpd_tests::{ShimClient, TestDaemon, fixture};
use serde_json::json;

#[test]
fn mcpctl_top_once_lists_servers_by_memory_with_cpu_time_and_request_rate() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "small": fixture::server(&[]),
        "hog": fixture::server(&["--probe-tools"]),
    }}));
    daemon.wait_server_state("small", ServerState::Ready);
    daemon.wait_server_state("hog", ServerState::Ready);
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    shim.call_tool("hog__alloc", json!({"mb": 64}));

    let out = daemon.mcpctl(&["top", "--once", "--interval", "0.5"]);
    assert!(out.status.success(), "mcpctl top failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("mcpd "), "{text}");
    assert!(
        lines[1].split_whitespace().collect::<Vec<_>>()
            == [
                "SERVER", "STATE", "PID", "PROCS", "MEM", "CPU%", "CPU-TIME", "REQ/S", "SANDBOX"
            ],
        "{text}"
    );
    let rows: Vec<Vec<&str>> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(rows[0][0], "hog", "the biggest server first:\n{text}");
    assert_eq!(rows[1][0], "small", "{text}");
    for row in &rows {
        assert_eq!(row[1], "ready");
        assert!(row[4].ends_with('M'), "memory in MiB: {row:?}");
        assert!(row[5].parse::<f64>().is_ok(), "a CPU percentage: {row:?}");
        assert!(row[7].parse::<f64>().is_ok(), "a request rate: {row:?}");
        assert_eq!(row[8], "protect", "{row:?}");
    }
    let hog_mb: f64 = rows[0][4].trim_end_matches('M').parse().expect("MiB");
    assert!(hog_mb >= 64.0, "the hog's 64 MiB show: {text}");
}

#[test]
fn mcpctl_top_prints_the_asked_number_of_frames_to_a_pipe_and_exits() {
    let daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let out = daemon.mcpctl(&["top", "-n", "2", "--interval", "0.2", "--sort", "cpu"]);
    assert!(out.status.success(), "mcpctl top failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("SERVER").count(), 2, "two frames:\n{text}");
    assert!(text.contains("sorted by cpu"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no terminal control sequences on a pipe"
    );
}
