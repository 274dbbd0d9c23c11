//! `mcpctl doctor`: checks the installation and says how to fix what is wrong.
//!
//! Every check prints one line (`ok`, `info`, `warn` or `FAIL`) and, when something is off, the
//! fix. The exit status is non-zero when a check failed. Nothing is changed.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use mcpd_config::{Warning, WarningKind};
use mcpd_proto::paths::Paths;
use mcpd_proto::{ControlRequest, ControlResponse};
use serde_json::Value;

use crate::client::ControlClient;
use crate::jsonc;
use crate::output::say;

/// Overrides the `systemctl` program doctor runs (`none`: behave as if there were no systemd).
pub const SYSTEMCTL_ENV: &str = "MCPCTL_SYSTEMCTL";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Ok,
    Info,
    Warn,
    Fail,
}

#[derive(Debug)]
pub(crate) struct Report {
    failed: usize,
    warned: usize,
}

impl Report {
    pub(crate) fn add(&mut self, level: Level, what: impl AsRef<str>, fix: Option<String>) {
        let tag = match level {
            Level::Ok => "ok  ",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        say!("{tag}  {}", what.as_ref());
        if let Some(fix) = fix {
            for (i, line) in fix.lines().enumerate() {
                say!(
                    "{}{line}",
                    if i == 0 { "      fix: " } else { "           " }
                );
            }
        }
        match level {
            Level::Fail => self.failed += 1,
            Level::Warn => self.warned += 1,
            _ => {}
        }
    }
}

/// Runs every check.
pub fn run(socket: &Path, config: &Path) -> Result<()> {
    let paths = Paths::from_env();
    let mut r = Report {
        failed: 0,
        warned: 0,
    };
    let systemd = Systemd::detect();
    let daemon = check_socket(&mut r, socket, &systemd);
    let daemon_pid = daemon.as_ref().map(|s| s.pid);
    check_dir(
        &mut r,
        "runtime directory",
        socket.parent().unwrap_or(&paths.runtime_dir),
        true,
    );
    check_config_file(&mut r, config);
    check_plaintext_credentials(&mut r, config);
    check_dir(&mut r, "state directory", &paths.state_dir, true);
    check_units(&mut r, &systemd);
    let mut reported = check_config_valid(&mut r, config, daemon.as_ref());
    let (path, whose) = daemon_path(daemon_pid, &systemd);
    reported.extend(check_commands(&mut r, config, &path, &whose));
    if let Some(status) = &daemon {
        crate::doctor_servers::check(&mut r, status, &reported);
    }
    crate::doctor_servers::check_other_daemons(&mut r, socket, daemon_pid);
    check_keyring(&mut r);
    say!("");
    if r.failed > 0 {
        bail!(
            "{} check(s) failed, {} warning(s); see the fixes above",
            r.failed,
            r.warned
        );
    }
    say!("no problems found ({} warning(s))", r.warned);
    Ok(())
}

/// Connects and asks for the status; returns it.
fn check_socket(
    r: &mut Report,
    socket: &Path,
    systemd: &Systemd,
) -> Option<mcpd_proto::DaemonStatus> {
    let timeout = Duration::from_secs(5);
    let result = ControlClient::connect(socket, timeout)
        .and_then(|mut c| c.request(&ControlRequest::Status, timeout));
    match result {
        Ok(ControlResponse::Status(s)) => {
            r.add(
                Level::Ok,
                format!(
                    "socket: mcpd {} (pid {}) answers on {}",
                    s.version,
                    s.pid,
                    socket.display()
                ),
                None,
            );
            Some(s)
        }
        Ok(other) => {
            r.add(
                Level::Fail,
                format!(
                    "socket: {} answered status with {other:?}",
                    socket.display()
                ),
                Some("mcpctl and mcpd are different versions? reinstall both".into()),
            );
            None
        }
        Err(e) if systemd.environment.is_none() && !socket.exists() => {
            // Without systemd the first mcp-shim starts the daemon: not running yet is normal.
            r.add(
                Level::Info,
                format!(
                    "mcpd is not running yet ({}): the first mcp-shim a client launches starts it",
                    socket.display()
                ),
                None,
            );
            let _ = e;
            None
        }
        Err(e) => {
            let fix = if systemd.environment.is_some() {
                "systemctl --user enable --now mcpd.socket   (with the systemd units)\n\
                 or start `mcpd` yourself (it runs in the foreground)"
            } else {
                "start `mcpd` yourself, or let a client's mcp-shim start it (autostart)"
            };
            r.add(Level::Fail, format!("socket: {e:#}"), Some(fix.into()));
            None
        }
    }
}

fn mode_fix(path: &Path, mode: u32) -> Option<String> {
    Some(format!("chmod {mode:o} {}", path.display()))
}

fn check_dir(r: &mut Report, what: &str, dir: &Path, private: bool) {
    match fs::metadata(dir) {
        Err(_) => r.add(
            Level::Info,
            format!(
                "{what} {} does not exist yet (mcpd creates it)",
                dir.display()
            ),
            None,
        ),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            let uid = mcpd_proto::paths::current_uid();
            if meta.uid() != uid {
                r.add(
                    Level::Fail,
                    format!(
                        "{what} {} belongs to uid {}, not to you (uid {uid})",
                        dir.display(),
                        meta.uid()
                    ),
                    Some("remove it or use a directory of your own".into()),
                );
            } else if private && mode & 0o077 != 0 {
                r.add(
                    Level::Fail,
                    format!(
                        "{what} {} has mode {mode:o}: other users can reach it",
                        dir.display()
                    ),
                    mode_fix(dir, 0o700),
                );
            } else {
                r.add(
                    Level::Ok,
                    format!("{what} {} (mode {mode:o})", dir.display()),
                    None,
                );
            }
        }
    }
}

