//! One MCP session: a client attached through `mcp-shim`.
//!
//! The session answers `initialize`, `ping` and the list requests itself from the merged
//! catalog, and forwards `tools/call` to the owning upstream with its `id` and tool name
//! rewritten by splicing (see `mcpd_proto::envelope`). Each forwarded request runs as its own
//! task so that a slow tool never holds up the session; the task's [`CancelGuard`] tells the
//! upstream with `notifications/cancelled` if the client cancels, times out or goes away.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use mcpd_proto::Resume;
use mcpd_proto::envelope::{self, Envelope, Kind, field};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::catalog::SharedCatalog;
use crate::codec::{Frame, LineCodec};
use crate::daemon::Daemon;
use crate::upstream::UpstreamHandle;

/// Protocol revisions a client may ask for, newest first.
pub const SUPPORTED_PROTOCOLS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// Lines queued for the client before senders wait.
const OUT_QUEUE: usize = 1024;
/// Requests of one session in flight at once.
const MAX_IN_FLIGHT: usize = 1024;

/// Serves one attached session until the client goes away or the daemon shuts down.
pub async fn serve(
    daemon: Arc<Daemon>,
    id: u64,
    profile: String,
    resume: Option<Resume>,
    in_flight: Arc<AtomicUsize>,
    mut reader: FramedRead<OwnedReadHalf, LineCodec>,
    writer: OwnedWriteHalf,
) {
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer = tokio::spawn(write_lines(writer, out_rx));
    let mut session = Session {
        id,
        catalog: daemon.catalog(),
        daemon: Arc::clone(&daemon),
        profile,
        out,
        initialized: false,
        announced: None,
        tasks: JoinSet::new(),
        aborts: HashMap::new(),
        in_flight,
    };
    match resume {
        Some(resume) => {
            // The shim lost its connection (the daemon restarted) and the client does not know:
            // continue as the client's original `initialize` left the session.
            let params =
                serde_json::from_value::<InitializeParams>(resume.initialize).unwrap_or_default();
            let version = session.apply_initialize(params);
            session.initialized = resume.initialized;
            tracing::info!(session = id, previous = ?resume.previous_session, protocol = version, "session resumed");
        }
        None => tracing::debug!(session = id, "attached"),
    }
    loop {
        tokio::select! {
            _ = daemon.shutdown.cancelled() => break,
            frame = reader.next() => match frame {
                Some(Ok(Frame::Line(line))) => session.on_line(line.freeze()).await,
                Some(Ok(Frame::TooLong(len))) => {
                    let msg = format!(
                        "message of {len} bytes dropped: over the limit of {} bytes",
                        mcpd_proto::line::MAX_MESSAGE_LINE
                    );
                    session.send(envelope::error_response(None, envelope::INVALID_REQUEST, &msg)).await;
                }
                Some(Err(e)) => {
                    tracing::debug!(session = id, "read error: {e}");
                    break;
                }
                None => break,
            },
            changed = session.catalog.changed() => {
                if changed.is_err() {
                    break;
                }
                session.on_catalog_changed().await;
            }
            Some(done) = session.tasks.join_next(), if !session.tasks.is_empty() => {
                if let Ok(key) = done {
                    session.aborts.remove(&key);
                }
                session.in_flight.store(session.aborts.len(), Ordering::Relaxed);
            }
        }
    }
    // Dropping the tasks aborts them; their guards cancel what is still pending upstream.
    session.tasks.abort_all();
    drop(session.out);
    daemon.remove_session(id);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    tracing::debug!(session = id, "detached");
}

