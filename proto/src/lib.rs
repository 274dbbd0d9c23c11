//! Wire types shared by `mcpd`, `mcp-shim` and `mcpctl`.
//!
//! Everything on the daemon's Unix socket is newline-delimited JSON, exactly MCP's stdio framing.
//! The first line a peer sends is a [`Hello`]; the daemon answers with a [`HelloReply`]. After an
//! attach welcome the connection carries MCP JSON-RPC untouched; after a control welcome it
//! carries [`ControlRequest`] / [`ControlResponse`] pairs.
//!
//! This crate has no async runtime so that the std-only shim can depend on it.

pub mod check;
pub mod control_error;
pub mod direct;
pub mod envelope;
#[cfg(test)]
mod format_tests;
pub mod line;
pub mod observe;
pub mod paths;
pub mod peek;
pub mod stay_down;
pub mod trust;
pub mod version;
pub mod wire;

pub use wire::*;
