//! The upstream's port towards clients: what an upstream actor needs from the sessions side,
//! defined here and implemented by the router (`router/downstream.rs`), so that the upstream
//! layer knows nothing of sessions, their registry or routing policy.
//!
//! - A [`Caller`] is a session as a forwarded request's upstream sees it: where its progress
//!   notifications go and what it can answer.
//! - [`Downstream`] is everything else: which session answers a server-to-client request and
//!   where its answer goes back, the fan-out of notifications (log messages, resource updates,
//!   task status, elicitation completions), and what sessions want of a (re)started upstream
//!   (log level, subscriptions).

use std::fmt;
use std::sync::Arc;

use mcpd_proto::envelope::Envelope;
use tokio::time::Instant;

use super::{InstanceKey, RouteError, UpstreamRef};

/// What a client declared it can do (its `initialize`, or a modern request's `_meta`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCaps {
    /// `sampling`.
    pub sampling: bool,
    /// `elicitation` (form mode; an empty `elicitation` object means form).
    pub elicitation_form: bool,
    /// `elicitation.url`.
    pub elicitation_url: bool,
    /// `roots`.
    pub roots: bool,
}

/// A session as an upstream sees it. Implemented by the router's session link.
pub trait Caller: Send + Sync + fmt::Debug {
    /// The session's id.
    fn id(&self) -> u64;
    /// Queues a line for the client without waiting; `false` if its queue is full or gone.
    fn try_send(&self, line: String) -> bool;
    /// What the client declared in its `initialize`.
    fn caps(&self) -> ClientCaps;
    /// The log level the client set (`logging/setLevel`), by name.
    fn log_level(&self) -> Option<&'static str>;
    /// Whether the session is gone.
    fn is_closed(&self) -> bool;
}

/// A cheap handle on a [`Caller`].
pub type CallerRef = Arc<dyn Caller>;

/// A session that could answer a server-to-client request: one with a request in flight to the
/// upstream, or the one that last said its roots changed.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The session.
    pub caller: &'a CallerRef,
    /// What it can answer (a modern request's own declaration, else its session's).
    pub caps: ClientCaps,
    /// When its request started; `None` for the roots session, which has none in flight.
    pub started: Option<Instant>,
}

/// What an upstream actor needs from the sessions side (see the module documentation).
pub(crate) trait Downstream: Send + Sync + fmt::Debug {
    /// Which of `candidates` a server-to-client request `method` goes to (its index), if any
    /// can answer it.
    fn choose(&self, method: &str, url_mode: bool, candidates: &[Candidate<'_>]) -> Option<usize>;

    /// Sends the request `msg` of `from` (JSON-RPC id `upstream_id`, as JSON text) to `to`
    /// under an id of mcpd's own, and remembers where the answer goes.
    fn send_request(
        &self,
        to: &CallerRef,
        from: &UpstreamRef,
        upstream_id: &str,
        msg: &Envelope<'_>,
    ) -> Result<(), RouteError>;

    /// `from` cancelled its request `upstream_id`: the client is told and the route forgotten.
    fn request_cancelled(&self, from: &UpstreamRef, upstream_id: &str, msg: &Envelope<'_>);

    /// `from` went away: the requests it sent to clients are void (the clients are told).
    fn upstream_gone(&self, from: &UpstreamRef);

    /// Whether a client still owes `from` an answer.
    fn owes(&self, from: &UpstreamRef) -> bool;

    /// A notification of instance `from` for clients (log message, resource update, task
    /// status, elicitation completion); `false` if the router does not route it.
    fn notify(&self, from: &InstanceKey, msg: &Envelope<'_>) -> bool;

    /// A log message of instance `from` that came on the response stream of a request of
    /// session `to` (streamable HTTP ties it to that request): a modern client gets it only
    /// for its own request. By default, as [`notify`](Self::notify).
    fn request_log(&self, from: &InstanceKey, to: &CallerRef, msg: &Envelope<'_>) {
        let _ = to;
        self.notify(from, msg);
    }

    /// The most verbose log level any session wants, by name.
    fn log_level(&self) -> Option<&'static str>;

    /// The URIs of instance `key` some session is subscribed to (re-subscribed after a start).
    fn subscribed_uris(&self, key: &InstanceKey) -> Vec<String>;
}
