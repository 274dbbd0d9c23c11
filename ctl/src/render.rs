//! Human-readable renderings of control replies: the status table and the reload report.

use std::fmt::Write as _;

use mcpd_proto::{DaemonStatus, ReloadReport, ServerState, ServerStatus, SessionStatus};

/// `mcpctl status` as text: a summary line, the config path, a server table and a session table.
pub fn status(s: &DaemonStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mcpd {} (pid {}), up {}, protocol {}",
        clean(&s.version),
        s.pid,
        duration(s.uptime_ms),
        s.protocol
    );
    let config = match &s.config_path {
        Some(path) if s.config_loaded => clean(path),
        Some(path) => format!("{} (not found)", clean(path)),
        None => "(none)".to_owned(),
    };
    let _ = writeln!(out, "config: {config}");
    if let Some(error) = &s.config_error {
        let instead = match &s.config_fallback {
            Some(fallback) => format!("serving {}", clean(fallback)),
            None => "running with no servers".to_owned(),
        };
        let _ = writeln!(
            out,
            "config error: {} ({instead}; fix it and run `mcpctl reload`)",
            clean(error)
        );
    }

    if s.servers.is_empty() {
        let place = match &s.config_path {
            Some(path) => clean(path),
            None => "the configuration file".to_owned(),
        };
        let _ = writeln!(out, "no servers configured; put them in {place}");
    } else {
        let rows: Vec<Vec<String>> = s.servers.iter().map(server_row).collect();
        out.push_str(&table(
            &["SERVER", "STATE", "PID", "TOOLS", "RESTARTS", "INFO"],
            &rows,
        ));
        out.push_str(&way_out_lines(s));
        out.push_str(&auth_lines(s));
        // Pins and poisoning checks: what the user should look at.
        for server in &s.servers {
            for flag in &server.flags {
                let _ = writeln!(out, "! {}: {}", clean(&server.name), clean(flag));
            }
        }
        out.push_str(&crate::contain::status_lines(&s.servers));
        // Remote servers: where they are and how their session is.
        for s in s.servers.iter().filter(|s| s.url.is_some()) {
            let url = s.url.as_deref().map(clean).unwrap_or_default();
            let session = s
                .session
                .as_deref()
                .map(clean)
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "  {} ({}): {url}, {session}",
                clean(&s.name),
                clean(&s.transport)
            );
        }
    }

    for overlap in &s.routing_overlaps {
        let _ = writeln!(out, "overlap: {}", clean(overlap));
    }
    if s.sessions.is_empty() {
        out.push_str("no sessions\n");
    } else {
        out.push_str("SESSIONS\n");
        let rows: Vec<Vec<String>> = s.sessions.iter().map(session_row).collect();
        out.push_str(&table(
            &[
                "ID",
                "PROFILE",
                "CLIENT",
                "PID",
                "ATTACHED",
                "IN-FLIGHT",
                "MODE",
            ],
            &rows,
        ));
    }
    out
}

fn server_row(s: &ServerStatus) -> Vec<String> {
    // A ready server is described by what it said it is; any other state by what went wrong,
    // if anything did.
    let (first, second) = if s.state == ServerState::Ready {
        (&s.server_info, &s.last_error)
    } else {
        (&s.last_error, &s.server_info)
    };
    let mut info = first.as_ref().or(second.as_ref()).map(|i| clean(i));
    if s.state == ServerState::Starting
        && let Some(ms) = s.state_ms
    {
        let elapsed = format!("starting for {}", duration(ms));
        info = Some(match info {
            Some(i) => format!("{elapsed}; {i}"),
            None => elapsed,
        });
    }
    // A process that failed: the line of its stderr that says why, not just its exit status.
    if matches!(
        s.state,
        ServerState::Failed | ServerState::CrashLoop | ServerState::Starting
    ) && let Some(cause) = crate::hints::cause(&s.stderr_tail)
    {
        info = Some(match info {
            Some(i) => format!("{i}: {}", clean(cause)),
            None => clean(cause),
        });
    }
    vec![
        clean(&s.name),
        s.state.as_str().to_owned(),
        optional(s.pid),
        s.tools.to_string(),
        s.restarts.to_string(),
        info.unwrap_or_default(),
    ]
}

