//! `mcp-shim`: the stdio program MCP clients launch instead of an MCP server.
//!
//! It connects to the per-user `mcpd` socket, sends one attach hello, reads one reply and then
//! copies bytes both ways without looking at them: the daemon parses the JSON-RPC. It uses std
//! only, so that it starts in about a millisecond and stays under 2 MiB of memory.
//!
//! Exit codes: 0 when the session ends normally (stdin closed, the client stopped reading,
//! SIGTERM, SIGHUP, the client died), 1 when the daemon is missing, refuses the session or drops
//! it while the client is still talking, 2 on a usage error.

mod args;
mod parent;
mod relay;
mod session;

use std::fmt;
use std::process::ExitCode;

use mcpd_proto::paths::Paths;

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
            let socket = opts.socket.unwrap_or_else(|| Paths::from_env().socket);
            match session::attach(&socket, &opts.profile) {
                Ok(attached) => relay::run(attached),
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
