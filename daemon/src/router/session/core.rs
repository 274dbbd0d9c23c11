//! The transport-agnostic core of one MCP session: what a client's lines mean, whatever
//! carries them (the Unix-socket front end in `unix.rs` today).
//!
//! The session answers `initialize`, `ping`, `logging/setLevel` and the list requests itself
//! from the merged catalog, and forwards the rest to the owning upstream with its `id`, progress
//! token and (for tools and prompts) name rewritten by splicing (see `mcpd_proto::envelope`).
//! Each forwarded request runs as its own future in the session's task (`requests.rs`) so that
//! a slow tool never holds up the session; its [`Sent`] tells the upstream with
//! `notifications/cancelled` if the client cancels, the request times out or the client goes
//! away. A legacy client's common request is sent upstream while the session still holds its
//! envelope ([`RequestContext::send_now`]); the others are routed by their future.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::Aborted;
use mcpd_proto::envelope::{self, Envelope, Kind, member};
use mcpd_proto::observe::Direction;
use mcpd_proto::{Resume, ServerState};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use sync_wrapper::SyncWrapper;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Services;
use super::modern::{self, Era};
use super::requests::RequestKey;
use crate::config::ProfileShape;
use crate::observe::{Call, ClientTag};
use crate::router::catalog::{Catalog, SharedCatalog};
use crate::router::hub::{ClientCaps, LOG_LEVELS, SessionLink, log_rank};
use crate::router::mrtr;
use crate::router::outbox::Outbox;
use crate::router::scoped::LogScope;
use crate::router::{instructions, listen, search};

use super::tasks::{self, CallMode, TaskRequest};
use crate::upstream::{Forward, ListKind, UpstreamHandle};

/// Protocol revisions a client may ask for, newest first.
pub const SUPPORTED_PROTOCOLS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// Requests of one session in flight at once.
const MAX_IN_FLIGHT: usize = 1024;
/// MCP: resource not found.
const RESOURCE_NOT_FOUND: i64 = -32002;
/// Requests the session answers itself, without a server: still answered while the daemon
/// stops (see [`Session::on_line_stopping`]).
const ANSWERED_HERE: [&str; 8] = [
    "initialize",
    "ping",
    "logging/setLevel",
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
];
/// The answer to a request that arrives while the daemon stops (see
/// [`Session::on_line_stopping`]).
const STOPPING: &str = "mcpd is stopping and did not start this request; try again (mcp-shim resumes the session on the next mcpd)";

/// The lists clients are told changed, each with the kinds it covers.
const CHANGE_GROUPS: [(&str, &[ListKind]); 3] = [
    ("notifications/tools/list_changed", &[ListKind::Tools]),
    ("notifications/prompts/list_changed", &[ListKind::Prompts]),
    (
        "notifications/resources/list_changed",
        &[ListKind::Resources, ListKind::Templates],
    ),
];

/// Something of the session's own that happened while it waited for its client: see
/// [`Session::next_event`].
pub(crate) enum Event {
    /// The merged catalog changed.
    CatalogChanged,
    /// The daemon's catalog is gone (it is shutting down).
    CatalogClosed,
    /// A forwarded request ended (or was cancelled).
    Finished(Result<(RequestKey, u64), Aborted>),
}

/// A wait for the catalog's next change (`true`), or its end (`false`), polled only once it
/// woke the session (see `quiet`). Reached only through `&mut`, so the session stays `Sync`.
type CatalogChange = SyncWrapper<
    crate::quiet::Quiet<std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>>,
>;

/// The MCP side of one session, whatever carries its lines: a front end (`unix.rs` for
/// `mcp-shim`) reads the client's lines into [`on_line`](Self::on_line), waits on
/// [`next_event`](Self::next_event) beside its reads, and [`close`](Self::close)s it at the end.
pub(crate) struct Session {
    id: u64,
    services: Arc<Services>,
    catalog: watch::Receiver<SharedCatalog>,
    profile: Arc<str>,
    out: Outbox,
    link: SessionLink,
    /// The client sent `notifications/initialized`.
    initialized: bool,
    /// The `params` of the client's `initialize` as it wrote them (or as a resume brought
    /// them), for a direct session's hand-back (`handback.rs`).
    initialize_params: Option<Box<RawValue>>,
    /// A modern request named its client (recorded once).
    modern_client: bool,
    /// Per change group, the fingerprint of what the client was last told about.
    announced: Option<[u64; 3]>,
    /// Forwarded requests in flight, each keyed by the client's raw id (see [`Requests`]).
    tasks: super::requests::Requests,
    /// By the client's raw id: the request's sequence number in this session (a client may
    /// reuse an id once answered), by which it is cancelled.
    aborts: HashMap<RequestKey, u64>,
    /// Sequence number of the last forwarded request.
    seq: u64,
    in_flight: Arc<AtomicUsize>,
    /// Who the client is, for audit lines.
    client: ClientTag,
    /// Resolves when the catalog changed since the session last looked (see
    /// [`next_event`](Self::next_event)).
    catalog_change: Option<CatalogChange>,
    /// The profile's servers under the configuration they were read from, shared by the
    /// requests until the configuration changes.
    servers_seen: Option<ServersSeen>,
}

/// The configuration a session's servers and shape were read from, and them.
type ServersSeen = (Arc<crate::config::Config>, Arc<[String]>, Arc<ProfileShape>);

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct InitializeParams {
    #[serde(default)]
    protocol_version: Option<String>,
    #[serde(default)]
    client_info: Option<ClientInfo>,
    #[serde(default)]
    capabilities: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ClientInfo {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
}

/// How a forwarded request finds its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// By the namespaced name in `params.name`.
    Named(ListKind),
    /// By the URI in `params.uri`.
    Uri,
    /// `completion/complete`: by `params.ref`.
    Completion,
    /// `resources/subscribe` (true) or `resources/unsubscribe` (false).
    Subscription(bool),
    /// `tasks/*`: by the task id (see `tasks`).
    Task,
}

impl Session {
    /// Starts session `id` of `profile`, whose output goes to `out`. With `resume` (the shim
    /// lost its daemon, and the client does not know), it continues as the client's original
    /// `initialize` left it.
    pub(crate) fn start(
        services: Arc<Services>,
        id: u64,
        profile: String,
        out: Outbox,
        in_flight: Arc<AtomicUsize>,
        resume: Option<Resume>,
    ) -> Self {
        let link = SessionLink::new(id, out.clone());
        services.hub.register(link.clone());
        let mut session = Session {
            id,
            catalog: services.catalog.clone(),
            services: Arc::clone(&services),
            profile: profile.into(),
            out,
            link,
            initialized: false,
            initialize_params: None,
            modern_client: false,
            announced: None,
            tasks: super::requests::Requests::default(),
            aborts: HashMap::new(),
            seq: 0,
            in_flight,
            client: ClientTag::default(),
            catalog_change: None,
            servers_seen: None,
        };
        session.link.set_servers(session.servers());
        session.client = services.hub.client_tag(id);
        match resume {
            Some(resume) => {
                // The shim lost its connection (the daemon restarted) and the client does not
                // know: continue as the client's original `initialize` left the session.
                session.initialize_params =
                    serde_json::value::to_raw_value(&resume.initialize).ok();
                let params = serde_json::from_value::<InitializeParams>(resume.initialize)
                    .unwrap_or_default();
                let version = session.apply_initialize(params);
                session.initialized = resume.initialized;
                tracing::info!(session = id, previous = ?resume.previous_session, protocol = version, "session resumed");
            }
            None => tracing::debug!(session = id, "attached"),
        }
        session
    }

