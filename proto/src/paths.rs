//! Where mcpd keeps its socket, configuration, state and cache.
//!
//! XDG base directories are honoured; relative values are ignored as the XDG specification
//! requires. The runtime directory (socket, child records) is resolved here and only here, the
//! same way for `mcpd`, `mcp-shim` and `mcpctl`: `$XDG_RUNTIME_DIR/mcpd`; else
//! `/run/user/$UID/mcpd` when `/run/user/$UID` is a real directory (not a symlink) owned by us
//! with mode 0700, as systemd-logind makes it; else `/tmp/mcpd-$UID`. MCP clients start their
//! servers with a scrubbed environment (the SDKs pass only `HOME`, `LOGNAME`, `PATH`, `SHELL`,
//! `TERM` and `USER`), so a shim started by one must still find the daemon systemd started
//! under `/run/user/$UID`. Whatever directory is chosen, clients check it before they trust
//! the socket in it (see [`crate::trust`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Overrides the socket path for the shim, `mcpctl` and the daemon.
pub const SOCKET_ENV: &str = "MCPD_SOCKET";
/// Overrides the configuration file for the daemon and `mcpctl`.
pub const CONFIG_ENV: &str = "MCPD_CONFIG";
/// File name of the socket inside the runtime directory.
pub const SOCKET_NAME: &str = "mcpd.sock";
/// Where systemd-logind makes each user's runtime directory (`/run/user/$UID`).
pub const RUN_USER_BASE: &str = "/run/user";

/// The files and directories mcpd uses, resolved once from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `$XDG_RUNTIME_DIR/mcpd`, `/run/user/$UID/mcpd` or `/tmp/mcpd-$UID`: socket and runtime
    /// records.
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

    /// Resolves the paths from the given variable lookup and uid, looking at the real
    /// `/run/user/$UID` when `XDG_RUNTIME_DIR` is unset.
    pub fn resolve(var: impl Fn(&str) -> Option<OsString>, uid: u32) -> Self {
        Self::resolve_with(var, uid, |dir| is_users_runtime_dir(dir, uid))
    }

    /// Like [`resolve`](Self::resolve), with `usable` deciding whether `/run/user/$UID` may be
    /// used (tests pass their own).
    pub fn resolve_with(
        var: impl Fn(&str) -> Option<OsString>,
        uid: u32,
        usable: impl Fn(&Path) -> bool,
    ) -> Self {
        let absolute = |key: &str| var(key).map(PathBuf::from).filter(|p| p.is_absolute());
        let home = absolute("HOME");
        let base = |xdg: &str, fallback: &[&str]| -> PathBuf {
            absolute(xdg).unwrap_or_else(|| {
                let mut p = home.clone().unwrap_or_else(|| fallback_home(uid));
                p.extend(fallback);
                p
            })
        };
        let run_user = Path::new(RUN_USER_BASE).join(uid.to_string());
        let runtime_dir = match absolute("XDG_RUNTIME_DIR") {
            Some(dir) => dir.join("mcpd"),
            None if usable(&run_user) => run_user.join("mcpd"),
            None => fallback_runtime_dir(uid),
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

/// `/tmp/mcpd-$UID`: the runtime directory when there is no per-user one.
pub fn fallback_runtime_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/mcpd-{uid}"))
}

/// Whether `dir` can serve as the runtime base of `uid`: a real directory (`lstat`, so not a
/// symlink), owned by `uid`, mode 0700 (what systemd-logind makes).
pub fn is_users_runtime_dir(dir: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.file_type().is_dir() && m.uid() == uid && m.mode() & 0o7777 == 0o700)
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
        resolve_run_user(vars, false)
    }

    /// Resolves with `/run/user/1000` usable or not.
    fn resolve_run_user(vars: &[(&str, &str)], usable: bool) -> Paths {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Paths::resolve_with(
            |k| map.get(k).cloned(),
            1000,
            |dir| {
                assert_eq!(dir, Path::new("/run/user/1000"));
                usable
            },
        )
    }

    #[test]
    fn without_xdg_runtime_dir_a_usable_run_user_dir_is_used() {
        let p = resolve_run_user(&[("HOME", "/home/u")], true);
        assert_eq!(p.runtime_dir, PathBuf::from("/run/user/1000/mcpd"));
        assert_eq!(p.socket, PathBuf::from("/run/user/1000/mcpd/mcpd.sock"));
        let p = resolve_run_user(&[("XDG_RUNTIME_DIR", "/elsewhere")], true);
        assert_eq!(p.runtime_dir, PathBuf::from("/elsewhere/mcpd"));
    }

    #[test]
    fn the_run_user_dir_must_be_a_private_directory_of_ours() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let tmp = std::env::temp_dir().join(format!("mcpd-paths-{}", std::process::id()));
        let dir = tmp.join("user");
        std::fs::create_dir_all(&dir).unwrap();
        let me = current_uid();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(is_users_runtime_dir(&dir, me));
        assert!(
            !is_users_runtime_dir(&dir, me.wrapping_add(1)),
            "owned by another uid"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!is_users_runtime_dir(&dir, me), "not 0700");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.join("link");
        symlink(&dir, &link).unwrap();
        assert!(!is_users_runtime_dir(&link, me), "a symlink");
        assert!(!is_users_runtime_dir(&tmp.join("missing"), me));
        std::fs::remove_dir_all(&tmp).unwrap();
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
