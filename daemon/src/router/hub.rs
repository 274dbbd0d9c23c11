//! The hub: how upstream actors reach sessions. It holds a [`SessionLink`] per attached session
//! (its output queue, what the client can do, its log level) and the resource subscriptions,
//! counted across sessions so that an upstream is unsubscribed only when the last session leaves.
//!
//! Locks here are `std::sync` locks held for a few map operations and never across `.await`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::listen::Listens;
use super::outbox::Outbox;
use super::scoped::LogScopes;
use super::session::tasks::TaskTable;
use crate::upstream::UpstreamRef;

/// MCP log levels, least severe first (RFC 5424 order).
pub const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// The key subscriptions of an upstream are counted under: its name, or for a per-client
/// instance, its name and the session it belongs to (instances of one server never share a
/// subscription).
pub fn subscription_key(server: &str, owner: Option<u64>) -> String {
    match owner {
        Some(session) => format!("{server}#{session}"),
        None => server.to_owned(),
    }
}

/// The rank of a log level name in [`LOG_LEVELS`].
pub fn log_rank(level: &str) -> Option<u8> {
    LOG_LEVELS.iter().position(|l| *l == level).map(|i| i as u8)
}

/// What a client declared it can do, from its `initialize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCaps {
    /// `sampling`.
    pub sampling: bool,
    /// `elicitation` (form mode; an empty `elicitation` object means form).
    pub elicitation_form: bool,
    /// `elicitation.url`.
    pub elicitation_url: bool,
    /// `roots`.
    pub roots: bool,
}

impl ClientCaps {
    /// What a client's `capabilities` object (its `initialize`, or a modern request's
    /// `_meta`) declares; an `elicitation` object without modes means form.
    pub fn from_json(caps: Option<&serde_json::Value>) -> Self {
        let Some(caps) = caps else {
            return Self::default();
        };
        let elicitation = caps.get("elicitation");
        let url = elicitation.and_then(|e| e.get("url")).is_some();
        let form = elicitation.is_some_and(|e| e.get("form").is_some() || !url);
        Self {
            sampling: caps.get("sampling").is_some(),
            elicitation_form: form,
            elicitation_url: url,
            roots: caps.get("roots").is_some(),
        }
    }
}

/// Where a client's answer to a server-to-client request goes.
#[derive(Debug, Clone)]
pub struct Route {
    /// The upstream that asked.
    pub upstream: UpstreamRef,
    /// The id the upstream gave its request, as JSON text.
    pub upstream_id: String,
}

/// An upstream's way to one session. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionLink(Arc<LinkInner>);

#[derive(Debug)]
struct LinkInner {
    id: u64,
    out: Outbox,
    caps: RwLock<ClientCaps>,
    /// 0: never set; otherwise rank + 1.
    log_level: AtomicU8,
    servers: RwLock<Vec<String>>,
    routes: Mutex<HashMap<String, Route>>,
    /// A modern client's requests in flight that asked for log messages.
    scopes: LogScopes,
    /// A modern client's open `subscriptions/listen` requests.
    listens: Listens,
    /// Requests mcpd itself sent the client (`router::mrtr`): id → who waits for the answer.
    waiters: Mutex<HashMap<String, tokio::sync::oneshot::Sender<String>>>,
}

impl SessionLink {
    /// A link for session `id` whose lines go to `out`.
    pub fn new(id: u64, out: Outbox) -> Self {
        Self(Arc::new(LinkInner {
            id,
            out,
            caps: RwLock::new(ClientCaps::default()),
            log_level: AtomicU8::new(0),
            servers: RwLock::new(Vec::new()),
            routes: Mutex::new(HashMap::new()),
            scopes: LogScopes::default(),
            listens: Listens::default(),
            waiters: Mutex::new(HashMap::new()),
        }))
    }

    /// Its era and the log scopes of its modern requests (see `router::scoped`).
    pub fn scopes(&self) -> &LogScopes {
        &self.0.scopes
    }

