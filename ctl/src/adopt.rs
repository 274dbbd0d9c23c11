//! Moving plaintext credentials into mcpd's secret store: shared by `mcpctl import` (the
//! servers being imported), `mcpctl secret adopt` (mcpd's own configuration) and `mcpctl
//! doctor` (which points at `adopt`). Recognition is `mcpd_config::secrets::detect`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use mcpd_config::secrets::detect::{self, Moved};
use mcpd_proto::SecretText;
use serde_json::Value;

use crate::jsonc;
use crate::output::say;

/// Decides secret names for one run: a name the daemon already stores, or one given another
/// value earlier in this run, is taken.
pub struct Names {
    stored: Vec<String>,
    given: BTreeMap<String, zeroize::Zeroizing<String>>,
}

impl Names {
    /// The names the daemon stores now (none when `socket` is `None`).
    pub fn new(socket: Option<&Path>) -> Result<Self> {
        let stored = match socket {
            Some(socket) => crate::secret::list(socket)
                .context(
                    "mcpd must be running to store the credentials (or pass --keep-plaintext)",
                )?
                .into_iter()
                .filter(|s| !s.values.is_empty())
                .map(|s| s.name)
                .collect(),
            None => Vec::new(),
        };
        Ok(Self {
            stored,
            given: BTreeMap::new(),
        })
    }

    /// Moves the credentials of `entry` out, naming them.
    pub fn move_out(&mut self, server: &str, entry: &mut Value) -> Vec<Moved> {
        let moved = detect::move_out(server, entry, |name, value| {
            self.stored.iter().any(|n| n == name)
                || self.given.get(name).is_some_and(|v| v.as_str() != value)
        });
        for m in &moved {
            self.given.insert(m.name.clone(), m.value.clone());
        }
        moved
    }
}

/// Prints what moved.
pub fn report(moved: &[Moved]) {
    for m in moved {
        say!(
            "  moved {} ({}) into secret {} (written as ${{secret:{}}})",
            m.path,
            m.why,
            m.name,
            m.name
        );
    }
}

/// Stores every moved value in the daemon (the same value under one name is sent once).
pub fn store(socket: &Path, moved: &[Moved]) -> Result<()> {
    let mut sent: Vec<&str> = Vec::new();
    for m in moved {
        if sent.contains(&m.name.as_str()) {
            continue;
        }
        crate::secret::set(socket, &m.name, None, SecretText::new(m.value.to_string()))
            .with_context(|| format!("cannot store secret {}; nothing was written", m.name))?;
        sent.push(&m.name);
    }
    Ok(())
}

/// `mcpctl secret adopt`: moves the plaintext credentials of mcpd's configuration into the
/// secret store, writes references in their place (the old file is kept, 0600, as a backup
/// to undo with), and reloads the daemon.
pub fn adopt(socket: &Path, config: &Path, dry_run: bool) -> Result<()> {
    let text =
        fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let root = jsonc::parse(&text).with_context(|| format!("cannot read {}", config.display()))?;
    let Some(servers) = root.get("mcpServers").and_then(Value::as_object) else {
        say!("{} has no servers: nothing to adopt", config.display());
        return Ok(());
    };
    let any = servers
        .iter()
        .any(|(name, entry)| !detect::find(name, entry).is_empty());
    let mut names = Names::new(if dry_run || !any { None } else { Some(socket) })?;
    let mut changed: Vec<(String, Value)> = Vec::new();
    let mut moved = Vec::new();
    for (name, entry) in servers {
        let mut entry = entry.clone();
        let found = names.move_out(name, &mut entry);
        if !found.is_empty() {
            changed.push((name.clone(), entry));
            moved.extend(found);
        }
    }
    if moved.is_empty() {
        say!(
            "no plaintext credentials in {}: nothing to adopt",
            config.display()
        );
        return Ok(());
    }
    report(&moved);
    let mut new_text = text.clone();
    for (name, entry) in &changed {
        let span = jsonc::find(&jsonc::to_json(&new_text), &["mcpServers", name])
            .with_context(|| format!("cannot find `mcpServers.{name}` in {}", config.display()))?;
        new_text = jsonc::replace_value(&new_text, span, entry);
    }
    mcpd_config::parse(config, &new_text, |_| Some(String::new())).map_err(|e| {
        anyhow::anyhow!("nothing was changed: the result would not be a valid configuration: {e}")
    })?;
    if dry_run {
        say!(
            "dry run: {} credential(s) would move; nothing was stored or written",
            moved.len()
        );
        return Ok(());
    }
    store(socket, &moved)?;
    let backup = crate::import::backup(config)?;
    crate::import::write_private(config, new_text.as_bytes())?;
    say!(
        "{} now references the secrets; the previous file (with the plaintext values) is {} (mode 600)",
        config.display(),
        backup.display()
    );
    let mut client = crate::client::ControlClient::connect(socket, crate::REQUEST_TIMEOUT)?;
    match client.request(&mcpd_proto::ControlRequest::Reload, crate::RELOAD_TIMEOUT)? {
        mcpd_proto::ControlResponse::Reloaded(_) => say!("mcpd reloaded"),
        other => return Err(crate::unexpected("reload", other)),
    }
    say!(
        "to undo: cp {} {} && mcpctl reload; once satisfied, delete the backup: rm {}",
        backup.display(),
        config.display(),
        backup.display()
    );
    Ok(())
}

/// Plaintext credentials in mcpd's configuration, as `(path, why)`, for `mcpctl doctor`.
pub fn plaintext(config: &Path) -> Vec<(String, &'static str)> {
    let Ok(text) = fs::read_to_string(config) else {
        return Vec::new();
    };
    let Ok(root) = jsonc::parse(&text) else {
        return Vec::new();
    };
    root.get("mcpServers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .flat_map(|(name, entry)| detect::find(name, entry))
        .map(|m| (m.path.clone(), m.why))
        .collect()
}
