//! The daemon's side of `${secret:NAME}`: binding values to the instance being started (per
//! profile), per-profile instances, and `mcpctl secret set|list|rm` with the restart of the
//! servers that use a changed secret.

use std::sync::Arc;

use mcpd_proto::{SecretInfo, SecretValueInfo};
use secrecy::SecretString;

use super::Daemon;
use crate::config::{ServerSpec, Share};
use crate::upstream::UpstreamHandle;

/// `None` for the default profile, else the profile's name.
pub(super) fn own_profile_name(profile: &str) -> Option<String> {
    (profile != mcpd_proto::DEFAULT_PROFILE).then(|| profile.to_owned())
}

impl Daemon {
    /// The secret store.
    pub fn secrets(&self) -> &Arc<crate::secrets::SecretStore> {
        &self.secrets
    }

    /// The profile a session attached to, `None` for the default one.
    pub(super) fn session_profile(&self, session: u64) -> Option<String> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&session)
            .and_then(|e| own_profile_name(&e.profile))
    }

    /// `spec` with the values of its secrets for `profile` (its own, else the defaults).
    pub(super) fn bind_secrets(&self, spec: &ServerSpec, profile: Option<&str>) -> ServerSpec {
        let mut spec = spec.clone();
        if !spec.secrets.names.is_empty() {
            spec.secrets
                .bind(profile, |name| self.secrets.get(name, profile));
        }
        spec
    }

    /// The profile whose own instance of a (not per-client) server `session` uses: `None`
    /// means the shared instance. A server runs one instance per profile when it says
    /// `"share": "per-profile"` or when the profile has values of its own for its secrets.
    pub(super) fn own_profile(&self, spec: &ServerSpec, session: u64) -> Option<String> {
        let profile = self.session_profile(session)?;
        let own = spec.share == Share::PerProfile
            || (spec.share == Share::Shared
                && self
                    .secrets
                    .has_profile_values(&spec.secrets.names, &profile));
        own.then_some(profile)
    }

    /// The instance of `server` for `session`'s profile, started now if there is none.
    pub(super) fn profile_instance(&self, server: &str, session: u64) -> Option<UpstreamHandle> {
        let spec = self.read().config.servers.get(server)?.clone();
        let profile = self.own_profile(&spec, session)?;
        let mut state = self.write();
        if state.stopping {
            return None;
        }
        let key = (server.to_owned(), profile.clone());
        if let Some(handle) = state.per_profile.get(&key) {
            return Some(handle.clone());
        }
        tracing::info!(server, profile = %profile, "starting the profile's own instance");
        let handle = self.spawn_for_profile(server, &spec, None, None, Some(&profile));
        state.per_profile.insert(key, handle.clone());
        drop(state);
        self.catalog_dirty.notify_one();
        Some(handle)
    }

    /// Starts the per-profile instances `session`'s servers need.
    pub(super) fn ensure_profile_instances(&self, servers: &[String], session: u64) {
        if self.session_profile(session).is_none() {
            return;
        }
        for server in servers {
            let needed = {
                let state = self.read();
                state.config.servers.get(server).is_some_and(|spec| {
                    spec.share != Share::PerClient
                        && self
                            .own_profile(spec, session)
                            .is_some_and(|p| !state.per_profile.contains_key(&(server.clone(), p)))
                })
            };
            if needed {
                self.profile_instance(server, session);
            }
        }
    }

    /// `mcpctl secret set`: stores the value and restarts the servers that use it.
    pub async fn secret_set(
        &self,
        name: &str,
        profile: Option<&str>,
        value: SecretString,
    ) -> Result<String, String> {
        let profile = profile.and_then(own_profile_name);
        let changed = self.secrets.set(name, profile.as_deref(), value)?;
        let whose = profile
            .as_deref()
            .map(|p| format!(" for profile {p}"))
            .unwrap_or_default();
        tracing::info!(secret = name, profile = ?profile, "secret set");
        if !changed {
            return Ok(format!("{name}{whose} is unchanged"));
        }
        let restarted = self.restart_using(name).await;
        let mut message = with_restarted(format!("stored {name}{whose}"), &restarted);
        if !self.secrets.persistent() {
            message.push_str(&format!(
                "; kept in memory only, lost when mcpd stops (credentials: {})",
                self.auth.store_description()
            ));
        }
        Ok(message)
    }

    /// `mcpctl secret rm`: forgets the value and restarts the servers that used it.
    pub async fn secret_remove(&self, name: &str, profile: Option<&str>) -> Result<String, String> {
        let profile = profile.and_then(own_profile_name);
        let whose = profile
            .as_deref()
            .map(|p| format!(" for profile {p}"))
            .unwrap_or_default();
        if !self.secrets.remove(name, profile.as_deref())? {
            return Err(format!("no secret {name}{whose} is stored"));
        }
        tracing::info!(secret = name, profile = ?profile, "secret removed");
        let restarted = self.restart_using(name).await;
        Ok(with_restarted(format!("removed {name}{whose}"), &restarted))
    }

    /// `mcpctl secret list`: every stored or referenced name, never a value.
    pub fn secret_list(&self) -> Vec<SecretInfo> {
        let config = self.config();
        let mut out: std::collections::BTreeMap<String, SecretInfo> = self
            .secrets
            .list()
            .into_iter()
            .map(|(name, values)| {
                let info = SecretInfo {
                    name: name.clone(),
                    values: values
                        .into_iter()
                        .map(|(profile, set_at)| SecretValueInfo { profile, set_at })
                        .collect(),
                    used_by: Vec::new(),
                };
                (name, info)
            })
            .collect();
        for (server, spec) in &config.servers {
            for name in &spec.secrets.names {
                out.entry(name.clone())
                    .or_insert_with(|| SecretInfo {
                        name: name.clone(),
                        values: Vec::new(),
                        used_by: Vec::new(),
                    })
                    .used_by
                    .push(server.clone());
            }
        }
        out.into_values().collect()
    }

    /// Starts again every instance of the servers whose definition references `secret`, with
    /// the current values: the shared instance is replaced in place (its successor starts once
    /// it has stopped); per-client and per-profile instances stop, and their sessions start
    /// new ones at their next use. Returns the servers restarted.
    async fn restart_using(&self, secret: &str) -> Vec<String> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let (names, stopping, gates) = {
            let mut state = self.write();
            let config = Arc::clone(&state.config);
            let names: Vec<String> = config
                .servers
                .iter()
                .filter(|(_, spec)| spec.secrets.names.contains(secret))
                .map(|(name, _)| name.clone())
                .collect();
            let mut stopping = Vec::new();
            let mut gates = Vec::new();
            if state.stopping {
                return Vec::new();
            }
            for name in &names {
                let keys: Vec<_> = state
                    .per_client
                    .keys()
                    .filter(|(s, _)| s == name)
                    .cloned()
                    .collect();
                stopping.extend(keys.iter().filter_map(|k| state.per_client.remove(k)));
                let keys: Vec<_> = state
                    .per_profile
                    .keys()
                    .filter(|(s, _)| s == name)
                    .cloned()
                    .collect();
                stopping.extend(keys.iter().filter_map(|k| state.per_profile.remove(k)));
                if let (Some(spec), true) =
                    (config.servers.get(name), state.upstreams.contains_key(name))
                {
                    let (open, gate) = tokio::sync::oneshot::channel();
                    gates.push(open);
                    let handle = self.spawn_for_profile(name, spec, None, Some(gate), None);
                    stopping.extend(state.upstreams.insert(name.clone(), handle));
                }
            }
            (names, stopping, gates)
        };
        if !names.is_empty() {
            tracing::info!(secret, servers = ?names, "restarting the servers that use a changed secret");
        }
        futures_util::future::join_all(stopping.iter().map(UpstreamHandle::stop)).await;
        for open in gates {
            let _ = open.send(());
        }
        self.catalog_dirty.notify_one();
        names
    }
}

fn with_restarted(mut message: String, restarted: &[String]) -> String {
    if !restarted.is_empty() {
        message.push_str(&format!("; restarted {}", restarted.join(", ")));
    }
    message
}
