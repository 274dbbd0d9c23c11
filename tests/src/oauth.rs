//! The OAuth-protected MCP server of the Python SDK (`tests/peers/py_oauth_server.py`), the
//! stand-in browser (`py_browser.py`), and a tiny HTTP/1.1 client for their test hooks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::PEER_TIMEOUT;
use crate::peers::peers;
use crate::process::{line_channel, wait_timeout};

/// A running `py_oauth_server.py`, killed on drop.
#[derive(Debug)]
pub struct OAuthServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl OAuthServer {
    /// Starts the server with extra `args` (see the script's docstring) and waits until it
    /// listens.
    pub fn start(args: &[&str]) -> Self {
        let peers = peers();
        let mut child = Command::new(peers.python())
            .arg(peers.dir().join("py_oauth_server.py"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start py_oauth_server.py");
        let lines = line_channel(child.stderr.take().expect("piped stderr"));
        let deadline = std::time::Instant::now() + PEER_TIMEOUT;
        let port = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = line.strip_prefix("mcpd-peer-listening 127.0.0.1:") {
                        break port.trim().parse().expect("a port number");
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("py_oauth_server.py did not start listening");
                }
            }
        };
        // Keep draining stderr so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, port }
    }

    /// `http://127.0.0.1:PORT/mcp`.
    pub fn mcp_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// The issuer (`http://127.0.0.1:PORT/`).
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The counters of `/stats`.
    pub fn stats(&self) -> Value {
        let (status, _, body) = http_request(self.port, "GET", "/stats", &[]);
        assert_eq!(status, 200, "GET /stats: {body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// One counter.
    pub fn count(&self, name: &str) -> u64 {
        self.stats()[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// Every access and refresh token issued so far.
    pub fn tokens(&self) -> Vec<String> {
        let (_, _, body) = http_request(self.port, "GET", "/admin/tokens", &[]);
        serde_json::from_str(&body).expect("tokens JSON")
    }

    /// `POST /admin/<what>` (`expire-access`, `drop-refresh`).
    pub fn admin(&self, what: &str) {
        let (status, _, body) = http_request(self.port, "POST", &format!("/admin/{what}"), &[]);
        assert_eq!(status, 200, "{what}: {body}");
    }

    /// Stops the server (a network failure for its clients).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = wait_timeout(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `--browser` command for `mcpctl login`: the stand-in browser, logging to `log`.
pub fn browser_command(log: &std::path::Path) -> String {
    let peers = peers();
    format!(
        "{} {} --log {}",
        peers.python().display(),
        peers.dir().join("py_browser.py").display(),
        log.display()
    )
}

/// The stand-in browser's script.
pub fn browser_script() -> PathBuf {
    peers().dir().join("py_browser.py")
}

/// Follows `url` through redirects with the stand-in browser; whether the last page was 2xx.
pub fn browse(url: &str) -> bool {
    let peers = peers();
    Command::new(peers.python())
        .arg(browser_script())
        .arg(url)
        .status()
        .is_ok_and(|s| s.success())
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with `Connection: close`; returns the status,
/// the head and the body. `headers` replace the default `Host`.
pub fn http_request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut request = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}
