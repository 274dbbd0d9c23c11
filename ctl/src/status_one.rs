//! `mcpctl status NAME`: one server in full, with its recent log lines, as `systemctl status`
//! shows a unit.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use mcpd_proto::{ControlRequest, ControlResponse, DaemonStatus, LogLine, ServerStatus};

use crate::client::ControlClient;
use crate::render::clean;
use crate::{hints, logs, output, render};

/// How many of the server's most recent log lines are shown.
const LOG_LINES: usize = 15;

/// Prints one server's status and recent log lines; fails naming the servers when there is
/// no such server.
pub fn run(socket: &Path, name: &str, timeout: Duration) -> Result<()> {
    let mut client = ControlClient::connect(socket, timeout)?;
    let status = match client.request(&ControlRequest::Status, timeout)? {
        ControlResponse::Status(status) => status,
        other => bail!("status: mcpd sent an unexpected reply: {other:?}"),
    };
    let Some(server) = status.servers.iter().find(|s| s.name == name) else {
        let known: Vec<String> = status.servers.iter().map(|s| s.name.clone()).collect();
        return Err(crate::no_such_server(name, &known));
    };
    let base = name.split('#').next().unwrap_or(name).to_owned();
    let lines = recent_lines(socket, &base, timeout).unwrap_or_default();
    output::print(&render_one(&status, server, &lines))
}

fn recent_lines(socket: &Path, server: &str, timeout: Duration) -> Result<Vec<LogLine>> {
    let mut client = ControlClient::connect(socket, timeout)?;
    let request = ControlRequest::Logs {
        server: Some(server.to_owned()),
        follow: false,
        limit: Some(LOG_LINES),
    };
    let mut lines = Vec::new();
    let mut line = client.request_line(&request, timeout)?;
    loop {
        let batch = match serde_json::from_str::<ControlResponse>(&line)? {
            ControlResponse::Logs(batch) => batch,
            _ => return Ok(lines),
        };
        lines.extend(batch.lines);
        if !batch.more {
            return Ok(lines);
        }
        match client.next_line(Some(timeout))? {
            Some(next) => line = next,
            None => return Ok(lines),
        }
    }
}

/// The text of `mcpctl status NAME`.
pub fn render_one(status: &DaemonStatus, s: &ServerStatus, log: &[LogLine]) -> String {
    let mut out = String::new();
    let since = s
        .state_ms
        .map(|ms| format!(" for {}", render::duration(ms)))
        .unwrap_or_default();
    let _ = writeln!(out, "{} - {} server", clean(&s.name), clean(&s.transport));
    let _ = writeln!(out, "  state: {}{since}", s.state.as_str());
    if let Some(pid) = s.pid {
        let _ = writeln!(out, "  pid: {pid}");
    }
    if let Some(url) = &s.url {
        let _ = writeln!(out, "  url: {}", clean(url));
    }
    if let Some(session) = &s.session {
        let _ = writeln!(out, "  session: {}", clean(session));
    }
    if let Some(info) = &s.server_info {
        let _ = writeln!(out, "  server: {}", clean(info));
    }
    let _ = writeln!(out, "  tools: {}, restarts: {}", s.tools, s.restarts);
    if let Some(error) = &s.last_error {
        let _ = writeln!(out, "  last error: {}", clean(error));
    }
    if let Some(exit) = &s.last_exit {
        let _ = writeln!(out, "  last exit: {}", clean(exit));
    }
    if let Some(cause) = hints::cause(&s.stderr_tail) {
        let _ = writeln!(out, "  cause: {}", clean(cause));
    }
    if let Some(fix) = hints::way_out(s, status.config_path.as_deref()) {
        let _ = writeln!(out, "  to fix: {}", clean(&fix));
    }
    if !s.stderr_tail.is_empty() {
        out.push_str("\nstderr (last lines):\n");
        for line in &s.stderr_tail {
            let _ = writeln!(out, "  {}", clean(line));
        }
    }
    if !log.is_empty() {
        out.push_str("\nlog:\n");
        for line in log {
            let _ = writeln!(out, "  {}", logs::render(line));
        }
    }
    out
}
