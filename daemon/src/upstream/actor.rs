//! The upstream actor: owns one server's process and pending-request table, restarts it with
//! backoff when it dies, and publishes its state.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use mcpd_proto::ServerState;
use mcpd_proto::envelope::{self, Envelope, Kind, field};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::process::{Process, StopTimeouts, describe_exit};
use super::{Command, Reply, RouteError, Snapshot, UpstreamTool};
use crate::codec::Frame;
use crate::config::ServerSpec;

/// The protocol revision mcpd asks upstreams for.
pub const UPSTREAM_PROTOCOL: &str = "2025-11-25";
/// Requests held while the server is starting, beyond which callers are told it is busy.
const MAX_DEFERRED: usize = 1024;
/// Pages of `tools/list` followed before the listing is cut off (a server that loops).
const MAX_LIST_PAGES: usize = 1000;
/// First restart delay; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long resets the backoff.
const STABLE_RUN: Duration = Duration::from_secs(60);

enum Pending {
    Client {
        client_id: Box<RawValue>,
        reply: oneshot::Sender<Reply>,
    },
    Initialize,
    ListTools {
        acc: Vec<UpstreamTool>,
        pages: usize,
    },
}

enum Outcome {
    /// Stopped on request; the actor ends.
    Stopped,
    /// The process died or misbehaved; it is started again after a delay.
    Failed(String),
}

pub(super) struct Actor {
    name: Arc<str>,
    spec: Arc<ServerSpec>,
    rx: mpsc::Receiver<Command>,
    snapshot: watch::Sender<Snapshot>,
    catalog_dirty: Arc<Notify>,
    next_id: Arc<AtomicU64>,
    stop_timeouts: StopTimeouts,
    pending: HashMap<u64, Pending>,
    /// A `tools/list` is under way.
    listing: bool,
    /// `list_changed` arrived while listing: list again afterwards.
    list_again: bool,
}

impl Actor {
    pub(super) fn new(
        name: Arc<str>,
        spec: Arc<ServerSpec>,
        rx: mpsc::Receiver<Command>,
        snapshot: watch::Sender<Snapshot>,
        catalog_dirty: Arc<Notify>,
        next_id: Arc<AtomicU64>,
        stop_timeouts: StopTimeouts,
    ) -> Self {
        Self {
            name,
            spec,
            rx,
            snapshot,
            catalog_dirty,
            next_id,
            stop_timeouts,
            pending: HashMap::new(),
            listing: false,
            list_again: false,
        }
    }

