//! The `mcpd` binary: flags, logging, the socket, signals; everything else is `mcpd::run`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
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
    /// Socket to listen on [default: $XDG_RUNTIME_DIR/mcpd/mcpd.sock].
    #[arg(long, env = "MCPD_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Run in the foreground (the default; accepted for service managers that pass it).
    #[arg(long, hide = true)]
    foreground: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    // Tokens will live in this process's memory: keep it out of core dumps and ptrace.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!("cannot disable core dumps: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcpd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mcpd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let paths = Paths::from_env();
    let config_path = args.config.unwrap_or(paths.config_file);
    let socket = args.socket.unwrap_or(paths.socket);
    let listener = mcpd::listener::bind(&socket)?;
    tracing::info!(socket = %socket.display(), config = %config_path.display(), "listening");

    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM"); on_signal.cancel(); }
                _ = int.recv() => { tracing::info!("SIGINT"); on_signal.cancel(); }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading"); let _ = reload_tx.try_send(()); }
            }
        }
    });

    let mut config = mcpd::DaemonConfig::new(config_path);
    config.reload_requests = Some(reload_rx);
    let result = mcpd::run(config, listener, shutdown).await;
    if let Err(e) = std::fs::remove_file(&socket) {
        tracing::debug!("cannot remove {}: {e}", socket.display());
    }
    result
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
