//! Routing between client sessions and upstreams: the merged catalog, namespaced names and the
//! per-session MCP loop.

pub mod catalog;
pub mod names;
pub mod session;
