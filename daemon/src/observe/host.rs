//! What observe's control commands (`tools diff|approve|check`, `stats`, `traffic`) need from
//! the rest of the daemon: a narrow service, so that `observe` depends on neither the daemon
//! nor the router (the router uses `observe` for audit and traffic taps; nothing points back).
//! The daemon implements it (`daemon/observe_host.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ServerSpec};
use crate::upstream::{ListKind, Snapshot};

/// See the module documentation.
pub trait Host: Send + Sync {
    /// Pins, audit, traffic, statistics.
    fn observer(&self) -> &Arc<super::Observer>;
    /// The configuration in force.
    fn config(&self) -> Arc<Config>;
    /// Every secret value the daemon knows, for what is shown.
    fn redactor(&self) -> &crate::redact::Redactor;
    /// Cancelled when the daemon stops.
    fn shutdown(&self) -> &CancellationToken;
    /// The catalog must be built again (definitions were approved).
    fn catalog_changed(&self);
    /// Each server's definition and its lists as last seen.
    fn catalog_views(&self) -> BTreeMap<String, (ServerSpec, Snapshot)>;
    /// The name clients see for `server`'s tool or prompt `name`.
    fn namespaced(&self, server: &str, name: &str) -> String;
    /// The server whose tool or prompt clients call `name` (listed or withheld).
    fn owner(&self, kind: ListKind, name: &str) -> Option<String>;
    /// The server a request for resource `uri` goes to.
    fn resource_owner(&self, uri: &str) -> Option<String>;
}
