//! Upstream servers: one actor task per configured server owns its transport (a child process
//! today), its table of pending requests, and the routes of the requests it sends to clients.
//! Everything else talks to it through an [`UpstreamHandle`]: commands go in over a bounded
//! channel, state comes out over a `watch`.
//!
//! Ids: the handle hands out upstream request ids from one counter, so a session can rewrite a
//! client's request (its `id`, its progress token and, for named items, the name) in a single
//! splice before it reaches the actor. The actor remembers each id's client and original id and
//! puts them back into the response and into progress notifications, so that any number of
//! sessions share one upstream without their ids colliding.

mod actor;
#[cfg(test)]
mod fake;
pub(crate) mod ids;
mod instance;
pub(crate) mod lenient;
pub mod modern;
pub(crate) mod port;
pub(crate) mod process;
mod progress;
pub(crate) mod records;
pub mod sse;
pub(crate) mod transport;
pub mod tree;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mcpd_proto::ServerState;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::config::ServerSpec;
pub use instance::{AsKeyRef, InstanceKey, KeyRef, Scope, ScopeRef};
pub use port::ClientCaps;
pub(crate) use port::{Caller, CallerRef, Candidate, Downstream};
pub use process::StopTimeouts;
pub use progress::Progress;

/// Commands queued for one upstream actor before senders are told it is busy.
const COMMAND_QUEUE: usize = 1024;

/// A failure to route a request to an upstream, answered to the client as a JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteError {
    /// JSON-RPC error code (see `mcpd_proto::envelope`).
    pub code: i64,
    /// Message for the client.
    pub message: String,
}

/// The upstream's answer to one forwarded request: the response line with the client's own id
/// already restored, or why there is none.
pub(crate) type Reply = Result<String, RouteError>;

/// The kinds of list an upstream serves; the daemon merges each into its catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ListKind {
    /// `tools/list`.
    Tools,
    /// `prompts/list`.
    Prompts,
    /// `resources/list`.
    Resources,
    /// `resources/templates/list`.
    Templates,
}

impl ListKind {
    /// Every kind, in catalog order.
    pub(crate) const ALL: [ListKind; 4] =
        [Self::Tools, Self::Prompts, Self::Resources, Self::Templates];

    /// The list request's method.
    pub fn method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::Templates => "resources/templates/list",
        }
    }

    /// The member of the list result that holds the items.
    pub fn field(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::Templates => "resourceTemplates",
        }
    }

    /// The member of an item that identifies it.
    pub(crate) fn key_field(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => "name",
            Self::Resources => "uri",
            Self::Templates => "uriTemplate",
        }
    }

    /// The notification an upstream sends when this list changed.
    pub(crate) fn changed_notification(self) -> &'static str {
        match self {
            Self::Tools => "notifications/tools/list_changed",
            Self::Prompts => "notifications/prompts/list_changed",
            Self::Resources | Self::Templates => "notifications/resources/list_changed",
        }
    }

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One listed item (tool, prompt, resource, template) as the upstream described it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// Its name, URI or URI template.
    pub key: String,
    /// The object exactly as the upstream sent it.
    pub raw: Box<RawValue>,
}

/// What an upstream declared it can do, from its `initialize` result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct UpstreamCaps {
    /// `tools`.
    pub tools: bool,
    /// `prompts`.
    pub prompts: bool,
    /// `resources`.
    pub resources: bool,
    /// `resources.subscribe`.
    pub subscribe: bool,
    /// `logging`.
    pub logging: bool,
    /// `completions`.
    pub completions: bool,
    /// `tasks.requests.tools.call` (2025-11-25 task-augmented calls).
    #[serde(default)]
    pub tasks: bool,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.raw.get() == other.raw.get()
    }
}

impl UpstreamCaps {
    /// Whether the server offers the given list at all.
    pub fn offers(&self, kind: ListKind) -> bool {
        match kind {
            ListKind::Tools => self.tools,
            ListKind::Prompts => self.prompts,
            ListKind::Resources | ListKind::Templates => self.resources,
        }
    }
}