    /// Its open `subscriptions/listen` requests (see `router::listen`).
    pub fn listens(&self) -> &Listens {
        &self.0.listens
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Queues a line for the client without waiting; `false` if its queue is full or gone.
    /// Used for notifications and server requests, which must never block an upstream actor.
    pub fn try_send(&self, line: String) -> bool {
        self.0.out.try_send(line)
    }

    /// What the client can do.
    pub fn caps(&self) -> ClientCaps {
        *self.0.caps.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what the client can do.
    pub fn set_caps(&self, caps: ClientCaps) {
        *self.0.caps.write().unwrap_or_else(|e| e.into_inner()) = caps;
    }

    /// Records the servers the session's profile includes.
    pub fn set_servers(&self, servers: Vec<String>) {
        *self.0.servers.write().unwrap_or_else(|e| e.into_inner()) = servers;
    }

    /// Whether the session's profile includes `server`.
    pub fn sees(&self, server: &str) -> bool {
        self.0
            .servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|s| s == server)
    }

    /// Sets the least severe level the client wants (`logging/setLevel`).
    pub fn set_log_level(&self, rank: u8) {
        self.0.log_level.store(rank + 1, Ordering::Relaxed);
    }

    /// The level the client set, if it set one.
    pub fn log_level(&self) -> Option<u8> {
        match self.0.log_level.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n - 1),
        }
    }

    /// Whether a log message of `rank` goes to this client. A client that never set a level
    /// gets what the servers send.
    pub fn admits(&self, rank: u8) -> bool {
        self.log_level().is_none_or(|min| rank >= min)
    }

    /// Remembers where the answer to the server request sent with `downstream_id` goes.
    pub fn add_route(&self, downstream_id: String, route: Route) {
        self.0
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(downstream_id, route);
    }

    /// Takes the route of a server request the client answered (or the server cancelled).
    pub fn take_route(&self, downstream_id: &str) -> Option<Route> {
        self.0
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(downstream_id)
    }

    /// Waits for the client's answer to the request mcpd sends it with `id` (JSON text).
    pub fn add_waiter(&self, id: String, waiter: tokio::sync::oneshot::Sender<String>) {
        self.0
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, waiter);
    }

    /// Takes the waiter of the request mcpd sent with `id`.
    pub fn take_waiter(&self, id: &str) -> Option<tokio::sync::oneshot::Sender<String>> {
        self.0
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// Takes every open route (the session is ending).
    pub fn drain_routes(&self) -> Vec<Route> {
        self.0
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, r)| r)
            .collect()
    }

    /// Whether two links are the same session.
    pub fn same(&self, other: &SessionLink) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether the session is gone.
    pub fn is_closed(&self) -> bool {
        self.0.out.is_closed()
    }
}

/// Sessions and subscriptions, shared by the daemon and every upstream actor.
#[derive(Debug, Default)]
pub struct Hub {
    sessions: RwLock<BTreeMap<u64, SessionLink>>,
    subscriptions: Mutex<HashMap<(String, String), BTreeSet<u64>>>,
    /// The tasks handed to clients (see `router::session::tasks`).
    tasks: TaskTable,
}

impl Hub {
    /// The tasks handed to clients, by the ids they were given.
    pub fn tasks(&self) -> &TaskTable {
        &self.tasks
    }

    /// The link of session `id`, if it is attached.
    pub fn session(&self, id: u64) -> Option<SessionLink> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Adds a session.
    pub fn register(&self, link: SessionLink) {
        self.sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(link.id(), link);
    }

    /// Removes a session; returns the `(server, uri)` subscriptions it was the last one holding,
    /// which the caller unsubscribes upstream.
    pub fn unregister(&self, id: u64) -> Vec<(String, String)> {
        self.sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = Vec::new();
        subs.retain(|key, sessions| {
            if sessions.remove(&id) && sessions.is_empty() {
                last.push(key.clone());
                return false;
            }
            !sessions.is_empty()
        });
        last
    }

