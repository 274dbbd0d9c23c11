//! The `mcpd` binary: flags, logging, the socket, signals and service-manager notices;
//! everything else is `mcpd::run`.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mcpd::logging::{self, LogTarget};
use mcpd::notify;
use mcpd_proto::paths::Paths;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Per-user MCP daemon: runs each MCP server once and shares it among all clients.
#[derive(Debug, Parser)]
#[command(name = "mcpd", version, about)]
struct Args {
    /// Configuration file [default: $XDG_CONFIG_HOME/mcpd/config.json].
    #[arg(long, env = "MCPD_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Socket to listen on [default: $XDG_RUNTIME_DIR/mcpd/mcpd.sock]; ignored when systemd
    /// passes the socket (socket activation).
    #[arg(long, env = "MCPD_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Where the log goes: the journal when stderr is connected to it (auto), or always one.
    #[arg(long, value_enum, default_value_t = LogTarget::Auto, value_name = "TARGET")]
    log: LogTarget,
    /// Run in the foreground (the default; accepted for service managers that pass it).
    #[arg(long, hide = true)]
    foreground: bool,
}

/// The listening socket and whether its file is ours to remove at exit.
enum Socket {
    /// Bound by this process at this path: removed at exit, unless another daemon has
    /// replaced it meanwhile (see `serve`).
    Bound(tokio::net::UnixListener, PathBuf),
    /// Passed by the service manager: its file is systemd's and is never unlinked.
    Inherited(std::os::unix::net::UnixListener),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log_target = logging::init(args.log, args.verbose);
    // Tokens will live in this process's memory: keep it out of core dumps and ptrace.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!("cannot disable core dumps: {e}");
    }
    // Orphaned descendants of servers (a grandchild that called setsid() and whose parent
    // exited) are reparented to mcpd instead of init, so that their server's stop ends them.
    if let Err(e) = mcpd::upstream::tree::become_subreaper() {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    match mcpd::raise_open_files() {
        Ok(Some((was, now))) => {
            tracing::debug!("open files: raised the soft limit from {was} to {now}")
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(
            "cannot raise the open-files limit ({e}); sessions beyond it are refused"
        ),
    }
    // Before the runtime starts threads: adopting the socket edits the environment.
    let inherited = match mcpd::listener::inherited() {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mcpd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match mcpd::runtime::build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcpd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::debug!(log = log_target, "logging set up");
    match runtime.block_on(serve(args, inherited)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            if log_target != "stderr" {
                eprintln!("mcpd: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    args: Args,
    inherited: Option<std::os::unix::net::UnixListener>,
) -> anyhow::Result<()> {
    let paths = Paths::from_env();
    let config_path = args.config.unwrap_or(paths.config_file);
    let socket = match inherited {
        Some(listener) => Socket::Inherited(listener),
        None => {
            let path = args.socket.unwrap_or(paths.socket);
            Socket::Bound(mcpd::listener::bind(&path)?, path)
        }
    };
    let (listener, owned_path) = match socket {
        Socket::Bound(listener, path) => {
            // An explicit start ends `mcpctl shutdown --stay-down`: shims may start it again.
            mcpd_proto::stay_down::clear(&path);
            tracing::info!(socket = %path.display(), config = %config_path.display(), "listening");
            // The socket file as bound: while this daemon lets its calls in flight finish,
            // its listener is closed already, so a daemon started meanwhile (a shim's
            // autostart) finds it stale and binds its own; that one is not ours to remove.
            let bound = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
            (listener, Some((path, bound)))
        }
        Socket::Inherited(std_listener) => {
            let at = mcpd::listener::local_path(&std_listener)
                .map_or_else(|| "?".to_owned(), |p| p.display().to_string());
            tracing::info!(socket = %at, config = %config_path.display(), "listening on the socket systemd passed");
            let listener = tokio::net::UnixListener::from_std(std_listener)
                .context("cannot use the socket systemd passed")?;
            (listener, None)
        }
    };

    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let on_signal = shutdown.clone();
    // A second SIGTERM or SIGINT (an impatient Ctrl-C) ends the grace for the calls in flight.
    let cut_short = CancellationToken::new();
    let on_second = cut_short.clone();
    let stop = move |name: &str| {
        if on_signal.is_cancelled() {
            tracing::info!("{name} again: the calls in flight are cut short");
            on_second.cancel();
        } else {
            tracing::info!("{name}");
            on_signal.cancel();
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => stop("SIGTERM"),
                _ = int.recv() => stop("SIGINT"),
                _ = hup.recv() => {
                    // The daemon sends RELOADING=1 and, when done, READY=1 with the result.
                    tracing::info!("SIGHUP: reloading");
                    if reload_tx.try_send(()).is_err() {
                        tracing::info!("a reload is already pending");
                    }
                }
            }
        }
    });
    // STOPPING=1 as soon as the stop begins, whoever asked for it (signal or `mcpctl shutdown`).
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        notify::notify_stopping();
    });

    let mut config = mcpd::DaemonConfig::new(config_path);
    config.reload_requests = Some(reload_rx);
    config.cut_short = cut_short;
    // The socket is bound and queues connections from here on; the daemon accepts them as soon
    // as `run` has read its configuration.
    notify::notify_ready("accepting connections");
    let result = mcpd::run(config, listener, shutdown).await;
    if let Some((path, bound)) = owned_path {
        let now = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
        if now.is_some() && now != bound {
            tracing::info!(
                "{} is another daemon's socket now: left in place",
                path.display()
            );
        } else if let Err(e) = std::fs::remove_file(&path) {
            tracing::debug!("cannot remove {}: {e}", path.display());
        }
    }
    result
}
