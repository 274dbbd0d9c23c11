//! mcpd: a per-user MCP daemon.
//!
//! Every MCP client launches `mcp-shim`, which relays to this daemon over a Unix socket. The
//! daemon runs each configured upstream server once, shares it among all sessions, and serves
//! their tools under namespaced names. See `docs/ARCHITECTURE.md` for the loops, who owns what,
//! and the invariants.
//!
//! [`run`] is the entry point: the `mcpd` binary only parses flags, binds the socket and
//! installs signal handlers around it, and tests call it the same way.

pub mod accounting;
pub mod auth;
pub mod codec;
pub mod config;
pub mod config_report;
pub mod control;
pub mod daemon;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod notify;
pub mod observe;
pub mod redact;
pub mod router;
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod supervisor;
pub mod upstream;

pub use server::{DaemonConfig, run};
