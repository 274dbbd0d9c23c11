//! Routing between client sessions and upstreams: the merged catalog, namespaced names and the
//! per-session MCP loop.

pub(crate) mod cache;
pub mod catalog;
pub(crate) mod downstream;
pub mod hub;
pub(crate) mod instructions;
pub(crate) mod listen;
pub(crate) mod mrtr;
pub(crate) mod names;
pub(crate) mod outbox;
pub(crate) mod scoped;
pub mod search;
pub(crate) mod session;
pub(crate) mod subscribing;
