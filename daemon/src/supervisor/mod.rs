//! The supervisor: the one owner of the configuration in force and of the set of upstream
//! instances (shared, per-client and per-profile, keyed by [`InstanceKey`]), and the one place
//! where an instance is replaced.
//!
//! How a restart happens:
//!
//! - A replacement (a reload's changed servers, a login, a changed secret, `mcpctl
//!   restart|stop|start`) goes through one gated swap ([`Supervisor::replace_with`],
//!   [`Supervisor::apply`], [`Supervisor::restart_using`]): the successor takes its
//!   predecessor's place in the table at once, so no call finds the server missing; it holds
//!   the requests that reach it until the predecessor has stopped (one process per server),
//!   then starts. It inherits the predecessor's `restarts` count. One replacement runs at a
//!   time. `mcpctl stop`'s successor is one that stays stopped (calls fail at once saying
//!   so) until `mcpctl start` replaces it.
//! - The actor's own restarts stay in its loop (`upstream/actor.rs`, `Actor::run`): after a
//!   failure, with backoff, until a crash loop holds it for `mcpctl restart|start`; waking
//!   from idle (or a lazy first start) on the request that needs it, which is not a
//!   replacement (the same instance holds that request and those after it until it is up).
//!   `restarts` counts the starts after a failure only.
//!
//! Sessions reach instances through [`Supervisor::upstream_for`], which starts a session's or
//! a profile's own instance at its first use.
//!
//! Locks: the state is a `std::sync::RwLock` held for a few map operations, never across an
//! `.await` (handles are cloned out first); the replacement lock is a tokio mutex held across
//! the predecessors' stop.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio::sync::oneshot;

use crate::config::{Config, Diff, ServerSpec, Share};
use crate::upstream::{
    AsKeyRef, Begin, InstanceKey, KeyRef, Scope, ScopeRef, Snapshot, UpstreamHandle,
};

/// Why `mcpctl restart|stop|start NAME` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The server is left out for mistakes in its definition: `message` names the file, the
    /// fields and what to fix.
    #[error("{message}")]
    Broken {
        /// The server.
        server: String,
        /// The whole message (`config_report::cannot_start`).
        message: String,
    },
    /// No shared instance of that name.
    #[error("no server named `{server}` (servers: {known})")]
    UnknownServer {
        /// The name asked for.
        server: String,
        /// The servers there are, comma-separated, or `none`.
        known: String,
    },
}

/// The first snapshot of an instance of a server (what the catalog cache remembers of it).
pub type Seed = Box<dyn Fn(&str, &ServerSpec) -> Snapshot + Send + Sync>;

/// What `mcpctl restart|stop|start NAME` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// Replace the instance with a fresh one, started at once.
    Restart,
    /// Stop it and keep it stopped.
    Stop,
    /// Start it if it is stopped, idle or crash-looping.
    Start,
}

/// Why an instance is replaced (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A login succeeded: the server starts again with the new tokens.
    Login,
    /// `mcpctl restart`.
    Operator,
    /// `mcpctl stop`: the successor stays stopped.
    Stop,
    /// `mcpctl start` of an instance that is not running.
    Start,
}

struct State {
    config: Arc<Config>,
    /// What clients are told in `initialize` about the configuration (see
    /// `config_report::notice`).
    notice: Option<String>,
    instances: BTreeMap<InstanceKey, UpstreamHandle>,
    /// The daemon is stopping: nothing may start a server any more (a reload, a login or a
    /// draining session would otherwise start one after `stop_all` and leave it behind).
    stopping: bool,
}

/// See the module documentation.
pub struct Supervisor {
    state: RwLock<State>,
    /// One replacement at a time.
    replacing: tokio::sync::Mutex<()>,
    upstreams: crate::upstream::Context,
    seed: Seed,
    secrets: Arc<crate::secrets::SecretStore>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

/// `None` for the default profile, else the profile's name.
pub fn own_profile_name(profile: &str) -> Option<&str> {
    (profile != mcpd_proto::DEFAULT_PROFILE).then_some(profile)
}

/// A successor waiting for its predecessors to stop, and the predecessors.
#[derive(Default)]
struct Replacement {
    stopping: Vec<UpstreamHandle>,
    gates: Vec<oneshot::Sender<()>>,
}

impl Replacement {
    /// Stops the predecessors (all at once), then lets the successors start.
    async fn finish(self, dirty: &tokio::sync::Notify) {
        dirty.notify_one();
        futures_util::future::join_all(self.stopping.iter().map(UpstreamHandle::stop)).await;
        for open in self.gates {
            let _ = open.send(());
        }
        dirty.notify_one();
    }
}

impl Supervisor {
    /// A supervisor of `config`, with no instance yet: [`start`](Self::start) starts the
    /// shared ones.
    pub fn new(
        config: Config,
        notice: Option<String>,
        upstreams: crate::upstream::Context,
        seed: Seed,
        secrets: Arc<crate::secrets::SecretStore>,
    ) -> Self {
        Self {
            state: RwLock::new(State {
                config: Arc::new(config),
                notice,
                instances: BTreeMap::new(),
                stopping: false,
            }),
            replacing: tokio::sync::Mutex::new(()),
            upstreams,
            seed,
            secrets,
        }
    }

