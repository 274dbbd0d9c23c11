//! The configuration file: the de-facto `mcpServers` map, profiles, and daemon options.
//!
//! ```json
//! {
//!   "mcpServers": {
//!     "everything": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-everything"]}
//!   },
//!   "profiles": {"work": {"servers": ["everything"]}},
//!   "mcpd": {"separator": "__"}
//! }
//! ```
//!
//! The file is read as JSON first (syntax errors carry a line and column), then walked by hand so
//! that every error names its JSON path (`mcpServers.x.args[2]`) and unknown keys become warnings
//! instead of failures: a Claude Desktop configuration pastes in unchanged.
//!
//! This crate is what both binaries need to read the file the same way: `mcpd` (which
//! re-exports it as `mcpd::config` and adds keeping the last good copy) and `mcpctl` (`doctor`,
//! `import`, `secret adopt`), which must not link the daemon's runtime. It depends on no async
//! runtime, HTTP client or D-Bus: only `serde_json`, `url`, `http` (header syntax) and the
//! secret-holding types.

pub mod contain;
mod expand;
pub mod exposure;
pub mod net;
pub mod oauth;
pub mod observe;
pub mod problems;
pub mod protocol;
pub mod secret_refs;
pub mod secrets;
mod stop;
mod warning;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

pub use expand::{ExpandError, expand};
pub use problems::{ServerProblem, did_you_mean};
pub use stop::StopTimeouts;
pub use warning::{Warning, WarningKind};

/// Default time a request may wait for its response without progress, when a server sets none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit to which progress notifications may extend a request's timeout.
pub const DEFAULT_MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Default time a server gets to finish its MCP handshake after it was spawned.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default interval of health pings.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Default time an HTTP server gets to accept a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default separator between server and tool names.
pub const DEFAULT_SEPARATOR: &str = "__";

/// A validated configuration with every `${VAR}` expanded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// Upstream servers by name.
    pub servers: BTreeMap<String, ServerSpec>,
    /// Named subsets of the servers; a session attaches to one.
    pub profiles: BTreeMap<String, Profile>,
    /// Daemon-wide options (the `mcpd` key).
    pub options: Options,
    /// Remote servers that may log in with OAuth (see [`oauth::collect`]).
    pub remote_auth: BTreeMap<String, oauth::RemoteAuth>,
    /// Servers left out because their definition has mistakes (state `config-error`).
    pub broken: BTreeMap<String, ServerProblem>,
    /// Tool pinning and the audit log (see [`observe::collect`]).
    pub observe: observe::ObserveConfig,
}

/// How one upstream server is reached and used.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    /// How to reach it.
    pub transport: TransportSpec,
    /// Shared by all sessions or one instance per session.
    pub share: Share,
    /// How long a request may wait for its response without progress notifications.
    pub request_timeout: Duration,
    /// How long a request may take in all, however much progress it reports.
    pub max_request_timeout: Duration,
    /// How long the process may take to answer `initialize`.
    pub startup_timeout: Duration,
    /// How often the server is pinged; `None`: never.
    pub ping_interval: Option<Duration>,
    /// How long a ping may go unanswered (while no client request is pending) before the
    /// server is restarted.
    pub ping_timeout: Duration,
    /// Stop the server after this long without requests; the next request starts it again.
    pub idle_timeout: Option<Duration>,
    /// Grace periods of the stop sequence.
    pub stop: StopTimeouts,
    /// When and how often it is started again after it failed.
    pub restart: RestartPolicy,
    /// Its `${secret:NAME}` references (and, for a started instance, their values).
    pub secrets: secret_refs::SecretBinding,
    /// Its sandbox and resource limits (`"sandbox"`, `"limits"`; stdio servers).
    pub contain: contain::Containment,
    /// Tool filter, name prefix and start mode (`tools`, `prefix`, `start`).
    pub exposure: exposure::Exposure,
    /// Which protocol era it is spoken to in (`protocol`).
    pub protocol: protocol::Protocol,
}

/// How a failed server is started again: after `initial_delay`, doubling up to `max_delay`
/// (with jitter), back to `initial_delay` after a run of a minute; `crash_loop_after` failures
/// in a row, each within 10 s of its start, stop the restarts until `mcpctl restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// First delay (`restartDelayMs`, default 1000).
    pub initial_delay: Duration,
    /// Longest delay (`maxRestartDelayMs`, default 60000).
    pub max_delay: Duration,
    /// Quick failures in a row that make a crash loop (`crashLoopAfter`, default 5).
    pub crash_loop_after: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            crash_loop_after: 5,
        }
    }
}

/// How a server is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportSpec {
    /// A child process speaking JSON lines on stdin/stdout.
    Stdio(StdioSpec),
    /// A remote server over HTTP (streamable HTTP or the legacy HTTP+SSE transport).
    Http(HttpSpec),
}

/// A server reached over HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSpec {
    /// The MCP endpoint (streamable HTTP) or the SSE endpoint (legacy).
    pub url: url::Url,
    /// Which HTTP transport it speaks.
    pub kind: HttpKind,
    /// Headers sent with every request (`Authorization` and the like), already expanded.
    pub headers: Headers,
    /// Accept any TLS certificate: an explicit, logged opt-out for self-signed development
    /// servers (`"insecureSkipVerify": true`).
    pub insecure_skip_verify: bool,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

/// The HTTP transport a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpKind {
    /// Streamable HTTP (`"type": "http"`).
    Streamable,
    /// The 2024-11-05 HTTP+SSE transport (`"type": "sse"`).
    Sse,
    /// Not said (`url` without `type`): streamable HTTP first, then the legacy fallback the
    /// specification describes.
    Probe,
}

/// Configured HTTP headers. Their values are often secrets, so `Debug` shows only the names.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

impl HttpSpec {
    /// The URL without what may carry a secret (user info, query, fragment), for status and
    /// logs.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

pub use net::redact_url;

/// A server run as a child process.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StdioSpec {
    /// Program to run, looked up in the daemon's `PATH`.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the child's small base environment.
    pub env: BTreeMap<String, String>,
    /// Working directory; the daemon's when absent.
    pub cwd: Option<PathBuf>,
}

