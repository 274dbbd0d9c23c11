//! What the shim's tests against a fake daemon share: starting the real binary, waiting for it
//! to exit, reading what it said.

#![allow(clippy::unwrap_used, dead_code)]

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const SHIM: &str = env!("CARGO_BIN_EXE_mcp-shim");

/// `mcp-shim --socket SOCKET EXTRA...` with piped stdio, never starting a daemon of its own
/// (`MCPD_NO_AUTOSTART`) and relaying unless `EXTRA` asks for `--direct`.
pub fn shim(socket: &Path, extra: &[&str]) -> Child {
    Command::new(SHIM)
        .env("MCPD_NO_AUTOSTART", "1")
        .env_remove("MCP_SHIM_DIRECT")
        .arg("--socket")
        .arg(socket)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The shim's exit status; kills it and fails the test if it is still running after `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mcp-shim did not exit within {within:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Everything the shim wrote to stderr (read to its end: call after it exited).
pub fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// A socket path in a short temp dir (`sun_path` is 108 bytes) where fake daemons come and go.
pub struct Place {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Place {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("r")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("d.sock");
        Self { _dir: dir, socket }
    }

    /// A daemon starts listening (replacing a stale socket file, as mcpd does).
    pub fn listen(&self) -> UnixListener {
        let _ = std::fs::remove_file(&self.socket);
        UnixListener::bind(&self.socket).unwrap()
    }

    /// The daemon stops: closes its listener and removes the socket, as mcpd does.
    pub fn stop(&self, listener: UnixListener) {
        drop(listener);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Lines a relay must pass on byte for byte: numbers and spacing a JSON round trip would
/// rewrite, escapes, and a line of 300 KB (more than one read).
pub fn exact_lines() -> [String; 3] {
    [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"price":1.50,"n":123456789012345678901234567890}}"#.to_owned(),
        r#"{ "jsonrpc" : "2.0", "method":"notifications/x", "params":{"s":"\u00e9\n","e":1E400} }"#.to_owned(),
        format!(
            r#"{{"jsonrpc":"2.0","id":3,"result":{{"blob":"{}"}}}}"#,
            "x".repeat(300_000)
        ),
    ]
}
