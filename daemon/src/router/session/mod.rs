//! One MCP session, split by job so that another front end (HTTP) or protocol era reuses the
//! MCP semantics:
//!
//! - `core.rs`: what a client's lines mean, whatever carries them: the handshake, dispatch,
//!   the lists, forwarding with its id, token and name rewrites, timeouts and cancellation.
//! - `modern.rs`: the 2026-07-28 era towards clients (decided per request by the core).
//! - `tasks.rs`: task-augmented calls and `tasks/*`, routed to the owning server, ids mapped.
//! - `unix.rs`: the Unix-socket front end for `mcp-shim`: framing, the writer task, the output
//!   budget and the stall check.
//! - `direct.rs`: `mcp-shim --direct`: the client's own stdin and stdout, handed over the
//!   socket, run through the same loop as `unix.rs`; `handback.rs` gives them back to the shim
//!   when the daemon stops on purpose.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::catalog::SharedCatalog;
use super::hub::Hub;
use crate::observe::Observer;
use crate::supervisor::Supervisor;

mod core;
mod direct;
mod handback;
pub mod modern;
mod requests;
pub mod tasks;
mod unix;

pub use self::core::SUPPORTED_PROTOCOLS;
pub(crate) use self::core::forward;
pub use self::direct::{Asked as DirectAsked, serve as serve_direct};
pub use self::unix::{SHUTDOWN_GRACE, Started, serve};

/// What a session needs from the rest of the daemon (it holds no `Daemon`).
#[derive(Debug, Clone)]
pub struct Services {
    /// The configuration in force and the upstream instances.
    pub supervisor: Arc<Supervisor>,
    /// The session registry and subscriptions.
    pub hub: Arc<Hub>,
    /// Audit, traffic and statistics.
    pub observer: Arc<Observer>,
    /// The merged catalog.
    pub catalog: watch::Receiver<SharedCatalog>,
    /// Cancelled when the daemon shuts down.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown's grace for the requests in flight ends early.
    pub cut_short: CancellationToken,
}