    /// Waits until the catalog changes or a forwarded request ends. Cancel-safe: a front end
    /// selects on it beside its reads and passes what it returns to [`on_event`](Self::on_event).
    ///
    /// The catalog's change is waited for by one future per change (on a clone of the
    /// session's receiver, made once the last change was handled and the receiver updated),
    /// not by a `changed()` registered with the watch again at every turn of the session's
    /// loop (about 800 instructions per call, callgrind: docs/BENCHMARKS.md "Hot path").
    pub(crate) async fn next_event(&mut self) -> Event {
        let change = self.catalog_change.get_or_insert_with(|| {
            let mut catalog = self.catalog.clone();
            SyncWrapper::new(crate::quiet::Quiet::new(Box::pin(async move {
                catalog.changed().await.is_ok()
            })))
        });
        let event = tokio::select! {
            open = change.get_mut() => if open {
                Event::CatalogChanged
            } else {
                Event::CatalogClosed
            },
            Some(done) = self.tasks.next(), if !self.tasks.is_empty() => Event::Finished(done),
        };
        if !matches!(event, Event::Finished(_)) {
            self.catalog_change = None;
        }
        event
    }

    /// Handles what [`next_event`](Self::next_event) returned; `false` when the session must
    /// end.
    pub(crate) async fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::CatalogClosed => return false,
            Event::CatalogChanged => self.on_catalog_changed().await,
            Event::Finished(done) => {
                if let Ok((key, seq)) = done {
                    self.finished(key, seq);
                }
                self.in_flight.store(self.tasks.len(), Ordering::Relaxed);
            }
        }
        true
    }

    /// A client message over the line limit was skipped: the client gets an error.
    pub(crate) async fn on_too_long(&mut self, len: usize) {
        let msg = format!(
            "message of {len} bytes dropped: over the limit of {} bytes",
            mcpd_proto::line::MAX_MESSAGE_LINE
        );
        self.send(envelope::error_response(
            None,
            envelope::INVALID_REQUEST,
            &msg,
        ))
        .await;
    }

    async fn send(&self, line: String) {
        self.out.send(line).await;
    }

    /// The instance that serves `server` for this session (see `Supervisor::upstream_for`).
    fn upstream_for(&self, server: &str, start: bool) -> Option<UpstreamHandle> {
        self.services
            .supervisor
            .upstream_for(server, self.id, &self.profile, start)
    }

    /// [`servers`](Self::servers) and [`shape`](Self::shape), shared: read again only when
    /// the configuration changed (a profile's tool filter is not copied per request).
    fn shared_servers(&mut self) -> (Arc<[String]>, Arc<ProfileShape>) {
        let config = self.services.supervisor.config();
        if let Some((seen, servers, shape)) = &self.servers_seen
            && Arc::ptr_eq(seen, &config)
        {
            return (Arc::clone(servers), Arc::clone(shape));
        }
        let servers: Arc<[String]> = config
            .profile_servers(&self.profile)
            .unwrap_or_default()
            .into();
        let shape = Arc::new(config.profile_shape(&self.profile));
        self.servers_seen = Some((config, Arc::clone(&servers), Arc::clone(&shape)));
        (servers, shape)
    }

    fn servers(&self) -> Vec<String> {
        self.services
            .supervisor
            .config()
            .profile_servers(&self.profile)
            .unwrap_or_default()
    }

    fn shape(&self) -> ProfileShape {
        self.services
            .supervisor
            .config()
            .profile_shape(&self.profile)
    }

    /// No new requests will be read (the daemon is shutting down, or the client closed its
    /// side): those in flight get their answers (or, as upstreams stop, errors) for a while.
    /// The daemon shuts down: each open `subscriptions/listen` gets its graceful end.
    pub(crate) async fn end_listens(&mut self) {
        for answer in listen::end_all(&self.link) {
            self.send(answer).await;
        }
    }

    pub(crate) async fn drain(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while !self.tasks.is_empty() {
            if tokio::time::timeout_at(deadline, self.finish_one())
                .await
                .is_err()
            {
                break;
            }
        }
    }

    /// Cancelled when the shutdown's grace ends early (see `unix::grace`).
    pub(crate) fn cut_short(&self) -> tokio_util::sync::CancellationToken {
        self.services.cut_short.clone()
    }

    /// Forwarded requests not answered yet.
    pub(crate) fn in_flight(&mut self) -> usize {
        self.tasks.len()
    }

    /// Waits until one of the forwarded requests in flight ends, and forgets it (pending while
    /// none is). Cancel-safe, like [`next_event`](Self::next_event).
    pub(crate) async fn finish_one(&mut self) {
        if self.tasks.is_empty() {
            return std::future::pending().await;
        }
        if let Some(Ok((key, seq))) = self.tasks.next().await {
            self.finished(key, seq);
        }
        self.in_flight.store(self.tasks.len(), Ordering::Relaxed);
    }

    /// A client line while the daemon stops (`unix.rs`, during the grace for the requests in
    /// flight): the client's answers to server requests and its notifications (a cancel) are
    /// handled as always, so that the calls in flight can finish, and so are the requests the
    /// session answers itself ([`ANSWERED_HERE`]); a request for a server is not started, since
    /// its server is about to stop, and gets [`STOPPING`]'s error at once: `-32012`, the code
    /// `mcp-shim` gives a request a lost connection cut short, which says "try again" (the shim
    /// resumes the session on the next daemon).
    pub(crate) async fn on_line_stopping(&mut self, line: Bytes) {
        let refused = std::str::from_utf8(&line)
            .ok()
            .and_then(|text| Envelope::parse(text).ok())
            .filter(|msg| {
                msg.kind() == Kind::Request
                    && !msg
                        .method
                        .as_deref()
                        .is_some_and(|m| ANSWERED_HERE.contains(&m))
            })
            .map(|msg| {
                let call = self.services.observer.begin(
                    self.id,
                    &self.client,
                    &self.profile,
                    &msg,
                    msg.text(),
                );
                let id = msg.id.unwrap_or(RawValue::NULL);
                (
                    call,
                    envelope::error_response(Some(id), envelope::UPSTREAM_LOST, STOPPING),
                )
            });
        match refused {
            None => self.on_line(line).await,
            Some((call, answer)) => {
                self.services
                    .observer
                    .traffic
                    .publish(self.id, Direction::In, line);
                self.answer(call, answer).await;
            }
        }
    }

    /// What a shim needs to resume this session on another daemon: the client's `initialize`
    /// params, whether it sent `initialized`, and the ids of its requests still unanswered.
    pub(crate) fn resumable(&self) -> super::handback::Resumable {
        super::handback::Resumable {
            initialize: self.initialize_params.clone(),
            initialized: self.initialized,
            in_flight: self.aborts.keys().map(Arc::from).collect(),
        }
    }

    /// Forgets a finished request, unless the client already reused its id for a newer one.
    fn finished(&mut self, key: RequestKey, seq: u64) {
        // One lookup: this runs for every answered request.
        if let std::collections::hash_map::Entry::Occupied(entry) = self.aborts.entry(key)
            && *entry.get() == seq
        {
            entry.remove();
        }
    }

    /// Ends the session: aborts its requests (their guards cancel them upstream), answers the
    /// server requests it still owed, and releases its subscriptions.
    pub(crate) fn close(mut self) {
        // Dropping them runs their guards, which cancel them upstream.
        self.tasks.clear();
        for route in self.services.hub.requests().drain_session(self.id) {
            route.abandon();
        }
        for (key, uri) in self.services.hub.unregister(self.id) {
            if let Some(upstream) = self.services.supervisor.instance(&key) {
                upstream.internal("resources/unsubscribe", json!({"uri": uri}));
            }
        }
        self.services.supervisor.end_instances(self.id);
        self.services.hub.tasks().forget_session(self.id);
    }

    pub(crate) async fn on_line(&mut self, line: Bytes) {
        self.services
            .observer
            .traffic
            .publish(self.id, Direction::In, line.clone());
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
            Kind::Response => self.on_response(&msg),
        }
    }

    async fn on_request(&mut self, msg: &Envelope<'_>, line: &Bytes) {
        let id = msg.id.unwrap_or(RawValue::NULL);
        let text = msg.text();
        let mut call =
            self.services
                .observer
                .begin(self.id, &self.client, &self.profile, msg, text);
        // The era is decided here, per request (see `modern`).
        let mut log_level = None;
        let declared = match modern::era(msg) {
            Era::Legacy => None,
            Era::Unsupported(requested) => {
                return self.answer(call, modern::unsupported(id, &requested)).await;
            }
            Era::Modern(meta) => {
                if let Some(level) = meta.log_level.as_deref().filter(|l| log_rank(l).is_none()) {
                    let answer = envelope::error_response(
                        Some(id),
                        envelope::INVALID_PARAMS,
                        &format!(
                            "_meta.io.modelcontextprotocol/logLevel {level:?} must be one of {}",
                            LOG_LEVELS.join(", ")
                        ),
                    );
                    return self.answer(call, answer).await;
                }
                log_level = meta.log_level.as_deref().and_then(log_rank);
                if self.apply_meta(&meta) {
                    call.set_client(&self.client);
                }
                Some(meta.declared)
            }
        };
        let modern = declared.is_some();
        if modern && modern::removed(msg.method()) {
            let answer = envelope::error_response(
                Some(id),
                envelope::METHOD_NOT_FOUND,
                &format!(
                    "Method not found: {} is not part of MCP {}",
                    msg.method(),
                    modern::MODERN_VERSION
                ),
            );
            return self.answer(call, answer).await;
        }
        let target = match msg.method() {
            "initialize" => {
                let answer = self.initialize(msg, id).await;
                call.set_client(&self.client);
                return self.answer(call, answer).await;
            }
            "ping" => {
                return self.answer(call, envelope::response(id, &json!({}))).await;
            }
            "logging/setLevel" => {
                let answer = self.set_level(msg, id);
                return self.answer(call, answer).await;
            }
            "server/discover" => {
                let answer = self.discover(id);
                return self.answer(call, answer).await;
            }
            "subscriptions/listen" if modern => {
                return self.listen(call, msg, id).await;
            }
            "tools/list" => None,
            "prompts/list" => None,
            "resources/list" => None,
            "resources/templates/list" => None,
            "tools/call" => Some(Target::Named(ListKind::Tools)),
            "prompts/get" => Some(Target::Named(ListKind::Prompts)),
            "resources/read" => Some(Target::Uri),
            "completion/complete" => Some(Target::Completion),
            "resources/subscribe" => Some(Target::Subscription(true)),
            "resources/unsubscribe" => Some(Target::Subscription(false)),
            "tasks/get" | "tasks/result" | "tasks/cancel" | "tasks/list" | "tasks/update" => {
                Some(Target::Task)
            }
            method => {
                let answer = envelope::error_response(
                    Some(id),
                    envelope::METHOD_NOT_FOUND,
                    &format!("Method not found: {method}"),
                );
                return self.answer(call, answer).await;
            }
        };
        if self.tasks.len() >= MAX_IN_FLIGHT {
            let answer = envelope::error_response(
                Some(id),
                envelope::UPSTREAM_BUSY,
                "too many requests in flight on this session",
            );
            return self.answer(call, answer).await;
        }
        let key = RequestKey::new(id.get());
        let (servers, shape) = self.shared_servers();
        let ctx = RequestContext {
            services: Arc::clone(&self.services),
            catalog: self.catalog.clone(),
            servers,
            shape,
            profile: Arc::clone(&self.profile),
            link: self.link.clone(),
            out: self.out.clone(),
            line: line.clone(),
            call: Some(call),
            modern: declared.map(|declared| modern::Modern {
                declared,
                cacheable: modern::cacheable(msg.method()),
            }),
            log_level,
            original: None,
        };
        self.seq += 1;
        let seq = self.seq;
        let list_kind = match msg.method() {
            "tools/list" => Some(ListKind::Tools),
            "prompts/list" => Some(ListKind::Prompts),
            "resources/list" => Some(ListKind::Resources),
            "resources/templates/list" => Some(ListKind::Templates),
            _ => None,
        };
        // The request's bytes count against the session's budget while it is in flight.
        let bytes = self.out.budget().request(line.len());
        let mut ctx = ctx;
        let sent = match (list_kind, target) {
            (None, Some(target)) => ctx.send_now(target, msg),
            _ => None,
        };
        // Each path is a future of its own: the common one (a legacy call sent now) holds only
        // what waiting for its answer needs, once (one future for all paths held the context
        // three times over, 3,800 bytes moved and allocated per request); the others are
        // boxed on their own.
        let tasks = &mut self.tasks;
        let task_key = key.clone();
        match (sent, list_kind, target) {
            (Some(Sending::Legacy(sent)), _, _) => {
                tasks.push(task_key, seq, ctx.answer_legacy(sent, bytes));
            }
            (Some(Sending::Modern(call)), _, _) => tasks.push(task_key, seq, async move {
                let _bytes = bytes;
                Box::pin(ctx.answer_modern(*call)).await;
            }),
            (None, Some(kind), _) => tasks.push(task_key, seq, async move {
                let _bytes = bytes;
                Box::pin(ctx.list(kind)).await;
            }),
            (None, None, target) => tasks.push(task_key, seq, async move {
                let _bytes = bytes;
                if let Some(target) = target {
                    Box::pin(ctx.route(target)).await;
                }
            }),
        }
        self.aborts.insert(key, seq);
        self.in_flight.store(self.tasks.len(), Ordering::Relaxed);
    }

    async fn initialize(&mut self, msg: &Envelope<'_>, id: &RawValue) -> String {
        self.initialize_params = msg
            .params
            .map(RawValue::to_owned)
            .or_else(|| RawValue::from_string("{}".to_owned()).ok());
        let params: InitializeParams = msg
            .params
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or_default();
        let version = self.apply_initialize(params);
        // Advertise what the upstreams offer, so wait (bounded) for those still starting
        // (a per-client server's own instance starts now, at the session's first use).
        let servers = self.servers();
        self.services
            .supervisor
            .ensure_instances(&servers, self.id, &self.profile);
        let catalog = settle(
            &mut self.catalog.clone(),
            &servers,
            self.services.supervisor.config().options.list_wait,
        )
        .await;
        let mut caps = catalog.caps(&servers);
        let instructions = catalog.instructions(&servers);
        // Summarised instructions point at resources mcpd serves itself.
        caps.resources |= !instructions.cut.is_empty();
        let mut capabilities = modern::capabilities(&caps);
        if caps.tasks {
            capabilities.insert("tasks".into(), tasks::legacy_capability());
        }
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": capabilities,
            "serverInfo": modern::server_info(),
        });
        // The configuration notice (when a server's definition is broken) comes first; the
        // servers' part is already under the limit.
        let instructions = [self.services.supervisor.notice(), instructions.text.clone()];
        let instructions: Vec<String> = instructions.into_iter().flatten().collect();
        if !instructions.is_empty() {
            result["instructions"] = json!(instructions.join("\n\n"));
        }
        envelope::response(id, &result)
    }

    /// Takes in what the client said in `initialize`; returns the protocol version agreed.
    /// Sends an answer mcpd gave itself and records it.
    async fn answer(&self, call: Call, answer: String) {
        call.finish(&answer);
        self.send(answer).await;
    }

    fn apply_initialize(&mut self, params: InitializeParams) -> &'static str {
        self.link.scopes().set_modern(false);
        let version = params
            .protocol_version
            .as_deref()
            .and_then(|v| SUPPORTED_PROTOCOLS.iter().find(|s| **s == v))
            .copied()
            .unwrap_or(SUPPORTED_PROTOCOLS[0]);
        if let Some(info) = params.client_info {
            tracing::info!(session = self.id, client = %info.name, version = %info.version, protocol = version, "client initialized");
            self.services
                .hub
                .set_client_info(self.id, info.name, info.version);
            self.client = self.services.hub.client_tag(self.id);
        }
        self.link
            .set_caps(ClientCaps::from_json(params.capabilities.as_ref()));
        let catalog = self.catalog.borrow_and_update().clone();
        self.announced = Some(fingerprints(&catalog, &self.servers(), &self.shape()));
        version
    }

    fn set_level(&self, msg: &Envelope<'_>, id: &RawValue) -> String {
        let level = msg
            .params
            .and_then(|p| member(p, "level"))
            .and_then(|l| envelope::decode_str(l).ok());
        let Some(rank) = level.as_deref().and_then(log_rank) else {
            return envelope::error_response(
                Some(id),
                envelope::INVALID_PARAMS,
                &format!("params.level must be one of {}", LOG_LEVELS.join(", ")),
            );
        };
        self.apply_level(rank);
        envelope::response(id, &json!({}))
    }

    /// Sets the session's log level, and the upstreams' to the most verbose any session wants.
    fn apply_level(&self, rank: u8) {
        self.link.set_log_level(rank);
        // Upstreams log at the most verbose level any session wants; each session filters.
        let upstream_level = self.services.hub.most_verbose_level().unwrap_or(rank);
        for server in self.servers() {
            if let Some(upstream) = self
                .upstream_for(&server, false)
                .filter(|u| u.snapshot().caps.logging)
            {
                upstream.internal(
                    "logging/setLevel",
                    json!({"level": LOG_LEVELS[upstream_level as usize]}),
                );
            }
        }
    }

    /// Takes in what a modern request's `_meta` says about its client. Its capabilities are
    /// not recorded: a modern client answers no server-to-client request (those become
    /// `InputRequiredResult`s in 2026-07-28, not translated yet), so upstream requests for
    /// sampling, elicitation or roots are not routed to it.
    /// `true` when it named the client (the first time).
    fn apply_meta(&mut self, meta: &modern::Meta<'_>) -> bool {
        let mut named = false;
        if !self.modern_client
            && let Some((name, version)) = meta.client()
        {
            tracing::info!(session = self.id, client = %name, version = %version, protocol = modern::MODERN_VERSION, "modern client");
            self.services.hub.set_client_info(self.id, name, version);
            self.client = self.services.hub.client_tag(self.id);
            self.modern_client = true;
            named = true;
        }
        // The log level is the request's own (see `scoped`), not the session's.
        self.link.scopes().set_modern(true);
        named
    }

    /// Opens a `subscriptions/listen` (see `listen`): acknowledged at once, answered only
    /// when the daemon shuts down.
    async fn listen(&mut self, call: Call, msg: &Envelope<'_>, id: &RawValue) {
        let servers = self.servers();
        let catalog = self.catalog.borrow().clone();
        if self.announced.is_none() {
            self.announced = Some(fingerprints(&catalog, &servers, &self.shape()));
        }
        match listen::open(
            &self.services,
            &self.profile,
            &self.link,
            &catalog,
            &servers,
            id,
            msg.params,
        ) {
            Ok(ack) => {
                call.finish(&ack);
                self.send(ack).await;
            }
            Err(e) => {
                let answer =
                    envelope::error_response(Some(id), envelope::INVALID_PARAMS, &e.to_string());
                self.answer(call, answer).await;
            }
        }
    }

    /// The `DiscoverResult`, at once: from the catalog as it stands (servers still starting
    /// are counted with what the catalog cache remembers of them, or as offering tools), never
    /// waiting on an upstream or starting one.
    fn discover(&self, id: &RawValue) -> String {
        let servers = self.servers();
        let catalog = self.catalog.borrow().clone();
        let mut caps = catalog.caps(&servers);
        caps.tools |= servers
            .iter()
            .any(|s| catalog.pending.contains(s) || !catalog.servers.contains_key(s));
        let instructions = catalog.instructions(&servers);
        caps.resources |= !instructions.cut.is_empty();
        let text = [self.services.supervisor.notice(), instructions.text.clone()];
        let text: Vec<String> = text.into_iter().flatten().collect();
        let text = (!text.is_empty()).then(|| text.join("\n\n"));
        envelope::response(id, &modern::discover_result(&caps, text))
    }

    fn on_notification(&mut self, msg: &Envelope<'_>) {
        match msg.method() {
            "notifications/initialized" => self.initialized = true,
            "notifications/cancelled" => {
                let request = msg.params.and_then(|p| member(p, "requestId"));
                if request.is_some_and(|r| {
                    listen::cancel(&self.services, &self.profile, &self.link, r.get())
                }) {
                    // A listen ends without an answer.
                    return;
                }
                if let Some(seq) = request.and_then(|r| self.aborts.remove(r.get())) {
                    // The request's guard tells the upstream; no response goes to the client.
                    self.tasks.abort(seq);
                    self.in_flight.store(self.tasks.len(), Ordering::Relaxed);
                }
            }
            "notifications/roots/list_changed" => {
                for server in self.servers() {
                    if let Some(upstream) = self.upstream_for(&server, false) {
                        upstream.roots_changed(msg.text().to_owned(), self.link.caller());
                    }
                }
            }
            other => tracing::debug!(session = self.id, method = other, "notification ignored"),
        }
    }

    /// A client's answer to a request an upstream sent through mcpd.
    fn on_response(&mut self, msg: &Envelope<'_>) {
        if let Some(waiter) = msg.id.and_then(|id| self.link.take_waiter(id.get())) {
            // An answer to a request mcpd sent for a modern upstream (`mrtr`).
            let _ = waiter.send(msg.text().to_owned());
            return;
        }
        let requests = self.services.hub.requests();
        let Some(route) = msg.id.and_then(|id| requests.take(id.get(), self.id)) else {
            tracing::debug!(
                session = self.id,
                "dropped a response to a request mcpd did not send"
            );
            return;
        };
        route.answer(msg);
    }

    async fn on_catalog_changed(&mut self) {
        let servers = self.servers();
        self.link.set_servers(servers.clone());
        let catalog = self.catalog.borrow_and_update().clone();
        let now = fingerprints(&catalog, &servers, &self.shape());
        let Some(seen) = self.announced else { return };
        self.announced = Some(now);
        for (i, (notification, _)) in CHANGE_GROUPS.iter().enumerate() {
            if seen[i] == now[i] {
                continue;
            }
            if self.initialized {
                self.send(envelope::notification::<()>(notification, None))
                    .await;
            }
            for id in self.link.listens().for_group(i) {
                self.send(listen::tagged(notification, None, &id)).await;
            }
        }
    }
}

