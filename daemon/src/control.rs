//! Control connections from `mcpctl`: one JSON request per line, one JSON response per line.

use std::sync::Arc;

use futures_util::StreamExt;
use mcpd_proto::control_error::ErrorCode;

use crate::control_failure::ControlFailure;
use mcpd_proto::{ControlRequest, ControlResponse, LogsReply};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

use crate::codec::{Frame, LineCodec};
use crate::daemon::Daemon;
use crate::supervisor::Operator;

/// Serves one control connection until the peer closes it or the daemon shuts down.
pub async fn serve(
    daemon: Arc<Daemon>,
    mut reader: FramedRead<OwnedReadHalf, LineCodec>,
    mut writer: OwnedWriteHalf,
) {
    loop {
        let frame = tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            frame = reader.next() => frame,
        };
        let response = match frame {
            Some(Ok(Frame::Line(line))) => match serde_json::from_slice::<ControlRequest>(&line) {
                Ok(request) if daemon.unknown_server(&request).is_some() => daemon
                    .unknown_server(&request)
                    .unwrap_or(ControlResponse::Ok),
                Ok(ControlRequest::Login { server, no_browser }) => {
                    match login(&daemon, &server, no_browser, &mut reader, &mut writer).await {
                        Some(response) => response,
                        None => return,
                    }
                }
                Ok(ControlRequest::Logs {
                    server,
                    follow,
                    limit,
                }) => {
                    if stream_logs(
                        &daemon,
                        &mut reader,
                        &mut writer,
                        server.as_deref(),
                        follow,
                        limit,
                    )
                    .await
                    {
                        continue;
                    }
                    return;
                }
                Ok(request @ ControlRequest::Traffic { .. }) => {
                    if crate::observe::traffic::stream(
                        daemon.as_ref(),
                        &mut reader,
                        &mut writer,
                        request,
                    )
                    .await
                    {
                        continue;
                    }
                    return;
                }
                Ok(request) => handle(&daemon, request).await,
                Err(e) => ControlResponse::error_with(
                    ErrorCode::BadRequest,
                    format!("not a control request: {e}"),
                ),
            },
            Some(Ok(Frame::TooLong(len))) => ControlResponse::error_with(
                ErrorCode::BadRequest,
                format!("control request of {len} bytes is too long"),
            ),
            Some(Err(_)) | None => return,
        };
        let mut line = match serde_json::to_string(&response) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!("cannot encode a control response: {e}");
                return;
            }
        };
        line.push('\n');
        if writer.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn handle(daemon: &Arc<Daemon>, request: ControlRequest) -> ControlResponse {
    match request {
        ControlRequest::Status => ControlResponse::Status(daemon.status()),
        ControlRequest::Reload => match daemon.reload().await {
            Ok(report) => ControlResponse::Reloaded(report),
            Err(e) => {
                tracing::error!("reload refused, the running configuration is kept: {e}");
                e.reply()
            }
        },
        ControlRequest::Shutdown => {
            tracing::info!("shutdown requested over the control socket");
            daemon.shutdown.cancel();
            ControlResponse::Ok
        }
        ControlRequest::Restart { server } => {
            done(daemon.control(&server, Operator::Restart).await)
        }
        ControlRequest::Stop { server } => done(daemon.control(&server, Operator::Stop).await),
        ControlRequest::Start { server } => done(daemon.control(&server, Operator::Start).await),
        ControlRequest::LoginPaste {
            server,
            redirect_url,
        } => done(daemon.auth().paste(&server, redirect_url).await),
        ControlRequest::Logout { server } => match daemon.auth().logout(&server).await {
            Ok(message) => ControlResponse::Done { message },
            Err(e) => e.reply(),
        },
        ControlRequest::SecretSet {
            name,
            profile,
            mut value,
        } => {
            let value = secrecy::SecretString::from(value.take());
            match daemon.secret_set(&name, profile.as_deref(), value).await {
                Ok(message) => ControlResponse::Done { message },
                Err(e) => e.reply(),
            }
        }
        ControlRequest::SecretRemove { name, profile } => {
            match daemon.secret_remove(&name, profile.as_deref()).await {
                Ok(message) => ControlResponse::Done { message },
                Err(e) => e.reply(),
            }
        }
        ControlRequest::SecretList => ControlResponse::Secrets {
            secrets: daemon.secret_list(),
        },
        ControlRequest::Login { .. } => {
            ControlResponse::error("login is handled by the connection loop")
        }
        // Streamed by `serve` itself.
        ControlRequest::Logs { .. } => ControlResponse::error("logs are streamed"),
        request @ (ControlRequest::ToolsDiff { .. }
        | ControlRequest::ToolsApprove { .. }
        | ControlRequest::ToolsCheck { .. }
        | ControlRequest::Traffic { .. }
        | ControlRequest::Stats) => match crate::observe::control::handle(daemon.as_ref(), request)
        {
            Ok(response) => response,
            Err(_) => ControlResponse::error("not served on this connection"),
        },
        ControlRequest::Unknown => ControlResponse::error_with(
            ErrorCode::UnknownCommand,
            format!(
                "this mcpd (version {}, protocol {}) does not know that command; is mcpctl newer than the daemon?",
                env!("CARGO_PKG_VERSION"),
                mcpd_proto::PROTOCOL_VERSION
            ),
        ),
    }
}

