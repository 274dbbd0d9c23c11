//! Where mcpd keeps its socket, configuration, state and cache.
//!
//! XDG base directories are honoured; relative values are ignored as the XDG specification
//! requires. Without `XDG_RUNTIME_DIR` the socket lives in `/tmp/mcpd-$UID/`, a directory the
//! daemon creates with mode 0700 and whose owner it checks.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Overrides the socket path for the shim, `mcpctl` and the daemon.
pub const SOCKET_ENV: &str = "MCPD_SOCKET";
/// Overrides the configuration file for the daemon and `mcpctl`.
pub const CONFIG_ENV: &str = "MCPD_CONFIG";
/// File name of the socket inside the runtime directory.
pub const SOCKET_NAME: &str = "mcpd.sock";

/// The files and directories mcpd uses, resolved once from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `$XDG_RUNTIME_DIR/mcpd` or `/tmp/mcpd-$UID`: socket and runtime records.
    pub runtime_dir: PathBuf,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// `$XDG_CONFIG_HOME/mcpd/config.json`.
    pub config_file: PathBuf,
    /// `$XDG_STATE_HOME/mcpd`: credentials and other state.
    pub state_dir: PathBuf,
    /// `$XDG_CACHE_HOME/mcpd`: the catalog cache.
    pub cache_dir: PathBuf,
}

impl Paths {
    /// Resolves the paths from this process's environment.
    pub fn from_env() -> Self {
        Self::resolve(|key| std::env::var_os(key), current_uid())
    }

    /// Resolves the paths from the given variable lookup and uid (tests pass their own).
    pub fn resolve(var: impl Fn(&str) -> Option<OsString>, uid: u32) -> Self {
        let absolute = |key: &str| var(key).map(PathBuf::from).filter(|p| p.is_absolute());
        let home = absolute("HOME");
        let base = |xdg: &str, fallback: &[&str]| -> PathBuf {
            absolute(xdg).unwrap_or_else(|| {
                let mut p = home.clone().unwrap_or_else(|| fallback_home(uid));
                p.extend(fallback);
                p
            })
        };
        let runtime_dir = match absolute("XDG_RUNTIME_DIR") {
            Some(dir) => dir.join("mcpd"),
            None => PathBuf::from(format!("/tmp/mcpd-{uid}")),
        };
        let socket = absolute(SOCKET_ENV).unwrap_or_else(|| runtime_dir.join(SOCKET_NAME));
        let config_file = absolute(CONFIG_ENV).unwrap_or_else(|| {
            base("XDG_CONFIG_HOME", &[".config"])
                .join("mcpd")
                .join("config.json")
        });
        Self {
            socket,
            config_file,
            state_dir: base("XDG_STATE_HOME", &[".local", "state"]).join("mcpd"),
            cache_dir: base("XDG_CACHE_HOME", &[".cache"]).join("mcpd"),
            runtime_dir,
        }
    }

    /// The directory that holds the socket (the runtime directory unless `MCPD_SOCKET` moved it).
    pub fn socket_dir(&self) -> &Path {
        self.socket.parent().unwrap_or(&self.runtime_dir)
    }
}

fn fallback_home(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/mcpd-{uid}/home"))
}

/// The real uid of this process.
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)]) -> Paths {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Paths::resolve(|k| map.get(k).cloned(), 1000)
    }

    #[test]
    fn xdg_variables_are_used() {
        let p = resolve(&[
            ("HOME", "/home/u"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("XDG_CONFIG_HOME", "/cfg"),
            ("XDG_STATE_HOME", "/state"),
            ("XDG_CACHE_HOME", "/cache"),
        ]);
        assert_eq!(p.socket, PathBuf::from("/run/user/1000/mcpd/mcpd.sock"));
        assert_eq!(p.config_file, PathBuf::from("/cfg/mcpd/config.json"));
        assert_eq!(p.state_dir, PathBuf::from("/state/mcpd"));
        assert_eq!(p.cache_dir, PathBuf::from("/cache/mcpd"));
    }

    #[test]
    fn fallbacks_without_xdg() {
        let p = resolve(&[("HOME", "/home/u")]);
        assert_eq!(p.runtime_dir, PathBuf::from("/tmp/mcpd-1000"));
        assert_eq!(p.socket, PathBuf::from("/tmp/mcpd-1000/mcpd.sock"));
        assert_eq!(
            p.config_file,
            PathBuf::from("/home/u/.config/mcpd/config.json")
        );
        assert_eq!(p.state_dir, PathBuf::from("/home/u/.local/state/mcpd"));
        assert_eq!(p.cache_dir, PathBuf::from("/home/u/.cache/mcpd"));
    }

    #[test]
    fn relative_xdg_values_are_ignored() {
        let p = resolve(&[
            ("HOME", "/home/u"),
            ("XDG_RUNTIME_DIR", "run"),
            ("XDG_CONFIG_HOME", "cfg"),
        ]);
        assert_eq!(p.runtime_dir, PathBuf::from("/tmp/mcpd-1000"));
        assert_eq!(
            p.config_file,
            PathBuf::from("/home/u/.config/mcpd/config.json")
        );
    }

    #[test]
    fn explicit_overrides_win() {
        let p = resolve(&[
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("MCPD_SOCKET", "/x/s.sock"),
            ("MCPD_CONFIG", "/y/c.json"),
        ]);
        assert_eq!(p.socket, PathBuf::from("/x/s.sock"));
        assert_eq!(p.socket_dir(), Path::new("/x"));
        assert_eq!(p.config_file, PathBuf::from("/y/c.json"));
    }
}
