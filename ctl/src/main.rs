//! `mcpctl`: the operator's command line for the mcpd daemon.
//!
//! Every command except `demo` and `example-server` opens one control connection to the running
//! daemon (a blocking `UnixStream`, see [`client`]), sends [`ControlRequest`]s and prints the
//! answers. `demo` starts a private daemon of its own; `example-server` is the tiny MCP server
//! that demo configures.

mod adopt;
mod client;
mod clients;
mod completion;
mod contain;
mod demo;
mod doctor;
mod doctor_servers;
mod example_server;
mod hints;
mod import;
mod install_client;
mod jsonc;
mod login;
mod logs;
mod observe;
mod output;
mod render;
mod secret;
mod status_one;
mod tools;
mod top;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use mcpd_proto::paths::Paths;
use mcpd_proto::{ControlRequest, ControlResponse};

use crate::client::ControlClient;

/// How long an ordinary control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a reload may take: it waits for changed servers to stop and start.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Control the mcpd daemon: status, logs, reload, client setup, diagnostics.
#[derive(Debug, Parser)]
#[command(name = "mcpctl", version)]
struct Cli {
    /// The daemon's socket [default: $XDG_RUNTIME_DIR/mcpd/mcpd.sock, or $MCPD_SOCKET].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// mcpd's configuration file [default: $XDG_CONFIG_HOME/mcpd/config.json, or $MCPD_CONFIG].
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the daemon, its servers and the attached client sessions; with NAME, one server
    /// in full with its recent log lines.
    Status {
        /// Print the daemon's status as JSON.
        #[arg(long, conflicts_with = "server")]
        json: bool,
        /// Only this server, in full.
        server: Option<String>,
    },
    /// Re-read the configuration file; only servers whose definition changed are restarted.
    Reload,
    /// Stop the daemon and every server it runs. Attached clients' mcp-shim starts it again
    /// when they need it, unless `--stay-down`.
    Shutdown {
        /// Keep it down: shims do not start it again until `mcpd` is started by hand.
        #[arg(long)]
        stay_down: bool,
    },
    /// Stop a server and start it again (also after it stopped for crash-looping).
    Restart {
        /// The server's name in mcpServers.
        server: String,
    },
    /// Stop a server and keep it stopped until `mcpctl start`.
    Stop {
        /// The server's name in mcpServers.
        server: String,
    },
    /// Start a stopped, idle or crash-looping server.
    Start {
        /// The server's name in mcpServers.
        server: String,
    },
    /// Log in to a remote server with OAuth: opens the authorization URL in a browser and
    /// waits; the daemon keeps the tokens.
    Login {
        /// The server's name in mcpServers.
        server: String,
        /// Do not open a browser: print the URL and read the redirected URL pasted back.
        #[arg(long, conflicts_with = "browser")]
        no_browser: bool,
        /// The command that opens the URL [default: $BROWSER, else xdg-open / open].
        #[arg(long, value_name = "CMD")]
        browser: Option<String>,
    },
    /// Forget a remote server's tokens (revoking them where the server supports it).
    Logout {
        /// The server's name in mcpServers.
        server: String,
    },
    /// Show recent log lines of the daemon and its servers (from its in-memory buffer).
    Logs {
        /// Keep printing new lines as they are logged.
        #[arg(short, long)]
        follow: bool,
        /// Only this many of the most recent lines.
        #[arg(short = 'n', long, value_name = "N")]
        lines: Option<usize>,
        /// Only lines about this server.
        server: Option<String>,
    },
    /// A live view of the servers by memory or CPU, with request rates (q quits).
    Top {
        /// Print one frame (two samples an interval apart) and exit; for scripts and pipes.
        #[arg(long, conflicts_with = "iterations")]
        once: bool,
        /// Print this many frames and exit.
        #[arg(short = 'n', long, value_name = "N")]
        iterations: Option<u64>,
        /// Seconds between frames.
        #[arg(short = 'd', long, default_value = "2", value_name = "SECS", value_parser = top::parse_interval)]
        interval: std::time::Duration,
        /// Sort by memory or by CPU use.
        #[arg(long, value_enum, default_value_t = top::SortBy::Mem)]
        sort: top::SortBy,
    },
    /// The audit log: one line per client request (from $XDG_STATE_HOME/mcpd/audit/).
    Audit {
        /// Only requests this recent: 90s, 30m, 1h, 2d.
        #[arg(long, value_name = "AGE", value_parser = observe::parse_since)]
        since: Option<Duration>,
        /// Only requests to this server.
        #[arg(long)]
        server: Option<String>,
        /// Only clients whose name contains this.
        #[arg(long)]
        client: Option<String>,
        /// Print the lines as written (JSON, one per line).
        #[arg(long)]
        json: bool,
    },
    /// Every MCP message between clients and mcpd as it happens, secrets redacted.
    Traffic {
        /// Keep following (the default and only mode; accepted for habit).
        #[arg(short, long)]
        follow: bool,
        /// Only messages about this server.
        server: Option<String>,
        /// Only this session (see `mcpctl status`).
        #[arg(long, value_name = "N")]
        session: Option<u64>,
        /// Print each whole message, not only its summary.
        #[arg(long)]
        full: bool,
    },
    /// Calls, errors and latency per server and tool since the daemon started.
    Stats {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pinned tool definitions (rug pulls) and poisoning checks.
    Tools {
        #[command(subcommand)]
        command: tools::ToolsCommand,
    },
    /// Copy a client's MCP servers into mcpd's configuration (a backup is kept).
    Import {
        /// claude-desktop, claude-code, cursor, vscode, windsurf, or the path of a config file.
        #[arg(long, value_name = "CLIENT|PATH", value_parser = import::Source::parse)]
        from: import::Source,
        /// Replace servers that mcpd's configuration defines differently.
        #[arg(long, conflicts_with = "rename")]
        force: bool,
        /// Add conflicting servers under a new name (`NAME-CLIENT`) instead.
        #[arg(long)]
        rename: bool,
        /// Show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Copy credentials (API keys, tokens, Authorization headers) as they are, in
        /// plaintext, instead of moving them into mcpd's secret store.
        #[arg(long)]
        keep_plaintext: bool,
    },
    /// Make a client launch mcp-shim instead of its individual servers (`--undo` reverts).
    InstallClient {
        /// Which client.
        #[arg(value_enum)]
        client: clients::Client,
        /// Its configuration file, if not at the standard location.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// The mcp-shim to launch [default: the one next to this mcpctl].
        #[arg(long, value_name = "PATH")]
        shim: Option<PathBuf>,
        /// Attach the client to this profile.
        #[arg(long)]
        profile: Option<String>,
        /// Rewrite even if some of its servers are not in mcpd's configuration (they are dropped).
        #[arg(long)]
        force: bool,
        /// Restore the original configuration from the backup, byte for byte.
        #[arg(long)]
        undo: bool,
        /// Show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the installation and explain how to fix each problem.
    Doctor,
    /// Store, list and remove the secrets that servers reference as `${secret:NAME}`.
    Secret {
        #[command(subcommand)]
        command: secret::SecretCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages for mcpctl and its commands into DIR.
    #[command(hide = true)]
    Man {
        /// Where to write `mcpctl.1`, `mcpctl-status.1`, ...
        dir: PathBuf,
    },
    /// Start a private mcpd with an example server and talk to it through mcp-shim.
    Demo {
        /// Keep the temporary directory (configuration and logs) instead of removing it.
        #[arg(long)]
        keep: bool,
    },
    /// A tiny MCP stdio server with `echo` and `add` tools, used by `demo`.
    #[command(hide = true)]
    ExampleServer,
    /// What completion scripts ask for at completion time: `servers` prints the server names.
    #[command(name = "__complete", hide = true)]
    Complete {
        /// `servers`.
        what: String,
    },
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
    let config = || {
        cli.config
            .clone()
            .unwrap_or_else(|| Paths::from_env().config_file)
    };
    match cli.command {
        Command::Status {
            server: Some(name), ..
        } => status_one::run(&socket(), &name, REQUEST_TIMEOUT),
        Command::Status { json, server: None } => status(&socket(), json),
        Command::Top {
            once,
            iterations,
            interval,
            sort,
        } => top::run(
            &socket(),
            &top::Options {
                interval,
                iterations: if once { Some(1) } else { iterations },
                sort,
            },
        ),
        Command::Logs {
            follow,
            lines,
            server,
        } => logs::run(&socket(), server, follow, lines, REQUEST_TIMEOUT),
        Command::Import {
            from,
            force,
            rename,
            dry_run,
            keep_plaintext,
        } => import::run(&import::Options {
            source: from,
            config: config(),
            socket: (!keep_plaintext).then(socket),
            on_conflict: if force {
                import::OnConflict::Replace
            } else if rename {
                import::OnConflict::Rename
            } else {
                import::OnConflict::Stop
            },
            dry_run,
        }),
        Command::InstallClient {
            client,
            file,
            shim,
            profile,
            force,
            undo,
            dry_run,
        } => install_client::run(&install_client::Options {
            client,
            file,
            shim,
            profile,
            config: config(),
            force,
            undo,
            dry_run,
        }),
        Command::Doctor => doctor::run(&socket(), &config()),
        Command::Secret { command } => secret::run(&socket(), &config(), command),
        Command::Audit {
            since,
            server,
            client,
            json,
        } => observe::audit(
            &Paths::from_env().state_dir,
            &observe::AuditQuery {
                since,
                server,
                client,
                json,
            },
        ),
        Command::Traffic {
            follow: _,
            server,
            session,
            full,
        } => observe::traffic(&socket(), server, session, full, REQUEST_TIMEOUT),
        Command::Stats { json } => observe::stats(&socket(), json, REQUEST_TIMEOUT),
        Command::Tools { command } => tools::run(&socket(), command, REQUEST_TIMEOUT),
        Command::Completions { shell } => {
            output::print(&completion::script(shell, &Cli::command()))
        }
        Command::Complete { what } => match what.as_str() {
            "servers" => {
                let names = completion::servers(&socket(), &config());
                output::print(&names.iter().map(|n| format!("{n}\n")).collect::<String>())
            }
            other => bail!("nothing to complete for `{other}` (known: servers)"),
        },
        Command::Man { dir } => man(&dir),
        Command::Reload => reload(&socket()),
        Command::Shutdown { stay_down } => shutdown(&socket(), stay_down),
        Command::Restart { server } => {
            server_op(&socket(), ControlRequest::Restart { server }, "restarted")
        }
        Command::Stop { server } => {
            server_op(&socket(), ControlRequest::Stop { server }, "stopped")
        }
        Command::Start { server } => {
            server_op(&socket(), ControlRequest::Start { server }, "started")
        }
        Command::Login {
            server,
            no_browser,
            browser,
        } => login::login(&socket(), &server, no_browser, browser.as_deref()),
        Command::Logout { server } => login::logout(&socket(), &server),
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
        ControlResponse::Reloaded(report) => {
            output::print(&render::reload(&report))?;
            if !report.config_errors.is_empty() {
                bail!(
                    "{} server(s) not started: their definitions have mistakes (see above)",
                    report.config_errors.len()
                );
            }
            Ok(())
        }
        ControlResponse::Error { message, .. } => {
            bail!("reload failed, the running configuration is kept: {message}")
        }
        other => Err(unexpected("reload", other)),
    }
}

fn shutdown(socket: &std::path::Path, stay_down: bool) -> Result<()> {
    let mut client = ControlClient::connect(socket, REQUEST_TIMEOUT)?;
    if stay_down {
        mcpd_proto::stay_down::mark(socket).with_context(|| {
            format!(
                "cannot leave {}",
                mcpd_proto::stay_down::marker(socket).display()
            )
        })?;
    }
    match client.request(&ControlRequest::Shutdown, REQUEST_TIMEOUT)? {
        ControlResponse::Ok if stay_down => output::print(
            "mcpd is shutting down (calls in flight get up to 10 s to finish) and stays down: \
             clients' mcp-shim will not start it again until you start `mcpd` yourself\n\
             (under systemd, also `systemctl --user stop mcpd.socket`)\n",
        ),
        ControlResponse::Ok => output::print(
            "mcpd is shutting down (calls in flight get up to 10 s to finish); clients still \
             attached through mcp-shim start it again when they need it\n\
             (`mcpctl shutdown --stay-down` keeps it down)\n",
        ),
        other => {
            if stay_down {
                mcpd_proto::stay_down::clear(socket);
            }
            Err(unexpected("shutdown", other))
        }
    }
}

/// `restart`, `stop` or `start` of one server; waits until the daemon has done it.
fn server_op(socket: &std::path::Path, request: ControlRequest, done: &str) -> Result<()> {
    let name = match &request {
        ControlRequest::Restart { server }
        | ControlRequest::Stop { server }
        | ControlRequest::Start { server } => server.clone(),
        _ => String::new(),
    };
    let mut client = ControlClient::connect(socket, REQUEST_TIMEOUT)?;
    match client.request(&request, RELOAD_TIMEOUT)? {
        ControlResponse::Ok => output::print(&format!("{name}: {done}\n")),
        ControlResponse::Error { message, .. } => bail!("{message}"),
        other => Err(unexpected(done, other)),
    }
}

/// Writes `mcpctl.1` and one page per visible subcommand (`mcpctl-status.1`, ...) into `dir`.
fn man(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    let mut pages = vec![("mcpctl".to_owned(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // The file is `mcpctl-install-client.1`; its SYNOPSIS reads `mcpctl install-client`.
        let name = format!("mcpctl-{}", sub.get_name());
        let shown = format!("mcpctl {}", sub.get_name());
        pages.push((name, sub.clone().bin_name(shown)));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .title(name.clone())
            .render(&mut out)
            .with_context(|| format!("cannot render the {name} man page"))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
        output::say!("{}", path.display());
    }
    Ok(())
}

/// The error for a reply that does not answer the request that was sent.
fn unexpected(what: &str, response: ControlResponse) -> anyhow::Error {
    match response {
        ControlResponse::NoSuchServer { server, known } => no_such_server(&server, &known),
        ControlResponse::Error { message, .. } => anyhow::anyhow!("{what} failed: {message}"),
        ControlResponse::Unknown => anyhow::anyhow!(
            "{what}: mcpd sent a reply this mcpctl does not understand; \
             is mcpctl older than the daemon?"
        ),
        other => anyhow::anyhow!("{what}: mcpd sent an unexpected reply: {other:?}"),
    }
}

/// `no server named `x` (servers: a, b)`: what every command that names a server says when the
/// daemon answers [`ControlResponse::NoSuchServer`].
pub(crate) fn no_such_server(server: &str, known: &[String]) -> anyhow::Error {
    let known = if known.is_empty() {
        "none are configured".to_owned()
    } else {
        format!("servers: {}", known.join(", "))
    };
    anyhow::anyhow!("no server named `{server}` ({known})")
}
