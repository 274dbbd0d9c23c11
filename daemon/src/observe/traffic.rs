//! Live traffic for `mcpctl traffic`: every MCP message between clients and mcpd, as it
//! happens.
//!
//! Sessions publish each line they read and write on a `broadcast` channel, and only while a
//! viewer is attached (one atomic load otherwise). Publishing never waits: the channel is a
//! ring of [`RING`] messages; a viewer that falls behind (or stops reading, so that its socket
//! fills) loses the oldest ones and is told how many (`missed`). Everything costly happens in
//! the viewer's own control task: parsing, working out the server, summaries, redaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use mcpd_proto::envelope::{Envelope, Kind, member};
use mcpd_proto::observe::{Direction, TrafficMessage, TrafficReply};
use mcpd_proto::{ControlRequest, ControlResponse};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast;
use tokio_util::codec::FramedRead;

use super::Host;
use crate::codec::LineCodec;
use crate::upstream::ListKind;

/// Messages kept for viewers; a viewer further behind misses the oldest.
pub const RING: usize = 4096;
/// At most this many messages go in one reply line.
const BATCH: usize = 256;

/// One message as a session saw it.
#[derive(Debug, Clone)]
pub struct Tap {
    seq: u64,
    time_ms: u64,
    session: u64,
    direction: Direction,
    line: Bytes,
}

/// The publishing side.
#[derive(Debug)]
pub struct Traffic {
    tx: broadcast::Sender<Arc<Tap>>,
    seq: AtomicU64,
}

impl Default for Traffic {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(RING);
        Self {
            tx,
            seq: AtomicU64::new(0),
        }
    }
}

