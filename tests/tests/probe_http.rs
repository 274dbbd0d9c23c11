//! The `auto` probe of a legacy streamable HTTP server leaves no session open on it (issue 12):
//! a legacy server may open a session for any request that comes without one, the
//! `server/discover` probe included, and answer it with an error and an `Mcp-Session-Id`. mcpd
//! never uses a session for a 2026-07-28 request, so it ends that one with a `DELETE`.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use mcpd_proto::ServerState;
use mcpd_tests::http_peer::HttpPeer;
use mcpd_tests::peers::{Sdk, run_sdk_client};
use mcpd_tests::process::wait_until;
use mcpd_tests::{PEER_TIMEOUT, TestDaemon};
use serde_json::{Value, json};

/// A legacy streamable HTTP server scripted like an older Python SDK 1.x: every POST without a
/// session id opens one (`stray-N`, answered 400 "Missing session ID" unless it is
/// `initialize`, which gets `real-N`). Returns its URL and the sessions it was asked to end.
fn session_opening_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&deleted);
    std::thread::spawn(move || {
        let mut opened = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let (mut length, mut session, mut verb) = (0, None, String::new());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if verb.is_empty() {
                    verb = header.split(' ').next().unwrap_or_default().to_owned();
                }
                let lower = header.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if let Some(v) = lower.strip_prefix("mcp-session-id:") {
                    session = Some(v.trim().to_owned());
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let reply = |stream: &mut std::net::TcpStream,
                         status: &str,
                         extra: &str,
                         body: &str| {
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            };
            match verb.as_str() {
                "DELETE" => {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(session.unwrap_or_default());
                    reply(&mut stream, "200 OK", "", "");
                    continue;
                }
                "POST" => {}
                _ => {
                    reply(&mut stream, "405 Method Not Allowed", "", "");
                    continue;
                }
            }
            let msg: Value = serde_json::from_slice(&body).unwrap_or_default();
            let id = msg["id"].clone();
            let method = msg["method"].as_str().unwrap_or_default().to_owned();
            if session.is_none() {
                opened += 1;
                if method != "initialize" {
                    let error = json!({"jsonrpc": "2.0", "id": "server-error", "error": {
                        "code": -32600, "message": "Bad Request: Missing session ID"}});
                    let header = format!("mcp-session-id: stray-{opened}\r\n");
                    reply(&mut stream, "400 Bad Request", &header, &error.to_string());
                    continue;
                }
                let result = json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "opener", "version": "1"}});
                let header = format!("mcp-session-id: real-{opened}\r\n");
                let body = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
                reply(&mut stream, "200 OK", &header, &body);
                continue;
            }
            if id.is_null() {
                let _ = stream.write_all(
                    b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            }
            let result = match method.as_str() {
                "tools/list" => {
                    json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]})
                }
                _ => json!({}),
            };
            let body = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
            reply(&mut stream, "200 OK", "", &body);
        }
    });
    (url, deleted)
}

#[test]
fn the_session_a_legacy_http_server_opened_for_the_probe_is_ended() {
    let (url, deleted) = session_opening_server();
    let daemon = TestDaemon::start(json!({"mcpServers": {"old": {"type": "http", "url": url}}}));
    daemon.wait_server_state("old", ServerState::Ready);
    let ended = || deleted.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        wait_until(PEER_TIMEOUT, || ended()
            .iter()
            .any(|s| s.starts_with("stray-"))),
        "the probe's session was not ended: {:?}\n{}",
        ended(),
        daemon.log()
    );
    // mcpd's own session (from initialize) stays.
    assert!(
        ended().iter().all(|s| s.starts_with("stray-")),
        "{:?}",
        ended()
    );
    // And it serves through it.
    assert!(
        wait_until(PEER_TIMEOUT, || daemon.server("old").tools == 1),
        "{:?}",
        daemon.server("old")
    );
}

#[test]
fn peer_the_auto_probe_leaves_one_session_on_a_python_sdk_1_http_server() {
    let peer = HttpPeer::python(0, &[]);
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "p": {"type": "http", "url": peer.url("/mcp")}
    }}));
    daemon.wait_server_state("p", ServerState::Ready);
    let stats = || {
        let lines = run_sdk_client(
            Sdk::Python,
            &daemon,
            &json!([{"op": "call_tool", "name": "p__stats", "arguments": {}}]),
        );
        let call = lines.iter().find(|l| l["op"] == "call_tool").cloned();
        let text = call.as_ref().and_then(|c| c["content"][0]["text"].as_str());
        serde_json::from_str::<Value>(text.unwrap_or("{}")).unwrap_or_default()
    };
    let seen = stats();
    // The probe was given a session, and so was mcpd's initialize; only the latter is open.
    assert_eq!(seen["sessions"].as_array().map(Vec::len), Some(2), "{seen}");
    assert_eq!(seen["live"].as_array().map(Vec::len), Some(1), "{seen}");
    assert_eq!(seen["initializes"], 1, "{seen}");
}