impl ServerSpec {
    /// The stdio settings, for a stdio server.
    pub fn stdio(&self) -> Option<&StdioSpec> {
        match &self.transport {
            TransportSpec::Stdio(s) => Some(s),
            TransportSpec::Http(_) => None,
        }
    }

    /// The HTTP settings, for a remote server.
    pub fn http(&self) -> Option<&HttpSpec> {
        match &self.transport {
            TransportSpec::Http(h) => Some(h),
            TransportSpec::Stdio(_) => None,
        }
    }

    /// Whether a running process of `self` can serve `other`: everything but the catalog's
    /// filters and prefix is the same, so a reload that changes only those restarts nothing.
    pub fn same_process(&self, other: &Self) -> bool {
        let mut other = other.clone();
        if self.exposure.same_process(&other.exposure) {
            other.exposure = self.exposure.clone();
        }
        *self == other
    }

    /// What to call the server in messages: its command or URL (without secrets).
    pub fn describe(&self) -> String {
        match &self.transport {
            TransportSpec::Stdio(s) => s.command.clone(),
            TransportSpec::Http(h) => h.display_url(),
        }
    }

    /// The transport's name as `mcpctl status` shows it: `stdio`, `http` or `sse` (`http` also
    /// for a server still being probed).
    pub fn transport_name(&self) -> &'static str {
        match &self.transport {
            TransportSpec::Stdio(_) => "stdio",
            TransportSpec::Http(h) if h.kind == HttpKind::Sse => "sse",
            TransportSpec::Http(_) => "http",
        }
    }
}

/// Whether sessions share one upstream process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Share {
    /// One process for every session (the default).
    #[default]
    Shared,
    /// One process per session, for stateful servers such as browsers.
    PerClient,
    /// One process per profile (`"share": "per-profile"`), e.g. for per-profile credentials.
    PerProfile,
}

/// A named subset of servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Server names, each defined in `mcpServers`.
    pub servers: Vec<String>,
    /// The profile's own tool filter (`tools`) and `toolMode`.
    pub shape: ProfileShape,
}

/// How a profile presents tools: a filter on top of its servers' own and the tool mode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileShape {
    /// Globs on the servers' own tool names.
    pub tools: exposure::ToolFilter,
    /// All definitions, the search trio, or search above a threshold.
    pub tool_mode: exposure::ToolMode,
}

/// Daemon-wide options under the `mcpd` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Between server and tool names in namespaced names.
    pub separator: String,
    /// Items per page of daemon-side pagination.
    pub page_size: usize,
    /// How long a list request waits for servers that are still starting.
    pub list_wait: Duration,
    /// Where the key of stored credentials is kept (`credentialStore`).
    pub credential_store: oauth::CredentialStore,
    /// Bytes a session may hold for its client (queued output and requests in flight) before
    /// its requests are no longer read (`sessionBufferBytes`).
    pub session_buffer: usize,
    /// How long a client over its budget may read nothing before its session is closed
    /// (`clientStallMs`).
    pub client_stall: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            separator: DEFAULT_SEPARATOR.into(),
            page_size: 100,
            list_wait: Duration::from_secs(10),
            credential_store: oauth::CredentialStore::default(),
            session_buffer: 4 * 1024 * 1024,
            client_stall: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// The servers a profile sees, or `None` when the profile does not exist.
    /// `default` is every server unless the file defines a `default` profile.
    pub fn profile_servers(&self, profile: &str) -> Option<Vec<String>> {
        match self.profiles.get(profile) {
            Some(p) => Some(p.servers.clone()),
            None if profile == mcpd_proto::DEFAULT_PROFILE => {
                Some(self.servers.keys().cloned().collect())
            }
            None => None,
        }
    }

    /// The tool filter and mode of a profile (the default for one the file does not define).
    pub fn profile_shape(&self, profile: &str) -> ProfileShape {
        self.profiles
            .get(profile)
            .map(|p| p.shape.clone())
            .unwrap_or_default()
    }
}

/// A configuration as read from its file, with the warnings reading it produced.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Things worth telling the user that did not stop the load.
    pub warnings: Vec<Warning>,
    /// Whether the file existed (an absent file is an empty configuration).
    pub exists: bool,
    /// The file did not load and this is the last configuration that did (see
    /// `mcpd::config::last_good`): why the file was refused.
    pub fell_back: Option<ConfigError>,
}

/// Why a configuration file was refused. The running configuration, if any, stays in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Where in it: a line and column for syntax errors.
    pub line: Option<(usize, usize)>,
    /// The JSON path of the offending value (`mcpServers.x.args[2]`), when known.
    pub json_path: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.line {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(path) = &self.json_path {
            write!(f, ": {path}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Largest configuration file read (a config is a few KiB; this only stops a runaway file).
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a whole UTF-8 file of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "the file is larger than {} MiB",
            max / (1024 * 1024)
        )));
    }
    Ok(text)
}

/// Reads and validates the configuration file at `path`, expanding variables from the
/// daemon's environment, and leaves out (as [`Config::broken`]) stdio servers whose command
/// is not found on the daemon's `PATH`. A missing file is an empty configuration, not an error.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let mut loaded = load_unchecked(path)?;
    problems::check_commands(
        &mut loaded.config,
        path,
        std::env::var("PATH").ok().as_deref(),
    );
    Ok(loaded)
}

/// [`load`] without looking for the servers' commands (`mcpctl doctor` checks them against
/// the running daemon's `PATH` instead of its own).
pub fn load_unchecked(path: &Path) -> Result<Loaded, ConfigError> {
    let text = match read_bounded(path, MAX_CONFIG_BYTES) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => {
            return Err(ConfigError {
                file: path.to_owned(),
                line: None,
                json_path: None,
                message: format!("cannot read the configuration file: {e}"),
            });
        }
    };
    let mut loaded = parse(path, &text, |name| std::env::var(name).ok())?;
    loaded.exists = true;
    if let Some(warning) = permission_warning(path) {
        loaded.warnings.push(warning);
    }
    Ok(loaded)
}

