//! [`ShimClient`]: a hand-driven MCP client speaking raw JSON-RPC through `mcp-shim`.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::TIMEOUT;
use crate::daemon::TestDaemon;
use crate::process::{Captured, line_channel, wait_timeout};

/// The protocol version [`ShimClient::initialize`] asks for.
pub const CLIENT_PROTOCOL_VERSION: &str = "2025-11-25";

/// A spawned `mcp-shim` driven line by line, as an MCP client would drive it.
///
/// Requests get ids 1, 2, 3, ...; while waiting for an answer, notifications and requests from
/// the server are recorded (see [`notifications`](Self::notifications) and
/// [`server_requests`](Self::server_requests)), and answers to other ids are kept for whoever
/// waits for them.
#[derive(Debug)]
pub struct ShimClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Captured,
    next_id: u64,
    responses: HashMap<String, String>,
    notifications: Vec<Value>,
    server_requests: Vec<Value>,
    timeout: Duration,
}

impl ShimClient {
    /// Starts `mcp-shim` for `daemon`, attached to `profile` (`None`: no `--profile` flag).
    pub fn spawn(daemon: &TestDaemon, profile: Option<&str>) -> Self {
        let mut cmd = Self::command(daemon);
        if let Some(p) = profile {
            cmd.args(["--profile", p]);
        }
        Self::from_command(cmd)
    }

    /// The command [`spawn`](Self::spawn) runs, for tests that change its flags or environment.
    pub fn command(daemon: &TestDaemon) -> Command {
        daemon.command("mcp-shim")
    }

