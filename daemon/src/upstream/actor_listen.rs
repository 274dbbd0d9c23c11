//! `subscriptions/listen` towards a modern (2026-07-28) upstream: the actor's one long-lived
//! request for the change notifications mcpd needs, in place of the legacy era's unsolicited
//! `list_changed` notifications and `resources/subscribe`.
//!
//! - Opened once the server is ready ([`Actor::open_listen`]), asking for the list changes the
//!   server announces (`listChanged` in its capabilities) and `notifications/resources/updated` for the URIs some session is
//!   subscribed to on this instance (the hub's counting, as for a legacy upstream).
//! - A change of those URIs (the hub's first subscriber or last unsubscriber, which sends a
//!   legacy upstream `resources/subscribe`/`unsubscribe`) opens a new listen with the new set
//!   and then cancels the old one (`notifications/cancelled` on stdio, closing its stream over
//!   HTTP), so no update falls into a gap.
//! - What it delivers is handled like a legacy upstream's notifications by the actor: list
//!   changes refetch the list (and so reach legacy and modern clients through the catalog),
//!   resource updates go to the router's fan-out.
//! - A listen that ends (the server answered it, or its stream broke past the transport's
//!   re-issues) is opened again after [`FIRST_RETRY`], doubling to [`MAX_RETRY`]; each
//!   acknowledgment resets the delay. The lists are fetched again when a listen comes back
//!   after a break (changes in the gap were not seen). A server that answers `-32601` does not
//!   offer listening: its lists are fetched at start only, as before.
//! - It ends with the process or connection (a stop closes the transport).

use std::time::Duration;

use mcpd_proto::envelope::{self, Envelope};
use serde_json::json;
use tokio::time::Instant;

use super::{Actor, Pending, member, preview};
use crate::upstream::ListKind;
use crate::upstream::modern;
use crate::upstream::transport::{OutKind, Outbound, Transport};

/// The delay before a listen that ended is opened again.
pub(super) const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest delay between attempts.
pub(super) const MAX_RETRY: Duration = Duration::from_secs(30);

/// The `subscriptions/listen` of the current process (modern upstreams only).
#[derive(Debug, Default)]
pub(super) struct UpstreamListen {
    /// The id of the listen in force.
    current: Option<u64>,
    /// The last listen acknowledged (a second acknowledgment of it: the transport re-issued it
    /// after its stream broke).
    acked: Option<u64>,
    /// The resource URIs the listen in force asked for.
    uris: Vec<String>,
    /// When to open a listen again after one ended.
    pub(super) retry_at: Option<Instant>,
    delay: Option<Duration>,
    /// Fetch the lists again at the next acknowledgment (changes may have been missed).
    refetch: bool,
    /// The server answered `-32601`: it does not offer listening.
    unsupported: bool,
    /// The lists whose changes the server announces (`listChanged` of tools, prompts,
    /// resources in its `DiscoverResult`).
    changes: [bool; 3],
}

impl Actor {
    /// Opens a listen for what mcpd needs of this modern server (nothing to ask: none), then
    /// cancels the one it replaces.
    pub(super) fn open_listen(&mut self, transport: &Transport) {
        self.listen.retry_at = None;
        if !self.modern || !self.ready || self.listen.unsupported {
            return;
        }
        let caps = self.snapshot.borrow().caps;
        let mut uris = if caps.subscribe {
            self.context.downstream.subscribed_uris(&self.key)
        } else {
            Vec::new()
        };
        uris.sort();
        let mut filter = serde_json::Map::new();
        let [tools, prompts, resources] = self.listen.changes;
        for (offered, key) in [
            (caps.tools && tools, "toolsListChanged"),
            (caps.prompts && prompts, "promptsListChanged"),
            (caps.resources && resources, "resourcesListChanged"),
        ] {
            if offered {
                filter.insert(key.into(), json!(true));
            }
        }
        if !uris.is_empty() {
            filter.insert("resourceSubscriptions".into(), json!(uris));
        }
        let old = self.listen.current.take();
        if !filter.is_empty() {
            let id = self.allocate_id();
            let line = modern::request(
                id,
                "subscriptions/listen",
                Some(&json!({ "notifications": filter })),
            );
            match transport.send(Outbound::request(id, line)) {
                Ok(()) => {
                    self.pending.insert(id, Pending::Listen);
                    self.listen.current = Some(id);
                    self.listen.uris = uris;
                }
                Err(why) => {
                    tracing::warn!(server = %self.name, "cannot send subscriptions/listen: {why}");
                    self.schedule_listen();
                }
            }
        }
        if let Some(old) = old {
            self.cancel_listen(old, transport);
        }
    }