async fn write_lines(writer: OwnedWriteHalf, mut rx: mpsc::Receiver<String>) {
    let mut w = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(line) = rx.recv().await {
        if w.write_all(line.as_bytes()).await.is_err() || w.write_all(b"\n").await.is_err() {
            return;
        }
        // Batch what is already queued into one write; flush when the queue is drained.
        if rx.is_empty() && w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.flush().await;
}

struct Session {
    id: u64,
    daemon: Arc<Daemon>,
    catalog: watch::Receiver<SharedCatalog>,
    profile: String,
    out: mpsc::Sender<String>,
    /// The client sent `notifications/initialized`.
    initialized: bool,
    /// Fingerprint of the tools the client was last told about.
    announced: Option<u64>,
    /// Forwarded requests in flight, each keyed by the client's raw id.
    tasks: JoinSet<String>,
    aborts: HashMap<String, AbortHandle>,
    in_flight: Arc<AtomicUsize>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct InitializeParams {
    #[serde(default)]
    protocol_version: Option<String>,
    #[serde(default)]
    client_info: Option<ClientInfo>,
}

#[derive(Deserialize, Default)]
struct ClientInfo {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
}

impl Session {
    async fn send(&self, line: String) {
        // The writer only goes away with the connection, when nobody is left to tell.
        let _ = self.out.send(line).await;
    }

    fn servers(&self) -> Vec<String> {
        self.daemon
            .config()
            .profile_servers(&self.profile)
            .unwrap_or_default()
    }

    async fn on_line(&mut self, line: Bytes) {
        let Ok(text) = std::str::from_utf8(&line) else {
            self.send(envelope::error_response(
                None,
                envelope::PARSE_ERROR,
                "parse error: the message is not UTF-8",
            ))
            .await;
            return;
        };
        let msg = match Envelope::parse(text) {
            Ok(msg) => msg,
            Err(e) => {
                self.send(envelope::error_response(None, e.code(), &e.to_string()))
                    .await;
                return;
            }
        };
        match msg.kind() {
            Kind::Request => self.on_request(&msg, &line).await,
            Kind::Notification => self.on_notification(&msg),
            Kind::Response => {
                tracing::debug!(
                    session = self.id,
                    "dropped a response to a request mcpd did not send"
                );
            }
        }
    }

    async fn on_request(&mut self, msg: &Envelope<'_>, line: &Bytes) {
        let id = msg.id.unwrap_or(RawValue::NULL);
        match msg.method() {
            "initialize" => {
                let answer = self.initialize(msg, id);
                self.send(answer).await;
            }
            "ping" => self.send(envelope::response(id, &json!({}))).await,
            "tools/list" | "tools/call" => {
                if self.aborts.len() >= MAX_IN_FLIGHT {
                    let answer = envelope::error_response(
                        Some(id),
                        envelope::UPSTREAM_BUSY,
                        "too many requests in flight on this session",
                    );
                    self.send(answer).await;
                    return;
                }
                let key = id.get().to_owned();
                let ctx = RequestContext {
                    daemon: Arc::clone(&self.daemon),
                    catalog: self.catalog.clone(),
                    servers: self.servers(),
                    out: self.out.clone(),
                    line: line.clone(),
                };
                let task_key = key.clone();
                let abort = if msg.method() == "tools/list" {
                    self.tasks.spawn(async move {
                        ctx.list_tools().await;
                        task_key
                    })
                } else {
                    self.tasks.spawn(async move {
                        ctx.call_tool().await;
                        task_key
                    })
                };
                self.aborts.insert(key, abort);
                self.in_flight.store(self.aborts.len(), Ordering::Relaxed);
            }
            "server/discover" => {
                let answer = envelope::error_response(
                    Some(id),
                    envelope::METHOD_NOT_FOUND,
                    "Method not found: server/discover (this mcpd speaks MCP 2025-11-25 and earlier; use initialize)",
                );
                self.send(answer).await;
            }
            method => {
                let answer = envelope::error_response(
                    Some(id),
                    envelope::METHOD_NOT_FOUND,
                    &format!("Method not found: {method}"),
                );
                self.send(answer).await;
            }
        }
    }

    fn initialize(&mut self, msg: &Envelope<'_>, id: &RawValue) -> String {
        let params: InitializeParams = msg
            .params
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or_default();
        let version = self.apply_initialize(params);
        envelope::response(
            id,
            &json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": true}},
                "serverInfo": {"name": "mcpd", "version": env!("CARGO_PKG_VERSION")},
            }),
        )
    }

    /// Takes in what the client said in `initialize`; returns the protocol version agreed.
    fn apply_initialize(&mut self, params: InitializeParams) -> &'static str {
        let version = params
            .protocol_version
            .as_deref()
            .and_then(|v| SUPPORTED_PROTOCOLS.iter().find(|s| **s == v))
            .copied()
            .unwrap_or(SUPPORTED_PROTOCOLS[0]);
        if let Some(info) = params.client_info {
            tracing::info!(session = self.id, client = %info.name, version = %info.version, protocol = version, "client initialized");
            self.daemon
                .set_client_info(self.id, info.name, info.version);
        }
        let catalog = self.catalog.borrow_and_update().clone();
        self.announced = Some(catalog.fingerprint(&self.servers()));
        version
    }

    fn on_notification(&mut self, msg: &Envelope<'_>) {
        match msg.method() {
            "notifications/initialized" => self.initialized = true,
            "notifications/cancelled" => {
                let request = msg
                    .params
                    .and_then(|p| field(p, "requestId").ok().flatten());
                if let Some(abort) = request.and_then(|r| self.aborts.remove(r.get())) {
                    // The task's guard tells the upstream; no response goes to the client.
                    abort.abort();
                    self.in_flight.store(self.aborts.len(), Ordering::Relaxed);
                }
            }
            other => tracing::debug!(session = self.id, method = other, "notification ignored"),
        }
    }

    async fn on_catalog_changed(&mut self) {
        let catalog = self.catalog.borrow_and_update().clone();
        let now = catalog.fingerprint(&self.servers());
        if self.announced.is_some_and(|seen| seen != now) {
            self.announced = Some(now);
            if self.initialized {
                self.send(envelope::notification::<()>(
                    "notifications/tools/list_changed",
                    None,
                ))
                .await;
            }
        }
    }
}