fn fingerprints(catalog: &Catalog, servers: &[String], shape: &ProfileShape) -> [u64; 3] {
    let mut prints = CHANGE_GROUPS.map(|(_, kinds)| {
        kinds.iter().fold(0u64, |h, k| {
            h.rotate_left(7) ^ catalog.fingerprint(*k, servers, &shape.tools)
        })
    });
    // Switching to or from search mode changes the tool list too.
    prints[0] ^= u64::from(catalog.searches(servers, shape));
    // So does an instructions resource appearing or going.
    prints[2] = prints[2].rotate_left(3) ^ catalog.instructions(servers).cut.len() as u64;
    prints
}

/// Waits, at most `wait`, until none of `servers` is still starting for the first time, and
/// returns the catalog then.
async fn settle(
    catalog: &mut watch::Receiver<SharedCatalog>,
    servers: &[String],
    wait: Duration,
) -> SharedCatalog {
    let deadline = Instant::now() + wait;
    loop {
        let current = catalog.borrow_and_update().clone();
        if !servers.iter().any(|s| current.pending.contains(s)) {
            return current;
        }
        match tokio::time::timeout_at(deadline, catalog.changed()).await {
            Ok(Ok(())) => continue,
            _ => return current,
        }
    }
}

/// What a forwarded request's task needs, owned.
struct RequestContext {
    services: Arc<Services>,
    catalog: watch::Receiver<SharedCatalog>,
    servers: Arc<[String]>,
    /// The profile's tool filter and mode.
    shape: Arc<ProfileShape>,
    profile: Arc<str>,
    link: SessionLink,
    out: Outbox,
    line: Bytes,
    /// The audit and statistics record, finished by the reply.
    call: Option<Call>,
    /// A modern request: what it declared; its answer completed by `modern::complete`.
    modern: Option<modern::Modern>,
    /// A modern request's `io.modelcontextprotocol/logLevel` (see `scoped`).
    log_level: Option<u8>,
    /// The upstream's own name of the item a request [`sent now`](Self::send_now) names.
    original: Option<String>,
}