    /// Notes which lists the server announces changes of (`capabilities.*.listChanged` of its
    /// `DiscoverResult`): only those are asked for on the listen.
    pub(super) fn note_list_changes(&mut self, caps: Option<&serde_json::value::RawValue>) {
        let announces = |key: &str| {
            caps.and_then(|c| member(c, key))
                .and_then(|k| member(k, "listChanged"))
                .is_some_and(|l| l.get() == "true")
        };
        self.listen.changes = [
            announces("tools"),
            announces("prompts"),
            announces("resources"),
        ];
    }

    /// The URIs subscribed on this instance changed: a listen with the new set replaces the
    /// one in force.
    pub(super) fn listen_uris_changed(&mut self, transport: &Transport) {
        if !self.snapshot.borrow().caps.subscribe {
            return;
        }
        let mut uris = self.context.downstream.subscribed_uris(&self.key);
        uris.sort();
        if self.listen.current.is_some() && uris == self.listen.uris {
            return;
        }
        if self.listen.current.is_none() && self.listen.retry_at.is_some() {
            // It is being opened again anyway, with the set as it is then.
            return;
        }
        self.open_listen(transport);
    }

    fn cancel_listen(&mut self, id: u64, transport: &Transport) {
        self.pending.remove(&id);
        let note = modern::notification(
            "notifications/cancelled",
            &json!({"requestId": id, "reason": "replaced by a new subscription"}),
        );
        let _ = transport.send(Outbound {
            kind: OutKind::Cancelled(id),
            line: note,
        });
    }

    /// `notifications/subscriptions/acknowledged` from the server.
    pub(super) fn on_listen_acknowledged(&mut self, msg: &Envelope<'_>, transport: &Transport) {
        let id = msg
            .params
            .and_then(|p| member(p, "_meta"))
            .and_then(|m| member(m, crate::router::listen::SUBSCRIPTION_ID))
            .and_then(|i| i.get().parse::<u64>().ok());
        if id.is_none() || id != self.listen.current {
            return;
        }
        let honored = msg
            .params
            .and_then(|p| member(p, "notifications"))
            .map_or("{}", |n| n.get());
        tracing::info!(server = %self.name, "listening for changes: {}", preview(honored));
        self.listen.delay = None;
        let reissued = self.listen.acked == id;
        self.listen.acked = id;
        if std::mem::take(&mut self.listen.refetch) || reissued {
            let caps = self.snapshot.borrow().caps;
            for kind in ListKind::ALL {
                if caps.offers(kind) {
                    self.fetch_list(kind, transport);
                }
            }
        }
    }

    /// The answer to a listen: it ended (gracefully or not) and is opened again later, unless
    /// it was replaced meanwhile or the server does not offer listening.
    pub(super) fn on_listen_ended(&mut self, id: u64, msg: &Envelope<'_>) {
        if self.listen.current != Some(id) {
            return;
        }
        self.listen.current = None;
        let code = msg
            .error
            .and_then(|e| member(e, "code"))
            .and_then(|c| c.get().parse::<i64>().ok());
        // Over HTTP a refusal (404 with the JSON-RPC error as its body) comes as mcpd's own
        // error quoting it.
        let quoted = msg
            .error
            .and_then(|e| member(e, "message"))
            .is_some_and(|m| m.get().contains("-32601"));
        if code == Some(envelope::METHOD_NOT_FOUND) || quoted {
            tracing::info!(server = %self.name, "does not offer subscriptions/listen: its changes are not followed (lists are fetched at each start)");
            self.listen.unsupported = true;
            return;
        }
        match msg.error {
            Some(error) => {
                tracing::info!(server = %self.name, "subscriptions/listen failed: {}", preview(error.get()));
            }
            None => tracing::info!(server = %self.name, "the server ended subscriptions/listen"),
        }
        self.schedule_listen();
    }

    fn schedule_listen(&mut self) {
        let delay = self
            .listen
            .delay
            .map_or(FIRST_RETRY, |d| (d * 2).min(MAX_RETRY));
        self.listen.delay = Some(delay);
        self.listen.refetch = true;
        self.listen.retry_at = Some(Instant::now() + delay);
    }
}
