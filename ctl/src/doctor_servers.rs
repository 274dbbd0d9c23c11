//! `mcpctl doctor`'s look at the running daemon: servers that need the user (failed,
//! crash-loop, auth-required, config-error), and a second daemon of this user on another
//! socket (clients would be split between them).

use std::path::Path;

use mcpd_proto::{DaemonStatus, ServerState};

use crate::doctor::{Level, Report};
use crate::hints;

/// One line per server of the running daemon that needs the user; `reported` are servers an
/// earlier check already named (each problem is reported once).
pub(crate) fn check(r: &mut Report, status: &DaemonStatus, reported: &[String]) {
    let mut well = 0;
    for server in &status.servers {
        let base = server.name.split('#').next().unwrap_or(&server.name);
        let level = match server.state {
            ServerState::Failed
            | ServerState::CrashLoop
            | ServerState::AuthRequired
            | ServerState::SecretMissing => Level::Fail,
            ServerState::ConfigError if !reported.iter().any(|n| n == base) => Level::Fail,
            ServerState::ConfigError => continue,
            ServerState::Unknown => Level::Warn,
            _ => {
                well += 1;
                continue;
            }
        };
        let mut what = format!("server {} is {}", server.name, server.state.as_str());
        if let Some(error) = &server.last_error {
            what.push_str(&format!(": {error}"));
        }
        if let Some(cause) = hints::cause(&server.stderr_tail) {
            what.push_str(&format!(" ({cause})"));
        }
        r.add(
            level,
            what,
            hints::way_out(server, status.config_path.as_deref()),
        );
    }
    if well > 0 {
        r.add(
            Level::Ok,
            format!("{well} server(s) of the running daemon are well"),
            None,
        );
    }
}

/// Warns about another `mcpd` of this user than the one answering on `socket`.
pub(crate) fn check_other_daemons(r: &mut Report, socket: &Path, answering: Option<u32>) {
    let uid = mcpd_proto::paths::current_uid();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Some(pid) == answering {
            continue;
        }
        let dir = entry.path();
        let is_mcpd = std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == "mcpd");
        let ours =
            std::fs::metadata(&dir).is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid);
        if !is_mcpd || !ours {
            continue;
        }
        let cmdline = std::fs::read(dir.join("cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        r.add(
            Level::Warn,
            format!(
                "another mcpd runs (pid {pid}: {}), not the one on {}: clients may be split between two daemons",
                cmdline.trim(),
                socket.display()
            ),
            Some(format!("kill {pid}   (if it is a leftover), or point MCPD_SOCKET at one daemon")),
        );
    }
}
