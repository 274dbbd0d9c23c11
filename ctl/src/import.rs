//! `mcpctl import`: copies a client's MCP servers into mcpd's configuration.
//!
//! The configuration file is edited in place (see [`crate::jsonc`]): keys mcpctl does not know,
//! their order and formatting stay as they were, and a timestamped backup is kept. A server
//! whose name is taken by a different definition is a conflict: nothing is written until the
//! user picks `--force` (replace) or `--rename` (add under another name).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::clients::{self, Client, Homes};
use crate::jsonc;
use crate::output::say;

/// Where servers come from: a known client or a file.
#[derive(Debug, Clone)]
pub enum Source {
    /// A client's standard location.
    Client(Client),
    /// A file in any of the known formats.
    File(PathBuf),
}

impl Source {
    /// `claude-desktop`, ... or a path.
    pub fn parse(text: &str) -> Result<Self, String> {
        use clap::ValueEnum;
        match Client::from_str(text, true) {
            Ok(c) => Ok(Self::Client(c)),
            Err(_) if text.contains('/') || Path::new(text).exists() => {
                Ok(Self::File(PathBuf::from(text)))
            }
            Err(_) => Err(format!(
                "`{text}` is neither a client (claude-desktop, claude-code, cursor, vscode, \
                 windsurf) nor an existing file"
            )),
        }
    }
}

/// What to do with a server whose name mcpd's configuration already uses differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Write nothing and list the conflicts.
    Stop,
    /// Replace mcpd's definition.
    Replace,
    /// Add the imported one as `<name>-<client>`.
    Rename,
}

/// `mcpctl import` flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where from.
    pub source: Source,
    /// mcpd's configuration file.
    pub config: PathBuf,
    /// Conflict policy.
    pub on_conflict: OnConflict,
    /// Print the plan only.
    pub dry_run: bool,
    /// The daemon that stores the credentials moved out of the imported servers; `None`
    /// (`--keep-plaintext`) copies them as they are.
    pub socket: Option<PathBuf>,
}

/// The plan for one imported server.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    Add { name: String, entry: Value },
    Replace { name: String, entry: Value },
    Same { name: String },
    Conflict { name: String },
    Skip { name: String, why: String },
}

