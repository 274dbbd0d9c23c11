//! What the shim's tests against a fake daemon share: starting the real binary, waiting for it
//! to exit, reading what it said.

#![allow(clippy::unwrap_used, dead_code)]

use std::io::Read;
use std::path::Path;
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
