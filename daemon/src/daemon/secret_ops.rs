//! The daemon's side of `${secret:NAME}`: `mcpctl secret set|list|rm`, and the restart of the
//! servers that use a changed secret (the supervisor binds values to the instances it starts).

use mcpd_proto::{SecretInfo, SecretValueInfo};
use secrecy::SecretString;

use super::Daemon;
use crate::secrets::SecretError;
use crate::supervisor::own_profile_name;

impl Daemon {
    /// `mcpctl secret set`: stores the value and restarts the servers that use it.
    pub async fn secret_set(
        &self,
        name: &str,
        profile: Option<&str>,
        value: SecretString,
    ) -> Result<String, SecretError> {
        let profile = profile.and_then(own_profile_name);
        let changed = self.secrets.set(name, profile, value)?;
        let whose = profile
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
    pub async fn secret_remove(
        &self,
        name: &str,
        profile: Option<&str>,
    ) -> Result<String, SecretError> {
        let profile = profile.and_then(own_profile_name);
        let whose = profile
            .map(|p| format!(" for profile {p}"))
            .unwrap_or_default();
        if !self.secrets.remove(name, profile)? {
            return Err(SecretError::NotStored {
                name: name.to_owned(),
                profile: profile.map(str::to_owned),
            });
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

    async fn restart_using(&self, secret: &str) -> Vec<String> {
        self.supervisor.restart_using(secret).await
    }
}

fn with_restarted(mut message: String, restarted: &[String]) -> String {
    if !restarted.is_empty() {
        message.push_str(&format!("; restarted {}", restarted.join(", ")));
    }
    message
}