/// Runs `mcpctl import`.
pub fn run(options: &Options) -> Result<()> {
    let (client, file) = match &options.source {
        Source::Client(c) => (Some(*c), c.locate(&Homes::from_env()?)?),
        Source::File(p) => (None, p.clone()),
    };
    let text =
        fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let maps = clients::server_maps(client, &file, &text)?;
    let from = client.map_or_else(|| file.display().to_string(), |c| c.to_string());
    say!("importing from {from} ({})", file.display());

    let config_text = match fs::read_to_string(&options.config) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", options.config.display()));
        }
    };
    let existing = existing_servers(config_text.as_deref(), &options.config)?;
    let suffix = client.map_or_else(|| "imported".to_owned(), |c| c.to_string());
    let mut actions = plan(client, &maps, &existing, options.on_conflict, &suffix);
    // Credentials become `${secret:NAME}` references; their values go to the daemon's store.
    let mut moved = Vec::new();
    let has_credentials = actions.iter().any(|a| match a {
        Action::Add { name, entry } | Action::Replace { name, entry } => {
            !mcpd_config::secrets::detect::find(name, entry).is_empty()
        }
        _ => false,
    });
    if let (Some(socket), true) = (&options.socket, has_credentials) {
        let mut names = crate::adopt::Names::new((!options.dry_run).then_some(socket.as_path()))?;
        for action in &mut actions {
            if let Action::Add { name, entry } | Action::Replace { name, entry } = action {
                moved.extend(names.move_out(name, entry));
            }
        }
    }

    for action in &actions {
        match action {
            Action::Add { name, .. } => say!("  + {name}"),
            Action::Replace { name, .. } => say!("  ~ {name} (replaces mcpd's definition)"),
            Action::Same { name } => say!("  = {name} (already in mcpd's configuration)"),
            Action::Conflict { name } => say!(
                "  ! {name}: mcpd's configuration defines it differently (--force replaces it, \
                 --rename adds this one as {name}-{suffix})"
            ),
            Action::Skip { name, why } => say!("  - {name}: skipped: {why}"),
        }
    }
    let conflicts: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Conflict { name } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    if !conflicts.is_empty() {
        bail!(
            "nothing was changed: {} conflict with mcpd's configuration; re-run with --force to \
             replace them or --rename to keep both",
            conflicts.join(", ")
        );
    }
    let new_text = apply(config_text.as_deref(), &actions)?;
    let changes = actions
        .iter()
        .filter(|a| matches!(a, Action::Add { .. } | Action::Replace { .. }))
        .count();
    if changes == 0 {
        say!("nothing to add: {} is up to date", options.config.display());
        return Ok(());
    }
    validate(&options.config, &new_text)?;
    crate::adopt::report(&moved);
    if options.dry_run {
        say!(
            "dry run: {} would get {changes} server(s); nothing was written",
            options.config.display()
        );
        return Ok(());
    }
    if let (Some(socket), false) = (&options.socket, moved.is_empty()) {
        crate::adopt::store(socket, &moved)?;
    }
    if config_text.is_some() {
        let backup = backup(&options.config)?;
        say!("backup: {}", backup.display());
    }
    write_private(&options.config, new_text.as_bytes())?;
    say!(
        "{} server(s) written to {}; run `mcpctl reload` to start them",
        changes,
        options.config.display()
    );
    if !moved.is_empty() {
        let mut names: Vec<&str> = moved.iter().map(|m| m.name.as_str()).collect();
        names.dedup();
        say!(
            "{} credential(s) are in mcpd's secret store, not in the file (`mcpctl secret list`); \
             to undo: `mcpctl secret rm NAME` for {} and import again with --keep-plaintext --force",
            moved.len(),
            names.join(", ")
        );
    }
    Ok(())
}

/// The `mcpServers` of mcpd's configuration text.
fn existing_servers(text: Option<&str>, path: &Path) -> Result<BTreeMap<String, Value>> {
    let Some(text) = text else {
        return Ok(BTreeMap::new());
    };
    let value = jsonc::parse(text).with_context(|| format!("cannot read {}", path.display()))?;
    match value.get("mcpServers") {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => Ok(map.clone().into_iter().collect()),
        Some(_) => bail!("{}: `mcpServers` is not an object", path.display()),
    }
}

fn plan(
    client: Option<Client>,
    maps: &[clients::ServerMap],
    existing: &BTreeMap<String, Value>,
    on_conflict: OnConflict,
    suffix: &str,
) -> Vec<Action> {
    let mut taken: BTreeMap<String, Value> = existing.clone();
    let mut actions = Vec::new();
    for map in maps {
        for (name, entry) in &map.servers {
            let entry = match clients::to_mcpd(client, entry) {
                Ok(e) => e,
                Err(why) => {
                    actions.push(Action::Skip {
                        name: name.clone(),
                        why: format!("{why} ({})", map.label),
                    });
                    continue;
                }
            };
            match taken.get(name) {
                None => {
                    taken.insert(name.clone(), entry.clone());
                    actions.push(Action::Add {
                        name: name.clone(),
                        entry,
                    });
                }
                Some(old) if *old == entry => actions.push(Action::Same { name: name.clone() }),
                Some(_) => match on_conflict {
                    OnConflict::Stop => actions.push(Action::Conflict { name: name.clone() }),
                    OnConflict::Replace if existing.contains_key(name) => {
                        taken.insert(name.clone(), entry.clone());
                        actions.push(Action::Replace {
                            name: name.clone(),
                            entry,
                        });
                    }
                    // Two maps of the same file (Claude Code projects) or --rename.
                    _ => {
                        let mut new_name = format!("{name}-{suffix}");
                        let mut n = 2;
                        while taken.contains_key(&new_name) {
                            new_name = format!("{name}-{suffix}-{n}");
                            n += 1;
                        }
                        taken.insert(new_name.clone(), entry.clone());
                        actions.push(Action::Add {
                            name: new_name,
                            entry,
                        });
                    }
                },
            }
        }
    }
    actions
}