/// What the rest of the daemon may know about an upstream, published by its actor.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Lifecycle state.
    pub state: ServerState,
    /// Pid of the running process.
    pub pid: Option<u32>,
    /// Its lists, indexed by [`ListKind::index`]; kept across restarts so they stay listed.
    pub lists: [Arc<Vec<Item>>; 4],
    /// Whether each list is known from the live server (not only from the cache).
    pub known: [bool; 4],
    /// Whether `lists` and `caps` came from the on-disk cache and the live server has not
    /// answered yet.
    pub cached: bool,
    /// What it declared it can do.
    pub caps: UpstreamCaps,
    /// Its `instructions`, if any.
    pub instructions: Option<String>,
    /// Times it was started again.
    pub restarts: u32,
    /// Why it last failed.
    pub last_error: Option<String>,
    /// `name version` from its `initialize` result.
    pub server_info: Option<String>,
    /// How its process last ended.
    pub last_exit: Option<String>,
    /// The last lines its process wrote to stderr (shared with the process's stderr reader).
    pub stderr: Option<Arc<std::sync::Mutex<std::collections::VecDeque<String>>>>,
    /// The state of its HTTP session, for remote servers.
    pub session: Option<String>,
    /// The sandbox, limits and tree of its running process.
    pub contain: Option<Arc<process::InForce>>,
    /// When it entered its current state.
    pub since: Option<std::time::Instant>,
    /// The protocol era it was found to speak (remembered in the catalog cache, so that an
    /// `auto` server is probed only once).
    pub era: Option<modern::Era>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            state: ServerState::Starting,
            pid: None,
            lists: Default::default(),
            known: [false; 4],
            cached: false,
            caps: UpstreamCaps::default(),
            instructions: None,
            restarts: 0,
            last_error: None,
            server_info: None,
            last_exit: None,
            stderr: None,
            session: None,
            contain: None,
            since: Some(std::time::Instant::now()),
            era: None,
        }
    }
}

impl Snapshot {
    /// Whether the items of `kind` can be served (live or from the cache).
    pub fn usable(&self, kind: ListKind) -> bool {
        self.known[kind.index()] || self.cached
    }
}

/// A forwarded client request.
#[derive(Debug)]
pub struct Forward {
    /// The id the request already carries on its way upstream.
    pub upstream_id: u64,
    /// The rewritten request line.
    pub line: String,
    /// The client's id, put back into the response.
    pub client_id: Box<RawValue>,
    /// The client's progress token, put back into progress notifications (whose token the
    /// session rewrote to `upstream_id`).
    pub progress_token: Option<Box<RawValue>>,
    /// The session that sent it.
    pub session: CallerRef,
    /// Stamped on each progress notification, to extend the request's timeout.
    pub progress: Arc<Progress>,
    /// The capabilities a modern client declared in this request's `_meta`; `None`: those of
    /// the session (its `initialize`).
    pub caps: Option<ClientCaps>,
    /// For a modern client's call: where the server-to-client requests the upstream sends
    /// during it go (the client cannot take them; see `router::mrtr`).
    pub(crate) asks: Option<mpsc::Sender<Ask>>,
    /// The log level a modern client asked for in this request's `_meta` (a legacy client's
    /// is its session's).
    pub log_level: Option<String>,
}

impl Forward {
    /// A client's request `msg` on its way to `upstream`: under a fresh upstream id, its
    /// progress token and `rename` (the namespaced name, the upstream's own) applied
    /// ([`ids::to_upstream`]: ids and tokens of different clients could collide, the upstream
    /// sees its own unique id and the actor maps it back). `caps` and `log_level` are what the
    /// request declared for itself (see the fields); no `asks`.
    pub(crate) fn new(
        upstream: &UpstreamHandle,
        msg: &mcpd_proto::envelope::Envelope<'_>,
        rename: Option<(&RawValue, &str)>,
        session: CallerRef,
        caps: Option<ClientCaps>,
        log_level: Option<String>,
    ) -> Self {
        let upstream_id = upstream.allocate_id();
        let (line, progress_token) = ids::to_upstream(msg, upstream_id, rename);
        Self {
            upstream_id,
            line,
            client_id: msg.id.unwrap_or(RawValue::NULL).to_owned(),
            progress_token,
            session,
            progress: Arc::new(Progress::default()),
            caps,
            asks: None,
            log_level,
        }
    }
}

