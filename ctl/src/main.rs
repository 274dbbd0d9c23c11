//! `mcpctl`: the operator's command line for the mcpd daemon.
//!
//! Every command except `demo` and `example-server` opens one control connection to the running
//! daemon (a blocking `UnixStream`, see [`client`]), sends [`ControlRequest`]s and prints the
//! answers. `demo` starts a private daemon of its own; `example-server` is the tiny MCP server
//! that demo configures.

mod client;
mod demo;
mod example_server;
mod output;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mcpd_proto::paths::Paths;
use mcpd_proto::{ControlRequest, ControlResponse};

use crate::client::ControlClient;

/// How long an ordinary control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a reload may take: it waits for changed servers to stop and start.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Control the mcpd daemon: status, reload, shutdown, and a self-contained demo.
#[derive(Debug, Parser)]
#[command(name = "mcpctl", version)]
struct Cli {
    /// The daemon's socket [default: $XDG_RUNTIME_DIR/mcpd/mcpd.sock, or $MCPD_SOCKET].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the daemon, its servers and the attached client sessions.
    Status {
        /// Print the daemon's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the configuration file; only servers whose definition changed are restarted.
    Reload,
    /// Stop the daemon and every server it runs.
    Shutdown,
    /// Start a private mcpd with an example server and talk to it through mcp-shim.
    Demo {
        /// Keep the temporary directory (configuration and logs) instead of removing it.
        #[arg(long)]
        keep: bool,
    },
    /// A tiny MCP stdio server with `echo` and `add` tools, used by `demo`.
    #[command(hide = true)]
    ExampleServer,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcpctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let socket = || {
        cli.socket
            .clone()
            .unwrap_or_else(|| Paths::from_env().socket)
    };
    match cli.command {
        Command::Status { json } => status(&socket(), json),
        Command::Reload => reload(&socket()),
        Command::Shutdown => shutdown(&socket()),
        Command::Demo { keep } => demo::run(keep),
        Command::ExampleServer => example_server::run(),
    }
}

fn status(socket: &std::path::Path, json: bool) -> Result<()> {
    let mut client = ControlClient::connect(socket, REQUEST_TIMEOUT)?;
    let (response, raw) = client.request_raw(&ControlRequest::Status, REQUEST_TIMEOUT)?;
    let status = match response {
        ControlResponse::Status(status) => status,
        other => return Err(unexpected("status", other)),
    };
    if json {
        // Print what the daemon sent, minus the reply tag, so that fields a newer daemon adds
        // are not dropped by this build's types.
        let mut value: serde_json::Value =
            serde_json::from_str(&raw).context("failed to decode mcpd's status reply")?;
        if let Some(object) = value.as_object_mut() {
            object.remove("reply");
        }
        let text = serde_json::to_string_pretty(&value).context("failed to encode status")?;
        output::print(&format!("{text}\n"))
    } else {
        output::print(&render::status(&status))
    }
}

fn reload(socket: &std::path::Path) -> Result<()> {
    let mut client = ControlClient::connect(socket, REQUEST_TIMEOUT)?;
    match client.request(&ControlRequest::Reload, RELOAD_TIMEOUT)? {
        ControlResponse::Reloaded(report) => output::print(&render::reload(&report)),
        ControlResponse::Error { message } => {
            bail!("reload failed, the running configuration is kept: {message}")
        }
        other => Err(unexpected("reload", other)),
    }
}

fn shutdown(socket: &std::path::Path) -> Result<()> {
    let mut client = ControlClient::connect(socket, REQUEST_TIMEOUT)?;
    match client.request(&ControlRequest::Shutdown, REQUEST_TIMEOUT)? {
        ControlResponse::Ok => output::print("mcpd is shutting down\n"),
        other => Err(unexpected("shutdown", other)),
    }
}

/// The error for a reply that does not answer the request that was sent.
fn unexpected(what: &str, response: ControlResponse) -> anyhow::Error {
    match response {
        ControlResponse::Error { message } => anyhow::anyhow!("{what} failed: {message}"),
        ControlResponse::Unknown => anyhow::anyhow!(
            "{what}: mcpd sent a reply this mcpctl does not understand; \
             is mcpctl older than the daemon?"
        ),
        other => anyhow::anyhow!("{what}: mcpd sent an unexpected reply: {other:?}"),
    }
}
