//! The latency mcpd adds to a `tools/call` on a loopback streamable HTTP server.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! MCPD_PEERS=$PWD/tests/peers cargo bench -p mcpd-tests --bench http
//! ```
//!
//! Two servers: a minimal Rust one in this file (it answers in microseconds, so mcpd's share
//! shows), and `tests/peers/py_http_server.py` (FastMCP, JSON responses: what a real server
//! costs). The same `echo` call is made `CALLS` times each way, alternating, one at a time:
//! - directly: a minimal HTTP/1.1 keep-alive client in this file POSTs it with the session id;
//! - through mcpd: raw JSON-RPC lines into `mcp-shim`, to `mcpd`, which POSTs it upstream.
//!
//! It prints the median and p99 of both and of the difference. Figures, not assertions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mcpd_proto::ServerState;
use mcpd_tests::{HttpPeer, ShimClient, TestDaemon};
use serde_json::{Value, json};

const WARMUP: usize = 200;
const CALLS: usize = 2000;

/// One keep-alive HTTP/1.1 connection to the MCP endpoint.
struct Direct {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    port: u16,
    session: Option<String>,
}

impl Direct {
    fn connect(port: u16) -> Self {
        let writer = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        writer.set_nodelay(true).expect("nodelay");
        Self {
            reader: BufReader::new(writer.try_clone().expect("clone")),
            writer,
            port,
            session: None,
        }
    }

    /// POSTs `body`; returns the response body (empty for 202).
    fn post(&mut self, body: &Value) -> String {
        let body = body.to_string();
        let mut head = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nMCP-Protocol-Version: 2025-11-25\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if let Some(s) = &self.session {
            head.push_str(&format!("Mcp-Session-Id: {s}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(&body);
        self.writer.write_all(head.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 2"), "{line}");
        let mut len = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "mcp-session-id" => self.session = Some(v.trim().to_owned()),
                "transfer-encoding" => panic!("chunked: start the server with --json-response"),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }
}

fn echo(id: usize) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"message": "bench"}}})
}

/// Times `a` and `b` alternately (so that drift in the server affects both alike), after a
/// warm-up of each; returns both sorted.
fn time_pair(mut a: impl FnMut(usize), mut b: impl FnMut(usize)) -> (Vec<Duration>, Vec<Duration>) {
    for i in 0..WARMUP {
        a(i);
        b(i);
    }
    let (mut ta, mut tb) = (Vec::with_capacity(CALLS), Vec::with_capacity(CALLS));
    for i in WARMUP..WARMUP + CALLS {
        let start = Instant::now();
        a(i);
        ta.push(start.elapsed());
        let start = Instant::now();
        b(i);
        tb.push(start.elapsed());
    }
    ta.sort();
    tb.sort();
    (ta, tb)
}

/// A minimal streamable HTTP MCP server (keep-alive HTTP/1.1, JSON answers, an `echo` tool)
/// that answers in microseconds, so that what mcpd adds is not hidden by the server's own time.
fn fast_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || serve_fast(stream));
        }
    });
    port
}

fn serve_fast(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let method = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut len = 0;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let result = match request["method"].as_str() {
            _ if method != "POST" => None,
            Some("initialize") => Some(json!({"protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}}, "serverInfo": {"name": "fast", "version": "1"}})),
            Some("tools/list") => {
                Some(json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}))
            }
            Some("tools/call") => Some(json!({"content": [{"type": "text",
                "text": format!("Echo: {}", request["params"]["arguments"]["message"].as_str().unwrap_or_default())}]})),
            Some(_) if request.get("id").is_some() => Some(json!({})),
            _ => None,
        };
        let response = match (method.as_str(), result) {
            ("POST", Some(result)) => {
                let body =
                    json!({"jsonrpc": "2.0", "id": request["id"], "result": result}).to_string();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: fast-1\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            ("POST", None) => "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".to_owned(),
            ("DELETE", _) => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_owned(),
            _ => "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n".to_owned(),
        };
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Measures one server, directly and through mcpd, and prints the figures.
fn measure(label: &str, port: u16) {
    let mut direct = Direct::connect(port);
    let init = direct.post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}));
    assert!(init.contains("protocolVersion"), "{init}");
    direct.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));

    let daemon = TestDaemon::start(json!({"mcpServers": {
        "s": {"type": "http", "url": format!("http://127.0.0.1:{port}/mcp")}
    }}));
    daemon.wait_server_state("s", ServerState::Ready);
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    let params = json!({"name": "s__echo", "arguments": {"message": "bench"}});

    let (direct_times, through_times) = time_pair(
        |i| {
            let body = direct.post(&echo(i + 1));
            assert!(body.contains("Echo: bench"), "{body}");
        },
        |_| {
            let line = shim.request_line("tools/call", Some(params.clone()));
            assert!(line.contains("Echo: bench"), "{line}");
        },
    );
    println!(
        "\n{label}: tools/call echo, {CALLS} calls each, one at a time, alternating, after {WARMUP} warm-up calls"
    );
    println!("{:<28} {:>12} {:>12}", "", "median (µs)", "p99 (µs)");
    for (what, t) in [
        ("direct HTTP", &direct_times),
        ("shim -> mcpd -> HTTP", &through_times),
    ] {
        println!(
            "{what:<28} {:>12.0} {:>12.0}",
            us(pct(t, 0.5)),
            us(pct(t, 0.99))
        );
    }
    println!(
        "{:<28} {:>12.0} {:>12.0}",
        "added by mcpd (+ shim)",
        us(pct(&through_times, 0.5)) - us(pct(&direct_times, 0.5)),
        us(pct(&through_times, 0.99)) - us(pct(&direct_times, 0.99))
    );
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with no arguments: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!(
        "binaries: {}",
        mcpd_tests::bin("mcpd")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    measure("a minimal Rust server in this benchmark", fast_server());
    let peer = HttpPeer::python(0, &["--json-response"]);
    measure(
        "the Python SDK's FastMCP server (tests/peers/py_http_server.py)",
        peer.port(),
    );
}
