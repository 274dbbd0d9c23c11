//! Control connections from `mcpctl`: one JSON request per line, one JSON response per line.

use std::sync::Arc;

use futures_util::StreamExt;
use mcpd_proto::{ControlRequest, ControlResponse};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

use crate::codec::{Frame, LineCodec};
use crate::daemon::Daemon;
use crate::upstream::ControlOp;

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
                Ok(request) => handle(&daemon, request).await,
                Err(e) => ControlResponse::Error {
                    message: format!("not a control request: {e}"),
                },
            },
            Some(Ok(Frame::TooLong(len))) => ControlResponse::Error {
                message: format!("control request of {len} bytes is too long"),
            },
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
            Err(message) => {
                tracing::error!("reload refused, the running configuration is kept: {message}");
                ControlResponse::Error { message }
            }
        },
        ControlRequest::Shutdown => {
            tracing::info!("shutdown requested over the control socket");
            daemon.shutdown.cancel();
            ControlResponse::Ok
        }
        ControlRequest::Restart { server } => {
            done(daemon.control(&server, ControlOp::Restart).await)
        }
        ControlRequest::Stop { server } => done(daemon.control(&server, ControlOp::Stop).await),
        ControlRequest::Start { server } => done(daemon.control(&server, ControlOp::Start).await),
        ControlRequest::Unknown => ControlResponse::Error {
            message: format!(
                "this mcpd (version {}, protocol {}) does not know that command; is mcpctl newer than the daemon?",
                env!("CARGO_PKG_VERSION"),
                mcpd_proto::PROTOCOL_VERSION
            ),
        },
    }
}

fn done(result: Result<(), String>) -> ControlResponse {
    match result {
        Ok(()) => ControlResponse::Ok,
        Err(message) => ControlResponse::Error { message },
    }
}