/// Credentials written in plaintext in mcpd's configuration (they belong in the secret store).
fn check_plaintext_credentials(r: &mut Report, config: &Path) {
    let found = crate::adopt::plaintext(config);
    if found.is_empty() {
        return;
    }
    let list: Vec<String> = found
        .iter()
        .map(|(path, why)| format!("{path} ({why})"))
        .collect();
    r.add(
        Level::Warn,
        format!(
            "{} credential(s) in plaintext in {}: {}",
            found.len(),
            config.display(),
            list.join(", ")
        ),
        Some("mcpctl secret adopt   (moves them into mcpd's encrypted secret store)".into()),
    );
}

fn check_config_file(r: &mut Report, config: &Path) {
    match fs::metadata(config) {
        Err(_) => r.add(
            Level::Warn,
            format!("configuration {} does not exist: no servers", config.display()),
            Some("mcpctl import --from claude-desktop   (or cursor, vscode, ...), or write it by hand".into()),
        ),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                r.add(
                    Level::Warn,
                    format!(
                        "configuration {} has mode {mode:o}: other users can read it (it may hold secrets)",
                        config.display()
                    ),
                    mode_fix(config, 0o600),
                );
            } else {
                r.add(
                    Level::Ok,
                    format!("configuration {} (mode {mode:o})", config.display()),
                    None,
                );
            }
        }
    }
}

/// Checks the file as the daemon would read it; returns the servers whose definitions have
/// mistakes (reported here, so that the running daemon's view does not repeat them).
fn check_config_valid(
    r: &mut Report,
    config: &Path,
    daemon: Option<&mcpd_proto::DaemonStatus>,
) -> Vec<String> {
    let running = daemon.and_then(|d| match (&d.config_error, &d.config_fallback) {
        (Some(_), Some(fallback)) => Some(format!("the running daemon serves {fallback}")),
        (Some(_), None) => Some("the running daemon runs no servers".to_owned()),
        _ => None,
    });
    match mcpd_config::load_unchecked(config) {
        Ok(loaded) if !loaded.exists => Vec::new(),
        Ok(loaded) => {
            let broken = &loaded.config.broken;
            r.add(
                if broken.is_empty() {
                    Level::Ok
                } else {
                    Level::Fail
                },
                format!(
                    "configuration: {} server(s) valid, {} with mistakes",
                    loaded.config.servers.len(),
                    broken.len()
                ),
                None,
            );
            for (name, problem) in broken {
                r.add(
                    Level::Fail,
                    format!("server {name} is not started: {}", problem.summary()),
                    Some(format!(
                        "fix it in {}, then `mcpctl reload`",
                        config.display()
                    )),
                );
            }
            for w in not_checked_yet(loaded.warnings) {
                r.add(Level::Warn, w.message, None);
            }
            if let Some(running) = running {
                r.add(
                    Level::Warn,
                    format!("the file loads now, but {running}"),
                    Some("mcpctl reload".into()),
                );
            }
            broken.keys().cloned().collect()
        }
        Err(e) => {
            let running = running.map(|r| format!(" ({r})")).unwrap_or_default();
            r.add(
                Level::Fail,
                format!("configuration is not valid: {e}{running}"),
                Some("fix that place in the file, then `mcpctl reload`".into()),
            );
            Vec::new()
        }
    }
}

