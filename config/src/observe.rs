//! Keys about what flows through the daemon: tool pinning (`onToolChange`, `onNewTool`, in
//! `mcpd` and per server) and the audit log (`mcpd.audit`).
//!
//! Read from the raw document after the main walk (which only skips these keys), like
//! [`super::oauth::collect`], so that changing a policy never restarts a server.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{ConfigError, Warning, WarningKind, join, kind_of};

/// What happens when a pinned tool or prompt definition changes (`onToolChange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnChange {
    /// Left out of lists; calls get an error naming `mcpctl tools diff` and `approve`.
    #[default]
    Block,
    /// Served, logged and flagged in `mcpctl status`.
    Warn,
    /// Served and pinned again.
    Allow,
}

/// What happens to a tool or prompt that appears after its server was first pinned
/// (`onNewTool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnNew {
    /// Served and pinned.
    #[default]
    Allow,
    /// Left out of lists until approved.
    Block,
}

/// The pinning policy of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PinPolicy {
    /// `onToolChange`.
    pub on_change: OnChange,
    /// `onNewTool`.
    pub on_new: OnNew,
}

/// `mcpd.audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// Write the audit log at all (`enabled`, default true).
    pub enabled: bool,
    /// Record request arguments, secrets redacted (`arguments`, default false).
    pub arguments: bool,
    /// Rotated files older than this many days are deleted (`keepDays`, default 30).
    pub keep_days: u64,
    /// A file is rotated when it reaches this size (`maxFileBytes`, default 10 MiB).
    pub max_file_bytes: u64,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            arguments: false,
            keep_days: 30,
            max_file_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Everything this module reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObserveConfig {
    /// `mcpd.onToolChange` / `mcpd.onNewTool`.
    pub default_policy: PinPolicy,
    /// Per server, where it sets either key.
    pub server_policy: BTreeMap<String, PinPolicy>,
    /// `mcpd.audit`.
    pub audit: AuditOptions,
}

impl ObserveConfig {
    /// The pinning policy in force for `server`.
    pub fn policy(&self, server: &str) -> PinPolicy {
        self.server_policy
            .get(server)
            .copied()
            .unwrap_or(self.default_policy)
    }
}

/// The keys a server definition may carry for this module.
pub const SERVER_KEYS: [&str; 2] = ["onToolChange", "onNewTool"];
/// The keys `mcpd` may carry for this module.
pub const MCPD_KEYS: [&str; 3] = ["onToolChange", "onNewTool", "audit"];

fn error(file: &Path, path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        line: None,
        json_path: Some(path.to_owned()),
        message: message.into(),
    }
}

fn word<'v>(file: &Path, v: &'v Value, at: &str, allowed: &str) -> Result<&'v str, ConfigError> {
    v.as_str().ok_or_else(|| {
        error(
            file,
            at,
            format!("expected one of {allowed}, found {}", kind_of(v)),
        )
    })
}

fn policy(
    file: &Path,
    obj: &serde_json::Map<String, Value>,
    path: &str,
    mut into: PinPolicy,
) -> Result<PinPolicy, ConfigError> {
    if let Some(v) = obj.get("onToolChange") {
        let at = join(path, "onToolChange");
        into.on_change = match word(file, v, &at, "\"block\", \"warn\", \"allow\"")? {
            "block" => OnChange::Block,
            "warn" => OnChange::Warn,
            "allow" => OnChange::Allow,
            other => {
                return Err(error(
                    file,
                    &at,
                    format!("expected \"block\", \"warn\" or \"allow\", found \"{other}\""),
                ));
            }
        };
    }
    if let Some(v) = obj.get("onNewTool") {
        let at = join(path, "onNewTool");
        into.on_new = match word(file, v, &at, "\"allow\", \"block\"")? {
            "allow" => OnNew::Allow,
            "block" => OnNew::Block,
            other => {
                return Err(error(
                    file,
                    &at,
                    format!("expected \"allow\" or \"block\", found \"{other}\""),
                ));
            }
        };
    }
    Ok(into)
}