/// A request (`sampling/createMessage`, `elicitation/create`, `roots/list`) a legacy upstream
/// sent during a modern client's call, handed to the call's task, which asks the client with an
/// `InputRequiredResult` and answers it with the client's retry.
#[derive(Debug)]
pub(crate) struct Ask {
    /// The upstream's id of the request, as JSON text.
    pub id: String,
    /// Its method.
    pub method: String,
    /// Its params, as the upstream wrote them.
    pub params: Option<Box<RawValue>>,
    /// The upstream that waits for the answer.
    pub upstream: UpstreamRef,
}

impl Ask {
    /// Answers the upstream's request with `result` (JSON text).
    pub fn answer(&self, result: &str) {
        let line = format!(r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#, self.id);
        self.upstream.client_response(self.id.clone(), line);
    }

    /// Answers the upstream's request with an error.
    pub fn refuse(&self, code: i64, message: &str) {
        let id = RawValue::from_string(self.id.clone()).ok();
        let line = mcpd_proto::envelope::error_response(id.as_deref(), code, message);
        self.upstream.client_response(self.id.clone(), line);
    }
}

#[derive(Debug)]
enum Command {
    Request(Forward, oneshot::Sender<Reply>),
    Cancel {
        upstream_id: u64,
        reason: &'static str,
    },
    /// A client's answer to a request the upstream sent; `line` already carries the upstream's
    /// id, whose text is `upstream_id`.
    ClientResponse {
        upstream_id: String,
        line: String,
    },
    /// A client's `notifications/roots/list_changed`: passed on, and the client becomes the
    /// one that answers the upstream's next `roots/list` when no request is in flight.
    RootsChanged {
        line: String,
        from: CallerRef,
    },
    /// A request mcpd makes for itself (e.g. `logging/setLevel`); its answer is only logged.
    Internal {
        method: &'static str,
        params: serde_json::Value,
    },
    /// A modern client's retry took over a parked call: the call's progress now goes under
    /// the retry's `progressToken` (none: no more progress).
    Retoken {
        upstream_id: u64,
        token: Option<Box<RawValue>>,
    },
    Stop {
        done: oneshot::Sender<()>,
    },
}

/// What every upstream of one daemon works with.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// How upstreams reach sessions (the router).
    pub downstream: Arc<dyn Downstream>,
    /// Notified whenever an upstream's state or lists change.
    pub catalog_dirty: Arc<Notify>,
    /// Where child records are kept (`None` in tests that spawn no process).
    pub records: Option<Arc<std::path::Path>>,
    /// OAuth for remote servers.
    pub auth: Option<Arc<crate::auth::AuthManager>>,
}

/// How a new instance begins.
#[derive(Debug)]
pub(crate) struct Begin {
    /// Its first snapshot (from the catalog cache, with its predecessor's restart count).
    pub initial: Snapshot,
    /// It starts when this opens (the instance it replaces has stopped); requests wait.
    pub gate: Option<oneshot::Receiver<()>>,
    /// Start at once even when the server is `lazy` (an operator's restart or start).
    pub eager: bool,
    /// Stay stopped until replaced (`mcpctl stop`): requests fail at once, saying so.
    pub stopped: bool,
}

/// The way to one upstream actor. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamHandle {
    name: Arc<str>,
    key: Arc<InstanceKey>,
    spec: Arc<ServerSpec>,
    tx: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Snapshot>,
    next_id: Arc<AtomicU64>,
}

/// Serial numbers of upstream actors, unique for the daemon's life.
static SERIALS: AtomicU64 = AtomicU64::new(1);

/// A reference to an upstream that does not keep its actor alive, kept in the routes of the
/// requests it sent to clients.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamRef {
    tx: mpsc::WeakSender<Command>,
    key: Arc<InstanceKey>,
    /// Which actor: a successor has the same key.
    serial: u64,
}

impl UpstreamRef {
    /// Which instance it is.
    pub fn key(&self) -> &InstanceKey {
        &self.key
    }

    /// Whether both refer to the same actor.
    pub fn same(&self, other: &UpstreamRef) -> bool {
        self.serial == other.serial
    }

