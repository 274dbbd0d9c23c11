//! The daemon: wires the supervisor (configuration in force, upstream instances), the hub
//! (sessions), the catalog task, OAuth, secrets and observation together, and answers what
//! `mcpctl` asks of the whole (status, reload).
//!
//! Locks here are `std::sync` locks: every critical section is a few field operations, none is
//! held across an `.await`, and a synchronous lock is cheaper than tokio's for that.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use mcpd_proto::{ClientProcess, DaemonStatus, ReloadReport, ServerStatus, SessionStatus};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError, Loaded, ServerSpec, Share};
use crate::router::cache::CatalogCache;
use crate::router::catalog::{Catalog, SharedCatalog};
use crate::router::hub::Hub;
use crate::supervisor::{Operator, Supervisor, Why};
use crate::upstream::{InstanceKey, ListKind, Scope, UpstreamHandle};

mod observe_host;
mod secret_ops;

/// How the configuration in force was loaded, for status and the clients' notice.
struct Report {
    exists: bool,
    error: Option<String>,
    /// With `error`: what runs instead (the last configuration that loaded).
    fallback: Option<String>,
}

/// The daemon: one per process, shared by the accept and control loops as `Arc<Daemon>`.
/// Sessions get [`Services`](crate::router::session::Services) instead.
pub struct Daemon {
    started: Instant,
    config_path: PathBuf,
    /// Where the last configuration that loaded is kept (`config::last_good`).
    state_dir: PathBuf,
    report: RwLock<Report>,
    supervisor: Arc<Supervisor>,
    catalog_tx: watch::Sender<SharedCatalog>,
    catalog_dirty: Arc<Notify>,
    cache: Arc<CatalogCache>,
    hub: Arc<Hub>,
    /// The last `STATUS=` line sent to systemd.
    last_status: Mutex<String>,
    reload_lock: tokio::sync::Mutex<()>,
    auth: Arc<crate::auth::AuthManager>,
    /// Every secret value the daemon knows, for redaction.
    redactor: crate::redact::Redactor,
    /// `${secret:NAME}` values.
    secrets: Arc<crate::secrets::SecretStore>,
    observer: Arc<crate::observe::Observer>,
    /// Cancelled when the daemon shuts down.
    pub shutdown: CancellationToken,
    /// Cancelled when the stop must not wait for the calls in flight any more (a second
    /// SIGTERM or SIGINT).
    pub cut_short: CancellationToken,
}

