//! `mcpctl audit`, `mcpctl traffic` and `mcpctl stats`: what flows through the daemon.
//!
//! `audit` reads the files in `$XDG_STATE_HOME/mcpd/audit/` itself (it works while the daemon
//! is down); `traffic` and `stats` ask the daemon.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mcpd_proto::observe::{AuditRecord, Direction, StatsReport, TrafficMessage, utc_time};
use mcpd_proto::{ControlRequest, ControlResponse};

use crate::client::ControlClient;
use crate::output;

/// What `mcpctl audit` shows.
#[derive(Debug)]
pub struct AuditQuery {
    /// Only lines this recent.
    pub since: Option<Duration>,
    /// Only this server.
    pub server: Option<String>,
    /// Only clients whose name contains this (case-insensitive).
    pub client: Option<String>,
    /// JSON lines as written.
    pub json: bool,
}

/// Parses `90s`, `30m`, `1h`, `2d` (a bare number is seconds).
pub fn parse_since(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 30m, 1h or 2d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

/// The audit files in order: rotated ones (`audit-<ms>.jsonl`) oldest first, then the current.
fn audit_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    let mut current = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "audit.jsonl" {
            current = Some(entry.path());
        } else if let Some(ms) = name
            .strip_prefix("audit-")
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            rotated.push((ms, entry.path()));
        }
    }
    rotated.sort();
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.extend(current);
    Ok(files)
}

/// Runs `mcpctl audit`.
pub fn audit(state_dir: &Path, query: &AuditQuery) -> Result<()> {
    let dir = state_dir.join("audit");
    let files = audit_files(&dir)?;
    let from = query.since.map(|d| {
        mcpd_proto::observe::now_ms()
            .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    });
    let client = query.client.as_ref().map(|c| c.to_lowercase());
    let mut out = String::new();
    let mut rows = Vec::new();
    let mut bad = 0usize;
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            // Rotated away between listing and reading.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(record) = serde_json::from_str::<AuditRecord>(line) else {
                bad += 1;
                continue;
            };
            if from.is_some_and(|from| record.time_ms < from)
                || query
                    .server
                    .as_ref()
                    .is_some_and(|s| record.server.as_ref() != Some(s))
                || client.as_ref().is_some_and(|c| {
                    !record
                        .client
                        .as_deref()
                        .unwrap_or_default()
                        .to_lowercase()
                        .contains(c.as_str())
                })
            {
                continue;
            }
            if query.json {
                out.push_str(line);
                out.push('\n');
            } else {
                rows.push(audit_row(&record));
            }
        }
    }
    if bad > 0 {
        eprintln!("mcpctl: {bad} line(s) of the audit log could not be read and were skipped");
    }
    if !query.json {
        if rows.is_empty() {
            out = format!("no audit lines match (in {})\n", dir.display());
        } else {
            out = table(
                &[
                    "TIME", "SESSION", "CLIENT", "SERVER", "METHOD", "NAME", "MS", "OUTCOME", "IN",
                    "OUT",
                ],
                &rows,
            );
        }
    }
    output::print(&out)
}

fn audit_row(r: &AuditRecord) -> Vec<String> {
    let outcome = match (r.error_code, r.dropped) {
        (_, Some(n)) => format!("{n} lines dropped"),
        (Some(code), _) => format!("error {code}"),
        (None, _) if r.tool_error => "ok (isError)".to_owned(),
        (None, _) => r.outcome.clone(),
    };
    let client = match (&r.client, &r.client_version) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        (Some(n), None) => n.clone(),
        _ => "-".into(),
    };
    vec![
        r.time.clone(),
        r.session.to_string(),
        clean(&client),
        r.server.as_deref().map_or("-".into(), clean),
        clean(&r.method),
        r.name.as_deref().map_or("-".into(), clean),
        format!("{:.1}", r.duration_ms),
        outcome,
        r.bytes_in.to_string(),
        r.bytes_out.to_string(),
    ]
}

