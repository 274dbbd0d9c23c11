//! The accept loop: peer checks, the hello handshake, and handing each connection to a session
//! or control loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mcpd_proto::line::{MAX_CONTROL_LINE, MAX_MESSAGE_LINE};
use mcpd_proto::{Hello, HelloError, HelloReply, PROTOCOL_VERSION, Welcome, version};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec::{Frame, LineCodec};
use crate::config;
use crate::daemon::Daemon;
use crate::router::session::SHUTDOWN_GRACE;

/// Connections served at once; more are refused with an error line.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections of other users being refused at once; more are closed without an answer. They
/// never take one of the owner's [`MAX_CONNECTIONS`].
pub(crate) const MAX_FOREIGN_REFUSALS: usize = 32;
/// Time a peer has to send its hello.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Once the daemon stops, how long its sessions may take to end before the servers stop
/// anyway: the grace for their requests in flight, then the writer's flush (2 s) or a direct
/// session's hand-back (its 2 s grace, then at most 3 s to reach the shim).
const SESSIONS_END: Duration = SHUTDOWN_GRACE.saturating_add(Duration::from_secs(5));

/// How to run the daemon.
#[derive(Debug)]
pub struct DaemonConfig {
    /// The configuration file (it need not exist).
    pub config_path: PathBuf,
    /// Each message asks for a reload (the binary sends one per SIGHUP).
    pub reload_requests: Option<mpsc::Receiver<()>>,
    /// The runtime directory (`$XDG_RUNTIME_DIR/mcpd`): child records live in `children/`.
    pub runtime_dir: PathBuf,
    /// The catalog cache file.
    pub cache_file: PathBuf,
    /// The state directory (`$XDG_STATE_HOME/mcpd`): OAuth credentials live in
    /// `credentials/`.
    pub state_dir: PathBuf,
    /// Once the shutdown began, cancelling this ends the grace for the calls in flight at once
    /// (the binary does on a second SIGTERM or SIGINT).
    pub cut_short: CancellationToken,
}

impl DaemonConfig {
    /// A configuration read from `config_path`, with default grace periods and no reload signal.
    pub fn new(config_path: PathBuf) -> Self {
        Self {
            config_path,
            reload_requests: None,
            runtime_dir: mcpd_proto::paths::Paths::from_env().runtime_dir,
            cache_file: mcpd_proto::paths::Paths::from_env()
                .cache_dir
                .join("catalog.json"),
            state_dir: mcpd_proto::paths::Paths::from_env().state_dir,
            cut_short: CancellationToken::new(),
        }
    }
}

