//! Screens that say what is wrong and what to type: `mcpctl status [NAME]`, `doctor`, `logs`.

use mcpd_proto::ServerState;
use mcpd_tests::daemon::TestDaemon;
use mcpd_tests::fixture;
use serde_json::json;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A node server whose module is missing: stderr ends with `Node.js v20...`, the cause is above.
fn node_like_crash() -> serde_json::Value {
    json!({
        "command": "sh",
        "args": ["-c", "printf '%s\\n' 'node:internal/modules/cjs/loader:1228' '  throw err;' \"Error: Cannot find module '/opt/x/index.js'\" '    at Module._resolveFilename (node:internal)' '' 'Node.js v20.20.2' >&2; exit 1"],
        "restartDelayMs": 20,
        "crashLoopAfter": 2
    })
}

#[test]
fn status_shows_the_cause_of_a_crash_loop_and_the_way_out() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "fx": fixture::server(&[]),
        "node": node_like_crash(),
    }}));
    daemon.wait_server_state("node", ServerState::CrashLoop);
    let out = text(&daemon.mcpctl(&["status"]));
    assert!(
        out.contains("Error: Cannot find module '/opt/x/index.js'"),
        "{out}"
    );
    assert!(
        out.contains("node is crash-loop") && out.contains("mcpctl restart node"),
        "{out}"
    );

    // One server in full, with its log lines.
    let one = daemon.mcpctl(&["status", "node"]);
    let one_text = text(&one);
    assert!(one.status.success(), "{one_text}");
    assert!(one_text.contains("state: crash-loop for "), "{one_text}");
    assert!(
        one_text.contains("cause: Error: Cannot find module"),
        "{one_text}"
    );
    assert!(
        one_text.contains("log:") && one_text.contains("[node]"),
        "{one_text}"
    );
    assert!(
        !one_text.contains("[fx]"),
        "only this server's lines: {one_text}"
    );
}

#[test]
fn doctor_fails_for_a_crash_looping_server_and_names_it_once() {
    let daemon = TestDaemon::start(json!({"mcpServers": {"node": node_like_crash()}}));
    daemon.wait_server_state("node", ServerState::CrashLoop);
    let out = daemon.mcpctl(&["doctor"]);
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert_eq!(
        report.matches("server node is crash-loop").count(),
        1,
        "{report}"
    );
    assert!(report.contains("mcpctl restart node"), "{report}");
}

#[test]
fn logs_and_status_of_an_unknown_server_fail_naming_the_servers() {
    let daemon = TestDaemon::start(fixture::config(&[("fx", &[]), ("fy", &[])]));
    for args in [
        &["logs", "NOSUCH"][..],
        &["status", "NOSUCH"],
        &["restart", "NOSUCH"],
    ] {
        let out = daemon.mcpctl(args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("no server named `NOSUCH` (servers: fx, fy)"),
            "{args:?}: {}",
            text(&out)
        );
    }
    // The daemon's answer is machine-readable, not a message to match.
    let reply = daemon.control(&mcpd_proto::ControlRequest::Logs {
        server: Some("NOSUCH".into()),
        follow: false,
        limit: None,
    });
    assert_eq!(
        reply,
        mcpd_proto::ControlResponse::NoSuchServer {
            server: "NOSUCH".into(),
            known: vec!["fx".into(), "fy".into()],
        }
    );
}

#[test]
fn the_demo_shows_one_shared_process_a_kill_and_a_daemon_restart() {
    let out = std::process::Command::new(mcpd_tests::bin("mcpctl"))
        .arg("demo")
        .output()
        .expect("run mcpctl demo");
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    for needle in [
        "both clients are served by one example-server process, pid ",
        "mcpd started it again as pid ",
        "client A's session went on without noticing",
        "Next: packaging/install.sh",
    ] {
        assert!(shown.contains(needle), "{needle:?} missing:\n{shown}");
    }
}

#[test]
fn completions_list_the_running_servers_and_no_hidden_commands() {
    let mut daemon = TestDaemon::start(fixture::config(&[("fx", &[]), ("fy", &[])]));
    let names = daemon.mcpctl(&["__complete", "servers"]);
    assert_eq!(String::from_utf8_lossy(&names.stdout), "fx\nfy\n");
    for shell in ["bash", "zsh", "fish"] {
        let script =
            String::from_utf8_lossy(&daemon.mcpctl(&["completions", shell]).stdout).into_owned();
        assert!(script.contains("mcpctl __complete servers"), "{shell}");
        assert!(
            !script.contains("example-server"),
            "{shell}: a hidden command"
        );
        assert!(!script.contains("'__complete"), "{shell}: a hidden command");
    }
    // With no daemon, the names come from the configuration file.
    daemon.terminate();
    let names = daemon.mcpctl(&["__complete", "servers"]);
    assert_eq!(String::from_utf8_lossy(&names.stdout), "fx\nfy\n");
}
