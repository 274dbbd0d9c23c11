//! The daemon's shared state: the configuration in force, the upstream handles, the merged
//! catalog and the attached sessions.
//!
//! Locks here are `std::sync` locks: every critical section is a few map operations, none is
//! held across an `.await` (the state they guard is cloned out first), and a synchronous lock is
//! cheaper than tokio's for that.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use mcpd_proto::{ClientProcess, DaemonStatus, ReloadReport, ServerStatus, SessionStatus};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError, Diff, Loaded, ServerSpec, Share};
use crate::router::cache::CatalogCache;
use crate::router::catalog::{Catalog, SharedCatalog};
use crate::router::hub::Hub;
use crate::upstream::{ControlOp, ListKind, UpstreamHandle};

mod secret_ops;

/// What a session shows in `mcpctl status`.
#[derive(Debug)]
pub struct SessionEntry {
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
}

struct State {
    config: Arc<Config>,
    config_exists: bool,
    config_error: Option<String>,
    /// With `config_error`: what runs instead (the last configuration that loaded).
    config_fallback: Option<String>,
    /// Shared servers by name.
    upstreams: BTreeMap<String, UpstreamHandle>,
    /// Instances of `"share": "per-client"` servers by (server, session).
    per_client: BTreeMap<(String, u64), UpstreamHandle>,
    /// Instances of servers that run one per profile (`"share": "per-profile"`, or secrets
    /// with values of the profile's own) by (server, profile); the default profile uses the
    /// shared instance.
    per_profile: BTreeMap<(String, String), UpstreamHandle>,
    /// The daemon is stopping: nothing may start a server any more (a reload, a login or a
    /// draining session would otherwise start one after `stop_all` and leave it behind).
    stopping: bool,
}

/// The daemon: one per process, shared by every task as `Arc<Daemon>`.
pub struct Daemon {
    started: Instant,
    config_path: PathBuf,
    /// Where the last configuration that loaded is kept (`config::last_good`).
    state_dir: PathBuf,
    state: RwLock<State>,
    catalog_tx: watch::Sender<SharedCatalog>,
    catalog_dirty: Arc<Notify>,
    cache: CatalogCache,
    hub: Arc<Hub>,
    sessions: Mutex<BTreeMap<u64, SessionEntry>>,
    /// The last `STATUS=` line sent to systemd.
    last_status: Mutex<String>,
    next_session: AtomicU64,
    reload_lock: tokio::sync::Mutex<()>,
    records: Arc<std::path::Path>,
    auth: Arc<crate::auth::AuthManager>,
    /// Every secret value the daemon knows, for redaction.
    redactor: crate::redact::Redactor,
    /// `${secret:NAME}` values.
    secrets: Arc<crate::secrets::SecretStore>,
    observer: Arc<crate::observe::Observer>,
    /// Cancelled when the daemon shuts down.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Creates the daemon with the configuration as first loaded and starts its upstreams.
    /// A configuration that failed to load leaves the daemon running with no servers; the
    /// error is logged and shown by `mcpctl status`.
    pub fn start(
        config_path: PathBuf,
        cache_file: PathBuf,
        loaded: Result<Loaded, ConfigError>,
        runtime_dir: PathBuf,
        state_dir: PathBuf,
        auth: Arc<crate::auth::AuthManager>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (loaded, config_error, config_fallback) =
            crate::config_report::at_start(loaded, &state_dir);
        report_loaded(&config_path, &loaded);
        let redactor = crate::redact::Redactor::process();
        crate::redact::register_config(&redactor, &loaded.config);
        let secrets = Arc::new(crate::secrets::SecretStore::open(
            auth.credential_store(),
            redactor.clone(),
        ));
        let swept = crate::upstream::process::sweep_records(&runtime_dir.join("children"));
        if swept > 0 {
            tracing::warn!(
                "a previous mcpd died without stopping its servers: killed {swept} leftover process groups"
            );
        }
        // Servers with limits get cgroups: find the delegated subtree now (before any server
        // starts) and remove what a SIGKILLed daemon left in it.
        let limited = loaded.config.servers.values().any(|s| {
            let l = &s.contain.limits;
            l.memory.is_some() || l.tasks.is_some() || l.cpu.is_some()
        });
        if limited {
            let left = crate::limits::sweep_leftovers();
            if left > 0 {
                tracing::warn!("killed what a previous mcpd left in {left} server cgroups");
            }
        }
        let (catalog_tx, _) = watch::channel(Arc::new(Catalog::default()));
        let servers = loaded.config.servers.clone();
        let observer =
            crate::observe::Observer::start(&state_dir, redactor.clone(), shutdown.clone());
        let daemon = Arc::new(Self {
            started: Instant::now(),
            config_path,
            state_dir,
            state: RwLock::new(State {
                config: Arc::new(loaded.config),
                config_exists: loaded.exists,
                config_error,
                config_fallback,
                upstreams: BTreeMap::new(),
                per_client: BTreeMap::new(),
                per_profile: BTreeMap::new(),
                stopping: false,
            }),
            catalog_tx,
            catalog_dirty: Arc::new(Notify::new()),
            cache: CatalogCache::load(cache_file),
            hub: Arc::new(Hub::default()),
            sessions: Mutex::new(BTreeMap::new()),
            last_status: Mutex::new(String::new()),
            next_session: AtomicU64::new(1),
            reload_lock: tokio::sync::Mutex::new(()),
            records: Arc::from(runtime_dir.join("children")),
            auth,
            redactor,
            secrets,
            observer,
            shutdown,
        });
        {
            let mut state = daemon.write();
            for (name, spec) in servers
                .iter()
                .filter(|(_, spec)| spec.share != Share::PerClient)
            {
                state
                    .upstreams
                    .insert(name.clone(), daemon.spawn_upstream(name, spec, None));
            }
        }
        daemon.rebuild_catalog();
        tokio::spawn(Arc::clone(&daemon).maintain_catalog());
        tokio::spawn(Arc::clone(&daemon).restart_after_logins());
        daemon
    }