    /// Sends a `notifications/message` line of `server` at `rank` to each session that sees
    /// the server and admits the level; the line of a per-client instance (`owner`) goes to its
    /// own session only.
    pub fn broadcast_log(&self, server: &str, owner: Option<u64>, rank: u8, line: &str) {
        for link in self
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            if owner.is_some_and(|o| o != link.id()) {
                continue;
            }
            // A modern client gets only the messages of its requests that asked for them.
            let admits = if link.scopes().is_modern() {
                link.scopes().admits(server, rank)
            } else {
                link.admits(rank)
            };
            if link.sees(server) && admits {
                link.try_send(line.to_owned());
            }
        }
    }

    /// The most verbose level any session asked for.
    pub fn most_verbose_level(&self) -> Option<u8> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|l| {
                l.log_level()
                    .into_iter()
                    .chain(l.scopes().most_verbose())
                    .min()
            })
            .min()
    }

    /// Records that `session` subscribes to `uri` on `server`; `true` if it is the first one,
    /// in which case the caller subscribes upstream.
    pub fn subscribe(&self, server: &str, uri: &str, session: u64) -> bool {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let set = subs.entry((server.to_owned(), uri.to_owned())).or_default();
        let first = set.is_empty();
        set.insert(session);
        first
    }

    /// Records that `session` unsubscribes; `true` if it was the last one, in which case the
    /// caller unsubscribes upstream.
    pub fn unsubscribe(&self, server: &str, uri: &str, session: u64) -> bool {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let key = (server.to_owned(), uri.to_owned());
        let Some(set) = subs.get_mut(&key) else {
            return false;
        };
        let removed = set.remove(&session);
        if set.is_empty() {
            subs.remove(&key);
            return removed;
        }
        false
    }

    /// The sessions subscribed to `uri` on `server`.
    pub fn subscribers(&self, server: &str, uri: &str) -> Vec<SessionLink> {
        let ids: Vec<u64> = self
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(server.to_owned(), uri.to_owned()))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .filter_map(|id| sessions.get(id).cloned())
            .collect()
    }

    /// The URIs of `server` some session is subscribed to (re-subscribed after a restart).
    pub fn subscribed_uris(&self, server: &str) -> Vec<String> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|(s, _)| s == server)
            .map(|(_, uri)| uri.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_counted_across_sessions() {
        let hub = Hub::default();
        assert!(hub.subscribe("s", "file:///a", 1));
        assert!(!hub.subscribe("s", "file:///a", 2));
        assert!(!hub.unsubscribe("s", "file:///a", 1));
        assert_eq!(hub.subscribed_uris("s"), ["file:///a"]);
        assert!(hub.unsubscribe("s", "file:///a", 2));
        assert!(hub.subscribed_uris("s").is_empty());
        // Unsubscribing what was never subscribed is not "last".
        assert!(!hub.unsubscribe("s", "file:///a", 3));
    }

    #[test]
    fn a_leaving_session_releases_only_what_it_held_last() {
        let hub = Hub::default();
        hub.subscribe("s", "a", 1);
        hub.subscribe("s", "b", 1);
        hub.subscribe("s", "b", 2);
        assert_eq!(hub.unregister(1), [("s".to_string(), "a".to_string())]);
        assert_eq!(hub.subscribed_uris("s"), ["b"]);
    }

    #[test]
    fn log_levels_filter_per_session() {
        let (out, _rx) = Outbox::new(1, 1024);
        let link = SessionLink::new(1, out);
        assert!(link.admits(log_rank("debug").unwrap()));
        link.set_log_level(log_rank("warning").unwrap());
        assert!(!link.admits(log_rank("info").unwrap()));
        assert!(link.admits(log_rank("error").unwrap()));
    }
}
