//! `mcpctl tools diff|approve|check`: pinned tool definitions and poisoning checks.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Subcommand;
use mcpd_proto::observe::{CheckReport, PinChange, PinDiff};
use mcpd_proto::{ControlRequest, ControlResponse};

use mcpd_proto::observe::{is_bidi_control, is_invisible};

use crate::client::ControlClient;
use crate::output;

/// `mcpctl tools ...`
#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// Show a server's tool and prompt definitions that changed since they were pinned (or
    /// are new), pinned and current side by side.
    Diff {
        /// The server's name in mcpServers.
        server: String,
        /// Print the changes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accept a server's changed and new definitions (or only TOOL's) and pin them.
    Approve {
        /// The server's name in mcpServers.
        server: String,
        /// Only this tool or prompt (its name on the server, or namespaced).
        tool: Option<String>,
    },
    /// Look for text aimed at the model in tool and prompt definitions: invisible or
    /// bidirectional-control characters, `<IMPORTANT>` and "ignore previous instructions",
    /// mentions of other servers' tools or of key files, very long descriptions. Report only.
    Check {
        /// Only this server.
        server: Option<String>,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `mcpctl tools ...`.
pub fn run(socket: &Path, command: ToolsCommand, timeout: Duration) -> Result<()> {
    let mut client = ControlClient::connect(socket, timeout)?;
    match command {
        ToolsCommand::Diff { server, json } => {
            match client.request(&ControlRequest::ToolsDiff { server }, timeout)? {
                ControlResponse::ToolsDiff(diff) if json => print_json(&diff),
                ControlResponse::ToolsDiff(diff) => output::print(&render_diff(&diff, width())),
                other => Err(crate::unexpected("tools diff", other)),
            }
        }
        ToolsCommand::Approve { server, tool } => {
            match client.request(&ControlRequest::ToolsApprove { server, tool }, timeout)? {
                ControlResponse::Done { message } => output::print(&format!("{message}\n")),
                ControlResponse::Error { message, .. } => bail!("{message}"),
                other => Err(crate::unexpected("tools approve", other)),
            }
        }
        ToolsCommand::Check { server, json } => {
            match client.request(&ControlRequest::ToolsCheck { server }, timeout)? {
                ControlResponse::ToolsCheck(report) if json => print_json(&report),
                ControlResponse::ToolsCheck(report) => output::print(&render_check(&report)),
                other => Err(crate::unexpected("tools check", other)),
            }
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    output::print(&format!("{text}\n"))
}

fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|w| *w >= 40)
        .unwrap_or(160)
}

/// The changes of one server, each as two columns: pinned and current.
pub fn render_diff(diff: &PinDiff, width: usize) -> String {
    if diff.changes.is_empty() {
        return format!("{}: every tool and prompt matches its pin\n", diff.server);
    }
    let mut out = String::new();
    for c in &diff.changes {
        let action = if c.action == "block" {
            "blocked until approved"
        } else {
            "served (warn)"
        };
        out.push_str(&format!(
            "{} {} `{}` {} ({action}):\n",
            diff.server, c.kind, c.name, c.change
        ));
        out.push_str(&side_by_side(c, width));
        out.push_str(&format!(
            "accept with: mcpctl tools approve {} {}\n\n",
            diff.server, c.name
        ));
    }
    out
}

fn side_by_side(c: &PinChange, width: usize) -> String {
    let col = width.saturating_sub(3) / 2;
    let pretty = |v: &serde_json::Value| -> Vec<String> {
        serde_json::to_string_pretty(v)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let left = c.pinned.as_ref().map(pretty).unwrap_or_default();
    let right = pretty(&c.current);
    let mut out = String::new();
    let head_left = c
        .pinned_digest
        .as_deref()
        .map_or("pinned: (none, new)".to_owned(), |d| format!("pinned {d}"));
    let head_right = format!("current {}", c.current_digest);
    row(&mut out, col, &head_left, ' ', &head_right);
    for (l, mark, r) in align(&left, &right) {
        row(&mut out, col, l, mark, r);
    }
    out
}

/// One row of two columns, long text wrapped within its column.
fn row(out: &mut String, col: usize, left: &str, mark: char, right: &str) {
    let chunks = |s: &str| -> Vec<String> {
        let chars: Vec<char> = visible(s).chars().collect();
        if chars.is_empty() {
            return vec![String::new()];
        }
        chars
            .chunks(col.max(1))
            .map(|c| c.iter().collect())
            .collect()
    };
    let (l, r) = (chunks(left), chunks(right));
    for i in 0..l.len().max(r.len()) {
        let a = l.get(i).map_or("", String::as_str);
        let b = r.get(i).map_or("", String::as_str);
        let line = format!("{a:<col$} {mark} {b}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// Text with control, invisible and bidirectional-control characters shown as `<U+200B>`, so
/// that they can neither hide in nor drive the terminal.
fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || is_invisible(c) || is_bidi_control(c) {
            out.push_str(&format!("<U+{:04X}>", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Aligns two line lists on their longest common subsequence: (left, mark, right) with mark
/// ` ` for equal lines, `|` for a changed pair, `<` and `>` for lines on one side only.
fn align<'a>(left: &'a [String], right: &'a [String]) -> Vec<(&'a str, char, &'a str)> {
    let (n, m) = (left.len(), right.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if left[i] == right[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut rows = Vec::new();
    let mut only_left = Vec::new();
    let mut only_right = Vec::new();
    let flush =
        |rows: &mut Vec<(&'a str, char, &'a str)>, ol: &mut Vec<&'a str>, or: &mut Vec<&'a str>| {
            for k in 0..ol.len().max(or.len()) {
                match (ol.get(k), or.get(k)) {
                    (Some(a), Some(b)) => rows.push((*a, '|', *b)),
                    (Some(a), None) => rows.push((*a, '<', "")),
                    (None, Some(b)) => rows.push(("", '>', *b)),
                    (None, None) => {}
                }
            }
            ol.clear();
            or.clear();
        };
    while i < n || j < m {
        if i < n && j < m && left[i] == right[j] {
            flush(&mut rows, &mut only_left, &mut only_right);
            rows.push((left[i].as_str(), ' ', right[j].as_str()));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            only_right.push(right[j].as_str());
            j += 1;
        } else {
            only_left.push(left[i].as_str());
            i += 1;
        }
    }
    flush(&mut rows, &mut only_left, &mut only_right);
    rows
}

/// The findings, one line each, grouped by server.
pub fn render_check(report: &CheckReport) -> String {
    let mut out = String::new();
    if report.findings.is_empty() {
        out.push_str(&format!(
            "no findings in {} definition(s) of {} server(s)\n",
            report.items,
            report.servers.len()
        ));
        return out;
    }
    for f in &report.findings {
        let detail = visible(&f.detail);
        out.push_str(&format!(
            "{} {} `{}`: {}: {detail}\n",
            f.server, f.kind, f.name, f.check
        ));
    }
    out.push_str(&format!(
        "{} finding(s) in {} definition(s) of {} server(s); report only: nothing was blocked\n",
        report.findings.len(),
        report.items,
        report.servers.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn a_diff_shows_both_versions_side_by_side() {
        let diff = PinDiff {
            server: "fx".into(),
            changes: vec![PinChange {
                kind: "tool".into(),
                name: "echo".into(),
                change: "changed".into(),
                action: "block".into(),
                pinned: Some(json!({"name": "echo", "description": "Echoes"})),
                current: json!({"name": "echo", "description": "Echoes, and more"}),
                pinned_digest: Some("sha256:aa".into()),
                current_digest: "sha256:bb".into(),
            }],
        };
        let text = render_diff(&diff, 80);
        let changed = text
            .lines()
            .find(|l| l.contains('|'))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            changed.contains("\"Echoes\"") && changed.contains("\"Echoes, and more\""),
            "{text}"
        );
        assert!(text.contains("mcpctl tools approve fx echo"), "{text}");
    }
}