    /// A reference to no actor (answers go nowhere), for tests of the router.
    #[cfg(test)]
    pub(crate) fn detached(server: &str) -> Self {
        let (tx, _) = mpsc::channel(1);
        Self {
            tx: tx.downgrade(),
            key: Arc::new(InstanceKey::shared(server)),
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Delivers a client's answer to a request the upstream sent.
    pub(crate) fn client_response(&self, upstream_id: String, line: String) {
        if let Some(tx) = self.tx.upgrade() {
            let _ = tx.try_send(Command::ClientResponse { upstream_id, line });
        }
    }
}

impl UpstreamHandle {
    /// Starts the actor of instance `key` running `spec`.
    pub fn spawn(key: InstanceKey, spec: ServerSpec, context: &Context, begin: Begin) -> Self {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (snapshot_tx, snapshot) = watch::channel(begin.initial);
        let next_id = Arc::new(AtomicU64::new(1));
        let handle = Self {
            name: key.server.as_str().into(),
            key: Arc::new(key),
            spec: Arc::new(spec),
            tx,
            snapshot,
            next_id: Arc::clone(&next_id),
        };
        let me = UpstreamRef {
            tx: handle.tx.downgrade(),
            key: Arc::clone(&handle.key),
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
        };
        let actor = actor::Actor::new(
            Arc::clone(&handle.key),
            Arc::clone(&handle.spec),
            rx,
            me,
            snapshot_tx,
            context.clone(),
            next_id,
        );
        tokio::spawn(actor.run(begin.gate, begin.eager, begin.stopped));
        handle
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests sent to the server since this handle was made (its id counter).
    pub fn requests(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// The configuration it runs with.
    pub fn spec(&self) -> &ServerSpec {
        &self.spec
    }

    /// A copy of its current state.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// Progress of the call `upstream_id` goes to the client under `token` from now on (a
    /// modern client's retry of a parked call, `router::mrtr`).
    pub(crate) fn retoken(&self, upstream_id: u64, token: Option<Box<RawValue>>) {
        let _ = self.tx.try_send(Command::Retoken { upstream_id, token });
    }

    /// Whether the current process speaks MCP 2026-07-28.
    pub(crate) fn is_modern(&self) -> bool {
        self.snapshot.borrow().era == Some(modern::Era::Modern)
    }

    /// A fresh request id for this upstream.
    pub(crate) fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// How long a request to it may take without progress, and at most with progress.
    pub fn timeouts(&self) -> (Duration, Duration) {
        (self.spec.request_timeout, self.spec.max_request_timeout)
    }

    /// Queues a request whose id is already `upstream_id`. The reply arrives on the receiver.
    pub fn request(&self, forward: Forward) -> Result<oneshot::Receiver<Reply>, RouteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Command::Request(forward, reply))
            .map_err(|e| self.send_error(e))?;
        Ok(rx)
    }

    fn send_error<T>(&self, e: mpsc::error::TrySendError<T>) -> RouteError {
        match e {
            mpsc::error::TrySendError::Full(_) => RouteError {
                code: mcpd_proto::envelope::UPSTREAM_BUSY,
                message: format!(
                    "server `{}` has too many requests queued; try again",
                    self.name
                ),
            },
            mpsc::error::TrySendError::Closed(_) => RouteError {
                code: mcpd_proto::envelope::UPSTREAM_UNAVAILABLE,
                message: format!("server `{}` has been stopped", self.name),
            },
        }
    }

    /// Forgets a request and tells the upstream with `notifications/cancelled`.
    pub fn cancel(&self, upstream_id: u64, reason: &'static str) {
        // A full queue means the actor is far behind; the response will then be dropped as
        // unknown when it arrives, which is the same outcome for the client.
        let _ = self.tx.try_send(Command::Cancel {
            upstream_id,
            reason,
        });
    }

    /// Passes a client's `notifications/roots/list_changed` on.
    pub(crate) fn roots_changed(&self, line: String, from: CallerRef) {
        let _ = self.tx.try_send(Command::RootsChanged { line, from });
    }

    /// Sends a request of mcpd's own; the answer is only logged.
    pub fn internal(&self, method: &'static str, params: serde_json::Value) {
        let _ = self.tx.try_send(Command::Internal { method, params });
    }

    /// Stops the server with the stop sequence and waits until it is gone.
    pub async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Stop { done }).await.is_ok() {
            let _ = wait.await;
        }
    }
}
