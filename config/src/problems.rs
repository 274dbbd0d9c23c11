//! Configuration mistakes reported small and all at once.
//!
//! - A mistake inside one server's definition disables only that server: it is kept in
//!   [`Config::broken`](super::Config::broken) with every mistake found in it (each names its
//!   JSON path) and shows as `config-error` in `mcpctl status`; the other servers run.
//! - Every mistake of a file is found in one read: after a mistake the offending key is set
//!   aside and the definition read again, so four mistakes take one round, not four.
//! - An unknown key is a warning; when it is a near miss of a known key (edit distance) the
//!   warning says which one was meant (`idleTimoutMs` → `idleTimeoutMs`).
//!
//! Adding a key: add its name to the matching list below ([`SERVER_KEYS`], [`OPTION_KEYS`], ...)
//! so that near misses of it get a suggestion.

use serde_json::{Map, Value};

use super::{ConfigError, ServerSpec, join};

/// Keys of the top level.
pub const TOP_KEYS: &[&str] = &["mcpServers", "profiles", "mcpd"];
/// Keys of one server's definition.
pub const SERVER_KEYS: &[&str] = &[
    "command",
    "args",
    "env",
    "cwd",
    "type",
    "url",
    "headers",
    "oauth",
    "share",
    "insecureSkipVerify",
    "connectTimeoutMs",
    "requestTimeoutMs",
    "maxRequestTimeoutMs",
    "startupTimeoutMs",
    "pingIntervalMs",
    "pingTimeoutMs",
    "idleTimeoutMs",
    "stopTimeoutMs",
    "killTimeoutMs",
    "restartDelayMs",
    "maxRestartDelayMs",
    "crashLoopAfter",
    "disabled",
    "onToolChange",
    "onNewTool",
    "sandbox",
    "limits",
    "tools",
    "prefix",
    "start",
    "protocol",
];
/// Keys of a profile.
pub const PROFILE_KEYS: &[&str] = &["servers", "tools", "toolMode"];
/// Keys of the `mcpd` object.
pub const OPTION_KEYS: &[&str] = &[
    "separator",
    "pageSize",
    "listWaitMs",
    "credentialStore",
    "sessionBufferBytes",
    "clientStallMs",
    "onToolChange",
    "onNewTool",
    "audit",
];

/// Why one server was left out: every mistake found in its definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProblem {
    /// The mistakes, in the order of the definition's keys; never empty.
    pub errors: Vec<ConfigError>,
}