fn permission_warning(path: &Path) -> Option<Warning> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        Warning::new(
            WarningKind::FileReadable,
            format!(
                "{} is readable by other users (mode {:o}); it may hold secrets: chmod 600 it",
                path.display(),
                mode & 0o777
            ),
        )
    })
}

/// Validates configuration text. `env` resolves `${VAR}` references.
pub fn parse(
    path: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let root: Value = serde_json::from_str(text).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: Some((e.line(), e.column())),
        json_path: None,
        message: format!("not valid JSON: {e}"),
    })?;
    let mut walker = Walker {
        file: path,
        env: &env,
        warnings: Vec::new(),
    };
    // Every mistake at once: a mistake outside the servers' definitions refuses the file, but
    // the offending entry is set aside and the rest read again so that all of them are named.
    let mut root = root;
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut config = loop {
        let warnings = walker.warnings.len();
        match walker.config(&root) {
            Ok(config) => break Some(config),
            Err(e) => {
                if !errors.is_empty() {
                    walker.warnings.truncate(warnings);
                }
                let set_aside = set_aside(&mut root, &e);
                let repeated = errors.contains(&e);
                if !repeated {
                    errors.push(e);
                }
                if !set_aside || repeated || errors.len() >= 64 {
                    break None;
                }
            }
        }
    };
    // OAuth settings are read from the same definitions: a mistake there disables its server.
    loop {
        match oauth::collect(path, &root, &env) {
            Ok(remote) => {
                if let Some(config) = config.as_mut() {
                    config.remote_auth = remote;
                }
                break;
            }
            Err(e) => {
                if let Err(e) = disable_server(&mut root, config.as_mut(), e) {
                    errors.push(e);
                    break;
                }
            }
        }
    }
    // Pinning and audit keys: a mistake in a server's disables that server, one in `mcpd`
    // refuses the file.
    loop {
        match observe::collect(path, &root, &mut walker.warnings) {
            Ok(observe) => {
                if let Some(config) = config.as_mut() {
                    config.observe = observe;
                }
                break;
            }
            Err(e) => {
                if let Err(e) = disable_server(&mut root, config.as_mut(), e) {
                    errors.push(e);
                    break;
                }
            }
        }
    }
    match config {
        Some(config) if errors.is_empty() => Ok(Loaded {
            config,
            warnings: walker.warnings,
            exists: true,
            fell_back: None,
        }),
        _ => Err(combine(errors, path)),
    }
}

/// Takes the server that `error` is about out of `config` (into `broken`, state
/// `config-error`) and out of `root`, so that the other servers still load. `Err(error)` when
/// the mistake is not inside one server's definition (or nothing loaded): the file is refused.
fn disable_server(
    root: &mut Value,
    config: Option<&mut Config>,
    error: ConfigError,
) -> Result<(), ConfigError> {
    let server = root
        .get("mcpServers")
        .and_then(Value::as_object)
        .and_then(|servers| problems::key_at(servers, "mcpServers", error.json_path.as_deref()?))
        .cloned();
    let (Some(server), Some(config)) = (server, config) else {
        return Err(error);
    };
    config.servers.remove(&server);
    config
        .broken
        .entry(server.clone())
        .or_insert_with(|| ServerProblem { errors: Vec::new() })
        .errors
        .push(error);
    if let Some(servers) = root.get_mut("mcpServers").and_then(Value::as_object_mut) {
        servers.remove(&server);
    }
    Ok(())
}

/// Removes the top-level entry (a profile, an `mcpd` option) that `error` is about; whether
/// there was one.
fn set_aside(root: &mut Value, error: &ConfigError) -> bool {
    let Some(path) = error.json_path.as_deref() else {
        return false;
    };
    for section in ["profiles", "mcpd", "mcpServers"] {
        if !problems::inside(section, path) {
            continue;
        }
        let key = match root.get(section).and_then(Value::as_object) {
            Some(object) => problems::key_at(object, section, path).cloned(),
            None => None,
        };
        return match (key, root.as_object_mut()) {
            (Some(key), Some(root)) => root
                .get_mut(section)
                .and_then(Value::as_object_mut)
                .is_some_and(|object| object.remove(&key).is_some()),
            // The section itself is wrong (not an object): drop it.
            (None, Some(root)) => root.remove(section).is_some(),
            (_, None) => false,
        };
    }
    false
}

