//! Upstream servers: one actor task per configured server owns its child process, its stdin
//! queue and its table of pending requests. Everything else talks to it through an
//! [`UpstreamHandle`]: requests go in over a bounded channel, state comes out over a `watch`.
//!
//! Ids: the handle hands out upstream request ids from one counter, so a session can rewrite a
//! client's request (its `id` and, for `tools/call`, the tool name) in a single splice before it
//! reaches the actor. The actor remembers each id's original client id and puts it back into the
//! response, so that any number of sessions share one upstream without their ids colliding.

mod actor;
pub mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mcpd_proto::ServerState;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::config::ServerSpec;
pub use process::StopTimeouts;

/// Commands queued for one upstream actor before senders are told it is busy.
const COMMAND_QUEUE: usize = 1024;

/// A failure to route a request to an upstream, answered to the client as a JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// JSON-RPC error code (see `mcpd_proto::envelope`).
    pub code: i64,
    /// Message for the client.
    pub message: String,
}

/// The upstream's answer to one forwarded request: the response line with the client's own id
/// already restored, or why there is none.
pub type Reply = Result<String, RouteError>;

/// One tool as the upstream described it.
#[derive(Debug, Clone)]
pub struct UpstreamTool {
    /// Its name on the upstream.
    pub name: String,
    /// The tool object exactly as the upstream sent it.
    pub raw: Box<RawValue>,
}

/// What the rest of the daemon may know about an upstream, published by its actor.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Lifecycle state.
    pub state: ServerState,
    /// Pid of the running process.
    pub pid: Option<u32>,
    /// Its tools, kept across restarts so that they stay listed.
    pub tools: Arc<Vec<UpstreamTool>>,
    /// Whether `tools` is known (a server still starting for the first time has none yet).
    pub tools_known: bool,
    /// Times it was started again.
    pub restarts: u32,
    /// Why it last failed.
    pub last_error: Option<String>,
    /// `name version` from its `initialize` result.
    pub server_info: Option<String>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            state: ServerState::Starting,
            pid: None,
            tools: Arc::new(Vec::new()),
            tools_known: false,
            restarts: 0,
            last_error: None,
            server_info: None,
        }
    }
}

#[derive(Debug)]
enum Command {
    Request {
        /// The id the request already carries on its way upstream.
        upstream_id: u64,
        /// The rewritten request line.
        line: String,
        /// The client's id, put back into the response.
        client_id: Box<RawValue>,
        reply: oneshot::Sender<Reply>,
    },
    Cancel {
        upstream_id: u64,
        reason: &'static str,
    },
    Stop {
        done: oneshot::Sender<()>,
    },
}

/// The way to one upstream actor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UpstreamHandle {
    name: Arc<str>,
    spec: Arc<ServerSpec>,
    tx: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Snapshot>,
    next_id: Arc<AtomicU64>,
}

impl UpstreamHandle {
    /// Starts the actor for server `name`. `catalog_dirty` is notified whenever its state or
    /// tools change.
    pub fn spawn(
        name: &str,
        spec: ServerSpec,
        catalog_dirty: Arc<Notify>,
        stop: StopTimeouts,
    ) -> Self {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (snapshot_tx, snapshot) = watch::channel(Snapshot::default());
        let next_id = Arc::new(AtomicU64::new(1));
        let handle = Self {
            name: name.into(),
            spec: Arc::new(spec),
            tx,
            snapshot,
            next_id: Arc::clone(&next_id),
        };
        let actor = actor::Actor::new(
            Arc::clone(&handle.name),
            Arc::clone(&handle.spec),
            rx,
            snapshot_tx,
            catalog_dirty,
            next_id,
            stop,
        );
        tokio::spawn(actor.run());
        handle
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration it runs with.
    pub fn spec(&self) -> &ServerSpec {
        &self.spec
    }

    /// A copy of its current state.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    /// A fresh request id for this upstream.
    pub fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// How long a request to it may take.
    pub fn request_timeout(&self) -> Duration {
        self.spec.request_timeout
    }

    /// Queues a request whose id is already `upstream_id`. The reply arrives on the receiver.
    pub fn request(
        &self,
        upstream_id: u64,
        line: String,
        client_id: Box<RawValue>,
    ) -> Result<oneshot::Receiver<Reply>, RouteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Command::Request {
                upstream_id,
                line,
                client_id,
                reply,
            })
            .map_err(|e| match e {
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
            })?;
        Ok(rx)
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

    /// Stops the server with the stop sequence and waits until it is gone.
    pub async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Stop { done }).await.is_ok() {
            let _ = wait.await;
        }
    }
}