    /// Starts the shared instance of every server that is not per-client.
    pub fn start(&self) {
        let mut state = self.write();
        let config = Arc::clone(&state.config);
        for (name, spec) in config
            .servers
            .iter()
            .filter(|(_, s)| s.share != Share::PerClient)
        {
            let key = InstanceKey::shared(name);
            let handle = self.spawn(key.clone(), spec, None, None, false, 0);
            state.instances.insert(key, handle);
        }
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

    /// What a client should be told in `initialize` about the configuration; `None` when all
    /// is well.
    pub fn notice(&self) -> Option<String> {
        self.read().notice.clone()
    }

    /// The daemon is stopping.
    pub fn stopping(&self) -> bool {
        self.read().stopping
    }

    /// Starts the actor of `key` with the secrets of `profile` (`None`: the defaults); its
    /// first snapshot is the seed with `restarts` carried over.
    fn spawn(
        &self,
        key: InstanceKey,
        spec: &ServerSpec,
        profile: Option<&str>,
        gate: Option<oneshot::Receiver<()>>,
        eager: bool,
        restarts: u32,
    ) -> UpstreamHandle {
        self.spawn_as(key, spec, profile, gate, (eager, false), restarts)
    }

    /// [`spawn`](Self::spawn) with `(eager, stopped)` (see [`Begin`]).
    fn spawn_as(
        &self,
        key: InstanceKey,
        spec: &ServerSpec,
        profile: Option<&str>,
        gate: Option<oneshot::Receiver<()>>,
        (eager, stopped): (bool, bool),
        restarts: u32,
    ) -> UpstreamHandle {
        let mut initial = (self.seed)(&key.server, spec);
        initial.restarts = restarts;
        if stopped {
            initial.state = mcpd_proto::ServerState::Stopped;
        }
        let spec = self.bind_secrets(spec, profile);
        UpstreamHandle::spawn(
            key,
            spec,
            &self.upstreams,
            Begin {
                initial,
                gate,
                eager,
                stopped,
            },
        )
    }

    /// `spec` with the values of its secrets for `profile` (its own, else the defaults).
    fn bind_secrets(&self, spec: &ServerSpec, profile: Option<&str>) -> ServerSpec {
        let mut spec = spec.clone();
        if !spec.secrets.names.is_empty() {
            spec.secrets
                .bind(profile, |name| self.secrets.get(name, profile));
        }
        spec
    }

    /// The instance `key`, if it runs.
    pub fn instance(&self, key: &InstanceKey) -> Option<UpstreamHandle> {
        self.read().instances.get(key).cloned()
    }

    /// The shared instance of `server`.
    pub fn upstream(&self, server: &str) -> Option<UpstreamHandle> {
        self.instance(&InstanceKey::shared(server))
    }

    /// Every instance, in key order.
    pub fn instances(&self) -> Vec<(InstanceKey, UpstreamHandle)> {
        self.read()
            .instances
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect()
    }

    /// Which instance of `server` serves a session of `profile`: its own for a per-client
    /// server, the profile's own when the server runs one per profile, else the shared one.
    pub fn key_for(
        &self,
        spec: &ServerSpec,
        server: &str,
        session: u64,
        profile: &str,
    ) -> InstanceKey {
        self.key_ref(spec, server, session, profile).to_key()
    }

    /// [`key_for`](Self::key_for), borrowed from the names given (no allocation).
    fn key_ref<'a>(
        &self,
        spec: &ServerSpec,
        server: &'a str,
        session: u64,
        profile: &'a str,
    ) -> KeyRef<'a> {
        let scope = if spec.share == Share::PerClient {
            ScopeRef::Session(session)
        } else {
            match own_profile_name(profile) {
                Some(profile)
                    if spec.share == Share::PerProfile
                        || (spec.share == Share::Shared
                            && self
                                .secrets
                                .has_profile_values(&spec.secrets.names, profile)) =>
                {
                    ScopeRef::Profile(profile)
                }
                _ => ScopeRef::Shared,
            }
        };
        KeyRef { server, scope }
    }