    /// Starts `cmd` (an `mcp-shim` command) with piped stdio.
    pub fn from_command(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let lines = line_channel(child.stdout.take().expect("piped stdout"));
        let stderr = Captured::start(child.stderr.take().expect("piped stderr"));
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            next_id: 1,
            responses: HashMap::new(),
            notifications: Vec::new(),
            server_requests: Vec::new(),
            timeout: TIMEOUT,
        }
    }

    /// Changes how long [`request`](Self::request) and the waits wait (default [`TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The shim's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pipe the shim's stdin is, as `/proc/PID/fd` names it (`pipe:[INODE]`), read from
    /// the write end this side holds (both ends name the same pipe): unlike the shim's own
    /// descriptor 0, it is that pipe from the moment of the spawn, whatever the shim does with it.
    pub fn stdin_pipe(&self) -> String {
        use std::os::fd::AsRawFd;
        let fd = self
            .stdin
            .as_ref()
            .expect("the shim's stdin is open")
            .as_raw_fd();
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.display().to_string())
            .expect("the stdin pipe in /proc/self/fd")
    }

    /// What the shim wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Writes `line` and a newline to the shim's stdin.
    pub fn send_raw(&mut self, line: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("the shim's stdin is already closed"));
        let written = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush());
        if let Err(e) = written {
            panic!(
                "cannot write to the shim: {e}\nshim stderr:\n{}",
                self.stderr()
            );
        }
    }

    /// Writes `bytes` to the shim's stdin as they are (no newline): part of a line.
    pub fn send_bytes(&mut self, bytes: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("the shim's stdin is already closed"));
        if let Err(e) = stdin
            .write_all(bytes.as_bytes())
            .and_then(|()| stdin.flush())
        {
            panic!("cannot write to the shim: {e}");
        }
    }

    /// Bytes written to the shim's stdin that nobody has read yet (`FIONREAD` on the pipe).
    pub fn unread_input(&self) -> usize {
        use std::os::fd::AsRawFd;
        let Some(stdin) = self.stdin.as_ref() else {
            return 0;
        };
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int to the valid pointer; the descriptor is our pipe's.
        let rc = unsafe { libc::ioctl(stdin.as_raw_fd(), libc::FIONREAD, &mut unread) };
        assert_eq!(rc, 0, "FIONREAD on the shim's stdin pipe");
        usize::try_from(unread).unwrap_or_default()
    }

    /// The next line from the shim's stdout, exactly as written (newline removed): `Timeout` if
    /// none came within `timeout`, `Disconnected` at end of output.
    pub fn recv_line_timeout(&mut self, timeout: Duration) -> Result<String, RecvTimeoutError> {
        self.lines.recv_timeout(timeout)
    }

    /// Sends a request and returns its id; the answer is read by
    /// [`response_line`](Self::response_line).
    pub fn send_request(&mut self, method: &str, params: Option<Value>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(p) = params {
            msg["params"] = p;
        }
        self.send_raw(&msg.to_string());
        id
    }

    /// The raw line that answers request `id`, recording whatever else arrives meanwhile.
    pub fn response_line(&mut self, id: &Value) -> String {
        let key = id.to_string();
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(line) = self.responses.remove(&key) {
                return line;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.sort(line),
                Err(e) => panic!(
                    "no answer to request id {key} ({}) within {:?}\nshim stderr:\n{}",
                    if e == RecvTimeoutError::Timeout {
                        "timeout"
                    } else {
                        "the shim closed its stdout"
                    },
                    self.timeout,
                    self.stderr()
                ),
            }
        }
    }

    /// Sends a request and returns the raw line that answers it (for byte-level checks).
    pub fn request_line(&mut self, method: &str, params: Option<Value>) -> String {
        let id = self.send_request(method, params);
        self.response_line(&json!(id))
    }

    /// Sends a request and returns the whole response message (`result` or `error`).
    pub fn request(&mut self, method: &str, params: Option<Value>) -> Value {
        let line = self.request_line(method, params);
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {line}"))
    }

    /// Sends a request and returns its `result`; panics if it was answered with an error.
    pub fn result(&mut self, method: &str, params: Option<Value>) -> Value {
        let response = self.request(method, params);
        match response.get("result") {
            Some(r) => r.clone(),
            None => panic!("{method} failed: {response}"),
        }
    }

    /// Sends a request and returns its `error` object; panics if it succeeded.
    pub fn error(&mut self, method: &str, params: Option<Value>) -> Value {
        let response = self.request(method, params);
        match response.get("error") {
            Some(e) => e.clone(),
            None => panic!("{method} was expected to fail: {response}"),
        }
    }

    /// Sends a notification.
    pub fn notify(&mut self, method: &str, params: Option<Value>) {
        let mut msg = json!({"jsonrpc": "2.0", "method": method});
        if let Some(p) = params {
            msg["params"] = p;
        }
        self.send_raw(&msg.to_string());
    }

    /// The MCP handshake: `initialize` with no client capabilities, then
    /// `notifications/initialized`. Returns the `initialize` result.
    pub fn initialize(&mut self) -> Value {
        self.initialize_with(CLIENT_PROTOCOL_VERSION, json!({}))
    }

    /// The MCP handshake asking for `protocol_version` and declaring `capabilities`.
    pub fn initialize_with(&mut self, protocol_version: &str, capabilities: Value) -> Value {
        let result = self.result(
            "initialize",
            Some(json!({
                "protocolVersion": protocol_version,
                "capabilities": capabilities,
                "clientInfo": {"name": "mcpd-tests", "version": env!("CARGO_PKG_VERSION")},
            })),
        );
        self.notify("notifications/initialized", None);
        result
    }

    /// Every tool name, following `nextCursor` to the end.
    pub fn tool_names(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        let mut cursor: Option<Value> = None;
        loop {
            let params = cursor.take().map(|c| json!({"cursor": c}));
            let page = self.result("tools/list", params);
            for tool in page["tools"].as_array().into_iter().flatten() {
                names.push(tool["name"].as_str().unwrap_or_default().to_owned());
            }
            match page.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => return names,
            }
        }
    }

    /// Calls a tool and returns the `tools/call` result.
    pub fn call_tool(&mut self, name: &str, arguments: Value) -> Value {
        self.result(
            "tools/call",
            Some(json!({"name": name, "arguments": arguments})),
        )
    }

    /// Notifications received so far, in order.
    pub fn notifications(&self) -> &[Value] {
        &self.notifications
    }

    /// Requests the server sent to this client so far (sampling, roots, ...), in order.
    pub fn server_requests(&self) -> &[Value] {
        &self.server_requests
    }

    /// Waits for a notification with `method` (one already received counts) and returns it.
    pub fn wait_notification(&mut self, method: &str) -> Value {
        self.wait_for(&format!("notification {method}"), |c| {
            c.notifications
                .iter()
                .find(|n| n["method"] == method)
                .cloned()
        })
    }

    /// Waits until `count` notifications with `method` have arrived (counting those already
    /// received) and returns them all.
    pub fn wait_notification_count(&mut self, method: &str, count: usize) -> Vec<Value> {
        self.wait_for(&format!("{count} notifications {method}"), |c| {
            let found: Vec<Value> = c
                .notifications
                .iter()
                .filter(|n| n["method"] == method)
                .cloned()
                .collect();
            (found.len() >= count).then_some(Value::Array(found))
        })
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    /// Waits for a request from the server with `method` (one already received counts).
    pub fn wait_server_request(&mut self, method: &str) -> Value {
        self.wait_for(&format!("server request {method}"), |c| {
            c.server_requests
                .iter()
                .find(|n| n["method"] == method)
                .cloned()
        })
    }

    /// Answers a request from the server.
    pub fn respond(&mut self, id: &Value, result: Value) {
        self.send_raw(&json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string());
    }

    /// Closes the shim's stdin, as a client that exits does, and waits for the shim to exit.
    pub fn close(mut self) -> ExitStatus {
        self.stdin = None;
        let status = wait_timeout(&mut self.child, self.timeout);
        status.unwrap_or_else(|| {
            panic!(
                "the shim did not exit within {:?} of its stdin closing\nshim stderr:\n{}",
                self.timeout,
                self.stderr()
            )
        })
    }

    /// Waits up to `timeout` for the shim to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_timeout(&mut self.child, timeout)?;
        // The reader thread may not have taken the last lines yet: wait for the end of the pipe
        // (bounded: a daemon the shim started may still hold a copy of it).
        self.stderr.wait_closed(Duration::from_secs(2));
        Some(status)
    }

    fn wait_for(&mut self, what: &str, mut find: impl FnMut(&Self) -> Option<Value>) -> Value {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(v) = find(self) {
                return v;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.sort(line),
                Err(_) => panic!(
                    "timed out after {:?} waiting for {what}\nreceived notifications: {:?}\n\
                     shim stderr:\n{}",
                    self.timeout,
                    self.notifications,
                    self.stderr()
                ),
            }
        }
    }

    /// Files one line from the shim: a response by id, a notification, or a server request.
    fn sort(&mut self, line: String) {
        let msg: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => panic!("the shim wrote a line that is not JSON ({e}): {line:?}"),
        };
        match (msg.get("method").is_some(), msg.get("id")) {
            (true, Some(_)) => self.server_requests.push(msg),
            (true, None) => self.notifications.push(msg),
            (false, Some(id)) => {
                self.responses.insert(id.to_string(), line);
            }
            (false, None) => panic!("the shim wrote a message that is none of the kinds: {line}"),
        }
    }
}

impl Drop for ShimClient {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