/// For each server in a state the user has to act on: why, and the command that gets it out.
fn way_out_lines(s: &DaemonStatus) -> String {
    let mut out = String::new();
    for server in &s.servers {
        let Some(fix) = crate::hints::way_out(server, s.config_path.as_deref()) else {
            continue;
        };
        if server.state == ServerState::Stopped || server.auth.is_some() {
            continue; // said by the table (stopped on purpose) or by the auth lines
        }
        let _ = writeln!(
            out,
            "  {} is {}: {}",
            clean(&server.name),
            server.state.as_str(),
            clean(&fix)
        );
    }
    out
}

/// One line per server that logs in with OAuth: logged in or not, expiry, scopes.
fn auth_lines(s: &DaemonStatus) -> String {
    let mut out = String::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for server in &s.servers {
        let Some(auth) = &server.auth else { continue };
        let mut line = if auth.logged_in {
            let mut l = "logged in".to_owned();
            if let Some(issuer) = &auth.issuer {
                let _ = write!(l, " at {}", clean(issuer));
            }
            if let Some(at) = auth.expires_at {
                if at > now {
                    let _ = write!(l, ", token expires in {}", duration((at - now) * 1000));
                } else {
                    l.push_str(", token expired");
                }
                if auth.refreshable {
                    l.push_str(" (renewed automatically)");
                }
            }
            if !auth.scopes.is_empty() {
                let scopes: Vec<String> = auth.scopes.iter().map(|x| clean(x)).collect();
                let _ = write!(l, ", scopes: {}", scopes.join(" "));
            }
            l
        } else {
            format!("not logged in: run `mcpctl login {}`", clean(&server.name))
        };
        if auth.login_pending {
            line.push_str(" (a login is waiting for the browser)");
        }
        let _ = writeln!(out, "auth {}: {line}", clean(&server.name));
    }
    if !out.is_empty()
        && let Some(store) = &s.credential_store
    {
        let _ = writeln!(out, "credentials: {}", clean(store));
    }
    out
}

fn session_row(s: &SessionStatus) -> Vec<String> {
    let client = match (&s.client_name, &s.client_version) {
        (Some(name), Some(version)) => format!("{} {}", clean(name), clean(version)),
        (Some(name), None) => clean(name),
        (None, _) => "-".to_owned(),
    };
    vec![
        s.id.to_string(),
        clean(&s.profile),
        client,
        optional(s.client_pid),
        duration(s.attached_ms),
        s.in_flight.to_string(),
        // `direct`: the daemon holds the client's own stdio (`mcp-shim --direct`).
        if s.direct { "direct" } else { "relay" }.to_owned(),
    ]
}

/// `mcpctl reload` as text.
pub fn reload(r: &ReloadReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "reloaded {}", clean(&r.config_path));
    for (label, names) in [
        ("added", &r.added),
        ("removed", &r.removed),
        ("changed", &r.changed),
        ("unchanged", &r.unchanged),
    ] {
        let list = if names.is_empty() {
            "-".to_owned()
        } else {
            names
                .iter()
                .map(|n| clean(n))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "{:<10} {list}", format!("{label}:"));
    }
    for warning in &r.warnings {
        let _ = writeln!(out, "warning: {}", clean(warning));
    }
    for error in &r.config_errors {
        let _ = writeln!(out, "error: not started: {}", clean(error));
    }
    out
}