    /// Which instance of `server` serves `session` (of `profile`); `None` for a server not
    /// configured.
    pub fn key_of(&self, server: &str, session: u64, profile: &str) -> Option<InstanceKey> {
        let state = self.read();
        let spec = state.config.servers.get(server)?;
        Some(self.key_for(spec, server, session, profile))
    }

    /// The instance that serves `server` for `session` (of `profile`), started now if `start`
    /// and it is a session's or profile's own that does not run yet.
    pub fn upstream_for(
        &self,
        server: &str,
        session: u64,
        profile: &str,
        start: bool,
    ) -> Option<UpstreamHandle> {
        let (key, spec) = {
            let state = self.read();
            let spec = state.config.servers.get(server)?;
            let key = self.key_ref(spec, server, session, profile);
            if let Some(handle) = state.instances.get(&key as &dyn AsKeyRef) {
                return Some(handle.clone());
            }
            if !start || key.scope == ScopeRef::Shared {
                return None;
            }
            (key.to_key(), spec.clone())
        };
        let mut state = self.write();
        if state.stopping {
            return None;
        }
        if let Some(handle) = state.instances.get(&key) {
            return Some(handle.clone());
        }
        match &key.scope {
            Scope::Session(_) => tracing::info!(
                server,
                session,
                "starting the session's own instance (per-client)"
            ),
            Scope::Profile(profile) => {
                tracing::info!(server, profile = %profile, "starting the profile's own instance")
            }
            Scope::Shared => {}
        }
        let handle = self.spawn(
            key.clone(),
            &spec,
            own_profile_name(profile),
            None,
            false,
            0,
        );
        state.instances.insert(key, handle.clone());
        drop(state);
        self.upstreams.catalog_dirty.notify_one();
        Some(handle)
    }

    /// Starts the per-client and per-profile instances a session's servers need (on its first
    /// use).
    pub fn ensure_instances(&self, servers: &[String], session: u64, profile: &str) {
        for server in servers {
            self.upstream_for(server, session, profile, true);
        }
    }

    /// Stops the per-client instances of a session that ended.
    pub fn end_instances(&self, session: u64) {
        let ended: Vec<UpstreamHandle> = {
            let mut state = self.write();
            let keys: Vec<InstanceKey> = state
                .instances
                .keys()
                .filter(|k| k.owner() == Some(session))
                .cloned()
                .collect();
            keys.iter()
                .filter_map(|k| state.instances.remove(k))
                .collect()
        };
        if ended.is_empty() {
            return;
        }
        let dirty = Arc::clone(&self.upstreams.catalog_dirty);
        tokio::spawn(async move {
            futures_util::future::join_all(ended.iter().map(UpstreamHandle::stop)).await;
            dirty.notify_one();
        });
    }

    /// Puts a gated successor running `spec` in the place of instance `key` (which must run),
    /// and returns the predecessor to stop and the gate to open once it has.
    fn swap(
        &self,
        state: &mut State,
        key: &InstanceKey,
        spec: &ServerSpec,
        why: Option<Why>,
        out: &mut Replacement,
    ) {
        let restarts = state
            .instances
            .get(key)
            .map_or(0, |old| old.snapshot().restarts);
        let (open, gate) = oneshot::channel();
        let how = (
            matches!(why, Some(Why::Operator | Why::Start)),
            why == Some(Why::Stop),
        );
        let handle = self.spawn_as(key.clone(), spec, None, Some(gate), how, restarts);
        if let Some(old) = state.instances.insert(key.clone(), handle) {
            out.stopping.push(old);
            out.gates.push(open);
        } else {
            // Nothing to wait for.
            let _ = open.send(());
        }
    }

    /// Replaces the shared instance of `server` with a fresh one of the configuration in
    /// force. `Ok(false)` when it has none (a per-client server, or the daemon is stopping).
    pub async fn replace_with(&self, server: &str, why: Why) -> bool {
        let _one_at_a_time = self.replacing.lock().await;
        let replacement = {
            let mut state = self.write();
            let key = InstanceKey::shared(server);
            if state.stopping || !state.instances.contains_key(&key) {
                return false;
            }
            let config = Arc::clone(&state.config);
            let Some(spec) = config.servers.get(server) else {
                return false;
            };
            match why {
                Why::Login => {
                    tracing::info!(server, "logged in: starting the server again")
                }
                Why::Operator => tracing::info!(server, "restarting with mcpctl"),
                Why::Stop => tracing::info!(server, "stopping with mcpctl"),
                Why::Start => tracing::info!(server, "starting with mcpctl"),
            }
            let mut out = Replacement::default();
            self.swap(&mut state, &key, spec, Some(why), &mut out);
            out
        };
        replacement.finish(&self.upstreams.catalog_dirty).await;
        true
    }