/// Where a request goes and which part of it names the item there.
struct Resolved<'a> {
    server: String,
    /// The namespaced name to replace with the upstream's own.
    rename: Option<(&'a RawValue, String)>,
    /// The URI of a (un)subscription.
    uri: Option<String>,
}

impl RequestContext {
    /// The instance that serves `server` for this session (see `Supervisor::upstream_for`).
    fn upstream_for(&self, server: &str, start: bool) -> Option<UpstreamHandle> {
        self.services
            .supervisor
            .upstream_for(server, self.link.id(), &self.profile, start)
    }

    async fn reply(&mut self, line: String) {
        if let Some(call) = self.call.take() {
            call.finish(&line);
        }
        let line = match self.modern {
            Some(m) => modern::complete(line, m.cacheable),
            None => line,
        };
        self.out.send(line).await;
    }

    async fn list(mut self, kind: ListKind) {
        self.services
            .supervisor
            .ensure_instances(&self.servers, self.link.id(), &self.profile);
        let wait = self.services.supervisor.config().options.list_wait;
        let catalog = settle(&mut self.catalog, &self.servers, wait).await;
        let line = self.line.clone();
        let Some(msg) = parse(&line) else { return };
        let id = msg.id.unwrap_or(RawValue::NULL);
        let cursor = msg.params.and_then(|p| member(p, "cursor"));
        let offset = match cursor.map(|c| serde_json::from_str::<Option<String>>(c.get())) {
            None | Some(Ok(None)) => 0,
            Some(Ok(Some(c))) => match c
                .strip_prefix("mcpd:")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) => n,
                None => {
                    return self
                        .reply(envelope::error_response(
                            Some(id),
                            envelope::INVALID_PARAMS,
                            "invalid cursor",
                        ))
                        .await;
                }
            },
            Some(Err(_)) => {
                return self
                    .reply(envelope::error_response(
                        Some(id),
                        envelope::INVALID_PARAMS,
                        "invalid cursor: not a string",
                    ))
                    .await;
            }
        };
        let page_size = self.services.supervisor.config().options.page_size;
        // In search mode the tool list is the search trio; summarised instructions add their
        // full texts to the resources.
        let extra: Vec<String> = match kind {
            ListKind::Tools if catalog.searches(&self.servers, &self.shape) => {
                search::trio().into()
            }
            ListKind::Resources => catalog
                .instructions(&self.servers)
                .cut
                .iter()
                .map(|s| instructions::resource_item(s))
                .collect(),
            _ => Vec::new(),
        };
        let view = match kind {
            ListKind::Tools if catalog.searches(&self.servers, &self.shape) => None,
            _ => Some(catalog.visible_view(kind, &self.servers, &self.shape.tools)),
        };
        let page = Catalog::page(view.as_ref(), &extra, offset, page_size);
        // Both parts are JSON already: the id as the client wrote it, items as upstreams did.
        // One allocation, one copy of the page (a slice of the view's joined text).
        let id = id.get();
        let mut answer = String::with_capacity(page.len() + id.len() + 96);
        answer.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
        answer.push_str(id);
        answer.push_str(",\"result\":{\"");
        answer.push_str(kind.field());
        answer.push_str("\":[");
        page.write(&mut answer);
        answer.push(']');
        if page.more {
            answer.push_str(",\"nextCursor\":\"mcpd:");
            answer.push_str(&(offset + page_size).to_string());
            answer.push('"');
        }
        answer.push_str("}}");
        // A page mcpd built is a success: the audit needs its size, not a reading of it.
        if let Some(call) = self.call.take() {
            call.finish_ok(answer.len());
        }
        self.reply(answer).await;
    }

    /// A `tasks/*` request (see `tasks`).
    async fn task(mut self) {
        let line = self.line.clone();
        let Some(msg) = parse(&line) else { return };
        let catalog = self.catalog.borrow().clone();
        let request = TaskRequest {
            services: &self.services,
            profile: &self.profile,
            link: &self.link,
            servers: &self.servers,
            catalog: &catalog,
            modern: self.modern.is_some(),
        };
        let answer = request.answer(&msg).await;
        self.reply(answer).await;
    }

    /// A modern client's `tools/call` of a tool that requires a task: asks the upstream for one.
    async fn forward_as_task(
        &self,
        upstream: &UpstreamHandle,
        catalog: &Catalog,
        target: Target,
    ) -> String {
        let text = std::str::from_utf8(&self.line).unwrap_or_default();
        let line = tasks::with_task(text).unwrap_or_else(|| text.to_owned());
        let Ok(msg) = Envelope::parse(&line) else {
            return envelope::error_response(None, envelope::INTERNAL_ERROR, "unreadable request");
        };
        match self.resolve(catalog, &msg, target) {
            Ok(resolved) => forward(upstream, &msg, resolved.rename, self.link.clone()).await,
            Err((code, message)) => envelope::error_response(msg.id, code, &message),
        }
    }

    async fn route(mut self, target: Target) {
        if self.modern.is_some_and(|m| m.declared.retry) {
            // A modern client's retry: its requestState is checked before anything is routed.
            match mrtr::prepare(&self.line, self.link.id()) {
                mrtr::Prepared::AsIs => {}
                mrtr::Prepared::Line(line) => self.line = line,
                mrtr::Prepared::Answer(answer) => return self.reply(answer).await,
                mrtr::Prepared::Resume(parked) => {
                    let answer = mrtr::resume(*parked, &self.line).await;
                    return self.reply(answer).await;
                }
            }
        }
        self.services
            .supervisor
            .ensure_instances(&self.servers, self.link.id(), &self.profile);
        if target == Target::Task {
            return self.task().await;
        }
        // The line is parsed once here (the session parsed it too, before the task began);
        // only a search-mode `call_tool`, which becomes another request, is parsed again.
        let mut line = self.line.clone();
        let Some(mut msg) = parse(&line) else { return };
        match self.answer_locally(target, &msg) {
            Local::Answer(answer) => return self.reply(answer).await,
            Local::Replaced(call) => {
                self.line = Bytes::from(call);
                line = self.line.clone();
                let Some(replaced) = parse(&line) else { return };
                msg = replaced;
            }
            Local::Route => {}
        }
        let id = msg.id.unwrap_or(RawValue::NULL);
        let mut catalog = self.catalog.borrow().clone();
        let mut resolved = self.resolve(&catalog, &msg, target);
        // A URI that only a template matches may yet be listed by a server still starting,
        // which then owns it: wait for that server as for an unknown name.
        let by_template = resolved
            .as_ref()
            .is_ok_and(|r| r.uri.as_deref().is_some_and(|uri| !catalog.is_listed(uri)));
        if (resolved.is_err() || by_template)
            && self.servers.iter().any(|s| catalog.pending.contains(s))
        {
            // Its server may still be starting for the first time.
            let wait = self.services.supervisor.config().options.list_wait;
            catalog = settle(&mut self.catalog, &self.servers, wait).await;
            resolved = self.resolve(&catalog, &msg, target);
        }
        let resolved = match resolved {
            Ok(r) => r,
            Err((code, message)) => {
                return self
                    .reply(envelope::error_response(Some(id), code, &message))
                    .await;
            }
        };
        if let Some(call) = self.call.as_mut() {
            call.set_server(&resolved.server);
        }
        let hub = &self.services.hub;
        // The count this request changed, undone if the upstream refuses it.
        let mut counted = None;
        // The upstream subscribe this request makes, which others wait for.
        let mut flight = None;
        if let (Target::Subscription(subscribe), Some(uri)) = (target, &resolved.uri) {
            // Only the first subscriber subscribes upstream, only the last one unsubscribes. A
            // session's or profile's own instance is counted on its own.
            let key =
                self.services
                    .supervisor
                    .key_of(&resolved.server, self.link.id(), &self.profile);
            if let Some(key) = key {
                let forward = if subscribe {
                    hub.subscribe(&key, uri, self.link.id())
                } else {
                    hub.unsubscribe(&key, uri, self.link.id())
                };
                // Another subscriber's upstream subscribe may be under way: its answer is
                // this one's, unless refused (then this one asks the upstream itself).
                if !forward && (!subscribe || hub.subscribing().settled(&key, uri).await) {
                    return self.reply(envelope::response(id, &json!({}))).await;
                }
                if subscribe {
                    flight = Some(hub.subscribing().begin(&key, uri));
                }
                counted = Some(SubscriptionCount {
                    key,
                    uri: uri.clone(),
                    session: self.link.id(),
                    subscribe,
                });
            }
        }
        let Some(upstream) = self.upstream_for(&resolved.server, true) else {
            if let Some(counted) = counted {
                counted.undo(hub);
            }
            let message = format!(
                "server `{}` is not running (it is being reloaded or was removed)",
                resolved.server
            );
            return self
                .reply(envelope::error_response(
                    Some(id),
                    envelope::UPSTREAM_UNAVAILABLE,
                    &message,
                ))
                .await;
        };
        if let (Some(counted), true) = (&counted, upstream.is_modern()) {
            // 2026-07-28 has no resources/subscribe: the upstream's listen follows the URI.
            super::super::listen::subscribe_upstream(&upstream, counted.subscribe, &counted.uri);
            return self.reply(envelope::response(id, &json!({}))).await;
        }
        let scope = self
            .log_level
            .map(|rank| LogScope::enter(&self.services.hub, &self.link, &upstream, rank));
        let mode = if target == Target::Named(ListKind::Tools) {
            let name = resolved.rename.as_ref().map(|(raw, _)| *raw);
            match tasks::call_mode(
                &catalog,
                &msg,
                name,
                self.modern.as_ref().map(|m| &m.declared),
            ) {
                Ok(mode) => mode,
                Err(missing) => return self.reply(missing.answer(msg.id)).await,
            }
        } else {
            CallMode::Plain
        };
        let original = resolved.rename.as_ref().map(|(_, name)| name.clone());
        let answer = match mode {
            CallMode::Modern => self.forward_as_task(&upstream, &catalog, target).await,
            // A modern client: requests a legacy upstream sends it become InputRequiredResults
            // (see `mrtr`).
            _ if self.modern.is_some() => {
                let caps = self.modern.map(|m| m.declared.caps).unwrap_or_default();
                let link = self.link.clone();
                mrtr::call_modern(&upstream, &msg, resolved.rename, link, caps, self.log_level)
                    .await
            }
            _ => {
                let answer = forward(&upstream, &msg, resolved.rename, self.link.clone()).await;
                if mrtr::is_input_required(&answer) {
                    // A modern upstream asks a legacy client for input.
                    mrtr::legacy_rounds(answer, &upstream, msg.text(), original, &self.link).await
                } else {
                    answer
                }
            }
        };
        let answer = match mode {
            CallMode::Plain => answer,
            _ => tasks::created(
                &self.services.hub,
                self.link.id(),
                &resolved.server,
                answer,
                mode,
            ),
        };
        // Only a (un)subscription needs to know whether the upstream refused it.
        let refused = (counted.is_some() || flight.is_some())
            && Envelope::parse(&answer).is_ok_and(|a| a.error.is_some());
        if let Some(counted) = counted
            && refused
        {
            counted.undo(hub);
        }
        if let Some(flight) = flight {
            flight.finish(!refused);
        }
        // The upstream sent this request's log messages before its answer, and they have been
        // delivered: close the scope before the answer goes out, so a message of the client's
        // next request cannot be taken for one of this request's.
        drop(scope);
        if let Some(call) = self.call.take() {
            call.finish(&answer);
        }
        let answer = match self.modern {
            Some(m) => modern::complete(answer, m.cacheable),
            None => answer,
        };
        self.out.send_answer(answer, Some(id)).await;
    }

    /// The common forwarded request, sent at once while the session still holds its envelope:
    /// a legacy client's call, read or completion whose server is known and running (no
    /// search trio, subscription, task or server still to wait for). Its future then only waits
    /// for the answer ([`answer_sent`](Self::answer_sent)) and the line is not parsed again.
    /// `None`: nothing was sent; [`route`](Self::route) handles it from the start.
    fn send_now(&mut self, target: Target, msg: &Envelope<'_>) -> Option<Sending> {
        // A modern call too (one that asks for log messages opens its scope here, held until
        // its answer), unless it is a retry: its state is checked first, by `route`.
        let declared = self.modern.map(|m| m.declared);
        if declared.is_some_and(|d| d.retry)
            || matches!(target, Target::Subscription(_) | Target::Task)
        {
            return None;
        }
        self.services
            .supervisor
            .ensure_instances(&self.servers, self.link.id(), &self.profile);
        if !matches!(self.answer_locally(target, msg), Local::Route) {
            return None;
        }
        let catalog = self.catalog.borrow().clone();
        let resolved = self.resolve(&catalog, msg, target).ok()?;
        if resolved
            .uri
            .as_deref()
            .is_some_and(|uri| !catalog.is_listed(uri))
        {
            // Only a template matches: a server still starting may list it (see `route`).
            return None;
        }
        if target == Target::Named(ListKind::Tools)
            && !matches!(
                tasks::call_mode(
                    &catalog,
                    msg,
                    resolved.rename.as_ref().map(|(raw, _)| *raw),
                    declared.as_ref()
                ),
                Ok(CallMode::Plain)
            )
        {
            return None;
        }
        let upstream = self.upstream_for(&resolved.server, true)?;
        if let Some(call) = self.call.as_mut() {
            call.set_server(&resolved.server);
        }
        if let Some(declared) = declared {
            let link = &self.link;
            // Entered before the call is sent, as `route` does (it may set the upstream's level).
            let scope = self
                .log_level
                .map(|rank| LogScope::enter(&self.services.hub, link, &upstream, rank));
            let (caps, level) = (declared.caps, self.log_level);
            let call = mrtr::send_modern(&upstream, msg, resolved.rename, link, caps, level);
            let client_id = msg.id.unwrap_or(RawValue::NULL).to_owned();
            return Some(Sending::Modern(Box::new((client_id, call, scope))));
        }
        let rename = resolved.rename;
        let sent = send(
            &upstream,
            msg,
            rename.as_ref().map(|(raw, name)| (*raw, name.as_str())),
            self.link.clone(),
        );
        // Kept for a modern upstream's request for input (`answer_legacy`), not copied.
        self.original = rename.map(|(_, name)| name);
        Some(Sending::Legacy(sent))
    }

    /// A modern call's answer (see `mrtr::finish`), completed for a modern client.
    async fn answer_modern(mut self, (client_id, call, scope): ModernSent) {
        let answer = match call {
            Ok(call) => mrtr::finish(call, &self.line, self.link.id()).await,
            Err(answer) => answer,
        };
        // Its log messages came before its answer and were delivered: the scope closes before
        // the answer goes out (see `route`).
        drop(scope);
        if let Some(call) = self.call.take() {
            call.finish(&answer);
        }
        let cacheable = self.modern.is_some_and(|m| m.cacheable);
        let answer = modern::complete(answer, cacheable);
        self.out.send_answer(answer, Some(&client_id)).await;
    }

    /// The rest of a legacy request [`send_now`](Self::send_now) sent: what `route` does with
    /// a plain call's answer. `bytes` are held until it is answered.
    ///
    /// Not an `async fn` of `self`: the future is the block, which keeps the few parts it needs
    /// once, where each `async fn` taking the context by value would hold another copy of it.
    fn answer_legacy(
        self,
        mut sent: Sent,
        bytes: crate::router::outbox::RequestBytes,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let RequestContext {
            out,
            link,
            line,
            mut call,
            mut original,
            ..
        } = self;
        async move {
            let _bytes = bytes;
            let mut answer = sent.answer().await;
            if mrtr::is_input_required(&answer) {
                // A modern upstream asks a legacy client for input.
                let text = std::str::from_utf8(&line).unwrap_or_default();
                let rounds =
                    mrtr::legacy_rounds(answer, &sent.upstream, text, original.take(), &link);
                answer = Box::pin(rounds).await;
            }
            if let Some(call) = call.take() {
                call.finish(&answer);
            }
            out.send_answer(answer, Some(&sent.client_id)).await;
        }
    }

    /// Answers what mcpd serves itself: the search trio's `search_tools` and `describe_tools`
    /// (a `call_tool` becomes the `tools/call` it stands for, in `self.line`) and the full
    /// instructions of a server.
    fn answer_locally(&self, target: Target, msg: &Envelope<'_>) -> Local {
        self.local_answer(target, msg).unwrap_or(Local::Route)
    }

    fn local_answer(&self, target: Target, msg: &Envelope<'_>) -> Option<Local> {
        msg.params?;
        if !matches!(target, Target::Named(ListKind::Tools) | Target::Uri) {
            return None;
        }
        let catalog = self.catalog.borrow().clone();
        match target {
            Target::Named(ListKind::Tools) => {
                let name = msg
                    .param("name")
                    .and_then(|n| envelope::decode_str(n).ok())?;
                if !search::is_trio(&name) || !catalog.searches(&self.servers, &self.shape) {
                    return None;
                }
                let tools: Vec<_> = catalog
                    .visible(ListKind::Tools, &self.servers, &self.shape.tools)
                    .collect();
                Some(match search::handle(&name, msg, &tools) {
                    search::Handled::Answer(answer) => Local::Answer(answer),
                    search::Handled::Forward(call) => Local::Replaced(call),
                })
            }
            Target::Uri => {
                let uri = msg
                    .param("uri")
                    .and_then(|u| envelope::decode_str(u).ok())?;
                let server = uri.strip_prefix(instructions::URI_PREFIX)?;
                let id = msg.id.unwrap_or(RawValue::NULL);
                let text = self
                    .servers
                    .iter()
                    .find(|s| *s == server)
                    .and_then(|s| catalog.servers.get(s)?.instructions.clone());
                Some(Local::Answer(match text {
                    Some(text) => envelope::response(id, &instructions::read_result(server, &text)),
                    None => envelope::error_response(
                        Some(id),
                        RESOURCE_NOT_FOUND,
                        &format!("Resource not found: {uri}"),
                    ),
                }))
            }
            _ => None,
        }
    }

    fn resolve<'a>(
        &self,
        catalog: &Catalog,
        msg: &Envelope<'a>,
        target: Target,
    ) -> Result<Resolved<'a>, (i64, String)> {
        // `_else`: the message is written only for the error (it was formatted for every
        // request: about 1,000 instructions per call).
        msg.params.ok_or_else(|| {
            (
                envelope::INVALID_PARAMS,
                format!("{} needs params", msg.method()),
            )
        })?;
        match target {
            Target::Named(kind) => self.resolve_name(catalog, msg.param("name"), kind),
            Target::Task => Err((
                envelope::INVALID_PARAMS,
                "tasks are found by their id".to_owned(),
            )),
            Target::Uri | Target::Subscription(_) => {
                let (server, uri) = self.resolve_uri(catalog, msg.param("uri"))?;
                Ok(Resolved {
                    server,
                    rename: None,
                    uri: Some(uri),
                })
            }
            Target::Completion => {
                let reference = msg.param("ref").ok_or_else(|| {
                    (
                        envelope::INVALID_PARAMS,
                        "completion/complete needs params.ref".to_owned(),
                    )
                })?;
                match member(reference, "type")
                    .and_then(|t| envelope::decode_str(t).ok())
                    .as_deref()
                {
                    Some("ref/prompt") => {
                        self.resolve_name(catalog, member(reference, "name"), ListKind::Prompts)
                    }
                    Some("ref/resource") => {
                        let (server, _) = self.resolve_uri(catalog, member(reference, "uri"))?;
                        Ok(Resolved {
                            server,
                            rename: None,
                            uri: None,
                        })
                    }
                    _ => Err((
                        envelope::INVALID_PARAMS,
                        "params.ref.type must be ref/prompt or ref/resource".to_owned(),
                    )),
                }
            }
        }
    }

    /// The error for a name the catalog does not have. When it is namespaced by a server that
    /// is down and has never listed anything (waiting for a login, crash-looping, failing), say
    /// that instead: the tool may well exist once the server is up.
    fn unknown_name(&self, name: &str, what: &str) -> (i64, String) {
        let config = self.services.supervisor.config();
        let separator = config.options.separator.clone();
        if let Some((server, problem)) = config
            .broken
            .iter()
            .find(|(server, _)| name.starts_with(&format!("{server}{separator}")))
        {
            return (
                envelope::UPSTREAM_UNAVAILABLE,
                crate::config_report::call_error(name, server, problem),
            );
        }
        let down = self.servers.iter().find_map(|server| {
            let prefix = format!("{server}{separator}");
            if !name.starts_with(&prefix) {
                return None;
            }
            let snapshot = self.upstream_for(server, false)?.snapshot();
            let reason = match snapshot.state {
                ServerState::AuthRequired => format!("needs authorization: run `mcpctl login {server}`"),
                ServerState::CrashLoop => format!("keeps failing as it starts; see `mcpctl status` and run `mcpctl restart {server}`"),
                ServerState::Failed => "failed and is restarting".to_owned(),
                ServerState::Stopped => format!("was stopped; `mcpctl start {server}` starts it"),
                // The reason names the secret and the command that sets it.
                ServerState::SecretMissing => {
                    let why = snapshot.last_error.unwrap_or_default();
                    return Some(format!("Unknown {what}: {name}: server `{server}` {why}"));
                }
                _ => return None,
            };
            let last = snapshot.last_error.map(|e| format!(" ({e})")).unwrap_or_default();
            Some(format!("Unknown {what}: {name}: server `{server}` {reason}{last}"))
        });
        match down {
            Some(message) => (envelope::UPSTREAM_UNAVAILABLE, message),
            None => (envelope::INVALID_PARAMS, format!("Unknown {what}: {name}")),
        }
    }

    /// `raw`: the `name` member of the params (or of a completion's `ref`).
    fn resolve_name<'a>(
        &self,
        catalog: &Catalog,
        raw: Option<&'a RawValue>,
        kind: ListKind,
    ) -> Result<Resolved<'a>, (i64, String)> {
        let what = if kind == ListKind::Tools {
            "tool"
        } else {
            "prompt"
        };
        let raw = raw.ok_or_else(|| {
            (
                envelope::INVALID_PARAMS,
                format!("the {what} name is missing"),
            )
        })?;
        let name = envelope::decode_str(raw).map_err(|_| {
            (
                envelope::INVALID_PARAMS,
                format!("the {what} name must be a string"),
            )
        })?;
        if kind == ListKind::Tools
            && let Some(server) = catalog.denied.get(name.as_ref())
            && self.servers.contains(server)
        {
            return Err((
                envelope::INVALID_PARAMS,
                format!(
                    "Tool {name} is not available: mcpServers.{server}.tools in the mcpd configuration denies it"
                ),
            ));
        }
        let entry = catalog
            .get(kind, &name)
            .filter(|e| self.servers.contains(&e.server))
            .ok_or_else(|| match catalog.withheld(kind, &name) {
                Some(w) if self.servers.contains(&w.server) => (
                    envelope::INVALID_PARAMS,
                    crate::observe::blocked_message(what, &name, &w.server, &w.original, w.new),
                ),
                _ => self.unknown_name(&name, what),
            })?;
        if kind == ListKind::Tools && !self.shape.tools.permits(&entry.original) {
            return Err((
                envelope::INVALID_PARAMS,
                format!(
                    "Tool {name} is not available: profiles.{}.tools in the mcpd configuration denies it",
                    self.profile
                ),
            ));
        }
        let original = serde_json::to_string(&entry.original).unwrap_or_default();
        Ok(Resolved {
            server: entry.server.clone(),
            rename: Some((raw, original)),
            uri: None,
        })
    }

    /// `raw`: the `uri` member of the params (or of a completion's `ref`).
    fn resolve_uri(
        &self,
        catalog: &Catalog,
        raw: Option<&RawValue>,
    ) -> Result<(String, String), (i64, String)> {
        let uri = raw
            .and_then(|u| envelope::decode_str(u).ok())
            .ok_or_else(|| {
                (
                    envelope::INVALID_PARAMS,
                    "a string uri is needed".to_owned(),
                )
            })?;
        if let Some(owner) = catalog.resource_owner(&uri, &self.servers) {
            return Ok((owner.to_owned(), uri.into_owned()));
        }
        // A URI nobody lists or templates: if only one server offers resources, it is its.
        let mut offering = self
            .servers
            .iter()
            .filter(|s| catalog.servers.get(*s).is_some_and(|f| f.caps.resources));
        match (offering.next(), offering.next()) {
            (Some(only), None) => Ok((only.clone(), uri.into_owned())),
            _ => Err((RESOURCE_NOT_FOUND, format!("Resource not found: {uri}"))),
        }
    }
}