/// What a forwarded request's task needs, owned.
struct RequestContext {
    daemon: Arc<Daemon>,
    catalog: watch::Receiver<SharedCatalog>,
    servers: Vec<String>,
    out: mpsc::Sender<String>,
    line: Bytes,
}

impl RequestContext {
    fn message(&self) -> Option<Envelope<'_>> {
        std::str::from_utf8(&self.line)
            .ok()
            .and_then(|t| Envelope::parse(t).ok())
    }

    async fn reply(&self, line: String) {
        let _ = self.out.send(line).await;
    }

    /// Waits, at most the configured list wait, until none of this session's servers is still
    /// starting for the first time, and returns the catalog then.
    async fn settled_catalog(&mut self) -> SharedCatalog {
        let deadline = Instant::now() + self.daemon.config().options.list_wait;
        loop {
            let catalog = self.catalog.borrow_and_update().clone();
            let waiting = self.servers.iter().any(|s| catalog.pending.contains(s));
            if !waiting {
                return catalog;
            }
            match tokio::time::timeout_at(deadline, self.catalog.changed()).await {
                Ok(Ok(())) => continue,
                _ => return catalog,
            }
        }
    }

    async fn list_tools(mut self) {
        let catalog = self.settled_catalog().await;
        let Some(msg) = self.message() else { return };
        let id = msg.id.unwrap_or(RawValue::NULL);
        let cursor = msg.params.and_then(|p| field(p, "cursor").ok().flatten());
        let offset = match cursor.map(|c| serde_json::from_str::<Option<String>>(c.get())) {
            None | Some(Ok(None)) => 0,
            Some(Ok(Some(c))) => match c
                .strip_prefix("mcpd:")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) => n,
                None => {
                    let answer = envelope::error_response(
                        Some(id),
                        envelope::INVALID_PARAMS,
                        "invalid cursor",
                    );
                    self.reply(answer).await;
                    return;
                }
            },
            Some(Err(_)) => {
                let answer = envelope::error_response(
                    Some(id),
                    envelope::INVALID_PARAMS,
                    "invalid cursor: not a string",
                );
                self.reply(answer).await;
                return;
            }
        };
        let page_size = self.daemon.config().options.page_size;
        let tools: Vec<&str> = catalog
            .view(&self.servers)
            .skip(offset)
            .take(page_size + 1)
            .map(|t| t.json.as_str())
            .collect();
        let more = tools.len() > page_size;
        let page = &tools[..tools.len().min(page_size)];
        let mut result =
            String::with_capacity(page.iter().map(|t| t.len() + 1).sum::<usize>() + 64);
        result.push_str("{\"tools\":[");
        result.push_str(&page.join(","));
        result.push(']');
        if more {
            result.push_str(&format!(",\"nextCursor\":\"mcpd:{}\"", offset + page_size));
        }
        result.push('}');
        // Both parts are JSON already: the id as the client wrote it, tools as upstreams did.
        let answer = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{result}}}",
            id.get()
        );
        self.reply(answer).await;
    }

    async fn call_tool(mut self) {
        let Some(name) = self
            .message()
            .and_then(|m| m.params)
            .and_then(|p| field(p, "name").ok().flatten())
            .and_then(|n| envelope::decode_str(n).ok())
            .map(|n| n.into_owned())
        else {
            let id = self.message().and_then(|m| m.id.map(|i| i.to_owned()));
            let answer = envelope::error_response(
                id.as_deref(),
                envelope::INVALID_PARAMS,
                "tools/call needs params.name, a string",
            );
            self.reply(answer).await;
            return;
        };
        let mut catalog = self.catalog.borrow().clone();
        if catalog.tool(&name).is_none() {
            // Its server may still be starting for the first time.
            catalog = self.settled_catalog().await;
        }
        let Some(msg) = self.message() else { return };
        let id = msg.id.unwrap_or(RawValue::NULL);
        let tool = catalog
            .tool(&name)
            .filter(|t| self.servers.contains(&t.server));
        let Some(tool) = tool else {
            let answer = envelope::error_response(
                Some(id),
                envelope::INVALID_PARAMS,
                &format!("Unknown tool: {name}"),
            );
            self.reply(answer).await;
            return;
        };
        let Some(upstream) = self.daemon.upstream(&tool.server) else {
            let answer = envelope::error_response(
                Some(id),
                envelope::UPSTREAM_UNAVAILABLE,
                &format!(
                    "server `{}` is not running (it is being reloaded or was removed)",
                    tool.server
                ),
            );
            self.reply(answer).await;
            return;
        };
        let upstream_id = upstream.allocate_id();
        let mut rewrite = msg.rewrite();
        rewrite.replace(id, upstream_id.to_string());
        if let Some(name_raw) = msg.params.and_then(|p| field(p, "name").ok().flatten()) {
            rewrite.replace(
                name_raw,
                serde_json::to_string(&tool.original).unwrap_or_default(),
            );
        }
        let line = rewrite.finish();
        let client_id = id.to_owned();
        let answer = forward(&upstream, upstream_id, line, client_id).await;
        self.reply(answer).await;
    }
}

