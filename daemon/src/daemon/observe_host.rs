//! The daemon as the service `observe` needs ([`crate::observe::Host`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Daemon;
use crate::config::{Config, ServerSpec};
use crate::upstream::{ListKind, Snapshot};

impl crate::observe::Host for Daemon {
    fn observer(&self) -> &Arc<crate::observe::Observer> {
        Daemon::observer(self)
    }

    fn config(&self) -> Arc<Config> {
        Daemon::config(self)
    }

    fn redactor(&self) -> &crate::redact::Redactor {
        Daemon::redactor(self)
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn catalog_changed(&self) {
        Daemon::catalog_changed(self);
    }

    fn catalog_views(&self) -> BTreeMap<String, (ServerSpec, Snapshot)> {
        Daemon::catalog_views(self).0
    }

    fn namespaced(&self, server: &str, name: &str) -> String {
        let separator = Daemon::config(self).options.separator.clone();
        crate::router::names::namespaced(server, &separator, name)
    }

    fn owner(&self, kind: ListKind, name: &str) -> Option<String> {
        let catalog = self.catalog().borrow().clone();
        catalog
            .get(kind, name)
            .map(|e| e.server.clone())
            .or_else(|| catalog.withheld(kind, name).map(|w| w.server.clone()))
    }

    fn resource_owner(&self, uri: &str) -> Option<String> {
        let catalog = self.catalog().borrow().clone();
        let all: Vec<String> = catalog.servers.keys().cloned().collect();
        catalog.resource_owner(uri, &all).map(str::to_owned)
    }
}