/// mcpd's configuration text with the plan carried out.
fn apply(text: Option<&str>, actions: &[Action]) -> Result<String> {
    let added: Vec<(String, Value)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Add { name, entry } => Some((name.clone(), entry.clone())),
            _ => None,
        })
        .collect();
    let Some(mut text) = text.map(str::to_owned) else {
        let map: serde_json::Map<String, Value> = added.into_iter().collect();
        let doc = serde_json::json!({ "mcpServers": map });
        return Ok(format!("{}\n", jsonc::pretty(&doc, "")));
    };
    // Replacements first (each moves the text after it), one at a time with fresh spans.
    for action in actions {
        if let Action::Replace { name, entry } = action {
            let span = jsonc::find(&jsonc::to_json(&text), &["mcpServers", name])
                .with_context(|| format!("cannot find `mcpServers.{name}` to replace"))?;
            text = jsonc::replace_value(&text, span, entry);
        }
    }
    if added.is_empty() {
        return Ok(text);
    }
    let json = jsonc::to_json(&text);
    Ok(match jsonc::find(&json, &["mcpServers"]) {
        Some(span) => jsonc::insert_members(&text, span, &added),
        None => {
            let map: serde_json::Map<String, Value> = added.into_iter().collect();
            jsonc::insert_members(
                &text,
                jsonc::root(&json),
                &[("mcpServers".into(), Value::Object(map))],
            )
        }
    })
}

/// Refuses text the daemon would refuse, naming the problem as the daemon would.
fn validate(path: &Path, text: &str) -> Result<()> {
    // Variables resolve in the daemon's environment, not ours: any value will do here.
    match mcpd_config::parse(path, text, |_| Some(String::new())) {
        Ok(_) => Ok(()),
        Err(e) => {
            bail!("nothing was changed: the result would not be a valid mcpd configuration: {e}")
        }
    }
}

/// Copies `path` to `path.bak-<unix time>` (never over an older backup) and returns the copy.
pub fn backup(path: &Path) -> Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut n = 0;
    loop {
        let candidate = path.with_file_name(if n == 0 {
            format!("{name}.bak-{secs}")
        } else {
            format!("{name}.bak-{secs}-{n}")
        });
        if !candidate.exists() {
            fs::copy(path, &candidate)
                .with_context(|| format!("cannot back up {}", path.display()))?;
            fs::set_permissions(&candidate, fs::Permissions::from_mode(0o600))?;
            return Ok(candidate);
        }
        n += 1;
    }
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it), mode 0600, creating
/// its directory with mode 0700.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mode = fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o777 & !0o077);
    write_atomic(path, bytes, mode)
}

/// Writes `bytes` to `path` atomically with file mode `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.mcpctl-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn applying_to_a_file_keeps_its_other_keys_and_order() {
        let text = "{\n  \"zeta\": true,\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\"}\n  },\n  \"alpha\": [1.50]\n}\n";
        let out = apply(
            Some(text),
            &[Action::Add {
                name: "b".into(),
                entry: json!({"command": "y"}),
            }],
        )
        .unwrap();
        assert!(out.starts_with("{\n  \"zeta\": true,\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\"},\n    \"b\": {"));
        assert!(out.ends_with("  },\n  \"alpha\": [1.50]\n}\n"), "{out}");
    }

    #[test]
    fn a_file_without_mcp_servers_gets_the_key() {
        let out = apply(
            Some("{\"profiles\": {}}"),
            &[Action::Add {
                name: "b".into(),
                entry: json!({"command": "y"}),
            }],
        )
        .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["mcpServers"]["b"]["command"], "y");
        assert!(v["profiles"].is_object());
    }
}