/// `mcpctl login`: answers `login-started` with the URL, then serves `login-paste` requests
/// on the same connection until the login ends, and returns `login-finished` as the reply to
/// send. `None`: the connection closed, which cancels the login.
async fn login(
    daemon: &Arc<Daemon>,
    server: &str,
    no_browser: bool,
    reader: &mut FramedRead<OwnedReadHalf, LineCodec>,
    writer: &mut OwnedWriteHalf,
) -> Option<ControlResponse> {
    tracing::info!(
        server,
        no_browser,
        "login requested over the control socket"
    );
    let started = match daemon.auth().login(server).await {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(server, "login failed: {e}");
            return Some(e.reply());
        }
    };
    // Dropping the guard (the connection ended, the daemon stops) cancels the login.
    let _cancel_on_drop = started.cancel.clone().drop_guard();
    if !send(writer, &ControlResponse::LoginStarted { url: started.url }).await {
        return None;
    }
    let mut done = started.done;
    loop {
        tokio::select! {
            _ = daemon.shutdown.cancelled() => return None,
            result = &mut done => {
                let response = match result {
                    Ok(Ok(message)) => ControlResponse::LoginFinished { ok: true, message },
                    Ok(Err(e)) => {
                        tracing::warn!(server, "login failed: {e}");
                        ControlResponse::LoginFinished { ok: false, message: e.to_string() }
                    }
                    Err(_) => ControlResponse::LoginFinished { ok: false, message: "the login was abandoned".into() },
                };
                return Some(response);
            }
            frame = reader.next() => {
                let reply = match frame {
                    Some(Ok(Frame::Line(line))) => match serde_json::from_slice::<ControlRequest>(&line) {
                        Ok(ControlRequest::LoginPaste { server, redirect_url }) => {
                            done_reply(daemon.auth().paste(&server, redirect_url).await)
                        }
                        Ok(ControlRequest::Status) => ControlResponse::Status(daemon.status()),
                        Ok(_) => ControlResponse::error_with(ErrorCode::Busy, "a login is under way on this connection; only login-paste and status are served until it ends"),
                        Err(e) => ControlResponse::error_with(ErrorCode::BadRequest, format!("not a control request: {e}")),
                    },
                    Some(Ok(Frame::TooLong(len))) => ControlResponse::error_with(ErrorCode::BadRequest, format!("control request of {len} bytes is too long")),
                    Some(Err(_)) | None => return None,
                };
                if !send(writer, &reply).await {
                    return None;
                }
            }
        }
    }
}

fn done_reply(result: Result<(), impl ControlFailure>) -> ControlResponse {
    done(result)
}

/// `ok`, or the error's whole message and its code.
fn done(result: Result<(), impl ControlFailure>) -> ControlResponse {
    match result {
        Ok(()) => ControlResponse::Ok,
        Err(e) => e.reply(),
    }
}

/// Sends the recent log lines in batches under the line cap and, with `follow`, every new line
/// until the peer goes away or the daemon stops. `false` when the connection is done.
async fn stream_logs(
    daemon: &Arc<Daemon>,
    reader: &mut FramedRead<OwnedReadHalf, LineCodec>,
    writer: &mut OwnedWriteHalf,
    server: Option<&str>,
    follow: bool,
    limit: Option<usize>,
) -> bool {
    // Subscribe before the snapshot so that no line falls between the two.
    let mut feed = crate::logging::ring().subscribe();
    let batches = crate::logging::ring().snapshot_batches(
        server,
        limit,
        mcpd_proto::line::MAX_CONTROL_LINE - 256,
    );
    let last = batches.len().saturating_sub(1);
    let mut seen = 0;
    for (i, lines) in batches.into_iter().enumerate() {
        seen = lines.last().map_or(seen, |l| l.seq);
        let reply = ControlResponse::Logs(LogsReply {
            lines,
            more: i < last,
            dropped: None,
        });
        if !send(writer, &reply).await {
            return false;
        }
    }
    if !follow {
        return true;
    }
    loop {
        let line = tokio::select! {
            _ = daemon.shutdown.cancelled() => return false,
            // A follower sends nothing more; its end of input is the end of the connection.
            _ = reader.next() => return false,
            line = feed.recv() => line,
        };
        let reply = match line {
            Ok(line) if line.seq <= seen || !crate::logging::matches_server(&line, server) => {
                continue;
            }
            Ok(line) => LogsReply {
                lines: vec![line],
                more: false,
                dropped: None,
            },
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => LogsReply {
                lines: Vec::new(),
                more: false,
                dropped: Some(n),
            },
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
        };
        if !send(writer, &ControlResponse::Logs(reply)).await {
            return false;
        }
    }
}

async fn send(writer: &mut OwnedWriteHalf, response: &ControlResponse) -> bool {
    let Ok(mut line) = serde_json::to_string(response) else {
        return false;
    };
    line.push('\n');
    writer.write_all(line.as_bytes()).await.is_ok()
}
