//! MCP clients and where they keep their server lists: file locations on Linux and macOS, the
//! JSON paths of the server maps inside, and how their entries translate to mcpd's format.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::jsonc;

/// A client whose configuration mcpctl can import and rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    /// Claude Desktop: `claude_desktop_config.json`, `mcpServers`.
    ClaudeDesktop,
    /// Claude Code: `~/.claude.json`, `mcpServers` and `projects.<dir>.mcpServers`.
    ClaudeCode,
    /// Cursor: `~/.cursor/mcp.json`, `mcpServers`.
    Cursor,
    /// VS Code: the user `mcp.json` (`servers`), JSON with comments.
    Vscode,
    /// Windsurf: `~/.codeium/windsurf/mcp_config.json`, `mcpServers`.
    Windsurf,
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClaudeDesktop => "claude-desktop",
            Self::ClaudeCode => "claude-code",
            Self::Cursor => "cursor",
            Self::Vscode => "vscode",
            Self::Windsurf => "windsurf",
        })
    }
}

/// The environment that locates configuration files (tests pass their own).
#[derive(Debug, Clone)]
pub struct Homes {
    /// `$HOME`.
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME` or `~/.config`.
    pub config: PathBuf,
}

impl Homes {
    /// From this process's environment.
    pub fn from_env() -> Result<Self> {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .context("HOME is not set to an absolute path")?;
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".config"));
        Ok(Self { home, config })
    }

    /// Where per-application settings live: `~/Library/Application Support` on macOS, the XDG
    /// configuration directory elsewhere.
    fn app_config(&self) -> PathBuf {
        if cfg!(target_os = "macos") {
            self.home.join("Library").join("Application Support")
        } else {
            self.config.clone()
        }
    }
}

impl Client {
    /// The files this client reads, most likely first; the first that exists is used.
    pub fn candidates(self, homes: &Homes) -> Vec<PathBuf> {
        match self {
            Self::ClaudeDesktop => vec![
                homes
                    .app_config()
                    .join("Claude")
                    .join("claude_desktop_config.json"),
            ],
            Self::ClaudeCode => vec![homes.home.join(".claude.json")],
            Self::Cursor => vec![homes.home.join(".cursor").join("mcp.json")],
            Self::Vscode => {
                let user = homes.app_config().join("Code").join("User");
                vec![user.join("mcp.json"), user.join("settings.json")]
            }
            Self::Windsurf => vec![
                homes
                    .home
                    .join(".codeium")
                    .join("windsurf")
                    .join("mcp_config.json"),
            ],
        }
    }

    /// The first of [`candidates`](Self::candidates) that exists.
    pub fn locate(self, homes: &Homes) -> Result<PathBuf> {
        let candidates = self.candidates(homes);
        candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .with_context(|| {
                format!(
                    "no {self} configuration found (looked for {}); pass its path instead",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// The key of the server map at the top of this client's file.
    pub fn servers_key(self, file: &Path) -> &'static [&'static str] {
        match self {
            Self::Vscode if file.file_name().is_some_and(|n| n == "settings.json") => {
                &["mcp", "servers"]
            }
            Self::Vscode => &["servers"],
            _ => &["mcpServers"],
        }
    }

    /// The entry that launches `mcp-shim` in this client's format.
    pub fn shim_entry(self, shim: &Path, profile: Option<&str>) -> Value {
        let mut entry = Map::new();
        if matches!(self, Self::Vscode | Self::ClaudeCode) {
            entry.insert("type".into(), "stdio".into());
        }
        entry.insert("command".into(), shim.display().to_string().into());
        let args: Vec<Value> = match profile {
            Some(p) => vec!["--profile".into(), p.into()],
            None => Vec::new(),
        };
        entry.insert("args".into(), args.into());
        Value::Object(entry)
    }
}

/// One map of servers in a client's file.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerMap {
    /// Its JSON path (object keys from the root).
    pub path: Vec<String>,
    /// What it is, for messages: `user`, `project /home/u/src/x`.
    pub label: String,
    /// Its entries, in file order where the file has one.
    pub servers: Vec<(String, Value)>,
}

/// Where a file's server maps are: the client's own keys, or for a file of unknown origin the
/// first of `mcpServers`, `servers`, `mcp.servers` it has.
pub fn server_maps(client: Option<Client>, file: &Path, text: &str) -> Result<Vec<ServerMap>> {
    let value = jsonc::parse(text).with_context(|| format!("cannot read {}", file.display()))?;
    if !value.is_object() {
        bail!("{} does not hold a JSON object", file.display());
    }
    let json = jsonc::to_json(text);
    let map_at = |path: &[&str], label: String| -> Option<ServerMap> {
        let span = jsonc::find(&json, path)?;
        let servers = jsonc::members(&json, span)
            .into_iter()
            .filter_map(|m| {
                serde_json::from_str::<Value>(&json[m.value.start..m.value.end])
                    .ok()
                    .map(|v| (m.key, v))
            })
            .collect();
        Some(ServerMap {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            label,
            servers,
        })
    };
    let mut maps = Vec::new();
    match client {
        Some(c) => {
            if let Some(m) = map_at(c.servers_key(file), "user".into()) {
                maps.push(m);
            }
            if c == Client::ClaudeCode
                && let Some(projects) = value.get("projects").and_then(Value::as_object)
            {
                for (dir, project) in projects {
                    if project.get("mcpServers").is_some_and(Value::is_object) {
                        let path = ["projects", dir.as_str(), "mcpServers"];
                        if let Some(m) = map_at(&path, format!("project {dir}")) {
                            maps.push(m);
                        }
                    }
                }
            }
        }
        None => {
            for path in [&["mcpServers"][..], &["servers"], &["mcp", "servers"]] {
                if let Some(m) = map_at(path, "file".into()) {
                    maps.push(m);
                    break;
                }
            }
            if maps.is_empty() {
                bail!(
                    "{} has no `mcpServers`, `servers` or `mcp.servers` object",
                    file.display()
                );
            }
        }
    }
    Ok(maps)
}

/// A client's server entry in mcpd's format, or why it cannot be imported as it is.
pub fn to_mcpd(client: Option<Client>, entry: &Value) -> Result<Value, String> {
    let Some(object) = entry.as_object() else {
        return Err("its definition is not a JSON object".into());
    };
    let mut out = Map::new();
    for (key, value) in object {
        match key.as_str() {
            // Windsurf's name for a remote server's URL.
            "serverUrl" => {
                out.insert("url".into(), value.clone());
            }
            "envFile" => {
                return Err(
                    "it reads variables from an envFile, which mcpd does not; put them in `env`"
                        .into(),
                );
            }
            _ => {
                out.insert(key.clone(), translate_variables(value));
            }
        }
    }
    if object.contains_key("serverUrl") && !out.contains_key("type") {
        out.insert("type".into(), "http".into());
    }
    if !out.contains_key("command") && !out.contains_key("url") {
        return Err("it has neither a `command` nor a `url`".into());
    }
    let text = Value::Object(out.clone()).to_string();
    if let Some(var) = unsupported_variable(&text) {
        let whose = client.map_or_else(|| "client".to_owned(), |c| c.to_string());
        return Err(format!(
            "it uses the {whose} variable `{var}`, which mcpd cannot resolve; add it by hand"
        ));
    }
    Ok(Value::Object(out))
}

/// VS Code's `${env:NAME}` and `${userHome}` in mcpd's `${NAME}` syntax, in every string.
fn translate_variables(value: &Value) -> Value {
    match value {
        Value::String(s) => {
            Value::String(s.replace("${env:", "${").replace("${userHome}", "${HOME}"))
        }
        Value::Array(items) => Value::Array(items.iter().map(translate_variables).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), translate_variables(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Editor-defined variables (VS Code, Cursor) that look like environment variables.
const EDITOR_VARIABLES: &[&str] = &[
    "workspaceFolder",
    "workspaceFolderBasename",
    "workspaceRoot",
    "file",
    "fileBasename",
    "fileDirname",
    "relativeFile",
    "cwd",
    "execPath",
    "pathSeparator",
    "lineNumber",
    "selectedText",
];

/// The first `${...}` that is not mcpd's `${NAME}` or `${NAME:-default}`.
fn unsupported_variable(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let inner = &after[..end];
        let name = inner.split(":-").next().unwrap_or("");
        let ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && !EDITOR_VARIABLES.contains(&name);
        if !ok {
            return Some(format!("${{{inner}}}"));
        }
        rest = &after[end..];
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn vscode_variables_are_translated_or_refused() {
        let entry = json!({"type": "stdio", "command": "${userHome}/bin/s", "env": {"T": "${env:GITHUB_TOKEN}"}});
        assert_eq!(
            to_mcpd(Some(Client::Vscode), &entry).unwrap(),
            json!({"type": "stdio", "command": "${HOME}/bin/s", "env": {"T": "${GITHUB_TOKEN}"}})
        );
        let entry = json!({"command": "s", "env": {"T": "${input:token}"}});
        let why = to_mcpd(Some(Client::Vscode), &entry).unwrap_err();
        assert!(why.contains("${input:token}"), "{why}");
        let entry = json!({"command": "s", "args": ["${workspaceFolder}"]});
        assert!(to_mcpd(Some(Client::Vscode), &entry).is_err());
    }

    #[test]
    fn windsurf_server_url_becomes_an_http_url() {
        let entry = json!({"serverUrl": "https://mcp.example.com/mcp"});
        assert_eq!(
            to_mcpd(Some(Client::Windsurf), &entry).unwrap(),
            json!({"url": "https://mcp.example.com/mcp", "type": "http"})
        );
    }

    #[test]
    fn defaults_in_mcpd_syntax_are_kept() {
        let entry = json!({"command": "s", "args": ["${PORT:-80}"]});
        assert!(to_mcpd(None, &entry).is_ok());
    }
}
