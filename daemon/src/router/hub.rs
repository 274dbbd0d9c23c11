//! The hub: the daemon's one registry of sessions, and how upstream actors reach them. Per
//! session it holds what `mcpctl status` shows (a [`SessionEntry`]) and, once the session
//! runs, its [`SessionLink`] (output queue, what the client can do, log level); and the
//! resource subscriptions, counted per upstream instance across sessions so that an upstream
//! is unsubscribed only when the last session leaves.
//!
//! Locks here are `std::sync` locks held for a few map operations and never across `.await`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use mcpd_proto::ClientProcess;
use tokio::sync::Notify;

use super::downstream::ServerRequests;
use super::listen::Listens;
use super::outbox::Outbox;
use super::scoped::LogScopes;
use super::session::tasks::TaskTable;
use crate::upstream::{Caller, CallerRef, InstanceKey};

/// MCP log levels, least severe first (RFC 5424 order).
pub(crate) const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// What a session shows in `mcpctl status`.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    /// Profile it attached to.
    pub profile: String,
    /// The client process, as the shim reported it.
    pub client: ClientProcess,
    /// When it attached.
    pub attached: Instant,
    /// `clientInfo.name` and `.version` from its `initialize`.
    pub client_info: Option<(String, String)>,
    /// Requests in flight.
    pub in_flight: Arc<AtomicUsize>,
    /// The daemon holds the client's own stdin and stdout (`mcp-shim --direct`).
    pub direct: bool,
}

/// The rank of a log level name in [`LOG_LEVELS`].
pub(crate) fn log_rank(level: &str) -> Option<u8> {
    LOG_LEVELS.iter().position(|l| *l == level).map(|i| i as u8)
}

pub use crate::upstream::ClientCaps;