    pub(super) async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = Instant::now();
            let failure = match self.run_process().await {
                Outcome::Stopped => break,
                Outcome::Failed(why) => why,
            };
            if started.elapsed() >= STABLE_RUN {
                backoff = MIN_BACKOFF;
            }
            tracing::warn!(server = %self.name, "{failure}; restarting in {}s", backoff.as_secs());
            self.publish(|s| {
                s.state = ServerState::Failed;
                s.pid = None;
                s.last_error = Some(failure.clone());
            });
            if !self.wait_before_restart(backoff, &failure).await {
                break;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            self.publish(|s| s.restarts += 1);
        }
        self.publish(|s| {
            s.state = ServerState::Stopped;
            s.pid = None;
        });
    }

    /// Answers requests with an error until `delay` has passed. `false` when told to stop.
    async fn wait_before_restart(&mut self, delay: Duration, failure: &str) -> bool {
        let until = tokio::time::sleep(delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return true,
                cmd = self.rx.recv() => match cmd {
                    None => return false,
                    Some(Command::Stop { done }) => {
                        let _ = done.send(());
                        return false;
                    }
                    Some(Command::Request { reply, .. }) => {
                        let _ = reply.send(Err(RouteError {
                            code: envelope::UPSTREAM_UNAVAILABLE,
                            message: format!("server `{}` is restarting after it failed ({failure}); try again shortly", self.name),
                        }));
                    }
                    Some(Command::Cancel { .. }) => {}
                },
            }
        }
    }

    fn publish(&self, change: impl FnOnce(&mut Snapshot)) {
        self.snapshot.send_modify(change);
        self.catalog_dirty.notify_one();
    }

    fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn run_process(&mut self) -> Outcome {
        self.publish(|s| {
            s.state = ServerState::Starting;
            s.pid = None;
        });
        let mut proc = match Process::spawn(&self.name, &self.spec) {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(format!("cannot start `{}`: {e}", self.spec.command)),
        };
        let pid = proc.child.id();
        tracing::info!(server = %self.name, pid, "started `{}`", self.spec.command);
        self.publish(|s| s.pid = pid);

        let init_id = self.allocate_id();
        let init = envelope::request(
            init_id,
            "initialize",
            Some(&json!({
                "protocolVersion": UPSTREAM_PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "mcpd", "version": env!("CARGO_PKG_VERSION")},
            })),
        );
        self.pending.insert(init_id, Pending::Initialize);
        if let Err(why) = proc.send(init) {
            return self
                .fail(&mut proc, format!("cannot send initialize: {why}"))
                .await;
        }
        let mut ready = false;
        let mut deferred: VecDeque<Command> = VecDeque::new();
        let startup_deadline = tokio::time::sleep(self.spec.startup_timeout);
        tokio::pin!(startup_deadline);

        loop {
            tokio::select! {
                status = proc.child.wait() => {
                    let status = status.ok();
                    proc.reap(self.stop_timeouts).await;
                    let why = self.exit_message(&proc, status);
                    return self.fail_pending(why);
                }
                frame = proc.stdout.next() => match frame {
                    Some(Ok(Frame::Line(bytes))) => {
                        match self.on_line(&bytes, &proc) {
                            LineEffect::None => {}
                            LineEffect::Ready => {
                                ready = true;
                                while let Some(cmd) = deferred.pop_front() {
                                    self.on_command_ready(cmd, &proc);
                                }
                            }
                            LineEffect::Fail(why) => return self.fail(&mut proc, why).await,
                        }
                    }
                    Some(Ok(Frame::TooLong(len))) => {
                        tracing::warn!(server = %self.name, "dropped a message of {len} bytes, over the {} byte limit", mcpd_proto::line::MAX_MESSAGE_LINE);
                    }
                    Some(Err(e)) => return self.fail(&mut proc, format!("cannot read its stdout: {e}")).await,
                    None => {
                        let status = proc.stop(self.stop_timeouts).await;
                        let why = format!("closed its stdout; {}", self.exit_message(&proc, status));
                        return self.fail_pending(why);
                    }
                },
                cmd = self.rx.recv() => match cmd {
                    None | Some(Command::Stop { .. }) => {
                        self.publish(|s| s.state = ServerState::Stopping);
                        let status = proc.stop(self.stop_timeouts).await;
                        tracing::info!(server = %self.name, "stopped: {}", describe_exit(status));
                        self.fail_pending(format!("server `{}` was stopped", self.name));
                        for cmd in deferred.drain(..) {
                            reject(cmd, RouteError { code: envelope::UPSTREAM_UNAVAILABLE, message: format!("server `{}` was stopped", self.name) });
                        }
                        if let Some(Command::Stop { done }) = cmd {
                            let _ = done.send(());
                        }
                        return Outcome::Stopped;
                    }
                    Some(cmd) if ready => self.on_command_ready(cmd, &proc),
                    Some(Command::Cancel { upstream_id, .. }) => deferred.retain(|c| !matches!(c, Command::Request { upstream_id: id, .. } if *id == upstream_id)),
                    Some(cmd) if deferred.len() < MAX_DEFERRED => deferred.push_back(cmd),
                    Some(cmd) => reject(cmd, RouteError { code: envelope::UPSTREAM_BUSY, message: format!("server `{}` is starting and has too many requests waiting", self.name) }),
                },
                _ = &mut startup_deadline, if !ready => {
                    let why = format!("did not answer initialize within {}s", self.spec.startup_timeout.as_secs());
                    for cmd in deferred.drain(..) {
                        reject(cmd, RouteError { code: envelope::UPSTREAM_UNAVAILABLE, message: format!("server `{}` {why}", self.name) });
                    }
                    return self.fail(&mut proc, why).await;
                }
            }
        }
    }

    fn exit_message(&self, proc: &Process, status: Option<std::process::ExitStatus>) -> String {
        let tail = proc.stderr_summary();
        if tail.is_empty() {
            describe_exit(status)
        } else {
            format!("{}; last stderr: {tail}", describe_exit(status))
        }
    }

    /// Stops a misbehaving process and fails what was pending on it.
    async fn fail(&mut self, proc: &mut Process, why: String) -> Outcome {
        proc.stop(self.stop_timeouts).await;
        self.fail_pending(why)
    }

    fn fail_pending(&mut self, why: String) -> Outcome {
        for (_, pending) in self.pending.drain() {
            if let Pending::Client { reply, .. } = pending {
                let _ = reply.send(Err(RouteError {
                    code: envelope::UPSTREAM_LOST,
                    message: format!("server `{}` went away before answering: {why}", self.name),
                }));
            }
        }
        self.listing = false;
        self.list_again = false;
        Outcome::Failed(why)
    }

    fn on_command_ready(&mut self, cmd: Command, proc: &Process) {
        match cmd {
            Command::Request {
                upstream_id,
                line,
                client_id,
                reply,
            } => match proc.send(line) {
                Ok(()) => {
                    self.pending
                        .insert(upstream_id, Pending::Client { client_id, reply });
                }
                Err(why) => {
                    let _ = reply.send(Err(RouteError {
                        code: envelope::UPSTREAM_BUSY,
                        message: format!("server `{}` cannot take the request: {why}", self.name),
                    }));
                }
            },
            Command::Cancel {
                upstream_id,
                reason,
            } => {
                if self.pending.remove(&upstream_id).is_some() {
                    let note = envelope::notification(
                        "notifications/cancelled",
                        Some(&json!({"requestId": upstream_id, "reason": reason})),
                    );
                    let _ = proc.send(note);
                }
            }
            Command::Stop { done } => {
                // The run loop handles Stop before dispatching; answer it anyway.
                let _ = done.send(());
            }
        }
    }

    fn on_line(&mut self, bytes: &[u8], proc: &Process) -> LineEffect {
        let Ok(text) = std::str::from_utf8(bytes) else {
            tracing::warn!(server = %self.name, "dropped a message that is not UTF-8");
            return LineEffect::None;
        };
        let msg = match Envelope::parse(text) {
            Ok(msg) => msg,
            Err(e) => {
                // Servers that print banners on stdout are common; say so once per line.
                tracing::warn!(server = %self.name, "dropped a line that is not JSON-RPC ({e}): {}", preview(text));
                return LineEffect::None;
            }
        };
        match msg.kind() {
            Kind::Response => self.on_response(&msg, proc),
            Kind::Notification => {
                if msg.method() == "notifications/tools/list_changed" {
                    self.list_tools(proc, None, Vec::new(), 0);
                } else {
                    tracing::debug!(server = %self.name, method = msg.method(), "notification not routed");
                }
                LineEffect::None
            }
            Kind::Request => {
                let id = msg.id.map(RawValue::get).unwrap_or("null");
                let answer = if msg.method() == "ping" {
                    envelope::response(msg.id.unwrap_or(RawValue::NULL), &json!({}))
                } else {
                    tracing::debug!(server = %self.name, method = msg.method(), id, "server-to-client request refused");
                    envelope::error_response(
                        msg.id,
                        envelope::METHOD_NOT_FOUND,
                        &format!("mcpd does not route `{}` requests to clients", msg.method()),
                    )
                };
                let _ = proc.send(answer);
                LineEffect::None
            }
        }
    }

    fn on_response(&mut self, msg: &Envelope<'_>, proc: &Process) -> LineEffect {
        let Some(id) = msg.id.and_then(|id| id.get().parse::<u64>().ok()) else {
            tracing::debug!(server = %self.name, "response with an id mcpd never sent");
            return LineEffect::None;
        };
        match self.pending.remove(&id) {
            Some(Pending::Client { client_id, reply }) => {
                let _ = reply.send(Ok(msg.with_id(client_id.get())));
                LineEffect::None
            }
            Some(Pending::Initialize) => self.on_initialized(msg, proc),
            Some(Pending::ListTools { acc, pages }) => {
                self.on_tools_page(msg, proc, acc, pages);
                LineEffect::None
            }
            None => {
                tracing::debug!(server = %self.name, id, "response to a cancelled or unknown request dropped");
                LineEffect::None
            }
        }
    }

    fn on_initialized(&mut self, msg: &Envelope<'_>, proc: &Process) -> LineEffect {
        let Some(result) = msg.result else {
            let error = msg.error.map(RawValue::get).unwrap_or("?");
            return LineEffect::Fail(format!("refused initialize: {error}"));
        };
        let info = field(result, "serverInfo")
            .ok()
            .flatten()
            .and_then(|i| serde_json::from_str::<ServerInfo>(i.get()).ok());
        let has_tools = field(result, "capabilities")
            .ok()
            .flatten()
            .and_then(|c| field(c, "tools").ok().flatten())
            .is_some();
        let version = field(result, "protocolVersion")
            .ok()
            .flatten()
            .map(|v| v.get().to_owned());
        let _ = proc.send(envelope::notification::<()>(
            "notifications/initialized",
            None,
        ));
        tracing::info!(server = %self.name, protocol = version.as_deref().unwrap_or("?"), "ready");
        self.publish(|s| {
            s.state = ServerState::Ready;
            s.server_info = info.map(|i| format!("{} {}", i.name, i.version).trim().to_owned());
            s.last_error = None;
            if !has_tools {
                s.tools = Arc::new(Vec::new());
                s.tools_known = true;
            }
        });
        if has_tools {
            self.list_tools(proc, None, Vec::new(), 0);
        }
        LineEffect::Ready
    }

    /// Asks for one page of `tools/list`; pages accumulate until there is no `nextCursor`.
    fn list_tools(
        &mut self,
        proc: &Process,
        cursor: Option<String>,
        acc: Vec<UpstreamTool>,
        pages: usize,
    ) {
        if cursor.is_none() && self.listing {
            self.list_again = true;
            return;
        }
        self.listing = true;
        let id = self.allocate_id();
        let params = cursor.map(|c| json!({"cursor": c}));
        let line = envelope::request(id, "tools/list", params.as_ref());
        self.pending.insert(id, Pending::ListTools { acc, pages });
        if let Err(why) = proc.send(line) {
            self.pending.remove(&id);
            self.listing = false;
            tracing::warn!(server = %self.name, "cannot ask for its tools: {why}");
        }
    }

    fn on_tools_page(
        &mut self,
        msg: &Envelope<'_>,
        proc: &Process,
        mut acc: Vec<UpstreamTool>,
        pages: usize,
    ) {
        let page = msg.result.map(parse_tools_page).unwrap_or_else(|| {
            Err(format!(
                "tools/list failed: {}",
                msg.error.map(RawValue::get).unwrap_or("?")
            ))
        });
        let next = match page {
            Ok((tools, next)) => {
                acc.extend(tools);
                next
            }
            Err(why) => {
                tracing::warn!(server = %self.name, "{why}");
                None
            }
        };
        if let Some(cursor) = next.filter(|_| pages + 1 < MAX_LIST_PAGES) {
            let id = self.allocate_id();
            let line = envelope::request(id, "tools/list", Some(&json!({"cursor": cursor})));
            self.pending.insert(
                id,
                Pending::ListTools {
                    acc,
                    pages: pages + 1,
                },
            );
            if proc.send(line).is_err() {
                self.pending.remove(&id);
                self.listing = false;
            }
            return;
        }
        tracing::info!(server = %self.name, tools = acc.len(), "tools listed");
        self.listing = false;
        self.publish(|s| {
            s.tools = Arc::new(acc);
            s.tools_known = true;
        });
        if std::mem::take(&mut self.list_again) {
            self.list_tools(proc, None, Vec::new(), 0);
        }
    }
}