/// What mcpd does with a request it may answer itself.
enum Local {
    /// This is the answer.
    Answer(String),
    /// Route this request instead (a search-mode `call_tool` becomes the call it stands for).
    Replaced(String),
    /// Route the request as it is.
    Route,
}

fn parse(line: &Bytes) -> Option<Envelope<'_>> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|t| Envelope::parse(t).ok())
}

/// A (un)subscription counted in the hub before the upstream answered it.
struct SubscriptionCount {
    key: crate::upstream::InstanceKey,
    uri: String,
    session: u64,
    subscribe: bool,
}

impl SubscriptionCount {
    /// The upstream refused (or was gone): the count is put back as it was, so that the next
    /// subscriber asks the upstream again instead of being told it is subscribed.
    fn undo(self, hub: &crate::router::hub::Hub) {
        if self.subscribe {
            hub.unsubscribe(&self.key, &self.uri, self.session);
        } else {
            hub.subscribe(&self.key, &self.uri, self.session);
        }
    }
}

/// Rewrites a client request for `upstream` (id, progress token, name), sends it, and waits for
/// the answer within the server's timeout, which each progress notification extends up to the
/// server's maximum.
pub(crate) async fn forward(
    upstream: &UpstreamHandle,
    msg: &Envelope<'_>,
    rename: Option<(&RawValue, String)>,
    session: SessionLink,
) -> String {
    let rename = rename.as_ref().map(|(raw, name)| (*raw, name.as_str()));
    send(upstream, msg, rename, session).answer().await
}

