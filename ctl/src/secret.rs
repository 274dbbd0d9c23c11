//! `mcpctl secret`: the values that server definitions reference as `${secret:NAME}`.
//!
//! `set` reads the value from the terminal without echo, or from stdin when it is not a
//! terminal (`pass show x | mcpctl secret set X`), never from an argument (which would land in
//! the shell history and in `ps`). The value goes to the daemon over the control socket and
//! never comes back: `list` shows names, profiles, when each was set and which servers use it.

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use mcpd_proto::{ControlRequest, ControlResponse, SecretInfo, SecretText};

use crate::client::ControlClient;
use crate::output;

/// `mcpctl secret …`
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret's value (typed without echo, or piped on stdin); the servers that use
    /// it restart.
    Set {
        /// The name, as in `${secret:NAME}`.
        name: String,
        /// The value is for this profile only (sessions of other profiles keep the default).
        #[arg(long)]
        profile: Option<String>,
    },
    /// List the stored secrets: names, profiles, when set, which servers use each (never values).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move plaintext credentials in mcpd's configuration into the secret store and write
    /// `${secret:NAME}` references in their place (then reload).
    Adopt {
        /// Show what would move; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Forget a secret's value (the default one, or one profile's).
    Rm {
        /// The name.
        name: String,
        /// Forget only this profile's value.
        #[arg(long)]
        profile: Option<String>,
    },
}

/// Runs one `secret` command.
pub fn run(socket: &Path, config: &Path, command: SecretCommand) -> Result<()> {
    match command {
        SecretCommand::Set { name, profile } => {
            let value = read_value(&name)?;
            let message = set(socket, &name, profile, value)?;
            output::print(&format!("{message}\n"))
        }
        SecretCommand::Adopt { dry_run } => crate::adopt::adopt(socket, config, dry_run),
        SecretCommand::List { json } => {
            let secrets = list(socket)?;
            if json {
                let text = serde_json::to_string_pretty(&secrets).context("cannot encode")?;
                output::print(&format!("{text}\n"))
            } else {
                output::print(&render_list(&secrets))
            }
        }
        SecretCommand::Rm { name, profile } => {
            let mut client = ControlClient::connect(socket, crate::REQUEST_TIMEOUT)?;
            match client.request(
                &ControlRequest::SecretRemove { name, profile },
                crate::RELOAD_TIMEOUT,
            )? {
                ControlResponse::Done { message } => output::print(&format!("{message}\n")),
                other => Err(crate::unexpected("secret rm", other)),
            }
        }
    }
}

/// Sends one value to the daemon; its answer says what was restarted.
pub fn set(
    socket: &Path,
    name: &str,
    profile: Option<String>,
    value: SecretText,
) -> Result<String> {
    let mut client = ControlClient::connect(socket, crate::REQUEST_TIMEOUT)?;
    let request = ControlRequest::SecretSet {
        name: name.to_owned(),
        profile,
        value,
    };
    match client.request(&request, crate::RELOAD_TIMEOUT)? {
        ControlResponse::Done { message } => Ok(message),
        other => Err(crate::unexpected("secret set", other)),
    }
}

/// The daemon's list of secrets.
pub fn list(socket: &Path) -> Result<Vec<SecretInfo>> {
    let mut client = ControlClient::connect(socket, crate::REQUEST_TIMEOUT)?;
    match client.request(&ControlRequest::SecretList, crate::REQUEST_TIMEOUT)? {
        ControlResponse::Secrets { secrets } => Ok(secrets),
        other => Err(crate::unexpected("secret list", other)),
    }
}

/// The value: typed at the terminal without echo, or all of stdin (one trailing newline
/// removed) when stdin is not a terminal.
fn read_value(name: &str) -> Result<SecretText> {
    let stdin = std::io::stdin();
    let mut value = String::new();
    if stdin.is_terminal() {
        eprint!("value of {name} (not shown): ");
        std::io::stderr().flush().ok();
        let _echo_off = EchoOff::new(&stdin)?;
        stdin
            .lock()
            .read_line(&mut value)
            .context("cannot read the value from the terminal")?;
        eprintln!();
    } else {
        stdin
            .lock()
            .take(mcpd_config::secrets::MAX_VALUE as u64 + 2)
            .read_to_string(&mut value)
            .context("cannot read the value from stdin")?;
    }
    let mut value = SecretText::new(value);
    let mut text = value.take();
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    let value = SecretText::new(text);
    if value.expose().is_empty() {
        bail!("no value given; nothing stored");
    }
    Ok(value)
}

/// Turns terminal echo off until dropped.
struct EchoOff {
    saved: nix::sys::termios::Termios,
}

impl EchoOff {
    fn new(stdin: &std::io::Stdin) -> Result<Self> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        use std::os::fd::AsFd as _;
        let saved = tcgetattr(stdin.as_fd()).context("cannot read the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(stdin.as_fd(), SetArg::TCSAFLUSH, &quiet)
            .context("cannot turn the terminal's echo off")?;
        Ok(Self { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        use std::os::fd::AsFd as _;
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin().as_fd(),
            nix::sys::termios::SetArg::TCSAFLUSH,
            &self.saved,
        );
    }
}

fn render_list(secrets: &[SecretInfo]) -> String {
    if secrets.is_empty() {
        return "no secrets stored or referenced; store one with `mcpctl secret set NAME`\n"
            .to_owned();
    }
    let mut out = String::new();
    for s in secrets {
        let values = if s.values.is_empty() {
            format!("NOT SET (mcpctl secret set {})", s.name)
        } else {
            s.values
                .iter()
                .map(|v| {
                    format!(
                        "{} set {}",
                        v.profile.as_deref().unwrap_or("default"),
                        ago(v.set_at)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let used = if s.used_by.is_empty() {
            "used by no server".to_owned()
        } else {
            format!("used by {}", s.used_by.join(", "))
        };
        out.push_str(&format!("{}  {values}; {used}\n", s.name));
    }
    out
}

fn ago(set_at: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let s = now.saturating_sub(set_at);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}
