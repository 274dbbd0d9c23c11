//! The last configuration that loaded, kept so that a file that stops parsing (a trailing
//! comma, a half-saved edit) does not start the daemon empty.
//!
//! Every time the file loads, its text is copied to `$XDG_STATE_HOME/mcpd/last-good-config.json`
//! (directory 0700, file 0600: it may hold secrets, as the file itself may). When the file does
//! not load at start, the copy is read instead (its `${VAR}`s expanded again from the daemon's
//! environment) and the daemon says everywhere that it runs the last good configuration and why
//! the file was refused. A reload never falls back: it keeps the configuration in force.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{ConfigError, Loaded, MAX_CONFIG_BYTES, read_bounded};

/// The copy's file name in the state directory.
pub const FILE_NAME: &str = "last-good-config.json";

/// Where the copy of the last configuration that loaded is kept.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Loads the configuration file like [`super::load`] and, when it loads, keeps a copy of its
/// text in `state_dir` (errors writing the copy are logged, never fatal).
pub fn load_and_keep(config_path: &Path, state_dir: &Path) -> Result<Loaded, ConfigError> {
    let loaded = super::load(config_path)?;
    if loaded.exists
        && let Ok(text) = read_bounded(config_path, MAX_CONFIG_BYTES)
        && let Err(e) = save(state_dir, &text)
    {
        tracing::warn!(
            "cannot keep a copy of the configuration in {}: {e}",
            state_dir.display()
        );
    }
    Ok(loaded)
}

/// The configuration to start with: the file's, else (when it does not load) the last good
/// copy with [`Loaded::fell_back`] saying why, else the file's error.
pub fn load_at_start(config_path: &Path, state_dir: &Path) -> Result<Loaded, ConfigError> {
    let error = match load_and_keep(config_path, state_dir) {
        Ok(loaded) => return Ok(loaded),
        Err(e) => e,
    };
    let copy = path(state_dir);
    let text = match read_bounded(&copy, MAX_CONFIG_BYTES) {
        Ok(text) => text,
        Err(_) => return Err(error),
    };
    match super::parse(&copy, &text, |name| std::env::var(name).ok()) {
        Ok(mut loaded) => {
            super::problems::check_commands(
                &mut loaded.config,
                config_path,
                std::env::var("PATH").ok().as_deref(),
            );
            loaded.fell_back = Some(error);
            Ok(loaded)
        }
        Err(_) => Err(error),
    }
}

/// Writes `text` as the copy, atomically, mode 0600, unless the copy already holds it.
pub fn save(state_dir: &Path, text: &str) -> std::io::Result<()> {
    let target = path(state_dir);
    if read_bounded(&target, MAX_CONFIG_BYTES).is_ok_and(|old| old == text) {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let temp = state_dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, &target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_that_stops_parsing_falls_back_to_the_last_copy_that_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        let state = dir.path().join("state");
        std::fs::write(&config, r#"{"mcpServers": {"a": {"command": "true"}}}"#).unwrap();
        let first = load_at_start(&config, &state).unwrap();
        assert!(first.fell_back.is_none());
        let mode = std::fs::metadata(path(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        std::fs::write(&config, r#"{"mcpServers": {"a": {"command": "true"},}}"#).unwrap();
        let second = load_at_start(&config, &state).unwrap();
        assert!(second.config.servers.contains_key("a"));
        let why = second.fell_back.unwrap();
        assert_eq!(why.file, config);
        assert!(why.line.is_some(), "{why}");
    }

    #[test]
    fn without_a_copy_the_error_stands() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, "{").unwrap();
        assert!(load_at_start(&config, &dir.path().join("state")).is_err());
    }
}
