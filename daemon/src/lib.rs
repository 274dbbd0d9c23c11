//! mcpd: a per-user MCP daemon.
//!
//! Every MCP client launches `mcp-shim`, which relays to this daemon over a Unix socket. The
//! daemon runs each configured upstream server once, shares it among all sessions, and serves
//! their tools under namespaced names. See `docs/ARCHITECTURE.md` for the loops, who owns what,
//! and the invariants.
//!
//! [`run`] is the entry point: the `mcpd` binary only parses flags, binds the socket and
//! installs signal handlers around it, and tests call it the same way.

pub(crate) mod accounting;
pub mod auth;
pub(crate) mod codec;
pub mod config;
pub(crate) mod config_report;
pub(crate) mod control;
pub(crate) mod control_failure;
pub(crate) mod daemon;
pub(crate) mod limits;
pub use limits::raise_open_files;
pub mod listener;
pub mod logging;
pub(crate) mod memory;
pub(crate) mod net;
pub mod notify;
pub(crate) mod observe;
pub(crate) mod quiet;
pub(crate) mod redact;
pub mod router;
pub mod runtime;
pub(crate) mod sandbox;
pub(crate) mod secrets;
pub mod server;
pub(crate) mod supervisor;
pub mod upstream;

pub use router::session::SHUTDOWN_GRACE;
pub use server::{DaemonConfig, run};
