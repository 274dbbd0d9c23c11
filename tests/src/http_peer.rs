//! HTTP peers: MCP servers listening on a loopback port, for the HTTP upstream tests and the
//! benchmark. Each prints `mcpd-peer-listening 127.0.0.1:<port>` to stderr once it listens
//! (node peers through `tests/peers/loopback.mjs`, the Python peer by itself).

use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use crate::PEER_TIMEOUT;
use crate::peers::peers;
use crate::process::{line_channel, wait_timeout};

const LISTENING: &str = "mcpd-peer-listening 127.0.0.1:";

/// A running HTTP peer; killed when dropped.
#[derive(Debug)]
pub struct HttpPeer {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl HttpPeer {
    /// server-everything in `mode` (`streamableHttp`: endpoint `/mcp`; `sse`: `/sse`).
    pub fn everything(mode: &str) -> Self {
        Self::everything_on(mode, 0)
    }

    /// server-everything in `mode` on `port` (0: any).
    pub fn everything_on(mode: &str, port: u16) -> Self {
        let p = peers();
        let mut cmd = Command::new(p.node());
        cmd.arg("--import")
            .arg(p.loopback_preload())
            .arg(p.everything_js())
            .arg(mode)
            .env("PORT", port.to_string());
        Self::spawn(cmd)
    }

    /// `tests/peers/py_http_server.py` (FastMCP over streamable HTTP) on `port` (0: any) with
    /// extra arguments.
    pub fn python(port: u16, args: &[&str]) -> Self {
        let p = peers();
        let mut cmd = Command::new(p.python());
        cmd.arg(p.dir().join("py_http_server.py"))
            .arg("--port")
            .arg(port.to_string())
            .args(args);
        Self::spawn(cmd)
    }

    /// `tests/peers/py_modern_server.py --http` (the modern-only Python SDK 2.x server) on any
    /// port, with extra arguments.
    pub fn python_modern(args: &[&str]) -> Self {
        let p = peers();
        let mut cmd = Command::new(p.python_modern());
        cmd.arg(p.py_modern_server()).arg("--http").args(args);
        Self::spawn(cmd)
    }

    /// Starts `cmd` and waits for its listening line.
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let lines = line_channel(child.stderr.take().expect("piped stderr"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + PEER_TIMEOUT;
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let port = line
                        .strip_prefix(LISTENING)
                        .and_then(|p| p.trim().parse::<u16>().ok());
                    stderr
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(line);
                    if let Some(port) = port {
                        break port;
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{cmd:?} did not say it listens ({}); stderr:\n{}",
                        if e == RecvTimeoutError::Timeout {
                            "timeout"
                        } else {
                            "it exited"
                        },
                        stderr
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .join("\n")
                    );
                }
            }
        };
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in lines {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        Self {
            child,
            port,
            stderr,
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// Kills it and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        wait_timeout(&mut self.child, PEER_TIMEOUT);
    }
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        self.kill();
    }
}