impl ServerProblem {
    /// `path: message` of each mistake, joined with `; `: what `mcpctl status` shows.
    pub fn summary(&self) -> String {
        self.errors
            .iter()
            .map(|e| match &e.json_path {
                Some(path) => format!("{path}: {}", e.message),
                None => e.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The [`summary`](Self::summary) after the file the definition is in: what the log and
    /// `mcpctl status` show (which file, which field, what is expected).
    pub fn located(&self) -> String {
        match self.errors.first() {
            Some(first) => format!("{}: {}", first.file.display(), self.summary()),
            None => self.summary(),
        }
    }

    /// The JSON path of the first mistake.
    pub fn json_path(&self) -> Option<&str> {
        self.errors.first().and_then(|e| e.json_path.as_deref())
    }
}

/// The key of `object` that the JSON path `error_path` lies in (`mcpServers.x.args[2]` →
/// `args` for the object at `mcpServers.x`).
pub(super) fn key_at<'o>(
    object: &'o Map<String, Value>,
    object_path: &str,
    error_path: &str,
) -> Option<&'o String> {
    object.keys().find(|key| {
        let at = join(object_path, key);
        error_path
            .strip_prefix(&at)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    })
}

/// Whether the JSON path `error_path` lies inside the object at `object_path`.
pub(super) fn inside(object_path: &str, error_path: &str) -> bool {
    error_path
        .strip_prefix(object_path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Reads one server's definition with `read`; when it has mistakes, sets each offending key
/// aside in turn and reads it again, so that every mistake is found at once.
pub(super) fn read_server(
    definition: &Value,
    path: &str,
    mut read: impl FnMut(&Value) -> Result<Option<ServerSpec>, ConfigError>,
) -> Result<Option<ServerSpec>, ServerProblem> {
    let first = match read(definition) {
        Ok(spec) => return Ok(spec),
        Err(e) => e,
    };
    let mut errors = vec![first];
    let mut rest = definition.clone();
    // Each round removes one key, so this ends; the bound only guards a definition with
    // thousands of bad keys.
    for _ in 0..64 {
        let Some(last) = errors.last() else { break };
        let Some(object) = rest.as_object_mut() else {
            break;
        };
        let Some(key) = last
            .json_path
            .as_deref()
            .and_then(|p| key_at(object, path, p))
            .cloned()
        else {
            break;
        };
        object.remove(&key);
        match read(&rest) {
            Ok(_) => break,
            Err(e) if errors.contains(&e) => break,
            Err(e) => errors.push(e),
        }
    }
    Err(ServerProblem { errors })
}

/// The known key closest to `key`, when it is a near miss (a typo, a case slip): at most one
/// edit for short keys, two for longer ones.
pub fn did_you_mean<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let folded = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (distance(&folded, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d > 0 || *k != key)
        .filter(|(d, _)| *d <= if key.chars().count() <= 4 { 1 } else { 2 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance (Levenshtein plus transpositions of neighbours).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// Moves each stdio server whose command cannot be found (on its own `PATH` when its `env`
/// sets one, else on the daemon's) to [`Config::broken`](super::Config::broken), so that the
/// mistake is said at once instead of after five failed starts.
pub fn check_commands(
    config: &mut super::Config,
    file: &std::path::Path,
    daemon_path: Option<&str>,
) {
    let missing: Vec<(String, ConfigError)> = config
        .servers
        .iter()
        .filter_map(|(name, spec)| {
            let stdio = spec.stdio()?;
            let search = stdio.env.get("PATH").map(String::as_str).or(daemon_path)?;
            if find_command(&stdio.command, search, stdio.cwd.as_deref()).is_some() {
                return None;
            }
            let message = if stdio.command.contains('/') {
                format!(
                    "`{}` does not exist or is not executable",
                    stdio.command
                )
            } else {
                format!(
                    "`{}` is not found on the daemon's PATH ({search}): install it, give its full path, or set PATH in this server's \"env\"",
                    stdio.command
                )
            };
            let at = join(&join("mcpServers", name), "command");
            Some((
                name.clone(),
                ConfigError {
                    file: file.to_owned(),
                    line: None,
                    json_path: Some(at),
                    message,
                },
            ))
        })
        .collect();
    for (name, error) in missing {
        config.servers.remove(&name);
        config.broken.insert(
            name,
            ServerProblem {
                errors: vec![error],
            },
        );
    }
}

/// The executable `command` resolves to: a path (relative to `cwd` when relative) or a name
/// looked up in `search` (a `PATH` value).
pub fn find_command(
    command: &str,
    search: &str,
    cwd: Option<&std::path::Path>,
) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let path = std::path::Path::new(command);
        let path = match cwd {
            Some(cwd) if path.is_relative() => cwd.join(path),
            _ => path.to_owned(),
        };
        return executable(&path).then_some(path);
    }
    std::env::split_paths(search)
        .map(|dir| dir.join(command))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_of_known_keys_get_a_suggestion() {
        assert_eq!(
            did_you_mean("idleTimoutMs", SERVER_KEYS),
            Some("idleTimeoutMs")
        );
        assert_eq!(did_you_mean("seperator", OPTION_KEYS), Some("separator"));
        assert_eq!(did_you_mean("Command", SERVER_KEYS), Some("command"));
        assert_eq!(did_you_mean("arsg", SERVER_KEYS), Some("args"));
        assert_eq!(did_you_mean("mcpservers", TOP_KEYS), Some("mcpServers"));
    }

    #[test]
    fn commands_resolve_against_the_given_path() {
        assert!(find_command("sh", "/nonexistent:/bin:/usr/bin", None).is_some());
        assert!(find_command("no-such-mcp-server-xyz", "/bin:/usr/bin", None).is_none());
        assert!(find_command("/bin/sh", "", None).is_some());
        assert!(find_command("./sh", "", Some(std::path::Path::new("/bin"))).is_some());
    }

    #[test]
    fn unrelated_keys_get_none() {
        assert_eq!(did_you_mean("description", SERVER_KEYS), None);
        assert_eq!(did_you_mean("autoApprove", SERVER_KEYS), None);
        assert_eq!(did_you_mean("x", SERVER_KEYS), None);
    }
}