impl Traffic {
    /// Whether anybody is watching (sessions skip everything else when not).
    pub fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Publishes one line; never waits.
    pub fn publish(&self, session: u64, direction: Direction, line: Bytes) {
        if !self.watched() {
            return;
        }
        let tap = Tap {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time_ms: mcpd_proto::observe::now_ms(),
            session,
            direction,
            line,
        };
        let _ = self.tx.send(Arc::new(tap));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Tap>> {
        self.tx.subscribe()
    }
}

/// Serves `mcpctl traffic` on a control connection until the viewer goes away or the daemon
/// stops. `false` when the connection is done.
pub async fn stream(
    daemon: &dyn Host,
    reader: &mut FramedRead<OwnedReadHalf, LineCodec>,
    writer: &mut OwnedWriteHalf,
    request: ControlRequest,
) -> bool {
    let ControlRequest::Traffic {
        server,
        session,
        full,
    } = request
    else {
        return false;
    };
    let mut feed = daemon.observer().traffic.subscribe();
    if !send(writer, TrafficReply::default()).await {
        return false;
    }
    let redactor = daemon.redactor().clone();
    // Requests seen, by (session, raw id): their server, so that answers can be attributed.
    let mut servers: HashMap<(u64, String), String> = HashMap::new();
    loop {
        let first = tokio::select! {
            _ = daemon.shutdown().cancelled() => return false,
            // A viewer sends nothing more; its end of input ends the connection.
            _ = reader.next() => return false,
            tap = feed.recv() => tap,
        };
        let mut reply = TrafficReply::default();
        let mut next = Some(first);
        while let Some(received) = next.take() {
            match received {
                Ok(tap) => {
                    if session.is_none_or(|s| s == tap.session)
                        && let Some(message) = describe(daemon, &tap, &mut servers, full, &redactor)
                        && server
                            .as_deref()
                            .is_none_or(|s| message.server.as_deref() == Some(s))
                    {
                        reply.messages.push(message);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    *reply.missed.get_or_insert(0) += n;
                }
                Err(broadcast::error::RecvError::Closed) => return false,
            }
            if reply.messages.len() < BATCH {
                next = match feed.try_recv() {
                    Ok(tap) => Some(Ok(tap)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        Some(Err(broadcast::error::RecvError::Lagged(n)))
                    }
                    Err(_) => None,
                };
            }
        }
        if servers.len() > 100_000 {
            servers.clear();
        }
        if reply.messages.is_empty() && reply.missed.is_none() {
            continue;
        }
        if !send(writer, reply).await {
            return false;
        }
    }
}

async fn send(writer: &mut OwnedWriteHalf, reply: TrafficReply) -> bool {
    let Ok(mut line) = serde_json::to_string(&ControlResponse::Traffic(reply)) else {
        return false;
    };
    line.push('\n');
    writer.write_all(line.as_bytes()).await.is_ok()
}

/// The message as the viewer shows it: its server (when it concerns one), a summary, and with
/// `full` the whole message, secrets redacted.
fn describe(
    daemon: &dyn Host,
    tap: &Tap,
    servers: &mut HashMap<(u64, String), String>,
    full: bool,
    redactor: &crate::redact::Redactor,
) -> Option<TrafficMessage> {
    let text = std::str::from_utf8(&tap.line).ok()?;
    let (server, summary) = match Envelope::parse(text) {
        Ok(msg) => summarize(daemon, tap, &msg, servers),
        Err(e) => (None, format!("(not JSON-RPC: {e})")),
    };
    Some(TrafficMessage {
        seq: tap.seq,
        time_ms: tap.time_ms,
        session: tap.session,
        direction: tap.direction,
        server,
        summary: redactor.redact(&summary).into_owned(),
        bytes: tap.line.len(),
        json: full.then(|| redactor.redact(text).into_owned()),
    })
}

fn summarize(
    daemon: &dyn Host,
    tap: &Tap,
    msg: &Envelope<'_>,
    servers: &mut HashMap<(u64, String), String>,
) -> (Option<String>, String) {
    let id = msg.id.map(|i| i.get().to_owned());
    match msg.kind() {
        Kind::Request => {
            let method = msg.method();
            let param = |key: &str| {
                msg.params
                    .and_then(|p| member(p, key))
                    .and_then(|v| mcpd_proto::envelope::decode_str(v).ok())
                    .map(|s| s.into_owned())
            };
            let (name, server) = match (tap.direction, method) {
                (Direction::In, "tools/call") => {
                    let name = param("name");
                    let server = name
                        .as_deref()
                        .and_then(|n| daemon.owner(ListKind::Tools, n));
                    (name, server)
                }
                (Direction::In, "prompts/get") => {
                    let name = param("name");
                    let server = name
                        .as_deref()
                        .and_then(|n| daemon.owner(ListKind::Prompts, n));
                    (name, server)
                }
                (
                    Direction::In,
                    "resources/read" | "resources/subscribe" | "resources/unsubscribe",
                ) => {
                    let uri = param("uri");
                    let server = uri.as_deref().and_then(|u| daemon.resource_owner(u));
                    (uri, server)
                }
                // Requests upstreams send to a client carry `mcpd:<server>:<n>` ids.
                (Direction::Out, _) => (
                    None,
                    id.as_deref()
                        .and_then(|i| i.strip_prefix("\"mcpd:"))
                        .and_then(|rest| rest.split(':').next())
                        .map(str::to_owned),
                ),
                _ => (None, None),
            };
            if let (Some(id), Some(server)) = (&id, &server) {
                servers.insert((tap.session, id.clone()), server.clone());
            }
            let mut summary = method.to_owned();
            if let Some(name) = name {
                summary.push(' ');
                summary.push_str(&name);
            }
            if let Some(id) = &id {
                summary.push_str(&format!(" id={id}"));
            }
            (server, summary)
        }
        Kind::Response => {
            let server = id
                .as_ref()
                .and_then(|i| servers.remove(&(tap.session, i.clone())));
            let outcome = match msg.error {
                Some(error) => {
                    let code = member(error, "code").map(|c| c.get().to_owned());
                    let message = member(error, "message")
                        .and_then(|m| mcpd_proto::envelope::decode_str(m).ok())
                        .map(|m| m.chars().take(120).collect::<String>());
                    format!(
                        "error {}{}",
                        code.unwrap_or_default(),
                        message.map(|m| format!(" {m}")).unwrap_or_default()
                    )
                }
                None => {
                    let is_error = msg
                        .result
                        .and_then(|r| member(r, "isError"))
                        .is_some_and(|v| v.get() == "true");
                    if is_error {
                        "result (isError)"
                    } else {
                        "result"
                    }
                    .to_owned()
                }
            };
            (
                server,
                format!("id={} {outcome}", id.unwrap_or_else(|| "null".into())),
            )
        }
        Kind::Notification => (None, msg.method().to_owned()),
    }
}