/// One error that names every mistake of a refused file (the first one's place leads).
fn combine(mut errors: Vec<ConfigError>, file: &Path) -> ConfigError {
    if errors.is_empty() {
        return ConfigError {
            file: file.to_owned(),
            line: None,
            json_path: None,
            message: "the configuration was refused".into(),
        };
    }
    let mut first = errors.remove(0);
    if !errors.is_empty() {
        first.message.push_str(&format!(
            " (and {} more: {})",
            errors.len(),
            errors
                .iter()
                .map(|e| match &e.json_path {
                    Some(p) => format!("{p}: {}", e.message),
                    None => e.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    first
}

struct Walker<'a, E> {
    file: &'a Path,
    env: &'a E,
    warnings: Vec<Warning>,
}

impl<E: Fn(&str) -> Option<String>> Walker<'_, E> {
    fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: None,
            json_path: Some(path.to_owned()),
            message: message.into(),
        }
    }

    fn unknown(&mut self, path: &str, key: &str) {
        let at = join(path, key);
        let known = if path.is_empty() {
            problems::TOP_KEYS
        } else if path == "mcpd" {
            problems::OPTION_KEYS
        } else if path.starts_with("profiles") {
            problems::PROFILE_KEYS
        } else {
            problems::SERVER_KEYS
        };
        let hint = did_you_mean(key, known)
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        self.warnings.push(Warning::new(
            WarningKind::UnknownKey,
            format!("{}: unknown key `{at}` ignored{hint}", self.file.display()),
        ));
    }

    fn object<'v>(&self, v: &'v Value, path: &str) -> Result<&'v Map<String, Value>, ConfigError> {
        v.as_object()
            .ok_or_else(|| self.error(path, format!("expected an object, found {}", kind_of(v))))
    }

    fn string<'v>(&self, v: &'v Value, path: &str) -> Result<&'v str, ConfigError> {
        v.as_str()
            .ok_or_else(|| self.error(path, format!("expected a string, found {}", kind_of(v))))
    }

    fn expanded(&self, v: &Value, path: &str) -> Result<String, ConfigError> {
        let s = self.string(v, path)?;
        expand(s, self.env).map_err(|e| self.error(path, e.to_string()))
    }

    /// Refuses `${secret:NAME}` where it may not appear (`command`, `cwd`).
    fn no_secret(&self, value: String, path: &str) -> Result<String, ConfigError> {
        if secret_refs::references(&value).is_empty() {
            return Ok(value);
        }
        Err(self.error(
            path,
            "a secret may appear in env, args, headers and url, not here (it would show in `ps` and status)",
        ))
    }

    fn millis(&self, v: &Value, path: &str) -> Result<Duration, ConfigError> {
        v.as_u64()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| {
                self.error(
                    path,
                    format!(
                        "expected a positive number of milliseconds, found {}",
                        kind_of(v)
                    ),
                )
            })
    }

    fn config(&mut self, root: &Value) -> Result<Config, ConfigError> {
        let root = self.object(root, "(top level)")?;
        let mut config = Config::default();
        for (key, value) in root {
            match key.as_str() {
                "mcpServers" => {
                    for (name, server) in self.object(value, "mcpServers")? {
                        let path = join("mcpServers", name);
                        if name.is_empty() {
                            return Err(self.error(&path, "a server needs a non-empty name"));
                        }
                        if server.get("disabled").and_then(Value::as_bool) == Some(true) {
                            continue;
                        }
                        // A mistake disables this server only; its warnings are kept once.
                        let mut rounds = 0;
                        let read = problems::read_server(server, &path, |definition| {
                            let warnings = self.warnings.len();
                            let spec = self.server(definition, &path);
                            if rounds > 0 {
                                self.warnings.truncate(warnings);
                            }
                            rounds += 1;
                            spec
                        });
                        match read {
                            Ok(Some(spec)) => {
                                config.servers.insert(name.clone(), spec);
                            }
                            Ok(None) => {}
                            Err(problem) => {
                                config.broken.insert(name.clone(), problem);
                            }
                        }
                    }
                }
                "profiles" => {
                    for (name, profile) in self.object(value, "profiles")? {
                        let path = join("profiles", name);
                        let profile = self.profile(profile, &path)?;
                        config.profiles.insert(name.clone(), profile);
                    }
                }
                "mcpd" => config.options = self.options(value)?,
                _ => self.unknown("", key),
            }
        }
        for (name, profile) in &config.profiles {
            for (i, server) in profile.servers.iter().enumerate() {
                if !config.servers.contains_key(server) && !config.broken.contains_key(server) {
                    let path = format!("{}.servers[{i}]", join("profiles", name));
                    return Err(
                        self.error(&path, format!("no server named `{server}` in mcpServers"))
                    );
                }
            }
        }
        self.prefix_collisions(&config)?;
        Ok(config)
    }

    /// Two servers whose names would share a prefix could not be told apart: an error that
    /// names both. (`""` prefixes may repeat; a tool name they both list goes to the first.)
    fn prefix_collisions(&self, config: &Config) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (name, spec) in &config.servers {
            let prefix = spec.exposure.prefix_of(name);
            if prefix.is_empty() {
                continue;
            }
            if let Some(other) = seen.insert(prefix.to_owned(), name) {
                let at = match spec.exposure.prefix {
                    Some(_) => join(&join("mcpServers", name), "prefix"),
                    None => join("mcpServers", name),
                };
                return Err(self.error(
                    &at,
                    format!(
                        "servers `{other}` and `{name}` would both name their tools `{prefix}{}…`; give one of them another \"prefix\"",
                        config.options.separator
                    ),
                ));
            }
        }
        Ok(())
    }

    fn server(&mut self, v: &Value, path: &str) -> Result<Option<ServerSpec>, ConfigError> {
        let obj = self.object(v, path)?;
        let mut command = None;
        let mut stdio = StdioSpec::default();
        let mut spec = ServerSpec {
            transport: TransportSpec::Stdio(StdioSpec::default()),
            share: Share::Shared,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_request_timeout: DEFAULT_MAX_REQUEST_TIMEOUT,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            ping_interval: Some(DEFAULT_PING_INTERVAL),
            ping_timeout: Duration::from_secs(10),
            idle_timeout: None,
            stop: StopTimeouts::default(),
            restart: RestartPolicy::default(),
            secrets: secret_refs::SecretBinding::default(),
            contain: contain::Containment::default(),
            exposure: exposure::Exposure::default(),
            protocol: protocol::Protocol::default(),
        };
        let mut disabled = false;
        let mut kind = None;
        let mut url: Option<(String, String)> = None;
        let mut explicit_stdio = false;
        let mut headers = Headers::default();
        let mut insecure_skip_verify = false;
        let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
        let mut stdio_keys = Vec::new();
        for (key, value) in obj {
            if matches!(key.as_str(), "command" | "args" | "env" | "cwd") {
                stdio_keys.push(key.as_str());
            }
            let at = join(path, key);
            match key.as_str() {
                "command" => command = Some(self.no_secret(self.expanded(value, &at)?, &at)?),
                "args" => {
                    let items = value.as_array().ok_or_else(|| {
                        self.error(
                            &at,
                            format!("expected an array of strings, found {}", kind_of(value)),
                        )
                    })?;
                    for (i, item) in items.iter().enumerate() {
                        stdio.args.push(self.expanded(item, &format!("{at}[{i}]"))?);
                    }
                }
                "env" => {
                    for (name, value) in self.object(value, &at)? {
                        let value = self.expanded(value, &join(&at, name))?;
                        stdio.env.insert(name.clone(), value);
                    }
                }
                "cwd" => {
                    stdio.cwd = Some(PathBuf::from(
                        self.no_secret(self.expanded(value, &at)?, &at)?,
                    ))
                }
                "share" => {
                    spec.share = match self.string(value, &at)? {
                        "shared" => Share::Shared,
                        "per-client" => Share::PerClient,
                        "per-profile" => Share::PerProfile,
                        other => {
                            return Err(self.error(
                                &at,
                                format!("expected \"shared\", \"per-client\" or \"per-profile\", found \"{other}\""),
                            ));
                        }
                    }
                }
                "type" => {
                    kind = match self.string(value, &at)? {
                        "stdio" => None,
                        "http" | "streamable-http" | "streamableHttp" => Some(HttpKind::Streamable),
                        "sse" => Some(HttpKind::Sse),
                        other => {
                            return Err(self.error(
                                &at,
                                format!("unknown transport \"{other}\"; expected \"stdio\", \"http\" or \"sse\""),
                            ));
                        }
                    };
                    explicit_stdio = kind.is_none();
                }
                "url" => url = Some((self.expanded(value, &at)?, at)),
                "headers" => {
                    for (name, value) in self.object(value, &at)? {
                        let path = join(&at, name);
                        let value = self.expanded(value, &path)?;
                        self.header(name, &value, &path)?;
                        headers.0.push((name.clone(), value));
                    }
                }
                "insecureSkipVerify" => {
                    insecure_skip_verify = value.as_bool().ok_or_else(|| {
                        self.error(
                            &at,
                            format!("expected true or false, found {}", kind_of(value)),
                        )
                    })?;
                }
                "connectTimeoutMs" => connect_timeout = self.millis(value, &at)?,
                "requestTimeoutMs" => spec.request_timeout = self.millis(value, &at)?,
                "maxRequestTimeoutMs" => spec.max_request_timeout = self.millis(value, &at)?,
                "startupTimeoutMs" => spec.startup_timeout = self.millis(value, &at)?,
                "pingIntervalMs" => {
                    spec.ping_interval = match value.as_u64() {
                        Some(0) => None,
                        _ => Some(self.millis(value, &at)?),
                    }
                }
                "pingTimeoutMs" => spec.ping_timeout = self.millis(value, &at)?,
                "idleTimeoutMs" => spec.idle_timeout = Some(self.millis(value, &at)?),
                "stopTimeoutMs" => spec.stop.after_stdin = self.millis(value, &at)?,
                "killTimeoutMs" => spec.stop.after_term = self.millis(value, &at)?,
                "restartDelayMs" => spec.restart.initial_delay = self.millis(value, &at)?,
                "maxRestartDelayMs" => spec.restart.max_delay = self.millis(value, &at)?,
                "crashLoopAfter" => {
                    spec.restart.crash_loop_after = value
                        .as_u64()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            self.error(&at, "expected a number of failures between 1 and 1000")
                        })? as u32;
                }
                "disabled" => {
                    disabled = value.as_bool().ok_or_else(|| {
                        self.error(
                            &at,
                            format!("expected true or false, found {}", kind_of(value)),
                        )
                    })?;
                }
                "tools" => {
                    spec.exposure.tools = exposure::tool_filter(value)
                        .map_err(|(sub, e)| self.error(&format!("{at}{sub}"), e))?;
                }
                "prefix" => {
                    spec.exposure.prefix =
                        Some(exposure::prefix(value).map_err(|e| self.error(&at, e))?);
                }
                "start" => {
                    spec.exposure.start = exposure::start(value).map_err(|e| self.error(&at, e))?;
                }
                "protocol" => {
                    spec.protocol =
                        protocol::parse(value).map_err(|e| self.error(&at, e.to_string()))?
                }
                "oauth" => {}                                // read by `oauth::collect`
                k if observe::SERVER_KEYS.contains(&k) => {} // read by `observe::collect`
                "sandbox" => {
                    let home = (self.env)("HOME");
                    let strings = |v: &Value, at: &str| {
                        self.expanded(v, at)
                            .map_err(|e| (at.to_owned(), e.message.clone()))
                    };
                    spec.contain.sandbox =
                        contain::parse_sandbox(value, &at, home.as_deref(), &strings)
                            .map_err(|(at, m)| self.error(&at, m))?;
                }
                "limits" => {
                    spec.contain.limits =
                        contain::parse_limits(value, &at).map_err(|(at, m)| self.error(&at, m))?;
                }
                _ => self.unknown(path, key),
            }
        }
        if disabled {
            return Ok(None);
        }
        let remote = match (kind, url) {
            (None, None) => None,
            (None, Some((_, at))) if explicit_stdio => {
                return Err(self.error(
                    &at,
                    "a stdio server has no \"url\" (remove it, or set \"type\" to \"http\")",
                ));
            }
            (None, Some((url, at))) => Some((HttpKind::Probe, url, at)),
            (Some(kind), Some((url, at))) => Some((kind, url, at)),
            (Some(_), None) => return Err(self.error(path, "a remote server needs a \"url\"")),
        };
        if let Some((kind, url, at)) = remote {
            if let Some(key) = stdio_keys.first() {
                return Err(self.error(
                    &join(path, key),
                    "a remote server (with a \"url\") has no command, args, env or cwd",
                ));
            }
            let url = if secret_refs::references(&url).is_empty() {
                self.url(&url, &at, path)?
            } else {
                // Checked with each reference in place of its value; the template is kept.
                spec.secrets.url_template = Some(url.clone());
                let probe = secret_refs::substitute(&url, &BTreeMap::new())
                    .replace("${secret:", "secret-")
                    .replace('}', "");
                self.url(&probe, &at, path)?
            };
            spec.secrets
                .names
                .extend(secret_refs::references(&url_text(&spec, &url)));
            spec.secrets.names.extend(
                headers
                    .0
                    .iter()
                    .flat_map(|(_, v)| secret_refs::references(v)),
            );
            if insecure_skip_verify {
                self.warnings.push(Warning::new(
                    WarningKind::InsecureSkipVerify,
                    format!(
                        "{}: {path}.insecureSkipVerify is true: TLS certificates of {} are not checked",
                        self.file.display(),
                        redact_url(&url)
                    ),
                ));
            }
            spec.transport = TransportSpec::Http(HttpSpec {
                url,
                kind,
                headers,
                insecure_skip_verify,
                connect_timeout,
            });
            return Ok(Some(spec));
        }
        if !headers.0.is_empty() || insecure_skip_verify {
            let key = if headers.0.is_empty() {
                "insecureSkipVerify"
            } else {
                "headers"
            };
            return Err(self.error(
                &join(path, key),
                "only a remote server (with a \"url\") takes this",
            ));
        }
        stdio.command = match command {
            Some(c) if !c.trim().is_empty() => c,
            Some(_) => return Err(self.error(&join(path, "command"), "the command is empty")),
            None => {
                return Err(self.error(
                    path,
                    "a stdio server needs a \"command\" (and optionally \"args\")",
                ));
            }
        };
        spec.secrets.names.extend(
            stdio
                .args
                .iter()
                .chain(stdio.env.values())
                .flat_map(|v| secret_refs::references(v)),
        );
        spec.transport = TransportSpec::Stdio(stdio);
        Ok(Some(spec))
    }

    /// Checks a remote server's URL: it parses, it is http(s), and plain http goes only to
    /// this machine (anything else gets a warning: requests and tokens would travel in clear).
    fn url(&mut self, text: &str, at: &str, server: &str) -> Result<url::Url, ConfigError> {
        let url = url::Url::parse(text)
            .map_err(|e| self.error(at, format!("not a valid URL ({e}): \"{text}\"")))?;
        match url.scheme() {
            "https" => {}
            "http" => {
                if !net::is_loopback(&url) {
                    self.warnings.push(Warning::new(
                        WarningKind::PlainHttp,
                        format!(
                            "{}: {server} uses plain http:// to {}: messages and credentials travel unencrypted; use https://",
                            self.file.display(),
                            url.host_str().unwrap_or("?")
                        ),
                    ));
                }
            }
            other => {
                return Err(self.error(
                    at,
                    format!("the URL scheme must be http or https, not \"{other}\""),
                ));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(self.error(at, "the URL has no host"));
        }
        Ok(url)
    }

    /// Checks one configured header: a valid name and value, and not one mcpd sets itself.
    fn header(&self, name: &str, value: &str, at: &str) -> Result<(), ConfigError> {
        const OWN: [&str; 7] = [
            "accept",
            "content-type",
            "content-length",
            "host",
            "mcp-session-id",
            "mcp-protocol-version",
            "last-event-id",
        ];
        if http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(self.error(at, "not a valid HTTP header name"));
        }
        if OWN.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(self.error(at, "mcpd sets this header itself"));
        }
        if http::header::HeaderValue::from_str(value).is_err() {
            // Never show the value: it is likely a secret.
            return Err(self.error(
                at,
                "the value is not a valid HTTP header value (control characters or line breaks?)",
            ));
        }
        Ok(())
    }

    fn profile(&mut self, v: &Value, path: &str) -> Result<Profile, ConfigError> {
        let mut servers = Vec::new();
        let mut shape = ProfileShape::default();
        for (key, value) in self.object(v, path)? {
            let at = join(path, key);
            match key.as_str() {
                "servers" => {
                    let items = value.as_array().ok_or_else(|| {
                        self.error(
                            &at,
                            format!(
                                "expected an array of server names, found {}",
                                kind_of(value)
                            ),
                        )
                    })?;
                    for (i, item) in items.iter().enumerate() {
                        servers.push(self.string(item, &format!("{at}[{i}]"))?.to_owned());
                    }
                }
                "tools" => {
                    shape.tools = exposure::tool_filter(value)
                        .map_err(|(sub, e)| self.error(&format!("{at}{sub}"), e))?;
                }
                "toolMode" => {
                    shape.tool_mode = exposure::tool_mode(value).map_err(|e| self.error(&at, e))?;
                }
                _ => self.unknown(path, key),
            }
        }
        Ok(Profile { servers, shape })
    }

    fn options(&mut self, v: &Value) -> Result<Options, ConfigError> {
        let mut options = Options::default();
        for (key, value) in self.object(v, "mcpd")? {
            let at = join("mcpd", key);
            match key.as_str() {
                "separator" => {
                    let sep = self.string(value, &at)?;
                    if sep.is_empty()
                        || !sep
                            .chars()
                            .all(|c| c == '_' || c == '-' || c == '.' || c.is_ascii_alphanumeric())
                    {
                        return Err(self.error(&at, "the separator must be non-empty and use only letters, digits, `_`, `-` or `.`"));
                    }
                    options.separator = sep.to_owned();
                }
                "pageSize" => {
                    options.page_size = value
                        .as_u64()
                        .filter(|n| (1..=10_000).contains(n))
                        .ok_or_else(|| self.error(&at, "expected a number between 1 and 10000"))?
                        as usize;
                }
                "listWaitMs" => options.list_wait = self.millis(value, &at)?,
                "clientStallMs" => options.client_stall = self.millis(value, &at)?,
                "sessionBufferBytes" => {
                    options.session_buffer = value
                        .as_u64()
                        .filter(|n| (64 * 1024..=1 << 32).contains(n))
                        .ok_or_else(|| {
                            self.error(
                                &at,
                                "expected a number of bytes between 65536 and 4294967296",
                            )
                        })? as usize;
                }
                "credentialStore" => {
                    options.credential_store = oauth::credential_store(self.file, value, &at)?;
                }
                k if observe::MCPD_KEYS.contains(&k) => {} // read by `observe::collect`
                _ => self.unknown("mcpd", key),
            }
        }
        Ok(options)
    }
}

