//! `mcp-shim`: the stdio program MCP clients launch instead of an MCP server.
//!
//! It connects to the per-user `mcpd` socket, sends one attach hello, reads one reply and then
//! copies lines both ways, unchanged: the daemon does the routing. The shim only notes what it
//! needs to survive a daemon restart (the client's `initialize`, the requests in flight): when
//! the connection drops it answers those requests with an error, reconnects and resumes the
//! session, so the client notices nothing else. When no daemon answers at all, it starts one
//! (see [`autostart`]) unless told not to. It uses std only, so that it starts in about a
//! millisecond and peaks at about 2.4 MiB resident.
//!
//! With `--direct` it hands the client's stdin and stdout to the daemon instead (see
//! [`direct`]) and only waits for the session to end: faster; on a planned daemon stop the
//! daemon hands them back and the session goes on ([`handback`]), but not after a crash.
//!
//! Exit codes: 0 when the session ends normally (stdin closed, the client stopped reading,
//! SIGTERM, SIGHUP, the client died), 1 when the daemon is missing (and autostart is off or
//! failed), refuses the session, speaks a socket protocol this shim cannot, or drops the session
//! and does not come back within the reconnect timeout, 2 on a usage error.

mod args;
mod autostart;
mod direct;
mod handback;
mod parent;
mod pipes;
mod relay;
mod revive;
mod scan;
mod session;
mod track;

use std::fmt;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use mcpd_proto::paths::Paths;
use mcpd_proto::trust::{self, ConnectError};

use crate::session::Failure;

/// Why the shim stops early: an exit code and, unless quiet, one line for stderr.
#[derive(Debug)]
pub struct Exit {
    code: u8,
    message: Option<String>,
}

impl Exit {
    /// A failure, reported as `mcp-shim: {message}` with exit code 1.
    pub fn fail(message: impl fmt::Display) -> Self {
        Self {
            code: 1,
            message: Some(one_line(&message.to_string())),
        }
    }

    /// A normal end of the session, silently, with exit code 0.
    pub fn done() -> Self {
        Self {
            code: 0,
            message: None,
        }
    }
}

/// Keeps a message on one line: a daemon-supplied message could contain newlines.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The first connection to the daemon; if none answers and `autostart` is on (and
/// `MCPD_NO_AUTOSTART` does not turn it off), the daemon is started first, unless it was shut
/// down with `--stay-down`. Reconnecting after the daemon went away starts it again the same
/// way ([`revive`], see `docs/SHIM.md`). Whatever answers must pass
/// [`trust::connect`]'s checks before the hello is written.
fn connect(socket: &std::path::Path, autostart: bool) -> Result<UnixStream, Exit> {
    match trust::connect(socket) {
        Ok(stream) => Ok(stream),
        Err(ConnectError::Io(e))
            if autostart::no_daemon(&e) && mcpd_proto::stay_down::is_marked(socket) =>
        {
            Err(Exit::fail(format!(
                "mcpd was shut down with `mcpctl shutdown --stay-down`; start it with `mcpd` \
                 (or remove {})",
                mcpd_proto::stay_down::marker(socket).display()
            )))
        }
        Err(ConnectError::Io(e))
            if autostart
                && autostart::no_daemon(&e)
                && !autostart::disabled_by_env(
                    std::env::var_os(autostart::DISABLE_ENV).as_deref(),
                ) =>
        {
            autostart::start(socket)
        }
        Err(e) => Err(session::connect_failure(socket, &e)),
    }
}

fn main() -> ExitCode {
    parent::watch();
    let outcome = match args::parse(std::env::args_os().skip(1)) {
        Ok(args::Command::Help) => {
            print!("{}", args::HELP);
            Exit::done()
        }
        Ok(args::Command::Version) => {
            println!(
                "mcp-shim {} (socket protocol {})",
                env!("CARGO_PKG_VERSION"),
                mcpd_proto::PROTOCOL_VERSION
            );
            Exit::done()
        }
        Ok(args::Command::Relay(opts)) => {
            let target = relay::Target {
                socket: opts.socket.unwrap_or_else(|| Paths::from_env().socket),
                profile: opts.profile,
                reconnect_timeout: opts.reconnect_timeout,
                autostart: opts.autostart
                    && !autostart::disabled_by_env(
                        std::env::var_os(autostart::DISABLE_ENV).as_deref(),
                    ),
                pipes: pipes::enabled(),
            };
            let direct = (opts.direct || direct::asked_by_env())
                && match direct::eligible() {
                    Ok(()) => true,
                    Err(why) => {
                        eprintln!("mcp-shim: --direct: {why}; relaying instead");
                        false
                    }
                };
            let req = session::Request {
                socket: &target.socket,
                profile: &target.profile,
                timeout: session::HANDSHAKE_TIMEOUT,
                again: false,
                direct,
                direct_input: 0,
                pipes: target.pipes,
            };
            let attached = connect(&target.socket, opts.autostart).and_then(|stream| {
                session::handshake(stream, req, None).map_err(Failure::into_exit)
            });
            match attached {
                Ok(attached) if attached.direct => direct::run(attached, &target),
                Ok(attached) => {
                    if direct {
                        eprintln!(
                            "mcp-shim: --direct: this mcpd does not take the client's stdio (upgrade it); relaying instead"
                        );
                    }
                    relay::run(attached, &target)
                }
                Err(exit) => exit,
            }
        }
        Err(usage) => Exit {
            code: 2,
            message: Some(usage),
        },
    };
    if let Some(message) = outcome.message {
        eprintln!("mcp-shim: {message}");
    }
    ExitCode::from(outcome.code)
}
