//! The `mcpd-fixture` MCP server (`src/bin/mcpd-fixture.rs`) and configs that use it.

use serde_json::{Value, json};

use crate::bin;

/// The `structuredContent` of the fixture's `big` tool, byte for byte: numbers that a
/// `serde_json::Value` round trip (or a typed model) would rewrite.
pub const BIG_STRUCTURED: &str = r#"{"price":1.50,"big":123456789012345678901234567890,"tiny":1.0e-7,"negzero":-0.0,"word":"caf\u00e9"}"#;

/// The fixed tools the fixture always offers, in the order it lists them (after any
/// `tool_<i>` from `--tools`).
pub const FIXED_TOOLS: [&str; 7] = ["echo", "add", "sleep", "pid", "big", "crash", "ask"];

/// An `mcpServers` entry that runs the fixture with `args` (its flags).
pub fn server(args: &[&str]) -> Value {
    json!({"command": bin("mcpd-fixture").display().to_string(), "args": args})
}

/// A whole config: one fixture server per `(name, flags)`.
pub fn config(servers: &[(&str, &[&str])]) -> Value {
    let map: serde_json::Map<String, Value> = servers
        .iter()
        .map(|(name, args)| ((*name).to_owned(), server(args)))
        .collect();
    json!({ "mcpServers": map })
}

/// The fixture started directly (no daemon), driven like a client would drive it.
pub fn spawn(args: &[&str]) -> crate::ShimClient {
    let mut cmd = std::process::Command::new(bin("mcpd-fixture"));
    cmd.args(args);
    crate::ShimClient::from_command(cmd)
}