/// The URL as written, for collecting its secret references.
fn url_text(spec: &ServerSpec, parsed: &url::Url) -> String {
    spec.secrets
        .url_template
        .clone()
        .unwrap_or_else(|| parsed.to_string())
}

fn join(path: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c == '_' || c == '-' || c.is_ascii_alphanumeric());
    match (path.is_empty(), simple) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{key:?}"),
        (false, true) => format!("{path}.{key}"),
        (false, false) => format!("{path}[{key:?}]"),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What changed between two configurations, server by server.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// In the new configuration only.
    pub added: Vec<String>,
    /// In the old configuration only.
    pub removed: Vec<String>,
    /// In both, defined differently.
    pub changed: Vec<String>,
    /// In both, defined the same.
    pub unchanged: Vec<String>,
}

impl Diff {
    /// Compares the servers of `old` and `new`.
    pub fn between(old: &Config, new: &Config) -> Self {
        let mut diff = Self::default();
        for (name, spec) in &new.servers {
            match old.servers.get(name) {
                None => diff.added.push(name.clone()),
                Some(old_spec) if !old_spec.same_process(spec) => diff.changed.push(name.clone()),
                Some(_) => diff.unchanged.push(name.clone()),
            }
        }
        diff.removed = old
            .servers
            .keys()
            .filter(|n| !new.servers.contains_key(*n))
            .cloned()
            .collect();
        diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Loaded {
        parse(Path::new("/c/config.json"), text, |n| {
            (n == "TOKEN").then(|| "t0k".to_string())
        })
        .unwrap()
    }

    /// The first mistake: of the file, else of the first server left out for mistakes.
    fn parse_err(text: &str) -> ConfigError {
        match parse(Path::new("/c/config.json"), text, |n| {
            (n == "TOKEN").then(|| "t0k".to_string())
        }) {
            Err(e) => e,
            Ok(loaded) => {
                let mut broken = loaded.config.broken.into_values();
                let problem = broken.next().expect("a mistake");
                problem.errors[0].clone()
            }
        }
    }

    #[test]
    fn a_mistake_in_one_server_leaves_only_that_server_out_with_all_its_mistakes() {
        let loaded = parse_ok(
            r#"{"mcpServers": {
                "good": {"command": "a"},
                "bad": {"command": "b", "args": [1], "share": "sometimes", "pingTimeoutMs": -1},
                "worse": {"url": "ftp://x"}
            }, "profiles": {"p": {"servers": ["good", "bad"]}}}"#,
        );
        assert!(loaded.config.servers.contains_key("good"));
        let bad = &loaded.config.broken["bad"];
        let paths: Vec<&str> = bad
            .errors
            .iter()
            .filter_map(|e| e.json_path.as_deref())
            .collect();
        assert_eq!(
            paths,
            [
                "mcpServers.bad.args[0]",
                "mcpServers.bad.pingTimeoutMs",
                "mcpServers.bad.share"
            ]
        );
        assert!(loaded.config.broken.contains_key("worse"));
        assert_eq!(loaded.config.profile_servers("p").map(|p| p.len()), Some(2));
    }

    #[test]
    fn every_mistake_outside_the_servers_is_named_in_one_error() {
        let e = parse_err(
            r#"{"mcpServers": {}, "profiles": {"p": {"servers": ["nope"]}},
                "mcpd": {"separator": "", "pageSize": 0}}"#,
        );
        let text = e.to_string();
        assert!(text.contains("profiles.p.servers[0]"), "{text}");
        assert!(text.contains("and 2 more"), "{text}");
        assert!(
            text.contains("mcpd.separator") && text.contains("mcpd.pageSize"),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_that_are_near_misses_get_a_suggestion() {
        let loaded = parse_ok(
            r#"{"mcpServers": {"a": {"command": "a", "idleTimoutMs": 5, "autoApprove": []}},
                "mcpd": {"seperator": "__"}}"#,
        );
        assert!(
            loaded
                .warnings
                .iter()
                .all(|w| w.kind == WarningKind::UnknownKey)
        );
        let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
        let warnings = warnings.join("\n");
        assert!(
            warnings
                .contains("`mcpServers.a.idleTimoutMs` ignored (did you mean `idleTimeoutMs`?)"),
            "{warnings}"
        );
        assert!(
            warnings.contains("`mcpd.seperator` ignored (did you mean `separator`?)"),
            "{warnings}"
        );
        assert!(
            warnings.contains("`mcpServers.a.autoApprove` ignored\n")
                || warnings.ends_with("autoApprove` ignored"),
            "{warnings}"
        );
    }

    #[test]
    fn a_claude_desktop_config_pastes_in() {
        let loaded = parse_ok(
            r#"{"mcpServers":{"everything":{"command":"npx","args":["-y","@modelcontextprotocol/server-everything"],"env":{"K":"${TOKEN}"}}},"globalShortcut":"x"}"#,
        );
        let spec = loaded.config.servers["everything"].stdio().unwrap();
        assert_eq!(spec.command, "npx");
        assert_eq!(spec.args, ["-y", "@modelcontextprotocol/server-everything"]);
        assert_eq!(spec.env["K"], "t0k");
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0]
                .message
                .contains("unknown key `globalShortcut`"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn syntax_errors_carry_file_line_and_column() {
        let e = parse_err("{\n  \"mcpServers\": {,\n}");
        assert_eq!(e.line, Some((2, 18)));
        let shown = e.to_string();
        assert!(
            shown.starts_with("/c/config.json:2:18: not valid JSON"),
            "{shown}"
        );
    }

    #[test]
    fn type_errors_name_the_json_path() {
        let e = parse_err(r#"{"mcpServers":{"x":{"command":"a","args":["ok", 3]}}}"#);
        assert_eq!(e.json_path.as_deref(), Some("mcpServers.x.args[1]"));
        assert!(
            e.to_string().contains("expected a string, found a number"),
            "{e}"
        );

        let e = parse_err(r#"{"mcpServers":{"my server":{"args":[]}}}"#);
        assert_eq!(e.json_path.as_deref(), Some(r#"mcpServers["my server"]"#));
        assert!(e.message.contains("needs a \"command\""));

        let e = parse_err(r#"{"mcpServers":{"x":{"command":"${MISSING}"}}}"#);
        assert_eq!(e.json_path.as_deref(), Some("mcpServers.x.command"));
        assert!(e.message.contains("MISSING is not set"));
    }

    #[test]
    fn profiles_must_name_known_servers() {
        let e = parse_err(
            r#"{"mcpServers":{"a":{"command":"a"}},"profiles":{"w":{"servers":["a","b"]}}}"#,
        );
        assert_eq!(e.json_path.as_deref(), Some("profiles.w.servers[1]"));
        let ok = parse_ok(
            r#"{"mcpServers":{"a":{"command":"a"},"b":{"command":"b"}},"profiles":{"w":{"servers":["b"]}}}"#,
        );
        assert_eq!(ok.config.profile_servers("w"), Some(vec!["b".to_string()]));
        assert_eq!(
            ok.config.profile_servers("default"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(ok.config.profile_servers("nope"), None);
    }

    #[test]
    fn disabled_servers_are_left_out() {
        let ok = parse_ok(r#"{"mcpServers":{"a":{"command":"a","disabled":true}}}"#);
        assert!(ok.config.servers.is_empty());
    }

    #[test]
    fn diff_sorts_servers_into_four_groups() {
        let old = parse_ok(
            r#"{"mcpServers":{"a":{"command":"a"},"b":{"command":"b"},"c":{"command":"c"}}}"#,
        )
        .config;
        let new = parse_ok(
            r#"{"mcpServers":{"a":{"command":"a"},"b":{"command":"b2"},"d":{"command":"d"}}}"#,
        )
        .config;
        let diff = Diff::between(&old, &new);
        assert_eq!(diff.added, ["d"]);
        assert_eq!(diff.removed, ["c"]);
        assert_eq!(diff.changed, ["b"]);
        assert_eq!(diff.unchanged, ["a"]);
    }

    #[test]
    fn remote_servers_take_a_type_a_url_and_headers() {
        let loaded = parse_ok(
            r#"{"mcpServers":{
                "a":{"type":"http","url":"https://mcp.example.com/mcp?key=${TOKEN}","headers":{"Authorization":"Bearer ${TOKEN}"}},
                "b":{"type":"streamableHttp","url":"http://127.0.0.1:9/mcp"},
                "c":{"type":"sse","url":"http://localhost:9/sse","insecureSkipVerify":true},
                "d":{"url":"http://[::1]:9/mcp","connectTimeoutMs":500}}}"#,
        );
        let servers = &loaded.config.servers;
        let a = servers["a"].http().unwrap();
        assert_eq!(a.kind, HttpKind::Streamable);
        assert_eq!(
            a.headers.0,
            [("Authorization".to_string(), "Bearer t0k".to_string())]
        );
        assert_eq!(a.display_url(), "https://mcp.example.com/mcp?…");
        assert!(!format!("{:?}", a.headers).contains("t0k"));
        assert_eq!(servers["b"].http().unwrap().kind, HttpKind::Streamable);
        assert_eq!(servers["c"].http().unwrap().kind, HttpKind::Sse);
        assert!(servers["c"].http().unwrap().insecure_skip_verify);
        assert_eq!(servers["d"].http().unwrap().kind, HttpKind::Probe);
        assert_eq!(
            servers["d"].http().unwrap().connect_timeout,
            Duration::from_millis(500)
        );
        assert_eq!(
            [&servers["a"], &servers["c"], &servers["d"]].map(ServerSpec::transport_name),
            ["http", "sse", "http"]
        );
        // Loopback over plain http is fine; only the explicit TLS opt-out is worth a warning.
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert_eq!(loaded.warnings[0].kind, WarningKind::InsecureSkipVerify);
        assert!(
            loaded.warnings[0]
                .message
                .contains("mcpServers.c.insecureSkipVerify")
        );
    }

    #[test]
    fn plain_http_to_another_host_is_a_warning() {
        let loaded =
            parse_ok(r#"{"mcpServers":{"a":{"type":"http","url":"http://mcp.example.com/mcp"}}}"#);
        assert!(loaded.config.servers.contains_key("a"));
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0].kind == WarningKind::PlainHttp
                && loaded.warnings[0]
                    .message
                    .contains("plain http:// to mcp.example.com"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn bad_remote_servers_name_the_json_path() {
        for (text, path, needle) in [
            (
                r#"{"type":"http","url":"not a url"}"#,
                "mcpServers.x.url",
                "not a valid URL",
            ),
            (
                r#"{"type":"http","url":"ftp://h/x"}"#,
                "mcpServers.x.url",
                "scheme must be http or https",
            ),
            (r#"{"type":"http"}"#, "mcpServers.x", "needs a \"url\""),
            (
                r#"{"type":"carrier-pigeon","url":"http://h"}"#,
                "mcpServers.x.type",
                "unknown transport",
            ),
            (
                r#"{"type":"stdio","command":"a","url":"http://h"}"#,
                "mcpServers.x.url",
                "stdio server has no",
            ),
            (
                r#"{"url":"http://127.0.0.1/","command":"a"}"#,
                "mcpServers.x.command",
                "has no command",
            ),
            (
                r#"{"url":"http://127.0.0.1/","headers":{"Accept":"x"}}"#,
                "mcpServers.x.headers.Accept",
                "sets this header itself",
            ),
            (
                r#"{"url":"http://127.0.0.1/","headers":{"X-Key":"a\nb"}}"#,
                "mcpServers.x.headers.X-Key",
                "not a valid HTTP header value",
            ),
            (
                r#"{"url":"http://127.0.0.1/","headers":{"X-Key":"${NOPE}"}}"#,
                "mcpServers.x.headers.X-Key",
                "NOPE is not set",
            ),
            (
                r#"{"command":"a","headers":{"X":"y"}}"#,
                "mcpServers.x.headers",
                "only a remote server",
            ),
        ] {
            let e = parse_err(&format!(r#"{{"mcpServers":{{"x":{text}}}}}"#));
            assert_eq!(e.json_path.as_deref(), Some(path), "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused_without_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        std::fs::write(&path, vec![b' '; 2048]).unwrap();
        assert_eq!(read_bounded(&path, 4096).unwrap().len(), 2048);
        let e = read_bounded(&path, 1024).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn missing_file_is_an_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&dir.path().join("none.json")).unwrap();
        assert!(!loaded.exists);
        assert!(loaded.config.servers.is_empty());
    }
}
