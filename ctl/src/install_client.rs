//! `mcpctl install-client`: points a client at `mcp-shim` instead of its individual servers.
//!
//! The client's file is edited in place: only its server maps change (to one `mcpd` entry that
//! runs `mcp-shim`), comments and other keys stay. The original is kept byte for byte in
//! `<file>.mcpd-backup`, and `--undo` puts it back.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::clients::{self, Client, Homes};
use crate::import::write_atomic;
use crate::jsonc;
use crate::output::say;

/// The name of the one entry left in the client's configuration.
pub const ENTRY: &str = "mcpd";

/// `mcpctl install-client` flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Which client.
    pub client: Client,
    /// Its configuration file, when not at the standard location.
    pub file: Option<PathBuf>,
    /// The `mcp-shim` to launch [default: the one next to this mcpctl].
    pub shim: Option<PathBuf>,
    /// Attach to this profile.
    pub profile: Option<String>,
    /// mcpd's configuration, to check that no server is lost.
    pub config: PathBuf,
    /// Rewrite even if some servers are not in mcpd's configuration.
    pub force: bool,
    /// Restore the backup instead.
    pub undo: bool,
    /// Print the plan only.
    pub dry_run: bool,
}

/// Where the original is kept.
pub fn backup_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".mcpd-backup");
    file.with_file_name(name)
}

/// Runs `mcpctl install-client`.
pub fn run(options: &Options) -> Result<()> {
    let file = match &options.file {
        Some(f) => f.clone(),
        None => options.client.locate(&Homes::from_env()?)?,
    };
    let backup = backup_path(&file);
    if options.undo {
        return undo(&file, &backup, options.dry_run);
    }
    if backup.exists() {
        bail!(
            "{} exists: {} was set up for mcpd already; run `mcpctl install-client {} --undo` \
             first to restore the original",
            backup.display(),
            file.display(),
            options.client
        );
    }
    let shim = match &options.shim {
        Some(s) => s.clone(),
        None => sibling_shim()?,
    };
    if !shim.is_absolute() {
        bail!("the mcp-shim path must be absolute: {}", shim.display());
    }
    let original = fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = String::from_utf8(original.clone())
        .with_context(|| format!("{} is not UTF-8", file.display()))?;
    let maps = clients::server_maps(Some(options.client), &file, &text)?;

    // Every server the client launches must be one mcpd runs, or it would silently vanish.
    let config_servers = mcpd_servers(&options.config)?;
    let missing: Vec<String> = maps
        .iter()
        .flat_map(|m| m.servers.iter().map(|(name, _)| name.clone()))
        .filter(|name| name != ENTRY && !config_servers.contains(name))
        .collect();
    if !missing.is_empty() && !options.force {
        bail!(
            "not in mcpd's configuration ({}): {}; run `mcpctl import --from {}` first, or pass \
             --force to drop them from {}",
            options.config.display(),
            missing.join(", "),
            options.client,
            options.client
        );
    }

    let entry = options.client.shim_entry(&shim, options.profile.as_deref());
    let top: serde_json::Map<String, Value> = [(ENTRY.to_owned(), entry)].into_iter().collect();
    let mut new_text = text.clone();
    // From the last map in the file to the first, so earlier spans stay valid.
    let mut spans: Vec<(jsonc::Span, bool)> = maps
        .iter()
        .filter_map(|m| {
            let path: Vec<&str> = m.path.iter().map(String::as_str).collect();
            jsonc::find(&jsonc::to_json(&text), &path).map(|s| (s, m.label == "user"))
        })
        .collect();
    spans.sort_by_key(|(s, _)| std::cmp::Reverse(s.start));
    let has_user_map = spans.iter().any(|(_, user)| *user);
    for (span, user) in spans {
        let value = if user {
            Value::Object(top.clone())
        } else {
            // Project maps of Claude Code: their servers now come through mcpd.
            Value::Object(serde_json::Map::new())
        };
        new_text = jsonc::replace_value(&new_text, span, &value);
    }
    if !has_user_map {
        let key = options.client.servers_key(&file);
        let json = jsonc::to_json(&new_text);
        let (at, value) = match key {
            [parent, child] => match jsonc::find(&json, &[parent]) {
                Some(span) => (span, (*child, Value::Object(top))),
                None => (
                    jsonc::root(&json),
                    (*parent, serde_json::json!({ *child: Value::Object(top) })),
                ),
            },
            _ => (jsonc::root(&json), (key[0], Value::Object(top))),
        };
        new_text = jsonc::insert_members(&new_text, at, &[(value.0.to_owned(), value.1)]);
    }
    jsonc::parse(&new_text).context("internal error: the rewritten configuration is not valid")?;

    for map in &maps {
        for (name, _) in &map.servers {
            if missing.contains(name) {
                say!(
                    "  - {name} ({}): dropped (not in mcpd's configuration)",
                    map.label
                );
            } else {
                say!("  - {name} ({}): now served by mcpd", map.label);
            }
        }
    }
    say!("  + {ENTRY}: {}", shim.display());
    if options.dry_run {
        say!("dry run: {} was not changed", file.display());
        return Ok(());
    }
    let mode = fs::metadata(&file).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    // The original may hold API keys in plaintext: only its owner may read the copy.
    write_atomic(&backup, &original, 0o600)?;
    write_atomic(&file, new_text.as_bytes(), mode)?;
    let credentials: Vec<String> = maps
        .iter()
        .flat_map(|m| m.servers.iter())
        .flat_map(|(name, entry)| mcpd_config::secrets::detect::find(name, entry))
        .map(|m| m.path.replacen("mcpServers.", "", 1))
        .collect();
    if !credentials.is_empty() {
        say!(
            "the backup {} (mode 600) holds {} credential(s) in plaintext ({}); {} itself has \
             none now. Delete the backup once you no longer need --undo: rm {}",
            backup.display(),
            credentials.len(),
            credentials.join(", "),
            file.display(),
            backup.display()
        );
    }
    say!(
        "{} now launches mcp-shim; the original is in {}. Restart {} to use it \
         (`mcpctl install-client {} --undo` restores the original)",
        file.display(),
        backup.display(),
        options.client,
        options.client
    );
    Ok(())
}

fn undo(file: &Path, backup: &Path, dry_run: bool) -> Result<()> {
    let original = match fs::read(backup) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "there is no backup at {}: {} was not set up by mcpctl install-client",
            backup.display(),
            file.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", backup.display())),
    };
    if dry_run {
        say!(
            "dry run: {} would be restored from {}",
            file.display(),
            backup.display()
        );
        return Ok(());
    }
    let mode = fs::metadata(backup).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    write_atomic(file, &original, mode)?;
    fs::remove_file(backup).with_context(|| format!("cannot remove {}", backup.display()))?;
    say!("{} restored", file.display());
    Ok(())
}

/// Server names in mcpd's configuration (an absent file has none).
fn mcpd_servers(config: &Path) -> Result<Vec<String>> {
    let text = match fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", config.display())),
    };
    let value = jsonc::parse(&text).with_context(|| format!("cannot read {}", config.display()))?;
    Ok(value
        .get("mcpServers")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
}

/// `mcp-shim` next to the running `mcpctl`.
pub fn sibling_shim() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find mcpctl's own path")?;
    let exe = fs::canonicalize(&exe).unwrap_or(exe);
    let shim = exe.with_file_name("mcp-shim");
    if !shim.is_file() {
        bail!(
            "mcp-shim is not next to mcpctl ({}); pass --shim PATH",
            shim.display()
        );
    }
    Ok(shim)
}