/// The configuration's warnings that no other check reports: the file's mode was checked
/// above (`check_config_file`), so each problem is told once.
fn not_checked_yet(warnings: Vec<Warning>) -> impl Iterator<Item = Warning> {
    warnings
        .into_iter()
        .filter(|w| w.kind != WarningKind::FileReadable)
}

/// What the systemd user manager says, if there is one.
#[derive(Debug)]
struct Systemd {
    program: Option<OsString>,
    /// `systemctl --user show-environment`.
    environment: Option<String>,
}

impl Systemd {
    fn detect() -> Self {
        let program = match std::env::var_os(SYSTEMCTL_ENV) {
            Some(p) if p == "none" => None,
            Some(p) => Some(p),
            None => Some("systemctl".into()),
        };
        let mut me = Self {
            program,
            environment: None,
        };
        me.environment = me.run(&["show-environment"]);
        me
    }

    /// `systemctl --user ARGS` stdout when it succeeded.
    fn run(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(self.program.as_ref()?)
            .arg("--user")
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `is-enabled` prints its answer even when it exits non-zero.
    fn is_enabled(&self, unit: &str) -> String {
        let Some(program) = &self.program else {
            return String::new();
        };
        Command::new(program)
            .args(["--user", "is-enabled", unit])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

fn check_units(r: &mut Report, systemd: &Systemd) {
    if systemd.environment.is_none() {
        r.add(
            Level::Info,
            "no systemd user manager (`systemctl --user` does not answer): units not checked; \
             mcp-shim starts mcpd itself when nothing listens",
            None,
        );
        return;
    }
    match systemd.is_enabled("mcpd.socket").as_str() {
        "enabled" | "enabled-runtime" | "static" | "linked" => {
            r.add(Level::Ok, "mcpd.socket is installed and enabled", None);
        }
        "disabled" => r.add(
            Level::Warn,
            "mcpd.socket is installed but not enabled: mcpd will not start on demand",
            Some("systemctl --user enable --now mcpd.socket".into()),
        ),
        other => r.add(
            Level::Warn,
            format!(
                "mcpd.socket is not installed ({})",
                if other.is_empty() { "unknown" } else { other }
            ),
            Some(
                "packaging/install.sh   (installs the binaries and the units)\n\
                 or copy systemd/mcpd.socket and systemd/mcpd.service to ~/.config/systemd/user/,\n\
                 then: systemctl --user daemon-reload && systemctl --user enable --now mcpd.socket"
                    .into(),
            ),
        ),
    }
}

/// The PATH the daemon runs servers with, and where it was learnt.
fn daemon_path(pid: Option<u32>, systemd: &Systemd) -> (String, String) {
    if let Some(pid) = pid
        && let Ok(environ) = fs::read(format!("/proc/{pid}/environ"))
        && let Some(path) = environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"PATH="))
    {
        return (
            String::from_utf8_lossy(path).into_owned(),
            format!("the running daemon's PATH (pid {pid})"),
        );
    }
    if let Some(env) = &systemd.environment {
        // A unit `Environment=PATH=...` wins over the manager's.
        let unit = systemd
            .run(&["show", "mcpd.service", "-p", "Environment", "--value"])
            .unwrap_or_default();
        let from_unit = unit
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("PATH="));
        if let Some(path) = from_unit {
            return (path.to_owned(), "mcpd.service's Environment=PATH".into());
        }
        if let Some(path) = env.lines().find_map(|l| l.strip_prefix("PATH=")) {
            return (path.to_owned(), "the systemd user manager's PATH".into());
        }
    }
    (
        std::env::var("PATH").unwrap_or_default(),
        "this shell's PATH (the daemon is not running)".into(),
    )
}