/// Sends a rewritten request upstream and waits for its answer within the server's timeout.
async fn forward(
    upstream: &UpstreamHandle,
    upstream_id: u64,
    line: String,
    client_id: Box<RawValue>,
) -> String {
    let error = |code, message: &str| envelope::error_response(Some(&client_id), code, message);
    let rx = match upstream.request(upstream_id, line, client_id.clone()) {
        Ok(rx) => rx,
        Err(e) => return error(e.code, &e.message),
    };
    let mut guard = CancelGuard {
        upstream,
        upstream_id,
        reason: "cancelled by the client",
        armed: true,
    };
    let timeout = upstream.request_timeout();
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(answer))) => {
            guard.armed = false;
            answer
        }
        Ok(Ok(Err(e))) => {
            guard.armed = false;
            error(e.code, &e.message)
        }
        Ok(Err(_)) => {
            guard.armed = false;
            error(
                envelope::UPSTREAM_LOST,
                &format!("server `{}` dropped the request", upstream.name()),
            )
        }
        Err(_) => {
            guard.reason = "timed out in mcpd";
            error(
                envelope::REQUEST_TIMEOUT,
                &format!(
                    "server `{}` did not answer within {}s",
                    upstream.name(),
                    timeout.as_secs()
                ),
            )
        }
    }
}

/// Cancels a forwarded request upstream unless it completed.
struct CancelGuard<'a> {
    upstream: &'a UpstreamHandle,
    upstream_id: u64,
    reason: &'static str,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.upstream.cancel(self.upstream_id, self.reason);
        }
    }
}
