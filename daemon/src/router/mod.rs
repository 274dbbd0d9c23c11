//! Routing between client sessions and upstreams: the merged catalog, namespaced names and the
//! per-session MCP loop.

pub mod cache;
pub mod catalog;
pub mod downstream;
pub mod hub;
pub mod instructions;
pub mod listen;
pub mod mrtr;
pub mod names;
pub mod outbox;
pub mod scoped;
pub mod search;
pub mod session;
pub mod subscribing;