enum LineEffect {
    None,
    Ready,
    Fail(String),
}

#[derive(serde::Deserialize)]
struct ServerInfo {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
}

/// Parses one `tools/list` result page: the tools and the next cursor.
fn parse_tools_page(result: &RawValue) -> Result<(Vec<UpstreamTool>, Option<String>), String> {
    let tools =
        field(result, "tools").map_err(|e| format!("tools/list result is not an object: {e}"))?;
    let tools = match tools {
        Some(t) => serde_json::from_str::<Vec<&RawValue>>(t.get())
            .map_err(|e| format!("tools/list `tools` is not an array: {e}"))?,
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(tools.len());
    for tool in tools {
        match field(tool, "name")
            .ok()
            .flatten()
            .and_then(|n| envelope::decode_str(n).ok())
        {
            Some(name) => out.push(UpstreamTool {
                name: name.into_owned(),
                raw: tool.to_owned(),
            }),
            None => tracing::warn!(
                "skipped a tool without a string `name`: {}",
                preview(tool.get())
            ),
        }
    }
    let next = field(result, "nextCursor").ok().flatten().and_then(|c| {
        serde_json::from_str::<Option<String>>(c.get())
            .ok()
            .flatten()
    });
    Ok((out, next))
}

fn reject(cmd: Command, error: RouteError) {
    match cmd {
        Command::Request { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Command::Stop { done } => {
            let _ = done.send(());
        }
        Command::Cancel { .. } => {}
    }
}

fn preview(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    super::process::escape_control(&cut)
}