fn audit(file: &Path, v: &Value, warnings: &mut Vec<Warning>) -> Result<AuditOptions, ConfigError> {
    let path = "mcpd.audit";
    let obj = v.as_object().ok_or_else(|| {
        error(
            file,
            path,
            format!("expected an object, found {}", kind_of(v)),
        )
    })?;
    let mut out = AuditOptions::default();
    for (key, value) in obj {
        let at = join(path, key);
        let flag = || {
            value.as_bool().ok_or_else(|| {
                error(
                    file,
                    &at,
                    format!("expected true or false, found {}", kind_of(value)),
                )
            })
        };
        match key.as_str() {
            "enabled" => out.enabled = flag()?,
            "arguments" => out.arguments = flag()?,
            "keepDays" => {
                out.keep_days = value
                    .as_u64()
                    .filter(|n| (1..=36_500).contains(n))
                    .ok_or_else(|| error(file, &at, "expected a number of days (1 or more)"))?;
            }
            "maxFileBytes" => {
                out.max_file_bytes = value
                    .as_u64()
                    .filter(|n| *n >= 4096)
                    .ok_or_else(|| error(file, &at, "expected a number of bytes (4096 or more)"))?;
            }
            _ => warnings.push(Warning::new(
                WarningKind::UnknownKey,
                format!("{}: unknown key `{at}` ignored", file.display()),
            )),
        }
    }
    Ok(out)
}

/// Reads this module's keys from the whole document.
pub fn collect(
    file: &Path,
    root: &Value,
    warnings: &mut Vec<Warning>,
) -> Result<ObserveConfig, ConfigError> {
    let mut out = ObserveConfig::default();
    if let Some(mcpd) = root.get("mcpd").and_then(Value::as_object) {
        out.default_policy = policy(file, mcpd, "mcpd", PinPolicy::default())?;
        if let Some(v) = mcpd.get("audit") {
            out.audit = audit(file, v, warnings)?;
        }
    }
    if let Some(servers) = root.get("mcpServers").and_then(Value::as_object) {
        for (name, server) in servers {
            let Some(obj) = server.as_object() else {
                continue;
            };
            if SERVER_KEYS.iter().any(|k| obj.contains_key(*k)) {
                let path = join("mcpServers", name);
                let p = policy(file, obj, &path, out.default_policy)?;
                out.server_policy.insert(name.clone(), p);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn read(text: &str) -> Result<ObserveConfig, ConfigError> {
        collect(
            Path::new("/c.json"),
            &serde_json::from_str(text).unwrap(),
            &mut Vec::new(),
        )
    }

    #[test]
    fn policies_default_to_block_changes_and_allow_new_tools() {
        let c = read(r#"{"mcpServers":{"a":{"command":"x"}}}"#).unwrap();
        assert_eq!(c.policy("a"), PinPolicy::default());
        assert_eq!(c.policy("a").on_change, OnChange::Block);
        assert_eq!(c.policy("a").on_new, OnNew::Allow);
        assert!(c.audit.enabled && !c.audit.arguments);
    }

    #[test]
    fn a_server_overrides_the_daemon_wide_policy() {
        let c = read(
            r#"{"mcpd":{"onToolChange":"warn","onNewTool":"block","audit":{"arguments":true,"keepDays":7}},
                "mcpServers":{"a":{"command":"x","onToolChange":"allow"},"b":{"command":"y"}}}"#,
        )
        .unwrap();
        assert_eq!(c.policy("a").on_change, OnChange::Allow);
        assert_eq!(c.policy("a").on_new, OnNew::Block);
        assert_eq!(c.policy("b").on_change, OnChange::Warn);
        assert!(c.audit.arguments);
        assert_eq!(c.audit.keep_days, 7);
    }

    #[test]
    fn a_wrong_word_names_the_key_and_the_choices() {
        let e =
            read(r#"{"mcpServers":{"a":{"command":"x","onToolChange":"ignore"}}}"#).unwrap_err();
        assert_eq!(e.json_path.as_deref(), Some("mcpServers.a.onToolChange"));
        assert!(
            e.message.contains("\"block\", \"warn\" or \"allow\""),
            "{e}"
        );
        let e = read(r#"{"mcpd":{"audit":{"keepDays":0}}}"#).unwrap_err();
        assert_eq!(e.json_path.as_deref(), Some("mcpd.audit.keepDays"));
    }
}
