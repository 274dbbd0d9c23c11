//! The configuration file: parsed and validated by the `mcpd-config` crate (shared with
//! `mcpctl`, which must not link the daemon's runtime) and re-exported here whole, so that the
//! daemon says `config::ServerSpec` as before. What only the daemon does with it lives below.

pub use mcpd_config::*;

pub(crate) mod last_good;