    /// A server that waited for `mcpctl login` (or ran with older tokens) starts again with
    /// the new tokens as soon as a login succeeds.
    async fn restart_after_logins(self: Arc<Self>) {
        let mut logins = self.auth.logins();
        loop {
            let name = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                name = logins.recv() => match name {
                    Ok(name) => name,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            let _one_at_a_time = self.reload_lock.lock().await;
            let old = self.write().upstreams.remove(&name);
            let Some(old) = old else { continue };
            tracing::info!(server = %name, "logged in: starting the server again");
            old.stop().await;
            let mut state = self.write();
            if state.stopping {
                return;
            }
            if let Some(spec) = state
                .config
                .servers
                .get(&name)
                .filter(|s| s.share != Share::PerClient)
                .cloned()
            {
                let handle = self.spawn_upstream(&name, &spec, None);
                state.upstreams.insert(name, handle);
            }
            drop(state);
            self.catalog_dirty.notify_one();
        }
    }

    fn spawn_upstream(
        &self,
        name: &str,
        spec: &crate::config::ServerSpec,
        owner: Option<u64>,
    ) -> UpstreamHandle {
        self.spawn_gated(name, spec, owner, None)
    }

    /// [`spawn_upstream`](Self::spawn_upstream) of an instance that starts when `gate` opens.
    fn spawn_gated(
        &self,
        name: &str,
        spec: &crate::config::ServerSpec,
        owner: Option<u64>,
        gate: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> UpstreamHandle {
        let profile = owner.and_then(|session| self.session_profile(session));
        self.spawn_for_profile(name, spec, owner, gate, profile.as_deref())
    }

    /// [`spawn_gated`](Self::spawn_gated) with the secrets of `profile` (`None`: the defaults).
    fn spawn_for_profile(
        &self,
        name: &str,
        spec: &crate::config::ServerSpec,
        owner: Option<u64>,
        gate: Option<tokio::sync::oneshot::Receiver<()>>,
        profile: Option<&str>,
    ) -> UpstreamHandle {
        let initial = self.cache.initial_snapshot(name, spec);
        UpstreamHandle::spawn(
            name,
            self.bind_secrets(spec, profile),
            Arc::clone(&self.hub),
            Arc::clone(&self.catalog_dirty),
            Some(Arc::clone(&self.records)),
            Some(Arc::clone(&self.auth)),
            initial,
            owner,
            gate,
        )
    }

    /// OAuth logins of remote servers.
    pub fn auth(&self) -> &Arc<crate::auth::AuthManager> {
        &self.auth
    }

    /// The redactor that knows every secret value of this daemon (stored secrets, OAuth
    /// tokens, configured header values): pass what is written or shown through it.
    pub fn redactor(&self) -> &crate::redact::Redactor {
        &self.redactor
    }

    /// Pins, poisoning checks, audit, traffic and statistics.
    pub fn observer(&self) -> &Arc<crate::observe::Observer> {
        &self.observer
    }

    /// Each server's definition and catalog snapshot, and the name separator.
    pub fn catalog_views(
        &self,
    ) -> (
        BTreeMap<String, (ServerSpec, crate::upstream::Snapshot)>,
        String,
    ) {
        self.views()
    }

    /// Asks the catalog task to rebuild the catalog (something besides the upstreams changed).
    pub fn catalog_changed(&self) {
        self.catalog_dirty.notify_one();
    }

    /// Sessions and subscriptions.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.read().config)
    }

    /// The handle of a shared server.
    pub fn upstream(&self, name: &str) -> Option<UpstreamHandle> {
        self.read().upstreams.get(name).cloned()
    }

    /// The handle that serves `server` for `session`: the shared one, or for a per-client
    /// server the session's own instance, started now if `start` and it has none yet.
    pub fn upstream_for(&self, server: &str, session: u64, start: bool) -> Option<UpstreamHandle> {
        {
            let state = self.read();
            let spec = state.config.servers.get(server)?;
            if spec.share != Share::PerClient {
                return match self.own_profile(spec, session) {
                    None => state.upstreams.get(server).cloned(),
                    Some(profile) => match state.per_profile.get(&(server.to_owned(), profile)) {
                        Some(handle) => Some(handle.clone()),
                        None if start => {
                            drop(state);
                            self.profile_instance(server, session)
                        }
                        None => None,
                    },
                };
            }
            if let Some(handle) = state.per_client.get(&(server.to_owned(), session)) {
                return Some(handle.clone());
            }
            if !start {
                return None;
            }
        }
        let mut state = self.write();
        if state.stopping {
            return None;
        }
        let spec = state.config.servers.get(server)?.clone();
        let key = (server.to_owned(), session);
        if let Some(handle) = state.per_client.get(&key) {
            return Some(handle.clone());
        }
        tracing::info!(
            server,
            session,
            "starting the session's own instance (per-client)"
        );
        let handle = self.spawn_upstream(server, &spec, Some(session));
        state.per_client.insert(key, handle.clone());
        Some(handle)
    }

    /// Starts the per-client instances a session's servers need (on its first use).
    pub fn ensure_instances(&self, servers: &[String], session: u64) {
        let per_client: Vec<String> = {
            let state = self.read();
            servers
                .iter()
                .filter(|s| {
                    state
                        .config
                        .servers
                        .get(*s)
                        .is_some_and(|spec| spec.share == Share::PerClient)
                })
                .filter(|s| !state.per_client.contains_key(&((*s).clone(), session)))
                .cloned()
                .collect()
        };
        self.ensure_profile_instances(servers, session);
        for server in per_client {
            self.upstream_for(&server, session, true);
        }
    }

    /// Stops the per-client instances of a session that ended.
    pub fn end_instances(&self, session: u64) {
        let ended: Vec<UpstreamHandle> = {
            let mut state = self.write();
            let keys: Vec<(String, u64)> = state
                .per_client
                .keys()
                .filter(|(_, s)| *s == session)
                .cloned()
                .collect();
            keys.iter()
                .filter_map(|k| state.per_client.remove(k))
                .collect()
        };
        if ended.is_empty() {
            return;
        }
        let dirty = Arc::clone(&self.catalog_dirty);
        tokio::spawn(async move {
            futures_util::future::join_all(ended.iter().map(UpstreamHandle::stop)).await;
            dirty.notify_one();
        });
    }

    /// Each configured server's definition and the snapshot the catalog shows for it. A
    /// per-client server shows its most complete running instance, else its cached catalog.
    fn views(
        &self,
    ) -> (
        BTreeMap<String, (ServerSpec, crate::upstream::Snapshot)>,
        String,
    ) {
        let state = self.read();
        let mut views = BTreeMap::new();
        for (name, spec) in &state.config.servers {
            let snapshot = match spec.share {
                Share::Shared | Share::PerProfile => match state.upstreams.get(name) {
                    Some(handle) => {
                        // A shared instance that cannot list (a secret only a profile has)
                        // shows what a profile's own instance lists.
                        let shared = handle.snapshot();
                        if shared.known.iter().all(|k| *k) || shared.cached {
                            shared
                        } else {
                            state
                                .per_profile
                                .iter()
                                .filter(|((server, _), _)| server == name)
                                .map(|(_, handle)| handle.snapshot())
                                .find(|s| s.known.iter().all(|k| *k))
                                .unwrap_or(shared)
                        }
                    }
                    None => continue,
                },
                Share::PerClient => state
                    .per_client
                    .iter()
                    .filter(|((server, _), _)| server == name)
                    .map(|(_, handle)| handle.snapshot())
                    .max_by_key(|s| s.known.iter().filter(|k| **k).count())
                    .filter(|s| s.known.iter().all(|k| *k) || s.cached)
                    .unwrap_or_else(|| self.cache.initial_snapshot(name, spec)),
            };
            views.insert(name.clone(), (spec.clone(), snapshot));
        }
        (views, state.config.options.separator.clone())
    }

    /// A receiver of the merged catalog.
    pub fn catalog(&self) -> watch::Receiver<SharedCatalog> {
        self.catalog_tx.subscribe()
    }

    fn rebuild_catalog(&self) {
        let (views, separator) = self.views();
        let withheld = self.observer.review(&views, &self.config());
        let mut catalog = Catalog::build(&views, &separator);
        catalog.withhold(&withheld);
        let changed = self.catalog_tx.send_if_modified(|current| {
            if current.same_as(&catalog) {
                return false;
            }
            *current = Arc::new(catalog);
            true
        });
        // While the daemon stops, its servers leave the map one by one: that is no reason to
        // forget their cached lists (the next start, and lazy servers, need them).
        if changed && !self.read().stopping {
            self.cache.store(&views);
        }
        self.publish_status();
    }

    /// Sends systemd a `STATUS=` line when the number of servers up or of sessions changed.
    fn publish_status(&self) {
        let (up, total) = {
            let state = self.read();
            let up = state
                .upstreams
                .values()
                .filter(|h| h.snapshot().state == mcpd_proto::ServerState::Ready)
                .count();
            (up, state.config.servers.len())
        };
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let line = crate::notify::status_line(up, total, sessions);
        let mut last = self.last_status.lock().unwrap_or_else(|e| e.into_inner());
        if *last != line {
            crate::notify::notify_status(up, total, sessions);
            *last = line;
        }
    }

    async fn maintain_catalog(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.catalog_dirty.notified() => self.rebuild_catalog(),
            }
        }
    }

    /// Registers a new session and returns its id.
    pub fn add_session(&self, profile: String, client: ClientProcess) -> (u64, Arc<AtomicUsize>) {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let entry = SessionEntry {
            profile,
            client,
            attached: Instant::now(),
            client_info: None,
            in_flight: Arc::clone(&in_flight),
        };
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, entry);
        self.publish_status();
        (id, in_flight)
    }

    /// Records the client's `clientInfo`.
    pub fn set_client_info(&self, id: u64, name: String, version: String) {
        if let Some(entry) = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&id)
        {
            entry.client_info = Some((name, version));
        }
    }

    /// Who a session's client is, for audit lines.
    pub fn client_tag(&self, id: u64) -> crate::observe::ClientTag {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = sessions.get(&id) else {
            return crate::observe::ClientTag::default();
        };
        crate::observe::ClientTag {
            name: entry.client_info.as_ref().map(|(n, _)| n.clone()),
            version: entry.client_info.as_ref().map(|(_, v)| v.clone()),
            pid: entry.client.pid,
        }
    }

    /// Forgets a session that ended.
    pub fn remove_session(&self, id: u64) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.publish_status();
    }

    /// The daemon as `mcpctl status` shows it.
    pub fn status(&self) -> DaemonStatus {
        let (servers, config_exists, config_error, config_fallback) = {
            // One look at the process table for every server's accounting.
            let mut scan: Option<crate::upstream::tree::Scan> = None;
            let state = self.read();
            let per_client = state
                .per_client
                .iter()
                .map(|((name, session), handle)| (format!("{name}#{session}"), handle))
                .chain(
                    state
                        .per_profile
                        .iter()
                        .map(|((name, profile), handle)| (format!("{name}@{profile}"), handle)),
                );
            let mut servers: Vec<ServerStatus> = state
                .upstreams
                .iter()
                .map(|(name, handle)| (name.clone(), handle))
                .chain(per_client)
                .map(|(name, handle)| {
                    let s = handle.snapshot();
                    let auth = self.auth.status(handle.name());
                    ServerStatus {
                        name,
                        transport: handle.spec().transport_name().into(),
                        url: handle.spec().http().map(|h| h.display_url()),
                        session: s.session,
                        state: s.state,
                        pid: s.pid,
                        tools: s.lists[ListKind::Tools.index()].len(),
                        restarts: s.restarts,
                        last_error: s.last_error.map(|e| self.redactor.redact_owned(e)),
                        server_info: s.server_info,
                        last_exit: s.last_exit,
                        stderr_tail: s
                            .stderr
                            .map(|t| {
                                t.lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .iter()
                                    .map(|line| self.redactor.redact(line).into_owned())
                                    .collect()
                            })
                            .unwrap_or_default(),
                        auth,
                        flags: self.observer.flags(handle.name()),
                        contain: s.contain.as_ref().filter(|_| s.pid.is_some()).map(|c| {
                            let scan = scan.get_or_insert_with(crate::upstream::tree::Scan::take);
                            crate::accounting::contain_status(c, scan, handle.requests())
                        }),
                        state_ms: s.since.map(|t| millis(t.elapsed())),
                    }
                })
                .collect();
            // Per-client servers with no session using them have no instance: show them anyway.
            for (name, spec) in &state.config.servers {
                let running = state.per_client.keys().any(|(server, _)| server == name);
                if spec.share != Share::PerClient || running {
                    continue;
                }
                let cached = self.cache.initial_snapshot(name, spec);
                servers.push(ServerStatus {
                    name: name.clone(),
                    transport: spec.transport_name().into(),
                    url: spec.http().map(|h| h.display_url()),
                    session: None,
                    state: mcpd_proto::ServerState::Idle,
                    pid: None,
                    tools: cached.lists[ListKind::Tools.index()].len(),
                    restarts: 0,
                    last_error: None,
                    server_info: Some(
                        "per-client: each session starts its own instance".to_owned(),
                    ),
                    last_exit: None,
                    stderr_tail: Vec::new(),
                    auth: self.auth.status(name),
                    flags: self.observer.flags(name),
                    contain: None,
                    state_ms: None,
                });
            }
            servers.extend(crate::config_report::broken_servers(&state.config));
            servers.sort_by(|a, b| a.name.cmp(&b.name));
            (
                servers,
                state.config_exists,
                state.config_error.clone(),
                state.config_fallback.clone(),
            )
        };
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, e)| SessionStatus {
                id: *id,
                profile: e.profile.clone(),
                client_name: e.client_info.as_ref().map(|(n, _)| n.clone()),
                client_version: e.client_info.as_ref().map(|(_, v)| v.clone()),
                client_pid: e.client.pid,
                attached_ms: millis(e.attached.elapsed()),
                in_flight: e.in_flight.load(Ordering::Relaxed),
            })
            .collect();
        DaemonStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: mcpd_proto::PROTOCOL_VERSION,
            pid: std::process::id(),
            uptime_ms: millis(self.started.elapsed()),
            config_path: Some(self.config_path.display().to_string()),
            config_loaded: config_exists,
            config_error: config_error.map(|e| self.redactor.redact_owned(e)),
            config_fallback,
            servers,
            sessions,
            credential_store: Some(self.auth.store_description()),
            routing_overlaps: self.catalog_tx.borrow().overlaps.clone(),
        }
    }

    /// Re-reads the configuration file and applies what changed: removed and changed servers
    /// are stopped, then added and changed ones started; unchanged ones are not touched. A file
    /// that does not load leaves everything as it was.
    pub async fn reload(&self) -> Result<ReloadReport, String> {
        let _one_at_a_time = self.reload_lock.lock().await;
        crate::notify::notify_reloading();
        let result = self.apply_reload().await;
        match &result {
            Ok(r) => crate::notify::notify_reloaded(&format!(
                "reloaded: {} added, {} removed, {} changed",
                r.added.len(),
                r.removed.len(),
                r.changed.len()
            )),
            Err(_) => {
                crate::notify::notify_reloaded("reload refused; the running configuration is kept")
            }
        }
        self.publish_status();
        result
    }

    async fn apply_reload(&self) -> Result<ReloadReport, String> {
        let loaded = config::last_good::load_and_keep(&self.config_path, &self.state_dir)
            .map_err(|e| e.to_string())?;
        report_loaded(&self.config_path, &loaded);
        crate::redact::register_config(&self.redactor, &loaded.config);
        let (diff, stopping, gates) = {
            let mut state = self.write();
            let diff = Diff::between(&state.config, &loaded.config);
            let mut stopping: Vec<UpstreamHandle> = diff
                .removed
                .iter()
                .filter_map(|name| state.upstreams.remove(name))
                .collect();
            // Per-client instances of removed or changed servers stop; sessions start new ones
            // on their next use.
            let gone: Vec<(String, u64)> = state
                .per_client
                .keys()
                .filter(|(name, _)| diff.removed.contains(name) || diff.changed.contains(name))
                .cloned()
                .collect();
            stopping.extend(gone.iter().filter_map(|k| state.per_client.remove(k)));
            let gone: Vec<(String, String)> = state
                .per_profile
                .keys()
                .filter(|(name, _)| diff.removed.contains(name) || diff.changed.contains(name))
                .cloned()
                .collect();
            stopping.extend(gone.iter().filter_map(|k| state.per_profile.remove(k)));
            // A changed server's new instance takes its place at once but starts only once the
            // old one has stopped: one process per server, and calls wait instead of failing.
            let mut gates = Vec::new();
            if !state.stopping {
                for name in diff.added.iter().chain(&diff.changed) {
                    let Some(spec) = loaded
                        .config
                        .servers
                        .get(name)
                        .filter(|s| s.share != Share::PerClient)
                    else {
                        // Now per-client: the shared instance goes; sessions start their own.
                        stopping.extend(state.upstreams.remove(name));
                        continue;
                    };
                    let gate = match state.upstreams.get(name) {
                        Some(_) => {
                            let (open, gate) = tokio::sync::oneshot::channel();
                            gates.push(open);
                            Some(gate)
                        }
                        None => None,
                    };
                    let handle = self.spawn_gated(name, spec, None, gate);
                    stopping.extend(state.upstreams.insert(name.clone(), handle));
                }
            }
            self.auth.set_targets(loaded.config.remote_auth.clone());
            state.config = Arc::new(loaded.config.clone());
            state.config_exists = loaded.exists;
            state.config_error = None;
            state.config_fallback = None;
            (diff, stopping, gates)
        };
        self.catalog_dirty.notify_one();
        futures_util::future::join_all(stopping.iter().map(UpstreamHandle::stop)).await;
        for open in gates {
            let _ = open.send(());
        }
        self.catalog_dirty.notify_one();
        tracing::info!(added = ?diff.added, removed = ?diff.removed, changed = ?diff.changed, "configuration reloaded");
        Ok(ReloadReport {
            config_path: self.config_path.display().to_string(),
            added: diff.added,
            removed: diff.removed,
            changed: diff.changed,
            unchanged: diff.unchanged,
            warnings: loaded.warnings,
            config_errors: crate::config_report::reload_errors(&loaded.config),
        })
    }

    /// Starts, stops or restarts one server for `mcpctl`.
    pub async fn control(&self, server: &str, op: ControlOp) -> Result<(), String> {
        if let Some(problem) = self.config().broken.get(server) {
            return Err(crate::config_report::cannot_start(server, problem));
        }
        let upstream = self.upstream(server).ok_or_else(|| {
            let known: Vec<String> = self.read().upstreams.keys().cloned().collect();
            format!(
                "no server named `{server}` (servers: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )
        })?;
        upstream.control(op).await
    }

    /// Every server name the daemon knows: running, per-client and left out for mistakes.
    pub fn server_names(&self) -> Vec<String> {
        let state = self.read();
        let mut names: Vec<String> = state
            .config
            .servers
            .keys()
            .chain(state.config.broken.keys())
            .chain(state.upstreams.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// [`ControlResponse::NoSuchServer`](mcpd_proto::ControlResponse::NoSuchServer) when the
    /// request names a server the daemon does not know.
    pub fn unknown_server(
        &self,
        request: &mcpd_proto::ControlRequest,
    ) -> Option<mcpd_proto::ControlResponse> {
        use mcpd_proto::ControlRequest as R;
        let server = match request {
            R::Restart { server }
            | R::Stop { server }
            | R::Start { server }
            | R::Login { server, .. } => server,
            R::Logs {
                server: Some(server),
                ..
            } => server,
            _ => return None,
        };
        let known = self.server_names();
        let base = server.split('#').next().unwrap_or(server);
        (!known.iter().any(|k| k == base)).then(|| mcpd_proto::ControlResponse::NoSuchServer {
            server: server.clone(),
            known,
        })
    }

    /// What a client should be told in `initialize` about the configuration: servers left out
    /// for mistakes, a file that did not load. `None` when all is well.
    pub fn config_notice(&self) -> Option<String> {
        let state = self.read();
        crate::config_report::notice(
            &self.config_path,
            &state.config,
            state.config_error.as_deref(),
            state.config_fallback.as_deref(),
        )
    }

    /// Stops every upstream with the stop sequence, all at once, and waits for them.
    pub async fn stop_all(&self) {
        let handles: Vec<UpstreamHandle> = {
            let mut state = self.write();
            state.stopping = true;
            let shared = std::mem::take(&mut state.upstreams).into_values();
            let own = std::mem::take(&mut state.per_client).into_values();
            let profiles = std::mem::take(&mut state.per_profile).into_values();
            shared.chain(own).chain(profiles).collect()
        };
        futures_util::future::join_all(handles.iter().map(UpstreamHandle::stop)).await;
    }
}

fn report_loaded(path: &std::path::Path, loaded: &Loaded) {
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    if !loaded.exists {
        tracing::info!(
            "no configuration file at {}; create it with {{\"mcpServers\": {{\"name\": {{\"command\": \"...\", \"args\": []}}}}}} and run `mcpctl reload`",
            path.display()
        );
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