    /// `mcpctl restart|stop|start NAME` on a shared instance.
    pub async fn control(&self, server: &str, op: Operator) -> Result<(), ControlError> {
        if let Some(problem) = self.config().broken.get(server) {
            return Err(ControlError::Broken {
                server: server.to_owned(),
                message: crate::config_report::cannot_start(server, problem),
            });
        }
        let Some(upstream) = self.upstream(server) else {
            let known: Vec<String> = self
                .read()
                .instances
                .keys()
                .filter(|k| k.scope == Scope::Shared)
                .map(|k| k.server.clone())
                .collect();
            return Err(ControlError::UnknownServer {
                server: server.to_owned(),
                known: if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            });
        };
        let why = match op {
            Operator::Restart => Why::Operator,
            Operator::Stop => Why::Stop,
            Operator::Start => {
                use mcpd_proto::ServerState as S;
                if matches!(upstream.snapshot().state, S::Ready | S::Starting) {
                    // It runs (or is on its way): nothing to start.
                    return Ok(());
                }
                Why::Start
            }
        };
        self.replace_with(server, why).await;
        Ok(())
    }

    /// Puts `config` in force: removed and changed servers' instances stop; changed servers'
    /// shared instances are replaced (their successors start once they have stopped), added
    /// ones start; per-client and per-profile instances of changed servers stop and are
    /// started again at their next use. Unchanged servers are not touched.
    pub async fn apply(&self, config: Config, notice: Option<String>) -> Diff {
        let _one_at_a_time = self.replacing.lock().await;
        let (diff, replacement) = {
            let mut state = self.write();
            let diff = Diff::between(&state.config, &config);
            let mut out = Replacement::default();
            let gone = |k: &InstanceKey| {
                diff.removed.contains(&k.server)
                    || (k.scope != Scope::Shared && diff.changed.contains(&k.server))
            };
            let keys: Vec<InstanceKey> = state
                .instances
                .keys()
                .filter(|k| gone(k))
                .cloned()
                .collect();
            out.stopping
                .extend(keys.iter().filter_map(|k| state.instances.remove(k)));
            if !state.stopping {
                for name in diff.added.iter().chain(&diff.changed) {
                    let key = InstanceKey::shared(name);
                    let Some(spec) = config
                        .servers
                        .get(name)
                        .filter(|s| s.share != Share::PerClient)
                    else {
                        // Now per-client: the shared instance goes; sessions start their own.
                        out.stopping.extend(state.instances.remove(&key));
                        continue;
                    };
                    self.swap(&mut state, &key, spec, None, &mut out);
                }
            }
            state.config = Arc::new(config);
            state.notice = notice;
            (diff, out)
        };
        replacement.finish(&self.upstreams.catalog_dirty).await;
        diff
    }

    /// Starts again every instance of the servers whose definition references `secret`, with
    /// the current values: the shared instance is replaced; per-client and per-profile
    /// instances stop, and their sessions start new ones at their next use. Returns the
    /// servers restarted.
    pub async fn restart_using(&self, secret: &str) -> Vec<String> {
        let _one_at_a_time = self.replacing.lock().await;
        let (names, replacement) = {
            let mut state = self.write();
            if state.stopping {
                return Vec::new();
            }
            let config = Arc::clone(&state.config);
            let names: Vec<String> = config
                .servers
                .iter()
                .filter(|(_, spec)| spec.secrets.names.contains(secret))
                .map(|(name, _)| name.clone())
                .collect();
            let mut out = Replacement::default();
            let own: Vec<InstanceKey> = state
                .instances
                .keys()
                .filter(|k| k.scope != Scope::Shared && names.contains(&k.server))
                .cloned()
                .collect();
            out.stopping
                .extend(own.iter().filter_map(|k| state.instances.remove(k)));
            for name in &names {
                let key = InstanceKey::shared(name);
                if let (Some(spec), true) =
                    (config.servers.get(name), state.instances.contains_key(&key))
                {
                    self.swap(&mut state, &key, spec, None, &mut out);
                }
            }
            (names, out)
        };
        if !names.is_empty() {
            tracing::info!(secret, servers = ?names, "restarting the servers that use a changed secret");
        }
        replacement.finish(&self.upstreams.catalog_dirty).await;
        names
    }

    /// Stops every instance with the stop sequence, all at once, and waits for them; nothing
    /// starts afterwards.
    pub async fn stop_all(&self) {
        let handles: Vec<UpstreamHandle> = {
            let mut state = self.write();
            state.stopping = true;
            std::mem::take(&mut state.instances).into_values().collect()
        };
        futures_util::future::join_all(handles.iter().map(UpstreamHandle::stop)).await;
    }
}
