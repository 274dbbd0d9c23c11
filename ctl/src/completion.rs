//! Shell completions: clap's scripts for the visible commands (hidden helpers such as
//! `example-server` are left out), plus server names for the commands that take one, asked of
//! the running daemon at completion time (`mcpctl __complete servers`), else read from the
//! configuration file.

use std::path::Path;
use std::time::Duration;

use clap::Command;
use mcpd_proto::{ControlRequest, ControlResponse};

use crate::client::ControlClient;

/// Commands whose positional argument is a server name.
pub const SERVER_COMMANDS: &[&str] = &[
    "restart", "stop", "start", "logs", "login", "logout", "status",
];

/// How long completion waits for the daemon before it reads the file instead.
const DAEMON_TIMEOUT: Duration = Duration::from_millis(500);

/// The CLI as completion scripts show it: the root's options and the visible subcommands.
pub fn visible(full: &Command) -> Command {
    let mut cmd = Command::new("mcpctl").version(env!("CARGO_PKG_VERSION"));
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    for arg in full.get_arguments() {
        cmd = cmd.arg(arg.clone());
    }
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(sub.clone());
    }
    cmd
}

/// The completion script for `shell`, with server names completed where a command takes one.
pub fn script(shell: clap_complete::Shell, full: &Command) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible(full), "mcpctl", &mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let commands = SERVER_COMMANDS.join(" ");
    match shell {
        clap_complete::Shell::Bash => format!(
            "{text}
# Server names for `mcpctl {pipe} NAME`, from the daemon (or the configuration file).
_mcpctl_with_servers() {{
    local cur=\"${{COMP_WORDS[COMP_CWORD]}}\" prev=\"${{COMP_WORDS[COMP_CWORD-1]}}\"
    if [[ $COMP_CWORD -ge 2 && $cur != -* && $prev != -n && $prev != --lines ]]; then
        case \" {commands} \" in
            *\" ${{COMP_WORDS[1]}} \"*)
                COMPREPLY=($(compgen -W \"$(mcpctl __complete servers 2>/dev/null)\" -- \"$cur\"))
                return 0;;
        esac
    fi
    _mcpctl \"$@\"
}}
complete -F _mcpctl_with_servers -o bashdefault -o default mcpctl
",
            pipe = SERVER_COMMANDS.join("|")
        ),
        clap_complete::Shell::Zsh => {
            let helper = "#compdef mcpctl

# Server names, from the daemon (or the configuration file).
_mcpctl_servers() {
    local -a servers
    servers=(${(f)\"$(mcpctl __complete servers 2>/dev/null)\"})
    _describe -t servers 'server' servers
}
";
            let body = text.strip_prefix("#compdef mcpctl\n").unwrap_or(&text);
            let body: Vec<String> = body
                .lines()
                .map(|line| {
                    let server_arg =
                        line.starts_with("':server -- ") || line.starts_with("'::server -- ");
                    if server_arg {
                        line.replace(":_default'", ":_mcpctl_servers'")
                    } else {
                        line.to_owned()
                    }
                })
                .collect();
            format!("{helper}{}\n", body.join("\n"))
        }
        clap_complete::Shell::Fish => format!(
            "{text}complete -c mcpctl -f -n \"__fish_seen_subcommand_from {commands}\" -a \"(mcpctl __complete servers 2>/dev/null)\"\n"
        ),
        _ => text,
    }
}

/// The server names to complete: the daemon's, else those in the configuration file.
pub fn servers(socket: &Path, config: &Path) -> Vec<String> {
    let from_daemon = ControlClient::connect(socket, DAEMON_TIMEOUT)
        .and_then(|mut c| c.request(&ControlRequest::Status, DAEMON_TIMEOUT));
    if let Ok(ControlResponse::Status(status)) = from_daemon {
        let mut names: Vec<String> = status
            .servers
            .into_iter()
            .map(|s| s.name)
            .filter(|n| !n.contains('#') && !n.contains('@'))
            .collect();
        names.dedup();
        return names;
    }
    match mcpd_config::load_unchecked(config) {
        Ok(loaded) => loaded
            .config
            .servers
            .into_keys()
            .chain(loaded.config.broken.into_keys())
            .collect(),
        Err(_) => Vec::new(),
    }
}
