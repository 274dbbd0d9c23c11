//! `mcpctl logs [-f] [SERVER]`: recent daemon and upstream log lines from the daemon's
//! in-memory ring, over the control socket (works with or without journald).
//!
//! Wire format (one JSON object per line, like every control exchange):
//!
//! ```text
//! -> {"cmd":"logs","server":"github","follow":true,"limit":200}
//! <- {"reply":"logs","lines":[{"seq":1,"time_ms":...,"level":"INFO","target":"mcpd",
//!                              "server":"github","session":3,"message":"..."}],"more":true}
//! <- {"reply":"logs","lines":[...],"more":false}          end of the recent lines
//! <- {"reply":"logs","lines":[...],"dropped":12}          (follow) new lines as they come
//! ```
//!
//! The types are `mcpd_proto::{ControlRequest::Logs, LogsReply, LogLine}`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use mcpd_proto::control_error::ErrorCode;
use mcpd_proto::{ControlRequest, ControlResponse, LogLine, LogsReply};

use crate::client::ControlClient;
use crate::output;

/// Runs `mcpctl logs`.
pub fn run(
    socket: &Path,
    server: Option<String>,
    follow: bool,
    limit: Option<usize>,
    timeout: Duration,
) -> Result<()> {
    let mut client = ControlClient::connect(socket, timeout)?;
    let request = ControlRequest::Logs {
        server,
        follow,
        limit,
    };
    let mut line = client.request_line(&request, timeout)?;
    loop {
        let batch = decode(&line)?;
        let mut text = String::new();
        if let Some(n) = batch.dropped {
            text.push_str(&format!("-- {n} lines dropped (mcpctl fell behind) --\n"));
        }
        for l in &batch.lines {
            text.push_str(&render(l));
            text.push('\n');
        }
        output::print(&text)?;
        if !batch.more && !follow {
            return Ok(());
        }
        // Snapshot batches follow at once; when following, wait for as long as it takes.
        let wait = if batch.more { Some(timeout) } else { None };
        match client.next_line(wait)? {
            Some(next) => line = next,
            None if follow => bail!("mcpd closed the connection (it is stopping?)"),
            None => bail!("mcpd closed the connection before sending every line"),
        }
    }
}

fn decode(line: &str) -> Result<LogsReply> {
    match serde_json::from_str::<ControlResponse>(line) {
        Ok(ControlResponse::Logs(reply)) => Ok(reply),
        Ok(ControlResponse::NoSuchServer { server, known }) => {
            Err(crate::no_such_server(&server, &known))
        }
        Ok(ControlResponse::Error {
            message,
            code: ErrorCode::UnknownCommand,
        }) => {
            bail!("this mcpd does not serve logs yet ({message}); use `journalctl --user -u mcpd`")
        }
        Ok(ControlResponse::Error { message, .. }) => bail!("logs failed: {message}"),
        _ => bail!("mcpd sent a reply to `logs` this mcpctl does not understand: {line}"),
    }
}

/// `2026-11-21T23:58:35.072Z INFO  [github] message`
pub fn render(line: &LogLine) -> String {
    let mut out = format!(
        "{} {:<5}",
        mcpd_proto::observe::utc_time(line.time_ms),
        line.level
    );
    if let Some(server) = &line.server {
        out.push_str(&format!(" [{server}]"));
    }
    if let Some(session) = line.session {
        out.push_str(&format!(" (session {session})"));
    }
    out.push(' ');
    // The daemon escapes upstream output already; a newer daemon's text is cleaned again here
    // so that nothing can drive the terminal.
    out.extend(
        line.message
            .chars()
            .map(|c| if c.is_control() && c != '\t' { '?' } else { c }),
    );
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(mcpd_proto::observe::utc_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            mcpd_proto::observe::utc_time(1_709_251_199_123),
            "2024-02-29T23:59:59.123Z"
        );
    }

    #[test]
    fn the_request_is_a_control_command() {
        let r = ControlRequest::Logs {
            server: Some("gh".into()),
            follow: true,
            limit: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"cmd":"logs","server":"gh","follow":true}"#
        );
    }

    #[test]
    fn lines_render_with_server_and_escaped_text() {
        let l = LogLine {
            seq: 1,
            time_ms: 0,
            level: "WARN".into(),
            target: "mcpd::upstream".into(),
            server: Some("gh".into()),
            session: None,
            message: "bad\u{1b}[2Jthing".into(),
        };
        assert_eq!(
            render(&l),
            "1970-01-01T00:00:00.000Z WARN  [gh] bad?[2Jthing"
        );
    }
}