impl ClientCaps {
    /// What a client's `capabilities` object (its `initialize`, or a modern request's
    /// `_meta`) declares; an `elicitation` object without modes means form.
    pub(crate) fn from_json(caps: Option<&serde_json::Value>) -> Self {
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

/// An upstream's way to one session. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SessionLink(Arc<LinkInner>);

#[derive(Debug)]
struct LinkInner {
    id: u64,
    out: Outbox,
    caps: RwLock<ClientCaps>,
    /// 0: never set; otherwise rank + 1.
    log_level: AtomicU8,
    servers: RwLock<Vec<String>>,
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
    pub(crate) fn set_caps(&self, caps: ClientCaps) {
        *self.0.caps.write().unwrap_or_else(|e| e.into_inner()) = caps;
    }

    /// Records the servers the session's profile includes.
    pub(crate) fn set_servers(&self, servers: Vec<String>) {
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
    pub(crate) fn set_log_level(&self, rank: u8) {
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
    pub(crate) fn admits(&self, rank: u8) -> bool {
        self.log_level().is_none_or(|min| rank >= min)
    }

    /// Waits for the client's answer to the request mcpd sends it with `id` (JSON text).
    pub(crate) fn add_waiter(&self, id: String, waiter: tokio::sync::oneshot::Sender<String>) {
        self.0
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, waiter);
    }

    /// Takes the waiter of the request mcpd sent with `id`.
    pub(crate) fn take_waiter(&self, id: &str) -> Option<tokio::sync::oneshot::Sender<String>> {
        self.0
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// The session as an upstream sees it (see `upstream::port`).
    pub fn caller(&self) -> CallerRef {
        self.0.clone()
    }
}

impl Caller for LinkInner {
    fn id(&self) -> u64 {
        self.id
    }

    fn try_send(&self, line: String) -> bool {
        self.out.try_send(line)
    }

    fn caps(&self) -> ClientCaps {
        *self.caps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn log_level(&self) -> Option<&'static str> {
        match self.log_level.load(Ordering::Relaxed) {
            0 => None,
            n => LOG_LEVELS.get(usize::from(n - 1)).copied(),
        }
    }

    fn is_closed(&self) -> bool {
        self.out.is_closed()
    }
}

/// One registered session: what status shows, and its link once it runs.
#[derive(Debug)]
struct Registered {
    entry: SessionEntry,
    link: Option<SessionLink>,
}

/// Sessions and subscriptions, shared by the daemon and every upstream actor.
#[derive(Debug)]
pub(crate) struct Hub {
    sessions: RwLock<BTreeMap<u64, Registered>>,
    subscriptions: Mutex<HashMap<(InstanceKey, String), BTreeSet<u64>>>,
    /// Upstream subscribes under way (see `router::subscribing`).
    subscribing: super::subscribing::Subscribing,
    /// The tasks handed to clients (see `router::session::tasks`).
    tasks: TaskTable,
    /// The requests upstreams sent to clients, until answered (see `router::downstream`).
    requests: ServerRequests,
    next_session: AtomicU64,
    /// Notified when a session comes or goes (the daemon tells systemd).
    changed: Notify,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            sessions: RwLock::default(),
            subscriptions: Mutex::default(),
            subscribing: Default::default(),
            tasks: TaskTable::default(),
            requests: ServerRequests::default(),
            next_session: AtomicU64::new(1),
            changed: Notify::new(),
        }
    }
}

impl Hub {
    /// The tasks handed to clients, by the ids they were given.
    pub fn tasks(&self) -> &TaskTable {
        &self.tasks
    }

    /// The requests upstreams sent to clients, until answered.
    pub fn requests(&self) -> &ServerRequests {
        &self.requests
    }

    /// The link of session `id`, if it is attached.
    pub fn session(&self, id: u64) -> Option<SessionLink> {
        self.read().get(&id)?.link.clone()
    }

    /// Registers a new session (numbered from 1) and returns its id and in-flight counter.
    pub fn add(&self, profile: String, client: ClientProcess) -> (u64, Arc<AtomicUsize>) {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let entry = SessionEntry {
            profile,
            client,
            attached: Instant::now(),
            client_info: None,
            in_flight: Arc::clone(&in_flight),
            direct: false,
        };
        self.write().insert(id, Registered { entry, link: None });
        self.changed.notify_one();
        (id, in_flight)
    }

    /// Gives a registered session its link: upstreams reach it from now on.
    pub fn register(&self, link: SessionLink) {
        if let Some(session) = self.write().get_mut(&link.id()) {
            session.link = Some(link);
        }
    }

    /// Waits until a session comes or goes.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// How many sessions are registered.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Runs `f` on each session's entry, in id order.
    pub(crate) fn each_entry(&self, mut f: impl FnMut(u64, &SessionEntry)) {
        for (id, session) in self.read().iter() {
            f(*id, &session.entry);
        }
    }

    /// Records the client's `clientInfo`.
    pub(crate) fn set_client_info(&self, id: u64, name: String, version: String) {
        if let Some(session) = self.write().get_mut(&id) {
            session.entry.client_info = Some((name, version));
        }
    }

    /// Records that a session runs on its client's own stdio (`mcp-shim --direct`), for status.
    pub(crate) fn set_direct(&self, id: u64) {
        if let Some(session) = self.write().get_mut(&id) {
            session.entry.direct = true;
        }
    }

    /// Who a session's client is, for audit lines.
    pub(crate) fn client_tag(&self, id: u64) -> crate::observe::ClientTag {
        let sessions = self.read();
        let Some(entry) = sessions.get(&id).map(|s| &s.entry) else {
            return crate::observe::ClientTag::default();
        };
        crate::observe::ClientTag {
            name: entry.client_info.as_ref().map(|(n, _)| n.as_str().into()),
            version: entry.client_info.as_ref().map(|(_, v)| v.as_str().into()),
            pid: entry.client.pid,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Registered>> {
        self.sessions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Registered>> {
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }

    fn links(&self) -> impl Iterator<Item = SessionLink> {
        let links: Vec<SessionLink> = self
            .read()
            .values()
            .filter_map(|s| s.link.clone())
            .collect();
        links.into_iter()
    }

    /// Removes a session; returns the subscriptions it was the last one holding, which the
    /// caller unsubscribes upstream.
    pub(crate) fn unregister(&self, id: u64) -> Vec<(InstanceKey, String)> {
        self.write().remove(&id);
        self.changed.notify_one();
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
    pub(crate) fn broadcast_log(&self, server: &str, owner: Option<u64>, rank: u8, line: &str) {
        for link in self.links() {
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

    /// A log message of `server` that belongs to a request of session `session` (it came on
    /// that request's response stream): that session gets it if it is modern and its scope
    /// admits it, legacy sessions as from [`broadcast_log`](Self::broadcast_log), no other
    /// modern session.
    pub(crate) fn log_of_request(
        &self,
        server: &str,
        owner: Option<u64>,
        session: u64,
        rank: u8,
        line: &str,
    ) {
        for link in self.links() {
            if owner.is_some_and(|o| o != link.id()) || !link.sees(server) {
                continue;
            }
            let admits = if link.scopes().is_modern() {
                link.id() == session && link.scopes().admits(server, rank)
            } else {
                link.admits(rank)
            };
            if admits {
                link.try_send(line.to_owned());
            }
        }
    }

    /// The most verbose level any session asked for.
    pub(crate) fn most_verbose_level(&self) -> Option<u8> {
        self.read()
            .values()
            .filter_map(|s| {
                let l = s.link.as_ref()?;
                l.log_level()
                    .into_iter()
                    .chain(l.scopes().most_verbose())
                    .min()
            })
            .min()
    }

    /// Records that `session` subscribes to `uri` on the instance `key`; `true` if it is the
    /// first one, in which case the caller subscribes upstream.
    pub fn subscribe(&self, key: &InstanceKey, uri: &str, session: u64) -> bool {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let set = subs.entry((key.clone(), uri.to_owned())).or_default();
        let first = set.is_empty();
        set.insert(session);
        first
    }

    /// The upstream subscribes under way.
    pub(crate) fn subscribing(&self) -> &super::subscribing::Subscribing {
        &self.subscribing
    }

    /// Records that `session` unsubscribes; `true` if it was the last one, in which case the
    /// caller unsubscribes upstream.
    pub fn unsubscribe(&self, key: &InstanceKey, uri: &str, session: u64) -> bool {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let key = (key.clone(), uri.to_owned());
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

    /// The sessions subscribed to `uri` on the instance `key`.
    pub(crate) fn subscribers(&self, key: &InstanceKey, uri: &str) -> Vec<SessionLink> {
        let ids: Vec<u64> = self
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(key.clone(), uri.to_owned()))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let sessions = self.read();
        ids.iter()
            .filter_map(|id| sessions.get(id)?.link.clone())
            .collect()
    }

    /// The URIs of instance `key` some session is subscribed to (re-subscribed after a
    /// restart).
    pub(crate) fn subscribed_uris(&self, key: &InstanceKey) -> Vec<String> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|(k, _)| k == key)
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
        let s = InstanceKey::shared("s");
        assert!(hub.subscribe(&s, "file:///a", 1));
        assert!(!hub.subscribe(&s, "file:///a", 2));
        assert!(!hub.unsubscribe(&s, "file:///a", 1));
        assert_eq!(hub.subscribed_uris(&s), ["file:///a"]);
        assert!(hub.unsubscribe(&s, "file:///a", 2));
        assert!(hub.subscribed_uris(&s).is_empty());
        // Unsubscribing what was never subscribed is not "last".
        assert!(!hub.unsubscribe(&s, "file:///a", 3));
    }

    #[test]
    fn a_leaving_session_releases_only_what_it_held_last() {
        let hub = Hub::default();
        let s = InstanceKey::shared("s");
        hub.subscribe(&s, "a", 1);
        hub.subscribe(&s, "b", 1);
        hub.subscribe(&s, "b", 2);
        assert_eq!(hub.unregister(1), [(s.clone(), "a".to_string())]);
        assert_eq!(hub.subscribed_uris(&s), ["b"]);
    }

    #[test]
    fn instances_of_one_server_and_a_server_named_like_one_count_apart() {
        let hub = Hub::default();
        assert!(hub.subscribe(&InstanceKey::session("a", 1), "u", 1));
        assert!(hub.subscribe(&InstanceKey::shared("a#1"), "u", 2));
        assert!(hub.subscribe(&InstanceKey::shared("a"), "u", 3));
    }

    #[test]
    fn one_registry_numbers_sessions_and_forgets_them() {
        let hub = Hub::default();
        let (one, _) = hub.add("default".into(), ClientProcess::default());
        let (two, _) = hub.add("default".into(), ClientProcess::default());
        assert_eq!((one, two), (1, 2));
        hub.set_client_info(one, "c".into(), "1".into());
        assert_eq!(hub.client_tag(one).name.as_deref(), Some("c"));
        hub.unregister(one);
        assert_eq!(hub.len(), 1);
        assert_eq!(hub.client_tag(one).name, None);
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