/// What stops the daemon: `shutdown` begins the stop, `cut_short` then ends the grace for the
/// calls in flight early.
#[derive(Debug)]
pub struct StopTokens {
    pub shutdown: CancellationToken,
    pub cut_short: CancellationToken,
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
        stop: StopTokens,
    ) -> Arc<Self> {
        let StopTokens {
            shutdown,
            cut_short,
        } = stop;
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
        let observer =
            crate::observe::Observer::start(&state_dir, redactor.clone(), shutdown.clone());
        let hub = Arc::new(Hub::default());
        let catalog_dirty = Arc::new(Notify::new());
        let cache = Arc::new(CatalogCache::load(cache_file));
        let notice = crate::config_report::notice(
            &config_path,
            &loaded.config,
            config_error.as_deref(),
            config_fallback.as_deref(),
        );
        let seed = {
            let cache = Arc::clone(&cache);
            Box::new(move |name: &str, spec: &ServerSpec| cache.initial_snapshot(name, spec))
        };
        let supervisor = Arc::new(Supervisor::new(
            loaded.config,
            notice,
            crate::upstream::Context {
                downstream: Arc::clone(&hub) as Arc<dyn crate::upstream::Downstream>,
                catalog_dirty: Arc::clone(&catalog_dirty),
                records: Some(Arc::from(runtime_dir.join("children"))),
                auth: Some(Arc::clone(&auth)),
            },
            seed,
            Arc::clone(&secrets),
        ));
        let daemon = Arc::new(Self {
            started: Instant::now(),
            config_path,
            state_dir,
            report: RwLock::new(Report {
                exists: loaded.exists,
                error: config_error,
                fallback: config_fallback,
            }),
            supervisor,
            catalog_tx,
            catalog_dirty,
            cache,
            hub,
            last_status: Mutex::new(String::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            auth,
            redactor,
            secrets,
            observer,
            shutdown,
            cut_short,
        });
        daemon.supervisor.start();
        daemon.rebuild_catalog();
        tokio::spawn(Arc::clone(&daemon).maintain_catalog());
        tokio::spawn(Arc::clone(&daemon.cache).write_behind());
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
            self.supervisor.replace_with(&name, Why::Login).await;
        }
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

    /// What a session needs from the daemon.
    pub fn services(&self) -> crate::router::session::Services {
        crate::router::session::Services {
            supervisor: Arc::clone(&self.supervisor),
            hub: Arc::clone(&self.hub),
            observer: Arc::clone(&self.observer),
            catalog: self.catalog(),
            shutdown: self.shutdown.clone(),
            cut_short: self.cut_short.clone(),
        }
    }

    fn report(&self) -> std::sync::RwLockReadGuard<'_, Report> {
        self.report.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.supervisor.config()
    }

    /// Each configured server's definition and the snapshot the catalog shows for it. A
    /// per-client server shows its most complete running instance, else its cached catalog.
    fn views(
        &self,
    ) -> (
        BTreeMap<String, (ServerSpec, crate::upstream::Snapshot)>,
        String,
    ) {
        let config = self.config();
        let instances = self.supervisor.instances();
        // The sessions' own instances of a server (per-client), or the profiles' own.
        fn own<'a>(
            instances: &'a [(InstanceKey, UpstreamHandle)],
            name: &'a str,
            per_client: bool,
        ) -> impl Iterator<Item = &'a (InstanceKey, UpstreamHandle)> {
            instances.iter().filter(move |(k, _)| {
                k.server == name
                    && match k.scope {
                        Scope::Session(_) => per_client,
                        Scope::Profile(_) => !per_client,
                        Scope::Shared => false,
                    }
            })
        }
        let mut views = BTreeMap::new();
        for (name, spec) in &config.servers {
            let snapshot = match spec.share {
                Share::Shared | Share::PerProfile => {
                    match instances
                        .iter()
                        .find(|(k, _)| k.server == *name && k.scope == Scope::Shared)
                    {
                        Some((_, handle)) => {
                            // A shared instance that cannot list (a secret only a profile has)
                            // shows what a profile's own instance lists.
                            let shared = handle.snapshot();
                            if shared.known.iter().all(|k| *k) || shared.cached {
                                shared
                            } else {
                                own(&instances, name, false)
                                    .map(|(_, handle)| handle.snapshot())
                                    .find(|s| s.known.iter().all(|k| *k))
                                    .unwrap_or(shared)
                            }
                        }
                        None => continue,
                    }
                }
                Share::PerClient => own(&instances, name, true)
                    .map(|(_, handle)| handle.snapshot())
                    .max_by_key(|s| s.known.iter().filter(|k| **k).count())
                    .filter(|s| s.known.iter().all(|k| *k) || s.cached)
                    .unwrap_or_else(|| self.cache.initial_snapshot(name, spec)),
            };
            views.insert(name.clone(), (spec.clone(), snapshot));
        }
        (views, config.options.separator.clone())
    }

    /// A receiver of the merged catalog.
    pub fn catalog(&self) -> watch::Receiver<SharedCatalog> {
        self.catalog_tx.subscribe()
    }

    fn rebuild_catalog(&self) {
        let (views, separator) = self.views();
        let config = self.config();
        let withheld = self.observer.review(&views, &config, &|server, name| {
            crate::router::names::namespaced(server, &config.options.separator, name)
        });
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
        if changed && !self.supervisor.stopping() {
            self.cache.store(&views);
        }
        self.publish_status();
    }

    /// Sends systemd a `STATUS=` line when the number of servers up or of sessions changed.
    fn publish_status(&self) {
        let up = self
            .supervisor
            .instances()
            .iter()
            .filter(|(k, h)| {
                k.scope == Scope::Shared && h.snapshot().state == mcpd_proto::ServerState::Ready
            })
            .count();
        let total = self.config().servers.len();
        let sessions = self.hub.len();
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
                _ = self.hub.changed() => self.publish_status(),
            }
        }
    }

    /// Registers a new session and returns its id.
    pub fn add_session(&self, profile: String, client: ClientProcess) -> (u64, Arc<AtomicUsize>) {
        self.hub.add(profile, client)
    }

    /// Forgets a session that never ran (its welcome could not be written).
    pub fn remove_session(&self, id: u64) {
        self.hub.unregister(id);
    }

    /// The daemon as `mcpctl status` shows it.
    pub fn status(&self) -> DaemonStatus {
        let (servers, config_exists, config_error, config_fallback) = {
            // One look at the process table for every server's accounting.
            let mut scan: Option<crate::upstream::tree::Scan> = None;
            let config = self.config();
            let report = self.report();
            let instances = self.supervisor.instances();
            // Shared instances first, then the sessions' and profiles' own.
            let mut ordered: Vec<_> = instances.iter().collect();
            ordered.sort_by_key(|(k, _)| k.scope != Scope::Shared);
            let mut servers: Vec<ServerStatus> = ordered
                .into_iter()
                .map(|(key, handle)| (key.to_string(), handle))
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
            for (name, spec) in &config.servers {
                let running = instances
                    .iter()
                    .any(|(k, _)| k.server == *name && k.owner().is_some());
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
            servers.extend(crate::config_report::broken_servers(&config));
            servers.sort_by(|a, b| a.name.cmp(&b.name));
            (
                servers,
                report.exists,
                report.error.clone(),
                report.fallback.clone(),
            )
        };
        let mut sessions = Vec::new();
        self.hub.each_entry(|id, e| {
            sessions.push(SessionStatus {
                id,
                profile: e.profile.clone(),
                client_name: e.client_info.as_ref().map(|(n, _)| n.clone()),
                client_version: e.client_info.as_ref().map(|(_, v)| v.clone()),
                client_pid: e.client.pid,
                attached_ms: millis(e.attached.elapsed()),
                in_flight: e.in_flight.load(Ordering::Relaxed),
                direct: e.direct,
            })
        });
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
    pub async fn reload(&self) -> Result<ReloadReport, config::ConfigError> {
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

    async fn apply_reload(&self) -> Result<ReloadReport, config::ConfigError> {
        let loaded = config::last_good::load_and_keep(&self.config_path, &self.state_dir)?;
        report_loaded(&self.config_path, &loaded);
        crate::redact::register_config(&self.redactor, &loaded.config);
        // Stored logins are read and decrypted from files: not on a runtime worker.
        let (auth, targets) = (Arc::clone(&self.auth), loaded.config.remote_auth.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || auth.set_targets(targets)).await {
            tracing::warn!("reading the stored logins failed: {e}");
        }
        let notice = crate::config_report::notice(&self.config_path, &loaded.config, None, None);
        let diff = self.supervisor.apply(loaded.config.clone(), notice).await;
        {
            let mut report = self.report.write().unwrap_or_else(|e| e.into_inner());
            report.exists = loaded.exists;
            report.error = None;
            report.fallback = None;
        }
        tracing::info!(added = ?diff.added, removed = ?diff.removed, changed = ?diff.changed, "configuration reloaded");
        Ok(ReloadReport {
            config_path: self.config_path.display().to_string(),
            added: diff.added,
            removed: diff.removed,
            changed: diff.changed,
            unchanged: diff.unchanged,
            warnings: loaded.warnings.into_iter().map(String::from).collect(),
            config_errors: crate::config_report::reload_errors(&loaded.config),
        })
    }

    /// Starts, stops or restarts one server for `mcpctl`.
    pub async fn control(
        &self,
        server: &str,
        op: Operator,
    ) -> Result<(), crate::supervisor::ControlError> {
        self.supervisor.control(server, op).await
    }

    /// Every server name the daemon knows: running, per-client and left out for mistakes.
    pub fn server_names(&self) -> Vec<String> {
        let config = self.config();
        let mut names: Vec<String> = config
            .servers
            .keys()
            .chain(config.broken.keys())
            .cloned()
            .chain(
                self.supervisor
                    .instances()
                    .into_iter()
                    .filter(|(k, _)| k.scope == Scope::Shared)
                    .map(|(k, _)| k.server),
            )
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
        // `logs NAME#SESSION` names a per-client instance; a server may be named `a#1` too.
        let base = server.split('#').next().unwrap_or(server);
        (!known.iter().any(|k| k == server || k == base)).then(|| {
            mcpd_proto::ControlResponse::NoSuchServer {
                server: server.clone(),
                known,
            }
        })
    }

    /// Requests of all sessions forwarded and not answered yet.
    pub fn requests_in_flight(&self) -> usize {
        let mut total = 0;
        self.hub
            .each_entry(|_, e| total += e.in_flight.load(Ordering::Relaxed));
        total
    }

    /// Stops every upstream with the stop sequence, all at once, and waits for them.
    pub async fn stop_all(&self) {
        self.supervisor.stop_all().await;
        self.cache.flush().await;
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