/// Runs the daemon on `listener` until `shutdown` is cancelled (SIGTERM, or a control client
/// asks for shutdown), then closes the listener, lets the sessions' calls in flight finish
/// (for [`SHUTDOWN_GRACE`] at most; no wait when none is), stops every upstream with the stop
/// sequence and returns.
pub async fn run(
    config: DaemonConfig,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let loaded = config::last_good::load_at_start(&config.config_path, &config.state_dir);
    let (store_kind, remote) = match &loaded {
        Ok(l) => (
            l.config.options.credential_store,
            l.config.remote_auth.clone(),
        ),
        Err(_) => Default::default(),
    };
    let auth = crate::auth::AuthManager::new(store_kind, &config.state_dir, remote)
        .map_err(anyhow::Error::msg)?;
    let daemon = Daemon::start(
        config.config_path,
        config.cache_file,
        loaded,
        config.runtime_dir,
        config.state_dir.clone(),
        auth,
        crate::daemon::StopTokens {
            shutdown: shutdown.clone(),
            cut_short: config.cut_short,
        },
    );
    // Orphans reparented to mcpd (a subreaper, see `upstream/tree.rs`) are reaped as they exit.
    let reaper = tokio::spawn(crate::upstream::tree::reaper());
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let foreign = Arc::new(Semaphore::new(MAX_FOREIGN_REFUSALS));
    let tracker = TaskTracker::new();
    // The attached sessions among the connections: the daemon waits for them to end before
    // it stops the servers.
    let sessions = TaskTracker::new();
    let mut reloads = config.reload_requests;
    tracing::info!(
        pid = std::process::id(),
        "mcpd {} ready",
        env!("CARGO_PKG_VERSION")
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = async { match reloads.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                let daemon = Arc::clone(&daemon);
                tracker.spawn(async move {
                    if let Err(message) = daemon.reload().await {
                        tracing::error!("reload refused, the running configuration is kept: {message}");
                    }
                });
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // The peer's uid is checked before a permit is taken: another user's
                    // connections never use up the owner's capacity.
                    let owner = stream.peer_cred().is_ok_and(|c| c.uid() == nix::unistd::geteuid().as_raw());
                    let permit = if owner { &limit } else { &foreign };
                    let permit = Arc::clone(permit).try_acquire_owned().ok();
                    if owner || permit.is_some() {
                        tracker.spawn(connection(Arc::clone(&daemon), stream, permit, sessions.clone()));
                    } else {
                        tracing::debug!("closed a connection of another user: {MAX_FOREIGN_REFUSALS} refusals under way");
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracing::info!("shutting down");
    // No new connections: under socket activation systemd keeps the socket and queues them for
    // the next daemon; otherwise they are refused until the next one binds it (mcp-shim tries
    // again). A connection accepted already gets no session (see `connection`).
    drop(listener);
    tracker.close();
    sessions.close();
    // The servers stop only once the sessions have ended: at once without requests in flight,
    // else when those are answered or their grace is over (`router/session/unix.rs`).
    let in_flight = daemon.requests_in_flight();
    if in_flight > 0 {
        tracing::info!(
            "waiting up to {}s for {in_flight} calls in flight before the servers stop",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    if tokio::time::timeout(SESSIONS_END, sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "some sessions did not end within {}s: their servers stop anyway",
            SESSIONS_END.as_secs()
        );
    }
    daemon.stop_all().await;
    // Whatever this run's servers left outside their trees' reach (none, normally).
    let left = crate::upstream::tree::end_marked(
        crate::upstream::tree::run_prefix(),
        Duration::from_secs(1),
    )
    .await;
    if left > 0 {
        tracing::warn!("ended {left} processes the servers left behind");
    }
    reaper.abort();
    crate::upstream::tree::reap_orphans();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn connection(
    daemon: Arc<Daemon>,
    stream: UnixStream,
    permit: Option<OwnedSemaphorePermit>,
    sessions: TaskTracker,
) {
    let my_uid = nix::unistd::geteuid().as_raw();
    let peer = stream.peer_cred();
    let (read, mut write) = stream.into_split();
    let mut reader = FramedRead::new(read, LineCodec::new(MAX_CONTROL_LINE));
    let refusal = match peer {
        Ok(cred) if cred.uid() == my_uid => None,
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "refused a connection from another user");
            Some(format!("this mcpd serves uid {my_uid} only"))
        }
        Err(e) => {
            tracing::warn!("refused a connection whose peer cannot be identified: {e}");
            return;
        }
    };
    let refusal = refusal.or_else(|| {
        permit.is_none().then(|| {
            tracing::warn!("refused a connection: {MAX_CONNECTIONS} connections are open already");
            format!("too many connections ({MAX_CONNECTIONS}); close some clients")
        })
    });
    if let Some(message) = refusal {
        // Let the peer finish writing its hello first (bounded and briefly), so that it is not
        // cut off mid-write and reads the refusal as the answer to its hello.
        let _ = tokio::time::timeout(Duration::from_secs(1), reader.next()).await;
        refuse(&mut write, message).await;
        return;
    }
    let _permit = permit;
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
        Err(_) => {
            tracing::debug!(
                "a peer sent no hello within {}s",
                HANDSHAKE_TIMEOUT.as_secs()
            );
            refuse(
                &mut write,
                format!("no hello within {}s", HANDSHAKE_TIMEOUT.as_secs()),
            )
            .await;
            return;
        }
        Ok(None | Some(Err(_))) => return,
        Ok(Some(Ok(Frame::TooLong(len)))) => {
            refuse(&mut write, format!("hello of {len} bytes is too long")).await;
            return;
        }
        Ok(Some(Ok(Frame::Line(line)))) => match serde_json::from_slice::<Hello>(&line) {
            Ok(hello) => hello,
            Err(e) => {
                refuse(&mut write, format!("not an mcpd hello ({e}); this mcpd speaks socket protocol {PROTOCOL_VERSION}")).await;
                return;
            }
        },
    };
    match hello {
        Hello::Attach(attach) => {
            if let Some(why) = version::mismatch(attach.v, "mcpd", "mcp-shim") {
                refuse(&mut write, why).await;
                return;
            }
            // Counted before the stop is looked at: a session the stop does not see yet is
            // one the daemon waits for.
            let _session = sessions.token();
            if daemon.shutdown.is_cancelled() {
                // The daemon stops: no new session. Closed without an answer, which mcp-shim
                // takes as a daemon gone away: it tries again, and reaches the next one.
                tracing::debug!("closed an attach that came while stopping");
                return;
            }
            if daemon.config().profile_servers(&attach.profile).is_none() {
                let known: Vec<String> = daemon.config().profiles.keys().cloned().collect();
                refuse(
                    &mut write,
                    format!(
                        "unknown profile `{}`; the configuration defines: default{}",
                        attach.profile,
                        known.iter().map(|p| format!(", {p}")).collect::<String>()
                    ),
                )
                .await;
                return;
            }
            let (id, in_flight) = daemon.add_session(attach.profile.clone(), attach.client.clone());
            // A relaying shim's pipes carry the session's data (docs/SHIM.md); `direct` takes
            // the client's own descriptors instead.
            let pipes = attach.pipes && !attach.direct;
            if !welcome(&mut write, Some(id), attach.direct, pipes).await {
                daemon.remove_session(id);
                return;
            }
            reader.decoder_mut().set_max(MAX_MESSAGE_LINE);
            let started = crate::router::session::Started {
                services: daemon.services(),
                id,
                profile: attach.profile,
                resume: attach.resume,
                in_flight,
            };
            if attach.direct {
                // `mcp-shim --direct` hands over the client's stdio next (docs/SHIM.md).
                let asked = crate::router::session::DirectAsked {
                    handback: attach.handback,
                    input: attach.direct_input,
                    pipes: false,
                };
                crate::router::session::serve_direct(started, reader, write, asked).await;
            } else if pipes {
                // The relaying shim hands over its pipe pair next: the same front end as
                // direct mode, on descriptors the shim made for the purpose.
                let asked = crate::router::session::DirectAsked {
                    handback: false,
                    input: 0,
                    pipes: true,
                };
                crate::router::session::serve_direct(started, reader, write, asked).await;
            } else {
                crate::router::session::serve(started, reader, write).await;
            }
        }
        Hello::Control(control) => {
            if let Some(why) = version::mismatch(control.v, "mcpd", "mcpctl") {
                refuse(&mut write, why).await;
                return;
            }
            if welcome(&mut write, None, false, false).await {
                crate::control::serve(daemon, reader, write).await;
            }
        }
        Hello::Unknown => {
            refuse(&mut write, format!("unknown operation; this mcpd (socket protocol {PROTOCOL_VERSION}) knows `attach` and `control`")).await;
        }
    }
}

async fn welcome(
    write: &mut OwnedWriteHalf,
    session: Option<u64>,
    direct: bool,
    pipes: bool,
) -> bool {
    let reply = HelloReply::Welcome(Welcome {
        v: PROTOCOL_VERSION,
        daemon: env!("CARGO_PKG_VERSION").into(),
        session,
        direct,
        // A daemon that takes the client's stdio also hands it back (to a shim that asks).
        handback: direct,
        pipes,
    });
    send_line(write, &reply).await
}

async fn refuse(write: &mut OwnedWriteHalf, message: String) {
    send_line(
        write,
        &HelloReply::Error(HelloError {
            v: PROTOCOL_VERSION,
            message,
        }),
    )
    .await;
}

async fn send_line(write: &mut OwnedWriteHalf, reply: &HelloReply) -> bool {
    let Ok(mut line) = serde_json::to_string(reply) else {
        return false;
    };
    line.push('\n');
    write.write_all(line.as_bytes()).await.is_ok()
}