/// Left-aligned columns two spaces apart, each as wide as its widest cell; the last column is
/// not padded so lines carry no trailing blanks.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 2;
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn optional(n: Option<u32>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// `3m 12s`: the two largest units, which is all a reader wants from an uptime.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Text from the daemon with control characters escaped, so that an upstream's error message
/// cannot break the table or drive the terminal.
pub(crate) fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DaemonStatus {
        DaemonStatus {
            version: "0.1.0".into(),
            protocol: 1,
            pid: 1234,
            uptime_ms: 192_000,
            config_path: Some("/home/u/.config/mcpd/config.json".into()),
            config_loaded: true,
            config_error: None,
            config_fallback: None,
            servers: vec![
                ServerStatus {
                    name: "everything".into(),
                    transport: "stdio".into(),
                    url: None,
                    session: None,
                    state: ServerState::Ready,
                    pid: Some(5678),
                    tools: 11,
                    restarts: 0,
                    last_error: None,
                    server_info: Some("mcp-servers/everything 2.0.0".into()),
                    last_exit: None,
                    stderr_tail: Vec::new(),
                    contain: None,
                    auth: None,
                    flags: Vec::new(),
                    state_ms: None,
                },
                ServerStatus {
                    name: "broken".into(),
                    transport: "stdio".into(),
                    url: None,
                    session: None,
                    state: ServerState::Failed,
                    pid: None,
                    tools: 0,
                    restarts: 0,
                    last_error: Some("spawn failed: No such file or directory".into()),
                    server_info: None,
                    last_exit: None,
                    stderr_tail: Vec::new(),
                    contain: None,
                    auth: None,
                    flags: Vec::new(),
                    state_ms: None,
                },
            ],
            sessions: vec![SessionStatus {
                id: 1,
                profile: "default".into(),
                client_name: Some("claude-code".into()),
                client_version: Some("1.2.3".into()),
                client_pid: Some(4321),
                attached_ms: 121_500,
                in_flight: 0,
                direct: false,
            }],
            credential_store: None,
            routing_overlaps: Vec::new(),
        }
    }

    #[test]
    fn status_table_has_aligned_columns() {
        let expected = "\
mcpd 0.1.0 (pid 1234), up 3m 12s, protocol 1
config: /home/u/.config/mcpd/config.json
SERVER      STATE   PID   TOOLS  RESTARTS  INFO
everything  ready   5678  11     0         mcp-servers/everything 2.0.0
broken      failed  -     0      0         spawn failed: No such file or directory
  broken is failed: mcpctl restart broken
SESSIONS
ID  PROFILE  CLIENT             PID   ATTACHED  IN-FLIGHT  MODE
1   default  claude-code 1.2.3  4321  2m 1s     0          relay
";
        assert_eq!(status(&sample()), expected);
    }

    #[test]
    fn a_direct_session_says_so_in_the_mode_column() {
        let mut s = sample();
        s.sessions[0].direct = true;
        let text = status(&s);
        assert!(
            text.contains("1   default  claude-code 1.2.3  4321  2m 1s     0          direct\n"),
            "{text}"
        );
    }

    #[test]
    fn empty_status_says_where_to_configure_servers() {
        let s = DaemonStatus {
            servers: vec![],
            sessions: vec![],
            config_loaded: false,
            config_error: None,
            ..sample()
        };
        let text = status(&s);
        assert!(
            text.contains("config: /home/u/.config/mcpd/config.json (not found)\n"),
            "{text}"
        );
        assert!(
            text.contains("no servers configured; put them in /home/u/.config/mcpd/config.json\n"),
            "{text}"
        );
        assert!(text.ends_with("no sessions\n"), "{text}");
    }

    #[test]
    fn control_characters_from_the_daemon_cannot_break_the_table() {
        let mut s = sample();
        s.servers[1].last_error = Some("line one\nline two\x1b[31m".into());
        let text = status(&s);
        assert!(text.contains(r"line one\nline two\u{1b}[31m"), "{text}");
        assert_eq!(text.lines().count(), 9, "{text}");
    }

    #[test]
    fn a_session_that_has_not_initialized_shows_a_dash_for_its_client() {
        let mut s = sample();
        s.sessions[0].client_name = None;
        s.sessions[0].client_version = None;
        s.sessions[0].client_pid = None;
        let text = status(&s);
        assert!(
            text.contains("1   default  -       -    2m 1s     0          relay\n"),
            "{text}"
        );
    }

    #[test]
    fn durations_show_the_two_largest_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59_999), "59s");
        assert_eq!(duration(192_000), "3m 12s");
        assert_eq!(duration(3_720_000), "1h 2m");
        assert_eq!(duration(2 * 86_400_000 + 3 * 3_600_000 + 5000), "2d 3h");
    }

    #[test]
    fn reload_report_lists_every_kind_of_change() {
        let report = ReloadReport {
            config_path: "/c.json".into(),
            added: vec!["a".into(), "b".into()],
            removed: vec![],
            changed: vec!["c".into()],
            unchanged: vec!["d".into()],
            warnings: vec!["unknown key `x` at mcpServers.a".into()],
            config_errors: vec![],
        };
        assert_eq!(
            reload(&report),
            "\
reloaded /c.json
added:     a, b
removed:   -
changed:   c
unchanged: d
warning: unknown key `x` at mcpServers.a
"
        );
    }
}