/// The first half of [`forward`]: the request rewritten and handed to the upstream's actor
/// at once, while the client's envelope is at hand; [`Sent::answer`] waits for the answer
/// (and is all a forwarded request's future has left to do on the common path, see
/// [`RequestContext::send_now`]).
pub(crate) fn send(
    upstream: &UpstreamHandle,
    msg: &Envelope<'_>,
    rename: Option<(&RawValue, &str)>,
    session: SessionLink,
) -> Sent {
    let (caps, log_level) = modern::request_meta(msg);
    let request = Forward::new(upstream, msg, rename, session.caller(), caps, log_level);
    let (upstream_id, client_id) = (request.upstream_id, request.client_id.clone());
    let progress = Arc::clone(&request.progress);
    let waiting = upstream.request(request).map(|rx| Waiting {
        upstream_id,
        rx,
        progress,
        started: Instant::now(),
        armed: true,
        reason: "cancelled by the client",
    });
    Sent {
        upstream: upstream.clone(),
        client_id,
        waiting,
    }
}

/// A request handed to its upstream (or refused by it at once), waiting for the answer.
/// Dropped before the answer came (the client cancelled it, the session ended, it timed out),
/// it cancels the request upstream.
/// A request [`RequestContext::send_now`] sent: a legacy client's, or a modern client's (its
/// client id and its call, see `mrtr::send_modern`).
pub(crate) enum Sending {
    Legacy(Sent),
    Modern(Box<ModernSent>),
}

