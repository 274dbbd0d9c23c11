//! `mcpctl example-server` spoken to over stdin/stdout, as mcpd speaks to it.

// Helpers here are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The example server with a line reader that times out instead of hanging the test.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Server {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcpctl"))
            .arg("example-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mcpctl example-server");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(TIMEOUT)
            .expect("a line from the example server");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Sends a request and returns the whole response message.
    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send_line(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        );
        let reply = self.next();
        assert_eq!(reply["jsonrpc"], "2.0", "{reply}");
        assert_eq!(reply["id"], id, "{reply}");
        reply
    }

    fn call(&mut self, id: u64, tool: &str, arguments: Value) -> Value {
        let reply = self.request(
            id,
            "tools/call",
            json!({"name": tool, "arguments": arguments}),
        );
        reply["result"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn initialize_echoes_a_supported_protocol_version_and_offers_tools() {
    let mut s = Server::start();
    let reply = s.request(
        1,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}}),
    );
    let result = &reply["result"];
    assert_eq!(result["protocolVersion"], "2025-06-18");
    assert_eq!(result["capabilities"], json!({"tools": {}}));
    assert_eq!(result["serverInfo"]["name"], "mcpd-example");
    assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn initialize_with_an_unknown_protocol_version_offers_the_latest() {
    let mut s = Server::start();
    let reply = s.request(
        1,
        "initialize",
        json!({"protocolVersion": "1999-01-01", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}}),
    );
    assert_eq!(reply["result"]["protocolVersion"], "2025-11-25");
}

#[test]
fn notifications_get_no_answer_and_ping_gets_an_empty_result() {
    let mut s = Server::start();
    s.send_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let reply = s.request(2, "ping", json!({}));
    assert_eq!(reply["result"], json!({}));
}

#[test]
fn tools_list_offers_echo_and_add_with_object_schemas() {
    let mut s = Server::start();
    let reply = s.request(3, "tools/list", json!({}));
    let tools = reply["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["echo", "add", "pid"]);
    assert_eq!(tools[0]["inputSchema"]["type"], "object");
    assert_eq!(tools[0]["inputSchema"]["required"], json!(["message"]));
    assert_eq!(
        tools[0]["inputSchema"]["properties"]["message"]["type"],
        "string"
    );
    assert_eq!(tools[1]["inputSchema"]["required"], json!(["a", "b"]));
    assert_eq!(tools[1]["inputSchema"]["properties"]["a"]["type"], "number");
}

#[test]
fn echo_returns_its_message() {
    let mut s = Server::start();
    let result = s.call(4, "echo", json!({"message": "hello from mcpd"}));
    assert_eq!(
        result,
        json!({"content": [{"type": "text", "text": "Echo: hello from mcpd"}]})
    );
}

#[test]
fn add_returns_the_sum_as_text() {
    let mut s = Server::start();
    assert_eq!(
        s.call(5, "add", json!({"a": 2, "b": 3}))["content"][0]["text"],
        "5"
    );
    assert_eq!(
        s.call(6, "add", json!({"a": 1.5, "b": -0.25}))["content"][0]["text"],
        "1.25"
    );
}

#[test]
fn bad_arguments_are_a_tool_error_result() {
    let mut s = Server::start();
    let result = s.call(7, "add", json!({"a": "two", "b": 3}));
    assert_eq!(result["isError"], true, "{result}");
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("must be numbers")
    );
    let result = s.call(8, "echo", json!({}));
    assert_eq!(result["isError"], true, "{result}");
}

#[test]
fn unknown_tool_is_invalid_params() {
    let mut s = Server::start();
    let reply = s.request(9, "tools/call", json!({"name": "nope", "arguments": {}}));
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    assert!(reply.get("result").is_none());
}

#[test]
fn unknown_method_is_method_not_found() {
    let mut s = Server::start();
    let reply = s.request(10, "resources/list", json!({}));
    assert_eq!(reply["error"]["code"], -32601, "{reply}");
}

#[test]
fn a_malformed_line_gets_a_parse_error_and_the_session_goes_on() {
    let mut s = Server::start();
    s.send_line("{not json");
    let reply = s.next();
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    assert_eq!(reply["id"], Value::Null);
    assert_eq!(s.request(11, "ping", json!({}))["result"], json!({}));
}

#[test]
fn string_ids_are_echoed_unchanged() {
    let mut s = Server::start();
    s.send_line(r#"{"jsonrpc":"2.0","id":"abc-1","method":"ping"}"#);
    assert_eq!(s.next()["id"], "abc-1");
}

#[test]
fn exits_cleanly_at_end_of_input() {
    let mut s = Server::start();
    drop(s.stdin.take());
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit at EOF");
        thread::sleep(Duration::from_millis(20));
    }
}