/// Sends the 60 s `sleep` of the fixture attached as `fx` and waits until the daemon holds it
/// in flight; its id.
pub fn sleep_held_in_flight(daemon: &crate::TestDaemon, shim: &mut crate::ShimClient) -> u64 {
    let id = shim.send_request(
        "tools/call",
        Some(json!({"name": "fx__sleep", "arguments": {"ms": 60_000}})),
    );
    assert!(
        crate::wait_until(crate::TIMEOUT, || daemon
            .status()
            .sessions
            .iter()
            .any(|s| s.in_flight > 0)),
        "the call never got in flight"
    );
    id
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::process::{cmdline, descendants_of, process_alive};

    #[test]
    fn negotiates_the_protocol_version_like_a_real_server() {
        let mut f = spawn(&[]);
        let r = f.initialize_with("2025-06-18", json!({}));
        assert_eq!(r["protocolVersion"], "2025-06-18");
        let mut f = spawn(&["--name", "other"]);
        let r = f.initialize_with("1999-01-01", json!({}));
        assert_eq!(r["protocolVersion"], "2025-11-25");
        assert_eq!(r["serverInfo"]["name"], "other");
    }

    #[test]
    fn paginates_tools_list_with_next_cursor() {
        let mut f = spawn(&["--tools", "5", "--page-size", "3"]);
        f.initialize();
        let first = f.result("tools/list", None);
        assert_eq!(first["tools"].as_array().map(Vec::len), Some(3));
        assert_eq!(first["nextCursor"], "3");
        let mut expected: Vec<String> = (0..5).map(|i| format!("tool_{i}")).collect();
        expected.extend(FIXED_TOOLS.iter().map(|t| (*t).to_owned()));
        assert_eq!(f.tool_names(), expected);
    }

    #[test]
    fn big_answers_numbers_byte_for_byte() {
        let mut f = spawn(&[]);
        f.initialize();
        let line = f.request_line("tools/call", Some(json!({"name": "big"})));
        assert!(
            line.contains(&format!(r#""structuredContent":{BIG_STRUCTURED}"#)),
            "{line}"
        );
        assert!(line.contains("1.50") && line.contains("123456789012345678901234567890"));
    }

    #[test]
    fn sleep_does_not_hold_up_other_requests_and_reports_progress() {
        let mut f = spawn(&[]);
        f.initialize();
        let started = Instant::now();
        let slow = f.send_request(
            "tools/call",
            Some(json!({"name": "sleep", "arguments": {"ms": 2000},
                        "_meta": {"progressToken": "tok"}})),
        );
        let echoed = f.call_tool("echo", json!({"message": "quick"}));
        assert_eq!(echoed["content"][0]["text"], "quick");
        assert!(started.elapsed() < Duration::from_millis(1500));
        let done = f.response_line(&json!(slow));
        assert!(done.contains("slept 2000 ms"), "{done}");
        assert_eq!(
            f.wait_notification("notifications/progress")["params"]["progressToken"],
            "tok"
        );
    }

    #[test]
    fn announces_a_late_tool_after_initialization() {
        let mut f = spawn(&["--list-changed-after-ms", "50"]);
        f.initialize();
        f.wait_notification("notifications/tools/list_changed");
        assert!(f.tool_names().contains(&"late".to_owned()));
        let r = f.call_tool("late", json!({}));
        assert_eq!(r["content"][0]["text"], "late");
    }

    #[test]
    fn unknown_tools_and_garbage_get_errors() {
        let mut f = spawn(&[]);
        f.initialize();
        assert_eq!(
            f.error("tools/call", Some(json!({"name": "nope"})))["code"],
            -32602
        );
        assert_eq!(f.error("no/such/method", None)["code"], -32601);
        f.send_raw("not json");
        let line = f.response_line(&serde_json::Value::Null);
        assert!(line.contains("-32700"), "{line}");
    }

    #[test]
    fn ask_relays_a_request_to_the_client_and_answers_with_its_result() {
        let mut f = spawn(&[]);
        f.initialize();
        let call = f.send_request(
            "tools/call",
            Some(json!({"name": "ask", "arguments": {"method": "roots/list"}})),
        );
        let asked = f.wait_server_request("roots/list");
        f.respond(&asked["id"], json!({"roots": [{"uri": "file:///r"}]}));
        let answer: serde_json::Value =
            serde_json::from_str(&f.response_line(&json!(call))).unwrap();
        assert_eq!(
            answer["result"]["structuredContent"]["roots"][0]["uri"],
            "file:///r"
        );
    }

    #[test]
    fn crash_exits_with_status_3() {
        let mut f = spawn(&[]);
        f.initialize();
        f.send_request("tools/call", Some(json!({"name": "crash"})));
        let status = f.wait_exit(crate::TIMEOUT).expect("the fixture exited");
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn exit_after_init_exits_once_initialized() {
        let mut f = spawn(&["--exit-after-init"]);
        f.initialize();
        let status = f.wait_exit(crate::TIMEOUT).expect("the fixture exited");
        assert_eq!(status.code(), Some(0));
    }

    #[test]
    fn fork_grandchildren_leaves_two_sleepers_below_it() {
        let f = spawn(&["--fork-grandchildren"]);
        let sleepers =
            crate::eventually(crate::TIMEOUT, "two `sleep 600` below the fixture", || {
                let s: Vec<u32> = descendants_of(f.pid())
                    .into_iter()
                    .filter(|&p| cmdline(p).is_some_and(|c| c == "sleep 600"))
                    .collect();
                (s.len() == 2).then_some(s)
            });
        // Clean up: these are exactly what a supervisor must kill by process group.
        for pid in &sleepers {
            crate::process::signal(*pid, libc::SIGKILL);
        }
        assert!(crate::wait_until(crate::TIMEOUT, || !sleepers
            .iter()
            .any(|&p| process_alive(p))));
    }

    #[test]
    fn records_every_received_line() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("rec");
        let mut f = spawn(&["--record", record.to_str().unwrap()]);
        f.initialize();
        f.send_raw(r#"{"jsonrpc":"2.0","id":"x","method":"ping","params":{"n":1.50}}"#);
        f.response_line(&json!("x"));
        let text = std::fs::read_to_string(&record).unwrap();
        assert!(
            text.lines()
                .any(|l| l == r#"{"jsonrpc":"2.0","id":"x","method":"ping","params":{"n":1.50}}"#),
            "{text}"
        );
    }
}
