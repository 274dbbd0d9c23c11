//! Sessions survive a daemon restart: a client attached through one `mcp-shim` keeps working when
//! `mcpd` is stopped (SIGTERM) and a new one is started on the same socket and config, without
//! initializing again. The time from the new daemon's start to the first successful call is
//! printed (`resume:` lines; run with `--no-capture` to see them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mcpd_tests::{PEER_TIMEOUT, Sdk, SdkClient, ShimClient, TIMEOUT, TestDaemon, bin, wait_until};
use serde_json::{Value, json};

/// The bundled example server as the only upstream.
fn config() -> Value {
    json!({"mcpServers": {"example": {
        "command": bin("mcpctl").display().to_string(),
        "args": ["example-server"],
    }}})
}

/// A second `mcpd` started on the first one's socket, config and XDG dirs (the first one has
/// stopped). Stopped (SIGTERM, then SIGKILL) when dropped.
struct Restarted {
    child: Child,
}

impl Restarted {
    /// Starts it and returns once its socket answers a control hello.
    fn start(first: &TestDaemon, n: u32) -> Self {
        let log = File::create(first.root().join(format!("mcpd-{n}.log"))).unwrap();
        let child = first
            .command("mcpd")
            .env("RUST_LOG", "debug")
            .current_dir(first.root())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Self { child }
    }

    fn wait_ready(&mut self, first: &TestDaemon) {
        let ready = wait_until(TIMEOUT, || first.try_control_connection().is_ok());
        assert!(
            ready,
            "the restarted mcpd did not answer within {TIMEOUT:?}"
        );
    }

    fn stop(&mut self) {
        // SAFETY: signalling our own child, not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let stopped = wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

fn echo(shim: &mut ShimClient, message: &str) -> Value {
    let result = shim.call_tool("example__echo", json!({"message": message}));
    assert_ne!(result["isError"], json!(true), "{result}");
    assert_eq!(
        result["content"][0]["text"],
        json!(format!("Echo: {message}")),
        "{result}"
    );
    result
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn a_shim_session_survives_a_daemon_restart_without_a_new_initialize() {
    let mut first = TestDaemon::start(config());
    let mut shim = ShimClient::spawn(&first, None);
    shim.initialize();
    echo(&mut shim, "before");

    let stop = Instant::now();
    let status = first.terminate();
    assert!(status.success(), "mcpd exited with {status}");
    let stopped = stop.elapsed();

    // The next call is sent while no daemon runs: the shim holds it until it has resumed.
    let started = Instant::now();
    let mut second = Restarted::start(&first, 2);
    let id = shim.send_request(
        "tools/call",
        Some(json!({"name": "example__echo", "arguments": {"message": "after"}})),
    );
    let line = shim.response_line(&json!(id));
    let resumed = started.elapsed();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        answer["result"]["content"][0]["text"],
        json!("Echo: after"),
        "{line}\nshim stderr:\n{}",
        shim.stderr()
    );
    second.wait_ready(&first);
    println!(
        "resume: mcpd stopped in {:.1} ms; first call answered {:.1} ms after the new mcpd started",
        ms(stopped),
        ms(resumed)
    );

    // The session goes on as before, across a second restart too.
    echo(&mut shim, "again");
    assert!(shim.tool_names().contains(&"example__echo".to_owned()));
    second.stop();
    let started = Instant::now();
    let _third = Restarted::start(&first, 3);
    echo(&mut shim, "third");
    println!(
        "resume: after a second restart, first call answered {:.1} ms after mcpd started",
        ms(started.elapsed())
    );

    assert_eq!(shim.stderr(), "");
    assert_eq!(shim.close().code(), Some(0));
}

/// The Python SDK holds its session open through the shim while the daemon restarts; its next
/// `tools/call` succeeds without the client reconnecting or initializing again.
#[test]
fn peer_python_sdk_session_survives_a_daemon_restart() {
    let mut first = TestDaemon::start(config());
    let steps = json!([
        {"op": "call_tool", "name": "example__echo", "arguments": {"message": "before"}},
        {"op": "wait_stdin"},
        {"op": "call_tool", "name": "example__echo", "arguments": {"message": "after"}},
        {"op": "list_tools"},
    ]);
    // The test starts the next daemon itself (see `direct::sdk_keeps_a_direct_session_across_a_daemon_stop`).
    let mut client =
        SdkClient::spawn_with(Sdk::Python, &first, &steps, &["--shim-arg=--no-autostart"]);
    let before = client.wait_for_op("call_tool", PEER_TIMEOUT);
    assert_eq!(
        before["content"][0]["text"],
        json!("Echo: before"),
        "{before}"
    );
    client.wait_for_op("wait_stdin", PEER_TIMEOUT);

    first.terminate();
    let started = Instant::now();
    let _second = Restarted::start(&first, 2);
    client.release();
    let after = client.wait_for_op("call_tool", PEER_TIMEOUT);
    println!(
        "resume: Python SDK call answered {:.1} ms after the new mcpd started",
        ms(started.elapsed())
    );
    assert_eq!(after["content"][0]["text"], json!("Echo: after"), "{after}");
    let lines = client.finish(PEER_TIMEOUT);
    let tools = &lines.last().unwrap()["tools"];
    assert!(
        tools.as_array().unwrap().contains(&json!("example__echo")),
        "{tools}"
    );
    // One initialize: the first line; none after the restart.
    let inits = lines.iter().filter(|l| l["op"] == "initialize").count();
    assert_eq!(inits, 1);
}