/// Looks for each stdio server's command; returns the servers whose command is missing.
fn check_commands(r: &mut Report, config: &Path, path: &str, whose: &str) -> Vec<String> {
    let mut missing = Vec::new();
    let Ok(text) = fs::read_to_string(config) else {
        return missing;
    };
    let Ok(value) = jsonc::parse(&text) else {
        return missing;
    };
    let Some(servers) = value.get("mcpServers").and_then(Value::as_object) else {
        return missing;
    };
    let shell_path = std::env::var("PATH").unwrap_or_default();
    for (name, entry) in servers {
        if entry.get("url").is_some()
            || entry.get("disabled").and_then(Value::as_bool) == Some(true)
        {
            continue;
        }
        let Some(command) = entry.get("command").and_then(Value::as_str) else {
            continue;
        };
        let Ok(command) = mcpd_config::expand(command, |v| std::env::var(v).ok()) else {
            continue;
        };
        match resolve(&command, path) {
            Some(found) => r.add(
                Level::Ok,
                format!("server {name}: `{command}` is {}", found.display()),
                None,
            ),
            None => {
                let fix = match resolve(&command, &shell_path) {
                    Some(found) if !command.contains('/') => format!(
                        "your shell finds it at {}: put the absolute path in the configuration,\n\
                         or add {} to the daemon's PATH (`systemctl --user edit mcpd`:\n\
                         [Service]\nEnvironment=PATH={}:{path})",
                        found.display(),
                        found.parent().unwrap_or(Path::new("/")).display(),
                        found.parent().unwrap_or(Path::new("/")).display()
                    ),
                    _ => format!("install `{command}`, or fix `mcpServers.{name}.command`"),
                };
                r.add(
                    Level::Fail,
                    format!("server {name}: `{command}` is not found in {whose}"),
                    Some(fix),
                );
                missing.push(name.clone());
            }
        }
    }
    missing
}

/// The executable `command` names: a path as it is, a bare name looked up in `path`.
fn resolve(command: &str, path: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = PathBuf::from(command);
        return executable(&p).then_some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(command))
        .find(|p| executable(p))
}

fn check_keyring(r: &mut Report) {
    let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        || std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).join("bus").exists());
    if !bus {
        r.add(
            Level::Info,
            "keyring: no D-Bus session bus, so no Secret Service: OAuth tokens are encrypted with \
             a key in a 0600 file under the state directory",
            None,
        );
        return;
    }
    let listed = Command::new("busctl")
        .args(["--user", "list", "--no-pager"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("org.freedesktop.secrets"));
    match listed {
        Some(true) => r.add(
            Level::Ok,
            "keyring: a Secret Service (org.freedesktop.secrets) is on the session bus",
            None,
        ),
        Some(false) => r.add(
            Level::Info,
            "keyring: no Secret Service on the session bus: OAuth tokens use the 0600 file fallback",
            Some("install and unlock a keyring (gnome-keyring, KeePassXC) to keep the key there".into()),
        ),
        None => r.add(
            Level::Info,
            "keyring: a session bus exists; `busctl` is missing, so the Secret Service was not checked",
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn commands_resolve_by_path_or_name() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, "").unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(resolve("tool", &path), Some(exe.clone()));
        assert_eq!(resolve("plain", &path), None, "not executable");
        assert_eq!(resolve(exe.to_str().unwrap(), ""), Some(exe));
        assert_eq!(resolve("tool", "/nonexistent"), None);
    }

    #[test]
    fn the_file_mode_warning_is_left_to_the_file_check_and_the_others_are_shown() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        fs::write(
            &config,
            r#"{"mcpServers":{"a":{"command":"x","colour":1},"r":{"url":"http://mcp.example.com/mcp"}}}"#,
        )
        .unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = mcpd_config::load_unchecked(&config).unwrap();
        let kinds = |ws: &[Warning]| {
            let mut k: Vec<WarningKind> = ws.iter().map(|w| w.kind).collect();
            k.sort_by_key(|k| format!("{k:?}"));
            k
        };
        assert_eq!(
            kinds(&loaded.warnings),
            [
                WarningKind::FileReadable,
                WarningKind::PlainHttp,
                WarningKind::UnknownKey
            ]
        );
        let shown: Vec<Warning> = not_checked_yet(loaded.warnings).collect();
        assert_eq!(
            kinds(&shown),
            [WarningKind::PlainHttp, WarningKind::UnknownKey]
        );
        // Decided by kind, not by words: a server name that spells the mode warning's words
        // is still shown.
        let odd = Warning::new(
            WarningKind::UnknownKey,
            "config.json: unknown key `readable by other users` ignored",
        );
        assert_eq!(
            not_checked_yet(vec![odd.clone()]).collect::<Vec<_>>(),
            [odd]
        );
    }
}