/// A modern call [`RequestContext::send_now`] sent: the client's id, the call (or the answer
/// of a refusal), and the scope of its log messages when it asked for them.
type ModernSent = (
    Box<RawValue>,
    Result<mrtr::InFlight, String>,
    Option<LogScope>,
);

pub(crate) struct Sent {
    upstream: UpstreamHandle,
    client_id: Box<RawValue>,
    waiting: Result<Waiting, crate::upstream::RouteError>,
}

struct Waiting {
    upstream_id: u64,
    rx: tokio::sync::oneshot::Receiver<crate::upstream::Reply>,
    progress: Arc<crate::upstream::Progress>,
    started: Instant,
    armed: bool,
    reason: &'static str,
}

impl Sent {
    /// The answer for the client (its own id): the upstream's, or the error of a refusal, a
    /// lost upstream or the timeout.
    pub(crate) async fn answer(&mut self) -> String {
        let client_id = &self.client_id;
        let error = |code, message: &str| envelope::error_response(Some(client_id), code, message);
        let w = match &mut self.waiting {
            Ok(w) => w,
            Err(e) => return error(e.code, &e.message),
        };
        let (timeout, max) = self.upstream.timeouts();
        let started = w.started;
        let mut deadline = started + timeout;
        loop {
            tokio::select! {
                reply = &mut w.rx => {
                    w.armed = false;
                    return match reply {
                        Ok(Ok(answer)) => answer,
                        Ok(Err(e)) => error(e.code, &e.message),
                        Err(_) => error(envelope::UPSTREAM_LOST, &format!("server `{}` dropped the request", self.upstream.name())),
                    };
                }
                _ = tokio::time::sleep_until(deadline) => {
                    // Progress since (see `upstream::Progress`) moves the deadline.
                    if let Some(later) = w.progress.extended(deadline, started, timeout, max) {
                        deadline = later;
                        continue;
                    }
                    w.reason = "timed out in mcpd";
                    let waited = started.elapsed().as_secs();
                    return error(envelope::REQUEST_TIMEOUT, &format!("server `{}` did not answer within {waited}s", self.upstream.name()));
                }
            }
        }
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        if let Ok(w) = &self.waiting
            && w.armed
        {
            self.upstream.cancel(w.upstream_id, w.reason);
        }
    }
}