/// Text that cannot drive the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let _ = write!(l, "{cell:<w$}  ", w = widths[i]);
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Runs `mcpctl traffic`: prints every message until interrupted.
pub fn traffic(
    socket: &Path,
    server: Option<String>,
    session: Option<u64>,
    full: bool,
    timeout: Duration,
) -> Result<()> {
    let mut client = ControlClient::connect(socket, timeout)?;
    let request = ControlRequest::Traffic {
        server,
        session,
        full,
    };
    let mut line = client.request_line(&request, timeout)?;
    let mut first = true;
    loop {
        let reply = match serde_json::from_str::<ControlResponse>(&line) {
            Ok(ControlResponse::Traffic(reply)) => reply,
            Ok(ControlResponse::Error { message, .. }) => bail!("traffic failed: {message}"),
            _ => bail!(
                "mcpd sent a reply to `traffic` this mcpctl does not understand; is it older than the daemon?"
            ),
        };
        let mut text = String::new();
        if let Some(n) = reply.missed {
            let _ = writeln!(text, "-- {n} messages missed (this viewer fell behind) --");
        }
        for m in &reply.messages {
            text.push_str(&render_message(m));
        }
        output::print(&text)?;
        if first {
            // The daemon answers once the viewer is attached: from here on nothing is missed
            // unless it says so.
            eprintln!("-- watching MCP traffic (→ from clients, ← to clients); Ctrl-C stops --");
            first = false;
        }
        match client.next_line(None)? {
            Some(next) => line = next,
            None => bail!("mcpd closed the connection (it is stopping?)"),
        }
    }
}

/// `12:00:00.123 #3 → [server] tools/call fixture__echo id=1 (85 B)` and, with `--full`, the
/// message on the next line.
pub fn render_message(m: &TrafficMessage) -> String {
    let arrow = match m.direction {
        Direction::In => "→",
        Direction::Out => "←",
        Direction::Unknown => "?",
    };
    let time = utc_time(m.time_ms);
    let clock = time.get(11..23).unwrap_or(&time);
    let server = m
        .server
        .as_deref()
        .map(|s| format!(" [{}]", clean(s)))
        .unwrap_or_default();
    let mut out = format!(
        "{clock} #{} {arrow}{server} {} ({} B)\n",
        m.session,
        clean(&m.summary),
        m.bytes
    );
    if let Some(json) = &m.json {
        let _ = writeln!(out, "    {}", clean(json));
    }
    out
}

/// Runs `mcpctl stats`.
pub fn stats(socket: &Path, json: bool, timeout: Duration) -> Result<()> {
    let mut client = ControlClient::connect(socket, timeout)?;
    let (response, raw) = client.request_raw(&ControlRequest::Stats, timeout)?;
    let report = match response {
        ControlResponse::Stats(report) => report,
        other => return Err(crate::unexpected("stats", other)),
    };
    if json {
        let mut value: serde_json::Value =
            serde_json::from_str(&raw).context("failed to decode mcpd's stats reply")?;
        if let Some(object) = value.as_object_mut() {
            object.remove("reply");
        }
        return output::print(&format!("{}\n", serde_json::to_string_pretty(&value)?));
    }
    output::print(&render_stats(&report))
}

/// The statistics as a table: each server's total, then its tools.
pub fn render_stats(report: &StatsReport) -> String {
    let mut rows = Vec::new();
    for s in &report.servers {
        for (name, c) in std::iter::once((format!("{} (all)", s.server), &s.total))
            .chain(s.tools.iter().map(|t| (format!("  {}", t.name), t)))
        {
            rows.push(vec![
                clean(&name),
                c.calls.to_string(),
                c.errors.to_string(),
                format!("{:.1}", c.p50_ms),
                format!("{:.1}", c.p90_ms),
                format!("{:.1}", c.p99_ms),
                format!("{:.1}", c.max_ms),
            ]);
        }
    }
    let mut out = format!(
        "since the daemon started {} s ago",
        report.since_start_ms / 1000
    );
    if report.audit_dropped > 0 {
        let _ = write!(out, "; {} audit lines dropped", report.audit_dropped);
    }
    out.push('\n');
    if rows.is_empty() {
        out.push_str("no requests to servers yet\n");
    } else {
        out.push_str(&table(
            &[
                "SERVER / TOOL",
                "CALLS",
                "ERRORS",
                "P50 MS",
                "P90 MS",
                "P99 MS",
                "MAX MS",
            ],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_since("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_since("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_since("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_since("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_since("1w").unwrap_err().contains("unknown unit"));
        assert!(parse_since("soon").is_err());
    }
}
